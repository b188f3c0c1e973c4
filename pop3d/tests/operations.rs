//! Process plumbing, as an operator runs pop3d: `check-config`, the exit
//! statuses of startup failures, inetd mode (a pipe, and a socket from
//! `systemd-socket-activate --inetd`), systemd socket activation with a
//! plain and an implicit TLS socket, and SIGHUP reloading the users file
//! without dropping sessions.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use pop3_conformance::tls::{TestPki, TlsClient};
use pop3_conformance::Client;
use support::{free_port, Site, BIN};

/// A child process whose stdout and stderr lines are collected.
struct Spawned {
    child: Child,
    lines: Receiver<String>,
}

impl Spawned {
    fn new(command: &mut Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("child: {line}");
                let _ = tx2.send(line);
            }
        });
        Self { child, lines }
    }

    /// Waits (up to 20 s) for a line containing `text`.
    fn wait_for(&self, text: &str) -> String {
        support::wait_for_line(&self.lines, text)
    }

    fn hangup(&self) {
        support::signal(&self.child, "-HUP");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pop3d ARGS` to its end: exit status, stdout and stderr.
fn pop3d(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Connects to `addr`, retrying while the socket is not up yet.
fn greeted(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (c, greeting) = Client::greeted(addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    c
}

#[test]
fn check_config_accepts_good_settings_and_names_each_problem() {
    let site = Site::new();
    let dir = site.dir.path();
    let settings = dir.join("pop3d.toml");
    std::fs::write(
        &settings,
        format!(
            "maildir-root = \"{}\"\nusers = \"{}\"\nlisten = [\"127.0.0.1:1110\"]\n",
            path(&site.root()),
            path(&site.users())
        ),
    )
    .unwrap();
    let (status, out, err) = pop3d(&["check-config", path(&settings)]);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        out.contains("configuration OK: 2 users") && out.contains("listen [127.0.0.1:1110]"),
        "{out}"
    );
    // Options on the command line are checked with the file and win.
    let (status, out, _) = pop3d(&[
        "check-config",
        path(&settings),
        "--listen",
        "127.0.0.1:2110",
    ]);
    assert_eq!(status, Some(0));
    assert!(out.contains("listen [127.0.0.1:2110]"), "{out}");

    let bad = |text: &str| {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        pop3d(&["check-config", path(&file)])
    };
    let root = path(&site.root()).to_owned();
    let users = path(&site.users()).to_owned();
    // A misspelt setting.
    let (status, _, err) = bad(&format!("maildir-root = \"{root}\"\nuserz = \"{users}\"\n"));
    assert_eq!(status, Some(78), "{err}");
    assert!(err.contains("unknown field `userz`"), "{err}");
    // A users file that is not there.
    let (status, _, err) = bad(&format!(
        "maildir-root = \"{root}\"\nusers = \"{root}/missing\"\n"
    ));
    assert_eq!(status, Some(66), "{err}");
    assert!(err.contains("cannot read the users file"), "{err}");
    // A Maildir root that is not there, and one that is a file.
    let (status, _, err) = bad(&format!(
        "maildir-root = \"{root}/missing\"\nusers = \"{users}\"\n"
    ));
    assert_eq!(status, Some(66), "{err}");
    assert!(err.contains("the Maildir root"), "{err}");
    let (status, _, err) = bad(&format!(
        "maildir-root = \"{users}\"\nusers = \"{users}\"\n"
    ));
    assert_eq!(status, Some(78), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    // A certificate file that is not a certificate.
    let (status, _, err) = bad(&format!(
        "maildir-root = \"{root}\"\nusers = \"{users}\"\ntls-cert = \"{users}\"\ntls-key = \"{users}\"\n"
    ));
    assert_eq!(status, Some(78), "{err}");
    // A settings file that is not there.
    let (status, _, err) = pop3d(&["check-config", &format!("{root}/none.toml")]);
    assert_eq!(status, Some(66), "{err}");
    assert!(err.contains("cannot read the settings file"), "{err}");
}

#[test]
fn startup_failures_exit_with_their_status_and_say_why() {
    let site = Site::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (root, users) = (
        path(&site.root()).to_owned(),
        path(&site.users()).to_owned(),
    );
    let (status, _, err) = pop3d(&[
        "--listen",
        &addr,
        "--maildir-root",
        &root,
        "--users",
        &users,
    ]);
    assert_eq!(status, Some(69), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
    let (status, _, err) = pop3d(&[
        "--listen",
        "127.0.0.1:0",
        "--maildir-root",
        &root,
        "--users",
        &format!("{users}.missing"),
    ]);
    assert_eq!(status, Some(66), "{err}");
    let (status, _, err) = pop3d(&[
        "--listen",
        "127.0.0.1:0",
        "--maildir-root",
        &format!("{root}/missing"),
        "--users",
        &users,
    ]);
    assert_eq!(status, Some(66), "{err}");
    assert!(err.contains("the Maildir root"), "{err}");
}

/// Too few descriptors to run at all: exit 71 and say so, not a panic in
/// the runtime's drivers.
#[test]
fn too_few_descriptors_is_a_startup_failure() {
    let site = Site::new();
    let command = format!(
        "ulimit -n 7 && exec {BIN} --listen 127.0.0.1:0 --maildir-root {} --users {}",
        path(&site.root()),
        path(&site.users())
    );
    let out = Command::new("sh")
        .args(["-c", &command])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{err}");
    assert!(err.contains("open descriptors"), "{err}");
}

#[test]
fn inetd_mode_serves_one_session_over_a_pipe() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: piped\r\n\r\nover stdio\r\n");
    let mut child = Command::new(BIN)
        .args(["--inetd", "--maildir-root", path(&site.root())])
        .args(["--users", path(&site.users())])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"USER bob\r\nPASS bobpw\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("+OK POP3 server ready\r\n"), "{text}");
    assert!(
        text.contains("\r\nSubject: piped\r\n\r\nover stdio\r\n.\r\n"),
        "{text}"
    );
    assert!(text.ends_with("signing off (maildrop empty)\r\n"), "{text}");
    assert!(site.files("bob").is_empty(), "QUIT committed the DELE");
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        log.contains("session ended") && log.contains("reason=quit"),
        "{log}"
    );
}

#[test]
fn inetd_mode_over_a_socket_knows_the_client_address() {
    let site = Site::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let activate = Spawned::new(
        Command::new("systemd-socket-activate")
            .args(["--inetd", "--accept", "--listen", &listen, BIN, "--inetd"])
            .args(["--maildir-root", path(&site.root())])
            .args(["--users", path(&site.users())]),
    );
    activate.wait_for("Listening on");
    for _ in 0..2 {
        let mut c = greeted(listen.parse().unwrap());
        assert!(c.command("USER bob").starts_with("+OK"));
        assert!(c.command("PASS bobpw").starts_with("+OK"));
        assert!(c.command("QUIT").starts_with("+OK"));
        let ended = activate.wait_for("session ended");
        assert!(ended.contains("peer=\"127.0.0.1:"), "{ended}");
    }
}

#[test]
fn socket_activation_serves_the_passed_plain_and_implicit_tls_sockets() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: activated\r\n\r\nhello\r\n");
    let pki = TestPki::new();
    let (cert, key) = (
        site.dir.path().join("chain.pem"),
        site.dir.path().join("key.pem"),
    );
    std::fs::write(&cert, &pki.chain_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let (plain, tls): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let _activate = Spawned::new(
        Command::new("systemd-socket-activate")
            .args(["--listen", &plain.to_string(), "--listen", &tls.to_string()])
            .args(["--fdname", "pop3:pop3s", BIN])
            .args(["--maildir-root", path(&site.root())])
            .args(["--users", path(&site.users())])
            .args(["--tls-cert", path(&cert), "--tls-key", path(&key)]),
    );
    // The first connection starts pop3d, which serves it on the socket
    // passed to it.
    let mut c = greeted(plain);
    let capa = {
        c.send(b"CAPA\r\n");
        String::from_utf8(c.multiline()).unwrap()
    };
    assert!(capa.contains("\r\nSTLS\r\n"), "{capa}");
    assert!(c.command("QUIT").starts_with("+OK"));
    let (mut s, greeting) = TlsClient::greeted(tls, pki.client(&[b"pop3"]));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    s.login("bob", "bobpw");
    assert!(s.command("STAT").starts_with("+OK 1 "));
    assert!(s.command("QUIT").starts_with("+OK"));
}

#[test]
fn sighup_reloads_the_users_file_without_dropping_sessions() {
    let site = Site::new();
    std::fs::write(site.users(), "bob:{PLAIN}old-password\n").unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(site.root().join("carol").join(sub)).unwrap();
    }
    let server = Spawned::new(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--maildir-root", path(&site.root())])
            .args(["--users", path(&site.users())]),
    );
    let addr: SocketAddr = server
        .wait_for("pop3d listening on ")
        .trim()
        .strip_prefix("pop3d listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let mut before = Client::login(addr, "bob", "old-password");
    std::fs::write(
        site.users(),
        "bob:{PLAIN}new-password\ncarol:{PLAIN}carolpw\n",
    )
    .unwrap();
    server.hangup();
    assert!(server.wait_for("users file reloaded").contains("users=2"));
    // The session logged in before goes on.
    assert!(before.command("STAT").starts_with("+OK"));
    assert!(before.command("QUIT").starts_with("+OK"));
    let mut carol = Client::login(addr, "carol", "carolpw");
    assert!(carol.command("QUIT").starts_with("+OK"));
    let (mut c, _) = Client::greeted(addr);
    assert!(c.command("USER bob").starts_with("+OK"));
    assert!(c.command("PASS old-password").starts_with("-ERR [AUTH]"));
    let mut bob = Client::login(addr, "bob", "new-password");
    assert!(bob.command("QUIT").starts_with("+OK"));
    // A file that cannot be read is not loaded; the users stay as they were.
    std::fs::remove_file(site.users()).unwrap();
    server.hangup();
    assert!(server
        .wait_for("users file not reloaded")
        .contains("keeping the old users"));
    let mut carol = Client::login(addr, "carol", "carolpw");
    assert!(carol.command("QUIT").starts_with("+OK"));
}
