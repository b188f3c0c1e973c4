//! Timers under simulated time: the RFC 1939 §3 autologout and the
//! failed-login delay.

use std::time::Duration;

use pop3_proto::testing::{Harness, MemoryStore, Step};
use pop3_proto::{CloseReason, Config, Event, Output, Refusal, Request, Wait};

/// What a session that is over waits for: nothing.
const DONE: Step = Step::Wait(Wait {
    read: false,
    deadline: None,
});

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
    let deadline = h.deadline().unwrap();
    assert_eq!(deadline, h.now + TEN_MINUTES);
    assert_eq!(
        h.wait(),
        Some(Wait {
            read: true,
            deadline: Some(deadline)
        })
    );
    h.advance(Duration::from_secs(300));
    assert_eq!(h.deadline(), Some(deadline), "time alone moves nothing");
    h.command("NOOP");
    assert_eq!(h.deadline(), Some(h.now + TEN_MINUTES));
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
    assert_eq!(h.deadline(), None);
    assert_eq!(h.steps(), [DONE]);
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
    assert_eq!(h.store.locks(), 0);
}

#[test]
fn no_idle_timer_while_the_handler_works() {
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("RETR 1");
    assert_eq!(h.deadline(), None);
    assert_eq!(
        h.wait(),
        Some(Wait {
            read: true,
            deadline: None
        }),
        "pipelined input is still read"
    );
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
    assert_eq!(h.deadline(), Some(h.now + Duration::from_secs(5)));
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
    assert_eq!(h.deadline(), Some(h.now + TEN_MINUTES));
}

#[test]
fn output_waiting_behind_a_request_has_a_deadline() {
    let store = MemoryStore::new();
    let body = pop3_proto::testing::message_of_size("a", 5000);
    store.add_user_with(
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
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Event(Event::Request(Request::Retrieve { .. }))
    ));
    h.session.begin_body(h.now).unwrap();
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Event(Event::NeedBody)
    ));
    for _ in 0..5 {
        h.session
            .push_body(h.now, bytes::Bytes::from(vec![b'x'; 1100]))
            .unwrap();
    }
    h.session.end_body(h.now).unwrap();
    // Every write has a deadline, even with a request queued behind it.
    let mut writes = 0;
    loop {
        match h.session.poll_output(h.now) {
            Output::Transmit(t) => {
                assert_eq!(t.deadline(), Some(h.now + TEN_MINUTES));
                writes += 1;
                h.session.handle_written(h.now, t).unwrap();
            }
            Output::Event(Event::Request(Request::Retrieve { message, .. })) => {
                assert_eq!(message.number, 2);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(writes >= 1);
    // A peer that stops reading is cut off after the idle timeout.
    let mut h2 = logged_in();
    h2.auto_answer = false;
    h2.session
        .handle_input(h2.now, b"NOOP\r\nRETR 1\r\n")
        .unwrap();
    let Output::Transmit(noop) = h2.session.poll_output(h2.now) else {
        panic!("the NOOP reply comes first");
    };
    assert_eq!(noop.to_vec(), b"+OK\r\n");
    assert_eq!(
        noop.deadline(),
        Some(h2.now + TEN_MINUTES),
        "the NOOP reply must be taken in time"
    );
    // The write never completes.
    h2.now += TEN_MINUTES;
    h2.session.handle_timeout(h2.now);
    // The request is still answered (so a lock it takes is released), then the session closes.
    assert!(matches!(
        h2.session.poll_output(h2.now),
        Output::Event(Event::Request(Request::Retrieve { .. }))
    ));
    h2.session.begin_body(h2.now).unwrap();
    assert_eq!(
        h2.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::IdleTimeout)),
            DONE,
        ]
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
    let store = MemoryStore::new();
    let msgs = (0..2000)
        .map(|i| pop3_proto::testing::message_of_size(&format!("u{i}"), 40))
        .collect::<Vec<_>>();
    store.add_user_with("u", "p", msgs);
    let config = Config::builder().output_high_water(1024).build().unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.take_sent();
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let mut listing = Vec::new();
    let start = h.now;
    // Each write takes the client a minute: longer than the idle timeout in all.
    loop {
        match h.session.poll_output(h.now) {
            Output::Transmit(t) => {
                listing.extend_from_slice(&t.to_vec());
                h.now += Duration::from_secs(60);
                h.session.handle_timeout(h.now);
                h.session
                    .handle_written(h.now, t)
                    .unwrap_or_else(|e| panic!("cut off after {} octets: {e}", listing.len()));
            }
            Output::Event(e) => panic!("cut off after {} octets: {e:?}", listing.len()),
            Output::Wait(w) => {
                assert!(w.read);
                break;
            }
        }
    }
    assert!(listing.ends_with(b"2000 40\r\n.\r\n"));
    assert!(h.now - start > TEN_MINUTES, "{:?}", h.now - start);
    // A reader that stops is cut off.
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let Output::Transmit(_first) = h.session.poll_output(h.now) else {
        panic!("the listing starts");
    };
    h.now += TEN_MINUTES;
    h.session.handle_timeout(h.now);
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::IdleTimeout)),
            DONE,
        ]
    );
}

#[test]
fn failing_mid_listing_does_not_put_err_inside_it() {
    let store = MemoryStore::new();
    let msgs = (0..200)
        .map(|i| pop3_proto::testing::message_of_size(&format!("u{i}"), 40))
        .collect::<Vec<_>>();
    store.add_user_with("u", "p", msgs);
    let config = Config::builder().output_high_water(256).build().unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.take_sent();
    h.session.handle_input(h.now, b"LIST\r\n").unwrap();
    let Output::Transmit(first) = h.session.poll_output(h.now) else {
        panic!("the listing starts");
    };
    assert!(first.to_vec().starts_with(b"+OK 200 messages"));
    // The handler fails while the first part of the listing is being written.
    h.session.fail(h.now).unwrap();
    h.session.handle_written(h.now, first).unwrap();
    let steps = h.steps();
    let events: Vec<&Step> = steps
        .iter()
        .filter(|s| !matches!(s, Step::Bytes(_)))
        .collect();
    assert_eq!(
        events,
        [
            &Step::Event(Event::Unlock),
            &Step::Event(Event::Closed(CloseReason::HandlerFailed)),
            &DONE,
        ]
    );
    assert!(!h.take_sent().contains("-ERR"), "{steps:?}");
    let listing_ended = steps
        .iter()
        .any(|s| matches!(s, Step::Bytes(b) if b.ends_with(".\r\n")));
    assert!(!listing_ended, "{steps:?}");
}

#[test]
fn handler_time_never_counts_towards_autologout() {
    // Reading a body chunk.
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    // The +OK waits for the body to fill the output: only the handler is working.
    assert_eq!(h.steps(), [Step::Event(Event::NeedBody)]);
    h.advance(TEN_MINUTES * 3);
    assert!(!h.session.is_closed(), "the handler's reading time counted");
    assert_eq!(h.steps(), [Step::Event(Event::NeedBody)]);
    h.session
        .push_body(
            h.now,
            bytes::Bytes::from_static(b"Subject: x\r\n\r\nbody\r\n"),
        )
        .unwrap();
    h.advance(TEN_MINUTES * 3);
    assert!(!h.session.is_closed(), "the handler's reading time counted");
    h.session.end_body(h.now).unwrap();
    let Output::Transmit(t) = h.session.poll_output(h.now) else {
        panic!("the body goes out");
    };
    assert_eq!(
        t.to_vec(),
        b"+OK 120 octets\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
    );
    assert_eq!(t.deadline(), Some(h.now + TEN_MINUTES), "a fresh deadline");
    h.session.handle_written(h.now, t).unwrap();
    // A slow commit: the goodbye still gets a fresh deadline.
    let mut h = logged_in();
    h.auto_answer = false;
    h.command("QUIT");
    h.now += Duration::from_secs(660);
    h.session.commit_done(h.now).unwrap();
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Event(Event::Unlock)
    ));
    let Output::Transmit(bye) = h.session.poll_output(h.now) else {
        panic!("the goodbye follows the unlock");
    };
    assert_eq!(bye.deadline(), Some(h.now + TEN_MINUTES));
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

/// The failure delay runs from when the check was asked for, so a slow
/// check (an Argon2id hash) and a fast one (a `{PLAIN}` compare, an
/// unknown user) answer at the same moment.
#[test]
fn failure_delay_does_not_show_the_check_time() {
    let config = Config::builder().build().unwrap();
    let mut reply_times = Vec::new();
    for check_time in [
        Duration::ZERO,
        Duration::from_millis(40),
        Duration::from_millis(900),
    ] {
        let mut h = Harness::new(config.clone(), MemoryStore::rfc1939());
        h.auto_answer = false;
        h.command("USER mrose");
        h.command("PASS wrong");
        h.take_sent();
        let start = h.now;
        // The handler takes `check_time` to refuse.
        h.now += check_time;
        h.session
            .refuse(h.now, Refusal::auth("invalid user name or password"))
            .unwrap();
        h.run();
        while h.take_sent().is_empty() {
            assert!(h.advance_to_deadline());
        }
        reply_times.push(h.now - start);
    }
    assert_eq!(reply_times, [Duration::from_secs(2); 3]);
}
