//! The async drive loop and accept loop, shared by the tokio and async-std adapters.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt as _;
use pop3_proto::Request;

use crate::handler::{AsyncBodySource, AsyncHandler, HandlerError, HandlerResult};
use crate::procedure::{panic_error, Procedure, Step};
use crate::read_buffer::ReadBuffer;
use crate::service::{AcceptBackoff, Admission, ConnectionInfo, NewHandler, Reserved, Service};
use crate::shutdown::{Shutdown, Stage};
use crate::slots::{Tenant, Wake};
use crate::{ReadOutcome, SessionEnd, ABORT_WAIT};

/// The IO an async adapter provides: a byte stream with deadlines, a timer
/// and the runtime's clock.
pub trait AsyncTransport: Send {
    /// The current time, from the runtime's clock (so paused-time tests work).
    fn now(&self) -> Instant;

    /// Reads into `buf`, giving up at `deadline` with [`ReadOutcome::TimedOut`].
    fn read(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<ReadOutcome>> + Send;

    /// Writes all of `segments` (with vectored writes) and flushes them (a
    /// buffered or TLS stream must not sit on a reply); fails with
    /// `TimedOut` if `deadline` passes first.
    fn write(
        &mut self,
        segments: &[Bytes],
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until `deadline`.
    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;

    /// True if [`start_tls`](Self::start_tls) can work (a server certificate is set up).
    fn can_start_tls(&self) -> bool {
        false
    }

    /// Upgrades the stream to TLS, as server: after STLS, or first thing on
    /// an implicit TLS listener. The handshake must finish by `deadline`
    /// (else `TimedOut`); a failed one leaves the transport unusable. Every
    /// later read and write goes through TLS, and flushes it.
    fn start_tls(
        &mut self,
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<()>> + Send {
        let _ = deadline;
        async {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS is not configured",
            ))
        }
    }

    /// Closes the connection cleanly (flush, then shut down the write side),
    /// giving up at `deadline`.
    fn close(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;
}

/// What the shared accept loop needs from an async runtime.
pub trait AsyncRuntime: Send + Sync {
    /// Spawns a task that runs on its own.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// A listening socket, as the shared accept loop sees it.
pub trait Acceptor: Send {
    /// The transport of an accepted connection.
    type Transport: AsyncTransport + 'static;

    /// Accepts the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Transport, ConnectionInfo)>> + Send;

    /// True for an implicit TLS listener (RFC 8314): each connection starts
    /// with the TLS handshake ([`serve_tls_connection`]).
    fn implicit_tls(&self) -> bool {
        false
    }
}

/// Runs one connection of `service` over `transport`: a rejected connection
/// gets its `-ERR` line, an admitted one a whole session. Returns how the
/// session ended, or `None` if it was rejected.
pub async fn serve_connection<F, H, T>(
    service: &Service<F>,
    transport: T,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    T: AsyncTransport,
{
    let (transport, info) = proxied(service, transport, info).await?;
    serve_admitted(service, transport, info, None).await
}

/// `info`, or what a trusted proxy's PROXY header says instead; `None`
/// (reported to the service) if the header is missing or malformed.
async fn proxied<F, H, T>(
    service: &Service<F>,
    mut transport: T,
    info: ConnectionInfo,
) -> Option<(T, ConnectionInfo)>
where
    F: NewHandler<H>,
    T: AsyncTransport,
{
    let Some(mut header) = service.proxy_header(&info, transport.now()) else {
        return Some((transport, info));
    };
    let mut buf = vec![0u8; crate::proxy_header::MAX_V2];
    loop {
        let wanted = header.wanted();
        let outcome = transport
            .read(&mut buf[..wanted], Some(header.deadline()))
            .await;
        match header.read(transport.now(), outcome, &buf) {
            None => {}
            Some(Ok(proxied)) => return Some((transport, proxied)),
            Some(Err(why)) => {
                transport.close(transport.now() + crate::FINAL_WRITE).await;
                service.proxy_failed(&info, why);
                return None;
            }
        }
    }
}

async fn serve_admitted<F, H, T>(
    service: &Service<F>,
    mut transport: T,
    info: ConnectionInfo,
    reserved: Option<Reserved>,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    T: AsyncTransport,
{
    let now = transport.now();
    let tls = transport.can_start_tls();
    // Taken apart before the session runs: an admission kept whole would
    // hold a second procedure's room in this future, which is what every
    // idle connection costs.
    let (mut procedure, mut handler, permit) =
        match service.admit_reserved(&info, now, tls, reserved, Wake::Event) {
            Admission::Serve {
                procedure,
                handler,
                permit,
            } => (procedure, handler, permit),
            Admission::Reject(bytes) => {
                // Boxed: the admission is still held here, and the two
                // side by side would outsize the session itself.
                Box::pin(reject::<F, H, T>(service, &mut transport, &info, bytes)).await;
                return None;
            }
        };
    // Borrowed, not moved in: an async fn's arguments are kept twice in
    // its future.
    let end = drive(
        &mut procedure,
        &mut transport,
        &mut handler,
        service.shutdown(),
    )
    .await;
    transport.close(transport.now() + crate::FINAL_WRITE).await;
    // The session counts as live until its connection is closed.
    drop(permit);
    service.session_closed(&info, &end);
    Some(end)
}

/// Sends a rejected connection its `-ERR` line and closes it.
async fn reject<F, H, T>(
    service: &Service<F>,
    transport: &mut T,
    info: &ConnectionInfo,
    bytes: Bytes,
) where
    F: NewHandler<H>,
    T: AsyncTransport,
{
    let deadline = transport.now() + crate::FINAL_WRITE;
    let _ = transport.write(&[bytes], Some(deadline)).await;
    transport.close(transport.now() + crate::FINAL_WRITE).await;
    service.ended(info, &SessionEnd::rejected());
}

/// Runs one connection of an implicit TLS listener (RFC 8314) of `service`
/// over `transport`: the TLS handshake first, bounded by
/// [`handshake_deadline`](crate::tls::handshake_deadline) and cut short by
/// an aborted shutdown, then the session as [`serve_connection`] does, told
/// that TLS is active. A failed or stalled handshake ends only this
/// connection, reported to the end hook with its [`SessionEnd::tls_error`].
///
/// The handshake holds a place under the connection limits, as a
/// connection that has not logged in and waits for its client (so it may
/// be evicted to make room, like an idle one); over the limits the
/// connection is closed at once, without a handshake (so stalled
/// handshakes cannot pile up), and reported as rejected (`None`).
pub async fn serve_tls_connection<F, H, T>(
    service: &Service<F>,
    transport: T,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    T: AsyncTransport,
{
    let (mut transport, info) = proxied(service, transport, info).await?;
    let Some(reserved) = service.reserve(&info, transport.now(), Wake::Event) else {
        service.ended(&info, &SessionEnd::rejected());
        return None;
    };
    let deadline = crate::tls::handshake_deadline(service.config(), transport.now());
    let tenant = reserved.slot.tenant();
    reserved.slot.waiting();
    let handshake = async { transport.start_tls(Some(deadline)).await };
    let result = handshake
        .or(stage(service.shutdown(), Stage::Abort, aborted_io()))
        .or(async {
            tenant.evicted().await;
            Err(crate::slots::evicted_error())
        })
        .await;
    let result = if reserved.slot.busy() {
        Err(crate::slots::evicted_error())
    } else {
        result
    };
    service.handshake(&info, result.as_ref().map(|_| ()));
    match result {
        Ok(()) => serve_admitted(service, transport, info.with_tls(), Some(reserved)).await,
        Err(e) => {
            let evicted = reserved.slot.is_evicted();
            drop(reserved);
            let mut end = SessionEnd::handshake_failed(&e);
            end.evicted = evicted;
            service.ended(&info, &end);
            Some(end)
        }
    }
}

/// Accepts connections from `acceptor` and serves each on its own task
/// until the service's shutdown begins. Then it closes the listener, gives
/// sessions the grace period, aborts their IO, and finally abandons handler
/// calls that still do not return (each stage waits [`ABORT_WAIT`]); every
/// locked maildrop still gets its unlock. Accept errors are retried with a
/// back-off, never returned.
pub async fn serve<F, H, R, A>(service: &Service<F>, runtime: &R, acceptor: A)
where
    F: NewHandler<H>,
    H: AsyncHandler,
    R: AsyncRuntime,
    A: Acceptor,
{
    let shutdown = service.shutdown().clone();
    let mut backoff = AcceptBackoff::default();
    while !shutdown.is_begun() {
        let accepted = async { Some(acceptor.accept().await) }
            .or(stage(&shutdown, Stage::Begin, None))
            .await;
        match accepted {
            None => break,
            Some(Ok((transport, info))) => {
                backoff.on_success();
                let service = service.clone();
                if acceptor.implicit_tls() {
                    runtime.spawn(async move {
                        serve_tls_connection(&service, transport, info).await;
                    });
                } else {
                    runtime.spawn(async move {
                        serve_connection(&service, transport, info).await;
                    });
                }
            }
            Some(Err(e)) => {
                service.accept_failed(&e);
                let pause = async {
                    runtime.sleep(backoff.on_error(&e)).await;
                    Some(())
                };
                let _ = pause.or(stage(&shutdown, Stage::Begin, None)).await;
            }
        }
    }
    // No new connections during the grace period.
    drop(acceptor);
    for (wait, next) in service.shutdown_stages() {
        if within(runtime, wait, service.all_closed()).await {
            return;
        }
        if let Some(stage) = next {
            shutdown.raise_to(stage);
        }
    }
}

/// True if `fut` completed within `limit`.
async fn within<R: AsyncRuntime>(
    runtime: &R,
    limit: Duration,
    fut: impl Future<Output = ()>,
) -> bool {
    async {
        fut.await;
        true
    }
    .or(async {
        runtime.sleep(limit).await;
        false
    })
    .await
}

/// Runs a session over `transport` until it closes, asking `handler`.
///
/// A handler panic is caught: the session ends as a handler failure and the
/// maildrop is still unlocked. When the procedure's shutdown begins, the
/// session closes at its next command boundary; when it is aborted, IO stops
/// at once and the session ends as if the connection were lost; when it is
/// cancelled, a handler call still running is abandoned as an internal
/// error. Every locked maildrop is unlocked (the unlock itself gets
/// [`ABORT_WAIT`] once the shutdown is cancelled).
pub async fn drive<T: AsyncTransport, H: AsyncHandler>(
    procedure: &mut Procedure<H::Body>,
    transport: &mut T,
    handler: &mut H,
    shutdown: &Shutdown,
) -> SessionEnd {
    let mut buf = ReadBuffer::new();
    // Wakes a read when the service evicts this connection to make room.
    let tenant = procedure.tenant();
    loop {
        match procedure.next(transport.now()) {
            Step::Write(t) => {
                let write = async { transport.write(t.segments(), t.deadline()).await };
                let result = write.or(stage(shutdown, Stage::Abort, aborted_io())).await;
                procedure.written(transport.now(), t, result);
            }
            // Handler calls are boxed: their futures (the handler's own
            // state) would otherwise size every connection's future, idle
            // or not; one allocation per call is nothing beside the call.
            Step::Call(Request::Authenticate { user, credential }) => {
                let r = guarded(shutdown, Box::pin(handler.authenticate(&user, &credential))).await;
                procedure.authenticated(transport.now(), r);
            }
            Step::Call(Request::ScramCredentials { user }) => {
                let r = guarded(shutdown, Box::pin(handler.scram_credentials(&user))).await;
                procedure.scram_found(transport.now(), r);
            }
            Step::Call(Request::Lock { user }) => {
                let r = guarded(shutdown, Box::pin(handler.lock(&user))).await;
                procedure.locked(transport.now(), r);
            }
            Step::Call(Request::Retrieve { message, top_lines }) => {
                let r = guarded(shutdown, Box::pin(handler.open(&message, top_lines))).await;
                procedure.opened(transport.now(), r);
            }
            Step::Call(Request::Commit { deleted }) => {
                let r = guarded(shutdown, Box::pin(handler.commit(&deleted))).await;
                procedure.committed(transport.now(), r);
            }
            Step::Pull(body) => {
                // Boxed like the handler calls: a body's read (a database
                // query, say) can be the largest future of all.
                let pull = Box::pin(async { Ok(body.next_chunk().await?) });
                let chunk = guarded(shutdown, pull).await.map_err(io::Error::other);
                procedure.pulled(transport.now(), chunk);
            }
            Step::StartTls { deadline } => {
                // Boxed: the handshake's future is the largest and the
                // rarest; inline it would size every connection's future.
                let handshake = Box::pin(async { transport.start_tls(deadline).await });
                let result = handshake
                    .or(stage(shutdown, Stage::Abort, aborted_io()))
                    .await;
                procedure.tls_started(transport.now(), result);
            }
            Step::Unlock => {
                // A panicking unlock has nothing left to undo; once the
                // shutdown is cancelled it gets a bounded time.
                let unlock = Box::pin(async {
                    let _ = AssertUnwindSafe(handler.unlock()).catch_unwind().await;
                });
                let bounded = async {
                    shutdown.reached(Stage::Cancel).await;
                    let until = transport.now() + ABORT_WAIT;
                    transport.sleep_until(until).await;
                };
                unlock.or(bounded).await;
                procedure.unlocked(transport.now());
            }
            Step::Report(error) => {
                let _ =
                    std::panic::catch_unwind(AssertUnwindSafe(|| handler.session_error(&error)));
            }
            Step::Read { deadline, wake_on } => {
                let read = async { Some(transport.read(buf.space(), deadline).await) };
                let woken = read
                    .or(stage(shutdown, wake_on, None))
                    .or(evicted(tenant.as_deref(), None))
                    .await;
                match woken {
                    Some(outcome) => {
                        let read = outcome.as_ref().ok().copied();
                        procedure.read(transport.now(), outcome, buf.bytes());
                        if let Some(read) = read {
                            buf.adapt(&read);
                        }
                    }
                    None => procedure.interrupted(transport.now()),
                }
            }
            Step::Sleep { until, wake_on } => {
                let sleep = async {
                    transport.sleep_until(until).await;
                    true
                };
                if sleep.or(stage(shutdown, wake_on, false)).await {
                    procedure.woke(transport.now());
                } else {
                    procedure.interrupted(transport.now());
                }
            }
            Step::Done(end) => return end,
        }
    }
}

/// Resolves to `value` once `tenant` is evicted (never without one).
async fn evicted<T>(tenant: Option<&Tenant>, value: T) -> T {
    match tenant {
        Some(tenant) => tenant.evicted().await,
        None => std::future::pending().await,
    }
    value
}

/// Resolves to `value` once the shutdown reaches `at`.
async fn stage<T>(shutdown: &Shutdown, at: Stage, value: T) -> T {
    shutdown.reached(at).await;
    value
}

fn aborted_io() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "server shutdown aborted the connection",
    ))
}

/// A handler call: a panic becomes an internal error, and so does a call
/// still running when the shutdown is cancelled (its future is dropped).
async fn guarded<T>(
    shutdown: &Shutdown,
    call: impl Future<Output = HandlerResult<T>> + Send,
) -> HandlerResult<T> {
    let call = async {
        AssertUnwindSafe(call)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panic_error(p)))
    };
    call.or(async {
        shutdown.reached(Stage::Cancel).await;
        Err(HandlerError::internal("handler call abandoned at shutdown"))
    })
    .await
}
