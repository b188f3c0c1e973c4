//! A blocking POP3 server: one thread per connection, `std::net` sockets.
//!
//! All protocol logic lives in [`pop3_proto`]; the event loop in
//! [`pop3_driver`]. This crate is the std glue: sockets with read and write
//! timeouts, threads, and the accept loop.
//!
//! ```no_run
//! use pop3_std::{memory::MemoryStore, Config, Server};
//!
//! let store = MemoryStore::new();
//! store.add_user("alice", "secret");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello!\r\n");
//!
//! let config = Config::builder().hostname("mail.example").build().unwrap();
//! let server = Server::new(config, move |_conn| Ok(store.handler())).max_connections(100);
//! let listener = std::net::TcpListener::bind("127.0.0.1:1110")?;
//! server.serve(listener)?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop3_driver::blocking::{drive, Transport};
use pop3_driver::{AcceptBackoff, Admission, ReadOutcome, ServerCore};

pub use pop3_driver::{
    memory, BodySource, ConnectionInfo, Handler, HandlerError, HandlerResult, ReadBody, SessionEnd,
    Shutdown,
};
pub use pop3_proto::{
    Config, Credential, Expire, Maildrop, MessageInfo, MessageRef, Refusal, ResponseCode, Uid,
};

/// How long an aborted shutdown waits for handlers after closing sockets.
const ABORT_WAIT: Duration = Duration::from_secs(5);

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

/// A POP3 server: accepts connections and runs each session on its own
/// thread, with a handler made by the connection hook.
pub struct Server<F> {
    core: Arc<ServerCore<F>>,
    /// Clones of accepted sockets, closed on an aborted shutdown.
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl<F> Clone for Server<F> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            open: self.open.clone(),
        }
    }
}

impl<F, H> Server<F>
where
    F: Fn(&ConnectionInfo) -> Result<H, Refusal> + Send + Sync + 'static,
    H: Handler,
{
    /// A server with `config`. `new_handler` is called for every connection
    /// (popart's `OnNewConnection`); returning a refusal sends it as `-ERR`
    /// and closes the connection.
    pub fn new(config: Config, new_handler: F) -> Self {
        Self {
            core: Arc::new(ServerCore::new(config, new_handler)),
            open: Arc::default(),
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
    pub fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let local = listener.local_addr()?;
        let shutdown = self.core.shutdown().clone();
        // A blocked accept() cannot be interrupted: wake it with a connection.
        let waker = std::thread::spawn({
            let shutdown = shutdown.clone();
            move || {
                futures_lite::future::block_on(shutdown.begun());
                let _ = TcpStream::connect(local);
            }
        });
        let mut backoff = AcceptBackoff::default();
        let ids = AtomicU64::new(0);
        while !shutdown.is_begun() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff.on_success();
                    if shutdown.is_begun() {
                        break;
                    }
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    self.spawn_session(id, stream, peer);
                }
                Err(e) => std::thread::sleep(backoff.on_error(&e)),
            }
        }
        drop(listener);
        let _ = waker.join();
        if !self
            .core
            .wait_all_closed(Instant::now() + self.core.shutdown_grace())
        {
            shutdown.abort();
            for stream in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
                let _ = stream.shutdown(Both::Both);
            }
            self.core.wait_all_closed(Instant::now() + ABORT_WAIT);
        }
        Ok(())
    }

    /// Runs one session over any [`Stream`] on the calling thread.
    /// Returns how it ended, or `None` if the connection was rejected.
    pub fn serve_connection<S: Stream>(
        &self,
        stream: S,
        info: ConnectionInfo,
    ) -> Option<SessionEnd> {
        let mut transport = StdTransport { stream };
        match self.core.admit(&info, Instant::now()) {
            Admission::Reject(bytes) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                let _ = transport.write_all(&bytes, Some(deadline));
                None
            }
            Admission::Serve {
                session,
                mut handler,
                permit,
            } => {
                let end = drive(session, &mut transport, &mut handler, self.core.shutdown());
                let _ = transport.stream.flush();
                drop(permit);
                Some(end)
            }
        }
    }

    fn spawn_session(&self, id: u64, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo::new(Some(peer), stream.local_addr().ok());
        if let Ok(clone) = stream.try_clone() {
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, clone);
        }
        let server = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pop3-{peer}"))
            .spawn(move || {
                server.serve_connection(stream, info);
                server
                    .open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        if spawned.is_err() {
            // No thread for it: the stream was dropped with the closure.
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }

    fn core_mut(&mut self) -> &mut ServerCore<F> {
        Arc::get_mut(&mut self.core).expect("configure the server before cloning or serving it")
    }
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

    fn write_all(&mut self, data: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        self.stream.set_timeouts(None, until(deadline))?;
        self.stream.write_all(data).map_err(|e| {
            if timed_out(&e) {
                io::ErrorKind::TimedOut.into()
            } else {
                e
            }
        })
    }
}
