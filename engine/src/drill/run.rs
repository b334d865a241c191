//! Running a drill: the same code path for `medic drill run NAME` and the scheduler.

use std::time::{Duration, UNIX_EPOCH};

use super::{Drill, Hook};
use crate::executor::{self, Cancel, Observer, Phase, RunOptions, RunOutcome, RunReport};
use crate::host::PluginHost;
use crate::runbook::{Plan, PlanOptions};
use crate::store::drills::{DrillRecord, DrillResult};
use crate::store::recorder::{Recorder, Start};
use crate::store::{LockHolder, RunRecord, Store, Trigger, now_ms};

/// Parameters a notify runbook may declare; Medic fills in those it does (placeholders here
/// are only used to validate the runbook).
pub const NOTIFY_PARAMS: &[(&str, &str)] = &[
    ("drill", "drill"),
    ("drill_result", "failed"),
    ("drill_summary", "summary"),
    ("drill_run", "run"),
];

/// What started the drill.
#[derive(Debug, Clone, Copy)]
pub enum Started {
    Manual,
    /// By the scheduler, for this scheduled time.
    Schedule {
        scheduled_ms: u64,
    },
}

/// A run that could not even start, or whose record could not be completed.
pub enum NotRun {
    Skipped(String),
    Failed(String),
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One unattended, recorded run.
pub struct RunSpec<'a> {
    pub plan: &'a Plan,
    pub trigger: Trigger,
    pub run_id: String,
    /// A drill's fault.
    pub fail_step: Option<String>,
    pub dry_run: bool,
    pub approval: Option<crate::executor::Approval>,
    /// How long to wait for the runbook's lock before giving up.
    pub lock_wait: Duration,
    /// A lock key the caller already holds for this run (a drill holds its lock from its
    /// fault injection to the end of its run): not taken again.
    pub lock_held: Option<String>,
    /// A drill's notification run (left out of the statistics).
    pub notification: bool,
    /// Asked after a cancel: roll back? Unattended runs answer as the runbook says (yes).
    pub confirm_rollback: Box<dyn FnMut() -> bool + Send>,
    /// A new run, or a recorded one picked up again (with the state it goes on from).
    pub start: Start,
    pub resume: Option<executor::Resume>,
}

impl<'a> RunSpec<'a> {
    pub fn new(plan: &'a Plan, trigger: Trigger, run_id: String) -> Self {
        RunSpec {
            plan,
            trigger,
            run_id,
            fail_step: None,
            dry_run: false,
            approval: None,
            lock_wait: Duration::ZERO,
            lock_held: None,
            notification: false,
            confirm_rollback: Box::new(|| true),
            start: Start::New,
            resume: None,
        }
    }
}

/// Takes `key` for `run_id`, waiting up to `wait` while another run holds it.
pub async fn take_lock(
    store: &Store,
    key: &str,
    run_id: &str,
    runbook: &str,
    wait: Duration,
    cancel: &Cancel,
) -> Result<(), NotRun> {
    let holder = LockHolder::this(run_id, runbook);
    let deadline = std::time::Instant::now() + wait;
    loop {
        match store.acquire_lock(key, &holder) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(other)) if std::time::Instant::now() >= deadline => {
                return Err(NotRun::Skipped(format!(
                    "lock `{key}` is held by run {} ({})",
                    other.run_id, other.runbook
                )));
            }
            Ok(Err(_)) => {
                if !cancel.sleep(Duration::from_millis(250)).await {
                    return Err(NotRun::Skipped(
                        "cancelled while waiting for the lock".into(),
                    ));
                }
            }
            Err(e) => return Err(NotRun::Failed(format!("the run store: {e}"))),
        }
    }
}

/// Runs a plan as the engine always does (recorded, locked, rolled back on its own), with
/// nobody at a terminal: a cancelled run undoes what it did, as the runbook says, and only
/// an abort stops that rollback (the run is then left interrupted).
pub async fn recorded_run(
    host: &PluginHost,
    store: &Store,
    spec: RunSpec<'_>,
    observer: &mut dyn Observer,
    cancel: &Cancel,
) -> Result<(RunReport, RunRecord), NotRun> {
    let plan = spec.plan;
    let run_id = spec.run_id;
    if let Some(key) = &plan.lock
        && spec.lock_held.as_ref() != Some(key)
    {
        take_lock(store, key, &run_id, &plan.name, spec.lock_wait, cancel).await?;
    }
    let opts = RunOptions {
        run_id: run_id.clone(),
        cancel: cancel.clone(),
        confirm_rollback: spec.confirm_rollback,
        approver: std::sync::Arc::new(crate::store::approvals::StoreApprover {
            place: store.place(),
            policy: crate::store::approvals::Policy::for_run(&plan.environment, &spec.trigger),
        }),
        fail_step: spec.fail_step,
        dry_run: spec.dry_run,
        approval: spec.approval,
        resume: spec.resume,
        kv_journal: Some(store.kv_journal(&run_id)),
    };
    let mut recorder = Recorder::new(
        store,
        observer,
        spec.trigger,
        plan.lock.clone(),
        spec.start,
        spec.dry_run,
        cancel.clone(),
    );
    if spec.notification {
        recorder = recorder.notification();
    }
    let finished = tokio::select! {
        // The abort first: once aborted, a run that reacts by failing its gates must not
        // be reported as if it had ended on its own (the executor also withholds its
        // verdict when it sees the abort first).
        biased;
        () = cancel.aborted() => None,
        report = executor::execute(host, plan, opts, &mut recorder) => report,
    };
    let Some(report) = finished else {
        recorder.aborted(cancel.abort_reason().unwrap_or("aborted by its supervisor"));
        let _ = store
            .release_all_locks(&run_id)
            .and_then(|()| store.flush());
        return Err(NotRun::Failed(format!(
            "run {run_id} was aborted and is left interrupted: roll it back with medic runs rollback {run_id}"
        )));
    };
    let recording_failed = recorder.error.take();
    let released = store
        .release_all_locks(&report.run_id)
        .and_then(|()| store.flush());
    if let Some(e) = recording_failed
        .map(|e| e.to_string())
        .or(released.err().map(|e| e.to_string()))
    {
        return Err(NotRun::Failed(format!(
            "run {} could not be fully recorded: {e}",
            report.run_id
        )));
    }
    let record = match store.record(&report.run_id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(NotRun::Failed(format!(
                "run {} has no record",
                report.run_id
            )));
        }
        Err(e) => return Err(NotRun::Failed(e.to_string())),
    };
    Ok((report, record))
}

/// The lock a drill holds from its fault injection to the end of its run: its runbook's
/// own, else one per runbook and environment, so two drills (or a drill and a run of a
/// runbook that declares the same lock) never act on the same target at once.
pub fn drill_lock(plan: &Plan) -> String {
    plan.lock
        .clone()
        .unwrap_or_else(|| format!("drill:{}:{}", plan.name, plan.environment.name))
}

/// A drill's runs: triggered by it, never waiting for a lock (a held lock skips the drill).
fn drill_spec<'a>(plan: &'a Plan, drill: &Drill, lock_held: Option<&str>) -> RunSpec<'a> {
    RunSpec {
        lock_held: lock_held.map(str::to_owned),
        ..RunSpec::new(
            plan,
            Trigger::Schedule {
                drill: drill.name.clone(),
            },
            executor::new_run_id(),
        )
    }
}

/// When the rollback steps ended, as ms since the epoch.
fn rollback_end_ms(report: &RunReport) -> Option<u64> {
    let start = ms(report.started_at);
    report
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Rollback)
        .filter_map(|s| {
            let last = s.attempts.last()?;
            Some(start + last.started_ms + last.invocation.duration_us / 1000)
        })
        .max()
}

/// Plans a hook's runbook with its parameters plus `extra`, keeping only those it declares.
/// A hook that targets a protected environment is refused, as the drill's own runbook is
/// (checked again here: the runbook may have changed since the drills were loaded).
async fn plan_hook(
    host: &PluginHost,
    drill: &Drill,
    hook: &Hook,
    extra: &[(&str, String)],
) -> Result<Plan, String> {
    let mut params = hook.params.clone();
    params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let plan = super::plan_hook(
        host,
        &hook.runbook,
        &PlanOptions {
            params,
            environment: drill.environment.clone(),
            defer_secrets: false,
            sourced: None,
        },
    )
    .await?;
    if plan.environment.protected {
        return Err(format!(
            "runbook `{}` targets the protected environment `{}`: drills never run there",
            plan.name, plan.environment.name
        ));
    }
    Ok(plan)
}

/// Runs a drill and records its result (also when it is skipped or refused).
pub async fn run_drill(
    host: &PluginHost,
    store: &Store,
    drill: &Drill,
    started: Started,
    observer: &mut dyn Observer,
    cancel: &Cancel,
) -> DrillRecord {
    let mut record = match started {
        Started::Manual => DrillRecord::new(&drill.name, "manual", None),
        Started::Schedule { scheduled_ms } => {
            DrillRecord::new(&drill.name, "schedule", Some(scheduled_ms))
        }
    };
    evaluate(host, store, drill, observer, cancel, &mut record).await;
    record.ended_ms = now_ms();
    if record.result == DrillResult::Failed
        && let Some(hook) = &drill.notify
    {
        let summary = record.reasons.join("; ");
        let extra = [
            ("drill", drill.name.clone()),
            ("drill_result", record.result.name().to_owned()),
            ("drill_summary", summary),
            ("drill_run", record.run_id.clone().unwrap_or_default()),
        ];
        match plan_hook(host, drill, hook, &extra).await {
            Ok(plan) => {
                let spec = RunSpec {
                    notification: true,
                    ..drill_spec(&plan, drill, None)
                };
                // Somebody must hear that the drill failed, even when medic serve is
                // stopping: only an abort stops the notification.
                match recorded_run(host, store, spec, observer, &cancel.for_undo()).await {
                    Ok((report, _)) => {
                        if report.outcome != RunOutcome::Succeeded {
                            record.reasons.push(format!(
                                "the notification run {} ended {:?}",
                                report.run_id, report.outcome
                            ));
                        }
                        record.notify_run_id = Some(report.run_id);
                    }
                    Err(NotRun::Skipped(why) | NotRun::Failed(why)) => {
                        record.reasons.push(format!("could not notify: {why}"));
                    }
                }
            }
            Err(why) => record.reasons.push(format!("could not notify: {why}")),
        }
    }
    if let Err(e) = store.put_drill(&record) {
        tracing::error!(drill = %drill.name, "recording the drill result: {e}");
        record
            .reasons
            .push(format!("the result could not be recorded: {e}"));
    }
    record
}

async fn evaluate(
    host: &PluginHost,
    store: &Store,
    drill: &Drill,
    observer: &mut dyn Observer,
    cancel: &Cancel,
    record: &mut DrillRecord,
) {
    // Planned afresh each time: the runbook may have changed since the drills were loaded.
    let plan = match super::plan_file(host, &drill.runbook, &drill.plan_options()).await {
        Ok(p) => p,
        Err(why) => {
            record.reasons.push(why);
            return;
        }
    };
    if plan.environment.protected {
        record.result = DrillResult::Refused;
        record.reasons.push(format!(
            "environment `{}` is protected: drills never run there",
            plan.environment.name
        ));
        return;
    }
    let key = drill_lock(&plan);
    let run_id = executor::new_run_id();
    if let Err(NotRun::Skipped(why) | NotRun::Failed(why)) =
        take_lock(store, &key, &run_id, &plan.name, Duration::ZERO, cancel).await
    {
        record.result = DrillResult::Skipped;
        record.reasons.push(why);
        return;
    }
    evaluate_locked(
        host,
        store,
        drill,
        &plan,
        &key,
        run_id.clone(),
        observer,
        cancel,
        record,
    )
    .await;
    if let Err(e) = store.release_all_locks(&run_id) {
        record.reasons.push(format!("releasing lock `{key}`: {e}"));
    }
}

/// The drill, with its lock held by `run_id` (its main run's id).
#[allow(clippy::too_many_arguments)]
async fn evaluate_locked(
    host: &PluginHost,
    store: &Store,
    drill: &Drill,
    plan: &Plan,
    key: &str,
    run_id: String,
    observer: &mut dyn Observer,
    cancel: &Cancel,
    record: &mut DrillRecord,
) {
    let mut fault_ms = None;
    if let Some(hook) = &drill.before {
        let before = match plan_hook(host, drill, hook, &[]).await {
            Ok(p) => p,
            Err(why) => {
                record.reasons.push(format!("before: {why}"));
                return;
            }
        };
        match recorded_run(
            host,
            store,
            drill_spec(&before, drill, Some(key)),
            observer,
            cancel,
        )
        .await
        {
            Ok((report, r)) => {
                record.before_run_id = Some(report.run_id.clone());
                if report.outcome != RunOutcome::Succeeded {
                    record.reasons.push(format!(
                        "the before runbook (run {}) ended {:?}: the fault was not put in place",
                        report.run_id, report.outcome
                    ));
                    return;
                }
                fault_ms = r.ended_ms;
            }
            Err(NotRun::Skipped(why)) => {
                record.result = DrillResult::Skipped;
                record.reasons.push(format!("before: {why}"));
                return;
            }
            Err(NotRun::Failed(why)) => {
                record.reasons.push(format!("before: {why}"));
                return;
            }
        }
    }
    let spec = RunSpec {
        fail_step: drill.fail_step.clone(),
        run_id,
        ..drill_spec(plan, drill, Some(key))
    };
    let (report, run) = match recorded_run(host, store, spec, observer, cancel).await {
        Ok(x) => x,
        Err(NotRun::Skipped(why)) => {
            record.result = DrillResult::Skipped;
            record.reasons.push(why);
            return;
        }
        Err(NotRun::Failed(why)) => {
            record.reasons.push(why);
            return;
        }
    };
    record.run_id = Some(report.run_id.clone());
    record.outcome = Some(
        crate::store::RunStatus::from_outcome(report.outcome)
            .name()
            .to_owned(),
    );
    // The fault is in place when the `before` runbook ended, else when the last change
    // before the failure was made (a bad deploy, or the step forced to fail).
    let fault = fault_ms.or(run.changed_ms).or(run.detected_ms);
    if let (Some(f), Some(d)) = (fault, run.detected_ms) {
        record.detect_ms = Some(d.saturating_sub(f));
    }
    if let (Some(d), Some(end)) = (run.detected_ms, rollback_end_ms(&report)) {
        record.rollback_ms = Some(end.saturating_sub(d));
    }
    // Healthy again: the verify checks after a rollback passed, or, for a remediation
    // runbook expected to succeed, the run ended well.
    let healthy = match report.outcome {
        RunOutcome::RolledBack => run.recovered_ms,
        RunOutcome::Succeeded if drill.expect == RunOutcome::Succeeded => run.ended_ms,
        _ => None,
    };
    if let (Some(f), Some(h)) = (fault, healthy) {
        record.recover_ms = Some(h.saturating_sub(f));
    }

    let mut ok = true;
    if cancel.is_cancelled() {
        ok = false;
        record
            .reasons
            .push("cancelled before it could finish (medic serve stopping, Ctrl-C, or `medic runs cancel`)".to_owned());
    }
    if report.outcome != drill.expect {
        ok = false;
        record.reasons.push(format!(
            "the run ended {}, expected {}",
            crate::store::RunStatus::from_outcome(report.outcome).name(),
            crate::store::RunStatus::from_outcome(drill.expect).name()
        ));
        if report.outcome == RunOutcome::Succeeded {
            record
                .reasons
                .push("the fault went unnoticed: no check failed".to_owned());
        }
    }
    if let Some(budget) = drill.recover_within
        && report.outcome == drill.expect
    {
        match record.recover_ms {
            Some(took) if Duration::from_millis(took) > budget => {
                ok = false;
                record.reasons.push(format!(
                    "recovery took {}, over the budget of {}",
                    humantime::format_duration(Duration::from_millis(took)),
                    humantime::format_duration(budget)
                ));
            }
            Some(_) => {}
            None => {
                ok = false;
                record.reasons.push(
                    "recovery time unknown: no verify check passed, or no fault was in place"
                        .to_owned(),
                );
            }
        }
    }
    if !ok {
        record.reasons.push(left_in(report.outcome, &report.run_id));
    }
    record.result = if ok {
        DrillResult::Passed
    } else {
        DrillResult::Failed
    };
}

/// What a failed drill's run left in its environment, and how to put it right: whoever reads
/// the failure (on call, the next morning) must not have to work that out.
fn left_in(outcome: RunOutcome, run_id: &str) -> String {
    match outcome {
        RunOutcome::RolledBack => format!(
            "left: rolled back and verified healthy; nothing to restore (`medic runs show {run_id}`)"
        ),
        RunOutcome::RollbackFailed => format!(
            "left: as the failed rollback left it, not verified healthy (some changes may still be in place); see `medic runs show {run_id}`, then `medic runs rollback {run_id}` once the cause is fixed"
        ),
        RunOutcome::Succeeded => format!(
            "left: the drill's change and its fault are still in place (nothing undid them); `medic runs rollback {run_id}` undoes them"
        ),
        RunOutcome::Failed => format!(
            "left: what the run changed before it failed is still in place (nothing was rolled back); `medic runs rollback {run_id}` undoes it"
        ),
        RunOutcome::Cancelled => format!(
            "left: as the cancel left it (rolled back only if its runbook says so); see `medic runs show {run_id}`, and `medic runs rollback {run_id}` if changes remain"
        ),
        RunOutcome::DryRun => {
            format!("left: unchanged (a dry run); `medic runs show {run_id}`")
        }
    }
}
