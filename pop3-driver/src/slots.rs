//! Who holds the connection slots, and what connections that have not
//! logged in may take of them.
//!
//! RFC 1939 §3 wants an idle connection kept for at least ten minutes, so
//! silent or trickling connections that never log in could hold every slot
//! of a server for that long (50 of them kept a 50-slot server full for
//! 601 s). The [`Slots`] table bounds them, for every adapter:
//!
//! - **A share of the slots**: at most `max_unauthenticated` connections
//!   that have not logged in (default: half of `max_connections`), so the
//!   rest stays for sessions that have.
//! - **Per address**: at most `max_per_ip` connections from one IP address
//!   (IPv4-mapped IPv6 counts as IPv4), logged in or not; more are refused
//!   with `-ERR [SYS/TEMP]` and never evict anyone.
//! - **Eviction**: when a new connection finds the server full, or the
//!   unauthenticated share taken, the connection that has not logged in
//!   and has been idle longest (no complete command since it was accepted
//!   or since its last command, and now waiting for the client) is closed
//!   to make room, as the idle timer would close it: without a reply and
//!   without entering UPDATE. A connection in the middle of something (a
//!   credential check, the failed-login delay, a reply being written) is
//!   not idle and is never chosen, nor is one that has logged in. Only if
//!   no connection can be evicted is the new one refused.
//!
//! The session says whether it has logged in ([`Session::phase`]); the
//! drive procedure reports that, and when it waits for the client, to the
//! connection's [`Slot`]. An evicted connection is woken by an event (async
//! loops) or by its transport's [`Interrupter`] (blocking loops: e.g. the
//! socket's read side shut down); a blocking transport without one is never
//! evicted.
//!
//! [`Session::phase`]: pop3_proto::Session::phase

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use event_listener::Event;
use pop3_proto::Refusal;

/// Makes a read (or a TLS handshake) that is blocked in a transport on
/// another thread return, and every later read on it fail or end: for a
/// socket, shutting down its read side. See
/// [`blocking::Transport::interrupter`](crate::blocking::Transport::interrupter).
pub type Interrupter = Box<dyn Fn() + Send + Sync>;

/// Why a TLS handshake was cut short by an eviction.
pub(crate) fn evicted_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed while idle before logging in, to make room for a new connection",
    )
}

/// How an evicted connection's loop is woken.
pub(crate) enum Wake {
    /// The async loop waits for [`Tenant::evicted`] beside its read.
    Event,
    /// The blocking loop's read is cut short by this.
    Interrupt(Interrupter),
    /// Nothing can wake it: never evicted.
    Never,
}

/// Why [`Slots::admit`] found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The server, or its unauthenticated share, with nobody to evict.
    Server,
    /// The connections from this address.
    Address,
}

impl Full {
    /// What the connection is told.
    pub(crate) fn refusal(self) -> Refusal {
        Refusal::sys_temp(match self {
            Self::Server => "too many connections, try again later",
            Self::Address => "too many connections from your address, try again later",
        })
    }

    /// What the observer is told.
    pub(crate) fn rejection(self) -> crate::observe::Rejection {
        match self {
            Self::Server => crate::observe::Rejection::Full,
            Self::Address => crate::observe::Rejection::PerAddress,
        }
    }
}

/// The limits a [`Slots`] table applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections at once.
    pub(crate) max_connections: Option<usize>,
    /// Connections at once that have not logged in.
    pub(crate) max_unauthenticated: Option<usize>,
    /// Connections at once from one IP address.
    pub(crate) max_per_ip: Option<usize>,
}

/// `Tenant::state`: doing something (a command, a reply, the handshake's start).
const BUSY: u8 = 0;
/// `Tenant::state`: waiting for the client.
const WAITING: u8 = 1;
/// `Tenant::state`: closed to make room; set only from `WAITING`.
const EVICTED: u8 = 2;

/// One connection's entry, shared by the table and the connection.
pub(crate) struct Tenant {
    id: u64,
    state: AtomicU8,
    /// Nanoseconds from the table's epoch to the last complete command
    /// (or to the admission).
    idle_since: AtomicU64,
    woken: Event,
    interrupt: Option<Interrupter>,
    slots: Arc<Slots>,
}

/// What the table counts of a connection.
struct Entry {
    tenant: Arc<Tenant>,
    ip: Option<IpAddr>,
    logged_in: bool,
    evictable: bool,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    unauthenticated: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if !entry.logged_in {
            self.unauthenticated -= 1;
        }
        if let Some(ip) = entry.ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
        Some(entry)
    }

    /// The unauthenticated connection idle longest, now marked evicted and
    /// out of the table; `None` if no connection can be evicted.
    fn evict(&mut self) -> Option<Entry> {
        let mut candidates: Vec<(u64, u64)> = self
            .entries
            .values()
            .filter(|e| {
                !e.logged_in && e.evictable && e.tenant.state.load(Ordering::Acquire) == WAITING
            })
            .map(|e| (e.tenant.idle_since.load(Ordering::Acquire), e.tenant.id))
            .collect();
        candidates.sort_unstable();
        for (_, id) in candidates {
            let tenant = &self.entries[&id].tenant;
            // It may have just stopped waiting: then it is not idle.
            if tenant
                .state
                .compare_exchange(WAITING, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return self.remove(id);
            }
        }
        None
    }
}

/// The connection slots of a service. See the [module docs](self).
pub(crate) struct Slots {
    limits: Limits,
    table: Mutex<Table>,
    epoch: Instant,
}

impl Slots {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::default(),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection from `ip` at `now`, evicting the
    /// unauthenticated connection idle longest if the server is full or
    /// the unauthenticated share is taken; the refusal to send otherwise.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        now: Instant,
        wake: Wake,
    ) -> Result<Slot, Full> {
        let ip = ip.map(|ip| ip.to_canonical());
        let (interrupt, evictable) = match wake {
            Wake::Event => (None, true),
            Wake::Interrupt(i) => (Some(i), true),
            Wake::Never => (None, false),
        };
        let evicted;
        let tenant;
        {
            let mut table = self.lock();
            if let (Some(ip), Some(max)) = (ip, self.limits.max_per_ip) {
                if table.per_ip.get(&ip).copied().unwrap_or(0) >= max {
                    return Err(Full::Address);
                }
            }
            let full = self
                .limits
                .max_connections
                .is_some_and(|max| table.entries.len() >= max)
                || self
                    .limits
                    .max_unauthenticated
                    .is_some_and(|max| table.unauthenticated >= max);
            evicted = if full {
                match table.evict() {
                    Some(entry) => Some(entry.tenant),
                    None => return Err(Full::Server),
                }
            } else {
                None
            };
            let id = table.next_id;
            table.next_id += 1;
            tenant = Arc::new(Tenant {
                id,
                state: AtomicU8::new(BUSY),
                idle_since: AtomicU64::new(self.nanos(now)),
                woken: Event::new(),
                interrupt,
                slots: self.clone(),
            });
            table.entries.insert(
                id,
                Entry {
                    tenant: tenant.clone(),
                    ip,
                    logged_in: false,
                    evictable,
                },
            );
            table.unauthenticated += 1;
            if let Some(ip) = ip {
                *table.per_ip.entry(ip).or_default() += 1;
            }
        }
        if let Some(victim) = evicted {
            victim.wake();
        }
        Ok(Slot(tenant))
    }

    /// Connections holding a slot now, and how many of them have not logged in.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.entries.len(), table.unauthenticated)
    }
}

impl Tenant {
    fn wake(&self) {
        self.woken.notify(usize::MAX);
        if let Some(interrupt) = &self.interrupt {
            interrupt();
        }
    }

    /// True once this connection was chosen to make room.
    pub(crate) fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) == EVICTED
    }

    /// Resolves once this connection is chosen to make room.
    pub(crate) async fn evicted(&self) {
        loop {
            if self.is_evicted() {
                return;
            }
            let listener = self.woken.listen();
            if self.is_evicted() {
                return;
            }
            listener.await;
        }
    }
}

/// A connection's place in the [`Slots`] table; released on drop.
pub(crate) struct Slot(Arc<Tenant>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.0.id)
            .field("state", &self.0.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Slot {
    /// The shared entry, for a loop that waits for the eviction.
    pub(crate) fn tenant(&self) -> Arc<Tenant> {
        self.0.clone()
    }

    /// The connection waits for the client now (it may be evicted).
    pub(crate) fn waiting(&self) {
        let _ = self
            .0
            .state
            .compare_exchange(BUSY, WAITING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The wait for the client is over; true if the connection was evicted
    /// meanwhile (then it must close, whatever the client sent).
    pub(crate) fn busy(&self) -> bool {
        match self
            .0
            .state
            .compare_exchange(WAITING, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(state) => state == EVICTED,
        }
    }

    /// True once the connection was chosen to make room.
    pub(crate) fn is_evicted(&self) -> bool {
        self.0.is_evicted()
    }

    /// A complete command came at `now`: the connection is not idle since then.
    pub(crate) fn command(&self, now: Instant) {
        self.0
            .idle_since
            .store(self.0.slots.nanos(now), Ordering::Release);
    }

    /// The session has logged in: it no longer counts as unauthenticated
    /// and is never evicted.
    pub(crate) fn logged_in(&self) {
        let mut table = self.0.slots.lock();
        let table = &mut *table;
        if let Some(entry) = table.entries.get_mut(&self.0.id) {
            if !entry.logged_in {
                entry.logged_in = true;
                table.unauthenticated -= 1;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.lock().remove(self.0.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn limits(max: usize, unauth: usize, per_ip: Option<usize>) -> Arc<Slots> {
        Slots::new(Limits {
            max_connections: Some(max),
            max_unauthenticated: Some(unauth),
            max_per_ip: per_ip,
        })
    }

    #[test]
    fn the_oldest_idle_unauthenticated_connection_makes_room() {
        let slots = limits(3, 3, None);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let a = slots.admit(ip("192.0.2.1"), at(0), Wake::Event).unwrap();
        let b = slots.admit(ip("192.0.2.2"), at(1), Wake::Event).unwrap();
        let c = slots.admit(ip("192.0.2.3"), at(2), Wake::Event).unwrap();
        // a sent a command later than b: b has been idle longest.
        a.command(at(10));
        for s in [&a, &b, &c] {
            s.waiting();
        }
        let d = slots.admit(ip("192.0.2.4"), at(20), Wake::Event).unwrap();
        assert!(b.is_evicted() && !a.is_evicted() && !c.is_evicted());
        assert!(
            b.busy(),
            "an evicted connection learns it when its wait ends"
        );
        assert_eq!(slots.counts(), (3, 3));
        drop(b);
        assert_eq!(
            slots.counts(),
            (3, 3),
            "an evicted slot was released already"
        );
        // A connection that is busy (not waiting for its client) is never chosen.
        assert!(!c.busy());
        let e = slots.admit(ip("192.0.2.5"), at(30), Wake::Event).unwrap();
        assert!(a.is_evicted(), "c was busy, d never waited: a goes");
        // Nobody waits any more: the next one is refused.
        let refused = slots
            .admit(ip("192.0.2.6"), at(40), Wake::Event)
            .unwrap_err();
        assert_eq!(
            refused.refusal().text(),
            "too many connections, try again later"
        );
        drop((c, d, e));
        assert_eq!(slots.counts(), (0, 0));
    }

    #[test]
    fn logged_in_sessions_are_never_evicted_and_keep_their_share() {
        // Four slots, two for connections that have not logged in.
        let slots = limits(4, 2, None);
        let now = Instant::now();
        let a = slots.admit(ip("192.0.2.1"), now, Wake::Event).unwrap();
        a.logged_in();
        a.waiting();
        let b = slots.admit(ip("192.0.2.2"), now, Wake::Event).unwrap();
        let c = slots.admit(ip("192.0.2.3"), now, Wake::Event).unwrap();
        assert_eq!(slots.counts(), (3, 2));
        b.waiting();
        c.waiting();
        // The unauthenticated share is taken: a third evicts b, not a.
        let d = slots.admit(ip("192.0.2.4"), now, Wake::Event).unwrap();
        assert!(b.is_evicted() && !a.is_evicted());
        assert_eq!(slots.counts(), (3, 2));
        d.logged_in();
        c.logged_in();
        let e = slots.admit(ip("192.0.2.5"), now, Wake::Event).unwrap();
        assert_eq!(slots.counts(), (4, 1));
        e.waiting();
        // Full of logged-in sessions but e: e makes room for the next one.
        let f = slots.admit(ip("192.0.2.6"), now, Wake::Event).unwrap();
        assert!(e.is_evicted());
        f.logged_in();
        let refused = slots.admit(ip("192.0.2.7"), now, Wake::Event).unwrap_err();
        assert_eq!(
            refused.refusal().text(),
            "too many connections, try again later"
        );
        drop((a, c, d, f));
        assert_eq!(slots.counts(), (0, 0));
    }

    #[test]
    fn per_address_limit_refuses_and_evicts_nobody() {
        let slots = limits(10, 10, Some(2));
        let now = Instant::now();
        let a = slots.admit(ip("192.0.2.1"), now, Wake::Event).unwrap();
        let b = slots
            .admit(ip("::ffff:192.0.2.1"), now, Wake::Event)
            .unwrap();
        a.waiting();
        b.waiting();
        let refused = slots.admit(ip("192.0.2.1"), now, Wake::Event).unwrap_err();
        assert_eq!(
            refused.refusal().code(),
            Some(pop3_proto::ResponseCode::SysTemp)
        );
        assert_eq!(
            refused.refusal().text(),
            "too many connections from your address, try again later"
        );
        assert!(!a.is_evicted() && !b.is_evicted());
        // Another address is not affected; without an address there is no limit.
        let c = slots.admit(ip("192.0.2.2"), now, Wake::Event).unwrap();
        let unknown: Vec<_> = (0..3)
            .map(|_| slots.admit(None, now, Wake::Event).unwrap())
            .collect();
        drop(a);
        let d = slots.admit(ip("192.0.2.1"), now, Wake::Event).unwrap();
        drop((b, c, d, unknown));
        assert_eq!(slots.counts(), (0, 0));
    }

    /// Through the service and the drive procedure: a session that waits
    /// for its client before logging in is evicted by a newcomer, closes
    /// without a byte sent, and ends as an idle timeout marked evicted; a
    /// logged-in one is never evicted.
    #[test]
    fn an_evicted_session_closes_silently_as_an_idle_timeout() {
        use crate::memory::{MemoryHandler, MemoryStore};
        use crate::procedure::{Procedure, Step};
        use crate::service::{Admission, ConnectionInfo, Service};
        use crate::{Handler, ReadOutcome};
        use pop3_proto::{CloseReason, Config, Request};

        let store = MemoryStore::new();
        store.add_user("u", "p");
        let handlers = store.clone();
        let service = Service::new(
            Config::builder().build().unwrap(),
            move |_: &ConnectionInfo| Ok(handlers.handler()),
        )
        // Two slots, both open to connections that have not logged in.
        .max_connections(2)
        .max_unauthenticated(2);
        let info = ConnectionInfo::new(Some("192.0.2.1:1000".parse().unwrap()), None);
        let now = Instant::now();
        let admit = || match service.admit::<<MemoryHandler as Handler>::Body>(&info, now, false) {
            Admission::Serve {
                procedure,
                handler,
                permit,
            } => (procedure, handler, permit),
            Admission::Reject(bytes) => panic!("rejected: {bytes:?}"),
        };
        // Writes what the procedure asks until it reads; what was written.
        fn run_to_read<B: std::fmt::Debug>(
            p: &mut Procedure<B>,
            h: &mut MemoryHandler,
            now: Instant,
        ) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                match p.next(now) {
                    Step::Write(t) => {
                        out.extend_from_slice(&t.to_vec());
                        p.written(now, t, Ok(()));
                    }
                    Step::Call(Request::Authenticate { user, credential }) => {
                        let r = h.authenticate(&user, &credential);
                        p.authenticated(now, r);
                    }
                    Step::Call(Request::Lock { user }) => {
                        let r = h.lock(&user);
                        p.locked(now, r);
                    }
                    Step::Read { .. } => return out,
                    other => panic!("unexpected step {other:?}"),
                }
            }
        }
        let (mut first, mut h1, _p1) = admit();
        assert!(run_to_read(&mut first, &mut h1, now).starts_with(b"+OK"));
        let (mut second, mut h2, _p2) = admit();
        assert!(run_to_read(&mut second, &mut h2, now).starts_with(b"+OK"));
        // The second logs in.
        let login = b"USER u\r\nPASS p\r\n";
        second.read(now, Ok(ReadOutcome::Data(login.len())), login);
        assert!(String::from_utf8(run_to_read(&mut second, &mut h2, now))
            .unwrap()
            .contains("+OK"));
        let evicted = |p: &Procedure<_>| p.tenant().unwrap().is_evicted();
        assert!(!evicted(&first));
        // Full: the third evicts the first (idle, not logged in).
        let (mut third, mut h3, _p3) = admit();
        assert!(evicted(&first) && !evicted(&second));
        // Whatever the first's read brings now, it closes without replying.
        let noop = b"CAPA\r\n";
        first.read(now, Ok(ReadOutcome::Data(noop.len())), noop);
        match first.next(now) {
            Step::Done(end) => {
                assert_eq!(end.reason, CloseReason::IdleTimeout);
                assert!(end.evicted && end.user.is_none());
            }
            other => panic!("expected the end, got {other:?}"),
        }
        assert!(run_to_read(&mut third, &mut h3, now).starts_with(b"+OK"));
        // Full again, and only logged-in or busy sessions: refused.
        third.read(now, Ok(ReadOutcome::Data(login.len())), login);
        assert!(matches!(
            service.admit::<()>(&info, now, false),
            Admission::Reject(_)
        ));
        assert!(!second.session().is_closed());
    }

    #[test]
    fn connections_that_cannot_be_woken_are_not_evicted() {
        let slots = limits(1, 1, None);
        let now = Instant::now();
        let a = slots.admit(None, now, Wake::Never).unwrap();
        a.waiting();
        assert!(slots.admit(None, now, Wake::Event).is_err());
        drop(a);
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = woken.clone();
        let b = slots
            .admit(
                None,
                now,
                Wake::Interrupt(Box::new(move || flag.store(true, Ordering::SeqCst))),
            )
            .unwrap();
        b.waiting();
        let c = slots.admit(None, now, Wake::Event).unwrap();
        assert!(woken.load(Ordering::SeqCst), "the interrupter was called");
        assert!(b.is_evicted());
        let tenant = c.tenant();
        c.waiting();
        let _d = slots.admit(None, now, Wake::Event).unwrap();
        futures_lite::future::block_on(tenant.evicted());
    }
}
