//! A POP3 server on tokio.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop in
//! [`pop3_driver`]. This crate is the tokio glue: sockets, deadlines with
//! tokio's clock (so `start_paused` tests work), spawning, and the accept loop.
//!
//! ```no_run
//! use pop3_tokio::{memory::MemoryStore, Config, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = MemoryStore::new();
//! store.add_user("alice", "secret");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello!\r\n");
//!
//! let config = Config::builder().hostname("mail.example").build().unwrap();
//! let server = Server::new(config, move |_conn| Ok(store.handler())).max_connections(100);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1110").await?;
//! server.serve(listener).await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pop3_driver::nonblocking::{drive, AsyncTransport};
use pop3_driver::{AcceptBackoff, Admission, ReadOutcome, ServerCore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

pub use pop3_driver::{
    memory, AsyncBodySource, AsyncHandler, ConnectionInfo, HandlerError, HandlerResult, SessionEnd,
    Shutdown,
};
pub use pop3_proto::{
    Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal, ResponseCode, Uid,
};

/// How long an aborted shutdown waits for handlers before dropping sessions.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// A POP3 server: accepts connections and runs a session for each, with a
/// handler made by the connection hook.
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

    /// How long [`Shutdown::begin`] waits for sessions before aborting them
    /// (default 30 s). Set before serving.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.core_mut().set_shutdown_grace(grace);
        self
    }

    /// The signal that stops this server: [`Shutdown::begin`] for a graceful stop.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.core.shutdown().clone()
    }

    /// Sessions running now.
    pub fn live_sessions(&self) -> usize {
        self.core.live_sessions()
    }

    /// Accepts connections until a shutdown begins, then waits for the
    /// sessions (aborting them after the grace period) and returns.
    /// Accept errors are retried with a back-off, never returned.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let shutdown = self.core.shutdown().clone();
        let mut sessions = JoinSet::new();
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.begun() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.on_success();
                    let _ = stream.set_nodelay(true);
                    let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
                    let server = self.clone();
                    sessions.spawn(async move { server.serve_connection(stream, info).await });
                }
                Err(e) => tokio::time::sleep(backoff.on_error(&e)).await,
            }
            while sessions.try_join_next().is_some() {}
        }
        drop(listener);
        let grace = tokio::time::sleep(self.core.shutdown_grace());
        tokio::select! {
            () = self.core.all_closed() => {}
            () = grace => {
                shutdown.abort();
                if tokio::time::timeout(ABORT_WAIT, self.core.all_closed()).await.is_err() {
                    sessions.abort_all();
                }
            }
        }
        while sessions.join_next().await.is_some() {}
        Ok(())
    }

    /// Runs one session over any stream (plain TCP, TLS, a test pipe).
    /// Returns how it ended, or `None` if the connection was rejected.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnectionInfo) -> Option<SessionEnd>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut transport = Transport { stream };
        match self.core.admit(&info, transport.now()) {
            Admission::Reject(bytes) => {
                let deadline = transport.now() + Duration::from_secs(10);
                let _ = transport.write_all(&bytes, Some(deadline)).await;
                let _ = transport.stream.shutdown().await;
                None
            }
            Admission::Serve {
                session,
                mut handler,
                permit,
            } => {
                let end = drive(session, &mut transport, &mut handler, self.core.shutdown()).await;
                let _ = transport.stream.shutdown().await;
                drop(permit);
                Some(end)
            }
        }
    }

    fn core_mut(&mut self) -> &mut ServerCore<F> {
        Arc::get_mut(&mut self.core).expect("configure the server before cloning or serving it")
    }
}

/// A tokio stream as the drive loop's transport.
struct Transport<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncTransport for Transport<S> {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    async fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        let read = self.stream.read(buf);
        let n = match deadline {
            Some(at) => match timeout_at(at.into(), read).await {
                Ok(n) => n?,
                Err(_) => return Ok(ReadOutcome::TimedOut),
            },
            None => read.await?,
        };
        Ok(if n == 0 {
            ReadOutcome::Eof
        } else {
            ReadOutcome::Data(n)
        })
    }

    async fn write_all(&mut self, data: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        let write = self.stream.write_all(data);
        match deadline {
            Some(at) => timeout_at(at.into(), write)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => write.await,
        }
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A message body read from a tokio [`AsyncRead`] (a file, a socket) in chunks.
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
        let mut buf = BytesMut::with_capacity(self.chunk);
        let n = self.reader.read_buf(&mut buf).await?;
        Ok((n > 0).then(|| buf.freeze()))
    }
}
