//! An action's write-ahead made durable on a thread of the store's own while the run's
//! thread goes on with the action's call (see [`crate::ahead`]): in the process, a durable
//! write used to hold the run's thread in the redo log's `fdatasync`, and the call began
//! only after it. Handing the flush to a thread costs a wake-up, more than the whole flush
//! on a fast disk (tmpfs), so it is handed over only where flushes take longer
//! ([`HAND_OFF_PAST`]); and after each flush the thread watches for the next request for a
//! while ([`WATCH`]) before it sleeps, so a run's next action finds it awake.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::local::{WATCH, Watching, watch_until};
use super::super::wal::Wal;
use crate::cpus::Cpus;
use crate::store::StoreError;

/// Flushes quicker than this are made by the writer itself: a sleeping thread is woken in
/// tens of µs on a virtual machine (on tmpfs a recorded step went from 74 to 100 µs when
/// each action's call was handed to a call thread instead; bench/JOURNAL.md).
pub(super) const HAND_OFF_PAST: Duration = Duration::from_micros(50);

#[derive(Default)]
struct Asked {
    /// Every frame up to this one is to be made durable.
    upto: u64,
    /// What the thread made durable last (or found broken).
    done: u64,
    closed: bool,
    /// The thread waits on `changed` (else it is watching `wanted`, or flushing).
    asleep: bool,
}

#[derive(Default)]
struct Shared {
    asked: Mutex<Asked>,
    changed: Condvar,
    /// Writes handed over and not yet waited for.
    in_flight: AtomicUsize,
    /// The frame the thread is flushing up to (or flushed): a writer waiting for a frame it
    /// has not taken yet flushes it itself rather than wait for the thread to wake.
    taken: AtomicU64,
    /// `Asked::upto`, readable without the lock by the thread watching for it.
    wanted: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Asked> {
        self.asked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The thread: stopped and joined when dropped.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread; None where it cannot be (flushes are then made by the writer).
    /// It is kept on `near_disk` (see [`crate::store::near_disk`]).
    pub(super) fn start(wal: Arc<Wal>, near_disk: Option<Cpus>) -> Option<Flusher> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("medic-store-flush".into())
            .spawn(move || {
                if let Some(cpus) = near_disk {
                    cpus.keep_this_thread();
                }
                flush_asked(&wal, &theirs)
            })
            .ok()?;
        Some(Flusher {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for every frame up to `seq` of `wal` (the flusher's) to be made durable;
    /// returns at once, with what waits for it.
    pub(super) fn hand(&self, wal: &Arc<Wal>, seq: u64, shown: &str) -> Handed {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        {
            let mut asked = self.shared.lock();
            if seq > asked.upto {
                asked.upto = seq;
                self.shared.wanted.store(seq, Ordering::SeqCst);
                // A thread watching `wanted` is not woken: the `futex` call would cost
                // this thread, whose action's call follows at once.
                if asked.asleep {
                    self.shared.changed.notify_one();
                }
            }
        }
        Handed {
            wal: wal.clone(),
            seq,
            shown: shown.to_owned(),
            shared: self.shared.clone(),
            waited: false,
        }
    }
}

fn flush_asked(wal: &Wal, shared: &Shared) {
    // Not after watches in vain: a fleet's groups of targets come a millisecond or more
    // apart, and a thread spinning for them takes a CPU their calls want.
    let mut watching = Watching::new(WATCH);
    let mut flushed = Instant::now();
    let mut asked = shared.lock();
    loop {
        // Watched for a while before sleeping: a run's next action asks within tens of µs
        // of its last flush, and a sleeping thread is woken about 20 µs late on a virtual
        // machine, all of it before the `fdatasync` begins (the writer's call, running
        // meanwhile, was slower too, by its `futex` wake-up).
        let mut watched = None;
        if asked.upto <= asked.done && !asked.closed && watching.now() {
            let done = asked.done;
            drop(asked);
            watched = Some(watch_until(WATCH, || {
                shared.wanted.load(Ordering::SeqCst) > done
            }));
            asked = shared.lock();
        }
        while asked.upto <= asked.done && !asked.closed {
            asked.asleep = true;
            asked = shared
                .changed
                .wait(asked)
                .unwrap_or_else(PoisonError::into_inner);
            asked.asleep = false;
        }
        if asked.closed {
            return;
        }
        watching.came(flushed.elapsed(), watched);
        let upto = asked.upto;
        shared.taken.store(upto, Ordering::SeqCst);
        drop(asked);
        // A failure breaks the log: whoever waits for these frames is told by the log
        // itself ([`Wal::sync`] says it is broken), not by this thread.
        let _ = wal.sync(upto);
        asked = shared.lock();
        asked.done = upto;
        flushed = Instant::now();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        // Ends its watching too.
        self.shared.wanted.store(u64::MAX, Ordering::SeqCst);
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A durable write whose frame is written and its flush asked of the [`Flusher`]: confirmed
/// once the log is synced past it, by whichever thread gets there first (the writer syncs
/// it itself if the flusher has not begun).
pub(super) struct Handed {
    wal: Arc<Wal>,
    seq: u64,
    shown: String,
    shared: Arc<Shared>,
    waited: bool,
}

impl Handed {
    fn wait(&mut self) -> Result<(), StoreError> {
        if std::mem::replace(&mut self.waited, true) {
            return Ok(());
        }
        let alone = self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1;
        // Watched rather than slept on, as a client of the store daemon watches for its
        // answer (`WATCH`): when its `fdatasync` returns, the flusher's thread is woken
        // and wakes this one, late if its CPU went idle meanwhile.
        let taken = self.shared.taken.load(Ordering::SeqCst) >= self.seq;
        if alone && taken && self.wal.flush_time() < WATCH {
            watch_until(WATCH, || self.wal.is_synced(self.seq));
        }
        self.wal
            .sync(self.seq)
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))
    }
}

impl crate::ahead::Unconfirmed for Handed {
    fn confirm(mut self: Box<Self>) -> Result<(), StoreError> {
        self.wait()
    }

    fn is_answered(&self) -> bool {
        self.wal.is_synced(self.seq)
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        // Waited for even when nobody asks, as every unconfirmed write is.
        let _ = self.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::RunStatus;
    use super::super::super::backend::Runs as _;
    use super::super::{Sled, test_keys as keys, test_kv as kv, test_record};
    use super::*;
    use crate::ahead::Unconfirmed;

    /// Hands one entry of `run` over (flushes taken to last `took`); returns what waits for
    /// it and the frame it is in.
    fn hand(s: &Sled, run: &str, i: usize, took: Duration) -> (Box<dyn Unconfirmed>, u64) {
        s.wal.pretend_flushes_take(took);
        let record = test_record(run, 1, RunStatus::Running);
        let handed = s
            .hand_over(run, Some(&record), &[kv(i, 10)])
            .unwrap()
            .expect("a flush this slow is handed over");
        let frame = handed.seq;
        (Box::new(handed), frame)
    }

    #[test]
    fn a_write_handed_over_is_on_disk_once_confirmed_watched_for_or_slept_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        // Under `WATCH` the writer watches for the flush, over it sleeps until woken.
        for (i, took) in [Duration::from_micros(100), Duration::from_secs(1)]
            .into_iter()
            .cycle()
            .take(20)
            .enumerate()
        {
            let (handed, frame) = hand(&s, "r", i, took);
            handed.confirm().unwrap();
            assert!(
                s.wal.is_synced(frame),
                "entry {i} confirmed before its flush"
            );
        }
        // Dropped unconfirmed, it is still waited for.
        let (handed, frame) = hand(&s, "r", 20, Duration::from_secs(1));
        drop(handed);
        assert!(s.wal.is_synced(frame));
        assert_eq!(s.flusher.get().map(Option::is_some), Some(true));
        // Closing stops the flusher (this returns) and keeps every entry.
        drop(s);
        let s = Sled::open(dir.path(), "test").unwrap();
        let want: Vec<String> = (0..21).map(|i| format!("k{i}")).collect();
        assert_eq!(keys(&s, "r", 0), want);
    }

    #[test]
    fn the_flusher_takes_a_write_handed_over_while_it_watches_and_once_asleep() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        // Not confirmed until the flusher has taken it: a writer confirming first would
        // flush it itself, and a flusher that missed its wake-up would go unnoticed.
        let taken_by_flusher = |frame: u64| {
            let shared = &s.flusher.get().unwrap().as_ref().unwrap().shared;
            let begun = Instant::now();
            while shared.taken.load(Ordering::SeqCst) < frame {
                assert!(
                    begun.elapsed() < Duration::from_secs(10),
                    "frame {frame} never taken"
                );
                std::thread::sleep(Duration::from_micros(50));
            }
        };
        for i in 0..9 {
            let (handed, frame) = hand(&s, "r", i, Duration::from_micros(100));
            taken_by_flusher(frame);
            handed.confirm().unwrap();
            // The one after a pause finds the flusher asleep (past its watch), and so does
            // the next (after a watch in vain it sleeps at once), the rest watching.
            if i % 3 == 2 {
                std::thread::sleep(WATCH * 4);
            }
        }
    }

    #[test]
    fn quick_flushes_are_made_by_the_writer_and_never_start_the_flusher() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        for took in [Duration::ZERO, HAND_OFF_PAST] {
            s.wal.pretend_flushes_take(took);
            let sent = s.append_sent("r", None, &[kv(0, 10)]).unwrap();
            assert!(sent.is_none(), "a flush of {took:?} was handed over");
            assert!(s.wal.is_synced(s.wal.written()));
        }
        assert!(s.flusher.get().is_none());
    }

    #[test]
    fn a_write_handed_over_is_refused_when_the_log_breaks_before_it_is_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        let (handed, _) = hand(&s, "r", 0, Duration::from_secs(1));
        // Whether or not the flusher got to it first, a log broken since may have lost it.
        s.wal.break_now();
        let e = handed.confirm().unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(s.append_sent("r", None, &[kv(1, 10)]).is_err());
    }

    #[test]
    fn writers_handing_over_at_once_each_wait_for_their_own_frame() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        std::thread::scope(|threads| {
            for t in 0..4 {
                let s = &s;
                threads.spawn(move || {
                    for i in 0..50 {
                        let took = Duration::from_micros(if i % 2 == 0 { 100 } else { 5_000 });
                        let (handed, frame) = hand(s, &format!("r{t}"), i, took);
                        handed.confirm().unwrap();
                        assert!(s.wal.is_synced(frame));
                    }
                });
            }
        });
        for t in 0..4 {
            assert_eq!(keys(&s, &format!("r{t}"), 0).len(), 50);
        }
    }
}
