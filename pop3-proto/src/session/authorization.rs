//! The AUTHORIZATION state (RFC 1939 §4): USER, PASS, APOP, STLS, CAPA and
//! QUIT before login; the answers to `Authenticate` and `Lock`; the
//! failed-login delay; the TLS restart (RFC 2595 §4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{Link, Login, Pending, Session, State};
use crate::apop::ApopCredential;
use crate::capa::{write_capabilities, CapaContext};
use crate::command::Command;
use crate::error::UsageError;
use crate::event::{CloseReason, Credential, Event, Request};
use crate::lang::{Text, Value};
use crate::maildrop::{Maildrop, Marked};
use crate::note::{LoginMethod, LoginOutcome};
use crate::reply::{self, Refusal, ResponseCode};

/// Which limit on failed logins refuses an attempt before its credentials
/// are checked (see [`Session::limit_login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoginLimit {
    /// The client's address has failed too often lately: `-ERR [SYS/TEMP]`.
    Address,
    /// Logins as this user have failed too often lately: `-ERR [AUTH]`.
    User,
}

impl LoginLimit {
    /// A stable name for logs and metric labels: `address` or `user`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::User => "user",
        }
    }
}

impl Session {
    /// RFC 1939 §4. Returns false for a command that counts as bad.
    pub(super) fn execute_authorization(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::User(name) => {
                if !self.config.user_pass {
                    self.err(Text::UserPassNotOffered, []);
                } else if !self.plaintext_allowed() {
                    self.login = Login::Anonymous;
                    self.tls_required("USER/PASS");
                } else {
                    match self.user_name(name) {
                        Ok(name) => {
                            self.login = Login::Named(name);
                            self.ok(Text::SendPass, []);
                        }
                        Err(why) => {
                            self.login = Login::Anonymous;
                            self.unusable(why);
                        }
                    }
                }
            }
            Command::Pass(password) => {
                let Login::Named(user) = &self.login else {
                    self.bad_command(Text::SendUserFirst, []);
                    return false;
                };
                let user = user.clone();
                let password = match self.password(password) {
                    Ok(password) => password,
                    Err(why) => {
                        self.login = Login::Anonymous;
                        self.unusable(why);
                        return true;
                    }
                };
                let credential = Credential::Password(password);
                self.attempt = Some((LoginMethod::UserPass, Some(user.clone())));
                self.request(
                    Pending::Authenticate(None),
                    Request::Authenticate { user, credential },
                );
            }
            Command::Apop { user, digest } => {
                let Some(ts) = self.apop.clone() else {
                    self.login = Login::Anonymous;
                    self.err(Text::ApopNotOffered, []);
                    return true;
                };
                if self.config.apop_needs_tls && !self.plaintext_allowed() {
                    self.login = Login::Anonymous;
                    self.tls_required("APOP");
                    return true;
                }
                let user = match self.user_name(user) {
                    Ok(user) => user,
                    Err(why) => {
                        self.login = Login::Anonymous;
                        self.unusable(why);
                        return true;
                    }
                };
                self.login = Login::Named(user.clone());
                let credential = Credential::Apop(ApopCredential::new(ts, digest));
                self.attempt = Some((LoginMethod::Apop, Some(user.clone())));
                self.request(
                    Pending::Authenticate(None),
                    Request::Authenticate { user, credential },
                );
            }
            Command::Quit => {
                let config = Arc::clone(&self.config);
                let lang = &config.languages[self.language];
                let host = &config.hostname;
                self.close_with(CloseReason::Quit, |out| {
                    let text = lang.render(Text::SigningOff, [("host", host)]);
                    reply::ok(out, format_args!("{text}"));
                });
            }
            Command::Capa => self.capa(),
            Command::Utf8 => self.enter_utf8(),
            Command::Lang(range) => self.lang(range),
            Command::AuthList => self.list_mechanisms(),
            Command::Auth { mechanism, initial } => return self.auth(mechanism, initial),
            Command::Stls => {
                if !self.config.stls {
                    self.err(Text::StlsNotOffered, []);
                } else if self.tls {
                    self.err(Text::TlsAlreadyActive, []);
                } else {
                    // RFC 2595 §4; the command-injection barrier: nothing
                    // sent after STLS and before TLS may be executed.
                    self.ok(Text::BeginTls, []);
                    self.stats.discarded_at_stls += self.inbound.len() as u64;
                    self.inbound = BytesMut::new();
                    self.lines.reset();
                    self.state = State::Tls;
                    self.queue.push_event(Event::StartTls);
                }
            }
            _ => {
                self.bad_command(Text::NotValidBeforeLogin, []);
                return false;
            }
        }
        true
    }

    /// CAPA (RFC 2449 §5), in either state.
    pub(super) fn capa(&mut self) {
        let ctx = CapaContext {
            maildrop: self.maildrop.as_ref().map(Marked::maildrop),
            tls: self.tls,
            plaintext: self.plaintext_allowed(),
        };
        let config = &self.config;
        self.queue.with_buf(|out| {
            let text = config.languages[self.language].render(Text::CapabilityList, []);
            reply::ok(out, format_args!("{text}"));
            write_capabilities(out, config, &ctx);
            out.extend_from_slice(b".\r\n");
        });
    }

    /// Answers [`Request::Authenticate`]: the credentials are good.
    /// The session then asks for [`Request::Lock`].
    pub fn accept_login(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.state, State::Pending(Pending::Authenticate(_))) {
            return self.wrong_answer("Authenticate");
        }
        let Login::Named(user) = std::mem::take(&mut self.login) else {
            unreachable!("Authenticate is asked only for a named user");
        };
        self.check_started = None;
        self.logged_in(user);
        Ok(())
    }

    /// The client proved who it is: lock the maildrop next.
    pub(super) fn logged_in(&mut self, user: String) {
        self.auth_failures = 0;
        self.attempt_ended(LoginOutcome::Accepted, Some(user.clone()));
        self.login = Login::Authenticated(user.clone());
        self.progress();
        match self.link {
            Link::Lost(reason) => self.close(reason),
            _ => self.request(Pending::Lock, Request::Lock { user }),
        }
    }

    /// Answers [`Request::Lock`]: the maildrop is locked and described.
    /// The session enters TRANSACTION; from now on it owes one [`Event::Unlock`].
    pub fn grant_maildrop(&mut self, now: Instant, maildrop: Maildrop) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.state, State::Pending(Pending::Lock)) {
            return self.wrong_answer("Lock");
        }
        if maildrop.needs_utf8() && !self.utf8 {
            // RFC 6856 §2: not without UTF-8 mode. The store locked it:
            // give the lock back, then refuse; AUTHORIZATION goes on.
            self.login = Login::Anonymous;
            self.queue.push_event(Event::Unlock);
            let text = self.config.languages[self.language].render(Text::Utf8MaildropNeedsUtf8, []);
            self.queue.with_buf(|out| {
                reply::err(out, Some(ResponseCode::Utf8), format_args!("{text}"));
            });
            self.resume();
            self.after_answer();
            return Ok(());
        }
        let marked = Marked::new(maildrop);
        let (count, size) = marked.live();
        let user = match &self.login {
            Login::Authenticated(user) => user.as_str(),
            _ => "",
        };
        self.queue.with_buf(|out| {
            let values: [Value<'_>; 3] = [("user", &user), ("count", &count), ("size", &size)];
            let text = self.config.languages[self.language].render(Text::MaildropReady, values);
            reply::ok(out, format_args!("{text}"))
        });
        self.maildrop = Some(marked);
        self.resume();
        self.after_answer();
        Ok(())
    }

    /// Answers [`Request::Authenticate`] or [`Request::Lock`]: the
    /// credentials are good, but this user logged in less than the login
    /// delay ago (RFC 2449 §8.1.2); `wait` is the time left. The client
    /// gets `-ERR [LOGIN-DELAY]` at once (it is not a failed login), no
    /// maildrop is held (for Lock: the handler holds no lock, so no
    /// [`Event::Unlock`] follows), and AUTHORIZATION goes on.
    ///
    /// Give this answer only after the credentials were verified, so it
    /// tells nothing about an account to someone without its password.
    pub fn refuse_login_delay(&mut self, now: Instant, wait: Duration) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(
            self.state,
            State::Pending(Pending::Authenticate(_) | Pending::Lock)
        ) {
            return self.wrong_answer("Authenticate or Lock");
        }
        self.progress();
        self.attempt_ended(LoginOutcome::Refused, None);
        self.login = Login::Anonymous;
        self.check_started = None;
        self.scram = None;
        // Whole seconds, rounded up: "try again in 0 seconds" would be wrong.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let text = self.config.languages[self.language]
            .render(Text::LoginTooSoon, [("seconds", &seconds.max(1))])
            .to_string();
        self.queue.with_buf(|out| {
            reply::err(out, Some(ResponseCode::LoginDelay), format_args!("{text}"));
        });
        self.resume();
        self.after_answer();
        Ok(())
    }

    /// Answers [`Request::Authenticate`] or [`Request::ScramCredentials`]
    /// without a check: the driver's limits on failed logins refuse the
    /// attempt (see [`LoginLimit`] for the codes). It is answered as a
    /// wrong password is, so it looks and takes the same for existing and
    /// unknown users: counted as a failed login (the session closes at
    /// the configured maximum) and held back for the failed-login delay.
    pub fn limit_login(&mut self, now: Instant, limit: LoginLimit) -> Result<(), UsageError> {
        self.enter(now)?;
        let State::Pending(pending @ (Pending::Authenticate(_) | Pending::ScramCredentials)) =
            self.state
        else {
            return self.wrong_answer("Authenticate or ScramCredentials");
        };
        self.progress();
        // Noted as a refusal, not a failure: nothing was checked (and the
        // password may well have been right).
        self.attempt_ended(LoginOutcome::Refused, None);
        let lang = &self.config.languages[self.language];
        match limit {
            LoginLimit::Address => {
                let text = lang
                    .render(Text::TooManyFailuresFromAddress, [])
                    .to_string();
                self.login = Login::Anonymous;
                self.scram = None;
                self.failed_login(Refusal::sys_temp(text));
            }
            LoginLimit::User => {
                let text = lang.render(Text::TooManyFailuresForUser, []).to_string();
                self.refuse_login(pending, Refusal::auth(text));
            }
        }
        self.after_answer();
        Ok(())
    }

    /// A refused `Authenticate` or `Lock` (see [`Session::refuse`]).
    pub(super) fn refuse_login(&mut self, pending: Pending, refusal: Refusal) {
        self.login = Login::Anonymous;
        let started = self.check_started.take();
        self.scram = None;
        if pending == Pending::Lock {
            let refusal = refusal.or_code(ResponseCode::InUse);
            self.queue.with_buf(|out| reply::refusal(out, &refusal));
            self.resume();
            return;
        }
        let refusal = refusal.or_code(ResponseCode::Auth);
        if refusal.code() != Some(ResponseCode::Auth) {
            // LOGIN-DELAY, SYS/*: not a wrong password; answer now.
            self.attempt_ended(LoginOutcome::Refused, None);
            self.queue.with_buf(|out| reply::refusal(out, &refusal));
            self.resume();
            return;
        }
        if let Pending::Authenticate(Some(m)) = pending {
            if m.is_bearer() {
                // RFC 7628 §3.2.2: the error goes in a challenge first.
                self.challenge(m.bearer_error());
                self.state = State::SaslRefused(refusal);
                return;
            }
        }
        self.check_started = started;
        self.failed_login(refusal);
    }

    /// A wrong credential: count it, and hold the `-ERR` until the delay
    /// after the check was asked for has passed (from now if no handler
    /// check was involved), whatever the check cost.
    pub(super) fn failed_login(&mut self, refusal: Refusal) {
        self.auth_failures += 1;
        self.attempt_ended(LoginOutcome::Failed, None);
        self.stats.failed_logins += 1;
        let then_close = self.auth_failures >= self.config.max_auth_failures;
        let start = self.check_started.take().unwrap_or(self.now);
        let until = start + self.config.auth_failure_delay;
        if until <= self.now {
            self.send_auth_refusal(refusal, then_close);
        } else {
            // A tarpit: the -ERR is held, without any IO here.
            self.state = State::AuthDelay {
                until,
                refusal,
                then_close,
            };
        }
    }

    /// The failed-login delay is over: send the held `-ERR`.
    pub(super) fn end_auth_delay(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Command);
        if let State::AuthDelay {
            refusal,
            then_close,
            ..
        } = state
        {
            self.send_auth_refusal(refusal, then_close);
        }
    }

    fn send_auth_refusal(&mut self, refusal: Refusal, then_close: bool) {
        if then_close {
            self.close_with(CloseReason::TooManyAuthFailures, |out| {
                reply::refusal(out, &refusal)
            });
        } else {
            self.queue.with_buf(|out| reply::refusal(out, &refusal));
            self.resume();
        }
    }

    /// The TLS handshake that followed [`Event::StartTls`] succeeded.
    ///
    /// AUTHORIZATION starts over (RFC 2595 §4): the USER name and any
    /// half-read input are forgotten, and no new greeting is sent.
    pub fn handle_tls_established(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.state, State::Tls) || self.queue.has_event(&Event::StartTls) {
            return Err(UsageError::NoTlsNegotiation);
        }
        self.tls = true;
        self.login = Login::Anonymous;
        self.inbound = BytesMut::new();
        self.lines.reset();
        self.resume();
        self.advance(&[]);
        Ok(())
    }
}
