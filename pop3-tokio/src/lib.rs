//! A POP3 server on tokio.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop and the
//! [`Service`] in [`pop3_driver`]. This crate is the tokio glue: sockets,
//! deadlines on tokio's clock (so `start_paused` tests work), spawning, and
//! the accept loop.
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
use std::time::{Duration, Instant};

use bytes::Bytes;
use pop3_driver::nonblocking::{self, Acceptor, AsyncRuntime, AsyncTransport};
use pop3_driver::{write_all_vectored, ReadOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::time::timeout_at;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub use pop3_driver::{
    memory, proto, AsyncBodySource, AsyncHandler, ConnectionInfo, HandlerError, HandlerResult,
    NewHandler, Service, SessionEnd, Shutdown,
};
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
/// (STLS without TLS) is.
pub async fn serve<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    service.check_transport(false)?;
    nonblocking::serve(service, &Tokio, Listener(listener)).await;
    Ok(())
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
/// pipe). Returns how it ended, or `None` if the connection was rejected.
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
struct Listener(TcpListener);

impl Acceptor for Listener {
    type Transport = Transport<tokio::net::TcpStream>;

    async fn accept(&self) -> io::Result<(Self::Transport, ConnectionInfo)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
        Ok((Transport { stream }, info))
    }
}

/// A tokio stream as the drive loop's transport. Reads tokio's clock, so
/// tests with paused time work.
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
}
