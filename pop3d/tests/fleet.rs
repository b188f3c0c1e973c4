//! Many instances behind HAProxy: a real `haproxy` in TCP mode with
//! `send-proxy-v2` in front of three `pop3d --store` instances on one
//! throwaway PostgreSQL cluster, under concurrent sessions and deliveries
//! from several loopback source addresses.
//!
//! Checked afterwards: every delivered message was retrieved exactly once
//! (by the marker in its body), counting what was left in the store; no
//! message deleted by a session whose QUIT succeeded was served again;
//! sessions that found their maildrop held elsewhere got `[IN-USE]` and
//! got in on a retry; HAProxy spread the sessions over all three
//! instances; and every pop3d log line naming an address names one that a
//! client of this test really connected from, never HAProxy's own (the
//! only other lines are HAProxy's health checks, which carry no client).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop3_conformance::Client;
use support::cluster::Cluster;
use support::{free_port, LoggedPop3d};

/// Client threads, sessions per thread, users they share, messages delivered.
const THREADS: usize = 8;
const SESSIONS: usize = 20;
const USERS: usize = 3;
const MESSAGES: usize = 160;

/// Where the client threads connect from: HAProxy sees these addresses.
const SOURCES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
];

/// A pop3d instance behind HAProxy with its log lines (stderr,
/// `RUST_LOG=info`) collected; killed on drop.
fn instance(url: &str) -> LoggedPop3d {
    LoggedPop3d::start(&[
        "--store",
        url,
        "--proxy-from",
        "127.0.0.1",
        "--db-pool-size",
        "8",
    ])
}

/// The HAProxy configuration for `servers`, listening on `port`: the one
/// the README's "Running several instances" shows.
fn haproxy_config(port: u16, servers: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global
    maxconn 2000

defaults
    mode tcp
    timeout connect 5s
    # Longer than pop3d's 10-minute idle timeout, so pop3d ends idle sessions.
    timeout client 11m
    timeout server 11m

frontend pop3
    bind 127.0.0.1:{port}
    default_backend pop3d

backend pop3d
    balance leastconn
    option tcp-check
    tcp-check connect send-proxy
    tcp-check expect string +OK
    tcp-check send \"QUIT\\r\\n\"
    tcp-check expect string +OK
"
    );
    for (i, server) in servers.iter().enumerate() {
        cfg.push_str(&format!(
            "    server pop3d-{} {server} send-proxy-v2 check inter 2s\n",
            i + 1
        ));
    }
    cfg
}

/// Whether `program` is on PATH.
fn which(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// `haproxy -f CFG -db` in a temporary directory; killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(servers: &[SocketAddr]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pop3d-haproxy-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(port, servers)).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        // On PATH, else where Debian puts it (/usr/sbin is not on every PATH).
        let program = if which("haproxy") {
            "haproxy"
        } else {
            "/usr/sbin/haproxy"
        };
        let child = match Command::new(program)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run haproxy ({e}): this test needs HAProxy \
                 (Debian: apt-get install haproxy; .ci/run installs it)"
            ),
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Waits until HAProxy passes a session through to a pop3d (the
    /// probes' addresses are recorded like the clients').
    fn wait_serving(&self, seen: &Mutex<Seen>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stream) = try_connect(SOURCES[0], self.addr, seen) {
                let mut c = Client::over(stream);
                if c.raw_line().starts_with(b"+OK") {
                    c.command("QUIT");
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not pass sessions on {}: {}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pop3d ARGS` with `stdin`; panics unless it succeeds.
fn pop3d(args: &[&str], stdin: &[u8]) -> String {
    let out = support::run_with_input(args, stdin);
    assert!(
        out.status.success(),
        "pop3d {args:?}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn user(n: usize) -> String {
    format!("fleet{n}")
}

fn password(n: usize) -> String {
    format!("pw{n}")
}

/// Message `i`: a unique Message-ID and body marker, sizes that vary, and
/// a line starting with a dot.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "Message-ID: <fleet-{i}@test.invalid>\r\nSubject: fleet {i}\r\n\r\n\
         marker=fleet-marker-{i}=\r\n.a dotted line\r\n"
    );
    for line in 0..(i % 7) * 40 {
        m.push_str(&format!(
            "filler {i} {line} and some text to make a line\r\n"
        ));
    }
    m.into_bytes()
}

/// The marker number in a retrieved (dot-stuffed) message.
fn marker(body: &[u8]) -> usize {
    let text = String::from_utf8_lossy(body);
    let start = text.find("marker=fleet-marker-").expect("a marker") + 20;
    let end = start + text[start..].find('=').unwrap();
    text[start..end].parse().unwrap()
}

/// What the client threads saw.
#[derive(Default)]
struct Seen {
    /// Every source address a connection of this test had (to HAProxy).
    sources: BTreeSet<SocketAddr>,
    /// The latest of them.
    last: Option<SocketAddr>,
    /// Markers retrieved, in sessions whose QUIT succeeded.
    retrieved: Vec<usize>,
    in_use: usize,
    sessions: usize,
}

/// The source address of the latest connection (single-threaded use).
fn stale_local(seen: &Mutex<Seen>) -> SocketAddr {
    seen.lock().unwrap().last.expect("a connection")
}

/// A connection to `to` from `source`; its local address is recorded.
fn try_connect(source: Ipv4Addr, to: SocketAddr, seen: &Mutex<Seen>) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    // Recorded before the connect: HAProxy may pass it on at once.
    let local = socket.local_addr()?.as_socket().expect("an IPv4 address");
    {
        let mut seen = seen.lock().unwrap();
        seen.sources.insert(local);
        seen.last = Some(local);
    }
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// A connection to `to` from `source`; its local address is recorded.
fn connect(source: Ipv4Addr, to: SocketAddr, seen: &Mutex<Seen>) -> Client {
    Client::over(try_connect(source, to, seen).expect("connect to haproxy"))
}

/// Logs `n` in from `source`, retrying (bounded) while the maildrop is
/// in use; the client and the number of `[IN-USE]` replies.
fn login(source: Ipv4Addr, to: SocketAddr, n: usize, seen: &Mutex<Seen>) -> (Client, usize) {
    let mut in_use = 0;
    for _ in 0..400 {
        let mut c = connect(source, to, seen);
        let greeting = c.line();
        assert!(greeting.starts_with("+OK"), "greeting {greeting}");
        assert!(c.command(&format!("USER {}", user(n))).starts_with("+OK"));
        let reply = c.command(&format!("PASS {}", password(n)));
        if reply.starts_with("+OK") {
            return (c, in_use);
        }
        assert!(reply.starts_with("-ERR [IN-USE]"), "PASS: {reply}");
        in_use += 1;
        drop(c);
        std::thread::sleep(Duration::from_millis(10 + (in_use as u64 % 5) * 10));
    }
    panic!("{} stayed in use for 400 attempts", user(n));
}

/// One session: STAT, UIDL, RETR and DELE of every message, QUIT; the
/// markers retrieved.
fn session(c: &mut Client) -> Vec<usize> {
    let stat = c.command("STAT");
    let count: usize = stat
        .strip_prefix("+OK ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("STAT: {stat}"));
    assert!(c.command("UIDL").starts_with("+OK"));
    let uidl = c.multiline();
    assert_eq!(uidl.split(|&b| b == b'\n').count() - 2, count, "UIDL lines");
    let mut markers = Vec::new();
    for i in 1..=count {
        let reply = c.command(&format!("RETR {i}"));
        assert!(reply.starts_with("+OK"), "RETR {i}: {reply}");
        markers.push(marker(&c.multiline()));
        let reply = c.command(&format!("DELE {i}"));
        assert!(reply.starts_with("+OK"), "DELE {i}: {reply}");
    }
    let quit = c.command("QUIT");
    assert!(quit.starts_with("+OK"), "QUIT: {quit}");
    markers
}

/// Every `a.b.c.d:port` in a log line.
fn addresses(line: &str) -> Vec<SocketAddr> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .filter_map(|word| word.trim_matches(|c| c == '.' || c == ':').parse().ok())
        .collect()
}

#[test]
fn three_instances_behind_haproxy_serve_every_message_exactly_once() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let url = cluster.url();
    pop3d(&["db", "migrate", "--store", &url], b"");
    let users = tempfile::NamedTempFile::new().unwrap();
    let lines: String = (0..USERS)
        .map(|n| format!("{}:{{PLAIN}}{}::::::\n", user(n), password(n)))
        .collect();
    std::fs::write(users.path(), lines).unwrap();
    pop3d(
        &[
            "user",
            "import",
            "--store",
            &url,
            users.path().to_str().unwrap(),
        ],
        b"",
    );
    let instances: Vec<LoggedPop3d> = (0..3).map(|_| instance(&url)).collect();
    let backends: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    let haproxy = Haproxy::start(&backends);
    let front = haproxy.addr;
    let seen = Arc::new(Mutex::new(Seen::default()));
    haproxy.wait_serving(&seen);

    // Deliveries, one `pop3d deliver` each, while the clients run.
    let deliverer = {
        let url = url.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                pop3d(&["deliver", "--store", &url, &user(i % USERS)], &message(i));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let source = SOURCES[t % SOURCES.len()];
                for s in 0..SESSIONS {
                    let n = (t + s) % USERS;
                    let (mut c, in_use) = login(source, front, n, &seen);
                    let markers = session(&mut c);
                    let mut seen = seen.lock().unwrap();
                    seen.in_use += in_use;
                    seen.sessions += 1;
                    seen.retrieved.extend(markers);
                }
            })
        })
        .collect();
    deliverer.join().expect("deliveries");
    for c in clients {
        c.join().expect("a client thread");
    }
    let load_time = started.elapsed();

    // What is left: one last session per user takes it.
    for n in 0..USERS {
        let (mut c, _) = login(SOURCES[n % SOURCES.len()], front, n, &seen);
        let markers = session(&mut c);
        seen.lock().unwrap().retrieved.extend(markers);
    }
    assert_eq!(cluster.sql("SELECT count(*) FROM pop3d_messages"), "0");

    // A session whose lease is taken over (as if its instance had stalled
    // past the lease time) deletes nothing, and the database store's
    // warning names its real client.
    pop3d(&["deliver", "--store", &url, &user(0)], &message(MESSAGES));
    let (mut stale, _) = login(SOURCES[1], front, 0, &seen);
    let stale_addr = stale_local(&seen);
    assert!(stale.command("DELE 1").starts_with("+OK"));
    cluster.sql("UPDATE pop3d_leases SET expires_at = clock_timestamp() - interval '1 second'");
    let (mut taker, _) = login(SOURCES[2], front, 0, &seen);
    let quit = stale.command("QUIT");
    assert!(quit.starts_with("-ERR"), "a QUIT after a takeover: {quit}");
    assert_eq!(session(&mut taker), vec![MESSAGES]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let found = instances.iter().flat_map(|i| i.logs()).find(|l| {
            l.contains("lease lost before UPDATE") && l.contains(&format!("peer=\"{stale_addr}\""))
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no lease warning naming {stale_addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(warning.contains("nothing deleted"), "{warning}");

    let seen = seen.lock().unwrap();
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for &m in &seen.retrieved {
        *counts.entry(m).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "retrieved more than once: {twice:?}");
    let lost: Vec<_> = (0..MESSAGES).filter(|m| !counts.contains_key(m)).collect();
    assert!(lost.is_empty(), "never retrieved: {lost:?}");
    assert_eq!(counts.len(), MESSAGES, "markers that were never delivered");
    assert_eq!(seen.sessions, THREADS * SESSIONS);
    assert!(
        seen.in_use > 0,
        "no session met its maildrop in use elsewhere: the load did not overlap"
    );

    // The logs: sessions on every instance, and only real client addresses.
    let own: Vec<SocketAddr> = backends.clone();
    let mut per_instance = Vec::new();
    let mut logged_from = BTreeSet::new();
    for (i, instance) in instances.iter().enumerate() {
        let logs = instance.logs();
        let sessions = logs
            .iter()
            .filter(|l| l.contains("session ended") && !l.contains(r#"user="-""#))
            .count();
        per_instance.push(sessions);
        for line in &logs {
            for addr in addresses(line) {
                if own.contains(&addr) || addr.port() == cluster.port {
                    continue; // pop3d's own listener or the database
                }
                if seen.sources.contains(&addr) {
                    logged_from.insert(addr.ip());
                    continue;
                }
                // HAProxy's own connections: only its health checks, which
                // send a PROXY header naming no client and then QUIT.
                assert!(
                    line.contains("session ended")
                        && line.contains(r#"user="-""#)
                        && line.contains("commands=1"),
                    "instance {i} logged an address that is no client's: {line}"
                );
            }
        }
    }
    assert!(
        per_instance.iter().all(|&s| s > 0),
        "HAProxy did not balance over all three: {per_instance:?}"
    );
    let sources: BTreeSet<_> = SOURCES.iter().map(|&ip| IpAddr::from(ip)).collect();
    assert_eq!(logged_from, sources, "the client addresses in the logs");
    let logged: usize = per_instance.iter().sum();
    assert!(
        logged >= THREADS * SESSIONS,
        "{logged} logged-in sessions in the logs, {} made",
        THREADS * SESSIONS
    );
    eprintln!(
        "fleet: {} sessions ({:?} per instance), {} [IN-USE] retries, {MESSAGES} messages, \
         {} source addresses, load {:.1} s, all {:.1} s",
        seen.sessions,
        per_instance,
        seen.in_use,
        seen.sources.len(),
        load_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(haproxy);
}
