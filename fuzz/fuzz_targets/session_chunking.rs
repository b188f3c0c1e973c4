//! The same client bytes fed whole and cut into reads at fuzzer-chosen
//! points give byte-identical output, the same events and the same commits.
//!
//! Input: one octet of flags (failed-login delay, high-water mark, body
//! chunk size, bad-command limit), one octet `k`, `k` cut points (two
//! octets each, little-endian), then the client bytes. STLS is not offered:
//! by RFC 2595 what follows STLS in the same read is thrown away, so there
//! the reads legitimately matter.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pop3_fuzz::store;
use pop3_proto::testing::{check_locks, escape_bytes, Harness};
use pop3_proto::{Config, Mechanism, PlaintextAuth};

fn config(flags: u8) -> Config {
    Config::builder()
        .hostname("fuzz.example")
        .apop(true)
        .sasl(&Mechanism::ALL)
        .plaintext_auth(PlaintextAuth::Allow)
        .utf8(true)
        .lang(true)
        .auth_failure_delay(if flags & 1 != 0 {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        })
        .output_high_water(if flags & 2 != 0 { 64 } else { 64 * 1024 })
        .max_bad_commands(if flags & 8 != 0 { 1000 } else { 10 })
        .input_buffer(if flags & 16 != 0 { 300 } else { 8 * 1024 })
        .build()
        .expect("a valid config")
}

fn run(flags: u8, reads: &[&[u8]]) -> Harness {
    let store = store();
    store.set_chunk_size(if flags & 4 != 0 { 7 } else { 4096 });
    let mut h = Harness::new(config(flags), store);
    for read in reads {
        h.feed(read);
    }
    if !h.session.is_closed() {
        h.eof();
    }
    for _ in 0..64 {
        if h.session.is_closed() || !h.advance_to_deadline() {
            break;
        }
    }
    if let Err(e) = check_locks(
        &h.events,
        h.store.locks(),
        h.store.unlocks(),
        h.session.is_closed(),
    ) {
        panic!("{e}");
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&k, rest)) = rest.split_first() else {
        return;
    };
    let k = usize::from(k % 32).min(rest.len() / 2);
    let (cuts, input) = rest.split_at(2 * k);
    let mut at: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (input.len() + 1))
        .collect();
    at.sort_unstable();
    let mut reads = Vec::new();
    let mut start = 0;
    for cut in at {
        if cut > start {
            reads.push(&input[start..cut]);
            start = cut;
        }
    }
    reads.push(&input[start..]);

    let whole = run(flags, &[input]);
    let split = run(flags, &reads);
    if whole.sent != split.sent {
        let same = whole
            .sent
            .iter()
            .zip(&split.sent)
            .take_while(|(a, b)| a == b)
            .count();
        let from = same.saturating_sub(80);
        panic!(
            "output differs at octet {same}\nwhole: {}\nsplit: {}\nreads: {}",
            escape_bytes(&whole.sent[from..(same + 80).min(whole.sent.len())]),
            escape_bytes(&split.sent[from..(same + 80).min(split.sent.len())]),
            reads.len()
        );
    }
    assert_eq!(whole.events, split.events, "events differ");
    assert_eq!(whole.store.commits(), split.store.commits());
});
