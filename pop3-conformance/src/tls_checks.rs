//! The TLS checks: STLS (RFC 2595) and implicit TLS (RFC 8314) with a real
//! rustls client, the injection barrier over the socket, and handshakes
//! that stall or fail ending only their own connection.

use std::net::TcpStream;
use std::time::Duration;

use pop3_driver::memory::MemoryStore;
use pop3_proto::{CloseReason, Config, PlaintextAuth};
use rustls::ProtocolVersion;

use crate::tls::{partial_client_hello, TestPki, TlsClient};
use crate::{Client, Launcher, Listen, Running, Spec};

const BODY: &[u8] = b"Subject: over TLS\r\n\r\nsecret text\r\n";

fn store() -> MemoryStore {
    let store = MemoryStore::new();
    store.add_user("alice", "wonderland");
    store.deliver("alice", BODY);
    store
}

fn config() -> pop3_proto::ConfigBuilder {
    Config::builder()
        .hostname("pop.test")
        .implementation(None)
        .auth_failure_delay(Duration::from_millis(50))
}

fn launch<L: Launcher>(config: Config, pki: &TestPki, listen: Listen) -> Running {
    L::launch(Spec::new(config, store()).with_tls(pki.server_tls(), listen))
}

fn capa(reply: String, lines: Vec<u8>) -> String {
    assert_eq!(reply, "+OK capability list follows");
    String::from_utf8(lines).unwrap()
}

/// A logged-in TLS session works to the end: RETR, then QUIT.
fn retrieve_and_quit(c: &mut TlsClient) {
    assert_eq!(c.command("RETR 1"), format!("+OK {} octets", BODY.len()));
    let mut expected = BODY.to_vec();
    expected.extend_from_slice(b".\r\n");
    assert_eq!(c.multiline(), expected);
    assert!(c
        .command("QUIT")
        .starts_with("+OK pop.test POP3 server signing off"));
}

/// STLS upgrades the connection; AUTHORIZATION starts over inside TLS,
/// where CAPA offers passwords and no more STLS. With the policy requiring
/// TLS, a password before the upgrade is refused with `[AUTH]`.
pub fn stls_then_login_inside_tls<L: Launcher>() {
    let pki = TestPki::new();
    let config = config()
        .stls(true)
        .plaintext_auth(PlaintextAuth::RequireTls)
        .build()
        .unwrap();
    let server = launch::<L>(config, &pki, Listen::Plain);
    let (mut c, greeting) = Client::greeted(server.addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let before = capa(c.command("CAPA"), c.multiline());
    assert!(before.contains("\r\nSTLS\r\n"), "{before}");
    assert!(
        !before.contains("USER") && !before.contains("SASL"),
        "{before}"
    );
    let refused = c.command("USER alice");
    assert!(refused.starts_with("-ERR [AUTH] "), "{refused}");
    assert_eq!(c.command("STLS"), "+OK Begin TLS negotiation");
    let mut c = c.start_tls(pki.client(&[]));
    let after = capa(c.command("CAPA"), c.multiline());
    assert!(!after.contains("STLS"), "{after}");
    assert!(
        after.contains("\r\nUSER\r\n") && after.contains("SASL PLAIN LOGIN"),
        "{after}"
    );
    assert_eq!(c.command("STLS"), "-ERR TLS already active");
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
    server.eventually("session end", |s| {
        s.connections
            .ended()
            .iter()
            .any(|e| e.reason == CloseReason::Quit && e.user.as_deref() == Some("alice"))
    });
    assert!(server.observed.events().contains(&"tls stls ok".to_owned()));
}

/// RFC 2595 §4 command injection: `STLS` and `USER` in one write. The
/// USER must not run inside TLS: PASS there has no user to go with.
pub fn stls_injection_is_not_executed_inside_tls<L: Launcher>() {
    let pki = TestPki::new();
    let server = launch::<L>(config().stls(true).build().unwrap(), &pki, Listen::Plain);
    let (mut c, _) = Client::greeted(server.addr);
    c.send(b"STLS\r\nUSER alice\r\n");
    assert_eq!(c.line(), "+OK Begin TLS negotiation");
    // Nothing else arrives in plaintext (start_tls checks), and had the
    // server answered USER before the handshake, the handshake would fail.
    let mut c = c.start_tls(pki.client(&[]));
    let pass = c.command("PASS wonderland");
    assert!(
        pass.starts_with("-ERR"),
        "the injected USER ran inside TLS: {pass}"
    );
    assert_eq!(server.store.locks(), 0, "nobody logged in");
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
}

/// An implicit TLS listener: the handshake first, ALPN `pop3` chosen when
/// offered, TLS 1.3 and 1.2; the session knows it is in TLS (no STLS in
/// CAPA, passwords allowed even where the policy requires TLS).
pub fn implicit_tls_negotiates_alpn_pop3<L: Launcher>() {
    let pki = TestPki::new();
    let config = config()
        .stls(true)
        .plaintext_auth(PlaintextAuth::RequireTls)
        .build()
        .unwrap();
    let server = launch::<L>(config, &pki, Listen::ImplicitTls);
    let (mut c, greeting) = TlsClient::greeted(server.addr, pki.client(&[b"pop3"]));
    assert_eq!(c.alpn(), Some(&b"pop3"[..]));
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.server_certificate(), pki.leaf_der());
    assert_eq!(greeting, "+OK POP3 server ready");
    let capa = capa(c.command("CAPA"), c.multiline());
    assert!(!capa.contains("STLS"), "{capa}");
    assert!(capa.contains("\r\nUSER\r\n"), "{capa}");
    assert_eq!(c.command("STLS"), "-ERR TLS already active");
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);

    // TLS 1.2 without ALPN is served too.
    let client = pki.client_with(&[], &[&rustls::version::TLS12]);
    let (mut c, greeting) = TlsClient::greeted(server.addr, client);
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(c.alpn(), None);
    assert!(greeting.starts_with("+OK"));
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
}

/// A client that stops halfway through its ClientHello, after STLS or on
/// an implicit TLS listener, is closed at the handshake deadline (here the
/// short test idle timeout); meanwhile other clients are served.
pub fn stalled_handshakes_are_closed_while_others_are_served<L: Launcher>() {
    let pki = TestPki::new();
    let config = config()
        .stls(true)
        .allow_short_idle_timeout()
        .idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let stls = launch::<L>(config.clone(), &pki, Listen::Plain);
    let implicit = launch::<L>(config, &pki, Listen::ImplicitTls);
    let hello = partial_client_hello(pki.client(&[b"pop3"]));

    let (mut stalled_stls, _) = Client::greeted(stls.addr);
    assert_eq!(stalled_stls.command("STLS"), "+OK Begin TLS negotiation");
    stalled_stls.send(&hello);
    let mut stalled_implicit = Client::connect(implicit.addr);
    stalled_implicit.send(&hello);

    // Both servers go on serving while those two hang.
    let (c, _) = Client::greeted(stls.addr);
    let mut c = stls_upgrade(c, &pki);
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
    let (mut c, _) = TlsClient::greeted(implicit.addr, pki.client(&[b"pop3"]));
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);

    for (server, stalled) in [
        (&stls, &mut stalled_stls),
        (&implicit, &mut stalled_implicit),
    ] {
        let (closed, _) = stalled.closed();
        assert!(closed, "a stalled handshake was not closed");
        server.eventually("the stalled connection's end", |s| {
            s.connections.ended().iter().any(|e| {
                e.reason == CloseReason::PeerClosed
                    && e.tls_error
                        .as_deref()
                        .is_some_and(|t| t.contains("timed out"))
            })
        });
    }
}

fn stls_upgrade(mut c: Client, pki: &TestPki) -> TlsClient {
    assert_eq!(c.command("STLS"), "+OK Begin TLS negotiation");
    c.start_tls(pki.client(&[]))
}

/// Bytes that are no TLS at all, after STLS or on an implicit TLS
/// listener, close that connection; sessions already running go on.
pub fn garbage_handshake_closes_only_that_connection<L: Launcher>() {
    let pki = TestPki::new();
    let config = config().stls(true).build().unwrap();
    let stls = launch::<L>(config.clone(), &pki, Listen::Plain);
    let implicit = launch::<L>(config, &pki, Listen::ImplicitTls);
    let garbage = b"GET / HTTP/1.1\r\nHost: pop.test\r\n\r\n";

    // A session in progress on each server.
    let mut running_stls = {
        let (c, _) = Client::greeted(stls.addr);
        stls_upgrade(c, &pki)
    };
    running_stls.login("alice", "wonderland");
    let (mut running_implicit, greeting) = TlsClient::greeted(implicit.addr, pki.client(&[]));
    assert!(greeting.starts_with("+OK"), "{greeting}");

    let (mut bad, _) = Client::greeted(stls.addr);
    assert_eq!(bad.command("STLS"), "+OK Begin TLS negotiation");
    bad.send(garbage);
    assert!(
        bad.closed().0,
        "garbage after STLS did not close the connection"
    );
    let mut bad = Client::connect(implicit.addr);
    bad.send(garbage);
    assert!(
        bad.closed().0,
        "garbage on the implicit TLS listener did not close it"
    );

    assert_eq!(
        running_stls.command("STAT"),
        format!("+OK 1 {}", BODY.len())
    );
    retrieve_and_quit(&mut running_stls);
    running_implicit.login("alice", "wonderland");
    retrieve_and_quit(&mut running_implicit);
    for server in [&stls, &implicit] {
        server.eventually("the bad connection's end", |s| {
            s.connections
                .ended()
                .iter()
                .any(|e| e.reason == CloseReason::PeerClosed && e.tls_error.is_some())
        });
    }
}

/// On an implicit TLS listener a handshake holds a place under the
/// connection limit: over the limit (every place held by a logged-in
/// session) a connection is closed at once, with no handshake, and the
/// server goes on serving once a place is free.
pub fn implicit_tls_over_the_limit_is_closed_without_a_handshake<L: Launcher>() {
    let pki = TestPki::new();
    let mut spec = Spec::new(config().build().unwrap(), store())
        .with_tls(pki.server_tls(), Listen::ImplicitTls);
    spec.max_connections = Some(1);
    let server = L::launch(spec);
    let (mut first, greeting) = TlsClient::greeted(server.addr, pki.client(&[]));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    first.login("alice", "wonderland");
    let over = TcpStream::connect(server.addr).unwrap();
    assert!(
        TlsClient::handshake(over, pki.client(&[])).is_err(),
        "a handshake over the connection limit"
    );
    server.eventually("the rejection", |s| {
        s.connections
            .ended()
            .iter()
            .any(|e| e.reason == CloseReason::Rejected)
    });
    retrieve_and_quit(&mut first);
    // The place is free once the first connection is closed.
    let mut served = None;
    for _ in 0..200 {
        let socket = TcpStream::connect(server.addr).unwrap();
        if let Ok(mut c) = TlsClient::handshake(socket, pki.client(&[])) {
            served = Some(c.line());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        served.is_some_and(|g| g.starts_with("+OK")),
        "not served again"
    );
}

/// Issue 10, defect 3, over implicit TLS: a handshake that stalls counts as
/// a connection that has not logged in and waits for its client, so when
/// the server needs the room it is closed first and a new client is served.
pub fn stalled_handshakes_make_room_for_new_clients<L: Launcher>() {
    let pki = TestPki::new();
    let mut spec = Spec::new(config().build().unwrap(), store())
        .with_tls(pki.server_tls(), Listen::ImplicitTls);
    // One place for connections that have not logged in.
    spec.max_connections = Some(2);
    let server = L::launch(spec);
    let mut stalled = Client::connect(server.addr);
    stalled.send(&partial_client_hello(pki.client(&[b"pop3"])));
    // Let the server take the stalled connection first (it is accepted
    // and waits in its handshake; nothing here can observe that).
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, greeting) = TlsClient::greeted(server.addr, pki.client(&[]));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let (closed, _) = stalled.closed();
    assert!(closed, "the stalled handshake made room");
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
    server.eventually("the stalled handshake's end", |s| {
        s.connections.ended().iter().any(|e| {
            e.evicted
                && e.tls_error
                    .as_deref()
                    .is_some_and(|t| t.contains("make room"))
        })
    });
}

/// On an implicit TLS listener the PROXY header comes before the TLS
/// handshake, and exactly the header is read, so the handshake that
/// follows gets the client's ClientHello whole.
pub fn proxy_header_before_implicit_tls<L: Launcher>() {
    let pki = TestPki::new();
    let mut spec = Spec::new(config().build().unwrap(), store())
        .with_tls(pki.server_tls(), Listen::ImplicitTls);
    spec.proxy_from = Some(vec!["127.0.0.1/32".parse().unwrap()]);
    let server = L::launch(spec);
    let mut socket = TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(
        &mut socket,
        b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 995\r\n",
    )
    .unwrap();
    let mut c = TlsClient::handshake(socket, pki.client(&[b"pop3"])).expect("handshake");
    assert!(c.line().starts_with("+OK"));
    c.login("alice", "wonderland");
    retrieve_and_quit(&mut c);
    let events = server.observed.events();
    assert!(events.contains(&"tls implicit ok".to_owned()), "{events:?}");
}
