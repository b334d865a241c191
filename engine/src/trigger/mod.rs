//! Alert triggers: an alert from Alertmanager starts the runbook that fixes it, once per
//! group, with a cooldown after, a brake on storms, the alert silenced while the run is under
//! way and people paged when it could not fix it.
//!
//! Triggers are declared in TOML files (`*.toml` in a triggers directory), each holding one
//! or more `[[trigger]]` tables:
//!
//! ```toml
//! [[trigger]]
//! name = "restart-web"
//! match = ['alertname = "WebDown"', 'severity != "info"', 'instance =~ "127\\.0\\.0\\.1:.*"']
//! runbook = "../runbooks/restart.toml"              # relative to this file
//! environment = "staging"                           # may use {{ alert.labels.env }}
//! params = { program = "{{ alert.labels.job }}" }   # rendered from the alert
//! group_by = ["instance"]      # one run at a time per group (default: the alert's fingerprint)
//! cooldown = "10m"             # after a group's run ends, no new run for it this long
//! storm = { runs = 5, window = "10m" }  # past it, stop until `medic trigger rearm`
//! on_resolved = "continue"     # or "cancel" a run under way when the alert resolves
//! protected = "refuse"         # or "approve": wait for a person in a protected environment
//! silence = { alertmanager = "http://127.0.0.1:9093" }  # silenced while its run is under way
//! escalate = { runbook = "page.toml" }  # run when remediation fails or the brake trips
//! ```

pub mod alert;
mod file;
pub mod matcher;
pub mod policy;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::drill::{Hook, param_strings};
use crate::host::PluginHost;
use crate::runbook::{Diagnostic, PlanOptions};
pub use alert::Alert;
pub use file::schema;
use file::{TriggerDecl, parse};
pub use matcher::Matcher;
pub use policy::{Decision, OnResolved, Policy, Storm};

/// What a trigger does in a protected environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protected {
    /// Never run there.
    Refuse,
    /// Wait this long for a person's approval; never run unapproved.
    Approve { timeout: Duration },
}

/// Where a trigger's events come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Alertmanager's webhook, on `/api/v1/alerts/alertmanager` with a bearer token.
    Alertmanager,
    /// Any JSON on `/api/v1/hooks/NAME`, signed with HMAC-SHA256 under the key in this
    /// environment variable of `medic serve`.
    Webhook { secret_env: String },
}

/// A validated trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    pub source: Source,
    /// The file it is declared in.
    pub file: PathBuf,
    pub matchers: Vec<Matcher>,
    pub runbook: PathBuf,
    /// A template over the alert, or none (the runbook's default environment).
    pub environment: Option<String>,
    /// Values are templates over the alert.
    pub params: Vec<(String, String)>,
    pub policy: Policy,
    pub protected: Protected,
    /// Alertmanager's URL, to silence the alert while its run is under way.
    pub silence: Option<String>,
    pub escalate: Option<Hook>,
}

impl Trigger {
    pub fn matches(&self, alert: &Alert) -> bool {
        self.matchers.iter().all(|m| m.matches(&alert.labels))
    }

    /// The environment and parameters for `alert`, rendered; the error names the template.
    pub fn render(&self, alert: &Alert) -> Result<PlanOptions, String> {
        let env = crate::runbook::template::environment();
        let ctx = alert.context();
        let render = |what: &str, source: &str| {
            crate::runbook::template::render(&env, source, &ctx)
                .map_err(|e| format!("trigger `{}`: {what}: {e}", self.name))
        };
        let environment = self
            .environment
            .as_ref()
            .map(|e| render("environment", e))
            .transpose()?;
        let params = self
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(&format!("params.{k}"), v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(PlanOptions {
            params,
            environment,
            defer_secrets: false,
            sourced: None,
        })
    }
}

/// A trigger file that does not validate, with every mistake in it.
pub type FileErrors = crate::drill::FileErrors;

/// Every trigger in `dir` (its `*.toml` files, in name order), or every mistake in them.
/// All or nothing: `medic serve` never listens with half a set.
pub async fn load_dir(host: &PluginHost, dir: &Path) -> Result<Vec<Trigger>, Vec<FileErrors>> {
    crate::drill::load_declared(dir, "trigger", async |path: &Path, text: &str| {
        load_text(host, path, text).await
    })
    .await
}

impl crate::drill::Declared for Trigger {
    fn name(&self) -> &str {
        &self.name
    }
    fn file(&self) -> &Path {
        &self.file
    }
}

/// Like [`load_dir`], with every mistake rendered as one text that ends with their count.
pub async fn load_dir_or_report(host: &PluginHost, dir: &Path) -> Result<Vec<Trigger>, String> {
    load_dir(host, dir)
        .await
        .map_err(|errors| crate::drill::report_errors(&errors, dir))
}

/// The triggers declared in one file's text.
pub async fn load_text(
    host: &PluginHost,
    path: &Path,
    text: &str,
) -> Result<Vec<Trigger>, Vec<Diagnostic>> {
    let parsed = parse(text);
    let Some(file) = &parsed.doc else {
        return Err(parsed.diags);
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut diags = Vec::new();
    let mut triggers: Vec<Trigger> = Vec::new();
    if file.trigger.is_empty() {
        diags.push(Diagnostic::new(
            "no triggers here: declare them as [[trigger]] tables",
            None,
        ));
    }
    for decl in &file.trigger {
        let before = diags.len();
        let t = check(host, path, base, decl.get_ref(), &mut diags).await;
        if let Some(t) = t
            && diags.len() == before
        {
            if triggers.iter().any(|o| o.name == t.name) {
                diags.push(Diagnostic::at(
                    decl.get_ref().name.span(),
                    format!("trigger `{}` is declared twice", t.name),
                ));
            } else {
                triggers.push(t);
            }
        }
    }
    diags.retain(|d| !parsed.follows(d));
    diags.extend(parsed.diags.iter().cloned());
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    if diags.is_empty() {
        Ok(triggers)
    } else {
        Err(diags)
    }
}

/// A value the runbook accepts for a parameter of its declared type: templated parameters
/// are checked against the runbook with it (their real values come with the alert).
fn sample_for(decl: Option<&crate::runbook::model::ParamDecl>) -> String {
    let Some(d) = decl else {
        return "sample".into();
    };
    if let Some(v) = d.values.as_ref().and_then(|v| v.get_ref().first().cloned()) {
        return v;
    }
    if let Some(def) = &d.default {
        return match def.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    match d.ty.get_ref().as_str() {
        "integer" | "number" => "1".into(),
        "boolean" => "true".into(),
        "duration" => "1s".into(),
        _ => "sample".into(),
    }
}

/// A template over the alert: it must parse, and name nothing but `alert`.
fn check_template(source: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) {
    let env = crate::runbook::template::environment();
    match crate::runbook::template::references(&env, source.get_ref()) {
        Err(e) => diags.push(Diagnostic::at(source.span(), format!("{what}: {e}"))),
        Ok(names) => {
            if let Some(other) = names
                .iter()
                .find(|n| *n != "alert" && !n.starts_with("alert."))
            {
                diags.push(
                    Diagnostic::at(
                        source.span(),
                        format!("{what}: `{other}` is not known here; a trigger's templates see the alert"),
                    )
                    .help("use alert.labels.NAME, alert.annotations.NAME, alert.name, alert.status, alert.starts_at or alert.fingerprint"),
                );
            } else if let Err(e) =
                crate::runbook::template::render(&env, source.get_ref(), &Alert::sample())
            {
                diags.push(Diagnostic::at(source.span(), format!("{what}: {e}")));
            }
        }
    }
}

async fn check(
    host: &PluginHost,
    path: &Path,
    base: &Path,
    d: &TriggerDecl,
    diags: &mut Vec<Diagnostic>,
) -> Option<Trigger> {
    let name = crate::drill::checked_name(&d.name, "trigger", diags);
    let source = match (
        d.source.as_ref().map(|s| s.get_ref().as_str()),
        &d.secret_env,
    ) {
        (Some("webhook"), Some(env)) => Source::Webhook {
            secret_env: env.get_ref().clone(),
        },
        (Some("webhook"), None) => {
            diags.push(
                Diagnostic::at(
                    d.source.as_ref().unwrap().span(),
                    "a webhook trigger needs `secret_env`: the environment variable of medic serve that holds its HMAC key",
                )
                .help("an unsigned webhook would let anyone start runbooks"),
            );
            Source::Alertmanager
        }
        (_, Some(env)) => {
            diags.push(Diagnostic::at(
                env.span(),
                "secret_env only applies to source = \"webhook\" (Alertmanager's deliveries carry a bearer token)",
            ));
            Source::Alertmanager
        }
        _ => Source::Alertmanager,
    };
    let mut matchers = Vec::new();
    for m in d.matchers.get_ref() {
        match Matcher::parse(m.get_ref()) {
            Ok(parsed) => matchers.push(parsed),
            Err(e) => diags.push(Diagnostic::at(m.span(), format!("match: {e}"))),
        }
    }
    if d.matchers.get_ref().is_empty() {
        diags.push(Diagnostic::at(
            d.matchers.span(),
            "match: at least one matcher, or the trigger would answer every alert",
        ));
    }
    let cooldown = crate::drill::duration(&d.cooldown, "cooldown", diags).unwrap_or_default();
    let storm = d.storm.as_ref().and_then(|s| {
        let s = s.get_ref();
        let window = crate::drill::duration(&Some(s.window.clone()), "storm.window", diags)?;
        Some(Storm {
            runs: *s.runs.get_ref(),
            window,
        })
    });
    let on_resolved = match d.on_resolved.as_ref().map(|o| o.get_ref().as_str()) {
        Some("cancel") => OnResolved::Cancel,
        _ => OnResolved::Continue,
    };
    let approval_timeout = crate::drill::duration(&d.approval_timeout, "approval_timeout", diags);
    let protected = match d.protected.as_ref().map(|p| p.get_ref().as_str()) {
        Some("approve") => Protected::Approve {
            timeout: approval_timeout.unwrap_or(Duration::from_secs(15 * 60)),
        },
        _ => {
            if let Some(t) = &d.approval_timeout {
                diags.push(Diagnostic::at(
                    t.span(),
                    "approval_timeout only applies with protected = \"approve\"",
                ));
            }
            Protected::Refuse
        }
    };
    let silence = d.silence.as_ref().and_then(|s| {
        let url = s.get_ref().alertmanager.clone();
        match reqwest::Url::parse(url.get_ref()) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                Some(url.get_ref().trim_end_matches('/').to_owned())
            }
            _ => {
                diags.push(Diagnostic::at(
                    url.span(),
                    format!(
                        "silence.alertmanager: `{}` is not an http(s) URL",
                        url.get_ref()
                    ),
                ));
                None
            }
        }
    });
    if let Some(e) = &d.environment {
        check_template(e, "environment", diags);
    }
    let templated_env = d
        .environment
        .as_ref()
        .is_some_and(|e| crate::runbook::template::is_template(e.get_ref()));
    let runbook = base.join(d.runbook.get_ref());
    // The runbook is checked with the trigger's parameters; templated values by a sample of
    // the declared type (their real values come with the alert).
    let runbook_text = crate::input::read_text(&runbook, crate::input::MAX_RUNBOOK_BYTES).ok();
    let declared = runbook_text
        .as_deref()
        .and_then(|t| crate::runbook::plan::parse(t).doc);
    let mut sampled = Vec::new();
    for (k, v) in &d.params {
        if let toml::Value::String(s) = v.get_ref()
            && crate::runbook::template::is_template(s)
        {
            check_template(
                &Spanned::new(v.span(), s.clone()),
                &format!("params.{}", k.get_ref()),
                diags,
            );
            let decl = declared.as_ref().and_then(|doc| {
                doc.params
                    .iter()
                    .find(|(name, _)| name.get_ref() == k.get_ref())
                    .map(|(_, p)| p.get_ref())
            });
            sampled.push((k.get_ref().clone(), sample_for(decl)));
        }
    }
    let params = param_strings(&d.params);
    let check_params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| {
            sampled
                .iter()
                .find(|(s, _)| s == k)
                .cloned()
                .unwrap_or((k.clone(), v.clone()))
        })
        .collect();
    let environment = d.environment.as_ref().map(|e| e.get_ref().clone());
    let opts = PlanOptions {
        params: check_params,
        // A templated environment is checked when the alert names it.
        environment: if templated_env {
            None
        } else {
            environment.clone()
        },
        defer_secrets: true,
        sourced: None,
    };
    let refuse = d.protected.as_ref().is_none_or(|p| p.get_ref() == "refuse");
    match crate::drill::plan_checked(host, &runbook, &opts).await {
        Err(failure) => {
            crate::drill::place_param_mistakes(failure, &d.params, &d.runbook, &runbook, diags)
        }
        Ok(plan) if plan.environment.protected && refuse && !templated_env => diags.push(
            Diagnostic::at(
                d.environment
                    .as_ref()
                    .map_or(d.runbook.span(), |e| e.span()),
                format!(
                    "trigger `{name}` targets the protected environment `{}` and refuses to run there: it would never run",
                    plan.environment.name
                ),
            )
            .help("declare protected = \"approve\" to wait for a person's approval, or target a lower environment"),
        ),
        Ok(_) => {}
    }
    let escalate = d.escalate.as_ref().map(|h| {
        let decl = h.get_ref();
        Hook {
            runbook: base.join(decl.runbook.get_ref()),
            params: param_strings(&decl.params),
        }
    });
    if let (Some(decl), Some(hook)) = (&d.escalate, &escalate) {
        let mut params = hook.params.clone();
        for (k, v) in ESCALATE_PARAMS {
            params.push(((*k).to_owned(), (*v).to_owned()));
        }
        let opts = PlanOptions {
            params,
            environment: None,
            defer_secrets: true,
            sourced: None,
        };
        if let Err(why) = crate::drill::plan_hook(host, &hook.runbook, &opts).await {
            diags.push(Diagnostic::at(
                decl.get_ref().runbook.span(),
                format!("escalate: {why}"),
            ));
        }
    }
    let group_by = d
        .group_by
        .as_ref()
        .map(|g| g.get_ref().iter().map(|l| l.get_ref().clone()).collect())
        .unwrap_or_default();
    Some(Trigger {
        name,
        source,
        file: path.to_owned(),
        matchers,
        runbook,
        environment,
        params,
        policy: Policy {
            group_by,
            cooldown,
            storm,
            on_resolved,
        },
        protected,
        silence,
        escalate,
    })
}

/// Parameters an escalation runbook may declare; Medic fills in those it does.
pub const ESCALATE_PARAMS: &[(&str, &str)] = &[
    ("trigger", "trigger"),
    ("alert", "alert"),
    ("reason", "why"),
    ("run", "run"),
];
