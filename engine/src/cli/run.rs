//! `medic run`, `medic validate` and `medic plan`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::output::render_plan;
use super::signals::{Progress, Signals, Tracked};
use super::{Exit, GlobalArgs, OutputFormat, engine_error, parse_param};
use crate::executor::{self, Approval, Cancel, Resume, RunOptions, RunOutcome, RunReport};
use crate::host::PluginHost;
use crate::runbook::{self, Plan, PlanOptions, Report, Source};
use crate::store::{LockHolder, Recorder, Store, Trigger, recorder::Start};

#[derive(Debug, Args)]
pub struct Target {
    /// The runbook file (with --server: a runbook of the server's catalogue, by name)
    pub(super) runbook: PathBuf,
    /// Set a runbook parameter (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub(super) params: Vec<(String, String)>,
    /// The environment to target (one of the runbook's [environments])
    #[arg(short, long = "env", value_name = "NAME")]
    pub(super) env: Option<String>,
}

impl Target {
    pub(super) fn options(&self) -> PlanOptions {
        PlanOptions {
            params: self.params.clone(),
            environment: self.env.clone(),
            defer_secrets: false,
            sourced: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub(super) target: Target,
    /// Approve running in a protected environment, with the reason (recorded with your name)
    #[arg(long, value_name = "REASON")]
    pub(super) approve: Option<String>,
    /// Ask plugins to change nothing and report what they would do
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Wait this long for the run store or the runbook's lock when another run holds it
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub(super) wait: Option<Duration>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub(super) output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    target: Target,
    /// Output format: `json` prints one object: {"runbook", "description", "file",
    /// "sha256", "environment": {"name", "protected", "vars"}, "lock", "on_interrupted",
    /// "params": [{"name", "value" (null when secret), "secret", "from" (where a secret not
    /// set now will be read)}], "plugins":
    /// [{"alias", "source", "name", "version", "kind", "sha256", "memory_bytes", "grants":
    /// {"http", "tcp", "command", "kv"}}], "steps", "rollback", "verify", "finally": [{"id",
    /// "plugin", "timeout_ms", "when", "with" (rendered; secrets null), "on_failure",
    /// "retry", "gate", "approval", "fleet", "rollback"}], "rollout": {"strategy", "stages":
    /// [{"weight", "bake_ms", "steps"}]}, "undo" (newest first), "warnings"}
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: Target,
    /// Output format: `json` prints one object, {"file", "valid", "runbook", "steps",
    /// "plugins", "environments", "diagnostics": [{"severity", "message", "help",
    /// "at": {"line", "col"}}]}
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

/// Reads and validates a runbook; on failure prints every diagnostic and returns the exit code.
pub(super) async fn load_plan(
    host: &PluginHost,
    path: &Path,
    text: Option<&str>,
    opts: &PlanOptions,
) -> Result<Plan, Exit> {
    let owned;
    let text = match text {
        Some(t) => t,
        None => {
            owned =
                crate::input::read_text(path, crate::input::MAX_RUNBOOK_BYTES).map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file".to_string()
                    } else {
                        e.to_string()
                    };
                    eprintln!("medic: cannot read runbook {}: {why}", path.display());
                    Exit::Invalid
                })?;
            &owned
        }
    };
    let src = Source { path, text };
    let report = |diagnostics: &[runbook::Diagnostic]| {
        eprintln!(
            "{}",
            Report {
                path: &path.display().to_string(),
                text,
                diagnostics
            }
        );
    };
    match runbook::plan(host, &src, opts).await {
        Ok(plan) => {
            if !plan.warnings.is_empty() {
                report(&plan.warnings);
            }
            Ok(plan)
        }
        Err(diags) => {
            report(&diags);
            Err(Exit::Invalid)
        }
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    crate::runbook::plan::parse_duration(s)
}

/// `user@host`, for approvals: the same identity run records use for their trigger.
pub fn who() -> String {
    match Trigger::cli() {
        Trigger::Cli { user, host } => format!("{user}@{host}"),
        other => other.to_string(),
    }
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Exit {
    // Before anything else: a Ctrl-C from here on is a cancel, never an instant death.
    let signals = match Signals::install_for_run() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    match global.api_client() {
        Ok(Some(client)) => return super::remote_run::run(&client, &args, signals).await,
        Ok(None) => {}
        Err(exit) => return exit,
    }
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let plan = match load_plan(&host, &args.target.runbook, None, &args.target.options()).await {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    warn_short_secrets(&plan);
    let approval = match (&args.approve, plan.environment.protected) {
        (None, true) => {
            eprintln!(
                "medic: environment `{}` is protected: running there needs an approval\n  = help: run again with --approve \"REASON\" (recorded with your name)",
                plan.environment.name
            );
            return Exit::Invalid;
        }
        (Some(reason), _) if reason.trim().is_empty() => {
            eprintln!("medic: --approve needs a reason");
            return Exit::Invalid;
        }
        (Some(reason), _) => Some(Approval {
            by: who(),
            reason: reason.trim().to_owned(),
            at: SystemTime::now(),
        }),
        (None, false) => None,
    };
    if let Some(remote) = global.through_serve() {
        return super::serve_run::through_serve(global, &remote, &plan, &args, approval, signals)
            .await;
    }
    let store = match global.store(
        &format!("medic run {}", args.target.runbook.display()),
        args.wait,
    ) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let request = RunRequest {
        plan: &plan,
        format: args.output,
        approval,
        dry_run: args.dry_run,
        run_id: executor::new_run_id(),
        start: Start::New,
        resume: None,
        trigger: Trigger::cli(),
        wait: args.wait,
    };
    match execute(&host, &store, global, request, signals).await {
        Ok(report) => exit_for(&report),
        Err(exit) => exit,
    }
}

/// A secret shorter than a few characters is masked wherever it appears, ordinary words
/// included, which hints at what it is: say so before the run.
fn warn_short_secrets(plan: &Plan) {
    use crate::host::Value;
    for p in plan.params.iter().filter(|p| p.secret) {
        let short = match &p.value {
            Value::Text(s) => {
                !s.is_empty() && s.chars().count() < crate::host::redact::SHORT_SECRET
            }
            Value::TextList(items) => items
                .iter()
                .any(|s| !s.is_empty() && s.chars().count() < crate::host::redact::SHORT_SECRET),
            Value::Integer(i) => i.to_string().len() < crate::host::redact::SHORT_SECRET,
            Value::Float(f) => f.to_string().len() < crate::host::redact::SHORT_SECRET,
            Value::Boolean(_) | Value::Duration(_) => false,
        };
        if short {
            eprintln!(
                "medic: warning: secret `{}` is shorter than {} characters: it is masked wherever it appears, in ordinary text too, which hints at its value",
                p.name,
                crate::host::redact::SHORT_SECRET
            );
        }
    }
}

pub(super) fn exit_for(report: &RunReport) -> Exit {
    match report.outcome {
        RunOutcome::Succeeded => Exit::Success,
        RunOutcome::Failed => Exit::RunFailed,
        RunOutcome::RolledBack => Exit::RolledBack,
        RunOutcome::RollbackFailed => Exit::RollbackFailed,
        RunOutcome::Cancelled => Exit::Cancelled,
        RunOutcome::DryRun => Exit::Success,
    }
}

/// After Ctrl-C: a person at a terminal decides whether to roll back; anyone else gets what
/// the runbook says (roll back when it defines a rollback).
pub(super) fn confirm_rollback() -> bool {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return true;
    }
    eprint!("\nmedic: the run was cancelled. Roll back what it did? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return true;
    }
    !matches!(answer.trim().to_ascii_lowercase().as_str(), "n" | "no")
}

/// Everything one recorded execution needs.
pub(super) struct RunRequest<'a> {
    pub plan: &'a Plan,
    pub format: OutputFormat,
    pub approval: Option<Approval>,
    pub dry_run: bool,
    pub run_id: String,
    pub start: Start,
    pub resume: Option<Resume>,
    pub trigger: Trigger,
    pub wait: Option<Duration>,
}

/// Takes the run's lock, runs it while recording every event, and releases the lock.
/// `signals` were installed by the caller before it planned anything.
pub(super) async fn execute(
    host: &PluginHost,
    store: &Store,
    global: &GlobalArgs,
    req: RunRequest<'_>,
    signals: Signals,
) -> Result<RunReport, Exit> {
    let cancel = Cancel::new();
    let progress = Progress::recorded(&req.run_id, store.location());
    let watcher = signals.watch(cancel.clone(), progress.clone());
    if let Some(key) = &req.plan.lock {
        let holder = LockHolder::this(&req.run_id, &req.plan.name);
        let deadline = std::time::Instant::now() + req.wait.unwrap_or_default();
        // A responder waiting sees who holds the lock (again if another run takes it).
        let mut told: Option<String> = None;
        loop {
            match store.acquire_lock(key, &holder) {
                Ok(Ok(())) => {
                    if told.is_some() {
                        eprintln!("medic: got lock `{key}`; starting");
                    }
                    break;
                }
                Ok(Err(other)) if std::time::Instant::now() >= deadline => {
                    eprintln!(
                        "medic: lock `{key}` is held by run {} ({}, pid {}); nothing ran\n  = help: wait for it with --wait DURATION",
                        other.run_id, other.runbook, other.pid
                    );
                    return Err(Exit::Invalid);
                }
                Ok(Err(other)) => {
                    if told.as_deref() != Some(other.run_id.as_str()) {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        eprintln!(
                            "medic: lock `{key}` is held by run {} ({}, pid {}, since {}); waiting up to {} for it (Ctrl-C gives up; nothing has run)",
                            other.run_id,
                            other.runbook,
                            other.pid,
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + Duration::from_millis(other.since_ms)
                            ),
                            humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))
                        );
                        told = Some(other.run_id);
                    }
                    if !cancel.sleep(Duration::from_millis(250)).await {
                        eprintln!("medic: cancelled while waiting for lock `{key}`; nothing ran");
                        return Err(Exit::Cancelled);
                    }
                }
                Err(e) => {
                    eprintln!("medic: {e}");
                    return Err(Exit::Engine);
                }
            }
        }
    }
    let hung_up = watcher.hung_up();
    let run_id = req.run_id.clone();
    let confirm = move || {
        // Nobody is there to answer: the runbook's own answer (roll back).
        if hung_up.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        let yes = confirm_rollback();
        if !yes {
            eprintln!(
                "medic: nothing was rolled back; what the run changed is still in place\n  = to roll it back later: medic runs rollback {run_id}"
            );
        }
        yes
    };
    let opts = RunOptions {
        run_id: req.run_id.clone(),
        resume: req.resume,
        dry_run: req.dry_run,
        approval: req.approval,
        cancel: cancel.clone(),
        confirm_rollback: Box::new(confirm),
        approver: std::sync::Arc::new(crate::store::approvals::StoreApprover {
            place: store.place(),
            policy: crate::store::approvals::Policy::for_run(&req.plan.environment, &req.trigger),
        }),
        fail_step: None,
        kv_journal: Some(store.kv_journal(&req.run_id)),
    };
    let mut shown = global.shown_as(req.format);
    let mut tracked = Tracked::new(progress, shown.as_mut());
    let mut recorder = Recorder::new(
        store,
        &mut tracked,
        req.trigger,
        req.plan.lock.clone(),
        req.start,
        req.dry_run,
        cancel.clone(),
    );
    // An abort drops the run where it stands (plugin calls included): nothing more is done.
    let finished = tokio::select! {
        // The abort first: once aborted, a run that reacts by failing its gates must not
        // be reported as if it had ended on its own (the executor also withholds its
        // verdict when it sees the abort first).
        biased;
        () = cancel.aborted() => None,
        report = executor::execute(host, req.plan, opts, &mut recorder) => report,
    };
    let Some(report) = finished else {
        drop(watcher);
        let told = |message: &str| {
            if super::signals::claim_abort_told() {
                eprintln!("{message}");
            } else {
                // Told already by the abort's bound, which is ending the process now.
                loop {
                    std::thread::park();
                }
            }
        };
        if let Some(e) = recorder.error.take() {
            // The store failed, not the responder: the run stands as last recorded (the
            // recorder said so, and how to pick it up).
            let _ = store.release_all_locks(&req.run_id);
            told(&format!("medic: run {} stopped: {e}", req.run_id));
            return Err(Exit::Engine);
        }
        recorder.aborted(super::signals::THIRD_CTRL_C);
        let recorded = recorder.error.take();
        let released = store
            .release_all_locks(&req.run_id)
            .and_then(|()| store.flush());
        let partly = match recorded.or(released.err()) {
            Some(e) => format!("medic: the abort could not be fully recorded: {e}\n"),
            None => String::new(),
        };
        told(&format!(
            "{partly}medic: aborted: run {id} is recorded as interrupted; what it changed may be half undone\n  = a person must act: roll it back with  medic runs rollback {id}\n  = or continue it with                  medic runs resume {id}",
            id = req.run_id
        ));
        return Err(Exit::RollbackFailed);
    };
    watcher.ended(exit_for(&report));
    let failed_to_record = recorder.error.take();
    if let Err(e) = store
        .release_all_locks(&report.run_id)
        .and_then(|()| store.flush())
    {
        eprintln!("medic: {e}");
    }
    if let Some(e) = failed_to_record {
        eprintln!("medic: the run could not be fully recorded: {e}");
        return Err(Exit::Engine);
    }
    if let Some(keep) = global.retention {
        // Never the run just recorded, however short the retention.
        let started = report
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let before = crate::store::now_ms()
            .saturating_sub(keep.as_millis() as u64)
            .min(started);
        if let Err(e) = store.prune(before) {
            eprintln!("medic: pruning runs older than the retention: {e}");
        }
    }
    if req.format == OutputFormat::Human {
        eprintln!(
            "recorded in {}: medic runs show {}",
            store.location(),
            report.run_id
        );
    }
    Ok(report)
}

pub async fn validate(global: &GlobalArgs, args: CheckArgs) -> Exit {
    let json = args.output == OutputFormat::Json;
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let path = &args.target.runbook;
    // Without --env, a runbook with environments is checked against every one of them, so a
    // mistake that only shows in prod is found before the prod run.
    let text = crate::input::read_text(path, crate::input::MAX_RUNBOOK_BYTES).ok();
    let envs = match (&args.target.env, &text) {
        (None, Some(t)) => runbook::plan::environment_names(t),
        _ => Vec::new(),
    };
    let targets: Vec<Option<String>> = if envs.is_empty() {
        vec![args.target.env.clone()]
    } else {
        envs.into_iter().map(Some).collect()
    };
    let Some(text) = text else {
        if json {
            let why = match crate::input::read_text(path, crate::input::MAX_RUNBOOK_BYTES) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such file".to_owned(),
                Err(e) => e.to_string(),
                Ok(_) => "changed while read".to_owned(),
            };
            println!(
                "{}",
                serde_json::json!({
                    "file": path.display().to_string(), "valid": false,
                    "diagnostics": [{ "severity": "error", "message": format!("cannot read {}: {why}", path.display()), "help": null, "at": null }],
                })
            );
            return Exit::Invalid;
        }
        // Unreadable: `load_plan` says why.
        return match load_plan(&host, path, None, &args.target.options()).await {
            Ok(_) => Exit::Success,
            Err(exit) => exit,
        };
    };
    // Every environment is checked, and every mistake reported once: those of all
    // environments as they are, those of some with the environments named.
    let mut last = None;
    let mut found: Vec<(runbook::Diagnostic, Vec<String>)> = Vec::new();
    let mut warnings: Vec<runbook::Diagnostic> = Vec::new();
    for env in &targets {
        let opts = PlanOptions {
            params: args.target.params.clone(),
            environment: env.clone(),
            defer_secrets: true,
            sourced: None,
        };
        let src = Source { path, text: &text };
        match runbook::plan(&host, &src, &opts).await {
            Ok(mut plan) => {
                for w in std::mem::take(&mut plan.warnings) {
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
                last = Some(plan);
            }
            Err(diags) => {
                for d in diags {
                    let name = env.clone().unwrap_or_default();
                    match found.iter_mut().find(|(known, _)| *known == d) {
                        Some((_, envs)) => envs.push(name),
                        None => found.push((d, vec![name])),
                    }
                }
            }
        }
    }
    if !found.is_empty() {
        let diagnostics: Vec<runbook::Diagnostic> = found
            .into_iter()
            .map(|(mut d, envs)| {
                if targets.len() > 1 && envs.len() < targets.len() {
                    let list: Vec<String> = envs.iter().map(|e| format!("`{e}`")).collect();
                    d.message = format!(
                        "{} (in environment{} {})",
                        d.message,
                        if list.len() == 1 { "" } else { "s" },
                        list.join(", ")
                    );
                }
                d
            })
            .collect();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "file": path.display().to_string(), "valid": false,
                    "diagnostics": diagnostics.iter().chain(&warnings).map(|d| runbook::diag::to_json(&text, d)).collect::<Vec<_>>(),
                })
            );
            return Exit::Invalid;
        }
        eprintln!(
            "{}",
            Report {
                path: &path.display().to_string(),
                text: &text,
                diagnostics: &diagnostics
            }
        );
        return Exit::Invalid;
    }
    if json {
        let plan = last.expect("at least one target");
        println!(
            "{}",
            serde_json::json!({
                "file": path.display().to_string(), "valid": true, "runbook": plan.name,
                "steps": plan.steps.len(), "plugins": plan.plugins.len(),
                "environments": targets.iter().flatten().collect::<Vec<_>>(),
                "diagnostics": warnings.iter().map(|d| runbook::diag::to_json(&text, d)).collect::<Vec<_>>(),
            })
        );
        return Exit::Success;
    }
    if !warnings.is_empty() {
        eprintln!(
            "{}",
            Report {
                path: &path.display().to_string(),
                text: &text,
                diagnostics: &warnings
            }
        );
    }
    let plan = last.expect("at least one target");
    let n = plan.steps.len();
    let p = plan.plugins.len();
    let envs: Vec<&str> = targets.iter().flatten().map(String::as_str).collect();
    let env_note = if envs.is_empty() {
        String::new()
    } else {
        format!(", environments {}", envs.join(", "))
    };
    println!(
        "{} is valid: runbook `{}`, {n} step{}, {p} plugin{}{env_note}",
        path.display(),
        plan.name,
        if n == 1 { "" } else { "s" },
        if p == 1 { "" } else { "s" }
    );
    Exit::Success
}

pub async fn plan(global: &GlobalArgs, args: ValidateArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    // A plan shows what would run; it needs no secret (shown as where it would come from).
    let opts = PlanOptions {
        defer_secrets: true,
        ..args.target.options()
    };
    match load_plan(&host, &args.target.runbook, None, &opts).await {
        Ok(plan) if args.output == OutputFormat::Json => {
            let text =
                crate::input::read_text(&args.target.runbook, crate::input::MAX_RUNBOOK_BYTES)
                    .unwrap_or_default();
            println!("{}", super::output::plan_json(&plan, &text));
            Exit::Success
        }
        Ok(plan) => {
            print!("{}", render_plan(&plan, global.color()));
            Exit::Success
        }
        Err(exit) => exit,
    }
}
