//! A blocking POP3 server: one thread per connection, `std::net` sockets.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop and the
//! [`Service`] in [`pop3_driver`]. This crate is the std glue: sockets with
//! read and write timeouts, threads, the accept loop, and TLS with rustls'
//! own `StreamOwned` (STLS, and implicit TLS listeners with [`serve_tls`]).
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
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::ToSocketAddrs;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pop3_driver::blocking::{self, Transport};
use pop3_driver::{AcceptBackoff, ReadOutcome, SegmentCursor, MAX_IO_SLICES};
use rustls::{ServerConnection, StreamOwned};

pub use pop3_driver::tls::{self, TlsConfig};
pub use pop3_driver::{
    memory, proto, BodySource, ConnectionInfo, FailedLoginLimits, Handler, HandlerError,
    HandlerResult, Interrupter, NewHandler, ReaderBody, Service, SessionEnd, Shutdown,
};
pub use pop3_driver::{observe, proxy_header};
pub use pop3_proto::{
    CloseReason, Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal,
    ResponseCode, SessionStats, Uid,
};

/// A byte stream with read and write timeouts: what a session runs over.
pub trait Stream: Read + Write + Send {
    /// Sets the timeout of the next reads (`None`: block).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Sets the timeout of the next writes (`None`: block).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// A way for another thread to end a read blocked on this stream, and
    /// every later one (see [`Transport::interrupter`]): the service uses
    /// it to close an idle connection that has not logged in when it needs
    /// the room. `None` (the default): such a connection is never closed
    /// early. A `TcpStream` shuts down its read side.
    fn interrupter(&self) -> Option<Interrupter> {
        None
    }
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_write_timeout(self, timeout)
    }

    fn interrupter(&self) -> Option<Interrupter> {
        let socket = self.try_clone().ok()?;
        Some(Box::new(move || {
            let _ = socket.shutdown(Both::Read);
        }))
    }
}

/// An accepted socket, registered in the accept loop's [`OpenSockets`]:
/// its interrupter uses the registered clone (no descriptor of its own).
struct Registered {
    stream: TcpStream,
    id: u64,
    open: OpenSockets,
}

impl Read for Registered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.stream.read_vectored(bufs)
    }
}

impl Write for Registered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Stream for Registered {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(timeout)
    }

    fn interrupter(&self) -> Option<Interrupter> {
        if !lock(&self.open).contains_key(&self.id) {
            return None;
        }
        let (open, id) = (self.open.clone(), self.id);
        Some(Box::new(move || {
            if let Some(socket) = lock(&open).get(&id) {
                let _ = socket.shutdown(Both::Read);
            }
        }))
    }
}

/// Open connections, by id: clones of their sockets, closed on an aborted
/// shutdown so that blocked reads and writes return.
type OpenSockets = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// Accepts connections on `listener` and serves each on its own thread
/// until the service's shutdown begins; then lets sessions finish (aborting
/// them after the grace period) and returns. Accept errors are retried
/// with a back-off, never returned. With [`Service::tls`], STLS can start
/// TLS (offer it with `Config::builder().stls(true)`); without, a
/// configuration offering STLS is refused here.
pub fn serve<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    service.check_transport(service.tls_config().is_some())?;
    accept_loop(service, listener, false)
}

/// As [`serve`], for an implicit TLS listener (RFC 8314, port 995): each
/// connection starts with the TLS handshake (bounded by
/// [`tls::handshake_deadline`]); its session knows TLS is active, so CAPA
/// offers no STLS and passwords are allowed. A failed or stalled handshake
/// closes that connection only. Needs [`Service::tls`].
pub fn serve_tls<F, H>(service: &Service<F>, listener: TcpListener) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    service.check_implicit_tls()?;
    accept_loop(service, listener, true)
}

/// Binds `addr` and [`serve_tls`]s on it.
pub fn bind_and_serve_tls<F, H>(service: &Service<F>, addr: impl ToSocketAddrs) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    serve_tls(service, TcpListener::bind(addr)?)
}

fn accept_loop<F, H>(
    service: &Service<F>,
    listener: TcpListener,
    implicit_tls: bool,
) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    let local = wake_address(listener.local_addr()?);
    let shutdown = service.shutdown_handle();
    let open = OpenSockets::default();
    // A blocked accept() cannot be interrupted: wake it with a connection.
    // Sessions blocked in a read are woken by shutting down its read side:
    // the read ends, and the session hears of the shutdown first.
    let waker = std::thread::spawn({
        let (shutdown, open) = (shutdown.clone(), open.clone());
        move || {
            futures_lite::future::block_on(shutdown.begun());
            let _ = TcpStream::connect(local);
            for stream in lock(&open).values() {
                let _ = stream.shutdown(Both::Read);
            }
        }
    });
    let mut backoff = AcceptBackoff::default();
    let mut next_id = 0;
    while !shutdown.is_begun() {
        match listener.accept() {
            Ok((stream, peer)) if !shutdown.is_begun() => {
                backoff.on_success();
                spawn_session(service, &open, next_id, stream, peer, implicit_tls);
                next_id += 1;
            }
            Ok(_) => break,
            Err(e) => {
                service.accept_failed(&e);
                std::thread::sleep(backoff.on_error(&e));
            }
        }
    }
    drop(listener);
    let _ = waker.join();
    for (wait, next) in service.shutdown_stages() {
        if service.wait_all_closed(Instant::now() + wait) {
            break;
        }
        let Some(stage) = next else { break };
        shutdown.raise_to(stage);
        // Threads cannot be cancelled; their blocked IO can be cut.
        for stream in lock(&open).values() {
            let _ = stream.shutdown(Both::Both);
        }
    }
    Ok(())
}

/// Where to connect to reach `local`: a wildcard address is not one to
/// connect to on every platform, so use loopback of the same family.
fn wake_address(mut local: SocketAddr) -> SocketAddr {
    match local.ip() {
        ip if !ip.is_unspecified() => {}
        std::net::IpAddr::V4(_) => local.set_ip(Ipv4Addr::LOCALHOST.into()),
        std::net::IpAddr::V6(_) => local.set_ip(Ipv6Addr::LOCALHOST.into()),
    }
    local
}

/// Binds `addr` and [`serve`]s on it.
pub fn bind_and_serve<F, H>(service: &Service<F>, addr: impl ToSocketAddrs) -> io::Result<()>
where
    F: NewHandler<H>,
    H: Handler,
{
    serve(service, TcpListener::bind(addr)?)
}

/// Runs one session of `service` over any [`Stream`] on the calling thread
/// (STLS starts TLS with [`Service::tls`]). Returns how it ended, or `None`
/// if the connection was rejected.
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
    let mut transport = StdTransport::new(stream, service.tls_config().cloned());
    let end = blocking::serve_connection(service, &mut transport, &info);
    let _ = transport.link.flush();
    end
}

/// Runs one implicit TLS connection (RFC 8314) of `service` over any
/// [`Stream`] on the calling thread: the handshake with [`Service::tls`]
/// first, then the session. Returns how it ended (with
/// [`SessionEnd::tls_error`] if the handshake failed), or `None` if the
/// connection was rejected.
pub fn serve_tls_connection<F, H, S>(
    service: &Service<F>,
    stream: S,
    info: ConnectionInfo,
) -> Option<SessionEnd>
where
    F: NewHandler<H>,
    H: Handler,
    S: Stream,
{
    let mut transport = StdTransport::new(stream, service.tls_config().cloned());
    let end = blocking::serve_tls_connection(service, &mut transport, &info);
    let _ = transport.link.flush();
    end
}

fn spawn_session<F, H>(
    service: &Service<F>,
    open: &OpenSockets,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
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
    let stream = Registered {
        stream,
        id,
        open: open.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name(format!("pop3 {peer}"))
        .spawn(move || {
            if implicit_tls {
                serve_tls_connection(&service, stream, info);
            } else {
                serve_connection(&service, stream, info);
            }
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

/// The byte stream under a session: plain, or rustls over it once a
/// handshake succeeded.
enum Link<S: Stream> {
    Plain(S),
    Tls(Box<StreamOwned<ServerConnection, S>>),
    /// A failed handshake took the stream (and closed it).
    Lost,
}

impl<S: Stream> Link<S> {
    /// The socket, for its timeouts.
    fn socket(&self) -> io::Result<&S> {
        match self {
            Self::Plain(s) => Ok(s),
            Self::Tls(t) => Ok(&t.sock),
            Self::Lost => Err(lost()),
        }
    }
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was lost in a failed TLS handshake",
    )
}

impl<S: Stream> Read for Link<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(t) => t.read(buf),
            Self::Lost => Err(lost()),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read_vectored(bufs),
            Self::Tls(t) => t.read_vectored(bufs),
            Self::Lost => Err(lost()),
        }
    }
}

impl<S: Stream> Write for Link<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(t) => t.write(buf),
            Self::Lost => Err(lost()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write_vectored(bufs),
            Self::Tls(t) => t.write_vectored(bufs),
            Self::Lost => Err(lost()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            // Writes every pending TLS record to the socket, then flushes it.
            Self::Tls(t) => t.flush(),
            Self::Lost => Ok(()),
        }
    }
}

/// A std stream as the drive loop's transport. Remembers the socket
/// timeouts it set and changes them only when they would overshoot the
/// deadline or wake the loop more than [`TIMEOUT_SLACK`] early: not one
/// `setsockopt` per read or write.
struct StdTransport<S: Stream> {
    link: Link<S>,
    /// Where handshakes get their certificate.
    tls: Option<TlsConfig>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// A socket timeout for `deadline` (at least 1 ms: zero means "block"),
/// rounded up to whole milliseconds.
fn until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(now);
        Duration::from_millis(left.as_millis() as u64 + 1)
    })
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How much earlier than its deadline a socket timeout may fire (the loop
/// then finds nothing due and reads again).
const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// True if a socket timeout of `set` does for one of `wanted`: never later,
/// and not much earlier.
fn close_enough(set: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (set, wanted) {
        (None, None) => true,
        (Some(set), Some(wanted)) => set <= wanted && wanted - set < TIMEOUT_SLACK,
        _ => false,
    }
}

impl<S: Stream> StdTransport<S> {
    fn new(stream: S, tls: Option<TlsConfig>) -> Self {
        Self {
            link: Link::Plain(stream),
            tls,
            read_timeout: None,
            write_timeout: None,
        }
    }

    fn set_read(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !close_enough(self.read_timeout, timeout) {
            self.link.socket()?.set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    fn set_write(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !close_enough(self.write_timeout, timeout) {
            self.link.socket()?.set_write_timeout(timeout)?;
            self.write_timeout = timeout;
        }
        Ok(())
    }

    /// The handshake over the plain stream, by `deadline`.
    fn handshake(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS is not configured",
            ));
        };
        if !matches!(self.link, Link::Plain(_)) {
            return Err(io::Error::other("TLS is already active"));
        }
        let conn = ServerConnection::new(tls.current()).map_err(io::Error::other)?;
        let Link::Plain(socket) = std::mem::replace(&mut self.link, Link::Lost) else {
            unreachable!("checked above");
        };
        let mut stream = StreamOwned::new(conn, socket);
        while stream.conn.is_handshaking() {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            let timeout = until(deadline, now);
            stream.sock.set_read_timeout(timeout)?;
            stream.sock.set_write_timeout(timeout)?;
            self.read_timeout = timeout;
            self.write_timeout = timeout;
            match stream.conn.complete_io(&mut stream.sock) {
                Ok(_) => {}
                // The loop checks the deadline.
                Err(e) if e.kind() == io::ErrorKind::Interrupted || timed_out(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.link = Link::Tls(Box::new(stream));
        Ok(())
    }
}

impl<S: Stream> Transport for StdTransport<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<ReadOutcome> {
        self.set_read(until(deadline, Instant::now()))?;
        loop {
            return match self.link.read(buf) {
                Ok(0) => Ok(ReadOutcome::Eof),
                Ok(n) => Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => Ok(ReadOutcome::TimedOut),
                // A TLS peer that closes without close_notify has still closed.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(ReadOutcome::Eof),
                Err(e) => Err(e),
            };
        }
    }

    fn write(&mut self, segments: &[Bytes], deadline: Option<Instant>) -> io::Result<()> {
        // A socket timeout bounds one send; the deadline bounds them all.
        let mut cursor = SegmentCursor::new(segments);
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        while !cursor.is_done() {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let timeout = until(deadline, now);
            self.set_write(timeout)?;
            if matches!(self.link, Link::Tls(_)) {
                // rustls may also read while it writes: bound that too.
                self.set_read(timeout)?;
            }
            match self.link.write_vectored(cursor.io_slices(&mut slices)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => cursor.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            }
        }
        // A buffered or TLS stream must not sit on a reply.
        self.link.flush()
    }

    fn can_start_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn start_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.handshake(deadline)
    }

    fn interrupter(&self) -> Option<Interrupter> {
        self.link.socket().ok()?.interrupter()
    }
}
