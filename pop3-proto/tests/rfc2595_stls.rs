//! RFC 2595 STLS: the upgrade handshake between session and driver, and
//! the command-injection barrier.

use pop3_proto::testing::{run_transcript, Harness, MemoryStore, Step};
use pop3_proto::{Config, Event, Output, PlaintextAuth, UsageError, Wait};

fn stls_config() -> Config {
    Config::builder()
        .stls(true)
        .implementation(Some("x".into()))
        .build()
        .unwrap()
}

#[test]
fn stls_then_login_inside_tls() {
    let mut h = Harness::new(stls_config(), MemoryStore::rfc1939());
    run_transcript(
        &mut h,
        "S: +OK POP3 server ready
         C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: STLS
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE NEVER
         S: IMPLEMENTATION x
         S: .
         C: STLS
         S: +OK Begin TLS negotiation
         C: STLS
         S: -ERR TLS already active
         C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: SASL PLAIN LOGIN
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE NEVER
         S: IMPLEMENTATION x
         S: .
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)
         C: STLS
         S: -ERR command not valid after login",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(h.session.is_tls());
}

#[test]
fn start_tls_comes_only_after_the_ok_is_taken() {
    let mut h = Harness::new(stls_config(), MemoryStore::rfc1939());
    h.auto_answer = false;
    h.take_sent();
    h.session.handle_input(h.now, b"STLS\r\n").unwrap();
    // Output first.
    let Output::Transmit(ok) = h.session.poll_output(h.now) else {
        panic!("the +OK comes before StartTls");
    };
    assert_eq!(ok.to_vec(), b"+OK Begin TLS negotiation\r\n");
    // Not even then: only once the +OK is written.
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Wait(Wait { read: false, .. })
    ));
    h.session.handle_written(h.now, ok).unwrap();
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Event(Event::StartTls)
    ));
    // The handshake is the driver's: no reading, the idle deadline runs.
    let idle = h.session.config().idle_timeout();
    assert_eq!(
        h.steps(),
        [Step::Wait(Wait {
            read: false,
            deadline: Some(h.now + idle)
        })]
    );
    assert!(!h.session.wants_input());
    assert_eq!(
        h.session.handle_input(h.now, b"USER x\r\n"),
        Err(UsageError::InputNotWanted)
    );
}

#[test]
fn user_given_before_stls_is_forgotten() {
    let config = Config::builder()
        .stls(true)
        .plaintext_auth(PlaintextAuth::Allow)
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.command("USER mrose");
    h.command("STLS");
    h.command("PASS tanstaaf");
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n+OK Begin TLS negotiation\r\n-ERR send USER first\r\n"
    );
}

#[test]
fn tls_established_without_stls_is_a_usage_error() {
    let mut h = Harness::new(stls_config(), MemoryStore::rfc1939());
    assert_eq!(
        h.session.handle_tls_established(h.now),
        Err(UsageError::NoTlsNegotiation)
    );
    assert!(!h.session.is_tls());
}

#[test]
fn stls_not_offered() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.command("STLS");
    assert_eq!(h.take_sent(), "-ERR STLS not offered\r\n");
}

#[test]
fn eof_during_handshake_closes() {
    let mut h = Harness::new(stls_config(), MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("STLS");
    assert_eq!(h.events, [Event::StartTls]);
    h.eof();
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(pop3_proto::CloseReason::PeerClosed))
    );
}

/// Found by the `procedure` fuzz target: when the write of STLS's `+OK`
/// fails (its deadline passes, or the connection is lost), the `StartTls`
/// queued behind it must not come out: the `+OK` was never written, and a
/// handshake on a dead connection makes no sense. Only `Closed` follows.
#[test]
fn no_start_tls_when_the_ok_was_never_written() {
    for timed_out in [true, false] {
        let start = std::time::Instant::now();
        let config = std::sync::Arc::new(stls_config());
        let greeting = pop3_proto::Greeting {
            nonce: 1,
            unix_time: 0,
        };
        let mut s = pop3_proto::Session::new(config.clone(), greeting, start);
        let Output::Transmit(t) = s.poll_output(start) else {
            panic!("the greeting first");
        };
        s.handle_written(start, t).unwrap();
        s.handle_input(start, b"STLS\r\n").unwrap();
        let Output::Transmit(t) = s.poll_output(start) else {
            panic!("the +OK to STLS");
        };
        assert_eq!(t.to_vec(), b"+OK Begin TLS negotiation\r\n");
        // The write never completes.
        let later = start + config.idle_timeout();
        if timed_out {
            s.handle_timeout(later);
        } else {
            s.handle_connection_lost(later);
        }
        let mut events = Vec::new();
        for _ in 0..4 {
            match s.poll_output(later) {
                Output::Event(e) => events.push(e),
                Output::Wait(_) => break,
                Output::Transmit(t) => panic!("a transmit after the loss: {:?}", t.to_vec()),
            }
        }
        let reason = if timed_out {
            pop3_proto::CloseReason::IdleTimeout
        } else {
            pop3_proto::CloseReason::PeerClosed
        };
        assert_eq!(events, [Event::Closed(reason)], "timed out: {timed_out}");
        drop(t);
    }
}
