//! The order of the session's one output, shown as explicit sequences of
//! [`Step`]s (a transmit's bytes, an event, a wait): unlock before the
//! farewell, StartTls after its `+OK`, Closed last, pipelined replies in one
//! write, bodies in writes of about the high-water mark.

use std::time::Duration;

use pop3_proto::testing::{
    check_stuffed, Fault, FaultPoint, Harness, MemoryStore, Step, StoredMessage,
};
use pop3_proto::{
    CloseReason, Config, Event, MessageRef, Output, Refusal, Request, Uid, UsageError, Wait,
};

const IDLE: Duration = Duration::from_secs(600);

/// A session that is over waits for nothing.
const DONE: Step = Step::Wait(Wait {
    read: false,
    deadline: None,
});

fn bytes(text: &str) -> Step {
    Step::Bytes(text.into())
}

fn event(e: Event) -> Step {
    Step::Event(e)
}

/// Waiting for the next command, with the idle deadline counted from `h.now`.
fn reading(h: &Harness) -> Step {
    Step::Wait(Wait {
        read: true,
        deadline: Some(h.now + IDLE),
    })
}

fn logged_in(config: Config, store: MemoryStore) -> Harness {
    let mut h = Harness::new(config, store);
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.take_sent();
    h.auto_answer = false;
    h
}

fn rfc1939() -> Harness {
    logged_in(Config::builder().build().unwrap(), MemoryStore::rfc1939())
}

/// Plays the driver like [`Harness::run`], answering every event, and
/// returns the outputs in order (without the repeated `NeedBody`s).
fn drive(h: &mut Harness) -> Vec<Step> {
    let mut log = Vec::new();
    loop {
        let step = h.step();
        match &step {
            Step::Event(Event::NeedBody) => h.answer(Event::NeedBody),
            Step::Event(e) => {
                let e = e.clone();
                log.push(step);
                h.answer(e);
            }
            Step::Bytes(_) => log.push(step),
            Step::Wait(_) => {
                log.push(step);
                return log;
            }
        }
    }
}

// ---- (a) QUIT in TRANSACTION ----

#[test]
fn quit_in_transaction_commits_unlocks_says_goodbye_then_closes() {
    let mut h = rfc1939();
    h.session
        .handle_input(h.now, b"DELE 1\r\nQUIT\r\n")
        .unwrap();
    let deleted = vec![MessageRef {
        number: 1,
        uid: Uid::new("one").unwrap(),
        size: 120,
    }];
    assert_eq!(
        h.steps(),
        [
            bytes("+OK message 1 deleted\r\n"),
            event(Event::Request(Request::Commit { deleted })),
            // UPDATE is the handler's: no deadline runs meanwhile.
            Step::Wait(Wait {
                read: true,
                deadline: None
            }),
        ]
    );
    h.session.commit_done(h.now).unwrap();
    assert_eq!(
        h.steps(),
        [
            event(Event::Unlock),
            bytes("+OK localhost POP3 server signing off (1 messages left)\r\n"),
            event(Event::Closed(CloseReason::Quit)),
            DONE,
        ]
    );
    assert!(h.session.is_closed());
}

#[test]
fn quit_in_authorization_sends_the_farewell_then_closes() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.session.handle_input(h.now, b"QUIT\r\n").unwrap();
    assert_eq!(
        h.steps(),
        [
            bytes("+OK localhost POP3 server signing off\r\n"),
            event(Event::Closed(CloseReason::Quit)),
            DONE,
        ]
    );
}

// ---- (b) STLS ----

#[test]
fn stls_ok_then_start_tls_and_pipelined_commands_are_never_executed() {
    let config = Config::builder().stls(true).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.auto_answer = false;
    h.session
        .handle_input(h.now, b"STLS\r\nUSER mrose\r\n")
        .unwrap();
    assert_eq!(
        h.steps(),
        [
            bytes("+OK Begin TLS negotiation\r\n"),
            event(Event::StartTls),
            // The handshake: no reading, the idle deadline runs.
            Step::Wait(Wait {
                read: false,
                deadline: Some(h.now + IDLE)
            }),
        ]
    );
    assert_eq!(h.session.stats().discarded_at_stls, 12);
    h.session.handle_tls_established(h.now).unwrap();
    // No reply to the USER sent in plaintext: it was never executed.
    assert_eq!(h.steps(), [reading(&h)]);
    h.session.handle_input(h.now, b"PASS tanstaaf\r\n").unwrap();
    assert_eq!(h.steps(), [bytes("-ERR send USER first\r\n"), reading(&h)]);
    // Inside TLS, STLS is no longer offered.
    h.session.handle_input(h.now, b"CAPA\r\n").unwrap();
    let capa = h.steps();
    let [Step::Bytes(capa), wait] = &capa[..] else {
        panic!("{capa:?}");
    };
    assert_eq!(*wait, reading(&h));
    assert!(
        capa.starts_with("+OK capability list follows\r\n"),
        "{capa}"
    );
    assert!(capa.ends_with("\r\n.\r\n"), "{capa}");
    assert!(!capa.contains("STLS"), "{capa}");
    assert!(capa.contains("\r\nUSER\r\n"), "{capa}");
}

// ---- (c) Closed is last ----

/// Every way a session can end, each driven to its end.
fn endings() -> Vec<(&'static str, Harness)> {
    let config = || Config::builder().max_bad_commands(3).build().unwrap();
    let mut out = Vec::new();

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.command("QUIT");
    out.push(("QUIT before login", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nQUIT\r\n");
    out.push(("QUIT after login", h));

    let store = MemoryStore::rfc1939();
    store.inject(
        FaultPoint::Commit,
        Fault::Refuse(Refusal::sys_temp("disk full")),
    );
    let mut h = Harness::new(config(), store);
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nQUIT\r\n");
    out.push(("refused commit", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\n");
    h.eof();
    out.push(("end of stream", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.advance(IDLE);
    out.push(("idle timeout", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"X\r\nY\r\nZ\r\n");
    out.push(("bad commands", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.session.handle_shutdown(h.now);
    h.run();
    out.push(("shutdown", h));

    let store = MemoryStore::rfc1939();
    store.inject(FaultPoint::MidBody, Fault::Internal);
    let mut h = Harness::new(config(), store);
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\n");
    out.push(("failure mid-body", h));

    let mut h = Harness::new(config(), MemoryStore::rfc1939());
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nLIST\r\n");
    h.session.handle_connection_lost(h.now);
    h.run();
    out.push(("connection lost", h));
    out
}

#[test]
fn closed_is_the_last_output_and_nothing_follows_it() {
    for (name, mut h) in endings() {
        assert!(h.session.is_closed(), "{name}");
        let closes = h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count();
        assert_eq!(closes, 1, "{name}: {:?}", h.events);
        assert!(matches!(h.events.last(), Some(Event::Closed(_))), "{name}");
        assert_eq!(h.store.locks(), h.store.unlocks(), "{name}");
        assert_eq!(
            h.wait(),
            Some(Wait {
                read: false,
                deadline: None
            }),
            "{name}"
        );
        // Whatever the world does afterwards, nothing more comes out.
        let sent = h.sent.len();
        let events = h.events.len();
        let now = h.now + IDLE * 10;
        h.now = now;
        let s = &mut h.session;
        assert_eq!(
            s.handle_input(now, b"NOOP\r\n"),
            Err(UsageError::Closed),
            "{name}"
        );
        assert_eq!(s.commit_done(now), Err(UsageError::Closed), "{name}");
        assert_eq!(s.fail(now), Err(UsageError::Closed), "{name}");
        s.handle_eof(now);
        s.handle_timeout(now);
        s.handle_shutdown(now);
        s.handle_connection_lost(now);
        for _ in 0..3 {
            assert_eq!(h.step(), DONE, "{name}");
        }
        assert_eq!((h.sent.len(), h.events.len()), (sent, events), "{name}");
        assert!(!h.session.wants_input(), "{name}");
    }
}

#[test]
fn closed_follows_the_last_bytes_in_one_sequence() {
    // Failure outside a response: unlock, the -ERR, then Closed.
    let store = MemoryStore::rfc1939();
    store.inject(FaultPoint::Open, Fault::Internal);
    let mut h = logged_in(Config::builder().build().unwrap(), store);
    h.auto_answer = true;
    h.session
        .handle_input(h.now, b"RETR 1\r\nSTAT\r\n")
        .unwrap();
    let retrieve = Event::Request(Request::Retrieve {
        message: MessageRef {
            number: 1,
            uid: Uid::new("one").unwrap(),
            size: 120,
        },
        top_lines: None,
    });
    assert_eq!(
        drive(&mut h),
        [
            event(retrieve),
            event(Event::Unlock),
            bytes("-ERR [SYS/TEMP] internal server error, closing connection\r\n"),
            event(Event::Closed(CloseReason::HandlerFailed)),
            DONE,
        ]
    );
}

// ---- (d) a lost connection ----

#[test]
fn lost_connection_drops_queued_bytes_but_keeps_unlock_then_closed() {
    let mut h = rfc1939();
    h.session
        .handle_input(h.now, b"STAT\r\nLIST\r\nUIDL\r\n")
        .unwrap();
    assert!(h.session.output_buffered() > 0);
    h.session.handle_connection_lost(h.now);
    assert_eq!(h.session.output_buffered(), 0);
    assert_eq!(
        h.steps(),
        [
            event(Event::Unlock),
            event(Event::Closed(CloseReason::PeerClosed)),
            DONE,
        ]
    );
    assert_eq!(h.take_sent(), "");
}

#[test]
fn lost_connection_with_a_write_in_flight() {
    let mut h = rfc1939();
    h.session.handle_input(h.now, b"STAT\r\n").unwrap();
    let Output::Transmit(t) = h.session.poll_output(h.now) else {
        panic!("the STAT reply");
    };
    h.session.handle_connection_lost(h.now);
    assert_eq!(
        h.steps(),
        [
            event(Event::Unlock),
            event(Event::Closed(CloseReason::PeerClosed)),
            DONE,
        ]
    );
    // The failed write is not given back.
    assert_eq!(
        h.session.handle_written(h.now, t),
        Err(UsageError::NothingInFlight)
    );
}

#[test]
fn lost_connection_before_login_closes_without_unlock() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.session.handle_input(h.now, b"USER mrose\r\n").unwrap();
    h.session.handle_connection_lost(h.now);
    assert_eq!(
        h.steps(),
        [event(Event::Closed(CloseReason::PeerClosed)), DONE]
    );
}

/// The handler's answer to a request outstanding when the connection was
/// lost queues no bytes: nothing may be handed out for a dead connection.
#[test]
fn answers_after_a_lost_connection_send_nothing() {
    type Answer = fn(&mut pop3_proto::Session, std::time::Instant) -> Result<(), UsageError>;
    let answers: [(&str, Answer); 2] = [
        ("begin_body", |s, now| s.begin_body(now)),
        ("refuse", |s, now| s.refuse(now, Refusal::sys_perm("gone"))),
    ];
    for (name, answer) in answers {
        let mut h = rfc1939();
        h.session.handle_input(h.now, b"RETR 1\r\n").unwrap();
        assert!(matches!(
            h.steps()[..],
            [Step::Event(Event::Request(Request::Retrieve { .. })), _]
        ));
        h.session.handle_connection_lost(h.now);
        assert_eq!(h.steps(), [DONE], "{name}: waits for the answer");
        answer(&mut h.session, h.now).unwrap();
        assert_eq!(
            h.steps(),
            [
                event(Event::Unlock),
                event(Event::Closed(CloseReason::PeerClosed)),
                DONE,
            ],
            "{name}"
        );
    }
    // A Lock granted for a lost connection: no +OK, and it is unlocked.
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.auto_answer = false;
    h.session
        .handle_input(h.now, b"USER mrose\r\nPASS tanstaaf\r\n")
        .unwrap();
    h.steps();
    h.session.accept_login(h.now).unwrap();
    assert!(matches!(
        h.steps()[..],
        [Step::Event(Event::Request(Request::Lock { .. })), _]
    ));
    h.session.handle_connection_lost(h.now);
    h.session
        .grant_maildrop(h.now, pop3_proto::Maildrop::default())
        .unwrap();
    assert_eq!(
        h.steps(),
        [
            event(Event::Unlock),
            event(Event::Closed(CloseReason::PeerClosed)),
            DONE,
        ]
    );
    assert_eq!(h.take_sent(), "+OK send PASS\r\n");
}

// ---- (e) pipelining ----

#[test]
fn pipelined_replies_come_out_as_one_transmit() {
    let mut h = rfc1939();
    h.session
        .handle_input(
            h.now,
            b"STAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nDELE 1\r\nLIST 1\r\nRSET\r\nCAPA\r\n",
        )
        .unwrap();
    let steps = h.steps();
    let [Step::Bytes(replies), wait] = &steps[..] else {
        panic!("expected one transmit, then a wait: {steps:?}");
    };
    assert_eq!(*wait, reading(&h));
    let head = "+OK 2 320\r\n\
                +OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n\
                +OK 1 one\r\n\
                +OK\r\n\
                +OK message 1 deleted\r\n\
                -ERR message 1 already deleted\r\n\
                +OK maildrop has 2 messages (320 octets)\r\n\
                +OK capability list follows\r\n";
    assert!(replies.starts_with(head), "{replies}");
    assert!(replies.ends_with("\r\n.\r\n"), "{replies}");
}

// ---- (f) a large body ----

/// About 1 MiB of mail with CRLF line ends and about 3% of the lines
/// starting with a dot.
fn big_body() -> Vec<u8> {
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut n = 0u32;
    while body.len() < 1 << 20 {
        n += 1;
        if n % 33 == 0 {
            body.push(b'.');
        }
        let width = 40 + (n * 7919 % 37) as usize;
        body.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, width));
        body.extend_from_slice(b"\r\n");
    }
    body
}

#[test]
fn a_large_body_leaves_in_writes_of_about_the_high_water_mark() {
    const HIGH_WATER: usize = 64 * 1024;
    const CHUNK: usize = 32 * 1024;
    let body = big_body();
    let dots = body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    let lines = body.split(|&b| b == b'\n').count();
    assert!((2..=4).contains(&(dots * 100 / lines)), "{dots} of {lines}");
    let store = MemoryStore::new();
    store.add_user_with(
        "mrose",
        "tanstaaf",
        vec![StoredMessage {
            uid: "big".into(),
            body: body.clone(),
        }],
    );
    store.set_chunk_size(CHUNK);
    let config = Config::builder()
        .output_high_water(HIGH_WATER)
        .build()
        .unwrap();
    let mut h = logged_in(config, store);
    h.auto_answer = true;
    h.session.handle_input(h.now, b"RETR 1\r\n").unwrap();

    let mut sent = Vec::new();
    let mut writes = Vec::new();
    loop {
        match h.session.poll_output(h.now) {
            Output::Transmit(t) => {
                // The segments together are the bytes of this write.
                let joined: Vec<u8> = t.segments().concat();
                assert_eq!(joined.len(), t.len());
                assert_eq!(joined, t.to_vec());
                assert!(!t.is_empty());
                assert!(t.deadline().is_some());
                writes.push(t.len());
                sent.extend_from_slice(&joined);
                h.session.handle_written(h.now, t).unwrap();
            }
            Output::Event(e) => h.answer(e),
            Output::Wait(w) => {
                assert_eq!(
                    w,
                    Wait {
                        read: true,
                        deadline: Some(h.now + IDLE)
                    }
                );
                break;
            }
        }
    }
    let status = format!("+OK {} octets\r\n", body.len());
    assert!(sent.starts_with(status.as_bytes()));
    check_stuffed(&body, &sent[status.len()..]).unwrap_or_else(|e| panic!("{e}"));
    assert!(sent.len() > body.len() + dots, "the dots were stuffed");

    let most = sent.len().div_ceil(HIGH_WATER);
    assert!(
        writes.len() <= most + 2,
        "{} writes for {} octets: {writes:?}",
        writes.len(),
        sent.len()
    );
    // The output is filled up to the mark before it is written, and never
    // holds more than the mark plus one stuffed chunk.
    let (last, full) = writes.split_last().unwrap();
    for &w in full {
        assert!(
            (HIGH_WATER..HIGH_WATER + CHUNK + CHUNK / 8).contains(&w),
            "{writes:?}"
        );
    }
    assert!(*last <= HIGH_WATER + CHUNK + CHUNK / 8, "{writes:?}");
}

/// A client that pipelines without reading holds at most
/// [`REPLY_HIGH_WATER`](pop3_proto::REPLY_HIGH_WATER) of replies (plus the
/// reply that crossed it) and one input buffer (plus the read that filled it):
/// commands stop being executed, then input stops being read, until the
/// client reads. Then every reply comes, in order.
#[test]
fn a_pipelining_client_that_never_reads_holds_a_bounded_buffer() {
    use pop3_proto::{Greeting, Session};
    const COMMANDS: usize = 20_000;
    let config = Config::default();
    let bound_out = pop3_proto::REPLY_HIGH_WATER + 512;
    let now = std::time::Instant::now();
    let mut s = Session::new(
        std::sync::Arc::new(config),
        Greeting {
            nonce: 1,
            unix_time: 1,
        },
        now,
    );
    let input = "CAPA\r\n".repeat(COMMANDS);
    let (mut fed, mut held) = (0, Vec::new());
    while fed < input.len() && s.wants_input() {
        let n = (input.len() - fed).min(4096);
        s.handle_input(now, &input.as_bytes()[fed..fed + n])
            .unwrap();
        fed += n;
        while let Output::Transmit(t) = s.poll_output(now) {
            held.push(t);
        }
        assert!(s.output_buffered() <= bound_out, "{}", s.output_buffered());
        assert!(s.input_buffered() <= 8 * 1024 + 4096);
    }
    assert!(fed < input.len(), "the session kept reading");
    // The client reads now: everything is answered.
    let mut replies = 0;
    let mut rest = &input.as_bytes()[fed..];
    loop {
        for t in held.drain(..) {
            replies += t.to_vec().windows(5).filter(|w| w == b"+OK c").count();
            s.handle_written(now, t).unwrap();
        }
        if s.wants_input() && !rest.is_empty() {
            let n = rest.len().min(4096);
            s.handle_input(now, &rest[..n]).unwrap();
            rest = &rest[n..];
        }
        while let Output::Transmit(t) = s.poll_output(now) {
            held.push(t);
        }
        assert!(s.output_buffered() <= bound_out);
        if held.is_empty() && rest.is_empty() {
            break;
        }
    }
    assert_eq!(replies, COMMANDS);
}
