//! How the call threads share the CPUs with the threads that drive their calls (a fleet's
//! run, which starts the calls, records their ends and flushes them): each call thread kept
//! on a CPU of its own, and giving way, between two calls, to a thread that waits to go on.
//!
//! Both are for wake-ups, which the kernel places and serves late on a small machine. Traced
//! on the development machine (2 vCPUs, a fleet of 50 at a time, `perf` scheduler events):
//! - a call thread woken by the other was put on the other's CPU and left there, the two
//!   taking turns for 1.5 ms while the second CPU idled (the kernel moves a thread to an
//!   idle CPU at its next balancing tick, milliseconds later);
//! - the run's thread, woken when its `fdatasync` or a group of ends came back, waited for
//!   the call thread on its CPU to use up its time slice: 380 µs once, in all a third of
//!   the fleet's time, while nothing started the next targets.
//!
//! With both, a fleet's batch of 50 went from 1.07 to 0.89 x its floor in the process and
//! from 1.18 to 1.07 x through the store daemon (medians of six rounds interleaved with the
//! build before, better in each round; bench/JOURNAL.md, 2026-12-07).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::cpus::Cpus;

/// Threads the call threads give way to, counted while they wait: those holding a
/// [`GivenWay`], and waiters woken by the call threads ([`WaiterWoken`]).
static WAITING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// On a call thread, once it ran its first call: whether it gives way between calls.
    static GIVES_WAY: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Where the call threads run.
pub(super) struct Sharing {
    /// One CPU for each call thread, in the order they run their first call; none where the
    /// threads are not kept anywhere.
    cpus: Option<Vec<Cpus>>,
    next: AtomicUsize,
    single: bool,
}

impl Sharing {
    /// For `threads` call threads, in a process that may run on `allowed`. Each is kept on a
    /// CPU of its own only where there is one CPU for each: where the process may use more
    /// CPUs than it has call threads (a CPU quota, an `available_parallelism` lower than the
    /// CPUs), a thread kept on one could not move off it while another process is busy there.
    pub(super) fn new(threads: usize, allowed: Option<Cpus>) -> Sharing {
        let cpus = allowed
            .filter(|a| threads > 1 && a.len() == threads)
            .map(|a| a.each());
        Sharing {
            cpus,
            next: AtomicUsize::new(0),
            single: threads == 1,
        }
    }

    /// Called as a call begins on a call thread: the first time on each, keeps it on its CPU.
    /// A thread kept on its own CPU (or the only call thread) gives way between calls; two
    /// that may share a CPU would give way to each other, a switch for every call.
    pub(super) fn settle_this_thread(&self) {
        if GIVES_WAY.get().is_some() {
            return;
        }
        let kept = self.cpus.as_ref().is_some_and(|cpus| {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            cpus[i % cpus.len()].keep_this_thread()
        });
        GIVES_WAY.set(Some(kept || self.single));
    }
}

/// Called by a call thread after a call: lets a thread waiting for a CPU (see [`WAITING`])
/// have this one before the next call.
pub(super) fn between_calls() {
    if GIVES_WAY.get() == Some(true) && WAITING.load(Ordering::Relaxed) > 0 {
        std::thread::yield_now();
    }
}

/// While held, the call threads give way between their calls to a thread waiting for a CPU:
/// taken, while calls run on the call threads, by a thread about to wait on something that
/// answers soon (the disk's flush, the store daemon's answer), which woken would otherwise
/// wait for the call thread on its CPU to use up its time slice; and for a write sent to the
/// store daemon, whose thread, woken by the disk, would wait so too.
pub struct GivenWay(());

/// [`GivenWay`] for this thread, when calls run on the call threads.
pub fn give_way() -> Option<GivenWay> {
    super::pool::calls_on_call_threads().then(|| {
        WAITING.fetch_add(1, Ordering::Relaxed);
        GivenWay(())
    })
}

impl Drop for GivenWay {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a waiter (a fleet's run) was woken by the call threads and has not polled since:
/// counted in [`WAITING`] while it is.
#[derive(Default)]
pub(super) struct WaiterWoken(AtomicU8);

const NOT: u8 = 0;
const WOKEN: u8 = 1;
/// The waiter is gone: a late wake is not counted (nothing would take it back).
const GONE: u8 = 2;

impl WaiterWoken {
    pub(super) fn set(&self) {
        if self
            .0
            .compare_exchange(NOT, WOKEN, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            WAITING.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The waiter polls.
    pub(super) fn clear(&self) {
        if self
            .0
            .compare_exchange(WOKEN, NOT, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            WAITING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The waiter is gone.
    pub(super) fn close(&self) {
        if self.0.swap(GONE, Ordering::AcqRel) == WOKEN {
            WAITING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(super) fn is_counted(&self) -> bool {
        self.0.load(Ordering::Acquire) == WOKEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_threads_are_kept_on_a_cpu_each_only_where_there_is_one_for_each() {
        let cpus = |n: usize| Some(Cpus((0..n).collect()));
        assert_eq!(Sharing::new(2, cpus(2)).cpus, Some(cpus(2).unwrap().each()));
        // A quota: more CPUs allowed than threads; one thread; nothing known.
        assert_eq!(Sharing::new(2, cpus(8)).cpus, None);
        assert_eq!(Sharing::new(1, cpus(1)).cpus, None);
        assert_eq!(Sharing::new(4, None).cpus, None);
        assert!(Sharing::new(1, cpus(1)).single);
    }

    #[test]
    fn a_call_thread_is_kept_on_the_next_cpu_at_its_first_call_and_then_gives_way() {
        let Some(may) = crate::cpus::allowed().filter(|a| a.len() > 1) else {
            return;
        };
        let sharing = std::sync::Arc::new(Sharing::new(may.len(), Some(may.clone())));
        let kept: Vec<_> = (0..may.len())
            .map(|_| {
                let sharing = sharing.clone();
                std::thread::spawn(move || {
                    sharing.settle_this_thread();
                    // Again: not moved on to another CPU.
                    sharing.settle_this_thread();
                    (crate::cpus::allowed(), GIVES_WAY.get())
                })
                .join()
                .unwrap()
            })
            .collect();
        let each: Vec<_> = may.each().into_iter().map(Some).collect();
        assert_eq!(kept.iter().map(|k| k.0.clone()).collect::<Vec<_>>(), each);
        assert!(kept.iter().all(|k| k.1 == Some(true)));
        // Where threads may share CPUs, none gives way.
        let shared = Sharing::new(may.len(), None);
        std::thread::spawn(move || {
            shared.settle_this_thread();
            assert_eq!(GIVES_WAY.get(), Some(false));
            assert_eq!(crate::cpus::allowed(), Some(may));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_woken_waiter_is_counted_until_it_polls_and_never_once_it_is_gone() {
        let woken = WaiterWoken::default();
        assert!(!woken.is_counted());
        woken.set();
        woken.set();
        assert!(woken.is_counted());
        woken.clear();
        assert!(!woken.is_counted());
        woken.clear();
        woken.set();
        woken.close();
        assert!(!woken.is_counted());
        // A wake after it is gone (a call's end told late) is not counted.
        woken.set();
        assert!(!woken.is_counted());
    }
}
