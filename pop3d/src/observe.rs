//! What pop3d does with the library's observation hook: a log line per
//! failed login (for fail2ban), and the metrics when `--metrics` is on.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pop3_proto::{LoginAttempt, LoginLimit, LoginOutcome, Note};
use pop3_tokio::observe::{Call, Observer, Rejection};
use pop3_tokio::{ConnectionInfo, SessionEnd};

use crate::metrics::Metrics;

/// pop3d's observer.
pub(crate) struct Observe {
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl Observer for Observe {
    fn refused(&self, _info: &ConnectionInfo, why: Rejection) {
        if let Some(m) = &self.metrics {
            m.refused(why);
        }
    }

    fn login_limited(&self, info: &ConnectionInfo, limit: LoginLimit) {
        tracing::info!(target: "pop3d", "{}", login_limited_line(info, limit));
        if let Some(m) = &self.metrics {
            m.login_limited(limit);
        }
    }

    fn session_started(&self, _info: &ConnectionInfo) {
        if let Some(m) = &self.metrics {
            m.session_started();
        }
    }

    fn noted(&self, info: &ConnectionInfo, note: &Note) {
        if let Note::Login(attempt) = note {
            if attempt.outcome == LoginOutcome::Failed {
                tracing::warn!(target: "pop3d", "{}", auth_failed_line(info, attempt));
            }
        }
        if let Some(m) = &self.metrics {
            m.noted(note);
        }
    }

    fn sent(&self, _info: &ConnectionInfo, octets: u64) {
        if let Some(m) = &self.metrics {
            m.sent(octets);
        }
    }

    fn handler_call(&self, call: Call, elapsed: Duration) {
        if let Some(m) = &self.metrics {
            m.handler_call(call, elapsed);
        }
    }

    fn message_opened(&self, _info: &ConnectionInfo, top: bool) {
        if let Some(m) = &self.metrics {
            m.message_opened(top);
        }
    }

    fn tls_handshake(
        &self,
        _info: &ConnectionInfo,
        implicit: bool,
        result: Result<(), &io::Error>,
    ) {
        if let Some(m) = &self.metrics {
            m.tls_handshake(implicit, result.is_ok());
        }
    }

    fn session_ended(&self, _info: &ConnectionInfo, end: &SessionEnd) {
        if let Some(m) = &self.metrics {
            m.session_ended(end.reason);
        }
    }
}

/// The failed-login line, after the log's own prefix: `auth failed:
/// rip=203.0.113.5 lip=10.0.0.1 user="alice" mech=PLAIN`. `rip` is the
/// client (the one a trusted PROXY header named), `lip` the address it
/// connected to, `-` when unknown; the user is quoted with `"` and `\`
/// escaped, control and other unusual characters as `\u{..}` (or `-`
/// when none was named), so it cannot end the line or fake a field; the
/// fields always come in this order.
pub(crate) fn auth_failed_line(info: &ConnectionInfo, attempt: &LoginAttempt) -> String {
    let user = attempt
        .user
        .as_deref()
        .map_or_else(|| "-".to_owned(), |u| format!("{u:?}"));
    format!(
        "auth failed: rip={} lip={} user={user} mech={}",
        ip(info.peer),
        ip(info.local),
        attempt.method.name()
    )
}

/// The line for a login attempt the failed-login limits refused
/// unchecked: `login refused: too many failed logins: rip=203.0.113.5
/// lip=10.0.0.1 limit=address` (or `limit=user`). Not an `auth failed`
/// line: nothing was checked, and the password may have been right.
pub(crate) fn login_limited_line(info: &ConnectionInfo, limit: LoginLimit) -> String {
    format!(
        "login refused: too many failed logins: rip={} lip={} limit={}",
        ip(info.peer),
        ip(info.local),
        limit.name()
    )
}

/// An address as the log lines give it: the IP alone (an IPv4-mapped one
/// as IPv4), `-` when unknown.
fn ip(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "-".to_owned(), |a| a.ip().to_canonical().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pop3_proto::{LoginMethod, Mechanism};

    #[test]
    fn user_names_cannot_forge_fields_or_lines() {
        let info = ConnectionInfo::new(
            Some("[::ffff:203.0.113.5]:4000".parse().unwrap()),
            Some("10.0.0.1:110".parse().unwrap()),
        );
        let attempt = |user: Option<&str>| LoginAttempt {
            method: LoginMethod::Sasl(Mechanism::Plain),
            user: user.map(str::to_owned),
            outcome: LoginOutcome::Failed,
        };
        assert_eq!(
            auth_failed_line(&info, &attempt(Some("alice"))),
            r#"auth failed: rip=203.0.113.5 lip=10.0.0.1 user="alice" mech=PLAIN"#
        );
        assert_eq!(
            auth_failed_line(&info, &attempt(Some("x\" rip=1.2.3.4\n\\"))),
            r#"auth failed: rip=203.0.113.5 lip=10.0.0.1 user="x\" rip=1.2.3.4\n\\" mech=PLAIN"#
        );
        assert_eq!(
            auth_failed_line(&ConnectionInfo::new(None, None), &attempt(None)),
            "auth failed: rip=- lip=- user=- mech=PLAIN"
        );
    }
}
