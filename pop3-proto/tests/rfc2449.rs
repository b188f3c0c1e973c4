//! RFC 2449: CAPA, response codes, PIPELINING and the command-line limit.

use std::time::Duration;

use pop3_proto::testing::{
    message_of_size, run_transcript, Fault, FaultPoint, Harness, MemoryStore,
};
use pop3_proto::{CloseReason, Config, Event, Expire, Output, Refusal};

fn run(h: &mut Harness, script: &str) {
    if let Err(e) = run_transcript(h, script) {
        panic!("{e}");
    }
}

#[test]
fn capa_before_and_after_login() {
    let config = Config::builder()
        .implementation(Some("test-impl 1.0".into()))
        .expire(Expire::Days(31), true)
        .login_delay(Some(300), true)
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: SASL PLAIN LOGIN
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE 31 USER
         S: LOGIN-DELAY 300 USER
         S: IMPLEMENTATION test-impl 1.0
         S: .
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)
         C: capa
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: SASL PLAIN LOGIN
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE 31
         S: LOGIN-DELAY 300
         S: IMPLEMENTATION test-impl 1.0
         S: .",
    );
}

#[test]
fn default_implementation_is_the_crate_name_and_version() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::new());
    h.command("CAPA");
    let capa = h.take_sent();
    assert!(capa.contains(&format!(
        "IMPLEMENTATION pop3-proto-{}\r\n",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(capa.contains("EXPIRE NEVER\r\n"));
    assert!(!capa.contains("LOGIN-DELAY"));
    assert!(!capa.contains("STLS"));
}

#[test]
fn pipelined_commands_are_answered_in_order_in_one_buffer() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.take_sent();
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend_from_slice(match i % 4 {
            0 => b"STAT\r\n".as_slice(),
            1 => b"LIST 2\r\n",
            2 => b"NOOP\r\n",
            _ => b"UIDL 1\r\n",
        });
    }
    assert!(batch.len() > 4096);
    // Deliver it as one read, then count the writes the driver must make.
    assert!(h.session.config().input_buffer() >= 4096);
    let before = h.session.stats().bytes_sent;
    let mut writes = 0;
    let mut sent = Vec::new();
    let mut input = batch.as_slice();
    while !input.is_empty() {
        let n = input.len().min(h.session.config().input_buffer());
        h.session.handle_input(h.now, &input[..n]).unwrap();
        input = &input[n..];
        loop {
            match h.session.poll_output(h.now) {
                Output::Transmit(t) => {
                    writes += 1;
                    sent.extend_from_slice(&t.to_vec());
                    h.session.handle_written(h.now, t).unwrap();
                }
                Output::Event(e) => panic!("no event expected, got {e:?}"),
                Output::Wait(_) => break,
            }
        }
    }
    let text = String::from_utf8(sent).unwrap();
    let replies: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.iter().enumerate() {
        let want = match i % 4 {
            0 => "+OK 2 320",
            1 => "+OK 2 200",
            2 => "+OK",
            _ => "+OK 1 one",
        };
        assert_eq!(*r, want, "reply {i}");
    }
    assert!(writes <= 2, "{writes} writes for 1000 pipelined commands");
    assert_eq!(h.session.stats().bytes_sent - before, text.len() as u64);
}

#[test]
fn command_line_limit_is_255_octets_with_crlf() {
    let mut h = Harness::new(Config::builder().build().unwrap(), MemoryStore::rfc1939());
    h.take_sent();
    let ok = format!("USER {}", "a".repeat(255 - 2 - 5));
    h.command(&ok);
    assert_eq!(h.take_sent(), "+OK send PASS\r\n");
    let long = format!("USER {}", "a".repeat(255 - 2 - 4));
    h.command(&long);
    assert_eq!(h.take_sent(), "-ERR line too long\r\n");
    // A huge line is dropped as it arrives and the next command works.
    h.feed(&vec![b'x'; 100_000]);
    assert!(h.peak_input <= 8192 + 4096);
    h.feed(b"\r\nNOOP\r\n");
    assert_eq!(
        h.take_sent(),
        "-ERR line too long\r\n-ERR command not valid before login\r\n"
    );
}

#[test]
fn resp_codes_from_the_handler() {
    let store = MemoryStore::rfc1939();
    store.inject(
        FaultPoint::Authenticate,
        Fault::Refuse(Refusal::login_delay("wait 5 minutes")),
    );
    let mut h = Harness::new(Config::builder().build().unwrap(), store);
    run(
        &mut h,
        "S: +OK POP3 server ready
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: -ERR [LOGIN-DELAY] wait 5 minutes",
    );
    h.store.lock_elsewhere("mrose");
    run(
        &mut h,
        "C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: -ERR [IN-USE] maildrop is in use by another session",
    );
    assert_eq!(h.session.user(), None);
    h.store.inject(
        FaultPoint::Authenticate,
        Fault::Refuse(Refusal::sys_temp("directory offline")),
    );
    run(
        &mut h,
        "C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: -ERR [SYS/TEMP] directory offline",
    );
}

#[test]
fn wrong_password_carries_auth_code_and_is_delayed() {
    let config = Config::builder()
        .auth_failure_delay(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.command("USER mrose");
    h.command("PASS nope");
    assert_eq!(h.take_sent(), "+OK send PASS\r\n");
    h.advance(Duration::from_millis(2999));
    assert_eq!(h.take_sent(), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.take_sent(),
        "-ERR [AUTH] invalid user name or password\r\n"
    );
}

#[test]
fn too_many_failed_logins_close_the_session() {
    let config = Config::builder()
        .auth_failure_delay(Duration::ZERO)
        .max_auth_failures(2)
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    for _ in 0..2 {
        h.command("USER mrose");
        h.command("PASS nope");
    }
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n".repeat(2)
    );
    assert_eq!(
        h.events.last(),
        Some(&Event::Closed(CloseReason::TooManyAuthFailures))
    );
}

#[test]
fn too_many_bad_commands_close_the_session() {
    let config = Config::builder().max_bad_commands(3).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.feed(b"FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nCAPA\r\n");
    assert_eq!(
        h.take_sent(),
        "-ERR unknown command\r\n-ERR unknown command\r\n-ERR too many bad commands, closing connection\r\n"
    );
    assert_eq!(h.events, [Event::Closed(CloseReason::TooManyBadCommands)]);
}

#[test]
fn a_good_command_resets_the_bad_command_count() {
    let config = Config::builder().max_bad_commands(2).build().unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.take_sent();
    h.feed(b"FOO\r\nCAPA\r\nBAR\r\nQUIT\r\n");
    let sent = h.take_sent();
    assert!(sent.starts_with("-ERR unknown command\r\n+OK capability list follows\r\n"));
    assert!(
        sent.ends_with(".\r\n-ERR unknown command\r\n+OK localhost POP3 server signing off\r\n")
    );
}

#[test]
fn list_and_uidl_of_100k_messages_are_produced_incrementally() {
    let store = MemoryStore::new();
    let msgs = (0..100_000)
        .map(|i| message_of_size(&format!("uid-{i:06}"), 40))
        .collect::<Vec<_>>();
    store.add_user_with("big", "pw", msgs);
    let config = Config::builder()
        .output_high_water(16 * 1024)
        .build()
        .unwrap();
    let mut h = Harness::new(config, store);
    h.command("USER big");
    h.command("PASS pw");
    h.command("DELE 2");
    h.take_sent();
    h.command("LIST");
    let list = h.take_sent();
    assert!(list.starts_with("+OK 99999 messages (3999960 octets)\r\n1 40\r\n3 40\r\n"));
    assert!(list.ends_with("100000 40\r\n.\r\n"));
    assert_eq!(list.lines().count(), 1 + 99_999 + 1);
    h.command("UIDL");
    let uidl = h.take_sent();
    assert!(uidl.ends_with("100000 uid-099999\r\n.\r\n"));
    assert_eq!(uidl.lines().count(), 1 + 99_999 + 1);
    assert!(
        h.peak_output < 16 * 1024 + 128,
        "peak output {}",
        h.peak_output
    );
}

#[test]
fn longest_host_name_keeps_replies_within_512_octets() {
    let config = Config::builder()
        .hostname("h".repeat(pop3_proto::MAX_HOSTNAME))
        .apop(true)
        .build()
        .unwrap();
    let mut h = Harness::new(config, MemoryStore::rfc1939());
    h.command("QUIT");
    let sent = h.take_sent();
    let lines: Vec<&str> = sent.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 2, "{sent}");
    for line in lines {
        assert!(line.len() <= 512, "{} octets: {line}", line.len());
    }
}
