//! The mail under load: a Maildir tree with numbered users and messages
//! whose contents follow from their number, so that every RETR can be
//! checked byte for byte without keeping a copy.
//!
//! Users are `load0`, `load1`, ... with password `pw0`, `pw1`, ...; every
//! user has the same messages. Message `n` is stored with LF line ends (as
//! most delivery agents write it) and holds mail-like lines of text, some
//! starting with `.`, so the server must convert line ends and dot-stuff.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The name of user `i`.
pub(crate) fn user(i: usize) -> String {
    format!("load{i}")
}

/// The password of user `i`.
pub(crate) fn password(i: usize) -> String {
    format!("pw{i}")
}

/// Message `n` (from 1) as stored: LF line ends, about `size` bytes.
pub(crate) fn stored(n: usize, size: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(size + 128);
    write!(
        text,
        "From: load@example.org\nTo: user@example.org\nSubject: message {n}\nMessage-ID: <{n}@load.example.org>\n\n"
    )
    .expect("write to a Vec");
    // xorshift64: the same lines for the same message, every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const WORDS: [&str; 12] = [
        "the", "mail", "server", "line", "of", "text", "POP3", "message", "and", "a", "body", "to",
    ];
    while text.len() < size {
        let r = next();
        if r % 29 == 0 {
            text.extend_from_slice(b".a line that starts with a dot");
        }
        let words = 6 + (r % 8) as usize;
        for w in 0..words {
            if w > 0 {
                text.push(b' ');
            }
            text.extend_from_slice(WORDS[((r >> (w * 4)) % 12) as usize].as_bytes());
        }
        text.push(b'\n');
    }
    text
}

/// What a server must send for `stored` after its `+OK` line: CRLF line
/// ends, dot-stuffed, then the terminating `.` line.
pub(crate) fn wire(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 40 + 8);
    for line in stored.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Writes `users` Maildirs under `root` with `messages` messages of about
/// `size` bytes each, and the users file (`{PLAIN}` passwords, in the
/// passwd-file format pop3d and Dovecot both read) at `users_file`.
pub(crate) fn write_maildirs(
    root: &Path,
    users_file: &Path,
    users: usize,
    messages: usize,
    size: usize,
) -> io::Result<()> {
    let bodies: Vec<Vec<u8>> = (1..=messages).map(|n| stored(n, size)).collect();
    let mut list = Vec::new();
    for i in 0..users {
        let dir = root.join(user(i));
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        for (n, body) in bodies.iter().enumerate() {
            // Delivery order is name order: the time part counts up.
            let name = format!("{}.M{n}P1.load", 1_700_000_000 + n);
            fs::write(dir.join("new").join(name), body)?;
        }
        writeln!(list, "{}:{{PLAIN}}{}::::::", user(i), password(i))?;
    }
    fs::write(users_file, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_deterministic_and_need_stuffing() {
        let a = stored(3, 10_000);
        assert_eq!(a, stored(3, 10_000));
        assert_ne!(a, stored(4, 10_000));
        assert!(a.len() >= 10_000 && !a.contains(&b'\r'));
        let w = wire(&a);
        assert!(w.windows(3).any(|x| x == b"\n.."), "some line is stuffed");
        assert!(w.ends_with(b"\r\n.\r\n"));
        assert_eq!(wire(b"a\n.b\r\nc"), b"a\r\n..b\r\nc\r\n.\r\n");
    }
}
