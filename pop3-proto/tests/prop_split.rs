//! Property tests for chunk-split invariance at the session level: how the
//! peer's bytes are cut into reads, and how the store cuts a message into
//! body chunks, must never change what the session sends or asks.

use std::time::Duration;

use pop3_proto::testing::{awkward_messages, escape_bytes, Harness, MemoryStore, StoredMessage};
use pop3_proto::{Config, Session};
use proptest::prelude::*;
use proptest::sample::Index;

const USER: &str = "alice";
const PASSWORD: &str = "open sesame";
const HOST: &str = "mail.example";

fn store_with(messages: Vec<StoredMessage>, chunk_size: usize) -> MemoryStore {
    let store = MemoryStore::new();
    store.add_user_with(USER, PASSWORD, messages);
    store.set_chunk_size(chunk_size);
    store
}

fn config(auth_delay: Duration, high_water: usize) -> Config {
    config_with(auth_delay, high_water, 10)
}

fn config_with(auth_delay: Duration, high_water: usize, max_bad: u32) -> Config {
    Config::builder()
        .max_bad_commands(max_bad)
        .hostname(HOST)
        .apop(true)
        .auth_failure_delay(auth_delay)
        .output_high_water(high_water)
        .build()
        .unwrap()
}

/// The APOP line a client that knows the secret would send to the harness.
fn good_apop() -> String {
    let cfg = config(Duration::ZERO, 1024);
    let session = Session::new(
        std::sync::Arc::new(cfg),
        pop3_proto::Greeting {
            nonce: 1896,
            unix_time: 697_170_952,
        },
        std::time::Instant::now(),
    );
    let ts = session.apop_timestamp().expect("APOP is on").clone();
    let digest = pop3_proto::apop_digest(&ts, PASSWORD.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("APOP {USER} {hex}")
}

/// A message number: mostly valid, sometimes out of range or malformed.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (1u32..=6).prop_map(|n| n.to_string()),
        1 => Just("0".to_owned()),
        1 => (7u32..=9).prop_map(|n| n.to_string()),
        1 => Just("4294967296".to_owned()),
        1 => Just("x".to_owned()),
    ]
}

/// One command line, without its line end.
fn command(apop: String) -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        1 => Just(format!("USER {USER}")),
        1 => Just("USER bob".to_owned()),
        1 => Just(format!("PASS {PASSWORD}")),
        1 => Just("PASS wrong".to_owned()),
        1 => Just(apop),
        1 => Just(format!("APOP {USER} 00112233445566778899aabbccddeeff")),
        3 => Just("STAT".to_owned()),
        3 => Just("LIST".to_owned()),
        3 => number().prop_map(|n| format!("LIST {n}")),
        3 => Just("UIDL".to_owned()),
        3 => number().prop_map(|n| format!("UIDL {n}")),
        4 => number().prop_map(|n| format!("RETR {n}")),
        4 => (number(), 0u32..5).prop_map(|(n, k)| format!("TOP {n} {k}")),
        3 => number().prop_map(|n| format!("DELE {n}")),
        2 => Just("NOOP".to_owned()),
        2 => Just("RSET".to_owned()),
        1 => Just("CAPA".to_owned()),
        1 => Just("STLS".to_owned()),
    ];
    prop_oneof![
        60 => (text, any::<bool>()).prop_map(|(t, lower)| {
            if lower {
                // Lowercase only the keyword: passwords and names stay as they are.
                match t.split_once(' ') {
                    Some((k, rest)) => format!("{} {rest}", k.to_ascii_lowercase()),
                    None => t.to_ascii_lowercase(),
                }
            } else {
                t
            }
            .into_bytes()
        }),
        1 => Just(b"QUIT".to_vec()),
        3 => prop::collection::vec(any::<u8>(), 0..40),
        2 => (256usize..700, any::<u8>()).prop_map(|(n, b)| {
            let b = if b == b'\n' { b'y' } else { b };
            vec![b; n]
        }),
        1 => Just(b"   ".to_vec()),
    ]
}

/// A line end: CRLF mostly, bare LF often.
fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![3 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])]
}

/// A script of command lines, often starting with a good login.
fn script() -> impl Strategy<Value = Vec<u8>> {
    let apop = good_apop();
    (
        prop::option::weighted(0.7, any::<bool>()),
        prop::collection::vec((command(apop.clone()), line_end()), 0..40),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..20)),
    )
        .prop_map(move |(login, lines, tail)| {
            let mut out = Vec::new();
            match login {
                Some(true) => out.extend_from_slice(format!("{apop}\r\n").as_bytes()),
                Some(false) => {
                    out.extend_from_slice(format!("USER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes())
                }
                None => {}
            }
            for (line, end) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(end);
            }
            // A half-sent last line, never completed.
            if let Some(t) = tail {
                out.extend(t.into_iter().filter(|&b| b != b'\n'));
            }
            out
        })
}

/// Cuts `bytes` at the given points.
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in at {
        if cut > start {
            out.push(&bytes[start..cut]);
        }
        start = cut;
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// Feeds the pieces one read each, lets any held login failure go out, then hangs up.
fn run(config: Config, store: MemoryStore, reads: &[&[u8]], auth_delay: Duration) -> Harness {
    let mut h = Harness::new(config, store);
    for read in reads {
        h.feed(read);
    }
    if !auth_delay.is_zero() {
        // At most a few failed logins are pending; far less than the idle timeout.
        for _ in 0..8 {
            if h.session.is_closed() {
                break;
            }
            h.advance(auth_delay);
        }
    }
    if !h.session.is_closed() {
        h.eof();
    }
    h
}

fn diff_context(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(60);
    format!(
        "first difference at octet {at}\n whole: {}\n split: {}",
        escape_bytes(&a[from..(at + 60).min(a.len())]),
        escape_bytes(&b[from..(at + 60).min(b.len())])
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Feeding a script whole or cut into arbitrary reads gives the same bytes sent and the same events.
    #[test]
    fn input_split_does_not_change_the_session(
        script in script(),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
        delayed in any::<bool>(),
        high_water in prop_oneof![Just(64 * 1024), 1usize..512],
        chunk_size in prop_oneof![Just(4096), 1usize..64],
        max_bad in prop_oneof![Just(10u32), Just(1000)],
    ) {
        let delay = if delayed { Duration::from_secs(2) } else { Duration::ZERO };
        let whole = run(
            config_with(delay, high_water, max_bad),
            store_with(awkward_messages(), chunk_size),
            &[&script],
            delay,
        );
        let reads = pieces(&script, &cuts);
        let split = run(
            config_with(delay, high_water, max_bad),
            store_with(awkward_messages(), chunk_size),
            &reads,
            delay,
        );
        prop_assert!(
            whole.sent == split.sent,
            "{}\nscript: {}",
            diff_context(&whole.sent, &split.sent),
            escape_bytes(&script)
        );
        prop_assert_eq!(&whole.events, &split.events, "script: {}", escape_bytes(&script));
        prop_assert_eq!(whole.store.commits(), split.store.commits());
    }

    /// Feeding a script one byte per read gives the same bytes sent and events as feeding it whole.
    #[test]
    fn byte_at_a_time_input_changes_nothing(script in script()) {
        let fresh = || (config(Duration::ZERO, 64 * 1024), store_with(awkward_messages(), 4096));
        let (c, s) = fresh();
        let whole = run(c, s, &[&script], Duration::ZERO);
        let reads: Vec<&[u8]> = script.chunks(1).collect();
        let (c, s) = fresh();
        let split = run(c, s, &reads, Duration::ZERO);
        prop_assert!(
            whole.sent == split.sent,
            "{}\nscript: {}",
            diff_context(&whole.sent, &split.sent),
            escape_bytes(&script)
        );
        prop_assert_eq!(&whole.events, &split.events);
    }
}

/// A random stored message body, biased towards dots and line-end bytes.
fn random_body() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'.'),
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        3 => Just(b'a'),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..300)
}

/// RETR and TOP commands over `count` messages.
fn body_commands(count: usize) -> impl Strategy<Value = Vec<String>> {
    let n = 1..=count as u32;
    prop::collection::vec(
        prop_oneof![
            n.clone().prop_map(|n| format!("RETR {n}")),
            (n, 0u32..6).prop_map(|(n, k)| format!("TOP {n} {k}")),
        ],
        1..10,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// RETR and TOP output is the same for every body chunk size the store uses (1..=64 and 4096).
    #[test]
    fn body_chunk_size_does_not_change_output(
        (bodies, commands) in prop::collection::vec(random_body(), 1..4)
            .prop_flat_map(|b| { let n = b.len(); (Just(b), body_commands(n)) }),
        chunk_size in 1usize..=64,
        high_water in prop_oneof![Just(64 * 1024), 1usize..256],
    ) {
        let messages: Vec<StoredMessage> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| StoredMessage { uid: format!("m{i}"), body: b.clone() })
            .collect();
        let mut script = format!("USER {USER}\r\nPASS {PASSWORD}\r\n");
        for c in &commands {
            script.push_str(c);
            script.push_str("\r\n");
        }
        script.push_str("QUIT\r\n");
        let reference = run(
            config(Duration::ZERO, 64 * 1024),
            store_with(messages.clone(), 4096),
            &[script.as_bytes()],
            Duration::ZERO,
        );
        let chunked = run(
            config(Duration::ZERO, high_water),
            store_with(messages, chunk_size),
            &[script.as_bytes()],
            Duration::ZERO,
        );
        prop_assert!(
            reference.sent == chunked.sent,
            "{}\ncommands: {:?}",
            diff_context(&reference.sent, &chunked.sent),
            commands
        );
        prop_assert_eq!(&reference.events, &chunked.events);
    }
}
