//! One conformance suite for every runtime adapter, over real loopback
//! sockets, with real clients (Python's `poplib`, `curl`).
//!
//! An adapter's test file implements [`Launcher`] (start a server from a
//! [`Spec`] on 127.0.0.1, port 0, as a plain or an implicit TLS listener:
//! [`Listen`]) and invokes [`suite!`], which expands to one `#[test]` per
//! check in [`checks`]. The TLS checks use the test PKI and the rustls
//! client in [`tls`].

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod checks;
mod client;
pub mod tls;
mod tls_checks;

pub use client::Client;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pop3_driver::memory::{MemoryHandler, MemoryStore};
use pop3_driver::observe::{Call, Observer, Rejection};
use pop3_driver::tls::TlsConfig;
use pop3_driver::{ConnectionInfo, Service, SessionEnd, Shutdown};
use pop3_proto::{Config, Note, Refusal};

/// What the suite adds around the store: connection refusals for the
/// connection hook, and how sessions ended, from the service's end hook.
#[derive(Debug, Default)]
pub struct Connections {
    refuse_next: Mutex<Option<Refusal>>,
    ended: Mutex<Vec<SessionEnd>>,
}

impl Connections {
    /// Makes the connection hook refuse the next connection.
    pub fn refuse_next_connection(&self, refusal: Refusal) {
        *self.refuse_next.lock().unwrap() = Some(refusal);
    }

    /// How sessions ended so far (rejected connections included), in order.
    pub fn ended(&self) -> Vec<SessionEnd> {
        self.ended.lock().unwrap().clone()
    }

    fn take_refusal(&self) -> Option<Refusal> {
        self.refuse_next.lock().unwrap().take()
    }

    fn record(&self, end: &SessionEnd) {
        self.ended.lock().unwrap().push(end.clone());
    }
}

/// What the service's observer was told, in order, as short strings
/// (`started`, `command USER`, `login USER failed alice`, `call lock`,
/// `opened retr`, `tls stls ok`, `refused per_address`, `ended quit`);
/// octets written are summed apart.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    events: Arc<Mutex<Vec<String>>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Observed {
    /// What was told so far.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Octets written to clients so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Acquire)
    }

    fn push(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }
}

impl Observer for Observed {
    fn refused(&self, _info: &ConnectionInfo, why: Rejection) {
        self.push(format!("refused {}", why.name()));
    }

    fn session_started(&self, _info: &ConnectionInfo) {
        self.push("started".into());
    }

    fn noted(&self, _info: &ConnectionInfo, note: &Note) {
        self.push(match note {
            Note::Command(name) => format!("command {}", name.unwrap_or("other")),
            Note::Login(a) => format!(
                "login {} {} {}",
                a.method.name(),
                a.outcome.name(),
                a.user.as_deref().unwrap_or("-")
            ),
            other => format!("{other:?}"),
        });
    }

    fn sent(&self, _info: &ConnectionInfo, octets: u64) {
        self.sent
            .fetch_add(octets, std::sync::atomic::Ordering::AcqRel);
    }

    fn handler_call(&self, call: Call, _elapsed: Duration) {
        self.push(format!("call {}", call.name()));
    }

    fn message_opened(&self, _info: &ConnectionInfo, top: bool) {
        self.push(format!("opened {}", if top { "top" } else { "retr" }));
    }

    fn tls_handshake(
        &self,
        _info: &ConnectionInfo,
        implicit: bool,
        result: Result<(), &std::io::Error>,
    ) {
        let mode = if implicit { "implicit" } else { "stls" };
        let result = if result.is_ok() { "ok" } else { "failed" };
        self.push(format!("tls {mode} {result}"));
    }

    fn session_ended(&self, _info: &ConnectionInfo, end: &SessionEnd) {
        self.push(format!("ended {:?}", end.reason));
    }
}

/// What a test server should be.
pub struct Spec {
    /// Session configuration.
    pub config: Config,
    /// The mail, its injected faults and its counters.
    pub store: MemoryStore,
    /// Connection refusals and session ends.
    pub connections: Arc<Connections>,
    /// What the service's observer was told.
    pub observed: Observed,
    /// Connection cap.
    pub max_connections: Option<usize>,
    /// Cap on connections that have not logged in (the service's default:
    /// half of `max_connections`).
    pub max_unauthenticated: Option<usize>,
    /// Cap on connections from one address (all of the suite's come from
    /// 127.0.0.1).
    pub max_connections_per_ip: Option<usize>,
    /// Grace period of a graceful shutdown.
    pub shutdown_grace: Duration,
    /// The server's TLS (for STLS and implicit TLS listeners).
    pub tls: Option<TlsConfig>,
    /// What kind of listener to serve.
    pub listen: Listen,
    /// The sources PROXY headers are taken from (`Service::proxy_from`).
    pub proxy_from: Option<Vec<pop3_driver::proxy_header::Cidr>>,
}

/// The kind of listener a test server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listen {
    /// Plain TCP (STLS if the config offers it): the adapter's `serve`.
    #[default]
    Plain,
    /// Implicit TLS (RFC 8314): the adapter's `serve_tls`.
    ImplicitTls,
}

impl Spec {
    /// A server with `config` over `store`, handing out 64 KiB body chunks.
    pub fn new(config: Config, store: MemoryStore) -> Self {
        store.set_chunk_size(64 * 1024);
        Self {
            config,
            store,
            connections: Arc::default(),
            observed: Observed::default(),
            max_connections: None,
            max_unauthenticated: None,
            max_connections_per_ip: None,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            listen: Listen::Plain,
            proxy_from: None,
        }
    }

    /// The same, served with `tls` on a `listen` listener.
    pub fn with_tls(mut self, tls: TlsConfig, listen: Listen) -> Self {
        self.tls = Some(tls);
        self.listen = listen;
        self
    }

    /// The service to serve. Its connection hook hands out the store's
    /// handler per connection, unless told to refuse the next one, and
    /// checks that the adapter passes the peer address (loopback, or a
    /// loopback proxy's).
    pub fn service(&self) -> TestService {
        let store = self.store.clone();
        let connections = self.connections.clone();
        let hook: Hook = Box::new(move |info| {
            assert!(
                info.peer.is_some_and(|p| p.ip().is_loopback())
                    || info.proxied_by.is_some_and(|p| p.ip().is_loopback()),
                "peer address: {info:?}"
            );
            match connections.take_refusal() {
                Some(refusal) => Err(refusal),
                None => Ok(store.handler()),
            }
        });
        let ends = self.connections.clone();
        let mut service = Service::new(self.config.clone(), hook)
            .shutdown_grace(self.shutdown_grace)
            .on_session_end(move |_info, end| ends.record(end))
            .observe(self.observed.clone());
        if let Some(max) = self.max_connections {
            service = service.max_connections(max);
        }
        if let Some(max) = self.max_unauthenticated {
            service = service.max_unauthenticated(max);
        }
        if let Some(max) = self.max_connections_per_ip {
            service = service.max_connections_per_ip(max);
        }
        if let Some(tls) = &self.tls {
            service = service.tls(tls.clone());
        }
        if let Some(nets) = &self.proxy_from {
            service = service.proxy_from(nets.iter().copied());
        }
        service
    }
}

type Hook = Box<dyn Fn(&ConnectionInfo) -> Result<MemoryHandler, Refusal> + Send + Sync>;

/// The service type every adapter serves in the suite.
pub type TestService = Service<Hook>;

/// Starts a server on its own thread: `run` gets the service, the kind of
/// listener to serve and a callback to report the address it bound
/// (127.0.0.1, port 0), then serves until the service shuts down.
pub fn start(
    spec: Spec,
    run: impl FnOnce(TestService, Listen, Box<dyn FnOnce(SocketAddr) + Send>) + Send + 'static,
) -> Running {
    let service = spec.service();
    let shutdown = service.shutdown_handle();
    let listen = spec.listen;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        run(
            service,
            listen,
            Box::new(move |addr| tx.send(addr).unwrap()),
        );
    });
    let addr = rx.recv().expect("the server reports its address");
    Running::new(addr, shutdown, &spec, thread)
}

/// A running test server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shutdown signal.
    pub shutdown: Shutdown,
    /// The mail, its injected faults and its counters.
    pub store: MemoryStore,
    /// Connection refusals and session ends.
    pub connections: Arc<Connections>,
    /// What the service's observer was told.
    pub observed: Observed,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn new(addr: SocketAddr, shutdown: Shutdown, spec: &Spec, thread: JoinHandle<()>) -> Self {
        Self {
            addr,
            shutdown,
            store: spec.store.clone(),
            connections: spec.connections.clone(),
            observed: spec.observed.clone(),
            thread: Some(thread),
        }
    }

    /// Begins a graceful shutdown and waits for `serve` to return; false if
    /// it did not within `limit`.
    pub fn stop(&mut self, limit: Duration) -> bool {
        self.shutdown.begin();
        let deadline = Instant::now() + limit;
        let thread = self.thread.take().expect("stopped once");
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().expect("server thread");
        true
    }

    /// Waits until `cond` holds (for effects that follow a close), up to 10 s.
    pub fn eventually(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Locks taken and released so far.
    pub fn locks(&self) -> (usize, usize) {
        (self.store.locks(), self.store.unlocks())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown.abort();
            let _ = self.stop(Duration::from_secs(30));
        }
    }
}

/// Starts a server for a [`Spec`] on `127.0.0.1:0` in the background.
pub trait Launcher {
    /// Starts it and returns once it accepts connections.
    fn launch(spec: Spec) -> Running;
}

/// Expands to one `#[test]` per conformance check for a [`Launcher`].
#[macro_export]
macro_rules! suite {
    ($launcher:ty) => {
        $crate::suite!($launcher;
            rfc1939_session_with_apop,
            user_session_transcript,
            pipelined_thousand_commands_in_one_write,
            big_retr_streams_with_bounded_memory,
            idle_timeout_closes_without_update,
            peer_disconnect_deletes_nothing,
            half_closed_client_gets_all_replies,
            connection_limit_rejects_and_keeps_serving,
            silent_connections_make_room_for_new_clients,
            per_address_limit_refuses_with_sys_temp,
            proxy_header_names_the_client,
            observer_sees_sessions_commands_and_logins,
            graceful_shutdown_finishes_commands_and_deletes_nothing,
            shutdown_aborts_stalled_sessions_after_grace,
            handler_errors_at_each_request,
            sasl_logins,
            python_poplib_client,
            python_poplib_utf8,
            curl_client,
            curl_sasl_client,
            stls_then_login_inside_tls,
            stls_injection_is_not_executed_inside_tls,
            implicit_tls_negotiates_alpn_pop3,
            stalled_handshakes_are_closed_while_others_are_served,
            garbage_handshake_closes_only_that_connection,
            implicit_tls_over_the_limit_is_closed_without_a_handshake,
            stalled_handshakes_make_room_for_new_clients,
            proxy_header_before_implicit_tls,
        );
    };
    ($launcher:ty; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::checks::$check::<$launcher>();
            }
        )+
    };
}
