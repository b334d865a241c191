//! Drill reports: does rollback work, and how fast.
//!
//! Definitions, per drill over a window:
//! - **pass rate**: passed / (passed + failed); skipped and refused drills did not test
//!   anything and are counted apart.
//! - **time to detect**: from the fault in place to the failing check.
//! - **time to roll back**: from detection to the end of the rollback steps.
//! - **time to healthy**: from the fault in place to the verify checks passing.
//! - **trend**: the pass rate of the newer half of the window against the older half.
//! - **recovery trend**: the last [`RECENT`] times to healthy, oldest first, and the median
//!   of their newer half against their older half (more than 20% apart: faster or slower).

use serde::Serialize;

use crate::store::drills::{DrillRecord, DrillResult};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub samples: usize,
}

fn percentiles(mut v: Vec<u64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = |p: usize| v[(v.len() * p).div_ceil(100).max(1) - 1];
    Some(Percentiles {
        p50_ms: rank(50),
        p90_ms: rank(90),
        samples: v.len(),
    })
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Improving,
    Steady,
    Worsening,
    /// Too few drills in one half of the window to say.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub refused: usize,
    pub pass_rate: Option<f64>,
    pub time_to_detect: Option<Percentiles>,
    pub time_to_roll_back: Option<Percentiles>,
    pub time_to_healthy: Option<Percentiles>,
    pub trend: Trend,
    /// Times to healthy of the last [`RECENT`] drills that measured one, oldest first.
    pub recent_time_to_healthy_ms: Vec<u64>,
    /// Whether recovery gets faster ([`Trend::Improving`]) or slower over those.
    pub recovery_trend: Trend,
    /// The newest failures first (at most five).
    pub last_failures: Vec<DrillRecord>,
}

fn pass_rate(records: &[&DrillRecord]) -> Option<f64> {
    let passed = records
        .iter()
        .filter(|r| r.result == DrillResult::Passed)
        .count();
    let tested = passed
        + records
            .iter()
            .filter(|r| r.result == DrillResult::Failed)
            .count();
    (tested > 0).then(|| passed as f64 / tested as f64)
}

/// One report per drill, in name order, from records sorted oldest first.
impl DrillReport {
    /// A declared drill with no run in the window: it stands out as never tested.
    pub fn never_ran(drill: &str) -> DrillReport {
        DrillReport {
            drill: drill.to_owned(),
            total: 0,
            passed: 0,
            failed: 0,
            skipped: 0,
            refused: 0,
            pass_rate: None,
            time_to_detect: None,
            time_to_roll_back: None,
            time_to_healthy: None,
            trend: Trend::Unknown,
            recent_time_to_healthy_ms: Vec::new(),
            recovery_trend: Trend::Unknown,
            last_failures: Vec::new(),
        }
    }
}

/// How many recent times to healthy a report lists.
pub const RECENT: usize = 10;

/// Faster, slower or steady: the median of the newer half of `times` against the older
/// half's, at least two in each.
fn recovery_trend(times: &[u64]) -> Trend {
    if times.len() < 4 {
        return Trend::Unknown;
    }
    let (older, newer) = times.split_at(times.len() / 2);
    let median = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let (a, b) = (median(older), median(newer));
    if b < a * 0.8 {
        Trend::Improving
    } else if b > a * 1.2 {
        Trend::Worsening
    } else {
        Trend::Steady
    }
}

pub fn reports(records: &[DrillRecord]) -> Vec<DrillReport> {
    let mut names: Vec<&str> = records.iter().map(|r| r.drill.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let mine: Vec<&DrillRecord> = records.iter().filter(|r| r.drill == name).collect();
            let count = |res| mine.iter().filter(|r| r.result == res).count();
            let tested: Vec<&DrillRecord> = mine
                .iter()
                .copied()
                .filter(|r| matches!(r.result, DrillResult::Passed | DrillResult::Failed))
                .collect();
            let (older, newer) = tested.split_at(tested.len() / 2);
            let trend = match (pass_rate(older), pass_rate(newer)) {
                (Some(a), Some(b)) if older.len() >= 2 => {
                    if b > a + 0.05 {
                        Trend::Improving
                    } else if b + 0.05 < a {
                        Trend::Worsening
                    } else {
                        Trend::Steady
                    }
                }
                _ => Trend::Unknown,
            };
            let recoveries: Vec<u64> = mine.iter().filter_map(|r| r.recover_ms).collect();
            let recent = recoveries[recoveries.len().saturating_sub(RECENT)..].to_vec();
            let series = |f: fn(&DrillRecord) -> Option<u64>| {
                percentiles(mine.iter().filter_map(|r| f(r)).collect())
            };
            DrillReport {
                drill: name.to_owned(),
                total: mine.len(),
                passed: count(DrillResult::Passed),
                failed: count(DrillResult::Failed),
                skipped: count(DrillResult::Skipped),
                refused: count(DrillResult::Refused),
                pass_rate: pass_rate(&mine),
                time_to_detect: series(|r| r.detect_ms),
                time_to_roll_back: series(|r| r.rollback_ms),
                time_to_healthy: series(|r| r.recover_ms),
                trend,
                recovery_trend: recovery_trend(&recent),
                recent_time_to_healthy_ms: recent,
                last_failures: mine
                    .iter()
                    .rev()
                    .filter(|r| r.result == DrillResult::Failed)
                    .take(5)
                    .map(|r| (*r).clone())
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(drill: &str, t: u64, result: DrillResult, recover: Option<u64>) -> DrillRecord {
        DrillRecord {
            drill: drill.into(),
            trigger: "schedule".into(),
            scheduled_ms: Some(t),
            started_ms: t,
            ended_ms: t + 1,
            result,
            reasons: vec![],
            run_id: Some(format!("run{t}")),
            before_run_id: None,
            outcome: None,
            detect_ms: recover.map(|r| r / 2),
            rollback_ms: recover.map(|r| r / 4),
            recover_ms: recover,
            notify_run_id: None,
        }
    }

    #[test]
    fn rates_percentiles_and_trend() {
        use DrillResult::*;
        let records = vec![
            rec("a", 1, Failed, None),
            rec("a", 2, Failed, None),
            rec("a", 3, Skipped, None),
            rec("a", 4, Passed, Some(1000)),
            rec("a", 5, Passed, Some(3000)),
            rec("a", 6, Passed, Some(2000)),
            rec("b", 1, Refused, None),
        ];
        let r = reports(&records);
        assert_eq!(r.len(), 2);
        let a = &r[0];
        assert_eq!((a.total, a.passed, a.failed, a.skipped), (6, 3, 2, 1));
        assert_eq!(a.pass_rate, Some(0.6));
        let healthy = a.time_to_healthy.as_ref().unwrap();
        assert_eq!(
            (healthy.p50_ms, healthy.p90_ms, healthy.samples),
            (2000, 3000, 3)
        );
        assert_eq!(a.trend, Trend::Improving);
        assert_eq!(a.recent_time_to_healthy_ms, [1000, 3000, 2000]);
        assert_eq!(a.recovery_trend, Trend::Unknown, "too few to say");
        assert_eq!(
            a.last_failures
                .iter()
                .map(|f| f.started_ms)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        let b = &r[1];
        assert_eq!((b.refused, b.pass_rate, b.trend), (1, None, Trend::Unknown));
    }

    #[test]
    fn recovery_gets_slower_or_faster() {
        use DrillResult::Passed;
        let series = |times: &[u64]| {
            let records: Vec<DrillRecord> = times
                .iter()
                .enumerate()
                .map(|(i, t)| rec("d", i as u64, Passed, Some(*t)))
                .collect();
            reports(&records).remove(0)
        };
        let slower = series(&[1000, 1100, 900, 1000, 2000, 2100, 1900, 2500]);
        assert_eq!(slower.recovery_trend, Trend::Worsening);
        assert_eq!(
            series(&[2000, 2100, 1000, 900]).recovery_trend,
            Trend::Improving
        );
        assert_eq!(
            series(&[1000, 1050, 1020, 990]).recovery_trend,
            Trend::Steady
        );
        // Only the last ten count.
        let many: Vec<u64> = (0..15).map(|i| 1000 + i).collect();
        assert_eq!(
            series(&many).recent_time_to_healthy_ms,
            (1005..1015).collect::<Vec<u64>>()
        );
    }
}
