//! Fleet steps: one call per target, `max_concurrency` at a time, stopping new targets after
//! `max_errors` failures. The targets are driven, told and recorded by the run's own task
//! (its futures are not Send); their calls run on the host's call threads, on every core.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{
    Event, FleetTally, Observer, Run, StepReport, StepStatus, TargetReport, status_of,
    summary_of_attempts,
};
use crate::host::{Batching, Call, Failure, Placement, Value, Values};
use crate::runbook::template;
use crate::runbook::{Fleet, FleetOrder, FleetTargets, PlanStep};

/// How long targets that finish one after another are gathered to be told, and made durable,
/// together. Beside a flush (0.1-0.3 ms) it lets a batch of fast targets share one; beside
/// what a person notices, it is nothing.
const GROUP_WINDOW: Duration = Duration::from_millis(1);

/// How a fleet step's calls (or their undoing) are paced.
#[derive(Clone, Copy)]
pub(super) struct Rate {
    pub(super) concurrency: usize,
    /// Failures tolerated before no new target starts; none: never stop (rollbacks).
    pub(super) max_errors: Option<usize>,
    pub(super) retry: Option<crate::runbook::Retry>,
}

impl Rate {
    /// Where the calls run: calls made together (a fleet's targets) on every core; one at a
    /// time, on the run's thread.
    pub(super) fn placement(&self) -> Placement {
        if self.concurrency > 1 {
            Placement::Workers
        } else {
            Placement::Here
        }
    }
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
    pub(super) report: Arc<TargetReport>,
    /// Unmasked parameters and outputs when the step can be undone (a revert needs the real
    /// values); none otherwise.
    pub(super) params: Values,
    pub(super) outputs: Option<Values>,
}

/// What is kept of a target once it has been told and journaled: enough for the step's
/// outputs, summary and undoing; not its calls, so a fleet's memory does not grow with what
/// each target's plugin logged and returned.
pub(super) struct Ended {
    pub(super) target: String,
    /// Called at least once.
    pub(super) ran: bool,
    pub(super) succeeded: bool,
    pub(super) failed: bool,
    /// Unmasked parameters and outputs, kept only when the step can be undone.
    pub(super) raw: Option<Box<(Values, Option<Values>)>>,
}

/// Said of a target's summary when it succeeded before the run was resumed, and is kept.
const BEFORE_THE_RESUME: &str = " (before the resume)";

/// At most this many target names in a step's summary: the rest are counted.
pub(super) const NAMED: usize = 10;

/// The targets of a fleet step (or its undoing) that ended, in the order they ended.
pub(super) struct Fanned {
    pub(super) ended: Vec<Ended>,
    /// `target (summary)` of the first [`NAMED`] failures.
    pub(super) failures: Vec<String>,
    pub(super) tally: FleetTally,
    /// Keep each target's unmasked values (the step can be undone).
    keep_raw: bool,
}

impl Fanned {
    pub(super) fn new(capacity: usize, keep_raw: bool) -> Fanned {
        Fanned {
            ended: Vec::with_capacity(capacity),
            failures: Vec::new(),
            tally: FleetTally::default(),
            keep_raw,
        }
    }

    /// A target that was told: what is kept of it. Its name is taken from the report when
    /// no observer kept the report, copied otherwise.
    pub(super) fn add(&mut self, report: Arc<TargetReport>, raw: (Values, Option<Values>)) {
        let ran = !report.attempts.is_empty();
        let succeeded = report.status.is_success();
        let failed = report.status.is_failure();
        self.tally.targets += 1;
        self.tally.ran += usize::from(ran);
        self.tally.succeeded += usize::from(succeeded);
        self.tally.failed += usize::from(failed);
        if failed && self.failures.len() < NAMED {
            self.failures
                .push(format!("{} ({})", report.target, report.summary));
        }
        let target = Arc::try_unwrap(report).map_or_else(|kept| kept.target.clone(), |r| r.target);
        self.ended.push(Ended {
            target,
            ran,
            succeeded,
            failed,
            raw: self.keep_raw.then(|| Box::new(raw)),
        });
    }
}

/// The first `named` of `items`, joined, then how many more of `total`.
pub(super) fn some_of(items: &[String], named: usize, total: usize) -> String {
    let mut text = items[..items.len().min(named)].join(", ");
    if total > named {
        text += &format!(" and {} more", total - named);
    }
    text
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
        let mut jobs = Vec::with_capacity(targets.len());
        let env = std::cell::OnceCell::new();
        for t in &targets {
            let tctx = minijinja::context! { target => t, ..ctx.clone() };
            match self.render_in(&env, &step.with, &tctx) {
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
        let keep_raw = step.rollback.is_some();
        let mut kept = Vec::new();
        jobs.retain(|job| {
            let Some(mut report) = earlier.remove(&job.target) else {
                return true;
            };
            // Kept through an earlier resume too: said once.
            if !report.summary.ends_with(BEFORE_THE_RESUME) {
                report.summary.push_str(BEFORE_THE_RESUME);
            }
            let outputs = report
                .attempts
                .last()
                .and_then(|a| a.invocation.result.as_ref().ok().map(|o| o.outputs.clone()));
            kept.push(Done {
                report: Arc::new(report),
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
        let plugin = self.plan.plugins[step.plugin].alias.as_str();
        // Shown (and journaled again) so the run's output lists every target.
        let resumed = kept.len();
        let mut fanned = Fanned::new(n, keep_raw);
        for (i, d) in kept.iter().enumerate() {
            observer.on_event(&Event::TargetFinished {
                id: &step.id,
                plugin,
                target: &d.report,
                more: i + 1 < resumed,
            });
        }
        for d in kept {
            fanned.add(d.report, (d.params, d.outputs));
        }
        self.fan_out(
            step.plugin,
            &step.id,
            step.timeout,
            jobs,
            rate,
            &mut fanned,
            observer,
        )
        .await;
        let by_target: HashMap<&str, &Ended> = fanned
            .ended
            .iter()
            .map(|e| (e.target.as_str(), e))
            .collect();
        // In the order the targets were listed, whatever order they finished in.
        let listed = |pick: &dyn Fn(&Ended) -> bool| -> Vec<String> {
            targets
                .iter()
                .filter(|t| by_target.get(t.as_str()).is_some_and(|e| pick(e)))
                .cloned()
                .collect()
        };
        let succeeded = listed(&|e| e.succeeded);
        let failed = listed(&|e| e.failed);
        let not_started = listed(&|e| !e.ran);
        drop(by_target);
        let mut summary = match (n, resumed) {
            (0, _) => "no targets".to_owned(),
            (n, 0) => format!("{} of {n} targets succeeded", succeeded.len()),
            (n, r) => format!(
                "{} of {n} targets succeeded ({r} before the resume)",
                succeeded.len()
            ),
        };
        if !failed.is_empty() {
            summary += &format!("; failed: {}", some_of(&fanned.failures, 3, failed.len()));
        }
        if !not_started.is_empty() {
            summary += &format!(
                "; not started: {}",
                some_of(&not_started, NAMED, not_started.len())
            );
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
        report.fleet = Some(fanned.tally);
        let outputs: Values = [
            ("targets", targets),
            ("succeeded", succeeded),
            ("failed", failed),
            ("not_started", not_started),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::TextList(v)))
        .collect();
        self.remember(&step.id, Some(outputs));
        // Only a step that can be undone needs what its targets were called with.
        if keep_raw {
            self.targets_raw.insert(
                step.id.clone(),
                fanned
                    .ended
                    .into_iter()
                    .filter(|e| e.ran)
                    .map(|e| {
                        let (params, outputs) = *e.raw.unwrap_or_default();
                        (e.target, params, outputs, e.succeeded)
                    })
                    .collect(),
            );
        }
    }

    /// Runs calls for many targets at a bounded concurrency. In-flight calls always finish;
    /// stopping (too many errors, or a cancellation of the current view) only means no new
    /// target starts. Each target is told as it ends (with those ending within
    /// [`GROUP_WINDOW`] of it), then only what [`Fanned`] keeps of it is kept: every target,
    /// those never started (as skipped) last.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fan_out(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        jobs: Vec<Job>,
        rate: Rate,
        fanned: &mut Fanned,
        observer: &mut dyn Observer,
    ) {
        let alias = self.plan.plugins[plugin].alias.as_str();
        use futures_util::FutureExt;
        use futures_util::stream::StreamExt;
        let mut pending = jobs.into_iter();
        let mut running = Running {
            set: futures_util::stream::FuturesUnordered::new(),
            batching: Batching::default(),
        };
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
        let keep = fanned.keep_raw;
        // Keeps `rate.concurrency` targets running while there are targets to start, each
        // started (its call handed to the call threads) as it is added.
        let start = async |running: &mut Running<_>,
                           pending: &mut std::vec::IntoIter<Job>,
                           errors: usize| {
            std::future::poll_fn(|cx| {
                while running.set.len() < rate.concurrency && stop(errors).is_none() {
                    let Some(job) = pending.next() else { break };
                    let target = self.one_target(plugin, id, timeout, rate, job, keep);
                    running.start(target, cx);
                }
                Poll::Ready(())
            })
            .await
        };
        loop {
            start(&mut running, &mut pending, errors).await;
            // Targets told before may wait to be shown until their write is durable, while
            // these run: shown then, not when the next target ends.
            let Some(first) = super::step::shown_while(running.next(), observer).await else {
                break;
            };
            // Targets that finish within a short window of each other are told together, so
            // they are made durable together (group commit: one flush, not one per handful),
            // while the window is kept full of running targets. The first waits at most
            // the window to be shown.
            let window = tokio::time::Instant::now() + GROUP_WINDOW;
            let mut finished = Vec::new();
            let mut next = Some(first);
            while let Some(d) = next.take() {
                // Counted as they come: past max_errors no target starts, even in the window.
                if d.report.status.is_failure() {
                    errors += 1;
                }
                finished.push(d);
                if finished.len() >= rate.concurrency || tokio::time::Instant::now() >= window {
                    break;
                }
                start(&mut running, &mut pending, errors).await;
                next = match running.next().now_or_never() {
                    Some(ready) => ready,
                    None => tokio::time::timeout_at(window, running.next())
                        .await
                        .ok()
                        .flatten(),
                };
            }
            // The calls run through the telling and its flush. Not one at a time: then each
            // target's end is recorded before the next target acts.
            if rate.placement() == Placement::Workers {
                start(&mut running, &mut pending, errors).await;
            }
            // All told before any is let go: an observer holding them until the last one's
            // flush (the recorder) has let go of them by then, and their names are moved, not
            // copied.
            let last = finished.len() - 1;
            for (i, d) in finished.iter().enumerate() {
                observer.on_event(&Event::TargetFinished {
                    id,
                    plugin: alias,
                    target: &d.report,
                    more: i < last,
                });
            }
            for d in finished {
                fanned.add(d.report, (d.params, d.outputs));
            }
        }
        let reason = stop(errors).unwrap_or_default();
        let mut pending = pending.peekable();
        while let Some(job) = pending.next() {
            let report = Arc::new(TargetReport {
                target: job.target,
                status: StepStatus::Skipped {
                    reason: reason.clone(),
                },
                summary: reason.clone(),
                started_ms: self.elapsed_ms(),
                duration: Duration::ZERO,
                params: job.shown,
                attempts: Vec::new(),
            });
            observer.on_event(&Event::TargetFinished {
                id,
                plugin: alias,
                target: &report,
                more: pending.peek().is_some(),
            });
            fanned.add(report, Default::default());
        }
    }

    /// One target's call, retried like a step; `keep`: what undoing it needs (its unmasked
    /// parameters and outputs) is wanted.
    pub(super) async fn one_target(
        &self,
        plugin: usize,
        id: &str,
        timeout: Duration,
        rate: Rate,
        job: Job,
        keep: bool,
    ) -> Done {
        let started = Instant::now();
        let started_ms = self.elapsed_ms();
        // The plugin sees which target it works on in its context, and idempotency keys
        // built from the step id stay distinct per target.
        let call_id = [id, "[", &job.target, "]"].concat();
        let (attempts, outputs, call) = self
            .retried(plugin, &call_id, timeout, rate, job.call, keep)
            .await;
        let last = &attempts.last().expect("at least one attempt").invocation;
        Done {
            report: Arc::new(TargetReport {
                target: job.target,
                status: status_of(last),
                summary: summary_of_attempts(&attempts, rate.retry),
                started_ms,
                duration: started.elapsed(),
                params: job.shown,
                attempts,
            }),
            params: call.map(Call::into_params).unwrap_or_default(),
            outputs,
        }
    }
}

/// The targets running, polled through one [`Batching`] waker: the ends of a group that
/// the call threads tell together wake the run's thread once, not once for each of them.
struct Running<F: Future> {
    set: futures_util::stream::FuturesUnordered<Started<F>>,
    batching: Batching,
}

impl<F: Future> Running<F> {
    /// Adds a target, begun as it is added ([`Started`]).
    fn start(&mut self, target: F, cx: &Context<'_>) {
        let waker = self.batching.waker(cx.waker());
        self.set
            .push(Started::new(target, &mut Context::from_waker(waker)));
    }
}

impl<F: Future> futures_util::Stream for Running<F> {
    type Item = F::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.get_mut();
        this.batching.poll_next(&mut this.set, cx)
    }
}

/// A target, polled once as it is added to the running ones: its call is handed to the call
/// threads then. Left to the set of running targets, it would first be polled behind every
/// target that ended meanwhile, once those are collected, and the call threads would idle
/// through the telling and flush of the group before.
enum Started<F: Future> {
    Running(Pin<Box<F>>),
    /// Ended at its first poll (a call not made: the run was aborted).
    Ended(Option<F::Output>),
}

// The output is only moved out, never pinned.
impl<F: Future> Unpin for Started<F> {}

impl<F: Future> Started<F> {
    fn new(target: F, cx: &mut Context<'_>) -> Self {
        let mut target = Box::pin(target);
        match target.as_mut().poll(cx) {
            Poll::Ready(done) => Started::Ended(Some(done)),
            Poll::Pending => Started::Running(target),
        }
    }
}

impl<F: Future> Future for Started<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            Started::Running(target) => target.as_mut().poll(cx),
            Started::Ended(done) => Poll::Ready(done.take().expect("polled once ended")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use futures_util::stream::{FuturesUnordered, StreamExt};

    type Target<'a> = Pin<Box<dyn Future<Output = u32> + 'a>>;

    #[test]
    fn a_started_target_keeps_what_its_first_poll_gave_and_goes_on_from_there() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Ended at its first poll (a call not made): given once the set polls it.
        let ended = Started::new(Box::pin(async { 7u32 }) as Target<'_>, &mut cx);
        assert!(matches!(ended, Started::Ended(Some(7))));
        // Begun as it is made; the rest runs when the set polls it, not again from the start.
        let begun = std::cell::Cell::new(0);
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let running = Started::new(
            Box::pin(async {
                begun.set(begun.get() + 1);
                rx.await.unwrap()
            }) as Target<'_>,
            &mut cx,
        );
        assert_eq!(begun.get(), 1);
        let mut set = FuturesUnordered::new();
        set.push(ended);
        set.push(running);
        assert_eq!(set.next().now_or_never(), Some(Some(7)));
        assert_eq!(set.next().now_or_never(), None);
        tx.send(8).unwrap();
        assert_eq!(set.next().now_or_never(), Some(Some(8)));
        assert_eq!(set.next().now_or_never(), Some(None));
        assert_eq!(begun.get(), 1);
    }
}
