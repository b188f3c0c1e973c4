//! Test harness (feature `testing`): a fake clock, a session answered from
//! the one in-memory store ([`crate::memory`], faults included), a `C:`/`S:`
//! transcript runner, and the invariant checks shared by the property tests
//! and the fuzz targets.
//!
//! Nothing here is needed to run a server; it exists so that every protocol
//! rule can be checked in microseconds of simulated time.

mod invariants;
mod scram_client;
mod transcript;

pub use crate::memory::{
    awkward_messages, message_of_size, Fault, FaultPoint, MemoryStore, StoredMessage,
};
pub use invariants::{
    check_buffer_bounds, check_command_line, check_locks, check_store_after, check_stuffed,
    check_top, expected_top, normalize_body, unstuff, InvariantError, MultiLine, ReplyChecker,
    MAX_RESPONSE_LINE,
};
pub use scram_client::{ScramClient, ScramFinal};
pub use transcript::{
    body_script, escape_bytes, parse_script, run_transcript, ScriptStep, TranscriptError,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Event, Request};
use crate::memory::{MemoryBody, MemoryHandler, StoreError};
use crate::{BodyProgress, Channel, Config, Greeting, Output, Session, UsageError, Wait};

/// Dot-stuffs a body given in chunks, as RETR (`top == None`) or
/// `TOP n k` would send it, terminator included.
pub fn encode_body(chunks: &[&[u8]], top: Option<u64>) -> Vec<u8> {
    crate::body::encode_body(chunks, top)
}

/// True if `line` (without CRLF) parses as a command.
pub fn parses(line: &[u8]) -> bool {
    crate::command::parse(line).is_ok()
}

/// Parses `line` (without CRLF) as the session does: the command printed
/// back as a line (one that parses to the same command), or why it does
/// not parse.
pub fn parse_command(line: &[u8]) -> Result<Vec<u8>, String> {
    crate::command::parse(line)
        .map(|c| c.to_line())
        .map_err(|e| format!("{e:?}"))
}

/// The most the harness hands the session in one read.
pub const HARNESS_READ: usize = 4096;

/// One [`Output`], simplified so that a sequence of them can be compared
/// with `assert_eq!` (see [`Harness::step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A transmit: its bytes, as text (lossy).
    Bytes(String),
    /// An event.
    Event(Event),
    /// A wait.
    Wait(Wait),
}

/// A session wired to a [`MemoryStore`] and a fake clock.
///
/// [`Harness::run`] plays the driver: it drains output into
/// [`Harness::sent`], answers every request from the store and records every
/// event in [`Harness::events`].
#[derive(Debug)]
pub struct Harness {
    /// The session under test.
    pub session: Session,
    /// The store backing it (clones share it).
    pub store: MemoryStore,
    /// The session's connection to the store.
    pub handler: MemoryHandler,
    /// The simulated current time.
    pub now: Instant,
    /// Everything the session has sent, in order.
    pub sent: Vec<u8>,
    /// Every event, in order (requests, unlocks, the close).
    pub events: Vec<Event>,
    /// Largest output the session held at once.
    pub peak_output: usize,
    /// Largest input the session held at once.
    pub peak_input: usize,
    /// Answer requests automatically (default). When false, requests are only recorded.
    pub auto_answer: bool,
    body: Option<MemoryBody>,
    wait: Option<Wait>,
    start: Instant,
}

/// The server's part of every SCRAM nonce in the harness (a real driver
/// makes a fresh random one per exchange).
pub const HARNESS_SCRAM_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";

impl Harness {
    /// A session with this config over `store`, greeting nonce 1896 and
    /// time 697170952 (RFC 1939's example timestamp).
    pub fn new(config: Config, store: MemoryStore) -> Self {
        Self::with_channel(config, store, Channel::default())
    }

    /// Like [`Harness::new`], on a connection with TLS from the start or a
    /// local peer (see [`Channel`]).
    pub fn with_channel(config: Config, store: MemoryStore, channel: Channel) -> Self {
        let start = Instant::now();
        let greeting = Greeting {
            nonce: 1896,
            unix_time: 697_170_952,
        };
        let mut h = Self {
            session: Session::with_channel(Arc::new(config), greeting, channel, start),
            handler: store.handler(),
            store,
            now: start,
            sent: Vec::new(),
            events: Vec::new(),
            peak_output: 0,
            peak_input: 0,
            auto_answer: true,
            body: None,
            wait: None,
            start,
        };
        h.run();
        h
    }

    /// Time elapsed on the fake clock since the session started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Feeds peer bytes as one read, then runs. Input the session does not
    /// want yet is fed once it does (the harness plays a patient socket).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if !self.session.wants_input() {
                if self.session.is_closed() || !self.progress_without_input() {
                    return;
                }
                continue;
            }
            let n = bytes.len().min(HARNESS_READ);
            self.session
                .handle_input(self.now, &bytes[..n])
                .expect("input wanted");
            self.peak_input = self.peak_input.max(self.session.input_buffered());
            bytes = &bytes[n..];
            self.run();
        }
    }

    /// Feeds a command line plus CRLF.
    pub fn command(&mut self, line: &str) {
        self.feed(format!("{line}\r\n").as_bytes());
    }

    /// The peer closes the connection.
    pub fn eof(&mut self) {
        self.session.handle_eof(self.now);
        self.run();
    }

    /// Moves the clock forward and fires due timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.run();
    }

    /// Moves the clock to the session's next deadline, if any, and fires it.
    pub fn advance_to_deadline(&mut self) -> bool {
        match self.deadline() {
            Some(at) => {
                self.now = self.now.max(at);
                self.session.handle_timeout(self.now);
                self.run();
                true
            }
            None => false,
        }
    }

    /// The deadline of the session's last [`Output::Wait`], if it is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.wait.and_then(|w| w.deadline)
    }

    /// The session's last [`Output::Wait`], if it is waiting.
    pub fn wait(&self) -> Option<Wait> {
        self.wait
    }

    /// Takes what was sent since the last call, as text (lossy).
    pub fn take_sent(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.sent)).into_owned()
    }

    /// Plays the driver until the session needs the peer or the clock.
    pub fn run(&mut self) {
        self.wait = None;
        loop {
            self.peak_output = self.peak_output.max(self.session.output_buffered());
            match self.session.poll_output(self.now) {
                Output::Transmit(t) => {
                    self.sent.extend_from_slice(&t.to_vec());
                    self.session
                        .handle_written(self.now, t)
                        .expect("a transmit was out");
                }
                Output::Event(event) => {
                    if event != Event::NeedBody {
                        self.events.push(event.clone());
                    }
                    if self.auto_answer {
                        self.answer(event);
                    } else if event == Event::NeedBody {
                        return;
                    }
                }
                Output::Wait(w) => {
                    self.wait = Some(w);
                    return;
                }
            }
        }
    }

    /// Polls once and answers nothing: a transmit is recorded in
    /// [`Harness::sent`] and given back at once (the peer reads instantly);
    /// an event other than `NeedBody` is recorded in [`Harness::events`];
    /// a wait is what [`Harness::wait`] returns afterwards.
    pub fn step(&mut self) -> Step {
        self.peak_output = self.peak_output.max(self.session.output_buffered());
        match self.session.poll_output(self.now) {
            Output::Transmit(t) => {
                let bytes = t.to_vec();
                self.sent.extend_from_slice(&bytes);
                self.session
                    .handle_written(self.now, t)
                    .expect("a transmit was out");
                Step::Bytes(String::from_utf8_lossy(&bytes).into_owned())
            }
            Output::Event(event) => {
                self.wait = None;
                if event != Event::NeedBody {
                    self.events.push(event.clone());
                }
                Step::Event(event)
            }
            Output::Wait(w) => {
                self.wait = Some(w);
                Step::Wait(w)
            }
        }
    }

    /// [`Harness::step`] until a `Wait` or a `NeedBody` (which would repeat),
    /// that one included: the outputs in order. Nothing is answered.
    pub fn steps(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        loop {
            let step = self.step();
            let last = matches!(step, Step::Wait(_) | Step::Event(Event::NeedBody));
            steps.push(step);
            if last {
                return steps;
            }
        }
    }

    /// If the session is blocked only on the auth delay, fire it.
    fn progress_without_input(&mut self) -> bool {
        let before = self.now;
        self.advance_to_deadline() && self.now != before
    }

    /// Answers `event` the way [`Harness::run`] does: requests from the
    /// store (with its injected faults), `NeedBody` with the next chunk,
    /// `StartTls` with an established handshake, `Unlock` in the store. A
    /// call that hangs ([`Fault::Hang`]) is left unanswered.
    ///
    /// # Panics
    /// If the session refuses the answer (the event was not the current one),
    /// or at an injected [`Fault::Panic`].
    pub fn answer(&mut self, event: Event) {
        self.try_answer(event)
            .expect("the harness answers only what was asked");
    }

    /// Like [`Harness::answer`], but an answer the session refuses (the
    /// event is not the one it waits for) comes back as its usage error,
    /// leaving the harness as it was: a lock taken for a refused grant is
    /// given back, a body opened for a refused `begin_body` is dropped.
    ///
    /// # Panics
    /// At an injected [`Fault::Panic`].
    pub fn try_answer(&mut self, event: Event) -> Result<(), UsageError> {
        let now = self.now;
        let s = &mut self.session;
        let h = &mut self.handler;
        let result = match event {
            Event::Request(Request::Authenticate { user, credential }) => {
                settle(s, now, h.try_authenticate(&user, &credential), |s, ()| {
                    s.accept_login(now)
                })
            }
            Event::Request(Request::ScramCredentials { user }) => {
                settle(s, now, h.try_scram_credentials(&user), |s, keys| {
                    s.scram_credentials(now, keys, HARNESS_SCRAM_NONCE)
                })
            }
            Event::Request(Request::Lock { user }) => {
                let locked = h.try_lock(&user);
                let granted = locked.is_ok();
                let result = settle(s, now, locked, |s, drop| s.grant_maildrop(now, drop));
                if granted && result.is_err() {
                    h.release();
                }
                result
            }
            Event::Request(Request::Retrieve { message, .. }) => {
                let body = &mut self.body;
                settle(s, now, h.try_open(&message), |s, opened| {
                    s.begin_body(now)?;
                    *body = Some(opened);
                    Ok(())
                })
            }
            Event::NeedBody => {
                let Some(open) = self.body.as_mut() else {
                    return Err(UsageError::NotSendingBody);
                };
                let chunk = open.try_next_chunk();
                let body = &mut self.body;
                settle(s, now, chunk, |s, chunk| match chunk {
                    None => {
                        *body = None;
                        s.end_body(now)
                    }
                    Some(piece) => {
                        if s.push_body(now, piece)? == BodyProgress::Complete {
                            *body = None;
                        }
                        Ok(())
                    }
                })
            }
            Event::Request(Request::Commit { deleted }) => {
                settle(s, now, h.try_commit(&deleted), |s, ()| s.commit_done(now))
            }
            Event::StartTls => s.handle_tls_established(now),
            Event::Unlock => {
                h.release();
                Ok(())
            }
            Event::Closed(_) => Ok(()),
        };
        result
    }
}

/// Answers the session with a store call's outcome: `ok` on success, the
/// refusal or the failure otherwise, nothing for a hang.
fn settle<T>(
    session: &mut Session,
    now: Instant,
    outcome: Result<T, StoreError>,
    ok: impl FnOnce(&mut Session, T) -> Result<(), UsageError>,
) -> Result<(), UsageError> {
    match outcome {
        Ok(value) => ok(session, value),
        Err(StoreError::Refused(refusal)) => session.refuse(now, refusal),
        Err(StoreError::Internal(_)) => session.fail(now),
        Err(StoreError::Hang) => Ok(()),
    }
}
