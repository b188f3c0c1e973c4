//! Deterministic tests of the drive procedure, through the blocking loop
//! (`pop3_driver::blocking::drive`) over a fake transport: a scripted peer
//! and a fake clock that moves only when the fake says so. No sockets, no
//! sleeps, no threads.
//!
//! The fake models `pop3-std`'s socket transport: a shutdown that begins
//! shuts the socket's read side (reads see end of stream); an abort shuts
//! both sides (reads see end of stream, writes fail).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pop3_driver::blocking::{drive, Transport};
use pop3_driver::memory::{Fault, FaultPoint, MemoryBody, MemoryHandler, MemoryStore};
use pop3_driver::proto::{
    CloseReason, Config, Credential, Greeting, Maildrop, MessageRef, Session,
};
use pop3_driver::{
    Handler, HandlerError, HandlerResult, Procedure, ReadOutcome, SessionEnd, Shutdown, Stage,
};

/// The default (RFC 1939) idle timeout.
const IDLE: Duration = Duration::from_secs(600);
/// No session here needs more IO calls than this; more means a loop.
const MAX_IO: usize = 100_000;
const LOGIN: &str = "USER alice\r\nPASS wonderland\r\n";
const SHUTTING_DOWN: &str = "-ERR [SYS/TEMP] server shutting down\r\n";
const INTERNAL: &str = "-ERR [SYS/TEMP] internal server error, closing connection\r\n";

/// What the peer does, in order.
#[derive(Debug)]
enum Peer {
    /// Sends these bytes (the server reads them in buffer-sized pieces).
    Send(Vec<u8>),
    /// Closes its sending side (half-close).
    Eof,
    /// Waits until the server has written this text.
    WaitFor(&'static str),
    /// Stops reading: the next write blocks. What follows in the script
    /// happens while that write is blocked.
    StopReading,
    /// The server's shutdown reaches this stage now.
    Shutdown(Stage),
}

fn send(text: &str) -> Peer {
    Peer::Send(text.as_bytes().to_vec())
}

/// One entry of the log shared by the transport and the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// The server wrote this, this long after the start.
    Wrote(Duration, String),
    /// The handler method of this name was called.
    Call(&'static str),
}

type Log = Arc<Mutex<Vec<Entry>>>;

/// A transport over a scripted peer and a fake clock.
struct Fake {
    start: Instant,
    now: Instant,
    script: VecDeque<Peer>,
    /// The peer reads what the server writes.
    reading: bool,
    /// Reads see end of stream (the peer half-closed or a shutdown shut the read side).
    read_closed: bool,
    /// An abort shut the socket: writes fail.
    aborted: bool,
    /// How much output there was when the abort came.
    aborted_at: Option<usize>,
    /// How long each completed write takes.
    write_cost: Duration,
    shutdown: Shutdown,
    written: String,
    log: Log,
    io_calls: usize,
}

impl Fake {
    fn new(script: Vec<Peer>) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            script: script.into(),
            reading: true,
            read_closed: false,
            aborted: false,
            aborted_at: None,
            write_cost: Duration::ZERO,
            shutdown: Shutdown::new(),
            written: String::new(),
            log: Log::default(),
            io_calls: 0,
        }
    }

    fn with_write_cost(mut self, cost: Duration) -> Self {
        self.write_cost = cost;
        self
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn count_io(&mut self) {
        self.io_calls += 1;
        assert!(self.io_calls < MAX_IO, "the drive loop does not end");
    }

    /// Performs the peer's actions up to the next bytes or end of stream
    /// (consumed by reads), an unmet `WaitFor`, or a `StopReading`.
    fn peer_acts(&mut self) {
        while let Some(action) = self.script.front() {
            match action {
                Peer::Send(_) | Peer::Eof => return,
                Peer::WaitFor(text) if !self.written.contains(text) => return,
                Peer::WaitFor(_) => {}
                Peer::StopReading => {
                    self.reading = false;
                    self.script.pop_front();
                    return;
                }
                Peer::Shutdown(stage) => self.raise(*stage),
            }
            self.script.pop_front();
        }
    }

    fn raise(&mut self, stage: Stage) {
        match stage {
            Stage::Begin => self.shutdown.begin(),
            Stage::Abort => self.shutdown.abort(),
            Stage::Cancel => self.shutdown.cancel(),
        }
        // pop3-std shuts the read side at begin, the whole socket at abort.
        self.read_closed = true;
        if stage >= Stage::Abort && !self.aborted {
            self.aborted = true;
            self.aborted_at = Some(self.written.len());
        }
    }

    fn record(&mut self, segments: &[Bytes]) {
        let text: String = segments
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect();
        self.written.push_str(&text);
        let entry = Entry::Wrote(self.elapsed(), text);
        self.log.lock().unwrap().push(entry);
    }

    /// The time (since the start) of the last completed write.
    fn last_write(&self) -> Duration {
        self.log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|e| match e {
                Entry::Wrote(at, _) => Some(*at),
                Entry::Call(_) => None,
            })
            .expect("something was written")
    }
}

impl Transport for Fake {
    fn now(&self) -> Instant {
        self.now
    }

    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        self.count_io();
        self.peer_acts();
        if self.read_closed {
            return Ok(ReadOutcome::Eof);
        }
        match self.script.front_mut() {
            Some(Peer::Send(bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                bytes.drain(..n);
                if bytes.is_empty() {
                    self.script.pop_front();
                }
                Ok(ReadOutcome::Data(n))
            }
            Some(Peer::Eof) => {
                self.script.pop_front();
                self.read_closed = true;
                Ok(ReadOutcome::Eof)
            }
            // Nothing comes: the read lasts until its deadline.
            _ => {
                let deadline = deadline.expect("a read that can never end");
                self.now = self.now.max(deadline);
                Ok(ReadOutcome::TimedOut)
            }
        }
    }

    fn write(&mut self, segments: &[Bytes], deadline: Option<Instant>) -> io::Result<()> {
        self.count_io();
        self.peer_acts();
        if !self.reading && !self.aborted {
            // Blocked: what the script says next happens meanwhile.
            self.peer_acts();
        }
        if self.aborted {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let done = self.now + self.write_cost;
        let late = deadline.is_some_and(|d| done > d);
        if !self.reading || late {
            let deadline = deadline.expect("a write that can never end");
            self.now = self.now.max(deadline);
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.now = done;
        self.record(segments);
        Ok(())
    }

    fn sleep_until(&mut self, until: Instant) {
        self.count_io();
        self.now = self.now.max(until);
    }
}

/// Drives one whole session over `fake` with `handler`.
fn serve<H: Handler>(fake: &mut Fake, config: Config, handler: &mut H) -> SessionEnd {
    let greeting = Greeting {
        nonce: 1,
        unix_time: 0,
    };
    let session = Session::new(Arc::new(config), greeting, fake.now);
    let procedure = Procedure::new(session, fake.shutdown.clone());
    drive(procedure, fake, handler)
}

fn config() -> Config {
    Config::builder().hostname("pop.test").build().unwrap()
}

/// alice/wonderland with these messages.
fn store_with(messages: &[Bytes]) -> MemoryStore {
    let store = MemoryStore::new();
    store.add_user("alice", "wonderland");
    for m in messages {
        store.deliver("alice", m.clone());
    }
    store
}

fn small_store() -> MemoryStore {
    store_with(&[
        Bytes::from_static(b"Subject: one\r\n\r\nfirst\r\n"),
        Bytes::from_static(b"Subject: two\r\n\r\nsecond\r\n"),
    ])
}

/// A message of at least `octets` octets, in CRLF lines (nothing to stuff).
fn big_message(octets: usize) -> Bytes {
    let line = b"All work and no play makes Jack a dull boy. 0123456789 abcdefghij\r\n";
    let mut body = Vec::with_capacity(octets + line.len());
    while body.len() < octets {
        body.extend_from_slice(line);
    }
    body.into()
}

/// The maildrop is free again, every lock was released once, and nothing was deleted.
fn assert_unlocked_intact(store: &MemoryStore, messages: usize) {
    assert!(!store.is_locked("alice"), "maildrop still locked");
    assert_eq!(store.locks(), store.unlocks(), "locks vs unlocks");
    assert_eq!(store.messages("alice").len(), messages, "messages deleted");
}

/// 1. A peer that stops reading in the middle of a big RETR is cut off at
///    the idle deadline of the blocked write.
#[test]
fn write_deadline_cuts_off_a_peer_that_stops_reading() {
    let store = store_with(&[big_message(4 << 20)]);
    let mut fake = Fake::new(vec![
        send(&format!("{LOGIN}RETR 1\r\n")),
        Peer::WaitFor(" octets\r\n"),
        Peer::StopReading,
    ]);
    let end = serve(&mut fake, config(), &mut store.handler());
    assert_eq!(end.reason, CloseReason::IdleTimeout);
    assert_eq!(fake.elapsed(), fake.last_write() + IDLE);
    assert!(fake.written.len() < 4 << 20, "the whole body went out");
    assert!(!fake.written.ends_with("\r\n.\r\n"));
    assert_unlocked_intact(&store, 1);
    assert_eq!(store.locks(), 1);
}

/// 2. A slow reader is not cut off: every write of a multi-MiB RETR
///    completes, each taking 5 of the 10 idle minutes.
#[test]
fn slow_reader_gets_the_whole_body() {
    let body = big_message(3 << 20);
    let store = store_with(std::slice::from_ref(&body));
    let mut fake = Fake::new(vec![send(&format!("{LOGIN}RETR 1\r\nQUIT\r\n"))])
        .with_write_cost(Duration::from_secs(300));
    let end = serve(&mut fake, config(), &mut store.handler());
    let text = std::str::from_utf8(&body).unwrap();
    let retr = format!("+OK {} octets\r\n{text}.\r\n", body.len());
    assert!(fake.written.contains(&retr), "the body was not sent whole");
    assert!(fake.written.ends_with("signing off (1 messages left)\r\n"));
    assert_eq!(end.reason, CloseReason::Quit);
    assert!(
        fake.elapsed() > Duration::from_secs(3600),
        "the writes were slow"
    );
    assert_unlocked_intact(&store, 1);
}

/// 3. A peer that sends its commands and half-closes gets every reply, and
///    its QUIT is carried out.
#[test]
fn half_closed_peer_gets_every_reply_and_its_quit() {
    let store = small_store();
    let mut fake = Fake::new(vec![
        send(&format!("{LOGIN}STAT\r\nDELE 1\r\nQUIT\r\n")),
        Peer::Eof,
    ]);
    let end = serve(&mut fake, config(), &mut store.handler());
    let lines: Vec<&str> = fake.written.split_terminator("\r\n").collect();
    assert_eq!(
        lines,
        [
            "+OK POP3 server ready",
            "+OK send PASS",
            "+OK alice's maildrop has 2 messages (47 octets)",
            "+OK 2 47",
            "+OK message 1 deleted",
            "+OK pop.test POP3 server signing off (1 messages left)",
        ]
    );
    assert_eq!(end.reason, CloseReason::Quit);
    assert_eq!(store.messages("alice").len(), 1, "UPDATE did not run");
    assert!(!store.is_locked("alice"));
}

/// 4. A body source that fails in the middle of a message: the body is cut
///    without its final `.`, `session_error` is called once, the maildrop
///    is unlocked.
#[test]
fn body_failure_mid_message_cuts_the_body() {
    let body = big_message(10_000);
    let store = store_with(&[body.clone(), Bytes::from_static(b"small\r\n")]);
    store.set_chunk_size(1000);
    store.inject(FaultPoint::MidBody, Fault::Internal);
    let mut fake = Fake::new(vec![send(&format!("{LOGIN}DELE 2\r\nRETR 1\r\n"))]);
    let end = serve(&mut fake, config(), &mut store.handler());
    assert_eq!(end.reason, CloseReason::HandlerFailed);
    // The end carries the cause, for the log line.
    let error = end.error.as_deref().unwrap_or("");
    assert!(error.contains("injected"), "{error:?}");
    let first = std::str::from_utf8(&body[..1000]).unwrap();
    let cut = format!("+OK {} octets\r\n{first}", body.len());
    assert!(
        fake.written.ends_with(&cut),
        "anything but the first chunk after the +OK: {:?}",
        &fake.written[fake.written.len().saturating_sub(200)..]
    );
    assert_eq!(store.body_bytes_pulled(), 1000);
    assert_eq!(store.session_errors(), 1);
    assert_eq!(store.locks(), 1);
    assert_unlocked_intact(&store, 2);
}

/// 5. A handler panic at each call ends the session as a handler failure;
///    a lock taken is released exactly once; nothing is deleted.
#[test]
fn handler_panic_at_each_point() {
    for (point, commands, locked) in [
        (FaultPoint::Authenticate, "QUIT\r\n", false),
        (FaultPoint::Lock, "QUIT\r\n", false),
        (FaultPoint::Open, "DELE 1\r\nRETR 2\r\nQUIT\r\n", true),
        (FaultPoint::Commit, "DELE 1\r\nQUIT\r\n", true),
    ] {
        let store = small_store();
        store.inject(point, Fault::Panic);
        let mut fake = Fake::new(vec![send(&format!("{LOGIN}{commands}"))]);
        let end = serve(&mut fake, config(), &mut store.handler());
        assert_eq!(end.reason, CloseReason::HandlerFailed, "{point:?}");
        assert!(
            fake.written.ends_with(INTERNAL),
            "{point:?}: {}",
            fake.written
        );
        assert_eq!(store.locks(), usize::from(locked), "{point:?}");
        assert_eq!(store.session_errors(), 1, "{point:?}");
        assert_unlocked_intact(&store, 2);
    }
}

/// 6a. A shutdown that begins while the session waits for a command in
///     TRANSACTION: `-ERR [SYS/TEMP]`, nothing deleted, unlocked.
#[test]
fn shutdown_begins_while_idle_in_transaction() {
    let store = small_store();
    let mut fake = Fake::new(vec![
        send(&format!("{LOGIN}DELE 1\r\n")),
        Peer::WaitFor("+OK message 1 deleted\r\n"),
        Peer::Shutdown(Stage::Begin),
    ]);
    let end = serve(&mut fake, config(), &mut store.handler());
    assert!(fake
        .written
        .ends_with(&format!("deleted\r\n{SHUTTING_DOWN}")));
    assert_eq!(end.reason, CloseReason::Shutdown);
    assert_eq!(fake.elapsed(), Duration::ZERO, "the session waited");
    assert_unlocked_intact(&store, 2);
}

/// 6b. A shutdown that begins while a RETR body is being sent: the body
///     completes first, then the `-ERR`.
#[test]
fn shutdown_begins_during_a_body() {
    let body = big_message(1 << 20);
    let store = store_with(std::slice::from_ref(&body));
    let mut fake = Fake::new(vec![
        send(&format!("{LOGIN}RETR 1\r\n")),
        Peer::WaitFor(" octets\r\n"),
        Peer::Shutdown(Stage::Begin),
    ]);
    let end = serve(&mut fake, config(), &mut store.handler());
    let text = std::str::from_utf8(&body).unwrap();
    let tail = format!("+OK {} octets\r\n{text}.\r\n{SHUTTING_DOWN}", body.len());
    assert!(fake.written.ends_with(&tail), "body cut or no -ERR");
    assert_eq!(end.reason, CloseReason::Shutdown);
    assert_unlocked_intact(&store, 1);
}

/// 6c. An abort (and a cancel, which a blocking loop treats the same)
///     while a write is blocked: the session ends without more output,
///     unlocked, nothing deleted, and without waiting for the write deadline.
#[test]
fn abort_while_a_write_is_blocked() {
    for stage in [Stage::Abort, Stage::Cancel] {
        let store = store_with(&[big_message(1 << 20)]);
        let mut fake = Fake::new(vec![
            send(&format!("{LOGIN}DELE 1\r\nRSET\r\nRETR 1\r\n")),
            Peer::WaitFor(" octets\r\n"),
            Peer::StopReading,
            Peer::Shutdown(stage),
        ]);
        let end = serve(&mut fake, config(), &mut store.handler());
        assert_eq!(
            fake.aborted_at,
            Some(fake.written.len()),
            "{stage:?}: output after the abort"
        );
        assert_eq!(
            end.reason,
            CloseReason::Shutdown,
            "{stage:?}: logged as a shutdown"
        );
        assert_eq!(
            fake.elapsed(),
            Duration::ZERO,
            "{stage:?}: waited for a deadline"
        );
        assert_unlocked_intact(&store, 1);
        assert_eq!(store.locks(), 1);
    }
}

/// A handler that logs each call, in the log the transport writes to.
struct Logged {
    inner: MemoryHandler,
    log: Log,
}

impl Logged {
    fn note(&self, call: &'static str) {
        self.log.lock().unwrap().push(Entry::Call(call));
    }
}

impl Handler for Logged {
    type Body = MemoryBody;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.note("authenticate");
        self.inner.authenticate(user, credential)
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.note("lock");
        Handler::lock(&mut self.inner, user)
    }

    fn open(&mut self, message: &MessageRef, top: Option<u64>) -> HandlerResult<MemoryBody> {
        self.note("open");
        Handler::open(&mut self.inner, message, top)
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.note("commit");
        Handler::commit(&mut self.inner, deleted)
    }

    fn unlock(&mut self) {
        self.note("unlock");
        Handler::unlock(&mut self.inner);
    }

    fn session_error(&mut self, error: &HandlerError) {
        self.note("session_error");
        Handler::session_error(&mut self.inner, error);
    }
}

/// 7. On QUIT the driver commits, then unlocks, then writes the farewell
///    `+OK` (RFC 1939 §6: the lock is released before the reply).
#[test]
fn quit_unlocks_before_the_farewell() {
    let store = small_store();
    let mut fake = Fake::new(vec![send(&format!("{LOGIN}DELE 2\r\nQUIT\r\n"))]);
    let mut handler = Logged {
        inner: store.handler(),
        log: fake.log.clone(),
    };
    let end = serve(&mut fake, config(), &mut handler);
    assert_eq!(end.reason, CloseReason::Quit);
    let log = fake.log.lock().unwrap().clone();
    let tail: Vec<String> = log[log.len() - 3..]
        .iter()
        .map(|e| match e {
            Entry::Call(call) => (*call).to_owned(),
            Entry::Wrote(_, text) => text.clone(),
        })
        .collect();
    assert_eq!(
        tail,
        [
            "commit",
            "unlock",
            "+OK pop.test POP3 server signing off (1 messages left)\r\n"
        ],
        "{log:?}"
    );
    assert_eq!(store.messages("alice").len(), 1);
}

/// The failed-login delay is a timer the loop sleeps through
/// (`Transport::sleep_until`): the `-ERR` goes out exactly that much later,
/// and the session goes on.
#[test]
fn failed_login_is_delayed_by_the_fake_clock() {
    let store = small_store();
    let mut fake = Fake::new(vec![
        send("USER alice\r\nPASS wrong\r\n"),
        Peer::WaitFor("-ERR"),
        send("QUIT\r\n"),
    ]);
    let end = serve(&mut fake, config(), &mut store.handler());
    let log = fake.log.lock().unwrap().clone();
    let refusal = log.iter().find_map(|e| match e {
        Entry::Wrote(at, text) if text.starts_with("-ERR") => Some((*at, text.clone())),
        _ => None,
    });
    assert_eq!(
        refusal,
        Some((
            Duration::from_secs(2),
            "-ERR [AUTH] invalid user name or password\r\n".to_owned()
        ))
    );
    assert_eq!(end.reason, CloseReason::Quit);
    assert_eq!(store.locks(), 0);
}

/// Found by the `procedure` fuzz target: the write of STLS's `+OK` times
/// out (the peer stopped reading). The session closes at the idle deadline
/// without asking for a TLS handshake (before the fix the drive procedure
/// was handed `StartTls` for a `+OK` never written, and its debug
/// assertion fired).
#[test]
fn stls_reply_write_timeout_closes_without_a_handshake() {
    let store = small_store();
    let mut fake = Fake::new(vec![
        Peer::WaitFor("ready"),
        Peer::StopReading,
        send("STLS\r\n"),
    ]);
    let config = Config::builder()
        .hostname("pop.test")
        .stls(true)
        .build()
        .unwrap();
    let end = serve(&mut fake, config, &mut store.handler());
    assert_eq!(end.reason, CloseReason::IdleTimeout);
    assert_eq!(end.tls_error, None);
    assert_eq!(fake.written, "+OK POP3 server ready\r\n");
    assert_unlocked_intact(&store, 2);
}

/// A store that answers `HandlerError::LoginDelay` at one call.
struct TooSoon {
    inner: MemoryHandler,
    at: &'static str,
}

impl Handler for TooSoon {
    type Body = MemoryBody;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.inner.authenticate(user, credential)
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        if self.at == "lock" {
            return Err(HandlerError::LoginDelay(Duration::from_millis(29_500)));
        }
        Handler::lock(&mut self.inner, user)
    }

    fn open(&mut self, message: &MessageRef, top: Option<u64>) -> HandlerResult<MemoryBody> {
        if self.at == "open" {
            return Err(HandlerError::LoginDelay(Duration::from_secs(1)));
        }
        Handler::open(&mut self.inner, message, top)
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        Handler::commit(&mut self.inner, deleted)
    }

    fn unlock(&mut self) {
        Handler::unlock(&mut self.inner);
    }
}

/// `HandlerError::LoginDelay` from `lock`: the core's `-ERR [LOGIN-DELAY]`
/// at once (not a failed login: no delay), no unlock owed, AUTHORIZATION
/// goes on. From a call where it means nothing (`open`), an internal error.
#[test]
fn login_delay_from_the_store_is_worded_by_the_core() {
    let store = small_store();
    let mut fake = Fake::new(vec![send(&format!("{LOGIN}QUIT\r\n"))]);
    let mut handler = TooSoon {
        inner: store.handler(),
        at: "lock",
    };
    let end = serve(&mut fake, config(), &mut handler);
    assert_eq!(
        fake.written,
        "+OK POP3 server ready\r\n+OK send PASS\r\n\
         -ERR [LOGIN-DELAY] logged in too recently, try again in 30 seconds\r\n\
         +OK pop.test POP3 server signing off\r\n"
    );
    assert_eq!(fake.elapsed(), Duration::ZERO);
    assert_eq!(end.reason, CloseReason::Quit);
    assert_eq!((store.locks(), store.unlocks()), (0, 0));

    let mut fake = Fake::new(vec![send(&format!("{LOGIN}RETR 1\r\n"))]);
    let mut handler = TooSoon {
        inner: store.handler(),
        at: "open",
    };
    let end = serve(&mut fake, config(), &mut handler);
    assert!(fake.written.ends_with(INTERNAL), "{}", fake.written);
    assert!(end
        .error
        .unwrap()
        .contains("LoginDelay answered to a call other than"));
    assert_unlocked_intact(&store, 2);
}
