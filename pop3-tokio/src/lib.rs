//! A POP3 server on tokio.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop and the
//! [`Service`] in [`pop3_driver`]. This crate is the tokio glue: sockets,
//! deadlines on tokio's clock (so `start_paused` tests work), spawning, the
//! accept loop, and TLS with tokio-rustls (STLS, and implicit TLS
//! listeners with [`serve_tls`]).
//!
//! ```no_run
//! use pop3_tokio::{memory::MemoryStore, Config, Service};
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = MemoryStore::new();
//! store.add_user("alice", "secret");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello!\r\n");
//!
//! let config = Config::builder().hostname("mail.example").build().unwrap();
//! let service = Service::new(config, move |_conn| Ok(store.handler())).max_connections(100);
//! pop3_tokio::bind_and_serve(&service, "127.0.0.1:1110").await
//! # }
//! ```
//!
//! # Serving your own store
//!
//! Implement [`AsyncHandler`]; bodies come from any [`AsyncBodySource`],
//! e.g. a file through [`ReaderBody`]. Here a session runs over an
//! in-process pipe:
//!
//! ```
//! use bytes::Bytes;
//! use pop3_tokio::{AsyncHandler, Config, ConnectionInfo, Credential, HandlerResult};
//! use pop3_tokio::{Maildrop, MessageInfo, MessageRef, Refusal, Service, Uid};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! struct Hello;
//!
//! impl AsyncHandler for Hello {
//!     type Body = Option<Bytes>;
//!
//!     async fn authenticate(&mut self, user: &str, cred: &Credential) -> HandlerResult<()> {
//!         match cred {
//!             Credential::Password(p) if user == "joe" && p.expose() == b"secret" => Ok(()),
//!             _ => Err(Refusal::auth("invalid user name or password").into()),
//!         }
//!     }
//!     async fn lock(&mut self, _user: &str) -> HandlerResult<Maildrop> {
//!         let uid = Uid::new("hello-1").unwrap();
//!         Ok(Maildrop::new([MessageInfo { size: 23, uid }]).unwrap())
//!     }
//!     async fn open(&mut self, _msg: &MessageRef, _top: Option<u64>) -> HandlerResult<Self::Body> {
//!         Ok(Some(Bytes::from_static(b"Subject: hi\r\n\r\nHello!\r\n")))
//!     }
//!     async fn commit(&mut self, _deleted: &[MessageRef]) -> HandlerResult<()> {
//!         Ok(())
//!     }
//!     async fn unlock(&mut self) {}
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let service = Service::new(Config::builder().build().unwrap(), |_: &ConnectionInfo| Ok(Hello));
//! let (mut client, server_side) = tokio::io::duplex(4096);
//! let info = ConnectionInfo::new(None, None);
//! let session = tokio::spawn(async move {
//!     pop3_tokio::serve_connection(&service, server_side, info).await
//! });
//! client.write_all(b"USER joe\r\nPASS secret\r\nRETR 1\r\nQUIT\r\n").await.unwrap();
//! let mut transcript = String::new();
//! client.read_to_string(&mut transcript).await.unwrap();
//! assert!(transcript.contains("+OK 23 octets\r\nSubject: hi\r\n\r\nHello!\r\n.\r\n"));
//! let end = session.await.unwrap().unwrap();
//! assert_eq!(end.user.as_deref(), Some("joe"));
//! # });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pop3_driver::nonblocking::{self, Acceptor, AsyncRuntime, AsyncTransport};
use pop3_driver::{write_all_vectored, ReadOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::time::timeout_at;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub use pop3_driver::tls::{self, TlsConfig};
pub use pop3_driver::{
    memory, proto, AsyncBodySource, AsyncHandler, ConnectionInfo, FailedLoginLimits, HandlerError,
    HandlerResult, NewHandler, Service, SessionEnd, Shutdown,
};
pub use pop3_driver::{observe, proxy_header};
pub use pop3_proto::{
    CloseReason, Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal,
    ResponseCode, SessionStats, Uid,
};

/// A message body read in chunks from a reader; for a tokio reader (a
/// `tokio::fs::File`) use [`tokio_body`].
pub type ReaderBody<R> = pop3_driver::ReaderBody<R>;

/// A body read in chunks from a tokio [`AsyncRead`]: see [`tokio_body`].
pub type TokioBody<R> = ReaderBody<Compat<R>>;

/// A body read in chunks from a tokio [`AsyncRead`] (a file, a socket).
pub fn tokio_body<R: AsyncRead + Unpin + Send>(reader: R) -> TokioBody<R> {
    ReaderBody::new(reader.compat())
}

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
    nonblocking::serve(service, &Tokio, Listener::new(listener, tls, false)).await;
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
    nonblocking::serve(service, &Tokio, Listener::new(listener, tls, true)).await;
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

/// Binds `addr` (resolved without blocking the runtime) and [`serve`]s on it.
pub async fn bind_and_serve<F, H>(service: &Service<F>, addr: impl ToSocketAddrs) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    serve(service, TcpListener::bind(addr).await?).await
}

/// Runs one session of `service` over any stream (plain TCP, TLS, a test
/// pipe); STLS starts TLS with [`Service::tls`]. Returns how it ended, or
/// `None` if the connection was rejected.
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
/// stream: the handshake with [`Service::tls`] first, then the session.
/// Returns how it ended (with [`SessionEnd::tls_error`] if the handshake
/// failed), or `None` if the connection was rejected.
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

/// tokio as the accept loop's runtime.
struct Tokio;

impl AsyncRuntime for Tokio {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A tokio listener as the accept loop's source of connections.
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
    type Transport = Transport<tokio::net::TcpStream>;

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

/// The stream under a session: plain, or tokio-rustls over it once a
/// handshake succeeded.
enum Link<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
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
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(t) => t.is_write_vectored(),
            Self::Lost => false,
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            // Sends close_notify first.
            Self::Tls(t) => Pin::new(t).poll_shutdown(cx),
            Self::Lost => Poll::Ready(Ok(())),
        }
    }
}

/// A tokio stream as the drive loop's transport. Reads tokio's clock, so
/// tests with paused time work.
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
        tokio::time::Instant::now().into_std()
    }

    async fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        let read = self.stream.read(buf);
        let n = match deadline {
            Some(at) => match timeout_at(at.into(), read).await {
                Ok(n) => n,
                Err(_) => return Ok(ReadOutcome::TimedOut),
            },
            None => read.await,
        };
        match n {
            Ok(0) => Ok(ReadOutcome::Eof),
            Ok(n) => Ok(ReadOutcome::Data(n)),
            // A TLS peer that closes without close_notify has still closed.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(ReadOutcome::Eof),
            Err(e) => Err(e),
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

    async fn close(&mut self, deadline: Instant) {
        let _ = timeout_at(deadline.into(), self.stream.shutdown()).await;
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
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let Link::Plain(stream) = std::mem::replace(&mut self.stream, Link::Lost) else {
            unreachable!("checked above");
        };
        let accept = acceptor.accept(stream);
        let stream = match deadline {
            Some(at) => timeout_at(at.into(), accept).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            })?,
            None => accept.await?,
        };
        self.stream = Link::Tls(Box::new(stream));
        Ok(())
    }
}
