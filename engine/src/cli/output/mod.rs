//! Output: lines for a person, or one JSON object per event for machines; and the plan.

use std::io::Write;
use std::time::Duration;

use crate::executor::{
    Event, Observer, Phase, RunOutcome, RunReport, StepReport, StepStatus, TargetReport,
};
use crate::host::{Failure, Value};
use crate::runbook::{Arg, OnFailure, Plan, PlanStep, StepRollback, template};

mod plan;
mod plan_json;

pub use plan::render_plan;
pub use plan_json::plan_json;

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
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
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
        format!("{}µs", d.as_micros())
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub struct HumanOutput {
    style: Style,
    verbose: u8,
    id_width: usize,
    plugin_width: usize,
    run_id: String,
}

impl HumanOutput {
    pub fn new(color: bool, verbose: u8) -> Self {
        HumanOutput {
            style: Style { color },
            verbose,
            id_width: 0,
            plugin_width: 0,
            run_id: String::new(),
        }
    }

    fn mark(&self, status: &StepStatus) -> String {
        match status {
            StepStatus::Succeeded => self.style.green("✓"),
            StepStatus::Failed => self.style.red("✗"),
            StepStatus::Errored { .. } => self.style.red("!"),
            StepStatus::Skipped { .. } => self.style.dim("-"),
        }
    }

    fn details(&self, out: &mut impl Write, step: &StepReport) {
        let Some(inv) = step.attempts.last().map(|a| &a.invocation) else {
            return;
        };
        let indent = "      ";
        // A denial is usually the summary already; list further ones only.
        let skip = usize::from(matches!(inv.result, Err(Failure::Denied { .. })));
        for u in inv.capability_uses.iter().filter(|u| !u.allowed).skip(skip) {
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
        let shown = if self.verbose > 0 { inv.logs.len() } else { 5 };
        let tail = inv.logs.len().saturating_sub(shown);
        for line in &inv.logs[tail..] {
            // The record keeps up to 4 KiB a line; a terminal gets the start of it.
            let shown: String = line.message.chars().take(200).collect();
            let more = if shown.len() < line.message.len() {
                " …"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{indent}{} {shown}{more}",
                self.style.dim(&format!("[{}]", line.level))
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
        if matches!(inv.result, Err(Failure::Trap { .. })) && !inv.stderr.trim().is_empty() {
            let _ = writeln!(out, "{indent}{}", self.style.dim("plugin stderr (tail):"));
            let lines: Vec<&str> = inv.stderr.trim_end().lines().collect();
            for line in &lines[lines.len().saturating_sub(8)..] {
                let _ = writeln!(out, "{indent}  {line}");
            }
        }
    }
}

impl Observer for HumanOutput {
    fn on_event(&mut self, event: &Event<'_>) {
        // Text from plugins, parameters and runbooks is escaped before it reaches the
        // terminal; the plan (for the header) is the runbook's, cleaned where shown.
        let mut owned = crate::executor::OwnedEvent::from_event(event);
        super::terminal::sanitize(&mut owned);
        let plan = match event {
            Event::RunStarted { plan, .. } => Some(*plan),
            _ => None,
        };
        self.show(&owned, plan);
    }
}

impl HumanOutput {
    fn show(&mut self, owned: &crate::executor::OwnedEvent, plan: Option<&Plan>) {
        let Some(event) = owned.as_event(plan) else {
            return;
        };
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match &event {
            Event::RunStarted {
                run_id,
                plan,
                approval,
            } => {
                self.run_id = (*run_id).to_owned();
                let all = plan
                    .steps
                    .iter()
                    .chain(&plan.rollback)
                    .chain(&plan.verify)
                    .chain(&plan.finally);
                self.id_width = all
                    .map(|s| s.id.len() + if s.rollback.is_some() { 9 } else { 0 })
                    .max()
                    .unwrap_or(0);
                self.plugin_width = plan
                    .plugins
                    .iter()
                    .map(|p| p.alias.len())
                    .max()
                    .unwrap_or(0);
                let env = if plan.environment.name == crate::runbook::plan::DEFAULT_ENVIRONMENT {
                    String::new()
                } else {
                    format!(
                        " · env {}{}",
                        plan.environment.name,
                        if plan.environment.protected {
                            " (protected)"
                        } else {
                            ""
                        }
                    )
                };
                let _ = writeln!(
                    out,
                    "{} {} {}",
                    self.style.bold("▶"),
                    self.style.bold(&super::terminal::clean(&plan.name)),
                    self.style.dim(&format!(
                        "· {}{env} · run {run_id}",
                        plural(plan.steps.len(), "step")
                    ))
                );
                if let Some(a) = approval {
                    let _ = writeln!(
                        out,
                        "  {}",
                        self.style
                            .yellow(&format!("approved by {}: {}", a.by, a.reason))
                    );
                }
            }
            Event::PhaseStarted { phase, reason } => {
                let title = match phase {
                    Phase::Steps => return,
                    Phase::Rollback => format!("↩ rolling back: {reason}"),
                    Phase::Verify => format!("⚕ verifying {reason}"),
                    Phase::Finally => "⋯ finally".to_owned(),
                };
                let _ = writeln!(out, "{}", self.style.bold(&title));
            }
            Event::StepStarted { .. } => {}
            Event::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => {
                let _ = writeln!(
                    out,
                    "  {} {id} waits for approval (up to {}): {prompt}",
                    self.style.yellow("⏸"),
                    humantime::format_duration(*timeout)
                );
                let _ = writeln!(out, "      {}", self.style.dim(&format!("approve: medic approve {0} --reason \"...\"   reject: medic reject {0} --reason \"...\"", self.run_id)));
            }
            Event::ApprovalDecided { id, decision } => {
                if let crate::executor::Decision::Approved { by, reason } = decision {
                    let _ = writeln!(
                        out,
                        "    {} {id} approved by {by}: {reason}",
                        self.style.green("✓")
                    );
                }
            }
            Event::Baking { id, wait } => {
                let _ = writeln!(
                    out,
                    "    {} {:w$}  {}",
                    self.style.dim("⧗"),
                    id,
                    self.style.dim(&format!(
                        "baking {} before the first check",
                        format_duration(*wait)
                    )),
                    w = self.id_width
                );
            }
            Event::AttemptFinished { id, note, wait, .. } => {
                let _ = writeln!(
                    out,
                    "    {} {:w$}  {}",
                    self.style.dim("↻"),
                    id,
                    self.style
                        .dim(&format!("{note}; again in {}", format_duration(*wait))),
                    w = self.id_width
                );
            }
            Event::TargetFinished { id, target, .. } => {
                let mark = self.mark(&target.status);
                let _ = writeln!(
                    out,
                    "    {mark} {:idw$}  {}  {:>6}  {}",
                    id,
                    self.style.dim(&target.target),
                    format_duration(target.duration),
                    target.summary,
                    idw = self.id_width,
                );
            }
            Event::StepFinished { report } => {
                let mark = self.mark(&report.status);
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
                if report.status.is_failure() || self.verbose > 1 {
                    self.details(&mut out, report);
                }
            }
            Event::RunFinished { report } => {
                let took = format_duration(report.duration);
                let Ended {
                    failed,
                    which,
                    undone_which,
                } = ended(report);
                let line = match report.outcome {
                    RunOutcome::Succeeded if failed.is_empty() => {
                        self.style.green(&format!("✓ succeeded in {took}"))
                    }
                    RunOutcome::Succeeded => self.style.green(&format!(
                        "✓ succeeded in {took} (tolerated failures: {})",
                        failed.join(", ")
                    )),
                    RunOutcome::Failed => self.style.red(&format!("✗ failed after {took}{which}")),
                    RunOutcome::RolledBack => self.style.yellow(&format!(
                        "↩ rolled back and verified healthy after {took}{undone_which}"
                    )),
                    RunOutcome::RollbackFailed => self.style.red(&format!(
                        "✗ ROLLBACK FAILED after {took}: a person must act now{which}"
                    )),
                    RunOutcome::Cancelled => self
                        .style
                        .yellow(&format!("■ cancelled after {took}{}", cancel_note(report))),
                    RunOutcome::DryRun if failed.is_empty() => self.style.green(&format!(
                        "✓ dry run in {took}: every step would run; nothing was changed"
                    )),
                    RunOutcome::DryRun => self.style.green(&format!(
                        "✓ dry run in {took}: the actions would run; nothing was changed, so checks after them saw the system as it was{which}"
                    )),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

/// The main steps a run's last line names.
struct Ended<'a> {
    /// The steps that failed.
    failed: Vec<&'a str>,
    /// Those, and those interrupted, as `: step a; interrupted: step b`.
    which: String,
    /// The same after a rollback: `; failed: step a; interrupted: step b`.
    undone_which: String,
}

fn ended(report: &RunReport) -> Ended<'_> {
    // A step cut off by a dead or aborted process did not fail: told apart.
    let (interrupted, failed): (Vec<&StepReport>, Vec<&StepReport>) = report
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Steps && s.status.is_failure())
        .partition(|s| s.summary == crate::executor::INTERRUPTED);
    let ids = |steps: &[&StepReport]| {
        let names: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        let s = if names.len() == 1 { "" } else { "s" };
        format!("step{s} {}", names.join(", "))
    };
    let failed_part = (!failed.is_empty()).then(|| ids(&failed));
    let interrupted_part =
        (!interrupted.is_empty()).then(|| format!("interrupted: {}", ids(&interrupted)));
    let joined = |parts: [Option<String>; 2], lead: &str| {
        let parts: Vec<String> = parts.into_iter().flatten().collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("{lead}{}", parts.join("; "))
        }
    };
    Ended {
        which: joined([failed_part.clone(), interrupted_part.clone()], ": "),
        undone_which: joined(
            [
                failed_part.map(|f| format!("failed: {f}")),
                interrupted_part,
            ],
            "; ",
        ),
        failed: failed.iter().map(|s| s.id.as_str()).collect(),
    }
}

/// What a cancel left behind: undone and verified, or not undone at all.
fn cancel_note(report: &RunReport) -> &'static str {
    let undone = report.steps.iter().any(|s| s.phase == Phase::Rollback);
    let verified = report.steps.iter().any(|s| s.phase == Phase::Verify);
    match (undone, verified) {
        (true, true) => ": rolled back and verified",
        (true, false) => ": rolled back",
        (false, _) => ": nothing was rolled back",
    }
}

/// One JSON object per event on stdout.
pub struct JsonOutput;

impl Observer for JsonOutput {
    fn on_event(&mut self, event: &Event<'_>) {
        let value = match event {
            Event::RunStarted {
                run_id,
                plan,
                approval,
            } => serde_json::json!({
                "event": "run_started",
                "run_id": run_id,
                "runbook": plan.name,
                "runbook_path": plan.path,
                "runbook_sha256": plan.sha256,
                "environment": plan.environment.name,
                "approval": approval,
                "steps": plan.steps.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "plugins": plan.plugins.iter().map(|p| serde_json::json!({
                    "alias": p.alias, "source": p.plugin.source.to_string(), "sha256": p.plugin.sha256,
                })).collect::<Vec<_>>(),
            }),
            Event::PhaseStarted { phase, reason } => {
                serde_json::json!({"event": "phase_started", "phase": phase, "reason": reason})
            }
            Event::StepStarted { phase, id, plugin } => {
                serde_json::json!({"event": "step_started", "phase": phase, "step": id, "plugin": plugin})
            }
            Event::Baking { id, wait } => serde_json::json!({
                "event": "baking", "step": id, "wait_ms": wait.as_millis() as u64,
            }),
            Event::AttemptFinished {
                id,
                attempt,
                note,
                wait,
            } => serde_json::json!({
                "event": "attempt_finished", "step": id, "attempt": attempt, "note": note, "wait_ms": wait.as_millis() as u64,
            }),
            Event::TargetFinished { id, target, .. } => {
                let target: &TargetReport = target;
                serde_json::json!({"event": "target_finished", "step": id, "target": target})
            }
            Event::StepFinished { report } => {
                serde_json::json!({"event": "step_finished", "step": report})
            }
            Event::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => serde_json::json!({
                "event": "approval_requested", "step": id, "prompt": prompt, "timeout_ms": timeout.as_millis() as u64,
            }),
            Event::ApprovalDecided { id, decision } => {
                serde_json::json!({"event": "approval_decided", "step": id, "decision": decision})
            }
            Event::RunFinished { report } => serde_json::json!({
                "event": "run_finished",
                "run_id": report.run_id,
                "outcome": report.outcome,
                "duration_ms": report.duration.as_millis() as u64,
            }),
        };
        json_line(&value);
    }
}

/// Prints `value` as one line of JSON, in one write: a reader of a process killed mid-line
/// (a SIGKILL) sees whole lines only. Written piecemeal through
/// stdout's line buffer (1 KiB), a longer line went out in pieces, and a SIGKILL between
/// them left it cut (seen in the SIGKILL campaign of `tests/e2e/recovery.rs`). One write
/// to a pipe is atomic up to PIPE_BUF (4 KiB); longer lines may still be cut there.
pub(crate) fn json_line(value: &impl serde::Serialize) {
    json_line_to(&mut std::io::stdout().lock(), value);
}

fn json_line_to(out: &mut impl Write, value: &impl serde::Serialize) {
    let mut line = serde_json::to_vec(value).expect("output values serialize");
    line.push(b'\n');
    let _ = out.write_all(&line);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// What reaches the pipe: the length of each write.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_event_line_longer_than_stdouts_buffer_reaches_the_pipe_in_one_write() {
        // Stdout is a line writer with a 1 KiB buffer; a step's report is often longer.
        let mut out = std::io::LineWriter::new(Writes::default());
        let long = serde_json::json!({"event": "step_finished", "summary": "x".repeat(3000)});
        for value in [&long, &serde_json::json!({"event": "step_started"})] {
            super::json_line_to(&mut out, value);
        }
        let short = serde_json::to_vec(&serde_json::json!({"event": "step_started"})).unwrap();
        let long = serde_json::to_vec(&long).unwrap();
        assert_eq!(out.get_ref().0, [long.len() + 1, short.len() + 1]);
    }
}
