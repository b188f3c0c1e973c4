//! The UPDATE state (RFC 1939 §6): QUIT in TRANSACTION asks the handler to
//! remove the marked messages; its answer decides the farewell. Also the
//! refusal of any pending request, which each phase words its own way.

use std::time::Instant;

use super::{Pending, Session, State};
use crate::error::UsageError;
use crate::event::{CloseReason, Request};
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
        let host = self.config.hostname.clone();
        // The farewell follows the Unlock in the queue: a client that
        // reconnects at once finds its maildrop free.
        self.close_with(CloseReason::Quit, |out| {
            if left == 0 {
                reply::ok(
                    out,
                    format_args!("{host} POP3 server signing off (maildrop empty)"),
                );
            } else {
                reply::ok(
                    out,
                    format_args!("{host} POP3 server signing off ({left} messages left)"),
                );
            }
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
                self.close_with(CloseReason::UpdateFailed, |out| {
                    if refusal.text().is_empty() {
                        // RFC 1939 §6's wording for a failed UPDATE.
                        reply::err(
                            out,
                            refusal.code(),
                            format_args!("some deleted messages not removed"),
                        );
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
