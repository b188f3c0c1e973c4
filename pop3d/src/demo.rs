//! The built-in demo: a fresh Maildir with a few realistic messages and one
//! user, `demo` / `demo`.

use std::fs;
use std::io;
use std::path::Path;

use crate::users::{Stored, Users};

/// The demo user and password.
pub(crate) const USER: &str = "demo";
pub(crate) const PASSWORD: &str = "demo";

/// Writes the demo Maildir under `root` and returns its users.
pub(crate) fn create(root: &Path) -> io::Result<Users> {
    let dir = root.join(USER);
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let messages: [(&str, Vec<u8>); 4] = [
        ("new", welcome().into_bytes()),
        ("new", dots().into_bytes()),
        ("cur", attachment().into_bytes()),
        ("new", large()),
    ];
    for (i, (sub, body)) in messages.iter().enumerate() {
        let name = format!(
            "{}.M{i}P{}.demo,S={}",
            now + i as u64,
            std::process::id(),
            body.len()
        );
        let name = if *sub == "cur" {
            format!("{name}:2,S")
        } else {
            name
        };
        fs::write(dir.join(sub).join(name), body)?;
    }
    Ok(Users::single(
        USER,
        Stored::Plain(PASSWORD.to_owned().into()),
    ))
}

fn welcome() -> String {
    "From: pop3d <postmaster@localhost>\r\n\
     To: demo@localhost\r\n\
     Subject: Welcome to pop3d\r\n\
     Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n\
     Message-ID: <welcome@pop3d.localhost>\r\n\
     Content-Type: text/plain; charset=utf-8\r\n\
     \r\n\
     This is a demo maildrop served by pop3d over a temporary Maildir.\r\n\
     Try: RETR, TOP 1 0, UIDL, DELE, RSET and QUIT.\r\n\
     Grüße — the UTF-8 in this line is sent as is.\r\n"
        .to_owned()
}

fn dots() -> String {
    "From: Dot Matrix <dots@localhost>\r\n\
     To: demo@localhost\r\n\
     Subject: Lines that begin with a dot\r\n\
     Date: Sat, 28 Nov 2026 12:05:00 +0000\r\n\
     \r\n\
     The next line is a single dot, which POP3 must not take for the end:\r\n\
     .\r\n\
     .. two dots\r\n\
     .leading dot\r\n\
     Stored with bare LF line ends from here on:\n\
     still one message\n"
        .to_owned()
}

fn attachment() -> String {
    let lines: String = (0..40)
        .map(|i| format!("{i:3}  {}\n", "data row for the attachment"))
        .collect();
    let encoded = base64_lines(lines.as_bytes());
    format!(
        "From: Reports <reports@localhost>\r\n\
         To: demo@localhost\r\n\
         Subject: Quarterly numbers (with attachment)\r\n\
         Date: Sat, 28 Nov 2026 12:10:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         The numbers are attached.\r\n\
         --b1\r\n\
         Content-Type: text/plain; name=\"numbers.txt\"\r\n\
         Content-Disposition: attachment; filename=\"numbers.txt\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {encoded}\
         --b1--\r\n"
    )
}

fn large() -> Vec<u8> {
    let mut body = b"From: Bulk <bulk@localhost>\r\n\
        To: demo@localhost\r\n\
        Subject: A large message (about 4 MB)\r\n\
        Date: Sat, 28 Nov 2026 12:15:00 +0000\r\n\
        \r\n"
        .to_vec();
    let mut n = 0u64;
    while body.len() < 4 << 20 {
        body.extend_from_slice(
            format!("{n:08} Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n")
                .as_bytes(),
        );
        n += 1;
    }
    body
}

/// Base64 in 76-column CRLF lines, as MIME wants it.
fn base64_lines(data: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|line| {
            format!(
                "{}\r\n",
                std::str::from_utf8(line).expect("base64 is ASCII")
            )
        })
        .collect()
}
