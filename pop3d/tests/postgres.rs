//! The PostgreSQL store end to end: a throwaway cluster per test
//! (`support::cluster`), the built `pop3d` binary serving it on loopback
//! (`--store`), seeded with `pop3d db migrate`, `pop3d user ...` and
//! `pop3d deliver`, and checked with Python's poplib, curl and a raw
//! client.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pop3_conformance::Client;
use pop3_proto::testing::normalize_body;
use support::clients::{self, tricky_messages};
use support::cluster::Cluster;
use support::{LoggedPop3d, Pop3d, BIN, PASSWORD};

/// `pop3d ARGS` with `stdin` on its standard input.
fn pop3d(args: &[&str], stdin: &[u8]) -> Output {
    support::run_with_input(args, stdin)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A migrated database with `alice` (Argon2id, [`PASSWORD`]) and `bob`
/// (`{PLAIN}bobpw`).
struct Db {
    cluster: Cluster,
    url: String,
}

impl Db {
    fn new() -> Self {
        let cluster = Cluster::start();
        let url = cluster.url();
        ok(&pop3d(&["db", "migrate", "--store", &url], b""));
        ok(&pop3d(
            &["user", "add", "--store", &url, "alice"],
            format!("{PASSWORD}\n").as_bytes(),
        ));
        let users = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(users.path(), "bob:{PLAIN}bobpw::::::\n").unwrap();
        ok(&pop3d(
            &[
                "user",
                "import",
                "--store",
                &url,
                users.path().to_str().unwrap(),
            ],
            b"",
        ));
        Self { cluster, url }
    }

    fn deliver(&self, user: &str, message: &[u8]) -> Output {
        pop3d(&["deliver", "--store", &self.url, user], message)
    }

    fn serve(&self, extra: &[&str]) -> Pop3d {
        let mut args = vec!["--store", self.url.as_str()];
        args.extend_from_slice(extra);
        Pop3d::start(&args)
    }
}

fn stat(addr: SocketAddr, user: &str, password: &str) -> String {
    let mut c = Client::login(addr, user, password);
    let stat = c.command("STAT");
    c.command("QUIT");
    stat
}

#[test]
fn migrations_users_and_delivery_exit_codes() {
    let db = Db::new();
    let again = ok(&pop3d(&["db", "migrate", "--store", &db.url], b""));
    assert!(again.contains("up to date"), "{again}");
    assert_eq!(db.cluster.sql("SELECT count(*) FROM pop3d_migrations"), "1");
    assert!(db
        .deliver("alice", b"Subject: one\r\n\r\nhi\r\n")
        .status
        .success());
    assert!(db
        .deliver("bob", b"Subject: two\n\nbare LF\n")
        .status
        .success());
    assert_eq!(db.deliver("nobody", b"x\r\n").status.code(), Some(67));
    let list = ok(&pop3d(&["user", "list", "--store", &db.url], b""));
    // Sizes in CRLF octets, counted at delivery (bob's 22 octets with
    // three bare LFs: 25).
    assert_eq!(
        list, "alice\tARGON2ID\t1\t20\nbob\tPLAIN\t1\t25\n",
        "{list}"
    );
    let out = pop3d(&["user", "remove", "--store", &db.url, "bob"], b"");
    ok(&out);
    assert_eq!(db.deliver("bob", b"x\r\n").status.code(), Some(67));
    assert_eq!(
        pop3d(&["user", "remove", "--store", &db.url, "bob"], b"")
            .status
            .code(),
        Some(67)
    );
    // A database that is down is a temporary failure: the sender retries.
    let mut db = db;
    db.cluster.stop();
    let out = db.deliver("alice", b"Subject: later\r\n\r\n");
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn poplib_and_curl_fetch_tricky_messages_byte_for_byte() {
    let db = Db::new();
    let messages = tricky_messages(3);
    for m in &messages {
        ok(&db.deliver("alice", m));
    }
    let server = db.serve(&[]);
    clients::poplib_fetches_byte_for_byte(server.addr, "alice", PASSWORD, &messages);
    clients::curl_lists_and_retrieves(server.addr, "alice", PASSWORD, &messages[..5]);
    let url = format!("pop3://{}/", server.addr);
    // A {PLAIN} user imported from a users file, by SASL PLAIN (curl's choice).
    clients::curl(&url, "bob:bobpw", &[]);
    // Wrong passwords and unknown users: the same [AUTH] refusal.
    for (user, password) in [("alice", "wrong"), ("nobody", "x"), ("bob", "wrong")] {
        let mut c = Client::connect(server.addr);
        c.line();
        c.command(&format!("USER {user}"));
        let reply = c.command(&format!("PASS {password}"));
        assert!(reply.starts_with("-ERR [AUTH]"), "{user}: {reply}");
    }
}

fn uidl(addr: SocketAddr) -> Vec<u8> {
    clients::uidl(addr, "alice", PASSWORD)
}

#[test]
fn uidls_are_stable_and_never_reused_and_only_quit_deletes() {
    let db = Db::new();
    for i in 0..3 {
        ok(&db.deliver(
            "alice",
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        ));
    }
    let server = db.serve(&[]);
    let first = uidl(server.addr);
    assert_eq!(first, uidl(server.addr), "UIDL is stable across sessions");
    // DELE without QUIT (the client goes away): nothing is deleted.
    {
        let mut c = Client::login(server.addr, "alice", PASSWORD);
        assert!(c.command("DELE 1").starts_with("+OK"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(stat(server.addr, "alice", PASSWORD).starts_with("+OK 3 "));
    // DELE then QUIT: gone, and its id is never given again.
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("DELE 1").starts_with("+OK"));
    assert!(c.command("QUIT").starts_with("+OK"));
    assert!(stat(server.addr, "alice", PASSWORD).starts_with("+OK 2 "));
    ok(&db.deliver("alice", b"Subject: new\r\n\r\n"));
    let text = String::from_utf8(uidl(server.addr)).unwrap();
    let old: Vec<&str> = std::str::from_utf8(&first)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    let now: Vec<&str> = text.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(now.len(), 3);
    assert_eq!(&now[..2], &old[1..], "the others keep their ids");
    assert!(
        !old.contains(&now[2]),
        "a new message gets a new id: {now:?} {old:?}"
    );
    assert!(now
        .iter()
        .all(|u| (1..=70).contains(&u.len()) && u.bytes().all(|b| (0x21..=0x7e).contains(&b))));
}

#[test]
fn two_instances_one_user_exactly_one_in_use() {
    let db = Db::new();
    ok(&db.deliver("alice", b"Subject: a\r\n\r\n"));
    let (a, b) = (db.serve(&[]), db.serve(&[]));
    // Both at once, many times: exactly one gets the maildrop.
    for _ in 0..5 {
        let logins: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .map(|addr| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    c.line();
                    c.command("USER alice");
                    let reply = c.command(&format!("PASS {PASSWORD}"));
                    (c, reply)
                })
            })
            .collect();
        let mut replies: Vec<(Client, String)> =
            logins.into_iter().map(|t| t.join().unwrap()).collect();
        let in_use = replies
            .iter()
            .filter(|(_, r)| r.starts_with("-ERR [IN-USE]"))
            .count();
        let ok = replies.iter().filter(|(_, r)| r.starts_with("+OK")).count();
        assert_eq!(
            (ok, in_use),
            (1, 1),
            "{:?}",
            replies.iter().map(|r| &r.1).collect::<Vec<_>>()
        );
        for (c, _) in &mut replies {
            c.command("QUIT");
        }
    }
    // Released at QUIT: the other instance gets it at once.
    assert!(stat(a.addr, "alice", PASSWORD).starts_with("+OK 1 "));
    assert!(stat(b.addr, "alice", PASSWORD).starts_with("+OK 1 "));
}

#[test]
fn a_killed_instances_lock_frees_itself_within_the_lease_time() {
    let db = Db::new();
    ok(&db.deliver("alice", b"Subject: a\r\n\r\n"));
    let lease = 3;
    let a = db.serve(&["--lease-seconds", "3"]);
    let b = db.serve(&["--lease-seconds", "3"]);
    let mut held = Client::login(a.addr, "alice", PASSWORD);
    assert!(held.command("STAT").starts_with("+OK 1 "));
    // Renewed while the session lives: still held after two lease times.
    std::thread::sleep(Duration::from_secs(2 * lease));
    let mut c = Client::connect(b.addr);
    c.line();
    c.command("USER alice");
    assert!(c
        .command(&format!("PASS {PASSWORD}"))
        .starts_with("-ERR [IN-USE]"));
    let killed = Instant::now();
    a.kill();
    let mut waited = None;
    while killed.elapsed() < Duration::from_secs(lease + 5) {
        let mut c = Client::connect(b.addr);
        c.line();
        c.command("USER alice");
        if c.command(&format!("PASS {PASSWORD}")).starts_with("+OK") {
            waited = Some(killed.elapsed());
            assert!(c.command("STAT").starts_with("+OK 1 "));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let waited = waited.expect("the lock never freed itself");
    assert!(
        waited <= Duration::from_secs(lease + 1),
        "freed after {waited:?}"
    );
    drop(held);
}

#[test]
fn a_session_whose_lease_was_taken_over_deletes_nothing() {
    let db = Db::new();
    for i in 0..3 {
        ok(&db.deliver("alice", format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes()));
    }
    // Renewals every second.
    let a = db.serve(&["--lease-seconds", "3"]);
    let b = db.serve(&["--lease-seconds", "3"]);
    // What an instance that stalled past its lease time looks like: the
    // lease expired, and another instance's session takes the maildrop.
    let expire = "UPDATE pop3d_leases SET expires_at = clock_timestamp() - interval '1 second'";
    let mut stale = Client::login(a.addr, "alice", PASSWORD);
    assert!(stale.command("DELE 1").starts_with("+OK"));
    assert!(stale.command("DELE 2").starts_with("+OK"));
    db.cluster.sql(expire);
    let mut taker = Client::login(b.addr, "alice", PASSWORD);
    assert!(taker.command("STAT").starts_with("+OK 3 "));
    // At once (before or after its renewal noticed): its QUIT deletes
    // nothing.
    let quit = stale.command("QUIT");
    assert!(quit.starts_with("-ERR"), "{quit}");
    assert!(taker.command("QUIT").starts_with("+OK"));
    assert!(stat(a.addr, "alice", PASSWORD).starts_with("+OK 3 "));

    // Idle past a renewal after the takeover: its next RETR ends it.
    let mut stale = Client::login(a.addr, "alice", PASSWORD);
    assert!(stale.command("DELE 3").starts_with("+OK"));
    db.cluster.sql(expire);
    let mut taker = Client::login(b.addr, "alice", PASSWORD);
    std::thread::sleep(Duration::from_millis(1500));
    stale.send(b"RETR 1\r\n");
    let (closed, rest) = stale.closed_within(Duration::from_secs(10));
    assert!(closed, "the session ends");
    assert!(
        !rest.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert!(taker.command("STAT").starts_with("+OK 3 "));
    assert!(taker.command("QUIT").starts_with("+OK"));
    assert!(stat(b.addr, "alice", PASSWORD).starts_with("+OK 3 "));
}

#[test]
fn deliveries_during_a_session_appear_in_the_next_one() {
    let db = Db::new();
    ok(&db.deliver("alice", b"Subject: first\r\n\r\nfirst\r\n"));
    let server = db.serve(&[]);
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("STAT").starts_with("+OK 1 "));
    ok(&db.deliver("alice", b"Subject: second\r\n\r\nsecond\r\n"));
    assert!(
        c.command("STAT").starts_with("+OK 1 "),
        "not in the current listing"
    );
    assert!(c.command("LIST 2").starts_with("-ERR"));
    assert!(c.command("DELE 1").starts_with("+OK"));
    assert!(c.command("QUIT").starts_with("+OK"));
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("STAT").starts_with("+OK 1 "));
    assert!(c.command("RETR 1").starts_with("+OK"));
    assert!(String::from_utf8(c.multiline()).unwrap().contains("second"));
}

#[test]
fn kill_9_during_a_quit_with_many_marked_messages_leaves_all_or_none() {
    let db = Db::new();
    let count = 3000;
    let mut outcomes = Vec::new();
    for delay_ms in [0u64, 2, 5, 10, 30] {
        db.cluster.sql("DELETE FROM pop3d_messages");
        // Seeded in bulk: each message one chunk of 2 KiB.
        db.cluster.sql(&format!(
            "WITH u AS (INSERT INTO pop3d_uidls (user_name, uidl)
                 SELECT 'alice', 'bulk' || g || '-' || {delay_ms} FROM generate_series(1, {count}) g RETURNING uidl),
             m AS (INSERT INTO pop3d_messages (user_name, uidl, size, octets, chunks)
                 SELECT 'alice', uidl, 2048, 2048, 1 FROM u RETURNING id)
             INSERT INTO pop3d_chunks (message_id, seq, data)
                 SELECT id, 0, convert_to(repeat('x', 2046) || E'\\r\\n', 'UTF8') FROM m"
        ));
        let server = db.serve(&["--lease-seconds", "2"]);
        let mut c = Client::login(server.addr, "alice", PASSWORD);
        let mut dele = String::new();
        for n in 1..=count {
            dele.push_str(&format!("DELE {n}\r\n"));
        }
        c.send(dele.as_bytes());
        for _ in 0..count {
            assert!(c.line().starts_with("+OK"));
        }
        c.send(b"QUIT\r\n");
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill();
        let left: u32 = db
            .cluster
            .sql("SELECT count(*) FROM pop3d_messages WHERE user_name = 'alice'")
            .parse()
            .unwrap();
        assert!(
            left == 0 || left == count,
            "{left} of {count} left after kill -9 at {delay_ms} ms"
        );
        outcomes.push(left);
        // After the lease time, another instance serves what is left.
        std::thread::sleep(Duration::from_secs(3));
        let server = db.serve(&[]);
        assert!(stat(server.addr, "alice", PASSWORD).starts_with(&format!("+OK {left} ")));
    }
    eprintln!("messages left after each kill -9: {outcomes:?}");
}

#[test]
fn the_database_down_at_login_and_mid_session() {
    let mut db = Db::new();
    for i in 0..3 {
        ok(&db.deliver("alice", format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes()));
    }
    let server = db.serve(&["--lease-seconds", "2"]);
    db.cluster.stop();
    let mut c = Client::connect(server.addr);
    c.line();
    c.command("USER alice");
    let reply = c.command(&format!("PASS {PASSWORD}"));
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    db.cluster.resume();
    // The pool reconnects: the server kept running.
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("STAT").starts_with("+OK 3 "));
    assert!(c.command("DELE 1").starts_with("+OK"));
    assert!(c.command("DELE 2").starts_with("+OK"));
    db.cluster.stop();
    // Down mid-session: the QUIT deletes nothing, and the session ends.
    let reply = c.command("QUIT");
    assert!(reply.starts_with("-ERR"), "{reply}");
    db.cluster.resume();
    // The lease could not be released: it expires by itself.
    std::thread::sleep(Duration::from_secs(3));
    assert!(stat(server.addr, "alice", PASSWORD).starts_with("+OK 3 "));
    // A retrieval with the database gone ends the session, nothing deleted.
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("DELE 3").starts_with("+OK"));
    db.cluster.stop();
    c.send(b"RETR 1\r\n");
    let (closed, _) = c.closed_within(Duration::from_secs(20));
    assert!(closed, "the session ends");
    db.cluster.resume();
    std::thread::sleep(Duration::from_secs(3));
    assert!(stat(server.addr, "alice", PASSWORD).starts_with("+OK 3 "));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_200_megabyte_message_is_served_with_bounded_memory() {
    let db = Db::new();
    // Written to `pop3d deliver` as it is made: neither side holds it whole.
    let head: &[u8] = b"Subject: two hundred megabytes\r\n\r\n";
    let line: &[u8] =
        b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?\r\n";
    let lines = (200 << 20) / line.len();
    let length = head.len() + lines * line.len();
    let mut deliver = Command::new(BIN)
        .args(["deliver", "--store", &db.url, "bob"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = deliver.stdin.take().unwrap();
    let delivering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let deliver_peak = {
        let (pid, running) = (deliver.id(), delivering.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    input.write_all(head).unwrap();
    let block = line.repeat(1024);
    for _ in 0..lines / 1024 {
        input.write_all(&block).unwrap();
    }
    for _ in 0..lines % 1024 {
        input.write_all(line).unwrap();
    }
    drop(input);
    // Sampled until it has exited (a zombie reads as 0).
    while deliver.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    delivering.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(deliver.wait().unwrap().success());
    let deliver_peak = deliver_peak.join().unwrap();
    assert!(
        deliver_peak < 32 * 1024,
        "pop3d deliver peaked at {deliver_peak} KiB for a 200 MiB message"
    );
    let server = db.serve(&[]);
    let pid = server.child.id();
    // bob's {PLAIN} password needs no hashing thread (whose Argon2
    // buffer, 19 MiB, would be allocated at its first check).
    let mut c = Client::login(server.addr, "bob", "bobpw");
    let listed = c.command("LIST 1");
    assert_eq!(listed, format!("+OK 1 {}", length));
    c.command("QUIT");
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    stream
        .write_all(b"USER bob\r\nPASS bobpw\r\nRETR 1\r\n")
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !sampling.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    // The greeting, the USER and PASS replies and the RETR +OK line, then
    // the body: exactly the message (no line starts with a dot) and ".".
    let mut lines = 0;
    let mut body = 0usize;
    let mut tail = Vec::new();
    let started = Instant::now();
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {body} octets of the body");
        let mut chunk = &buf[..n];
        while lines < 4 {
            let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                chunk = &[];
                break;
            };
            lines += 1;
            chunk = &chunk[end + 1..];
        }
        body += chunk.len();
        tail.extend_from_slice(chunk);
        if tail.len() > 8 {
            tail.drain(..tail.len() - 8);
        }
        if body == length + 3 {
            assert!(tail.ends_with(b"\r\n.\r\n"));
            break;
        }
        assert!(body < length + 3, "more than the message");
    }
    let took = started.elapsed();
    stream.write_all(b"QUIT\r\n").unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    server.kill();
    eprintln!(
        "200 MiB RETR: {body} octets of body in {took:?}; pop3d RSS {before} KiB before, peak {peak} KiB during; pop3d deliver peak {deliver_peak} KiB"
    );
    assert!(
        peak < before + 8 * 1024,
        "RSS grew from {before} KiB to {peak} KiB while serving a 200 MiB message"
    );
}

#[test]
fn import_keeps_the_uidls_a_maildir_was_serving() {
    let db = Db::new();
    let site = support::Site::new();
    let messages = tricky_messages(3);
    for (i, m) in messages.iter().take(5).enumerate() {
        site.deliver("alice", if i % 2 == 0 { "new" } else { "cur" }, i as u32, m);
    }
    site.deliver("bob", "new", 9, b"Subject: bob's\r\n\r\n");
    let served = {
        let maildir = site.serve();
        uidl(maildir.addr)
    };
    ok(&pop3d(
        &[
            "user",
            "import",
            "--store",
            &db.url,
            site.users().to_str().unwrap(),
        ],
        b"",
    ));
    let root = site.root();
    let import = [
        "import",
        "--store",
        &db.url,
        "--maildir-root",
        root.to_str().unwrap(),
    ];
    let out = ok(&pop3d(&import, b""));
    assert!(
        out.contains("alice: 5 messages imported, 0 already there"),
        "{out}"
    );
    assert!(out.contains("bob: 1 messages imported"), "{out}");
    let server = db.serve(&[]);
    assert_eq!(
        String::from_utf8(uidl(server.addr)).unwrap(),
        String::from_utf8(served).unwrap(),
        "the same ids, in the same order"
    );
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    for (i, m) in messages.iter().take(5).enumerate() {
        let n = i + 1;
        assert_eq!(
            c.command(&format!("LIST {n}")),
            format!("+OK {n} {}", normalize_body(m).len())
        );
        assert!(c.command(&format!("RETR {n}")).starts_with("+OK"));
        let wire = c.multiline();
        // The stuffed lines and the terminator: unstuffed for comparison.
        let body = unstuff(&wire[..wire.len() - 3]);
        assert_eq!(body, normalize_body(m), "message {n}");
    }
    assert!(c.command("DELE 1").starts_with("+OK"));
    c.command("QUIT");
    // Again: nothing new, and the deleted message does not come back.
    let out = ok(&pop3d(&import, b""));
    assert!(
        out.contains("alice: 0 messages imported, 5 already there"),
        "{out}"
    );
    assert!(stat(server.addr, "alice", PASSWORD).starts_with("+OK 4 "));
}

/// Undoes dot-stuffing of a multi-line response body (without its ".").
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut start = true;
    let mut i = 0;
    while i < body.len() {
        if start && body[i] == b'.' {
            i += 1;
            start = false;
            continue;
        }
        out.push(body[i]);
        start = body[i] == b'\n';
        i += 1;
    }
    out
}

#[test]
fn idle_sessions_hold_no_database_connection() {
    let db = Db::new();
    let users = 300;
    db.cluster.sql(&format!(
        "INSERT INTO pop3d_users (name, password)
         SELECT 'u' || g, '{{PLAIN}}pw' || g FROM generate_series(1, {users}) g"
    ));
    ok(&db.deliver("u1", b"Subject: hi\r\n\r\nhello\r\n"));
    let pool = 4;
    let server = db.serve(&[
        "--db-pool-size",
        &pool.to_string(),
        "--max-connections-per-ip",
        "1000",
        "--lease-seconds",
        "3",
    ]);
    let mut sessions: Vec<Client> = (1..=users)
        .map(|n| Client::login(server.addr, &format!("u{n}"), &format!("pw{n}")))
        .collect();
    // Past a lease renewal (every second here) for every session.
    std::thread::sleep(Duration::from_secs(2));
    let connections: u32 = db
        .cluster
        .sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pop3d'")
        .parse()
        .unwrap();
    assert!(
        connections <= pool,
        "{connections} database connections for {users} idle sessions"
    );
    let leases = db.cluster.sql("SELECT count(*) FROM pop3d_leases");
    assert_eq!(leases, users.to_string(), "every session holds its lease");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        db.cluster
            .sql("SELECT count(*) FROM pop3d_leases WHERE expires_at > clock_timestamp()"),
        users.to_string(),
        "renewed past the lease time"
    );
    // Every session still works, and releases its lease at QUIT.
    assert!(sessions[0].command("RETR 1").starts_with("+OK"));
    assert!(String::from_utf8(sessions[0].multiline())
        .unwrap()
        .contains("hello"));
    for c in &mut sessions {
        assert!(c.command("QUIT").starts_with("+OK"));
    }
    assert_eq!(db.cluster.sql("SELECT count(*) FROM pop3d_leases"), "0");
}

#[test]
fn a_session_transcript_with_top_rset_and_apop() {
    let db = Db::new();
    ok(&db.deliver("bob", b"Subject: one\r\nFrom: a\r\n\r\nl1\r\nl2\r\nl3\r\n"));
    ok(&db.deliver("bob", b"Subject: two\r\n\r\n.dot\r\n"));
    let server = db.serve(&["--apop"]);
    let (mut c, greeting) = Client::greeted(server.addr);
    // APOP works for a {PLAIN} user (RFC 1939 §7).
    let stamp = &greeting[greeting.find('<').unwrap()..=greeting.find('>').unwrap()];
    let digest: String = <md5::Md5 as md5::Digest>::digest(format!("{stamp}bobpw"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(c.command(&format!("APOP bob {digest}")).starts_with("+OK"));
    assert_eq!(c.command("STAT"), "+OK 2 59");
    assert!(c.command("LIST").starts_with("+OK"));
    assert_eq!(c.multiline(), b"1 37\r\n2 22\r\n.\r\n");
    assert!(c.command("TOP 1 1").starts_with("+OK"));
    assert_eq!(c.multiline(), b"Subject: one\r\nFrom: a\r\n\r\nl1\r\n.\r\n");
    assert!(c.command("RETR 2").starts_with("+OK"));
    assert_eq!(c.multiline(), b"Subject: two\r\n\r\n..dot\r\n.\r\n");
    assert!(c.command("DELE 1").starts_with("+OK"));
    assert!(c.command("RSET").starts_with("+OK"));
    assert!(c.command("DELE 2").starts_with("+OK"));
    assert!(c.command("NOOP").starts_with("+OK"));
    assert!(c.command("QUIT").starts_with("+OK"));
    assert_eq!(stat(server.addr, "bob", "bobpw"), "+OK 1 37");
}

#[test]
fn store_options_are_checked_at_start() {
    // check-config connects to nothing: no database needed.
    let out = pop3d(
        &[
            "check-config",
            "--store",
            "postgres://pop3@127.0.0.1:1/mail",
        ],
        b"",
    );
    let text = ok(&out);
    assert!(
        text.contains("configuration OK: store postgres database mail on 127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("pop3@"),
        "no credentials in the output: {text}"
    );
    for (extra, says) in [
        (&["--maildir-root", "/tmp"][..], "not with --maildir-root"),
        (
            &["--expire", "3"][..],
            "expire is not supported with --store",
        ),
        (&["--login-delay", "60"][..], "login-delay is not supported"),
    ] {
        let mut args = vec!["check-config", "--store", "postgres://127.0.0.1/mail"];
        args.extend_from_slice(extra);
        let out = pop3d(&args, b"");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    let out = pop3d(&["check-config", "--store", "not a url ="], b"");
    assert!(!out.status.success());
    let out = pop3d(&["check-config", "--sasl-scram"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sasl-scram is for --store"));
}

#[test]
fn migrations_run_at_once_from_several_machines_apply_once() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || ok(&pop3d(&["db", "migrate", "--store", &url], b"")))
        })
        .collect();
    let outputs: Vec<String> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let applied = outputs
        .iter()
        .filter(|o| o.contains("applied migration 1"))
        .count();
    assert_eq!(applied, 1, "{outputs:?}");
    assert_eq!(cluster.sql("SELECT count(*) FROM pop3d_migrations"), "1");
}

#[test]
fn scram_users_log_in_with_scram_and_unknown_users_get_stable_decoys() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let db = Db::new();
    ok(&pop3d(
        &[
            "user",
            "add",
            "--store",
            &db.url,
            "--scheme",
            "scram-sha-256",
            "carol",
        ],
        b"pencil sharpener\n",
    ));
    ok(&db.deliver("carol", b"Subject: scram\r\n\r\nhi\r\n"));
    let (a, b) = (db.serve(&["--sasl-scram"]), db.serve(&["--sasl-scram"]));
    let (mut c, _) = Client::greeted(a.addr);
    c.send(b"CAPA\r\n");
    let capa = String::from_utf8(c.multiline()).unwrap();
    assert!(
        capa.contains("\r\nSASL SCRAM-SHA-256 PLAIN LOGIN\r\n"),
        "{capa}"
    );
    // The salt an unknown user gets is the same from every instance.
    let salt = |addr: SocketAddr, user: &str| {
        let (mut c, _) = Client::greeted(addr);
        let client = pop3_proto::testing::ScramClient::new(user, "x");
        let challenge = c.command(&format!("AUTH SCRAM-SHA-256 {}", client.first()));
        let first = String::from_utf8(b64.decode(&challenge[2..]).unwrap()).unwrap();
        first
            .split(',')
            .find(|f| f.starts_with("s="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(salt(a.addr, "nobody"), salt(b.addr, "nobody"));
    assert_ne!(salt(a.addr, "nobody"), salt(a.addr, "carol"));
    // Wrong password and unknown user fail at the proof alike.
    for (user, password) in [
        ("carol", "wrong"),
        ("nobody", "pencil sharpener"),
        ("bob", "bobpw"),
    ] {
        let (mut c, _) = Client::greeted(a.addr);
        let (reply, _) = clients::scram(&mut c, user, password);
        assert!(reply.starts_with("-ERR [AUTH]"), "{user}");
    }
    let (reply, server_final) = clients::scram(&mut c, "carol", "pencil sharpener");
    assert_eq!(reply, server_final);
    assert!(c.command("").starts_with("+OK"));
    assert_eq!(c.command("STAT"), "+OK 1 22");
    c.command("QUIT");
    // And with the password, by USER/PASS.
    assert_eq!(stat(b.addr, "carol", "pencil sharpener"), "+OK 1 22");
}

#[test]
fn metrics_show_the_connection_pool() {
    let db = Db::new();
    let server = LoggedPop3d::start(&[
        "--store",
        &db.url,
        "--db-pool-size",
        "3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let url = server.metrics.clone().expect("metrics url");
    // Held sessions take a connection only for the statement at hand.
    let mut held: Vec<Client> = ["alice", "bob"]
        .iter()
        .map(|user| {
            let password = if *user == "alice" { PASSWORD } else { "bobpw" };
            Client::login(server.addr, user, password)
        })
        .collect();
    let samples = support::scrape(&url);
    let gauge = |state: &str| samples[&format!("pop3_db_pool_connections{{state=\"{state}\"}}")];
    assert_eq!(gauge("max"), 3.0, "{samples:?}");
    assert!((1.0..=3.0).contains(&gauge("open")), "{samples:?}");
    assert_eq!(
        gauge("idle"),
        gauge("open"),
        "idle sessions hold none: {samples:?}"
    );
    assert_eq!(gauge("waiting"), 0.0, "{samples:?}");
    for c in &mut held {
        assert!(c.command("QUIT").starts_with("+OK"));
    }
}
