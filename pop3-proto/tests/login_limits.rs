//! The session's answers for logins the driver or the store holds back:
//! RFC 2449 §8.1.2 `[LOGIN-DELAY]` for good credentials that come too
//! soon, and the failed-login limits (`Session::limit_login`).

use std::time::Duration;

use pop3_proto::testing::{Harness, MemoryStore};
use pop3_proto::{CloseReason, Config, Event, LoginLimit, Mechanism, Request, UsageError};

fn harness(config: Config) -> Harness {
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.auto_answer = false;
    h
}

/// The last event recorded, which the harness left unanswered.
fn pending(h: &Harness) -> Event {
    h.events.last().cloned().expect("an event")
}

#[test]
fn login_delay_from_the_credential_check_is_answered_at_once() {
    let mut h = harness(
        Config::builder()
            .login_delay(Some(300), false)
            .build()
            .unwrap(),
    );
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    assert!(matches!(
        pending(&h),
        Event::Request(Request::Authenticate { .. })
    ));
    let start = h.now;
    h.session
        .refuse_login_delay(h.now, Duration::from_millis(299_001))
        .unwrap();
    h.run();
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n-ERR [LOGIN-DELAY] logged in too recently, try again in 300 seconds\r\n"
    );
    // Not a wrong password: no failed-login delay, not counted.
    assert_eq!(h.now, start);
    assert_eq!(h.session.stats().failed_logins, 0);
    assert_eq!(h.session.user(), None);
    // AUTHORIZATION goes on: USER is forgotten, a later login works.
    h.auto_answer = true;
    h.command("PASS tanstaaf");
    assert_eq!(h.take_sent(), "-ERR send USER first\r\n");
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    assert!(h
        .take_sent()
        .ends_with("+OK mrose's maildrop has 2 messages (320 octets)\r\n"));
}

#[test]
fn login_delay_from_the_lock_holds_no_maildrop() {
    let mut h = harness(Config::builder().build().unwrap());
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    let check = pending(&h);
    h.answer(check);
    h.run();
    assert!(matches!(pending(&h), Event::Request(Request::Lock { .. })));
    h.session
        .refuse_login_delay(h.now, Duration::from_secs(1))
        .unwrap();
    h.run();
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n-ERR [LOGIN-DELAY] logged in too recently, try again in 1 seconds\r\n"
    );
    assert!(!h.events.contains(&Event::Unlock));
    h.command("QUIT");
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::Quit),
        "a QUIT in AUTHORIZATION: nothing to unlock, nothing committed"
    );
    assert!(!h.events.contains(&Event::Unlock));
}

#[test]
fn login_delay_is_no_answer_to_other_requests() {
    let mut h = harness(Config::builder().build().unwrap());
    assert!(matches!(
        h.session.refuse_login_delay(h.now, Duration::from_secs(1)),
        Err(UsageError::NoPendingRequest { .. })
    ));
    h.auto_answer = true;
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.auto_answer = false;
    h.command("RETR 1");
    assert!(matches!(
        pending(&h),
        Event::Request(Request::Retrieve { .. })
    ));
    assert!(matches!(
        h.session.refuse_login_delay(h.now, Duration::from_secs(1)),
        Err(UsageError::NoPendingRequest { .. })
    ));
}

#[test]
fn a_limited_address_is_answered_like_a_wrong_password_and_counted() {
    let config = Config::builder()
        .auth_failure_delay(Duration::from_secs(2))
        .max_auth_failures(2)
        .build()
        .unwrap();
    let mut h = harness(config);
    for round in 0..2 {
        h.command("USER nobody-at-all");
        h.command("PASS guess");
        assert!(matches!(
            pending(&h),
            Event::Request(Request::Authenticate { .. })
        ));
        h.session.limit_login(h.now, LoginLimit::Address).unwrap();
        h.run();
        assert_eq!(h.take_sent(), "+OK send PASS\r\n", "held back");
        h.advance(Duration::from_secs(2));
        assert_eq!(
            h.take_sent(),
            "-ERR [SYS/TEMP] too many failed logins from your address, try again later\r\n"
        );
        assert_eq!(h.session.stats().failed_logins, round + 1);
    }
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::TooManyAuthFailures)
    );
}

#[test]
fn a_limited_user_gets_auth_after_the_delay_for_any_mechanism() {
    let config = Config::builder()
        .sasl(&[Mechanism::Plain, Mechanism::ScramSha256])
        .build()
        .unwrap();
    let mut h = harness(config);
    h.command("USER mrose");
    h.command("PASS wrong");
    h.session.limit_login(h.now, LoginLimit::User).unwrap();
    h.run();
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n-ERR [AUTH] too many failed logins for this user, try again later\r\n"
    );
    // SCRAM: refused at the key lookup, before any exchange.
    h.command("AUTH SCRAM-SHA-256 biwsbj1tcm9zZSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==");
    assert!(matches!(
        pending(&h),
        Event::Request(Request::ScramCredentials { .. })
    ));
    h.session.limit_login(h.now, LoginLimit::User).unwrap();
    h.run();
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] too many failed logins for this user, try again later\r\n"
    );
    assert_eq!(h.session.stats().failed_logins, 2);
}
