//! Bugs seen in other POP3 servers (ARCHITECTURE.md, "Known bugs"), each
//! pinned by a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pop3_proto::testing::{run_transcript, Harness, MemoryStore, StoredMessage};
use pop3_proto::{CloseReason, Config, Event, Greeting, Session};

fn store_with(body: &[u8]) -> MemoryStore {
    let store = MemoryStore::new();
    store.add_user_with(
        "u",
        "p",
        vec![StoredMessage {
            uid: "m1".into(),
            body: body.to_vec(),
        }],
    );
    store
}

fn logged_in(config: Config, store: MemoryStore) -> Harness {
    let mut h = Harness::new(config, store);
    h.command("USER u");
    h.command("PASS p");
    h.take_sent();
    h
}

const MESSAGE: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: top\r\n\r\nbody 1\r\nbody 2\r\nbody 3\r\n";

#[test]
fn top_zero_sends_headers_and_blank_line_only() {
    let mut h = logged_in(Config::builder().build().unwrap(), store_with(MESSAGE));
    run_transcript(
        &mut h,
        "C: TOP 1 0
         S: +OK top of message follows
         S: From: a@example.org
         S: To: b@example.org
         S: Subject: top
         S:
         S: .",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn top_counts_lines_after_the_headers() {
    let mut h = logged_in(Config::builder().build().unwrap(), store_with(MESSAGE));
    run_transcript(
        &mut h,
        "C: TOP 1 2
         S: +OK top of message follows
         S: From: a@example.org
         S: To: b@example.org
         S: Subject: top
         S:
         S: body 1
         S: body 2
         S: .
         C: TOP 1 100
         S: +OK top of message follows
         S: From: a@example.org
         S: To: b@example.org
         S: Subject: top
         S:
         S: body 1
         S: body 2
         S: body 3
         S: .",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn dot_as_first_byte_of_message_is_doubled() {
    let mut h = logged_in(
        Config::builder().build().unwrap(),
        store_with(b".Subject: dotty\r\n\r\n.\r\n..\r\nend"),
    );
    run_transcript(
        &mut h,
        "C: RETR 1
         S: +OK 31 octets
         S: ..Subject: dotty
         S:
         S: ..
         S: ...
         S: end
         S: .",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn plaintext_pipelined_after_stls_is_never_executed() {
    let config = Config::builder().stls(true).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.auto_answer = false;
    h.feed(b"STLS\r\nUSER mrose\r\nPASS tanstaaf\r\n");
    assert_eq!(h.take_sent(), "+OK Begin TLS negotiation\r\n");
    assert_eq!(h.events, [Event::StartTls]);
    assert!(!h.session.wants_input());
    assert_eq!(h.session.stats().discarded_at_stls, 27);
    h.session.handle_tls_established(h.now).unwrap();
    h.auto_answer = true;
    h.run();
    // Inside TLS the maildrop is untouched and PASS has no USER to go with.
    h.command("PASS tanstaaf");
    assert_eq!(h.take_sent(), "-ERR send USER first\r\n");
    assert_eq!(h.store.locks(), 0);
}

#[test]
fn half_parsed_command_does_not_survive_stls() {
    let config = Config::builder().stls(true).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.feed(b"STLS\r\nUSER mro");
    assert_eq!(h.take_sent(), "+OK Begin TLS negotiation\r\n");
    assert!(h.session.is_tls());
    // The rest of the line arrives inside TLS: it is a line of its own.
    h.feed(b"se\r\n");
    assert_eq!(h.take_sent(), "-ERR unknown command\r\n");
}

#[test]
fn retr_of_a_large_message_is_streamed_with_bounded_memory() {
    let line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n";
    let mut body = Vec::with_capacity(20 << 20);
    while body.len() < 20 << 20 {
        body.extend_from_slice(line);
    }
    let config = Config::builder()
        .output_high_water(64 * 1024)
        .build()
        .unwrap();
    let store = store_with(&body);
    store.set_chunk_size(16 * 1024);
    let mut h = logged_in(config, store);
    h.command("RETR 1");
    let expected_len = format!("+OK {} octets\r\n", body.len()).len() + body.len() + 3;
    assert_eq!(h.sent.len(), expected_len);
    assert!(h.sent.ends_with(b"\r\n.\r\n"));
    // The session held at most the high-water mark plus about two chunks.
    assert!(
        h.peak_output <= 64 * 1024 + 2 * 16 * 1024,
        "peak output {}",
        h.peak_output
    );
}

#[test]
fn apop_timestamps_differ_per_connection_within_one_second() {
    let config = Arc::new(
        Config::builder()
            .apop(true)
            .hostname("pop.example")
            .build()
            .unwrap(),
    );
    let now = Instant::now();
    let a = Session::new(
        config.clone(),
        Greeting {
            nonce: 1,
            unix_time: 1_700_000_000,
        },
        now,
    );
    let b = Session::new(
        config,
        Greeting {
            nonce: 2,
            unix_time: 1_700_000_000,
        },
        now,
    );
    let (ta, tb) = (a.apop_timestamp().unwrap(), b.apop_timestamp().unwrap());
    assert_ne!(ta, tb);
    assert_eq!(ta.as_str(), "<1.1700000000@pop.example>");
}

#[test]
fn idle_timeout_is_handled_by_the_core_and_sends_nothing() {
    let mut h = logged_in(Config::builder().build().unwrap(), store_with(MESSAGE));
    h.command("DELE 1");
    h.take_sent();
    h.advance(Duration::from_secs(600));
    assert_eq!(h.take_sent(), "");
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::IdleTimeout))
    );
    assert_eq!(h.store.messages("u").len(), 1);
    assert_eq!((h.store.locks(), h.store.unlocks()), (1, 1));
}

#[test]
fn shutdown_sends_a_pop3_reply_not_another_protocols() {
    let mut h = logged_in(Config::builder().build().unwrap(), store_with(MESSAGE));
    h.command("DELE 1");
    h.take_sent();
    h.session.handle_shutdown(h.now);
    h.run();
    assert_eq!(h.take_sent(), "-ERR [SYS/TEMP] server shutting down\r\n");
    assert_eq!(h.events.last(), Some(&Event::Closed(CloseReason::Shutdown)));
    assert_eq!(h.store.messages("u").len(), 1, "shutdown deletes nothing");
    assert_eq!(h.store.unlocks(), 1);
}
