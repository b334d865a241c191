//! `medic run`, `medic validate` and `medic plan`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;

use super::output::{HumanOutput, JsonOutput, print_plan};
use super::{Exit, GlobalArgs, OutputFormat, engine_error, parse_param};
use crate::executor::{self, Approval, Cancel, RunOptions, RunOutcome, RunReport};
use crate::host::PluginHost;
use crate::runbook::{self, Plan, PlanOptions, Report, Source};

#[derive(Debug, Args)]
pub struct Target {
    /// The runbook file
    runbook: PathBuf,
    /// Set a runbook parameter (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// The environment to target (one of the runbook's [environments])
    #[arg(short, long = "env", value_name = "NAME")]
    env: Option<String>,
}

impl Target {
    fn options(&self) -> PlanOptions {
        PlanOptions {
            params: self.params.clone(),
            environment: self.env.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// Approve running in a protected environment, with the reason (recorded with your name)
    #[arg(long, value_name = "REASON")]
    approve: Option<String>,
    /// Ask plugins to change nothing and report what they would do
    #[arg(long)]
    dry_run: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    target: Target,
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
            owned = std::fs::read_to_string(path).map_err(|e| {
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
    runbook::plan(host, &src, opts).await.map_err(|diags| {
        eprintln!(
            "{}",
            Report {
                path: &path.display().to_string(),
                text,
                diagnostics: &diags
            }
        );
        Exit::Invalid
    })
}

/// `user@host`, for approvals.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let plan = match load_plan(&host, &args.target.runbook, None, &args.target.options()).await {
        Ok(p) => p,
        Err(exit) => return exit,
    };
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
    let report = execute(&host, &plan, args.output, global, approval, args.dry_run).await;
    exit_for(&report)
}

pub(super) fn exit_for(report: &RunReport) -> Exit {
    match report.outcome {
        RunOutcome::Succeeded => Exit::Success,
        RunOutcome::Failed => Exit::RunFailed,
        RunOutcome::RolledBack => Exit::RolledBack,
        RunOutcome::RollbackFailed => Exit::RollbackFailed,
        RunOutcome::Cancelled => Exit::Cancelled,
    }
}

/// After Ctrl-C: a person at a terminal decides whether to roll back; anyone else gets what
/// the runbook says (roll back when it defines a rollback).
fn confirm_rollback() -> bool {
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

pub(super) async fn execute(
    host: &PluginHost,
    plan: &Plan,
    format: OutputFormat,
    global: &GlobalArgs,
    approval: Option<Approval>,
    dry_run: bool,
) -> RunReport {
    let cancel = Cancel::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!(
                "\nmedic: cancelling: the current step finishes (within its timeout), no new step starts"
            );
            cancel.cancel();
        })
    };
    let opts = RunOptions {
        dry_run,
        approval,
        cancel,
        confirm_rollback: Box::new(confirm_rollback),
        ..RunOptions::default()
    };
    let report = match format {
        OutputFormat::Human => {
            executor::execute(
                host,
                plan,
                opts,
                &mut HumanOutput::new(global.color(), global.verbose),
            )
            .await
        }
        OutputFormat::Json => executor::execute(host, plan, opts, &mut JsonOutput).await,
    };
    watcher.abort();
    report
}

pub async fn validate(global: &GlobalArgs, args: ValidateArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let path = &args.target.runbook;
    // Without --env, a runbook with environments is checked against every one of them, so a
    // mistake that only shows in prod is found before the prod run.
    let text = std::fs::read_to_string(path).ok();
    let envs = match (&args.target.env, &text) {
        (None, Some(t)) => runbook::plan::environment_names(t),
        _ => Vec::new(),
    };
    let targets: Vec<Option<String>> = if envs.is_empty() {
        vec![args.target.env.clone()]
    } else {
        envs.into_iter().map(Some).collect()
    };
    let mut last = None;
    for env in &targets {
        let opts = PlanOptions {
            params: args.target.params.clone(),
            environment: env.clone(),
        };
        match load_plan(&host, path, text.as_deref(), &opts).await {
            Ok(plan) => last = Some(plan),
            Err(exit) => {
                if let Some(env) = env {
                    eprintln!("(validating for environment `{env}`)");
                }
                return exit;
            }
        }
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
    match load_plan(&host, &args.target.runbook, None, &args.target.options()).await {
        Ok(plan) => {
            print_plan(&plan, global.color());
            Exit::Success
        }
        Err(exit) => exit,
    }
}
