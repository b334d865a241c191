//! Cancellation shared between signal handlers and the run.
//!
//! Two levels, because a responder's Ctrl-C means "stop changing things", not "leave the
//! system half-changed": a **cancel** stops the forward steps at their next safe point, and
//! the rollback, its verify gates and the `finally` steps still run to completion within
//! their own timeouts. Only an **abort** (a third Ctrl-C, or a supervisor giving up) stops
//! those too, and the run is then recorded as interrupted for `medic runs rollback`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

const CANCELLED: u8 = 1;
const ABORTED: u8 = 2;

#[derive(Debug, Default)]
struct Shared {
    level: AtomicU8,
    notify: Notify,
    /// Who aborted, in the words the run's record keeps; the first to say wins.
    why: std::sync::OnceLock<&'static str>,
}

/// A cancellation request (Ctrl-C, SIGTERM, SIGHUP, a failed record), shared between the
/// signal handler and the run. Clones share the request; [`Cancel::for_undo`] gives a view
/// of the same request that only an abort stops.
#[derive(Debug, Clone)]
pub struct Cancel {
    shared: Arc<Shared>,
    /// The level at which this view counts as cancelled.
    threshold: u8,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel {
            shared: Arc::default(),
            threshold: CANCELLED,
        }
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop the forward steps at their next safe point.
    pub fn cancel(&self) {
        self.raise(CANCELLED);
    }

    /// Stop everything, undoing included, at once.
    pub fn abort(&self) {
        self.raise(ABORTED);
    }

    /// [`Cancel::abort`], saying who asked (kept in the run's record as it is left).
    pub fn abort_because(&self, why: &'static str) {
        let _ = self.shared.why.set(why);
        self.abort();
    }

    /// Who aborted, when they said ([`Cancel::abort_because`]).
    pub fn abort_reason(&self) -> Option<&'static str> {
        self.shared.why.get().copied()
    }

    fn raise(&self, level: u8) {
        self.shared.level.fetch_max(level, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }

    /// The same request, seen by work that must finish once started (a rollback, its verify
    /// gates, `finally` steps, a drill's notification): only an abort cancels it.
    pub fn for_undo(&self) -> Cancel {
        Cancel {
            shared: self.shared.clone(),
            threshold: ABORTED,
        }
    }

    /// Whether this view is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.level.load(Ordering::SeqCst) >= self.threshold
    }

    /// Whether a cancel was asked at all, whatever this view's level.
    pub fn was_requested(&self) -> bool {
        self.shared.level.load(Ordering::SeqCst) >= CANCELLED
    }

    pub fn is_aborted(&self) -> bool {
        self.shared.level.load(Ordering::SeqCst) >= ABORTED
    }

    /// Resolves once this view is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.shared.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the run is aborted.
    pub async fn aborted(&self) {
        self.for_undo().cancelled().await
    }

    /// Sleeps, unless cancelled first. Returns false when cancelled.
    pub async fn sleep(&self, d: Duration) -> bool {
        // A run's waits are where its last call's store goes, if nothing took it before.
        crate::later::drop_now();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_cancelled(),
            _ = self.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_does_not_stop_undoing_and_an_abort_stops_both() {
        let c = Cancel::new();
        let undo = c.for_undo();
        c.cancel();
        assert!(c.is_cancelled() && !undo.is_cancelled());
        assert!(!c.sleep(Duration::from_secs(5)).await);
        assert!(undo.sleep(Duration::from_millis(1)).await);
        let sleeper = {
            let undo = undo.clone();
            tokio::spawn(async move { undo.sleep(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        c.abort();
        assert!(!sleeper.await.unwrap(), "an abort wakes an undo's sleep");
        assert!(undo.is_cancelled() && c.is_aborted() && undo.was_requested());
    }
}
