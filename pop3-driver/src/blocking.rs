//! The blocking drive loop, shared by every thread-per-connection adapter.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use pop3_proto::{Event, Request, Session};

use crate::answer::{self, After};
use crate::handler::{BodySource, Handler, HandlerResult};
use crate::service::{Admission, ConnectionInfo, NewHandler, Service};
use crate::shutdown::Shutdown;
use crate::{ReadOutcome, SessionEnd, READ_BUFFER};

/// The IO a blocking adapter provides: a byte stream with deadlines, and
/// the runtime's clock.
pub trait Transport {
    /// The current time (the only clock the session sees).
    fn now(&self) -> Instant;

    /// Reads into `buf`, giving up at `deadline` with [`ReadOutcome::TimedOut`].
    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome>;

    /// Writes all of `data`; fails with `TimedOut` if `deadline` passes first.
    fn write_all(&mut self, data: &[u8], deadline: Option<Instant>) -> io::Result<()>;

    /// Upgrades the stream to TLS, as server, after STLS; the handshake
    /// must finish by `deadline`.
    fn start_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let _ = deadline;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TLS is not configured",
        ))
    }
}

/// Runs one connection of `service` over `transport` on the calling
/// thread: a rejected connection gets its `-ERR` line, an admitted one a
/// whole session. Returns how the session ended, or `None` if rejected.
pub fn serve_connection<F, H, T>(
    service: &Service<F>,
    transport: &mut T,
    info: &ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: Handler,
    T: Transport,
{
    match service.admit(info, transport.now()) {
        Admission::Reject(bytes) => {
            let _ = transport.write_all(&bytes, Some(transport.now() + crate::FINAL_WRITE));
            service.ended(info, &SessionEnd::rejected());
            None
        }
        Admission::Serve {
            session,
            mut handler,
            permit,
        } => {
            let end = drive(session, transport, &mut handler, service.shutdown());
            drop(permit);
            service.ended(info, &end);
            Some(end)
        }
    }
}

/// How often a blocked read wakes up to look for a shutdown.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Runs `session` over `transport` until it closes, asking `handler`.
///
/// A handler panic is caught: the session ends as a handler failure and the
/// maildrop is still unlocked. When `shutdown` begins, the session closes at
/// its next command boundary.
pub fn drive<T: Transport, H: Handler>(
    mut session: Session,
    transport: &mut T,
    handler: &mut H,
    shutdown: &Shutdown,
) -> SessionEnd {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut body: Option<H::Body> = None;
    let mut told_shutdown = false;
    loop {
        while let Some(bytes) = session.poll_transmit(transport.now()) {
            if let Err(e) = transport.write_all(&bytes, session.poll_timeout()) {
                crate::write_failed(&mut session, transport.now(), &e);
            }
        }
        if let Some(event) = session.poll_event() {
            let now = transport.now();
            let after = match event {
                Event::Request(Request::Authenticate { user, credential }) => {
                    let r = guarded(|| handler.authenticate(&user, &credential));
                    answer::unit(&mut session, transport.now(), r, Session::accept_login)
                }
                Event::Request(Request::Lock { user }) => {
                    let r = guarded(|| handler.lock(&user));
                    answer::lock(&mut session, transport.now(), r)
                }
                Event::Request(Request::Retrieve { message, top_lines }) => {
                    let r = guarded(|| handler.open(&message, top_lines));
                    answer::open(&mut session, transport.now(), r)
                }
                Event::Request(Request::Commit { deleted }) => {
                    let r = guarded(|| handler.commit(&deleted));
                    answer::unit(&mut session, transport.now(), r, Session::commit_done)
                }
                Event::NeedBody => match body.take() {
                    Some(mut source) => {
                        let chunk = catch_unwind(AssertUnwindSafe(|| source.next_chunk()))
                            .unwrap_or_else(|p| Err(io::Error::other(answer::panic_error(p))));
                        answer::chunk(&mut session, transport.now(), source, chunk)
                    }
                    None => {
                        let _ = session.end_body(now);
                        After::Continue
                    }
                },
                Event::StartTls => {
                    match transport.start_tls(session.poll_timeout()) {
                        Ok(()) => {
                            let _ = session.handle_tls_established(transport.now());
                        }
                        Err(_) => session.handle_connection_lost(transport.now()),
                    }
                    After::Continue
                }
                Event::Unlock => {
                    // A panicking unlock has nothing left to undo.
                    let _ = catch_unwind(AssertUnwindSafe(|| handler.unlock()));
                    After::Continue
                }
                Event::Closed(reason) => return SessionEnd::new(&session, reason),
            };
            match after {
                After::Continue => {}
                After::Body(source) => body = Some(source),
                After::Report(error) => {
                    body = None;
                    let _ = catch_unwind(AssertUnwindSafe(|| handler.session_error(&error)));
                }
            }
            continue;
        }
        if shutdown.is_begun() && !told_shutdown {
            told_shutdown = true;
            session.handle_shutdown(transport.now());
            continue;
        }
        // Nothing to do until the peer or the clock moves. Wake up now and
        // then to notice a shutdown.
        let deadline = session.poll_timeout();
        let poll_until = transport.now() + SHUTDOWN_POLL;
        let wake = deadline.map_or(poll_until, |d| d.min(poll_until));
        if session.wants_input() {
            match transport.read(&mut buf, Some(wake)) {
                Ok(ReadOutcome::Data(n)) => {
                    let _ = session.handle_input(transport.now(), &buf[..n]);
                }
                Ok(ReadOutcome::TimedOut) => session.handle_timeout(transport.now()),
                Ok(ReadOutcome::Eof) => session.handle_eof(transport.now()),
                Err(_) => session.handle_connection_lost(transport.now()),
            }
        } else {
            // Only a timer can move the session (e.g. a held login reply
            // while the input buffer is full).
            let now = transport.now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
            session.handle_timeout(transport.now());
        }
    }
}

fn guarded<T>(call: impl FnOnce() -> HandlerResult<T>) -> HandlerResult<T> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|p| Err(answer::panic_error(p)))
}
