//! The async drive loop and accept loop, shared by the tokio and async-std adapters.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use pop3_proto::{Event, Request, Session};

use crate::answer::{self, After};
use crate::handler::{AsyncBodySource, AsyncHandler, HandlerError, HandlerResult};
use crate::service::{AcceptBackoff, Admission, ConnectionInfo, NewHandler, Service};
use crate::shutdown::Shutdown;
use crate::{ReadOutcome, SessionEnd, ABORT_WAIT, READ_BUFFER};

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

    /// Writes all of `data` and flushes it (a buffered or TLS stream must
    /// not sit on a reply); fails with `TimedOut` if `deadline` passes first.
    fn write_all(
        &mut self,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until `deadline`.
    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Upgrades the stream to TLS, as server, after STLS; the handshake
    /// must finish by `deadline`.
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
}

/// Runs one connection of `service` over `transport`: a rejected connection
/// gets its `-ERR` line, an admitted one a whole session. Returns how the
/// session ended, or `None` if it was rejected.
pub async fn serve_connection<F, H, T>(
    service: &Service<F>,
    mut transport: T,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    T: AsyncTransport,
{
    let end = match service.admit(&info, transport.now()) {
        Admission::Reject(bytes) => {
            let deadline = transport.now() + crate::FINAL_WRITE;
            let _ = transport.write_all(&bytes, Some(deadline)).await;
            transport.close(transport.now() + crate::FINAL_WRITE).await;
            service.ended(&info, &SessionEnd::rejected());
            None
        }
        Admission::Serve {
            session,
            mut handler,
            permit,
        } => {
            let end = drive(session, &mut transport, &mut handler, service.shutdown()).await;
            transport.close(transport.now() + crate::FINAL_WRITE).await;
            // The session counts as live until its connection is closed.
            drop(permit);
            service.ended(&info, &end);
            Some(end)
        }
    };
    end
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
            .or(stopped(&shutdown, false))
            .await;
        match accepted {
            None => break,
            Some(Ok((transport, info))) => {
                backoff.on_success();
                let service = service.clone();
                runtime.spawn(async move {
                    serve_connection(&service, transport, info).await;
                });
            }
            Some(Err(e)) => {
                let pause = async {
                    runtime.sleep(backoff.on_error(&e)).await;
                    Some(())
                };
                let _ = pause.or(stopped(&shutdown, false)).await;
            }
        }
    }
    // No new connections during the grace period.
    drop(acceptor);
    for (wait, next_stage) in [
        (service.grace(), Shutdown::abort as fn(&Shutdown)),
        (ABORT_WAIT, Shutdown::cancel),
        (ABORT_WAIT, |_: &Shutdown| {}),
    ] {
        if within(runtime, wait, service.all_closed()).await {
            return;
        }
        next_stage(&shutdown);
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

/// Runs `session` over `transport` until it closes, asking `handler`.
///
/// A handler panic is caught: the session ends as a handler failure and the
/// maildrop is still unlocked. When `shutdown` begins, the session closes at
/// its next command boundary; when it is aborted, IO stops at once and the
/// session ends as if the connection were lost; when it is cancelled, a
/// handler call still running is abandoned as an internal error. Every
/// locked maildrop is unlocked (the unlock itself gets [`ABORT_WAIT`] once
/// the shutdown is cancelled).
pub async fn drive<T: AsyncTransport, H: AsyncHandler>(
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
            let deadline = session.poll_timeout();
            let write = async { Some(transport.write_all(&bytes, deadline).await) };
            match write.or(aborted(shutdown)).await {
                Some(Ok(())) => {}
                Some(Err(e)) => crate::write_failed(&mut session, transport.now(), &e),
                None => session.handle_connection_lost(transport.now()),
            }
        }
        if let Some(event) = session.poll_event() {
            let after = match event {
                Event::Request(Request::Authenticate { user, credential }) => {
                    let r = guarded(shutdown, handler.authenticate(&user, &credential)).await;
                    answer::unit(&mut session, transport.now(), r, Session::accept_login)
                }
                Event::Request(Request::Lock { user }) => {
                    let r = guarded(shutdown, handler.lock(&user)).await;
                    answer::lock(&mut session, transport.now(), r)
                }
                Event::Request(Request::Retrieve { message, top_lines }) => {
                    let r = guarded(shutdown, handler.open(&message, top_lines)).await;
                    answer::open(&mut session, transport.now(), r)
                }
                Event::Request(Request::Commit { deleted }) => {
                    let r = guarded(shutdown, handler.commit(&deleted)).await;
                    answer::unit(&mut session, transport.now(), r, Session::commit_done)
                }
                Event::NeedBody => match body.take() {
                    Some(mut source) => {
                        let chunk = guarded(shutdown, async { Ok(source.next_chunk().await?) })
                            .await
                            .map_err(io::Error::other);
                        answer::chunk(&mut session, transport.now(), source, chunk)
                    }
                    None => {
                        let _ = session.end_body(transport.now());
                        After::Continue
                    }
                },
                Event::StartTls => {
                    let handshake =
                        async { Some(transport.start_tls(session.poll_timeout()).await) };
                    match handshake.or(aborted(shutdown)).await {
                        Some(Ok(())) => {
                            let _ = session.handle_tls_established(transport.now());
                        }
                        Some(Err(_)) | None => session.handle_connection_lost(transport.now()),
                    }
                    After::Continue
                }
                Event::Unlock => {
                    // A panicking unlock has nothing left to undo; once the
                    // shutdown is cancelled it gets a bounded time.
                    let unlock = async {
                        let _ = AssertUnwindSafe(handler.unlock()).catch_unwind().await;
                    };
                    let bounded = async {
                        shutdown.cancelled().await;
                        let until = transport.now() + ABORT_WAIT;
                        transport.sleep_until(until).await;
                    };
                    unlock.or(bounded).await;
                    After::Continue
                }
                Event::Closed(reason) => return SessionEnd::new(&session, reason),
            };
            match after {
                After::Continue => {}
                After::Body(source) => body = Some(source),
                After::Report(error) => {
                    body = None;
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        handler.session_error(&error)
                    }));
                }
            }
            continue;
        }
        if shutdown.is_aborted() {
            session.handle_connection_lost(transport.now());
            continue;
        }
        if shutdown.is_begun() && !told_shutdown {
            told_shutdown = true;
            session.handle_shutdown(transport.now());
            continue;
        }
        let deadline = session.poll_timeout();
        if session.wants_input() {
            let read = async { Some(transport.read(&mut buf, deadline).await) };
            match read.or(stopped(shutdown, told_shutdown)).await {
                Some(Ok(ReadOutcome::Data(n))) => {
                    let _ = session.handle_input(transport.now(), &buf[..n]);
                }
                Some(Ok(ReadOutcome::TimedOut)) => session.handle_timeout(transport.now()),
                Some(Ok(ReadOutcome::Eof)) => session.handle_eof(transport.now()),
                Some(Err(_)) => session.handle_connection_lost(transport.now()),
                None => {}
            }
        } else if let Some(deadline) = deadline {
            // Only a timer can move the session (e.g. a held login reply
            // while the input buffer is full).
            let sleep = async {
                transport.sleep_until(deadline).await;
                Some(())
            };
            if sleep.or(stopped(shutdown, told_shutdown)).await.is_some() {
                session.handle_timeout(transport.now());
            }
        } else {
            // Nothing can move this session: treat it as gone.
            session.handle_connection_lost(transport.now());
        }
    }
}

async fn aborted<T>(shutdown: &Shutdown) -> Option<T> {
    shutdown.aborted().await;
    None
}

/// Resolves when the session should stop waiting for the peer: at the start
/// of a shutdown, or at the abort once the session has been told.
async fn stopped<T>(shutdown: &Shutdown, told: bool) -> Option<T> {
    if told {
        shutdown.aborted().await;
    } else {
        shutdown.begun().await;
    }
    None
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
            .unwrap_or_else(|p| Err(answer::panic_error(p)))
    };
    call.or(async {
        shutdown.cancelled().await;
        Err(HandlerError::internal("handler call abandoned at shutdown"))
    })
    .await
}
