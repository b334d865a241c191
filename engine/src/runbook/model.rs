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
