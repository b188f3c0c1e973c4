//! Throughput benchmarks for the hot paths of `pop3-proto`.
//!
//! What is measured (all inputs are built once, outside the timed loop, and
//! checked once for correctness before timing):
//!
//! - `plain_copy/8MiB`: copies an 8 MiB body in 64 KiB chunks into a fresh
//!   `Vec`. This is the memcpy (plus one allocation) baseline for this machine,
//!   measured in the same run as the others.
//! - `dot_stuff/clean_crlf_8MiB`: `testing::encode_body` on realistic mail text
//!   (CRLF lines of about 70 characters, no line starting with `.`), in 64 KiB
//!   chunks. Note that `encode_body` itself copies every chunk into a `Bytes`
//!   and concatenates the output into one `Vec`, so it costs at least two
//!   copies of the body on top of the scanning.
//! - `dot_stuff/dots_and_bare_lf_8MiB`: the same with LF-only line ends and
//!   every 5th line starting with `.`: the worst realistic case, where every
//!   line needs a change (CRLF repair) and many need a stuffed dot.
//! - `session_retr/8MiB_64KiB_chunks`: a logged-in `Session` streams the clean
//!   8 MiB message for `RETR 1`, fed in 64 KiB `Bytes` chunks on
//!   `Event::NeedBody`, every `Output::Transmit` "written" (bytes counted,
//!   not copied) and given back with `handle_written` as it comes. This is
//!   what a real server pays per message, minus the socket writes;
//!   unchanged runs go out as zero-copy slices.
//! - `retr_lf_64MiB/plain_copy` and `retr_lf_64MiB/session`: 64 MiB of
//!   LF-stored mail (every line needs its CRLF, one in 97 a stuffed dot),
//!   copied in 64 KiB chunks into one buffer made once, and streamed
//!   through a session's RETR; the performance target is the session at
//!   0.8x the copy.
//! - `command_parser/mixed`: ~1000 typical command lines (valid and junk,
//!   without CRLF) through `testing::parses`.
//! - `session_pipelined/1000_commands`: one `handle_input` with 1000 pipelined
//!   `STAT`/`LIST 1`/`NOOP` commands on a logged-in session, replies drained.
//!
//! How to read the results: every benchmark reports `Throughput::Bytes`, so
//! criterion prints the input octets processed per second (MiB/s or GiB/s)
//! next to the time per iteration. Compare `dot_stuff/*` and `session_retr`
//! with `plain_copy/8MiB` from the same run: the ratio is the cost of POP3
//! body encoding relative to just copying the bytes. For the two command
//! benchmarks divide the time by 1000 for the cost of one command.
//!
//! Run with `cargo bench -p pop3-proto --bench throughput`; add `-- --quick`
//! for a fast, less precise pass.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use pop3_proto::testing::{check_stuffed, encode_body, parses};
use pop3_proto::{
    Config, Event, Greeting, Maildrop, MessageInfo, Output, Phase, Request, Session, Uid,
};

/// Size of the message bodies.
const BODY_SIZE: usize = 8 * 1024 * 1024;
/// Size of the chunks a handler reads from its store.
const CHUNK_SIZE: usize = 64 * 1024;
/// Commands per batch for the parser and pipelining benchmarks.
const COMMANDS: usize = 1000;

// ---- inputs ----

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "to",
    "and",
    "a",
    "in",
    "for",
    "is",
    "on",
    "that",
    "with",
    "as",
    "this",
    "we",
    "will",
    "be",
    "at",
    "by",
    "from",
    "it",
    "our",
    "please",
    "review",
    "attached",
    "report",
    "meeting",
    "schedule",
    "budget",
    "quarterly",
    "project",
    "update",
    "tomorrow",
    "invoice",
    "delivery",
    "mailbox",
    "server",
    "thanks",
    "regards",
    "question",
    "customer",
    "Monday",
    "next",
    "week",
    "team",
    "draft",
    "proposal",
    "deadline",
    "numbers",
    "agenda",
    "notes,",
    "shipment",
    "confirmed.",
    "(see",
    "below)",
    "ASAP",
    "re:",
    "2024-05-17",
    "v2.3.1",
];

/// About `BODY_SIZE` bytes of mail: a header block, then paragraphs of
/// word-wrapped lines of 60-76 characters ended by `line_end`. With
/// `dot_every == Some(n)`, every n-th line starts with `.`; otherwise no line
/// does. Cut to exactly `BODY_SIZE` bytes (the last line may be partial).
fn mail_text(line_end: &[u8], dot_every: Option<usize>) -> Vec<u8> {
    mail_text_of(BODY_SIZE, line_end, dot_every)
}

/// [`mail_text`] of `size` bytes.
fn mail_text_of(size: usize, line_end: &[u8], dot_every: Option<usize>) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(size + 128);
    let mut line_no = 0usize;
    let mut push_line = |out: &mut Vec<u8>, text: &[u8]| {
        line_no += 1;
        if dot_every.is_some_and(|n| line_no % n == 0) {
            out.push(b'.');
        }
        out.extend_from_slice(text);
        out.extend_from_slice(line_end);
    };
    for header in [
        "Return-Path: <alice@example.org>",
        "Received: from mx.example.org (mx.example.org [192.0.2.25]) by mail.example.net",
        "Date: Fri, 17 May 2024 09:30:00 +0200",
        "From: Alice Example <alice@example.org>",
        "To: Bob Example <bob@example.net>",
        "Subject: Quarterly report and meeting notes",
        "Message-ID: <20240517093000.12345@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ] {
        push_line(&mut out, header.as_bytes());
    }
    let mut line = Vec::with_capacity(96);
    while out.len() < size {
        let width = 60 + rng.below(17);
        line.clear();
        while line.len() < width {
            if !line.is_empty() {
                line.push(b' ');
            }
            line.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
        push_line(&mut out, &line);
        if rng.below(12) == 0 {
            push_line(&mut out, b"");
        }
    }
    out.truncate(size);
    out
}

/// ~1000 command lines (no CRLF) as clients send them, with some junk.
fn command_lines() -> Vec<Vec<u8>> {
    (0..COMMANDS)
        .map(|i| {
            let n = i % 500 + 1;
            let line = match i % 16 {
                0 => format!("RETR {n}"),
                1 => "LIST".to_owned(),
                2 => format!("UIDL {n}"),
                3 => format!("TOP {n} 10"),
                4 => "USER name".to_owned(),
                5 => "PASS pw".to_owned(),
                6 => format!("DELE {n}"),
                7 => "junk".to_owned(),
                8 => "STAT".to_owned(),
                9 => format!("list {n}"),
                10 => "NOOP".to_owned(),
                11 => "UIDL".to_owned(),
                12 => "RETR 0".to_owned(),
                13 => "XAUTHLIST some junk args".to_owned(),
                14 => "CAPA".to_owned(),
                _ => "QUIT".to_owned(),
            };
            line.into_bytes()
        })
        .collect()
}

/// 1000 pipelined commands cycling through STAT, LIST 1 and NOOP.
fn pipelined_input() -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..COMMANDS {
        input.extend_from_slice(match i % 3 {
            0 => b"STAT\r\n".as_slice(),
            1 => b"LIST 1\r\n",
            _ => b"NOOP\r\n",
        });
    }
    input
}

// ---- driving a session ----

/// Plays the driver up to the next event: every transmit is "written"
/// (counted into `sent`) and given back. `None` when the session waits.
fn next_event(session: &mut Session, now: Instant, sent: &mut usize) -> Option<Event> {
    loop {
        match session.poll_output(now) {
            Output::Transmit(t) => {
                *sent += t.len();
                session.handle_written(now, t).unwrap();
            }
            Output::Event(event) => return Some(event),
            Output::Wait(_) => return None,
        }
    }
}

/// A session in TRANSACTION, its greeting and login replies drained.
fn logged_in(config: Config, sizes: &[u64], now: Instant) -> Session {
    let greeting = Greeting {
        nonce: 1,
        unix_time: 0,
    };
    let mut session = Session::new(Arc::new(config), greeting, now);
    session
        .handle_input(now, b"USER bench\r\nPASS secret\r\n")
        .unwrap();
    let mut sent = 0;
    loop {
        match next_event(&mut session, now, &mut sent) {
            Some(Event::Request(Request::Authenticate { .. })) => {
                session.accept_login(now).unwrap();
            }
            Some(Event::Request(Request::Lock { .. })) => {
                let listing = sizes.iter().enumerate().map(|(i, &size)| MessageInfo {
                    size,
                    uid: Uid::new(format!("msg-{i}")).unwrap(),
                });
                session
                    .grant_maildrop(now, Maildrop::new(listing).unwrap())
                    .unwrap();
            }
            None => break,
            Some(other) => panic!("unexpected event during login: {other:?}"),
        }
    }
    assert_eq!(session.phase(), Phase::Transaction);
    session
}

/// Sends `RETR 1` and answers it with `chunks`; returns the bytes sent.
fn retr(session: &mut Session, chunks: &[Bytes], now: Instant) -> usize {
    session.handle_input(now, b"RETR 1\r\n").unwrap();
    let mut sent = 0;
    let mut next = chunks.iter();
    loop {
        match next_event(session, now, &mut sent) {
            Some(Event::Request(Request::Retrieve { .. })) => session.begin_body(now).unwrap(),
            Some(Event::NeedBody) => match next.next() {
                Some(chunk) => {
                    session.push_body(now, chunk.clone()).unwrap();
                }
                None => session.end_body(now).unwrap(),
            },
            None => return sent,
            Some(other) => panic!("unexpected event during RETR: {other:?}"),
        }
    }
}

// ---- benchmarks ----

fn body_benches(c: &mut Criterion) {
    let clean = mail_text(b"\r\n", None);
    let dotted = mail_text(b"\n", Some(5));
    assert!(!clean.split(|&b| b == b'\n').any(|l| l.starts_with(b".")));
    let clean_chunks: Vec<&[u8]> = clean.chunks(CHUNK_SIZE).collect();
    let dotted_chunks: Vec<&[u8]> = dotted.chunks(CHUNK_SIZE).collect();
    check_stuffed(&clean, &encode_body(&clean_chunks, None)).unwrap();
    check_stuffed(&dotted, &encode_body(&dotted_chunks, None)).unwrap();

    let mut group = c.benchmark_group("plain_copy");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(clean.len() as u64));
    group.bench_function("8MiB", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(clean.len());
            for chunk in black_box(&clean_chunks) {
                out.extend_from_slice(chunk);
            }
            out
        });
    });
    group.finish();

    let mut group = c.benchmark_group("dot_stuff");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(clean.len() as u64));
    group.bench_function("clean_crlf_8MiB", |b| {
        b.iter(|| encode_body(black_box(&clean_chunks), None));
    });
    group.throughput(Throughput::Bytes(dotted.len() as u64));
    group.bench_function("dots_and_bare_lf_8MiB", |b| {
        b.iter(|| encode_body(black_box(&dotted_chunks), None));
    });
    group.finish();

    let now = Instant::now();
    let config = Config::builder()
        .output_high_water(16 * 1024 * 1024)
        .build()
        .unwrap();
    let mut session = logged_in(config, &[clean.len() as u64], now);
    let whole = Bytes::from(clean);
    let chunks: Vec<Bytes> = (0..whole.len())
        .step_by(CHUNK_SIZE)
        .map(|at| whole.slice(at..whole.len().min(at + CHUNK_SIZE)))
        .collect();
    // "+OK <size> octets", the body, CRLF for the cut last line, ".".
    let reply = format!("+OK {} octets\r\n", whole.len());
    assert_eq!(
        retr(&mut session, &chunks, now),
        reply.len() + whole.len() + 2 + 3
    );

    let mut group = c.benchmark_group("session_retr");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(whole.len() as u64));
    group.bench_function("8MiB_64KiB_chunks", |b| {
        b.iter(|| retr(&mut session, black_box(&chunks), now));
    });
    group.finish();
}

/// The stuffer against a plain copy of the same 64 MiB of LF-stored mail
/// (as most delivery agents write it: every line needs its CRLF), in the
/// same run: `retr_lf_64MiB/session` streams it through a logged-in
/// session's RETR in 64 KiB chunks, `retr_lf_64MiB/plain_copy` copies the
/// chunks into one buffer. Performance target: the session at 0.8x the
/// copy or better.
fn lf_retr_benches(c: &mut Criterion) {
    const SIZE: usize = 64 * 1024 * 1024;
    let text = mail_text_of(SIZE, b"\n", Some(97));
    let chunks: Vec<&[u8]> = text.chunks(CHUNK_SIZE).collect();
    let now = Instant::now();
    let config = Config::builder()
        .output_high_water(16 * 1024 * 1024)
        .build()
        .unwrap();
    let lines = memchr_count(&text);
    let crlf_size = (text.len() + lines) as u64;
    let mut session = logged_in(config, &[crlf_size], now);
    let whole = Bytes::from(text.clone());
    let body: Vec<Bytes> = (0..whole.len())
        .step_by(CHUNK_SIZE)
        .map(|at| whole.slice(at..whole.len().min(at + CHUNK_SIZE)))
        .collect();
    // Checked once: the reply line, every LF as CRLF, a dot before each
    // line that starts with one, CRLF for the cut last line, ".".
    let dots = text
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    let tail = if text.ends_with(b"\n") { 0 } else { 2 };
    let reply = format!("+OK {crlf_size} octets\r\n");
    assert_eq!(
        retr(&mut session, &body, now),
        reply.len() + crlf_size as usize + dots + tail + 3
    );

    let mut group = c.benchmark_group("retr_lf_64MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(text.len() as u64));
    // Into one buffer made (and faulted in) once: the copy at memory speed.
    let mut out = Vec::with_capacity(text.len());
    out.extend_from_slice(&text);
    group.bench_function("plain_copy", |b| {
        b.iter(|| {
            out.clear();
            for chunk in black_box(&chunks) {
                out.extend_from_slice(chunk);
            }
            out.len()
        });
    });
    group.bench_function("session", |b| {
        b.iter(|| retr(&mut session, black_box(&body), now));
    });
    group.finish();
}

fn memchr_count(text: &[u8]) -> usize {
    text.iter().filter(|&&b| b == b'\n').count()
}

fn command_benches(c: &mut Criterion) {
    let lines = command_lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let valid = lines.iter().filter(|l| parses(l)).count();
    assert!(valid > COMMANDS / 2 && valid < COMMANDS, "{valid} valid");

    let mut group = c.benchmark_group("command_parser");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("mixed", |b| {
        b.iter(|| black_box(&lines).iter().filter(|line| parses(line)).count());
    });
    group.finish();

    let now = Instant::now();
    let sizes: Vec<u64> = (1..=10).map(|i| i * 1000).collect();
    let mut session = logged_in(Config::builder().build().unwrap(), &sizes, now);
    let input = pipelined_input();
    let before = session.stats().commands;
    let mut sent = 0;
    session.handle_input(now, &input).unwrap();
    let event = next_event(&mut session, now, &mut sent);
    assert_eq!(session.stats().commands - before, COMMANDS as u64);
    assert_eq!(session.stats().bad_commands, 0);
    assert!(sent > 0 && event.is_none(), "{event:?}");

    let mut group = c.benchmark_group("session_pipelined");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("1000_commands", |b| {
        b.iter(|| {
            session.handle_input(now, black_box(&input)).unwrap();
            let mut sent = 0;
            let event = next_event(&mut session, now, &mut sent);
            debug_assert!(event.is_none());
            sent
        });
    });
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out because
// the macro's generated `pub fn` trips the workspace's `missing_docs` lint.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    body_benches(&mut criterion);
    lf_retr_benches(&mut criterion);
    command_benches(&mut criterion);
    criterion.final_summary();
}
