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

fn key(drill: &str, started_ms: u64, tie: &str) -> Vec<u8> {
    let mut k = drill.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&started_ms.to_be_bytes());
    k.extend_from_slice(tie.as_bytes());
    k
}

impl Store {
    /// Records a drill execution, durably.
    pub fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        let tie = r.run_id.clone().unwrap_or_else(crate::executor::new_run_id);
        let value = serde_json::to_vec(r).expect("drill records serialize");
        self.drills
            .insert(key(&r.drill, r.started_ms, &tie), value)
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// A drill's records since `since_ms`, oldest first; every drill's when `drill` is None.
    pub fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        let iter = match drill {
            Some(name) => {
                let mut prefix = name.as_bytes().to_vec();
                prefix.push(0);
                self.drills.scan_prefix(prefix)
            }
            None => self.drills.iter(),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let r: DrillRecord = self.decode(&k, &v)?;
            if r.started_ms >= since_ms {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.started_ms);
        Ok(out)
    }

    /// The last scheduled time the scheduler handled for a drill.
    pub fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .drill_state
            .get(drill.as_bytes())
            .map_err(|e| self.sled_err(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    pub fn set_drill_last_scheduled(&self, drill: &str, ms: u64) -> Result<(), StoreError> {
        self.drill_state
            .insert(drill.as_bytes(), &ms.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// Why a drill is paused, if it is: its scheduled runs are skipped (and recorded as
    /// skipped, saying so) until it is resumed. Kept with the store, so a restart keeps it.
    pub fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        let Some(v) = self
            .drill_state
            .get(format!("paused:{drill}").as_bytes())
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                dir: self.dir().display().to_string(),
                key: format!("paused:{drill}"),
                reason: e.to_string(),
            })
    }

    /// Pauses (`Some`) or resumes (`None`) a drill's schedule.
    pub fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        let key = format!("paused:{drill}");
        match paused {
            Some(p) => self
                .drill_state
                .insert(key.as_bytes(), serde_json::to_vec(p).expect("serialize"))
                .map(|_| ()),
            None => self.drill_state.remove(key.as_bytes()).map(|_| ()),
        }
        .map_err(|e| self.sled_err(e))?;
        self.flush()
    }
}

/// Who paused a drill, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}
