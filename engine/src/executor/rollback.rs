//! The rollback path: what the run did, undone newest first (fleet steps target by target),
//! then `[[rollback]]` and `[[verify]]`.

use std::time::{Duration, Instant};

use super::fleet::{Fanned, Job, NAMED, Rate, some_of};
use super::{
    Event, Observer, Phase, Run, StepReport, StepStatus, TargetRaw, TargetReport, plural_targets,
    status_of, summary_of_attempts, undo_retry,
};
use crate::host::{Call, Failure, PluginKind, Values};
use crate::runbook::{Fleet, PlanStep, StepRollback};

/// Why the run rolls back, as shown and journaled.
pub(super) fn reason(
    cancelled: bool,
    resume: &super::Resume,
    reports: &[StepReport],
) -> &'static str {
    if cancelled {
        "the run was cancelled"
    } else if resume.rollback_only && !resume.in_progress.is_empty() {
        // Picked up after its process stopped mid-step: nothing is known to have failed,
        // only that the step may have acted.
        "the run was interrupted"
    } else if resume.rollback_only && !reports.iter().any(|r| r.status.is_failure()) {
        "asked for"
    } else {
        "a step failed"
    }
}

impl Run<'_> {
    /// Undoes a fleet step target by target (newest first, at the step's concurrency, never
    /// stopping early). Returns whether every target was undone.
    pub(super) async fn rollback_fleet(
        &mut self,
        step: &PlanStep,
        fleet: &Fleet,
        rb: &StepRollback,
        observer: &mut dyn Observer,
    ) -> bool {
        let plan = self.plan;
        let id = format!("{}.rollback", step.id);
        let started = Instant::now();
        let is_action = plan.plugins[step.plugin].plugin.manifest.kind == PluginKind::Action;
        let ctx = self.context(None);
        let mut broken: Vec<(String, String)> = Vec::new();
        let entries: Vec<TargetRaw> = match self.targets_raw.get(&step.id) {
            Some(ran) => ran
                .iter()
                .rev()
                .filter(|(.., ok)| *ok || is_action)
                .cloned()
                .collect(),
            // Ran in an earlier process: its record says which targets ran. When that
            // process died during the step, nobody knows, so every target is undone
            // (rollbacks must be safe when there is nothing to undo).
            None => {
                let recorded: Vec<(String, Option<Values>, bool)> = self
                    .reports
                    .iter()
                    .find(|r| r.id == step.id)
                    .map(|r| {
                        r.targets
                            .iter()
                            .rev()
                            .filter(|t| !t.attempts.is_empty())
                            .filter(|t| t.status.is_success() || is_action)
                            .map(|t| {
                                let out = t.attempts.last().and_then(|a| {
                                    a.invocation.result.as_ref().ok().map(|o| o.outputs.clone())
                                });
                                (t.target.clone(), out, t.status.is_success())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let names = if recorded.is_empty() {
                    match self.targets(fleet, &ctx) {
                        Ok(t) => t.into_iter().rev().map(|t| (t, None, false)).collect(),
                        Err(message) => {
                            broken.push(("(targets)".into(), message));
                            Vec::new()
                        }
                    }
                } else {
                    recorded
                };
                let mut entries = Vec::new();
                for (target, outputs, ok) in names {
                    let tctx = minijinja::context! { target => &target, ..ctx.clone() };
                    match self.render(&step.with, &tctx) {
                        Ok(params) => entries.push((target, params, outputs, ok)),
                        Err(message) => broken.push((target, message)),
                    }
                }
                entries
            }
        };
        let mut jobs = Vec::new();
        for (target, params, outputs, succeeded) in entries {
            let outputs = outputs.unwrap_or_default();
            match rb {
                StepRollback::Revert => jobs.push(Job {
                    shown: self.shown_params(&params, &step.secret_params),
                    call: Call::Revert { params, outputs },
                    target,
                }),
                StepRollback::Call {
                    with,
                    secret_params,
                    ..
                } => {
                    let status = if succeeded { "succeeded" } else { "failed" };
                    let own = self.context(Some((&step.id, &outputs, status)));
                    let tctx = minijinja::context! { target => &target, ..own };
                    match self.render(with, &tctx) {
                        Ok(p) => jobs.push(Job {
                            shown: self.shown_params(&p, secret_params),
                            call: Call::Run { params: p },
                            target,
                        }),
                        Err(message) => broken.push((target, message)),
                    }
                }
            }
        }
        let (plugin, timeout) = match rb {
            StepRollback::Revert => (step.plugin, step.timeout),
            StepRollback::Call {
                plugin, timeout, ..
            } => (*plugin, *timeout),
        };
        let alias = plan.plugins[plugin].alias.clone();
        observer.on_event(&Event::StepStarted {
            phase: Phase::Rollback,
            id: &id,
            plugin: &alias,
        });
        let n = jobs.len() + broken.len();
        let mut fanned = Fanned::new(n, false);
        for (target, message) in broken {
            let summary = self.redactor().error_text(&message);
            let report = std::sync::Arc::new(TargetReport {
                target,
                status: StepStatus::Errored {
                    failure: Failure::InvalidParams {
                        message: summary.clone(),
                    },
                },
                summary,
                started_ms: self.elapsed_ms(),
                duration: Duration::ZERO,
                params: Vec::new(),
                attempts: Vec::new(),
            });
            observer.on_event(&Event::TargetFinished {
                id: &id,
                plugin: &alias,
                target: &report,
                more: false,
            });
            fanned.add(report, Default::default());
        }
        let rate = Rate {
            concurrency: fleet.max_concurrency.of(jobs.len(), true).max(1),
            max_errors: None,
            retry: undo_retry(step),
        };
        self.fan_out(plugin, &id, timeout, jobs, rate, &mut fanned, observer)
            .await;
        let failed = fanned.tally.failed;
        let report = StepReport {
            id,
            phase: Phase::Rollback,
            plugin: alias,
            status: if failed == 0 {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            },
            summary: if failed == 0 {
                format!("undid {}", plural_targets(n))
            } else {
                format!(
                    "{failed} of {} could not be undone: {}",
                    plural_targets(n),
                    some_of(&fanned.failures, NAMED, failed)
                )
            },
            duration: started.elapsed(),
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
            fleet: Some(fanned.tally),
        };
        observer.on_event(&Event::StepFinished { report: &report });
        let ok = report.status.is_success();
        self.reports.push(report);
        ok
    }

    /// Undoes what the run did, newest first, then runs `[[rollback]]` and `[[verify]]`.
    /// Returns whether everything succeeded and verified.
    pub(super) async fn rollback(&mut self, reason: &str, observer: &mut dyn Observer) -> bool {
        // Once started, the rollback and its verify run to the end (within their own
        // timeouts) whatever the forward steps' cancel says: only an abort stops them.
        self.cancel = self.opts.cancel.for_undo();
        observer.on_event(&Event::PhaseStarted {
            phase: Phase::Rollback,
            reason,
        });
        let plan = self.plan;
        let mut ok = true;
        // The failed step is undone too when its plugin was called: an action that failed
        // half-way may have changed things. Rollbacks must therefore be safe to run when there
        // is nothing to undo. A step whose plugin was never called (its approval refused or
        // timed out, its parameters unrenderable, skipped) changed nothing: not undone.
        let done: Vec<(usize, bool)> = self
            .reports
            .iter()
            .filter(|r| r.phase == Phase::Steps)
            .filter(|r| r.ran() || self.interrupted.contains(&r.id))
            .filter_map(|r| {
                let i = plan.steps.iter().position(|s| s.id == r.id)?;
                let is_action =
                    plan.plugins[plan.steps[i].plugin].plugin.manifest.kind == PluginKind::Action;
                (r.status.is_success() || (r.status.is_failure() && is_action))
                    .then_some((i, r.status.is_success()))
            })
            .collect();
        for (i, succeeded) in done.into_iter().rev() {
            let step = &plan.steps[i];
            let Some(rb) = &step.rollback else { continue };
            if let Some(fleet) = &step.fleet {
                // Boxed: held inline, every run in flight would carry a fleet's future.
                ok &= Box::pin(self.rollback_fleet(step, fleet, rb, observer)).await;
                continue;
            }
            let id = format!("{}.rollback", step.id);
            // Steps run by an earlier process are re-rendered from the plan: the journal keeps
            // secrets masked, so their parameters cannot come from it.
            let params = match self.raw.get(&step.id) {
                Some(p) => p.clone(),
                None => self
                    .render(&step.with, &self.context(None))
                    .unwrap_or_default(),
            };
            let outputs = self
                .reports
                .iter()
                .find(|r| r.id == step.id)
                .and_then(|r| self.outputs_of(r))
                .cloned()
                .unwrap_or_default();
            let (plugin, call, timeout, shown) = match rb {
                StepRollback::Revert => (
                    step.plugin,
                    Call::Revert {
                        params: params.clone(),
                        outputs: outputs.clone(),
                    },
                    step.timeout,
                    self.shown_params(&params, &step.secret_params),
                ),
                StepRollback::Call {
                    plugin,
                    with,
                    secret_params,
                    timeout,
                } => {
                    let status = if succeeded { "succeeded" } else { "failed" };
                    let ctx = self.context(Some((&step.id, &outputs, status)));
                    match self.render(with, &ctx) {
                        Ok(p) => (
                            *plugin,
                            Call::Run { params: p.clone() },
                            *timeout,
                            self.shown_params(&p, secret_params),
                        ),
                        Err(message) => {
                            let summary = self.redactor().error_text(&message);
                            let report = StepReport {
                                id,
                                phase: Phase::Rollback,
                                plugin: plan.plugins[*plugin].alias.clone(),
                                status: StepStatus::Errored {
                                    failure: Failure::InvalidParams {
                                        message: summary.clone(),
                                    },
                                },
                                summary,
                                duration: Duration::ZERO,
                                params: Vec::new(),
                                attempts: Vec::new(),
                                targets: Vec::new(),
                                fleet: None,
                            };
                            observer.on_event(&Event::StepFinished { report: &report });
                            self.reports.push(report);
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let alias = plan.plugins[plugin].alias.clone();
            crate::ahead::one_call_follows();
            observer.on_event(&Event::StepStarted {
                phase: Phase::Rollback,
                id: &id,
                plugin: &alias,
            });
            let started = Instant::now();
            let rate = Rate {
                concurrency: 1,
                max_errors: None,
                retry: undo_retry(step),
            };
            let (attempts, ..) = super::step::shown_while(
                self.retried(plugin, &id, timeout, rate, call, false),
                observer,
            )
            .await;
            let last = &attempts.last().expect("at least one attempt").invocation;
            let report = StepReport {
                id: id.clone(),
                phase: Phase::Rollback,
                plugin: alias,
                status: status_of(last),
                summary: summary_of_attempts(&attempts, rate.retry),
                duration: started.elapsed(),
                params: shown,
                attempts,
                targets: Vec::new(),
                fleet: None,
            };
            ok &= report.status.is_success();
            observer.on_event(&Event::StepFinished { report: &report });
            self.reports.push(report);
        }
        ok &= self
            .section(&plan.rollback, Phase::Rollback, observer)
            .await;
        if !plan.verify.is_empty() {
            observer.on_event(&Event::PhaseStarted {
                phase: Phase::Verify,
                reason: "after the rollback",
            });
            ok &= self.section(&plan.verify, Phase::Verify, observer).await;
        }
        ok
    }
}
