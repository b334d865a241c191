//! Drill results and scheduler state.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// How a drill went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    /// The run ended as expected, within the recovery budget.
    Passed,
    /// It did not: the rollback path is broken, slow, or the fault went unnoticed.
    Failed,
    /// Not run: its previous run was still going, or its lock was held by another run.
    Skipped,
    /// Not run: it would have touched a protected environment.
    Refused,
}

impl DrillResult {
    pub fn name(self) -> &'static str {
        match self {
            DrillResult::Passed => "passed",
            DrillResult::Failed => "failed",
            DrillResult::Skipped => "skipped",
            DrillResult::Refused => "refused",
        }
    }
}

/// One drill execution (or non-execution), as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    pub drill: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// The scheduled time this execution answers, for scheduled ones.
    pub scheduled_ms: Option<u64>,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub result: DrillResult,
    /// Why it failed, was skipped or refused; empty when it passed.
    pub reasons: Vec<String>,
    /// The drill's run (the runbook under test), when it ran.
    pub run_id: Option<String>,
    /// The run of the `before` runbook, when there is one.
    pub before_run_id: Option<String>,
    /// How the run ended (`rolled_back`, ...).
    pub outcome: Option<String>,
    /// From the fault in place to the failure detected.
    pub detect_ms: Option<u64>,
    /// From detection to the end of the rollback steps.
    pub rollback_ms: Option<u64>,
    /// From the fault in place to healthy again (verified).
    pub recover_ms: Option<u64>,
    /// The notify runbook's run, when the drill failed and one is declared.
    pub notify_run_id: Option<String>,
}

impl DrillRecord {
    /// A record for a drill starting now: failed until shown otherwise.
    pub fn new(drill: &str, trigger: &str, scheduled_ms: Option<u64>) -> DrillRecord {
        let now = super::now_ms();
        DrillRecord {
            drill: drill.to_owned(),
            trigger: trigger.to_owned(),
            scheduled_ms,
            started_ms: now,
            ended_ms: now,
            result: DrillResult::Failed,
            reasons: Vec::new(),
            run_id: None,
            before_run_id: None,
            outcome: None,
            detect_ms: None,
            rollback_ms: None,
            recover_ms: None,
            notify_run_id: None,
        }
    }

    /// A drill that did not run, and why.
    pub fn skipped(
        drill: &str,
        trigger: &str,
        scheduled_ms: Option<u64>,
        why: String,
    ) -> DrillRecord {
        DrillRecord {
            result: DrillResult::Skipped,
            reasons: vec![why],
            ..DrillRecord::new(drill, trigger, scheduled_ms)
        }
    }
}

impl Store {
    /// Records a drill execution, durably.
    pub fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        self.backend.put_drill(r)
    }

    /// A drill's records since `since_ms`, oldest first; every drill's when `drill` is None.
    pub fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        self.backend.drill_records(drill, since_ms)
    }

    /// The last scheduled time the scheduler handled for a drill.
    pub fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        self.backend.drill_last_scheduled(drill)
    }

    /// Takes a drill's scheduled slot for this scheduler: of all the schedulers sharing the
    /// store that ask for the same slot, exactly one gets true.
    pub fn claim_drill_slot(&self, drill: &str, ms: u64) -> Result<bool, StoreError> {
        self.backend.claim_drill_slot(drill, ms)
    }

    /// Why a drill is paused, if it is: its scheduled runs are skipped (and recorded as
    /// skipped, saying so) until it is resumed. Kept with the store, so a restart keeps it.
    pub fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        self.backend.drill_paused(drill)
    }

    /// Pauses (`Some`) or resumes (`None`) a drill's schedule.
    pub fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        self.backend.set_drill_paused(drill, paused)
    }
}

/// Who paused a drill, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}
