//! RFC 5034 AUTH with PLAIN (RFC 4616), LOGIN, XOAUTH2 and OAUTHBEARER
//! (RFC 7628), the SASL line limit, and the plaintext policy (RFC 2595 §2.2:
//! no password over a connection that could have had TLS).

use std::time::Duration;

use pop3_proto::testing::{run_transcript, Harness, MemoryStore, ScramClient};
use pop3_proto::{Channel, CloseReason, Config, Mechanism, PlaintextAuth};

fn run(h: &mut Harness, script: &str) {
    if let Err(e) = run_transcript(h, script) {
        panic!("{e}");
    }
}

fn harness(config: Config) -> Harness {
    let store = MemoryStore::rfc1939();
    store.add_user("admin", "secret");
    store.add_master("admin");
    store.add_user("eve", "evil");
    store.add_token("mrose", "tok-123");
    Harness::new(config, store)
}

/// The defaults without the failure delay, so transcripts read straight on.
fn quick() -> Config {
    Config::builder()
        .auth_failure_delay(Duration::ZERO)
        .build()
        .unwrap()
}

fn all_mechanisms() -> Config {
    Config::builder()
        .sasl(&Mechanism::ALL)
        .auth_failure_delay(Duration::ZERO)
        .build()
        .unwrap()
}

#[test]
fn auth_without_argument_lists_the_mechanisms() {
    let mut h = harness(all_mechanisms());
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: AUTH
         S: +OK SASL mechanisms follow
         S: SCRAM-SHA-256
         S: PLAIN
         S: LOGIN
         S: XOAUTH2
         S: OAUTHBEARER
         S: .",
    );
}

#[test]
fn plain_with_an_initial_response() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: +OK mrose's maildrop has 2 messages (320 octets)
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: -ERR command not valid after login
         C: AUTH
         S: -ERR command not valid after login",
    );
    assert_eq!(h.session.user(), Some("mrose"));
}

#[test]
fn plain_after_an_empty_challenge() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: auth plain
         S: + 
         C: AG1yb3NlAHRhbnN0YWFm
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn plain_with_a_wrong_password_is_a_failed_login() {
    let mut h = harness(Config::default());
    h.take_sent();
    let before = h.elapsed();
    h.command("AUTH PLAIN AG1yb3NlAHdyb25n");
    // Held for the same failure delay as a wrong PASS (2 s by default).
    assert_eq!(h.take_sent(), "");
    assert!(h.advance_to_deadline());
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] invalid user name or password\r\n"
    );
    assert!(h.elapsed() - before >= Duration::from_secs(2));
}

#[test]
fn plain_authorization_identity_needs_a_master_user() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH PLAIN bXJvc2UAZXZlAGV2aWw=
         S: -ERR [AUTH] invalid user name or password
         C: AUTH PLAIN bXJvc2UAYWRtaW4Ac2VjcmV0
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
    // The maildrop is the authorization identity's, not the master's.
    assert_eq!(h.session.user(), Some("mrose"));
}

#[test]
fn empty_initial_response_is_equals_sign() {
    let mut h = harness(quick());
    h.take_sent();
    // "=" is an empty response (RFC 5034 §4), which PLAIN cannot use.
    h.command("AUTH PLAIN =");
    let sent = h.take_sent();
    assert!(sent.starts_with("-ERR [AUTH] "), "{sent}");
    assert!(!sent.starts_with("+ "), "{sent}");
}

#[test]
fn login_asks_for_user_name_then_password() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH LOGIN
         S: + VXNlcm5hbWU6
         C: bXJvc2U=
         S: + UGFzc3dvcmQ6
         C: dGFuc3RhYWY=
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn login_with_the_user_name_as_initial_response() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH LOGIN bXJvc2U=
         S: + UGFzc3dvcmQ6
         C: dGFuc3RhYWY=
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn star_cancels_and_the_session_goes_on() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH LOGIN
         S: + VXNlcm5hbWU6
         C: *
         S: -ERR authentication cancelled
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn bad_base64_is_refused() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH PLAIN not*base64
         S: -ERR invalid base64 in the initial response
         C: AUTH PLAIN
         S: + 
         C: %%%%
         S: -ERR invalid base64, authentication aborted
         C: NOOP
         S: -ERR command not valid before login",
    );
}

#[test]
fn unknown_or_unoffered_mechanisms_are_refused() {
    let mut h = harness(quick());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH CRAM-MD5
         S: -ERR unsupported authentication mechanism
         C: AUTH XOAUTH2 dXNlcj1tcm9zZQFhdXRoPUJlYXJlciB0b2stMTIzAQE=
         S: -ERR unsupported authentication mechanism",
    );
}

#[test]
fn xoauth2_token() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH XOAUTH2 dXNlcj1tcm9zZQFhdXRoPUJlYXJlciB0b2stMTIzAQE=
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn xoauth2_refusal_comes_in_a_json_challenge_first() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH XOAUTH2 dXNlcj1tcm9zZQFhdXRoPUJlYXJlciBzdG9sZW4BAQ==
         S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=
         C: 
         S: -ERR [AUTH] invalid user name or password
         C: AUTH XOAUTH2 dXNlcj1tcm9zZQFhdXRoPUJlYXJlciB0b2stMTIzAQE=
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn oauthbearer_token_and_error_flow() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    run(
        &mut h,
        "C: AUTH OAUTHBEARER bixhPW1yb3NlLAFob3N0PXBvcC5leGFtcGxlAXBvcnQ9MTEwAWF1dGg9QmVhcmVyIGJhZAEB
         S: + eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9
         C: AQ==
         S: -ERR [AUTH] invalid user name or password
         C: AUTH OAUTHBEARER bixhPW1yb3NlLAFhdXRoPUJlYXJlciB0b2stMTIzAQE=
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn sasl_lines_have_their_own_larger_limit() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    // A 4 KiB token: far over the 255-octet command limit, under the SASL one.
    let token = "t".repeat(4096);
    h.store.add_token("mrose", &token);
    let response = format!("user=mrose\x01auth=Bearer {token}\x01\x01");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(response);
    h.command(&format!("AUTH XOAUTH2 {encoded}"));
    assert_eq!(
        h.take_sent(),
        "+OK mrose's maildrop has 2 messages (320 octets)\r\n"
    );
    // Other commands keep the 255-octet limit.
    h.command(&format!("NOOP {}", "x".repeat(300)));
    assert_eq!(h.take_sent(), "-ERR line too long\r\n");
}

#[test]
fn oversized_sasl_response_aborts_the_exchange() {
    let mut h = harness(quick());
    h.take_sent();
    h.command("AUTH PLAIN");
    assert_eq!(h.take_sent(), "+ \r\n");
    h.command(&"A".repeat(pop3_proto::DEFAULT_MAX_SASL_LINE + 10));
    assert_eq!(
        h.take_sent(),
        "-ERR line too long, authentication aborted\r\n"
    );
    // Back to commands, and the input held stayed bounded.
    assert!(h.peak_input <= pop3_proto::DEFAULT_MAX_SASL_LINE);
    h.command("USER mrose");
    assert_eq!(h.take_sent(), "+OK send PASS\r\n");
}

#[test]
fn too_many_failed_exchanges_close_the_session() {
    let mut h = harness(quick());
    h.take_sent();
    for _ in 0..3 {
        h.command("AUTH PLAIN AG1yb3NlAHdyb25n");
    }
    assert!(h.session.is_closed());
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::TooManyAuthFailures)
    );
}

#[test]
fn shutdown_during_an_exchange_ends_it() {
    let mut h = harness(quick());
    h.take_sent();
    h.command("AUTH LOGIN");
    h.take_sent();
    h.session.handle_shutdown(h.now);
    h.run();
    let sent = h.take_sent();
    assert!(sent.starts_with("-ERR [SYS/TEMP] "), "{sent}");
    assert!(h.session.is_closed());
}

fn stls_offered() -> Config {
    Config::builder()
        .stls(true)
        .sasl(&Mechanism::ALL)
        .implementation(None)
        .auth_failure_delay(Duration::ZERO)
        .build()
        .unwrap()
}

#[test]
fn no_passwords_on_a_plain_connection_that_could_have_tls() {
    let mut h = harness(stls_offered());
    h.take_sent();
    run(
        &mut h,
        "C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: SASL SCRAM-SHA-256
         S: STLS
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE NEVER
         S: .
         C: AUTH
         S: +OK SASL mechanisms follow
         S: SCRAM-SHA-256
         S: .
         C: USER mrose
         S: -ERR [AUTH] USER/PASS is not allowed without TLS; use STLS first
         C: PASS tanstaaf
         S: -ERR send USER first
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: -ERR [AUTH] PLAIN is not allowed without TLS; use STLS first
         C: AUTH XOAUTH2 dXNlcj1tcm9zZQFhdXRoPUJlYXJlciB0b2stMTIzAQE=
         S: -ERR [AUTH] XOAUTH2 is not allowed without TLS; use STLS first
         C: STLS
         S: +OK Begin TLS negotiation",
    );
    run(
        &mut h,
        "C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: SASL SCRAM-SHA-256 PLAIN LOGIN XOAUTH2 OAUTHBEARER
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE NEVER
         S: .
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn loopback_and_implicit_tls_may_use_passwords() {
    for channel in [
        Channel {
            local: true,
            tls: false,
        },
        Channel {
            local: false,
            tls: true,
        },
    ] {
        let mut h = Harness::with_channel(stls_offered(), MemoryStore::rfc1939(), channel);
        h.take_sent();
        h.command("USER mrose");
        h.command("PASS tanstaaf");
        assert_eq!(
            h.take_sent(),
            "+OK send PASS\r\n+OK mrose's maildrop has 2 messages (320 octets)\r\n",
            "{channel:?}"
        );
    }
}

#[test]
fn require_tls_refuses_loopback_too() {
    let config = Config::builder()
        .plaintext_auth(PlaintextAuth::RequireTls)
        .build()
        .unwrap();
    let local = Channel {
        local: true,
        tls: false,
    };
    let mut h = Harness::with_channel(config, MemoryStore::rfc1939(), local);
    h.take_sent();
    h.command("USER mrose");
    // No STLS on offer: no hint to use it.
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] USER/PASS is not allowed without TLS\r\n"
    );
}

#[test]
fn allow_permits_passwords_anywhere() {
    let config = Config::builder()
        .stls(true)
        .plaintext_auth(PlaintextAuth::Allow)
        .build()
        .unwrap();
    let mut h = harness(config);
    h.take_sent();
    h.command("AUTH PLAIN AG1yb3NlAHRhbnN0YWFm");
    assert_eq!(
        h.take_sent(),
        "+OK mrose's maildrop has 2 messages (320 octets)\r\n"
    );
}

#[test]
fn apop_can_be_put_under_the_policy() {
    let config = Config::builder()
        .stls(true)
        .apop(true)
        .apop_needs_tls(true)
        .build()
        .unwrap();
    let mut h = harness(config);
    h.take_sent();
    h.command("APOP mrose c4c9334bac560ecc979e58001b3e22fb");
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] APOP is not allowed without TLS; use STLS first\r\n"
    );
}

#[test]
fn commands_sent_after_stls_never_reach_the_exchange() {
    let mut h = harness(stls_offered());
    h.take_sent();
    // A man in the middle appends a login to the STLS line (RFC 2595 §3.1
    // injection); it must be thrown away with the plaintext buffer.
    h.feed(b"STLS\r\nAUTH PLAIN AG1yb3NlAHRhbnN0YWFm\r\n");
    h.run();
    assert_eq!(h.take_sent(), "+OK Begin TLS negotiation\r\n");
    assert_eq!(h.take_sent(), "");
    assert_eq!(h.session.user(), None);
}

use base64::Engine as _;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends AUTH SCRAM-SHA-256 with the client's first message; returns the
/// decoded server-first message.
fn scram_start(h: &mut Harness, client: &ScramClient) -> String {
    h.command(&format!("AUTH SCRAM-SHA-256 {}", client.first()));
    let sent = h.take_sent();
    let challenge = sent
        .strip_prefix("+ ")
        .and_then(|c| c.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("no challenge: {sent}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(challenge)
        .unwrap();
    String::from_utf8(decoded).unwrap()
}

#[test]
fn scram_sha_256_exchange() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    let client = ScramClient::new("mrose", "tanstaaf");
    let server_first = scram_start(&mut h, &client);
    assert_eq!(
        server_first,
        format!(
            "r=fyko+d2lbbFgONRv9qkxdawL{},s={},i=4096",
            pop3_proto::testing::HARNESS_SCRAM_NONCE,
            b64(b"salt:mrose")
        )
    );
    let last = client.finish(&server_first);
    h.command(&last.response);
    assert_eq!(h.take_sent(), format!("+ {}\r\n", last.server_final));
    h.command("");
    assert_eq!(
        h.take_sent(),
        "+OK mrose's maildrop has 2 messages (320 octets)\r\n"
    );
}

#[test]
fn scram_is_usable_where_passwords_are_not() {
    let mut h = harness(stls_offered());
    h.take_sent();
    let client = ScramClient::new("mrose", "tanstaaf");
    let server_first = scram_start(&mut h, &client);
    h.command(&client.finish(&server_first).response);
    h.take_sent();
    h.command("");
    assert_eq!(h.session.user(), Some("mrose"));
}

#[test]
fn scram_wrong_password_and_unknown_user_fail_alike() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    for (user, password) in [("mrose", "wrong"), ("nobody", "tanstaaf")] {
        let client = ScramClient::new(user, password);
        let server_first = scram_start(&mut h, &client);
        // An unknown user gets a salt too: stable, so it tells nothing.
        assert!(server_first.contains(",s="), "{server_first}");
        h.command(&client.finish(&server_first).response);
        assert_eq!(
            h.take_sent(),
            "-ERR [AUTH] invalid user name or password\r\n",
            "{user}"
        );
    }
    let again = scram_start(&mut h, &ScramClient::new("nobody", "x"));
    let salt = |m: &str| m.split(',').nth(1).unwrap().to_owned();
    let mut other = harness(all_mechanisms());
    other.take_sent();
    assert_eq!(
        salt(&again),
        salt(&scram_start(&mut other, &ScramClient::new("nobody", "y")))
    );
}

#[test]
fn scram_refuses_tampering_and_channel_binding() {
    let mut h = harness(all_mechanisms());
    h.take_sent();
    let client = ScramClient::new("mrose", "tanstaaf");
    scram_start(&mut h, &client);
    // A final message for another nonce.
    h.command(&b64(
        b"c=biws,r=other,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    ));
    assert_eq!(h.take_sent(), "-ERR [AUTH] SCRAM nonce does not match\r\n");
    h.command(&format!(
        "AUTH SCRAM-SHA-256 {}",
        b64(b"p=tls-unique,,n=mrose,r=abc")
    ));
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] channel binding is not supported\r\n"
    );
    // After the proof, only an empty response ends the exchange.
    let server_first = scram_start(&mut h, &client);
    h.command(&client.finish(&server_first).response);
    h.take_sent();
    h.command("eA==");
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] SCRAM expects an empty response\r\n"
    );
    assert_eq!(h.session.user(), None);
}

#[test]
fn malformed_exchanges_count_as_failed_logins() {
    let mut h = harness(quick());
    h.take_sent();
    // "=" (empty) is malformed for PLAIN: three in a row close the session
    // like three wrong passwords, instead of looping for free.
    for _ in 0..3 {
        h.command("AUTH PLAIN =");
    }
    assert!(h.session.is_closed());
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::TooManyAuthFailures)
    );
}

#[test]
fn garbage_exchanges_count_as_bad_commands() {
    let mut h = harness(quick());
    h.take_sent();
    for _ in 0..10 {
        h.command("AUTH PLAIN %%%");
    }
    assert!(h.session.is_closed());
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::TooManyBadCommands)
    );
}
