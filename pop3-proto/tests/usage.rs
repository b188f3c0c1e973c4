//! Caller mistakes are usage errors and change nothing.

use bytes::Bytes;
use pop3_proto::testing::Step;
use pop3_proto::testing::{Harness, MemoryStore};
use pop3_proto::{Config, Event, Maildrop, Output, Phase, Refusal, UsageError, Wait};

#[test]
fn answers_without_a_matching_request() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.auto_answer = false;
    let now = h.now;
    let s = &mut h.session;
    assert_eq!(
        s.accept_login(now),
        Err(UsageError::NoPendingRequest {
            expected: "Authenticate"
        })
    );
    assert_eq!(
        s.grant_maildrop(now, Maildrop::default()),
        Err(UsageError::NoPendingRequest { expected: "Lock" })
    );
    assert_eq!(
        s.begin_body(now),
        Err(UsageError::NoPendingRequest {
            expected: "Retrieve"
        })
    );
    assert_eq!(
        s.push_body(now, Bytes::from_static(b"x")),
        Err(UsageError::NotSendingBody)
    );
    assert_eq!(s.end_body(now), Err(UsageError::NotSendingBody));
    assert_eq!(
        s.commit_done(now),
        Err(UsageError::NoPendingRequest { expected: "Commit" })
    );
    assert_eq!(
        s.refuse(now, Refusal::new("x")),
        Err(UsageError::NoPendingRequest { expected: "any" })
    );
    assert_eq!(s.phase(), Phase::Authorization);
    // Nothing changed: no output, no event, still reading commands.
    assert!(
        matches!(s.poll_output(now), Output::Wait(Wait { read: true, .. })),
        "a wrong answer must not produce output"
    );

    // With an Authenticate pending, a Lock answer is still wrong.
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    let now = h.now;
    assert_eq!(
        h.session.grant_maildrop(now, Maildrop::default()),
        Err(UsageError::NoPendingRequest { expected: "Lock" })
    );
    assert_eq!(h.session.accept_login(now), Ok(()));
}

#[test]
fn closed_session_refuses_everything() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.command("QUIT");
    assert!(h.session.is_closed());
    let now = h.now;
    assert_eq!(
        h.session.handle_input(now, b"NOOP\r\n"),
        Err(UsageError::Closed)
    );
    assert_eq!(h.session.accept_login(now), Err(UsageError::Closed));
    assert_eq!(h.session.fail(now), Err(UsageError::Closed));
    h.session.handle_eof(now);
    h.session.handle_timeout(now);
    let t = pop3_proto::Transmit::default();
    assert_eq!(
        h.session.handle_written(now, t),
        Err(UsageError::NothingInFlight)
    );
    // Nothing to do, nothing to wait for.
    let idle = Wait {
        read: false,
        deadline: None,
    };
    assert_eq!(h.steps(), [Step::Wait(idle)]);
    assert!(!h.session.wants_input());
}

#[test]
fn input_is_refused_while_not_wanted() {
    let config = Config::builder().input_buffer(255).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.auto_answer = false;
    h.command("USER mrose");
    // PASS goes to the handler; the pipeline fills the input buffer.
    h.session.handle_input(h.now, b"PASS tanstaaf\r\n").unwrap();
    let filler = vec![b'N'; 300];
    h.session.handle_input(h.now, &filler).unwrap();
    assert!(!h.session.wants_input());
    assert_eq!(
        h.session.handle_input(h.now, b"x"),
        Err(UsageError::InputNotWanted)
    );
    assert_eq!(h.session.input_buffered(), 300);
    assert!(matches!(
        h.session.poll_output(h.now),
        Output::Event(Event::Request(_))
    ));
}

#[test]
fn rejected_connection_sends_one_err_line_and_closes() {
    use pop3_proto::{CloseReason, Session};
    use std::sync::Arc;
    let config = Arc::new(Config::builder().apop(true).build().unwrap());
    let mut s = Session::reject(
        config,
        &Refusal::sys_temp("too many connections"),
        std::time::Instant::now(),
    );
    assert!(!s.wants_input());
    let now = std::time::Instant::now();
    let Output::Transmit(t) = s.poll_output(now) else {
        panic!("the -ERR comes first");
    };
    assert_eq!(t.to_vec(), b"-ERR [SYS/TEMP] too many connections\r\n");
    // Until the transmit is given back, the session waits for it.
    assert!(matches!(
        s.poll_output(now),
        Output::Wait(Wait { read: false, .. })
    ));
    s.handle_written(now, t).unwrap();
    assert!(matches!(
        s.poll_output(now),
        Output::Event(Event::Closed(CloseReason::Rejected))
    ));
    assert!(s.is_closed());
    assert!(matches!(
        s.poll_output(now),
        Output::Wait(Wait {
            read: false,
            deadline: None
        })
    ));
}
