//! Signals during a run started from a shell: what a responder's Ctrl-C, a supervisor's
//! SIGTERM and a closed terminal's SIGHUP mean.
//!
//! - The first SIGINT or SIGTERM cancels: the current step finishes (within its timeout), no
//!   new step starts, and the rollback (when the runbook has one and the responder agrees)
//!   runs to the end with its verify gates.
//! - The second says what is still running and how long it may take.
//! - The third aborts: everything stops at once, the run is recorded as interrupted and the
//!   `medic runs rollback` command that finishes the job is printed.
//! - SIGHUP (the terminal is gone) is a cancel answered as nobody is there to answer: roll
//!   back when the runbook can. The dead terminal is swapped for /dev/null so that writing
//!   progress cannot kill the process half-way through its rollback.
//!
//! The handlers are registered synchronously before the run starts: a signal that arrives
//! while the runbook is being planned is a cancel, never the default action (an instant
//! death that leaves a half-made change behind).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::executor::{Cancel, Event, Observer, Phase};
use crate::runbook::{Plan, PlanStep, StepRollback};

/// The run's signal handlers, registered and waiting to be watched.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    hung_up: Arc<AtomicBool>,
}

impl Signals {
    /// Registers the handlers now: from here on these signals no longer kill the process.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            hung_up: Arc::default(),
        })
    }

    /// [`Signals::install`], or the exit code after saying why it failed.
    pub fn install_for_run() -> Result<Signals, super::Exit> {
        Signals::install().map_err(|e| {
            eprintln!("medic: cannot handle signals: {e}");
            super::Exit::Engine
        })
    }

    /// The next signal: SIGINT and SIGTERM are a stop, SIGHUP a hang-up (handled here: the
    /// dead terminal is swapped for /dev/null, once).
    pub async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Interrupt,
            _ = self.hangup.recv() => {
                if !self.hung_up.swap(true, Ordering::SeqCst) {
                    detach_from_terminal();
                    eprintln!("medic: the terminal went away: cancelling, and rolling back if the runbook can");
                }
                Stop::HangUp
            }
        }
    }

    /// Whether the terminal went away (nobody can answer a question).
    pub fn hung_up(&self) -> Arc<AtomicBool> {
        self.hung_up.clone()
    }

    /// Handles signals for the run until the returned watcher is dropped.
    pub fn watch(mut self, cancel: Cancel, progress: Progress) -> Watcher {
        let hung_up = self.hung_up();
        let task = tokio::spawn(async move {
            let mut stops = 0u32;
            loop {
                if self.next().await == Stop::HangUp {
                    if stops == 0 {
                        stops = 1;
                        cancel.cancel();
                    }
                    continue;
                }
                stops += 1;
                match stops {
                    1 => {
                        eprintln!("\nmedic: {CANCELLING}");
                        cancel.cancel();
                    }
                    2 => {
                        eprintln!("\nmedic: {}\n  = {LAST_WARNING}", progress.describe());
                    }
                    _ => {
                        cancel.abort();
                        return;
                    }
                }
            }
        });
        Watcher { task, hung_up }
    }
}

/// What the first Ctrl-C does.
pub const CANCELLING: &str = "cancelling: the current step finishes (within its timeout), no new step starts\n  = a rollback, once started, runs to the end with its verify checks; Ctrl-C twice more aborts everything";
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
}

/// The running signal handler.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    hung_up: Arc<AtomicBool>,
}

impl Watcher {
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
pub struct Progress(Arc<Mutex<Option<Current>>>);

struct Current {
    id: String,
    phase: Phase,
    since: Instant,
    /// The longest the step can take, from its timeouts, retries and gate.
    bound: Option<Duration>,
}

impl Progress {
    pub fn describe(&self) -> String {
        let now = self.0.lock().unwrap();
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
            humantime::format_duration(Duration::from_secs(ran.as_secs()))
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

fn bound_of(plan: &Plan, id: &str) -> Option<Duration> {
    if let Some(forward) = id.strip_suffix(".rollback") {
        let step = plan.steps.iter().find(|s| s.id == forward)?;
        return Some(match &step.rollback {
            Some(StepRollback::Call { timeout, .. }) => *timeout,
            _ => step.timeout,
        });
    }
    [&plan.steps, &plan.rollback, &plan.verify, &plan.finally]
        .into_iter()
        .flat_map(|s| s.iter())
        .find(|s| s.id == id)
        .map(step_bound)
}

/// Passes events on, keeping [`Progress`] current.
pub struct Tracked<'a> {
    pub progress: Progress,
    pub plan: &'a Plan,
    pub inner: &'a mut dyn Observer,
}

impl Observer for Tracked<'_> {
    fn on_event(&mut self, event: &Event<'_>) {
        match event {
            Event::StepStarted { phase, id, .. } => {
                *self.progress.0.lock().unwrap() = Some(Current {
                    id: (*id).to_owned(),
                    phase: *phase,
                    since: Instant::now(),
                    bound: bound_of(self.plan, id),
                });
            }
            Event::StepFinished { .. } | Event::RunFinished { .. } => {
                *self.progress.0.lock().unwrap() = None;
            }
            _ => {}
        }
        self.inner.on_event(event);
    }
}
