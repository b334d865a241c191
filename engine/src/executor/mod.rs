//! Runs a [`Plan`]: the steps in order, then (when a failure asks for it) the rollback path
//! and the verify checks, then the `finally` steps. Every call is a fresh sandbox; templates
//! are rendered just before their step runs, against the outputs of the steps before it.
//!
//! A fleet step makes its call once per target, `max_concurrency` at a time, inside the run's
//! own task (the futures are not Send), and its rollback undoes target by target.
//!
//! Progress is reported through an [`Observer`], so the terminal output, the JSON stream and
//! the run record all see the same events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::host::{
    Failure, Invocation, KvJournal, KvSpace, PluginHost, PluginKind, Redactor, Status, Value,
    Values,
};
use crate::runbook::{OnFailure, Plan, PlanStep, RetryOn};

mod ask;
mod cancel;
mod events;
mod fleet;
mod gate;
mod rollback;
mod step;

pub use cancel::Cancel;
pub use events::{Event, Observer, OwnedEvent};

/// The part of a run a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Steps,
    Rollback,
    Verify,
    Finally,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    /// The plugin ran and reported failure (a check found a problem, a gate did not pass).
    Failed,
    /// The plugin could not complete (timeout, trap, denied, error...).
    Errored {
        failure: Failure,
    },
    /// Its condition was false, or the run was cancelled before it.
    Skipped {
        reason: String,
    },
}

impl StepStatus {
    pub fn is_success(&self) -> bool {
        matches!(self, StepStatus::Succeeded)
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, StepStatus::Failed | StepStatus::Errored { .. })
    }
}

/// How a run ended. Each has its own exit code (see the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    /// A step failed and no rollback was asked for.
    Failed,
    /// A step failed, the rollback ran and the verify checks passed.
    RolledBack,
    /// A rollback or a verify check failed: a person must act.
    RollbackFailed,
    /// Stopped by a signal (and rolled back if asked; a failed rollback is RollbackFailed).
    Cancelled,
    /// A `--dry-run` in which every step said it would work: nothing was changed.
    DryRun,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    /// Since the run started.
    pub started_ms: u64,
    pub invocation: Invocation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub phase: Phase,
    /// The plugin declaration used (`[plugins.NAME]`).
    pub plugin: String,
    pub status: StepStatus,
    pub summary: String,
    pub duration: Duration,
    /// Rendered parameters as they may be shown: secrets masked.
    pub params: Vec<(String, Value)>,
    /// Every call made for this step: retries and gate checks each add one.
    pub attempts: Vec<Attempt>,
    /// A fleet step's targets, in the order they finished (those never started last), as
    /// the store gives them back ([`crate::store::steps_of`]). Empty as a run goes: each
    /// target is told (`TargetFinished`) and journaled as it ends, then let go, so a fleet
    /// of 10,000 targets is not held in memory (older medics' journals repeat them in the
    /// step's end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
    /// What a fleet step's targets came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetTally>,
}

/// How many of a fleet step's targets ran, succeeded and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTally {
    pub targets: usize,
    /// Called at least once (the others were never started).
    pub ran: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl StepReport {
    pub fn outputs(&self) -> Option<&Values> {
        self.attempts
            .last()
            .and_then(|a| a.invocation.result.as_ref().ok())
            .map(|o| &o.outputs)
    }

    /// Whether the step's plugin was called (for a fleet, for any target): what may have
    /// changed things, so what a rollback undoes.
    pub fn ran(&self) -> bool {
        !self.attempts.is_empty()
            || self.fleet.is_some_and(|f| f.ran > 0)
            || self.targets.iter().any(|t| !t.attempts.is_empty())
    }

    /// Every call of the step, with the target it was for (fleet steps whose targets were
    /// gathered from the journal).
    pub fn calls(&self) -> impl Iterator<Item = (Option<&str>, &Attempt)> {
        self.attempts.iter().map(|a| (None, a)).chain(
            self.targets
                .iter()
                .flat_map(|t| t.attempts.iter().map(|a| (Some(t.target.as_str()), a))),
        )
    }
}

/// (De)serializes an `Arc<T>` as the `T` it shares. Serde's `rc` feature does the same, but
/// turning it on changes serde for every crate of the build.
pub(crate) mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(v, s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// One target of a fleet step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub target: String,
    pub status: StepStatus,
    pub summary: String,
    /// Since the run started.
    pub started_ms: u64,
    pub duration: Duration,
    /// Rendered parameters as they may be shown: secrets masked.
    pub params: Vec<(String, Value)>,
    pub attempts: Vec<Attempt>,
}

/// Who allowed a run in a protected environment, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub reason: String,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub runbook: String,
    pub environment: String,
    pub outcome: RunOutcome,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub steps: Vec<StepReport>,
    pub approval: Option<Approval>,
}

/// The answer to an approval a step asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Approved { by: String, reason: String },
    Rejected { by: String, reason: String },
    TimedOut,
    Cancelled,
}

/// Waits for a person's decision on a step.
pub trait Approver: Send + Sync {
    /// The decision on `step` of `run_id`. The returned future's first poll registers the
    /// request, so that it can be decided from then on: the run polls it once before telling
    /// anyone it asks.
    fn wait<'a>(
        &'a self,
        run_id: &'a str,
        step: &'a str,
        prompt: &'a str,
        timeout: Duration,
        cancel: &'a Cancel,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>>;
}

/// Refuses every approval: for callers that have no way to ask a person.
pub struct NoApprover;

impl Approver for NoApprover {
    fn wait<'a>(
        &'a self,
        _run_id: &'a str,
        _step: &'a str,
        _prompt: &'a str,
        _timeout: Duration,
        _cancel: &'a Cancel,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        Box::pin(async {
            Decision::Rejected {
                by: "medic".into(),
                reason: "nobody can approve steps here".into(),
            }
        })
    }
}

/// Picking up a run another process started (from its journal).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The reports of the main steps that ended, as recorded.
    pub prior: Vec<StepReport>,
    /// Main steps that started but never ended (the process died during them).
    pub in_progress: Vec<String>,
    /// Only undo what the run did (then verify), instead of continuing it.
    pub rollback_only: bool,
    /// Fleet steps' targets that ended, as journaled: when the step runs again, the targets
    /// that succeeded are not run twice.
    pub targets: BTreeMap<String, Vec<TargetReport>>,
    /// The plugins' key-value spaces as the earlier process left them (per plugin
    /// declaration): what a revert needs, or a re-run action needs to keep.
    pub kv: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

pub struct RunOptions {
    pub run_id: String,
    pub resume: Option<Resume>,
    pub dry_run: bool,
    pub approval: Option<Approval>,
    pub cancel: Cancel,
    /// Asked after a cancellation: roll back? Non-interactive callers answer from the runbook.
    pub confirm_rollback: Box<dyn FnMut() -> bool + Send>,
    /// Decides steps that ask for an approval.
    pub approver: Arc<dyn Approver>,
    /// A drill's fault: this main step runs, then its outcome is forced to a failure, so the
    /// rollback path is exercised.
    pub fail_step: Option<String>,
    /// Where plugins' key-value writes are made durable (the run's journal); none: they
    /// live only as long as this process.
    pub kv_journal: Option<Arc<dyn KvJournal>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: new_run_id(),
            resume: None,
            dry_run: false,
            approval: None,
            cancel: Cancel::new(),
            confirm_rollback: Box::new(|| true),
            approver: Arc::new(NoApprover),
            fail_step: None,
            kv_journal: None,
        }
    }
}

/// Why steps after a cancel did not run. A resumed run runs them.
pub const CANCELLED_SKIP: &str = "the run was cancelled";

/// The summary of a step that started and never ended (its process died, or the run was
/// aborted), as a rollback that picks the run up reports it: not known to have failed, only
/// that it may have acted.
pub const INTERRUPTED: &str = "interrupted";

/// A sortable unique id (ULID): runs list in start order by id alone.
pub fn new_run_id() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

/// Runs a plan to completion: whatever happens becomes part of the report.
///
/// `None` when the run was aborted ([`Cancel::abort`]): an aborted run has no verdict, and no
/// `RunFinished` event is sent. The abort may be seen here first, in the middle of a poll (a
/// gate that finds its undo view cancelled fails), before a caller racing this future against
/// [`Cancel::aborted`] notices it; deciding it here keeps the cut-off gate from being reported
/// as a failed rollback.
pub fn execute<'a>(
    host: &'a PluginHost,
    plan: &'a Plan,
    opts: RunOptions,
    observer: &'a mut dyn Observer,
) -> impl Future<Output = Option<RunReport>> + 'a {
    // What the run's calls leave until it waits (`crate::later`) goes with the run at the
    // latest. Not an `async fn`, which would hold the run's future twice (see `scope`).
    // And its write-ahead still on its way (`crate::ahead`).
    crate::ahead::scope(crate::later::scope(run_plan(host, plan, opts, observer)))
}

/// Not an `async fn`: one holds its arguments twice (as they came and as its locals), and
/// `opts` is hundreds of bytes of every run in flight.
#[allow(clippy::manual_async_fn)]
fn run_plan<'a>(
    host: &'a PluginHost,
    plan: &'a Plan,
    mut opts: RunOptions,
    observer: &'a mut dyn Observer,
) -> impl Future<Output = Option<RunReport>> + 'a {
    async move {
        let started = Instant::now();
        let started_at = SystemTime::now();
        let mut confirm_rollback = std::mem::replace(&mut opts.confirm_rollback, Box::new(|| true));
        observer.on_event(&Event::RunStarted {
            run_id: &opts.run_id,
            plan,
            approval: opts.approval.as_ref(),
        });
        let mut run = Run {
            host,
            plan,
            opts: &opts,
            started,
            // One key-value space per plugin declaration, shared by its steps for the whole run
            // and, through the journal, with any process that picks the run up.
            kv: plan
                .plugins
                .iter()
                .map(|p| {
                    let entries = opts
                        .resume
                        .as_ref()
                        .and_then(|r| r.kv.get(&p.alias).cloned())
                        .unwrap_or_default();
                    KvSpace::restored(entries, opts.kv_journal.clone(), &p.alias)
                })
                .collect(),
            cancel: opts.cancel.clone(),
            interrupted: BTreeSet::new(),
            secrets: std::sync::Mutex::new(Secrets::of(plan)),
            reports: Vec::new(),
            raw: BTreeMap::new(),
            raw_outputs: BTreeMap::new(),
            attempt_base: BTreeMap::new(),
            steps_view: std::sync::Mutex::default(),
            targets_raw: BTreeMap::new(),
            resumed_targets: BTreeMap::new(),
        };
        let resume = opts.resume.clone().unwrap_or_default();
        run.resumed_targets = resume.targets.clone();
        for r in &resume.prior {
            if let Some(outputs) = r.outputs() {
                run.raw_outputs.insert(r.id.clone(), outputs.clone());
            }
            run.attempt_base
                .insert(r.id.clone(), r.attempts.len() as u32);
            run.reports.push(r.clone());
        }
        for id in &resume.in_progress {
            // The call that was cut off counts as an attempt: the plugin is told this is a retry.
            *run.attempt_base.entry(id.clone()).or_default() += 1;
            run.interrupted.insert(id.clone());
            if resume.rollback_only
                && let Some(step) = plan.steps.iter().find(|s| s.id == *id)
            {
                // It may have changed things before the process died: undo it too.
                let failure = Failure::Engine {
                    message: "the run stopped during this step (its process died, or it was aborted); it may have acted".into(),
                };
                run.reports.push(StepReport {
                    id: id.clone(),
                    phase: Phase::Steps,
                    plugin: plan.plugins[step.plugin].alias.clone(),
                    status: StepStatus::Errored { failure },
                    summary: INTERRUPTED.into(),
                    duration: Duration::ZERO,
                    params: Vec::new(),
                    attempts: Vec::new(),
                    targets: Vec::new(),
                    fleet: None,
                });
            }
        }

        // Main steps.
        let mut failed = false;
        let mut rollback_wanted = resume.rollback_only;
        let mut cancelled = false;
        let mut dry_acted = false;
        // The steps reported before this process (a resume): whether each is done. Only those
        // are looked for in the reports, once per step (scanning every report at every step
        // made a long runbook quadratic).
        let prior: HashMap<String, bool> = run
            .reports
            .iter()
            .map(|r| {
                let done = match &r.status {
                    StepStatus::Succeeded => true,
                    // A step the cancel skipped never ran, so it runs now.
                    StepStatus::Skipped { reason } => reason != CANCELLED_SKIP,
                    _ => false,
                };
                (r.id.clone(), done)
            })
            .collect();
        for step in plan.steps.iter().filter(|_| !resume.rollback_only) {
            match prior.get(&step.id) {
                // Done before a resume: succeeded, or skipped by its condition.
                Some(true) => continue,
                // A step that failed before is run again; its old report makes way for the new
                // one, and the template view built from it goes too.
                Some(false) => {
                    run.reports.retain(|r| r.id != step.id);
                    *run.steps_view.lock().unwrap() = StepsView::default();
                }
                None => {}
            }
            if opts.cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let report = run.step(step, Phase::Steps, observer).await;
            let step_failed = report.status.is_failure();
            run.reports.push(report);
            if opts.cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let is_action = plan.plugins[step.plugin].plugin.manifest.kind == PluginKind::Action;
            if step_failed && opts.dry_run && !is_action && dry_acted {
                // Nothing changed, so a check after a (dry) action sees the system as it was:
                // its failure says nothing about the plan. It is shown, and the preview goes on.
                continue;
            }
            dry_acted |= is_action;
            if step_failed {
                match step.on_failure {
                    // A tolerated failure (a diagnostic check, say) is recorded but does not fail
                    // the run: the steps after it decide how the run ends.
                    OnFailure::Continue => continue,
                    OnFailure::Abort => {
                        failed = true;
                        break;
                    }
                    OnFailure::Rollback => {
                        failed = true;
                        rollback_wanted = true;
                        break;
                    }
                }
            }
        }
        if cancelled {
            let reported: HashSet<&str> = run.reports.iter().map(|r| r.id.as_str()).collect();
            let pending: Vec<&PlanStep> = plan
                .steps
                .iter()
                .filter(|s| !reported.contains(s.id.as_str()))
                .collect();
            for step in pending {
                run.skip(step, Phase::Steps, CANCELLED_SKIP, observer);
            }
            let has_rollback_path =
                plan.steps.iter().any(|s| s.rollback.is_some()) || !plan.rollback.is_empty();
            // The question may wait on a responder for minutes: the last call's store (its
            // memory, its share of the budget) goes first.
            crate::later::drop_now();
            rollback_wanted = has_rollback_path && confirm_rollback();
        }

        if opts.cancel.is_aborted() {
            return None;
        }
        if resume.rollback_only {
            failed = true;
        }
        if opts.dry_run {
            // Nothing changed, so there is nothing to undo; what the rollback would do is in
            // `medic plan`.
            rollback_wanted = false;
        }
        let mut outcome = match (cancelled, failed) {
            (true, _) => RunOutcome::Cancelled,
            (false, true) => RunOutcome::Failed,
            (false, false) if opts.dry_run => RunOutcome::DryRun,
            (false, false) => RunOutcome::Succeeded,
        };
        if rollback_wanted {
            let reason = rollback::reason(cancelled, &resume, &run.reports);
            let ok = run.rollback(reason, observer).await;
            outcome = match (ok, cancelled) {
                (false, _) => RunOutcome::RollbackFailed,
                (true, true) => RunOutcome::Cancelled,
                (true, false) => RunOutcome::RolledBack,
            };
            if opts.cancel.is_aborted() {
                return None;
            }
        }

        if !plan.finally.is_empty() {
            run.cancel = opts.cancel.for_undo();
            observer.on_event(&Event::PhaseStarted {
                phase: Phase::Finally,
                reason: "always",
            });
            run.section(&plan.finally, Phase::Finally, observer).await;
            if opts.cancel.is_aborted() {
                return None;
            }
        }

        let report = RunReport {
            run_id: opts.run_id.clone(),
            runbook: plan.name.clone(),
            environment: plan.environment.name.clone(),
            outcome,
            started_at,
            duration: started.elapsed(),
            steps: std::mem::take(&mut run.reports),
            approval: opts.approval.clone(),
        };
        observer.on_event(&Event::RunFinished { report: &report });
        Some(report)
    }
}

struct Run<'a> {
    host: &'a PluginHost,
    plan: &'a Plan,
    opts: &'a RunOptions,
    started: Instant,
    kv: Vec<KvSpace>,
    /// The run's secret values, those rendered from secrets included, and their redactor.
    secrets: std::sync::Mutex<Secrets>,
    reports: Vec<StepReport>,
    /// Unmasked rendered parameters of each step that ran, for its revert.
    raw: BTreeMap<String, Values>,
    /// Unredacted outputs of each step that ran: later steps and reverts need the real values.
    raw_outputs: BTreeMap<String, Values>,
    /// Attempts made by earlier processes (when resuming), so attempt numbers carry on.
    attempt_base: BTreeMap<String, u32>,
    /// The template view of the main steps so far, built once per step rather than once per
    /// step per later step (a 1,000-step runbook would otherwise spend its time here).
    steps_view: std::sync::Mutex<StepsView>,
    /// Per fleet step, the targets that ran, in the order they finished: target, unmasked
    /// parameters, outputs, and whether it succeeded.
    targets_raw: BTreeMap<String, Vec<TargetRaw>>,
    /// Targets of fleet steps that succeeded in an earlier process (when resuming).
    resumed_targets: BTreeMap<String, Vec<TargetReport>>,
    /// What stops waits, retries and new targets: the run's cancel for the forward steps,
    /// its undo view (only an abort) once the rollback or `finally` starts.
    cancel: Cancel,
    /// Main steps an earlier process died in: their calls may have acted.
    interrupted: BTreeSet<String>,
}

type TargetRaw = (String, Values, Option<Values>, bool);

/// Secret values known so far: the runbook's secret parameters, then every parameter a step
/// rendered from one (`{{ params.token | upper }}` is as secret as the token).
struct Secrets {
    values: Vec<Value>,
    /// What is in `values` (each value's debug form: `Value` holds floats, so is not `Hash`).
    known: std::collections::HashSet<String>,
    /// Built from `values`, again only when asked for after a change (`stale`): a fleet
    /// renders every target's parameters (each may add a secret) before its first call, and
    /// builds it once.
    built: Arc<Redactor>,
    stale: bool,
}

impl Secrets {
    fn of(plan: &Plan) -> Self {
        let mut secrets = Secrets {
            values: Vec::new(),
            known: Default::default(),
            built: Arc::default(),
            stale: false,
        };
        secrets.add(plan.params.iter().filter(|p| p.secret).map(|p| &p.value));
        // Built at once: what is shown before the first call is masked with the runbook's
        // own secrets (see `shown_params`).
        secrets.redactor();
        secrets
    }

    fn add<'a>(&mut self, more: impl Iterator<Item = &'a Value>) {
        for v in more {
            if self.known.insert(format!("{v:?}")) {
                self.values.push(v.clone());
                self.stale = true;
            }
        }
    }

    fn redactor(&mut self) -> Arc<Redactor> {
        if self.stale {
            self.built = Redactor::new(&self.values);
            self.stale = false;
        }
        self.built.clone()
    }
}

/// How many reports the view covers, and the view (shared with contexts in use).
type StepsView = (
    usize,
    std::sync::Arc<BTreeMap<minijinja::Value, minijinja::Value>>,
);

enum Judgement {
    Pass,
    Fail,
    Inconclusive,
}

fn judge(inv: &Invocation) -> Judgement {
    match &inv.result {
        Ok(o) if o.status == Status::Success => Judgement::Pass,
        Ok(o) if o.status == Status::Inconclusive => Judgement::Inconclusive,
        _ => Judgement::Fail,
    }
}

fn summary_of(inv: &Invocation) -> String {
    match &inv.result {
        Ok(o) => o.summary.clone(),
        Err(f) => f.to_string(),
    }
}

fn status_of(inv: &Invocation) -> StepStatus {
    match &inv.result {
        Ok(o) if o.status == Status::Success => StepStatus::Succeeded,
        Ok(_) => StepStatus::Failed,
        Err(f) => StepStatus::Errored { failure: f.clone() },
    }
}

/// A rollback is retried on transient errors, as often as its step: it is the last line of
/// defence, but a check-level failure of an undo is an answer, not a glitch.
fn undo_retry(step: &PlanStep) -> Option<crate::runbook::Retry> {
    step.retry.map(|r| crate::runbook::Retry {
        on: RetryOn::Transient,
        ..r
    })
}

/// The last attempt's summary, noting the attempt count when there was more than one.
fn summary_of_attempts(attempts: &[Attempt], retry: Option<crate::runbook::Retry>) -> String {
    let last = summary_of(&attempts.last().expect("at least one attempt").invocation);
    match attempts.len() {
        1 => last,
        n => format!(
            "{last} (attempt {n} of {})",
            retry.map_or(n as u32, |r| r.attempts)
        ),
    }
}

fn plural_targets(n: usize) -> String {
    format!("{n} target{}", if n == 1 { "" } else { "s" })
}

/// Whether a call that ended like this is tried again under `retry`.
fn retryable(inv: &Invocation, retry: Option<crate::runbook::Retry>) -> bool {
    match (&inv.result, retry.map(|r| r.on)) {
        (_, None) => false,
        (Err(f), Some(RetryOn::Transient)) => f.is_transient(),
        (_, Some(RetryOn::Transient)) => false,
        (_, Some(RetryOn::Any)) => !matches!(status_of(inv), StepStatus::Succeeded),
    }
}

/// Exponential backoff with an optional jitter of up to half the wait.
fn backoff(retry: &crate::runbook::Retry, attempt: u32) -> Duration {
    let base = retry
        .backoff
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(retry.max_backoff);
    if !retry.jitter {
        return base;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(fraction)
}

#[cfg(test)]
pub(in crate::executor) mod tests;
