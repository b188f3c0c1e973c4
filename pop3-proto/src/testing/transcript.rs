//! Known-answer transcripts: `C:` lines are sent, `S:` lines are expected.

use std::fmt;

use super::Harness;

/// Renders bytes with `\r`, `\n`, `\t` and non-printable octets escaped, so
/// line-end mistakes are visible.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// A transcript step whose output differed from the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptError {
    /// 1-based line of the script where the check failed.
    pub line: usize,
    /// What the script expected, escaped.
    pub expected: String,
    /// What the session sent, escaped.
    pub actual: String,
}

impl fmt::Display for TranscriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transcript mismatch before script line {}\nexpected: {}\n  actual: {}",
            self.line, self.expected, self.actual
        )
    }
}

impl std::error::Error for TranscriptError {}

/// Runs a script against a harness.
///
/// Each `S: text` line expects `text` CRLF from the server; each `C: text`
/// line sends `text` CRLF, after checking that everything expected so far
/// was sent. Leading whitespace before `S:`/`C:` and blank lines are
/// ignored. `S:` alone expects an empty line; `C:` alone sends one. At the
/// end, the rest of the output must match the remaining `S:` lines.
pub fn run_transcript(h: &mut Harness, script: &str) -> Result<(), TranscriptError> {
    let mut expected = Vec::new();
    let mut lineno = 0;
    let check = |h: &mut Harness, expected: &mut Vec<u8>, line: usize| {
        let actual = std::mem::take(&mut h.sent);
        if actual != *expected {
            return Err(TranscriptError {
                line,
                expected: escape_bytes(expected),
                actual: escape_bytes(&actual),
            });
        }
        expected.clear();
        Ok(())
    };
    for (i, raw) in script.lines().enumerate() {
        lineno = i + 1;
        let line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("S:") {
            expected.extend_from_slice(rest.strip_prefix(' ').unwrap_or(rest).as_bytes());
            expected.extend_from_slice(b"\r\n");
        } else if let Some(rest) = line.strip_prefix("C:") {
            check(h, &mut expected, lineno)?;
            h.command(rest.strip_prefix(' ').unwrap_or(rest));
        } else {
            panic!("script line {lineno} starts with neither S: nor C:: {raw:?}");
        }
    }
    check(h, &mut expected, lineno + 1)
}
