//! A POP3 server on async-std.
//!
//! Streams are taken as [`futures_io`] `AsyncRead + AsyncWrite`, so any
//! stream from the futures ecosystem (smol's included) can be served with
//! [`serve_connection`]. async-std itself is discontinued upstream;
//! this crate is kept a thin shim so it can become a smol adapter with a
//! rename.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop in
//! [`pop3_driver`].
//!
//! ```no_run
//! use pop3_async_std::{memory::MemoryStore, Config, Service};
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = MemoryStore::new();
//! store.add_user("alice", "secret");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello!\r\n");
//!
//! let config = Config::builder().hostname("mail.example").build().unwrap();
//! let service = Service::new(config, move |_conn| Ok(store.handler())).max_connections(100);
//! pop3_async_std::bind_and_serve(&service, "127.0.0.1:1110").await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, ToSocketAddrs};
use async_std::task;
use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use pop3_driver::nonblocking::{self, Acceptor, AsyncRuntime, AsyncTransport};
use pop3_driver::{write_all_vectored, ReadOutcome};

pub use pop3_driver::{
    memory, proto, AsyncBodySource, AsyncHandler, ConnectionInfo, HandlerError, HandlerResult,
    NewHandler, ReaderBody, Service, SessionEnd, Shutdown,
};
pub use pop3_proto::{
    CloseReason, Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal,
    ResponseCode, SessionStats, Uid,
};

/// Accepts connections on `listener` and serves each on its own task until
/// the service's shutdown begins; then lets sessions finish (aborting them
/// after the grace period) and returns. Accept errors are retried with a
/// back-off, never returned; a configuration this adapter cannot serve
/// (STLS without TLS) is.
pub async fn serve<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    service.check_transport(false)?;
    nonblocking::serve(service, &AsyncStd, Listener(listener)).await;
    Ok(())
}

/// Binds `addr` and [`serve`]s on it.
pub async fn bind_and_serve<F, H>(service: &Service<F>, addr: impl ToSocketAddrs) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    serve(service, TcpListener::bind(addr).await?).await
}

/// Runs one session of `service` over any futures-io stream (plain TCP,
/// TLS, a smol stream, a test pipe). Returns how it ended, or `None` if the
/// connection was rejected.
pub async fn serve_connection<F, H, S>(
    service: &Service<F>,
    stream: S,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    nonblocking::serve_connection(service, Transport { stream }, info).await
}

/// async-std as the accept loop's runtime.
struct AsyncStd;

impl AsyncRuntime for AsyncStd {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        task::spawn(task);
    }

    async fn sleep(&self, duration: Duration) {
        task::sleep(duration).await;
    }
}

/// An async-std listener as the accept loop's source of connections.
struct Listener(TcpListener);

impl Acceptor for Listener {
    type Transport = Transport<async_std::net::TcpStream>;

    async fn accept(&self) -> io::Result<(Self::Transport, ConnectionInfo)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
        Ok((Transport { stream }, info))
    }
}

/// Runs `fut` until `deadline`; `None` if the deadline came first.
async fn until<T>(
    deadline: Option<Instant>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
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

    async fn write(&mut self, segments: &[Bytes], deadline: Option<Instant>) -> io::Result<()> {
        let write = async {
            let stream = &mut self.stream;
            write_all_vectored(segments, |cx, slices| {
                Pin::new(&mut *stream).poll_write_vectored(cx, slices)
            })
            .await?;
            stream.flush().await
        };
        until(deadline, write)
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        task::sleep(deadline.saturating_duration_since(Instant::now())).await;
    }

    async fn close(&mut self, deadline: Instant) {
        let _ = until(Some(deadline), self.stream.close()).await;
    }
}
