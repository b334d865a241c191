//! Runs a [`Plan`]: steps in order, each in a fresh sandbox, with templates rendered against
//! the outputs of earlier steps just before the step starts. Progress is reported through an
//! [`Observer`], so the CLI, the JSON stream and (later) the run store all see the same events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::host::{
    Call, CallContext, Failure, Invocation, KvSpace, PluginHost, Sandbox, Status, Value,
};
use crate::runbook::plan::text_to_value;
use crate::runbook::template;
use crate::runbook::{Arg, OnFailure, Plan};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    /// The plugin ran and reported failure (a check found a problem).
    Failed,
    /// The plugin could not complete (timeout, trap, denied, error...).
    Errored {
        failure: Failure,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub plugin: String,
    pub status: StepStatus,
    pub summary: String,
    pub duration: Duration,
    pub params: Vec<(String, Value)>,
    pub invocation: Option<Invocation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub runbook: String,
    pub outcome: RunOutcome,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub steps: Vec<StepReport>,
}

/// What happens during a run, in order.
#[derive(Debug)]
pub enum Event<'a> {
    RunStarted {
        run_id: &'a str,
        plan: &'a Plan,
    },
    StepStarted {
        index: usize,
        id: &'a str,
        plugin: &'a str,
    },
    StepFinished {
        index: usize,
        report: &'a StepReport,
    },
    RunFinished {
        report: &'a RunReport,
    },
}

pub trait Observer {
    fn on_event(&mut self, event: &Event<'_>);
}

impl<F: FnMut(&Event<'_>)> Observer for F {
    fn on_event(&mut self, event: &Event<'_>) {
        self(event)
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_id: String,
    pub environment: String,
    pub dry_run: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: new_run_id(),
            environment: "default".into(),
            dry_run: false,
        }
    }
}

/// A sortable unique id (ULID): runs list in start order by id alone.
pub fn new_run_id() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

fn render_args(
    plan_step: &[(String, Arg)],
    ctx: &minijinja::Value,
) -> Result<Vec<(String, Value)>, String> {
    let env = template::environment();
    plan_step
        .iter()
        .map(|(name, arg)| {
            let value = match arg {
                Arg::Value(v) => v.clone(),
                Arg::Template { source, ty } => {
                    let text = template::render(&env, source, ctx)
                        .map_err(|e| format!("parameter `{name}`: {e}"))?;
                    text_to_value(&text, *ty)
                        .map_err(|e| format!("parameter `{name}` rendered to {e}"))?
                }
                Arg::ListTemplate(items) => Value::TextList(
                    items
                        .iter()
                        .map(|s| template::render(&env, s, ctx))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("parameter `{name}`: {e}"))?,
                ),
            };
            Ok((name.clone(), value))
        })
        .collect()
}

fn context(plan: &Plan, done: &[StepReport]) -> minijinja::Value {
    let mut steps = BTreeMap::new();
    for s in done {
        let status = match &s.status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Errored { .. } => "errored",
        };
        let outputs = s
            .invocation
            .as_ref()
            .and_then(|i| i.result.as_ref().ok())
            .map(|o| &o.outputs);
        let outputs = template::map_to_jinja(outputs.into_iter().flatten().map(|(k, v)| (k, v)));
        steps.insert(
            s.id.clone(),
            minijinja::context! { status => status, summary => s.summary.clone(), outputs => outputs },
        );
    }
    minijinja::context! {
        params => template::map_to_jinja(plan.params.iter().map(|(k, v)| (k, v))),
        steps => steps,
    }
}

pub async fn execute(
    host: &PluginHost,
    plan: &Plan,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> RunReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    observer.on_event(&Event::RunStarted {
        run_id: &opts.run_id,
        plan,
    });
    // One key-value space per plugin declaration, shared by its steps for the whole run.
    let kv: Vec<KvSpace> = plan.plugins.iter().map(|_| KvSpace::new()).collect();
    let mut steps: Vec<StepReport> = Vec::new();
    let mut outcome = RunOutcome::Succeeded;

    for (index, step) in plan.steps.iter().enumerate() {
        let pp = &plan.plugins[step.plugin];
        observer.on_event(&Event::StepStarted {
            index,
            id: &step.id,
            plugin: &pp.alias,
        });
        let step_started = Instant::now();
        let report = match render_args(&step.with, &context(plan, &steps)) {
            Err(message) => StepReport {
                id: step.id.clone(),
                plugin: pp.alias.clone(),
                summary: message.clone(),
                status: StepStatus::Errored {
                    failure: Failure::InvalidParams { message },
                },
                duration: step_started.elapsed(),
                params: Vec::new(),
                invocation: None,
            },
            Ok(params) => {
                let sandbox = Sandbox {
                    timeout: step.timeout,
                    memory: pp.memory,
                    grants: pp.grants.clone(),
                    kv: kv[step.plugin].clone(),
                };
                let ctx = CallContext {
                    run_id: opts.run_id.clone(),
                    step_id: step.id.clone(),
                    attempt: 1,
                    environment: opts.environment.clone(),
                    dry_run: opts.dry_run,
                };
                let inv = host
                    .invoke(
                        &pp.plugin,
                        Call::Run {
                            params: params.clone(),
                        },
                        &ctx,
                        &sandbox,
                    )
                    .await;
                let (status, summary) = match &inv.result {
                    Ok(o) if o.status == Status::Success => {
                        (StepStatus::Succeeded, o.summary.clone())
                    }
                    Ok(o) => (StepStatus::Failed, o.summary.clone()),
                    Err(f) => (StepStatus::Errored { failure: f.clone() }, f.to_string()),
                };
                StepReport {
                    id: step.id.clone(),
                    plugin: pp.alias.clone(),
                    status,
                    summary,
                    duration: step_started.elapsed(),
                    params: mask_secrets(&pp.plugin.manifest, params),
                    invocation: Some(inv),
                }
            }
        };
        observer.on_event(&Event::StepFinished {
            index,
            report: &report,
        });
        let failed = report.status != StepStatus::Succeeded;
        steps.push(report);
        if failed {
            // A run with a failed step has failed even when the runbook lets it continue.
            outcome = RunOutcome::Failed;
            if step.on_failure == OnFailure::Abort {
                break;
            }
        }
    }

    let report = RunReport {
        run_id: opts.run_id.clone(),
        runbook: plan.name.clone(),
        outcome,
        started_at,
        duration: started.elapsed(),
        steps,
    };
    observer.on_event(&Event::RunFinished { report: &report });
    report
}

/// Parameters as they may be shown and recorded: secrets replaced.
pub fn mask_secrets(
    manifest: &crate::host::Manifest,
    params: Vec<(String, Value)>,
) -> Vec<(String, Value)> {
    params
        .into_iter()
        .map(|(k, v)| {
            let secret = manifest.param(&k).is_some_and(|p| p.secret);
            if secret {
                (k, Value::Text("••••••".into()))
            } else {
                (k, v)
            }
        })
        .collect()
}
