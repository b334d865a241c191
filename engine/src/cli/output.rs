//! Progress output: lines for a person, or one JSON object per event for machines.

use std::io::Write;
use std::time::Duration;

use crate::executor::{Event, Observer, StepReport, StepStatus};
use crate::host::Failure;

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.0}µs", d.as_micros())
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

pub struct HumanOutput {
    style: Style,
    verbose: u8,
    id_width: usize,
    plugin_width: usize,
}

impl HumanOutput {
    pub fn new(color: bool, verbose: u8) -> Self {
        HumanOutput {
            style: Style { color },
            verbose,
            id_width: 0,
            plugin_width: 0,
        }
    }

    fn details(&self, out: &mut impl Write, step: &StepReport) {
        let Some(inv) = &step.invocation else { return };
        let indent = "      ";
        // A denial is usually the summary already; list further ones only.
        let denials = inv
            .capability_uses
            .iter()
            .filter(|u| !u.allowed)
            .skip(usize::from(matches!(
                inv.result,
                Err(Failure::Denied { .. })
            )));
        for u in denials {
            let _ = writeln!(
                out,
                "{indent}{} {} {}: {}",
                self.style.red("denied"),
                u.capability,
                u.detail,
                u.result
            );
        }
        // The last few log lines usually say why; all of them are in the record.
        let shown = if self.verbose > 0 { 0 } else { 5 };
        let tail = inv.logs.len().saturating_sub(shown);
        for line in &inv.logs[tail..] {
            let _ = writeln!(
                out,
                "{indent}{} {}",
                self.style.dim(&format!("[{}]", line.level)),
                line.message
            );
        }
        if inv.logs_dropped > 0 {
            let _ = writeln!(
                out,
                "{indent}{}",
                self.style.dim(&format!(
                    "({} more log lines dropped: the plugin exceeded the per-step cap)",
                    inv.logs_dropped
                ))
            );
        }
        // A panic's message is already in the summary; other traps may explain themselves.
        let stderr_matters = matches!(inv.result, Err(Failure::Trap { .. }));
        if stderr_matters && !inv.stderr.trim().is_empty() {
            let _ = writeln!(out, "{indent}{}", self.style.dim("plugin stderr (tail):"));
            for line in inv
                .stderr
                .trim_end()
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let _ = writeln!(out, "{indent}  {line}");
            }
        }
    }
}

impl Observer for HumanOutput {
    fn on_event(&mut self, event: &Event<'_>) {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match event {
            Event::RunStarted { run_id, plan } => {
                self.id_width = plan.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
                self.plugin_width = plan
                    .plugins
                    .iter()
                    .map(|p| p.alias.len())
                    .max()
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{} {} {}",
                    self.style.bold("▶"),
                    self.style.bold(&plan.name),
                    self.style.dim(&format!(
                        "· {} step{} · run {run_id}",
                        plan.steps.len(),
                        if plan.steps.len() == 1 { "" } else { "s" }
                    ))
                );
            }
            Event::StepStarted { .. } => {}
            Event::StepFinished { report, .. } => {
                let mark = match report.status {
                    StepStatus::Succeeded => self.style.green("✓"),
                    StepStatus::Failed => self.style.red("✗"),
                    StepStatus::Errored { .. } => self.style.red("!"),
                };
                let _ = writeln!(
                    out,
                    "  {mark} {:idw$}  {}  {:>6}  {}",
                    report.id,
                    self.style
                        .dim(&format!("{:pw$}", report.plugin, pw = self.plugin_width)),
                    format_duration(report.duration),
                    report.summary,
                    idw = self.id_width,
                );
                if report.status != StepStatus::Succeeded || self.verbose > 1 {
                    self.details(&mut out, report);
                }
            }
            Event::RunFinished { report } => {
                let took = format_duration(report.duration);
                let line = match report.outcome {
                    crate::executor::RunOutcome::Succeeded => {
                        self.style.green(&format!("✓ succeeded in {took}"))
                    }
                    crate::executor::RunOutcome::Failed => {
                        let failed: Vec<&str> = report
                            .steps
                            .iter()
                            .filter(|s| s.status != StepStatus::Succeeded)
                            .map(|s| s.id.as_str())
                            .collect();
                        let s = if failed.len() == 1 { "" } else { "s" };
                        self.style.red(&format!(
                            "✗ failed after {took}: step{s} {}",
                            failed.join(", ")
                        ))
                    }
                };
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

/// One JSON object per event on stdout.
pub struct JsonOutput;

impl Observer for JsonOutput {
    fn on_event(&mut self, event: &Event<'_>) {
        let value = match event {
            Event::RunStarted { run_id, plan } => serde_json::json!({
                "event": "run_started",
                "run_id": run_id,
                "runbook": plan.name,
                "runbook_path": plan.path,
                "runbook_sha256": plan.sha256,
                "steps": plan.steps.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "plugins": plan.plugins.iter().map(|p| serde_json::json!({
                    "alias": p.alias, "source": p.plugin.source.to_string(), "sha256": p.plugin.sha256,
                })).collect::<Vec<_>>(),
            }),
            Event::StepStarted { index, id, plugin } => {
                serde_json::json!({"event": "step_started", "index": index, "step": id, "plugin": plugin})
            }
            Event::StepFinished { index, report } => {
                serde_json::json!({"event": "step_finished", "index": index, "step": report})
            }
            Event::RunFinished { report } => serde_json::json!({
                "event": "run_finished",
                "run_id": report.run_id,
                "outcome": report.outcome,
                "duration_ms": report.duration.as_millis() as u64,
            }),
        };
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}
