//! Figures of the output contract, printed (not timed): allocations per
//! command, and writes per MiB of RETR output.
//!
//! - allocations per command: heap blocks allocated (counted by `dhat`'s
//!   global allocator) per NOOP, for 10,000 NOOPs pipelined in one input
//!   and for NOOPs sent one per input (lockstep), replies taken and given back;
//! - writes per MiB: `Output::Transmit`s (one vectored write each) per MiB of
//!   RETR output, for a 4 MiB message of short lines with ~3 % dot lines
//!   stored with LF and with CRLF line ends, pushed in 32 KiB chunks.
//!
//! Run with `cargo bench -p pop3-proto --bench contract`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pop3_proto::{Config, Event, Greeting, Maildrop, MessageInfo, Output, Request, Session, Uid};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// A logged-in session over one message of `size` octets.
fn logged_in(size: u64) -> Session {
    let config = Arc::new(Config::builder().build().expect("valid config"));
    let now = Instant::now();
    let mut s = Session::new(
        config,
        Greeting {
            nonce: 1,
            unix_time: 1,
        },
        now,
    );
    s.handle_input(now, b"USER u\r\nPASS p\r\n")
        .expect("input wanted");
    loop {
        match s.poll_output(now) {
            Output::Transmit(t) => s.handle_written(now, t).expect("in flight"),
            Output::Event(Event::Request(Request::Authenticate { .. })) => {
                s.accept_login(now).expect("pending")
            }
            Output::Event(Event::Request(Request::Lock { .. })) => {
                let info = MessageInfo {
                    size,
                    uid: Uid::new("m1").expect("uid"),
                };
                let drop = Maildrop::new([info]).expect("maildrop");
                s.grant_maildrop(now, drop).expect("pending");
            }
            Output::Wait(_) => return s,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Takes and gives back every transmit; returns (transmits, octets).
fn drain(s: &mut Session, now: Instant, body: &mut impl Iterator<Item = Bytes>) -> (usize, usize) {
    let (mut writes, mut octets) = (0, 0);
    loop {
        match s.poll_output(now) {
            Output::Transmit(t) => {
                writes += 1;
                octets += t.len();
                s.handle_written(now, t).expect("in flight");
            }
            Output::Event(Event::Request(Request::Retrieve { .. })) => {
                s.begin_body(now).expect("pending")
            }
            Output::Event(Event::NeedBody) => match body.next() {
                Some(chunk) => {
                    s.push_body(now, chunk).expect("body");
                }
                None => s.end_body(now).expect("body"),
            },
            Output::Wait(_) => return (writes, octets),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn allocations(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

fn message(eol: &str) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut m = format!("Subject: big{eol}From: a@b.example{eol}{eol}").into_bytes();
    while m.len() < 4 << 20 {
        if next() % 100 < 3 {
            m.push(b'.');
        }
        m.extend(std::iter::repeat_n(b'x', 20 + (next() % 50) as usize));
        m.extend_from_slice(eol.as_bytes());
    }
    m
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let now = Instant::now();
    const N: usize = 10_000;

    let mut s = logged_in(10);
    let pipelined = "NOOP\r\n".repeat(N);
    let mut none = std::iter::empty();
    drain(&mut s, now, &mut none);
    let count = allocations(|| {
        s.handle_input(now, pipelined.as_bytes())
            .expect("input wanted");
        drain(&mut s, now, &mut none);
    });
    println!(
        "allocations per pipelined NOOP: {:.4} ({count} for {N})",
        count as f64 / N as f64
    );

    let count = allocations(|| {
        for _ in 0..N {
            s.handle_input(now, b"NOOP\r\n").expect("input wanted");
            drain(&mut s, now, &mut none);
        }
    });
    println!(
        "allocations per lockstep NOOP:  {:.4} ({count} for {N})",
        count as f64 / N as f64
    );

    for (name, eol) in [("LF", "\n"), ("CRLF", "\r\n")] {
        let body = Bytes::from(message(eol));
        let size = pop3_proto::transmitted_size(&body);
        let mut s = logged_in(size);
        drain(&mut s, now, &mut none);
        s.handle_input(now, b"RETR 1\r\n").expect("input wanted");
        let mut chunks = (0..body.len())
            .step_by(32 * 1024)
            .map(|at| body.slice(at..(at + 32 * 1024).min(body.len())));
        let (writes, octets) = drain(&mut s, now, &mut chunks);
        let mib = octets as f64 / (1 << 20) as f64;
        println!(
            "RETR of 4 MiB, {name}-stored: {writes} writes for {octets} octets = {:.1} writes per MiB ({:.1} KiB per write)",
            writes as f64 / mib,
            octets as f64 / writes as f64 / 1024.0
        );
    }
}
