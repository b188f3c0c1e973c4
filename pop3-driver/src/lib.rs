//! Runtime-neutral glue between [`pop3_proto`] and a runtime: the handler
//! traits a mail store implements, the [`Service`] every adapter serves
//! (configuration, connection hook, connection limits, shutdown), and the
//! one drive procedure.
//!
//! # One drive procedure, two thin loops
//!
//! What to do next for a connection is decided once, sans-IO, by
//! [`Procedure::next`]: write these bytes by this deadline, call the
//! handler, pull a body chunk, start TLS, release the lock, report an
//! internal error, read with this deadline, sleep until, done. The
//! blocking loop ([`blocking::drive`]) and the async loop
//! ([`nonblocking::drive`]) only perform the [`Step`] it names and report
//! the outcome; they hold no state and make no decision. The procedure
//! turns outcomes into session input and handler results into answers,
//! fails a session whose body source is gone (never a cut message ended
//! with `.`), and applies the [`Shutdown`] stages.
//!
//! ```
//! use std::time::Instant;
//! use pop3_driver::{Procedure, Shutdown, Step};
//! use pop3_proto::{Config, Greeting, Session};
//!
//! let now = Instant::now();
//! let session = Session::new(Config::builder().build()?.into(), Greeting { nonce: 1, unix_time: 1 }, now);
//! let mut procedure: Procedure<()> = Procedure::new(session, Shutdown::new());
//! // The greeting comes first, with its write deadline.
//! let Step::Write(greeting) = procedure.next(now) else { unreachable!() };
//! assert!(greeting.to_vec().starts_with(b"+OK"));
//! procedure.written(now, greeting, Ok(()));
//! // Then the peer: read until the idle deadline.
//! assert!(matches!(procedure.next(now), Step::Read { deadline: Some(_), .. }));
//! # Ok::<(), pop3_proto::ConfigError>(())
//! ```
//!
//! # TLS
//!
//! [`tls`] holds what every adapter shares: a [`TlsConfig`](tls::TlsConfig)
//! (a rustls server configuration from PEM files, replaceable while serving)
//! given to the service with [`Service::tls`], and the handshake deadline.
//! An adapter's transport only performs the handshake ([`Step::StartTls`]
//! after STLS; first thing for an implicit TLS listener, see
//! [`blocking::serve_tls_connection`] and [`nonblocking::serve_tls_connection`]).
//!
//! # PROXY protocol and observation
//!
//! [`Service::proxy_from`] takes HAProxy's PROXY headers (v1 and v2,
//! parsed sans-IO in [`proxy_header`]) from trusted networks: both loops
//! read the header before anything else, exactly, and serve the
//! connection as the client it names (see [`proxy`]).
//! [`Service::observe`] reports what happens to an [`Observer`] (metrics):
//! refusals, sessions, the session's notes (commands, login attempts),
//! octets sent, handler latency, TLS handshakes; the drive procedure and
//! the service make the calls, so every adapter reports the same.
//!
//! Users normally meet this crate through `pop3-std`, `pop3-tokio` or
//! `pop3-async-std`, which re-export what they need. It reads the clock only
//! through the transport, so tests with paused or fake time work
//! (`tests/procedure.rs` drives sessions over a fake transport and clock).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod blocking;
mod failures;
mod handler;
pub mod memory;
pub mod nonblocking;
pub mod observe;
mod procedure;
pub mod proxy;
pub mod proxy_header;
mod read_buffer;
mod segments;
mod service;
mod shutdown;
mod slots;
pub mod tls;

pub use failures::FailedLoginLimits;
pub use handler::{
    AsyncBodySource, AsyncHandler, BodySource, Handler, HandlerError, HandlerResult, ReaderBody,
    DEFAULT_CHUNK,
};
pub use observe::{Call, Observer, Rejection};
pub use pop3_proto as proto;
pub use procedure::{Procedure, Step};
pub use segments::{write_all_vectored, SegmentCursor, MAX_IO_SLICES};
pub use service::{fresh_greeting, AcceptBackoff, ConnectionInfo, NewHandler, Service};
pub use shutdown::{Shutdown, Stage};
pub use slots::Interrupter;

use pop3_proto::{CloseReason, Session, SessionStats};

/// How long the last writes of a connection may take: the `-ERR` line of a
/// rejected connection, and the flush and shutdown when closing.
pub(crate) const FINAL_WRITE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long each later stage of a shutdown waits: after the abort, for
/// sessions stuck in a handler call; after the cancel, for their unlock.
pub const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The result of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were read.
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// The deadline passed first.
    TimedOut,
}

/// How a session ended, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why it closed.
    pub reason: CloseReason,
    /// The user who logged in, if one did.
    pub user: Option<String>,
    /// Counters.
    pub stats: SessionStats,
    /// Why the TLS handshake failed, if one did (implicit TLS or after
    /// STLS); the session then ends as [`CloseReason::PeerClosed`].
    pub tls_error: Option<String>,
    /// The internal handler error that ended it, with its causes (what the
    /// `session_error` hook was given), for [`CloseReason::HandlerFailed`].
    pub error: Option<String>,
    /// The connection had not logged in and was closed early, while idle,
    /// to make room for a new one when the server was full (see
    /// [`Service::max_connections`] and [`Service::max_unauthenticated`]).
    /// It ends as [`CloseReason::IdleTimeout`]: closed as the idle timer
    /// closes, without a reply, nothing deleted.
    pub evicted: bool,
    /// Why the connection was closed for its PROXY header: a trusted
    /// source's missing, malformed or late one (then no session ran, and
    /// the reason is [`CloseReason::Rejected`]), or one sent from a
    /// source not trusted to (see [`Service::proxy_from`]).
    pub proxy_error: Option<String>,
}

impl SessionEnd {
    fn rejected() -> Self {
        Self {
            reason: CloseReason::Rejected,
            user: None,
            stats: SessionStats::default(),
            tls_error: None,
            error: None,
            evicted: false,
            proxy_error: None,
        }
    }

    /// A connection whose implicit TLS handshake failed: no session ran.
    fn handshake_failed(error: &std::io::Error) -> Self {
        Self {
            reason: CloseReason::PeerClosed,
            user: None,
            stats: SessionStats::default(),
            tls_error: Some(error.to_string()),
            error: None,
            evicted: false,
            proxy_error: None,
        }
    }

    fn new(session: &Session, reason: CloseReason) -> Self {
        Self {
            reason,
            user: session.user().map(str::to_owned),
            stats: session.stats(),
            tls_error: None,
            error: None,
            evicted: false,
            proxy_error: None,
        }
    }
}
