//! Rollback drills: runbooks run on a schedule, in lower environments, with a fault, to prove
//! that their rollback path works and to measure how fast it recovers.
//!
//! Drills are declared in TOML files (`*.toml` in a drills directory, `drills/` by default),
//! each holding one or more `[[drill]]` tables:
//!
//! ```toml
//! [[drill]]
//! name = "canary-rollback"
//! runbook = "../canary-demo.toml"     # relative to this file
//! environment = "staging"             # never a protected one
//! schedule = "0 3 * * 1-5"            # 5 fields (crontab), or 6/7 with seconds and year
//! timezone = "Europe/Paris"           # IANA name; UTC by default
//! jitter = "5m"                       # start up to this much later, at random
//! missed = "skip"                     # or "run_once": after downtime, run one missed drill
//! params = { version = "v3" }         # a real fault: a known-bad version
//! fail_step = "errors_at_10"          # or force this step to fail
//! before = { runbook = "break-it.toml", params = { program = "web" } }  # break first
//! notify = { runbook = "notify.toml" }  # run when the drill fails
//! expect = { outcome = "rolled_back", recover_within = "2m" }
//! ```
//!
//! A drill passes when its run ends with the expected outcome (`rolled_back` by default:
//! rolled back and verified healthy) and, when `recover_within` is set, the time from the
//! fault to healthy again is within it.

pub(crate) mod file;
pub mod report;
pub mod run;
pub mod schedule;
pub mod scheduler;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::executor::RunOutcome;
use crate::host::PluginHost;
use crate::runbook::plan::parse_duration;
use crate::runbook::{Diagnostic, PlanOptions};
pub use file::schema;
use file::{DrillDecl, HookDecl, parse};
pub use schedule::Schedule;

/// What to do about schedules missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Wait for the next scheduled time.
    Skip,
    /// Run once at start-up if at least one run was missed.
    RunOnce,
}

/// Another runbook a drill runs: before (to break something) or to notify.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub runbook: PathBuf,
    pub params: Vec<(String, String)>,
}

/// A validated drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    pub name: String,
    /// The file it is declared in.
    pub file: PathBuf,
    pub runbook: PathBuf,
    pub environment: Option<String>,
    pub params: Vec<(String, String)>,
    pub schedule: Schedule,
    pub jitter: Duration,
    pub missed: Missed,
    pub fail_step: Option<String>,
    pub before: Option<Hook>,
    pub notify: Option<Hook>,
    pub expect: RunOutcome,
    pub recover_within: Option<Duration>,
    /// The lock the drill holds while it runs ([`run::drill_lock`]).
    pub lock: String,
    /// `enabled = false` in its file: scheduled runs are skipped, and recorded as skipped.
    pub enabled: bool,
}

impl Drill {
    /// The options to plan the drill's runbook with.
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            params: self.params.clone(),
            environment: self.environment.clone(),
            defer_secrets: false,
            sourced: None,
        }
    }
}

/// A drill file that does not validate, with every mistake in it.
#[derive(Debug)]
pub struct FileErrors {
    pub path: PathBuf,
    pub text: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for FileErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display().to_string();
        write!(
            f,
            "{}",
            crate::runbook::Report {
                path: &path,
                text: &self.text,
                diagnostics: &self.diagnostics,
            }
        )
    }
}

/// Every drill in `dir` (its `*.toml` files, in name order), or every mistake in them.
/// Drills are all-or-nothing: a scheduler never runs half a set.
pub async fn load_dir(host: &PluginHost, dir: &Path) -> Result<Vec<Drill>, Vec<FileErrors>> {
    load_declared(dir, "drill", async |path: &Path, text: &str| {
        load_text(host, path, text).await
    })
    .await
}

/// A declaration's name (a drill's, a trigger's): letters, digits, `-` and `_`, so that it
/// can be part of a URL path, a lock key and a log line as it is.
pub(crate) fn checked_name(
    name: &Spanned<String>,
    kind: &str,
    diags: &mut Vec<Diagnostic>,
) -> String {
    let n = name.get_ref();
    let valid = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        diags.push(Diagnostic::at(
            name.span(),
            format!("`{n}` is not a {kind} name: use letters, digits, `-` and `_`"),
        ));
    }
    n.clone()
}

/// What a directory of declaration files (drills, triggers) holds: each has a name, unique
/// across the directory, and the file it is declared in.
pub trait Declared {
    fn name(&self) -> &str;
    fn file(&self) -> &Path;
}

impl Declared for Drill {
    fn name(&self) -> &str {
        &self.name
    }
    fn file(&self) -> &Path {
        &self.file
    }
}

/// Every `kind` declared in the `*.toml` files of `dir` (in name order, each file read by
/// `load`), or every mistake in them, names declared twice across files included.
pub async fn load_declared<T: Declared>(
    dir: &Path,
    kind: &str,
    load: impl AsyncFn(&Path, &str) -> Result<Vec<T>, Vec<Diagnostic>>,
) -> Result<Vec<T>, Vec<FileErrors>> {
    let files = match crate::input::toml_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return Err(vec![FileErrors {
                path: dir.to_owned(),
                text: String::new(),
                diagnostics: vec![match e.kind() {
                    // The default (`drills`, `triggers`) is relative to where the command
                    // runs: from another directory, say where else to look.
                    std::io::ErrorKind::NotFound => Diagnostic::new(
                        format!("there is no {kind}s directory {}", dir.display()),
                        None,
                    )
                    .help(format!(
                        "name it with --{kind}s DIR or MEDIC_{}S",
                        kind.to_ascii_uppercase()
                    )),
                    _ => Diagnostic::new(format!("cannot read the {kind}s directory: {e}"), None),
                }],
            }]);
        }
    };
    let mut found: Vec<T> = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = match crate::input::read_text(&path, crate::input::MAX_RUNBOOK_BYTES) {
            Ok(t) => t,
            Err(e) => {
                errors.push(FileErrors {
                    path,
                    text: String::new(),
                    diagnostics: vec![Diagnostic::new(format!("cannot read: {e}"), None)],
                });
                continue;
            }
        };
        match load(&path, &text).await {
            Ok(these) => {
                let mut diagnostics = Vec::new();
                for d in these {
                    if let Some(other) = found.iter().find(|o| o.name() == d.name()) {
                        diagnostics.push(Diagnostic::new(
                            format!(
                                "{kind} `{}` is also declared in {}; names must be unique",
                                d.name(),
                                other.file().display()
                            ),
                            text.find(&format!("\"{}\"", d.name()))
                                .map(|i| i..i + d.name().len() + 2),
                        ));
                    } else {
                        found.push(d);
                    }
                }
                if !diagnostics.is_empty() {
                    errors.push(FileErrors {
                        path,
                        text,
                        diagnostics,
                    });
                }
            }
            Err(diagnostics) => errors.push(FileErrors {
                path,
                text,
                diagnostics,
            }),
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

/// Like [`load_dir`], with every mistake rendered as one text that ends with their count.
pub async fn load_dir_or_report(host: &PluginHost, dir: &Path) -> Result<Vec<Drill>, String> {
    load_dir(host, dir)
        .await
        .map_err(|errors| report_errors(&errors, dir))
}

/// Files' mistakes as one text that ends with their count.
pub fn report_errors(errors: &[FileErrors], dir: &Path) -> String {
    let n: usize = errors.iter().map(|e| e.diagnostics.len()).sum();
    let files: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "{}\n{n} mistake{} in {}",
        files.join("\n"),
        if n == 1 { "" } else { "s" },
        dir.display()
    )
}

/// The drills declared in one file's text.
pub async fn load_text(
    host: &PluginHost,
    path: &Path,
    text: &str,
) -> Result<Vec<Drill>, Vec<Diagnostic>> {
    let parsed = parse(text);
    let Some(file) = &parsed.doc else {
        return Err(parsed.diags);
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut diags = Vec::new();
    let mut drills = Vec::new();
    if file.drill.is_empty() {
        diags.push(Diagnostic::new(
            "no drills here: declare them as [[drill]] tables",
            None,
        ));
    }
    for decl in &file.drill {
        let before = diags.len();
        if let Some(d) = check(host, path, base, decl.get_ref(), &mut diags).await
            && diags.len() == before
        {
            drills.push(d);
        }
    }
    let mut seen = Vec::new();
    for (decl, d) in file.drill.iter().zip(&drills) {
        if seen.contains(&d.name) {
            diags.push(Diagnostic::at(
                decl.get_ref().name.span(),
                format!("drill `{}` is declared twice", d.name),
            ));
        }
        seen.push(d.name.clone());
    }
    diags.retain(|d| !parsed.follows(d));
    diags.extend(parsed.diags.iter().cloned());
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    if diags.is_empty() {
        Ok(drills)
    } else {
        Err(diags)
    }
}

/// Parameters as `--param` strings: lists become comma-separated.
pub(crate) fn param_strings(
    table: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
) -> Vec<(String, String)> {
    table
        .iter()
        .map(|(k, v)| {
            let s = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (k.get_ref().clone(), s)
        })
        .collect()
}

/// A drill file's own checks, without the runbooks it names: its syntax, names, schedules,
/// timezones and durations. For fuzzing and editors; [`load_text`] does all of it and more.
/// Returns how many drills it declares, or every mistake rendered.
pub fn parse_file(path: &Path, text: &str) -> Result<usize, String> {
    let render = |diagnostics: &[Diagnostic]| {
        crate::runbook::Report {
            path: &path.display().to_string(),
            text,
            diagnostics,
        }
        .to_string()
    };
    let parsed = parse(text);
    let mut diags = Vec::new();
    let mut count = 0;
    if let Some(file) = &parsed.doc {
        count = file.drill.len();
        for decl in &file.drill {
            let d = decl.get_ref();
            schedule(d, &mut diags);
            duration(&d.jitter, "jitter", &mut diags);
            if let Some(e) = &d.expect {
                duration(
                    &e.get_ref().recover_within,
                    "expect.recover_within",
                    &mut diags,
                );
            }
        }
    }
    diags.retain(|d| !parsed.follows(d));
    diags.extend(parsed.diags.iter().cloned());
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    if diags.is_empty() && parsed.doc.is_some() {
        Ok(count)
    } else {
        Err(render(&diags))
    }
}

/// A drill's schedule in its timezone. The timezone and the cron fields are checked apart,
/// so a bad timezone does not hide a bad field.
fn schedule(d: &DrillDecl, diags: &mut Vec<Diagnostic>) -> Option<Schedule> {
    let timezone = d.timezone.as_ref().filter(|tz| {
        let bad = Schedule::parse("* * * * *", Some(tz.get_ref())).err();
        if let Some(e) = &bad {
            diags.push(Diagnostic::at(tz.span(), format!("timezone: {e}")));
        }
        bad.is_none()
    });
    match Schedule::parse(d.schedule.get_ref(), timezone.map(|t| t.get_ref().as_str())) {
        Ok(s) if timezone.is_some() == d.timezone.is_some() => Some(s),
        Ok(_) => None,
        Err(e) => {
            diags.push(Diagnostic::at(d.schedule.span(), format!("schedule: {e}")));
            None
        }
    }
}

pub(crate) fn duration(
    v: &Option<Spanned<String>>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let v = v.as_ref()?;
    match parse_duration(v.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            diags.push(Diagnostic::at(v.span(), format!("{what}: {e}")));
            None
        }
    }
}

async fn check(
    host: &PluginHost,
    path: &Path,
    base: &Path,
    d: &DrillDecl,
    diags: &mut Vec<Diagnostic>,
) -> Option<Drill> {
    let name = checked_name(&d.name, "drill", diags);
    let schedule = schedule(d, diags);
    let jitter = duration(&d.jitter, "jitter", diags).unwrap_or_default();
    let missed = match d.missed.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("skip") => Missed::Skip,
        Some("run_once") => Missed::RunOnce,
        Some(other) => {
            diags.push(
                Diagnostic::at(
                    d.missed.as_ref().unwrap().span(),
                    format!("missed: `{other}` is not a policy"),
                )
                .help("use \"skip\" or \"run_once\""),
            );
            Missed::Skip
        }
    };
    let (expect, recover_within) = match &d.expect {
        None => (RunOutcome::RolledBack, None),
        Some(e) => {
            let e = e.get_ref();
            let outcome = match e.outcome.as_ref().map(|o| o.get_ref().as_str()) {
                None | Some("rolled_back") => RunOutcome::RolledBack,
                Some("failed") => RunOutcome::Failed,
                Some("succeeded") => RunOutcome::Succeeded,
                Some(other) => {
                    diags.push(
                        Diagnostic::at(
                            e.outcome.as_ref().unwrap().span(),
                            format!(
                                "expect.outcome: `{other}` is not an outcome a drill can expect"
                            ),
                        )
                        .help("use \"rolled_back\" (the default), \"failed\" or \"succeeded\""),
                    );
                    RunOutcome::RolledBack
                }
            };
            (
                outcome,
                duration(&e.recover_within, "expect.recover_within", diags),
            )
        }
    };
    let params = param_strings(&d.params);
    let runbook = base.join(d.runbook.get_ref());
    let environment = d.environment.as_ref().map(|e| e.get_ref().clone());
    let opts = PlanOptions {
        params: params.clone(),
        environment: environment.clone(),
        // Validation does not need the secrets; the drill's run does, and fails without them.
        defer_secrets: true,
        sourced: None,
    };
    let mut lock = String::new();
    match plan_checked(host, &runbook, &opts).await {
        Err(failure) => place_param_mistakes(failure, &d.params, &d.runbook, &runbook, diags),
        Ok(plan) => {
            lock = run::drill_lock(&plan);
            if plan.environment.protected {
                diags.push(
                    Diagnostic::at(
                        d.environment
                            .as_ref()
                            .map_or(d.runbook.span(), |e| e.span()),
                        format!(
                            "drill `{name}` targets the protected environment `{}`: drills never run in protected environments",
                            plan.environment.name
                        ),
                    )
                    .help("drill in a lower environment (staging, dev) that mirrors production"),
                );
            }
            if let Some(step) = &d.fail_step
                && !plan.steps.iter().any(|s| &s.id == step.get_ref())
            {
                let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
                diags.push(
                    Diagnostic::at(
                        step.span(),
                        format!(
                            "fail_step: `{}` is not a step of runbook `{}`",
                            step.get_ref(),
                            plan.name
                        ),
                    )
                    .help_opt(
                        crate::runbook::diag::did_you_mean(step.get_ref(), ids.iter().copied())
                            .or_else(|| Some(format!("its steps: {}", ids.join(", ")))),
                    ),
                );
            }
        }
    }
    let hook = |h: &Option<Spanned<HookDecl>>| -> Option<Hook> {
        let h = h.as_ref()?;
        let decl = h.get_ref();
        Some(Hook {
            runbook: base.join(decl.runbook.get_ref()),
            params: param_strings(&decl.params),
        })
    };
    let before = hook(&d.before);
    let notify = hook(&d.notify);
    for (decl, h, what) in [
        (&d.before, &before, "before"),
        (&d.notify, &notify, "notify"),
    ] {
        let (Some(decl), Some(h)) = (decl, h) else {
            continue;
        };
        let mut params = h.params.clone();
        if what == "notify" {
            // The drill's own values are filled in at run time, when the runbook declares them.
            for (k, v) in run::NOTIFY_PARAMS {
                params.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        let opts = PlanOptions {
            params,
            environment: environment.clone(),
            defer_secrets: true,
            sourced: None,
        };
        match plan_hook(host, &h.runbook, &opts).await {
            Err(why) => diags.push(Diagnostic::at(
                decl.get_ref().runbook.span(),
                format!("{what}: {why}"),
            )),
            // A drill's fault injection and its notification act too: the same rule holds.
            Ok(plan) if plan.environment.protected => diags.push(
                Diagnostic::at(
                    decl.get_ref().runbook.span(),
                    format!(
                        "{what}: runbook `{}` targets the protected environment `{}`: drills never run in protected environments",
                        plan.name, plan.environment.name
                    ),
                )
                .help("drill in a lower environment (staging, dev) that mirrors production"),
            ),
            Ok(_) => {}
        }
    }
    Some(Drill {
        name,
        file: path.to_owned(),
        runbook,
        environment,
        params,
        schedule: schedule?,
        jitter,
        missed,
        fail_step: d.fail_step.as_ref().map(|s| s.get_ref().clone()),
        before,
        notify,
        expect,
        recover_within,
        lock,
        enabled: d.enabled.as_ref().is_none_or(|e| *e.get_ref()),
    })
}

/// Pairs of drills that share a lock and fire in the same minute within the next week:
/// only one of them can run then (the other is skipped), which is rarely what was meant.
pub fn overlaps(drills: &[Drill], from: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    use std::collections::BTreeSet;
    let horizon = from + chrono::Duration::days(7);
    // Each drill's firing minutes over the horizon, bounded so a per-second schedule costs
    // at most this many steps.
    let minutes = |d: &Drill| -> BTreeSet<i64> {
        let mut out = BTreeSet::new();
        let mut t = from;
        for _ in 0..20_000 {
            match d.schedule.next_after(t) {
                Some(next) if next <= horizon => {
                    out.insert(next.timestamp() / 60);
                    // The rest of that minute adds nothing.
                    t = chrono::DateTime::from_timestamp((next.timestamp() / 60 + 1) * 60 - 1, 0)
                        .unwrap_or(next);
                }
                _ => break,
            }
        }
        out
    };
    let fires: Vec<BTreeSet<i64>> = drills.iter().map(minutes).collect();
    let mut warnings = Vec::new();
    for (i, a) in drills.iter().enumerate() {
        for (j, b) in drills.iter().enumerate().skip(i + 1) {
            if a.lock != b.lock {
                continue;
            }
            if let Some(m) = fires[i].intersection(&fires[j]).next() {
                let at = chrono::DateTime::from_timestamp(m * 60, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                warnings.push(format!(
                    "drills `{}` and `{}` share lock `{}` and are both scheduled at {at}: one of them will be skipped (give them different times)",
                    a.name, b.name, a.lock
                ));
            }
        }
    }
    warnings
}

/// Why a runbook a drill names did not plan.
pub(crate) enum PlanFailure {
    Unreadable(String),
    Invalid {
        text: String,
        diagnostics: Vec<Diagnostic>,
    },
}

impl PlanFailure {
    /// One line naming the file and the first mistake (the full report is `medic validate
    /// FILE`).
    fn summary(&self, path: &Path) -> String {
        let (text, d) = match self {
            PlanFailure::Unreadable(why) => return why.clone(),
            PlanFailure::Invalid { text, diagnostics } => (text, diagnostics),
        };
        let first = d.first().map_or("invalid".to_owned(), |d| {
            let at = d
                .span
                .as_ref()
                .map(|s| {
                    let (l, c) = crate::runbook::diag::line_col(text, s.start);
                    format!(":{l}:{c}")
                })
                .unwrap_or_default();
            format!("{}{at}: {}", path.display(), d.message)
        });
        let more = if d.len() > 1 {
            format!(" (and {} more; see `medic validate`)", d.len() - 1)
        } else {
            String::new()
        };
        format!("runbook {first}{more}")
    }
}

pub(crate) async fn plan_checked(
    host: &PluginHost,
    path: &Path,
    opts: &PlanOptions,
) -> Result<crate::runbook::Plan, PlanFailure> {
    let text = crate::input::read_text(path, crate::input::MAX_RUNBOOK_BYTES).map_err(|e| {
        PlanFailure::Unreadable(format!("cannot read runbook {}: {e}", path.display()))
    })?;
    let src = crate::runbook::Source { path, text: &text };
    crate::runbook::plan(host, &src, opts)
        .await
        .map_err(|diagnostics| PlanFailure::Invalid {
            text: text.clone(),
            diagnostics,
        })
}

/// Plans a runbook file; the error is one line naming the file and the first mistake (the
/// full report is `medic validate FILE`).
pub async fn plan_file(
    host: &PluginHost,
    path: &Path,
    opts: &PlanOptions,
) -> Result<crate::runbook::Plan, String> {
    plan_checked(host, path, opts)
        .await
        .map_err(|f| f.summary(path))
}

/// A drill's own parameters' mistakes (the runbook reports them as `--param` mistakes),
/// placed at the drill's key or value; the others, summarised at `runbook`.
pub(crate) fn place_param_mistakes(
    failure: PlanFailure,
    params: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    runbook: &Spanned<String>,
    path: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let PlanFailure::Invalid { text, diagnostics } = failure else {
        diags.push(Diagnostic::at(runbook.span(), failure.summary(path)));
        return;
    };
    let mut rest = Vec::new();
    for d in diagnostics {
        let placed = d
            .span
            .is_none()
            .then(|| d.message.strip_prefix("--param "))
            .flatten()
            .and_then(|m| m.split_once(": "))
            .and_then(|(key, why)| {
                let (k, v) = params.iter().find(|(k, _)| k.get_ref() == key)?;
                let span = if why.contains("declares no parameter") {
                    k.span()
                } else {
                    v.span()
                };
                Some(Diagnostic::at(span, format!("params.{key}: {why}")).help_opt(d.help.clone()))
            });
        match placed {
            Some(p) => diags.push(p),
            None => rest.push(d),
        }
    }
    if !rest.is_empty() {
        let failure = PlanFailure::Invalid {
            text,
            diagnostics: rest,
        };
        diags.push(Diagnostic::at(runbook.span(), failure.summary(path)));
    }
}

/// A hook's runbook is planned with only the parameters it declares among those offered.
pub async fn plan_hook(
    host: &PluginHost,
    path: &Path,
    opts: &PlanOptions,
) -> Result<crate::runbook::Plan, String> {
    let text = crate::input::read_text(path, crate::input::MAX_RUNBOOK_BYTES)
        .map_err(|e| format!("cannot read runbook {}: {e}", path.display()))?;
    let declared = crate::runbook::plan::param_names(&text);
    let opts = PlanOptions {
        params: opts
            .params
            .iter()
            .filter(|(k, _)| declared.contains(k))
            .cloned()
            .collect(),
        ..opts.clone()
    };
    plan_file(host, path, &opts).await
}
