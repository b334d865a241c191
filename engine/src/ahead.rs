//! An action's write-ahead still on its way to the disk while its call starts.
//!
//! An action step's start is journaled durably before the step may act: an interrupted run
//! must know that an action may have acted. Through the store daemon, that flush is the
//! daemon's `fdatasync`, in another process (in the embedded store held in the process, a
//! thread of the store's own: `store::embedded::flusher`), and the run used to wait idle
//! for it before calling the plugin. Now the recorder sends the write and leaves its
//! confirmation here ([`Ahead::defer`]); the call starts meanwhile on the run's own thread.
//! Instantiating a plugin, and whatever it computes, changes nothing outside its sandbox;
//! what could (an HTTP request, a TCP exchange, a command, a kv write) first waits for the
//! confirmation ([`settle`]), as do the run right after the call and the recorder's next
//! write. If the write failed, every such capability traps, the call's result is dropped
//! (the action did not act), and the run stops as it does when a write-ahead fails before a
//! call.
//!
//! The time spent waiting here is not the call's: its deadline moves by it (the call counts
//! its own waits, `host::caps::StoreWaited`; [`waited`] is the run's total).
//! The confirmation is per run: the run's future carries it ([`scope`]), and calls placed
//! on other threads (a fleet's) settle before they are handed over.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// A durable write that was sent and not yet confirmed.
pub trait Unconfirmed: Send {
    /// Waits for the write's answer. Dropped unconfirmed, the answer is still waited for
    /// (the write stays ordered before the run's next one).
    fn confirm(self: Box<Self>) -> Result<(), StoreError>;
    /// Whether [`Unconfirmed::confirm`] would return at once: the write is durable, or is
    /// known to have failed. Does not wait; false where that is not known without waiting.
    fn is_answered(&self) -> bool {
        false
    }
}

#[derive(Default)]
struct State {
    pending: Option<Box<dyn Unconfirmed>>,
    /// The write failed: its error until the recorder takes it, and what every capability
    /// used after it is told.
    failed: Option<(Option<StoreError>, String)>,
    /// All the run has waited here.
    waited: Duration,
}

/// A run's write-ahead state, shared by its recorder (which settles it even after the run's
/// future is gone) and its calls (through the [`scope`]).
#[derive(Default)]
pub struct Ahead(Mutex<State>);

impl Ahead {
    /// Leaves `write` to be confirmed later; anything left before is confirmed first.
    pub fn defer(&self, write: Box<dyn Unconfirmed>) {
        let _ = self.settle();
        self.lock().pending = Some(write);
    }

    /// Confirms what is pending, if anything. Err: the write failed, now or before.
    pub fn settle(&self) -> Result<(), String> {
        // Held while confirming: the run's thread is the only one settling a run's write,
        // and a second settler must find it confirmed, not confirm it again.
        let mut state = self.lock();
        if let Some((_, message)) = &state.failed {
            return Err(message.clone());
        }
        let Some(pending) = state.pending.take() else {
            return Ok(());
        };
        let begun = Instant::now();
        let result = pending.confirm();
        state.waited += begun.elapsed();
        result.map_err(|e| {
            let message = format!("the action's start could not be recorded: {e}");
            state.failed = Some((Some(e), message.clone()));
            message
        })
    }

    /// Settles, and hands over the error of a write that failed (once).
    pub fn take_error(&self) -> Option<StoreError> {
        let _ = self.settle();
        self.lock().failed.as_mut().and_then(|(e, _)| e.take())
    }

    pub fn is_pending(&self) -> bool {
        self.lock().pending.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Run {
    ahead: Option<Arc<Ahead>>,
    /// The step about to start is one call on the run's own thread ([`one_call_follows`]).
    one_call: bool,
}

tokio::task_local! {
    static RUN: RefCell<Run>;
}

/// Runs `f` (a run) with a place for its write-ahead state. Not an `async fn`: that would
/// hold `f` twice (see `crate::later::scope`).
pub fn scope<F: Future>(f: F) -> impl Future<Output = F::Output> {
    RUN.scope(RefCell::default(), f)
}

/// The run's write-ahead state, made on first use; None outside a [`scope`] (a write made
/// there is confirmed at once).
pub fn current() -> Option<Arc<Ahead>> {
    RUN.try_with(|r| {
        r.borrow_mut()
            .ahead
            .get_or_insert_with(Arc::default)
            .clone()
    })
    .ok()
}

/// Said by the executor just before a step's start when the step is one call made on the
/// run's thread (not a fleet's, whose calls are handed to other threads): only such a
/// start is left to be confirmed while the call begins.
pub fn one_call_follows() {
    let _ = RUN.try_with(|r| r.borrow_mut().one_call = true);
}

/// Whether [`one_call_follows`] was said since last asked (the recorder, at a step's start).
pub fn take_one_call() -> bool {
    RUN.try_with(|r| std::mem::take(&mut r.borrow_mut().one_call))
        .unwrap_or(false)
}

fn with<R>(f: impl FnOnce(&Ahead) -> R, outside: R) -> R {
    let ahead = RUN.try_with(|r| r.borrow().ahead.clone()).ok().flatten();
    match ahead {
        Some(a) => f(&a),
        None => outside,
    }
}

/// Confirms the run's pending write-ahead, if any: before anything acts. Err: it failed.
pub fn settle() -> Result<(), String> {
    with(Ahead::settle, Ok(()))
}

/// Whether the run's write-ahead is still unconfirmed.
pub fn is_pending() -> bool {
    with(Ahead::is_pending, false)
}

/// All the run has waited for its write-aheads to be confirmed (zero outside a run): a
/// call's deadline moves by what it grew during the call.
pub fn waited() -> Duration {
    with(|a| a.lock().waited, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Write {
        ok: bool,
        confirmed: Arc<AtomicUsize>,
    }
    impl Unconfirmed for Write {
        fn confirm(self: Box<Self>) -> Result<(), StoreError> {
            self.confirmed.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            if self.ok {
                Ok(())
            } else {
                Err(StoreError::Remote("disk on fire".into()))
            }
        }
    }

    #[tokio::test]
    async fn a_write_is_confirmed_once_and_a_failure_stays_for_every_capability_after() {
        let confirmed = Arc::new(AtomicUsize::new(0));
        let write = |ok| {
            Box::new(Write {
                ok,
                confirmed: confirmed.clone(),
            })
        };
        assert!(current().is_none(), "outside a run");
        assert_eq!(settle(), Ok(()));
        scope(async {
            let ahead = current().unwrap();
            assert!(Arc::ptr_eq(&ahead, &current().unwrap()), "one per run");
            ahead.defer(write(true));
            assert!(is_pending());
            assert_eq!(settle(), Ok(()));
            assert_eq!(settle(), Ok(()));
            assert_eq!(confirmed.load(Ordering::SeqCst), 1, "confirmed once");
            assert!(waited() >= Duration::from_millis(2), "the wait is counted");
            ahead.defer(write(false));
            tokio::task::yield_now().await;
            let e = settle().unwrap_err();
            assert!(e.contains("disk on fire"), "{e}");
            assert!(settle().is_err(), "a failure stays");
            assert!(matches!(ahead.take_error(), Some(StoreError::Remote(_))));
            assert!(
                ahead.take_error().is_none(),
                "the error is handed over once"
            );
            assert!(settle().is_err(), "and still fails whatever would act");
        })
        .await;
    }
}
