//! Failed logins over a sliding window, per client address and per user,
//! shared by every session of a [`Service`](crate::Service).
//!
//! A login attempt is checked before its credentials are (so the answer
//! looks and takes the same for existing and unknown users):
//!
//! - **Per address**: an address with `per_ip` failures within `window`
//!   is refused (`-ERR [SYS/TEMP]`, after the failed-login delay) whatever
//!   user it names.
//! - **Per user**: a user name with `per_user` failures within `window`
//!   (from any address) is refused (`-ERR [AUTH]`) only to an address that
//!   itself failed within the window (for any user). An address with no
//!   recent failure always gets its attempt checked, so an attacker
//!   guessing a user's password from other addresses cannot lock the real
//!   user out: each attacking address gets one guess per window at a
//!   limited user, then it is not clean any more. A connection without an
//!   address is never clean.
//!
//! Attempts being checked count against their address's limit until
//! they are answered (an [`Attempt`] is held meanwhile): otherwise many
//! attempts sent at once, or SCRAM exchanges opened before any proof is
//! sent, would all be checked before the first failure is counted.
//!
//! Failures are what the session counts as one (`SessionStats::failed_logins`:
//! wrong credentials, broken SASL exchanges); refused attempts are not
//! recorded, so a refusal never prolongs a block. Success clears nothing:
//! an attacker with one good account must not reset its address's count.
//! Memory is bounded: at most `max_entries` addresses and as many users
//! (a user is kept as a keyed hash of the lower-cased name, whatever its
//! length); a new one beyond that first drops the expired entries, then
//! the entry whose last failure is oldest.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop3_proto::LoginLimit;

/// Limits on failed logins (see [`Service::failed_login_limits`](crate::Service::failed_login_limits)).
/// The default: 10 failures per address and 5 per user within 5 minutes,
/// at most 10,000 addresses and 10,000 users remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedLoginLimits {
    /// Failures from one address within the window that refuse its attempts; `None`: no limit.
    pub per_ip: Option<u32>,
    /// Failures as one user within the window that refuse that user's
    /// attempts from addresses that failed too; `None`: no limit.
    pub per_user: Option<u32>,
    /// How far back failures count.
    pub window: Duration,
    /// Addresses (and, separately, users) remembered at most.
    pub max_entries: usize,
}

impl Default for FailedLoginLimits {
    fn default() -> Self {
        Self {
            per_ip: Some(10),
            per_user: Some(5),
            window: Duration::from_secs(300),
            max_entries: 10_000,
        }
    }
}

/// The shared failure tables.
#[derive(Debug)]
pub(crate) struct FailedLogins {
    limits: FailedLoginLimits,
    hasher: RandomState,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    by_ip: Recent<IpAddr>,
    by_user: Recent<u64>,
    /// Attempts being checked, per address (an entry per address with at
    /// least one: bounded by the connections).
    in_flight: HashMap<IpAddr, u32>,
}

/// A login attempt being checked: it counts against its address's limit
/// until it is dropped (when the session has answered it).
#[derive(Debug)]
pub(crate) struct Attempt {
    failures: Arc<FailedLogins>,
    /// The address it is counted for, if any.
    ip: Option<IpAddr>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut t = self.failures.tables();
            if let Some(n) = t.in_flight.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.in_flight.remove(&ip);
                }
            }
        }
    }
}

impl FailedLogins {
    pub(crate) fn new(limits: FailedLoginLimits) -> Self {
        Self {
            limits,
            hasher: RandomState::new(),
            tables: Mutex::default(),
        }
    }

    fn user_key(&self, user: &str) -> u64 {
        self.hasher.hash_one(user.to_ascii_lowercase())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic elsewhere leaves counts, not broken invariants.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks an attempt from `ip` as `user` at `now`: refused, and by
    /// which limit, or admitted (counted against the address until the
    /// [`Attempt`] is dropped).
    pub(crate) fn check(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: &str,
        now: Instant,
    ) -> Result<Attempt, LoginLimit> {
        let window = self.limits.window;
        let user = self.user_key(user);
        let ip = ip.map(|ip| ip.to_canonical());
        let mut t = self.tables();
        let from_ip = ip.map_or(0, |ip| t.by_ip.count(&ip, now, window));
        let checking = ip.map_or(0, |ip| t.in_flight.get(&ip).copied().unwrap_or(0));
        if self
            .limits
            .per_ip
            .is_some_and(|max| from_ip + checking as usize >= max as usize)
        {
            return Err(LoginLimit::Address);
        }
        let clean = ip.is_some() && from_ip == 0;
        let as_user = t.by_user.count(&user, now, window);
        if !clean
            && self
                .limits
                .per_user
                .is_some_and(|max| as_user >= max as usize)
        {
            return Err(LoginLimit::User);
        }
        let counted = ip.filter(|_| self.limits.per_ip.is_some());
        if let Some(ip) = counted {
            *t.in_flight.entry(ip).or_default() += 1;
        }
        Ok(Attempt {
            failures: self.clone(),
            ip: counted,
        })
    }

    /// Records a failed login from `ip` as `user` (if known) at `now`.
    pub(crate) fn failed(&self, ip: Option<IpAddr>, user: Option<&str>, now: Instant) {
        let l = self.limits;
        let user = user.map(|u| self.user_key(u));
        let mut t = self.tables();
        // Addresses are counted for the user limit too (is this one clean?).
        let keep = l.per_ip.or(l.per_user.map(|_| 1));
        if let (Some(ip), Some(keep)) = (ip, keep) {
            t.by_ip
                .record(ip.to_canonical(), now, l.window, keep, l.max_entries);
        }
        if let (Some(user), Some(max)) = (user, l.per_user) {
            t.by_user.record(user, now, l.window, max, l.max_entries);
        }
    }

    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let t = self.tables();
        (t.by_ip.times.len(), t.by_user.times.len())
    }
}

/// Recent failure times per key, newest last, at most as many as the limit.
#[derive(Debug)]
struct Recent<K> {
    times: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Self {
            times: HashMap::new(),
        }
    }
}

fn expired(t: Instant, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(t) >= window
}

impl<K: Hash + Eq + Copy> Recent<K> {
    /// Failures of `key` within the window (forgetting older ones).
    fn count(&mut self, key: &K, now: Instant, window: Duration) -> usize {
        let Some(times) = self.times.get_mut(key) else {
            return 0;
        };
        while times.front().is_some_and(|&t| expired(t, now, window)) {
            times.pop_front();
        }
        if times.is_empty() {
            self.times.remove(key);
            return 0;
        }
        times.len()
    }

    fn record(&mut self, key: K, now: Instant, window: Duration, keep: u32, cap: usize) {
        if !self.times.contains_key(&key) && self.times.len() >= cap {
            self.make_room(now, window);
        }
        let times = self.times.entry(key).or_default();
        times.push_back(now);
        while times.len() > keep as usize {
            times.pop_front();
        }
    }

    /// Drops expired entries; if none was, the one whose last failure is oldest.
    fn make_room(&mut self, now: Instant, window: Duration) {
        let before = self.times.len();
        self.times
            .retain(|_, times| times.back().is_some_and(|&t| !expired(t, now, window)));
        if self.times.len() < before {
            return;
        }
        let oldest = self
            .times
            .iter()
            .min_by_key(|(_, times)| times.back().copied())
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.times.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedure::{Procedure, Step};
    use crate::{ReadOutcome, Shutdown};
    use pop3_proto::{Config, Refusal, Request, Session};
    use std::sync::Arc;

    const ATTACKER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const OWNER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)));

    fn limits(per_ip: u32, per_user: u32) -> Arc<FailedLogins> {
        Arc::new(FailedLogins::new(FailedLoginLimits {
            per_ip: Some(per_ip),
            per_user: Some(per_user),
            window: Duration::from_secs(300),
            max_entries: 100,
        }))
    }

    /// The verdict on an attempt that is over at once.
    fn verdict(
        f: &Arc<FailedLogins>,
        ip: Option<IpAddr>,
        user: &str,
        now: Instant,
    ) -> Option<LoginLimit> {
        f.check(ip, user, now).err()
    }

    #[test]
    fn attempts_being_checked_count_against_their_address() {
        let f = limits(3, 100);
        let t0 = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|i| f.check(ATTACKER, &format!("u{i}"), t0).unwrap())
            .collect();
        assert_eq!(verdict(&f, ATTACKER, "u", t0), Some(LoginLimit::Address));
        assert_eq!(verdict(&f, OWNER, "u", t0), None, "other addresses go on");
        drop(held);
        assert_eq!(verdict(&f, ATTACKER, "u", t0), None, "answered: free again");
        // One failure and two attempts being checked fill the limit too.
        f.failed(ATTACKER, Some("u"), t0);
        let held: Vec<_> = (0..2)
            .map(|_| f.check(ATTACKER, "u", t0).unwrap())
            .collect();
        assert_eq!(verdict(&f, ATTACKER, "u", t0), Some(LoginLimit::Address));
        drop(held);
        assert!(f.tables().in_flight.is_empty(), "nothing left behind");
    }

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_they_age_out() {
        let f = limits(3, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(verdict(&f, ATTACKER, &format!("user{i}"), t0), None);
            f.failed(
                ATTACKER,
                Some(&format!("user{i}")),
                t0 + Duration::from_secs(i),
            );
        }
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            verdict(&f, ATTACKER, "anyone", t),
            Some(LoginLimit::Address)
        );
        assert_eq!(
            verdict(&f, OWNER, "anyone", t),
            None,
            "other addresses go on"
        );
        // The first failure leaves the window 300 s after it came.
        let t = t0 + Duration::from_secs(300);
        assert_eq!(verdict(&f, ATTACKER, "anyone", t), None);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let f = limits(1, 100);
        let t0 = Instant::now();
        f.failed(ATTACKER, Some("a"), t0);
        let mapped = "::ffff:192.0.2.1".parse().ok();
        assert_eq!(verdict(&f, mapped, "b", t0), Some(LoginLimit::Address));
    }

    #[test]
    fn a_limited_user_still_logs_in_from_a_clean_address() {
        let f = limits(100, 5);
        let t0 = Instant::now();
        // Five addresses guess alice's password once each.
        for n in 0..5 {
            assert_eq!(verdict(&f, ip(n), "alice", t0), None);
            f.failed(ip(n), Some("alice"), t0);
        }
        // Those addresses are limited for alice (names compared without case) ...
        assert_eq!(verdict(&f, ip(0), "Alice", t0), Some(LoginLimit::User));
        // ... the owner's address, with no failure, is checked as usual,
        assert_eq!(verdict(&f, OWNER, "alice", t0), None);
        // and a new attacking address gets one guess, then it is limited too.
        f.failed(ip(9), Some("alice"), t0);
        assert_eq!(verdict(&f, ip(9), "alice", t0), Some(LoginLimit::User));
        // Other users are untouched.
        assert_eq!(verdict(&f, ip(0), "bob", t0), None);
        // Once the failures age out, alice is free everywhere.
        let later = t0 + Duration::from_secs(301);
        assert_eq!(verdict(&f, ip(0), "alice", later), None);
    }

    #[test]
    fn the_user_limit_works_without_the_address_limit() {
        let f = Arc::new(FailedLogins::new(FailedLoginLimits {
            per_ip: None,
            ..FailedLoginLimits::default()
        }));
        let t0 = Instant::now();
        for n in 0..5 {
            f.failed(ip(n), Some("alice"), t0);
        }
        assert_eq!(verdict(&f, ip(0), "alice", t0), Some(LoginLimit::User));
        assert_eq!(verdict(&f, OWNER, "alice", t0), None);
        for _ in 0..50 {
            f.failed(ATTACKER, Some("x"), t0);
        }
        assert_eq!(verdict(&f, ATTACKER, "y", t0), None, "no address limit");
    }

    #[test]
    fn without_an_address_only_the_user_limit_applies() {
        let f = limits(1, 2);
        let t0 = Instant::now();
        f.failed(None, Some("carol"), t0);
        assert_eq!(verdict(&f, None, "carol", t0), None);
        f.failed(None, Some("carol"), t0);
        assert_eq!(verdict(&f, None, "carol", t0), Some(LoginLimit::User));
        assert_eq!(verdict(&f, None, "dave", t0), None);
    }

    #[test]
    fn a_flood_of_distinct_addresses_and_users_stays_bounded() {
        let f = limits(2, 2);
        let t0 = Instant::now();
        for n in 0..10_000 {
            f.failed(
                ip(n),
                Some(&format!("user{n}")),
                t0 + Duration::from_millis(n.into()),
            );
        }
        assert_eq!(f.entries(), (100, 100));
        // The newest are kept, the oldest went first.
        let t = t0 + Duration::from_secs(10);
        f.failed(ip(9_999), None, t);
        assert_eq!(verdict(&f, ip(9_999), "x", t), Some(LoginLimit::Address));
        assert_eq!(verdict(&f, ip(0), "x", t), None);
        // Expired entries make room before live ones are dropped.
        let late = t0 + Duration::from_secs(1_000);
        f.failed(ATTACKER, None, late);
        assert_eq!(f.entries(), (1, 100));
    }

    /// One connection from `ip` at `now` under `failures`: sends `input`,
    /// refuses every credential check. Returns the users the handler was
    /// asked about and what the server wrote; `now` ends where it did.
    fn connection(
        failures: &Arc<FailedLogins>,
        ip: Option<IpAddr>,
        now: &mut Instant,
        input: &str,
    ) -> (Vec<String>, String) {
        let config = Arc::new(Config::builder().build().unwrap());
        let session = Session::new(config, crate::fresh_greeting(), *now);
        let mut p: Procedure<Option<bytes::Bytes>> =
            Procedure::new(session, Shutdown::new()).with_failures(failures.clone(), ip);
        let (mut asked, mut wrote, mut input) = (Vec::new(), String::new(), Some(input));
        loop {
            match p.next(*now) {
                Step::Write(t) => {
                    wrote.push_str(&String::from_utf8_lossy(&t.to_vec()));
                    p.written(*now, t, Ok(()));
                }
                Step::Read { deadline, .. } => match input.take() {
                    Some(text) => p.read(*now, Ok(ReadOutcome::Data(text.len())), text.as_bytes()),
                    // A held -ERR is due before the idle timeout: wait for it.
                    None => match deadline.filter(|&d| d < *now + Duration::from_secs(600)) {
                        Some(due) => {
                            *now = due;
                            p.read(*now, Ok(ReadOutcome::TimedOut), &[]);
                        }
                        None => return (asked, wrote),
                    },
                },
                Step::Sleep { until, .. } => {
                    *now = until;
                    p.woke(*now);
                }
                Step::Call(Request::Authenticate { user, .. }) => {
                    asked.push(user);
                    p.authenticated(
                        *now,
                        Err(Refusal::auth("invalid user name or password").into()),
                    );
                }
                other => panic!("unexpected step {other:?}"),
            }
        }
    }

    #[test]
    fn the_procedure_refuses_over_the_limit_before_the_handler_and_after_the_delay() {
        let failures = limits(2, 100);
        let mut now = Instant::now();
        let t0 = now;
        let (asked, _) = connection(
            &failures,
            ATTACKER,
            &mut now,
            "USER a\r\nPASS x\r\nUSER b\r\nPASS y\r\n",
        );
        assert_eq!(asked, ["a", "b"]);
        assert_eq!(now - t0, Duration::from_secs(4), "two failed-login delays");
        let t1 = now;
        let (asked, wrote) = connection(&failures, ATTACKER, &mut now, "USER c\r\nPASS z\r\n");
        assert!(asked.is_empty(), "the handler never saw it");
        assert!(wrote.ends_with("+OK send PASS\r\n-ERR [SYS/TEMP] too many failed logins from your address, try again later\r\n"), "{wrote}");
        assert_eq!(
            now - t1,
            Duration::from_secs(2),
            "held back like a wrong password"
        );
        // The refusal was not recorded: the window still ends 300 s after the failures.
        let (asked, _) = connection(&failures, OWNER, &mut now, "USER c\r\nPASS z\r\n");
        assert_eq!(asked, ["c"], "other addresses are checked");
        now = t0 + Duration::from_secs(302);
        let (asked, _) = connection(&failures, ATTACKER, &mut now, "USER d\r\nPASS z\r\n");
        assert_eq!(asked, ["d"]);
    }
}
