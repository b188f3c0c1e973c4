//! The UPDATE state (RFC 1939 §6): QUIT in TRANSACTION asks the handler to
//! remove the marked messages; its answer decides the farewell. Also the
//! refusal of any pending request, which each phase words its own way.

use std::sync::Arc;
use std::time::Instant;

use super::{Pending, Session, State};
use crate::error::UsageError;
use crate::event::{CloseReason, Request};
use crate::lang::Text;
use crate::reply::{self, Refusal, ResponseCode};

impl Session {
    /// QUIT in TRANSACTION: enter UPDATE and ask for the marked messages to
    /// be removed (RFC 1939 §6).
    pub(super) fn quit_transaction(&mut self) {
        let deleted = self
            .maildrop
            .as_ref()
            .map(|d| d.marked())
            .unwrap_or_default();
        self.request(Pending::Commit, Request::Commit { deleted });
    }

    /// Answers [`Request::Commit`]: every marked message was removed.
    /// The session unlocks, says goodbye and closes.
    pub fn commit_done(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.state, State::Pending(Pending::Commit)) {
            return self.wrong_answer("Commit");
        }
        self.progress();
        let left = self.maildrop.as_ref().map_or(0, |m| m.live().0);
        let config = Arc::clone(&self.config);
        let lang = &config.languages[self.language];
        let host = &config.hostname;
        let text = if left == 0 {
            lang.render(Text::SigningOffEmpty, [("host", host), ("left", &left)])
        } else {
            lang.render(Text::SigningOffLeft, [("host", host), ("left", &left)])
        };
        // The farewell follows the Unlock in the queue: a client that
        // reconnects at once finds its maildrop free.
        self.close_with(CloseReason::Quit, |out| {
            reply::ok(out, format_args!("{text}"))
        });
        Ok(())
    }

    /// Answers the pending request with a reportable refusal:
    /// `-ERR [CODE] text`, and the session goes on.
    ///
    /// Defaults when the refusal has no code: `[AUTH]` for Authenticate,
    /// `[IN-USE]` for Lock, `[SYS/TEMP]` for Commit. A refused login (code
    /// `AUTH`) is held back for the configured delay and counts towards the
    /// failed-login limit. A refused Commit means nothing was deleted: the
    /// session answers `-ERR` with the handler's text, unlocks and closes
    /// (RFC 1939 §6).
    pub fn refuse(&mut self, now: Instant, refusal: Refusal) -> Result<(), UsageError> {
        self.enter(now)?;
        let State::Pending(pending) = self.state else {
            return self.wrong_answer("any");
        };
        self.progress();
        match pending {
            Pending::Authenticate(_) | Pending::ScramCredentials | Pending::Lock => {
                self.refuse_login(pending, refusal)
            }
            Pending::Retrieve { .. } => {
                self.queue.with_buf(|out| reply::refusal(out, &refusal));
                self.resume();
            }
            Pending::Commit => {
                let refusal = refusal.or_code(ResponseCode::SysTemp);
                let config = Arc::clone(&self.config);
                let text = config.languages[self.language].render(Text::NotAllRemoved, []);
                self.close_with(CloseReason::UpdateFailed, |out| {
                    if refusal.text().is_empty() {
                        // RFC 1939 §6's wording for a failed UPDATE.
                        reply::err(out, refusal.code(), format_args!("{text}"));
                    } else {
                        reply::refusal(out, &refusal);
                    }
                });
                return Ok(());
            }
        }
        self.after_answer();
        Ok(())
    }
}
