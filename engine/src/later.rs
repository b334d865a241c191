//! Work a run can leave until it waits anyway: dropping a finished call's store.
//!
//! Dropping a call's store resets its instance's memory, about half of a sandboxed call's
//! time. A run's call is followed by the write-ahead of its next action, which through the
//! store daemon waits for the daemon's `fdatasync`; the store dropped during that wait costs
//! the step nothing. So a call made inside a run ([`scope`]) leaves its store here
//! ([`keep`]), and it is dropped ([`drop_now`]) at the first of: a request to the store
//! daemon (once sent, while its answer comes), a write to a store in the process (once its
//! flush is handed to the store's thread; before a write flushed on the run's thread) or on
//! PostgreSQL (before it: it would otherwise hold its memory through the write), the run's
//! next call (before it takes a memory slot, so it reuses the warm one and never waits for
//! the memory this one holds), the run's next wait (a backoff, a gate's interval, an
//! approval, the question whether to roll back a cancelled run) and the run's end. Outside
//! a run (a plugin's manifest call), and for calls made together (a fleet's), it is dropped
//! at once.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static LATER: RefCell<Option<Box<dyn Send>>>;
}

/// Runs `f` with a place for what its calls leave; whatever is left is dropped with it.
/// Not an `async fn`: that would hold `f` twice (its argument and the future it awaits),
/// and a run's future is kilobytes (1,000 runs in flight took 4 KiB more heap each).
pub fn scope<F: Future>(f: F) -> impl Future<Output = F::Output> {
    LATER.scope(RefCell::new(None), f)
}

/// Leaves `work` to be dropped at the run's next wait; outside a [`scope`], drops it now.
/// Something already left is dropped first: a run leaves at most one thing at a time.
pub fn keep(work: Box<dyn Send>) {
    // Outside a scope the closure is not called and `work` is dropped with it, at once.
    let earlier = LATER
        .try_with(|later| later.borrow_mut().replace(work))
        .ok()
        .flatten();
    drop(earlier);
}

/// Drops what was left, if anything (a no-op outside a [`scope`]).
pub fn drop_now() {
    let left = LATER
        .try_with(|later| later.borrow_mut().take())
        .ok()
        .flatten();
    drop(left);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn what_is_left_is_dropped_at_the_next_wait_the_next_keep_or_the_end_and_at_once_outside_a_run()
     {
        let dropped = Arc::new(AtomicUsize::new(0));
        let thing = || Box::new(Counted(dropped.clone()));
        let n = || dropped.load(Ordering::SeqCst);
        keep(thing());
        assert_eq!(n(), 1, "outside a run, dropped at once");
        scope(async {
            keep(thing());
            assert_eq!(n(), 1, "kept");
            tokio::task::yield_now().await;
            assert_eq!(n(), 1, "still kept across an await");
            drop_now();
            assert_eq!(n(), 2);
            drop_now();
            assert_eq!(n(), 2, "nothing twice");
            keep(thing());
            keep(thing());
            assert_eq!(n(), 3, "one at a time: the first went when the second came");
        })
        .await;
        assert_eq!(n(), 4, "the run's end drops what is left");
    }
}
