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
}

#[derive(Debug, Clone)]
pub struct Environment {
    /// `default` when the runbook declares no environments.
    pub name: String,
    pub protected: bool,
    pub vars: Vec<(String, Value)>,
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
    pub grants: Grants,
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

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn toml_kind(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the float {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// Whether an expression has a `=` that is not part of `==`, `!=`, `<=` or `>=` (outside
/// quotes): the usual slip in a condition.
fn lone_equals(expr: &str) -> bool {
    let b = expr.as_bytes();
    let mut quote = None;
    for (i, &c) in b.iter().enumerate() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'=') => {
                let before = i.checked_sub(1).map(|j| b[j]);
                let after = b.get(i + 1).copied();
                let paired =
                    after == Some(b'=') || matches!(before, Some(b'=' | b'!' | b'<' | b'>'));
                if !paired {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// The longest anything in a runbook may last or wait (a timeout, an approval, a gate):
/// beyond it a value is a mistake (`99999999h`), and deadlines computed from it would
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 30s or 2m"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{s}` is longer than Medic waits for anything ({})",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// Converts text (a `--param` value or a rendered template) to a typed value.
pub fn text_to_value(s: &str, ty: ValueType) -> Result<Value, String> {
    match ty {
        ValueType::Text => Ok(Value::Text(s.to_owned())),
        ValueType::Integer => s
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("`{s}` is not an integer")),
        ValueType::Float => s
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("`{s}` is not a number")),
        ValueType::Boolean => match s.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{s}` is not true or false")),
        },
        ValueType::Duration => parse_duration(s).map(Value::Duration),
        ValueType::TextList => Ok(Value::TextList(
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        )),
    }
}

fn toml_to_value(v: &toml::Value, ty: ValueType) -> Result<Value, String> {
    let wrong = || format!("expected {ty}, found {}", toml_kind(v));
    match (ty, v) {
        (ValueType::Text, toml::Value::String(s)) => Ok(Value::Text(s.clone())),
        (ValueType::Integer, toml::Value::Integer(i)) => Ok(Value::Integer(*i)),
        (ValueType::Float, toml::Value::Float(f)) => Ok(Value::Float(*f)),
        (ValueType::Float, toml::Value::Integer(i)) => Ok(Value::Float(*i as f64)),
        (ValueType::Boolean, toml::Value::Boolean(b)) => Ok(Value::Boolean(*b)),
        (ValueType::Duration, toml::Value::String(s)) => parse_duration(s).map(Value::Duration),
        (ValueType::TextList, toml::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("expected a list of strings, found {} in it", toml_kind(i))
                })
            })
            .collect::<Result<_, _>>()
            .map(Value::TextList),
        _ => Err(wrong()),
    }
}

/// Environment variables hold plain values: strings, numbers, booleans, lists of strings.
fn var_value(v: &toml::Value) -> Result<Value, String> {
    match v {
        toml::Value::String(s) => Ok(Value::Text(s.clone())),
        toml::Value::Integer(i) => Ok(Value::Integer(*i)),
        toml::Value::Float(f) => Ok(Value::Float(*f)),
        toml::Value::Boolean(b) => Ok(Value::Boolean(*b)),
        toml::Value::Array(_) => toml_to_value(v, ValueType::TextList),
        other => Err(format!(
            "a variable must be a string, number, boolean or list of strings, not {}",
            toml_kind(other)
        )),
    }
}

/// The environments a runbook declares, without validating anything else (for `medic validate`,
/// which checks a runbook against each of them). Empty when the text does not parse.
pub fn environment_names(text: &str) -> Vec<String> {
    toml::from_str::<RunbookDoc>(text)
        .map(|d| d.environments.keys().map(|k| k.get_ref().clone()).collect())
        .unwrap_or_default()
}

/// Reads the `from_env`/`from_file` parameters of a runbook here, for another process to
/// plan it with ([`PlanOptions::sourced`]). Sources that cannot be read are left out.
pub fn read_sources(path: &Path, text: &str) -> Vec<(String, String)> {
    let Ok(doc) = toml::from_str::<RunbookDoc>(text) else {
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
    toml::from_str::<RunbookDoc>(text)
        .map(|d| d.params.keys().map(|k| k.get_ref().clone()).collect())
        .unwrap_or_default()
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
    let mut doc: RunbookDoc = toml::from_str(src.text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        let mut d = Diagnostic::new(message.clone(), e.span());
        // serde's unknown-field message lists the expected keys; make that the hint.
        if let Some((head, expected)) = message.split_once(", expected ") {
            d = Diagnostic::new(head.to_owned(), e.span()).help(format!("expected {expected}"));
        }
        if message.starts_with("data did not match any variant of untagged enum RollbackDecl") {
            d = Diagnostic::new(
                "a rollback is either \"revert\" or a table with `uses` and `with`",
                e.span(),
            )
            .help("rollback = \"revert\", or rollback = { uses = \"PLUGIN\", with = { ... } }");
        }
        vec![d]
    })?;
    // A rollout becomes ordinary steps before anything is checked, so its steps are checked
    // (and their mistakes located) like any other.
    let (rollout, rollout_diags) = match super::rollout::expand(&mut doc) {
        Ok(r) => (r, Vec::new()),
        Err(d) => (None, d),
    };
    let mut v = Validator {
        defer_secrets: opts.defer_secrets,
        sourced: opts.sourced.clone(),
        src,
        diags: Vec::new(),
        env: template::environment(),
        params: Params::new(),
        secrets: Vec::new(),
        secret_names: Default::default(),
        vars: Vec::new(),
    };
    v.diags.extend(rollout_diags);
    let environment = v.environment(&doc, opts.environment.as_deref());
    v.vars = environment.vars.iter().map(|(k, _)| k.clone()).collect();
    v.params(&doc, &opts.params);
    let ctx = v.plan_context(&environment);
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
    if !v.diags.is_empty() {
        v.diags
            .sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        v.diags.dedup();
        return Err(v.diags);
    }
    let meta = doc.runbook.into_inner();
    Ok(Plan {
        name: meta.name.into_inner(),
        description: meta.description,
        path: src.path.to_owned(),
        sha256: hex::encode(Sha256::digest(src.text.as_bytes())),
        environment,
        lock,
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
    /// Names of the selected environment's variables.
    vars: Vec<String>,
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

    fn environment(&mut self, doc: &RunbookDoc, chosen: Option<&str>) -> Environment {
        let names: Vec<&str> = doc
            .environments
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        for (name, decl) in &doc.environments {
            if !valid_name(name.get_ref()) {
                self.err(Diagnostic::at(
                    name.span(),
                    format!(
                        "environment name `{}` must be lowercase letters, digits and underscores",
                        name.get_ref()
                    ),
                ));
            }
            // Every environment declares the same variables, so a runbook valid for one is
            // valid for all and `medic validate` catches the gap before the prod run does.
            for (other, other_decl) in &doc.environments {
                for var in other_decl.get_ref().vars.keys() {
                    if !decl
                        .get_ref()
                        .vars
                        .keys()
                        .any(|k| k.get_ref() == var.get_ref())
                    {
                        self.err(Diagnostic::at(
                            name.span(),
                            format!(
                                "environment `{}` lacks variable `{}`, which `{}` declares",
                                name.get_ref(),
                                var.get_ref(),
                                other.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        let Some(chosen) = chosen else {
            if !names.is_empty() {
                self.err(Diagnostic::new(
                    format!(
                        "this runbook targets environments ({}): choose one with --env",
                        names.join(", ")
                    ),
                    None,
                ));
            }
            return Environment {
                name: DEFAULT_ENVIRONMENT.into(),
                protected: false,
                vars: Vec::new(),
            };
        };
        let Some((name, decl)) = doc.environments.iter().find(|(k, _)| k.get_ref() == chosen)
        else {
            let help = if names.is_empty() {
                "this runbook declares no [environments]; run it without --env".to_owned()
            } else {
                did_you_mean(chosen, names.iter().copied())
                    .unwrap_or_else(|| format!("environments: {}", names.join(", ")))
            };
            self.err(
                Diagnostic::new(
                    format!("--env {chosen}: the runbook declares no environment `{chosen}`"),
                    None,
                )
                .help(help),
            );
            return Environment {
                name: chosen.to_owned(),
                protected: false,
                vars: Vec::new(),
            };
        };
        let mut vars = Vec::new();
        for (k, val) in &decl.get_ref().vars {
            if !valid_name(k.get_ref()) {
                self.err(Diagnostic::at(
                    k.span(),
                    format!(
                        "variable name `{}` must be lowercase letters, digits and underscores",
                        k.get_ref()
                    ),
                ));
            }
            match var_value(val.get_ref()) {
                Ok(v) => vars.push((k.get_ref().clone(), v)),
                Err(e) => self.err(Diagnostic::at(val.span(), e)),
            }
        }
        Environment {
            name: name.get_ref().clone(),
            protected: decl.get_ref().protected,
            vars,
        }
    }

    fn param_value(
        &mut self,
        name: &Spanned<String>,
        decl: &ParamDecl,
        ty: ValueType,
    ) -> Option<Value> {
        let sourced = |v: &Self| {
            v.sourced.as_ref().map(|s| {
                s.iter()
                    .find(|(k, _)| k == name.get_ref())
                    .map(|(_, v)| v.clone())
                    .ok_or(())
            })
        };
        if let Some(var) = &decl.from_env {
            let read =
                sourced(self).unwrap_or_else(|| std::env::var(var.get_ref()).map_err(|_| ()));
            return match read {
                Ok(v) => self.checked(name, decl, text_to_value(&v, ty), var.span(), "parameter"),
                Err(_) if self.defer_secrets && decl.secret => None,
                Err(_) => {
                    self.err(Diagnostic::at(
                        var.span(),
                        format!(
                            "parameter `{}` comes from environment variable {}, which is not set",
                            name.get_ref(),
                            var.get_ref()
                        ),
                    ));
                    None
                }
            };
        }
        if let Some(file) = &decl.from_file {
            let path = self.base().join(file.get_ref());
            let read = match sourced(self) {
                Some(v) => v.map_err(|()| std::io::Error::from(std::io::ErrorKind::NotFound)),
                None => crate::input::read_text(&path, crate::input::MAX_PARAM_FILE_BYTES),
            };
            return match read {
                // Files written by editors and `echo` end with a newline that is not part of the value.
                Ok(v) => self.checked(
                    name,
                    decl,
                    text_to_value(v.trim_end_matches(['\n', '\r']), ty),
                    file.span(),
                    "parameter",
                ),
                Err(_) if self.defer_secrets && decl.secret => None,
                Err(e) => {
                    self.err(Diagnostic::at(
                        file.span(),
                        format!(
                            "parameter `{}` comes from {}, which cannot be read: {}",
                            name.get_ref(),
                            path.display(),
                            match e.kind() {
                                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                                std::io::ErrorKind::PermissionDenied => {
                                    "permission denied".to_owned()
                                }
                                _ => e.to_string(),
                            }
                        ),
                    ));
                    None
                }
            };
        }
        let default = decl.default.as_ref()?;
        self.checked(
            name,
            decl,
            toml_to_value(default.get_ref(), ty),
            default.span(),
            "default of parameter",
        )
    }

    /// Applies `pattern` and `values` to a value; errors point at `span`.
    fn checked(
        &mut self,
        name: &Spanned<String>,
        decl: &ParamDecl,
        value: Result<Value, String>,
        span: Range<usize>,
        what: &str,
    ) -> Option<Value> {
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                // A secret's value must not appear in an error either.
                let e = if decl.secret {
                    "the value has the wrong type".to_owned()
                } else {
                    e
                };
                self.err(Diagnostic::at(
                    span,
                    format!("{what} `{}`: {e}", name.get_ref()),
                ));
                return None;
            }
        };
        self.constrain(name.get_ref(), decl, &value)
            .map_err(|e| self.err(Diagnostic::at(span, e)))
            .ok()?;
        Some(value)
    }

    fn constrain(&self, name: &str, decl: &ParamDecl, value: &Value) -> Result<(), String> {
        let Value::Text(text) = value else {
            return Ok(());
        };
        let shown = if decl.secret {
            "the value".to_owned()
        } else {
            format!("`{text}`")
        };
        if let Some(values) = &decl.values
            && !values.get_ref().contains(text)
        {
            return Err(format!(
                "parameter `{name}`: {shown} is not one of {}",
                values.get_ref().join(", ")
            ));
        }
        if let Some(pattern) = &decl.pattern
            && let Ok(re) = regex::Regex::new(&format!("^(?:{})$", pattern.get_ref()))
            && !re.is_match(text)
        {
            return Err(format!(
                "parameter `{name}`: {shown} does not match the pattern `{}`",
                pattern.get_ref()
            ));
        }
        Ok(())
    }

    fn params(&mut self, doc: &RunbookDoc, overrides: &[(String, String)]) {
        let mut types = BTreeMap::new();
        for (name, decl) in &doc.params {
            let decl = decl.get_ref();
            if !valid_name(name.get_ref()) {
                self.err(
                    Diagnostic::at(
                        name.span(),
                        format!(
                            "parameter name `{}` must be lowercase letters, digits and underscores",
                            name.get_ref()
                        ),
                    )
                    .help(
                        "templates refer to it as params.NAME, so dashes would read as subtraction",
                    ),
                );
            }
            let Some(ty) = PARAM_TYPES
                .iter()
                .find(|(n, _)| *n == decl.ty.get_ref())
                .map(|(_, t)| *t)
            else {
                let names: Vec<&str> = PARAM_TYPES.iter().map(|(n, _)| *n).collect();
                self.err(
                    Diagnostic::at(
                        decl.ty.span(),
                        format!("unknown parameter type `{}`", decl.ty.get_ref()),
                    )
                    .help(
                        did_you_mean(decl.ty.get_ref(), names.iter().copied())
                            .unwrap_or_else(|| format!("types: {}", names.join(", "))),
                    ),
                );
                continue;
            };
            let is_enum = decl.ty.get_ref() == "enum";
            match (&decl.values, is_enum) {
                (None, true) => self.err(Diagnostic::at(
                    decl.ty.span(),
                    format!("enum parameter `{}` needs `values = [...]`", name.get_ref()),
                )),
                (Some(v), false) => self.err(
                    Diagnostic::at(
                        v.span(),
                        format!(
                            "`values` is for enum parameters; `{}` is {}",
                            name.get_ref(),
                            decl.ty.get_ref()
                        ),
                    )
                    .help("write type = \"enum\""),
                ),
                (Some(v), true) if v.get_ref().is_empty() => {
                    self.err(Diagnostic::at(v.span(), "an enum needs at least one value"))
                }
                _ => {}
            }
            if let Some(p) = &decl.pattern {
                if ty != ValueType::Text {
                    self.err(Diagnostic::at(
                        p.span(),
                        format!(
                            "`pattern` applies to string parameters; `{}` is {}",
                            name.get_ref(),
                            decl.ty.get_ref()
                        ),
                    ));
                } else if let Err(e) = regex::Regex::new(p.get_ref()) {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    self.err(Diagnostic::at(
                        p.span(),
                        format!("invalid pattern: {first}"),
                    ));
                }
            }
            let sources = usize::from(decl.from_env.is_some())
                + usize::from(decl.from_file.is_some())
                + usize::from(decl.default.is_some());
            if sources > 1 {
                self.err(Diagnostic::at(
                    name.span(),
                    format!(
                        "parameter `{}` has more than one of `default`, `from_env` and `from_file`",
                        name.get_ref()
                    ),
                ));
            }
            if decl.secret
                && let Some(default) = &decl.default
            {
                self.err(Diagnostic::at(default.span(), format!("secret parameter `{}` has a default in the runbook, where anyone can read it", name.get_ref()))
                    .help("read it with from_env = \"VAR\" or from_file = \"path\""));
            }
            if decl.secret
                && decl.from_env.is_none()
                && decl.from_file.is_none()
                && decl.default.is_none()
            {
                self.err(Diagnostic::at(name.span(), format!("secret parameter `{}` needs `from_env` or `from_file`", name.get_ref()))
                    .help("secrets never come from the command line, which ends up in shell history and `ps`"));
            }
            if decl.secret {
                self.secret_names.insert(name.get_ref().clone());
            }
            if decl.secret && matches!(ty, ValueType::Boolean | ValueType::Duration) {
                self.err(Diagnostic::at(name.span(), format!("secret parameter `{}` is a {}: such a value cannot be masked without masking every one like it", name.get_ref(), if ty == ValueType::Boolean { "boolean" } else { "duration" }))
                    .help("secrets are strings, numbers or lists"));
            }
            types.insert(name.get_ref().clone(), ty);
            if let Some(value) = self.param_value(name, decl, ty) {
                if decl.secret
                    && let Value::Text(s) = &value
                    && !s.is_empty()
                {
                    self.secrets.push(s.clone());
                }
                self.params.insert(
                    name.get_ref().clone(),
                    ParamInfo {
                        value,
                        secret: decl.secret,
                    },
                );
            }
        }
        for (key, raw) in overrides {
            let Some((name, decl)) = doc.params.iter().find(|(k, _)| k.get_ref() == key) else {
                let names: Vec<&str> = doc.params.keys().map(|k| k.get_ref().as_str()).collect();
                let hint = did_you_mean(key, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        "this runbook takes no parameters".into()
                    } else {
                        format!("parameters: {}", names.join(", "))
                    }
                });
                self.err(
                    Diagnostic::new(
                        format!("--param {key}: the runbook declares no parameter `{key}`"),
                        None,
                    )
                    .help(hint),
                );
                continue;
            };
            let decl = decl.get_ref();
            if decl.secret {
                self.err(Diagnostic::new(format!("--param {key}: `{key}` is a secret and cannot be set on the command line"), None)
                    .help("it is read from its from_env or from_file source"));
                continue;
            }
            let Some(ty) = types.get(key).copied() else {
                continue;
            };
            let value =
                text_to_value(raw, ty).and_then(|v| self.constrain(key, decl, &v).map(|()| v));
            match value {
                Ok(value) => {
                    self.params.insert(
                        name.get_ref().clone(),
                        ParamInfo {
                            value,
                            secret: false,
                        },
                    );
                }
                Err(e) => self.err(Diagnostic::new(format!("--param {key}: {e}"), None)),
            }
        }
        for (name, decl) in &doc.params {
            let decl = decl.get_ref();
            let required = decl.required.unwrap_or(decl.default.is_none());
            let sourced = decl.from_env.is_some() || decl.from_file.is_some();
            if required
                && !sourced
                && !self.params.contains_key(name.get_ref())
                && types.contains_key(name.get_ref())
            {
                self.err(
                    Diagnostic::at(
                        name.span(),
                        format!(
                            "parameter `{}` is required and was not given",
                            name.get_ref()
                        ),
                    )
                    .help(format!("pass it with --param {}=VALUE", name.get_ref())),
                );
            }
        }
    }

    fn plan_context(&self, environment: &Environment) -> minijinja::Value {
        minijinja::context! {
            params => template::map_to_jinja(self.params.iter().map(|(k, p)| (k, &p.value))),
            vars => template::map_to_jinja(environment.vars.iter().map(|(k, v)| (k, v))),
            env => minijinja::context! { name => environment.name.clone(), protected => environment.protected },
        }
    }

    /// Checks the names an expression or template refers to. Returns whether it is sound and
    /// whether it refers to a secret parameter.
    fn check_refs(
        &mut self,
        refs: Vec<String>,
        span: &Range<usize>,
        scope: Scope<'_>,
    ) -> (bool, bool) {
        let mut ok = true;
        let mut secret = false;
        for r in refs {
            let parts: Vec<&str> = r.split('.').collect();
            let problem = match (parts[0], scope) {
                ("params", _) => match parts.get(1) {
                    None => None,
                    Some(p) => match self.params.get(*p) {
                        Some(info) => {
                            secret |= info.secret;
                            None
                        }
                        // A declared parameter without a value has its own error already.
                        None if self.src.text.contains(&format!("[params.{p}]")) => {
                            secret |= self.secret_names.contains(*p);
                            None
                        }
                        None => Some((
                            format!("unknown parameter `{p}` in `{r}`"),
                            did_you_mean(p, self.params.keys().map(String::as_str)),
                        )),
                    },
                },
                ("vars", _) => match parts.get(1) {
                    Some(v) if !self.vars.iter().any(|x| x == v) => Some((
                        format!("unknown variable `{v}` in `{r}`"),
                        did_you_mean(v, self.vars.iter().map(String::as_str)).or_else(|| {
                            Some("variables come from the selected [environments.NAME.vars]".into())
                        }),
                    )),
                    _ => None,
                },
                ("env", _) => match parts.get(1) {
                    None | Some(&"name") | Some(&"protected") => None,
                    Some(other) => Some((
                        format!("`{r}`: env has `name` and `protected`, not `{other}`"),
                        Some("environment variables are `vars.NAME`".into()),
                    )),
                },
                ("target", Scope::Target(_)) => None,
                ("target", _) => Some((
                    "`target` is defined only in fleet steps".to_owned(),
                    Some("run the step once per target with [steps.fleet] targets = [...]".into()),
                )),
                ("steps", Scope::Step(earlier) | Scope::Target(earlier)) => match parts.get(1) {
                    None => None,
                    Some(s) if earlier.contains(s) => match parts.get(2) {
                        None | Some(&"outputs") | Some(&"status") | Some(&"summary") => None,
                        Some(other) => Some((
                            format!(
                                "`{r}`: a step has `outputs`, `status` and `summary`, not `{other}`"
                            ),
                            None,
                        )),
                    },
                    Some(s) => Some((
                        format!("`{r}` refers to step `{s}`, which does not run before this one"),
                        did_you_mean(s, earlier.names().iter().map(String::as_str)),
                    )),
                },
                (root, _) => {
                    let roots: &[&str] = match scope {
                        Scope::Target(_) => &["params", "vars", "env", "steps", "target"],
                        Scope::Step(_) => &["params", "vars", "env", "steps"],
                        Scope::Plan => &["params", "vars", "env"],
                    };
                    Some((
                        format!("unknown name `{root}` in a template"),
                        did_you_mean(root, roots.iter().copied())
                            .or_else(|| Some(format!("available here: {}", roots.join(", ")))),
                    ))
                }
            };
            if let Some((msg, hint)) = problem {
                self.err(Diagnostic::at(span.clone(), msg).help_opt(hint));
                ok = false;
            }
        }
        (ok, secret)
    }

    fn check_template(
        &mut self,
        source: &str,
        span: &Range<usize>,
        scope: Scope<'_>,
    ) -> (bool, bool) {
        match template::references(&self.env, source) {
            Ok(refs) => self.check_refs(refs, span, scope),
            Err(e) => {
                let unclosed = source.matches("{{").count() > source.matches("}}").count()
                    || source.matches("{%").count() > source.matches("%}").count();
                self.err(
                    Diagnostic::at(span.clone(), format!("template error: {e}")).help_opt(
                        unclosed.then(|| {
                            "a `{{` (or `{%`) is not closed with `}}` (or `%}`)".to_owned()
                        }),
                    ),
                );
                (false, false)
            }
        }
    }

    /// Like [`Self::check_template`], for text Medic prints and records by design (lock
    /// keys, grants, fleet targets): a secret there is refused.
    fn check_public(
        &mut self,
        source: &str,
        span: &Range<usize>,
        scope: Scope<'_>,
        what: &str,
    ) -> bool {
        let (ok, secret) = self.check_template(source, span, scope);
        if secret {
            self.secret_shown(span, what);
        }
        ok && !secret
    }

    fn secret_shown(&mut self, span: &Range<usize>, what: &str) {
        self.err(
            Diagnostic::at(
                span.clone(),
                format!(
                    "{what} cannot use a secret parameter: it is shown and recorded as written"
                ),
            )
            .help("use a parameter that is not secret"),
        );
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        self.duration_at(s.get_ref(), s.span(), what)
    }

    fn duration_at(&mut self, s: &str, span: Range<usize>, what: &str) -> Option<Duration> {
        match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.err(Diagnostic::at(
                    span,
                    format!("{what} must be more than zero"),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(Diagnostic::at(span, format!("{what}: {e}")));
                None
            }
        }
    }

    async fn plugins(
        &mut self,
        host: &PluginHost,
        doc: &RunbookDoc,
        ctx: &minijinja::Value,
    ) -> Vec<Option<PlanPlugin>> {
        let mut out = Vec::new();
        for (alias, decl) in &doc.plugins {
            out.push(self.plugin(host, alias, decl.get_ref(), ctx).await);
        }
        out
    }

    async fn plugin(
        &mut self,
        host: &PluginHost,
        alias: &Spanned<String>,
        decl: &PluginDecl,
        ctx: &minijinja::Value,
    ) -> Option<PlanPlugin> {
        let source = PluginSource::parse(decl.source.get_ref(), self.base());
        let pin = decl.sha256.as_ref();
        let plugin = match host.load(&source, pin.map(|p| p.get_ref().as_str())).await {
            Ok(p) => p,
            Err(e) => {
                let span = match (&e, pin) {
                    (LoadError::DigestMismatch { .. } | LoadError::BadPin { .. }, Some(pin)) => {
                        pin.span()
                    }
                    _ => decl.source.span(),
                };
                self.err(Diagnostic::at(
                    span,
                    format!("plugin `{}`: {e}", alias.get_ref()),
                ));
                return None;
            }
        };
        let memory = match &decl.memory {
            None => limits::DEFAULT_MEMORY,
            Some(m) => match limits::parse_bytes(m.get_ref()) {
                Ok(n) if n > limits::MAX_MEMORY => {
                    self.err(Diagnostic::at(
                        m.span(),
                        format!(
                            "memory limit {} is above the maximum of {}",
                            m.get_ref(),
                            limits::format_bytes(limits::MAX_MEMORY)
                        ),
                    ));
                    limits::DEFAULT_MEMORY
                }
                Ok(n) if n < (2 << 20) => {
                    self.err(Diagnostic::at(
                        m.span(),
                        format!(
                            "memory limit {} is too small for any plugin (at least 2MiB)",
                            m.get_ref()
                        ),
                    ));
                    limits::DEFAULT_MEMORY
                }
                Ok(n) => n,
                Err(e) => {
                    self.err(Diagnostic::at(m.span(), e));
                    limits::DEFAULT_MEMORY
                }
            },
        };
        let timeout = decl
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, "plugin timeout"));

        let mut grants = Grants::default();
        if let Some(g) = &decl.grants {
            for host_grant in &g.get_ref().http {
                let mut text = host_grant.get_ref().clone();
                if template::is_template(&text) {
                    if !self.check_public(&text, &host_grant.span(), Scope::Plan, "a grant") {
                        continue;
                    }
                    match template::render(&self.env, &text, ctx) {
                        Ok(t) => text = t,
                        Err(e) => {
                            self.err(Diagnostic::at(
                                host_grant.span(),
                                format!("cannot render grant: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                match text.parse::<HostGrant>() {
                    Ok(h) => grants.http.push(h),
                    Err(e) => self.err(Diagnostic::at(
                        host_grant.span(),
                        format!("http grant: {e}"),
                    )),
                }
            }
            for c in &g.get_ref().command {
                match CommandGrant::new(&c.get_ref().program, &c.get_ref().args) {
                    Ok(grant) => grants.command.push(grant),
                    Err(e) => self.err(Diagnostic::at(c.span(), format!("command grant: {e}"))),
                }
            }
            for tcp_grant in &g.get_ref().tcp {
                let mut text = tcp_grant.get_ref().clone();
                if template::is_template(&text) {
                    if !self.check_public(&text, &tcp_grant.span(), Scope::Plan, "a grant") {
                        continue;
                    }
                    match template::render(&self.env, &text, ctx) {
                        Ok(t) => text = t,
                        Err(e) => {
                            self.err(Diagnostic::at(
                                tcp_grant.span(),
                                format!("cannot render grant: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                match text.parse::<HostGrant>() {
                    Ok(h) if h.has_port() && text.parse::<std::net::SocketAddr>().is_ok() => {
                        grants.tcp.push(h)
                    }
                    Ok(_) => self.err(Diagnostic::at(
                        tcp_grant.span(),
                        format!(
                            "tcp grant: `{text}` must be an ip:port address, e.g. 127.0.0.1:9999"
                        ),
                    )),
                    Err(e) => self.err(Diagnostic::at(tcp_grant.span(), format!("tcp grant: {e}"))),
                }
            }
            grants.kv = g.get_ref().kv.as_ref().is_some_and(|k| *k.get_ref());
        }
        // Least privilege both ways: a plugin gets what it declares and nothing more.
        let uses = |c: &str| plugin.manifest.capabilities.iter().any(|x| x == c);
        let name = &plugin.manifest.name;
        let a = alias.get_ref();
        let grants_span = decl.grants.as_ref().map_or(alias.span(), |g| g.span());
        let declared_hosts = decl
            .grants
            .as_ref()
            .is_some_and(|g| !g.get_ref().http.is_empty());
        if uses("http") && !declared_hosts {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{a}` ({name}) needs the http capability, but no hosts are granted"
                    ),
                )
                .help(format!(
                    "add `http = [\"HOST:PORT\"]` under [plugins.{a}.grants]"
                )),
            );
        }
        if !uses("http") && declared_hosts {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{a}` ({name}) does not use http, but the runbook grants it hosts"
                    ),
                )
                .help("remove the http grant"),
            );
        }
        let granted_commands = decl
            .grants
            .as_ref()
            .is_some_and(|g| !g.get_ref().command.is_empty());
        if uses("command") && !granted_commands {
            self.err(
                Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) runs commands, but none are granted"))
                    .help(format!("add `command = [{{ program = \"/usr/bin/...\", args = [\"...\"] }}]` under [plugins.{a}.grants]")),
            );
        }
        if !uses("command") && granted_commands {
            self.err(Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) does not run commands, but the runbook grants it some")).help("remove the command grant"));
        }
        if uses("tcp")
            && grants.tcp.is_empty()
            && decl
                .grants
                .as_ref()
                .is_none_or(|g| g.get_ref().tcp.is_empty())
        {
            self.err(
                Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) needs the tcp capability, but no addresses are granted"))
                    .help(format!("add `tcp = [\"IP:PORT\"]` under [plugins.{a}.grants]")),
            );
        }
        if !uses("tcp")
            && decl
                .grants
                .as_ref()
                .is_some_and(|g| !g.get_ref().tcp.is_empty())
        {
            self.err(Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) does not use tcp, but the runbook grants it addresses")).help("remove the tcp grant"));
        }
        if !uses("kv") && grants.kv {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!("plugin `{a}` ({name}) does not use kv, but the runbook grants it"),
                )
                .help("remove `kv = true`"),
            );
        }
        if uses("kv") && !grants.kv {
            self.err(
                Diagnostic::at(
                    grants_span,
                    format!("plugin `{a}` ({name}) needs the kv capability, which is not granted"),
                )
                .help(format!("add `kv = true` under [plugins.{a}.grants]")),
            );
        }
        Some(PlanPlugin {
            alias: a.clone(),
            plugin: Arc::new(plugin),
            timeout,
            memory,
            grants,
        })
    }

    /// Validates one section of steps. `before` are ids of steps that always precede it (the
    /// main steps, for rollback/verify/finally); `all_ids` collects ids across sections so
    /// they are unique in the whole runbook.
    #[allow(clippy::too_many_arguments)]
    fn section(
        &mut self,
        doc: &RunbookDoc,
        decls: &[Spanned<StepDecl>],
        section: &str,
        before: &[String],
        plugins: &[Option<PlanPlugin>],
        default_on_failure: OnFailure,
        all_ids: &mut HashMap<String, Range<usize>>,
    ) -> Vec<PlanStep> {
        let aliases: Vec<&str> = doc.plugins.keys().map(|k| k.get_ref().as_str()).collect();
        let mut earlier: Vec<String> = before.to_vec();
        earlier.extend(decls.iter().map(|d| d.get_ref().id.get_ref().clone()));
        let mut position: HashMap<String, usize> = HashMap::with_capacity(earlier.len());
        for (i, id) in earlier.iter().enumerate() {
            position.entry(id.clone()).or_insert(i);
        }
        let earlier = earlier;
        let position = position;
        let mut out = Vec::new();
        for (index_in_section, decl) in decls.iter().enumerate() {
            let step = decl.get_ref();
            let id = step.id.get_ref();
            if !valid_name(id) {
                self.err(
                    Diagnostic::at(
                        step.id.span(),
                        format!("step id `{id}` must be lowercase letters, digits and underscores"),
                    )
                    .help(format!(
                        "try `{}`",
                        id.to_ascii_lowercase().replace(['-', ' ', '.'], "_")
                    )),
                );
            }
            if all_ids.contains_key(id) {
                self.err(
                    Diagnostic::at(step.id.span(), format!("step id `{id}` is used twice"))
                        .help("step ids must be unique across steps, rollback, verify and finally"),
                );
            } else {
                all_ids.insert(id.clone(), step.id.span());
            }
            // This step's place in the section: the steps before it are in scope.
            let scope_ids = Earlier {
                ids: &earlier,
                upto: before.len() + index_in_section,
                position: &position,
            };

            let Some(index) = aliases.iter().position(|a| a == step.uses.get_ref()) else {
                self.err(
                    Diagnostic::at(
                        step.uses.span(),
                        format!(
                            "step `{id}` uses `{}`, which is not declared under [plugins]",
                            step.uses.get_ref()
                        ),
                    )
                    .help(
                        did_you_mean(step.uses.get_ref(), aliases.iter().copied()).unwrap_or_else(
                            || {
                                format!(
                                    "declare it with [plugins.{}] source = \"builtin:...\"",
                                    step.uses.get_ref()
                                )
                            },
                        ),
                    ),
                );
                continue;
            };
            let Some(pp) = &plugins[index] else { continue };
            let fleet = step
                .fleet
                .as_ref()
                .and_then(|f| self.fleet(id, f, Scope::Step(scope_ids)));
            let scope = if step.fleet.is_some() {
                Scope::Target(scope_ids)
            } else {
                Scope::Step(scope_ids)
            };
            let with = self.args(id, &step.with, &step.id.span(), &pp.plugin, scope);
            if let (Some(_), Some(g)) = (&step.fleet, &step.gate) {
                self.err(
                    Diagnostic::at(g.span(), format!("step `{id}` has both a gate and a fleet"))
                        .help(format!(
                            "a gate watches one thing over time; watch the fleet in a gated step after `{id}`"
                        )),
                );
            }

            let timeout = step
                .timeout
                .as_ref()
                .and_then(|t| self.duration(t, "step timeout"))
                .or(pp.timeout)
                .unwrap_or(limits::DEFAULT_TIMEOUT);
            let on_failure = step
                .on_failure
                .as_ref()
                .map(|o| *o.get_ref())
                .unwrap_or(default_on_failure);
            if section != "steps"
                && let Some(of) = &step.on_failure
            {
                self.err(Diagnostic::at(of.span(), format!("`on_failure` applies to [[steps]]; a failure in [[{section}]] never stops the rest of it")));
            }
            if section != "steps" && step.rollback.is_some() {
                self.err(Diagnostic::at(decl.span(), format!("step `{id}` in [[{section}]] has a rollback; only [[steps]] are rolled back")));
            }
            let when = step.when.as_ref().and_then(|w| match template::compile_expression(&self.env, w.get_ref()) {
                Ok(expr) => {
                    let refs = expr.undeclared_variables(true).into_iter().collect();
                    // Decided once for the whole step, before any target.
                    self.check_refs(refs, &w.span(), Scope::Step(scope_ids)).0.then(|| w.get_ref().clone())
                }
                Err(e) => {
                    let help = if lone_equals(w.get_ref()) {
                        "`=` assigns nothing in a condition: did you mean `==`?".to_owned()
                    } else {
                        "`when` is an expression, e.g. when = \"params.force or steps.check.status == 'failed'\"".to_owned()
                    };
                    self.err(Diagnostic::at(w.span(), format!("condition: {e}")).help(help));
                    None
                }
            });
            let retry = step.retry.as_ref().map(|r| {
                let rd = r.get_ref();
                if *rd.attempts.get_ref() < 1 || *rd.attempts.get_ref() > 100 {
                    self.err(Diagnostic::at(
                        rd.attempts.span(),
                        "retry attempts must be between 1 and 100",
                    ));
                }
                let backoff = rd
                    .backoff
                    .as_ref()
                    .and_then(|b| self.duration(b, "retry backoff"))
                    .unwrap_or(Duration::from_secs(1));
                let max_backoff = match rd.max_backoff.as_ref() {
                    None => Duration::from_secs(60).max(backoff),
                    Some(b) => match self.duration(b, "retry max_backoff") {
                        Some(m) if m < backoff => {
                            self.err(
                                Diagnostic::at(
                                    b.span(),
                                    format!(
                                        "retry max_backoff ({}) is shorter than its backoff ({})",
                                        humantime::format_duration(m),
                                        humantime::format_duration(backoff)
                                    ),
                                )
                                .help("max_backoff caps the growing wait; make it at least the backoff"),
                            );
                            backoff
                        }
                        Some(m) => m,
                        None => backoff,
                    },
                };
                Retry {
                    attempts: *rd.attempts.get_ref(),
                    backoff,
                    max_backoff,
                    jitter: rd.jitter,
                    on: rd.on,
                }
            });
            let gate = step.gate.as_ref().and_then(|g| {
                let gd = g.get_ref();
                if pp.plugin.manifest.kind != PluginKind::Check {
                    self.err(Diagnostic::at(
                        g.span(),
                        format!(
                            "step `{id}` has a gate but {} is an action; gates repeat checks",
                            pp.plugin.manifest.name
                        ),
                    ));
                }
                if step.retry.is_some() {
                    self.err(
                        Diagnostic::at(
                            g.span(),
                            format!("step `{id}` has both a gate and a retry"),
                        )
                        .help("a gate already repeats its check; set its `failures` instead"),
                    );
                }
                let delay = gd
                    .delay
                    .as_ref()
                    .map_or(Some(Duration::ZERO), |d| self.duration(d, "gate delay"));
                let interval = self.duration(&gd.interval, "gate interval");
                let limit = self.duration(&gd.timeout, "gate timeout");
                if let (Some(i), Some(l)) = (interval, limit)
                    && i > l
                {
                    self.err(
                        Diagnostic::at(
                            gd.interval.span(),
                            format!(
                                "gate interval ({}) is longer than its timeout ({}): it could check only once",
                                humantime::format_duration(i),
                                humantime::format_duration(l)
                            ),
                        )
                        .help("check more often than the time limit, e.g. interval = \"10s\" with timeout = \"5m\""),
                    );
                }
                let hold = match &gd.hold {
                    None => Some(Duration::ZERO),
                    Some(h) => match (self.duration(h, "gate hold"), limit) {
                        (Some(hold), Some(limit)) if hold >= limit => {
                            self.err(
                                Diagnostic::at(
                                    h.span(),
                                    format!(
                                        "gate hold ({}) must be shorter than its timeout ({})",
                                        humantime::format_duration(hold),
                                        humantime::format_duration(limit)
                                    ),
                                )
                                .help("the timeout counts from the first check, like the hold"),
                            );
                            None
                        }
                        (hold, _) => hold,
                    },
                };
                let successes = gd.successes.as_ref().map_or(1, |s| *s.get_ref());
                let failures = gd.failures.as_ref().map_or(1, |s| *s.get_ref());
                for (n, what) in [(&gd.successes, "successes"), (&gd.failures, "failures")] {
                    if let Some(n) = n
                        && *n.get_ref() == 0
                    {
                        self.err(Diagnostic::at(
                            n.span(),
                            format!("gate {what} must be at least 1"),
                        ));
                    }
                }
                let pause_on_inconclusive =
                    match gd.inconclusive.as_ref().map(|i| (i, i.get_ref().as_str())) {
                        None | Some((_, "ignore")) => false,
                        Some((_, "pause")) => true,
                        Some((i, other)) => {
                            self.err(
                                Diagnostic::at(
                                    i.span(),
                                    format!("gate inconclusive: `{other}` is not a choice"),
                                )
                                .help("use \"ignore\" (the default) or \"pause\" (ask a person)"),
                            );
                            false
                        }
                    };
                Some(Gate {
                    pause_on_inconclusive,
                    delay: delay?,
                    interval: interval?,
                    successes,
                    failures,
                    timeout: limit?,
                    hold: hold?,
                })
            });
            let rollback = step
                .rollback
                .as_ref()
                .and_then(|r| self.rollback(id, r, &pp.plugin, plugins, &aliases, scope));
            let approval = step.approval.as_ref().and_then(|a| {
                if section != "steps" {
                    self.err(Diagnostic::at(
                        a.span(),
                        format!("step `{id}` in [[{section}]] asks for an approval; a rollback or cleanup must not wait for a person"),
                    ));
                }
                let timeout = self.duration(&a.get_ref().timeout, "approval timeout")?;
                let prompt = a.get_ref().prompt.clone().unwrap_or_else(|| format!("run step `{id}`?"));
                Some(ApprovalGate { timeout, prompt })
            });
            if let Some((with, secret_params)) = with {
                out.push(PlanStep {
                    id: id.clone(),
                    description: step.description.clone(),
                    plugin: index,
                    with,
                    secret_params,
                    timeout,
                    on_failure,
                    when,
                    retry,
                    gate,
                    rollback,
                    approval,
                    fleet,
                });
            }
        }
        out
    }

    fn fleet(&mut self, id: &str, decl: &Spanned<FleetDecl>, scope: Scope<'_>) -> Option<Fleet> {
        let fd = decl.get_ref();
        let span = fd.targets.span();
        let targets = match fd.targets.get_ref() {
            toml::Value::Array(items) => {
                let mut list: Vec<String> = Vec::new();
                for item in items {
                    let Some(t) = item.as_str() else {
                        self.err(Diagnostic::at(
                            span.clone(),
                            format!(
                                "step `{id}`: fleet targets must be strings, found {}",
                                toml_kind(item)
                            ),
                        ));
                        return None;
                    };
                    if template::is_template(t) {
                        if !self.check_public(t, &span, scope, "fleet targets") {
                            return None;
                        }
                    } else if list.iter().any(|l| l == t) {
                        self.err(Diagnostic::at(
                            span.clone(),
                            format!("step `{id}`: fleet target `{t}` is listed twice"),
                        ));
                        return None;
                    }
                    list.push(t.to_owned());
                }
                if list.is_empty() {
                    self.err(Diagnostic::at(
                        span,
                        format!("step `{id}`: the fleet has no targets"),
                    ));
                    return None;
                }
                FleetTargets::List(list)
            }
            toml::Value::String(s) => {
                let Some(expr) = template::sole_expression(s) else {
                    self.err(Diagnostic::at(span, format!("step `{id}`: fleet targets must be a list, or one `{{{{ expression }}}}` that gives a list")).help("e.g. targets = [\"web-1\", \"web-2\"] or targets = \"{{ params.hosts }}\""));
                    return None;
                };
                match template::compile_expression(&self.env, expr) {
                    Ok(e) => {
                        let refs = e.undeclared_variables(true).into_iter().collect();
                        let (ok, secret) = self.check_refs(refs, &span, scope);
                        if secret {
                            self.secret_shown(&span, "fleet targets");
                        }
                        if !ok || secret {
                            return None;
                        }
                    }
                    Err(e) => {
                        self.err(Diagnostic::at(
                            span,
                            format!("step `{id}`: fleet targets: {e}"),
                        ));
                        return None;
                    }
                }
                FleetTargets::Expr(expr.to_owned())
            }
            other => {
                self.err(Diagnostic::at(
                    span,
                    format!(
                        "step `{id}`: fleet targets must be a list of strings, found {}",
                        toml_kind(other)
                    ),
                ));
                return None;
            }
        };
        let max_concurrency = match &fd.max_concurrency {
            None => Some(Amount::Count(1)),
            Some(v) => self.amount(id, "max_concurrency", v, 1),
        };
        let max_errors = match &fd.max_errors {
            None => Some(Amount::Count(0)),
            Some(v) => self.amount(id, "max_errors", v, 0),
        };
        let order = match fd.order.as_ref().map(|o| (o, o.get_ref().as_str())) {
            None | Some((_, "listed")) => Some(FleetOrder::Listed),
            Some((_, "reverse")) => Some(FleetOrder::Reverse),
            Some((_, "random")) => Some(FleetOrder::Random),
            Some((o, other)) => {
                self.err(
                    Diagnostic::at(
                        o.span(),
                        format!("step `{id}`: fleet order `{other}` is not a choice"),
                    )
                    .help(
                        did_you_mean(other, ["listed", "reverse", "random"]).unwrap_or_else(|| {
                            "use \"listed\" (the default), \"reverse\" or \"random\"".into()
                        }),
                    ),
                );
                None
            }
        };
        Some(Fleet {
            targets,
            max_concurrency: max_concurrency?,
            max_errors: max_errors?,
            order: order?,
        })
    }

    /// A count (at least `min`), a percent, or (for concurrency) a CodeDeploy name.
    fn amount(
        &mut self,
        id: &str,
        what: &str,
        v: &Spanned<toml::Value>,
        min: i64,
    ) -> Option<Amount> {
        let named = |s: &str| match s.strip_prefix("CodeDeployDefault.").unwrap_or(s) {
            "OneAtATime" => Some(Amount::Count(1)),
            "HalfAtATime" => Some(Amount::Percent(50)),
            "AllAtOnce" => Some(Amount::Percent(100)),
            _ => None,
        };
        let problem = match v.get_ref() {
            toml::Value::Integer(n) if *n >= min && *n <= u32::MAX as i64 => {
                return Some(Amount::Count(*n as u32));
            }
            toml::Value::Integer(n) if *n < min => format!("{n} is less than {min}"),
            toml::Value::Integer(n) => format!("{n} is more than any fleet"),
            toml::Value::String(s) if min > 0 && named(s).is_some() => return named(s),
            toml::Value::String(s) => match s.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
                Some(Ok(p)) if p <= 100 && (p > 0 || min == 0) => return Some(Amount::Percent(p)),
                Some(Ok(p)) => format!("{p}% is not a share of the targets"),
                _ => format!("`{s}` is neither a number nor a percent"),
            },
            other => format!("expected a number or a percent, found {}", toml_kind(other)),
        };
        let help = if min > 0 {
            "a count like 2, a percent like \"25%\", or OneAtATime, HalfAtATime, AllAtOnce"
        } else {
            "a count like 1 (0: stop at the first failure) or a percent like \"10%\""
        };
        self.err(
            Diagnostic::at(v.span(), format!("step `{id}`: fleet {what}: {problem}")).help(help),
        );
        None
    }

    fn rollback(
        &mut self,
        id: &str,
        r: &Spanned<RollbackDecl>,
        plugin: &Plugin,
        plugins: &[Option<PlanPlugin>],
        aliases: &[&str],
        scope: Scope<'_>,
    ) -> Option<StepRollback> {
        let span = r.span();
        match r.get_ref() {
            RollbackDecl::Keyword(k) if k == "revert" => {
                if !plugin.manifest.supports_revert {
                    self.err(
                        Diagnostic::at(
                            span,
                            format!("step `{id}`: {} cannot revert itself", plugin.manifest.name),
                        )
                        .help("use rollback = { uses = \"PLUGIN\", with = { ... } } instead"),
                    );
                    return None;
                }
                Some(StepRollback::Revert)
            }
            RollbackDecl::Keyword(k) => {
                self.err(Diagnostic::at(span, format!("step `{id}`: unknown rollback `{k}`")).help("rollback = \"revert\", or rollback = { uses = \"PLUGIN\", with = { ... } }"));
                None
            }
            RollbackDecl::Call(call) => {
                let Some(index) = aliases.iter().position(|a| *a == call.uses) else {
                    self.err(Diagnostic::at(span, format!("step `{id}`: the rollback uses `{}`, which is not declared under [plugins]", call.uses)).help_opt(did_you_mean(&call.uses, aliases.iter().copied())));
                    return None;
                };
                let pp = plugins[index].as_ref()?;
                let with: BTreeMap<Spanned<String>, Spanned<toml::Value>> = call
                    .with
                    .iter()
                    .map(|(k, v)| {
                        (
                            Spanned::new(span.clone(), k.clone()),
                            Spanned::new(span.clone(), v.clone()),
                        )
                    })
                    .collect();
                // The rollback may use the step's own outputs as well as earlier steps'.
                let inner = match scope {
                    Scope::Target(e) => Scope::Target(e.and_own()),
                    Scope::Step(e) => Scope::Step(e.and_own()),
                    Scope::Plan => Scope::Plan,
                };
                let (with, secret_params) =
                    self.args(&format!("{id} (rollback)"), &with, &span, &pp.plugin, inner)?;
                let timeout = call
                    .timeout
                    .as_ref()
                    .and_then(|t| self.duration_at(t, span.clone(), "rollback timeout"))
                    .or(pp.timeout)
                    .unwrap_or(limits::DEFAULT_TIMEOUT);
                Some(StepRollback::Call {
                    plugin: index,
                    with,
                    secret_params,
                    timeout,
                })
            }
        }
    }

    /// Checks a step's `with` against the plugin's manifest. Returns the arguments (defaults
    /// filled in) and the names of those that are secret.
    fn args(
        &mut self,
        id: &str,
        with: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        id_span: &Range<usize>,
        plugin: &Plugin,
        scope: Scope<'_>,
    ) -> Option<CheckedArgs> {
        let manifest = &plugin.manifest;
        let mut ok = true;
        let mut out = Vec::new();
        let mut secret = Vec::new();
        for (key, value) in with {
            let Some(spec) = manifest.param(key.get_ref()) else {
                let hint = did_you_mean(
                    key.get_ref(),
                    manifest.params.iter().map(|p| p.name.as_str()),
                )
                .unwrap_or_else(|| {
                    format!(
                        "{} takes: {}",
                        manifest.name,
                        manifest
                            .params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                self.err(
                    Diagnostic::at(
                        key.span(),
                        format!(
                            "step `{id}`: plugin {} has no parameter `{}`",
                            manifest.name,
                            key.get_ref()
                        ),
                    )
                    .help(hint),
                );
                ok = false;
                continue;
            };
            if spec.secret {
                secret.push(spec.name.clone());
            }
            let arg = match value.get_ref() {
                toml::Value::String(s) if template::is_template(s) => {
                    let (sound, uses_secret) = self.check_template(s, &value.span(), scope);
                    if uses_secret && !spec.secret {
                        secret.push(spec.name.clone());
                    }
                    if !sound {
                        ok = false;
                        continue;
                    }
                    Arg::Template {
                        source: s.clone(),
                        ty: spec.ty,
                    }
                }
                toml::Value::Array(items)
                    if spec.ty == ValueType::TextList
                        && items
                            .iter()
                            .any(|i| i.as_str().is_some_and(template::is_template)) =>
                {
                    let mut sources = Vec::new();
                    for i in items {
                        match i.as_str() {
                            Some(s) => {
                                let (sound, uses_secret) =
                                    self.check_template(s, &value.span(), scope);
                                ok &= sound;
                                if uses_secret && !secret.contains(&spec.name) {
                                    secret.push(spec.name.clone());
                                }
                                sources.push(s.to_owned());
                            }
                            None => {
                                self.err(Diagnostic::at(value.span(), format!("step `{id}`, parameter `{}`: expected a list of strings, found {}", spec.name, toml_kind(i))));
                                ok = false;
                            }
                        }
                    }
                    Arg::ListTemplate(sources)
                }
                other => match toml_to_value(other, spec.ty) {
                    Ok(v) => Arg::Value(v),
                    Err(e) => {
                        self.err(Diagnostic::at(
                            value.span(),
                            format!("step `{id}`, parameter `{}`: {e}", spec.name),
                        ));
                        ok = false;
                        continue;
                    }
                },
            };
            out.push((spec.name.clone(), arg));
        }
        for spec in &manifest.params {
            if with.keys().any(|k| *k.get_ref() == spec.name) {
                continue;
            }
            let misspelled = with.keys().any(|k| {
                manifest.param(k.get_ref()).is_none()
                    && did_you_mean(k.get_ref(), [spec.name.as_str()]).is_some()
            });
            match &spec.default {
                Some(d) => out.push((spec.name.clone(), Arg::Value(d.clone()))),
                // A misspelled key already got a did-you-mean for this parameter.
                None if spec.required && misspelled => {}
                None if spec.required => {
                    self.err(
                        Diagnostic::at(
                            id_span.clone(),
                            format!(
                                "step `{id}`: plugin {} requires parameter `{}`",
                                manifest.name, spec.name
                            ),
                        )
                        .help(if spec.description.is_empty() {
                            format!("add `{} = ...` to the step's `with`", spec.name)
                        } else {
                            format!("{}: {}", spec.name, spec.description)
                        }),
                    );
                    ok = false;
                }
                None => {}
            }
        }
        ok.then_some((out, secret))
    }
}
