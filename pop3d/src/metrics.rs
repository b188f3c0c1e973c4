//! `--metrics ADDR`: counters, a gauge and latency histograms of the
//! service (fed by the library's observation hook), served as Prometheus
//! text (OpenMetrics) on `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use pop3_proto::{CloseReason, LoginAttempt, LoginLimit, Note};
use pop3_tokio::observe::{Call, Rejection};

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Every metric pop3d exports, under the `pop3_` prefix.
pub(crate) struct Metrics {
    registry: Registry,
    sessions_open: Gauge,
    sessions: Family<Labels<1>, Counter>,
    logins: Family<Labels<2>, Counter>,
    commands: Family<Labels<1>, Counter>,
    sent_bytes: Counter,
    messages: Family<Labels<1>, Counter>,
    handler_seconds: Family<Labels<1>, Histogram>,
    refused: Family<Labels<1>, Counter>,
    tls_handshakes: Family<Labels<2>, Counter>,
    /// The database store's pool, read at each scrape.
    pool: Option<deadpool_postgres::Pool>,
    db_pool: Family<Labels<1>, Gauge>,
}

impl Metrics {
    /// The metrics, with the connection pool's gauges when the store is
    /// a database (`pool`).
    pub(crate) fn new(pool: Option<deadpool_postgres::Pool>) -> Self {
        let mut registry = Registry::with_prefix("pop3");
        let metrics = Self {
            sessions_open: Gauge::default(),
            sessions: Family::default(),
            logins: Family::default(),
            commands: Family::default(),
            sent_bytes: Counter::default(),
            messages: Family::default(),
            handler_seconds: Family::new_with_constructor(|| {
                // 0.5 ms to about 16 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            refused: Family::default(),
            tls_handshakes: Family::default(),
            pool,
            db_pool: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions_open",
            "Sessions running now",
            metrics.sessions_open.clone(),
        );
        registry.register(
            "sessions",
            "Sessions ended, by close reason",
            metrics.sessions.clone(),
        );
        registry.register(
            "logins",
            "Login attempts, by mechanism (USER, APOP or the SASL mechanism) and outcome",
            metrics.logins.clone(),
        );
        registry.register(
            "commands",
            "Commands executed, by keyword (other: not a known command)",
            metrics.commands.clone(),
        );
        registry.register(
            "sent_bytes",
            "Octets written to clients",
            metrics.sent_bytes.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages opened for RETR or TOP",
            metrics.messages.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Store (handler) call latency, by call",
            metrics.handler_seconds.clone(),
        );
        registry.register(
            "refused",
            "Connections refused before a session, by reason (full, per_address, proxy, ...), and login attempts refused unchecked by the failed-login limits (failed_logins_per_ip, failed_logins_per_user)",
            metrics.refused.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes, by mode (implicit, stls) and result (ok, failed)",
            metrics.tls_handshakes.clone(),
        );
        if metrics.pool.is_some() {
            registry.register(
                "db_pool_connections",
                "The database store's connection pool, by state: max (its size), open, idle (open and free), waiting (calls waiting for one)",
                metrics.db_pool.clone(),
            );
        }
        Self {
            registry,
            ..metrics
        }
    }

    pub(crate) fn refused(&self, why: Rejection) {
        self.refused.get_or_create(&[("reason", why.name())]).inc();
    }

    /// A login refused unchecked by the failed-login limits: counted with
    /// the connection refusals, as `failed_logins_per_ip` or `_per_user`.
    pub(crate) fn login_limited(&self, limit: LoginLimit) {
        let reason = match limit {
            LoginLimit::User => "failed_logins_per_user",
            _ => "failed_logins_per_ip",
        };
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    pub(crate) fn session_started(&self) {
        self.sessions_open.inc();
    }

    pub(crate) fn session_ended(&self, reason: CloseReason) {
        self.sessions_open.dec();
        self.sessions
            .get_or_create(&[("reason", reason_name(reason))])
            .inc();
    }

    pub(crate) fn noted(&self, note: &Note) {
        match note {
            Note::Command(name) => {
                let name = name.unwrap_or("other");
                self.commands.get_or_create(&[("command", name)]).inc();
            }
            Note::Login(LoginAttempt {
                method, outcome, ..
            }) => {
                let labels = [("mechanism", method.name()), ("outcome", outcome.name())];
                self.logins.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }

    pub(crate) fn sent(&self, octets: u64) {
        self.sent_bytes.inc_by(octets);
    }

    pub(crate) fn handler_call(&self, call: Call, elapsed: Duration) {
        self.handler_seconds
            .get_or_create(&[("call", call.name())])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn message_opened(&self, top: bool) {
        let kind = if top { "top" } else { "retr" };
        self.messages.get_or_create(&[("kind", kind)]).inc();
    }

    pub(crate) fn tls_handshake(&self, implicit: bool, ok: bool) {
        let labels = [
            ("mode", if implicit { "implicit" } else { "stls" }),
            ("result", if ok { "ok" } else { "failed" }),
        ];
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// The exposition text.
    fn render(&self) -> String {
        if let Some(pool) = &self.pool {
            let status = pool.status();
            for (state, n) in [
                ("max", status.max_size),
                ("open", status.size),
                ("idle", status.available),
                ("waiting", status.waiting),
            ] {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                self.db_pool.get_or_create(&[("state", state)]).set(n);
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// A close reason as a label value.
fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Quit => "quit",
        CloseReason::UpdateFailed => "update_failed",
        CloseReason::IdleTimeout => "idle_timeout",
        CloseReason::PeerClosed => "peer_closed",
        CloseReason::TooManyBadCommands => "too_many_bad_commands",
        CloseReason::TooManyAuthFailures => "too_many_auth_failures",
        CloseReason::HandlerFailed => "handler_failed",
        CloseReason::Shutdown => "shutdown",
        CloseReason::Rejected => "rejected",
        _ => "other",
    }
}

/// The most a scrape request may send before its blank line.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Scrapes served at once; a connection beyond them is closed at once, so
/// the metrics port cannot take the descriptors POP3 sessions need.
const MAX_SCRAPES: usize = 16;

/// Serves `GET /metrics` on `listener` until the task is dropped; any
/// other request gets 404 (or 405 for another method).
pub(crate) async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    let scrapes = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = scrapes.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics)).await;
            drop(permit);
        });
    }
}

/// One HTTP/1.x exchange: read the request head, answer, close.
async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
