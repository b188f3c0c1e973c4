//! Property tests for the session's limits: bounded input and output
//! buffers whatever the peer sends and however slowly it reads, no panics on
//! arbitrary bytes, and the idle and failed-login timers on a fake clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pop3_proto::testing::{
    check_buffer_bounds, check_locks, escape_bytes, message_of_size, Harness, MemoryStore,
    ReplyChecker, Step, StoredMessage, HARNESS_READ,
};
use pop3_proto::{
    CloseReason, Config, Event, Greeting, Maildrop, MessageInfo, Output, Refusal, Request, Session,
    Transmit, Uid, UsageError, Wait,
};
use proptest::prelude::*;

const USER: &str = "alice";
const PASSWORD: &str = "secret";
const BIG: usize = 6000;

/// A large message (many chunks), one full of dots and bare LFs, a small one.
fn messages() -> Vec<StoredMessage> {
    vec![
        message_of_size("big", BIG),
        StoredMessage {
            uid: "dots".into(),
            body: b".\n..\n.\r\n\n\n.a\n".repeat(40),
        },
        message_of_size("small", 100),
    ]
}

fn store(chunk_size: usize) -> MemoryStore {
    let s = MemoryStore::new();
    s.add_user_with(USER, PASSWORD, messages());
    s.set_chunk_size(chunk_size);
    s
}

fn limits_config(input_buffer: usize, high_water: usize) -> Config {
    Config::builder()
        .input_buffer(input_buffer)
        .output_high_water(high_water)
        .max_bad_commands(1000)
        .auth_failure_delay(Duration::ZERO)
        .build()
        .unwrap()
}

/// One burst of peer bytes.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    let command = prop_oneof![
        Just(&b"RETR 1\r\n"[..]),
        Just(&b"RETR 2\r\n"[..]),
        Just(&b"TOP 1 3\r\n"[..]),
        Just(&b"LIST\r\n"[..]),
        Just(&b"UIDL\r\n"[..]),
        Just(&b"STAT\r\n"[..]),
        Just(&b"CAPA\r\n"[..]),
        Just(&b"NOOP\n"[..]),
        Just(&b"DELE 3\r\n"[..]),
        Just(&b"RSET\r\n"[..]),
    ];
    prop_oneof![
        // Arbitrary bytes.
        3 => prop::collection::vec(any::<u8>(), 0..600),
        // A huge line that never ends.
        1 => (1000usize..40_000, any::<u8>())
            .prop_map(|(n, b)| vec![if b == b'\n' { b'z' } else { b }; n]),
        // A flood of pipelined commands.
        3 => (prop::collection::vec(command, 1..8), 1usize..60).prop_map(|(cmds, times)| {
            let mut out = Vec::new();
            for _ in 0..times {
                for c in &cmds {
                    out.extend_from_slice(c);
                }
            }
            out
        }),
        1 => Just(format!("USER {USER}\r\nPASS {PASSWORD}\r\n").into_bytes()),
    ]
}

/// Peer input: often a login first, then bursts.
fn peer_input() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(segment(), 0..6),
    )
        .prop_map(|(login, segments)| {
            let mut out = Vec::new();
            if login {
                out.extend_from_slice(format!("USER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes());
            }
            for s in segments {
                out.extend(s);
            }
            out
        })
}

fn chunk_size() -> impl Strategy<Value = usize> {
    prop_oneof![1 => 1usize..8, 3 => 8usize..=256, 1 => Just(4096)]
}

fn high_water() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..64, 64usize..4096, Just(64 * 1024)]
}

fn input_buffer() -> impl Strategy<Value = usize> {
    prop_oneof![255usize..1024, Just(8 * 1024)]
}

/// A driver with a slow peer: it reads, polls output and completes writes
/// in an arbitrary order given by `schedule`. A transmit stays in flight
/// (unwritten) until a write step, so output piles up in the session as it
/// would behind a full socket.
struct SlowPeer {
    session: Session,
    now: Instant,
    input: Vec<u8>,
    at: usize,
    body: Option<(Bytes, usize)>,
    chunk: usize,
    /// A transmit being written.
    in_flight: Option<Transmit>,
    peak_input: usize,
    peak_output: usize,
    closed: bool,
}

impl SlowPeer {
    fn new(config: Config, input: Vec<u8>, chunk: usize) -> Self {
        let now = Instant::now();
        let session = Session::new(
            Arc::new(config),
            Greeting {
                nonce: 1,
                unix_time: 0,
            },
            now,
        );
        Self {
            session,
            now,
            input,
            at: 0,
            body: None,
            chunk,
            in_flight: None,
            peak_input: 0,
            peak_output: 0,
            closed: false,
        }
    }

    fn measure(&mut self) {
        self.peak_input = self.peak_input.max(self.session.input_buffered());
        self.peak_output = self.peak_output.max(self.session.output_buffered());
    }

    /// One read of at most `size` (and 4096) octets, if the session wants input.
    fn read(&mut self, size: usize) -> bool {
        if !self.session.wants_input() || self.at == self.input.len() {
            return false;
        }
        let n = size.clamp(1, 4096).min(self.input.len() - self.at);
        self.session
            .handle_input(self.now, &self.input[self.at..self.at + n])
            .expect("input wanted");
        self.at += n;
        true
    }

    /// Completes the write in flight, if any.
    fn write(&mut self) -> bool {
        match self.in_flight.take() {
            Some(t) => {
                self.session
                    .handle_written(self.now, t)
                    .expect("the transmit was out");
                true
            }
            None => false,
        }
    }

    /// Polls once (unless a write is in flight): starts writing a
    /// transmit, or answers an event. False on a wait.
    fn poll(&mut self) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        let event = match self.session.poll_output(self.now) {
            Output::Transmit(t) => {
                assert!(!t.is_empty());
                self.in_flight = Some(t);
                return true;
            }
            Output::Wait(_) => return false,
            Output::Event(event) => event,
        };
        let now = self.now;
        let s = &mut self.session;
        let result = match event {
            Event::Request(Request::Authenticate { .. }) => s.accept_login(now),
            Event::Request(Request::Lock { .. }) => {
                let listing = messages().into_iter().map(|m| MessageInfo {
                    size: pop3_proto::testing::normalize_body(&m.body).len() as u64,
                    uid: Uid::new(m.uid).unwrap(),
                });
                s.grant_maildrop(now, Maildrop::new(listing).unwrap())
            }
            Event::Request(Request::Retrieve { message, .. }) => {
                let body = messages()[message.number as usize - 1].body.clone();
                self.body = Some((Bytes::from(body), 0));
                s.begin_body(now)
            }
            Event::NeedBody => {
                let (body, at) = self.body.as_mut().expect("a body is open");
                if *at >= body.len() {
                    self.body = None;
                    s.end_body(now)
                } else {
                    let end = (*at + self.chunk).min(body.len());
                    let piece = body.slice(*at..end);
                    *at = end;
                    s.push_body(now, piece).map(|p| {
                        if p == pop3_proto::BodyProgress::Complete {
                            self.body = None;
                        }
                    })
                }
            }
            Event::Request(Request::Commit { .. }) => s.commit_done(now),
            Event::StartTls => unreachable!("STLS is not offered"),
            Event::Request(Request::ScramCredentials { .. }) => {
                unreachable!("SCRAM is not offered")
            }
            Event::Unlock => Ok(()),
            Event::Closed(_) => {
                self.closed = true;
                Ok(())
            }
        };
        result.expect("answers fit the request");
        true
    }

    /// Runs the schedule, then drains everything and hangs up.
    fn run(&mut self, schedule: &[(u8, u16)]) {
        let mut idle_rounds = 0;
        let mut i = 0;
        while !self.closed && idle_rounds < 2 * schedule.len().max(1) {
            let (what, size) = schedule[i % schedule.len()];
            i += 1;
            // Reads and polls are common, completing a write is rare.
            let progressed = match what % 8 {
                0..=2 => self.read(usize::from(size)),
                3 => self.write(),
                _ => self.poll(),
            };
            self.measure();
            idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
        }
        // A well-behaved driver from here on: write, handle events, then hang up.
        let mut rounds = 0;
        while !self.closed {
            rounds += 1;
            assert!(rounds < 1_000_000, "the session never closed");
            if self.write() || self.poll() {
                self.measure();
                continue;
            }
            if !self.read(4096) {
                self.session.handle_eof(self.now);
            }
            self.measure();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes the peer sends, the harness-driven session buffers at most the input buffer plus one read and at most the high-water mark plus two chunks plus a reply line of output.
    #[test]
    fn memory_is_bounded_with_the_harness(
        input in peer_input(),
        chunk in chunk_size(),
        high_water in high_water(),
        input_buffer in input_buffer(),
    ) {
        let config = limits_config(input_buffer, high_water);
        let mut h = Harness::new(config, store(chunk));
        h.feed(&input);
        h.eof();
        prop_assert!(h.session.is_closed());
        let bounds = check_buffer_bounds(
            h.session.config(),
            HARNESS_READ,
            chunk,
            h.peak_input,
            h.peak_output,
        );
        prop_assert!(bounds.is_ok(), "{}", bounds.unwrap_err());
        let locks = check_locks(&h.events, h.store.locks(), h.store.unlocks(), true);
        prop_assert!(locks.is_ok(), "{}", locks.unwrap_err());
    }

    /// With a peer that reads its replies slowly and floods commands meanwhile, the session's buffers stay within the same bounds.
    #[test]
    fn memory_is_bounded_with_a_slow_reader(
        input in peer_input(),
        chunk in chunk_size(),
        high_water in high_water(),
        input_buffer in input_buffer(),
        schedule in prop::collection::vec((any::<u8>(), 1u16..=4096), 1..40),
    ) {
        let config = limits_config(input_buffer, high_water);
        let mut peer = SlowPeer::new(config, input, chunk);
        peer.run(&schedule);
        prop_assert!(peer.session.is_closed());
        prop_assert!(
            peer.peak_input <= input_buffer + 4096,
            "peak input {} > {} + 4096",
            peer.peak_input,
            input_buffer
        );
        prop_assert!(
            peer.peak_output <= high_water + 2 * chunk + 1024,
            "peak output {} > {} + 2 * {} + 1024",
            peer.peak_output,
            high_water,
            chunk
        );
    }

    /// Arbitrary bytes, logged in or not, never make the session panic or stall.
    #[test]
    fn arbitrary_bytes_never_panic(
        login in any::<bool>(),
        input in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(1usize..300, 0..10),
    ) {
        let mut h = Harness::new(limits_config(8192, 1024), store(64));
        // The client's view of every read and reply (the fuzz targets' checks).
        let mut client = ReplyChecker::new();
        let mut seen = 0;
        let mut read = |h: &mut Harness, bytes: &[u8]| -> Result<(), TestCaseError> {
            for piece in bytes.chunks(HARNESS_READ) {
                client.client(piece);
                h.feed(piece);
                let sent = client.server(&h.sent[seen..]);
                seen = h.sent.len();
                prop_assert!(sent.is_ok(), "{}", sent.unwrap_err());
            }
            Ok(())
        };
        if login {
            read(&mut h, format!("USER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes())?;
        }
        let mut rest = &input[..];
        for n in cuts {
            let n = n.min(rest.len());
            read(&mut h, &rest[..n])?;
            rest = &rest[n..];
        }
        read(&mut h, rest)?;
        h.eof();
        let sent = client.server(&h.sent[seen..]);
        prop_assert!(sent.is_ok(), "{}", sent.unwrap_err());
        prop_assert!(h.session.is_closed());
        let end = client.finish(false);
        prop_assert!(end.is_ok(), "{}", end.unwrap_err());
        let locks = check_locks(&h.events, h.store.locks(), h.store.unlocks(), true);
        prop_assert!(locks.is_ok(), "{}", locks.unwrap_err());
        let commits = client.check_commits(&h.events);
        prop_assert!(commits.is_ok(), "{}", commits.unwrap_err());
        let stored = messages();
        let bodies: Vec<&[u8]> = stored.iter().map(|m| m.body.as_slice()).collect();
        let checked = client.check_bodies(&bodies);
        prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
    }
}

// ---- timers ----

/// Splits `total` into steps proportional to `weights` whose sum is below `total`.
fn steps_below(total: Duration, weights: &[u32]) -> Vec<Duration> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum::<u128>() + 1;
    weights
        .iter()
        .map(|&w| {
            let nanos = total.as_nanos() * u128::from(w) / sum;
            Duration::from_nanos(u64::try_from(nanos).unwrap())
        })
        .collect()
}

fn timer_config(idle: Duration, auth_delay: Duration, apop: bool) -> Config {
    Config::builder()
        .idle_timeout(idle)
        .allow_short_idle_timeout()
        .auth_failure_delay(auth_delay)
        .apop(apop)
        .build()
        .unwrap()
}

fn idle_timeout() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(pop3_proto::MIN_IDLE_TIMEOUT),
        (1u64..=7_200_000).prop_map(Duration::from_millis),
    ]
}

fn logged_in_harness(config: Config) -> Harness {
    let mut h = Harness::new(config, store(4096));
    h.command(&format!("USER {USER}"));
    h.command(&format!("PASS {PASSWORD}"));
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Advancing the clock in any steps that sum below the idle timeout never closes the session, and reaching the deadline closes it silently, without UPDATE.
    #[test]
    fn idle_timeout_fires_exactly_at_the_deadline(
        idle in idle_timeout(),
        login in any::<bool>(),
        rounds in prop::collection::vec(prop::collection::vec(1u32..1000, 0..12), 1..4),
    ) {
        let mut h = if login {
            logged_in_harness(timer_config(idle, Duration::from_secs(1), false))
        } else {
            Harness::new(timer_config(idle, Duration::from_secs(1), false), store(4096))
        };
        // Each round idles below the timeout, then a command re-arms the timer.
        let mut last_command = h.now;
        for (i, weights) in rounds.iter().enumerate() {
            if i > 0 {
                h.command("CAPA");
                last_command = h.now;
            }
            h.sent.clear();
            let events = h.events.len();
            for step in steps_below(idle, weights) {
                h.advance(step);
                prop_assert!(
                    !h.session.is_closed(),
                    "closed {:?} after the last command",
                    h.now - last_command
                );
                prop_assert!(h.sent.is_empty(), "sent {}", escape_bytes(&h.sent));
                prop_assert_eq!(h.events.len(), events);
            }
            prop_assert_eq!(h.deadline(), Some(last_command + idle));
        }
        let events = h.events.len();
        h.sent.clear();
        h.advance(last_command + idle - h.now);
        prop_assert!(h.session.is_closed());
        prop_assert_eq!(h.session.close_reason(), Some(CloseReason::IdleTimeout));
        prop_assert!(h.sent.is_empty(), "sent at timeout: {}", escape_bytes(&h.sent));
        let tail = &h.events[events..];
        let want: Vec<Event> = if login {
            vec![Event::Unlock, Event::Closed(CloseReason::IdleTimeout)]
        } else {
            vec![Event::Closed(CloseReason::IdleTimeout)]
        };
        prop_assert_eq!(tail, &want[..]);
        let committed = h
            .events
            .iter()
            .any(|e| matches!(e, Event::Request(Request::Commit { .. })));
        prop_assert!(!committed, "commit on timeout: {:?}", h.events);
        prop_assert!(h.store.commits().is_empty());
        prop_assert_eq!(h.store.messages(USER), &messages()[..]);
        prop_assert_eq!(h.store.locks(), h.store.unlocks());
        prop_assert_eq!(h.deadline(), None);
    }

    /// Calling handle_timeout before any deadline sends nothing and raises no event.
    #[test]
    fn early_timeout_is_a_noop(
        idle in idle_timeout(),
        state in 0u8..3,
        fraction in 0u32..1000,
    ) {
        let auth_delay = Duration::from_secs(5);
        let mut h = match state {
            0 => Harness::new(timer_config(idle, auth_delay, false), store(4096)),
            1 => logged_in_harness(timer_config(idle, auth_delay, false)),
            _ => {
                let mut h = Harness::new(timer_config(idle, auth_delay, false), store(4096));
                h.command(&format!("USER {USER}"));
                h.command("PASS wrong");
                h
            }
        };
        h.sent.clear();
        let before = h.wait().expect("the session waits");
        let deadline = before.deadline.expect("a timer is armed");
        let until = deadline - h.now;
        let early = h.now + until * fraction / 1000;
        prop_assume!(early < deadline);
        h.now = early;
        h.session.handle_timeout(early);
        // Nothing sent, no event, the same deadline.
        prop_assert_eq!(h.steps(), vec![Step::Wait(before)]);
        prop_assert!(!h.session.is_closed());
    }

    /// A refused login sends nothing until the auth-failure delay has passed, then exactly one `-ERR [AUTH]` line.
    #[test]
    fn failed_login_is_held_for_the_delay(
        delay_ms in 1u64..30_000,
        apop in any::<bool>(),
        weights in prop::collection::vec(1u32..1000, 0..10),
    ) {
        let delay = Duration::from_millis(delay_ms);
        let config = timer_config(pop3_proto::MIN_IDLE_TIMEOUT, delay, apop);
        let mut h = Harness::new(config, store(4096));
        h.sent.clear();
        if apop {
            h.command(&format!("APOP {USER} 00112233445566778899aabbccddeeff"));
        } else {
            h.command(&format!("USER {USER}"));
            h.sent.clear();
            h.command("PASS wrong");
        }
        let start = h.now;
        prop_assert!(h.sent.is_empty(), "sent at once: {}", escape_bytes(&h.sent));
        for step in steps_below(delay, &weights) {
            h.advance(step);
            prop_assert!(
                h.sent.is_empty(),
                "sent after {:?}: {}",
                h.now - start,
                escape_bytes(&h.sent)
            );
        }
        h.advance(start + delay - h.now);
        let sent = h.take_sent();
        prop_assert!(sent.starts_with("-ERR [AUTH] "), "sent {:?}", sent);
        prop_assert!(sent.ends_with("\r\n") && sent.matches('\n').count() == 1, "sent {:?}", sent);
        prop_assert!(!h.session.is_closed());
        prop_assert_eq!(h.store.locks(), 0);
        // The session reads commands again, with a fresh idle timer.
        prop_assert_eq!(h.deadline(), Some(h.now + pop3_proto::MIN_IDLE_TIMEOUT));
        h.command("CAPA");
        prop_assert!(h.take_sent().starts_with("+OK"));
    }
}

// ---- never stuck ----

/// A driver that does everything in an arbitrary order: reads, polls,
/// completes writes, answers requests late (or refuses, or fails them),
/// moves the clock, hangs up, loses the connection, shuts down. It checks
/// every output against the contract as it goes.
struct Juggler {
    session: Session,
    now: Instant,
    input: Vec<u8>,
    at: usize,
    chunk: usize,
    body: Option<(Bytes, usize)>,
    in_flight: Option<Transmit>,
    /// The transmit in flight may have been voided (timeout, lost link).
    void_flight: bool,
    /// A request or StartTls taken and not answered yet.
    outstanding: Option<Event>,
    /// The `Closed` event was taken.
    closed: bool,
    granted: u32,
    unlocks: u32,
}

/// `Wait { read: false, deadline: None }`.
const NOTHING: Wait = Wait {
    read: false,
    deadline: None,
};

impl Juggler {
    fn new(config: Config, input: Vec<u8>, chunk: usize) -> Self {
        let now = Instant::now();
        let greeting = Greeting {
            nonce: 7,
            unix_time: 0,
        };
        Self {
            session: Session::new(Arc::new(config), greeting, now),
            now,
            input,
            at: 0,
            chunk,
            body: None,
            in_flight: None,
            void_flight: false,
            outstanding: None,
            closed: false,
            granted: 0,
            unlocks: 0,
        }
    }

    fn read(&mut self, size: usize) -> bool {
        if !self.session.wants_input() || self.at == self.input.len() {
            return false;
        }
        let n = size.clamp(1, 4096).min(self.input.len() - self.at);
        self.session
            .handle_input(self.now, &self.input[self.at..self.at + n])
            .expect("input wanted");
        self.at += n;
        true
    }

    fn write(&mut self) -> bool {
        let Some(t) = self.in_flight.take() else {
            return false;
        };
        match self.session.handle_written(self.now, t) {
            Ok(()) => {}
            Err(UsageError::NothingInFlight) if self.void_flight => {}
            Err(e) => panic!("handle_written: {e}"),
        }
        self.void_flight = false;
        true
    }

    /// Polls once and checks the output against the contract. Returns the
    /// wait, if it was one.
    fn poll(&mut self) -> Result<Option<Wait>, TestCaseError> {
        let out = self.session.poll_output(self.now);
        if self.closed {
            // Closed is the last output ever.
            prop_assert!(
                matches!(out, Output::Wait(NOTHING)),
                "output after Closed: {:?}",
                out
            );
        }
        match out {
            Output::Transmit(t) => {
                prop_assert!(
                    self.in_flight.is_none(),
                    "a second transmit while one is out"
                );
                prop_assert!(
                    self.outstanding.is_none(),
                    "a transmit while {:?} is out",
                    self.outstanding
                );
                prop_assert!(!t.is_empty());
                prop_assert!(t.deadline().is_some(), "a write without a deadline");
                self.in_flight = Some(t);
                Ok(None)
            }
            Output::Event(Event::NeedBody) => {
                self.need_body();
                Ok(None)
            }
            Output::Event(Event::Closed(_)) => {
                // A handshake under way is abandoned (end of stream, timeout,
                // lost link); a request with the handler never is.
                if self.outstanding == Some(Event::StartTls) {
                    self.outstanding = None;
                }
                prop_assert!(
                    self.outstanding.is_none(),
                    "closed with {:?} out",
                    self.outstanding
                );
                prop_assert_eq!(self.unlocks, self.granted, "closed without an unlock");
                self.closed = true;
                Ok(None)
            }
            Output::Event(Event::Unlock) => {
                self.unlocks += 1;
                prop_assert!(self.unlocks <= self.granted, "unlock without a lock");
                Ok(None)
            }
            Output::Event(e) => {
                prop_assert!(
                    self.outstanding.is_none(),
                    "{:?} while {:?} is out",
                    e,
                    self.outstanding
                );
                self.outstanding = Some(e);
                Ok(None)
            }
            Output::Wait(w) => {
                if w.read {
                    prop_assert!(self.session.wants_input());
                }
                if w == NOTHING {
                    // Never stuck with nothing to do: either over, or
                    // waiting on the driver for an answer.
                    prop_assert!(
                        self.session.is_closed() || self.outstanding.is_some(),
                        "stuck: waiting for nothing, nothing outstanding (in flight: {})",
                        self.in_flight.is_some()
                    );
                }
                Ok(Some(w))
            }
        }
    }

    fn need_body(&mut self) {
        let now = self.now;
        let (body, at) = self.body.as_mut().expect("a body is open");
        let s = &mut self.session;
        if *at >= body.len() {
            self.body = None;
            s.end_body(now).unwrap();
        } else {
            let end = (*at + self.chunk).min(body.len());
            let piece = body.slice(*at..end);
            *at = end;
            if s.push_body(now, piece).unwrap() == pop3_proto::BodyProgress::Complete {
                self.body = None;
            }
        }
    }

    /// Answers what is outstanding; `how` picks accept, refuse or fail.
    fn answer(&mut self, how: u16) -> bool {
        let Some(event) = self.outstanding.take() else {
            return false;
        };
        let now = self.now;
        let s = &mut self.session;
        let fail = how % 13 == 0;
        let refuse = how % 4 == 1;
        let result = match event {
            _ if fail && event != Event::StartTls => s.fail(now),
            Event::Request(Request::Authenticate { .. }) if refuse => {
                s.refuse(now, Refusal::auth("no"))
            }
            Event::Request(Request::Authenticate { .. }) => s.accept_login(now),
            Event::Request(Request::Lock { .. }) if refuse => s.refuse(now, Refusal::new("busy")),
            Event::Request(Request::Lock { .. }) => {
                let listing = messages().into_iter().map(|m| MessageInfo {
                    size: pop3_proto::testing::normalize_body(&m.body).len() as u64,
                    uid: Uid::new(m.uid).unwrap(),
                });
                self.granted += 1;
                s.grant_maildrop(now, Maildrop::new(listing).unwrap())
            }
            Event::Request(Request::Retrieve { .. }) if refuse => {
                s.refuse(now, Refusal::sys_perm("gone"))
            }
            Event::Request(Request::Retrieve { message, .. }) => {
                let body = messages()[message.number as usize - 1].body.clone();
                self.body = Some((Bytes::from(body), 0));
                s.begin_body(now)
            }
            Event::Request(Request::Commit { .. }) if refuse => {
                s.refuse(now, Refusal::sys_temp("disk full"))
            }
            Event::Request(Request::Commit { .. }) => s.commit_done(now),
            Event::StartTls => match s.handle_tls_established(now) {
                // The peer hung up or the deadline passed during the handshake.
                Err(UsageError::Closed) => Ok(()),
                other => other,
            },
            other => unreachable!("{other:?} is never outstanding"),
        };
        result.expect("an answer to the outstanding request fits");
        true
    }

    fn timeout(&mut self, to: Instant) -> Result<(), TestCaseError> {
        self.now = self.now.max(to);
        self.void_flight |= self.in_flight.is_some();
        self.session.handle_timeout(self.now);
        // A deadline that passed has been acted on: none is due any more.
        loop {
            match self.poll()? {
                Some(w) => {
                    if let Some(d) = w.deadline {
                        prop_assert!(
                            d > self.now,
                            "deadline {:?} not after the timeout",
                            d - self.now
                        );
                    }
                    return Ok(());
                }
                None if self.in_flight.is_some() || self.outstanding.is_some() => return Ok(()),
                None => {}
            }
        }
    }

    fn run(&mut self, schedule: &[(u8, u16)]) -> Result<(), TestCaseError> {
        let mut last_wait: Option<Wait> = None;
        for &(what, size) in schedule.iter().cycle().take(schedule.len() * 20) {
            match what % 16 {
                0..=3 => {
                    self.read(usize::from(size));
                }
                4..=5 => {
                    self.write();
                }
                6..=9 => {
                    if let Some(w) = self.poll()? {
                        last_wait = Some(w);
                    }
                }
                10..=11 => {
                    self.answer(size);
                }
                12 => {
                    let to = match last_wait.and_then(|w| w.deadline) {
                        Some(d) if size % 2 == 0 => d,
                        _ => self.now + Duration::from_millis(u64::from(size)),
                    };
                    self.timeout(to)?;
                }
                13 if size % 8 == 0 => self.session.handle_eof(self.now),
                14 if size % 16 == 0 => self.session.handle_shutdown(self.now),
                15 if size % 32 == 0 => {
                    self.void_flight |= self.in_flight.is_some();
                    self.session.handle_connection_lost(self.now);
                }
                _ => {}
            }
        }
        // A well-behaved driver from here on, until the session closes.
        for _ in 0..1_000_000 {
            if self.closed {
                break;
            }
            if self.write() || self.answer(0) {
                continue;
            }
            match self.poll()? {
                None => {}
                Some(Wait { read: true, .. }) if !self.read(4096) => {
                    self.session.handle_eof(self.now);
                }
                Some(Wait { read: true, .. }) => {}
                Some(Wait {
                    deadline: Some(d), ..
                }) => self.timeout(d)?,
                Some(w) => {
                    return Err(TestCaseError::fail(format!(
                        "stuck at the end: {w:?}, closed: {}",
                        self.session.is_closed()
                    )))
                }
            }
        }
        prop_assert!(self.closed, "the session never closed");
        prop_assert!(self.session.is_closed());
        prop_assert_eq!(self.unlocks, self.granted);
        for _ in 0..3 {
            self.poll()?;
        }
        Ok(())
    }
}

fn juggler_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => segment(),
            1 => Just(b"STLS\r\n".to_vec()),
            1 => Just(b"QUIT\r\n".to_vec()),
            1 => Just(format!("USER {USER}\r\nPASS wrong\r\n").into_bytes()),
            2 => Just(format!("USER {USER}\r\nPASS {PASSWORD}\r\n").into_bytes()),
            1 => Just(b"DELE 1\r\nRETR 2\r\nTOP 1 2\r\n".to_vec()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the peer sends and whatever order the driver acts in, a Wait with neither read nor deadline means the session is closed or a request / StartTls is with the driver; nothing ever follows Closed; every lock is released.
    #[test]
    fn never_stuck_and_closed_is_last(
        input in juggler_input(),
        chunk in chunk_size(),
        high_water in high_water(),
        input_buffer in input_buffer(),
        auth_delay in prop_oneof![Just(Duration::ZERO), Just(Duration::from_secs(2))],
        max_bad in prop_oneof![Just(3u32), Just(1000)],
        schedule in prop::collection::vec((any::<u8>(), 0u16..=4096), 1..60),
    ) {
        let config = Config::builder()
            .stls(true)
            .input_buffer(input_buffer)
            .output_high_water(high_water)
            .max_bad_commands(max_bad)
            .auth_failure_delay(auth_delay)
            .build()
            .unwrap();
        let mut driver = Juggler::new(config, input, chunk);
        driver.run(&schedule)?;
    }
}
