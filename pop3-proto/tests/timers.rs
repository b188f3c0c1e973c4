//! Timers under simulated time: the RFC 1939 §3 autologout and the
//! failed-login delay.

use std::time::Duration;

use pop3_proto::testing::{Harness, MemoryStore};
use pop3_proto::{CloseReason, Config, Event, Request};

const TEN_MINUTES: Duration = Duration::from_secs(600);

fn logged_in() -> Harness {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.take_sent();
    h
}

#[test]
fn deadline_is_ten_minutes_after_the_last_command() {
    let mut h = logged_in();
    let deadline = h.session.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + TEN_MINUTES);
    h.advance(Duration::from_secs(300));
    h.command("NOOP");
    assert_eq!(h.session.poll_timeout(), Some(h.now + TEN_MINUTES));
}

#[test]
fn early_timeout_calls_do_nothing() {
    let mut h = logged_in();
    for _ in 0..10 {
        h.advance(Duration::from_secs(59));
    }
    assert_eq!(h.take_sent(), "");
    assert!(!h.session.is_closed());
    h.command("STAT");
    assert_eq!(h.take_sent(), "+OK 2 320\r\n");
}

#[test]
fn idle_timeout_closes_without_update_or_reply() {
    let mut h = logged_in();
    h.command("DELE 1");
    h.command("DELE 2");
    h.take_sent();
    h.advance(TEN_MINUTES - Duration::from_nanos(1));
    assert!(!h.session.is_closed());
    h.advance(Duration::from_nanos(1));
    assert_eq!(h.take_sent(), "");
    assert!(h.session.is_closed());
    assert_eq!(h.session.close_reason(), Some(CloseReason::IdleTimeout));
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::Request(Request::Commit { .. }))));
    assert_eq!(h.store.messages("mrose").len(), 2);
    assert_eq!(h.events.iter().filter(|e| **e == Event::Unlock).count(), 1);
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn idle_timeout_in_authorization() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.command("USER mrose");
    h.take_sent();
    h.advance(TEN_MINUTES);
    assert_eq!(h.events, [Event::Closed(CloseReason::IdleTimeout)]);
    assert_eq!(h.take_sent(), "");
    assert_eq!(h.store.locks, 0);
}

#[test]
fn no_idle_timer_while_the_handler_works() {
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("RETR 1");
    assert_eq!(h.session.poll_timeout(), None);
    h.advance(TEN_MINUTES * 3);
    assert!(!h.session.is_closed());
}

#[test]
fn short_timeouts_need_the_test_escape_hatch() {
    assert!(Config::builder()
        .idle_timeout(Duration::from_secs(30))
        .build()
        .is_err());
    let config = Config::builder()
        .idle_timeout(Duration::from_secs(30))
        .allow_short_idle_timeout()
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.advance(Duration::from_secs(30));
    assert_eq!(h.session.close_reason(), Some(CloseReason::IdleTimeout));
}

#[test]
fn failed_login_delay_is_a_timer_not_a_sleep() {
    let config = Config::builder()
        .auth_failure_delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.command("USER mrose");
    h.command("PASS bad");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    // Pipelined input waits behind the held reply.
    h.feed(b"USER mrose\r\n");
    assert_eq!(h.take_sent(), "+OK send PASS\r\n");
    h.advance(Duration::from_millis(4999));
    assert_eq!(h.take_sent(), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] invalid user name or password\r\n+OK send PASS\r\n"
    );
    assert_eq!(h.elapsed(), Duration::from_secs(5));
    // After the reply, the idle timer runs again.
    assert_eq!(h.session.poll_timeout(), Some(h.now + TEN_MINUTES));
}
