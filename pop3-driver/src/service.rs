//! The server every adapter runs: configuration, the connection hook, the
//! connection limits (see [`crate::slots`]), live-session counting for a
//! graceful shutdown, greeting nonces, and the back-off after accept errors.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use event_listener::{Event, Listener as _};
use pop3_proto::{Channel, Config, Greeting, Output, Refusal, Session};

use crate::failures::{FailedLoginLimits, FailedLogins};
use crate::observe::{Observer, Rejection};
use crate::procedure::Procedure;
use crate::proxy::{HeaderRead, Trust};
use crate::proxy_header::Cidr;
use crate::shutdown::{Shutdown, Stage};
use crate::slots::{Limits, Slot, Slots, Wake};
use crate::tls::TlsConfig;
use crate::SessionEnd;

/// What is known about a new connection when the hook is asked about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address, when the stream has one.
    pub peer: Option<SocketAddr>,
    /// The address the client connected to, when the stream has one.
    pub local: Option<SocketAddr>,
    /// TLS is active from the start (an implicit TLS listener, RFC 8314;
    /// or a trusted proxy's PROXY header says the client used TLS).
    pub tls: bool,
    /// The proxy's address, when a trusted proxy's PROXY header named the
    /// client: `peer` and `local` are then the header's (see
    /// [`Service::proxy_from`]).
    pub proxied_by: Option<SocketAddr>,
}

impl ConnectionInfo {
    /// Describes a plain connection.
    pub fn new(peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        Self {
            peer,
            local,
            tls: false,
            proxied_by: None,
        }
    }

    /// The same connection, with TLS active from the start.
    pub fn with_tls(self) -> Self {
        Self { tls: true, ..self }
    }

    /// What the session is told: TLS from the start, and whether the peer
    /// is on this machine (a loopback address, IPv4-mapped included).
    pub fn channel(&self) -> Channel {
        Channel {
            tls: self.tls,
            local: self
                .peer
                .is_some_and(|peer| peer.ip().to_canonical().is_loopback()),
        }
    }
}

/// The connection hook (popart's `OnNewConnection`): makes the handler for
/// a new connection, or refuses it. Any `Fn(&ConnectionInfo) -> Result<H,
/// Refusal>` that is `Send + Sync + 'static` is one.
pub trait NewHandler<H>: Fn(&ConnectionInfo) -> Result<H, Refusal> + Send + Sync + 'static {}

impl<H, F> NewHandler<H> for F where
    F: Fn(&ConnectionInfo) -> Result<H, Refusal> + Send + Sync + 'static
{
}

/// A POP3 service: the session configuration, the connection hook, the
/// connection limit and the shutdown signal. Run it with an adapter's
/// `serve` (`pop3_std`, `pop3_tokio`, `pop3_async_std`). Cheap to clone;
/// clones share one state.
///
/// `new_handler` is popart's `OnNewConnection`: it sees each connection and
/// returns the handler for it, or a refusal (sent as `-ERR`, then the
/// connection is closed).
pub struct Service<F> {
    inner: Arc<Inner<F>>,
}

type EndHook = Box<dyn Fn(&ConnectionInfo, &SessionEnd) + Send + Sync>;
type AcceptErrorHook = Box<dyn Fn(&io::Error) + Send + Sync>;

struct Inner<F> {
    config: Arc<Config>,
    new_handler: F,
    on_end: Option<EndHook>,
    on_accept_error: Option<AcceptErrorHook>,
    max_connections: Option<usize>,
    max_unauthenticated: Option<usize>,
    max_per_ip: Option<usize>,
    failures: Option<Arc<FailedLogins>>,
    /// Made from the limits above when the first connection comes.
    slots: OnceLock<Arc<Slots>>,
    shutdown_grace: Duration,
    tls: Option<TlsConfig>,
    observer: Option<Arc<dyn Observer>>,
    proxy: Option<Trust>,
    live: Arc<Live>,
    shutdown: Shutdown,
}

impl<F> Clone for Service<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// The outcome of admitting a connection.
#[allow(clippy::large_enum_variant)] // short-lived, and Serve is the common case
pub(crate) enum Admission<H, B> {
    /// Serve this connection: drive `session` with `handler`; hold `permit`
    /// until the session ends.
    Serve {
        procedure: Procedure<B>,
        handler: H,
        permit: Permit,
    },
    /// Write these bytes (an `-ERR` line), then close the connection.
    Reject(Bytes),
}

impl<F, H> Service<F>
where
    F: Fn(&ConnectionInfo) -> Result<H, Refusal> + Send + Sync + 'static,
{
    /// A service with `config`, making a handler per connection with `new_handler`.
    pub fn new(config: Config, new_handler: F) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                new_handler,
                on_end: None,
                on_accept_error: None,
                max_connections: None,
                max_unauthenticated: None,
                max_per_ip: None,
                failures: None,
                slots: OnceLock::new(),
                shutdown_grace: Duration::from_secs(30),
                tls: None,
                observer: None,
                proxy: None,
                live: Arc::default(),
                shutdown: Shutdown::new(),
            }),
        }
    }

    /// Caps concurrent sessions. When a connection finds them all taken,
    /// the connection that has not logged in and has been idle longest is
    /// closed to make room for it (as the idle timer would close it: no
    /// reply, nothing deleted); if every session is logged in or busy, the
    /// new connection gets `-ERR [SYS/TEMP]` and is closed. Set before
    /// cloning or serving.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.inner_mut().max_connections = Some(max);
        self
    }

    /// Caps the connections that have not logged in (the rest of
    /// [`max_connections`](Self::max_connections) is kept for sessions
    /// that have): a new connection beyond it closes the unauthenticated
    /// connection idle longest, or is refused with `-ERR [SYS/TEMP]` if
    /// none is idle. Default: half of `max_connections`, rounded up (no
    /// cap without `max_connections`). RFC 1939's ten-minute autologout is
    /// unchanged; this only decides who goes first when room is needed.
    /// Set before cloning or serving.
    pub fn max_unauthenticated(mut self, max: usize) -> Self {
        self.inner_mut().max_unauthenticated = Some(max);
        self
    }

    /// Caps the connections from one IP address (IPv4-mapped IPv6 counts
    /// as IPv4), logged in or not: more get `-ERR [SYS/TEMP]` and are
    /// closed, evicting nobody. Default: no cap (behind a proxy every
    /// client has the proxy's address). Set before cloning or serving.
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.inner_mut().max_per_ip = Some(max);
        self
    }

    /// Limits failed logins per client address and per user over a
    /// sliding window (see [`FailedLoginLimits`]; off by default). An
    /// attempt over a limit is refused before the handler checks it, as
    /// a wrong password is answered (after the failed-login delay, and
    /// counted towards the session's failure limit): `-ERR [SYS/TEMP]`
    /// for the address, `-ERR [AUTH]` for the user, which only addresses
    /// that failed lately get, so the user can still log in from another.
    /// Set before cloning or serving.
    pub fn failed_login_limits(mut self, limits: FailedLoginLimits) -> Self {
        self.inner_mut().failures = Some(Arc::new(FailedLogins::new(limits)));
        self
    }

    /// The connection slots, with the limits as configured.
    fn slots(&self) -> &Arc<Slots> {
        let inner = &*self.inner;
        inner.slots.get_or_init(|| {
            Slots::new(Limits {
                max_connections: inner.max_connections,
                max_unauthenticated: inner
                    .max_unauthenticated
                    .or(inner.max_connections.map(|max| max.div_ceil(2))),
                max_per_ip: inner.max_per_ip,
            })
        })
    }

    /// How long a graceful shutdown waits for sessions before aborting
    /// them (default 30 s). Set before cloning or serving.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.inner_mut().shutdown_grace = grace;
        self
    }

    /// Serves TLS with `tls`: the adapters can then start TLS after STLS
    /// (offer it with `Config::builder().stls(true)`) and serve implicit
    /// TLS listeners (RFC 8314). Keep a clone of `tls` to replace the
    /// certificate while serving. Set before cloning or serving.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.inner_mut().tls = Some(tls);
        self
    }

    /// Reports what the service does to `observer` (metrics): sessions,
    /// commands, logins, octets sent, handler latency, refusals, TLS
    /// handshakes. Set before cloning or serving.
    pub fn observe(mut self, observer: impl Observer) -> Self {
        self.inner_mut().observer = Some(Arc::new(observer));
        self
    }

    /// Takes PROXY protocol headers (HAProxy's, versions 1 and 2) from
    /// connections whose source is in `nets`, and only from them; the
    /// client the header names is then the connection's peer everywhere
    /// (the connection hook, the per-address limit, the end hook, the
    /// observer), and a version 2 header saying the client used TLS counts
    /// as TLS for the plaintext policy.
    ///
    /// From a source in `nets` the header is required: a connection that
    /// sends none, a malformed one, or not all of it within
    /// [`HEADER_TIMEOUT`](crate::proxy::HEADER_TIMEOUT) is closed without a
    /// reply. `LOCAL` headers (health checks) keep the real addresses;
    /// headers without an IP client (`UNKNOWN`, `AF_UNIX`) leave the peer
    /// unknown. From any other source a connection whose first bytes are a
    /// header is closed, so nobody can claim another address; with an
    /// empty `nets` that holds for every connection. The header is read
    /// before the greeting and, on an implicit TLS listener, before the
    /// handshake. Set before cloning or serving.
    pub fn proxy_from(mut self, nets: impl IntoIterator<Item = Cidr>) -> Self {
        self.inner_mut().proxy = Some(Trust::new(nets.into_iter().collect()));
        self
    }

    /// The header to read before serving `info`, if it comes from a
    /// trusted proxy.
    pub(crate) fn proxy_header(&self, info: &ConnectionInfo, now: Instant) -> Option<HeaderRead> {
        self.inner.proxy.as_ref()?.read(info, now)
    }

    /// A trusted proxy's connection failed before its header was whole.
    pub(crate) fn proxy_failed(&self, info: &ConnectionInfo, why: String) {
        self.refused(info, Rejection::Proxy);
        let mut end = SessionEnd::rejected();
        end.proxy_error = Some(why);
        self.ended(info, &end);
    }

    fn refused(&self, info: &ConnectionInfo, why: Rejection) {
        if let Some(observer) = &self.inner.observer {
            observer.refused(info, why);
        }
    }

    /// An implicit TLS handshake ended.
    pub(crate) fn handshake(&self, info: &ConnectionInfo, result: Result<(), &io::Error>) {
        if let Some(observer) = &self.inner.observer {
            observer.tls_handshake(info, true, result);
        }
    }

    /// A session that was served ended: the observer and the end hook hear of it.
    pub(crate) fn session_closed(&self, info: &ConnectionInfo, end: &SessionEnd) {
        if let Some(observer) = &self.inner.observer {
            observer.session_ended(info, end);
        }
        self.ended(info, end);
    }

    /// Calls `hook` when a session ends (or a connection is rejected), with
    /// the connection and how it ended: user, counters, close reason. The
    /// library itself logs nothing; this is the place for a log line or
    /// metrics. Set before cloning or serving.
    pub fn on_session_end(
        mut self,
        hook: impl Fn(&ConnectionInfo, &SessionEnd) + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().on_end = Some(Box::new(hook));
        self
    }

    /// Calls `hook` when accepting a connection fails (out of descriptors,
    /// out of memory, a network error); the accept loop backs off and goes
    /// on. The place for a log line. Set before cloning or serving.
    pub fn on_accept_error(mut self, hook: impl Fn(&io::Error) + Send + Sync + 'static) -> Self {
        self.inner_mut().on_accept_error = Some(Box::new(hook));
        self
    }

    /// Tells the accept-error hook; adapters call this for every failed
    /// accept, before backing off.
    pub fn accept_failed(&self, error: &io::Error) {
        if let Some(hook) = &self.inner.on_accept_error {
            hook(error);
        }
    }

    pub(crate) fn ended(&self, info: &ConnectionInfo, end: &SessionEnd) {
        if let Some(hook) = &self.inner.on_end {
            hook(info, end);
        }
    }

    /// The session configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The TLS configuration, if the service has one.
    pub fn tls_config(&self) -> Option<&TlsConfig> {
        self.inner.tls.as_ref()
    }

    /// The signal that stops the service: [`Shutdown::begin`] for a graceful stop.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.inner.shutdown.clone()
    }

    /// Sessions running now.
    pub fn live_sessions(&self) -> usize {
        self.inner.live.count.load(Ordering::Acquire)
    }

    /// The stages of a shutdown once the listener is closed, for every
    /// adapter: wait this long for sessions to close, and if some are still
    /// live, raise the shutdown to that stage (`None`: give up waiting).
    pub fn shutdown_stages(&self) -> [(Duration, Option<Stage>); 3] {
        [
            (self.inner.shutdown_grace, Some(Stage::Abort)),
            (crate::ABORT_WAIT, Some(Stage::Cancel)),
            (crate::ABORT_WAIT, None),
        ]
    }

    /// The grace period of a graceful shutdown.
    pub fn grace(&self) -> Duration {
        self.inner.shutdown_grace
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    fn inner_mut(&mut self) -> &mut Inner<F> {
        Arc::get_mut(&mut self.inner).expect("configure the service before cloning or serving it")
    }

    /// Decides what to do with a new connection, at time `now`, over a
    /// transport that can (or cannot) start TLS.
    #[cfg(test)]
    pub(crate) fn admit<B>(
        &self,
        info: &ConnectionInfo,
        now: Instant,
        tls: bool,
    ) -> Admission<H, B> {
        self.admit_reserved(info, now, tls, None, Wake::Event)
    }

    /// A place under the connection limits, taken before admission (for an
    /// implicit TLS handshake, which counts as a connection that has not
    /// logged in and waits for its client); `None` if refused.
    pub(crate) fn reserve(
        &self,
        info: &ConnectionInfo,
        now: Instant,
        wake: Wake,
    ) -> Option<Reserved> {
        let slot = match self.slots().admit(peer_ip(info), now, wake) {
            Ok(slot) => slot,
            Err(full) => {
                self.refused(info, full.rejection());
                return None;
            }
        };
        let permit = self.inner.live.enter();
        Some(Reserved { permit, slot })
    }

    /// As `admit`, with the place under the limits already `reserved`, or
    /// taken now for a loop that `wake`s an evicted connection so.
    pub(crate) fn admit_reserved<B>(
        &self,
        info: &ConnectionInfo,
        now: Instant,
        tls: bool,
        reserved: Option<Reserved>,
        wake: Wake,
    ) -> Admission<H, B> {
        let inner = &*self.inner;
        let reject = |refusal: &Refusal, why: Rejection| {
            self.refused(info, why);
            let mut session = Session::reject(inner.config.clone(), refusal, now);
            let mut bytes = Vec::new();
            while let Output::Transmit(t) = session.poll_output(now) {
                bytes.extend_from_slice(&t.to_vec());
                let _ = session.handle_written(now, t);
            }
            Admission::Reject(bytes.into())
        };
        if inner.config.stls() && !tls {
            // Never offer STLS and then drop the client at the handshake.
            return reject(
                &Refusal::sys_perm("STLS is configured but TLS is not available"),
                Rejection::NoTls,
            );
        }
        if inner.shutdown.is_begun() {
            return reject(
                &Refusal::sys_temp("server shutting down"),
                Rejection::Shutdown,
            );
        }
        let Reserved { permit, slot } = match reserved {
            Some(reserved) => reserved,
            None => match self.slots().admit(peer_ip(info), now, wake) {
                Ok(slot) => Reserved {
                    permit: inner.live.enter(),
                    slot,
                },
                Err(full) => return reject(&full.refusal(), full.rejection()),
            },
        };
        match (inner.new_handler)(info) {
            Ok(handler) => {
                let mut procedure = Procedure::new(
                    Session::with_channel(
                        inner.config.clone(),
                        fresh_greeting(),
                        info.channel(),
                        now,
                    ),
                    inner.shutdown.clone(),
                )
                .with_slot(slot);
                if let Some(observer) = &inner.observer {
                    observer.session_started(info);
                    procedure = procedure.with_observer(observer.clone(), *info);
                }
                if inner.proxy.as_ref().is_some_and(|trust| trust.sniff(info)) {
                    procedure = procedure.refusing_proxy_headers();
                }
                if let Some(failures) = &inner.failures {
                    procedure = procedure.with_failures(failures.clone(), peer_ip(info));
                }
                Admission::Serve {
                    procedure,
                    handler,
                    permit,
                }
            }
            Err(refusal) => reject(&refusal, Rejection::Hook),
        }
    }

    /// Refuses a configuration the transport cannot honour: STLS offered
    /// where TLS cannot be started. Adapters call it before serving.
    pub fn check_transport(&self, can_start_tls: bool) -> std::io::Result<()> {
        if self.inner.config.stls() && !can_start_tls {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "STLS is configured, but this server has no TLS set up",
            ));
        }
        Ok(())
    }

    /// Refuses to serve an implicit TLS listener without a TLS configuration.
    /// Adapters call it before serving one.
    pub fn check_implicit_tls(&self) -> std::io::Result<()> {
        if self.inner.tls.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "implicit TLS needs a certificate: give the service one with Service::tls",
            ));
        }
        Ok(())
    }

    /// Resolves when no session is live.
    pub async fn all_closed(&self) {
        self.inner.live.all_closed().await;
    }

    /// Blocks until no session is live or `deadline` passes; true if none is live.
    pub fn wait_all_closed(&self, deadline: Instant) -> bool {
        loop {
            if self.live_sessions() == 0 {
                return true;
            }
            let listener = self.inner.live.idle.listen();
            if self.live_sessions() == 0 {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.live_sessions() == 0;
            }
        }
    }
}

/// Counts live sessions and tells when the count reaches zero.
#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    idle: Event,
}

impl Live {
    /// Counts one more live session (the limits are the slots' business).
    fn enter(self: &Arc<Self>) -> Permit {
        self.count.fetch_add(1, Ordering::AcqRel);
        Permit(self.clone())
    }

    async fn all_closed(&self) {
        loop {
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            let listener = self.idle.listen();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// A live session, counted until the connection is closed (for the
/// shutdown); released on drop.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Live>);

/// A connection's place under the limits, taken before the session starts.
#[derive(Debug)]
pub(crate) struct Reserved {
    pub(crate) permit: Permit,
    pub(crate) slot: Slot,
}

/// The address the per-address limit counts a connection under.
fn peer_ip(info: &ConnectionInfo) -> Option<std::net::IpAddr> {
    info.peer.map(|peer| peer.ip())
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// A greeting whose APOP timestamp no other connection of this process
/// shares, even within the same second: the nonce hashes a process-wide
/// counter with a per-process random key.
pub fn fresh_greeting() -> Greeting {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = KEY.get_or_init(RandomState::new).build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(n);
    h.write_u128(since_epoch.as_nanos());
    Greeting {
        // Keep it short in the banner; the counter already makes it unique.
        nonce: (h.finish() >> 16) ^ n,
        unix_time: since_epoch.as_secs(),
    }
}

/// Paces the accept loop after errors, so a temporary failure (out of file
/// descriptors, a client resetting during the handshake) never ends the server.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// After an accept error: how long to wait before accepting again.
    pub fn on_error(&mut self, error: &io::Error) -> Duration {
        use io::ErrorKind::*;
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
        ) {
            // That one connection failed; the listener is fine.
            return Duration::ZERO;
        }
        // Resource exhaustion and the like: wait, longer each time.
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.delay
    }

    /// After a successful accept.
    pub fn on_success(&mut self) {
        self.delay = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(fresh_greeting().nonce));
        }
    }

    #[test]
    fn loopback_peers_are_local() {
        let info = |peer: &str| ConnectionInfo::new(Some(peer.parse().unwrap()), None);
        assert!(info("127.0.0.1:5000").channel().local);
        assert!(info("[::1]:5000").channel().local);
        assert!(info("[::ffff:127.0.0.1]:5000").channel().local);
        assert!(!info("192.0.2.7:5000").channel().local);
        assert!(!ConnectionInfo::new(None, None).channel().local);
        let tls = info("192.0.2.7:995").with_tls().channel();
        assert!(tls.tls && !tls.local);
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::other("too many open files");
        assert_eq!(b.on_error(&emfile), Duration::from_millis(5));
        assert_eq!(b.on_error(&emfile), Duration::from_millis(10));
        for _ in 0..20 {
            b.on_error(&emfile);
        }
        assert_eq!(b.on_error(&emfile), Duration::from_secs(1));
        b.on_success();
        assert_eq!(b.on_error(&emfile), Duration::from_millis(5));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(b.on_error(&reset), Duration::ZERO);
    }

    #[test]
    fn stls_needs_a_transport_that_can_start_tls() {
        let config = Config::builder().stls(true).build().unwrap();
        let service = Service::new(config, |_: &ConnectionInfo| Ok(()));
        assert!(service.check_transport(false).is_err());
        assert!(service.check_transport(true).is_ok());
        let info = ConnectionInfo::new(None, None);
        match service.admit::<()>(&info, Instant::now(), false) {
            Admission::Reject(b) => assert_eq!(
                &b[..],
                b"-ERR [SYS/PERM] STLS is configured but TLS is not available\r\n"
            ),
            Admission::Serve { .. } => panic!("STLS offered without TLS"),
        }
        assert!(matches!(
            service.admit::<()>(&info, Instant::now(), true),
            Admission::Serve { .. }
        ));
    }

    #[test]
    fn limit_and_hook() {
        let core = Service::new(
            Config::builder().build().unwrap(),
            |info: &ConnectionInfo| match info.peer {
                Some(p) if p.port() == 666 => Err(Refusal::sys_perm("go away")),
                _ => Ok(()),
            },
        )
        .max_connections(1);
        let now = Instant::now();
        let ok = ConnectionInfo::new(Some("127.0.0.1:1000".parse().unwrap()), None);
        let first = core.admit::<()>(&ok, now, false);
        assert!(matches!(first, Admission::Serve { .. }));
        assert_eq!(core.live_sessions(), 1);
        match core.admit::<()>(&ok, now, false) {
            Admission::Reject(b) => {
                assert_eq!(
                    &b[..],
                    b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
                )
            }
            Admission::Serve { .. } => panic!("over the limit"),
        }
        drop(first);
        assert_eq!(core.live_sessions(), 0);
        assert!(core.wait_all_closed(now));
        let evil = ConnectionInfo::new(Some("127.0.0.1:666".parse().unwrap()), None);
        match core.admit::<()>(&evil, now, false) {
            Admission::Reject(b) => assert_eq!(&b[..], b"-ERR [SYS/PERM] go away\r\n"),
            Admission::Serve { .. } => panic!("hook refused"),
        }
        assert_eq!(
            core.live_sessions(),
            0,
            "a refused connection holds no permit"
        );
    }
}
