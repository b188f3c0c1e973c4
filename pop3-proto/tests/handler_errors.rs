//! Handler answers: reportable refusals keep the session going, internal
//! failures end it; in every case nothing is deleted unless QUIT's commit
//! succeeded, and a locked maildrop is unlocked exactly once.

use pop3_proto::testing::{message_of_size, Fault, FaultKind, Harness, MemoryStore};
use pop3_proto::{CloseReason, Config, Event, Refusal};

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
    let mut store = MemoryStore::rfc1939();
    store.inject(
        Fault::Retrieve,
        FaultKind::Refuse(Refusal::sys_perm("message unreadable")),
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
        Fault::Authenticate,
        Fault::Lock,
        Fault::Retrieve,
        Fault::MidBody,
        Fault::Commit,
    ] {
        let mut store = MemoryStore::rfc1939();
        store.inject(fault, FaultKind::Fail);
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
        let locked = !matches!(fault, Fault::Authenticate | Fault::Lock);
        assert_eq!(unlock_count(&h), usize::from(locked), "{fault:?}");
        assert_eq!(h.store.unlocks, h.store.locks, "{fault:?}");
        if fault == Fault::MidBody {
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

#[test]
fn refused_commit_deletes_nothing_and_says_so() {
    let mut store = MemoryStore::rfc1939();
    store.inject(Fault::Commit, FaultKind::Refuse(Refusal::new("disk full")));
    let mut h = logged_in(store);
    h.command("DELE 1");
    h.command("QUIT");
    assert_eq!(
        h.take_sent(),
        "+OK message 1 deleted\r\n-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    );
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::UpdateFailed))
    );
    assert_eq!(h.store.messages("mrose").len(), 2);
    assert_eq!(unlock_count(&h), 1);
}

#[test]
fn quit_reply_comes_after_unlock() {
    let mut h = logged_in(MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("QUIT");
    h.session.commit_done(h.now).unwrap();
    assert_eq!(
        h.session.poll_transmit(h.now),
        None,
        "goodbye waits for the unlock"
    );
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    let bye = h.session.poll_transmit(h.now).unwrap();
    assert_eq!(
        &bye[..],
        b"+OK localhost POP3 server signing off (2 messages left)\r\n"
    );
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::Quit))
    );
}

#[test]
fn connection_lost_while_a_request_is_pending_takes_the_answer_then_closes() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.session.handle_connection_lost(h.now);
    assert_eq!(h.session.poll_event(), None);
    h.session.accept_login(h.now).unwrap();
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::PeerClosed))
    );
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
    let mut store = MemoryStore::new();
    store.add_user("mrose", "tanstaaf", vec![message_of_size("big", 1 << 20)]);
    store.chunk_size = 1024;
    let mut h = logged_in(store);
    h.auto_answer = false;
    h.command("RETR 1");
    h.session.begin_body(h.now).unwrap();
    h.session.handle_connection_lost(h.now);
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::PeerClosed))
    );
}

#[test]
fn half_close_mid_body_finishes_the_body() {
    let mut store = MemoryStore::new();
    store.add_user("mrose", "tanstaaf", vec![message_of_size("big", 100_000)]);
    store.chunk_size = 1024;
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
    assert_eq!(h.session.poll_event(), Some(Event::Unlock));
    assert_eq!(
        h.session.poll_transmit(h.now),
        None,
        "no one to say goodbye to"
    );
    assert_eq!(
        h.session.poll_event(),
        Some(Event::Closed(CloseReason::Quit))
    );
}
