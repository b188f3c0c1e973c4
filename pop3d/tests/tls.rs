//! End to end over TLS: the built `pop3d` binary on loopback with a test
//! PKI, driven by curl (`--ssl-reqd pop3://` for STLS, `pop3s://`), Python's
//! poplib (`stls()`, `POP3_SSL`) and a rustls client; certificate rotation
//! with SIGHUP.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use pop3_conformance::tls::{TestPki, TlsClient};
use pop3_conformance::Client;

const BIN: &str = env!("CARGO_BIN_EXE_pop3d");
const BODY: &str = "Subject: over TLS\r\n\r\nsent encrypted\r\n";

/// A running pop3d with its addresses and its log; killed on drop.
struct Pop3d {
    child: Child,
    /// The plain (STLS) listener.
    plain: SocketAddr,
    /// The implicit TLS listener.
    tls: SocketAddr,
    /// The demo hints and other lines after the addresses.
    stdout: Vec<String>,
    log: Receiver<String>,
}

impl Pop3d {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pop3d");
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("pop3d: {line}");
                let _ = tx.send(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut next = || {
            line.clear();
            out.read_line(&mut line).unwrap();
            line.trim_end().to_owned()
        };
        let plain = next()
            .strip_prefix("pop3d listening on ")
            .expect("the plain listener's line")
            .parse()
            .unwrap();
        let tls = next()
            .strip_prefix("pop3d listening for implicit TLS on ")
            .expect("the implicit TLS listener's line")
            .parse()
            .unwrap();
        let mut stdout = Vec::new();
        // The demo prints its hints next; a site prints nothing more.
        if args.is_empty() {
            for _ in 0..5 {
                stdout.push(next());
            }
        }
        std::thread::spawn(move || for _ in out.lines() {});
        Self {
            child,
            plain,
            tls,
            stdout,
            log,
        }
    }

    /// Sends SIGHUP.
    fn hangup(&self) {
        support::signal(&self.child, "-HUP");
    }

    /// Waits for a log line containing `text` (up to 20 s).
    fn logged(&self, text: &str) -> String {
        support::wait_for_line(&self.log, text)
    }
}

impl Drop for Pop3d {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Maildir root with user `bob` (password `bobpw`) and one message, and
/// the PEM files of a test PKI.
struct Site {
    dir: tempfile::TempDir,
    pki: TestPki,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "bob:{PLAIN}bobpw\n").unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join("mail/bob").join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("mail/bob/new/1700000000.M1P1.test"), BODY).unwrap();
        let site = Self {
            dir,
            pki: TestPki::new(),
        };
        site.install(&site.pki);
        std::fs::write(site.path("ca.pem"), &site.pki.ca_pem).unwrap();
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `pki`'s chain and key where pop3d reads them.
    fn install(&self, pki: &TestPki) {
        std::fs::write(self.path("chain.pem"), &pki.chain_pem).unwrap();
        std::fs::write(self.path("key.pem"), &pki.key_pem).unwrap();
    }

    fn serve(&self) -> Pop3d {
        let arg = |name: &str| self.path(name).to_str().unwrap().to_owned();
        let (root, users, cert, key) =
            (arg("mail"), arg("users"), arg("chain.pem"), arg("key.pem"));
        Pop3d::start(&[
            "--maildir-root",
            &root,
            "--users",
            &users,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl")
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn curl_supports_pop3s() {
    let out = Command::new("curl").arg("-V").output().expect("curl -V");
    let text = String::from_utf8_lossy(&out.stdout);
    let protocols = text
        .lines()
        .find(|l| l.starts_with("Protocols:"))
        .unwrap_or_default();
    assert!(
        protocols.split_whitespace().any(|p| p == "pop3s"),
        "this curl has no pop3s: {protocols}"
    );
}

#[test]
fn curl_stls_and_pop3s_with_the_test_ca() {
    let site = Site::new();
    let server = site.serve();
    let ca = site.path("ca.pem");
    let ca = path_str(&ca);
    let stls = curl(&[
        "--ssl-reqd",
        "--cacert",
        ca,
        "-u",
        "bob:bobpw",
        &format!("pop3://{}/1", server.plain),
    ]);
    assert!(
        stls.status.success(),
        "{}",
        String::from_utf8_lossy(&stls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&stls.stdout), BODY);
    let pop3s = curl(&[
        "--cacert",
        ca,
        "-u",
        "bob:bobpw",
        &format!("pop3s://{}/1", server.tls),
    ]);
    assert!(
        pop3s.status.success(),
        "{}",
        String::from_utf8_lossy(&pop3s.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&pop3s.stdout), BODY);
    // Without the CA the certificate is not trusted.
    let untrusted = curl(&["-u", "bob:bobpw", &format!("pop3s://{}/1", server.tls)]);
    assert!(!untrusted.status.success());
}

#[test]
fn the_demo_serves_pop3s_with_a_generated_certificate() {
    let server = Pop3d::start(&[]);
    let hints = server.stdout.join("\n");
    assert!(
        hints.contains(&format!("curl -k pop3s://{}/ -u demo:demo", server.tls)),
        "{hints}"
    );
    let list = curl(&["-k", &format!("pop3s://{}/", server.tls), "-u", "demo:demo"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 4);
    let first = curl(&[
        "--ssl-reqd",
        "-k",
        "-u",
        "demo:demo",
        &format!("pop3://{}/1", server.plain),
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("Subject: Welcome to pop3d"));
    // SIGHUP has nothing to reload there, and the server stays up.
    server.hangup();
    server.logged("nothing to reload");
    let again = curl(&["-k", &format!("pop3s://{}/", server.tls), "-u", "demo:demo"]);
    assert!(again.status.success());
}

#[test]
fn poplib_stls_and_pop3_ssl() {
    let site = Site::new();
    let server = site.serve();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/tls.py");
    let ca = site.path("ca.pem");
    let out = Command::new("python3")
        .args([
            script,
            "127.0.0.1",
            &server.plain.port().to_string(),
            &server.tls.port().to_string(),
            "bob",
            "bobpw",
            path_str(&ca),
        ])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = BODY.len();
    assert!(text.contains(&format!("stls 1 {size} TLSv1.3")), "{text}");
    assert!(text.contains(&format!("pop3s 1 {size} TLSv1.3")), "{text}");
}

/// A new TLS connection trusting `pki`: which certificate does it get?
fn served_certificate(addr: SocketAddr, pki: &TestPki) -> Vec<u8> {
    let (mut c, greeting) = TlsClient::greeted(addr, pki.client(&[b"pop3"]));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert_eq!(c.alpn(), Some(&b"pop3"[..]));
    let cert = c.server_certificate();
    assert!(c.command("QUIT").starts_with("+OK"));
    cert
}

#[test]
fn sighup_rotates_the_certificate_without_dropping_sessions() {
    let site = Site::new();
    let server = site.serve();
    let old = &site.pki;
    assert_eq!(served_certificate(server.tls, old), old.leaf_der());

    // Sessions under the old certificate: implicit TLS and STLS.
    let (mut implicit, _) = TlsClient::greeted(server.tls, old.client(&[]));
    implicit.login("bob", "bobpw");
    let (mut plain, _) = Client::greeted(server.plain);
    assert_eq!(plain.command("STLS"), "+OK Begin TLS negotiation");
    let mut upgraded = plain.start_tls(old.client(&[]));
    assert_eq!(upgraded.command("CAPA"), "+OK capability list follows");
    upgraded.multiline();

    // Rotate: new handshakes get the new certificate.
    let new = TestPki::new();
    site.install(&new);
    server.hangup();
    server.logged("TLS certificate reloaded");
    assert_eq!(served_certificate(server.tls, &new), new.leaf_der());
    let (mut c, _) = Client::greeted(server.plain);
    assert_eq!(c.command("STLS"), "+OK Begin TLS negotiation");
    let mut c = c.start_tls(new.client(&[]));
    assert_eq!(c.server_certificate(), new.leaf_der());
    assert!(c.command("QUIT").starts_with("+OK"));

    // A bad new certificate (garbage, or a key of another certificate)
    // keeps the one served so far.
    std::fs::write(site.path("chain.pem"), "not a certificate\n").unwrap();
    server.hangup();
    let why = server.logged("keeping the old certificate");
    assert!(why.contains("no usable PEM certificate"), "{why}");
    assert_eq!(served_certificate(server.tls, &new), new.leaf_der());
    std::fs::write(site.path("chain.pem"), &new.chain_pem).unwrap();
    std::fs::write(site.path("key.pem"), &old.key_pem).unwrap();
    server.hangup();
    let why = server.logged("keeping the old certificate");
    assert!(why.contains("do not belong together"), "{why}");
    assert_eq!(served_certificate(server.tls, &new), new.leaf_der());

    // The sessions from before the rotation went on all along.
    assert_eq!(implicit.command("STAT"), format!("+OK 1 {}", BODY.len()));
    assert_eq!(
        implicit.command("RETR 1"),
        format!("+OK {} octets", BODY.len())
    );
    assert_eq!(implicit.multiline(), format!("{BODY}.\r\n").into_bytes());
    assert!(implicit.command("QUIT").starts_with("+OK"));
    assert_eq!(
        upgraded.command("NOOP"),
        "-ERR command not valid before login"
    );
    upgraded.login("bob", "bobpw");
    assert!(upgraded.command("QUIT").starts_with("+OK"));
}

#[test]
fn tls_settings_errors_are_reported() {
    let site = Site::new();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = site.path("chain.pem");
    let err = run(&["--tls-cert", path_str(&cert)]);
    assert!(
        err.contains("--tls-cert and --tls-key go together"),
        "{err}"
    );
    let (root, users) = (site.path("mail"), site.path("users"));
    let err = run(&[
        "--maildir-root",
        path_str(&root),
        "--users",
        path_str(&users),
        "--listen-tls",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("--listen-tls needs a certificate"), "{err}");
    let missing = site.path("missing.pem");
    let err = run(&[
        "--tls-cert",
        path_str(&missing),
        "--tls-key",
        path_str(&missing),
    ]);
    assert!(err.contains("cannot read"), "{err}");
}
