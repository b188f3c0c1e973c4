//! The session's timers: a tiny table of deadlines, earliest first out.
//! (Exercised through the session in `tests/timers.rs` and `prop_limits.rs`,
//! with simulated time.)

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
