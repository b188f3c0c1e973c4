//! Test harness (feature `testing`): a fake clock, an in-memory maildrop
//! that answers every request, a `C:`/`S:` transcript runner, and the
//! invariant checks shared by the property tests and the fuzz targets.
//!
//! Nothing here is needed to run a server; it exists so that every protocol
//! rule can be checked in microseconds of simulated time.

mod invariants;
mod store;
mod transcript;

pub use invariants::{
    check_stuffed, check_top, expected_top, normalize_body, unstuff, InvariantError,
};
pub use store::{message_of_size, Fault, FaultKind, MemoryStore, StoredMessage};
pub use transcript::{
    body_script, escape_bytes, parse_script, run_transcript, ScriptStep, TranscriptError,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{Credential, Event, Request};
use crate::reply::Refusal;
use crate::{BodyProgress, Config, Greeting, Output, Session, Wait};

/// Dot-stuffs a body given in chunks, as RETR (`top == None`) or
/// `TOP n k` would send it, terminator included.
pub fn encode_body(chunks: &[&[u8]], top: Option<u64>) -> Vec<u8> {
    crate::body::encode_body(chunks, top)
}

/// True if `line` (without CRLF) parses as a command.
pub fn parses(line: &[u8]) -> bool {
    crate::command::parse(line).is_ok()
}

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
    /// The maildrop backing it.
    pub store: MemoryStore,
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
    body: Option<(Bytes, usize)>,
    wait: Option<Wait>,
    start: Instant,
}

impl Harness {
    /// A session with this config over `store`, greeting nonce 1896 and
    /// time 697170952 (RFC 1939's example timestamp).
    pub fn new(config: Config, store: MemoryStore) -> Self {
        let start = Instant::now();
        let greeting = Greeting {
            nonce: 1896,
            unix_time: 697_170_952,
        };
        let mut h = Self {
            session: Session::new(Arc::new(config), greeting, start),
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
            let n = bytes.len().min(4096);
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
    /// `StartTls` with an established handshake, `Unlock` in the store.
    ///
    /// # Panics
    /// If the session refuses the answer (the event was not the current one).
    pub fn answer(&mut self, event: Event) {
        let now = self.now;
        let s = &mut self.session;
        let result = match event {
            Event::Request(Request::Authenticate { user, credential }) => {
                let ok = match (&credential, self.store.password(&user)) {
                    (Credential::Password(p), Some(secret)) => p.expose() == secret.as_bytes(),
                    (Credential::Apop(c), Some(secret)) => c.verify(secret.as_bytes()),
                    _ => false,
                };
                match self.store.take_fault(Fault::Authenticate) {
                    Some(FaultKind::Refuse(r)) => s.refuse(now, r),
                    Some(FaultKind::Fail) => s.fail(now),
                    None if ok => s.accept_login(now),
                    None => s.refuse(now, Refusal::auth("invalid user name or password")),
                }
            }
            Event::Request(Request::Lock { user }) => match self.store.take_fault(Fault::Lock) {
                Some(FaultKind::Refuse(r)) => s.refuse(now, r),
                Some(FaultKind::Fail) => s.fail(now),
                None => match self.store.lock(&user) {
                    Some(drop) => s.grant_maildrop(now, drop),
                    None => s.refuse(now, Refusal::in_use("maildrop already locked")),
                },
            },
            Event::Request(Request::Retrieve { message, .. }) => {
                match self.store.take_fault(Fault::Retrieve) {
                    Some(FaultKind::Refuse(r)) => s.refuse(now, r),
                    Some(FaultKind::Fail) => s.fail(now),
                    None => {
                        let body = self.store.body(message.uid.as_str());
                        self.body = Some((Bytes::from(body), 0));
                        s.begin_body(now)
                    }
                }
            }
            Event::NeedBody => {
                let chunk = self.store.chunk_size.max(1);
                let (body, at) = self.body.as_mut().expect("a body is open");
                if *at >= body.len() {
                    self.body = None;
                    s.end_body(now)
                } else if self.store.take_fault(Fault::MidBody).is_some() {
                    s.fail(now)
                } else {
                    let end = (*at + chunk).min(body.len());
                    let piece = body.slice(*at..end);
                    *at = end;
                    match s.push_body(now, piece) {
                        Ok(BodyProgress::Complete) => {
                            self.body = None;
                            Ok(())
                        }
                        Ok(BodyProgress::More) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            }
            Event::Request(Request::Commit { deleted }) => {
                match self.store.take_fault(Fault::Commit) {
                    Some(FaultKind::Refuse(r)) => s.refuse(now, r),
                    Some(FaultKind::Fail) => s.fail(now),
                    None => {
                        self.store.remove(&deleted);
                        s.commit_done(now)
                    }
                }
            }
            Event::StartTls => s.handle_tls_established(now),
            Event::Unlock => {
                self.store.unlock();
                Ok(())
            }
            Event::Closed(_) => Ok(()),
        };
        result.expect("the harness answers only what was asked");
    }
}
