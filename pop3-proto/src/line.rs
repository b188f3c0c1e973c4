//! Framing: finds command lines in the input, with a hard length cap.
//!
//! RFC 2449 §4 limits a command line to 255 octets including CRLF. A longer
//! line is dropped as it arrives, never buffered whole: once the cap is
//! passed the reader discards bytes up to the next LF and reports the line
//! as too long. Lines are framed in place, in whatever slice the caller
//! has; nothing is copied.

use memchr::memchr;

/// One framed line, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A line without its CRLF (or bare LF) ending.
    Complete(&'a [u8]),
    /// A line over the cap; its bytes are gone.
    TooLong,
}

/// Finds lines. Remembers when it is in the middle of discarding an
/// overlong line.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    discarding: bool,
}

impl LineReader {
    /// Frames the line at the start of `input`, `max` octets at most with its
    /// line end. Returns how many octets of `input` are used up, and the line.
    ///
    /// Without a complete line, nothing is used up (the partial line must be
    /// kept for the next call), unless the line is already known to be too
    /// long: then all of `input` is used up and dropped.
    pub(crate) fn frame<'a>(&mut self, input: &'a [u8], max: usize) -> (usize, Option<Line<'a>>) {
        match memchr(b'\n', input) {
            Some(lf) if self.discarding || lf + 1 > max => {
                self.discarding = false;
                (lf + 1, Some(Line::TooLong))
            }
            Some(lf) => {
                let line = &input[..lf];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (lf + 1, Some(Line::Complete(line)))
            }
            None if self.discarding || input.len() >= max => {
                // The line cannot end within the cap: drop what we have.
                self.discarding = true;
                (input.len(), None)
            }
            None => (0, None),
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

    /// Frames `input` read in these pieces the way the session does: a
    /// partial line is kept, the rest is framed in place.
    fn lines(input: &[&[u8]], max: usize) -> (Vec<Option<Vec<u8>>>, usize) {
        let mut r = LineReader::default();
        let mut kept = Vec::new();
        let mut out = Vec::new();
        let mut peak = 0;
        for chunk in input {
            kept.extend_from_slice(chunk);
            let mut at = 0;
            loop {
                let (used, line) = r.frame(&kept[at..], max);
                at += used;
                match line {
                    Some(Line::Complete(l)) => out.push(Some(l.to_vec())),
                    Some(Line::TooLong) => out.push(None),
                    None => break,
                }
            }
            kept.drain(..at);
            peak = peak.max(kept.len());
        }
        (out, peak)
    }

    fn complete(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
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
        assert_eq!(got, [complete(&"a".repeat(253)), None, complete("NOOP")]);
    }

    #[test]
    fn overlong_line_is_not_kept() {
        let chunk = vec![b'x'; 1000];
        let mut input: Vec<&[u8]> = vec![&chunk; 50];
        input.push(b"\r\nSTAT\r\n");
        let (got, peak) = lines(&input, 255);
        assert_eq!(got, [None, complete("STAT")]);
        assert_eq!(peak, 0, "an overlong line is dropped as it arrives");
    }
}
