//! The observation hook: what a [`Service`](crate::Service) reports as it
//! runs, for metrics and logs, the same under every adapter. The drive
//! procedure and the service call it; the session's own view (which
//! command ran, how a login ended) comes from its notes
//! ([`Session::take_notes`](pop3_proto::Session::take_notes)).

use std::io;
use std::time::Duration;

use pop3_proto::{LoginLimit, Note, Request};

use crate::{ConnectionInfo, SessionEnd};

/// Receives what a service does. Every method has an empty default;
/// implement those you count. Methods are called on the connection's own
/// task or thread, and must be quick (count, don't do IO).
pub trait Observer: Send + Sync + 'static {
    /// A connection was refused before its session started.
    fn refused(&self, info: &ConnectionInfo, why: Rejection) {
        let _ = (info, why);
    }

    /// A login attempt was refused unchecked by the failed-login limits
    /// (`Service::failed_login_limits`); the session answers it as a
    /// failed login, and notes it as one.
    fn login_limited(&self, info: &ConnectionInfo, limit: LoginLimit) {
        let _ = (info, limit);
    }

    /// A session started (its greeting is on its way).
    fn session_started(&self, info: &ConnectionInfo) {
        let _ = info;
    }

    /// The session noted something: a command ran, a login attempt ended.
    fn noted(&self, info: &ConnectionInfo, note: &Note) {
        let _ = (info, note);
    }

    /// This many octets were written to the peer.
    fn sent(&self, info: &ConnectionInfo, octets: u64) {
        let _ = (info, octets);
    }

    /// A handler call returned after `elapsed` (by the transport's clock).
    fn handler_call(&self, call: Call, elapsed: Duration) {
        let _ = (call, elapsed);
    }

    /// A message was opened for RETR (`top: false`) or TOP.
    fn message_opened(&self, info: &ConnectionInfo, top: bool) {
        let _ = (info, top);
    }

    /// A TLS handshake ended: on an implicit TLS listener, or after STLS.
    fn tls_handshake(&self, info: &ConnectionInfo, implicit: bool, result: Result<(), &io::Error>) {
        let _ = (info, implicit, result);
    }

    /// A session that [started](Self::session_started) ended.
    fn session_ended(&self, info: &ConnectionInfo, end: &SessionEnd) {
        let _ = (info, end);
    }
}

/// Why a connection was refused before its session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// The server is full (`max_connections`, or the unauthenticated share
    /// with nobody to evict).
    Full,
    /// Too many connections from its address (`max_connections_per_ip`).
    PerAddress,
    /// The connection hook refused it.
    Hook,
    /// The server is shutting down.
    Shutdown,
    /// STLS is configured but the transport cannot start TLS.
    NoTls,
    /// A trusted source's PROXY header was missing, malformed or late. (A
    /// header from an untrusted source closes a session that has started:
    /// see [`SessionEnd::proxy_error`](crate::SessionEnd::proxy_error).)
    Proxy,
}

impl Rejection {
    /// A stable name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::PerAddress => "per_address",
            Self::Hook => "hook",
            Self::Shutdown => "shutdown",
            Self::NoTls => "no_tls",
            Self::Proxy => "proxy",
        }
    }
}

/// A kind of handler call, for latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// A credential check.
    Authenticate,
    /// A SCRAM key lookup.
    ScramCredentials,
    /// Locking and listing a maildrop.
    Lock,
    /// Opening a message for RETR or TOP.
    Retrieve,
    /// Deleting the marked messages (UPDATE).
    Commit,
}

impl Call {
    /// The call that answers `request`.
    pub(crate) fn of(request: &Request) -> Self {
        match request {
            Request::Authenticate { .. } => Self::Authenticate,
            Request::ScramCredentials { .. } => Self::ScramCredentials,
            Request::Lock { .. } => Self::Lock,
            Request::Retrieve { .. } => Self::Retrieve,
            Request::Commit { .. } => Self::Commit,
        }
    }

    /// A stable name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Authenticate => "authenticate",
            Self::ScramCredentials => "scram_credentials",
            Self::Lock => "lock",
            Self::Retrieve => "retrieve",
            Self::Commit => "commit",
        }
    }
}

impl std::fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}
