//! What the session asks of its driver: requests for the handler, and
//! notices about TLS, unlocking and closing.

use std::fmt;

use crate::apop::ApopCredential;
use crate::maildrop::MessageRef;
use crate::secret::Secret;

/// Something the driver must act on, from [`Session::poll_output`](crate::Session::poll_output).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a request left unanswered stalls the session"]
pub enum Event {
    /// The handler must answer this; the session waits until it does.
    Request(Request),
    /// A RETR or TOP body is being sent and the output is below the
    /// high-water mark: call `push_body` with the next chunk, or `end_body`
    /// at the end of the message. Returned again until one of them is called.
    NeedBody,
    /// The `+OK` to STLS has been written (its transmit given back): run the TLS
    /// handshake as server, then call `handle_tls_established`. On a failed
    /// handshake, drop the connection.
    StartTls,
    /// The session is done with the maildrop it locked: release the lock.
    /// Comes exactly once for every granted maildrop, however the session ends.
    Unlock,
    /// The session is over and all its output has been taken: close the connection.
    Closed(CloseReason),
}

/// A question only the handler can answer. Exactly one is pending at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Check credentials. Answer `accept_login` or `refuse` (a refusal
    /// without a code is sent as `[AUTH]`).
    Authenticate {
        /// Whose maildrop: the name given by USER, APOP or the SASL exchange.
        user: String,
        /// What the client proved.
        credential: Credential,
    },
    /// SASL `SCRAM-SHA-256`: look up this user's stored keys. Answer
    /// `scram_credentials`, with [`ScramCredentials::decoy`](crate::ScramCredentials::decoy)
    /// keys for a user who does not exist (so the exchange does not tell
    /// who does), or `refuse`. The session checks the client's proof itself.
    ScramCredentials {
        /// The user named in the client's first message.
        user: String,
    },
    /// The credentials were accepted: lock this user's maildrop and describe
    /// it. Answer `grant_maildrop` or `refuse` (without a code, `[IN-USE]`).
    Lock {
        /// The authenticated user.
        user: String,
    },
    /// Send a message body (RETR, or TOP with `top_lines`). Answer
    /// `begin_body` then feed chunks on [`Event::NeedBody`], or `refuse`.
    Retrieve {
        /// The message.
        message: MessageRef,
        /// `Some(k)` for `TOP n k`. The session does the cut-off itself;
        /// the handler just streams the message from its start.
        top_lines: Option<u64>,
    },
    /// QUIT in TRANSACTION (the UPDATE state, RFC 1939 §6): remove these
    /// messages, all or none. Answer `commit_done` or `refuse`. Asked once
    /// per session, possibly with an empty list.
    Commit {
        /// Messages marked deleted, by ascending number, each once.
        deleted: Vec<MessageRef>,
    },
}

/// A login proof: what the client showed to log in as the request's `user`.
///
/// The one entry point for every login method; new methods add variants,
/// so match with a catch-all arm that refuses what the store cannot check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// The user's password: from USER/PASS (the rest of the PASS line, as
    /// sent), SASL `PLAIN` or `LOGIN`.
    Password(Secret<Vec<u8>>),
    /// SASL `PLAIN` with an authorization identity: `authenticator` proves
    /// itself with its own password and asks for the request's `user`'s
    /// maildrop (a master user). Refuse unless the store allows that.
    PasswordFor {
        /// Who authenticates (the authentication identity).
        authenticator: String,
        /// The authenticator's password.
        password: Secret<Vec<u8>>,
    },
    /// APOP: check it with [`ApopCredential::verify`] against the user's secret.
    Apop(ApopCredential),
    /// SASL `XOAUTH2` or `OAUTHBEARER`: an OAuth 2.0 bearer token; check it
    /// and that it was issued for the request's `user`.
    Bearer(Secret<String>),
}

/// Why a session ended. Plain data, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent QUIT (and UPDATE, if it ran, succeeded).
    Quit,
    /// QUIT in TRANSACTION, but the handler could not remove the messages.
    UpdateFailed,
    /// No command within the idle timeout (RFC 1939 §3); nothing was deleted.
    IdleTimeout,
    /// The peer closed the connection or it broke; nothing was deleted.
    PeerClosed,
    /// Too many bad commands in a row.
    TooManyBadCommands,
    /// Too many failed logins.
    TooManyAuthFailures,
    /// The handler reported an internal error.
    HandlerFailed,
    /// The server is shutting down.
    Shutdown,
    /// The connection was refused before the greeting (connection limit, hook).
    Rejected,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quit => "quit",
            Self::UpdateFailed => "quit, but deleting messages failed",
            Self::IdleTimeout => "idle timeout",
            Self::PeerClosed => "peer closed the connection",
            Self::TooManyBadCommands => "too many bad commands",
            Self::TooManyAuthFailures => "too many failed logins",
            Self::HandlerFailed => "handler error",
            Self::Shutdown => "server shutdown",
            Self::Rejected => "connection rejected",
        })
    }
}
