//! The runbook file format, as parsed: serde types that keep spans and refuse unknown keys.
//! Nothing here is checked beyond syntax; [`super::plan`] turns it into a validated plan.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookDoc {
    pub runbook: Spanned<Meta>,
    #[serde(default)]
    pub params: BTreeMap<Spanned<String>, Spanned<ParamDecl>>,
    #[serde(default)]
    pub environments: BTreeMap<Spanned<String>, Spanned<EnvDecl>>,
    #[serde(default)]
    pub plugins: BTreeMap<Spanned<String>, Spanned<PluginDecl>>,
    #[serde(default)]
    pub steps: Vec<Spanned<StepDecl>>,
    /// Run after the steps' own rollbacks, when a run rolls back.
    #[serde(default)]
    pub rollback: Vec<Spanned<StepDecl>>,
    /// Checks that prove the system healthy after a rollback.
    #[serde(default)]
    pub verify: Vec<Spanned<StepDecl>>,
    /// Run at the end of every run, whatever happened.
    #[serde(default)]
    pub finally: Vec<Spanned<StepDecl>>,
    /// Progressive delivery after the steps: traffic moves to the candidate in stages.
    #[serde(default)]
    pub rollout: Option<Spanned<RolloutDecl>>,
}

/// `[rollout]`: expanded into ordinary steps (a route change per stage, undone by its
/// plugin's revert, then the analysis checks as gates), so it runs, records and rolls back
/// like any step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutDecl {
    /// `canary`, `linear`, `all_at_once`, `blue_green`, or a CodeDeploy predefined name.
    pub strategy: Spanned<String>,
    /// `canary`: the candidate's percent of traffic at each stage, ending at 100.
    #[serde(default)]
    pub weights: Option<Spanned<Vec<i64>>>,
    /// `linear`: percent added per stage.
    #[serde(default)]
    pub step: Option<Spanned<i64>>,
    /// `linear`: time between stages.
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    /// `canary`, `all_at_once`: how long each stage bakes before its analysis decides.
    #[serde(default)]
    pub bake: Option<Spanned<String>>,
    /// `blue_green`: how long the old version stays ready after the switch.
    #[serde(default)]
    pub rollback_window: Option<Spanned<String>>,
    /// Ask a person before moving to these weights.
    #[serde(default)]
    pub approve_before: Vec<Spanned<i64>>,
    /// How to move traffic: plugin calls made at every stage, in order. In `with`,
    /// `{{ rollout.weight }}` is the candidate's percent and `{{ rollout.remaining }}` the
    /// stable version's.
    pub route: Vec<Spanned<RouteDecl>>,
    /// Checks run once right after every promotion, before the stage bakes.
    #[serde(default)]
    pub smoke: Vec<Spanned<SmokeDecl>>,
    /// The checks that judge every stage, declared before the change starts.
    #[serde(default)]
    pub analysis: Vec<Spanned<AnalysisDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeDecl {
    /// Names the generated steps (`rollout_10_smoke_NAME`).
    pub name: Spanned<String>,
    pub uses: Spanned<String>,
    #[serde(default)]
    pub with: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDecl {
    pub uses: Spanned<String>,
    #[serde(default)]
    pub with: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisDecl {
    /// Names the generated steps (`rollout_10_NAME`).
    pub name: Spanned<String>,
    pub uses: Spanned<String>,
    #[serde(default)]
    pub with: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    pub interval: Spanned<String>,
    /// Failures that fail the stage (default 1).
    #[serde(default)]
    pub failure_limit: Option<Spanned<u32>>,
    /// Passes in a row that pass the stage (default 1).
    #[serde(default)]
    pub consecutive_successes: Option<Spanned<u32>>,
    /// The longest a stage's analysis may take, after its bake.
    pub timeout: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// The default `on_failure` of every step.
    #[serde(default)]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// Runs with the same (rendered) key cannot act at once, e.g.
    /// `service:{{ params.service }}:{{ env.name }}`.
    #[serde(default)]
    pub lock: Option<Spanned<String>>,
    /// What `medic serve` does with a run of this runbook whose process died.
    #[serde(default)]
    pub on_interrupted: Option<Spanned<OnInterrupted>>,
}

/// What becomes of a run whose process died (killed, its host gone), once `medic serve`
/// finds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupted {
    /// Mark it interrupted and say so (log line, `medic_runs_total{status="interrupted"}`):
    /// a person resumes or rolls it back.
    #[default]
    Notify,
    /// Roll it back at once (undo what it changed, newest first, then verify), as
    /// `medic runs rollback` would: declared here, so no one has to be woken for it.
    Rollback,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub default: Option<Spanned<toml::Value>>,
    /// Defaults to true when there is no default value.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub description: String,
    /// Never printed nor recorded. Secret values come from `from_env` or `from_file`, never
    /// from the runbook or the command line (which end up in shell history and `ps`).
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub from_env: Option<Spanned<String>>,
    #[serde(default)]
    pub from_file: Option<Spanned<String>>,
    /// A regular expression a string value must match entirely.
    #[serde(default)]
    pub pattern: Option<Spanned<String>>,
    /// The allowed values of an `enum` parameter.
    #[serde(default)]
    pub values: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvDecl {
    #[serde(default)]
    pub description: String,
    /// Running here needs an explicit approval (`--approve "reason"`).
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub vars: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Who may decide this environment's approvals (`medic approve`, the API): user or token
    /// names. Empty: anyone who can reach the data directory or holds an approver token.
    #[serde(default)]
    pub approvers: Option<Spanned<Vec<String>>>,
    /// Distinct approvals a step needs here (default 1). With a policy (this or `approvers`),
    /// whoever started the run cannot approve it.
    #[serde(default)]
    pub min_approvals: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDecl {
    pub source: Spanned<String>,
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub grants: Option<Spanned<GrantsDecl>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsDecl {
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    /// `ip:port` addresses for raw TCP exchanges (e.g. HAProxy's runtime API).
    #[serde(default)]
    pub tcp: Vec<Spanned<String>>,
    /// Programs the plugin may run, each with one pattern per argument.
    #[serde(default)]
    pub command: Vec<Spanned<CommandGrantDecl>>,
    #[serde(default)]
    pub kv: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDecl {
    pub id: Spanned<String>,
    pub uses: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub with: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// What a failure of this step does to the run.
    #[serde(default)]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// An expression; the step is skipped when it is false.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    #[serde(default)]
    pub retry: Option<Spanned<RetryDecl>>,
    #[serde(default)]
    pub gate: Option<Spanned<GateDecl>>,
    /// How to undo this step when the run rolls back.
    #[serde(default)]
    pub rollback: Option<Spanned<RollbackDecl>>,
    /// The run pauses before this step until someone approves it (or the timeout passes).
    #[serde(default)]
    pub approval: Option<Spanned<ApprovalDecl>>,
    /// Run the step once per target, a few at a time, stopping when too many fail.
    #[serde(default)]
    pub fleet: Option<Spanned<FleetDecl>>,
}

/// `[steps.fleet]`: SSM-style rate control. `{{ target }}` in the step's `with` is the
/// target of each call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetDecl {
    /// A list of strings (templates allowed), or one `{{ expression }}` giving a list.
    pub targets: Spanned<toml::Value>,
    /// Targets in flight at once: a count, a percent (`"25%"`), or `OneAtATime`,
    /// `HalfAtATime`, `AllAtOnce`. Default 1.
    #[serde(default)]
    pub max_concurrency: Option<Spanned<toml::Value>>,
    /// Failures tolerated: a count or a percent of the targets. Default 0. One more and no
    /// new target starts (those in flight finish) and the step fails.
    #[serde(default)]
    pub max_errors: Option<Spanned<toml::Value>>,
    /// `listed` (default), `reverse` or `random`.
    #[serde(default)]
    pub order: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecl {
    pub timeout: Spanned<String>,
    #[serde(default)]
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the run; nothing is undone.
    #[default]
    Abort,
    /// Tolerate the failure: record it and carry on; it does not fail the run.
    Continue,
    /// Stop, undo the completed steps in reverse order, then verify.
    Rollback,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryDecl {
    /// Total attempts, including the first.
    pub attempts: Spanned<u32>,
    /// Wait before the second attempt; doubles after each attempt.
    #[serde(default)]
    pub backoff: Option<Spanned<String>>,
    /// The longest wait between attempts.
    #[serde(default)]
    pub max_backoff: Option<Spanned<String>>,
    /// Randomise waits (between half and all of the computed wait), so many runs retrying
    /// the same service do not hit it in lockstep.
    #[serde(default = "yes")]
    pub jitter: bool,
    /// Which failures are retried.
    #[serde(default)]
    pub on: RetryOn,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Errors the plugin marks transient, and timeouts.
    #[default]
    Transient,
    /// Any failure, including a failed check.
    Any,
}

/// Repeat a check until it passes `successes` times in a row, fails `failures` times, or the
/// time limit passes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateDecl {
    /// Bake time: how long to wait before the first check.
    #[serde(default)]
    pub delay: Option<Spanned<String>>,
    pub interval: Spanned<String>,
    #[serde(default)]
    pub successes: Option<Spanned<u32>>,
    #[serde(default)]
    pub failures: Option<Spanned<u32>>,
    pub timeout: Spanned<String>,
    /// A watch window: keep checking at least this long after the first check, and pass
    /// only at its end (with `successes` in a row). Blue/green's rollback window is one.
    #[serde(default)]
    pub hold: Option<Spanned<String>>,
    /// `ignore` (default: an inconclusive check counts neither way) or `pause`: ask a person
    /// whether the gate passes.
    #[serde(default)]
    pub inconclusive: Option<Spanned<String>>,
}

/// Spans cannot be kept inside an untagged enum (serde buffers its content), so mistakes in a
/// step's rollback point at the whole `rollback` value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RollbackDecl {
    /// `rollback = "revert"`: the plugin's own revert, given the step's outputs.
    Keyword(String),
    /// `rollback = { uses = "...", with = { ... } }`: another plugin call.
    Call(RollbackCall),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackCall {
    pub uses: String,
    #[serde(default)]
    pub with: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandGrantDecl {
    /// An absolute path.
    pub program: String,
    /// Regular expressions, one per argument, each matched against the whole argument.
    #[serde(default)]
    pub args: Vec<String>,
}
