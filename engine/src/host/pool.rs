//! The call threads: where calls made together (a fleet's targets) run, and how their ends
//! reach the threads waiting for them.
//!
//! A call's end is not told to its waiter at once. Waking a thread that sleeps (a fleet's run,
//! between the targets it records) costs the waking thread about 7 µs on this kind of
//! machine (a vCPU woken through the hypervisor), most of a trivial call's own cost. So ends
//! are held and told together: once [`TELL_AFTER`] are held, once nothing is queued on the
//! call threads (they would sleep next, so holding gains nothing: a fleet of slow calls, each
//! waiting on I/O, is told of every end at once), or once the oldest has been held
//! [`HOLD_AT_MOST`]. A thread waiting for many ends through one [`Batching`] waker (a
//! fleet's run) is woken once for a group told together, after the last of it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use super::sharing::{Sharing, WaiterWoken};

/// Ends held before they are told. Half of a usual fleet's 50 at a time: the run's thread,
/// woken, starts as many calls as it is told of, so the call threads still have the other
/// half queued while it records these.
const TELL_AFTER: usize = 25;

/// How long an end may be held, as a fleet groups ends for one flush (its `GROUP_WINDOW`):
/// calls that take long (computing through ticks) are told of each end.
const HOLD_AT_MOST: Duration = Duration::from_millis(1);

/// Threads for calls made together (a fleet's targets), one per core, apart from the
/// process's own runtime: a plugin computing for its whole time slice (an epoch tick, 10
/// ms) between yields would hold up the tasks there (`medic serve`'s API) that long.
#[derive(Default)]
pub(super) struct CallPool(OnceLock<Option<Threads>>);

pub(super) struct Threads {
    rt: tokio::runtime::Runtime,
    ends: Arc<Ends>,
    sharing: Arc<Sharing>,
}

impl CallPool {
    /// The pool's threads, started at the first call; none if they cannot be started (calls
    /// then run on the caller's thread, as a single step's do).
    pub(super) fn threads(&self) -> Option<&Threads> {
        self.0
            .get_or_init(|| {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    // A busy plugin yields once a tick (10 ms): at tokio's defaults (61
                    // polls) a call just started, or one whose I/O is ready, would wait
                    // behind others' turns for over half a second.
                    .global_queue_interval(4)
                    .event_interval(4)
                    .thread_name("medic-call")
                    .enable_all()
                    .build()
                    .inspect_err(|e| tracing::warn!("cannot start the call threads: {e}"))
                    .ok()
                    .map(|rt| Threads {
                        rt,
                        ends: Arc::default(),
                        sharing: Arc::new(Sharing::new(threads, crate::cpus::allowed())),
                    })
            })
            .as_ref()
    }
}

impl Drop for CallPool {
    fn drop(&mut self) {
        // A host may be dropped inside an async context, where waiting for threads is not
        // allowed; calls still running there are aborted by their callers' drop anyway.
        if let Some(Some(threads)) = self.0.take() {
            threads.rt.shutdown_background();
        }
    }
}

impl Threads {
    /// Runs `call` on the call threads. The returned future is its end; dropped, the call is
    /// aborted (it ends at its next yield) instead of running on unowned.
    pub(super) fn spawn<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> OnCallThreads<T> {
        let slot = Arc::new(Slot(Mutex::new((State::Running, None))));
        let queued = Queued::new(&self.ends);
        let teller = Teller {
            slot: slot.clone(),
            ends: self.ends.clone(),
        };
        let in_flight = InFlight::new();
        let sharing = self.sharing.clone();
        let task = self.rt.spawn(async move {
            sharing.settle_this_thread();
            queued.begun();
            let answer = call.await;
            drop(in_flight);
            teller.tell(answer);
            super::sharing::between_calls();
        });
        OnCallThreads { slot, task }
    }
}

/// Calls in flight on the call threads, in this process.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Whether calls are in flight on the call threads. A thread waiting a few hundred µs (for
/// the store's answer) watches for it rather than sleep only when none are: it would take
/// the CPU they run on.
pub fn calls_on_call_threads() -> bool {
    IN_FLIGHT.load(Ordering::Relaxed) > 0
}

/// One call counted in [`IN_FLIGHT`] from its hand-off until it ends (or is aborted).
struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends held on the call threads (their waiters' wakers), and how many calls are queued
/// there, not yet begun.
#[derive(Default)]
struct Ends {
    queued: AtomicUsize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    wakers: Vec<Waker>,
    since: Option<Instant>,
}

impl Ends {
    /// Holds an end's `waker`, or wakes every held one (this one too) if the time has come.
    fn ended(&self, waker: Waker) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let since = *held.since.get_or_insert_with(Instant::now);
        held.wakers.push(waker);
        let due = held.wakers.len() >= TELL_AFTER || self.due(since);
        Self::tell(held, due);
    }

    /// Tells the held ends if nothing is queued any more or the oldest was held too long. A
    /// call beginning is the other moment the call threads look at them, so ends are not
    /// held through a long call while no other call ends.
    fn tell_if_due(&self) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let due = held.since.is_some_and(|since| self.due(since));
        Self::tell(held, due);
    }

    fn due(&self, since: Instant) -> bool {
        self.queued.load(Ordering::Acquire) == 0 || since.elapsed() >= HOLD_AT_MOST
    }

    fn tell(mut held: std::sync::MutexGuard<'_, Held>, due: bool) {
        if !due {
            return;
        }
        held.since = None;
        let wakers = std::mem::take(&mut held.wakers);
        // Outside the lock: the first wake may take the waker's thread a while.
        drop(held);
        let _telling = Telling::begin();
        for waker in wakers {
            waker.wake();
        }
    }
}

thread_local! {
    /// While this thread tells a group of ends: the [`Batched`] waiters those ends woke, each
    /// woken once when the telling is over.
    static TELLING: RefCell<Option<Vec<Arc<Batched>>>> = const { RefCell::new(None) };
}

/// A telling of held ends going on, on this thread; ended (even by a panic in a waker), it
/// wakes the [`Batched`] waiters the group woke.
struct Telling(Option<Vec<Arc<Batched>>>);

impl Telling {
    fn begin() -> Self {
        Telling(TELLING.with(|t| t.replace(Some(Vec::new()))))
    }
}

impl Drop for Telling {
    fn drop(&mut self) {
        let woken = TELLING.with(|t| t.replace(self.0.take()));
        for waiter in woken.into_iter().flatten() {
            // Counted until it polls: the call threads give way to it meanwhile.
            waiter.woken.set();
            waiter.waker.wake();
        }
    }
}

/// The waker of a thread waiting for many calls' ends at once (a fleet's run, through its
/// set of running targets, whose own waker each end wakes). The ends of a group told
/// together wake it once, after the last: woken at the first, the waiting thread would
/// preempt the telling one and take the group in pieces, each a wake-up (about 7 µs of the
/// waker's CPU on this kind of machine). Woken other than by a telling, it wakes at once.
pub(crate) struct Batched {
    waker: AtomicWaker,
    woken: WaiterWoken,
}

impl Wake for Batched {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let held = TELLING
            .try_with(|t| match t.borrow_mut().as_mut() {
                Some(woken) => {
                    if !woken.iter().any(|w| Arc::ptr_eq(w, self)) {
                        woken.push(self.clone());
                    }
                    true
                }
                None => false,
            })
            .unwrap_or(false);
        if !held {
            self.waker.wake();
        }
    }
}

/// A thread's way to wait for many calls' ends at once (a fleet's run, through its set of
/// running targets): what it polls them with, kept for as long as it waits. The ends of a
/// group told together wake it once, after the last; the waiter's own waker, as of its
/// latest poll, is the one woken.
#[derive(Default)]
pub struct Batching(Option<(Arc<Batched>, Waker)>);

impl Batching {
    /// The waker to poll with, for a waiter whose own waker is now `waiter`.
    pub fn waker(&mut self, waiter: &Waker) -> &Waker {
        let (batched, waker) = self.0.get_or_insert_with(|| {
            let batched = Arc::new(Batched {
                waker: AtomicWaker::new(),
                woken: WaiterWoken::default(),
            });
            (batched.clone(), Waker::from(batched))
        });
        batched.waker.register(waiter);
        waker
    }

    /// The next of `set`'s items, polled through this waker.
    pub fn poll_next<S: futures_util::Stream + Unpin>(
        &mut self,
        set: &mut S,
        cx: &Context<'_>,
    ) -> Poll<Option<S::Item>> {
        if let Some((batched, _)) = &self.0 {
            batched.woken.clear();
        }
        let waker = self.waker(cx.waker());
        std::pin::Pin::new(set).poll_next(&mut Context::from_waker(waker))
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        if let Some((batched, _)) = &self.0 {
            batched.woken.close();
        }
    }
}

/// A call counted as queued from its hand-off until it begins, or until its task is dropped
/// unbegun (aborted, or the threads shut down): a count left high would hold ends until
/// [`TELL_AFTER`] gathered, maybe never.
struct Queued(Option<Arc<Ends>>);

impl Queued {
    fn new(ends: &Arc<Ends>) -> Self {
        ends.queued.fetch_add(1, Ordering::AcqRel);
        Queued(Some(ends.clone()))
    }

    fn begun(mut self) {
        self.leave();
    }

    fn leave(&mut self) {
        if let Some(ends) = self.0.take() {
            ends.queued.fetch_sub(1, Ordering::AcqRel);
            ends.tell_if_due();
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Where a call's answer waits for its waiter, and the waiter's waker.
struct Slot<T>(Mutex<(State<T>, Option<Waker>)>);

enum State<T> {
    Running,
    Ended(T),
    /// The task ended without an answer (a panic, or aborted): its join handle says why.
    Lost,
    Taken,
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (State<T>, Option<Waker>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A call's task's side of its slot: tells its answer, or, dropped untold, that there is
/// none.
struct Teller<T> {
    slot: Arc<Slot<T>>,
    ends: Arc<Ends>,
}

impl<T> Teller<T> {
    fn tell(self, answer: T) {
        let waker = {
            let mut slot = self.slot.lock();
            slot.0 = State::Ended(answer);
            slot.1.take()
        };
        // A waiter that has not polled yet finds the answer when it does.
        if let Some(waker) = waker {
            self.ends.ended(waker);
        }
    }
}

impl<T> Drop for Teller<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.lock();
            if !matches!(slot.0, State::Running) {
                return;
            }
            slot.0 = State::Lost;
            slot.1.take()
        };
        // Not held: a lost call is rare, and its waiter must learn why.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A call on the call threads, as its waiter sees it: its answer, or why there is none.
/// Dropped, the call is aborted.
pub(super) struct OnCallThreads<T> {
    slot: Arc<Slot<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Future for OnCallThreads<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut slot = self.slot.lock();
            match std::mem::replace(&mut slot.0, State::Taken) {
                State::Ended(answer) => return Poll::Ready(Ok(answer)),
                State::Running => {
                    slot.0 = State::Running;
                    if !slot.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        slot.1 = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                State::Lost => slot.0 = State::Lost,
                State::Taken => panic!("a call's end polled after it was taken"),
            }
        }
        // Lost: the join handle has the panic or the abort (it may take a moment to have
        // it: the slot is told as the task's future is dropped, before its result is kept).
        match Pin::new(&mut self.task).poll(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => unreachable!("a call's task ends only after telling"),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for OnCallThreads<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream::{FuturesUnordered, StreamExt};

    fn threads(workers: usize) -> Threads {
        Threads {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap(),
            ends: Arc::default(),
            sharing: Arc::new(Sharing::new(workers, None)),
        }
    }

    /// Waits for `f` on a runtime of its own, failing (instead of hanging) if an end is
    /// held and never told.
    fn within_10s<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), f).await })
            .expect("an end was held and never told")
    }

    #[test]
    fn every_end_is_told_held_or_not() {
        let threads = threads(2);
        // More than are held together, and not a multiple of it: the last few are told
        // because nothing is queued after them.
        let n = TELL_AFTER * 3 + 7;
        let mut ends: FuturesUnordered<_> =
            (0..n).map(|i| threads.spawn(async move { i })).collect();
        let mut got = within_10s(async {
            let mut got = Vec::new();
            while let Some(end) = ends.next().await {
                got.push(end.unwrap());
            }
            got
        });
        got.sort();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        // Every call began before it ended. (The held wakers are not looked at: a waiter may
        // find its answer before its end is told, and the telling comes after.)
        assert_eq!(threads.ends.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_call_aborted_before_it_began_is_not_counted_as_queued() {
        let threads = threads(1);
        // The only call thread is kept busy while calls queue behind it, which are then
        // dropped (aborted) before they begin.
        let (release, busy) = std::sync::mpsc::channel::<()>();
        let (began, beginning) = std::sync::mpsc::channel::<()>();
        let blocker = threads.spawn(async move {
            let _ = began.send(());
            let _ = busy.recv();
        });
        // Begun, so that only the calls below are queued.
        beginning.recv_timeout(Duration::from_secs(10)).unwrap();
        let aborted: Vec<_> = (0..5).map(|i| threads.spawn(async move { i })).collect();
        assert_eq!(threads.ends.queued.load(Ordering::SeqCst), 5);
        drop(aborted);
        release.send(()).unwrap();
        within_10s(blocker).unwrap();
        // Counted as queued for good, they would hold this end (fewer than TELL_AFTER,
        // and no call begins or ends after it) forever.
        assert_eq!(within_10s(threads.spawn(async { 7 })).unwrap(), 7);
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(all: &[Arc<Woken>]) -> usize {
        all.iter().map(|w| w.0.load(Ordering::SeqCst)).sum()
    }

    #[test]
    fn ends_are_held_while_a_call_is_queued_until_enough_gather() {
        let ends = Arc::new(Ends::default());
        let queued = Queued::new(&ends);
        let all: Vec<_> = (0..TELL_AFTER)
            .map(|_| Arc::new(Woken::default()))
            .collect();
        for w in &all[..TELL_AFTER - 1] {
            ends.ended(Waker::from(w.clone()));
        }
        assert_eq!(
            woken(&all),
            0,
            "told while a call was queued and few had ended"
        );
        ends.ended(Waker::from(all[TELL_AFTER - 1].clone()));
        assert_eq!(woken(&all), TELL_AFTER, "each is told once, all together");
        drop(queued);
        assert_eq!(woken(&all), TELL_AFTER);
    }

    #[test]
    fn held_ends_are_told_once_nothing_is_queued() {
        let ends = Arc::new(Ends::default());
        let (first, second) = (Queued::new(&ends), Queued::new(&ends));
        let all: Vec<_> = (0..3).map(|_| Arc::new(Woken::default())).collect();
        for w in &all {
            ends.ended(Waker::from(w.clone()));
        }
        assert_eq!(woken(&all), 0);
        first.begun();
        assert_eq!(woken(&all), 0, "a call still queued");
        // Dropped unbegun (aborted) as much as begun.
        drop(second);
        assert_eq!(woken(&all), 3);
        // Nothing queued: an end is told at once.
        let alone = Arc::new(Woken::default());
        ends.ended(Waker::from(alone.clone()));
        assert_eq!(woken(&[alone]), 1);
    }

    #[test]
    fn an_end_held_past_its_bound_is_told_when_a_call_begins() {
        let ends = Arc::new(Ends::default());
        let (first, _second) = (Queued::new(&ends), Queued::new(&ends));
        let held = Arc::new(Woken::default());
        ends.ended(Waker::from(held.clone()));
        assert_eq!(woken(std::slice::from_ref(&held)), 0);
        std::thread::sleep(HOLD_AT_MOST * 3);
        // A call is still queued after this one begins: told for its age alone.
        first.begun();
        assert_eq!(woken(&[held]), 1);
    }

    /// A waker that wakes another (a target's in a set of them, which wakes the set's), and
    /// notes how often the waiting thread had been woken by then.
    struct Forward {
        to: Waker,
        waiter: Arc<Woken>,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl std::task::Wake for Forward {
        fn wake(self: Arc<Self>) {
            let before = self.waiter.0.load(Ordering::SeqCst);
            self.seen.lock().unwrap().push(before);
            self.to.wake_by_ref();
        }
    }

    #[test]
    fn a_group_told_together_wakes_a_batched_waiter_once() {
        let ends = Arc::new(Ends::default());
        let queued = Queued::new(&ends);
        let waiter = Arc::new(Woken::default());
        let mut batching = Batching::default();
        let batched = batching.waker(&Waker::from(waiter.clone())).clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let end = || {
            Waker::from(Arc::new(Forward {
                to: batched.clone(),
                waiter: waiter.clone(),
                seen: seen.clone(),
            }))
        };
        for _ in 0..TELL_AFTER {
            ends.ended(end());
        }
        // Woken at the first, the waiting thread would be polling (and woken again) while
        // the rest are told.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![0; TELL_AFTER],
            "woken before the group was told"
        );
        assert_eq!(
            woken(std::slice::from_ref(&waiter)),
            1,
            "woken once for the group, after it was told"
        );
        // Polled again (as a waiter does once woken), then woken by something else than a
        // telling: at once.
        batching.waker(&Waker::from(waiter.clone()));
        batched.wake_by_ref();
        assert_eq!(woken(std::slice::from_ref(&waiter)), 2);
        // Nothing queued: a lone end is a telling of its own, and wakes it too.
        drop(queued);
        batching.waker(&Waker::from(waiter.clone()));
        ends.ended(end());
        assert_eq!(woken(std::slice::from_ref(&waiter)), 3);
    }

    #[test]
    fn a_waiter_woken_by_a_telling_is_given_way_to_until_it_polls_again() {
        let ends = Arc::new(Ends::default());
        let waiter = Arc::new(Woken::default());
        let mut batching = Batching::default();
        let batched = batching.waker(&Waker::from(waiter.clone())).clone();
        let counted = |b: &Batching| b.0.as_ref().unwrap().0.woken.is_counted();
        // Nothing queued: a lone end is told at once.
        ends.ended(batched.clone());
        assert_eq!(woken(std::slice::from_ref(&waiter)), 1);
        assert!(counted(&batching), "woken by a telling, not counted");
        let mut nothing = futures_util::stream::empty::<()>();
        let cx_waker = Waker::from(waiter.clone());
        let _ = batching.poll_next(&mut nothing, &Context::from_waker(&cx_waker));
        assert!(!counted(&batching), "still counted once it polled");
        // Woken by something else than a telling: at once, and not counted.
        batched.wake_by_ref();
        assert!(!counted(&batching));
        ends.ended(batched.clone());
        assert!(counted(&batching));
        let batched_state = batching.0.as_ref().unwrap().0.clone();
        drop(batching);
        assert!(
            !batched_state.woken.is_counted(),
            "counted after it was gone"
        );
    }

    #[test]
    fn every_end_reaches_a_waiter_polling_through_a_batched_waker() {
        let threads = threads(2);
        let n = TELL_AFTER * 3 + 7;
        let mut ends: FuturesUnordered<_> =
            (0..n).map(|i| threads.spawn(async move { i })).collect();
        let mut batching = Batching::default();
        let mut got = Vec::new();
        within_10s(std::future::poll_fn(|cx| {
            loop {
                match batching.poll_next(&mut ends, cx) {
                    Poll::Ready(Some(end)) => got.push(end.unwrap()),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
        got.sort();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_call_says_so() {
        let threads = threads(1);
        let err = within_10s(threads.spawn(async {
            if true {
                panic!("boom");
            }
        }))
        .unwrap_err();
        assert!(err.is_panic(), "{err}");
        assert_eq!(threads.ends.queued.load(Ordering::SeqCst), 0);
    }
}
