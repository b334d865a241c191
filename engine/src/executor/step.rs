//! One step: its condition, approval, parameters, and its call (retried, or checked as a
//! gate); the sandboxed call itself; and what later steps can see of it.

use std::time::{Duration, Instant};

use super::fleet::Rate;
use std::sync::Arc;

use super::{
    Attempt, Decision, Event, Observer, Phase, Run, StepReport, StepStatus, backoff, retryable,
    status_of, summary_of, summary_of_attempts,
};
use crate::host::Redactor;
use crate::host::redact::MASK;
use crate::host::{
    Call, CallContext, Failure, Invocation, Placement, Sandbox, Value, ValueType, Values,
};
use crate::runbook::plan::text_to_value;
use crate::runbook::template;
use crate::runbook::{Arg, PlanStep};

impl Run<'_> {
    pub(super) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn context(&self, extra: Option<(&str, &Values, &str)>) -> minijinja::Value {
        let view = {
            let mut cache = self.steps_view.lock().unwrap();
            if cache.0 > self.reports.len() {
                *cache = (0, std::sync::Arc::default());
            }
            if cache.0 < self.reports.len() {
                let start = cache.0;
                let map = std::sync::Arc::make_mut(&mut cache.1);
                for r in self.reports[start..]
                    .iter()
                    .filter(|r| r.phase == Phase::Steps)
                {
                    let status = match &r.status {
                        StepStatus::Succeeded => "succeeded",
                        StepStatus::Failed => "failed",
                        StepStatus::Errored { .. } => "errored",
                        StepStatus::Skipped { .. } => "skipped",
                    };
                    let empty = Values::new();
                    let outputs = self.outputs_of(r).unwrap_or(&empty);
                    map.insert(
                        minijinja::Value::from(r.id.as_str()),
                        minijinja::context! { status => status, summary => r.summary.clone(), outputs => template::map_to_jinja(outputs.iter().map(|(k, v)| (k, v))) },
                    );
                }
                cache.0 = self.reports.len();
            }
            cache.1.clone()
        };
        let view = match extra {
            // A rollback sees its own step's outputs too: a copy, as rare as rollbacks.
            Some((id, outputs, status)) => {
                let mut own = (*view).clone();
                own.insert(
                    minijinja::Value::from(id),
                    minijinja::context! { status => status, outputs => template::map_to_jinja(outputs.iter().map(|(k, v)| (k, v))) },
                );
                std::sync::Arc::new(own)
            }
            None => view,
        };
        let steps = minijinja::Value::from_dyn_object(minijinja::value::DynObject::new(view));
        let env = &self.plan.environment;
        minijinja::context! {
            params => template::map_to_jinja(self.plan.params.iter().map(|p| (&p.name, &p.value))),
            vars => template::map_to_jinja(env.vars.iter().map(|(k, v)| (k, v))),
            env => minijinja::context! { name => env.name.clone(), protected => env.protected },
            steps => steps,
        }
    }

    /// The outputs a step returned, unredacted (they feed later steps and its revert).
    pub(super) fn outputs_of(&self, r: &StepReport) -> Option<&Values> {
        self.raw_outputs.get(&r.id)
    }

    pub(super) fn render(
        &self,
        args: &[(String, Arg)],
        ctx: &minijinja::Value,
    ) -> Result<Values, String> {
        self.render_in(&std::cell::OnceCell::new(), args, ctx)
    }

    /// [`Run::render`] with a template environment made at the first template, and kept in
    /// `env` for the next call (a fleet renders every target's parameters: one environment,
    /// not one per target, and none where nothing is a template).
    pub(super) fn render_in(
        &self,
        env: &std::cell::OnceCell<minijinja::Environment<'static>>,
        args: &[(String, Arg)],
        ctx: &minijinja::Value,
    ) -> Result<Values, String> {
        let env = || env.get_or_init(template::environment);
        args.iter()
            .map(|(name, arg)| {
                let value = match arg {
                    Arg::Value(v) => v.clone(),
                    Arg::Template {
                        source,
                        ty: ValueType::TextList,
                    } => Value::TextList(
                        template::render_list(env(), source, ctx)
                            .map_err(|e| format!("parameter `{name}`: {e}"))?,
                    ),
                    Arg::Template { source, ty } => {
                        let text = template::render(env(), source, ctx)
                            .map_err(|e| format!("parameter `{name}`: {e}"))?;
                        text_to_value(&text, *ty)
                            .map_err(|e| format!("parameter `{name}` rendered to {e}"))?
                    }
                    Arg::ListTemplate(items) => Value::TextList(
                        items
                            .iter()
                            .map(|s| template::render(env(), s, ctx))
                            .collect::<Result<_, _>>()
                            .map_err(|e| format!("parameter `{name}`: {e}"))?,
                    ),
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    /// The run's redactor as it stands (secrets rendered so far included).
    pub(super) fn redactor(&self) -> Arc<Redactor> {
        self.secrets.lock().unwrap().redactor()
    }

    /// Parameters as they may be shown. Those named in `secret` are masked, and their values
    /// join the run's secrets: a plugin echoing them is masked too.
    ///
    /// The others are masked with the run's secrets as last built, and this call's own: the
    /// secrets other targets of a fleet added meanwhile are in the call's redactor, but
    /// rebuilding it for each target's parameters made a fleet quadratic.
    pub(super) fn shown_params(&self, params: &Values, secret: &[String]) -> Values {
        let own: Vec<&Value> = params
            .iter()
            .filter(|(k, _)| secret.contains(k))
            .map(|(_, v)| v)
            .collect();
        let built = {
            let mut secrets = self.secrets.lock().unwrap();
            secrets.add(own.iter().copied());
            secrets.built.clone()
        };
        let own = (!own.is_empty()).then(|| Redactor::new(own));
        params
            .iter()
            .map(|(k, v)| {
                if secret.contains(k) {
                    (k.clone(), Value::Text(MASK.into()))
                } else {
                    let v = built.value(v);
                    let v = match &own {
                        Some(own) => own.value(&v),
                        None => v,
                    };
                    (k.clone(), v)
                }
            })
            .collect()
    }

    pub(super) fn skip(
        &mut self,
        step: &PlanStep,
        phase: Phase,
        reason: &str,
        observer: &mut dyn Observer,
    ) {
        let report = StepReport {
            id: step.id.clone(),
            phase,
            plugin: self.plan.plugins[step.plugin].alias.clone(),
            status: StepStatus::Skipped {
                reason: reason.to_owned(),
            },
            summary: format!("skipped: {reason}"),
            duration: Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
            fleet: None,
        };
        observer.on_event(&Event::StepFinished { report: &report });
        self.reports.push(report);
    }

    /// One sandboxed call. Returns the attempt as it may be shown (redacted) and, where
    /// masking changed its outputs, the outputs as the plugin returned them (see
    /// [`raw_outputs`]).
    pub(super) async fn call(
        &self,
        plugin: usize,
        call: Call,
        step_id: &str,
        attempt: u32,
        timeout: Duration,
        placement: Placement,
    ) -> (Attempt, Option<Values>) {
        let pp = &self.plan.plugins[plugin];
        let attempt = attempt + self.attempt_base.get(step_id).copied().unwrap_or(0);
        let started_ms = self.elapsed_ms();
        // A call handed to other threads is out of the run's reach (`crate::ahead`): the
        // step's start is confirmed before.
        if placement != Placement::Here && crate::ahead::settle().is_err() {
            self.cancel.abort();
        }
        // Nothing is called once the run is aborted. A record that failed aborts the run from
        // inside the event it could not record (an action's write-ahead start, say), and the
        // run is dropped at its next wait; a call made on the way there, on this thread,
        // could act before its first wait (a command is spawned at once).
        let mut invocation = if self.cancel.is_aborted() {
            Invocation::not_called("not called: the run was aborted")
        } else {
            let sandbox = Sandbox {
                timeout,
                memory: pp.memory,
                grants: pp.grants.clone(),
                kv: self.kv[plugin].clone(),
                redactor: self.redactor(),
            };
            let ctx = CallContext {
                run_id: self.opts.run_id.clone(),
                step_id: step_id.to_owned(),
                attempt,
                environment: self.plan.environment.name.clone(),
                dry_run: self.opts.dry_run,
            };
            // The host masks the run's secrets in everything the call produced before
            // returning it (and before tracing any of it); the real outputs come separately.
            let invocation = self
                .host
                .invoke_on(&pp.plugin, call, ctx, sandbox, placement)
                .await;
            // The call started while its step's start was on its way to the disk. If that
            // write failed, everything in the call that would have acted trapped first: it
            // changed nothing, and the run stops as if it had not been called.
            match crate::ahead::settle() {
                Ok(()) => invocation,
                Err(why) => {
                    self.cancel.abort();
                    Invocation::not_called(&format!("not acted: {why}; the run stops"))
                }
            }
        };
        let unmasked = invocation.unmasked_outputs.take();
        (
            Attempt {
                number: attempt,
                started_ms,
                invocation,
            },
            unmasked,
        )
    }

    /// Runs one step (with its condition, retries or gate) and returns its report. Does not
    /// push the report: the caller decides what the step means for the run.
    pub(super) async fn step(
        &mut self,
        step: &PlanStep,
        phase: Phase,
        observer: &mut dyn Observer,
    ) -> StepReport {
        let pp = &self.plan.plugins[step.plugin];
        let started = Instant::now();
        let mut report = StepReport {
            id: step.id.clone(),
            phase,
            plugin: pp.alias.clone(),
            status: StepStatus::Succeeded,
            summary: String::new(),
            duration: Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets: Vec::new(),
            fleet: None,
        };
        // The template view of the run (its parameters, variables, every step so far) is
        // built only for a step that evaluates a template: about 3 µs, two fifths of what
        // the engine adds to a trivial step, wasted where every argument is written out.
        let ctx = if evaluates_templates(step) {
            self.context(None)
        } else {
            minijinja::Value::UNDEFINED
        };
        if let Some(when) = &step.when {
            let env = template::environment();
            let verdict = template::eval(&env, when, &ctx);
            match verdict {
                Ok(v) if v.is_true() => {}
                Ok(_) => {
                    report.status = StepStatus::Skipped {
                        reason: format!("`{when}` is false"),
                    };
                    report.summary = format!("skipped: `{when}` is false");
                    observer.on_event(&Event::StepFinished { report: &report });
                    return report;
                }
                Err(e) => {
                    let message = format!("condition `{when}`: {e}");
                    report.summary = message.clone();
                    report.status = StepStatus::Errored {
                        failure: Failure::InvalidParams { message },
                    };
                    observer.on_event(&Event::StepFinished { report: &report });
                    return report;
                }
            }
        }
        if let Some(gate) = &step.approval {
            // Validation checked the template; a value missing now (a step skipped before)
            // leaves the prompt as written rather than no prompt.
            let prompt = template::render(&template::environment(), &gate.prompt, &ctx)
                .map(|p| self.redactor().text(&p))
                .unwrap_or_else(|_| gate.prompt.clone());
            let decision = self.ask(&step.id, &prompt, gate.timeout, observer).await;
            let refused = match &decision {
                Decision::Approved { .. } => None,
                Decision::Rejected { by, reason } => Some(format!("rejected by {by}: {reason}")),
                Decision::TimedOut => Some(format!(
                    "no approval within {}",
                    humantime::format_duration(gate.timeout)
                )),
                Decision::Cancelled => Some("cancelled while waiting for approval".to_owned()),
            };
            if let Some(summary) = refused {
                report.status = StepStatus::Failed;
                report.summary = summary;
                report.duration = started.elapsed();
                observer.on_event(&Event::StepFinished { report: &report });
                return report;
            }
        }
        // A plain step's call may begin while its start is on its way to the disk
        // (`crate::ahead`); a fleet's calls go to other threads, and a gate's are checks.
        if step.fleet.is_none() && step.gate.is_none() {
            crate::ahead::one_call_follows();
        }
        observer.on_event(&Event::StepStarted {
            phase,
            id: &step.id,
            plugin: &pp.alias,
        });
        if let Some(fleet) = &step.fleet {
            // Boxed, as a call is (`call`): a fleet's future is the largest a step has.
            Box::pin(self.fleet(step, fleet, &ctx, &mut report, observer)).await;
            return self.finish(step, report, started, observer);
        }
        let params = match self.render(&step.with, &ctx) {
            Ok(p) => p,
            Err(message) => {
                report.summary = self.redactor().error_text(&message);
                report.status = StepStatus::Errored {
                    failure: Failure::InvalidParams {
                        message: report.summary.clone(),
                    },
                };
                report.duration = started.elapsed();
                observer.on_event(&Event::StepFinished { report: &report });
                return report;
            }
        };
        report.params = self.shown_params(&params, &step.secret_params);
        self.raw.insert(step.id.clone(), params.clone());

        if let Some(gate) = step.gate {
            self.gate(step, gate, &params, &mut report, observer).await;
        } else {
            let attempts = step.retry.map_or(1, |r| r.attempts);
            for n in 1..=attempts {
                let attempt = shown_while(self.attempt(step, &params, n), observer).await;
                let retryable = retryable(&attempt.invocation, step.retry);
                report.summary = summary_of(&attempt.invocation);
                report.status = status_of(&attempt.invocation);
                if retryable && n < attempts && !self.cancel.is_cancelled() {
                    let wait = backoff(step.retry.as_ref().unwrap(), n);
                    let note = format!("attempt {n}/{attempts}: {}", report.summary);
                    observer.on_event(&Event::AttemptFinished {
                        id: &step.id,
                        attempt: &attempt,
                        note: &note,
                        wait,
                    });
                    report.attempts.push(attempt);
                    if !self.cancel.sleep(wait).await {
                        break;
                    }
                    continue;
                }
                report.attempts.push(attempt);
                break;
            }
            report.summary = summary_of_attempts(&report.attempts, step.retry);
        }
        self.finish(step, report, started, observer)
    }

    /// The end of every step that ran: a drill's fault applies, observers hear of it.
    pub(super) fn finish(
        &self,
        step: &PlanStep,
        mut report: StepReport,
        started: Instant,
        observer: &mut dyn Observer,
    ) -> StepReport {
        if report.phase == Phase::Steps
            && report.status == StepStatus::Succeeded
            && self.opts.fail_step.as_deref() == Some(step.id.as_str())
        {
            report.status = StepStatus::Failed;
            report.summary = format!(
                "failed on purpose (drill fault); it had: {}",
                report.summary
            );
        }
        report.duration = started.elapsed();
        observer.on_event(&Event::StepFinished { report: &report });
        report
    }

    /// Calls until an attempt ends in a way `rate.retry` does not retry, with the backoff
    /// between attempts. Returns every attempt (at least one) and, when `keep` asks for what
    /// undoing the call needs, the last one's raw outputs and `call` back (else the last
    /// attempt there can be takes it, instead of a copy of its parameters).
    pub(super) async fn retried(
        &self,
        plugin: usize,
        call_id: &str,
        timeout: Duration,
        rate: Rate,
        call: Call,
        keep: bool,
    ) -> (Vec<Attempt>, Option<Values>, Option<Call>) {
        let attempts = rate.retry.map_or(1, |r| r.attempts);
        let placement = rate.placement();
        let mut made = Vec::new();
        let mut unmasked = None;
        let mut call = Some(call);
        for n in 1..=attempts {
            let this = if n == attempts && !keep {
                call.take()
            } else {
                call.clone()
            }
            .expect("only the last attempt there can be takes the call");
            let (attempt, out) = self
                .call(plugin, this, call_id, n, timeout, placement)
                .await;
            let again = n < attempts && retryable(&attempt.invocation, rate.retry);
            unmasked = out;
            made.push(attempt);
            if !again {
                break;
            }
            let wait = backoff(rate.retry.as_ref().unwrap(), n);
            if !self.cancel.sleep(wait).await {
                break;
            }
        }
        let outputs = if keep {
            raw_outputs(made.last().expect("at least one attempt"), unmasked)
        } else {
            None
        };
        (made, outputs, call)
    }

    /// Runs every step of a section (rollback, verify, finally: a failure never stops the rest)
    /// and records them. Returns whether none failed.
    pub(super) async fn section(
        &mut self,
        steps: &[PlanStep],
        phase: Phase,
        observer: &mut dyn Observer,
    ) -> bool {
        let mut ok = true;
        for step in steps {
            let report = self.step(step, phase, observer).await;
            ok &= !report.status.is_failure();
            self.reports.push(report);
        }
        ok
    }

    /// One call of a step's plugin (a retry or a gate check counts as one), remembering
    /// the raw outputs for later steps and reverts.
    pub(super) async fn attempt(&mut self, step: &PlanStep, params: &Values, n: u32) -> Attempt {
        let call = Call::Run {
            params: params.clone(),
        };
        let (attempt, unmasked) = self
            .call(
                step.plugin,
                call,
                &step.id,
                n,
                step.timeout,
                Placement::Here,
            )
            .await;
        self.remember(&step.id, raw_outputs(&attempt, unmasked));
        attempt
    }

    pub(super) fn remember(&mut self, id: &str, outputs: Option<Values>) {
        match outputs {
            Some(o) => {
                self.raw_outputs.insert(id.to_owned(), o);
            }
            None => {
                self.raw_outputs.remove(id);
            }
        }
    }
}

/// How long a call runs before its step's start, sent while it began, is confirmed and
/// shown without waiting for the call's end: the daemon's `fdatasync` is done by then.
const SHOW_AFTER: Duration = Duration::from_millis(1);

/// Awaits `call`, the one call of a step whose start may still be on its way to the disk
/// (an action's write-ahead, `crate::ahead`; a check's start queued by the recorder), or a
/// fleet's next target while those told before wait for their write: one still running
/// after [`SHOW_AFTER`] has the start (and the end of the step before) confirmed and shown
/// meanwhile, as a responder expects to see what runs; what is left unconfirmed is looked
/// at again every [`SHOW_AFTER`] until it is shown.
/// A future of its own, not an `async fn`, which would hold `call` twice (its argument and
/// its pinned local) in every step's future.
pub(super) fn shown_while<F: std::future::Future>(
    call: F,
    observer: &mut dyn Observer,
) -> ShownWhile<'_, F> {
    ShownWhile {
        call,
        timer: (crate::ahead::is_pending() || observer.waits_to_show())
            .then(|| Box::pin(tokio::time::sleep(SHOW_AFTER))),
        observer,
    }
}

pub(super) struct ShownWhile<'o, F> {
    call: F,
    /// Boxed, and only while a start waits to be confirmed: most steps have none.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    observer: &'o mut dyn Observer,
}

impl<F: std::future::Future> std::future::Future for ShownWhile<'_, F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // SAFETY: `call` is never moved out of `self` (structural pinning); the other fields
        // are not pinned and are only used by reference here.
        let this = unsafe { self.get_unchecked_mut() };
        let call = unsafe { std::pin::Pin::new_unchecked(&mut this.call) };
        if let std::task::Poll::Ready(out) = call.poll(cx) {
            return std::task::Poll::Ready(out);
        }
        while let Some(timer) = &mut this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            this.observer.confirm_shown();
            if this.observer.waits_to_show() {
                // Polled once more: registered with the timer again.
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SHOW_AFTER);
            } else {
                this.timer = None;
            }
        }
        std::task::Poll::Pending
    }
}

/// The outputs of `attempt` as its plugin returned them: `unmasked` (what [`Run::call`] gave
/// back where masking changed them), else the attempt's own.
fn raw_outputs(attempt: &Attempt, unmasked: Option<Values>) -> Option<Values> {
    unmasked.or_else(|| attempt.invocation.real_outputs().cloned())
}

/// Whether running `step` evaluates a template: its condition, its approval's prompt, its
/// fleet's targets, or an argument.
fn evaluates_templates(step: &PlanStep) -> bool {
    step.when.is_some()
        || step.approval.is_some()
        || step.fleet.is_some()
        || step
            .with
            .iter()
            .any(|(_, arg)| !matches!(arg, Arg::Value(_)))
}
