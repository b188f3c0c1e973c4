//! End to end: the built `pop3d` binary on loopback, with Python's poplib,
//! curl and a raw client, over temporary Maildirs.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use pop3_conformance::Client;
use support::clients::{self, tricky_messages, uidl};
use support::{passwd, Pop3d, Site, BIN, PASSWORD};

#[test]
fn demo_default_answers_a_real_client() {
    let server = Pop3d::start(&[]);
    let url = format!("pop3://{}/", server.addr);
    let list = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", "demo:demo", &url])
        .output()
        .expect("curl");
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 4, "{list}");
    let first = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-u",
            "demo:demo",
            &format!("{url}1"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&first.stdout).contains("Subject: Welcome to pop3d"));
}

#[test]
fn poplib_fetches_tricky_messages_byte_for_byte() {
    let site = Site::new();
    let messages = tricky_messages(20);
    for (i, m) in messages.iter().enumerate() {
        site.deliver("alice", if i % 2 == 0 { "new" } else { "cur" }, i as u32, m);
    }
    let server = site.serve();
    clients::poplib_fetches_byte_for_byte(server.addr, "alice", PASSWORD, &messages);
    // RETR moved the messages out of new/ into cur/, seen.
    assert!(site
        .files("alice")
        .iter()
        .all(|f| f.starts_with("cur/") && f.ends_with(":2,S")));
}

#[test]
fn curl_lists_and_retrieves() {
    let site = Site::new();
    let messages = tricky_messages(20);
    for (i, m) in messages.iter().take(5).enumerate() {
        site.deliver("alice", "new", i as u32, m);
    }
    let server = site.serve();
    clients::curl_lists_and_retrieves(server.addr, "alice", PASSWORD, &messages[..5]);
}

#[test]
fn uidl_is_stable_across_restarts_and_retrieval() {
    let site = Site::new();
    let uniques: Vec<String> = (0..3)
        .map(|i| site.deliver("bob", "new", i, b"Subject: x\r\n\r\ny\r\n"))
        .collect();
    let server = site.serve();
    let before = uidl(server.addr, "bob", "bobpw");
    let expected: String = uniques
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{} {u}\r\n", i + 1))
        .collect::<String>()
        + ".\r\n";
    assert_eq!(String::from_utf8_lossy(&before), expected);
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert!(c.command("RETR 2").starts_with("+OK"));
    c.multiline();
    c.command("QUIT");
    assert!(server.terminate().success());
    let again = Pop3d::with_maildir(&site.root(), &site.users(), &[]);
    assert_eq!(uidl(again.addr, "bob", "bobpw"), before);
}

#[test]
fn deletion_reaches_the_disk_only_after_quit() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    site.deliver("bob", "cur", 2, b"Subject: 2\r\n\r\ntwo\r\n");
    let server = site.serve();
    let all = site.files("bob");
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert_eq!(c.command("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.command("DELE 2"), "+OK message 2 deleted");
    assert_eq!(site.files("bob"), all, "nothing removed before QUIT");
    assert!(c.command("QUIT").starts_with("+OK"));
    assert!(site.files("bob").is_empty());
}

/// A client connecting from `source` (any 127.0.0.0/8 address reaches
/// the loopback listener), greeted.
fn client_from(source: &str, addr: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut c = Client::over(socket.into());
    let greeting = c.line();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    c
}

/// One USER/PASS attempt from `source`: the reply to PASS.
fn attempt(addr: SocketAddr, source: &str, user: &str, password: &str) -> String {
    let mut c = client_from(source, addr);
    assert!(c.command(&format!("USER {user}")).starts_with("+OK"));
    c.command(&format!("PASS {password}"))
}

const USER_LIMITED: &str = "-ERR [AUTH] too many failed logins for this user, try again later";
const WRONG: &str = "-ERR [AUTH] invalid user name or password";

/// Issue 12, point 4: failed logins per address and per user, over a
/// sliding window. A limited user is refused (unchecked, as for an unknown
/// name) only to addresses that failed lately: the owner, from an address
/// with no failure, logs in with the right password. A limited address is
/// refused whatever user it names; other addresses go on.
#[test]
fn failed_logins_limit_addresses_and_users_but_not_the_owner() {
    let site = Site::new();
    let server = Pop3d::with_maildir(
        &site.root(),
        &site.users(),
        &[
            "--max-failed-logins-per-ip",
            "3",
            "--max-failed-logins-per-user",
            "2",
        ],
    );
    let addr = server.addr;
    // Guessers of bob's password, and of a user who does not exist.
    let user_limit = |user: &'static str, password: &'static str, sources: [&'static str; 3]| {
        std::thread::spawn(move || {
            assert_eq!(attempt(addr, sources[0], user, "guess1"), WRONG);
            assert_eq!(attempt(addr, sources[1], user, "guess2"), WRONG);
            // Even the right password is not checked from a guessing address.
            let limited = attempt(addr, sources[0], user, password);
            let owner = attempt(addr, sources[2], user, password);
            (limited, owner)
        })
    };
    let bob = user_limit("bob", "bobpw", ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let nobody = user_limit("nobody", "x", ["127.0.0.5", "127.0.0.6", "127.0.0.8"]);
    let address = std::thread::spawn(move || {
        for n in 1..=3 {
            assert_eq!(attempt(addr, "127.0.0.7", &format!("x{n}"), "guess"), WRONG);
        }
        attempt(addr, "127.0.0.7", "bob", "bobpw")
    });
    let (limited, owner) = bob.join().unwrap();
    assert_eq!(limited, USER_LIMITED);
    assert!(owner.starts_with("+OK bob's maildrop"), "{owner}");
    let (limited, unknown) = nobody.join().unwrap();
    assert_eq!(
        limited, USER_LIMITED,
        "the same refusal for a user who does not exist"
    );
    assert_eq!(unknown, WRONG);
    assert_eq!(
        address.join().unwrap(),
        "-ERR [SYS/TEMP] too many failed logins from your address, try again later"
    );
    let mut c = Client::login(server.addr, "alice", PASSWORD);
    assert!(c.command("QUIT").starts_with("+OK"));
}

fn capa(addr: SocketAddr) -> String {
    let (mut c, _) = Client::greeted(addr);
    assert!(c.command("CAPA").starts_with("+OK"));
    String::from_utf8(c.multiline()).unwrap()
}

/// Issue 12, point 5: LOGIN-DELAY (RFC 2449) across two pop3d processes on
/// one Maildir root, refused only with the right password.
#[test]
fn login_delay_holds_across_processes_and_only_after_the_password() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    let args = ["--login-delay", "2"];
    let a = Pop3d::with_maildir(&site.root(), &site.users(), &args);
    let b = Pop3d::with_maildir(&site.root(), &site.users(), &args);
    assert!(capa(b.addr).contains("LOGIN-DELAY 2\r\n"));
    let mut first = Client::login(a.addr, "bob", "bobpw");
    let logged_in = std::time::Instant::now();
    let (mut c, _) = Client::greeted(b.addr);
    c.command("USER bob");
    let early = "-ERR [LOGIN-DELAY] logged in too recently, try again in 2 seconds";
    assert_eq!(
        c.command("PASS bobpw"),
        early,
        "not IN-USE while A's session runs"
    );
    assert!(first.command("QUIT").starts_with("+OK"));
    c.command("USER bob");
    assert_eq!(c.command("PASS bobpw"), early);
    c.command("USER bob");
    assert_eq!(
        c.command("PASS wrong"),
        WRONG,
        "a wrong password learns nothing"
    );
    // Another user is not held back.
    let mut alice = Client::login(b.addr, "alice", PASSWORD);
    assert!(alice.command("QUIT").starts_with("+OK"));
    if let Some(left) = Duration::from_millis(2100).checked_sub(logged_in.elapsed()) {
        std::thread::sleep(left);
    }
    c.command("USER bob");
    assert!(c
        .command("PASS bobpw")
        .starts_with("+OK bob's maildrop has 1 messages"));
    assert!(c.command("QUIT").starts_with("+OK"));
}

impl Site {
    /// Names in a folder of `user`'s Maildir (`new/` and `cur/`), sorted.
    fn folder_files(&self, user: &str, folder: &str) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(dir) = std::fs::read_dir(self.root().join(user).join(folder).join(sub)) else {
                continue;
            };
            for e in dir {
                names.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        names.sort();
        names
    }
}

/// Issue 12, point 6: `--delete-policy move:.Trash` and `flag` over the
/// wire, checked on disk.
#[test]
fn deleted_messages_are_moved_or_flagged_by_the_policy() {
    for policy in ["move:.Trash", "flag"] {
        let site = Site::new();
        let one = site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
        let two = site.deliver("bob", "cur", 2, b"Subject: 2\r\n\r\ntwo\r\n");
        let server = Pop3d::with_maildir(&site.root(), &site.users(), &["--delete-policy", policy]);
        let mut c = Client::login(server.addr, "bob", "bobpw");
        assert!(c.command("DELE 1").starts_with("+OK"));
        assert!(c.command("DELE 2").starts_with("+OK"));
        assert!(c.command("QUIT").starts_with("+OK"));
        if policy == "flag" {
            assert_eq!(
                site.files("bob"),
                [format!("cur/{one}:2,T"), format!("cur/{two}:2,ST")]
            );
        } else {
            assert!(site.files("bob").is_empty());
            assert_eq!(
                site.folder_files("bob", ".Trash"),
                [format!("cur/{two}:2,S"), format!("new/{one}")]
            );
            assert!(site.root().join("bob/.Trash/tmp").is_dir());
        }
        let mut c = Client::login(server.addr, "bob", "bobpw");
        assert_eq!(c.command("STAT"), "+OK 0 0", "{policy}: gone from POP3");
    }
}

/// Issue 12, point 6: `--expire 0` is announced, and a message RETR sent
/// whole is deleted at the next login; one only listed or TOPped stays.
#[test]
fn retrieved_messages_expire_at_a_later_login() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    let kept = site.deliver("bob", "new", 2, b"Subject: 2\r\n\r\ntwo\r\n");
    let server = Pop3d::with_maildir(&site.root(), &site.users(), &["--expire", "0"]);
    assert!(capa(server.addr).contains("EXPIRE 0\r\n"));
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert!(c.command("RETR 1").starts_with("+OK"));
    c.multiline();
    assert!(c.command("TOP 2 0").starts_with("+OK"));
    c.multiline();
    assert_eq!(
        c.command("STAT"),
        "+OK 2 38",
        "nothing expires during the session"
    );
    assert!(c.command("QUIT").starts_with("+OK"));
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert_eq!(c.command("STAT"), "+OK 1 19");
    assert_eq!(site.files("bob"), [format!("new/{kept}")]);
}

/// Issue 12, point 6: pop3d killed (SIGKILL) while QUIT moves many
/// messages into `.Trash`; after a restart and a login, either every
/// deleted message is in `.Trash` (the journal was written: the move is
/// finished) or none is (it was not: the client heard nothing). Killed at
/// once after QUIT, and killed as soon as the first file shows up in
/// `.Trash` (the journal is written before it: all must end up moved);
/// what the kill left is printed.
#[test]
fn a_server_killed_during_a_move_leaves_all_or_nothing_moved() {
    const N: u32 = 300;
    for at_first_move in [false, true, true] {
        let site = Site::new();
        for i in 0..N {
            site.deliver("bob", "cur", i, b"Subject: move me\r\n\r\nbody\r\n");
        }
        let args = ["--delete-policy", "move:.Trash"];
        let server = Pop3d::with_maildir(&site.root(), &site.users(), &args);
        let mut c = Client::login(server.addr, "bob", "bobpw");
        let dele: String = (1..=N).map(|n| format!("DELE {n}\r\n")).collect();
        c.send(dele.as_bytes());
        for _ in 0..N {
            assert!(c.line().starts_with("+OK"));
        }
        c.send(b"QUIT\r\n");
        let started = std::time::Instant::now();
        while at_first_move && site.folder_files("bob", ".Trash").is_empty() {
            assert!(started.elapsed() < Duration::from_secs(20), "nothing moved");
        }
        server.kill();
        let moved = site.folder_files("bob", ".Trash").len();
        let left = site.files("bob").len();
        eprintln!("killed (at the first move: {at_first_move}): {moved} moved, {left} left");
        let restarted = Pop3d::with_maildir(&site.root(), &site.users(), &args);
        let mut c = Client::login(restarted.addr, "bob", "bobpw");
        let stat = c.command("STAT");
        assert!(c.command("QUIT").starts_with("+OK"));
        let moved = site.folder_files("bob", ".Trash").len();
        let left = site.files("bob").len();
        if at_first_move {
            assert_eq!((moved, left), (N as usize, 0), "{stat}");
        } else {
            assert!(
                (moved, left) == (N as usize, 0) || (moved, left) == (0, N as usize),
                "{moved} moved, {left} left ({stat})"
            );
        }
        assert_eq!(stat, format!("+OK {left} {}", left * 26));
        assert!(!site.root().join("bob/pop3d-deleting").exists());
    }
}

#[test]
fn a_client_killed_mid_session_leaves_every_message() {
    let site = Site::new();
    for i in 0..3 {
        site.deliver("bob", "new", i, b"Subject: keep me\r\n\r\nplease\r\n");
    }
    let server = site.serve();
    let all = site.files("bob");
    let mut c = Client::login(server.addr, "bob", "bobpw");
    for n in 1..=3 {
        assert!(c.command(&format!("DELE {n}")).starts_with("+OK"));
    }
    drop(c);
    // The lock is released and nothing was deleted.
    let mut again = None;
    for _ in 0..100 {
        let (mut c, _) = Client::greeted(server.addr);
        c.command("USER bob");
        if c.command("PASS bobpw").starts_with("+OK") {
            again = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut again = again.expect("the lock is released after the client vanished");
    assert_eq!(again.command("STAT").split(' ').nth(1), Some("3"));
    assert_eq!(site.files("bob"), all);
}

#[test]
fn a_second_login_is_refused_in_use_even_from_another_process() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    let first = site.serve();
    let second = site.serve();
    let mut holder = Client::login(first.addr, "bob", "bobpw");
    for addr in [first.addr, second.addr] {
        let (mut c, _) = Client::greeted(addr);
        c.command("USER bob");
        let reply = c.command("PASS bobpw");
        assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    }
    assert!(holder.command("QUIT").starts_with("+OK"));
}

#[test]
fn a_stale_lock_from_a_killed_server_is_recovered() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    let crashed = site.serve();
    let mut c = Client::login(crashed.addr, "bob", "bobpw");
    assert!(c.command("DELE 1").starts_with("+OK"));
    crashed.kill();
    assert!(site.root().join("bob/pop3d.lock").exists());
    let server = site.serve();
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert_eq!(c.command("STAT"), "+OK 1 19");
}

#[test]
fn wrong_passwords_and_unknown_users_get_auth_code() {
    let site = Site::new();
    let server = site.serve();
    for (user, pass) in [("alice", "nope"), ("nobody", "x"), ("bob", "BOBPW")] {
        let (mut c, _) = Client::greeted(server.addr);
        c.command(&format!("USER {user}"));
        assert_eq!(
            c.command(&format!("PASS {pass}")),
            "-ERR [AUTH] invalid user name or password"
        );
    }
}

#[test]
fn bad_users_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "ok:{PLAIN}x\nno-password-field\n").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--maildir-root"])
        .arg(dir.path())
        .arg("--users")
        .arg(&users)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2: expected user:{SCHEME}password"), "{err}");
}

#[test]
fn settings_file_with_command_line_overrides() {
    let site = Site::new();
    let config = site.dir.path().join("pop3d.toml");
    std::fs::write(
        &config,
        format!(
            "maildir-root = {:?}\nusers = {:?}\nhostname = \"from-file.example\"\nmax-connections = 5\n",
            site.root(),
            site.users()
        ),
    )
    .unwrap();
    let server = Pop3d::start(&["--config", config.to_str().unwrap()]);
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert_eq!(
        c.command("QUIT"),
        "+OK from-file.example POP3 server signing off (maildrop empty)"
    );
    let server = Pop3d::start(&[
        "--config",
        config.to_str().unwrap(),
        "--hostname",
        "cli.example",
    ]);
    let (mut c, _) = Client::greeted(server.addr);
    assert_eq!(c.command("QUIT"), "+OK cli.example POP3 server signing off");
}

#[test]
fn maildir_root_without_users_is_an_error() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--maildir-root", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("go together"));
}

#[test]
fn same_second_deliveries_keep_their_order() {
    let site = Site::new();
    let dir = site.root().join("bob/new");
    std::fs::write(
        dir.join("1700000000.M5P1.host"),
        "Subject: first\r\n\r\n1\r\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("1700000000.M100000P1.host"),
        "Subject: second\r\n\r\n2\r\n",
    )
    .unwrap();
    let server = site.serve();
    assert_eq!(
        String::from_utf8(uidl(server.addr, "bob", "bobpw")).unwrap(),
        "1 1700000000.M5P1.host\r\n2 1700000000.M100000P1.host\r\n.\r\n"
    );
}

#[test]
fn a_message_renamed_by_another_program_is_still_retrieved() {
    let site = Site::new();
    site.deliver("bob", "cur", 1, b"Subject: flagged\r\n\r\nbody\r\n");
    let server = site.serve();
    let mut c = Client::login(server.addr, "bob", "bobpw");
    // An IMAP server on the same Maildir marks it answered.
    let cur = site.root().join("bob/cur");
    let name = site.files("bob")[0].trim_start_matches("cur/").to_owned();
    std::fs::rename(cur.join(&name), cur.join(format!("{name}R"))).unwrap();
    assert_eq!(c.command("RETR 1"), "+OK 26 octets");
    assert_eq!(c.multiline(), b"Subject: flagged\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.command("DELE 1"), "+OK message 1 deleted");
    assert!(c.command("QUIT").starts_with("+OK"));
    assert!(site.files("bob").is_empty());
}

#[test]
fn files_sharing_a_unique_name_stay_separate_messages() {
    let site = Site::new();
    let root = site.root().join("bob");
    std::fs::write(
        root.join("new/1700000000.M1P1.host"),
        "Subject: a\r\n\r\na\r\n",
    )
    .unwrap();
    std::fs::write(
        root.join("cur/1700000000.M1P1.host:2,S"),
        "Subject: b\r\n\r\nb\r\n",
    )
    .unwrap();
    std::fs::write(
        root.join("cur/1700000000.M1P1.host,S=17:2,RS"),
        "Subject: c\r\n\r\nc\r\n",
    )
    .unwrap();
    let server = site.serve();
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert_eq!(c.command("STAT"), "+OK 3 51");
    assert!(c.command("UIDL").starts_with("+OK"));
    let uidl = String::from_utf8(c.multiline()).unwrap();
    let uids: std::collections::HashSet<&str> =
        uidl.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(uids.len(), 3, "{uidl}");
    assert_eq!(c.command("DELE 2"), "+OK message 2 deleted");
    assert!(c.command("QUIT").starts_with("+OK"));
    assert_eq!(site.files("bob").len(), 2, "exactly one file deleted");
}

#[test]
fn passwd_refuses_names_the_users_file_cannot_hold() {
    let mut child = Command::new(BIN)
        .args(["passwd", "ann:x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn absurd_idle_timeout_is_refused_at_startup() {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "10000000000000000000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("over the 24 hours"));
}

#[test]
fn sigterm_right_after_startup_shuts_down_gracefully() {
    for _ in 0..5 {
        let server = Pop3d::start(&[]);
        assert!(server.terminate().success());
    }
}

#[test]
fn users_with_unknown_schemes_are_skipped_not_fatal() {
    let site = Site::new();
    let mut users = std::fs::read_to_string(site.users()).unwrap();
    users.push_str("old:{MD5-CRYPT}$1$abc$def\n");
    std::fs::write(site.users(), users).unwrap();
    let server = site.serve();
    let (mut c, _) = Client::greeted(server.addr);
    c.command("USER old");
    assert_eq!(
        c.command("PASS x"),
        "-ERR [AUTH] invalid user name or password"
    );
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert!(c.command("QUIT").starts_with("+OK"));
}

#[test]
fn dovecot_uidls_are_served_after_a_migration() {
    let site = Site::new();
    let bob = site.root().join("bob");
    std::fs::write(
        bob.join("dovecot-uidlist"),
        "3 V1275660208 N3 G3085f01b7f11094c501100008c4a11c1\n\
         1 :1275660001.M1P1.mx,S=13\n\
         2 W14 Pkept-from-dovecot :1275660002.M2P1.mx,S=13\n",
    )
    .unwrap();
    std::fs::write(
        bob.join("cur/1275660001.M1P1.mx,S=13:2,S"),
        "Subject: a\n\n.\n",
    )
    .unwrap();
    std::fs::write(bob.join("new/1275660002.M2P1.mx,S=13"), "Subject: b\n\n.\n").unwrap();
    let expected = "1 000000014C0907B0\r\n2 kept-from-dovecot\r\n.\r\n";
    for source in [&[][..], &["--uidl-source", "dovecot"][..]] {
        let server = Pop3d::with_maildir(&site.root(), &site.users(), source);
        assert_eq!(
            String::from_utf8(uidl(server.addr, "bob", "bobpw")).unwrap(),
            expected
        );
    }
}

/// `pop3d passwd --scheme scram-sha-256` for `user`: the users-file line.
fn scram_line(user: &str, password: &str) -> String {
    passwd(&["--scheme", "scram-sha-256", user], password)
}

/// SCRAM exchanges opened at once from one address, before any proof: an
/// exchange counts against the address's failed-login limit from its first
/// message until its proof is answered, so no more than the limit get a
/// challenge (all of them did, and then a right proof after 19 wrong ones
/// was accepted), and the wrong proofs then block the address.
#[test]
fn scram_exchanges_opened_at_once_count_against_the_address_limit() {
    let b64 = base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let site = Site::new();
    let mut users = std::fs::read_to_string(site.users()).unwrap();
    users.push_str(&scram_line("carol", "pencil sharpener"));
    std::fs::write(site.users(), users).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(site.root().join("carol").join(sub)).unwrap();
    }
    let server = Pop3d::with_maildir(
        &site.root(),
        &site.users(),
        &["--max-failed-logins-per-ip", "3"],
    );
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let (mut c, _) = Client::greeted(server.addr);
        let client = pop3_proto::testing::ScramClient::new("carol", "wrong");
        let reply = c.command(&format!("AUTH SCRAM-SHA-256 {}", client.first()));
        if let Some(challenge) = reply.strip_prefix("+ ") {
            let first = String::from_utf8(b64.decode(challenge).unwrap()).unwrap();
            open.push((c, client.finish(&first).response));
        } else {
            assert_eq!(
                reply,
                "-ERR [SYS/TEMP] too many failed logins from your address, try again later"
            );
            refused += 1;
        }
    }
    assert_eq!(open.len(), 3, "{refused} refused");
    for (mut c, proof) in open {
        assert!(c.command(&proof).starts_with("-ERR [AUTH]"));
    }
    // Three failures now: even the right password is not checked.
    let (mut c, _) = Client::greeted(server.addr);
    let client = pop3_proto::testing::ScramClient::new("carol", "pencil sharpener");
    let reply = c.command(&format!("AUTH SCRAM-SHA-256 {}", client.first()));
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
}

#[test]
fn scram_users_log_in_with_scram_and_with_their_password() {
    let site = Site::new();
    let line = scram_line("carol", "pencil sharpener");
    assert!(line.starts_with("carol:{SCRAM-SHA-256}4096,"), "{line}");
    let mut users = std::fs::read_to_string(site.users()).unwrap();
    users.push_str(&line);
    std::fs::write(site.users(), users).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(site.root().join("carol").join(sub)).unwrap();
    }
    site.deliver("carol", "new", 1, b"Subject: scram\r\n\r\nhi\r\n");
    let server = site.serve();

    let (mut c, _) = Client::greeted(server.addr);
    c.send(b"CAPA\r\n");
    let capa = String::from_utf8(c.multiline()).unwrap();
    assert!(
        capa.contains("\r\nSASL SCRAM-SHA-256 PLAIN LOGIN\r\n"),
        "{capa}"
    );
    // A wrong password fails at the proof, like an unknown user.
    for (user, password) in [("carol", "wrong"), ("nobody", "pencil sharpener")] {
        let (reply, _) = clients::scram(&mut c, user, password);
        assert!(reply.starts_with("-ERR [AUTH]"), "{user}");
    }
    let (reply, server_final) = clients::scram(&mut c, "carol", "pencil sharpener");
    assert_eq!(reply, server_final);
    assert_eq!(
        c.command(""),
        "+OK carol's maildrop has 1 messages (22 octets)"
    );
    c.command("QUIT");

    // The same user with its password: curl's AUTH PLAIN and USER/PASS.
    let url = format!("pop3://{}/", server.addr);
    for extra in [&["--login-options", "AUTH=PLAIN"][..], &[]] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-u",
                "carol:pencil sharpener",
                &url,
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"1 22\r\n");
    }
}

#[test]
fn oauth_access_tokens_log_in_with_curl() {
    let site = Site::new();
    site.deliver("alice", "new", 1, b"Subject: token\r\n\r\nhi\r\n");
    let idp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let keys = site.dir.path().join("idp.pem");
    std::fs::write(&keys, idp.public_key_pem()).unwrap();
    let server = Pop3d::with_maildir(
        &site.root(),
        &site.users(),
        &[
            "--oauth-keys",
            keys.to_str().unwrap(),
            "--oauth-issuer",
            "https://idp.test",
            "--oauth-audience",
            "pop3",
            "--oauth-claim",
            "sub",
        ],
    );
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(idp.serialize_pem().as_bytes()).unwrap();
    let token = |sub: &str, aud: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let claims =
            serde_json::json!({"iss": "https://idp.test", "aud": aud, "exp": exp, "sub": sub});
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::encode(&header, &claims, &signing).unwrap()
    };
    let url = format!("pop3://{}/", server.addr);
    let curl = |token: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-u",
                "alice:",
                "--oauth2-bearer",
                token,
                &url,
            ])
            .output()
            .unwrap()
    };
    let out = curl(&token("alice", "pop3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"1 22\r\n");
    // Another user's token, another audience, a token signed by someone else.
    assert!(!curl(&token("bob", "pop3")).status.success());
    assert!(!curl(&token("alice", "imap")).status.success());
    let forged = {
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let claims = serde_json::json!({"iss": "https://idp.test", "aud": "pop3", "exp": 4_000_000_000u64, "sub": "alice"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    };
    assert!(!curl(&forged).status.success());
    let (mut c, _) = Client::greeted(server.addr);
    c.send(b"CAPA\r\n");
    let capa = String::from_utf8(c.multiline()).unwrap();
    assert!(
        capa.contains("\r\nSASL PLAIN LOGIN OAUTHBEARER XOAUTH2\r\n"),
        "{capa}"
    );
}

#[test]
fn accept_failures_are_logged_and_serving_goes_on() {
    let site = Site::new();
    // Few descriptors: accepting fails (EMFILE) once some clients are held.
    let command = format!(
        "ulimit -n 80 && exec {BIN} --listen 127.0.0.1:0 --maildir-root {} --users {}",
        site.root().display(),
        site.users().display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &command])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("pop3d listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(std::net::TcpStream::connect(addr).unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log
        .lock()
        .unwrap()
        .contains("accepting a connection failed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = log.lock().unwrap().clone();
    assert!(text.contains("Too many open files"), "{text}");
    drop(held);
    // Descriptors come back: a fresh client is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut greeting = String::new();
            if BufReader::new(&mut c).read_line(&mut greeting).is_ok()
                && greeting.starts_with("+OK")
            {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "not serving again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_idle_logged_in_session_holds_two_descriptors() {
    // Its socket and its lock file: folders are opened per operation, so
    // descriptors do not cap logged-in sessions far below the limit.
    const SESSIONS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut users = String::new();
    for i in 0..SESSIONS {
        users.push_str(&format!("u{i}:{{PLAIN}}pw{i}::::::\n"));
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join(format!("mail/u{i}/{sub}"))).unwrap();
        }
        std::fs::write(
            dir.path()
                .join(format!("mail/u{i}/new/1700000000.M1P1.test")),
            b"Subject: hi\n\nthere\n",
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("users"), users).unwrap();
    let server = Pop3d::with_maildir(
        &dir.path().join("mail"),
        &dir.path().join("users"),
        &["--max-connections-per-ip", "100"],
    );
    let open = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
            .unwrap()
            .count()
    };
    // A session that has logged in and out first: whatever is opened
    // once (the runtime's, the blocking pool's) is open already.
    let mut warm = Client::login(server.addr, "u0", "pw0");
    assert!(warm.command("QUIT").starts_with("+OK"));
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = open();
    let mut sessions: Vec<Client> = (0..SESSIONS)
        .map(|i| Client::login(server.addr, &format!("u{i}"), &format!("pw{i}")))
        .collect();
    for c in &mut sessions {
        assert!(c.command("RETR 1").starts_with("+OK"));
        c.multiline();
    }
    let held = open() - before;
    assert!(
        held <= 2 * SESSIONS,
        "{SESSIONS} idle sessions hold {held} descriptors"
    );
    for mut c in sessions {
        assert!(c.command("QUIT").starts_with("+OK"));
    }
}

#[test]
fn a_maildir_replaced_during_a_session_is_left_alone() {
    let site = Site::new();
    site.deliver("bob", "new", 1, b"Subject: 1\r\n\r\none\r\n");
    site.deliver("bob", "new", 2, b"Subject: 2\r\n\r\ntwo\r\n");
    let server = site.serve();
    let mut c = Client::login(server.addr, "bob", "bobpw");
    assert!(c.command("DELE 1").starts_with("+OK"));
    // Another program moves the Maildir away and puts a new one in its
    // place, with a message of its own and message 2's very file (same
    // name, same inode: only the Maildir's own identity tells them apart).
    let bob = site.root().join("bob");
    let moved = site.root().join("bob.moved");
    std::fs::rename(&bob, &moved).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(bob.join(sub)).unwrap();
    }
    let two = site.files("bob.moved")[1].clone();
    std::fs::rename(moved.join(&two), bob.join(&two)).unwrap();
    site.deliver("bob", "new", 3, b"Subject: 3\r\n\r\nthree\r\n");
    // The session ends there (an internal error), without its UPDATE.
    let reply = c.command("RETR 2");
    assert!(reply.starts_with("-ERR"), "{reply}");
    c.send(b"QUIT\r\n");
    assert!(!c.raw_line().starts_with(b"+OK"));
    // Neither Maildir lost anything.
    assert_eq!(site.files("bob.moved").len(), 1);
    assert_eq!(site.files("bob").len(), 2);
}
