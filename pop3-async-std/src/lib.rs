//! A POP3 server on async-std.
//!
//! Streams are taken as [`futures_io`] `AsyncRead + AsyncWrite`, so any
//! stream from the futures ecosystem (smol's included) can be served with
//! [`Server::serve_connection`]. async-std itself is discontinued upstream;
//! this crate is kept a thin shim so it can become a smol adapter with a
//! rename.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop in
//! [`pop3_driver`].
//!
//! ```no_run
//! use pop3_async_std::{memory::MemoryStore, Config, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = MemoryStore::new();
//! store.add_user("alice", "secret");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello!\r\n");
//!
//! let config = Config::builder().hostname("mail.example").build().unwrap();
//! let server = Server::new(config, move |_conn| Ok(store.handler())).max_connections(100);
//! let listener = async_std::net::TcpListener::bind("127.0.0.1:1110").await?;
//! server.serve(listener).await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_std::net::TcpListener;
use async_std::task::{self, JoinHandle};
use bytes::{Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use pop3_driver::nonblocking::{drive, AsyncTransport};
use pop3_driver::{AcceptBackoff, Admission, ReadOutcome, ServerCore};

pub use pop3_driver::{
    memory, AsyncBodySource, AsyncHandler, ConnectionInfo, HandlerError, HandlerResult, SessionEnd,
    Shutdown,
};
pub use pop3_proto::{
    Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal, ResponseCode, Uid,
};

/// How long an aborted shutdown waits for handlers before dropping sessions.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// A POP3 server: accepts connections and runs a session task for each,
/// with a handler made by the connection hook.
pub struct Server<F> {
    core: Arc<ServerCore<F>>,
}

impl<F> Clone for Server<F> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
        }
    }
}

impl<F, H> Server<F>
where
    F: Fn(&ConnectionInfo) -> Result<H, Refusal> + Send + Sync + 'static,
    H: AsyncHandler,
{
    /// A server with `config`. `new_handler` is called for every connection
    /// (popart's `OnNewConnection`); returning a refusal sends it as `-ERR`
    /// and closes the connection.
    pub fn new(config: Config, new_handler: F) -> Self {
        Self {
            core: Arc::new(ServerCore::new(config, new_handler)),
        }
    }

    /// Caps concurrent sessions; connections over the cap get
    /// `-ERR [SYS/TEMP]` and are closed. Set before serving.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.core_mut().set_max_connections(Some(max));
        self
    }

    /// How long a graceful shutdown waits for sessions before aborting them
    /// (default 30 s). Set before serving.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.core_mut().set_shutdown_grace(grace);
        self
    }

    /// The signal that stops this server: [`Shutdown::begin`] for a graceful stop.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.core.shutdown().clone()
    }

    /// Accepts connections until a shutdown begins, then waits for the
    /// sessions (aborting them after the grace period) and returns.
    /// Accept errors are retried with a back-off, never returned.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let shutdown = self.core.shutdown().clone();
        // Running session tasks by id; each removes itself when done, so
        // only live sessions are held.
        let sessions: Arc<Mutex<HashMap<u64, JoinHandle<()>>>> = Arc::default();
        let mut next_id = 0u64;
        let mut backoff = AcceptBackoff::default();
        loop {
            let stop = async {
                shutdown.begun().await;
                None
            };
            let accepted = match async { Some(listener.accept().await) }.or(stop).await {
                Some(accepted) => accepted,
                None => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.on_success();
                    let _ = stream.set_nodelay(true);
                    let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
                    let server = self.clone();
                    let id = next_id;
                    next_id += 1;
                    let registry = sessions.clone();
                    let mut running = lock(&sessions);
                    let handle = task::spawn(async move {
                        server.serve_connection(stream, info).await;
                        lock(&registry).remove(&id);
                    });
                    running.insert(id, handle);
                }
                Err(e) => task::sleep(backoff.on_error(&e)).await,
            }
        }
        drop(listener);
        let grace = within(self.core.shutdown_grace(), self.core.all_closed());
        if !grace.await {
            shutdown.abort();
            if !within(ABORT_WAIT, self.core.all_closed()).await {
                // Stuck in a handler call: drop those sessions.
                let stuck: Vec<_> = lock(&sessions).drain().map(|(_, h)| h).collect();
                for session in stuck {
                    session.cancel().await;
                }
            }
        }
        Ok(())
    }

    /// Runs one session over any futures-io stream (plain TCP, TLS, a test
    /// pipe). Returns how it ended, or `None` if the connection was rejected.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnectionInfo) -> Option<SessionEnd>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut transport = Transport { stream };
        match self.core.admit(&info, transport.now()) {
            Admission::Reject(bytes) => {
                let deadline = transport.now() + Duration::from_secs(10);
                let _ = transport.write_all(&bytes, Some(deadline)).await;
                let _ = transport.stream.close().await;
                None
            }
            Admission::Serve {
                session,
                mut handler,
                permit,
            } => {
                let end = drive(session, &mut transport, &mut handler, self.core.shutdown()).await;
                let _ = transport.stream.close().await;
                drop(permit);
                Some(end)
            }
        }
    }

    fn core_mut(&mut self) -> &mut ServerCore<F> {
        Arc::get_mut(&mut self.core).expect("configure the server before cloning or serving it")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True if `fut` completed within `limit`.
async fn within(limit: Duration, fut: impl Future<Output = ()>) -> bool {
    async {
        fut.await;
        true
    }
    .or(async {
        task::sleep(limit).await;
        false
    })
    .await
}

/// Runs `fut` until `deadline`; `None` if the deadline came first.
async fn until<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    let Some(deadline) = deadline else {
        return Some(fut.await);
    };
    async { Some(fut.await) }
        .or(async {
            task::sleep(deadline.saturating_duration_since(Instant::now())).await;
            None
        })
        .await
}

/// A futures-io stream as the drive loop's transport.
struct Transport<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncTransport for Transport<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    async fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        Ok(match until(deadline, self.stream.read(buf)).await {
            None => ReadOutcome::TimedOut,
            Some(Ok(0)) => ReadOutcome::Eof,
            Some(n) => ReadOutcome::Data(n?),
        })
    }

    async fn write_all(&mut self, data: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        until(deadline, self.stream.write_all(data))
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        task::sleep(deadline.saturating_duration_since(Instant::now())).await;
    }
}

/// A message body read from a futures-io [`AsyncRead`] in chunks.
#[derive(Debug)]
pub struct ReaderBody<R> {
    reader: R,
    chunk: usize,
}

impl<R: AsyncRead + Unpin + Send> ReaderBody<R> {
    /// Reads `reader` in chunks of [`pop3_driver::DEFAULT_CHUNK`] octets.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            chunk: pop3_driver::DEFAULT_CHUNK,
        }
    }
}

impl<R: AsyncRead + Unpin + Send> AsyncBodySource for ReaderBody<R> {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::zeroed(self.chunk);
        let n = self.reader.read(&mut buf).await?;
        buf.truncate(n);
        Ok((n > 0).then(|| buf.freeze()))
    }
}
