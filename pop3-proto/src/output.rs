//! The session's one ordered output: bytes to send and events for the
//! driver, in the order the driver must act on them.
//!
//! Reply lines are built in place; long runs of a body chunk are passed
//! through as slices of the chunk. An event pushed after some bytes comes
//! out only once those bytes have been handed out (and, by the write-then-
//! poll rule, written), so "`Unlock` before the QUIT farewell", "`StartTls`
//! after its `+OK`" and "`Closed` last" are queue order.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::event::Event;

/// Runs of a body chunk at least this long are queued as slices of the
/// chunk instead of being copied.
const ZERO_COPY_MIN: usize = 1024;

/// At most this many segments go into one [`Transmit`] (well under the
/// `IOV_MAX` of common systems, so one transmit is one vectored write).
const MAX_SEGMENTS: usize = 512;

/// What the driver must do next, from [`Session::poll_output`](crate::Session::poll_output).
#[derive(Debug)]
#[must_use = "the driver must act on every output"]
pub enum Output {
    /// Write these bytes to the peer, all of them, by their deadline; then
    /// give the transmit back with
    /// [`Session::handle_written`](crate::Session::handle_written).
    Transmit(Transmit),
    /// Act on this event, then poll again.
    Event(Event),
    /// Nothing to do until the peer or the clock moves: if `read`, read from
    /// the peer (the bytes go to `handle_input`); wait at most until
    /// `deadline`, then call `handle_timeout`. With neither, the session is
    /// waiting on the driver itself (an unanswered request, a TLS handshake
    /// not reported, a transmit not given back).
    Wait(Wait),
}

/// See [`Output::Wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Read from the peer now.
    pub read: bool,
    /// Call `handle_timeout` at this time if nothing happens before.
    pub deadline: Option<Instant>,
}

/// Bytes to write to the peer: one or more segments for one vectored write.
#[derive(Debug, Default)]
pub struct Transmit {
    segments: Vec<Bytes>,
    len: usize,
    deadline: Option<Instant>,
}

impl Transmit {
    /// The segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Total octets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is nothing to write (never for a transmit the
    /// session hands out).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The write must be complete by then: a peer that stops reading is cut
    /// off (the idle timer, RFC 1939 §3). Past it, call `handle_timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// All segments in one buffer (for tests and simple drivers).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len);
        for s in &self.segments {
            all.extend_from_slice(s);
        }
        all
    }
}

#[derive(Debug)]
enum Item {
    Data(Bytes),
    Event(Event),
}

/// Bytes and events waiting to be taken, in order.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Item>,
    /// Octets in `items`, plus `building`.
    queued: usize,
    /// Bytes being built at the back of the queue (reply lines, stuffed body bytes).
    building: BytesMut,
    /// A transmit was handed out and not given back yet.
    in_flight: bool,
    /// The segment vector of the last transmit, kept for the next one.
    spare: Vec<Bytes>,
}

impl Queue {
    /// Octets waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.queued
    }

    /// True when nothing at all is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.building.is_empty()
    }

    /// True while a transmit is out.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Appends whatever `write` puts into the bytes being built (reply lines).
    pub(crate) fn with_buf(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let before = self.building.len();
        write(&mut self.building);
        self.queued += self.building.len() - before;
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.building.extend_from_slice(bytes);
        self.queued += bytes.len();
    }

    /// Appends `chunk[range]`, without copying when the run is long.
    pub(crate) fn put_run(&mut self, chunk: &Bytes, range: Range<usize>) {
        if range.len() >= ZERO_COPY_MIN {
            self.seal();
            self.queued += range.len();
            self.items.push_back(Item::Data(chunk.slice(range)));
        } else {
            self.put(&chunk[range]);
        }
    }

    /// Appends an event after everything queued so far.
    pub(crate) fn push_event(&mut self, event: Event) {
        self.seal();
        self.items.push_back(Item::Event(event));
    }

    /// True if the next thing to take is bytes.
    pub(crate) fn data_first(&self) -> bool {
        match self.items.front() {
            Some(Item::Data(_)) => true,
            Some(Item::Event(_)) => false,
            None => !self.building.is_empty(),
        }
    }

    /// Takes the event at the front, if the front is an event.
    pub(crate) fn take_event(&mut self) -> Option<Event> {
        match self.items.front() {
            Some(Item::Event(_)) => match self.items.pop_front() {
                Some(Item::Event(e)) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// Takes the bytes at the front, up to the next event, as one transmit.
    pub(crate) fn take_transmit(&mut self, deadline: Option<Instant>) -> Transmit {
        let mut segments = std::mem::take(&mut self.spare);
        let mut len = 0;
        while segments.len() < MAX_SEGMENTS {
            match self.items.front() {
                Some(Item::Data(_)) => {
                    if let Some(Item::Data(b)) = self.items.pop_front() {
                        len += b.len();
                        segments.push(b);
                    }
                }
                Some(Item::Event(_)) => break,
                None => {
                    if !self.building.is_empty() {
                        let b = self.building.split().freeze();
                        len += b.len();
                        segments.push(b);
                    }
                    break;
                }
            }
        }
        self.queued -= len;
        self.in_flight = len > 0;
        Transmit {
            segments,
            len,
            deadline,
        }
    }

    /// A transmit came back written: keep its vector for the next one.
    pub(crate) fn written(&mut self, mut transmit: Transmit) {
        self.in_flight = false;
        transmit.segments.clear();
        self.spare = transmit.segments;
    }

    /// True if this event is waiting.
    pub(crate) fn has_event(&self, event: &Event) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i, Item::Event(e) if e == event))
    }

    /// Drops this event if it is waiting; true if it was.
    pub(crate) fn remove_event(&mut self, event: &Event) -> bool {
        let before = self.items.len();
        self.items
            .retain(|i| !matches!(i, Item::Event(e) if e == event));
        self.items.len() != before
    }

    /// Drops every waiting byte (the peer is gone); events stay, in order.
    pub(crate) fn drop_data(&mut self) {
        self.items.retain(|i| matches!(i, Item::Event(_)));
        self.building = BytesMut::new();
        self.queued = 0;
        self.in_flight = false;
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    fn seal(&mut self) {
        if !self.building.is_empty() {
            let segment = self.building.split().freeze();
            self.items.push_back(Item::Data(segment));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_events_keep_their_order() {
        let mut q = Queue::default();
        let big = Bytes::from(vec![b'x'; 2000]);
        q.put(b"+OK\r\n");
        q.put_run(&big, 0..2000);
        q.put_run(&big, 0..3);
        q.push_event(Event::Unlock);
        q.put(b".\r\n");
        assert_eq!(q.bytes(), 5 + 2000 + 3 + 3);
        assert!(q.data_first());
        let t = q.take_transmit(None);
        assert_eq!(t.segments().len(), 3, "copied, sliced, copied");
        assert_eq!(t.len(), 2008);
        assert!(q.in_flight());
        q.written(t);
        assert_eq!(q.take_event(), Some(Event::Unlock));
        let t = q.take_transmit(None);
        assert_eq!(t.to_vec(), b".\r\n");
        q.written(t);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn losing_the_peer_keeps_events() {
        let mut q = Queue::default();
        q.put(b"+OK\r\n");
        q.push_event(Event::Unlock);
        q.put(b"+OK bye\r\n");
        q.drop_data();
        assert!(!q.data_first());
        assert_eq!(q.take_event(), Some(Event::Unlock));
        assert!(q.is_empty());
    }
}
