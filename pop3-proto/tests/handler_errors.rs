//! Handler answers: reportable refusals keep the session going, internal
//! failures end it; in every case nothing is deleted unless QUIT's commit
//! succeeded, and a locked maildrop is unlocked exactly once.

use bytes::Bytes;
use pop3_proto::testing::{message_of_size, Fault, FaultPoint, Harness, MemoryStore, Step};
use pop3_proto::{CloseReason, Config, Event, Refusal, Wait};

/// What a session that is over waits for: nothing.
const DONE: Step = Step::Wait(Wait {
    read: false,
    deadline: None,
});

/// What a session with a request out waits for: the handler (nothing the
/// driver can read or time).
const ON_HANDLER: Step = DONE;

fn unlock_count(h: &Harness) -> usize {
    h.events.iter().filter(|e| **e == Event::Unlock).count()
}

fn logged_in(store: MemoryStore) -> Harness {
    let mut h = Harness::new(Config::builder().build().unwrap(), store);
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.take_sent();
    h
}

#[test]
fn refused_retrieve_is_reported_and_the_session_goes_on() {
    let store = MemoryStore::rfc1939();
    store.inject(
        FaultPoint::Open,
        Fault::Refuse(Refusal::sys_perm("message unreadable")),
    );
    let mut h = logged_in(store);
    h.command("RETR 1");
    assert_eq!(h.take_sent(), "-ERR [SYS/PERM] message unreadable\r\n");
    h.command("STAT");
    assert_eq!(h.take_sent(), "+OK 2 320\r\n");
}

#[test]
fn failure_at_each_request_closes_unlocks_and_deletes_nothing() {
    for fault in [
        FaultPoint::Authenticate,
        FaultPoint::Lock,
        FaultPoint::Open,
        FaultPoint::MidBody,
        FaultPoint::Commit,
    ] {
        let store = MemoryStore::rfc1939();
        store.inject(fault, Fault::Internal);
        let mut h = Harness::new(Config::builder().build().unwrap(), store);
        h.take_sent();
        for c in ["USER mrose", "PASS tanstaaf", "DELE 2", "RETR 1", "QUIT"] {
            h.command(c);
        }
        let sent = h.take_sent();
        assert_eq!(
            h.events.last(),
            Some(&Event::Closed(CloseReason::HandlerFailed)),
            "{fault:?}"
        );
        assert_eq!(h.store.messages("mrose").len(), 2, "{fault:?}");
        let locked = !matches!(fault, FaultPoint::Authenticate | FaultPoint::Lock);
        assert_eq!(unlock_count(&h), usize::from(locked), "{fault:?}");
        assert_eq!(h.store.unlocks(), h.store.locks(), "{fault:?}");
        if fault == FaultPoint::MidBody {
            // Cut off without the terminator: not a complete message.
            assert!(sent.contains("+OK 120 octets\r\n"));
            assert!(!sent.ends_with(".\r\n"), "{sent:?}");
        } else {
            assert!(
                sent.ends_with("-ERR [SYS/TEMP] internal server error, closing connection\r\n"),
                "{fault:?}: {sent:?}"
            );
        }
    }
}

/// QUIT with a commit the handler refuses with `refusal`: what is sent
/// after the DELE reply.
fn refused_commit(refusal: Refusal) -> (Harness, String) {
    let store = MemoryStore::rfc1939();
    store.inject(FaultPoint::Commit, Fault::Refuse(refusal));
    let mut h = logged_in(store);
    h.command("DELE 1");
    h.command("QUIT");
    let sent = h.take_sent();
    let farewell = sent
        .strip_prefix("+OK message 1 deleted\r\n")
        .unwrap_or_else(|| panic!("{sent:?}"))
        .to_owned();
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::UpdateFailed))
    );
    assert_eq!(h.store.messages("mrose").len(), 2, "nothing deleted");
    assert!(h.store.commits().is_empty());
    assert_eq!(unlock_count(&h), 1);
    (h, farewell)
}

#[test]
fn refused_commit_deletes_nothing_and_says_so() {
    // Without text: RFC 1939 §6's wording, with the default code.
    let (_, farewell) = refused_commit(Refusal::new(""));
    assert_eq!(
        farewell,
        "-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    );
    // With text and no code: the text, with the default code.
    let (_, farewell) = refused_commit(Refusal::new("disk full"));
    assert_eq!(farewell, "-ERR [SYS/TEMP] disk full\r\n");
}

#[test]
fn refused_commit_keeps_the_handlers_text() {
    let (_, farewell) = refused_commit(Refusal::sys_temp("disk full"));
    assert_eq!(farewell, "-ERR [SYS/TEMP] disk full\r\n");
    let (_, farewell) = refused_commit(Refusal::sys_perm("mailbox corrupt"));
    assert_eq!(farewell, "-ERR [SYS/PERM] mailbox corrupt\r\n");
}

#[test]
fn refused_commit_unlocks_before_the_err() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("DELE 1");
    h.command("QUIT");
    h.take_sent();
    h.session
        .refuse(h.now, Refusal::sys_temp("disk full"))
        .unwrap();
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Bytes("-ERR [SYS/TEMP] disk full\r\n".into()),
            Step::Event(Event::Closed(CloseReason::UpdateFailed)),
            DONE,
        ]
    );
}

#[test]
fn quit_reply_comes_after_unlock() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("QUIT");
    h.session.commit_done(h.now).unwrap();
    // The goodbye waits for the unlock.
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Bytes("+OK localhost POP3 server signing off (2 messages left)\r\n".into()),
            Step::Event(Event::Closed(CloseReason::Quit)),
            DONE,
        ]
    );
}

#[test]
fn connection_lost_while_a_request_is_pending_takes_the_answer_then_closes() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.session.handle_connection_lost(h.now);
    assert_eq!(h.steps(), [ON_HANDLER]);
    h.session.accept_login(h.now).unwrap();
    assert_eq!(
        h.steps(),
        [Step::Event(Event::Closed(CloseReason::PeerClosed)), DONE]
    );
    assert_eq!(h.store.locks(), 0, "no Lock is asked for a lost connection");
}

#[test]
fn half_close_after_pipelined_commands_still_answers_them() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    h.feed(b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nSTAT\r\nUIDL 2\r\nNOO");
    h.eof();
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n+OK mrose's maildrop has 2 messages (320 octets)\r\n\
         +OK message 1 deleted\r\n+OK 1 200\r\n+OK 2 two\r\n"
    );
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::PeerClosed))
    );
    assert_eq!(
        h.store.messages("mrose").len(),
        2,
        "EOF without QUIT deletes nothing"
    );
    assert_eq!(unlock_count(&h), 1);
}

#[test]
fn half_close_after_quit_commits_and_says_goodbye() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.feed(b"DELE 1\r\nQUIT\r\n");
    h.eof();
    assert_eq!(
        h.take_sent(),
        "+OK message 1 deleted\r\n+OK localhost POP3 server signing off (1 messages left)\r\n"
    );
    assert_eq!(h.events.last(), Some(&Event::Closed(CloseReason::Quit)));
    assert_eq!(h.store.messages("mrose").len(), 1);
}

#[test]
fn eof_after_lock_granted_unlocks_once() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.command("DELE 1");
    h.eof();
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::PeerClosed))
    );
    assert_eq!(unlock_count(&h), 1);
    assert_eq!(h.store.messages("mrose").len(), 2);
    h.eof();
    h.session.handle_connection_lost(h.now);
    assert_eq!(unlock_count(&h), 1);
}

#[test]
fn connection_lost_mid_body_closes_at_once() {
    let store = MemoryStore::new();
    store.add_user_with("mrose", "tanstaaf", vec![message_of_size("big", 1 << 20)]);
    store.set_chunk_size(1024);
    let mut h = logged_in(store);
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    h.session.handle_connection_lost(h.now);
    // The queued +OK is dropped; no NeedBody is asked any more.
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::PeerClosed)),
            DONE,
        ]
    );
}

#[test]
fn half_close_mid_body_finishes_the_body() {
    let store = MemoryStore::new();
    store.add_user_with("mrose", "tanstaaf", vec![message_of_size("big", 100_000)]);
    store.set_chunk_size(1024);
    let mut h = logged_in(store);
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    h.session.handle_eof(h.now);
    h.auto_answer = true;
    h.session.end_body(h.now).unwrap();
    h.run();
    assert!(h.take_sent().ends_with("\r\n.\r\n"));
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::PeerClosed))
    );
}

#[test]
fn connection_lost_after_quit_still_commits() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("DELE 1");
    h.command("QUIT");
    h.session.handle_connection_lost(h.now);
    h.session.commit_done(h.now).unwrap();
    // No one to say goodbye to.
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::Quit)),
            DONE,
        ]
    );
}

/// Regression: "a body source that is lost ends the message with a clean
/// `.`". The driver calls `fail` when it has no body source on NeedBody; the
/// core must then cut the body off without the terminating `.` line (and
/// without an `-ERR` inside it), so the client cannot take it for whole.
#[test]
fn fail_mid_body_never_ends_the_body_with_a_dot() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    assert_eq!(h.steps(), [Step::Event(Event::NeedBody)]);
    // A whole first line, so a `.` would look like a clean end.
    h.session
        .push_body(
            h.now,
            Bytes::from_static(b"Subject: cut\r\n\r\nfirst line\r\n"),
        )
        .unwrap();
    assert_eq!(h.steps(), [Step::Event(Event::NeedBody)]);
    h.session.fail(h.now).unwrap();
    assert_eq!(
        h.steps(),
        [
            Step::Bytes("+OK 120 octets\r\nSubject: cut\r\n\r\nfirst line\r\n".into()),
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::HandlerFailed)),
            DONE,
        ]
    );
    let sent = h.take_sent();
    assert!(!sent.ends_with(".\r\n"), "{sent:?}");
    assert!(!sent.contains("-ERR"), "{sent:?}");

    // Also before any chunk, and with the +OK already written.
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("RETR 2");
    h.session.begin_body(h.now).unwrap();
    h.session.fail(h.now).unwrap();
    assert_eq!(
        h.steps(),
        [
            Step::Bytes("+OK 200 octets\r\n".into()),
            Step::Event(Event::Unlock),
            Step::Event(Event::Closed(CloseReason::HandlerFailed)),
            DONE,
        ]
    );
}

/// `fail` outside a multi-line response: the maildrop is unlocked first,
/// then the client is told `-ERR [SYS/TEMP]`, then the session closes.
#[test]
fn fail_between_commands_unlocks_then_says_why() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.fail(h.now).unwrap();
    assert_eq!(
        h.steps(),
        [
            Step::Event(Event::Unlock),
            Step::Bytes("-ERR [SYS/TEMP] internal server error, closing connection\r\n".into()),
            Step::Event(Event::Closed(CloseReason::HandlerFailed)),
            DONE,
        ]
    );
}
