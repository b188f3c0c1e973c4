//! A blocking POP3 server: one thread per connection, `std::net` sockets.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop and the
//! [`Service`] in [`pop3_driver`]. This crate is the std glue: sockets with
//! read and write timeouts, threads, and the accept loop.
//!
//! # Serving your own store
//!
//! Implement [`Handler`] (one value per connection), wrap a hook that makes
//! handlers in a [`Service`], and [`serve`] it:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use bytes::Bytes;
//! use pop3_std::{Credential, Handler, HandlerResult, Maildrop, MessageInfo, MessageRef};
//! use pop3_std::{Config, Refusal, Service, Uid};
//!
//! /// One fixed message for one user.
//! struct Hello;
//!
//! impl Handler for Hello {
//!     type Body = Option<Bytes>; // a body held in memory, sent in one piece
//!
//!     fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
//!         match credential {
//!             Credential::Password(p) if user == "joe" && p.expose() == b"secret" => Ok(()),
//!             Credential::Apop(a) if user == "joe" && a.verify(b"secret") => Ok(()),
//!             _ => Err(Refusal::auth("invalid user name or password").into()),
//!         }
//!     }
//!     fn lock(&mut self, _user: &str) -> HandlerResult<Maildrop> {
//!         let uid = Uid::new("hello-1").unwrap();
//!         Ok(Maildrop::new([MessageInfo { size: 23, uid }]).unwrap())
//!     }
//!     fn open(&mut self, _msg: &MessageRef, _top: Option<u64>) -> HandlerResult<Self::Body> {
//!         Ok(Some(Bytes::from_static(b"Subject: hi\r\n\r\nHello!\r\n")))
//!     }
//!     fn commit(&mut self, _deleted: &[MessageRef]) -> HandlerResult<()> {
//!         Ok(()) // remove the messages here, all or none
//!     }
//!     fn unlock(&mut self) {}
//! }
//!
//! let service = Service::new(Config::builder().build().unwrap(), |_conn| Ok(Hello));
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let server = std::thread::spawn({
//!     let service = service.clone();
//!     move || pop3_std::serve(&service, listener)
//! });
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"USER joe\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")?;
//! let replies: Vec<String> = BufReader::new(client).lines().collect::<Result<_, _>>()?;
//! assert_eq!(replies[3], "+OK 1 23");
//!
//! service.shutdown_handle().begin();
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pop3_driver::blocking::{self, Transport};
use pop3_driver::{AcceptBackoff, ReadOutcome, ABORT_WAIT};

pub use pop3_driver::{
    memory, BodySource, ConnectionInfo, Handler, HandlerError, HandlerResult, NewHandler, ReadBody,
    Service, SessionEnd, Shutdown,
};
pub use pop3_proto::{
    Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal, ResponseCode, Uid,
};

/// A byte stream with read and write timeouts: what a session runs over.
pub trait Stream: Read + Write + Send {
    /// Sets the timeouts of the next reads and writes (`None`: block).
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// Open connections, by id: clones of their sockets, closed on an aborted
/// shutdown so that blocked reads and writes return.
type OpenSockets = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// Accepts connections on `listener` and serves each on its own thread
/// until the service's shutdown begins; then lets sessions finish (aborting
/// them after the grace period) and returns. Accept errors are retried
/// with a back-off, never returned.
pub fn serve<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    let local = listener.local_addr()?;
    let shutdown = service.shutdown_handle();
    // A blocked accept() cannot be interrupted: wake it with a connection.
    let waker = std::thread::spawn({
        let shutdown = shutdown.clone();
        move || {
            futures_lite::future::block_on(shutdown.begun());
            let _ = TcpStream::connect(local);
        }
    });
    let open = OpenSockets::default();
    let mut backoff = AcceptBackoff::default();
    let mut next_id = 0;
    while !shutdown.is_begun() {
        match listener.accept() {
            Ok((stream, peer)) if !shutdown.is_begun() => {
                backoff.on_success();
                spawn_session(service, &open, next_id, stream, peer);
                next_id += 1;
            }
            Ok(_) => break,
            Err(e) => std::thread::sleep(backoff.on_error(&e)),
        }
    }
    drop(listener);
    let _ = waker.join();
    if !service.wait_all_closed(Instant::now() + service.grace()) {
        shutdown.abort();
        for stream in lock(&open).values() {
            let _ = stream.shutdown(Both::Both);
        }
        service.wait_all_closed(Instant::now() + ABORT_WAIT);
    }
    Ok(())
}

/// Binds `addr` and [`serve`]s on it.
pub fn bind_and_serve<F, H>(service: &Service<F>, addr: impl ToSocketAddrs) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    serve(service, TcpListener::bind(addr)?)
}

/// Runs one session of `service` over any [`Stream`] on the calling thread.
/// Returns how it ended, or `None` if the connection was rejected.
pub fn serve_connection<F, H, S>(
    service: &Service<F>,
    stream: S,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: Handler,
    S: Stream,
{
    let mut transport = StdTransport { stream };
    let end = blocking::serve_connection(service, &mut transport, &info);
    let _ = transport.stream.flush();
    end
}

fn spawn_session<F, H>(
    service: &Service<F>,
    open: &OpenSockets,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
) where
    F: NewHandler<H>,
    H: Handler,
{
    let _ = stream.set_nodelay(true);
    let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
    if let Ok(clone) = stream.try_clone() {
        lock(open).insert(id, clone);
    }
    let (service, registry) = (service.clone(), open.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("pop3 {peer}"))
        .spawn(move || {
            serve_connection(&service, stream, info);
            lock(&registry).remove(&id);
        });
    if spawned.is_err() {
        // No thread for it: the stream was dropped with the closure.
        lock(open).remove(&id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A std stream as the drive loop's transport.
struct StdTransport<S> {
    stream: S,
}

/// A socket timeout for `deadline` (at least 1 ms: zero means "block").
fn until(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    })
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl<S: Stream> Transport for StdTransport<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        self.stream.set_timeouts(until(deadline), None)?;
        loop {
            return match self.stream.read(buf) {
                Ok(0) => Ok(ReadOutcome::Eof),
                Ok(n) => Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => Ok(ReadOutcome::TimedOut),
                Err(e) => Err(e),
            };
        }
    }

    fn write_all(&mut self, mut data: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        // A socket timeout bounds one send; the deadline bounds them all.
        while !data.is_empty() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_timeouts(None, until(deadline))?;
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            }
        }
        // A buffered or TLS stream must not sit on a reply.
        self.stream.flush()
    }
}
