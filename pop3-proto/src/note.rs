//! What happened in a session, as data for logs and metrics: which
//! commands ran, how login attempts ended. The driver takes the notes with
//! [`Session::take_notes`](crate::Session::take_notes); they ask for no action.

use crate::sasl::Mechanism;

/// The most notes a session holds between two
/// [`take_notes`](crate::Session::take_notes); later ones are dropped
/// until the notes are taken.
pub const MAX_NOTES: usize = 1024;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// A command line was executed: its keyword (`"RETR"`), or `None`
    /// for a line that is no command this server knows (unknown, too
    /// long, bad arguments). SASL response lines are not commands.
    Command(Option<&'static str>),
    /// A login attempt ended.
    Login(LoginAttempt),
}

/// How a login attempt ended, with what and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    /// The method used.
    pub method: LoginMethod,
    /// The user named, once the client named one (a SASL exchange that
    /// fails before naming anyone has `None`). As sent: may hold any
    /// character, so quote it before logging.
    pub user: Option<String>,
    /// The outcome.
    pub outcome: LoginOutcome,
}

/// A way of logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginMethod {
    /// USER and PASS (RFC 1939 §7).
    UserPass,
    /// APOP (RFC 1939 §7).
    Apop,
    /// AUTH with a SASL mechanism (RFC 5034).
    Sasl(Mechanism),
}

impl LoginMethod {
    /// A stable name for logs and metric labels: `USER`, `APOP`, or the
    /// mechanism's name (`PLAIN`, `SCRAM-SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::UserPass => "USER",
            Self::Apop => "APOP",
            Self::Sasl(m) => m.name(),
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// The credentials were accepted.
    Accepted,
    /// Wrong credentials (or a malformed exchange): a failed login,
    /// counted towards closing the session.
    Failed,
    /// Refused for another reason than the credentials (`[SYS/TEMP]`,
    /// `[LOGIN-DELAY]`, ...).
    Refused,
}

impl LoginOutcome {
    /// A stable name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}
