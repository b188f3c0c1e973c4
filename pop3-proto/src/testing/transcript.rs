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

/// One step of a `C:`/`S:` script: check that `expect` was received, then
/// send `send` (a line, without CRLF) unless this is the final step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    /// 1-based script line of the `C:` (or one past the end for the final step).
    pub line: usize,
    /// Bytes the server must have sent since the previous step.
    pub expect: Vec<u8>,
    /// The command line to send next; `None` at the end of the script.
    pub send: Option<String>,
}

/// Parses a `C:`/`S:` script into steps.
///
/// Each `S: text` line expects `text` CRLF from the server; each `C: text`
/// line sends `text` CRLF, after everything expected so far was received.
/// Leading whitespace before `S:`/`C:` and blank lines are ignored. `S:`
/// alone expects an empty line; `C:` alone sends one. The last step holds
/// the `S:` lines after the last `C:`.
///
/// # Panics
/// On a line that starts with neither `S:` nor `C:`.
pub fn parse_script(script: &str) -> Vec<ScriptStep> {
    let mut steps = Vec::new();
    let mut expect = Vec::new();
    let mut last = 0;
    for (i, raw) in script.lines().enumerate() {
        last = i + 1;
        let line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        let text = |rest: &str| rest.strip_prefix(' ').unwrap_or(rest).to_owned();
        if let Some(rest) = line.strip_prefix("S:") {
            expect.extend_from_slice(text(rest).as_bytes());
            expect.extend_from_slice(b"\r\n");
        } else if let Some(rest) = line.strip_prefix("C:") {
            steps.push(ScriptStep {
                line: i + 1,
                expect: std::mem::take(&mut expect),
                send: Some(text(rest)),
            });
        } else {
            panic!(
                "script line {} starts with neither S: nor C:: {raw:?}",
                i + 1
            );
        }
    }
    steps.push(ScriptStep {
        line: last + 1,
        expect,
        send: None,
    });
    steps
}

/// `S:` lines for a stored message body with CRLF line ends and no line
/// starting with `.`, as RETR sends it (without the final `.`).
pub fn body_script(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split_terminator("\r\n")
        .map(|l| format!("S: {l}\n"))
        .collect()
}

/// Runs a script (see [`parse_script`]) against a harness.
pub fn run_transcript(h: &mut Harness, script: &str) -> Result<(), TranscriptError> {
    for step in parse_script(script) {
        let actual = std::mem::take(&mut h.sent);
        if actual != step.expect {
            return Err(TranscriptError {
                line: step.line,
                expected: escape_bytes(&step.expect),
                actual: escape_bytes(&actual),
            });
        }
        if let Some(line) = step.send {
            h.command(&line);
        }
    }
    Ok(())
}
