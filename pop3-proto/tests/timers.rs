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

#[test]
fn output_waiting_behind_a_request_has_a_deadline() {
    let mut store = MemoryStore::new();
    let body = pop3_proto::testing::message_of_size("a", 5000);
    store.add_user(
        "u",
        "p",
        vec![body.clone(), StoredMessageExt::renamed(&body, "b")],
    );
    let config = Config::builder().output_high_water(3000).build().unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.auto_answer = false;
    // RETR 1 streams; RETR 2 goes to the handler while RETR 1's tail is queued.
    h.session
        .handle_input(h.now, b"RETR 1\r\nRETR 2\r\n")
        .unwrap();
    let _ = h.session.poll_event();
    h.session.begin_body(h.now).unwrap();
    let _ = h.session.poll_event();
    for _ in 0..5 {
        h.session
            .push_body(h.now, bytes::Bytes::from(vec![b'x'; 1100]))
            .unwrap();
    }
    h.session.end_body(h.now).unwrap();
    // Every write has a deadline, even with a request pending.
    while let Some(_segment) = h.session.poll_transmit(h.now) {
        assert!(h.session.poll_timeout().is_some());
    }
    // A peer that stops reading is cut off after the idle timeout.
    let mut h2 = logged_in();
    h2.auto_answer = false;
    h2.session
        .handle_input(h2.now, b"NOOP\r\nRETR 1\r\n")
        .unwrap();
    assert!(
        h2.session.poll_timeout().is_some(),
        "the NOOP reply waits to be taken"
    );
    h2.now += TEN_MINUTES;
    h2.session.handle_timeout(h2.now);
    // The request is still answered (so a lock it takes is released), then the session closes.
    assert!(matches!(
        h2.session.poll_event(),
        Some(Event::Request(Request::Retrieve { .. }))
    ));
    h2.session.begin_body(h2.now).unwrap();
    assert_eq!(h2.session.poll_event(), Some(Event::Unlock));
    assert_eq!(
        h2.session.poll_event(),
        Some(Event::Closed(CloseReason::IdleTimeout))
    );
}

/// Same body under a new uid.
trait StoredMessageExt {
    fn renamed(&self, uid: &str) -> pop3_proto::testing::StoredMessage;
}

impl StoredMessageExt for pop3_proto::testing::StoredMessage {
    fn renamed(&self, uid: &str) -> pop3_proto::testing::StoredMessage {
        Self {
            uid: uid.into(),
            body: self.body.clone(),
        }
    }
}

#[test]
fn a_slow_but_steady_listing_reader_is_not_cut_off() {
    let mut store = MemoryStore::new();
    let msgs = (0..2000)
        .map(|i| pop3_proto::testing::message_of_size(&format!("u{i}"), 40))
        .collect();
    store.add_user("u", "p", msgs);
    let config = Config::builder().output_high_water(1024).build().unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.take_sent();
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let mut listing = Vec::new();
    // The client takes one segment a minute: 30 minutes in all.
    while let Some(segment) = h.session.poll_transmit(h.now) {
        listing.extend_from_slice(&segment);
        h.now += Duration::from_secs(60);
        h.session.handle_timeout(h.now);
        assert_eq!(
            h.session.poll_event(),
            None,
            "cut off after {} octets",
            listing.len()
        );
    }
    assert!(listing.ends_with(b"2000 40\r\n.\r\n"));
    // A reader that stops is cut off.
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let _first = h.session.poll_transmit(h.now).unwrap();
    h.now += TEN_MINUTES;
    h.session.handle_timeout(h.now);
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::IdleTimeout))
    );
}

#[test]
fn failing_mid_listing_does_not_put_err_inside_it() {
    let mut store = MemoryStore::new();
    let msgs = (0..200)
        .map(|i| pop3_proto::testing::message_of_size(&format!("u{i}"), 40))
        .collect();
    store.add_user("u", "p", msgs);
    let config = Config::builder().output_high_water(256).build().unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.take_sent();
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let first = h.session.poll_transmit(h.now).unwrap();
    assert!(first.starts_with(b"+OK 200 messages"));
    h.session.fail(h.now).unwrap();
    let mut rest = Vec::new();
    while let Some(b) = h.session.poll_transmit(h.now) {
        rest.extend_from_slice(&b);
    }
    assert!(!String::from_utf8_lossy(&rest).contains("-ERR"));
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::HandlerFailed))
    );
}

#[test]
fn handler_time_never_counts_towards_autologout() {
    // Reading a body chunk.
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    while h.session.poll_transmit(h.now).is_some() {}
    assert_eq!(h.session.poll_event(), Some(Event::NeedBody));
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "only the handler is working"
    );
    // A slow commit: the goodbye still gets a fresh deadline.
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("QUIT");
    h.now += Duration::from_secs(660);
    h.session.commit_done(h.now).unwrap();
    assert_eq!(h.session.poll_transmit(h.now), None);
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    assert!(h.session.poll_timeout().unwrap() > h.now);
}

#[test]
fn eof_before_stls_reply_is_written_still_sends_earlier_replies() {
    let config = Config::builder().stls(true).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.session
        .handle_input(h.now, b"NOOP\r\nCAPA\r\nSTLS\r\n")
        .unwrap();
    h.session.handle_eof(h.now);
    h.run();
    let sent = h.take_sent();
    assert!(sent.contains("+OK capability list follows"), "{sent}");
    assert!(sent.ends_with("+OK Begin TLS negotiation\r\n"), "{sent}");
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::PeerClosed))
    );
}
