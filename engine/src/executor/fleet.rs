//! Fleet steps: one call per target, `max_concurrency` at a time, inside the run's own task
//! (the futures are not Send), stopping new targets after `max_errors` failures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Event, Observer, Run, StepReport, StepStatus, TargetReport, status_of, summary_of_attempts,
};
use crate::host::{Call, Failure, Value, Values};
use crate::runbook::template;
use crate::runbook::{Fleet, FleetOrder, FleetTargets, PlanStep};

/// How a fleet step's calls (or their undoing) are paced.
#[derive(Clone, Copy)]
pub(super) struct Rate {
    pub(super) concurrency: usize,
    /// Failures tolerated before no new target starts; none: never stop (rollbacks).
    pub(super) max_errors: Option<usize>,
    pub(super) retry: Option<crate::runbook::Retry>,
}

/// One target's call, before it runs.
pub(super) struct Job {
    pub(super) target: String,
    pub(super) call: Call,
    /// The parameters as they may be shown.
    pub(super) shown: Values,
}

/// One target's call, after.
pub(super) struct Done {
    pub(super) report: TargetReport,
    /// Unmasked parameters and outputs: a revert needs the real values.
    pub(super) params: Values,
    pub(super) outputs: Option<Values>,
}

impl Run<'_> {
    /// The targets of a fleet step, in the order they are to run.
    pub(super) fn targets(
        &self,
        fleet: &Fleet,
        ctx: &minijinja::Value,
    ) -> Result<Vec<String>, String> {
        let env = template::environment();
        let mut targets: Vec<String> = match &fleet.targets {
            FleetTargets::List(items) => items
                .iter()
                .map(|t| template::render(&env, t, ctx))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("fleet targets: {e}"))?,
            FleetTargets::Expr(expr) => {
                template::eval_list(&env, expr, ctx).map_err(|e| format!("fleet targets {e}"))?
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for t in &targets {
            if t.trim().is_empty() {
                return Err("fleet targets include an empty name".into());
            }
            if !seen.insert(t.as_str()) {
                return Err(format!("fleet target `{t}` is listed twice"));
            }
        }
        match fleet.order {
            FleetOrder::Listed => {}
            FleetOrder::Reverse => targets.reverse(),
            FleetOrder::Random => {
                // Fisher-Yates over a xorshift seeded from a fresh ULID's random bits: a
                // different order every run, and no dependency for a few lines.
                let mut x = (ulid::Ulid::new().random() as u64) | 1;
                for i in (1..targets.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    targets.swap(i, (x % (i as u64 + 1)) as usize);
                }
            }
        }
        Ok(targets)
    }

    /// Runs a fleet step: each target in its own sandbox, `max_concurrency` at a time; after
    /// more than `max_errors` failures no new target starts and the step fails.
    pub(super) async fn fleet(
        &mut self,
        step: &PlanStep,
        fleet: &Fleet,
        ctx: &minijinja::Value,
        report: &mut StepReport,
        observer: &mut dyn Observer,
    ) {
        let invalid = |run: &mut Self, report: &mut StepReport, message: String| {
            report.summary = message.clone();
            report.status = StepStatus::Errored {
                failure: Failure::InvalidParams { message },
            };
            // Nothing ran, so a rollback has nothing of this step to undo (unless targets
            // ran before a resume: then the rollback cannot know and undoes them all).
            if !run.resumed_targets.contains_key(&step.id) {
                run.targets_raw.insert(step.id.clone(), Vec::new());
            }
        };
        let targets = match self.targets(fleet, ctx) {
            Ok(t) => t,
            Err(message) => {
                let message = self.redactor().error_text(&message);
                return invalid(self, report, message);
            }
        };
        // Every target's parameters are rendered before the first starts: a template
        // mistake must not leave half a fleet changed.
        let mut jobs = Vec::new();
        for t in &targets {
            let tctx = minijinja::context! { target => t, ..ctx.clone() };
            match self.render(&step.with, &tctx) {
                Ok(params) => jobs.push(Job {
                    target: t.clone(),
                    shown: self.shown_params(&params, &step.secret_params),
                    call: Call::Run { params },
                }),
                Err(message) => {
                    let message = self
                        .redactor()
                        .error_text(&format!("target `{t}`: {message}"));
                    return invalid(self, report, message);
                }
            }
        }
        // Targets that succeeded before a resume are kept, not run again.
        let mut earlier: BTreeMap<String, TargetReport> = self
            .resumed_targets
            .remove(&step.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.status.is_success() && !t.attempts.is_empty())
            .map(|t| (t.target.clone(), t))
            .collect();
        let mut kept = Vec::new();
        jobs.retain(|job| {
            let Some(mut report) = earlier.remove(&job.target) else {
                return true;
            };
            report.summary = format!("{} (before the resume)", report.summary);
            let outputs = report
                .attempts
                .last()
                .and_then(|a| a.invocation.result.as_ref().ok().map(|o| o.outputs.clone()));
            kept.push(Done {
                report,
                params: job.call.params().clone(),
                outputs,
            });
            false
        });
        let n = targets.len();
        let max_errors = fleet.max_errors.of(n, false);
        let rate = Rate {
            concurrency: fleet.max_concurrency.of(n, true).max(1),
            max_errors: Some(max_errors),
            retry: step.retry,
        };
        // Shown (and journaled again) so the run's output lists every target.
        for (i, d) in kept.iter().enumerate() {
            observer.on_event(&Event::TargetFinished {
                id: &step.id,
                target: &d.report,
                more: i + 1 < kept.len(),
            });
        }
        let resumed = kept.len();
        let mut done = kept;
        done.extend(
            self.fan_out(step.plugin, &step.id, step.timeout, jobs, rate, observer)
                .await,
        );
        let by_target: BTreeMap<&str, &Done> =
            done.iter().map(|d| (d.report.target.as_str(), d)).collect();
        // In the order the targets were listed, whatever order they finished in.
        let listed = |pick: &dyn Fn(&Done) -> bool| -> Vec<String> {
            targets
                .iter()
                .filter(|t| by_target.get(t.as_str()).is_some_and(|d| pick(d)))
                .cloned()
                .collect()
        };
        let succeeded = listed(&|d| d.report.status.is_success());
        let failed = listed(&|d| d.report.status.is_failure());
        let not_started = listed(&|d| d.report.attempts.is_empty());
        let outputs: Values = vec![
            ("targets".to_owned(), Value::TextList(targets.clone())),
            ("succeeded".to_owned(), Value::TextList(succeeded.clone())),
            ("failed".to_owned(), Value::TextList(failed.clone())),
            (
                "not_started".to_owned(),
                Value::TextList(not_started.clone()),
            ),
        ]
        .into_iter()
        .collect();
        self.remember(&step.id, Some(outputs));
        let failures: Vec<String> = done
            .iter()
            .filter(|d| d.report.status.is_failure())
            .take(3)
            .map(|d| format!("{} ({})", d.report.target, d.report.summary))
            .collect();
        let mut summary = match (n, resumed) {
            (0, _) => "no targets".to_owned(),
            (n, 0) => format!("{} of {n} targets succeeded", succeeded.len()),
            (n, r) => format!(
                "{} of {n} targets succeeded ({r} before the resume)",
                succeeded.len()
            ),
        };
        if !failed.is_empty() {
            summary += &format!(
                "; failed: {}{}",
                failures.join(", "),
                if failed.len() > failures.len() {
                    format!(" and {} more", failed.len() - failures.len())
                } else {
                    String::new()
                }
            );
        }
        if !not_started.is_empty() {
            summary += &format!("; not started: {}", not_started.join(", "));
        }
        report.status = if failed.len() > max_errors || !not_started.is_empty() {
            StepStatus::Failed
        } else {
            StepStatus::Succeeded
        };
        if failed.len() > max_errors {
            summary += &format!(" (more than max_errors {} failed)", fleet.max_errors);
        } else if !not_started.is_empty() {
            summary += " (cancelled)";
        } else if !failed.is_empty() {
            summary += &format!(" (within max_errors {})", fleet.max_errors);
        }
        report.summary = summary;
        self.targets_raw.insert(
            step.id.clone(),
            done.iter()
                .filter(|d| !d.report.attempts.is_empty())
                .map(|d| {
                    (
                        d.report.target.clone(),
                        d.params.clone(),
                        d.outputs.clone(),
                        d.report.status.is_success(),
                    )
                })
                .collect(),
        );
        report.targets = done.into_iter().map(|d| d.report).collect();
    }

    /// Runs calls for many targets at a bounded concurrency. In-flight calls always finish;
    /// stopping (too many errors, or a cancellation of the current view) only means no new
    /// target starts. Returns every target: those never started as skipped, last.
    pub(super) async fn fan_out(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        jobs: Vec<Job>,
        rate: Rate,
        observer: &mut dyn Observer,
    ) -> Vec<Done> {
        use futures_util::FutureExt;
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut pending = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut errors = 0usize;
        let stop = |errors: usize| {
            if rate.max_errors.is_some_and(|m| errors > m) {
                Some(format!(
                    "not started: more than max_errors ({}) failed",
                    rate.max_errors.unwrap_or(0)
                ))
            } else if self.cancel.is_cancelled() {
                Some("not started: the run was cancelled".to_owned())
            } else {
                None
            }
        };
        loop {
            while running.len() < rate.concurrency && stop(errors).is_none() {
                let Some(job) = pending.next() else { break };
                running.push(self.one_target(plugin, id, timeout, rate, job));
            }
            let Some(first) = running.next().await else {
                break;
            };
            // Every target that finished meanwhile too: told together, they are made durable
            // together (group commit), and none waits for the others' flushes.
            let mut finished = vec![first];
            while let Some(Some(d)) = running.next().now_or_never() {
                finished.push(d);
            }
            let last = finished.len() - 1;
            for (i, d) in finished.into_iter().enumerate() {
                if d.report.status.is_failure() {
                    errors += 1;
                }
                observer.on_event(&Event::TargetFinished {
                    id,
                    target: &d.report,
                    more: i < last,
                });
                done.push(d);
            }
        }
        let reason = stop(errors).unwrap_or_default();
        let mut pending = pending.peekable();
        while let Some(job) = pending.next() {
            let report = TargetReport {
                target: job.target,
                status: StepStatus::Skipped {
                    reason: reason.clone(),
                },
                summary: reason.clone(),
                started_ms: self.elapsed_ms(),
                duration: Duration::ZERO,
                params: job.shown,
                attempts: Vec::new(),
            };
            observer.on_event(&Event::TargetFinished {
                id,
                target: &report,
                more: pending.peek().is_some(),
            });
            done.push(Done {
                report,
                params: Values::new(),
                outputs: None,
            });
        }
        done
    }

    /// One target's call, retried like a step.
    pub(super) async fn one_target(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        rate: Rate,
        job: Job,
    ) -> Done {
        let started = Instant::now();
        let started_ms = self.elapsed_ms();
        // The plugin sees which target it works on in its context, and idempotency keys
        // built from the step id stay distinct per target.
        let call_id = format!("{id}[{}]", job.target);
        let (attempts, outputs) = self
            .retried(plugin, &call_id, timeout, rate, &job.call)
            .await;
        let last = &attempts.last().expect("at least one attempt").invocation;
        Done {
            report: TargetReport {
                target: job.target,
                status: status_of(last),
                summary: summary_of_attempts(&attempts, rate.retry),
                started_ms,
                duration: started.elapsed(),
                params: job.shown,
                attempts,
            },
            params: job.call.params().clone(),
            outputs,
        }
    }
}
