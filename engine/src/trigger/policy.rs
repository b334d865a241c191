//! What a trigger does with one alert: start a run, attach the alert to the run already
//! fixing its group, wait out a cooldown, hold back behind a tripped storm brake, or, for a
//! resolved alert, drop or cancel what it started. Decided from the trigger's recorded state
//! and its runs' records, so that a restart of `medic serve` changes no decision.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alert::Alert;

/// What a trigger declares about repeats and storms.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Labels that make a group (one run at a time per group); empty: the alert's
    /// fingerprint.
    pub group_by: Vec<String>,
    pub cooldown: Duration,
    pub storm: Option<Storm>,
    pub on_resolved: OnResolved,
}

/// At most `runs` runs per `window`; past it the trigger stops until re-armed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storm {
    pub runs: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnResolved {
    /// A run that has begun goes on to its verdict.
    Continue,
    /// A run that has begun is cancelled (and rolls back as its runbook says).
    Cancel,
}

/// A trigger's state, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Per group: the last run started for it.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupRun>,
    /// When runs started, within the storm window.
    #[serde(default)]
    pub starts: Vec<u64>,
    /// Set when the storm brake tripped; cleared by a person (`medic trigger rearm`).
    #[serde(default)]
    pub braked: Option<Brake>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRun {
    pub run_id: String,
    pub started_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brake {
    pub at_ms: u64,
    pub reason: String,
}

/// What the store says of a run the trigger started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunView {
    /// Not begun its first step yet (waiting for its lock or an approval).
    Queued,
    Running,
    Ended {
        at_ms: u64,
    },
    /// No record (yet, or pruned).
    Unknown,
}

/// The decision for one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start a run for the group.
    Start { group: String },
    /// A run for the group is under way: the alert is recorded with it.
    Attached { group: String, run_id: String },
    /// The group's last run ended less than the cooldown ago.
    CooledDown {
        group: String,
        run_id: String,
        until_ms: u64,
    },
    /// The storm brake is on (`tripped`: by this alert).
    Braked { reason: String, tripped: bool },
    /// The alert resolved: what happens to the group's run.
    Resolved {
        group: String,
        run_id: Option<String>,
        action: ResolvedAction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedAction {
    /// No run of the group is under way.
    Nothing,
    /// The run had not begun: it is dropped.
    Drop,
    /// The run goes on.
    Continue,
    /// The run is cancelled (`on_resolved = "cancel"`).
    Cancel,
}

impl Policy {
    /// The group an alert belongs to.
    pub fn group(&self, alert: &Alert) -> String {
        if self.group_by.is_empty() {
            return alert.fingerprint.clone();
        }
        self.group_by
            .iter()
            .map(|l| format!("{l}={}", alert.labels.get(l).map_or("", String::as_str)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Decides for `alert` at `now_ms`, updating `state` as the decision requires (the
    /// caller records the run id of a `Start` with [`State::started`]).
    pub fn decide(
        &self,
        state: &mut State,
        alert: &Alert,
        now_ms: u64,
        run: &dyn Fn(&str) -> RunView,
    ) -> Decision {
        let group = self.group(alert);
        let last = state.groups.get(&group).cloned();
        let view = last.as_ref().map(|g| (g.run_id.clone(), run(&g.run_id)));
        if !alert.firing() {
            let (run_id, action) = match view {
                Some((id, RunView::Queued)) => (Some(id), ResolvedAction::Drop),
                Some((id, RunView::Running)) => (
                    Some(id),
                    match self.on_resolved {
                        OnResolved::Continue => ResolvedAction::Continue,
                        OnResolved::Cancel => ResolvedAction::Cancel,
                    },
                ),
                _ => (None, ResolvedAction::Nothing),
            };
            return Decision::Resolved {
                group,
                run_id,
                action,
            };
        }
        match view {
            Some((run_id, RunView::Queued | RunView::Running)) => {
                return Decision::Attached { group, run_id };
            }
            Some((run_id, RunView::Ended { at_ms })) => {
                let until_ms = at_ms.saturating_add(self.cooldown.as_millis() as u64);
                if now_ms < until_ms {
                    return Decision::CooledDown {
                        group,
                        run_id,
                        until_ms,
                    };
                }
            }
            // Started but not recorded yet is under way; a record pruned long ago is not.
            Some((run_id, RunView::Unknown)) => {
                let started = last.as_ref().map_or(0, |g| g.started_ms);
                if now_ms.saturating_sub(started) < 60_000 {
                    return Decision::Attached { group, run_id };
                }
            }
            None => {}
        }
        if let Some(b) = &state.braked {
            return Decision::Braked {
                reason: b.reason.clone(),
                tripped: false,
            };
        }
        if let Some(storm) = self.storm {
            let since = now_ms.saturating_sub(storm.window.as_millis() as u64);
            state.starts.retain(|&t| t > since);
            if state.starts.len() as u64 >= u64::from(storm.runs) {
                let reason = format!(
                    "{} runs within {}: the storm brake is on until a person re-arms the trigger (medic trigger rearm)",
                    state.starts.len(),
                    humantime::format_duration(storm.window)
                );
                state.braked = Some(Brake {
                    at_ms: now_ms,
                    reason: reason.clone(),
                });
                return Decision::Braked {
                    reason,
                    tripped: true,
                };
            }
        }
        Decision::Start { group }
    }
}

impl State {
    /// Records a run started for `group`.
    pub fn started(&mut self, group: &str, run_id: &str, now_ms: u64) {
        self.groups.insert(
            group.to_owned(),
            GroupRun {
                run_id: run_id.to_owned(),
                started_ms: now_ms,
            },
        );
        self.starts.push(now_ms);
    }

    /// Forgets groups whose last run ended long ago (more than `keep` before `now_ms`), so
    /// the state does not grow with every distinct alert ever seen.
    pub fn forget_old(&mut self, now_ms: u64, keep: Duration, run: &dyn Fn(&str) -> RunView) {
        let before = now_ms.saturating_sub(keep.as_millis() as u64);
        self.groups.retain(|_, g| match run(&g.run_id) {
            RunView::Ended { at_ms } => at_ms >= before,
            RunView::Unknown => g.started_ms >= before,
            RunView::Queued | RunView::Running => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: &str, instance: &str) -> Alert {
        Alert {
            status: status.into(),
            labels: [("alertname", "WebDown"), ("instance", instance)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
            fingerprint: format!("fp-{instance}"),
        }
    }

    fn policy() -> Policy {
        Policy {
            group_by: vec!["instance".into()],
            cooldown: Duration::from_secs(300),
            storm: Some(Storm {
                runs: 3,
                window: Duration::from_secs(600),
            }),
            on_resolved: OnResolved::Continue,
        }
    }

    #[test]
    fn one_run_per_group_then_a_cooldown_then_a_new_run() {
        let p = policy();
        let mut s = State::default();
        let a = alert("firing", "a:80");
        let d = p.decide(&mut s, &a, 1_000, &|_| RunView::Unknown);
        assert_eq!(
            d,
            Decision::Start {
                group: "instance=a:80".into()
            }
        );
        s.started("instance=a:80", "r1", 1_000);
        // Re-sent while the run is under way: attached.
        for view in [RunView::Queued, RunView::Running, RunView::Unknown] {
            let d = p.decide(&mut s, &a, 2_000, &|_| view);
            assert!(
                matches!(d, Decision::Attached { ref run_id, .. } if run_id == "r1"),
                "{d:?}"
            );
        }
        // Another instance is another group.
        let b = alert("firing", "b:80");
        assert!(matches!(
            p.decide(&mut s, &b, 2_000, &|_| RunView::Running),
            Decision::Start { .. }
        ));
        // Ended at 10 s: cooled down until 310 s, then a new run.
        let ended = |_: &str| RunView::Ended { at_ms: 10_000 };
        let d = p.decide(&mut s, &a, 309_999, &ended);
        assert_eq!(
            d,
            Decision::CooledDown {
                group: "instance=a:80".into(),
                run_id: "r1".into(),
                until_ms: 310_000
            }
        );
        assert!(matches!(
            p.decide(&mut s, &a, 310_000, &ended),
            Decision::Start { .. }
        ));
    }

    #[test]
    fn the_storm_brake_trips_and_holds_until_rearmed() {
        let p = policy();
        let mut s = State::default();
        for (i, t) in [1_000u64, 2_000, 3_000].into_iter().enumerate() {
            let a = alert("firing", &format!("h{i}"));
            assert!(matches!(
                p.decide(&mut s, &a, t, &|_| RunView::Unknown),
                Decision::Start { .. }
            ));
            s.started(&p.group(&a), &format!("r{i}"), t);
        }
        let d = p.decide(&mut s, &alert("firing", "h9"), 4_000, &|_| RunView::Unknown);
        assert!(matches!(d, Decision::Braked { tripped: true, .. }), "{d:?}");
        // Still on after the window has passed: a person re-arms it.
        let d = p.decide(&mut s, &alert("firing", "h9"), 4_000_000, &|_| {
            RunView::Unknown
        });
        assert!(
            matches!(d, Decision::Braked { tripped: false, .. }),
            "{d:?}"
        );
        s.braked = None;
        assert!(matches!(
            p.decide(&mut s, &alert("firing", "h9"), 4_000_000, &|_| {
                RunView::Unknown
            }),
            Decision::Start { .. }
        ));
    }

    #[test]
    fn a_resolved_alert_drops_a_queued_run_and_continues_or_cancels_a_running_one() {
        let mut p = policy();
        let mut s = State::default();
        s.started("instance=a:80", "r1", 1_000);
        let r = alert("resolved", "a:80");
        let action = |p: &Policy, s: &mut State, v: RunView| match p.decide(s, &r, 2_000, &|_| v) {
            Decision::Resolved { action, .. } => action,
            other => panic!("{other:?}"),
        };
        assert_eq!(action(&p, &mut s, RunView::Queued), ResolvedAction::Drop);
        assert_eq!(
            action(&p, &mut s, RunView::Running),
            ResolvedAction::Continue
        );
        assert_eq!(
            action(&p, &mut s, RunView::Ended { at_ms: 1_500 }),
            ResolvedAction::Nothing
        );
        p.on_resolved = OnResolved::Cancel;
        assert_eq!(action(&p, &mut s, RunView::Running), ResolvedAction::Cancel);
        // Without group_by the fingerprint is the group.
        p.group_by.clear();
        assert_eq!(p.group(&r), "fp-a:80");
    }
}
