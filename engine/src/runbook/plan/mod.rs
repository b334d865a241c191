//! Validation and resolution: a parsed runbook becomes a [`Plan`] in which every plugin is
//! loaded and digested, every parameter is typed and every template reference resolved. All
//! mistakes are collected and reported together.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::diag::{Diagnostic, did_you_mean};
use super::model::{
    FleetDecl, OnFailure, ParamDecl, PluginDecl, RetryOn, RollbackDecl, RunbookDoc, StepDecl,
};
use super::template;
use crate::host::{
    CommandGrant, Grants, HostGrant, LoadError, Plugin, PluginHost, PluginKind, PluginSource,
    Value, ValueType, limits,
};

mod args;
mod checks;
mod environment;
mod fleet;
mod params;
mod plugins;
mod steps;
mod templates;
mod values;

use values::*;
pub use values::{MAX_DURATION, parse_duration, text_to_value};

/// A runbook that passed validation: what will run, in order, with what.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// sha256 of the runbook file as read.
    pub sha256: String,
    pub environment: Environment,
    /// The rendered lock key, if the runbook declares one.
    pub lock: Option<String>,
    /// What `medic serve` does when it finds a run of this plan interrupted.
    pub on_interrupted: crate::runbook::model::OnInterrupted,
    pub params: Vec<PlanParam>,
    pub plugins: Vec<PlanPlugin>,
    pub steps: Vec<PlanStep>,
    /// `[[rollback]]`: after the steps' own rollbacks.
    pub rollback: Vec<PlanStep>,
    /// `[[verify]]`: checks after a rollback.
    pub verify: Vec<PlanStep>,
    /// `[[finally]]`: always, at the end.
    pub finally: Vec<PlanStep>,
    /// `[rollout]`, whose stages are among `steps`.
    pub rollout: Option<super::rollout::RolloutPlan>,
    /// What looked wrong but does not stop the runbook (a URL outside the grants).
    pub warnings: Vec<Diagnostic>,
    /// Secrets not read (`defer_secrets`: a plan or a check): their names, and where a run
    /// would read them (`$VAR`, `file PATH`).
    pub deferred: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Environment {
    /// `default` when the runbook declares no environments.
    pub name: String,
    pub protected: bool,
    pub vars: Vec<(String, Value)>,
    /// Who may decide approvals here; empty: anyone allowed to decide at all.
    pub approvers: Vec<String>,
    /// Distinct approvals a step needs.
    pub min_approvals: u32,
}

impl Environment {
    /// Whether the environment declares an approval policy: then the run's own starter
    /// cannot approve its steps.
    pub fn has_approval_policy(&self) -> bool {
        !self.approvers.is_empty() || self.min_approvals > 1
    }
}

#[derive(Debug, Clone)]
pub struct PlanParam {
    pub name: String,
    pub value: Value,
    pub secret: bool,
}

#[derive(Debug)]
pub struct PlanPlugin {
    /// The name the runbook declares it under (`[plugins.NAME]`).
    pub alias: String,
    pub plugin: Arc<Plugin>,
    pub timeout: Option<Duration>,
    pub memory: u64,
    pub grants: Arc<Grants>,
}

#[derive(Debug, Clone)]
pub struct PlanStep {
    pub id: String,
    pub description: Option<String>,
    /// Index into [`Plan::plugins`].
    pub plugin: usize,
    pub with: Vec<(String, Arg)>,
    /// Parameters never shown nor recorded: the plugin declares them secret, or they are
    /// rendered from a secret runbook parameter.
    pub secret_params: Vec<String>,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// A condition; the step is skipped when it is false.
    pub when: Option<String>,
    pub retry: Option<Retry>,
    pub gate: Option<Gate>,
    pub rollback: Option<StepRollback>,
    /// The run pauses before the step until approved.
    pub approval: Option<ApprovalGate>,
    pub fleet: Option<Fleet>,
}

#[derive(Debug, Clone)]
pub struct ApprovalGate {
    pub timeout: Duration,
    pub prompt: String,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub jitter: bool,
    pub on: RetryOn,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Gate {
    /// Bake time before the first check; `timeout` counts from the first check.
    pub delay: Duration,
    pub interval: Duration,
    pub successes: u32,
    pub failures: u32,
    pub timeout: Duration,
    /// The gate passes no earlier than this long after its first check.
    pub hold: Duration,
    /// An inconclusive check pauses the run for a person's decision (`inconclusive = "pause"`).
    pub pause_on_inconclusive: bool,
}

/// A step run once per target, a few at a time (`[steps.fleet]`).
#[derive(Debug, Clone)]
pub struct Fleet {
    pub targets: FleetTargets,
    pub max_concurrency: Amount,
    pub max_errors: Amount,
    pub order: FleetOrder,
}

#[derive(Debug, Clone)]
pub enum FleetTargets {
    /// Written out; each may be a template.
    List(Vec<String>),
    /// An expression evaluated when the step starts (a list parameter, an earlier step's
    /// outputs): the fleet can be discovered by the run itself.
    Expr(String),
}

/// A number of targets, or a share of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// Concurrency rounds up (a share never means nobody), errors round down (a share
    /// never tolerates more than it says).
    pub fn of(self, n: usize, round_up: bool) -> usize {
        match self {
            Amount::Count(c) => c as usize,
            Amount::Percent(p) if round_up => (n * p as usize).div_ceil(100).max(1),
            Amount::Percent(p) => n * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(c) => write!(f, "{c}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetOrder {
    Listed,
    Reverse,
    Random,
}

#[derive(Debug, Clone)]
pub enum StepRollback {
    /// The plugin's own revert, with the step's parameters and outputs.
    Revert,
    /// Another plugin call.
    Call {
        plugin: usize,
        with: Vec<(String, Arg)>,
        secret_params: Vec<String>,
        timeout: Duration,
    },
}

/// A step parameter: a value known before the run, or a template rendered when the step
/// starts (it may refer to earlier steps' outputs).
#[derive(Debug, Clone)]
pub enum Arg {
    Value(Value),
    Template { source: String, ty: ValueType },
    ListTemplate(Vec<String>),
}

/// A step's checked arguments, and the names of those that are secret.
type CheckedArgs = (Vec<(String, Arg)>, Vec<String>);

/// What the runbook is validated and run with.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--param name=value` pairs.
    pub params: Vec<(String, String)>,
    /// `--env NAME`.
    pub environment: Option<String>,
    /// Accept secrets whose source (environment variable, file) is not present here:
    /// `medic validate` checks the runbook, not the shell it runs in.
    pub defer_secrets: bool,
    /// The values of `from_env`/`from_file` parameters, read by another process (the
    /// `medic run` that asked `medic serve` to run it): used instead of this process's
    /// environment and files. A parameter missing here is unset.
    pub sourced: Option<Vec<(String, String)>>,
}

/// Runbook parameter types, as written in `[params.NAME] type = "..."`.
const PARAM_TYPES: &[(&str, ValueType)] = &[
    ("string", ValueType::Text),
    ("int", ValueType::Integer),
    ("float", ValueType::Float),
    ("bool", ValueType::Boolean),
    ("duration", ValueType::Duration),
    ("list", ValueType::TextList),
    ("enum", ValueType::Text),
];

pub const DEFAULT_ENVIRONMENT: &str = "default";

/// The environments a runbook declares, without validating anything else (for `medic validate`,
/// which checks a runbook against each of them). Empty when the text does not parse.
pub fn environment_names(text: &str) -> Vec<String> {
    parse(text)
        .doc
        .map(|d| d.environments.keys().map(|k| k.get_ref().clone()).collect())
        .unwrap_or_default()
}

/// Reads the `from_env`/`from_file` parameters of a runbook here, for another process to
/// plan it with ([`PlanOptions::sourced`]). Sources that cannot be read are left out.
pub fn read_sources(path: &Path, text: &str) -> Vec<(String, String)> {
    let Some(doc) = parse(text).doc else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    doc.params
        .iter()
        .filter_map(|(name, decl)| {
            let decl = decl.get_ref();
            let value = if let Some(var) = &decl.from_env {
                std::env::var(var.get_ref()).ok()
            } else if let Some(file) = &decl.from_file {
                crate::input::read_text(
                    &base.join(file.get_ref()),
                    crate::input::MAX_PARAM_FILE_BYTES,
                )
                .ok()
                .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            }?;
            Some((name.get_ref().clone(), value))
        })
        .collect()
}

/// The parameter names a runbook declares (none when it does not parse).
pub fn param_names(text: &str) -> Vec<String> {
    parse(text)
        .doc
        .map(|d| d.params.keys().map(|k| k.get_ref().clone()).collect())
        .unwrap_or_default()
}

/// A runbook's text as far as it parses: what fits the format, and every mistake in its
/// shape (syntax, unknown keys, wrong types, missing fields).
pub fn parse(text: &str) -> super::shape::Parsed<RunbookDoc> {
    super::shape::parse(
        text,
        super::schema::runbook(),
        &super::schema::RUNBOOK_WORDS,
    )
}

/// The source text of a runbook and where it came from.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

/// Parses and validates a runbook.
pub async fn plan(
    host: &PluginHost,
    src: &Source<'_>,
    opts: &PlanOptions,
) -> Result<Plan, Vec<Diagnostic>> {
    // The file's shape first: every unknown key, wrong type and missing field, then the
    // meaning of what is left.
    let mut parsed = parse(src.text);
    let Some(mut doc) = parsed.doc.take() else {
        return Err(parsed.diags);
    };
    // A rollout becomes ordinary steps before anything is checked, so its steps are checked
    // (and their mistakes located) like any other.
    let (rollout, rollout_diags) = super::rollout::expand(&mut doc);
    let mut v = Validator {
        defer_secrets: opts.defer_secrets,
        sourced: opts.sourced.clone(),
        src,
        diags: Vec::new(),
        env: template::environment(),
        params: Params::new(),
        secrets: Vec::new(),
        secret_names: Default::default(),
        deferred: Vec::new(),
        vars: Vec::new(),
        ctx: minijinja::Value::UNDEFINED,
        grant_mistakes: Default::default(),
    };
    v.diags.extend(rollout_diags);
    let environment = v.environment(&doc, opts.environment.as_deref());
    v.vars = environment.vars.iter().map(|(k, _)| k.clone()).collect();
    v.params(&doc, &opts.params);
    let ctx = v.plan_context(&environment);
    v.ctx = ctx.clone();
    let plugins = v.plugins(host, &doc, &ctx).await;
    let lock = doc.runbook.get_ref().lock.as_ref().and_then(|l| {
        if !v.check_public(l.get_ref(), &l.span(), Scope::Plan, "the lock key") {
            return None;
        }
        match template::render(&v.env, l.get_ref(), &ctx) {
            Ok(key) if key.trim().is_empty() => {
                v.err(Diagnostic::at(l.span(), "the lock key renders to nothing"));
                None
            }
            Ok(key) => Some(key),
            Err(e) => {
                v.err(Diagnostic::at(l.span(), format!("lock: {e}")));
                None
            }
        }
    });
    let default_on_failure = doc
        .runbook
        .get_ref()
        .on_failure
        .as_ref()
        .map(|o| *o.get_ref())
        .unwrap_or_default();
    let main_ids: Vec<String> = doc
        .steps
        .iter()
        .map(|s| s.get_ref().id.get_ref().clone())
        .collect();
    let mut all_ids: HashMap<String, Range<usize>> = HashMap::new();
    let steps = v.section(
        &doc,
        &doc.steps,
        "steps",
        &[],
        &plugins,
        default_on_failure,
        &mut all_ids,
    );
    let rollback = v.section(
        &doc,
        &doc.rollback,
        "rollback",
        &main_ids,
        &plugins,
        OnFailure::Continue,
        &mut all_ids,
    );
    let verify = v.section(
        &doc,
        &doc.verify,
        "verify",
        &main_ids,
        &plugins,
        OnFailure::Continue,
        &mut all_ids,
    );
    let finally = v.section(
        &doc,
        &doc.finally,
        "finally",
        &main_ids,
        &plugins,
        OnFailure::Continue,
        &mut all_ids,
    );
    v.plugin_checks(
        host,
        &plugins,
        &[
            (&steps, &doc.steps),
            (&rollback, &doc.rollback),
            (&verify, &doc.verify),
            (&finally, &doc.finally),
        ],
    )
    .await;
    for s in &doc.verify {
        let s = s.get_ref();
        if let Some(i) = doc
            .plugins
            .keys()
            .position(|k| k.get_ref() == s.uses.get_ref())
            && let Some(p) = &plugins[i]
            && p.plugin.manifest.kind != PluginKind::Check
        {
            v.err(Diagnostic::at(
                s.uses.span(),
                format!(
                    "verify step `{}` uses {}, an action; verify steps must be checks",
                    s.id.get_ref(),
                    p.plugin.manifest.name
                ),
            ));
        }
    }
    let rolls_back = default_on_failure == OnFailure::Rollback
        || doc.steps.iter().any(|s| {
            s.get_ref()
                .on_failure
                .as_ref()
                .is_some_and(|o| *o.get_ref() == OnFailure::Rollback)
        });
    let has_rollback_path =
        doc.steps.iter().any(|s| s.get_ref().rollback.is_some()) || !doc.rollback.is_empty();
    if rolls_back && !has_rollback_path {
        v.err(Diagnostic::at(doc.runbook.span(), "the runbook rolls back on failure but defines no rollback")
            .help("give the action steps a `rollback` (\"revert\" or a call), or add [[rollback]] steps"));
    }
    if has_rollback_path && doc.verify.is_empty() {
        // A rollback nobody checked is a hope, not a recovery.
        v.err(
            Diagnostic::at(
                doc.runbook.span(),
                "the runbook can roll back but has no [[verify]] checks",
            )
            .help("add [[verify]] steps that prove the system healthy after a rollback"),
        );
    }
    if doc.runbook.get_ref().name.get_ref().trim().is_empty() {
        v.err(Diagnostic::at(
            doc.runbook.get_ref().name.span(),
            "the runbook name is empty",
        ));
    }
    if doc.steps.is_empty() {
        v.err(
            Diagnostic::at(doc.runbook.span(), "the runbook has no steps")
                .help("add a [[steps]] table"),
        );
    }
    v.diags.retain(|d| !parsed.follows(d));
    v.diags.extend(parsed.diags);
    v.diags
        .sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    if v.diags.iter().any(|d| !d.warning) {
        // A rollout's calls become one step per stage: a mistake in one is reported once,
        // for its first stage.
        v.diags.dedup_by(|b, a| {
            a.span == b.span
                && a.help == b.help
                && super::rollout::stage_free(&a.message) == super::rollout::stage_free(&b.message)
        });
        return Err(v.diags);
    }
    let meta = doc.runbook.into_inner();
    let on_interrupted = meta
        .on_interrupted
        .map(Spanned::into_inner)
        .unwrap_or_default();
    Ok(Plan {
        name: meta.name.into_inner(),
        description: meta.description,
        path: src.path.to_owned(),
        sha256: hex::encode(Sha256::digest(src.text.as_bytes())),
        environment,
        lock,
        on_interrupted,
        params: v
            .params
            .into_iter()
            .map(|(name, p)| PlanParam {
                name,
                value: p.value,
                secret: p.secret,
            })
            .collect(),
        plugins: plugins.into_iter().flatten().collect(),
        steps,
        rollback,
        verify,
        finally,
        rollout,
        warnings: v.diags,
        deferred: v.deferred,
    })
}

struct ParamInfo {
    value: Value,
    secret: bool,
}

type Params = BTreeMap<String, ParamInfo>;

struct Validator<'a> {
    defer_secrets: bool,
    sourced: Option<Vec<(String, String)>>,
    src: &'a Source<'a>,
    diags: Vec<Diagnostic>,
    env: minijinja::Environment<'static>,
    params: Params,
    secrets: Vec<String>,
    /// Parameters declared secret (whether or not their value could be read).
    secret_names: std::collections::BTreeSet<String>,
    /// Secrets left unread (`defer_secrets`), and where they come from.
    deferred: Vec<(String, String)>,
    /// Names of the selected environment's variables.
    vars: Vec<String>,
    /// What plan-time templates render with (parameters, variables, the environment).
    ctx: minijinja::Value,
    /// Plugins whose grants have mistakes.
    grant_mistakes: std::collections::BTreeSet<String>,
}

/// Where a template may appear, which decides the names it may use.
#[derive(Clone, Copy)]
enum Scope<'s> {
    /// Grants: resolved before anything runs.
    Plan,
    /// Step parameters and conditions: also earlier steps.
    Step(Earlier<'s>),
    /// A fleet step's parameters: also `target`.
    Target(Earlier<'s>),
}

/// The steps that run before a given one: a prefix of the section's ids, with their
/// positions for lookups in constant time (a 10,000-step runbook would otherwise spend its
/// validation comparing ids).
#[derive(Clone, Copy)]
struct Earlier<'s> {
    ids: &'s [String],
    upto: usize,
    position: &'s HashMap<String, usize>,
}

impl<'s> Earlier<'s> {
    fn contains(self, id: &str) -> bool {
        self.position.get(id).is_some_and(|&i| i < self.upto)
    }

    fn names(self) -> &'s [String] {
        &self.ids[..self.upto.min(self.ids.len())]
    }

    /// The same, and the step itself (a rollback sees its own step's outputs).
    fn and_own(self) -> Self {
        Earlier {
            upto: (self.upto + 1).min(self.ids.len()),
            ..self
        }
    }
}

impl Validator<'_> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn base(&self) -> &Path {
        self.src.path.parent().unwrap_or(Path::new("."))
    }
}
