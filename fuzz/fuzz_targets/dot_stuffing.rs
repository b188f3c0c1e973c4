//! The body encoder: RETR's dot-stuffing and TOP's cut-off, for a body cut
//! into chunks at fuzzer-chosen points. The stuffed output has one
//! terminator, no bare LF, unstuffs to the normalized body
//! (`check_stuffed`), does not depend on the chunking, and TOP n k sends
//! exactly the headers, the blank line and min(k, body lines) lines, as a
//! prefix of RETR's output (`check_top`).
//!
//! Input: one octet (high bit: TOP, low 7 bits: k), one octet `c`, `c` cut
//! points (one octet each, as offsets from the previous cut), then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::testing::{
    check_stuffed, check_top, encode_body, escape_bytes, normalize_body, unstuff,
};

fuzz_target!(|data: &[u8]| {
    let [mode, c, rest @ ..] = data else {
        return;
    };
    let c = usize::from(*c % 32).min(rest.len());
    let (cuts, body) = rest.split_at(c);
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for &step in cuts {
        let end = (start + usize::from(step)).min(body.len());
        chunks.push(&body[start..end]);
        start = end;
    }
    chunks.push(&body[start..]);

    let whole = encode_body(&[body], None);
    let retr = encode_body(&chunks, None);
    assert!(
        retr == whole,
        "chunking changed RETR output\nbody: {}\nwhole: {}\nchunked: {}",
        escape_bytes(body),
        escape_bytes(&whole),
        escape_bytes(&retr)
    );
    if let Err(e) = check_stuffed(body, &retr) {
        panic!("RETR: {e}\nbody: {}", escape_bytes(body));
    }
    assert_eq!(unstuff(&retr).ok(), Some(normalize_body(body)));

    if mode & 0x80 != 0 {
        let k = u64::from(mode & 0x7f);
        let top = encode_body(&chunks, Some(k));
        assert_eq!(
            top,
            encode_body(&[body], Some(k)),
            "chunking changed TOP {k}"
        );
        if let Err(e) = check_top(body, k, &top, &whole) {
            panic!("TOP {k}: {e}\nbody: {}", escape_bytes(body));
        }
    }
});
