//! Writing a [`Transmit`](pop3_proto::Transmit)'s segments with vectored
//! writes: the position within the segments, shared by every transport.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::Bytes;

/// At most this many segments go into one vectored write call.
pub const MAX_IO_SLICES: usize = 64;

/// Where a vectored write of several segments has got to.
#[derive(Debug)]
pub struct SegmentCursor<'a> {
    segments: &'a [Bytes],
    /// Octets of `segments[0]` already written.
    offset: usize,
}

impl<'a> SegmentCursor<'a> {
    /// At the start of `segments`.
    pub fn new(segments: &'a [Bytes]) -> Self {
        let mut cursor = Self {
            segments,
            offset: 0,
        };
        cursor.skip_empty();
        cursor
    }

    /// True once everything is written.
    pub fn is_done(&self) -> bool {
        self.segments.is_empty()
    }

    /// Fills `slices` with what is left, and returns the filled part.
    pub fn io_slices<'s>(&self, slices: &'s mut [IoSlice<'a>; MAX_IO_SLICES]) -> &'s [IoSlice<'a>] {
        let mut n = 0;
        for (i, segment) in self.segments.iter().take(MAX_IO_SLICES).enumerate() {
            let from = if i == 0 { self.offset } else { 0 };
            slices[n] = IoSlice::new(&segment[from..]);
            n += 1;
        }
        &slices[..n]
    }

    /// Moves past `written` octets.
    pub fn advance(&mut self, mut written: usize) {
        while let Some(first) = self.segments.first() {
            let left = first.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.segments = &self.segments[1..];
            self.offset = 0;
        }
        self.skip_empty();
    }

    fn skip_empty(&mut self) {
        while self
            .segments
            .first()
            .is_some_and(|s| s.len() == self.offset)
        {
            self.segments = &self.segments[1..];
            self.offset = 0;
        }
    }
}

/// Writes all of `segments` with `poll_write`, a vectored write that may
/// take part of what it is given (an async stream's `poll_write_vectored`,
/// whichever runtime's trait it is). A write of zero octets is an error.
///
/// # Errors
/// What `poll_write` returns, or [`io::ErrorKind::WriteZero`].
pub async fn write_all_vectored(
    segments: &[Bytes],
    mut poll_write: impl FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
) -> io::Result<()> {
    let mut cursor = SegmentCursor::new(segments);
    while !cursor.is_done() {
        let n = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            poll_write(cx, cursor.io_slices(&mut slices))
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        cursor.advance(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_walk_all_segments() {
        let segments: Vec<Bytes> = ["+OK\r\n", "", "hello", ".", "\r\n"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let mut cursor = SegmentCursor::new(&segments);
        let mut out = Vec::new();
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        // A writer that takes at most 3 octets at a time.
        while !cursor.is_done() {
            let filled = cursor.io_slices(&mut slices);
            let mut taken = 0;
            for s in filled {
                let n = s.len().min(3 - taken);
                out.extend_from_slice(&s[..n]);
                taken += n;
                if taken == 3 {
                    break;
                }
            }
            cursor.advance(taken);
        }
        assert_eq!(out, b"+OK\r\nhello.\r\n");
    }
}
