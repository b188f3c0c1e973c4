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
