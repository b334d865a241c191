//! Runs a [`Plan`]: the steps in order, then (when a failure asks for it) the rollback path
//! and the verify checks, then the `finally` steps. Every call is a fresh sandbox; templates
//! are rendered just before their step runs, against the outputs of the steps before it.
//!
//! A fleet step makes its call once per target, `max_concurrency` at a time, inside the run's
//! own task (the futures are not Send), and its rollback undoes target by target.
//!
//! Progress is reported through an [`Observer`], so the terminal output, the JSON stream and
//! the run record all see the same events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::host::{
    Call, CallContext, Failure, Invocation, KvSpace, PluginHost, PluginKind, Sandbox, Status,
    Value, ValueType, Values,
};
use crate::runbook::plan::text_to_value;
use crate::runbook::template;
use crate::runbook::{
    Arg, Fleet, FleetOrder, FleetTargets, OnFailure, Plan, PlanStep, RetryOn, StepRollback,
};

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
    /// A fleet step's targets, in the order they finished (those never started last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
}

impl StepReport {
    pub fn outputs(&self) -> Option<&Values> {
        self.attempts
            .last()
            .and_then(|a| a.invocation.result.as_ref().ok())
            .map(|o| &o.outputs)
    }

    /// Every call of the step, with the target it was for (fleet steps).
    pub fn calls(&self) -> impl Iterator<Item = (Option<&str>, &Attempt)> {
        self.attempts.iter().map(|a| (None, a)).chain(
            self.targets
                .iter()
                .flat_map(|t| t.attempts.iter().map(|a| (Some(t.target.as_str()), a))),
        )
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

/// What happens during a run, in order.
#[derive(Debug)]
pub enum Event<'a> {
    RunStarted {
        run_id: &'a str,
        plan: &'a Plan,
        approval: Option<&'a Approval>,
    },
    PhaseStarted {
        phase: Phase,
        reason: &'a str,
    },
    StepStarted {
        phase: Phase,
        id: &'a str,
        plugin: &'a str,
    },
    /// A step waits for a person (`medic approve RUN` / `medic reject RUN`).
    ApprovalRequested {
        id: &'a str,
        prompt: &'a str,
        timeout: Duration,
    },
    ApprovalDecided {
        id: &'a str,
        decision: &'a Decision,
    },
    /// A gate waits its bake time before the first check.
    Baking {
        id: &'a str,
        wait: Duration,
    },
    /// A retry or gate check finished and another follows after `wait`.
    AttemptFinished {
        id: &'a str,
        attempt: &'a Attempt,
        note: &'a str,
        wait: Duration,
    },
    /// One target of a fleet step is done (or will not start).
    TargetFinished {
        id: &'a str,
        target: &'a TargetReport,
    },
    StepFinished {
        report: &'a StepReport,
    },
    RunFinished {
        report: &'a RunReport,
    },
}

pub trait Observer {
    fn on_event(&mut self, event: &Event<'_>);
}

/// An [`Event`] that owns its data, to cross a process boundary (`medic run` through
/// `medic serve`). The plan is not sent: the receiver has planned the same runbook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OwnedEvent {
    RunStarted {
        run_id: String,
        approval: Option<Approval>,
    },
    PhaseStarted {
        phase: Phase,
        reason: String,
    },
    StepStarted {
        phase: Phase,
        id: String,
        plugin: String,
    },
    ApprovalRequested {
        id: String,
        prompt: String,
        timeout: Duration,
    },
    ApprovalDecided {
        id: String,
        decision: Decision,
    },
    Baking {
        id: String,
        wait: Duration,
    },
    AttemptFinished {
        id: String,
        attempt: Attempt,
        note: String,
        wait: Duration,
    },
    TargetFinished {
        id: String,
        target: TargetReport,
    },
    StepFinished {
        report: StepReport,
    },
    RunFinished {
        report: RunReport,
    },
}

impl OwnedEvent {
    pub fn from_event(e: &Event<'_>) -> OwnedEvent {
        match e {
            Event::RunStarted {
                run_id, approval, ..
            } => OwnedEvent::RunStarted {
                run_id: (*run_id).to_owned(),
                approval: approval.cloned(),
            },
            Event::PhaseStarted { phase, reason } => OwnedEvent::PhaseStarted {
                phase: *phase,
                reason: (*reason).to_owned(),
            },
            Event::StepStarted { phase, id, plugin } => OwnedEvent::StepStarted {
                phase: *phase,
                id: (*id).to_owned(),
                plugin: (*plugin).to_owned(),
            },
            Event::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => OwnedEvent::ApprovalRequested {
                id: (*id).to_owned(),
                prompt: (*prompt).to_owned(),
                timeout: *timeout,
            },
            Event::ApprovalDecided { id, decision } => OwnedEvent::ApprovalDecided {
                id: (*id).to_owned(),
                decision: (*decision).clone(),
            },
            Event::Baking { id, wait } => OwnedEvent::Baking {
                id: (*id).to_owned(),
                wait: *wait,
            },
            Event::AttemptFinished {
                id,
                attempt,
                note,
                wait,
            } => OwnedEvent::AttemptFinished {
                id: (*id).to_owned(),
                attempt: (*attempt).clone(),
                note: (*note).to_owned(),
                wait: *wait,
            },
            Event::TargetFinished { id, target } => OwnedEvent::TargetFinished {
                id: (*id).to_owned(),
                target: (*target).clone(),
            },
            Event::StepFinished { report } => OwnedEvent::StepFinished {
                report: (*report).clone(),
            },
            Event::RunFinished { report } => OwnedEvent::RunFinished {
                report: (*report).clone(),
            },
        }
    }

    /// The event again, with the receiver's own plan.
    pub fn as_event<'a>(&'a self, plan: &'a Plan) -> Event<'a> {
        match self {
            OwnedEvent::RunStarted { run_id, approval } => Event::RunStarted {
                run_id,
                plan,
                approval: approval.as_ref(),
            },
            OwnedEvent::PhaseStarted { phase, reason } => Event::PhaseStarted {
                phase: *phase,
                reason,
            },
            OwnedEvent::StepStarted { phase, id, plugin } => Event::StepStarted {
                phase: *phase,
                id,
                plugin,
            },
            OwnedEvent::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => Event::ApprovalRequested {
                id,
                prompt,
                timeout: *timeout,
            },
            OwnedEvent::ApprovalDecided { id, decision } => Event::ApprovalDecided { id, decision },
            OwnedEvent::Baking { id, wait } => Event::Baking { id, wait: *wait },
            OwnedEvent::AttemptFinished {
                id,
                attempt,
                note,
                wait,
            } => Event::AttemptFinished {
                id,
                attempt,
                note,
                wait: *wait,
            },
            OwnedEvent::TargetFinished { id, target } => Event::TargetFinished { id, target },
            OwnedEvent::StepFinished { report } => Event::StepFinished { report },
            OwnedEvent::RunFinished { report } => Event::RunFinished { report },
        }
    }
}

impl<F: FnMut(&Event<'_>)> Observer for F {
    fn on_event(&mut self, event: &Event<'_>) {
        self(event)
    }
}

/// A cancellation request (Ctrl-C, SIGTERM), shared between the signal handler and the run.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps, unless cancelled first. Returns false when cancelled.
    pub async fn sleep(&self, d: Duration) -> bool {
        let notified = self.notify.notified();
        if self.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_cancelled(),
            _ = notified => false,
        }
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
        }
    }
}

/// A sortable unique id (ULID): runs list in start order by id alone.
pub fn new_run_id() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

const MASK: &str = "••••••";

/// Replaces secret values wherever they could surface: a plugin that echoes its token into a
/// log line or summary must not leak it into the terminal or the record.
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    fn value(&self, v: &Value) -> Value {
        match v {
            Value::Text(s) => Value::Text(self.text(s)),
            Value::TextList(l) => Value::TextList(l.iter().map(|s| self.text(s)).collect()),
            other => other.clone(),
        }
    }

    fn failure(&self, f: &mut Failure) {
        match f {
            Failure::InvalidParams { message }
            | Failure::Transient { message }
            | Failure::Permanent { message }
            | Failure::Denied { message }
            | Failure::Panic { message }
            | Failure::Trap { message }
            | Failure::Engine { message } => *message = self.text(message),
            Failure::Timeout { .. } | Failure::MemoryLimit { .. } | Failure::StackOverflow => {}
        }
    }

    fn invocation(&self, inv: &mut Invocation) {
        if self.secrets.is_empty() {
            return;
        }
        match &mut inv.result {
            Ok(o) => {
                o.summary = self.text(&o.summary);
                for (_, v) in &mut o.outputs {
                    *v = self.value(v);
                }
            }
            Err(f) => self.failure(f),
        }
        for line in &mut inv.logs {
            line.message = self.text(&line.message);
            for (_, v) in &mut line.fields {
                *v = self.text(v);
            }
        }
        for u in &mut inv.capability_uses {
            u.detail = self.text(&u.detail);
            u.result = self.text(&u.result);
        }
        inv.stderr = self.text(&inv.stderr);
    }
}

/// Runs a plan to completion. Never returns early: whatever happens becomes part of the report.
pub async fn execute(
    host: &PluginHost,
    plan: &Plan,
    mut opts: RunOptions,
    observer: &mut dyn Observer,
) -> RunReport {
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
        // One key-value space per plugin declaration, shared by its steps for the whole run.
        kv: plan.plugins.iter().map(|_| KvSpace::new()).collect(),
        redactor: Redactor {
            secrets: plan
                .params
                .iter()
                .filter(|p| p.secret)
                .filter_map(|p| match &p.value {
                    Value::Text(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        },
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
        if resume.rollback_only
            && let Some(step) = plan.steps.iter().find(|s| s.id == *id)
        {
            // It may have changed things before the process died: undo it too.
            let failure = Failure::Engine {
                message: "the process running this step died".into(),
            };
            run.reports.push(StepReport {
                id: id.clone(),
                phase: Phase::Steps,
                plugin: plan.plugins[step.plugin].alias.clone(),
                status: StepStatus::Errored { failure },
                summary: "interrupted".into(),
                duration: Duration::ZERO,
                params: Vec::new(),
                attempts: Vec::new(),
                targets: Vec::new(),
            });
        }
    }

    // Main steps.
    let mut failed = false;
    let mut rollback_wanted = resume.rollback_only;
    let mut cancelled = false;
    for step in plan.steps.iter().filter(|_| !resume.rollback_only) {
        if run.reports.iter().any(|r| {
            r.id == step.id
                && matches!(r.status, StepStatus::Succeeded | StepStatus::Skipped { .. })
        }) {
            continue;
        }
        // A step that failed before is run again; its old report makes way for the new one.
        let before = run.reports.len();
        run.reports.retain(|r| r.id != step.id);
        if run.reports.len() != before {
            // The template view was built from the report just removed.
            *run.steps_view.lock().unwrap() = StepsView::default();
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
        let pending: Vec<&PlanStep> = plan
            .steps
            .iter()
            .filter(|s| !run.reports.iter().any(|r| r.id == s.id))
            .collect();
        for step in pending {
            run.skip(step, Phase::Steps, "the run was cancelled", observer);
        }
        let has_rollback_path =
            plan.steps.iter().any(|s| s.rollback.is_some()) || !plan.rollback.is_empty();
        rollback_wanted = has_rollback_path && confirm_rollback();
    }

    if resume.rollback_only {
        failed = true;
    }
    let mut outcome = match (cancelled, failed) {
        (true, _) => RunOutcome::Cancelled,
        (false, true) => RunOutcome::Failed,
        (false, false) => RunOutcome::Succeeded,
    };
    if rollback_wanted {
        let reason = if cancelled {
            "the run was cancelled"
        } else {
            "a step failed"
        };
        let ok = run.rollback(reason, observer).await;
        outcome = match (ok, cancelled) {
            (false, _) => RunOutcome::RollbackFailed,
            (true, true) => RunOutcome::Cancelled,
            (true, false) => RunOutcome::RolledBack,
        };
    }

    if !plan.finally.is_empty() {
        observer.on_event(&Event::PhaseStarted {
            phase: Phase::Finally,
            reason: "always",
        });
        run.section(&plan.finally, Phase::Finally, observer).await;
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
    report
}

struct Run<'a> {
    host: &'a PluginHost,
    plan: &'a Plan,
    opts: &'a RunOptions,
    started: Instant,
    kv: Vec<KvSpace>,
    redactor: Redactor,
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
}

type TargetRaw = (String, Values, Option<Values>, bool);

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

/// How a fleet step's calls (or their undoing) are paced.
#[derive(Clone, Copy)]
struct Rate {
    concurrency: usize,
    /// Failures tolerated before no new target starts; none: never stop (rollbacks).
    max_errors: Option<usize>,
    retry: Option<crate::runbook::Retry>,
    /// A cancellation stops new targets; a rollback is never cancelled.
    cancellable: bool,
}

/// One target's call, before it runs.
struct Job {
    target: String,
    call: Call,
    /// The parameters as they may be shown.
    shown: Values,
}

/// One target's call, after.
struct Done {
    report: TargetReport,
    /// Unmasked parameters and outputs: a revert needs the real values.
    params: Values,
    outputs: Option<Values>,
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

impl Run<'_> {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn context(&self, extra: Option<(&str, &Values, &str)>) -> minijinja::Value {
        let view = {
            let mut cache = self.steps_view.lock().unwrap();
            if cache.0 > self.reports.len() {
                *cache = (0, std::sync::Arc::default());
            }
            if cache.0 < self.reports.len() {
                let start = cache.0;
                let map = std::sync::Arc::make_mut(&mut cache.1);
                for r in self.reports[start..]
                    .iter()
                    .filter(|r| r.phase == Phase::Steps)
                {
                    let status = match &r.status {
                        StepStatus::Succeeded => "succeeded",
                        StepStatus::Failed => "failed",
                        StepStatus::Errored { .. } => "errored",
                        StepStatus::Skipped { .. } => "skipped",
                    };
                    let empty = Values::new();
                    let outputs = self.outputs_of(r).unwrap_or(&empty);
                    map.insert(
                        minijinja::Value::from(r.id.as_str()),
                        minijinja::context! { status => status, summary => r.summary.clone(), outputs => template::map_to_jinja(outputs.iter().map(|(k, v)| (k, v))) },
                    );
                }
                cache.0 = self.reports.len();
            }
            cache.1.clone()
        };
        let view = match extra {
            // A rollback sees its own step's outputs too: a copy, as rare as rollbacks.
            Some((id, outputs, status)) => {
                let mut own = (*view).clone();
                own.insert(
                    minijinja::Value::from(id),
                    minijinja::context! { status => status, outputs => template::map_to_jinja(outputs.iter().map(|(k, v)| (k, v))) },
                );
                std::sync::Arc::new(own)
            }
            None => view,
        };
        let steps = minijinja::Value::from_dyn_object(minijinja::value::DynObject::new(view));
        let env = &self.plan.environment;
        minijinja::context! {
            params => template::map_to_jinja(self.plan.params.iter().map(|p| (&p.name, &p.value))),
            vars => template::map_to_jinja(env.vars.iter().map(|(k, v)| (k, v))),
            env => minijinja::context! { name => env.name.clone(), protected => env.protected },
            steps => steps,
        }
    }

    /// The outputs a step returned, unredacted (they feed later steps and its revert).
    fn outputs_of(&self, r: &StepReport) -> Option<&Values> {
        self.raw_outputs.get(&r.id)
    }

    fn render(&self, args: &[(String, Arg)], ctx: &minijinja::Value) -> Result<Values, String> {
        let env = template::environment();
        args.iter()
            .map(|(name, arg)| {
                let value = match arg {
                    Arg::Value(v) => v.clone(),
                    Arg::Template {
                        source,
                        ty: ValueType::TextList,
                    } => Value::TextList(
                        template::render_list(&env, source, ctx)
                            .map_err(|e| format!("parameter `{name}`: {e}"))?,
                    ),
                    Arg::Template { source, ty } => {
                        let text = template::render(&env, source, ctx)
                            .map_err(|e| format!("parameter `{name}`: {e}"))?;
                        text_to_value(&text, *ty)
                            .map_err(|e| format!("parameter `{name}` rendered to {e}"))?
                    }
                    Arg::ListTemplate(items) => Value::TextList(
                        items
                            .iter()
                            .map(|s| template::render(&env, s, ctx))
                            .collect::<Result<_, _>>()
                            .map_err(|e| format!("parameter `{name}`: {e}"))?,
                    ),
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    fn shown_params(&self, params: &Values, secret: &[String]) -> Values {
        params
            .iter()
            .map(|(k, v)| {
                if secret.contains(k) {
                    (k.clone(), Value::Text(MASK.into()))
                } else {
                    (k.clone(), self.redactor.value(v))
                }
            })
            .collect()
    }

    fn skip(&mut self, step: &PlanStep, phase: Phase, reason: &str, observer: &mut dyn Observer) {
        let report = StepReport {
            id: step.id.clone(),
            phase,
            plugin: self.plan.plugins[step.plugin].alias.clone(),
            status: StepStatus::Skipped {
                reason: reason.to_owned(),
            },
            summary: format!("skipped: {reason}"),
            duration: Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
        };
        observer.on_event(&Event::StepFinished { report: &report });
        self.reports.push(report);
    }

    /// One sandboxed call. Returns the attempt as it may be shown (redacted) and the outputs
    /// as the plugin returned them.
    async fn call(
        &self,
        plugin: usize,
        call: Call,
        step_id: &str,
        attempt: u32,
        timeout: Duration,
    ) -> (Attempt, Option<Values>) {
        let pp = &self.plan.plugins[plugin];
        let sandbox = Sandbox {
            timeout,
            memory: pp.memory,
            grants: pp.grants.clone(),
            kv: self.kv[plugin].clone(),
        };
        let attempt = attempt + self.attempt_base.get(step_id).copied().unwrap_or(0);
        let ctx = CallContext {
            run_id: self.opts.run_id.clone(),
            step_id: step_id.to_owned(),
            attempt,
            environment: self.plan.environment.name.clone(),
            dry_run: self.opts.dry_run,
        };
        let started_ms = self.elapsed_ms();
        let mut invocation = self.host.invoke(&pp.plugin, call, &ctx, &sandbox).await;
        let outputs = invocation.result.as_ref().ok().map(|o| o.outputs.clone());
        self.redactor.invocation(&mut invocation);
        (
            Attempt {
                number: attempt,
                started_ms,
                invocation,
            },
            outputs,
        )
    }

    /// Runs one step (with its condition, retries or gate) and returns its report. Does not
    /// push the report: the caller decides what the step means for the run.
    async fn step(
        &mut self,
        step: &PlanStep,
        phase: Phase,
        observer: &mut dyn Observer,
    ) -> StepReport {
        let pp = &self.plan.plugins[step.plugin];
        let started = Instant::now();
        let mut report = StepReport {
            id: step.id.clone(),
            phase,
            plugin: pp.alias.clone(),
            status: StepStatus::Succeeded,
            summary: String::new(),
            duration: Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
        };
        let ctx = self.context(None);
        if let Some(when) = &step.when {
            let env = template::environment();
            let verdict = env.compile_expression(when).and_then(|e| e.eval(&ctx));
            match verdict {
                Ok(v) if v.is_true() => {}
                Ok(_) => {
                    report.status = StepStatus::Skipped {
                        reason: format!("`{when}` is false"),
                    };
                    report.summary = format!("skipped: `{when}` is false");
                    observer.on_event(&Event::StepFinished { report: &report });
                    return report;
                }
                Err(e) => {
                    let message = format!("condition `{when}`: {e}");
                    report.summary = message.clone();
                    report.status = StepStatus::Errored {
                        failure: Failure::InvalidParams { message },
                    };
                    observer.on_event(&Event::StepFinished { report: &report });
                    return report;
                }
            }
        }
        if let Some(gate) = &step.approval {
            let decision = self
                .ask(&step.id, &gate.prompt, gate.timeout, observer)
                .await;
            let refused = match &decision {
                Decision::Approved { .. } => None,
                Decision::Rejected { by, reason } => Some(format!("rejected by {by}: {reason}")),
                Decision::TimedOut => Some(format!(
                    "no approval within {}",
                    humantime::format_duration(gate.timeout)
                )),
                Decision::Cancelled => Some("cancelled while waiting for approval".to_owned()),
            };
            if let Some(summary) = refused {
                report.status = StepStatus::Failed;
                report.summary = summary;
                report.duration = started.elapsed();
                observer.on_event(&Event::StepFinished { report: &report });
                return report;
            }
        }
        observer.on_event(&Event::StepStarted {
            phase,
            id: &step.id,
            plugin: &pp.alias,
        });
        if let Some(fleet) = &step.fleet {
            self.fleet(step, fleet, &ctx, &mut report, observer).await;
            return self.finish(step, report, started, observer);
        }
        let params = match self.render(&step.with, &ctx) {
            Ok(p) => p,
            Err(message) => {
                report.summary = self.redactor.text(&message);
                report.status = StepStatus::Errored {
                    failure: Failure::InvalidParams {
                        message: report.summary.clone(),
                    },
                };
                report.duration = started.elapsed();
                observer.on_event(&Event::StepFinished { report: &report });
                return report;
            }
        };
        report.params = self.shown_params(&params, &step.secret_params);
        self.raw.insert(step.id.clone(), params.clone());

        if let Some(gate) = step.gate {
            let (mut passes, mut fails, mut checks) = (0u32, 0u32, 0u32);
            if !gate.delay.is_zero() {
                observer.on_event(&Event::Baking {
                    id: &step.id,
                    wait: gate.delay,
                });
                if !self.opts.cancel.sleep(gate.delay).await {
                    report.status = StepStatus::Failed;
                    report.summary = "cancelled before the first check".into();
                    report.duration = started.elapsed();
                    observer.on_event(&Event::StepFinished { report: &report });
                    return report;
                }
            }
            let checks_started = Instant::now();
            loop {
                checks += 1;
                let attempt = self.attempt(step, &params, checks).await;
                let mut decided = None;
                match judge(&attempt.invocation) {
                    Judgement::Pass => passes += 1,
                    Judgement::Fail => {
                        passes = 0;
                        fails += 1;
                    }
                    // A person decides: the data cannot, and aborting may undo a good change.
                    Judgement::Inconclusive if gate.pause_on_inconclusive => {
                        let prompt = format!(
                            "{} is inconclusive: {}. Approve to pass this gate, reject to fail it",
                            step.id,
                            summary_of(&attempt.invocation)
                        );
                        let decision = self.ask(&step.id, &prompt, gate.timeout, observer).await;
                        decided = Some(match decision {
                            Decision::Approved { by, reason } => (
                                StepStatus::Succeeded,
                                format!("inconclusive, passed by {by}: {reason}"),
                            ),
                            Decision::Rejected { by, reason } => (
                                StepStatus::Failed,
                                format!("inconclusive, failed by {by}: {reason}"),
                            ),
                            Decision::TimedOut => (
                                StepStatus::Failed,
                                format!(
                                    "inconclusive, and nobody decided within {}",
                                    humantime::format_duration(gate.timeout)
                                ),
                            ),
                            Decision::Cancelled => (
                                StepStatus::Failed,
                                "inconclusive; cancelled while waiting for a decision".to_owned(),
                            ),
                        });
                    }
                    // Neither counts; a gate that only ever hears "don't know" ends at its time limit.
                    Judgement::Inconclusive => passes = 0,
                }
                let last = summary_of(&attempt.invocation);
                let elapsed = checks_started.elapsed();
                let verdict = if decided.is_some() {
                    decided
                } else if passes >= gate.successes && elapsed >= gate.hold {
                    Some((
                        StepStatus::Succeeded,
                        format!(
                            "passed {passes} time{} in a row ({checks} checks): {last}",
                            if passes == 1 { "" } else { "s" }
                        ),
                    ))
                } else if fails >= gate.failures {
                    Some((
                        StepStatus::Failed,
                        format!(
                            "failed {fails} time{} ({checks} checks): {last}",
                            if fails == 1 { "" } else { "s" }
                        ),
                    ))
                } else if elapsed + gate.interval > gate.timeout {
                    Some((
                        StepStatus::Failed,
                        format!(
                            "did not pass {} times in a row within {}: {last}",
                            gate.successes,
                            humantime::format_duration(gate.timeout)
                        ),
                    ))
                } else {
                    None
                };
                match verdict {
                    Some((status, summary)) => {
                        report.attempts.push(attempt);
                        report.status = status;
                        report.summary = summary;
                        break;
                    }
                    None => {
                        let note = if gate.hold.is_zero() || elapsed >= gate.hold {
                            format!(
                                "check {checks}: {last} ({passes}/{} in a row)",
                                gate.successes
                            )
                        } else {
                            format!(
                                "check {checks}: {last} (watching: {} of {})",
                                humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                                humantime::format_duration(gate.hold)
                            )
                        };
                        observer.on_event(&Event::AttemptFinished {
                            id: &step.id,
                            attempt: &attempt,
                            note: &note,
                            wait: gate.interval,
                        });
                        report.attempts.push(attempt);
                        if !self.opts.cancel.sleep(gate.interval).await {
                            report.status = StepStatus::Failed;
                            report.summary = format!("cancelled after {checks} checks: {last}");
                            break;
                        }
                    }
                }
            }
        } else {
            let attempts = step.retry.map_or(1, |r| r.attempts);
            for n in 1..=attempts {
                let attempt = self.attempt(step, &params, n).await;
                let retryable = retryable(&attempt.invocation, step.retry);
                report.summary = summary_of(&attempt.invocation);
                report.status = status_of(&attempt.invocation);
                if retryable && n < attempts && !self.opts.cancel.is_cancelled() {
                    let wait = backoff(step.retry.as_ref().unwrap(), n);
                    let note = format!("attempt {n}/{attempts}: {}", report.summary);
                    observer.on_event(&Event::AttemptFinished {
                        id: &step.id,
                        attempt: &attempt,
                        note: &note,
                        wait,
                    });
                    report.attempts.push(attempt);
                    if !self.opts.cancel.sleep(wait).await {
                        break;
                    }
                    continue;
                }
                report.attempts.push(attempt);
                break;
            }
            report.summary = summary_of_attempts(&report.attempts, step.retry);
        }
        self.finish(step, report, started, observer)
    }

    /// The end of every step that ran: a drill's fault applies, observers hear of it.
    fn finish(
        &self,
        step: &PlanStep,
        mut report: StepReport,
        started: Instant,
        observer: &mut dyn Observer,
    ) -> StepReport {
        if report.phase == Phase::Steps
            && report.status == StepStatus::Succeeded
            && self.opts.fail_step.as_deref() == Some(step.id.as_str())
        {
            report.status = StepStatus::Failed;
            report.summary = format!(
                "failed on purpose (drill fault); it had: {}",
                report.summary
            );
        }
        report.duration = started.elapsed();
        observer.on_event(&Event::StepFinished { report: &report });
        report
    }

    /// The targets of a fleet step, in the order they are to run.
    fn targets(&self, fleet: &Fleet, ctx: &minijinja::Value) -> Result<Vec<String>, String> {
        let env = template::environment();
        let mut targets: Vec<String> = match &fleet.targets {
            FleetTargets::List(items) => items
                .iter()
                .map(|t| template::render(&env, t, ctx))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("fleet targets: {e}"))?,
            FleetTargets::Expr(expr) => {
                template::eval_list(&env, expr, ctx).map_err(|e| format!("fleet targets {e}"))?
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for t in &targets {
            if t.trim().is_empty() {
                return Err("fleet targets include an empty name".into());
            }
            if !seen.insert(t.as_str()) {
                return Err(format!("fleet target `{t}` is listed twice"));
            }
        }
        match fleet.order {
            FleetOrder::Listed => {}
            FleetOrder::Reverse => targets.reverse(),
            FleetOrder::Random => {
                // Fisher-Yates over a xorshift seeded from a fresh ULID's random bits: a
                // different order every run, and no dependency for a few lines.
                let mut x = (ulid::Ulid::new().random() as u64) | 1;
                for i in (1..targets.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    targets.swap(i, (x % (i as u64 + 1)) as usize);
                }
            }
        }
        Ok(targets)
    }

    /// Runs a fleet step: each target in its own sandbox, `max_concurrency` at a time; after
    /// more than `max_errors` failures no new target starts and the step fails.
    async fn fleet(
        &mut self,
        step: &PlanStep,
        fleet: &Fleet,
        ctx: &minijinja::Value,
        report: &mut StepReport,
        observer: &mut dyn Observer,
    ) {
        let invalid = |run: &mut Self, report: &mut StepReport, message: String| {
            report.summary = message.clone();
            report.status = StepStatus::Errored {
                failure: Failure::InvalidParams { message },
            };
            // Nothing ran, so a rollback has nothing of this step to undo (unless targets
            // ran before a resume: then the rollback cannot know and undoes them all).
            if !run.resumed_targets.contains_key(&step.id) {
                run.targets_raw.insert(step.id.clone(), Vec::new());
            }
        };
        let targets = match self.targets(fleet, ctx) {
            Ok(t) => t,
            Err(message) => {
                let message = self.redactor.text(&message);
                return invalid(self, report, message);
            }
        };
        // Every target's parameters are rendered before the first starts: a template
        // mistake must not leave half a fleet changed.
        let mut jobs = Vec::new();
        for t in &targets {
            let tctx = minijinja::context! { target => t, ..ctx.clone() };
            match self.render(&step.with, &tctx) {
                Ok(params) => jobs.push(Job {
                    target: t.clone(),
                    shown: self.shown_params(&params, &step.secret_params),
                    call: Call::Run { params },
                }),
                Err(message) => {
                    let message = self.redactor.text(&format!("target `{t}`: {message}"));
                    return invalid(self, report, message);
                }
            }
        }
        // Targets that succeeded before a resume are kept, not run again.
        let mut earlier: BTreeMap<String, TargetReport> = self
            .resumed_targets
            .remove(&step.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.status.is_success() && !t.attempts.is_empty())
            .map(|t| (t.target.clone(), t))
            .collect();
        let mut kept = Vec::new();
        jobs.retain(|job| {
            let Some(mut report) = earlier.remove(&job.target) else {
                return true;
            };
            report.summary = format!("{} (before the resume)", report.summary);
            let outputs = report
                .attempts
                .last()
                .and_then(|a| a.invocation.result.as_ref().ok().map(|o| o.outputs.clone()));
            kept.push(Done {
                report,
                params: job.call.params().clone(),
                outputs,
            });
            false
        });
        let n = targets.len();
        let max_errors = fleet.max_errors.of(n, false);
        let rate = Rate {
            concurrency: fleet.max_concurrency.of(n, true).max(1),
            max_errors: Some(max_errors),
            retry: step.retry,
            cancellable: true,
        };
        // Shown (and journaled again) so the run's output lists every target.
        for d in &kept {
            observer.on_event(&Event::TargetFinished {
                id: &step.id,
                target: &d.report,
            });
        }
        let resumed = kept.len();
        let mut done = kept;
        done.extend(
            self.fan_out(step.plugin, &step.id, step.timeout, jobs, rate, observer)
                .await,
        );
        let by_target: BTreeMap<&str, &Done> =
            done.iter().map(|d| (d.report.target.as_str(), d)).collect();
        // In the order the targets were listed, whatever order they finished in.
        let listed = |pick: &dyn Fn(&Done) -> bool| -> Vec<String> {
            targets
                .iter()
                .filter(|t| by_target.get(t.as_str()).is_some_and(|d| pick(d)))
                .cloned()
                .collect()
        };
        let succeeded = listed(&|d| d.report.status.is_success());
        let failed = listed(&|d| d.report.status.is_failure());
        let not_started = listed(&|d| d.report.attempts.is_empty());
        let outputs: Values = vec![
            ("targets".to_owned(), Value::TextList(targets.clone())),
            ("succeeded".to_owned(), Value::TextList(succeeded.clone())),
            ("failed".to_owned(), Value::TextList(failed.clone())),
            (
                "not_started".to_owned(),
                Value::TextList(not_started.clone()),
            ),
        ]
        .into_iter()
        .collect();
        self.remember(&step.id, Some(outputs));
        let failures: Vec<String> = done
            .iter()
            .filter(|d| d.report.status.is_failure())
            .take(3)
            .map(|d| format!("{} ({})", d.report.target, d.report.summary))
            .collect();
        let mut summary = match (n, resumed) {
            (0, _) => "no targets".to_owned(),
            (n, 0) => format!("{} of {n} targets succeeded", succeeded.len()),
            (n, r) => format!(
                "{} of {n} targets succeeded ({r} before the resume)",
                succeeded.len()
            ),
        };
        if !failed.is_empty() {
            summary += &format!(
                "; failed: {}{}",
                failures.join(", "),
                if failed.len() > failures.len() {
                    format!(" and {} more", failed.len() - failures.len())
                } else {
                    String::new()
                }
            );
        }
        if !not_started.is_empty() {
            summary += &format!("; not started: {}", not_started.join(", "));
        }
        report.status = if failed.len() > max_errors || !not_started.is_empty() {
            StepStatus::Failed
        } else {
            StepStatus::Succeeded
        };
        if failed.len() > max_errors {
            summary += &format!(" (more than max_errors {} failed)", fleet.max_errors);
        } else if !not_started.is_empty() {
            summary += " (cancelled)";
        } else if !failed.is_empty() {
            summary += &format!(" (within max_errors {})", fleet.max_errors);
        }
        report.summary = summary;
        self.targets_raw.insert(
            step.id.clone(),
            done.iter()
                .filter(|d| !d.report.attempts.is_empty())
                .map(|d| {
                    (
                        d.report.target.clone(),
                        d.params.clone(),
                        d.outputs.clone(),
                        d.report.status.is_success(),
                    )
                })
                .collect(),
        );
        report.targets = done.into_iter().map(|d| d.report).collect();
    }

    /// Runs calls for many targets at a bounded concurrency. In-flight calls always finish;
    /// stopping (too many errors, or a cancellation when `cancellable`) only means no new
    /// target starts. Returns every target: those never started as skipped, last.
    async fn fan_out(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        jobs: Vec<Job>,
        rate: Rate,
        observer: &mut dyn Observer,
    ) -> Vec<Done> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut pending = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut errors = 0usize;
        let stop = |errors: usize| {
            if rate.max_errors.is_some_and(|m| errors > m) {
                Some(format!(
                    "not started: more than max_errors ({}) failed",
                    rate.max_errors.unwrap_or(0)
                ))
            } else if rate.cancellable && self.opts.cancel.is_cancelled() {
                Some("not started: the run was cancelled".to_owned())
            } else {
                None
            }
        };
        loop {
            while running.len() < rate.concurrency && stop(errors).is_none() {
                let Some(job) = pending.next() else { break };
                running.push(self.one_target(plugin, id, timeout, rate, job));
            }
            let Some(d) = running.next().await else { break };
            if d.report.status.is_failure() {
                errors += 1;
            }
            observer.on_event(&Event::TargetFinished {
                id,
                target: &d.report,
            });
            done.push(d);
        }
        let reason = stop(errors).unwrap_or_default();
        for job in pending {
            let report = TargetReport {
                target: job.target,
                status: StepStatus::Skipped {
                    reason: reason.clone(),
                },
                summary: reason.clone(),
                started_ms: self.elapsed_ms(),
                duration: Duration::ZERO,
                params: job.shown,
                attempts: Vec::new(),
            };
            observer.on_event(&Event::TargetFinished {
                id,
                target: &report,
            });
            done.push(Done {
                report,
                params: Values::new(),
                outputs: None,
            });
        }
        done
    }

    /// One target's call, retried like a step.
    async fn one_target(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        rate: Rate,
        job: Job,
    ) -> Done {
        let started = Instant::now();
        let started_ms = self.elapsed_ms();
        // The plugin sees which target it works on in its context, and idempotency keys
        // built from the step id stay distinct per target.
        let call_id = format!("{id}[{}]", job.target);
        let (attempts, outputs) = self
            .retried(plugin, &call_id, timeout, rate, &job.call)
            .await;
        let last = &attempts.last().expect("at least one attempt").invocation;
        Done {
            report: TargetReport {
                target: job.target,
                status: status_of(last),
                summary: summary_of_attempts(&attempts, rate.retry),
                started_ms,
                duration: started.elapsed(),
                params: job.shown,
                attempts,
            },
            params: job.call.params().clone(),
            outputs,
        }
    }

    /// Calls until an attempt ends in a way `rate.retry` does not retry, with the backoff
    /// between attempts. Returns every attempt (at least one) and the last one's raw outputs.
    async fn retried(
        &self,
        plugin: usize,
        call_id: &str,
        timeout: Duration,
        rate: Rate,
        call: &Call,
    ) -> (Vec<Attempt>, Option<Values>) {
        let attempts = rate.retry.map_or(1, |r| r.attempts);
        let mut made = Vec::new();
        let mut outputs = None;
        for n in 1..=attempts {
            let (attempt, out) = self.call(plugin, call.clone(), call_id, n, timeout).await;
            let again = n < attempts && retryable(&attempt.invocation, rate.retry);
            outputs = out;
            made.push(attempt);
            if !again {
                break;
            }
            let wait = backoff(rate.retry.as_ref().unwrap(), n);
            if rate.cancellable {
                if !self.opts.cancel.sleep(wait).await {
                    break;
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        }
        (made, outputs)
    }

    /// Asks a person (through the approver) and tells the observers, before and after.
    async fn ask(
        &self,
        id: &str,
        prompt: &str,
        timeout: Duration,
        observer: &mut dyn Observer,
    ) -> Decision {
        observer.on_event(&Event::ApprovalRequested {
            id,
            prompt,
            timeout,
        });
        let decision = self
            .opts
            .approver
            .wait(&self.opts.run_id, id, prompt, timeout, &self.opts.cancel)
            .await;
        observer.on_event(&Event::ApprovalDecided {
            id,
            decision: &decision,
        });
        decision
    }

    /// Runs every step of a section (rollback, verify, finally: a failure never stops the rest)
    /// and records them. Returns whether none failed.
    async fn section(
        &mut self,
        steps: &[PlanStep],
        phase: Phase,
        observer: &mut dyn Observer,
    ) -> bool {
        let mut ok = true;
        for step in steps {
            let report = self.step(step, phase, observer).await;
            ok &= !report.status.is_failure();
            self.reports.push(report);
        }
        ok
    }

    /// One call of a step's plugin (a retry or a gate check counts as one), remembering
    /// the raw outputs for later steps and reverts.
    async fn attempt(&mut self, step: &PlanStep, params: &Values, n: u32) -> Attempt {
        let call = Call::Run {
            params: params.clone(),
        };
        let (attempt, outputs) = self
            .call(step.plugin, call, &step.id, n, step.timeout)
            .await;
        self.remember(&step.id, outputs);
        attempt
    }

    fn remember(&mut self, id: &str, outputs: Option<Values>) {
        match outputs {
            Some(o) => {
                self.raw_outputs.insert(id.to_owned(), o);
            }
            None => {
                self.raw_outputs.remove(id);
            }
        }
    }

    /// Undoes a fleet step target by target (newest first, at the step's concurrency, never
    /// stopping early). Returns whether every target was undone.
    async fn rollback_fleet(
        &mut self,
        step: &PlanStep,
        fleet: &Fleet,
        rb: &StepRollback,
        observer: &mut dyn Observer,
    ) -> bool {
        let plan = self.plan;
        let id = format!("{}.rollback", step.id);
        let started = Instant::now();
        let is_action = plan.plugins[step.plugin].plugin.manifest.kind == PluginKind::Action;
        let ctx = self.context(None);
        let mut broken: Vec<(String, String)> = Vec::new();
        let entries: Vec<TargetRaw> = match self.targets_raw.get(&step.id) {
            Some(ran) => ran
                .iter()
                .rev()
                .filter(|(.., ok)| *ok || is_action)
                .cloned()
                .collect(),
            // Ran in an earlier process: its record says which targets ran. When that
            // process died during the step, nobody knows, so every target is undone
            // (rollbacks must be safe when there is nothing to undo).
            None => {
                let recorded: Vec<(String, Option<Values>, bool)> = self
                    .reports
                    .iter()
                    .find(|r| r.id == step.id)
                    .map(|r| {
                        r.targets
                            .iter()
                            .rev()
                            .filter(|t| !t.attempts.is_empty())
                            .filter(|t| t.status.is_success() || is_action)
                            .map(|t| {
                                let out = t.attempts.last().and_then(|a| {
                                    a.invocation.result.as_ref().ok().map(|o| o.outputs.clone())
                                });
                                (t.target.clone(), out, t.status.is_success())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let names = if recorded.is_empty() {
                    match self.targets(fleet, &ctx) {
                        Ok(t) => t.into_iter().rev().map(|t| (t, None, false)).collect(),
                        Err(message) => {
                            broken.push(("(targets)".into(), message));
                            Vec::new()
                        }
                    }
                } else {
                    recorded
                };
                let mut entries = Vec::new();
                for (target, outputs, ok) in names {
                    let tctx = minijinja::context! { target => &target, ..ctx.clone() };
                    match self.render(&step.with, &tctx) {
                        Ok(params) => entries.push((target, params, outputs, ok)),
                        Err(message) => broken.push((target, message)),
                    }
                }
                entries
            }
        };
        let mut jobs = Vec::new();
        for (target, params, outputs, succeeded) in entries {
            let outputs = outputs.unwrap_or_default();
            match rb {
                StepRollback::Revert => jobs.push(Job {
                    shown: self.shown_params(&params, &step.secret_params),
                    call: Call::Revert { params, outputs },
                    target,
                }),
                StepRollback::Call {
                    with,
                    secret_params,
                    ..
                } => {
                    let status = if succeeded { "succeeded" } else { "failed" };
                    let own = self.context(Some((&step.id, &outputs, status)));
                    let tctx = minijinja::context! { target => &target, ..own };
                    match self.render(with, &tctx) {
                        Ok(p) => jobs.push(Job {
                            shown: self.shown_params(&p, secret_params),
                            call: Call::Run { params: p },
                            target,
                        }),
                        Err(message) => broken.push((target, message)),
                    }
                }
            }
        }
        let (plugin, timeout) = match rb {
            StepRollback::Revert => (step.plugin, step.timeout),
            StepRollback::Call {
                plugin, timeout, ..
            } => (*plugin, *timeout),
        };
        let alias = plan.plugins[plugin].alias.clone();
        observer.on_event(&Event::StepStarted {
            phase: Phase::Rollback,
            id: &id,
            plugin: &alias,
        });
        let mut targets = Vec::new();
        for (target, message) in broken {
            let summary = self.redactor.text(&message);
            let report = TargetReport {
                target,
                status: StepStatus::Errored {
                    failure: Failure::InvalidParams {
                        message: summary.clone(),
                    },
                },
                summary,
                started_ms: self.elapsed_ms(),
                duration: Duration::ZERO,
                params: Vec::new(),
                attempts: Vec::new(),
            };
            observer.on_event(&Event::TargetFinished {
                id: &id,
                target: &report,
            });
            targets.push(report);
        }
        let rate = Rate {
            concurrency: fleet.max_concurrency.of(jobs.len(), true).max(1),
            max_errors: None,
            retry: undo_retry(step),
            cancellable: false,
        };
        let n = jobs.len() + targets.len();
        let done = self
            .fan_out(plugin, &id, timeout, jobs, rate, observer)
            .await;
        targets.extend(done.into_iter().map(|d| d.report));
        let failed: Vec<String> = targets
            .iter()
            .filter(|t| t.status.is_failure())
            .map(|t| format!("{} ({})", t.target, t.summary))
            .collect();
        let report = StepReport {
            id,
            phase: Phase::Rollback,
            plugin: alias,
            status: if failed.is_empty() {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            },
            summary: if failed.is_empty() {
                format!("undid {}", plural_targets(n))
            } else {
                format!(
                    "{} of {} could not be undone: {}",
                    failed.len(),
                    plural_targets(n),
                    failed.join(", ")
                )
            },
            duration: started.elapsed(),
            params: Vec::new(),
            attempts: Vec::new(),
            targets,
        };
        observer.on_event(&Event::StepFinished { report: &report });
        let ok = report.status.is_success();
        self.reports.push(report);
        ok
    }

    /// Undoes what the run did, newest first, then runs `[[rollback]]` and `[[verify]]`.
    /// Returns whether everything succeeded and verified.
    async fn rollback(&mut self, reason: &str, observer: &mut dyn Observer) -> bool {
        observer.on_event(&Event::PhaseStarted {
            phase: Phase::Rollback,
            reason,
        });
        let plan = self.plan;
        let mut ok = true;
        // The failed step is undone too: an action that failed half-way may have changed
        // things. Rollbacks must therefore be safe to run when there is nothing to undo.
        let done: Vec<(usize, bool)> = self
            .reports
            .iter()
            .filter(|r| r.phase == Phase::Steps)
            .filter_map(|r| {
                let i = plan.steps.iter().position(|s| s.id == r.id)?;
                let is_action =
                    plan.plugins[plan.steps[i].plugin].plugin.manifest.kind == PluginKind::Action;
                (r.status.is_success() || (r.status.is_failure() && is_action))
                    .then_some((i, r.status.is_success()))
            })
            .collect();
        for (i, succeeded) in done.into_iter().rev() {
            let step = &plan.steps[i];
            let Some(rb) = &step.rollback else { continue };
            if let Some(fleet) = &step.fleet {
                ok &= self.rollback_fleet(step, fleet, rb, observer).await;
                continue;
            }
            let id = format!("{}.rollback", step.id);
            // Steps run by an earlier process are re-rendered from the plan: the journal keeps
            // secrets masked, so their parameters cannot come from it.
            let params = match self.raw.get(&step.id) {
                Some(p) => p.clone(),
                None => self
                    .render(&step.with, &self.context(None))
                    .unwrap_or_default(),
            };
            let outputs = self
                .reports
                .iter()
                .find(|r| r.id == step.id)
                .and_then(|r| self.outputs_of(r))
                .cloned()
                .unwrap_or_default();
            let (plugin, call, timeout, shown) = match rb {
                StepRollback::Revert => (
                    step.plugin,
                    Call::Revert {
                        params: params.clone(),
                        outputs: outputs.clone(),
                    },
                    step.timeout,
                    self.shown_params(&params, &step.secret_params),
                ),
                StepRollback::Call {
                    plugin,
                    with,
                    secret_params,
                    timeout,
                } => {
                    let status = if succeeded { "succeeded" } else { "failed" };
                    let ctx = self.context(Some((&step.id, &outputs, status)));
                    match self.render(with, &ctx) {
                        Ok(p) => (
                            *plugin,
                            Call::Run { params: p.clone() },
                            *timeout,
                            self.shown_params(&p, secret_params),
                        ),
                        Err(message) => {
                            let summary = self.redactor.text(&message);
                            let report = StepReport {
                                id,
                                phase: Phase::Rollback,
                                plugin: plan.plugins[*plugin].alias.clone(),
                                status: StepStatus::Errored {
                                    failure: Failure::InvalidParams {
                                        message: summary.clone(),
                                    },
                                },
                                summary,
                                duration: Duration::ZERO,
                                params: Vec::new(),
                                attempts: Vec::new(),
                                targets: Vec::new(),
                            };
                            observer.on_event(&Event::StepFinished { report: &report });
                            self.reports.push(report);
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let alias = plan.plugins[plugin].alias.clone();
            observer.on_event(&Event::StepStarted {
                phase: Phase::Rollback,
                id: &id,
                plugin: &alias,
            });
            let started = Instant::now();
            let rate = Rate {
                concurrency: 1,
                max_errors: None,
                retry: undo_retry(step),
                cancellable: false,
            };
            let (attempts, _) = self.retried(plugin, &id, timeout, rate, &call).await;
            let last = &attempts.last().expect("at least one attempt").invocation;
            let report = StepReport {
                id: id.clone(),
                phase: Phase::Rollback,
                plugin: alias,
                status: status_of(last),
                summary: summary_of_attempts(&attempts, rate.retry),
                duration: started.elapsed(),
                params: shown,
                attempts,
                targets: Vec::new(),
            };
            ok &= report.status.is_success();
            observer.on_event(&Event::StepFinished { report: &report });
            self.reports.push(report);
        }
        ok &= self
            .section(&plan.rollback, Phase::Rollback, observer)
            .await;
        if !plan.verify.is_empty() {
            observer.on_event(&Event::PhaseStarted {
                phase: Phase::Verify,
                reason: "after the rollback",
            });
            ok &= self.section(&plan.verify, Phase::Verify, observer).await;
        }
        ok
    }
}
