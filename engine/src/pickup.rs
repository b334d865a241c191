//! Picking a recorded run up again: `medic runs resume|rollback` in a shell and
//! `POST /api/v1/runs/ID/resume|rollback` through `medic serve`. Which runs may be picked up,
//! with which instructions, and the state the executor goes on from are decided here, once,
//! for both.

use std::path::PathBuf;

use crate::executor::{Phase, Resume};
use crate::runbook::plan::DEFAULT_ENVIRONMENT;
use crate::runbook::{Plan, PlanOptions};
use crate::store::{JournalEvent, PluginRef, RunRecord, RunStatus, Store};

/// Why a run cannot be picked up.
#[derive(Debug)]
pub enum Refused {
    /// Not by this request: the run's state, its runbook or the approval say no.
    Invalid(String),
    /// The store failed.
    Engine(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(m) | Refused::Engine(m) => f.write_str(m),
        }
    }
}

/// What a pick-up goes on with, before the runbook is planned.
pub struct PickUp {
    /// Only undo, then verify.
    pub rollback_only: bool,
    /// `resume` or `rollback`, as the journal records it.
    pub mode: &'static str,
    /// Said to whoever asked, when a resume turns into a rollback.
    pub notice: Option<String>,
    /// The run's runbook, unchanged since the run started.
    pub path: PathBuf,
    pub text: String,
    /// The run's parameters (secrets are read again from their sources: never recorded)
    /// and environment.
    pub options: PlanOptions,
}

/// Checks that `record` may be picked up as asked and reads its runbook, refusing one that
/// changed since the run started.
pub fn prepare(
    store: &Store,
    record: &RunRecord,
    mut rollback_only: bool,
) -> Result<PickUp, Refused> {
    let verb = if rollback_only {
        "rolled back"
    } else {
        "resumed"
    };
    let allowed = matches!(
        (rollback_only, record.status),
        (
            _,
            RunStatus::Interrupted | RunStatus::Cancelled | RunStatus::Failed
        ) | (true, RunStatus::RollbackFailed)
    );
    if !allowed {
        let which = if rollback_only {
            "interrupted, failed, cancelled or rollback_failed"
        } else {
            "interrupted, failed or cancelled"
        };
        let id = &record.run_id;
        return Err(Refused::Invalid(match record.status {
            // Two processes acting on the same systems at once: never.
            RunStatus::Running => format!(
                "run {id} is still running (process {}); only {which} runs can be {verb}\n  = help: stop it first (`medic runs cancel {id}`, or Ctrl-C in its terminal), then try again",
                record.pid
            ),
            status => format!(
                "run {id} ended {}; only {which} runs can be {verb}",
                status.name()
            ),
        }));
    }
    let journal = store
        .journal(&record.run_id)
        .map_err(|e| Refused::Engine(e.to_string()))?;
    let rollback_started = journal.iter().any(|e| {
        matches!(
            e.event,
            JournalEvent::PhaseStarted {
                phase: Phase::Rollback,
                ..
            }
        )
    });
    let mut notice = None;
    if !rollback_only && rollback_started {
        if record.status != RunStatus::Interrupted {
            return Err(Refused::Invalid(format!(
                "run {} was {} and rolled back: what it changed was undone, so there is nothing to resume\n  = help: start it again with medic run",
                record.run_id,
                record.status.name()
            )));
        }
        // Going forward again would change a system that is half rolled back, and a check
        // passing now would say nothing about the change: the rollback goes on instead.
        notice = Some(format!(
            "run {} stopped during its rollback: resuming continues the rollback (undo, then verify); forward steps do not run again",
            record.run_id
        ));
        rollback_only = true;
    }
    let mode = if rollback_only { "rollback" } else { "resume" };
    let path = PathBuf::from(&record.runbook_path);
    let text = crate::input::read_text(&path, crate::input::MAX_RUNBOOK_BYTES).map_err(|e| {
        Refused::Invalid(format!(
            "cannot read the run's runbook {}: {e}",
            path.display()
        ))
    })?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    if digest != record.runbook_sha256 {
        return Err(Refused::Invalid(format!(
            "{} changed since run {} started (sha256 {}…, now {}…); refusing to {mode} it with different instructions",
            path.display(),
            record.run_id,
            record
                .runbook_sha256
                .get(..12)
                .unwrap_or(&record.runbook_sha256),
            &digest[..12]
        )));
    }
    let params = record
        .params
        .iter()
        .filter(|(_, v)| v != crate::host::redact::MASK)
        .cloned()
        .collect();
    let environment =
        (record.environment != DEFAULT_ENVIRONMENT).then(|| record.environment.clone());
    Ok(PickUp {
        rollback_only,
        mode,
        notice,
        path,
        text,
        options: PlanOptions {
            params,
            environment,
            defer_secrets: false,
            sourced: None,
        },
    })
}

/// A protected environment needs an approval: the run's own, or one given now.
pub fn check_approval(plan: &Plan, record: &RunRecord, approved_now: bool) -> Result<(), Refused> {
    if plan.environment.protected && !approved_now && record.approval.is_none() {
        return Err(Refused::Invalid(format!(
            "environment `{}` is protected: continuing run {} there needs an approval (--approve \"REASON\")",
            plan.environment.name, record.run_id
        )));
    }
    Ok(())
}

/// The run's plugins as the pick-up would load them, against those it started with: the
/// plugins that differ (a file rebuilt, a builtin of another medic version), as they are
/// now. An undo or a resumed step made by other code than the one that acted is refused
/// unless whoever picks the run up accepts it (`accepted`: `--accept-changed-plugins`);
/// nobody does for an unattended pick-up.
pub fn check_plugins(
    plan: &Plan,
    record: &RunRecord,
    mode: &str,
    accepted: bool,
) -> Result<Vec<PluginRef>, Refused> {
    let changed: Vec<(&PluginRef, PluginRef)> = record
        .plugins
        .iter()
        .filter_map(|was| {
            let now = plan.plugins.iter().find(|p| p.alias == was.alias)?;
            (now.plugin.sha256 != was.sha256).then(|| {
                (
                    was,
                    PluginRef {
                        alias: now.alias.clone(),
                        source: now.plugin.source.to_string(),
                        sha256: now.plugin.sha256.clone(),
                    },
                )
            })
        })
        .collect();
    if changed.is_empty() || accepted {
        return Ok(changed.into_iter().map(|(_, now)| now).collect());
    }
    // A recorded digest is read back, not made here: never sliced inside a character.
    let short = |d: &str| d.get(..12).unwrap_or(d).to_owned();
    let named: Vec<String> = changed
        .iter()
        .map(|(was, now)| {
            format!(
                "`{}` ({}: sha256 {}…, now {}…)",
                now.alias,
                now.source,
                short(&was.sha256),
                short(&now.sha256)
            )
        })
        .collect();
    Err(Refused::Invalid(format!(
        "the plugin{} {} changed since run {} started; refusing to {mode} it with other code than the one that acted\n  = help: put back the plugin the run used, or pass --accept-changed-plugins to {mode} with the one there now (it is recorded)",
        if changed.len() == 1 { "" } else { "s" },
        named.join(", "),
        record.run_id,
    )))
}

/// The state the executor goes on from: the main steps that ended and those cut off, the
/// fleet targets that ended, and the plugins' key-value spaces.
pub fn state(store: &Store, record: &RunRecord, rollback_only: bool) -> Result<Resume, Refused> {
    let engine = |e: crate::store::StoreError| Refused::Engine(e.to_string());
    let (reports, started) = store.step_reports(&record.run_id).map_err(engine)?;
    Ok(Resume {
        prior: reports
            .into_iter()
            .filter(|r| r.phase == Phase::Steps)
            .collect(),
        in_progress: started
            .into_iter()
            .filter(|(p, _)| *p == Phase::Steps)
            .map(|(_, s)| s)
            .collect(),
        rollback_only,
        targets: store.finished_targets(&record.run_id).map_err(engine)?,
        kv: store.kv_state(&record.run_id).map_err(engine)?,
    })
}
