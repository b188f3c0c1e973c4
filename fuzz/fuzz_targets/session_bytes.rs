//! A raw client byte stream into one session over the in-memory store
//! (everything offered: STLS, APOP, every SASL mechanism, UTF8, LANG), read
//! by read as the harness hands it over, then end of stream and every
//! deadline. Checked throughout and at the end with the shared invariants:
//! no panic, whole CRLF lines outside bodies, one response per command,
//! no terminator before the end of a body (bodies compared with the
//! store's messages), deletion only at QUIT, one unlock per lock, bounded
//! input and output buffers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_fuzz::{store, wide_config, Run};
use pop3_proto::Channel;

fuzz_target!(|data: &[u8]| {
    let mut run = Run::new(wide_config(), store(), Channel::default(), 61);
    run.feed(data);
    run.settle();
    run.check();
});
