//! Framing: cuts command lines out of the input buffer, with a hard length cap.
//!
//! RFC 2449 §4 limits a command line to 255 octets including CRLF. A longer
//! line is dropped as it arrives, never buffered whole: once the cap is
//! passed the reader discards bytes up to the next LF and reports the line
//! as too long.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line without its CRLF (or bare LF) ending.
    Complete(Bytes),
    /// A line over the cap; its bytes are gone.
    TooLong,
}

/// Cuts lines out of a buffer. Remembers when it is in the middle of
/// discarding an overlong line.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    discarding: bool,
}

impl LineReader {
    /// Takes the next line out of `buf`, `max` octets at most with its line end.
    ///
    /// Returns `None` when no complete line is buffered; the bytes of a line
    /// already known to be too long are dropped from `buf` meanwhile.
    pub(crate) fn next_line(&mut self, buf: &mut BytesMut, max: usize) -> Option<Line> {
        match memchr(b'\n', buf) {
            Some(lf) if self.discarding || lf + 1 > max => {
                buf.advance(lf + 1);
                self.discarding = false;
                Some(Line::TooLong)
            }
            Some(lf) => {
                let mut line = buf.split_to(lf + 1).freeze();
                line.truncate(lf);
                if line.last() == Some(&b'\r') {
                    line.truncate(lf - 1);
                }
                Some(Line::Complete(line))
            }
            None => {
                if self.discarding || buf.len() >= max {
                    // The line cannot end within the cap: drop what we have.
                    buf.clear();
                    self.discarding = true;
                }
                None
            }
        }
    }

    /// Forgets a half-read line (used when the input is thrown away).
    pub(crate) fn reset(&mut self) {
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]], max: usize) -> (Vec<Line>, usize) {
        let mut r = LineReader::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut peak = 0;
        for chunk in input {
            buf.extend_from_slice(chunk);
            peak = peak.max(buf.len());
            while let Some(l) = r.next_line(&mut buf, max) {
                out.push(l);
            }
        }
        (out, peak)
    }

    fn complete(s: &str) -> Line {
        Line::Complete(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_and_bare_lf_both_end_lines() {
        let (got, _) = lines(&[b"STAT\r\nNOOP\nQU", b"IT\r", b"\n"], 255);
        assert_eq!(got, [complete("STAT"), complete("NOOP"), complete("QUIT")]);
    }

    #[test]
    fn cap_counts_the_line_end() {
        let exact = format!("{}\r\n", "a".repeat(253));
        let over = format!("{}\r\n", "a".repeat(254));
        let (got, _) = lines(&[exact.as_bytes(), over.as_bytes(), b"NOOP\r\n"], 255);
        assert_eq!(
            got,
            [complete(&"a".repeat(253)), Line::TooLong, complete("NOOP")]
        );
    }

    #[test]
    fn overlong_line_is_not_buffered() {
        let chunk = vec![b'x'; 1000];
        let mut input: Vec<&[u8]> = vec![&chunk; 50];
        input.push(b"\r\nSTAT\r\n");
        let (got, peak) = lines(&input, 255);
        assert_eq!(got, [Line::TooLong, complete("STAT")]);
        assert!(peak <= 1000 + 255, "buffered {peak} bytes");
    }
}
