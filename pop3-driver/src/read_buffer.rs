//! A connection's read buffer: small while the client sends a command at a
//! time, so that an idle connection holds little; grown when a read fills
//! it (pipelined input, a long SASL line), and small again once reads are
//! short.

use crate::ReadOutcome;

/// What a connection reads into.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
}

impl ReadBuffer {
    /// Most commands are a few dozen octets; RFC 2449 caps a line at 255.
    const SMALL: usize = 512;
    /// For pipelined input: one read takes hundreds of commands.
    const LARGE: usize = 4096;

    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; Self::SMALL],
        }
    }

    /// Where the next read goes.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// What the last read put in (all of it; the outcome says how much).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Sizes the buffer for the next read after `outcome` was handled: a
    /// read that filled it means more is waiting, a short one that the
    /// client is back to a command at a time.
    pub(crate) fn adapt(&mut self, outcome: &ReadOutcome) {
        let ReadOutcome::Data(n) = *outcome else {
            return;
        };
        if n == self.buf.len() && self.buf.len() < Self::LARGE {
            self.buf = vec![0; Self::LARGE];
        } else if n < Self::SMALL && self.buf.len() > Self::SMALL {
            self.buf = vec![0; Self::SMALL];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_when_filled_and_shrinks_when_reads_are_short() {
        let mut b = ReadBuffer::new();
        assert_eq!(b.space().len(), ReadBuffer::SMALL);
        b.adapt(&ReadOutcome::Data(40));
        assert_eq!(b.space().len(), ReadBuffer::SMALL);
        b.adapt(&ReadOutcome::Data(ReadBuffer::SMALL));
        assert_eq!(b.space().len(), ReadBuffer::LARGE);
        b.adapt(&ReadOutcome::Data(ReadBuffer::LARGE));
        assert_eq!(b.space().len(), ReadBuffer::LARGE, "no larger than LARGE");
        b.adapt(&ReadOutcome::Data(1000));
        assert_eq!(b.space().len(), ReadBuffer::LARGE, "still busy");
        b.adapt(&ReadOutcome::TimedOut);
        assert_eq!(b.space().len(), ReadBuffer::LARGE);
        b.adapt(&ReadOutcome::Data(6));
        assert_eq!(b.space().len(), ReadBuffer::SMALL);
    }
}
