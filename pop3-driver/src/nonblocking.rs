//! The async drive loop, shared by the tokio and async-std adapters.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use pop3_proto::{Event, Request, Session};

use crate::answer::{self, After};
use crate::handler::{AsyncBodySource, AsyncHandler, HandlerResult};
use crate::service::{AcceptBackoff, Admission, ConnectionInfo, NewHandler, Service};
use crate::shutdown::Shutdown;
use crate::{ReadOutcome, SessionEnd, READ_BUFFER};

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

    /// Writes all of `data`; fails with `TimedOut` if `deadline` passes first.
    fn write_all(
        &mut self,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until `deadline`.
    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Upgrades the stream to TLS, as server, after STLS.
    fn start_tls(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS is not configured",
            ))
        }
    }

    /// Closes the connection cleanly (flush, then shut down the write side).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// What the shared accept loop needs from an async runtime.
pub trait AsyncRuntime: Send + Sync {
    /// A spawned task.
    type Task: Send + 'static;

    /// Spawns a task.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Self::Task;

    /// Stops a task, dropping its future.
    fn cancel(&self, task: Self::Task) -> impl Future<Output = ()> + Send;

    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
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
            let deadline = transport.now() + crate::REJECT_WRITE;
            let _ = transport.write_all(&bytes, Some(deadline)).await;
            service.ended(&info, &SessionEnd::rejected());
            None
        }
        Admission::Serve {
            session,
            mut handler,
            permit,
        } => {
            let end = drive(session, &mut transport, &mut handler, service.shutdown()).await;
            drop(permit);
            service.ended(&info, &end);
            Some(end)
        }
    };
    transport.close().await;
    end
}

/// Accepts connections with `accept` and serves each on its own task until
/// the service's shutdown begins; then waits for the sessions, aborts them
/// after the grace period, and cancels any still stuck in a handler call.
/// Accept errors are retried with a back-off, never returned.
pub async fn serve<F, H, R, T, A>(service: &Service<F>, runtime: &R, mut accept: impl FnMut() -> A)
where
    F: NewHandler<H>,
    H: AsyncHandler,
    R: AsyncRuntime,
    T: AsyncTransport + 'static,
    A: Future<Output = io::Result<(T, ConnectionInfo)>>,
{
    let shutdown = service.shutdown().clone();
    // Running sessions by id; each removes itself when done.
    let running: Arc<Mutex<HashMap<u64, R::Task>>> = Arc::default();
    let mut next_id = 0u64;
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = match async { Some(accept().await) }
            .or(stopped(&shutdown, false))
            .await
        {
            Some(accepted) => accepted,
            None => break,
        };
        match accepted {
            Ok((transport, info)) => {
                backoff.on_success();
                let (id, service, registry) = (next_id, service.clone(), running.clone());
                next_id += 1;
                // Hold the registry while spawning, so a session that ends at
                // once removes itself only after it was inserted.
                let mut tasks = lock(&running);
                let task = runtime.spawn(async move {
                    serve_connection(&service, transport, info).await;
                    lock(&registry).remove(&id);
                });
                tasks.insert(id, task);
            }
            Err(e) => runtime.sleep(backoff.on_error(&e)).await,
        }
    }
    if !within(runtime, service.grace(), service.all_closed()).await {
        shutdown.abort();
        if !within(runtime, crate::ABORT_WAIT, service.all_closed()).await {
            let stuck: Vec<R::Task> = lock(&running).drain().map(|(_, t)| t).collect();
            for task in stuck {
                runtime.cancel(task).await;
            }
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `session` over `transport` until it closes, asking `handler`.
///
/// A handler panic is caught: the session ends as a handler failure and the
/// maildrop is still unlocked. When `shutdown` begins, the session closes at
/// its next command boundary; when it is aborted, IO stops at once and the
/// session ends as if the peer had gone (still unlocking).
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
        while let Some(bytes) = session.poll_transmit() {
            let deadline = session.poll_timeout();
            let write = async { Some(transport.write_all(&bytes, deadline).await) };
            match write.or(aborted(shutdown)).await {
                Some(Ok(())) => {}
                Some(Err(e)) => crate::write_failed(&mut session, transport.now(), &e),
                None => session.handle_eof(transport.now()),
            }
        }
        if let Some(event) = session.poll_event() {
            let after = match event {
                Event::Request(Request::Authenticate { user, credential }) => {
                    let r = guarded(handler.authenticate(&user, &credential)).await;
                    answer::unit(&mut session, transport.now(), r, Session::accept_login)
                }
                Event::Request(Request::Lock { user }) => {
                    let r = guarded(handler.lock(&user)).await;
                    answer::lock(&mut session, transport.now(), r)
                }
                Event::Request(Request::Retrieve { message, top_lines }) => {
                    let r = guarded(handler.open(&message, top_lines)).await;
                    answer::open(&mut session, transport.now(), r)
                }
                Event::Request(Request::Commit { deleted }) => {
                    let r = guarded(handler.commit(&deleted)).await;
                    answer::unit(&mut session, transport.now(), r, Session::commit_done)
                }
                Event::NeedBody => match body.take() {
                    Some(mut source) => {
                        let chunk = AssertUnwindSafe(source.next_chunk())
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|p| Err(io::Error::other(answer::panic_error(p))));
                        answer::chunk(&mut session, transport.now(), source, chunk)
                    }
                    None => {
                        let _ = session.end_body(transport.now());
                        After::Continue
                    }
                },
                Event::StartTls => {
                    match transport.start_tls().await {
                        Ok(()) => {
                            let _ = session.handle_tls_established(transport.now());
                        }
                        Err(_) => session.handle_eof(transport.now()),
                    }
                    After::Continue
                }
                Event::Unlock => {
                    // A panicking unlock has nothing left to undo.
                    let _ = AssertUnwindSafe(handler.unlock()).catch_unwind().await;
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
            session.handle_eof(transport.now());
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
                Some(Ok(ReadOutcome::Eof) | Err(_)) => session.handle_eof(transport.now()),
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
            session.handle_eof(transport.now());
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

async fn guarded<T>(call: impl Future<Output = HandlerResult<T>> + Send) -> HandlerResult<T> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(answer::panic_error(p)))
}
