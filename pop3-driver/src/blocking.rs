//! The blocking loop: performs the drive procedure's steps on the calling
//! thread, for every thread-per-connection adapter.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::Bytes;
use pop3_proto::Request;

use crate::handler::{BodySource, Handler, HandlerResult};
use crate::procedure::{panic_error, Procedure, Step};
use crate::read_buffer::ReadBuffer;
use crate::service::{Admission, ConnectionInfo, NewHandler, Reserved, Service};
use crate::slots::{Interrupter, Wake};
use crate::{ReadOutcome, SessionEnd};

/// The IO a blocking adapter provides: a byte stream with deadlines, and
/// the runtime's clock.
pub trait Transport {
    /// The current time (the only clock the session sees).
    fn now(&self) -> Instant;

    /// Reads into `buf`, giving up at `deadline` with [`ReadOutcome::TimedOut`].
    /// An adapter may also return `TimedOut` early to wake the loop for a
    /// shutdown (a spurious early timeout is harmless).
    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome>;

    /// Writes all of `segments` (with vectored writes) and flushes; fails
    /// with `TimedOut` if `deadline` passes first.
    fn write(&mut self, segments: &[Bytes], deadline: Option<Instant>) -> io::Result<()>;

    /// Waits until `until` (by this transport's clock).
    fn sleep_until(&mut self, until: Instant) {
        std::thread::sleep(until.saturating_duration_since(self.now()));
    }

    /// True if [`start_tls`](Self::start_tls) can work (a server certificate is set up).
    fn can_start_tls(&self) -> bool {
        false
    }

    /// Upgrades the stream to TLS, as server: after STLS, or first thing on
    /// an implicit TLS listener. The handshake must finish by `deadline`
    /// (else `TimedOut`); a failed one leaves the transport unusable. Every
    /// later read and write goes through TLS, and flushes it.
    fn start_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let _ = deadline;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TLS is not configured",
        ))
    }

    /// A way for another thread to make a [`read`](Self::read) (or a
    /// [`start_tls`](Self::start_tls) handshake) blocked in this transport
    /// return, with every later read failing or at end of stream: for a
    /// socket, shutting down its read side. Asked for once, when the
    /// connection is admitted. The service calls it to close a connection
    /// that has not logged in and waits idle for its client, to make room
    /// for a new one when the server is full (see
    /// [`Service::max_connections`]); a transport without one (the
    /// default) is never chosen for that.
    fn interrupter(&self) -> Option<Interrupter> {
        None
    }
}

/// How the service wakes a blocking connection it evicts.
fn wake<T: Transport>(transport: &T) -> Wake {
    match transport.interrupter() {
        Some(interrupt) => Wake::Interrupt(interrupt),
        None => Wake::Never,
    }
}

/// Runs one connection of `service` over `transport` on the calling
/// thread: a rejected connection gets its `-ERR` line, an admitted one a
/// whole session. Returns how the session ended, or `None` if rejected.
/// From a trusted proxy ([`Service::proxy_from`]) the PROXY header is
/// read first.
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
    let info = proxied(service, transport, info)?;
    serve_admitted(service, transport, &info, None)
}

/// `info`, or what a trusted proxy's PROXY header says instead; `None`
/// (reported to the service) if the header is missing or malformed.
fn proxied<F, H, T>(
    service: &Service<F>,
    transport: &mut T,
    info: &ConnectionInfo,
) -> Option<ConnectionInfo>
where
    F: NewHandler<H>,
    T: Transport,
{
    let Some(mut header) = service.proxy_header(info, transport.now()) else {
        return Some(*info);
    };
    let mut buf = vec![0u8; crate::proxy_header::MAX_V2];
    loop {
        let wanted = header.wanted();
        let outcome = transport.read(&mut buf[..wanted], Some(header.deadline()));
        match header.read(transport.now(), outcome, &buf) {
            None => {}
            Some(Ok(info)) => return Some(info),
            Some(Err(why)) => {
                service.proxy_failed(info, why);
                return None;
            }
        }
    }
}

fn serve_admitted<F, H, T>(
    service: &Service<F>,
    transport: &mut T,
    info: &ConnectionInfo,
    reserved: Option<Reserved>,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: Handler,
    T: Transport,
{
    let now = transport.now();
    let wake = match reserved {
        Some(_) => Wake::Never, // the reservation has its own
        None => wake(transport),
    };
    match service.admit_reserved(info, now, transport.can_start_tls(), reserved, wake) {
        Admission::Reject(bytes) => {
            let _ = transport.write(&[bytes], Some(transport.now() + crate::FINAL_WRITE));
            service.ended(info, &SessionEnd::rejected());
            None
        }
        Admission::Serve {
            procedure,
            mut handler,
            permit,
        } => {
            let end = drive(procedure, transport, &mut handler);
            drop(permit);
            service.session_closed(info, &end);
            Some(end)
        }
    }
}

/// Runs one connection of an implicit TLS listener (RFC 8314) of `service`
/// over `transport`: the TLS handshake first, bounded by
/// [`handshake_deadline`](crate::tls::handshake_deadline), then the
/// session as [`serve_connection`] does, told that TLS is active. A failed
/// or stalled handshake ends only this connection, reported to the end
/// hook with its [`SessionEnd::tls_error`].
///
/// The handshake holds a place under the connection limits, as a
/// connection that has not logged in and waits for its client (so it may
/// be evicted to make room, like an idle one: see
/// [`Transport::interrupter`]); over the limits the connection is closed at
/// once, without a handshake (so stalled handshakes cannot pile up), and
/// reported as rejected (`None`).
pub fn serve_tls_connection<F, H, T>(
    service: &Service<F>,
    transport: &mut T,
    info: &ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: Handler,
    T: Transport,
{
    let info = &proxied(service, transport, info)?;
    let Some(reserved) = service.reserve(info, transport.now(), wake(transport)) else {
        service.ended(info, &SessionEnd::rejected());
        return None;
    };
    let deadline = crate::tls::handshake_deadline(service.config(), transport.now());
    reserved.slot.waiting();
    let result = transport.start_tls(Some(deadline));
    let result = if reserved.slot.busy() {
        Err(crate::slots::evicted_error())
    } else {
        result
    };
    service.handshake(info, result.as_ref().map(|_| ()));
    match result {
        Ok(()) => serve_admitted(service, transport, &info.with_tls(), Some(reserved)),
        Err(e) => {
            let evicted = reserved.slot.is_evicted();
            drop(reserved);
            let mut end = SessionEnd::handshake_failed(&e);
            end.evicted = evicted;
            service.ended(info, &end);
            Some(end)
        }
    }
}

/// Runs a session over `transport` until it closes, asking `handler`.
///
/// A handler panic is caught: the session ends as a handler failure and the
/// maildrop is still unlocked. When the procedure's shutdown begins, the
/// session closes at its next command boundary; the adapter wakes blocked
/// reads (e.g. by shutting down the socket's read side).
pub fn drive<T: Transport, H: Handler>(
    mut procedure: Procedure<H::Body>,
    transport: &mut T,
    handler: &mut H,
) -> SessionEnd {
    let mut buf = ReadBuffer::new();
    loop {
        match procedure.next(transport.now()) {
            Step::Write(t) => {
                let result = transport.write(t.segments(), t.deadline());
                procedure.written(transport.now(), t, result);
            }
            Step::Call(Request::Authenticate { user, credential }) => {
                let r = guarded(|| handler.authenticate(&user, &credential));
                procedure.authenticated(transport.now(), r);
            }
            Step::Call(Request::ScramCredentials { user }) => {
                let r = guarded(|| handler.scram_credentials(&user));
                procedure.scram_found(transport.now(), r);
            }
            Step::Call(Request::Lock { user }) => {
                let r = guarded(|| handler.lock(&user));
                procedure.locked(transport.now(), r);
            }
            Step::Call(Request::Retrieve { message, top_lines }) => {
                let r = guarded(|| handler.open(&message, top_lines));
                procedure.opened(transport.now(), r);
            }
            Step::Call(Request::Commit { deleted }) => {
                let r = guarded(|| handler.commit(&deleted));
                procedure.committed(transport.now(), r);
            }
            Step::Pull(body) => {
                let chunk = catch_unwind(AssertUnwindSafe(|| body.next_chunk()))
                    .unwrap_or_else(|p| Err(io::Error::other(panic_error(p))));
                procedure.pulled(transport.now(), chunk);
            }
            Step::StartTls { deadline } => {
                let result = transport.start_tls(deadline);
                procedure.tls_started(transport.now(), result);
            }
            Step::Unlock => {
                // A panicking unlock has nothing left to undo.
                let _ = catch_unwind(AssertUnwindSafe(|| handler.unlock()));
                procedure.unlocked(transport.now());
            }
            Step::Report(error) => {
                let _ = catch_unwind(AssertUnwindSafe(|| handler.session_error(&error)));
            }
            Step::Read { deadline, .. } => {
                let outcome = transport.read(buf.space(), deadline);
                let read = outcome.as_ref().ok().copied();
                procedure.read(transport.now(), outcome, buf.bytes());
                if let Some(read) = read {
                    buf.adapt(&read);
                }
            }
            Step::Sleep { until, .. } => {
                transport.sleep_until(until);
                procedure.woke(transport.now());
            }
            Step::Done(end) => return end,
        }
    }
}

fn guarded<T>(call: impl FnOnce() -> HandlerResult<T>) -> HandlerResult<T> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|p| Err(panic_error(p)))
}
