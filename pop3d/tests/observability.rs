//! End to end with the built `pop3d` on loopback: PROXY
//! protocol headers from trusted and untrusted sources, the metrics as a
//! real Prometheus/OpenMetrics parser reads them, the failed-login log
//! line against the documented fail2ban filter, and JSON logs.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pop3_conformance::Client;
use support::LoggedPop3d;

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// A running demo pop3d (user `demo`, password `demo`, STLS offered) on
/// 127.0.0.1, its log lines collected; killed on drop.
struct Server(LoggedPop3d);

impl std::ops::Deref for Server {
    type Target = LoggedPop3d;
    fn deref(&self) -> &LoggedPop3d {
        &self.0
    }
}

impl Server {
    fn start(args: &[&str]) -> Self {
        Self(LoggedPop3d::start(args))
    }

    /// Every sample of a scrape, parsed by prometheus_client's parsers.
    fn scrape(&self) -> BTreeMap<String, f64> {
        support::scrape(self.metrics.as_deref().expect("started with --metrics"))
    }

    /// A scrape once `sample` has reached `value` (sessions end a moment
    /// after their client sees the last reply).
    fn scrape_when(&self, sample: &str, value: f64) -> BTreeMap<String, f64> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let samples = self.scrape();
            if samples.get(sample) == Some(&value) || Instant::now() > give_up {
                return samples;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log lines so far once one containing `text` has come `count` times.
    fn logs_when(&self, text: &str, count: usize) -> Vec<String> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs.lock().unwrap().clone();
            if logs.iter().filter(|l| l.contains(text)).count() >= count || Instant::now() > give_up
            {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A connection from `source` (another loopback address than 127.0.0.1,
/// the trusted proxy in these tests).
fn connect_from(source: &str, to: SocketAddr) -> Client {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    Client::over(stream)
}

/// A PROXY v2 header: PROXY over TCP, with `tlvs` after the addresses.
fn v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => unreachable!(),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block.extend_from_slice(tlvs);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
    header.push(family);
    header.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&block);
    header
}

/// `PP2_TYPE_SSL` with `PP2_CLIENT_SSL` set: the client used TLS.
const CLIENT_TLS: &[u8] = &[0x20, 0, 5, 0x01, 0, 0, 0, 0];

/// A v2 header for a client at `client` that reached the proxy over TLS.
fn tls_client(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let destination = match client {
        SocketAddr::V4(_) => "10.0.0.1:995".parse().unwrap(),
        SocketAddr::V6(_) => "[2001:db8::1]:995".parse().unwrap(),
    };
    v2(client, destination, CLIENT_TLS)
}

/// True if the CAPA listing has this capability line.
fn has(capa: &str, line: &str) -> bool {
    capa.lines().any(|l| l == line)
}

fn proxied(server: &Server, header: &[u8]) -> Client {
    let mut c = Client::connect(server.addr);
    c.send(header);
    c
}

#[test]
fn proxy_headers_from_trusted_and_untrusted_sources() {
    let server = Server::start(&[
        "--proxy-from",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);

    // v1 from the trusted proxy: the client is remote now, so on this
    // plain connection with STLS offered its password is refused.
    let mut remote = proxied(&server, b"PROXY TCP4 203.0.113.5 10.0.0.1 5000 110\r\n");
    assert!(remote.line().starts_with("+OK"));
    remote.send(b"CAPA\r\n");
    assert!(remote.line().starts_with("+OK"));
    let capa = String::from_utf8(remote.multiline()).unwrap();
    assert!(has(&capa, "STLS") && !has(&capa, "USER"), "{capa}");
    let r = remote.command("USER demo");
    assert!(r.starts_with("-ERR [AUTH]") && r.contains("STLS"), "{r}");

    // The per-address limit counts the header's address: a second
    // connection of 203.0.113.5 is refused, though all come from 127.0.0.1.
    let mut same = proxied(&server, &tls_client("203.0.113.5:5001"));
    assert_eq!(
        same.line(),
        "-ERR [SYS/TEMP] too many connections from your address, try again later"
    );

    // v2 with PP2_CLIENT_SSL counts as TLS: no STLS, passwords allowed.
    let mut tls = proxied(&server, &tls_client("[2001:db8::7]:6000"));
    assert!(tls.line().starts_with("+OK"));
    tls.send(b"CAPA\r\n");
    assert!(tls.line().starts_with("+OK"));
    let capa = String::from_utf8(tls.multiline()).unwrap();
    assert!(!has(&capa, "STLS") && has(&capa, "USER"), "{capa}");
    assert!(tls.command("USER demo").starts_with("+OK"));
    assert!(tls.command("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(tls.command("USER demo").starts_with("+OK"));
    assert!(tls.command("PASS demo").starts_with("+OK"));
    assert!(tls.command("QUIT").starts_with("+OK"));

    // LOCAL (a health check) keeps the real address: loopback, local.
    let mut local = proxied(&server, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    assert!(local.line().starts_with("+OK"));
    assert!(local.command("USER demo").starts_with("+OK"));
    assert!(local.command("QUIT").starts_with("+OK"));

    // From the trusted source a header is required; bad ones are closed
    // without a word.
    for bad in [
        &b"CAPA\r\n"[..],
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    ] {
        let mut c = proxied(&server, bad);
        assert_eq!(c.closed(), (true, Vec::new()), "{bad:?}");
    }
    // ... and so is one that says nothing (after the 5 s header deadline).
    let mut silent = Client::connect(server.addr);
    assert_eq!(silent.closed(), (true, Vec::new()));

    // From an untrusted source the header is refused and closes the
    // connection; without one the client is served as usual.
    let mut forger = connect_from("127.0.0.2", server.addr);
    assert!(forger.line().starts_with("+OK"));
    forger.send(b"PROXY TCP4 198.51.100.1 10.0.0.1 5000 110\r\nUSER demo\r\n");
    assert_eq!(forger.closed(), (true, Vec::new()));
    let mut forger = connect_from("127.0.0.2", server.addr);
    assert!(forger.line().starts_with("+OK"));
    forger.send(&tls_client("198.51.100.1:5000"));
    assert_eq!(forger.closed(), (true, Vec::new()));
    let mut direct = connect_from("127.0.0.2", server.addr);
    assert!(direct.line().starts_with("+OK"));
    // Sent in pieces that begin like a header: held until told apart.
    direct.send(b"P");
    std::thread::sleep(Duration::from_millis(50));
    direct.send(b"ASS x\r\n");
    assert!(direct.line().starts_with("-ERR"));
    assert!(direct.command("QUIT").starts_with("+OK"));

    // Logs: the failed login under the header's address; the refusals.
    let logs = server.logs_when("auth failed", 1);
    let failed: Vec<_> = logs.iter().filter(|l| l.contains("auth failed")).collect();
    assert_eq!(failed.len(), 1, "{logs:#?}");
    assert!(
        failed[0]
            .ends_with(r#"auth failed: rip=2001:db8::7 lip=2001:db8::1 user="demo" mech=USER"#),
        "{}",
        failed[0]
    );
    let logs = server.logs_when("PROXY header", 6);
    let closed = logs
        .iter()
        .filter(|l| l.contains("connection closed: PROXY header"));
    assert_eq!(closed.count(), 6, "{logs:#?}");

    drop(remote);
    let m = server.scrape_when("pop3_sessions_open{}", 0.0);
    assert_eq!(
        m.get(r#"pop3_refused_total{reason="proxy"}"#),
        Some(&4.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_refused_total{reason="per_address"}"#),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_sessions_total{reason="rejected"}"#),
        Some(&2.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_sessions_total{reason="quit"}"#),
        Some(&3.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_logins_total{mechanism="USER",outcome="failed"}"#),
        Some(&1.0)
    );
}

/// The metrics port serves a bounded number of scrapes at once: more
/// connections are closed at once (they cannot take the descriptors POP3
/// needs), POP3 goes on, and scrapes work again once those are gone.
#[test]
fn the_metrics_port_holds_a_bounded_number_of_connections() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let url = server.metrics.clone().unwrap();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    // Connections that send half a request and wait.
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(answer.is_empty(), "a 17th scrape was served");
    let mut c = Client::login(server.addr, "demo", "demo");
    assert!(c.command("QUIT").starts_with("+OK"));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.scrape().contains_key("pop3_sessions_open{}"));
}

/// Login attempts the failed-login limits refuse unchecked are counted
/// with the refusals and as refused logins, and logged with a line of
/// their own, not as failed logins (nothing was checked).
#[test]
fn metrics_count_failed_login_limit_refusals() {
    let server = Server::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--max-failed-logins-per-ip",
        "1",
    ]);
    let (mut c, _) = Client::greeted(server.addr);
    assert!(c.command("USER demo").starts_with("+OK"));
    assert!(c.command("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(c.command("USER demo").starts_with("+OK"));
    assert!(c.command("PASS demo").starts_with("-ERR [SYS/TEMP]"));
    assert!(c.command("QUIT").starts_with("+OK"));
    let m = server.scrape_when(r#"pop3_sessions_total{reason="quit"}"#, 1.0);
    assert_eq!(
        m.get(r#"pop3_refused_total{reason="failed_logins_per_ip"}"#),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_logins_total{mechanism="USER",outcome="failed"}"#),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get(r#"pop3_logins_total{mechanism="USER",outcome="refused"}"#),
        Some(&1.0),
        "{m:#?}"
    );
    // One auth-failed line (fail2ban's), for the wrong password only; the
    // refusal has its own line.
    let logs = server.logs_when("login refused: too many failed logins", 1);
    assert_eq!(
        logs.iter().filter(|l| l.contains("auth failed:")).count(),
        1,
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains(
            "login refused: too many failed logins: rip=127.0.0.1 lip=127.0.0.1 limit=address"
        )),
        "{logs:#?}"
    );
}

#[test]
fn metrics_count_real_sessions() {
    let server = Server::start(&["--metrics", "127.0.0.1:0", "--max-connections-per-ip", "2"]);
    let addr = server.addr;

    // A failed USER/PASS, then QUIT.
    let (mut a, _) = Client::greeted(addr);
    assert!(a.command("USER demo").starts_with("+OK"));
    assert!(a.command("PASS wrong").starts_with("-ERR"));
    assert!(a.command("QUIT").starts_with("+OK"));
    // Closed once the session has given up its place under the limits.
    assert!(a.closed().0);
    // A login, RETR, TOP, an unknown command, QUIT.
    let mut b = Client::login(addr, "demo", "demo");
    assert!(b.command("RETR 1").starts_with("+OK"));
    let retr = b.multiline();
    assert!(b.command("TOP 1 0").starts_with("+OK"));
    let top = b.multiline();
    assert!(b.command("XYZZY").starts_with("-ERR"));
    assert!(b.command("QUIT").starts_with("+OK"));
    assert!(b.closed().0);
    // A failed SASL PLAIN (\0demo\0nope), then QUIT.
    let (mut c, _) = Client::greeted(addr);
    assert!(c.command("AUTH PLAIN AGRlbW8Abm9wZQ==").starts_with("-ERR"));
    assert!(c.command("QUIT").starts_with("+OK"));
    assert!(c.closed().0);

    // Two held connections; a third from the address is refused.
    let (held1, _) = Client::greeted(addr);
    let (held2, _) = Client::greeted(addr);
    // (The gauge drops just after a client sees its connection close.)
    let m = server.scrape_when("pop3_sessions_open{}", 2.0);
    assert_eq!(m.get("pop3_sessions_open{}"), Some(&2.0), "{m:#?}");
    let (_, refused) = Client::greeted(addr);
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    drop((held1, held2));

    let m = server.scrape_when(r#"pop3_sessions_total{reason="peer_closed"}"#, 2.0);
    let get = |name: &str| {
        m.get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {m:#?}"))
    };
    assert_eq!(get("pop3_sessions_open{}"), 0.0);
    assert_eq!(get(r#"pop3_sessions_total{reason="quit"}"#), 3.0);
    assert_eq!(get(r#"pop3_sessions_total{reason="peer_closed"}"#), 2.0);
    assert_eq!(
        get(r#"pop3_logins_total{mechanism="USER",outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pop3_logins_total{mechanism="USER",outcome="accepted"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pop3_logins_total{mechanism="PLAIN",outcome="failed"}"#),
        1.0
    );
    for (command, n) in [
        ("USER", 2.0),
        ("PASS", 2.0),
        ("RETR", 1.0),
        ("TOP", 1.0),
        ("AUTH", 1.0),
        ("QUIT", 3.0),
        ("other", 1.0),
    ] {
        assert_eq!(
            get(&format!(r#"pop3_commands_total{{command="{command}"}}"#)),
            n,
            "{command}"
        );
    }
    assert_eq!(get(r#"pop3_messages_sent_total{kind="retr"}"#), 1.0);
    assert_eq!(get(r#"pop3_messages_sent_total{kind="top"}"#), 1.0);
    assert_eq!(get(r#"pop3_refused_total{reason="per_address"}"#), 1.0);
    assert!(get("pop3_sent_bytes_total{}") > (retr.len() + top.len()) as f64);
    for (call, n) in [
        ("authenticate", 3.0),
        ("lock", 1.0),
        ("retrieve", 2.0),
        ("commit", 1.0),
    ] {
        assert_eq!(
            get(&format!(
                r#"pop3_handler_duration_seconds_count{{call="{call}"}}"#
            )),
            n,
            "{call}"
        );
        assert_eq!(
            get(&format!(
                r#"pop3_handler_duration_seconds_bucket{{call="{call}",le="+Inf"}}"#
            )),
            n
        );
    }
}

#[test]
fn the_fail2ban_filter_matches_real_failed_login_lines() {
    // 127.0.0.1 is a trusted proxy; direct clients come from 127.0.0.2.
    let server = Server::start(&["--proxy-from", "127.0.0.1"]);
    let mut direct = connect_from("127.0.0.2", server.addr);
    assert!(direct.line().starts_with("+OK"));
    assert!(direct.command("USER demo").starts_with("+OK"));
    assert!(direct.command("PASS wrong").starts_with("-ERR"));
    // A user name made to look like another address and another line.
    let forged = r#"x" rip=6.6.6.6 lip=1 user=- mech=X"#;
    assert!(direct.command(&format!("USER {forged}")).starts_with("+OK"));
    assert!(direct.command("PASS wrong").starts_with("-ERR"));
    // SASL PLAIN without a user (a malformed exchange): "user=-"; the
    // third failure closes the session.
    assert!(direct.command("AUTH PLAIN AAAA").starts_with("-ERR"));
    assert!(direct.closed().0);
    // Through the proxy, an IPv6 client.
    let mut remote = proxied(&server, &tls_client("[2001:db8::7]:6000"));
    assert!(remote.line().starts_with("+OK"));
    assert!(remote.command("USER demo").starts_with("+OK"));
    assert!(remote.command("PASS wrong").starts_with("-ERR"));
    assert!(remote.command("QUIT").starts_with("+OK"));
    let logs = server.logs_when("auth failed", 4);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pop3d.log");
    std::fs::write(&log, logs.join("\n") + "\n").unwrap();
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/fail2ban/filter.d/pop3d.conf"
    );
    let out = Command::new("python3")
        .arg(format!("{CLIENTS}/fail2ban_match.py"))
        .arg(filter)
        .arg(&log)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        hosts.lines().collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.2", "127.0.0.2", "2001:db8::7"],
        "{logs:#?}"
    );
    let forged_line = logs.iter().find(|l| l.contains("rip=6.6.6.6")).unwrap();
    assert!(
        forged_line.ends_with(r#"auth failed: rip=127.0.0.2 lip=127.0.0.1 user="x\" rip=6.6.6.6 lip=1 user=- mech=X" mech=USER"#),
        "{forged_line}"
    );
}

#[test]
fn json_logs_carry_the_failed_login_line() {
    let server = Server::start(&["--log-format", "json"]);
    let mut c = Client::connect(server.addr);
    assert!(c.line().starts_with("+OK"));
    assert!(c.command("USER demo").starts_with("+OK"));
    assert!(c.command("PASS wrong").starts_with("-ERR"));
    assert!(c.command("QUIT").starts_with("+OK"));
    let logs = server.logs_when("session ended", 1);
    let events: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("auth failed"))
        })
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(
        failed["fields"]["message"],
        r#"auth failed: rip=127.0.0.1 lip=127.0.0.1 user="demo" mech=USER"#
    );
    let ended = events
        .iter()
        .find(|e| e["fields"]["message"] == "session ended")
        .unwrap();
    assert_eq!(ended["fields"]["reason"], "quit");
}
