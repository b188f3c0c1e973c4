//! A POP3 server on async-std.
//!
//! Streams are taken as [`futures_io`] `AsyncRead + AsyncWrite`, so any
//! stream from the futures ecosystem (smol's included) can be served with
//! [`serve_connection`]. async-std itself is discontinued upstream;
//! this crate is kept a thin shim so it can become a smol adapter with a
//! rename.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop in
//! [`pop3_driver`]. TLS runs on futures-rustls: STLS, and implicit TLS
//! listeners with [`serve_tls`].
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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, ToSocketAddrs};
use async_std::task;
use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use pop3_driver::nonblocking::{self, Acceptor, AsyncRuntime, AsyncTransport};
use pop3_driver::{write_all_vectored, ReadOutcome};

pub use pop3_driver::tls::{self, TlsConfig};
pub use pop3_driver::{
    memory, proto, AsyncBodySource, AsyncHandler, ConnectionInfo, FailedLoginLimits, HandlerError,
    HandlerResult, NewHandler, ReaderBody, Service, SessionEnd, Shutdown,
};
pub use pop3_driver::{observe, proxy_header};
pub use pop3_proto::{
    CloseReason, Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal,
    ResponseCode, SessionStats, Uid,
};

/// Accepts connections on `listener` and serves each on its own task until
/// the service's shutdown begins; then lets sessions finish (aborting them
/// after the grace period) and returns. Accept errors are retried with a
/// back-off, never returned; a configuration this adapter cannot serve
/// (STLS without [`Service::tls`]) is.
pub async fn serve<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    service.check_transport(service.tls_config().is_some())?;
    let tls = service.tls_config().cloned();
    nonblocking::serve(service, &AsyncStd, Listener::new(listener, tls, false)).await;
    Ok(())
}

/// As [`serve`], for an implicit TLS listener (RFC 8314, port 995): each
/// connection starts with the TLS handshake (bounded by
/// [`tls::handshake_deadline`]); its session knows TLS is active, so CAPA
/// offers no STLS and passwords are allowed. A failed or stalled handshake
/// closes that connection only. Needs [`Service::tls`].
pub async fn serve_tls<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    service.check_implicit_tls()?;
    let tls = service.tls_config().cloned();
    nonblocking::serve(service, &AsyncStd, Listener::new(listener, tls, true)).await;
    Ok(())
}

/// Binds `addr` and [`serve_tls`]s on it.
pub async fn bind_and_serve_tls<F, H>(
    service: &Service<F>,
    addr: impl ToSocketAddrs,
) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    serve_tls(service, TcpListener::bind(addr).await?).await
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
/// TLS, a smol stream, a test pipe); STLS starts TLS with [`Service::tls`].
/// Returns how it ended, or `None` if the connection was rejected.
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
    let transport = Transport::new(stream, service.tls_config().cloned());
    nonblocking::serve_connection(service, transport, info).await
}

/// Runs one implicit TLS connection (RFC 8314) of `service` over any
/// futures-io stream: the handshake with [`Service::tls`] first, then the
/// session. Returns how it ended (with [`SessionEnd::tls_error`] if the
/// handshake failed), or `None` if the connection was rejected.
pub async fn serve_tls_connection<F, H, S>(
    service: &Service<F>,
    stream: S,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: AsyncHandler,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let transport = Transport::new(stream, service.tls_config().cloned());
    nonblocking::serve_tls_connection(service, transport, info).await
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
struct Listener {
    listener: TcpListener,
    tls: Option<TlsConfig>,
    implicit_tls: bool,
}

impl Listener {
    fn new(listener: TcpListener, tls: Option<TlsConfig>, implicit_tls: bool) -> Self {
        Self {
            listener,
            tls,
            implicit_tls,
        }
    }
}

impl Acceptor for Listener {
    type Transport = Transport<async_std::net::TcpStream>;

    async fn accept(&self) -> io::Result<(Self::Transport, ConnectionInfo)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
        Ok((Transport::new(stream, self.tls.clone()), info))
    }

    fn implicit_tls(&self) -> bool {
        self.implicit_tls
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

/// The stream under a session: plain, or futures-rustls over it once a
/// handshake succeeded.
enum Link<S> {
    Plain(S),
    Tls(Box<futures_rustls::server::TlsStream<S>>),
    /// A failed handshake took the stream (and closed it).
    Lost,
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was lost in a failed TLS handshake",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Link<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(t).poll_read(cx, buf),
            Self::Lost => Poll::Ready(Err(lost())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Link<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(t).poll_write(cx, buf),
            Self::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Self::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            // Writes every pending TLS record, then flushes the socket.
            Self::Tls(t) => Pin::new(t).poll_flush(cx),
            Self::Lost => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            // Sends close_notify first.
            Self::Tls(t) => Pin::new(t).poll_close(cx),
            Self::Lost => Poll::Ready(Ok(())),
        }
    }
}

/// A futures-io stream as the drive loop's transport.
struct Transport<S> {
    stream: Link<S>,
    /// Where handshakes get their certificate.
    tls: Option<TlsConfig>,
}

impl<S> Transport<S> {
    fn new(stream: S, tls: Option<TlsConfig>) -> Self {
        Self {
            stream: Link::Plain(stream),
            tls,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncTransport for Transport<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    async fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        match until(deadline, self.stream.read(buf)).await {
            None => Ok(ReadOutcome::TimedOut),
            Some(Ok(0)) => Ok(ReadOutcome::Eof),
            Some(Ok(n)) => Ok(ReadOutcome::Data(n)),
            // A TLS peer that closes without close_notify has still closed.
            Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(ReadOutcome::Eof),
            Some(Err(e)) => Err(e),
        }
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

    fn can_start_tls(&self) -> bool {
        self.tls.is_some()
    }

    async fn start_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS is not configured",
            ));
        };
        if !matches!(self.stream, Link::Plain(_)) {
            return Err(io::Error::other("TLS is already active"));
        }
        let acceptor = futures_rustls::TlsAcceptor::from(tls.current());
        let Link::Plain(stream) = std::mem::replace(&mut self.stream, Link::Lost) else {
            unreachable!("checked above");
        };
        let stream = until(deadline, acceptor.accept(stream))
            .await
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            })?;
        self.stream = Link::Tls(Box::new(stream));
        Ok(())
    }
}
