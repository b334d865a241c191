//! Operational statistics computed from run records. The definitions, precisely:
//!
//! - **runs**: runs that started in the window (any status). Dry runs and drills'
//!   notification runs are left out of every figure: they change nothing and judge nothing.
//! - **success rate**: `succeeded` / runs that ended (not `running`).
//! - **change runs**: runs in which an action step ran (so something may have changed).
//! - **change failure rate**: change runs that ended `failed`, `rolled_back` or
//!   `rollback_failed` / change runs that ended in any of those or `succeeded` (cancelled and
//!   interrupted runs are left out: they say nothing about the change).
//! - **rollback success rate**: `rolled_back` / (`rolled_back` + `rollback_failed`).
//! - **time to recover** (mean, p90): for `rolled_back` runs, from the moment the failing step
//!   ended (failure detected) to the moment the last verify check passed (healthy again).
//! - **time to detect** (mean): for runs whose failure was caught by a gate, from the moment the
//!   last action before it finished (the change in place) to the moment the gate failed.
//!
//! Per alert trigger ([`by_trigger`]): alerts in, runs started, alerts deduplicated (attached
//! to a run under way), cooled down, braked, refused; escalations; **time to detect** (from
//! the alert's `startsAt` to the run's start) and **time to remediate** (from `startsAt` to
//! the end of a run that succeeded, its checks passed), mean and p90.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{RunRecord, RunStatus, Trigger};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub runs: usize,
    pub ended: usize,
    pub succeeded: usize,
    pub success_rate: Option<f64>,
    pub change_runs: usize,
    pub failed_changes: usize,
    pub change_failure_rate: Option<f64>,
    pub rolled_back: usize,
    pub rollback_failed: usize,
    pub rollback_success_rate: Option<f64>,
    #[serde(with = "opt_ms")]
    pub mean_time_to_recover: Option<Duration>,
    #[serde(with = "opt_ms")]
    pub p90_time_to_recover: Option<Duration>,
    #[serde(with = "opt_ms")]
    pub mean_time_to_detect: Option<Duration>,
}

mod opt_ms {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn mean(v: &[u64]) -> Option<Duration> {
    (!v.is_empty()).then(|| Duration::from_millis(v.iter().sum::<u64>() / v.len() as u64))
}

/// The 90th percentile by the nearest-rank method.
fn p90(v: &[u64]) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((0.9 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(Duration::from_millis(s[rank - 1]))
}

pub fn compute(records: &[RunRecord]) -> Stats {
    let counted: Vec<&RunRecord> = records
        .iter()
        .filter(|r| !r.dry_run && !r.notification)
        .collect();
    let mut st = Stats {
        runs: counted.len(),
        ..Stats::default()
    };
    let mut recover = Vec::new();
    let mut detect = Vec::new();
    for r in counted {
        if r.status != RunStatus::Running {
            st.ended += 1;
        }
        match r.status {
            RunStatus::Succeeded => st.succeeded += 1,
            RunStatus::RolledBack => st.rolled_back += 1,
            RunStatus::RollbackFailed => st.rollback_failed += 1,
            _ => {}
        }
        if r.changed {
            let failed = matches!(
                r.status,
                RunStatus::Failed | RunStatus::RolledBack | RunStatus::RollbackFailed
            );
            if failed || r.status == RunStatus::Succeeded {
                st.change_runs += 1;
                st.failed_changes += usize::from(failed);
            }
        }
        if r.status == RunStatus::RolledBack
            && let (Some(d), Some(h)) = (r.detected_ms, r.recovered_ms)
        {
            recover.push(h.saturating_sub(d));
        }
        if r.detected_by_gate
            && let (Some(c), Some(d)) = (r.changed_ms, r.detected_ms)
        {
            detect.push(d.saturating_sub(c));
        }
    }
    st.success_rate = ratio(st.succeeded, st.ended);
    st.change_failure_rate = ratio(st.failed_changes, st.change_runs);
    st.rollback_success_rate = ratio(st.rolled_back, st.rolled_back + st.rollback_failed);
    st.mean_time_to_recover = mean(&recover);
    st.p90_time_to_recover = p90(&recover);
    st.mean_time_to_detect = mean(&detect);
    st
}

/// What one trigger did: alerts in, what its policies decided, how fast its runs fixed
/// things.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct TriggerStats {
    pub alerts: usize,
    pub runs_started: usize,
    /// Alerts attached to a run already under way for their group.
    pub deduplicated: usize,
    pub cooled_down: usize,
    pub braked: usize,
    pub refused: usize,
    /// Escalation runs (a run that could not fix it, or a tripped brake).
    pub escalated: usize,
    /// Started runs that succeeded.
    pub remediated: usize,
    /// From the alert's start (its `startsAt`) to the run's start.
    #[serde(with = "opt_ms")]
    pub mean_time_to_detect: Option<Duration>,
    #[serde(with = "opt_ms")]
    pub p90_time_to_detect: Option<Duration>,
    /// From the alert's start to the run's verified end, for runs that succeeded.
    #[serde(with = "opt_ms")]
    pub mean_time_to_remediate: Option<Duration>,
    #[serde(with = "opt_ms")]
    pub p90_time_to_remediate: Option<Duration>,
}

/// Per trigger, from the alerts recorded and the runs triggers started.
pub fn by_trigger(
    records: &[RunRecord],
    alerts: &[super::triggers::AlertRecord],
) -> BTreeMap<String, TriggerStats> {
    let mut out: BTreeMap<String, TriggerStats> = BTreeMap::new();
    for a in alerts {
        let t = out.entry(a.trigger.clone()).or_default();
        t.alerts += 1;
        match a.decision.as_str() {
            "start" => t.runs_started += 1,
            "attached" => t.deduplicated += 1,
            "cooled_down" => t.cooled_down += 1,
            "braked" => t.braked += 1,
            "refused" => t.refused += 1,
            _ => {}
        }
    }
    let mut detect: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut remediate: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        let Trigger::Alert {
            trigger,
            starts_at_ms,
            via,
            ..
        } = &r.trigger
        else {
            continue;
        };
        let t = out.entry(trigger.clone()).or_default();
        if via == "escalation" {
            t.escalated += 1;
            continue;
        }
        if *starts_at_ms > 0 {
            detect
                .entry(trigger.clone())
                .or_default()
                .push(r.started_ms.saturating_sub(*starts_at_ms));
        }
        if r.status == RunStatus::Succeeded {
            t.remediated += 1;
            if let (Some(end), true) = (r.ended_ms, *starts_at_ms > 0) {
                remediate
                    .entry(trigger.clone())
                    .or_default()
                    .push(end.saturating_sub(*starts_at_ms));
            }
        }
    }
    for (name, t) in &mut out {
        let d = detect.get(name).map_or(&[][..], Vec::as_slice);
        let m = remediate.get(name).map_or(&[][..], Vec::as_slice);
        t.mean_time_to_detect = mean(d);
        t.p90_time_to_detect = p90(d);
        t.mean_time_to_remediate = mean(m);
        t.p90_time_to_remediate = p90(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(p90(&v), Some(Duration::from_millis(9)));
        assert_eq!(p90(&[5]), Some(Duration::from_millis(5)));
        assert_eq!(mean(&[1, 2, 6]), Some(Duration::from_millis(3)));
        assert_eq!(p90(&[]), None);
    }
}
