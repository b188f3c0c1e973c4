//! The TRANSACTION state (RFC 1939 §5): STAT, LIST, UIDL, RETR, TOP, DELE,
//! RSET, NOOP; listings written as output room allows; message bodies
//! streamed through the dot-stuffer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Pending, Session, State};
use crate::body::{BodyEncoder, BodyProgress};
use crate::command::Command;
use crate::error::UsageError;
use crate::event::{CloseReason, Request};
use crate::lang::{Language, Text};
use crate::maildrop::{Lookup, Marked};
use crate::output::Queue;
use crate::reply::{self, ResponseCode};

/// A multi-line LIST or UIDL answer being produced.
#[derive(Debug)]
pub(super) struct Listing {
    uids: bool,
    next: u32,
}

impl Listing {
    /// Writes listing lines until the output reaches `high_water`; true when
    /// the listing, with its final `.`, is complete.
    pub(super) fn write(&mut self, drop: &Marked, out: &mut Queue, high_water: usize) -> bool {
        while self.next < drop.len() {
            if out.bytes() >= high_water {
                return false;
            }
            let index = self.next;
            self.next += 1;
            if let Some(m) = drop.live_at(index) {
                let n = index + 1;
                // Writing into a BytesMut cannot fail.
                out.with_buf(|buf| {
                    let _ = if self.uids {
                        write!(buf, "{n} {}\r\n", m.uid)
                    } else {
                        write!(buf, "{n} {}\r\n", m.size)
                    };
                });
            }
        }
        out.put(b".\r\n");
        true
    }
}

impl Session {
    /// RFC 1939 §5. Returns false for a command that counts as bad.
    pub(super) fn execute_transaction(&mut self, cmd: Command) -> bool {
        let drop = self.maildrop.as_mut().expect("TRANSACTION has a maildrop");
        let out = &mut self.queue;
        let lang = &self.config.languages[self.language];
        match cmd {
            Command::Stat => {
                let (count, size) = drop.live();
                out.with_buf(|o| reply::ok(o, format_args!("{count} {size}")));
            }
            Command::List(None) => {
                let (count, size) = drop.live();
                let text = lang.render(Text::ScanListing, [("count", &count), ("size", &size)]);
                out.with_buf(|o| reply::ok(o, format_args!("{text}")));
                self.state = State::Listing(Listing {
                    uids: false,
                    next: 0,
                });
            }
            Command::List(Some(n)) => match drop.get(n) {
                Ok(m) => out.with_buf(|o| reply::ok(o, format_args!("{n} {}", m.size))),
                Err(e) => out.with_buf(|o| lookup_error(o, lang, n, e)),
            },
            Command::Uidl(None) => {
                let text = lang.render(Text::UidListing, []);
                out.with_buf(|o| reply::ok(o, format_args!("{text}")));
                self.state = State::Listing(Listing {
                    uids: true,
                    next: 0,
                });
            }
            Command::Uidl(Some(n)) => match drop.get(n) {
                Ok(m) => out.with_buf(|o| reply::ok(o, format_args!("{n} {}", m.uid))),
                Err(e) => out.with_buf(|o| lookup_error(o, lang, n, e)),
            },
            Command::Retr(n) | Command::Top(n, _) => {
                let top = match cmd {
                    Command::Top(_, k) => Some(k),
                    _ => None,
                };
                match drop.reference(n) {
                    Ok(message) => self.request(
                        Pending::Retrieve { number: n, top },
                        Request::Retrieve {
                            message,
                            top_lines: top,
                        },
                    ),
                    Err(e) => out.with_buf(|o| lookup_error(o, lang, n, e)),
                }
            }
            Command::Dele(n) => match drop.delete(n) {
                Ok(()) => {
                    let text = lang.render(Text::MessageDeleted, [("n", &n)]);
                    out.with_buf(|o| reply::ok(o, format_args!("{text}")));
                }
                Err(e) => out.with_buf(|o| lookup_error(o, lang, n, e)),
            },
            Command::Noop => out.with_buf(|o| reply::ok(o, format_args!(""))),
            Command::Rset => {
                drop.reset();
                let (count, size) = drop.live();
                let text = lang.render(Text::MaildropReset, [("count", &count), ("size", &size)]);
                out.with_buf(|o| reply::ok(o, format_args!("{text}")));
            }
            Command::Quit => self.quit_transaction(),
            Command::Capa => self.capa(),
            Command::Lang(range) => self.lang(range),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Stls
            | Command::Utf8
            | Command::AuthList
            | Command::Auth { .. } => {
                self.bad_command(Text::NotValidAfterLogin, []);
                return false;
            }
        }
        true
    }

    /// Answers [`Request::Retrieve`]: the message is open; queues the `+OK`
    /// line. Then push chunks on each [`Event::NeedBody`](crate::Event::NeedBody).
    pub fn begin_body(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        let State::Pending(Pending::Retrieve { number, top }) = self.state else {
            return self.wrong_answer("Retrieve");
        };
        let size = self
            .maildrop
            .as_ref()
            .and_then(|d| d.get(number).ok())
            .map_or(0, |m| m.size);
        let lang = &self.config.languages[self.language];
        let text = match top {
            None => lang.render(Text::MessageOctets, [("size", &size)]),
            Some(_) => lang.render(Text::TopFollows, [("size", &size)]),
        };
        self.queue
            .with_buf(|out| reply::ok(out, format_args!("{text}")));
        self.stats.bodies_sent += 1;
        self.state = State::Body(BodyEncoder::new(top));
        self.after_answer();
        Ok(())
    }

    /// Queues the next chunk of the message body, dot-stuffed.
    ///
    /// Chunks may split lines, and a CRLF, anywhere. On
    /// [`BodyProgress::Complete`] the TOP cut-off was reached and the response
    /// is finished: stop reading the message and do not call `end_body`.
    pub fn push_body(&mut self, now: Instant, chunk: Bytes) -> Result<BodyProgress, UsageError> {
        self.enter(now)?;
        let State::Body(encoder) = &mut self.state else {
            return Err(UsageError::NotSendingBody);
        };
        let progress = encoder.push(&chunk, &mut self.queue);
        // Time spent reading the message is the handler's, not the peer's.
        self.progress();
        if progress == BodyProgress::Complete {
            self.resume();
            self.advance(&[]);
        }
        Ok(progress)
    }

    /// The message has no more bytes: ends the response with `.`.
    pub fn end_body(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        let State::Body(encoder) = &mut self.state else {
            return Err(UsageError::NotSendingBody);
        };
        encoder.finish(&mut self.queue);
        self.resume();
        self.advance(&[]);
        Ok(())
    }

    /// The handler failed internally (not the client's business): the
    /// session ends without deleting anything and unlocks a locked maildrop.
    ///
    /// Valid at any point before the session closes, with or without a
    /// pending request. Unless a multi-line response is half sent, the
    /// client is told `-ERR [SYS/TEMP]`; a half-sent body or listing is cut
    /// off without its final `.`, so the client cannot take it for whole.
    pub fn fail(&mut self, now: Instant) -> Result<(), UsageError> {
        self.enter(now)?;
        self.progress();
        let mid_response = matches!(self.state, State::Body(_) | State::Listing(_));
        // A connection already lost (or aborted by a shutdown) ends for that.
        let reason = match self.link {
            super::Link::Lost(reason) => reason,
            _ => CloseReason::HandlerFailed,
        };
        if mid_response {
            self.close(reason);
        } else {
            let config = Arc::clone(&self.config);
            let text = config.languages[self.language].render(Text::InternalError, []);
            self.close_with(reason, |out| {
                reply::err(out, Some(ResponseCode::SysTemp), format_args!("{text}"))
            });
        }
        Ok(())
    }
}

fn lookup_error(out: &mut BytesMut, lang: &Language, n: u32, e: Lookup) {
    let text = match e {
        Lookup::NoSuchMessage => lang.render(Text::NoSuchMessage, [("n", &n)]),
        Lookup::Deleted => lang.render(Text::AlreadyDeleted, [("n", &n)]),
    };
    reply::err(out, None, format_args!("{text}"));
}
