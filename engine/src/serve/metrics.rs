//! What `medic serve --metrics` reports, and the observer that counts it.

use super::*;
use crate::store::drills::DrillResult;

/// Recovery-time histogram buckets, in seconds.
pub(super) const RECOVERY_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Plugin call latency buckets, in seconds.
pub(super) const CALL_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Clone, Default)]
pub(super) struct Histogram {
    pub(super) buckets: Vec<u64>,
    pub(super) sum: f64,
    pub(super) count: u64,
}

impl Histogram {
    pub(super) fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    pub(super) fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What `/metrics` reports; counters start from the store's history at start-up.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) runs: BTreeMap<String, u64>,
    pub(super) drills: BTreeMap<(String, String), u64>,
    /// Per drill: from the fault to healthy again.
    pub(super) recovery: BTreeMap<String, Histogram>,
    /// Per drill: when it last passed (ms since the epoch), so that a stale drill can alert.
    pub(super) last_success_ms: BTreeMap<String, u64>,
    pub(super) calls: BTreeMap<String, Histogram>,
    /// Alert decisions, by trigger and decision (and escalations).
    pub(super) alerts: BTreeMap<(String, String), u64>,
    /// Per trigger: from the alert's start to its run's start, and to a successful end.
    pub(super) detect: BTreeMap<String, Histogram>,
    pub(super) remediate: BTreeMap<String, Histogram>,
}

impl Metrics {
    pub(super) fn count_drill(&mut self, r: &DrillRecord) {
        *self
            .drills
            .entry((r.drill.clone(), r.result.name().to_owned()))
            .or_default() += 1;
        if let Some(ms) = r.recover_ms {
            self.recovery
                .entry(r.drill.clone())
                .or_default()
                .observe(RECOVERY_BUCKETS, ms as f64 / 1000.0);
        }
        if r.result == DrillResult::Passed {
            let last = self.last_success_ms.entry(r.drill.clone()).or_default();
            *last = (*last).max(r.ended_ms);
        }
    }

    /// A triggered run's times, in ms from its alert's start (0: unknown, not observed).
    pub(super) fn observe_trigger(
        &mut self,
        trigger: &str,
        starts_at_ms: u64,
        started_ms: u64,
        remediated_ms: Option<u64>,
    ) {
        if starts_at_ms == 0 {
            return;
        }
        let secs = |ms: u64| ms.saturating_sub(starts_at_ms) as f64 / 1000.0;
        self.detect
            .entry(trigger.to_owned())
            .or_default()
            .observe(RECOVERY_BUCKETS, secs(started_ms));
        if let Some(end) = remediated_ms {
            self.remediate
                .entry(trigger.to_owned())
                .or_default()
                .observe(RECOVERY_BUCKETS, secs(end));
        }
    }

    pub(super) fn count_alert(&mut self, trigger: &str, decision: &str) {
        *self
            .alerts
            .entry((trigger.to_owned(), decision.to_owned()))
            .or_default() += 1;
    }

    /// Counts what a run does: plugin call latencies, and how it ended.
    pub(super) fn observe(&mut self, event: &Event<'_>) {
        match event {
            Event::StepFinished { report } => {
                let h = self.calls.entry(report.plugin.clone()).or_default();
                for (_, a) in report.calls() {
                    h.observe(CALL_BUCKETS, a.invocation.duration_us as f64 / 1e6);
                }
            }
            // A fleet's calls are told target by target (its step's end does not repeat them).
            Event::TargetFinished { plugin, target, .. } => {
                if !self.calls.contains_key(*plugin) {
                    self.calls
                        .insert((*plugin).to_owned(), Histogram::default());
                }
                let h = self.calls.get_mut(*plugin).expect("inserted above");
                for a in &target.attempts {
                    h.observe(CALL_BUCKETS, a.invocation.duration_us as f64 / 1e6);
                }
            }
            Event::RunFinished { report } => {
                let outcome = RunStatus::from_outcome(report.outcome).name().to_owned();
                *self.runs.entry(outcome).or_default() += 1;
            }
            _ => {}
        }
    }

    pub(super) fn render(&self, running: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP medic_runs_total Runs recorded, by how they ended.\n# TYPE medic_runs_total counter\n");
        for (outcome, n) in &self.runs {
            let _ = writeln!(out, "medic_runs_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP medic_drills_total Drill executions, by drill and result.\n# TYPE medic_drills_total counter\n");
        for ((drill, result), n) in &self.drills {
            let _ = writeln!(
                out,
                "medic_drills_total{{drill=\"{drill}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP medic_drill_recovery_seconds From the fault to healthy again, per drill run.\n# TYPE medic_drill_recovery_seconds histogram\n");
        for (drill, h) in &self.recovery {
            h.render(
                &mut out,
                "medic_drill_recovery_seconds",
                &format!("drill=\"{drill}\""),
                RECOVERY_BUCKETS,
            );
        }
        out.push_str("# HELP medic_drill_last_success_timestamp_seconds When each drill last passed (alert on time() minus this).\n# TYPE medic_drill_last_success_timestamp_seconds gauge\n");
        for (drill, ms) in &self.last_success_ms {
            let _ = writeln!(
                out,
                "medic_drill_last_success_timestamp_seconds{{drill=\"{drill}\"}} {:.3}",
                *ms as f64 / 1000.0
            );
        }
        out.push_str("# HELP medic_plugin_call_seconds Plugin invocation latency, by plugin declaration.\n# TYPE medic_plugin_call_seconds histogram\n");
        for (plugin, h) in &self.calls {
            h.render(
                &mut out,
                "medic_plugin_call_seconds",
                &format!("plugin=\"{plugin}\""),
                CALL_BUCKETS,
            );
        }
        out.push_str("# HELP medic_trigger_alerts_total Alerts a trigger received, by what it decided (start, attached, cooled_down, braked, resolved, refused; escalated counts escalations).\n# TYPE medic_trigger_alerts_total counter\n");
        for ((trigger, decision), n) in &self.alerts {
            let _ = writeln!(
                out,
                "medic_trigger_alerts_total{{trigger=\"{trigger}\",decision=\"{decision}\"}} {n}"
            );
        }
        for (name, help, per) in [
            (
                "medic_trigger_time_to_detect_seconds",
                "From an alert's start (startsAt) to the start of the run its trigger started.",
                &self.detect,
            ),
            (
                "medic_trigger_time_to_remediate_seconds",
                "From an alert's start to the end of a triggered run that succeeded.",
                &self.remediate,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (trigger, h) in per {
                h.render(
                    &mut out,
                    name,
                    &format!("trigger=\"{trigger}\""),
                    RECOVERY_BUCKETS,
                );
            }
        }
        out.push_str(
            "# HELP medic_drills_running Drills running now.\n# TYPE medic_drills_running gauge\n",
        );
        let _ = writeln!(out, "medic_drills_running {running}");
        out
    }
}

/// Counts what runs do, for the metrics, and logs one line per run.
pub(super) struct Watch {
    pub(super) metrics: Arc<Mutex<Metrics>>,
    pub(super) drill: String,
    pub(super) run: super::cancel::DrillRun,
}

impl Observer for Watch {
    fn on_event(&mut self, event: &Event<'_>) {
        if let Event::RunStarted { run_id, .. } = event {
            *self.run.lock().unwrap() = Some((*run_id).to_owned());
        }
        if let Event::RunFinished { report } = event {
            *self.run.lock().unwrap() = None;
            println!(
                "medic serve: drill {}: run {} ended {} in {}",
                self.drill,
                report.run_id,
                RunStatus::from_outcome(report.outcome).name(),
                humantime::format_duration(Duration::from_millis(
                    report.duration.as_millis() as u64
                ))
            );
        }
        self.metrics.lock().unwrap().observe(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{Attempt, FleetTally, Phase, StepReport, StepStatus, TargetReport};
    use crate::host::{Invocation, Outcome, Status};

    fn attempt(duration_us: u64) -> Attempt {
        Attempt {
            number: 1,
            started_ms: 0,
            invocation: Invocation {
                result: Ok(Outcome {
                    status: Status::Success,
                    summary: "ok".into(),
                    outputs: Vec::new(),
                    metrics: Vec::new(),
                }),
                logs: Vec::new(),
                logs_dropped: 0,
                capability_uses: Vec::new(),
                stderr: String::new(),
                duration_us,
                unmasked_outputs: None,
            },
        }
    }

    #[test]
    fn a_fleets_calls_are_counted_once_each_from_its_targets() {
        let mut m = Metrics::default();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let target = std::sync::Arc::new(TargetReport {
                target: name.into(),
                status: StepStatus::Succeeded,
                summary: "ok".into(),
                started_ms: 0,
                duration: Duration::ZERO,
                params: Vec::new(),
                attempts: vec![attempt(2_000)],
            });
            m.observe(&Event::TargetFinished {
                id: "restart",
                plugin: "supervisor",
                target: &target,
                more: i < 2,
            });
        }
        let step = StepReport {
            id: "restart".into(),
            phase: Phase::Steps,
            plugin: "supervisor".into(),
            status: StepStatus::Succeeded,
            summary: "3 of 3 targets succeeded".into(),
            duration: Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
            fleet: Some(FleetTally {
                targets: 3,
                ran: 3,
                succeeded: 3,
                failed: 0,
            }),
        };
        m.observe(&Event::StepFinished { report: &step });
        let text = m.render(0);
        assert!(
            text.contains("medic_plugin_call_seconds_count{plugin=\"supervisor\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "medic_plugin_call_seconds_bucket{plugin=\"supervisor\",le=\"0.005\"} 3\n"
            ),
            "{text}"
        );
    }
}
