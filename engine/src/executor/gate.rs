//! Gates: a check repeated at an interval until it passes enough times in a row, fails too
//! often, or runs out of time; an inconclusive answer may pause for a person.

use std::time::{Duration, Instant};

use super::{Decision, Event, Judgement, Observer, Run, StepReport, StepStatus, judge, summary_of};
use crate::host::Values;
use crate::runbook::{Gate, PlanStep};

impl Run<'_> {
    /// Checks until the gate decides; leaves the verdict and every check in `report`.
    pub(super) async fn gate(
        &mut self,
        step: &PlanStep,
        gate: Gate,
        params: &Values,
        report: &mut StepReport,
        observer: &mut dyn Observer,
    ) {
        let (mut passes, mut fails, mut checks) = (0u32, 0u32, 0u32);
        if !gate.delay.is_zero() {
            observer.on_event(&Event::Baking {
                id: &step.id,
                wait: gate.delay,
            });
            if !self.cancel.sleep(gate.delay).await {
                report.status = StepStatus::Failed;
                report.summary = "cancelled before the first check".into();
                return;
            }
        }
        let checks_started = Instant::now();
        loop {
            checks += 1;
            let attempt = self.attempt(step, params, checks).await;
            let mut decided = None;
            match judge(&attempt.invocation) {
                Judgement::Pass => passes += 1,
                Judgement::Fail => {
                    passes = 0;
                    fails += 1;
                }
                // A person decides: the data cannot, and aborting may undo a good change.
                Judgement::Inconclusive if gate.pause_on_inconclusive => {
                    let prompt = format!(
                        "{} is inconclusive: {}. Approve to pass this gate, reject to fail it",
                        step.id,
                        summary_of(&attempt.invocation)
                    );
                    let decision = self.ask(&step.id, &prompt, gate.timeout, observer).await;
                    decided = Some(match decision {
                        Decision::Approved { by, reason } => (
                            StepStatus::Succeeded,
                            format!("inconclusive, passed by {by}: {reason}"),
                        ),
                        Decision::Rejected { by, reason } => (
                            StepStatus::Failed,
                            format!("inconclusive, failed by {by}: {reason}"),
                        ),
                        Decision::TimedOut => (
                            StepStatus::Failed,
                            format!(
                                "inconclusive, and nobody decided within {}",
                                humantime::format_duration(gate.timeout)
                            ),
                        ),
                        Decision::Cancelled => (
                            StepStatus::Failed,
                            "inconclusive; cancelled while waiting for a decision".to_owned(),
                        ),
                    });
                }
                // Neither counts; a gate that only ever hears "don't know" ends at its time limit.
                Judgement::Inconclusive => passes = 0,
            }
            let last = summary_of(&attempt.invocation);
            let elapsed = checks_started.elapsed();
            let verdict = if decided.is_some() {
                decided
            } else if passes >= gate.successes && elapsed >= gate.hold {
                Some((
                    StepStatus::Succeeded,
                    format!(
                        "passed {passes} time{} in a row ({checks} checks): {last}",
                        if passes == 1 { "" } else { "s" }
                    ),
                ))
            } else if fails >= gate.failures {
                Some((
                    StepStatus::Failed,
                    format!(
                        "failed {fails} time{} ({checks} checks): {last}",
                        if fails == 1 { "" } else { "s" }
                    ),
                ))
            } else if elapsed + gate.interval > gate.timeout {
                Some((
                    StepStatus::Failed,
                    format!(
                        "did not pass {} times in a row within {}: {last}",
                        gate.successes,
                        humantime::format_duration(gate.timeout)
                    ),
                ))
            } else {
                None
            };
            match verdict {
                Some((status, summary)) => {
                    report.attempts.push(attempt);
                    report.status = status;
                    report.summary = summary;
                    break;
                }
                None => {
                    let note = if gate.hold.is_zero() || elapsed >= gate.hold {
                        format!(
                            "check {checks}: {last} ({passes}/{} in a row)",
                            gate.successes
                        )
                    } else {
                        format!(
                            "check {checks}: {last} (watching: {} of {})",
                            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                            humantime::format_duration(gate.hold)
                        )
                    };
                    observer.on_event(&Event::AttemptFinished {
                        id: &step.id,
                        attempt: &attempt,
                        note: &note,
                        wait: gate.interval,
                    });
                    report.attempts.push(attempt);
                    if !self.cancel.sleep(gate.interval).await {
                        report.status = StepStatus::Failed;
                        report.summary = format!("cancelled after {checks} checks: {last}");
                        break;
                    }
                }
            }
        }
    }
}
