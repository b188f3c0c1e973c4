//! `pop3-driver`'s drive procedure, through the blocking loop, over a fake
//! transport whose every read, write, TLS handshake and shutdown stage the
//! fuzzer scripts (data from the byte stream, end of stream, timeouts
//! early and at the deadline, IO errors of every kind, slow and timed-out
//! writes, failed handshakes, shutdown begin/abort/cancel at any IO call),
//! with store faults (refusals, internal errors, panics, and blocking
//! hangs, which panic) and a chosen configuration.
//!
//! Checked: the loop ends (a bounded number of IO calls), nothing panics
//! but what was injected (and that is caught), every lock is released once,
//! the store changes only by a commit after QUIT deleting exactly the
//! marked messages, a handler failure is reported to the `session_error`
//! hook once, and everything the session wrote passes the `ReplyChecker`
//! (whole CRLF lines, one response per command, bodies intact).
//!
//! Input: see `pop3_fuzz::split_input` (script, then the byte stream).

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pop3_driver::blocking::{drive, Transport};
use pop3_driver::{Procedure, ReadOutcome, Shutdown};
use pop3_fuzz::{quiet_injected_panics, split_input, store, Stream, USERS};
use pop3_proto::testing::{check_store_after, escape_bytes, Fault, FaultPoint, ReplyChecker};
use pop3_proto::{CloseReason, Config, Greeting, Mechanism, PlaintextAuth, Refusal, Session};

/// No session of a fuzz input needs this many IO calls; more is a loop.
const MAX_IO: usize = 200_000;

#[derive(Debug, Arbitrary, Clone, Copy)]
enum ErrorKind {
    BrokenPipe,
    ConnectionReset,
    TimedOut,
    Interrupted,
    WouldBlock,
    Other,
}

impl ErrorKind {
    fn error(self) -> io::Error {
        match self {
            Self::BrokenPipe => io::ErrorKind::BrokenPipe,
            Self::ConnectionReset => io::ErrorKind::ConnectionReset,
            Self::TimedOut => io::ErrorKind::TimedOut,
            Self::Interrupted => io::ErrorKind::Interrupted,
            Self::WouldBlock => io::ErrorKind::WouldBlock,
            Self::Other => io::ErrorKind::Other,
        }
        .into()
    }
}

#[derive(Debug, Arbitrary)]
enum ReadAct {
    /// Up to this many octets of the stream (at least one).
    Data(u16),
    Eof,
    /// Nothing arrives: the read lasts until its deadline.
    Silence,
    /// The read returns `TimedOut` early, after this many milliseconds.
    Early(u16),
    Error(ErrorKind),
}

#[derive(Debug, Arbitrary)]
enum WriteAct {
    Done,
    /// The write takes this many seconds.
    Slow(u16),
    /// The peer never reads: the write lasts until its deadline.
    Blocked,
    Error(ErrorKind),
}

#[derive(Debug, Arbitrary)]
enum Stage {
    Begin,
    Abort,
    Cancel,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Refuse(String),
    Internal,
    Panic,
    Hang,
}

#[derive(Debug, Arbitrary)]
enum Point {
    Authenticate,
    Lock,
    Open,
    MidBody,
    Commit,
}

#[derive(Debug, Arbitrary)]
struct Script {
    stls: bool,
    apop: bool,
    small_buffers: bool,
    delay_ms: u16,
    chunk: u16,
    faults: Vec<(Point, Kind)>,
    reads: Vec<ReadAct>,
    writes: Vec<WriteAct>,
    handshakes: Vec<Option<ErrorKind>>,
    shutdown: Vec<(u16, Stage)>,
}

struct Fake<'a> {
    start: Instant,
    now: Instant,
    stream: Stream<'a>,
    reads: VecDeque<ReadAct>,
    writes: VecDeque<WriteAct>,
    handshakes: VecDeque<Option<ErrorKind>>,
    /// (IO call number, stage), by call number.
    stages: VecDeque<(usize, Stage)>,
    shutdown: Shutdown,
    read_closed: bool,
    aborted: bool,
    io_calls: usize,
    checker: ReplyChecker,
    written: Vec<u8>,
}

impl Fake<'_> {
    fn count_io(&mut self) {
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!(
                "io {} at {:?}: reads {:?} writes {:?}",
                self.io_calls,
                self.now - self.start,
                self.reads.front(),
                self.writes.front()
            );
        }
        self.io_calls += 1;
        assert!(self.io_calls < MAX_IO, "the drive loop does not end");
        while self
            .stages
            .front()
            .is_some_and(|(at, _)| *at <= self.io_calls)
        {
            let (_, stage) = self.stages.pop_front().expect("checked");
            match stage {
                Stage::Begin => self.shutdown.begin(),
                Stage::Abort => self.shutdown.abort(),
                Stage::Cancel => self.shutdown.cancel(),
            }
            // As pop3-std does: a shutdown shuts the read side, an abort both.
            self.read_closed = true;
            if !matches!(stage, Stage::Begin) {
                self.aborted = true;
            }
        }
    }

    fn check(&mut self, bytes: &[u8]) {
        if let Err(e) = self.checker.server(bytes) {
            panic!(
                "invariant broken: {e}\nwritten so far: {}",
                escape_bytes(&self.written)
            );
        }
    }
}

impl Transport for Fake<'_> {
    fn now(&self) -> Instant {
        self.now
    }

    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        self.count_io();
        if self.read_closed {
            return Ok(ReadOutcome::Eof);
        }
        let act = self.reads.pop_front().unwrap_or(ReadAct::Data(u16::MAX));
        match act {
            ReadAct::Data(n) => {
                let n = (1 + usize::from(n)).min(buf.len());
                let bytes = self.stream.take(n);
                if bytes.is_empty() {
                    self.read_closed = true;
                    return Ok(ReadOutcome::Eof);
                }
                buf[..bytes.len()].copy_from_slice(bytes);
                self.checker.client(bytes);
                Ok(ReadOutcome::Data(bytes.len()))
            }
            ReadAct::Eof => {
                self.read_closed = true;
                Ok(ReadOutcome::Eof)
            }
            ReadAct::Silence => match deadline {
                Some(d) => {
                    self.now = self.now.max(d);
                    Ok(ReadOutcome::TimedOut)
                }
                // A read that could never end: the peer goes away instead.
                None => {
                    self.read_closed = true;
                    Ok(ReadOutcome::Eof)
                }
            },
            ReadAct::Early(ms) => {
                let at = self.now + Duration::from_millis(u64::from(ms));
                self.now = deadline.map_or(at, |d| at.min(d)).max(self.now);
                Ok(ReadOutcome::TimedOut)
            }
            ReadAct::Error(kind) => Err(kind.error()),
        }
    }

    fn write(&mut self, segments: &[Bytes], deadline: Option<Instant>) -> io::Result<()> {
        self.count_io();
        // What the session tried to say, whether or not it got through.
        let bytes: Vec<u8> = segments.iter().flat_map(|s| s.iter().copied()).collect();
        self.written.extend_from_slice(&bytes);
        self.check(&bytes);
        if self.aborted {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match self.writes.pop_front().unwrap_or(WriteAct::Done) {
            WriteAct::Done => Ok(()),
            WriteAct::Slow(secs) => {
                let done = self.now + Duration::from_secs(u64::from(secs % 1200));
                match deadline {
                    Some(d) if done > d => {
                        self.now = self.now.max(d);
                        Err(io::ErrorKind::TimedOut.into())
                    }
                    _ => {
                        self.now = done;
                        Ok(())
                    }
                }
            }
            WriteAct::Blocked => {
                let d = deadline.expect("a write without a deadline");
                self.now = self.now.max(d);
                Err(io::ErrorKind::TimedOut.into())
            }
            WriteAct::Error(kind) => Err(kind.error()),
        }
    }

    fn sleep_until(&mut self, until: Instant) {
        self.count_io();
        self.now = self.now.max(until);
    }

    fn can_start_tls(&self) -> bool {
        true
    }

    fn start_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.count_io();
        match self.handshakes.pop_front().flatten() {
            None => Ok(()),
            Some(ErrorKind::TimedOut) => {
                if let Some(d) = deadline {
                    self.now = self.now.max(d);
                }
                Err(io::ErrorKind::TimedOut.into())
            }
            Some(kind) => Err(kind.error()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    quiet_injected_panics();
    let (script, stream) = split_input(data);
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(script)) else {
        return;
    };
    let mut builder = Config::builder()
        .hostname("fuzz.example")
        .apop(script.apop)
        .stls(script.stls)
        .sasl(&Mechanism::ALL)
        .plaintext_auth(PlaintextAuth::Allow)
        .auth_failure_delay(Duration::from_millis(u64::from(script.delay_ms % 5000)));
    if script.small_buffers {
        builder = builder.input_buffer(300).output_high_water(100);
    }
    let config = builder.build().expect("a valid config");

    let store = store();
    store.set_chunk_size(1 + usize::from(script.chunk) % 8192);
    for (point, kind) in script.faults.into_iter().take(16) {
        let point = match point {
            Point::Authenticate => FaultPoint::Authenticate,
            Point::Lock => FaultPoint::Lock,
            Point::Open => FaultPoint::Open,
            Point::MidBody => FaultPoint::MidBody,
            Point::Commit => FaultPoint::Commit,
        };
        let fault = match kind {
            Kind::Refuse(text) => Fault::Refuse(Refusal::new(text)),
            Kind::Internal => Fault::Internal,
            Kind::Panic => Fault::Panic,
            Kind::Hang => Fault::Hang,
        };
        store.inject(point, fault);
    }
    let before: Vec<_> = USERS.iter().map(|(u, _)| (*u, store.messages(u))).collect();

    let mut stages: Vec<(usize, Stage)> = script
        .shutdown
        .into_iter()
        .take(3)
        .map(|(at, s)| (usize::from(at) % 2000, s))
        .collect();
    stages.sort_by_key(|(at, _)| *at);
    let start = Instant::now();
    let shutdown = Shutdown::new();
    let mut fake = Fake {
        start,
        now: start,
        stream: Stream(stream),
        reads: script.reads.into(),
        writes: script.writes.into(),
        handshakes: script.handshakes.into(),
        stages: stages.into(),
        shutdown: shutdown.clone(),
        read_closed: false,
        aborted: false,
        io_calls: 0,
        checker: ReplyChecker::new(),
        written: Vec::new(),
    };
    let greeting = Greeting {
        nonce: 1,
        unix_time: 0,
    };
    let session = Session::new(Arc::new(config), greeting, start);
    let procedure = Procedure::new(session, shutdown);
    let mut handler = store.handler();
    let end = drive(procedure, &mut fake, &mut handler);
    drop(handler);

    let fail = |what: String| -> ! {
        panic!(
            "invariant broken: {what}\nend: {end:?}\nwritten: {}",
            escape_bytes(&fake.written)
        )
    };
    let cut_ok = matches!(
        end.reason,
        CloseReason::HandlerFailed
            | CloseReason::PeerClosed
            | CloseReason::IdleTimeout
            // An abort drops the connection, in a body or not.
            | CloseReason::Shutdown
    );
    if let Err(e) = fake.checker.finish(cut_ok) {
        fail(e.to_string());
    }
    if store.locks() != store.unlocks() {
        fail(format!(
            "{} locks, {} unlocks",
            store.locks(),
            store.unlocks()
        ));
    }
    let commits = store.commits();
    for (user, before) in &before {
        if store.is_locked(user) {
            fail(format!("{user}'s maildrop is still locked"));
        }
        if let Err(e) = check_store_after(before, &store.messages(user), &commits) {
            fail(format!("{user}: {e}"));
        }
    }
    match commits.as_slice() {
        [] => {}
        [deleted] => {
            // QUIT's reply may be lost with the replies batched before it
            // when the write after the commit fails; the session still
            // ended by QUIT.
            let quit = fake.checker.quit_after_login()
                || (end.reason == CloseReason::Quit && fake.checker.quit_sent_after_login());
            if !quit {
                fail(format!("a commit without QUIT: {deleted:?}"));
            }
            // Without UTF-8 mode only alice's and admin's (empty) maildrops
            // can be opened: marks are alice's message numbers.
            let alice = &before[0].1;
            let marked: Vec<String> = fake
                .checker
                .marked()
                .iter()
                .filter_map(|&n| alice.get(n as usize - 1).map(|m| m.uid.clone()))
                .collect();
            if *deleted != marked {
                fail(format!("QUIT deleted {deleted:?}, {marked:?} were marked"));
            }
        }
        more => fail(format!("{} commits", more.len())),
    }
    if store.session_errors() > 1 {
        fail(format!(
            "{} session errors reported",
            store.session_errors()
        ));
    }
    if end.reason == CloseReason::HandlerFailed && store.session_errors() != 1 {
        fail("a handler failure not reported to session_error".into());
    }
});
