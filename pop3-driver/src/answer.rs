//! Turning handler results into session answers: written once for both
//! drive loops. A handler panic is caught and treated as an internal error.

use std::any::Any;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use pop3_proto::{BodyProgress, Maildrop, Session};

use crate::handler::{HandlerError, HandlerResult};

/// What the drive loop must do after an answer.
#[derive(Debug)]
pub(crate) enum After<B> {
    /// Nothing more.
    Continue,
    /// Keep this body open and push from it on `NeedBody`.
    Body(B),
    /// Tell the handler's `session_error` hook; the session is already failing.
    Report(HandlerError),
}

/// A panic payload as an internal error.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> HandlerError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    HandlerError::internal(format!("handler panicked: {text}"))
}

/// Answers a request from a result whose success needs no further action.
pub(crate) fn unit<B>(
    session: &mut Session,
    now: Instant,
    result: HandlerResult<()>,
    accept: fn(&mut Session, Instant) -> Result<(), pop3_proto::UsageError>,
) -> After<B> {
    match result {
        Ok(()) => expect_fits(accept(session, now)),
        Err(e) => refuse_or_fail(session, now, e),
    }
}

/// Answers `Request::Lock`.
pub(crate) fn lock<B>(
    session: &mut Session,
    now: Instant,
    result: HandlerResult<Maildrop>,
) -> After<B> {
    match result {
        Ok(drop) => expect_fits(session.grant_maildrop(now, drop)),
        Err(e) => refuse_or_fail(session, now, e),
    }
}

/// Answers `Request::Retrieve`.
pub(crate) fn open<B>(session: &mut Session, now: Instant, result: HandlerResult<B>) -> After<B> {
    match result {
        Ok(body) => match session.begin_body(now) {
            Ok(()) => After::Body(body),
            Err(e) => expect_fits(Err(e)),
        },
        Err(e) => refuse_or_fail(session, now, e),
    }
}

/// Feeds one chunk (or the end) of a body. Returns the body back while more is wanted.
pub(crate) fn chunk<B>(
    session: &mut Session,
    now: Instant,
    body: B,
    chunk: io::Result<Option<Bytes>>,
) -> After<B> {
    match chunk {
        Ok(Some(bytes)) => match session.push_body(now, bytes) {
            Ok(BodyProgress::More) => After::Body(body),
            // TOP cut-off reached, or the peer went away meanwhile.
            Ok(BodyProgress::Complete) | Err(_) => After::Continue,
        },
        Ok(None) => {
            let _ = session.end_body(now);
            After::Continue
        }
        Err(e) => {
            let _ = session.fail(now);
            After::Report(e.into())
        }
    }
}

fn refuse_or_fail<B>(session: &mut Session, now: Instant, error: HandlerError) -> After<B> {
    match error {
        HandlerError::Reportable(refusal) => expect_fits(session.refuse(now, refusal)),
        internal @ HandlerError::Internal(_) => {
            let _ = session.fail(now);
            After::Report(internal)
        }
    }
}

/// The drive loops answer only the request the session just asked, so an
/// answer can only be refused if the session closed meanwhile.
fn expect_fits<B>(result: Result<(), pop3_proto::UsageError>) -> After<B> {
    debug_assert!(
        matches!(result, Ok(()) | Err(pop3_proto::UsageError::Closed)),
        "drive loop gave a wrong answer: {result:?}"
    );
    After::Continue
}
