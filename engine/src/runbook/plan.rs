//! Validation and resolution: a parsed runbook becomes a [`Plan`] in which every plugin is
//! loaded and digested, every parameter is typed and every template reference resolved. All
//! mistakes are collected and reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::diag::{Diagnostic, did_you_mean};
use super::model::{OnFailure, PluginDecl, RunbookDoc, StepDecl};
use super::template;
use crate::host::{
    Grants, HttpGrant, LoadError, Plugin, PluginHost, PluginSource, Value, ValueType, limits,
};

/// A runbook that passed validation: what will run, in order, with what.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// sha256 of the runbook file as read.
    pub sha256: String,
    pub params: Vec<(String, Value)>,
    pub plugins: Vec<PlanPlugin>,
    pub steps: Vec<PlanStep>,
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

#[derive(Debug)]
pub struct PlanStep {
    pub id: String,
    pub description: Option<String>,
    /// Index into [`Plan::plugins`].
    pub plugin: usize,
    pub with: Vec<(String, Arg)>,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// A step parameter: a value known before the run, or a template rendered when the step
/// starts (it refers to earlier steps' outputs).
#[derive(Debug, Clone)]
pub enum Arg {
    Value(Value),
    Template { source: String, ty: ValueType },
    ListTemplate(Vec<String>),
}

/// Runbook parameter types, as written in `[params.NAME] type = "..."`.
const PARAM_TYPES: &[(&str, ValueType)] = &[
    ("string", ValueType::Text),
    ("int", ValueType::Integer),
    ("float", ValueType::Float),
    ("bool", ValueType::Boolean),
    ("duration", ValueType::Duration),
    ("list", ValueType::TextList),
];

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

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 30s or 2m"))
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

/// The source text of a runbook and where it came from.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

/// Parses and validates a runbook. `overrides` are `--param name=value` pairs.
pub async fn plan(
    host: &PluginHost,
    src: &Source<'_>,
    overrides: &[(String, String)],
) -> Result<Plan, Vec<Diagnostic>> {
    let doc: RunbookDoc = toml::from_str(src.text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        let mut d = Diagnostic::new(message.clone(), e.span());
        // serde's unknown-field message lists the expected keys; make that the hint.
        if let Some((head, expected)) = message.split_once(", expected ") {
            d = Diagnostic::new(head.to_owned(), e.span()).help(format!("expected {expected}"));
        }
        vec![d]
    })?;
    let mut v = Validator {
        src,
        diags: Vec::new(),
        env: template::environment(),
    };
    let params = v.params(&doc, overrides);
    let plugins = v.plugins(host, &doc, &params).await;
    let steps = v.steps(&doc, &params, &plugins);
    if doc.runbook.get_ref().name.get_ref().trim().is_empty() {
        v.diags.push(Diagnostic::at(
            doc.runbook.get_ref().name.span(),
            "the runbook name is empty",
        ));
    }
    if doc.steps.is_empty() {
        v.diags.push(
            Diagnostic::at(doc.runbook.span(), "the runbook has no steps")
                .help("add a [[steps]] table"),
        );
    }
    if !v.diags.is_empty() {
        v.diags
            .sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        return Err(v.diags);
    }
    let meta = doc.runbook.into_inner();
    Ok(Plan {
        name: meta.name.into_inner(),
        description: meta.description,
        path: src.path.to_owned(),
        sha256: hex::encode(Sha256::digest(src.text.as_bytes())),
        params: params.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        plugins: plugins.into_iter().flatten().collect(),
        steps,
    })
}

struct Validator<'a> {
    src: &'a Source<'a>,
    diags: Vec<Diagnostic>,
    env: minijinja::Environment<'static>,
}

type Params = BTreeMap<String, (Value, ValueType)>;

impl Validator<'_> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn params(&mut self, doc: &RunbookDoc, overrides: &[(String, String)]) -> Params {
        let mut out = Params::new();
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
            types.insert(name.get_ref().clone(), ty);
            if let Some(default) = &decl.default {
                match toml_to_value(default.get_ref(), ty) {
                    Ok(value) => {
                        out.insert(name.get_ref().clone(), (value, ty));
                    }
                    Err(e) => self.err(Diagnostic::at(
                        default.span(),
                        format!("default of parameter `{}`: {e}", name.get_ref()),
                    )),
                }
            }
        }
        for (key, raw) in overrides {
            let Some(ty) = types.get(key) else {
                let hint = did_you_mean(key, doc.params.keys().map(|k| k.get_ref().as_str()));
                self.err(
                    Diagnostic::new(
                        format!("--param {key}: the runbook declares no parameter `{key}`"),
                        None,
                    )
                    .help_opt(hint.or_else(|| {
                        let names: Vec<&str> =
                            doc.params.keys().map(|k| k.get_ref().as_str()).collect();
                        Some(if names.is_empty() {
                            "this runbook takes no parameters".into()
                        } else {
                            format!("parameters: {}", names.join(", "))
                        })
                    })),
                );
                continue;
            };
            match text_to_value(raw, *ty) {
                Ok(value) => {
                    out.insert(key.clone(), (value, *ty));
                }
                Err(e) => self.err(Diagnostic::new(format!("--param {key}: {e}"), None)),
            }
        }
        for (name, decl) in &doc.params {
            let required = decl
                .get_ref()
                .required
                .unwrap_or(decl.get_ref().default.is_none());
            if required && !out.contains_key(name.get_ref()) && types.contains_key(name.get_ref()) {
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
        out
    }

    fn params_context(params: &Params) -> minijinja::Value {
        let mut ctx = BTreeMap::new();
        ctx.insert(
            "params",
            template::map_to_jinja(params.iter().map(|(k, (v, _))| (k, v))),
        );
        minijinja::Value::from_serialize(&ctx)
    }

    /// Checks a template's references; `earlier` are the step ids it may refer to.
    fn check_template(
        &mut self,
        source: &str,
        span: std::ops::Range<usize>,
        params: &Params,
        earlier: Option<&[String]>,
    ) -> bool {
        let refs = match template::references(&self.env, source) {
            Ok(r) => r,
            Err(e) => {
                self.err(Diagnostic::at(span, format!("template error: {e}")));
                return false;
            }
        };
        let mut ok = true;
        for r in refs {
            let parts: Vec<&str> = r.split('.').collect();
            let problem = match (parts[0], earlier) {
                ("params", _) => match parts.get(1) {
                    None => None,
                    Some(p) if params.contains_key(*p) => None,
                    Some(p) => Some((
                        format!("unknown parameter `{p}` in `{{{{ {r} }}}}`"),
                        did_you_mean(p, params.keys().map(String::as_str)),
                    )),
                },
                ("steps", Some(earlier)) => match parts.get(1) {
                    None => None,
                    Some(s) if earlier.iter().any(|e| e == s) => match parts.get(2) {
                        None | Some(&"outputs") | Some(&"status") | Some(&"summary") => None,
                        Some(other) => Some((
                            format!(
                                "`{r}`: a step has `outputs`, `status` and `summary`, not `{other}`"
                            ),
                            None,
                        )),
                    },
                    Some(s) => Some((
                        format!(
                            "`{{{{ {r} }}}}` refers to step `{s}`, which does not run before this one"
                        ),
                        did_you_mean(s, earlier.iter().map(String::as_str)),
                    )),
                },
                (root, _) => {
                    let roots: &[&str] = if earlier.is_some() {
                        &["params", "steps"]
                    } else {
                        &["params"]
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
        ok
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.err(Diagnostic::at(
                    s.span(),
                    format!("{what} must be more than zero"),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(Diagnostic::at(s.span(), format!("{what}: {e}")));
                None
            }
        }
    }

    async fn plugins(
        &mut self,
        host: &PluginHost,
        doc: &RunbookDoc,
        params: &Params,
    ) -> Vec<Option<PlanPlugin>> {
        let base = self.src.path.parent().unwrap_or(Path::new("."));
        let mut out = Vec::new();
        for (alias, decl) in &doc.plugins {
            out.push(self.plugin(host, base, alias, decl.get_ref(), params).await);
        }
        out
    }

    async fn plugin(
        &mut self,
        host: &PluginHost,
        base: &Path,
        alias: &Spanned<String>,
        decl: &PluginDecl,
        params: &Params,
    ) -> Option<PlanPlugin> {
        let source = PluginSource::parse(decl.source.get_ref(), base);
        let pin = decl.sha256.as_ref();
        let loaded = host.load(&source, pin.map(|p| p.get_ref().as_str())).await;
        let plugin = match loaded {
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
        let ctx = Self::params_context(params);
        if let Some(g) = &decl.grants {
            for host_grant in &g.get_ref().http {
                let mut text = host_grant.get_ref().clone();
                if template::is_template(&text) {
                    if !self.check_template(&text, host_grant.span(), params, None) {
                        continue;
                    }
                    match template::render(&self.env, &text, &ctx) {
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
                match text.parse::<HttpGrant>() {
                    Ok(h) => grants.http.push(h),
                    Err(e) => self.err(Diagnostic::at(
                        host_grant.span(),
                        format!("http grant: {e}"),
                    )),
                }
            }
            grants.kv = g.get_ref().kv.as_ref().is_some_and(|k| *k.get_ref());
        }
        // Least privilege both ways: a plugin gets what it declares and nothing more.
        let uses = |c: &str| plugin.manifest.capabilities.iter().any(|x| x == c);
        let name = &plugin.manifest.name;
        let grants_span = decl.grants.as_ref().map_or(alias.span(), |g| g.span());
        if uses("http")
            && grants.http.is_empty()
            && decl
                .grants
                .as_ref()
                .is_none_or(|g| g.get_ref().http.is_empty())
        {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{}` ({name}) needs the http capability, but no hosts are granted",
                        alias.get_ref()
                    ),
                )
                .help(format!(
                    "add `http = [\"HOST:PORT\"]` under [plugins.{}.grants]",
                    alias.get_ref()
                )),
            );
        }
        if !uses("http") && !grants.http.is_empty() {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{}` ({name}) does not use http, but the runbook grants it hosts",
                        alias.get_ref()
                    ),
                )
                .help("remove the http grant"),
            );
        }
        if !uses("kv") && grants.kv {
            self.err(
                Diagnostic::at(
                    grants_span,
                    format!(
                        "plugin `{}` ({name}) does not use kv, but the runbook grants it",
                        alias.get_ref()
                    ),
                )
                .help("remove `kv = true`"),
            );
        }
        if uses("kv") && !grants.kv {
            self.err(
                Diagnostic::at(
                    decl.grants.as_ref().map_or(alias.span(), |g| g.span()),
                    format!(
                        "plugin `{}` ({name}) needs the kv capability, which is not granted",
                        alias.get_ref()
                    ),
                )
                .help(format!(
                    "add `kv = true` under [plugins.{}.grants]",
                    alias.get_ref()
                )),
            );
        }
        Some(PlanPlugin {
            alias: alias.get_ref().clone(),
            plugin: Arc::new(plugin),
            timeout,
            memory,
            grants,
        })
    }

    fn steps(
        &mut self,
        doc: &RunbookDoc,
        params: &Params,
        plugins: &[Option<PlanPlugin>],
    ) -> Vec<PlanStep> {
        let aliases: Vec<&str> = doc.plugins.keys().map(|k| k.get_ref().as_str()).collect();
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for step in &doc.steps {
            let step = step.get_ref();
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
            if seen.contains(id) {
                self.err(
                    Diagnostic::at(step.id.span(), format!("step id `{id}` is used twice"))
                        .help("step ids must be unique"),
                );
            }
            let earlier = seen.clone();
            seen.push(id.clone());
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
            let with = self.step_params(step, &pp.plugin, params, &earlier);
            let timeout = step
                .timeout
                .as_ref()
                .and_then(|t| self.duration(t, "step timeout"))
                .or(pp.timeout)
                .unwrap_or(limits::DEFAULT_TIMEOUT);
            if let Some(with) = with {
                out.push(PlanStep {
                    id: id.clone(),
                    description: step.description.clone(),
                    plugin: index,
                    with,
                    timeout,
                    on_failure: step
                        .on_failure
                        .as_ref()
                        .map(|o| *o.get_ref())
                        .unwrap_or_default(),
                });
            }
        }
        out
    }

    fn step_params(
        &mut self,
        step: &StepDecl,
        plugin: &Plugin,
        params: &Params,
        earlier: &[String],
    ) -> Option<Vec<(String, Arg)>> {
        let manifest = &plugin.manifest;
        let id = step.id.get_ref();
        let mut ok = true;
        let mut out = Vec::new();
        for (key, value) in &step.with {
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
            let arg = match value.get_ref() {
                toml::Value::String(s) if template::is_template(s) => {
                    if !self.check_template(s, value.span(), params, Some(earlier)) {
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
                                ok &= self.check_template(s, value.span(), params, Some(earlier));
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
            if out.iter().any(|(n, _)| *n == spec.name)
                || step.with.keys().any(|k| *k.get_ref() == spec.name)
            {
                continue;
            }
            match &spec.default {
                Some(d) => out.push((spec.name.clone(), Arg::Value(d.clone()))),
                // A misspelled key already got a did-you-mean for this parameter.
                None if spec.required
                    && step.with.keys().any(|k| {
                        manifest.param(k.get_ref()).is_none()
                            && did_you_mean(k.get_ref(), [spec.name.as_str()]).is_some()
                    }) => {}
                None if spec.required => {
                    self.err(
                        Diagnostic::at(
                            step.id.span(),
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
        ok.then_some(out)
    }
}
