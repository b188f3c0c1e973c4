//! Errors of the caller (usage) and of the configuration.
//!
//! A peer's bad input is never a Rust error: it becomes an `-ERR` reply or a
//! [`CloseReason`](crate::CloseReason).

use std::time::Duration;

/// The caller drove the session wrongly; the session was left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// An answer was given, but no request of that kind is waiting for one.
    #[error("no pending {expected} request to answer")]
    NoPendingRequest {
        /// The kind of request the answer belongs to.
        expected: &'static str,
    },
    /// A body chunk was pushed, but no body was asked for.
    #[error("no message body is being sent")]
    NotSendingBody,
    /// Input was given while [`Session::wants_input`](crate::Session::wants_input) was false.
    #[error("the session does not want input now")]
    InputNotWanted,
    /// `handle_written` was called, but no transmit is out.
    #[error("no transmit was handed out")]
    NothingInFlight,
    /// The session has closed.
    #[error("the session is closed")]
    Closed,
    /// `handle_tls_established` was called without a `StartTls` event before it.
    #[error("no TLS negotiation was started")]
    NoTlsNegotiation,
    /// A SCRAM server nonce that is empty or not printable ASCII without `,`.
    #[error("invalid SCRAM server nonce")]
    InvalidNonce,
}

/// A [`Config`](crate::Config) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// RFC 1939 §3 asks for at least 10 minutes.
    #[error("idle timeout {0:?} is under the 10 minutes RFC 1939 requires (allow_short_idle_timeout is for tests)")]
    IdleTimeoutTooShort(Duration),
    /// A zero idle timeout would close every session at once.
    #[error("idle timeout must not be zero")]
    IdleTimeoutZero,
    /// Over a day: surely a mistake (and deadlines must stay representable).
    #[error("idle timeout {0:?} is over the 24 hours allowed")]
    IdleTimeoutTooLong(Duration),
    /// Over a minute of tarpit per failed login.
    #[error("failed-login delay {0:?} is over the 60 seconds allowed")]
    AuthDelayTooLong(Duration),
    /// The host name is empty, longer than [`MAX_HOSTNAME`](crate::MAX_HOSTNAME), or has
    /// characters that break the APOP timestamp.
    #[error("invalid host name {0:?}")]
    InvalidHostname(String),
    /// The IMPLEMENTATION text is empty, too long, or has control characters.
    #[error("invalid IMPLEMENTATION text {0:?}")]
    InvalidImplementation(String),
    /// RFC 2449 §4: servers must accept command lines of 255 octets.
    #[error("command line limit {0} is under the 255 octets RFC 2449 requires")]
    LineLimitTooSmall(usize),
    /// The input buffer must hold at least one whole command line.
    #[error("input buffer of {input_buffer} octets cannot hold a {max_line}-octet command line")]
    InputBufferTooSmall {
        /// Configured input buffer.
        input_buffer: usize,
        /// Configured line limit.
        max_line: usize,
    },
    /// The SASL line limit must hold at least a command line.
    #[error("SASL line limit {max_sasl_line} is under the command line limit {max_line}")]
    SaslLineTooSmall {
        /// Configured SASL line limit.
        max_sasl_line: usize,
        /// Configured line limit.
        max_line: usize,
    },
    /// The output high-water mark must be positive.
    #[error("output high-water mark must not be zero")]
    ZeroHighWater,
    /// The failure limits must be positive.
    #[error("failure limits must be at least 1")]
    ZeroLimit,
    /// A language tag or description that cannot be used.
    #[error("invalid language {0:?}")]
    InvalidLanguage(String),
    /// A response text template that cannot be used.
    #[error("invalid template for {0:?}: {1:?}")]
    InvalidText(crate::Text, String),
    /// Neither USER/PASS, APOP nor a SASL mechanism is offered.
    #[error("no login method is offered (enable USER/PASS, APOP or SASL)")]
    NoLoginMethod,
}
