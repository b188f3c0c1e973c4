//! The drive procedure: what to do next for one connection, decided once,
//! sans-IO, for every loop (blocking, async, tests).
//!
//! [`Procedure::next`] names one IO action ([`Step`]); the loop performs it
//! and reports the outcome with the matching method. The procedure turns
//! outcomes into session input, handler results into answers, watches the
//! shutdown stages, and keeps the open message body. A loop holds no state
//! and makes no decision of its own.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pop3_proto::{
    BodyProgress, CloseReason, Event, Maildrop, Note, Output, Phase, Refusal, Request,
    ScramCredentials, Session, Transmit, UsageError,
};

use crate::failures::{Attempt, FailedLogins};
use crate::handler::{HandlerError, HandlerResult};
use crate::observe::{Call, Observer};
use crate::service::ConnectionInfo;
use crate::shutdown::{Shutdown, Stage};
use crate::slots::{Slot, Tenant};
use crate::{ReadOutcome, SessionEnd};

/// One IO action for the loop to perform.
#[derive(Debug)]
#[must_use = "the loop must perform the step and report its outcome"]
pub enum Step<'a, B> {
    /// Write all of this (one vectored write per readiness), by
    /// `transmit.deadline()`; then report with [`Procedure::written`].
    Write(Transmit),
    /// Call the handler method for this request; report with
    /// [`Procedure::authenticated`], [`Procedure::locked`],
    /// [`Procedure::opened`] or [`Procedure::committed`].
    Call(Request),
    /// Pull the next chunk of the open message; report with [`Procedure::pulled`].
    Pull(&'a mut B),
    /// Run the TLS handshake as server, giving up at `deadline`; report with
    /// [`Procedure::tls_started`].
    StartTls {
        /// When to give up: the session's idle deadline, at most
        /// [`HANDSHAKE_TIMEOUT`](crate::tls::HANDSHAKE_TIMEOUT) away.
        deadline: Option<Instant>,
    },
    /// Call the handler's `unlock`; report with [`Procedure::unlocked`].
    Unlock,
    /// Call the handler's `session_error` hook with this; then ask for the next step.
    Report(HandlerError),
    /// Read from the peer until `deadline`, or until the shutdown reaches
    /// `wake_on` (then report [`Procedure::interrupted`]); report with
    /// [`Procedure::read`].
    Read {
        /// When to stop waiting.
        deadline: Option<Instant>,
        /// The shutdown stage that must cut the read short.
        wake_on: Stage,
    },
    /// Nothing to read: wait until `until`, or until the shutdown reaches
    /// `wake_on` (then report [`Procedure::interrupted`]); report with
    /// [`Procedure::woke`].
    Sleep {
        /// When to wake.
        until: Instant,
        /// The shutdown stage that must cut the sleep short.
        wake_on: Stage,
    },
    /// The session is over: close the connection.
    Done(SessionEnd),
}

/// One connection's drive state around its [`Session`].
#[derive(Debug)]
pub struct Procedure<B> {
    session: Session,
    shutdown: Shutdown,
    /// The message being sent, once the handler opened it.
    body: Option<B>,
    /// An internal error for the `session_error` hook.
    report: Option<HandlerError>,
    told_shutdown: bool,
    end: Option<SessionEnd>,
    /// Why the STLS handshake failed, for the session's end.
    tls_error: Option<String>,
    /// The internal error that ended the session, for its end.
    error: Option<String>,
    /// The connection's place under the service's limits, if it has one:
    /// told when the session waits for its client, completes a command and
    /// logs in; it may be evicted to make room (see [`crate::slots`]).
    slot: Option<Slot>,
    /// Commands the slot has heard of.
    commands: u64,
    logged_in: bool,
    /// The slot was evicted and the session closed for it.
    evicted: bool,
    /// Who hears what happens, and of which connection.
    observer: Option<(Arc<dyn Observer>, ConnectionInfo)>,
    /// The handler call under way, and when it was asked for.
    call: Option<(Call, Instant)>,
    /// The message being opened is for TOP.
    top: bool,
    /// The first bytes from a source not trusted to send a PROXY header,
    /// held until they tell whether they are one.
    sniff: Option<Vec<u8>>,
    /// Why the connection was closed for a PROXY header.
    proxy_error: Option<String>,
    /// The service's failed-login limits, with this connection's address.
    guard: Option<LoginGuard>,
}

/// The failed-login limits as one connection sees them.
#[derive(Debug)]
struct LoginGuard {
    failures: std::sync::Arc<FailedLogins>,
    ip: Option<std::net::IpAddr>,
    /// The user of the last login attempt, for the failure it may end in.
    user: Option<String>,
    /// The session's failed logins accounted for (recorded or refused here).
    seen: u64,
    /// The attempt being checked, counted against the address until the
    /// session notes how it ended.
    attempt: Option<Attempt>,
}

impl<B> Procedure<B> {
    /// Drives `session`, watching `shutdown`.
    pub fn new(session: Session, shutdown: Shutdown) -> Self {
        Self {
            session,
            shutdown,
            body: None,
            report: None,
            told_shutdown: false,
            end: None,
            tls_error: None,
            error: None,
            slot: None,
            commands: 0,
            logged_in: false,
            evicted: false,
            observer: None,
            call: None,
            top: false,
            sniff: None,
            proxy_error: None,
            guard: None,
        }
    }

    /// The same, telling `observer` what happens on the connection `info`.
    pub(crate) fn with_observer(
        mut self,
        observer: Arc<dyn Observer>,
        info: ConnectionInfo,
    ) -> Self {
        self.observer = Some((observer, info));
        self
    }

    /// The same, closing the connection if its first bytes are a PROXY
    /// header (its source is not trusted to send one).
    pub(crate) fn refusing_proxy_headers(mut self) -> Self {
        self.sniff = Some(Vec::new());
        self
    }

    /// Passes the session's notes to the observer; a login attempt that
    /// ended is no longer counted as being checked (its failure, if it
    /// was one, is recorded first).
    fn observe_notes(&mut self, now: Instant) {
        self.watch_failures(now);
        for note in self.session.take_notes() {
            if let (Note::Login(_), Some(guard)) = (&note, &mut self.guard) {
                guard.attempt = None;
            }
            if let Some((observer, info)) = &self.observer {
                observer.noted(info, &note);
            }
        }
    }

    /// A handler call asked for at `started` returned at `now`.
    fn call_returned(&mut self, now: Instant) {
        if let (Some((call, started)), Some((observer, _))) = (self.call.take(), &self.observer) {
            observer.handler_call(call, now.saturating_duration_since(started));
        }
    }

    /// The same, under the service's failed-login limits, for a
    /// connection from `ip`.
    pub(crate) fn with_failures(
        mut self,
        failures: std::sync::Arc<FailedLogins>,
        ip: Option<std::net::IpAddr>,
    ) -> Self {
        self.guard = Some(LoginGuard {
            failures,
            ip,
            user: None,
            seen: 0,
            attempt: None,
        });
        self
    }

    /// The same, holding `slot` (the service's admission).
    pub(crate) fn with_slot(mut self, slot: Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The slot's shared entry, for a loop that must wake when the
    /// connection is evicted while it waits for the client.
    pub(crate) fn tenant(&self) -> Option<std::sync::Arc<Tenant>> {
        self.slot.as_ref().map(Slot::tenant)
    }

    /// The session (for its getters).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next thing to do at `now`.
    pub fn next(&mut self, now: Instant) -> Step<'_, B> {
        self.observe_notes(now);
        if let Some(error) = self.report.take() {
            return Step::Report(error);
        }
        if let Some(end) = &self.end {
            return Step::Done(end.clone());
        }
        self.watch_shutdown(now);
        self.watch_slot(now);
        loop {
            self.watch_failures(now);
            match self.session.poll_output(now) {
                Output::Transmit(t) => return Step::Write(t),
                Output::Event(Event::Request(request)) => {
                    if !self.limit_login(now, &request) {
                        self.call = Some((Call::of(&request), now));
                        self.top = matches!(
                            request,
                            Request::Retrieve {
                                top_lines: Some(_),
                                ..
                            }
                        );
                        return Step::Call(request);
                    }
                }
                Output::Event(Event::NeedBody) => {
                    if self.body.is_some() {
                        return match &mut self.body {
                            Some(body) => Step::Pull(body),
                            None => unreachable!(),
                        };
                    }
                    // The client must never take a cut message for a whole one.
                    self.fail(now, HandlerError::internal("message body source lost"));
                    if let Some(error) = self.report.take() {
                        return Step::Report(error);
                    }
                }
                Output::Event(Event::StartTls) => {
                    return Step::StartTls {
                        deadline: self.wait_deadline(now),
                    }
                }
                Output::Event(Event::Unlock) => return Step::Unlock,
                Output::Event(Event::Closed(reason)) => {
                    self.observe_notes(now);
                    let mut end = SessionEnd::new(&self.session, reason);
                    end.tls_error = self.tls_error.take();
                    end.error = self.error.take();
                    end.proxy_error = self.proxy_error.take();
                    if end.proxy_error.is_some() {
                        end.reason = CloseReason::Rejected;
                    }
                    if self.evicted {
                        // Closed as the idle timer closes: early, to make room.
                        end.reason = CloseReason::IdleTimeout;
                        end.evicted = true;
                    }
                    self.slot = None;
                    self.end = Some(end.clone());
                    return Step::Done(end);
                }
                Output::Wait(wait) if wait.read => {
                    if let Some(slot) = &self.slot {
                        // Idle until the read returns: it may be evicted meanwhile.
                        slot.waiting();
                    }
                    return Step::Read {
                        deadline: wait.deadline,
                        wake_on: self.wake_on(),
                    };
                }
                Output::Wait(wait) => match wait.deadline {
                    Some(until) => {
                        return Step::Sleep {
                            until,
                            wake_on: self.wake_on(),
                        }
                    }
                    // Nothing can move the session: only a driver bug gets here.
                    None => {
                        debug_assert!(false, "session stuck: {:?}", self.session);
                        self.session.handle_connection_lost(now);
                    }
                },
            }
        }
    }

    /// The next shutdown stage this session has to hear of.
    fn wake_on(&self) -> Stage {
        if self.told_shutdown {
            Stage::Abort
        } else {
            Stage::Begin
        }
    }

    /// The deadline of a handshake starting now: the one the session would
    /// wait until (its idle deadline), capped at the handshake timeout.
    fn wait_deadline(&mut self, now: Instant) -> Option<Instant> {
        let cap = crate::tls::handshake_deadline(self.session.config(), now);
        match self.session.poll_output(now) {
            Output::Wait(w) => Some(w.deadline.map_or(cap, |d| d.min(cap))),
            other => {
                debug_assert!(false, "output while starting TLS: {other:?}");
                Some(cap)
            }
        }
    }

    /// Tells the slot what the session did (a command, a login), and
    /// closes the session if the slot was evicted: without a reply and
    /// without UPDATE (only a session that has not logged in is evicted).
    fn watch_slot(&mut self, now: Instant) {
        let Some(slot) = &self.slot else { return };
        if slot.is_evicted() {
            if !self.evicted {
                self.evicted = true;
                self.session.handle_connection_lost(now);
            }
            return;
        }
        let commands = self.session.stats().commands;
        if commands != self.commands {
            self.commands = commands;
            slot.command(now);
        }
        if !self.logged_in && matches!(self.session.phase(), Phase::Transaction | Phase::Update) {
            self.logged_in = true;
            slot.logged_in();
        }
    }

    /// Records the session's new failed logins under the service's limits.
    fn watch_failures(&mut self, now: Instant) {
        let Some(guard) = &mut self.guard else { return };
        let failed = self.session.stats().failed_logins;
        while guard.seen < failed {
            guard.seen += 1;
            guard
                .failures
                .failed(guard.ip, guard.user.take().as_deref(), now);
        }
    }

    /// A login attempt (a credential check, SCRAM keys) is checked against
    /// the failed-login limits before the handler sees it; true if it was
    /// refused (and the session answered).
    fn limit_login(&mut self, now: Instant, request: &Request) -> bool {
        let Some(guard) = &mut self.guard else {
            return false;
        };
        let (Request::Authenticate { user, .. } | Request::ScramCredentials { user }) = request
        else {
            return false;
        };
        guard.user = Some(user.clone());
        // An attempt the session never noted the end of is over now.
        guard.attempt = None;
        let limit = match guard.failures.check(guard.ip, user, now) {
            Ok(attempt) => {
                guard.attempt = Some(attempt);
                return false;
            }
            Err(limit) => limit,
        };
        // The session counts the refusal as a failed login: not recorded.
        guard.seen += 1;
        guard.user = None;
        if let Some((observer, info)) = &self.observer {
            observer.login_limited(info, limit);
        }
        expect_fits(self.session.limit_login(now, limit));
        true
    }

    /// A wait for the client ended: false if the slot was evicted meanwhile
    /// (the session is then closed, and what was read is dropped).
    fn end_wait(&mut self, now: Instant) -> bool {
        if self.slot.as_ref().is_some_and(Slot::busy) {
            self.watch_slot(now);
            return false;
        }
        true
    }

    /// Applies the shutdown stages the session has not heard of yet.
    fn watch_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_aborted() {
            self.session.handle_abort(now);
        } else if self.shutdown.is_begun() && !self.told_shutdown {
            self.told_shutdown = true;
            self.session.handle_shutdown(now);
        }
    }

    /// A [`Step::Write`] finished (completely, or with this error).
    pub fn written(&mut self, now: Instant, transmit: Transmit, result: io::Result<()>) {
        match result {
            Ok(()) => {
                if let Some((observer, info)) = &self.observer {
                    observer.sent(info, transmit.len() as u64);
                }
                expect_fits(self.session.handle_written(now, transmit))
            }
            Err(e) => {
                // A missed deadline is the idle timer: the peer stopped reading.
                if e.kind() == io::ErrorKind::TimedOut {
                    self.session.handle_timeout(now);
                }
                self.lost(now);
            }
        }
    }

    /// A [`Step::Read`] finished; `buf` holds what was read.
    pub fn read(&mut self, now: Instant, outcome: io::Result<ReadOutcome>, buf: &[u8]) {
        // A shutdown that woke the read (or came meanwhile) goes first,
        // then an eviction.
        self.watch_shutdown(now);
        if !self.end_wait(now) {
            return;
        }
        match outcome {
            Ok(ReadOutcome::Data(n)) => match self.sniff.take() {
                Some(mut first) => {
                    first.extend_from_slice(&buf[..n]);
                    match crate::proxy_header::looks_like_header(&first) {
                        // Not told yet, but a whole line (an empty one:
                        // "\r\n" begins a v2 signature) that the client
                        // may be waiting on: POP3 it is, not a claim to an
                        // address.
                        None if first.ends_with(b"\n") => {
                            let _ = self.session.handle_input(now, &first);
                        }
                        // Not told yet: hold the bytes, read on.
                        None => self.sniff = Some(first),
                        Some(false) => {
                            let _ = self.session.handle_input(now, &first);
                        }
                        Some(true) => {
                            self.proxy_error =
                                Some("PROXY header from a source not trusted to send one".into());
                            self.session.handle_connection_lost(now);
                        }
                    }
                }
                None => {
                    let _ = self.session.handle_input(now, &buf[..n]);
                }
            },
            Ok(ReadOutcome::Eof) => {
                if let Some(first) = self.sniff.take().filter(|first| !first.is_empty()) {
                    let _ = self.session.handle_input(now, &first);
                }
                self.session.handle_eof(now)
            }
            Ok(ReadOutcome::TimedOut) => self.session.handle_timeout(now),
            Err(_) => self.lost(now),
        }
    }

    /// The IO failed: the connection is lost, or the shutdown aborted it.
    fn lost(&mut self, now: Instant) {
        if self.shutdown.is_aborted() {
            self.session.handle_abort(now);
        } else {
            self.session.handle_connection_lost(now);
        }
    }

    /// A [`Step::Read`] or [`Step::Sleep`] was cut short by a shutdown
    /// stage (or, in this crate's loops, by an eviction).
    pub fn interrupted(&mut self, now: Instant) {
        self.watch_shutdown(now);
        self.end_wait(now);
    }

    /// A [`Step::Sleep`] ended.
    pub fn woke(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    /// A [`Step::StartTls`] handshake finished.
    pub fn tls_started(&mut self, now: Instant, result: io::Result<()>) {
        if let Some((observer, info)) = &self.observer {
            observer.tls_handshake(info, false, result.as_ref().map(|_| ()));
        }
        match result {
            Ok(()) => expect_fits(self.session.handle_tls_established(now)),
            // A failed or stalled handshake ends this connection only.
            Err(e) => {
                self.tls_error = Some(e.to_string());
                self.session.handle_connection_lost(now);
            }
        }
    }

    /// The handler's `unlock` returned.
    pub fn unlocked(&mut self, _now: Instant) {}

    /// The handler answered `Request::Authenticate`.
    pub fn authenticated(&mut self, now: Instant, result: HandlerResult<()>) {
        self.call_returned(now);
        match result {
            Ok(()) => expect_fits(self.session.accept_login(now)),
            Err(e) => self.refuse_or_fail(now, e),
        }
    }

    /// The handler answered `Request::ScramCredentials`; the server's part
    /// of the nonce is drawn here, fresh for every exchange.
    pub fn scram_found(&mut self, now: Instant, result: HandlerResult<ScramCredentials>) {
        self.call_returned(now);
        match result.and_then(|keys| Ok((keys, scram_nonce()?))) {
            Ok((keys, nonce)) => expect_fits(self.session.scram_credentials(now, keys, &nonce)),
            Err(e) => self.refuse_or_fail(now, e),
        }
    }

    /// The handler answered `Request::Lock`.
    pub fn locked(&mut self, now: Instant, result: HandlerResult<Maildrop>) {
        self.call_returned(now);
        match result {
            Ok(drop) => expect_fits(self.session.grant_maildrop(now, drop)),
            Err(e) => self.refuse_or_fail(now, e),
        }
    }

    /// The handler answered `Request::Retrieve`.
    pub fn opened(&mut self, now: Instant, result: HandlerResult<B>) {
        self.call_returned(now);
        match result {
            Ok(body) => {
                if let Some((observer, info)) = &self.observer {
                    observer.message_opened(info, self.top);
                }
                self.body = Some(body);
                expect_fits(self.session.begin_body(now));
            }
            Err(e) => self.refuse_or_fail(now, e),
        }
    }

    /// The handler answered `Request::Commit`.
    pub fn committed(&mut self, now: Instant, result: HandlerResult<()>) {
        self.call_returned(now);
        match result {
            Ok(()) => expect_fits(self.session.commit_done(now)),
            Err(e) => self.refuse_or_fail(now, e),
        }
    }

    /// A [`Step::Pull`] returned a chunk, the end of the message, or an error.
    pub fn pulled(&mut self, now: Instant, chunk: io::Result<Option<Bytes>>) {
        match chunk {
            Ok(Some(bytes)) => match self.session.push_body(now, bytes) {
                Ok(BodyProgress::More) => {}
                // TOP cut-off reached, or the session closed meanwhile.
                Ok(BodyProgress::Complete) | Err(_) => self.body = None,
            },
            Ok(None) => {
                self.body = None;
                let _ = self.session.end_body(now);
            }
            Err(e) => self.fail(now, e.into()),
        }
    }

    fn refuse_or_fail(&mut self, now: Instant, error: HandlerError) {
        match error {
            HandlerError::Reportable(refusal) => self.refuse(now, refusal),
            HandlerError::LoginDelay(wait) => match self.session.refuse_login_delay(now, wait) {
                Err(UsageError::NoPendingRequest { .. }) => self.fail(
                    now,
                    HandlerError::internal(
                        "LoginDelay answered to a call other than authenticate or lock",
                    ),
                ),
                result => expect_fits(result),
            },
            internal @ HandlerError::Internal(_) => self.fail(now, internal),
        }
    }

    fn refuse(&mut self, now: Instant, refusal: Refusal) {
        expect_fits(self.session.refuse(now, refusal));
    }

    /// An internal error: the session ends (nothing deleted, unlocked) and
    /// the `session_error` hook hears of it.
    fn fail(&mut self, now: Instant, error: HandlerError) {
        self.body = None;
        if self.shutdown.is_aborted() {
            // A call abandoned (or failing) after the grace: a shutdown.
            self.session.handle_abort(now);
        }
        let _ = self.session.fail(now);
        self.error = Some(with_causes(&error));
        self.report = Some(error);
    }
}

/// An error and its chain of sources: `open failed: Too many open files`.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A panic payload as an internal error.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> HandlerError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    HandlerError::internal(format!("handler panicked: {text}"))
}

/// The procedure answers only what the session just asked, so an answer
/// can only be refused if the session closed meanwhile.
fn expect_fits(result: Result<(), UsageError>) {
    debug_assert!(
        matches!(result, Ok(()) | Err(UsageError::Closed)),
        "the drive procedure gave a wrong answer: {result:?}"
    );
}

/// 18 random octets from the operating system, base64: a SCRAM server nonce.
fn scram_nonce() -> HandlerResult<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| HandlerError::internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}
