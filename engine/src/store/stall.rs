//! How long this process has been waiting for its store to answer. A store that stops
//! answering (a stopped daemon, a disk whose flushes hang, a PostgreSQL server gone quiet)
//! stops a run where it stands, since nothing is done unrecorded; the responder is told so
//! rather than left looking at a step that seems to run forever, and a third Ctrl-C can stop
//! medic without waiting for the store (`cli::signals`).
//!
//! Only time spent blocked on an answer counts: an answer that came while the run was busy
//! elsewhere and was read later is not a wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The waits going on now: when each began, by a number of its own.
static WAITS: Mutex<Waits> = Mutex::new(Waits {
    next: 0,
    open: Vec::new(),
});

struct Waits {
    next: u64,
    /// In the order they began (kept allocated: a wait costs no allocation once warm).
    open: Vec<(u64, Instant)>,
}

fn waits() -> std::sync::MutexGuard<'static, Waits> {
    WAITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A wait for the store's answer, counted until dropped.
#[must_use = "the wait is counted only while this is held"]
pub(crate) struct Waiting(u64);

/// Counts a wait for the store's answer from now until the returned guard is dropped.
pub(crate) fn waiting() -> Waiting {
    let mut w = waits();
    let n = w.next;
    w.next += 1;
    w.open.push((n, Instant::now()));
    Waiting(n)
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut w = waits();
        if let Some(at) = w.open.iter().position(|(n, _)| *n == self.0) {
            w.open.remove(at);
        }
    }
}

/// How long the oldest wait still going on has lasted: None when nothing waits for the store.
pub fn longest() -> Option<Duration> {
    oldest().map(|since| since.elapsed())
}

/// When the oldest wait still going on began, exactly: the same wait is the same instant
/// from one look to the next (one worked out from [`longest`] and the time of the look
/// moves by the time between the two clock reads, and would seem another wait).
pub fn oldest() -> Option<Instant> {
    waits().open.first().map(|(_, since)| *since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(w: &Waiting) -> bool {
        waits().open.iter().any(|(n, _)| *n == w.0)
    }

    #[test]
    fn a_wait_counts_from_its_start_until_it_is_dropped() {
        // Other tests of this process may wait for stores meanwhile: only these waits are
        // looked at, and `longest` is at least as old as the oldest of them.
        let first = waiting();
        std::thread::sleep(Duration::from_millis(30));
        let second = waiting();
        assert!(counted(&first) && counted(&second));
        assert!(longest().unwrap() >= Duration::from_millis(30));
        // The same wait is the same instant from one look to the next.
        let at = oldest().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            oldest().unwrap() <= at,
            "the oldest wait seemed to begin later"
        );
        drop(first);
        assert!(counted(&second), "dropping one wait leaves the others");
        let n = second.0;
        drop(second);
        assert!(!waits().open.iter().any(|(m, _)| *m == n));
    }
}
