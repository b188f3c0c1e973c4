//! What correct output looks like, written once and used by the property
//! tests and the fuzz targets alike.

use std::fmt;

/// A broken invariant, with enough context to debug it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantError(pub String);

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvariantError {}

fn fail<T>(msg: String) -> Result<T, InvariantError> {
    Err(InvariantError(msg))
}

/// The body as it travels before dot-stuffing: every line end CRLF (a bare
/// LF becomes CRLF, a CR at the very end ends the last line), and a last
/// line without a line end gets CRLF. A CR not followed by LF elsewhere is
/// content. Its length is the RFC 1939 message size.
pub fn normalize_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\n' if i == 0 || body[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
            b'\r' if i + 1 == body.len() => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Undoes dot-stuffing: strips the final `.` CRLF and one leading `.` from
/// each line that starts with one.
pub fn unstuff(stuffed: &[u8]) -> Result<Vec<u8>, InvariantError> {
    let Some(body) = stuffed.strip_suffix(b".\r\n") else {
        return fail(format!(
            "output does not end with the terminator: {}",
            super::escape_bytes(&stuffed[stuffed.len().saturating_sub(20)..])
        ));
    };
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b".") {
            Some(rest) => {
                if !rest.starts_with(b".") {
                    return fail(format!(
                        "a line starts with a single dot: {}",
                        super::escape_bytes(line)
                    ));
                }
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    Ok(out)
}

/// Checks a stuffed RETR response body against the original body: it ends
/// with the one terminator, has no bare LF and no early terminator, and
/// unstuffs to the normalized body.
pub fn check_stuffed(body: &[u8], stuffed: &[u8]) -> Result<(), InvariantError> {
    check_framing(stuffed)?;
    let unstuffed = unstuff(stuffed)?;
    let expected = normalize_body(body);
    if unstuffed != expected {
        return fail(format!(
            "unstuffed output differs from the normalized body\n got: {}\nwant: {}",
            super::escape_bytes(&unstuffed),
            super::escape_bytes(&expected)
        ));
    }
    Ok(())
}

/// The TOP response body RFC 1939 §7 asks for, before stuffing: the header
/// section, the blank line, then `min(k, body lines)` body lines. A message
/// with no blank line is all headers.
pub fn expected_top(body: &[u8], k: u64) -> Vec<u8> {
    let normalized = normalize_body(body);
    let mut out = Vec::new();
    let mut in_headers = true;
    let mut left = k;
    for line in normalized.split_inclusive(|&b| b == b'\n') {
        if in_headers {
            out.extend_from_slice(line);
            if line == b"\r\n" {
                in_headers = false;
                if left == 0 {
                    break;
                }
            }
        } else {
            if left == 0 {
                break;
            }
            out.extend_from_slice(line);
            left -= 1;
        }
    }
    out
}

/// Checks a stuffed `TOP n k` response body: well framed, a prefix of the
/// RETR output, and exactly the expected header and body lines.
pub fn check_top(body: &[u8], k: u64, top: &[u8], retr: &[u8]) -> Result<(), InvariantError> {
    check_framing(top)?;
    let top_content = &top[..top.len() - 3];
    if !retr.starts_with(top_content) {
        return fail(format!(
            "TOP {k} output is not a prefix of RETR output\n top: {}",
            super::escape_bytes(top)
        ));
    }
    let unstuffed = unstuff(top)?;
    let expected = expected_top(body, k);
    if unstuffed != expected {
        return fail(format!(
            "TOP {k} sent the wrong lines\n got: {}\nwant: {}",
            super::escape_bytes(&unstuffed),
            super::escape_bytes(&expected)
        ));
    }
    Ok(())
}

/// Ends with `.` CRLF, which is the only terminator, and has no bare LF.
fn check_framing(stuffed: &[u8]) -> Result<(), InvariantError> {
    if !stuffed.ends_with(b".\r\n") || !(stuffed.len() == 3 || stuffed.ends_with(b"\r\n.\r\n")) {
        return fail(format!(
            "missing terminator: {}",
            super::escape_bytes(&stuffed[stuffed.len().saturating_sub(20)..])
        ));
    }
    let early = memchr::memmem::find(stuffed, b"\r\n.\r\n")
        .filter(|&at| at + 5 != stuffed.len())
        .or_else(|| (stuffed.starts_with(b".\r\n") && stuffed.len() != 3).then_some(0));
    if let Some(at) = early {
        return fail(format!("early terminator at octet {at}"));
    }
    if let Some(at) = stuffed
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b'\n' && (i == 0 || stuffed[i - 1] != b'\r'))
    {
        return fail(format!("bare LF at octet {at}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_body(b""), b"");
        assert_eq!(normalize_body(b"a"), b"a\r\n");
        assert_eq!(normalize_body(b"a\nb\r\nc\r"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalize_body(b"a\rb"), b"a\rb\r\n");
    }

    #[test]
    fn checks_catch_bugs() {
        assert!(check_stuffed(b".x\r\n", b"..x\r\n.\r\n").is_ok());
        assert!(check_stuffed(b".x\r\n", b".x\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a\r\n.\r\nb\r\n", b"a\r\n.\r\nb\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a\nb", b"a\nb\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a", b"a\r\n").is_err());
    }

    #[test]
    fn top_expectations() {
        let m = b"H: 1\r\n\r\nb1\r\nb2\r\n";
        assert_eq!(expected_top(m, 0), b"H: 1\r\n\r\n");
        assert_eq!(expected_top(m, 1), b"H: 1\r\n\r\nb1\r\n");
        assert_eq!(expected_top(m, 9), m);
        assert_eq!(expected_top(b"H: 1\r\nG: 2", 3), b"H: 1\r\nG: 2\r\n");
    }
}
