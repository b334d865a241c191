//! Signals during a run started from a shell: what a responder's Ctrl-C, a supervisor's
//! SIGTERM and a closed terminal's SIGHUP mean.
//!
//! - The first SIGINT or SIGTERM cancels: the current step finishes (within its timeout), no
//!   new step starts, and the rollback (when the runbook has one and the responder agrees)
//!   runs to the end with its verify gates.
//! - The second says what is still running and how long it may take (or that the run waits
//!   for its store, when the store does not answer).
//! - The third aborts: everything stops at once, the run is recorded as interrupted and the
//!   `medic runs rollback` command that finishes the job is printed. A store that does not
//!   answer cannot hold this up past [`ABORT_GRACE`]: medic then stops without recording it.
//! - A store that does not answer for [`STALL_TOLD_AFTER`] is told of, and its answering
//!   again.
//! - SIGHUP (the terminal is gone) is a cancel answered as nobody is there to answer: roll
//!   back when the runbook can. The dead terminal is swapped for /dev/null so that writing
//!   progress cannot kill the process half-way through its rollback.
//! - SIGUSR1 (`medic runs cancel` from another terminal) is the first Ctrl-C's cancel, and
//!   only that, however often it comes.
//!
//! The handlers are registered synchronously before the run starts: a signal that arrives
//! while the runbook is being planned is a cancel, never the default action (an instant
//! death that leaves a half-made change behind). The exception is a store that does not
//! answer before the run starts (nothing has run) or after its verdict was given (it is
//! recorded and shown): a stop then ends medic at once.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::executor::{Cancel, Event, Observer, Phase};
use crate::runbook::{Plan, PlanStep, StepRollback};

/// The run's signal handlers, registered and waiting to be watched.
pub struct Signals {
    /// The stops, as they come; the handlers are read by a task of their own from the start,
    /// so that medic is never deaf to them, whatever the command's thread waits on.
    stops: tokio::sync::mpsc::UnboundedReceiver<Stop>,
    hung_up: Arc<AtomicBool>,
    /// Set once a run watches the stops ([`Signals::watch`]).
    watched: Arc<AtomicBool>,
    /// The run's exit code once its verdict is given ([`Watcher::ended`]); negative before.
    verdict: Arc<AtomicI32>,
}

impl Signals {
    /// Registers the handlers now: from here on these signals no longer kill the process.
    /// Until a run watches them, and once its verdict is given, a stop while the store does
    /// not answer ends medic, and the store's silence is told after [`STALL_TOLD_AFTER`];
    /// other stops before the run wait for it (it starts cancelled).
    pub fn install() -> std::io::Result<Signals> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut asked = signal(SignalKind::user_defined1())?;
        let (tx, stops) = tokio::sync::mpsc::unbounded_channel();
        let hung_up = Arc::<AtomicBool>::default();
        let watched = Arc::<AtomicBool>::default();
        let verdict = Arc::new(AtomicI32::new(-1));
        let (hung, watched_by_run, given) = (hung_up.clone(), watched.clone(), verdict.clone());
        tokio::spawn(async move {
            let mut stall = StallNotice::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    _ = interrupt.recv() => Stop::Interrupt,
                    _ = terminate.recv() => Stop::Interrupt,
                    _ = asked.recv() => Stop::Asked,
                    _ = hangup.recv() => {
                        if !hung.swap(true, Ordering::SeqCst) {
                            detach_from_terminal();
                            eprintln!("medic: the terminal went away: cancelling, and rolling back if the runbook can");
                        }
                        Stop::HangUp
                    }
                    _ = tick.tick() => {
                        let code = given.load(Ordering::SeqCst);
                        if !watched_by_run.load(Ordering::SeqCst) {
                            stall.tell(During::BeforeRun);
                        } else if code >= 0 {
                            stall.tell(During::AfterRun);
                        } else {
                            // The run's watcher tells of the store meanwhile: what was told
                            // before it is not answered after it.
                            stall = StallNotice::default();
                        }
                        continue;
                    }
                };
                let code = given.load(Ordering::SeqCst);
                let watched = watched_by_run.load(Ordering::SeqCst);
                let waited = crate::store::stall::longest();
                if let Some((said, exit)) = unwatched_stop(watched, code, waited) {
                    eprintln!("{said}");
                    std::process::exit(exit);
                }
                // Nobody watches once the run ended: a stop then is heard only while the store
                // does not answer (above).
                let _ = tx.send(stop);
            }
        });
        Ok(Signals {
            stops,
            hung_up,
            watched,
            verdict,
        })
    }

    /// [`Signals::install`], or the exit code after saying why it failed.
    pub fn install_for_run() -> Result<Signals, super::Exit> {
        Signals::install().map_err(|e| {
            eprintln!("medic: cannot handle signals: {e}");
            super::Exit::Engine
        })
    }

    /// The next signal: SIGINT and SIGTERM are a stop, SIGHUP a hang-up (the dead terminal
    /// was swapped for /dev/null, once).
    pub async fn next(&mut self) -> Stop {
        match self.stops.recv().await {
            Some(stop) => stop,
            // The handlers' task is gone (the runtime is shutting down): no more signals.
            None => std::future::pending().await,
        }
    }

    /// Whether the terminal went away (nobody can answer a question).
    pub fn hung_up(&self) -> Arc<AtomicBool> {
        self.hung_up.clone()
    }

    /// Handles signals for the run until the returned watcher is dropped, and tells the
    /// responder when the run's store stops answering (and when it answers again).
    pub fn watch(mut self, cancel: Cancel, progress: Progress) -> Watcher {
        self.watched.store(true, Ordering::SeqCst);
        let hung_up = self.hung_up();
        let verdict = self.verdict.clone();
        let stall = Arc::new(Mutex::new(StallNotice::default()));
        let notice = stall.clone();
        let task = tokio::spawn(async move {
            let mut stops = Stops::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    stop = self.next() => stop,
                    _ = tick.tick() => {
                        if let Some(store) = progress.store() {
                            notice
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .tell(During::Run(store));
                        }
                        continue;
                    }
                };
                match stops.count(stop) {
                    None => {}
                    Some(Nth::First(stop)) => {
                        match stop {
                            Stop::Interrupt => eprintln!("\nmedic: {CANCELLING}"),
                            Stop::Asked => eprintln!(
                                "\nmedic: asked to stop from elsewhere (`medic runs cancel`): {CANCELLING}"
                            ),
                            Stop::HangUp => {}
                        }
                        cancel.cancel();
                    }
                    Some(Nth::Second) => {
                        eprintln!("\nmedic: {}\n  = {LAST_WARNING}", progress.describe());
                    }
                    Some(Nth::Third) => {
                        cancel.abort_because(THIRD_CTRL_C);
                        progress.stop_after(ABORT_GRACE);
                        return;
                    }
                }
            }
        });
        Watcher {
            task,
            hung_up,
            verdict,
            stall,
        }
    }
}

/// How long the third Ctrl-C leaves the run to record that it was aborted before medic stops
/// without it: a store that does not answer (a stopped daemon, a hung disk) must not hold a
/// responder who asked for everything to stop.
pub const ABORT_GRACE: Duration = Duration::from_secs(3);

/// How long the store may leave the run waiting before the responder is told.
pub const STALL_TOLD_AFTER: Duration = Duration::from_secs(5);

/// Whether the abort's outcome was told: by the run once it recorded the abort, or by
/// [`Progress::stop_after`] when the run did not manage to in time. Told once.
static ABORT_TOLD: AtomicBool = AtomicBool::new(false);

/// Claims the telling of the abort's outcome: false when it was already told (the process
/// is then being ended by whoever told it, and must not say anything more).
pub fn claim_abort_told() -> bool {
    !ABORT_TOLD.swap(true, Ordering::SeqCst)
}

/// The store's silence, told once it lasts [`STALL_TOLD_AFTER`], and its end.
#[derive(Default)]
struct StallNotice {
    told: Option<Instant>,
}

/// What waits for the store.
#[derive(Debug, Clone, Copy)]
enum During<'a> {
    BeforeRun,
    /// The run, recorded in this store.
    Run(&'a str),
    /// What is left once the run's verdict is given.
    AfterRun,
}

impl StallNotice {
    fn tell(&mut self, during: During<'_>) {
        let oldest = crate::store::stall::oldest();
        let now = Instant::now();
        if let Some(message) = self.next(during, oldest, now) {
            eprintln!("{message}");
        }
    }

    /// What to tell at `now`, the oldest wait for the store still going on having begun at
    /// `oldest`.
    fn next(
        &mut self,
        during: During<'_>,
        oldest: Option<Instant>,
        now: Instant,
    ) -> Option<String> {
        if let Some(said) = self.answered_by(oldest, now) {
            return Some(said);
        }
        match (oldest, self.told) {
            (Some(began), None) if now - began >= STALL_TOLD_AFTER => {
                self.told = Some(began);
                let waited = seconds(now - began);
                Some(match during {
                    During::Run(store) => format!(
                        "\nmedic: the store in {store} has not answered for {waited}: the run waits for it and does nothing meanwhile\n  = Ctrl-C three times stops medic without it"
                    ),
                    During::BeforeRun => format!(
                        "\nmedic: the store has not answered for {waited}; nothing has run yet\n  = Ctrl-C stops medic"
                    ),
                    During::AfterRun => format!(
                        "\nmedic: the store has not answered for {waited}; the run's verdict is recorded\n  = Ctrl-C stops medic"
                    ),
                })
            }
            _ => None,
        }
    }

    /// That the wait told of was answered, once it was: nothing waits now, or only what was
    /// asked since (a run writes again at once).
    fn answered_by(&mut self, oldest: Option<Instant>, now: Instant) -> Option<String> {
        let since = self.told?;
        if oldest.is_some_and(|began| began <= since) {
            return None;
        }
        self.told = None;
        Some(format!(
            "medic: the store answers again (after {})",
            seconds(now - since)
        ))
    }
}

fn seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// What a stop does when no run watches the stops: before the run starts (`watched` false)
/// or once its verdict is given (`verdict`, its exit code, not negative). While a wait for
/// the store is over a second old, it ends medic: nothing ran yet, or the verdict is
/// recorded and shown, and what is left (the run's locks, a last flush, the retention's
/// pruning) is not worth holding a responder for up to the store's 5 minutes; the exit
/// code is then the verdict's. Otherwise the stop is left to the run (before it starts, a
/// cancel) or to nothing (after it).
fn unwatched_stop(watched: bool, verdict: i32, waited: Option<Duration>) -> Option<(String, i32)> {
    let waited = waited.filter(|w| *w >= Duration::from_secs(1))?;
    if !watched {
        return Some((
            format!(
                "\nmedic: stopped before anything ran: the store has not answered for {}",
                seconds(waited)
            ),
            super::Exit::Cancelled as i32,
        ));
    }
    (verdict >= 0).then(|| {
        (
            format!(
                "\nmedic: stopped after the run: its verdict is recorded, but the store has not answered for {} since (releasing the run's locks)",
                seconds(waited)
            ),
            verdict,
        )
    })
}

/// What the first Ctrl-C does.
pub const CANCELLING: &str = "cancelling: the current step finishes (within its timeout), no new step starts\n  = a rollback, once started, runs to the end with its verify checks; Ctrl-C twice more aborts everything";
/// A run aborted by its responder, as its record says.
pub const THIRD_CTRL_C: &str = "Ctrl-C three times";

/// What the second says the third will do.
pub const LAST_WARNING: &str =
    "Ctrl-C once more aborts: nothing more is undone and the run is left interrupted";

/// What a signal asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C or SIGTERM.
    Interrupt,
    /// The terminal closed.
    HangUp,
    /// `medic runs cancel` from elsewhere (SIGUSR1): a cancel, as the first Ctrl-C, that
    /// asking again never turns into an abort. A responder repeating it while the rollback
    /// runs must not stop the rollback, as a third Ctrl-C at the run's own terminal does.
    Asked,
}

/// A run's stops as counted wherever a run is followed (here, through `medic serve`, a
/// drill through `medic serve`): the first stop of any kind cancels; after it only Ctrl-C
/// and SIGTERM count, so a closed terminal or a repeated `medic runs cancel` never becomes
/// an abort.
#[derive(Debug, Default)]
pub struct Stops(u32);

/// Which stop of a run one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nth {
    /// The first, of this kind: a cancel.
    First(Stop),
    /// The second Ctrl-C: say what still runs.
    Second,
    /// The third Ctrl-C, or one after it: abort, or stop waiting.
    Third,
}

impl Stops {
    /// Counts `stop`; none if it changes nothing (not a Ctrl-C, after the first stop).
    pub fn count(&mut self, stop: Stop) -> Option<Nth> {
        if self.0 > 0 && stop != Stop::Interrupt {
            return None;
        }
        self.0 = self.0.saturating_add(1);
        Some(match self.0 {
            1 => Nth::First(stop),
            2 => Nth::Second,
            _ => Nth::Third,
        })
    }

    /// The stops counted so far.
    pub fn so_far(&self) -> u32 {
        self.0
    }
}

/// The running signal handler.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    hung_up: Arc<AtomicBool>,
    verdict: Arc<AtomicI32>,
    /// What was told of the store's silence during the run.
    stall: Arc<Mutex<StallNotice>>,
}

impl Watcher {
    /// The run gave its verdict, whose exit code is `exit`: the run no longer watches the
    /// stops, and one while the store does not answer ends medic with that code. A silence
    /// told during the run and answered since is told as answered now: the run may have
    /// ended well within the second between two looks at the store.
    pub fn ended(self, exit: super::Exit) {
        let answered = self
            .stall
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .answered_by(crate::store::stall::oldest(), Instant::now());
        if let Some(said) = answered {
            eprintln!("{said}");
        }
        self.verdict.store(exit as i32, Ordering::SeqCst);
    }

    /// Whether the terminal went away (nobody can answer a question).
    pub fn hung_up(&self) -> Arc<AtomicBool> {
        self.hung_up.clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Points standard input, output and error that are terminals (character devices) at
/// /dev/null. Writing to a hung-up terminal fails, and Rust's `eprintln!` panics on failure:
/// without this a closed terminal would kill the process in the middle of its rollback.
/// Pipes and files are left alone (their reader may still be there).
fn detach_from_terminal() {
    // SAFETY: plain system calls on this process's own descriptors 0-2 and one it opens;
    // `fstat` writes only into the zeroed struct it is given.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        for fd in 0..=2 {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR {
                libc::dup2(null, fd);
            }
        }
        libc::close(null);
    }
}

/// What the run is doing now, for the second Ctrl-C's answer.
#[derive(Clone, Default)]
pub struct Progress {
    now: Arc<Mutex<Option<Current>>>,
    /// Where this process records its runs, and the run it records now, when it does.
    recorded: Option<Arc<Recorded>>,
}

struct Recorded {
    /// The run going on: given, or (a drill's runs, one after another) the last started.
    run_id: Mutex<Option<String>>,
    store: String,
}

struct Current {
    id: String,
    phase: Phase,
    since: Instant,
    /// The longest the step can take, from its timeouts, retries and gate.
    bound: Option<Duration>,
}

impl Progress {
    /// The progress of run `run_id`, recorded by this process in the store at `store`.
    pub fn recorded(run_id: &str, store: String) -> Progress {
        Progress::in_store(Some(run_id.to_owned()), store)
    }

    /// The progress of the runs this process records in the store at `store` one after
    /// another (a drill's fault, its runbook, its notification), each from its start.
    pub fn following(store: String) -> Progress {
        Progress::in_store(None, store)
    }

    fn in_store(run_id: Option<String>, store: String) -> Progress {
        Progress {
            now: Arc::default(),
            recorded: Some(Arc::new(Recorded {
                run_id: Mutex::new(run_id),
                store,
            })),
        }
    }

    fn store(&self) -> Option<&str> {
        self.recorded.as_ref().map(|r| r.store.as_str())
    }

    fn started(&self, run_id: &str) {
        if let Some(r) = &self.recorded {
            *r.run_id
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(run_id.to_owned());
        }
    }

    /// Ends the process `grace` from now unless the abort's outcome was told by then
    /// ([`claim_abort_told`]), saying why the run stands unrecorded. A plain thread: the
    /// runtime's may all be blocked on the store.
    fn stop_after(&self, grace: Duration) {
        let Some(recorded) = self.recorded.clone() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("medic-abort".into())
            .spawn(move || {
                std::thread::sleep(grace);
                if !claim_abort_told() {
                    return;
                }
                let why = match crate::store::stall::longest() {
                    Some(waited) => format!(
                        "the store in {} has not answered for {}",
                        recorded.store,
                        seconds(waited)
                    ),
                    None => format!("the run did not stop within {}", seconds(grace)),
                };
                let run_id = recorded
                    .run_id
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let stands = match run_id {
                    Some(id) => format!(
                        "run {id} stands as last recorded; the next medic command that reaches the store finds it interrupted\n  = then roll it back with  medic runs rollback {id}\n  = or continue it with     medic runs resume {id}"
                    ),
                    None => "no run had started".to_owned(),
                };
                // Not `eprintln!`: stderr may be gone, and this must end the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "medic: aborted, without recording it: {why}\n  = {stands}"
                );
                std::process::exit(super::Exit::RollbackFailed as i32);
            });
        if let Err(e) = spawned {
            eprintln!("medic: cannot bound the abort's wait for the store: {e}");
        }
    }

    pub fn describe(&self) -> String {
        if let (Some(store), Some(waited)) = (self.store(), crate::store::stall::longest())
            && waited >= Duration::from_secs(1)
        {
            return format!(
                "waiting for the store in {store}, which has not answered for {}: the run does nothing more until it does",
                seconds(waited)
            );
        }
        let now = self.now.lock().unwrap();
        let Some(c) = now.as_ref() else {
            return "stopping: no step is running".to_owned();
        };
        let what = match c.phase {
            Phase::Steps => "step",
            Phase::Rollback => "rollback step",
            Phase::Verify => "verify check",
            Phase::Finally => "finally step",
        };
        let ran = c.since.elapsed();
        let left = c
            .bound
            .map(|b| {
                format!(
                    ", at most {} more",
                    humantime::format_duration(Duration::from_secs(
                        b.saturating_sub(ran).as_secs() + 1
                    ))
                )
            })
            .unwrap_or_default();
        format!(
            "still running: {what} `{}` (for {}{left})",
            c.id,
            seconds(ran)
        )
    }
}

/// The longest one call sequence of a step can take: its attempts and their backoffs, or
/// its gate's bake time and time limit.
fn step_bound(step: &PlanStep) -> Duration {
    if let Some(g) = &step.gate {
        return g.delay + g.timeout + step.timeout;
    }
    match step.retry {
        Some(r) => step.timeout * r.attempts + r.max_backoff * r.attempts.saturating_sub(1),
        None => step.timeout,
    }
}

/// How long each step of `plan` may take, by the id its events carry (a step's own undo is
/// `ID.rollback`).
fn bounds_of(plan: &Plan) -> HashMap<String, Duration> {
    let mut bounds: HashMap<String, Duration> =
        [&plan.steps, &plan.rollback, &plan.verify, &plan.finally]
            .into_iter()
            .flat_map(|s| s.iter())
            .map(|s| (s.id.clone(), step_bound(s)))
            .collect();
    bounds.extend(plan.steps.iter().filter_map(|s| {
        let undo = match s.rollback.as_ref()? {
            StepRollback::Call { timeout, .. } => *timeout,
            _ => s.timeout,
        };
        Some((format!("{}.rollback", s.id), undo))
    }));
    bounds
}

/// Passes events on, keeping [`Progress`] current: of one run, or of several one after
/// another (each known from its start).
pub struct Tracked<'a> {
    progress: Progress,
    inner: &'a mut dyn Observer,
    /// The bounds of the steps of the run going on.
    bounds: HashMap<String, Duration>,
}

impl<'a> Tracked<'a> {
    pub fn new(progress: Progress, inner: &'a mut dyn Observer) -> Self {
        Tracked {
            progress,
            inner,
            bounds: HashMap::new(),
        }
    }
}

impl Observer for Tracked<'_> {
    fn on_event(&mut self, event: &Event<'_>) {
        match event {
            Event::RunStarted { run_id, plan, .. } => {
                self.bounds = bounds_of(plan);
                self.progress.started(run_id);
            }
            Event::StepStarted { phase, id, .. } => {
                let bound = self.bounds.get(*id).copied();
                *self.progress.now.lock().unwrap() = Some(Current {
                    id: (*id).to_owned(),
                    phase: *phase,
                    since: Instant::now(),
                    bound,
                });
            }
            Event::StepFinished { .. } | Event::RunFinished { .. } => {
                *self.progress.now.lock().unwrap() = None;
            }
            _ => {}
        }
        self.inner.on_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_first_stop_only_ctrl_c_counts_toward_the_abort() {
        let mut stops = Stops::default();
        assert_eq!(stops.count(Stop::HangUp), Some(Nth::First(Stop::HangUp)));
        // A closed terminal, or `runs cancel` asked again while the rollback runs.
        assert_eq!(stops.count(Stop::HangUp), None);
        assert_eq!(stops.count(Stop::Asked), None);
        assert_eq!(stops.count(Stop::Interrupt), Some(Nth::Second));
        assert_eq!(stops.count(Stop::Asked), None);
        assert_eq!(stops.count(Stop::Interrupt), Some(Nth::Third));
        assert_eq!(stops.count(Stop::Interrupt), Some(Nth::Third));
        assert_eq!(stops.so_far(), 4);
        let mut stops = Stops::default();
        assert_eq!(stops.so_far(), 0);
        assert_eq!(
            stops.count(Stop::Interrupt),
            Some(Nth::First(Stop::Interrupt))
        );
    }

    #[test]
    fn a_stop_no_run_watches_ends_medic_only_while_the_store_does_not_answer() {
        let (long, short) = (
            Some(Duration::from_secs(3)),
            Some(Duration::from_millis(900)),
        );
        // Before the run: a cancel for the run to come, unless the store holds it.
        assert_eq!(unwatched_stop(false, -1, None), None);
        assert_eq!(unwatched_stop(false, -1, short), None);
        let (said, code) = unwatched_stop(false, -1, long).unwrap();
        assert_eq!(code, crate::cli::Exit::Cancelled as i32);
        assert!(
            said.contains("stopped before anything ran: the store has not answered for 3s"),
            "{said}"
        );
        // During the run: the run's own watcher hears it.
        assert_eq!(unwatched_stop(true, -1, long), None);
        // After the verdict: ends medic with the verdict's code while the store holds it.
        assert_eq!(unwatched_stop(true, 4, short), None);
        let (said, code) = unwatched_stop(true, 4, long).unwrap();
        assert_eq!(code, 4);
        assert!(
            said.contains("stopped after the run: its verdict is recorded"),
            "{said}"
        );
        assert_eq!(unwatched_stop(true, 0, long).map(|(_, c)| c), Some(0));
    }

    #[test]
    fn after_the_run_a_stall_is_told_as_such() {
        let t0 = Instant::now();
        let mut n = StallNotice::default();
        let told = n
            .next(During::AfterRun, Some(t0), t0 + Duration::from_secs(5))
            .unwrap();
        assert!(
            told.contains("the run's verdict is recorded\n  = Ctrl-C stops medic"),
            "{told}"
        );
    }

    #[test]
    fn a_stall_is_told_once_past_its_threshold_and_its_end_once() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut n = StallNotice::default();
        assert_eq!(n.next(During::Run("D"), None, at(1)), None);
        assert_eq!(
            n.next(During::Run("D"), Some(t0), at(4)),
            None,
            "under the threshold"
        );
        let told = n.next(During::Run("D"), Some(t0), at(5)).unwrap();
        assert!(
            told.contains("the store in D has not answered for 5s"),
            "{told}"
        );
        assert_eq!(n.next(During::Run("D"), Some(t0), at(6)), None, "told once");
        // Answered, and the run's next write already waiting: that one is not the stall.
        assert_eq!(
            n.next(During::Run("D"), Some(at(7)), at(7)).as_deref(),
            Some("medic: the store answers again (after 7s)")
        );
        assert_eq!(
            n.next(During::Run("D"), None, at(8)),
            None,
            "its end told once"
        );
        // A second stall is told again; before the run starts, without a place.
        let told = n.next(During::BeforeRun, Some(at(8)), at(13)).unwrap();
        assert!(
            told.contains("the store has not answered for 5s; nothing has run yet"),
            "{told}"
        );
        assert_eq!(
            n.next(During::Run("D"), None, at(14)).as_deref(),
            Some("medic: the store answers again (after 6s)")
        );
    }
}
