//! A runtime-neutral shutdown signal: graceful first, then abort.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use event_listener::Event;

// State 0: running.
const GRACEFUL: u8 = 1;
const ABORTED: u8 = 2;
const CANCELLED: u8 = 3;

/// A stage of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Graceful: sessions close at their next command boundary.
    Begin,
    /// Sessions stop IO at once.
    Abort,
    /// Handler calls still running are abandoned (async sessions).
    Cancel,
}

impl Stage {
    fn level(self) -> u8 {
        match self {
            Self::Begin => GRACEFUL,
            Self::Abort => ABORTED,
            Self::Cancel => CANCELLED,
        }
    }
}

/// Tells sessions the server is stopping. Cheap to clone; all clones share
/// one state.
///
/// [`begin`](Self::begin) asks sessions to close at their next command
/// boundary (never entering UPDATE on their own); [`abort`](Self::abort)
/// makes them stop IO at once, as if the peer had gone; [`cancel`](Self::cancel)
/// also abandons handler calls that do not return (async sessions only),
/// as internal errors. In every case a locked maildrop is still unlocked, and
/// nothing is deleted unless a client's QUIT had already started UPDATE (an
/// abandoned commit may still be completing in the handler's own threads).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    changed: Event,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a graceful shutdown.
    pub fn begin(&self) {
        self.raise(GRACEFUL);
    }

    /// Stops every session's IO at once.
    pub fn abort(&self) {
        self.raise(ABORTED);
    }

    /// Abandons handler calls still running (async sessions), then as `abort`.
    pub fn cancel(&self) {
        self.raise(CANCELLED);
    }

    /// True once [`begin`](Self::begin) or a later stage was called.
    pub fn is_begun(&self) -> bool {
        self.0.state.load(Ordering::Acquire) >= GRACEFUL
    }

    /// True once [`abort`](Self::abort) or [`cancel`](Self::cancel) was called.
    pub fn is_aborted(&self) -> bool {
        self.0.state.load(Ordering::Acquire) >= ABORTED
    }

    /// True once [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.state.load(Ordering::Acquire) >= CANCELLED
    }

    /// Raises the shutdown to `stage` (never lowers it).
    pub fn raise_to(&self, stage: Stage) {
        self.raise(stage.level());
    }

    /// True once the shutdown has reached `stage`.
    pub fn has_reached(&self, stage: Stage) -> bool {
        self.0.state.load(Ordering::Acquire) >= stage.level()
    }

    /// Resolves once the shutdown reaches `stage`.
    pub async fn reached(&self, stage: Stage) {
        self.reach(stage.level()).await;
    }

    /// Resolves once a shutdown has begun.
    pub async fn begun(&self) {
        self.reach(GRACEFUL).await;
    }

    /// Resolves once the shutdown is aborted.
    pub async fn aborted(&self) {
        self.reach(ABORTED).await;
    }

    /// Resolves once handler calls are to be abandoned.
    pub async fn cancelled(&self) {
        self.reach(CANCELLED).await;
    }

    fn raise(&self, to: u8) {
        if self.0.state.fetch_max(to, Ordering::AcqRel) < to {
            self.0.changed.notify(usize::MAX);
        }
    }

    async fn reach(&self, level: u8) {
        loop {
            if self.0.state.load(Ordering::Acquire) >= level {
                return;
            }
            let listener = self.0.changed.listen();
            if self.0.state.load(Ordering::Acquire) >= level {
                return;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let s = Shutdown::new();
        assert!(!s.is_begun());
        let t = s.clone();
        t.begin();
        assert!(s.is_begun() && !s.is_aborted());
        futures_lite::future::block_on(s.begun());
        let u = s.clone();
        let waiter = std::thread::spawn(move || futures_lite::future::block_on(u.aborted()));
        s.abort();
        waiter.join().unwrap();
        assert!(t.is_aborted());
    }
}
