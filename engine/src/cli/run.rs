//! `medic run` and `medic validate`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::output::{HumanOutput, JsonOutput};
use super::{Exit, GlobalArgs, OutputFormat, engine_error, parse_param};
use crate::executor::{self, RunOptions, RunOutcome};
use crate::host::PluginHost;
use crate::runbook::{self, Plan, Report, Source};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook file
    runbook: PathBuf,
    /// Set a runbook parameter (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The runbook file
    runbook: PathBuf,
    /// Set a runbook parameter (repeatable), to validate with the values a run would use
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

/// Reads and validates a runbook; on failure prints every diagnostic and returns the exit code.
pub(super) async fn load_plan(
    host: &PluginHost,
    path: &Path,
    text: Option<&str>,
    params: &[(String, String)],
) -> Result<Plan, Exit> {
    let owned;
    let text = match text {
        Some(t) => t,
        None => {
            owned = std::fs::read_to_string(path).map_err(|e| {
                eprintln!(
                    "medic: cannot read runbook {}: {}",
                    path.display(),
                    if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file".to_string()
                    } else {
                        e.to_string()
                    }
                );
                Exit::Invalid
            })?;
            &owned
        }
    };
    let src = Source { path, text };
    runbook::plan(host, &src, params).await.map_err(|diags| {
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

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let plan = match load_plan(&host, &args.runbook, None, &args.params).await {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    execute(&host, &plan, args.output, global.color(), global.verbose).await
}

pub(super) async fn execute(
    host: &PluginHost,
    plan: &Plan,
    format: OutputFormat,
    color: bool,
    verbose: u8,
) -> Exit {
    let opts = RunOptions::default();
    let report = match format {
        OutputFormat::Human => {
            executor::execute(host, plan, &opts, &mut HumanOutput::new(color, verbose)).await
        }
        OutputFormat::Json => executor::execute(host, plan, &opts, &mut JsonOutput).await,
    };
    match report.outcome {
        RunOutcome::Succeeded => Exit::Success,
        RunOutcome::Failed => Exit::RunFailed,
    }
}

pub async fn validate(global: &GlobalArgs, args: ValidateArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    match load_plan(&host, &args.runbook, None, &args.params).await {
        Ok(plan) => {
            println!(
                "{} is valid: runbook `{}`, {} step{}, {} plugin{}",
                args.runbook.display(),
                plan.name,
                plan.steps.len(),
                if plan.steps.len() == 1 { "" } else { "s" },
                plan.plugins.len(),
                if plan.plugins.len() == 1 { "" } else { "s" }
            );
            Exit::Success
        }
        Err(exit) => exit,
    }
}
