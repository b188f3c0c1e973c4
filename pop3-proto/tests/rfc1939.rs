//! RFC 1939 dialogues as known-answer transcripts.

use pop3_proto::testing::{body_script, run_transcript, Harness, MemoryStore, StoredMessage};
use pop3_proto::{CloseReason, Config, Event, Phase, Request};

fn rfc_config() -> Config {
    Config::builder()
        .hostname("dbc.mtview.ca.us")
        .apop(true)
        .build()
        .unwrap()
}

/// `S:` lines for a message body as RETR sends it (already CRLF, no dot lines).
fn body_lines(store: &MemoryStore, user: &str, index: usize) -> String {
    body_script(&store.messages(user)[index].body)
}

fn run(h: &mut Harness, script: &str) {
    if let Err(e) = run_transcript(h, script) {
        panic!("{e}");
    }
}

#[test]
fn rfc1939_section_10_example_session_with_apop() {
    let store = MemoryStore::rfc1939();
    let (m1, m2) = (
        body_lines(&store, "mrose", 0),
        body_lines(&store, "mrose", 1),
    );
    let mut h = Harness::new(rfc_config(), store);
    run(
        &mut h,
        &format!(
            "S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>
             C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
             S: +OK mrose's maildrop has 2 messages (320 octets)
             C: STAT
             S: +OK 2 320
             C: LIST
             S: +OK 2 messages (320 octets)
             S: 1 120
             S: 2 200
             S: .
             C: RETR 1
             S: +OK 120 octets
             {m1}
             S: .
             C: DELE 1
             S: +OK message 1 deleted
             C: RETR 2
             S: +OK 200 octets
             {m2}
             S: .
             C: DELE 2
             S: +OK message 2 deleted
             C: QUIT
             S: +OK dbc.mtview.ca.us POP3 server signing off (maildrop empty)"
        ),
    );
    assert_eq!(h.events.last(), Some(&Event::Closed(CloseReason::Quit)));
    assert!(h.store.messages("mrose").is_empty());
    assert_eq!((h.store.locks(), h.store.unlocks()), (1, 1));
    assert_eq!(
        h.store.commits(),
        [vec!["one".to_string(), "two".to_string()]]
    );
}

#[test]
fn user_pass_list_uidl_top_rset() {
    let store = MemoryStore::new();
    store.add_user_with(
        "alice",
        "pass word",
        vec![
            StoredMessage {
                uid: "a1".into(),
                body: b"Subject: x\r\n\r\nhello\r\nworld\r\n".to_vec(),
            },
            StoredMessage {
                uid: "b2".into(),
                body: b"Subject: y\r\n\r\nz\r\n".to_vec(),
            },
        ],
    );
    let mut h = Harness::new(Config::builder().build().unwrap(), store);
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: user alice
         S: +OK send PASS
         C: pass pass word
         S: +OK alice's maildrop has 2 messages (45 octets)
         C: UIDL
         S: +OK unique-id listing follows
         S: 1 a1
         S: 2 b2
         S: .
         C: UIDL 2
         S: +OK 2 b2
         C: LIST 1
         S: +OK 1 28
         C: TOP 1 1
         S: +OK top of message follows
         S: Subject: x
         S:
         S: hello
         S: .
         C: TOP 1 0
         S: +OK top of message follows
         S: Subject: x
         S:
         S: .
         C: DELE 1
         S: +OK message 1 deleted
         C: STAT
         S: +OK 1 17
         C: LIST
         S: +OK 1 messages (17 octets)
         S: 2 17
         S: .
         C: UIDL
         S: +OK unique-id listing follows
         S: 2 b2
         S: .
         C: RETR 1
         S: -ERR message 1 already deleted
         C: TOP 1 0
         S: -ERR message 1 already deleted
         C: LIST 1
         S: -ERR message 1 already deleted
         C: UIDL 1
         S: -ERR message 1 already deleted
         C: DELE 1
         S: -ERR message 1 already deleted
         C: RSET
         S: +OK maildrop has 2 messages (45 octets)
         C: NOOP
         S: +OK
         C: QUIT
         S: +OK localhost POP3 server signing off (2 messages left)",
    );
    assert_eq!(h.store.messages("alice").len(), 2);
    assert_eq!(h.store.commits(), [Vec::<String>::new()]);
}

#[test]
fn message_numbers_and_arguments_are_checked() {
    let config = Config::builder().max_bad_commands(20).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)
         C: RETR 0
         S: -ERR invalid message number
         C: RETR 3
         S: -ERR no such message
         C: RETR 4294967296
         S: -ERR invalid message number
         C: RETR -1
         S: -ERR invalid message number
         C: RETR 1 2
         S: -ERR too many arguments
         C: RETR
         S: -ERR missing argument: message number
         C: LIST x
         S: -ERR invalid message number
         C: STAT 1
         S: -ERR too many arguments
         C: TOP 1
         S: -ERR missing argument: line count
         C: TOP 1 x
         S: -ERR invalid line count
         C: XTND XMIT
         S: -ERR unknown command
         C: USER mrose
         S: -ERR command not valid after login
         C: stat
         S: +OK 2 320",
    );
}

#[test]
fn authorization_state_rules() {
    let mut h = Harness::new(
        Config::builder()
            .auth_failure_delay(std::time::Duration::ZERO)
            .build()
            .unwrap(),
        MemoryStore::rfc1939(),
    );
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: STAT
         S: -ERR command not valid before login
         C: PASS tanstaaf
         S: -ERR send USER first
         C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
         S: -ERR APOP not offered
         C: USER mrose
         S: +OK send PASS
         C: PASS wrong
         S: -ERR [AUTH] invalid user name or password
         C: PASS tanstaaf
         S: -ERR send USER first
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
    assert_eq!(h.session.phase(), Phase::Transaction);
    assert_eq!(h.session.user(), Some("mrose"));
}

#[test]
fn quit_in_authorization_deletes_and_locks_nothing() {
    let mut h = Harness::new(rfc_config(), MemoryStore::rfc1939());
    run(
        &mut h,
        "S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>
         C: QUIT
         S: +OK dbc.mtview.ca.us POP3 server signing off",
    );
    assert_eq!(h.events, [Event::Closed(CloseReason::Quit)]);
    assert_eq!(h.store.locks(), 0);
    assert!(h.session.is_closed());
}

#[test]
fn commit_lists_marks_sorted_once() {
    let store = MemoryStore::new();
    let msgs = (1..=5)
        .map(|i| pop3_proto::testing::message_of_size(&format!("m{i}"), 40))
        .collect::<Vec<_>>();
    store.add_user_with("u", "p", msgs);
    let mut h = Harness::new(Config::builder().build().unwrap(), store);
    for c in [
        "USER u", "PASS p", "DELE 4", "DELE 2", "DELE 4", "DELE 5", "QUIT",
    ] {
        h.command(c);
    }
    let commit = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::Request(Request::Commit { deleted }) => Some(deleted.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        commit.iter().map(|m| m.number).collect::<Vec<_>>(),
        [2, 4, 5]
    );
    assert_eq!(
        h.store
            .messages("u")
            .iter()
            .map(|m| m.uid.as_str())
            .collect::<Vec<_>>(),
        ["m1", "m3"]
    );
}
