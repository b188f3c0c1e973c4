//! The session's timers: a tiny table of deadlines, earliest first out.

use std::time::Instant;

/// A timer the session can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// RFC 1939 §3 autologout: no command for the idle timeout.
    Idle,
    /// The held-back `-ERR` of a failed login is due.
    AuthDelay,
}

impl Timer {
    const COUNT: usize = 2;

    fn index(self) -> usize {
        match self {
            Self::Idle => 0,
            Self::AuthDelay => 1,
        }
    }
}

/// Deadlines by timer.
#[derive(Debug, Default, Clone)]
pub(crate) struct TimerTable([Option<Instant>; Timer::COUNT]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.0 = [None; Timer::COUNT];
    }

    /// True if `timer` is armed and due at `now`.
    pub(crate) fn expired(&self, timer: Timer, now: Instant) -> bool {
        self.0[timer.index()].is_some_and(|at| at <= now)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_deadline_wins() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Idle, t0 + Duration::from_secs(600));
        t.set(Timer::AuthDelay, t0 + Duration::from_secs(2));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        assert!(!t.expired(Timer::AuthDelay, t0 + Duration::from_secs(1)));
        assert!(t.expired(Timer::AuthDelay, t0 + Duration::from_secs(2)));
        t.stop(Timer::AuthDelay);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(600)));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
