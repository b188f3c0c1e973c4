//! What pop3d's end-to-end and abuse tests share: the server as a child
//! process, a Maildir site with users, and its memory.
#![allow(dead_code)] // each test binary uses its own part

pub(crate) mod clients;
pub(crate) mod cluster;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_pop3d");

/// A running pop3d; killed on drop.
pub(crate) struct Pop3d {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Pop3d {
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pop3d");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("pop3d listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, addr }
    }

    pub(crate) fn with_maildir(root: &Path, users: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "--maildir-root",
            root.to_str().unwrap(),
            "--users",
            users.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the graceful exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        signal(&self.child, "-TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Pop3d {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running pop3d on 127.0.0.1 (`--listen 127.0.0.1:0` and `args`,
/// `RUST_LOG=info`) whose log lines (stderr) are collected; killed on drop.
pub(crate) struct LoggedPop3d {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// The metrics URL, when started with `--metrics`.
    pub(crate) metrics: Option<String>,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
}

impl LoggedPop3d {
    /// Starts pop3d and reads its stdout up to the listening address (and
    /// the metrics URL when `args` has `--metrics`); other lines, such as
    /// the demo's hints, are passed over.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pop3d");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let collected = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let wants_metrics = args.contains(&"--metrics");
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || (wants_metrics && metrics.is_none()) {
            let line = out.next().expect("pop3d's ready lines").unwrap();
            if let Some(a) = line.strip_prefix("pop3d listening on ") {
                addr = Some(a.parse().unwrap());
            } else if let Some(url) = line.strip_prefix("pop3d metrics on ") {
                metrics = Some(url.to_owned());
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in out {});
        Self {
            child,
            addr: addr.unwrap(),
            metrics,
            logs,
        }
    }

    /// The log lines so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for LoggedPop3d {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (bound and released at once).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A maildir root with user `alice` whose password is hashed by `pop3d passwd`.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) const PASSWORD: &str = "correct horse battery";

impl Site {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let line = passwd(&["alice"], PASSWORD);
        assert!(line.starts_with("alice:{ARGON2ID}$argon2id$"), "{line}");
        std::fs::write(
            dir.path().join("users"),
            format!("# pop3d users\n{line}bob:{{PLAIN}}bobpw::::::\n"),
        )
        .unwrap();
        for user in ["alice", "bob"] {
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(dir.path().join("mail").join(user).join(sub)).unwrap();
            }
        }
        Self { dir }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub(crate) fn users(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    /// Delivers into `new/` (or `cur/`) with a Maildir name; returns the unique part.
    pub(crate) fn deliver(&self, user: &str, sub: &str, seq: u32, body: &[u8]) -> String {
        let unique = format!("{}.M{seq}P1.test", 1_700_000_000 + seq);
        let name = if sub == "cur" {
            format!("{unique}:2,S")
        } else {
            unique.clone()
        };
        std::fs::write(self.root().join(user).join(sub).join(name), body).unwrap();
        unique
    }

    pub(crate) fn files(&self, user: &str) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(self.root().join(user).join(sub)).unwrap() {
                names.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        names.sort();
        names
    }

    pub(crate) fn serve(&self) -> Pop3d {
        Pop3d::with_maildir(&self.root(), &self.users(), &[])
    }
}

/// `pop3d ARGS` run to its end with `stdin` on its standard input
/// (written from another thread, so a large input cannot deadlock).
pub(crate) fn run_with_input(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pop3d");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// `pop3d passwd ARGS` with `password` on standard input: the users-file line.
pub(crate) fn passwd(args: &[&str], password: &str) -> String {
    let mut passwd = Command::new(BIN)
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    passwd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Sends `signal` (`-HUP`, `-TERM`) to `child` with kill(1).
pub(crate) fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (up to 20 s) for a line from `lines` (a child's output)
/// containing `text`, and returns it.
pub(crate) fn wait_for_line(lines: &Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => panic!("never printed {text:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("exited before printing {text:?}"),
        }
    }
}

/// Every sample of a `/metrics` scrape at `url`, parsed by
/// prometheus_client's parsers (`tests/clients/scrape.py`).
pub(crate) fn scrape(url: &str) -> std::collections::BTreeMap<String, f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/scrape.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(url)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}
