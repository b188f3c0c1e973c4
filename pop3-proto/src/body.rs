//! Message bodies for RETR and TOP: dot-stuffing, line-end repair and the TOP
//! cut-off, streamed chunk by chunk (RFC 1939 §3, §7).
//!
//! The encoder carries three facts across chunk boundaries: whether the next
//! byte starts a line, whether the previous chunk ended in a CR whose LF may
//! still come, and how far a TOP has got. It starts at the start of a line
//! (the `+OK` line ended with CRLF), so a `.` as the very first byte is
//! doubled. It jumps from LF to LF with one `memchr` pass per chunk and copies or slices whole
//! runs between the few places that need a change.

use bytes::Bytes;
use memchr::memchr_iter;

use crate::output::Queue;

/// What the session should do after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProgress {
    /// Send the next chunk when asked.
    More,
    /// The TOP cut-off was reached and the response is complete: stop
    /// reading the message and do not call `end_body`.
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    /// Still in the header section; `lines` body lines wanted after it.
    Headers { lines: u64 },
    /// In the body; `left` more lines wanted (never 0).
    Body { left: u64 },
}

/// Streams one message body into the output.
#[derive(Debug)]
pub(crate) struct BodyEncoder {
    at_line_start: bool,
    pending_cr: bool,
    top: Option<Top>,
}

impl BodyEncoder {
    /// An encoder for RETR (`top == None`) or `TOP n k` (`top == Some(k)`).
    pub(crate) fn new(top: Option<u64>) -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
            top: top.map(|lines| Top::Headers { lines }),
        }
    }

    /// Encodes `chunk` into `out`. On [`BodyProgress::Complete`] the
    /// terminating `.` line has been written.
    pub(crate) fn push(&mut self, chunk: &Bytes, out: &mut Queue) -> BodyProgress {
        let data = &chunk[..];
        let len = data.len();
        let mut pos = 0;
        let mut run = 0;
        if self.pending_cr && len > 0 {
            self.pending_cr = false;
            if data[0] == b'\n' {
                // CR at the end of the last chunk + LF here: one line end.
                out.put(b"\r\n");
                pos = 1;
                run = 1;
                let empty = self.at_line_start;
                self.at_line_start = true;
                if self.line_ended(empty) {
                    out.put(b".\r\n");
                    return BodyProgress::Complete;
                }
            } else {
                // A lone CR is content.
                out.put(b"\r");
                self.at_line_start = false;
            }
        }
        // One pass over the chunk's line ends: restarting a search at every
        // line costs more than the search itself on short mail lines.
        let start = pos;
        let mut line_ends = memchr_iter(b'\n', &data[start..]).map(|i| start + i);
        loop {
            if self.at_line_start && pos < len && data[pos] == b'.' {
                // RFC 1939 §3: a line starting with "." gets one more ".".
                out.put_run(chunk, run..pos);
                out.put(b".");
                run = pos;
            }
            let Some(lf) = line_ends.next() else {
                // The rest is a partial line. Hold back a final CR: its LF may
                // be the next chunk's first byte.
                let end = if data[pos..].last() == Some(&b'\r') {
                    self.pending_cr = true;
                    len - 1
                } else {
                    len
                };
                out.put_run(chunk, run..end);
                self.at_line_start &= end == pos;
                return BodyProgress::More;
            };
            let crlf = lf > pos && data[lf - 1] == b'\r';
            let empty = self.at_line_start && (lf == pos || (crlf && lf == pos + 1));
            if !crlf {
                // Bare LF: send CRLF.
                out.put_run(chunk, run..lf);
                out.put(b"\r\n");
                run = lf + 1;
            }
            pos = lf + 1;
            self.at_line_start = true;
            if self.line_ended(empty) {
                out.put_run(chunk, run..pos);
                out.put(b".\r\n");
                return BodyProgress::Complete;
            }
        }
    }

    /// Ends the body: a last line without a line end gets CRLF, then `.` CRLF.
    /// A CR left at the very end of the body counts as that line end.
    pub(crate) fn finish(&mut self, out: &mut Queue) {
        if self.pending_cr || !self.at_line_start {
            out.put(b"\r\n");
        }
        out.put(b".\r\n");
        self.pending_cr = false;
        self.at_line_start = true;
    }

    /// Accounts for a finished line; true when TOP has all it wants.
    fn line_ended(&mut self, empty: bool) -> bool {
        match self.top {
            None => false,
            Some(Top::Headers { lines }) => {
                if !empty {
                    return false;
                }
                // RFC 1939 §7: TOP sends the headers, the blank line, then k body lines.
                if lines == 0 {
                    return true;
                }
                self.top = Some(Top::Body { left: lines });
                false
            }
            Some(Top::Body { left }) => {
                if left == 1 {
                    return true;
                }
                self.top = Some(Top::Body { left: left - 1 });
                false
            }
        }
    }
}

/// Counts a message's size as RFC 1939 §11 defines it (CRLF line ends,
/// before dot-stuffing), for bodies stored with LF or mixed line ends.
///
/// Feed the stored bytes in any chunks; the total agrees with what RETR
/// sends: a bare LF counts as CRLF, a last line without a line end gets one,
/// and a CR at the very end counts as CRLF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeCounter {
    size: u64,
    last: Option<u8>,
}

impl SizeCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the next piece of the stored message.
    pub fn push(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        self.size += chunk.len() as u64;
        let mut previous = self.last;
        for lf in memchr_iter(b'\n', chunk) {
            let before = if lf == 0 {
                previous
            } else {
                Some(chunk[lf - 1])
            };
            if before != Some(b'\r') {
                self.size += 1;
            }
            previous = Some(b'\n');
        }
        self.last = Some(last);
    }

    /// The size, once the whole message has been pushed.
    pub fn finish(&self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.size,
            Some(b'\r') => self.size + 1,
            Some(_) => self.size + 2,
        }
    }
}

/// The RFC 1939 §11 size of a stored message held in memory; see [`SizeCounter`].
pub fn transmitted_size(message: &[u8]) -> u64 {
    let mut counter = SizeCounter::new();
    counter.push(message);
    counter.finish()
}

/// Encodes a whole body at once (tests, benchmarks and fuzzing).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn encode_body(chunks: &[&[u8]], top: Option<u64>) -> Vec<u8> {
    let mut enc = BodyEncoder::new(top);
    let mut out = Queue::default();
    let mut complete = false;
    for chunk in chunks {
        if enc.push(&Bytes::copy_from_slice(chunk), &mut out) == BodyProgress::Complete {
            complete = true;
            break;
        }
    }
    if !complete {
        enc.finish(&mut out);
    }
    out.take_transmit(None).to_vec()
}

#[cfg(test)]
mod tests {
    use super::encode_body;

    fn enc(chunks: &[&[u8]]) -> Vec<u8> {
        encode_body(chunks, None)
    }

    #[test]
    fn sizes_agree_with_the_encoder() {
        use super::{transmitted_size, SizeCounter};
        for body in [
            &b""[..],
            b"a",
            b"a\r",
            b"a\n",
            b"a\r\n",
            b"\n\n",
            b"x\ry\nz",
            b".a\r\n.b",
        ] {
            let sent = enc(&[body]);
            let unstuffed = crate::testing::unstuff(&sent).unwrap();
            assert_eq!(transmitted_size(body), unstuffed.len() as u64, "{body:?}");
            for split in 0..=body.len() {
                let mut c = SizeCounter::new();
                c.push(&body[..split]);
                c.push(&body[split..]);
                assert_eq!(c.finish(), transmitted_size(body), "{body:?} at {split}");
            }
        }
    }

    #[test]
    fn first_byte_dot_is_doubled() {
        assert_eq!(enc(&[b".hidden\r\n"]), b"..hidden\r\n.\r\n");
        assert_eq!(enc(&[b".\r\n"]), b"..\r\n.\r\n");
        assert_eq!(enc(&[b"."]), b"..\r\n.\r\n");
    }

    #[test]
    fn dots_at_line_starts_across_chunks() {
        assert_eq!(
            enc(&[b"a\r\n", b".b\r\n.", b"\r\n"]),
            b"a\r\n..b\r\n..\r\n.\r\n"
        );
        assert_eq!(enc(&[b"a.b\r\n"]), b"a.b\r\n.\r\n");
    }

    #[test]
    fn line_ends_are_repaired() {
        assert_eq!(enc(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(enc(&[b"a\r", b"\nb"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(enc(&[b"a\r", b"b\r\n"]), b"a\rb\r\n.\r\n");
        assert_eq!(enc(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(enc(&[b"ends in cr\r"]), b"ends in cr\r\n.\r\n");
        assert_eq!(enc(&[b"\n.x\n"]), b"\r\n..x\r\n.\r\n");
        assert_eq!(enc(&[]), b".\r\n");
        assert_eq!(enc(&[b"", b""]), b".\r\n");
    }

    #[test]
    fn dot_after_lone_cr_chunk_boundary() {
        // CR then "." in the next chunk: the CR is content, "." is mid-line.
        assert_eq!(enc(&[b"\r", b".x\r\n"]), b"\r.x\r\n.\r\n");
        // CR LF split, then "." starting the next line.
        assert_eq!(enc(&[b"x\r", b"\n.y"]), b"x\r\n..y\r\n.\r\n");
    }

    const MSG: &[u8] = b"Subject: hi\r\nFrom: a\r\n\r\nline1\r\n.line2\r\nline3\r\n";

    #[test]
    fn top_zero_is_headers_and_blank_line() {
        assert_eq!(
            encode_body(&[MSG], Some(0)),
            b"Subject: hi\r\nFrom: a\r\n\r\n.\r\n"
        );
    }

    #[test]
    fn top_counts_body_lines_only() {
        assert_eq!(
            encode_body(&[MSG], Some(2)),
            b"Subject: hi\r\nFrom: a\r\n\r\nline1\r\n..line2\r\n.\r\n"
        );
        assert_eq!(encode_body(&[MSG], Some(3)), encode_body(&[MSG], None));
        assert_eq!(encode_body(&[MSG], Some(99)), encode_body(&[MSG], None));
    }

    #[test]
    fn top_with_blank_line_split_across_chunks() {
        assert_eq!(
            encode_body(&[b"H: v\r\n\r", b"\nbody\r\n"], Some(0)),
            b"H: v\r\n\r\n.\r\n"
        );
        assert_eq!(
            encode_body(&[b"H: v\n", b"\n", b"b1\nb2\n"], Some(1)),
            b"H: v\r\n\r\nb1\r\n.\r\n"
        );
    }

    #[test]
    fn top_without_blank_line_is_all_headers() {
        assert_eq!(
            encode_body(&[b"H: v\r\nG: w"], Some(0)),
            b"H: v\r\nG: w\r\n.\r\n"
        );
    }

    #[test]
    fn large_clean_runs_pass_through() {
        let line = b"0123456789012345678901234567890123456789\r\n";
        let body: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 1000)
            .collect();
        let mut expected = body.clone();
        expected.extend_from_slice(b".\r\n");
        assert_eq!(enc(&[&body]), expected);
    }
}
