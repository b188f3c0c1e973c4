//! The POP3 session: the AUTHORIZATION → TRANSACTION → UPDATE state machine
//! (RFC 1939 §3), driven by input bytes, time and the handler's answers.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::apop::{ApopCredential, ApopTimestamp, Greeting};
use crate::body::{BodyEncoder, BodyProgress};
use crate::capa::{write_capabilities, CapaContext};
use crate::command::{self, Command};
use crate::config::Config;
use crate::error::UsageError;
use crate::event::{CloseReason, Credential, Event, Request};
use crate::line::{Line, LineReader};
use crate::maildrop::{Lookup, Maildrop, Marked};
use crate::outbound::Outbound;
use crate::reply::{self, Refusal, ResponseCode};
use crate::timer::{Timer, TimerTable};

/// Where a session is in RFC 1939's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before a successful login.
    Authorization,
    /// Logged in, maildrop locked.
    Transaction,
    /// QUIT was received in TRANSACTION; deletions are being committed.
    Update,
    /// The session is over.
    Closed,
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Complete command lines read.
    pub commands: u64,
    /// Commands answered with `-ERR` for syntax or state.
    pub bad_commands: u64,
    /// Octets handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// RETR and TOP bodies started.
    pub bodies_sent: u64,
    /// Input octets thrown away at STLS (sent after the STLS line, before TLS).
    pub discarded_at_stls: u64,
}

/// The request the session waits on, with what it needs to go on.
#[derive(Debug)]
enum Pending {
    Authenticate { user: String },
    Lock { user: String },
    Retrieve { size: u64, top: Option<u64> },
    Commit,
}

/// A multi-line LIST or UIDL answer being produced.
#[derive(Debug)]
struct Listing {
    uids: bool,
    next: u32,
}

/// What the session is waiting for.
#[derive(Debug)]
enum Waiting {
    /// The next command line.
    Command,
    /// The handler's answer.
    Answer(Pending),
    /// Body chunks.
    Body(BodyEncoder),
    /// Output room, to write more of a listing.
    Listing(Listing),
    /// The end of the failed-login delay; then the held `-ERR` goes out.
    AuthDelay { refusal: Refusal, then_close: bool },
    /// The TLS handshake after STLS.
    Tls { announced: bool },
    /// All output to be taken, then the `Closed` event.
    Closing(CloseReason),
    /// Nothing: the session is over.
    Closed(CloseReason),
}

/// One POP3 server session: a sans-IO state machine.
///
/// It performs no IO, reads no clock and draws no random numbers: bytes,
/// time and the handler's answers come in as arguments, and bytes to send,
/// requests and deadlines come out. See the [crate docs](crate) for the
/// driving loop. The methods fall into four groups:
///
/// - **getters**: [`phase`](Self::phase), [`wants_input`](Self::wants_input),
///   [`is_tls`](Self::is_tls), [`is_closed`](Self::is_closed), [`user`](Self::user),
///   [`apop_timestamp`](Self::apop_timestamp), [`stats`](Self::stats);
/// - **input** from the world: [`handle_input`](Self::handle_input),
///   [`handle_eof`](Self::handle_eof), [`handle_timeout`](Self::handle_timeout),
///   [`handle_tls_established`](Self::handle_tls_established),
///   [`handle_shutdown`](Self::handle_shutdown);
/// - **answers** to the pending [`Request`]: [`accept_login`](Self::accept_login),
///   [`grant_maildrop`](Self::grant_maildrop), [`begin_body`](Self::begin_body),
///   [`push_body`](Self::push_body), [`end_body`](Self::end_body),
///   [`commit_done`](Self::commit_done), [`refuse`](Self::refuse),
///   [`fail`](Self::fail); an answer that does not fit returns a
///   [`UsageError`] and changes nothing;
/// - **output**: [`poll_transmit`](Self::poll_transmit),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// Every call that takes `now` expects times that do not go backwards; an
/// earlier time than one seen before is treated as that one.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    now: Instant,
    phase: Phase,
    waiting: Waiting,
    inbound: BytesMut,
    lines: LineReader,
    out: Outbound,
    /// The final reply to QUIT, sent once the `Unlock` event has been taken,
    /// so that a client reconnecting at once finds the maildrop free.
    after_unlock: Option<BytesMut>,
    events: VecDeque<Event>,
    timers: TimerTable,
    apop: Option<ApopTimestamp>,
    tls: bool,
    /// The name given by USER, waiting for PASS.
    user_name: Option<String>,
    /// The authenticated user.
    user: Option<String>,
    maildrop: Option<Marked>,
    locked: bool,
    bad_commands: u32,
    auth_failures: u32,
    /// The peer finished sending (read EOF): answer what is buffered, then close.
    input_closed: bool,
    /// The connection is gone: nothing can be sent; close as soon as no
    /// request is with the handler.
    lost: Option<CloseReason>,
    /// Last sign of life from the peer: a command, or output taken.
    last_progress: Instant,
    /// Output was handed out and the driver has not come back for more yet:
    /// it is being written, and that write needs a deadline.
    sending: bool,
    shutting_down: bool,
    stats: SessionStats,
}

impl Session {
    /// Starts a session for a new connection and queues the greeting.
    ///
    /// `greeting` supplies the per-connection values for the APOP timestamp
    /// (used only when the config offers APOP).
    pub fn new(config: Arc<Config>, greeting: Greeting, now: Instant) -> Self {
        let apop = config
            .apop
            .then(|| ApopTimestamp::new(greeting, &config.hostname));
        let mut session = Self {
            now,
            phase: Phase::Authorization,
            waiting: Waiting::Command,
            inbound: BytesMut::new(),
            lines: LineReader::default(),
            out: Outbound::default(),
            after_unlock: None,
            events: VecDeque::new(),
            timers: TimerTable::default(),
            apop,
            tls: false,
            user_name: None,
            user: None,
            maildrop: None,
            locked: false,
            bad_commands: 0,
            auth_failures: 0,
            input_closed: false,
            lost: None,
            last_progress: now,
            sending: false,
            shutting_down: false,
            stats: SessionStats::default(),
            config,
        };
        match &session.apop {
            // RFC 1939 §7: the timestamp goes in the greeting.
            Some(ts) => reply::ok(session.out.buf(), format_args!("POP3 server ready {ts}")),
            None => reply::ok(session.out.buf(), format_args!("POP3 server ready")),
        }
        session.sync_idle();
        session
    }

    /// A session that refuses the connection: it sends `-ERR [CODE] text`
    /// instead of a greeting and closes with [`CloseReason::Rejected`].
    ///
    /// For connections over a server's limit (`Refusal::sys_temp`) or refused
    /// by a connection hook. Drive it like any other session.
    pub fn reject(config: Arc<Config>, refusal: &Refusal, now: Instant) -> Self {
        let mut session = Self::new(
            config,
            Greeting {
                nonce: 0,
                unix_time: 0,
            },
            now,
        );
        session.out.clear();
        reply::refusal(session.out.buf(), refusal);
        session.close(CloseReason::Rejected);
        session
    }

    // ---- getters ----

    /// The RFC 1939 state.
    pub fn phase(&self) -> Phase {
        match self.waiting {
            Waiting::Closed(_) => Phase::Closed,
            _ => self.phase,
        }
    }

    /// True when the driver should read from the peer and call
    /// [`handle_input`](Self::handle_input). False while the input buffer is
    /// full (backpressure), during the TLS handshake, and once closing.
    pub fn wants_input(&self) -> bool {
        let open = matches!(
            self.waiting,
            Waiting::Command
                | Waiting::Answer(_)
                | Waiting::Body(_)
                | Waiting::Listing(_)
                | Waiting::AuthDelay { .. }
        );
        open && !self.input_closed
            && self.lost.is_none()
            && self.inbound.len() < self.config.input_buffer
    }

    /// True once TLS is active (after STLS and `handle_tls_established`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// True once the [`Event::Closed`] event has been returned.
    pub fn is_closed(&self) -> bool {
        matches!(self.waiting, Waiting::Closed(_))
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.waiting {
            Waiting::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// The authenticated user, once the credentials were accepted.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The APOP timestamp sent in the greeting, when APOP is offered.
    pub fn apop_timestamp(&self) -> Option<&ApopTimestamp> {
        self.apop.as_ref()
    }

    /// Counters for logs and metrics.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Octets of peer input buffered and not yet parsed.
    pub fn input_buffered(&self) -> usize {
        self.inbound.len()
    }

    /// Octets of output waiting to be taken by `poll_transmit`.
    pub fn output_buffered(&self) -> usize {
        self.out.len()
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- input ----

    /// Feeds bytes read from the peer.
    ///
    /// Call only while [`wants_input`](Self::wants_input) is true, with what
    /// one read returned. Commands are parsed and answered one at a time;
    /// pipelined bytes wait in the bounded input buffer.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), UsageError> {
        self.enter(now)?;
        if !self.wants_input() {
            return Err(UsageError::InputNotWanted);
        }
        self.inbound.extend_from_slice(bytes);
        self.advance();
        self.sync_idle();
        Ok(())
    }

    /// The peer finished sending (a read returned end of stream).
    ///
    /// Complete commands already buffered are still answered (a client may
    /// half-close after pipelining its last commands); then the session
    /// closes. Nothing is deleted unless QUIT was among them (RFC 1939 §6).
    pub fn handle_eof(&mut self, now: Instant) {
        if self.enter(now).is_err() || self.input_closed {
            return;
        }
        self.input_closed = true;
        match self.waiting {
            // Mid-handshake: the connection is of no more use.
            Waiting::Tls { announced: true } => self.lose(CloseReason::PeerClosed),
            // The +OK to STLS (and earlier replies) can still be sent.
            Waiting::Tls { announced: false } => self.close(CloseReason::PeerClosed),
            _ => {}
        }
        self.advance();
        self.sync_idle();
    }

    /// The connection is gone (reading or writing failed): nothing more can
    /// be sent. Nothing is deleted (RFC 1939 §6). If a request is with the
    /// handler, its answer is still taken, then the session closes.
    pub fn handle_connection_lost(&mut self, now: Instant) {
        if self.enter(now).is_err() {
            return;
        }
        self.lose(CloseReason::PeerClosed);
        self.sync_idle();
    }

    /// Fires the timers due at `now`. A call before any deadline does nothing.
    ///
    /// When the idle timer fires the session closes without a reply and
    /// without entering UPDATE (RFC 1939 §3).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.enter(now).is_err() {
            return;
        }
        if self.timers.expired(Timer::AuthDelay, now) {
            self.timers.stop(Timer::AuthDelay);
            let waiting = std::mem::replace(&mut self.waiting, Waiting::Command);
            match waiting {
                Waiting::AuthDelay {
                    refusal,
                    then_close,
                } => {
                    reply::refusal(self.out.buf(), &refusal);
                    if then_close {
                        self.close(CloseReason::TooManyAuthFailures);
                    } else {
                        self.resume();
                    }
                }
                other => self.waiting = other,
            }
        }
        if self.timers.expired(Timer::Idle, now) {
            // RFC 1939 §3: close "without removing any messages and without
            // sending any response". Also when the peer stopped reading.
            self.lose(CloseReason::IdleTimeout);
        }
        self.advance();
        self.sync_idle();
    }

    /// The TLS handshake that followed [`Event::StartTls`] succeeded.
    ///
    /// AUTHORIZATION starts over (RFC 2595 §4): the USER name and any
    /// half-read input are forgotten, and no new greeting is sent.
    pub fn handle_tls_established(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.waiting, Waiting::Tls { announced: true }) {
            return Err(UsageError::NoTlsNegotiation);
        }
        self.tls = true;
        self.user_name = None;
        self.inbound = BytesMut::new();
        self.lines.reset();
        self.resume();
        self.advance();
        self.sync_idle();
        Ok(())
    }

    /// The server is shutting down: close at the next command boundary.
    ///
    /// A session waiting for a command gets `-ERR [SYS/TEMP]` and closes now;
    /// one in the middle of a command (a login, a body, UPDATE) finishes it
    /// first. A shutdown never enters UPDATE by itself.
    pub fn handle_shutdown(&mut self, now: Instant) {
        if self.enter(now).is_err() {
            return;
        }
        self.shutting_down = true;
        self.advance();
        self.sync_idle();
    }

    // ---- answers ----

    /// Answers [`Request::Authenticate`]: the credentials are good.
    /// The session then asks for [`Request::Lock`].
    pub fn accept_login(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        let Waiting::Answer(Pending::Authenticate { user }) = &mut self.waiting else {
            return self.wrong_answer("Authenticate");
        };
        let user = std::mem::take(user);
        // Time with the handler does not count towards autologout.
        self.progress();
        self.auth_failures = 0;
        self.user = Some(user.clone());
        match self.lost {
            Some(reason) => self.close(reason),
            None => self.request(Pending::Lock { user: user.clone() }, Request::Lock { user }),
        }
        self.sync_idle();
        Ok(())
    }

    /// Answers [`Request::Lock`]: the maildrop is locked and described.
    /// The session enters TRANSACTION; from now on it owes one [`Event::Unlock`].
    pub fn grant_maildrop(&mut self, now: Instant, maildrop: Maildrop) -> Result<(), UsageError> {
        self.enter(now)?;
        let Waiting::Answer(Pending::Lock { user }) = &self.waiting else {
            return self.wrong_answer("Lock");
        };
        let marked = Marked::new(maildrop);
        let (count, size) = marked.live();
        reply::ok(
            self.out.buf(),
            format_args!("{user}'s maildrop has {count} messages ({size} octets)"),
        );
        self.maildrop = Some(marked);
        self.locked = true;
        self.phase = Phase::Transaction;
        self.resume();
        self.after_answer();
        Ok(())
    }

    /// Answers [`Request::Retrieve`]: the message is open; sends the `+OK`
    /// line. Then push chunks on each [`Event::NeedBody`].
    pub fn begin_body(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        let Waiting::Answer(Pending::Retrieve { size, top }) = self.waiting else {
            return self.wrong_answer("Retrieve");
        };
        match top {
            None => reply::ok(self.out.buf(), format_args!("{size} octets")),
            Some(_) => reply::ok(self.out.buf(), format_args!("top of message follows")),
        }
        self.stats.bodies_sent += 1;
        self.waiting = Waiting::Body(BodyEncoder::new(top));
        self.progress();
        self.after_answer();
        Ok(())
    }

    /// Sends the next chunk of the message body, dot-stuffed.
    ///
    /// Chunks may split lines, and a CRLF, anywhere. On
    /// [`BodyProgress::Complete`] the TOP cut-off was reached and the response
    /// is finished: stop reading the message and do not call `end_body`.
    pub fn push_body(&mut self, now: Instant, chunk: Bytes) -> Result<BodyProgress, UsageError> {
        self.enter(now)?;
        let Waiting::Body(encoder) = &mut self.waiting else {
            return Err(UsageError::NotSendingBody);
        };
        let progress = encoder.push(&chunk, &mut self.out);
        // Asked for only below the high-water mark: the peer is reading.
        self.progress();
        if progress == BodyProgress::Complete {
            self.resume();
            self.advance();
        }
        self.sync_idle();
        Ok(progress)
    }

    /// The message has no more bytes: ends the response with `.`.
    pub fn end_body(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        let Waiting::Body(encoder) = &mut self.waiting else {
            return Err(UsageError::NotSendingBody);
        };
        encoder.finish(&mut self.out);
        self.resume();
        self.advance();
        self.sync_idle();
        Ok(())
    }

    /// Answers [`Request::Commit`]: every marked message was removed.
    /// The session unlocks, says goodbye and closes.
    pub fn commit_done(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.waiting, Waiting::Answer(Pending::Commit)) {
            return self.wrong_answer("Commit");
        }
        self.progress();
        let left = self.maildrop.as_ref().map_or(0, |m| m.live().0);
        let mut farewell = BytesMut::new();
        let host = &self.config.hostname;
        if left == 0 {
            reply::ok(
                &mut farewell,
                format_args!("{host} POP3 server signing off (maildrop empty)"),
            );
        } else {
            reply::ok(
                &mut farewell,
                format_args!("{host} POP3 server signing off ({left} messages left)"),
            );
        }
        self.after_unlock = Some(farewell);
        self.close(CloseReason::Quit);
        self.sync_idle();
        Ok(())
    }

    /// Answers the pending request with a reportable refusal:
    /// `-ERR [CODE] text`, and the session goes on (popart's `ReportableError`).
    ///
    /// Defaults when the refusal has no code: `[AUTH]` for Authenticate,
    /// `[IN-USE]` for Lock, `[SYS/TEMP]` for Commit. A refused login (code
    /// `AUTH`) is held back for the configured delay and counts towards the
    /// failed-login limit. A refused Commit deletes nothing; the session
    /// answers `-ERR`, unlocks and closes (RFC 1939 §6).
    pub fn refuse(&mut self, now: Instant, refusal: Refusal) -> Result<(), UsageError> {
        self.enter(now)?;
        let Waiting::Answer(pending) = &self.waiting else {
            return self.wrong_answer("any");
        };
        self.last_progress = self.now;
        match pending {
            Pending::Authenticate { .. } => {
                let refusal = refusal.or_code(ResponseCode::Auth);
                if refusal.code() == Some(ResponseCode::Auth) {
                    self.auth_failures += 1;
                    let then_close = self.auth_failures >= self.config.max_auth_failures;
                    self.hold_auth_failure(refusal, then_close);
                } else {
                    // LOGIN-DELAY, SYS/*: not a wrong password; answer now.
                    reply::refusal(self.out.buf(), &refusal);
                    self.resume();
                }
            }
            Pending::Lock { .. } => {
                self.user = None;
                reply::refusal(self.out.buf(), &refusal.or_code(ResponseCode::InUse));
                self.resume();
            }
            Pending::Retrieve { .. } => {
                reply::refusal(self.out.buf(), &refusal);
                self.resume();
            }
            Pending::Commit => {
                // RFC 2449 §8 / RFC 1939 §6 wording for a failed UPDATE.
                let code = refusal.code().unwrap_or(ResponseCode::SysTemp);
                let mut farewell = BytesMut::new();
                reply::err(
                    &mut farewell,
                    Some(code),
                    format_args!("some deleted messages not removed"),
                );
                self.after_unlock = Some(farewell);
                self.close(CloseReason::UpdateFailed);
                self.sync_idle();
                return Ok(());
            }
        }
        self.after_answer();
        Ok(())
    }

    /// The handler failed internally (not the client's business): the
    /// session ends without deleting anything and unlocks a locked maildrop.
    ///
    /// Valid at any point before the session closes, with or without a
    /// pending request. Unless a body is half sent, the client is told
    /// `-ERR [SYS/TEMP]`; a half-sent body is cut off without its final `.`,
    /// so the client cannot take it for a whole message.
    pub fn fail(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if matches!(self.waiting, Waiting::Closing(_)) {
            return Ok(());
        }
        self.progress();
        // A half-sent multi-line response is cut off, not ended with -ERR.
        let mid_response = matches!(self.waiting, Waiting::Body(_) | Waiting::Listing(_));
        if !mid_response && self.lost.is_none() {
            reply::err(
                self.out.buf(),
                Some(ResponseCode::SysTemp),
                format_args!("internal server error, closing connection"),
            );
        }
        self.close(CloseReason::HandlerFailed);
        self.sync_idle();
        Ok(())
    }

    // ---- output ----

    /// The next bytes to send to the peer, or `None` when there are none.
    ///
    /// Call until it returns `None` after every input and answer, and write
    /// everything in order. Replies to pipelined commands that are ready
    /// together come out as one buffer.
    ///
    /// Write each buffer before asking for the next: [`poll_timeout`](Self::poll_timeout)
    /// is then the deadline for writing the buffer just returned. Taking
    /// output counts as progress of the peer (the previous write completed):
    /// the idle deadline moves, so a slow but steady reader of a long
    /// response is not cut off, while one that stops reading is.
    #[must_use = "the returned bytes must be written to the peer"]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.enter(now).is_err() {
            return None;
        }
        self.advance();
        let bytes = self.out.take();
        if let Some(b) = &bytes {
            self.stats.bytes_sent += b.len() as u64;
            self.progress();
        }
        self.sending = bytes.is_some();
        self.sync_idle();
        bytes
    }

    /// The next event for the driver, or `None`.
    ///
    /// After handling an event, call [`poll_transmit`](Self::poll_transmit)
    /// again before the next `poll_event`. [`Event::StartTls`] and
    /// [`Event::Closed`] come only once all output before them has been taken.
    #[must_use = "events must be handled"]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.next_event();
        self.sync_idle();
        event
    }

    fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            if event == Event::Unlock {
                if let Some(farewell) = self.after_unlock.take() {
                    self.out.put(&farewell);
                }
            }
            return Some(event);
        }
        match &mut self.waiting {
            Waiting::Body(_) if self.out.len() < self.config.output_high_water => {
                Some(Event::NeedBody)
            }
            Waiting::Tls { announced } if !*announced && self.out.is_empty() => {
                *announced = true;
                Some(Event::StartTls)
            }
            Waiting::Closing(reason) if self.out.is_empty() => {
                let reason = *reason;
                self.waiting = Waiting::Closed(reason);
                self.timers.stop_all();
                Some(Event::Closed(reason))
            }
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called,
    /// or `None` if no timer is armed. Use it as the deadline for the next
    /// read, write or TLS handshake: while output is waiting it is the
    /// deadline for the peer to take it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- internals ----

    fn enter(&mut self, now: Instant) -> Result<(), UsageError> {
        if self.is_closed() {
            return Err(UsageError::Closed);
        }
        self.now = self.now.max(now);
        Ok(())
    }

    fn wrong_answer(&self, expected: &'static str) -> Result<(), UsageError> {
        if matches!(self.waiting, Waiting::Closing(_)) {
            return Err(UsageError::Closed);
        }
        Err(UsageError::NoPendingRequest { expected })
    }

    /// The peer showed life: a command arrived, or it took output.
    fn progress(&mut self) {
        self.last_progress = self.now;
    }

    /// Arms the idle timer (RFC 1939 §3 autologout) whenever the session
    /// waits on the peer: for a command, or for it to take queued output.
    /// Time spent waiting on the handler does not count.
    fn sync_idle(&mut self) {
        let armed = self.lost.is_none()
            && match self.waiting {
                Waiting::Command | Waiting::Listing(_) | Waiting::Tls { .. } => true,
                // In Body with nothing to send, the handler is reading the message.
                Waiting::Body(_)
                | Waiting::Answer(_)
                | Waiting::AuthDelay { .. }
                | Waiting::Closing(_) => self.sending || !self.out.is_empty(),
                Waiting::Closed(_) => false,
            };
        if armed {
            self.timers
                .set(Timer::Idle, self.last_progress + self.config.idle_timeout);
        } else {
            self.timers.stop(Timer::Idle);
        }
    }

    /// Back to reading commands.
    fn resume(&mut self) {
        self.waiting = Waiting::Command;
        self.progress();
    }

    /// After an answer: a connection lost meanwhile ends the session now.
    fn after_answer(&mut self) {
        match self.lost {
            Some(reason) if !matches!(self.waiting, Waiting::Closing(_)) => self.close(reason),
            _ => self.advance(),
        }
        self.sync_idle();
    }

    /// The connection is unusable: drop all input and output; close as soon
    /// as no request is with the handler (its answer must still be taken, so
    /// that a lock it grants is released).
    fn lose(&mut self, reason: CloseReason) {
        if self.lost.is_some() || self.is_closed() {
            return;
        }
        self.lost = Some(reason);
        self.inbound = BytesMut::new();
        self.out.clear();
        self.after_unlock = None;
        if !matches!(self.waiting, Waiting::Answer(_) | Waiting::Closing(_)) {
            self.close(reason);
        }
    }

    fn request(&mut self, pending: Pending, request: Request) {
        self.waiting = Waiting::Answer(pending);
        self.events.push_back(Event::Request(request));
    }

    fn close(&mut self, reason: CloseReason) {
        if self.lost.is_some() {
            // No one to talk to.
            self.after_unlock = None;
            self.out.clear();
        }
        if self.locked {
            self.locked = false;
            self.events.push_back(Event::Unlock);
        }
        if !self.events.contains(&Event::Unlock) {
            if let Some(farewell) = self.after_unlock.take() {
                self.out.put(&farewell);
            }
        }
        self.timers.stop(Timer::AuthDelay);
        self.inbound = BytesMut::new();
        self.waiting = Waiting::Closing(reason);
    }

    fn hold_auth_failure(&mut self, refusal: Refusal, then_close: bool) {
        let delay = self.config.auth_failure_delay;
        if delay.is_zero() {
            reply::refusal(self.out.buf(), &refusal);
            if then_close {
                self.close(CloseReason::TooManyAuthFailures);
            } else {
                self.resume();
            }
            return;
        }
        self.timers.set(Timer::AuthDelay, self.now + delay);
        self.waiting = Waiting::AuthDelay {
            refusal,
            then_close,
        };
    }

    /// Does all the work possible without the peer or the handler: parses
    /// and answers buffered commands and writes listings, while the output
    /// is below the high-water mark.
    fn advance(&mut self) {
        loop {
            if self.out.len() >= self.config.output_high_water {
                break;
            }
            match &mut self.waiting {
                Waiting::Listing(listing) => {
                    let drop = self.maildrop.as_ref().expect("listing needs a maildrop");
                    if !write_listing(listing, drop, &mut self.out, self.config.output_high_water) {
                        break;
                    }
                    self.waiting = Waiting::Command;
                }
                Waiting::Command => {
                    if self.shutting_down {
                        reply::err(
                            self.out.buf(),
                            Some(ResponseCode::SysTemp),
                            format_args!("server shutting down"),
                        );
                        self.close(CloseReason::Shutdown);
                        break;
                    }
                    match self
                        .lines
                        .next_line(&mut self.inbound, self.config.max_line)
                    {
                        None => {
                            if self.input_closed {
                                // The peer sent its last complete command.
                                self.close(CloseReason::PeerClosed);
                            }
                            break;
                        }
                        Some(Line::TooLong) => {
                            self.stats.commands += 1;
                            self.progress();
                            self.bad_command(format_args!("line too long"));
                        }
                        Some(Line::Complete(line)) => {
                            self.stats.commands += 1;
                            self.progress();
                            match command::parse(&line) {
                                Ok(cmd) => self.execute(cmd),
                                Err(e) => self.bad_command(format_args!("{e}")),
                            }
                        }
                    }
                }
                _ => break,
            }
        }
        if self.inbound.is_empty() && self.inbound.capacity() > 0 {
            // An idle session keeps no input buffer.
            self.inbound = BytesMut::new();
        }
    }

    fn bad_command(&mut self, text: fmt::Arguments<'_>) {
        self.bad_commands += 1;
        self.stats.bad_commands += 1;
        if self.bad_commands >= self.config.max_bad_commands {
            reply::err(
                self.out.buf(),
                None,
                format_args!("too many bad commands, closing connection"),
            );
            self.close(CloseReason::TooManyBadCommands);
        } else {
            reply::err(self.out.buf(), None, text);
        }
    }

    fn ok(&mut self, text: fmt::Arguments<'_>) {
        reply::ok(self.out.buf(), text);
    }

    fn err(&mut self, text: fmt::Arguments<'_>) {
        reply::err(self.out.buf(), None, text);
    }

    fn execute(&mut self, cmd: Command) {
        let valid = match self.phase {
            Phase::Authorization => self.execute_authorization(cmd),
            Phase::Transaction => self.execute_transaction(cmd),
            // Commands are not read in UPDATE: the session closes after it.
            Phase::Update | Phase::Closed => true,
        };
        if valid {
            self.bad_commands = 0;
        }
    }

    /// RFC 1939 §4. Returns false for a command that counts as bad.
    fn execute_authorization(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::User(name) => {
                if !self.config.user_pass {
                    self.err(format_args!("USER/PASS not offered, use APOP"));
                } else {
                    self.user_name = Some(name);
                    self.ok(format_args!("send PASS"));
                }
            }
            Command::Pass(password) => {
                let Some(user) = self.user_name.take() else {
                    self.bad_command(format_args!("send USER first"));
                    return false;
                };
                self.request(
                    Pending::Authenticate { user: user.clone() },
                    Request::Authenticate {
                        user,
                        credential: Credential::Password(password),
                    },
                );
            }
            Command::Apop { user, digest } => {
                self.user_name = None;
                let Some(ts) = self.apop.clone() else {
                    self.err(format_args!("APOP not offered"));
                    return true;
                };
                self.request(
                    Pending::Authenticate { user: user.clone() },
                    Request::Authenticate {
                        user,
                        credential: Credential::Apop(ApopCredential::new(ts, digest)),
                    },
                );
            }
            Command::Quit => {
                let host = self.config.hostname.clone();
                self.ok(format_args!("{host} POP3 server signing off"));
                self.close(CloseReason::Quit);
            }
            Command::Capa => self.capa(),
            Command::Stls => {
                if !self.config.stls {
                    self.err(format_args!("STLS not offered"));
                } else if self.tls {
                    self.err(format_args!("TLS already active"));
                } else {
                    // RFC 2595 §4; the command-injection barrier: nothing
                    // sent after STLS and before TLS may be executed.
                    self.ok(format_args!("Begin TLS negotiation"));
                    self.stats.discarded_at_stls += self.inbound.len() as u64;
                    self.inbound = BytesMut::new();
                    self.lines.reset();
                    self.waiting = Waiting::Tls { announced: false };
                }
            }
            _ => {
                self.bad_command(format_args!("command not valid before login"));
                return false;
            }
        }
        true
    }

    /// RFC 1939 §5. Returns false for a command that counts as bad.
    fn execute_transaction(&mut self, cmd: Command) -> bool {
        let drop = self.maildrop.as_mut().expect("TRANSACTION has a maildrop");
        let out = self.out.buf();
        match cmd {
            Command::Stat => {
                let (count, size) = drop.live();
                reply::ok(out, format_args!("{count} {size}"));
            }
            Command::List(None) => {
                let (count, size) = drop.live();
                reply::ok(out, format_args!("{count} messages ({size} octets)"));
                self.waiting = Waiting::Listing(Listing {
                    uids: false,
                    next: 0,
                });
            }
            Command::List(Some(n)) => match drop.get(n) {
                Ok(m) => reply::ok(out, format_args!("{n} {}", m.size)),
                Err(e) => lookup_error(out, n, e),
            },
            Command::Uidl(None) => {
                reply::ok(out, format_args!("unique-id listing follows"));
                self.waiting = Waiting::Listing(Listing {
                    uids: true,
                    next: 0,
                });
            }
            Command::Uidl(Some(n)) => match drop.get(n) {
                Ok(m) => reply::ok(out, format_args!("{n} {}", m.uid)),
                Err(e) => lookup_error(out, n, e),
            },
            Command::Retr(n) | Command::Top(n, _) => {
                let top = match cmd {
                    Command::Top(_, k) => Some(k),
                    _ => None,
                };
                match drop.reference(n) {
                    Ok(message) => {
                        let size = message.size;
                        self.request(
                            Pending::Retrieve { size, top },
                            Request::Retrieve {
                                message,
                                top_lines: top,
                            },
                        );
                    }
                    Err(e) => lookup_error(out, n, e),
                }
            }
            Command::Dele(n) => match drop.delete(n) {
                Ok(()) => reply::ok(out, format_args!("message {n} deleted")),
                Err(e) => lookup_error(out, n, e),
            },
            Command::Noop => reply::ok(out, format_args!("")),
            Command::Rset => {
                drop.reset();
                let (count, size) = drop.live();
                reply::ok(
                    out,
                    format_args!("maildrop has {count} messages ({size} octets)"),
                );
            }
            Command::Quit => {
                // RFC 1939 §6: enter UPDATE and remove the marked messages.
                let deleted = drop.marked();
                self.phase = Phase::Update;
                self.request(Pending::Commit, Request::Commit { deleted });
            }
            Command::Capa => self.capa(),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Stls => {
                self.bad_command(format_args!("command not valid after login"));
                return false;
            }
        }
        true
    }

    fn capa(&mut self) {
        let out = self.out.buf();
        reply::ok(out, format_args!("capability list follows"));
        let ctx = CapaContext {
            maildrop: self.maildrop.as_ref().map(Marked::maildrop),
            tls: self.tls,
        };
        write_capabilities(out, &self.config, &ctx);
        out.extend_from_slice(b".\r\n");
    }
}

fn lookup_error(out: &mut BytesMut, n: u32, e: Lookup) {
    match e {
        Lookup::NoSuchMessage => reply::err(out, None, format_args!("no such message")),
        Lookup::Deleted => reply::err(out, None, format_args!("message {n} already deleted")),
    }
}

/// Writes listing lines until the output reaches `high_water`; true when
/// the listing, with its final `.`, is complete.
fn write_listing(
    listing: &mut Listing,
    drop: &Marked,
    out: &mut Outbound,
    high_water: usize,
) -> bool {
    while listing.next < drop.len() {
        if out.len() >= high_water {
            return false;
        }
        let index = listing.next;
        listing.next += 1;
        if let Some(m) = drop.live_at(index) {
            let buf = out.buf();
            let n = index + 1;
            // Writing into a BytesMut cannot fail.
            let _ = if listing.uids {
                write!(buf, "{n} {}\r\n", m.uid)
            } else {
                write!(buf, "{n} {}\r\n", m.size)
            };
        }
    }
    out.put(b".\r\n");
    true
}
