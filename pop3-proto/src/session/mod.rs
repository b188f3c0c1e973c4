//! The POP3 session: the AUTHORIZATION → TRANSACTION → UPDATE state machine
//! (RFC 1939 §3), driven by input bytes, time and the handler's answers.
//!
//! This file holds what every phase shares: the session's data, input,
//! output and time. The phases' commands and answers live in
//! `authorization`, `transaction` and `update`.

mod authorization;
mod language;
mod sasl;
mod transaction;
mod update;

pub use authorization::LoginLimit;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::apop::{ApopTimestamp, Greeting};
use crate::body::BodyEncoder;
use crate::command::{self, Command};
use crate::config::Config;
use crate::error::UsageError;
use crate::event::{CloseReason, Event};
use crate::lang::{Text, Value};
use crate::line::{Line, LineReader};
use crate::maildrop::Marked;
use crate::note::{LoginAttempt, LoginMethod, LoginOutcome, Note, MAX_NOTES};
use crate::output::{Output, Queue, Transmit, Wait};
use crate::reply::{self, Refusal, ResponseCode};
use crate::sasl::{Exchange, Mechanism};

use self::transaction::Listing;

/// Replies that may wait for the peer before no more commands are
/// executed: enough for hundreds of pipelined replies in one write.
pub const REPLY_HIGH_WATER: usize = 8 * 1024;

/// What the driver knows of a connection when it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channel {
    /// TLS is active from the start (implicit TLS, RFC 8314).
    pub tls: bool,
    /// The peer is on this machine (loopback): the plaintext policy may
    /// allow passwords without TLS ([`PlaintextAuth`](crate::PlaintextAuth)).
    pub local: bool,
}

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
    /// Octets handed out in transmits.
    pub bytes_sent: u64,
    /// RETR and TOP bodies started.
    pub bodies_sent: u64,
    /// Input octets thrown away at STLS (sent after the STLS line, before TLS).
    pub discarded_at_stls: u64,
    /// Failed logins: wrong credentials, broken SASL exchanges and
    /// attempts refused by [`Session::limit_login`].
    pub failed_logins: u64,
}

/// The kind of request with the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A credential check; `Some` for one from a SASL exchange.
    Authenticate(Option<Mechanism>),
    /// SCRAM keys for the client's first message (held in `scram`).
    ScramCredentials,
    Lock,
    Retrieve {
        number: u32,
        top: Option<u64>,
    },
    Commit,
}

/// What the session is doing.
#[derive(Debug)]
enum State {
    /// Reading the next command (AUTHORIZATION or TRANSACTION, by whether
    /// the maildrop is held).
    Command,
    /// A request is with the handler.
    Pending(Pending),
    /// Sending a RETR or TOP body.
    Body(BodyEncoder),
    /// Writing a LIST or UIDL answer as output room allows.
    Listing(Listing),
    /// A refused login's `-ERR` is held until `until` (a tarpit).
    AuthDelay {
        until: Instant,
        refusal: Refusal,
        then_close: bool,
    },
    /// After STLS: `StartTls` is queued or the handshake is running.
    Tls,
    /// In a SASL exchange: a challenge is out, the client's response is next.
    Sasl(Mechanism, Exchange),
    /// A bearer token was refused and the error challenge is out: the
    /// client's (empty) response is next, then the held `-ERR`.
    SaslRefused(Refusal),
    /// Over: the `Closed` event is queued (or taken).
    Closed(CloseReason),
}

/// The connection, as far as the session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Open,
    /// The peer finished sending: answer what is buffered, then close.
    ReadClosed,
    /// Nothing can be sent any more.
    Lost(CloseReason),
}

/// Who is logging in.
#[derive(Debug, Default)]
enum Login {
    #[default]
    Anonymous,
    /// Named by USER (waiting for PASS) or by APOP (being checked).
    Named(String),
    /// The credentials were accepted.
    Authenticated(String),
}

/// One POP3 server session: a sans-IO state machine.
///
/// It performs no IO, reads no clock and draws no random numbers: bytes,
/// time and the handler's answers come in as arguments; everything the
/// driver must do comes out of [`poll_output`](Self::poll_output), in order.
/// See the [crate docs](crate) for the driving loop. The methods fall into
/// four groups:
///
/// - **getters**: [`phase`](Self::phase), [`wants_input`](Self::wants_input),
///   [`is_tls`](Self::is_tls), [`is_closed`](Self::is_closed), [`user`](Self::user),
///   [`apop_timestamp`](Self::apop_timestamp), [`stats`](Self::stats);
/// - **input** from the world: [`handle_input`](Self::handle_input),
///   [`handle_written`](Self::handle_written), [`handle_eof`](Self::handle_eof),
///   [`handle_connection_lost`](Self::handle_connection_lost),
///   [`handle_timeout`](Self::handle_timeout),
///   [`handle_tls_established`](Self::handle_tls_established),
///   [`handle_shutdown`](Self::handle_shutdown);
/// - **answers** to the pending [`Request`](crate::Request): [`accept_login`](Self::accept_login),
///   [`grant_maildrop`](Self::grant_maildrop), [`begin_body`](Self::begin_body),
///   [`push_body`](Self::push_body), [`end_body`](Self::end_body),
///   [`commit_done`](Self::commit_done), [`refuse`](Self::refuse),
///   [`refuse_login_delay`](Self::refuse_login_delay),
///   [`limit_login`](Self::limit_login), [`fail`](Self::fail); an answer that does not fit returns a
///   [`UsageError`] and changes nothing;
/// - **output**: [`poll_output`](Self::poll_output).
///
/// Every call that takes `now` expects times that do not go backwards; an
/// earlier time than one seen before is treated as that one.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    now: Instant,
    state: State,
    link: Link,
    /// The locked maildrop with its marks. Held means an `Unlock` is owed:
    /// it is only ever taken out by [`Self::release_maildrop`].
    maildrop: Option<Marked>,
    login: Login,
    /// Input that could not be acted on yet: a partial line, or pipelined
    /// commands behind one that waits.
    inbound: BytesMut,
    lines: LineReader,
    queue: Queue,
    apop: Option<ApopTimestamp>,
    tls: bool,
    /// The peer is local (see [`Channel::local`]).
    local: bool,
    /// When the credential check now with the handler was asked for: the
    /// failure delay runs from then, so the reply time does not show how
    /// long the check took (which would tell which users exist).
    check_started: Option<Instant>,
    /// Index of the response language in the config's languages.
    language: usize,
    /// RFC 6856 UTF-8 mode is on.
    utf8: bool,
    /// The client's first SCRAM message while its keys are looked up.
    scram: Option<Box<crate::scram::ClientFirst>>,
    shutting_down: bool,
    bad_commands: u32,
    auth_failures: u32,
    /// Last sign of life from the peer: a command, or a write completed.
    /// (Time with the handler is not the peer's: answers count too.)
    last_progress: Instant,
    stats: SessionStats,
    /// What happened since the driver last took the notes.
    notes: Vec<Note>,
    /// The login attempt under way: its method, and the user once named.
    attempt: Option<(LoginMethod, Option<String>)>,
}

impl Session {
    /// Starts a session for a new connection and queues the greeting.
    ///
    /// `greeting` supplies the per-connection values for the APOP timestamp
    /// (used only when the config offers APOP); it must differ for every
    /// connection (see [`Greeting`]).
    pub fn new(config: Arc<Config>, greeting: Greeting, now: Instant) -> Self {
        Self::with_channel(config, greeting, Channel::default(), now)
    }

    /// Like [`Session::new`], for a connection whose TLS is active from the
    /// start, or whose peer is local (see [`Channel`]).
    pub fn with_channel(
        config: Arc<Config>,
        greeting: Greeting,
        channel: Channel,
        now: Instant,
    ) -> Self {
        let apop = config
            .apop
            .then(|| ApopTimestamp::new(greeting, &config.hostname));
        let mut session = Self {
            now,
            state: State::Command,
            link: Link::Open,
            maildrop: None,
            login: Login::Anonymous,
            inbound: BytesMut::new(),
            lines: LineReader::default(),
            queue: Queue::default(),
            apop,
            tls: channel.tls,
            local: channel.local,
            scram: None,
            check_started: None,
            language: 0,
            utf8: false,
            shutting_down: false,
            bad_commands: 0,
            auth_failures: 0,
            last_progress: now,
            stats: SessionStats::default(),
            notes: Vec::new(),
            attempt: None,
            config,
        };
        let apop = session.apop.take();
        match &apop {
            // RFC 1939 §7: the timestamp goes in the greeting.
            Some(ts) => session.ok(Text::ReadyApop, [("timestamp", ts)]),
            None => session.ok(Text::Ready, []),
        }
        session.apop = apop;
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
        session.queue.clear();
        session.close_with(CloseReason::Rejected, |out| reply::refusal(out, refusal));
        session
    }

    // ---- getters ----

    /// The RFC 1939 state.
    pub fn phase(&self) -> Phase {
        match (&self.state, &self.login) {
            _ if self.is_closed() => Phase::Closed,
            (State::Pending(Pending::Commit), _) => Phase::Update,
            // QUIT after a login always went through UPDATE.
            (
                State::Closed(CloseReason::Quit | CloseReason::UpdateFailed),
                Login::Authenticated(_),
            ) => Phase::Update,
            _ if self.maildrop.is_some() => Phase::Transaction,
            _ => Phase::Authorization,
        }
    }

    /// True when the driver should read from the peer and call
    /// [`handle_input`](Self::handle_input). False while the input buffer is
    /// full (backpressure), during the TLS handshake, and once closing.
    pub fn wants_input(&self) -> bool {
        let reading = matches!(
            self.state,
            State::Command
                | State::Pending(_)
                | State::Body(_)
                | State::Listing(_)
                | State::AuthDelay { .. }
                | State::Sasl(..)
                | State::SaslRefused(_)
        );
        reading && self.link == Link::Open && self.inbound.len() < self.input_cap()
    }

    /// True once TLS is active (after STLS and `handle_tls_established`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// True once the [`Event::Closed`] event has been taken.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_)) && self.queue.is_empty()
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state {
            State::Closed(r) if self.queue.is_empty() => Some(r),
            _ => None,
        }
    }

    /// The authenticated user, once the credentials were accepted.
    pub fn user(&self) -> Option<&str> {
        match &self.login {
            Login::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    /// The APOP timestamp sent in the greeting, when APOP is offered.
    pub fn apop_timestamp(&self) -> Option<&ApopTimestamp> {
        self.apop.as_ref()
    }

    /// Counters for logs and metrics.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// What happened since the last call (commands run, login attempts
    /// ended), oldest first, for logs and metrics; up to [`MAX_NOTES`] are
    /// kept between calls. A driver that counts takes them after every call.
    pub fn take_notes(&mut self) -> std::vec::Drain<'_, Note> {
        self.notes.drain(..)
    }

    fn note(&mut self, note: Note) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        }
    }

    /// The login attempt under way ended so.
    fn attempt_ended(&mut self, outcome: LoginOutcome, user: Option<String>) {
        if let Some((method, named)) = self.attempt.take() {
            let user = user.or(named);
            self.note(Note::Login(LoginAttempt {
                method,
                user,
                outcome,
            }));
        }
    }

    /// Octets of peer input held and not yet acted on.
    pub fn input_buffered(&self) -> usize {
        self.inbound.len()
    }

    /// Octets of output waiting to be handed out.
    pub fn output_buffered(&self) -> usize {
        self.queue.bytes()
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- input ----

    /// Feeds bytes read from the peer.
    ///
    /// Call only while [`wants_input`](Self::wants_input) is true, with what
    /// one read returned. Complete command lines are framed in `bytes`
    /// itself and answered one at a time; only a partial line, and
    /// pipelined commands behind one that waits, are kept.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), UsageError> {
        self.enter(now)?;
        if !self.wants_input() {
            return Err(UsageError::InputNotWanted);
        }
        self.advance(bytes);
        Ok(())
    }

    /// The transmit from [`Output::Transmit`] has been written in full.
    ///
    /// Give back exactly the transmit last handed out; the session reuses
    /// its storage. Writing counts as the peer's progress: a slow but steady
    /// reader of a long response is never cut off by the idle timer.
    pub fn handle_written(&mut self, now: Instant, transmit: Transmit) -> Result<(), UsageError> {
        self.enter_even_closed(now);
        if !self.queue.in_flight() {
            return Err(UsageError::NothingInFlight);
        }
        self.stats.bytes_sent += transmit.len() as u64;
        self.queue.written(transmit);
        self.progress();
        self.advance(&[]);
        Ok(())
    }

    /// The peer finished sending (a read returned end of stream).
    ///
    /// Complete commands already received are still answered (a client may
    /// half-close after pipelining its last commands); then the session
    /// closes. Nothing is deleted unless QUIT was among them (RFC 1939 §6).
    pub fn handle_eof(&mut self, now: Instant) {
        if self.enter(now).is_err() || self.link != Link::Open {
            return;
        }
        self.link = Link::ReadClosed;
        if matches!(self.state, State::Tls) {
            if self.queue.remove_event(&Event::StartTls) {
                // The +OK to STLS (and earlier replies) can still be sent.
                self.close(CloseReason::PeerClosed);
            } else {
                // Mid-handshake: the connection is of no more use.
                self.lose(CloseReason::PeerClosed);
            }
        }
        self.advance(&[]);
    }

    /// The connection is gone (reading or writing failed): nothing more can
    /// be sent. Nothing is deleted (RFC 1939 §6). If a request is with the
    /// handler, its answer is still taken, then the session closes.
    pub fn handle_connection_lost(&mut self, now: Instant) {
        self.enter_even_closed(now);
        self.lose(CloseReason::PeerClosed);
    }

    /// The server drops the connection because its shutdown grace is over
    /// (or it was told to stop at once): like a lost connection, nothing
    /// more is sent and nothing is deleted, but it ends as
    /// [`CloseReason::Shutdown`].
    pub fn handle_abort(&mut self, now: Instant) {
        self.enter_even_closed(now);
        self.lose(CloseReason::Shutdown);
    }

    /// Fires what is due at `now`. A call before any deadline does nothing.
    ///
    /// When the idle deadline passes (no command, or a write not completed,
    /// for the idle timeout) the session closes without a reply and without
    /// entering UPDATE (RFC 1939 §3).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enter_even_closed(now);
        if let State::AuthDelay { until, .. } = self.state {
            if until <= self.now {
                self.end_auth_delay();
            }
        }
        if self.idle_deadline().is_some_and(|at| at <= self.now) {
            // RFC 1939 §3: close "without removing any messages and without
            // sending any response". Also when the peer stopped reading.
            self.lose(CloseReason::IdleTimeout);
        }
        self.advance(&[]);
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
        self.advance(&[]);
    }

    // ---- output ----

    /// What the driver must do next. Call it after every input and answer,
    /// and act on what it returns, in order, until it returns
    /// [`Output::Wait`].
    ///
    /// Write every [`Output::Transmit`] completely before polling again and
    /// give it back with [`handle_written`](Self::handle_written) (or report
    /// the failure with `handle_timeout` or `handle_connection_lost`). Until
    /// then the next output is a `Wait` for it. Events follow the bytes
    /// queued before them: `Unlock` comes before the QUIT reply, `StartTls`
    /// after its `+OK` is written, `Closed` last.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        self.enter_even_closed(now);
        if self.queue.in_flight() {
            return Output::Wait(Wait {
                read: false,
                deadline: self.deadline(),
            });
        }
        if let Some(event) = self.queue.take_event() {
            return Output::Event(event);
        }
        if self.filling_body() {
            // Fill the output up to the high-water mark before writing it.
            return Output::Event(Event::NeedBody);
        }
        if self.queue.data_first() {
            let transmit = self.queue.take_transmit(self.idle_deadline());
            return Output::Transmit(transmit);
        }
        Output::Wait(Wait {
            read: self.wants_input(),
            deadline: self.deadline(),
        })
    }

    /// The earliest time something is due: the held `-ERR` of a failed
    /// login, or the idle deadline.
    fn deadline(&self) -> Option<Instant> {
        let auth = match self.state {
            State::AuthDelay { until, .. } => Some(until),
            _ => None,
        };
        match (auth, self.idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while a body is being read from the handler to fill the output
    /// up to the high-water mark: the queued bytes are not handed out yet.
    fn filling_body(&self) -> bool {
        matches!(self.state, State::Body(_)) && self.queue.bytes() < self.config.output_high_water
    }

    /// RFC 1939 §3 autologout: armed while the session waits on the peer,
    /// for a command or to take output; time with the handler does not count
    /// (output held back while a body fills it is not the peer's to take).
    fn idle_deadline(&self) -> Option<Instant> {
        if matches!(self.link, Link::Lost(_)) || self.is_closed() {
            return None;
        }
        let on_peer = (!self.queue.is_empty() && !self.filling_body())
            || self.queue.in_flight()
            || matches!(
                self.state,
                State::Command
                    | State::Listing(_)
                    | State::Tls
                    | State::Sasl(..)
                    | State::SaslRefused(_)
            );
        on_peer.then(|| self.last_progress + self.config.idle_timeout)
    }

    // ---- shared internals ----

    fn enter(&mut self, now: Instant) -> Result<(), UsageError> {
        if matches!(self.state, State::Closed(_)) {
            return Err(UsageError::Closed);
        }
        self.now = self.now.max(now);
        Ok(())
    }

    /// Like `enter`, for calls that stay valid while the last output drains.
    fn enter_even_closed(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn wrong_answer(&self, expected: &'static str) -> Result<(), UsageError> {
        match self.state {
            State::Closed(_) => Err(UsageError::Closed),
            _ => Err(UsageError::NoPendingRequest { expected }),
        }
    }

    /// The peer showed life, or the handler answered.
    fn progress(&mut self) {
        self.last_progress = self.now;
    }

    /// Asks the handler.
    fn request(&mut self, pending: Pending, request: crate::event::Request) {
        if matches!(pending, Pending::Authenticate(_)) {
            self.check_started = Some(self.now);
        }
        self.state = State::Pending(pending);
        self.queue.push_event(Event::Request(request));
    }

    /// Back to reading commands.
    fn resume(&mut self) {
        self.state = State::Command;
        self.progress();
    }

    /// After an answer: a connection lost meanwhile ends the session now
    /// (and whatever the answer queued to send is dropped: there is no one
    /// to send it to); otherwise go on with buffered input.
    fn after_answer(&mut self) {
        self.progress();
        match self.link {
            Link::Lost(reason) if !matches!(self.state, State::Closed(_)) => {
                self.queue.drop_data();
                self.close(reason);
            }
            _ => self.advance(&[]),
        }
    }

    /// Gives up the maildrop: the `Unlock` event takes its place in the
    /// queue. Returns it for a last look (the farewell counts messages).
    fn release_maildrop(&mut self) -> Option<Marked> {
        let drop = self.maildrop.take();
        if drop.is_some() {
            self.queue.push_event(Event::Unlock);
        }
        drop
    }

    fn close(&mut self, reason: CloseReason) {
        self.close_with(reason, |_| {});
    }

    /// Ends the session: `Unlock` if a maildrop is held, then the last
    /// reply `farewell` writes, then `Closed`.
    fn close_with(&mut self, reason: CloseReason, farewell: impl FnOnce(&mut BytesMut)) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.release_maildrop();
        if !matches!(self.link, Link::Lost(_)) {
            self.queue.with_buf(farewell);
        }
        self.inbound = BytesMut::new();
        self.state = State::Closed(reason);
        self.queue.push_event(Event::Closed(reason));
    }

    /// The connection is unusable: drop all input and output; close as soon
    /// as no request is with the handler (its answer must still be taken, so
    /// that a lock it grants is released).
    fn lose(&mut self, reason: CloseReason) {
        if matches!(self.link, Link::Lost(_)) {
            return;
        }
        self.link = Link::Lost(reason);
        self.inbound = BytesMut::new();
        self.queue.drop_data();
        // A `StartTls` not taken yet follows a `+OK` that was never
        // written: no handshake on a dead connection.
        self.queue.remove_event(&Event::StartTls);
        if !matches!(self.state, State::Pending(_)) {
            self.close(reason);
        }
    }

    /// Does all the work possible without the peer or the handler: frames
    /// and answers commands (held ones first, then those in `fresh`) and
    /// writes listings, while the output is below the high-water mark.
    /// Whatever of `fresh` cannot be acted on yet is kept.
    fn advance(&mut self, mut fresh: &[u8]) {
        loop {
            if self.queue.bytes() >= self.config.output_high_water {
                break;
            }
            match &mut self.state {
                State::Listing(listing) => {
                    let drop = self.maildrop.as_ref().expect("a listing needs a maildrop");
                    if !listing.write(drop, &mut self.queue, self.config.output_high_water) {
                        break;
                    }
                    self.state = State::Command;
                }
                State::Command | State::Sasl(..) | State::SaslRefused(_) if self.shutting_down => {
                    let config = Arc::clone(&self.config);
                    let text = config.languages[self.language].render(Text::ShuttingDown, []);
                    self.close_with(CloseReason::Shutdown, |out| {
                        reply::err(out, Some(ResponseCode::SysTemp), format_args!("{text}"))
                    });
                    break;
                }
                State::Command | State::Sasl(..) | State::SaslRefused(_)
                    if self.queue.bytes()
                        >= REPLY_HIGH_WATER.min(self.config.output_high_water) =>
                {
                    // Replies wait for the peer: execute nothing more until it
                    // reads (a client that pipelines and never reads holds
                    // this much, not a body's high-water mark).
                    break;
                }
                State::Command | State::Sasl(..) | State::SaslRefused(_) => {
                    if !self.next_command(&mut fresh) {
                        if self.link == Link::ReadClosed && fresh.is_empty() {
                            // The peer sent its last complete command.
                            self.close(CloseReason::PeerClosed);
                        }
                        break;
                    }
                    if matches!(self.state, State::Tls) {
                        // RFC 2595 §4, the command-injection barrier: nothing
                        // sent after STLS and before TLS may be executed.
                        self.stats.discarded_at_stls += fresh.len() as u64;
                        fresh = &[];
                    }
                }
                _ => break,
            }
        }
        if !fresh.is_empty() && self.link == Link::Open && !matches!(self.state, State::Closed(_)) {
            self.inbound.extend_from_slice(fresh);
        }
        if self.inbound.is_empty() && self.inbound.capacity() > 0 {
            // An idle session keeps no input buffer.
            self.inbound = BytesMut::new();
        }
    }

    /// Frames and executes one command: from the held input, completed from
    /// `fresh` if need be, or else from `fresh` in place. False when no
    /// complete line is available.
    fn next_command(&mut self, fresh: &mut &[u8]) -> bool {
        let sasl = self.in_sasl();
        if self.inbound.is_empty() {
            let max = self.line_cap(fresh);
            let (used, line) = self.lines.frame(fresh, max);
            let line = line.map(|l| parse(l, sasl));
            *fresh = &fresh[used..];
            return match line {
                Some(parsed) => {
                    self.execute_line(parsed);
                    true
                }
                None => false,
            };
        }
        loop {
            let max = self.line_cap(&self.inbound);
            let (used, line) = self.lines.frame(&self.inbound, max);
            let line = line.map(|l| parse(l, sasl));
            let _ = self.inbound.split_to(used);
            if let Some(parsed) = line {
                self.execute_line(parsed);
                return true;
            }
            if fresh.is_empty() {
                return false;
            }
            // Complete the held partial line with fresh input up to its end.
            let take = memchr::memchr(b'\n', fresh).map_or(fresh.len(), |lf| lf + 1);
            self.inbound.extend_from_slice(&fresh[..take]);
            *fresh = &fresh[take..];
        }
    }

    /// True while the next line is a SASL response, not a command.
    fn in_sasl(&self) -> bool {
        matches!(self.state, State::Sasl(..) | State::SaslRefused(_))
    }

    /// The longest line allowed at the start of `input`: SASL lines (an
    /// `AUTH` command or a response) have their own, larger limit.
    fn line_cap(&self, input: &[u8]) -> usize {
        if self.in_sasl() || starts_auth(input) {
            self.config.max_sasl_line
        } else {
            self.config.max_line
        }
    }

    /// The most input held before reading stops: room for a whole SASL
    /// line while one is being read.
    fn input_cap(&self) -> usize {
        if self.in_sasl() || starts_auth(&self.inbound) {
            self.config.input_buffer.max(self.config.max_sasl_line)
        } else {
            self.config.input_buffer
        }
    }

    fn execute_line(&mut self, parsed: Parsed) {
        self.stats.commands += 1;
        self.progress();
        match &parsed {
            Parsed::Command(Ok(cmd)) => self.note(Note::Command(Some(cmd.name()))),
            Parsed::Command(Err(_)) | Parsed::TooLong if !self.in_sasl() => {
                self.note(Note::Command(None))
            }
            _ => {}
        }
        match parsed {
            Parsed::TooLong if self.in_sasl() => {
                self.state = State::Command;
                self.bad_command(Text::SaslLineTooLong, []);
            }
            Parsed::TooLong => self.bad_command(Text::LineTooLong, []),
            Parsed::Response(line) => self.sasl_response(line),
            Parsed::Command(Err(e)) => {
                let (text, what) = e.text();
                self.bad_command(text, [("what", &what)]);
            }
            Parsed::Command(Ok(cmd)) => {
                let valid = if self.maildrop.is_some() {
                    self.execute_transaction(cmd)
                } else {
                    self.execute_authorization(cmd)
                };
                if valid {
                    self.bad_commands = 0;
                }
            }
        }
    }

    fn bad_command<const N: usize>(&mut self, text: Text, values: [Value<'_>; N]) {
        self.bad_commands += 1;
        self.stats.bad_commands += 1;
        if self.bad_commands >= self.config.max_bad_commands {
            let config = Arc::clone(&self.config);
            let text = config.languages[self.language].render(Text::TooManyBadCommands, []);
            self.close_with(CloseReason::TooManyBadCommands, |out| {
                reply::err(out, None, format_args!("{text}"))
            });
        } else {
            self.err(text, values);
        }
    }

    fn ok<const N: usize>(&mut self, text: Text, values: [Value<'_>; N]) {
        let text = self.config.languages[self.language].render(text, values);
        self.queue
            .with_buf(|out| reply::ok(out, format_args!("{text}")));
    }

    fn err<const N: usize>(&mut self, text: Text, values: [Value<'_>; N]) {
        let text = self.config.languages[self.language].render(text, values);
        self.queue
            .with_buf(|out| reply::err(out, None, format_args!("{text}")));
    }

    /// A text in the session's language, as a string (for a [`Refusal`]).
    fn text_string(&self, text: Text) -> String {
        self.config.languages[self.language]
            .render(text, [])
            .to_string()
    }
}

/// A framed line, parsed.
enum Parsed {
    TooLong,
    Command(Result<Command, command::ParseError>),
    /// A SASL response line, as sent (base64 or `*`).
    Response(crate::secret::Secret<Vec<u8>>),
}

/// Parses a framed line (owning the result, so the input can move on).
fn parse(line: Line<'_>, sasl: bool) -> Parsed {
    match line {
        Line::TooLong => Parsed::TooLong,
        Line::Complete(l) if sasl => Parsed::Response(l.to_vec().into()),
        Line::Complete(l) => Parsed::Command(command::parse(l)),
    }
}

/// True if `input` starts with an `AUTH` command with an argument.
fn starts_auth(input: &[u8]) -> bool {
    input.len() > 5 && input[..5].eq_ignore_ascii_case(b"AUTH ")
}
