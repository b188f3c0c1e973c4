//! Status lines: `+OK` / `-ERR`, extended response codes (RFC 2449 §8, RFC 3206)
//! and the reportable refusal a handler gives back.

use std::fmt;

use bytes::{BufMut, BytesMut};

/// An extended response code, sent in brackets after `-ERR`.
///
/// RFC 2449 §8 defines `IN-USE` and `LOGIN-DELAY`; RFC 3206 adds `SYS/TEMP`,
/// `SYS/PERM` and `AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseCode {
    /// `[AUTH]`: the credentials were wrong (RFC 3206 §5).
    Auth,
    /// `[SYS/TEMP]`: a temporary system problem; trying later may succeed (RFC 3206 §4).
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem; the user should call for help (RFC 3206 §4).
    SysPerm,
    /// `[IN-USE]`: the maildrop is locked by another session (RFC 2449 §8.1.1).
    InUse,
    /// `[LOGIN-DELAY]`: the user logged in too recently (RFC 2449 §8.1.2).
    LoginDelay,
    /// `[UTF8]`: the maildrop can be opened only in UTF-8 mode (RFC 6856 §2).
    Utf8,
}

impl ResponseCode {
    /// The code as written on the wire, without brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "AUTH",
            Self::SysTemp => "SYS/TEMP",
            Self::SysPerm => "SYS/PERM",
            Self::InUse => "IN-USE",
            Self::LoginDelay => "LOGIN-DELAY",
            Self::Utf8 => "UTF8",
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest human-readable text kept in a refusal. RFC 2449 §4 caps a response
/// line at 512 octets including `-ERR`, the code and CRLF.
const MAX_TEXT: usize = 400;

/// A refusal the client is told about: `-ERR [CODE] text`, and the session goes on.
///
/// This is popart's `ReportableError`. Handlers return it when the failure is
/// the client's business (wrong password, maildrop busy, message gone); an
/// internal failure is reported with the session's `fail` answer instead and
/// closes the session.
///
/// The text is cleaned on construction: line breaks and other control
/// characters become spaces and it is cut to a few hundred octets, so a
/// handler cannot break the protocol's framing with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    code: Option<ResponseCode>,
    text: String,
}

impl Refusal {
    /// A refusal without a response code.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            code: None,
            text: clean_text(text.into()),
        }
    }

    /// A refusal with a response code.
    pub fn with_code(code: ResponseCode, text: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(text)
        }
    }

    /// `-ERR [AUTH] text`: the credentials were not accepted.
    pub fn auth(text: impl Into<String>) -> Self {
        Self::with_code(ResponseCode::Auth, text)
    }

    /// `-ERR [SYS/TEMP] text`: a temporary failure.
    pub fn sys_temp(text: impl Into<String>) -> Self {
        Self::with_code(ResponseCode::SysTemp, text)
    }

    /// `-ERR [SYS/PERM] text`: a permanent failure.
    pub fn sys_perm(text: impl Into<String>) -> Self {
        Self::with_code(ResponseCode::SysPerm, text)
    }

    /// `-ERR [IN-USE] text`: the maildrop is locked elsewhere.
    pub fn in_use(text: impl Into<String>) -> Self {
        Self::with_code(ResponseCode::InUse, text)
    }

    /// `-ERR [LOGIN-DELAY] text`: the user must wait before logging in again.
    pub fn login_delay(text: impl Into<String>) -> Self {
        Self::with_code(ResponseCode::LoginDelay, text)
    }

    /// The response code, if any.
    pub fn code(&self) -> Option<ResponseCode> {
        self.code
    }

    /// The cleaned text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The same refusal with `code` filled in if it had none.
    pub(crate) fn or_code(mut self, code: ResponseCode) -> Self {
        self.code.get_or_insert(code);
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "[{code}] {}", self.text),
            None => f.write_str(&self.text),
        }
    }
}

fn clean_text(text: String) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Appends `+OK text\r\n`.
pub(crate) fn ok(out: &mut BytesMut, text: fmt::Arguments<'_>) {
    line(out, "+OK", None, text);
}

/// Appends `-ERR [code] text\r\n`.
pub(crate) fn err(out: &mut BytesMut, code: Option<ResponseCode>, text: fmt::Arguments<'_>) {
    line(out, "-ERR", code, text);
}

/// Appends a refusal as an `-ERR` line.
pub(crate) fn refusal(out: &mut BytesMut, refusal: &Refusal) {
    err(out, refusal.code, format_args!("{}", refusal.text));
}

fn line(out: &mut BytesMut, status: &str, code: Option<ResponseCode>, text: fmt::Arguments<'_>) {
    use fmt::Write as _;
    out.put_slice(status.as_bytes());
    if let Some(code) = code {
        out.put_slice(b" [");
        out.put_slice(code.as_str().as_bytes());
        out.put_u8(b']');
    }
    let before = out.len();
    out.put_u8(b' ');
    // Writing into a BytesMut cannot fail.
    let _ = out.write_fmt(text);
    if out.len() == before + 1 {
        out.truncate(before);
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_framed() {
        let mut out = BytesMut::new();
        ok(&mut out, format_args!("{} {}", 2, 320));
        err(&mut out, Some(ResponseCode::InUse), format_args!("busy"));
        ok(&mut out, format_args!(""));
        assert_eq!(&out[..], b"+OK 2 320\r\n-ERR [IN-USE] busy\r\n+OK\r\n");
    }

    #[test]
    fn refusal_text_cannot_break_framing() {
        let r = Refusal::sys_temp("disk\r\n.\r\nfull\0");
        assert_eq!(r.text(), "disk  .  full ");
        let long = Refusal::new("é".repeat(1000));
        assert!(long.text().len() <= MAX_TEXT);
        assert_eq!(long.to_string(), long.text());
        assert_eq!(Refusal::in_use("x").to_string(), "[IN-USE] x");
    }

    #[test]
    fn or_code_keeps_an_explicit_code() {
        assert_eq!(
            Refusal::login_delay("wait")
                .or_code(ResponseCode::Auth)
                .code(),
            Some(ResponseCode::LoginDelay)
        );
        assert_eq!(
            Refusal::new("no").or_code(ResponseCode::Auth).code(),
            Some(ResponseCode::Auth)
        );
    }
}
