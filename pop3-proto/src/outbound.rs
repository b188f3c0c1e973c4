//! The output queue: reply lines built in place, body slices passed through.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Runs of a body chunk at least this long are queued as slices of the
/// chunk instead of being copied.
const ZERO_COPY_MIN: usize = 1024;

/// Bytes waiting to be transmitted, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Finished segments, oldest first.
    queue: VecDeque<Bytes>,
    /// Total length of `queue`.
    queued: usize,
    /// The segment being built (reply lines, stuffed body bytes).
    buf: BytesMut,
}

impl Outbound {
    /// Octets waiting.
    pub(crate) fn len(&self) -> usize {
        self.queued + self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment being built, to append reply lines to.
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `chunk[range]`, without copying when the run is long.
    pub(crate) fn put_run(&mut self, chunk: &Bytes, range: Range<usize>) {
        if range.len() >= ZERO_COPY_MIN {
            self.seal();
            self.queued += range.len();
            self.queue.push_back(chunk.slice(range));
        } else {
            self.buf.extend_from_slice(&chunk[range]);
        }
    }

    /// Takes the oldest waiting segment.
    pub(crate) fn take(&mut self) -> Option<Bytes> {
        if let Some(segment) = self.queue.pop_front() {
            self.queued -= segment.len();
            return Some(segment);
        }
        if self.buf.is_empty() {
            return None;
        }
        Some(self.buf.split().freeze())
    }

    /// Drops everything waiting.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            let segment = self.buf.split().freeze();
            self.queued += segment.len();
            self.queue.push_back(segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_across_copies_and_slices() {
        let mut o = Outbound::default();
        let big = Bytes::from(vec![b'x'; 2000]);
        o.put(b"+OK\r\n");
        o.put_run(&big, 0..2000);
        o.put_run(&big, 0..3);
        o.put(b".\r\n");
        assert_eq!(o.len(), 5 + 2000 + 3 + 3);
        let mut all = Vec::new();
        while let Some(b) = o.take() {
            all.extend_from_slice(&b);
        }
        assert_eq!(all.len(), 2011);
        assert!(all.starts_with(b"+OK\r\nxx"));
        assert!(all.ends_with(b"xxxxx.\r\n"));
        assert!(o.is_empty());
    }
}
