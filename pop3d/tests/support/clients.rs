//! The real-client checks that run against every store (Maildir in
//! e2e.rs, PostgreSQL in postgres.rs): Python's poplib and curl fetching
//! tricky messages byte for byte, and a raw client's UIDL listing.

use std::net::SocketAddr;
use std::process::Command;

use base64::Engine as _;
use pop3_conformance::Client;
use pop3_proto::testing::{escape_bytes, expected_top, normalize_body, ScramClient};

/// Messages that trip up dot-stuffing, line endings and 8-bit text, and
/// last a large one of about `big_mib` MiB with dot-led lines.
pub(crate) fn tricky_messages(big_mib: usize) -> Vec<Vec<u8>> {
    let mut big = Vec::with_capacity(big_mib << 20);
    big.extend_from_slice(format!("Subject: {big_mib} megabytes\r\n\r\n").as_bytes());
    let mut i = 0u64;
    while big.len() < big_mib << 20 {
        big.extend_from_slice(format!("{i:09} .dots. and text to fill the line\r\n").as_bytes());
        if i.is_multiple_of(1000) {
            big.extend_from_slice(b".a line that starts with a dot\r\n");
        }
        i += 1;
    }
    vec![
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nend\r\n".to_vec(),
        b".Subject-ish first byte is a dot\r\n\r\nbody\r\n".to_vec(),
        b"Subject: no final newline\r\n\r\nlast line".to_vec(),
        b"Subject: bare LF\n\nline one\nline two\n".to_vec(),
        "Subject: =?utf-8?q?8-bit?=\r\n\r\nGrüße, 東京, ÿ\r\n"
            .as_bytes()
            .to_vec(),
        big,
    ]
}

/// Python's poplib (tests/clients/fetch_all.py) logs in as `user` at
/// `addr`, whose maildrop holds `messages` in order: every RETR is the
/// message in CRLF form, every TOP n 0 its header, every LIST size right.
pub(crate) fn poplib_fetches_byte_for_byte(
    addr: SocketAddr,
    user: &str,
    password: &str,
    messages: &[Vec<u8>],
) {
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fetch_all.py");
    let port = addr.port().to_string();
    let status = Command::new("python3")
        .args([
            script,
            &addr.ip().to_string(),
            &port,
            user,
            password,
            out.path().to_str().unwrap(),
        ])
        .status()
        .expect("python3");
    assert!(status.success());
    let list = std::fs::read_to_string(out.path().join("list.txt")).unwrap();
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        let wire = normalize_body(m);
        let got = std::fs::read(out.path().join(format!("retr_{n}"))).unwrap();
        assert!(
            got == wire,
            "RETR {n} differs: {}",
            escape_bytes(&got[..got.len().min(200)])
        );
        assert_eq!(
            std::fs::read(out.path().join(format!("top_{n}"))).unwrap(),
            expected_top(m, 0),
            "TOP {n} 0"
        );
        assert!(
            list.contains(&format!("{n} {}\n", wire.len())),
            "LIST size of {n}: {list}"
        );
    }
}

/// `curl URL` as `auth` (`user:password`) with `extra` arguments;
/// panics unless curl succeeds; its output.
pub(crate) fn curl(url: &str, auth: &str, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", auth, url])
        .args(extra)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// curl retrieves each of `messages` (the first ones of `user`'s
/// maildrop at `addr`, at least two) in CRLF form, and TOP 2 0 gives the
/// second one's header.
pub(crate) fn curl_lists_and_retrieves(
    addr: SocketAddr,
    user: &str,
    password: &str,
    messages: &[Vec<u8>],
) {
    let url = format!("pop3://{addr}/");
    let auth = format!("{user}:{password}");
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            curl(&format!("{url}{}", i + 1), &auth, &[]),
            normalize_body(m),
            "curl RETR {}",
            i + 1
        );
    }
    assert_eq!(
        curl(&url, &auth, &["-X", "TOP 2 0"]),
        expected_top(&messages[1], 0)
    );
}

/// `user`'s UIDL listing (the multi-line body, with its ".").
pub(crate) fn uidl(addr: SocketAddr, user: &str, password: &str) -> Vec<u8> {
    let mut c = Client::login(addr, user, password);
    assert!(c.command("UIDL").starts_with("+OK"));
    let listing = c.multiline();
    c.command("QUIT");
    listing
}

/// A SCRAM-SHA-256 exchange over `c` (greeted) as `user` with `password`:
/// the server's reply to the client's final message, and the reply a
/// right password gets (`+ ` and the server's final message).
pub(crate) fn scram(c: &mut Client, user: &str, password: &str) -> (String, String) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let client = ScramClient::new(user, password);
    let challenge = c.command(&format!("AUTH SCRAM-SHA-256 {}", client.first()));
    let first = String::from_utf8(b64.decode(&challenge[2..]).unwrap()).unwrap();
    let last = client.finish(&first);
    (
        c.command(&last.response),
        format!("+ {}", last.server_final),
    )
}
