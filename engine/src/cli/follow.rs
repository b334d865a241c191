//! `medic runs follow ID`: a run's timeline as it happens, from any terminal, until it ends
//! (locally, reading the store as it is written, or through `--server`); it
//! exits as the run does. A Ctrl-C stops following, never the run: whoever started it
//! decides that. `medic runs rerun ID`: the same runbook again, with the run's parameters and
//! environment.

use std::time::Duration;

use clap::Args;

use super::remote_run::exit_for;
use super::{Exit, GlobalArgs, OutputFormat, terminal};
use crate::store::{JournalEntry, RunStatus};

/// How often a local follower reads the journal again.
const POLL: Duration = Duration::from_millis(200);
/// Journal entries read at a time.
const PAGE: usize = 500;

fn print(entry: &JournalEntry, start_ms: u64, output: OutputFormat) {
    match output {
        OutputFormat::Json => super::output::json_line(entry),
        OutputFormat::Human => {
            if let Some(line) = super::runs::journal_line(&entry.event) {
                let at = humantime::format_duration(Duration::from_millis(
                    entry.at_ms.saturating_sub(start_ms),
                ));
                println!("  +{at:>7}  {}", terminal::clean(&line));
            }
        }
    }
}

fn ended(status: RunStatus, id: &str, output: OutputFormat) -> Exit {
    if output == OutputFormat::Human {
        println!("run {id}: {}", status.name());
    }
    exit_for(status)
}

pub async fn follow(global: &GlobalArgs, id: &str, output: OutputFormat) -> Exit {
    // Installed now, before anything is printed: `tokio::signal::ctrl_c()` would install its
    // handler only when first polled, and a Ctrl-C before that killed the follower outright.
    let mut interrupt =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("medic: cannot handle Ctrl-C: {e}");
                return Exit::Engine;
            }
        };
    let client = match global.api_client() {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let store = match super::runs::read_only(global) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let record = match super::runs::find(store.as_ref(), id) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let id = record.run_id.clone();
    if output == OutputFormat::Human {
        println!(
            "run {id}: {} in {}, started by {}",
            terminal::clean(&record.runbook),
            terminal::clean(&record.environment),
            terminal::clean(&record.trigger.to_string())
        );
    }
    if let Some(client) = client {
        // The server streams the journal (Server-Sent Events) and closes it at the run's end.
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        client.follow(&id, None, tx);
        let mut start = None;
        loop {
            tokio::select! {
                entry = rx.recv() => match entry {
                    Some(Ok(e)) => print(&e, *start.get_or_insert(e.at_ms), output),
                    Some(Err(e)) => {
                        eprintln!("medic: {e}");
                        return Exit::Engine;
                    }
                    None => break,
                },
                _ = interrupt.recv() => {
                    eprintln!("medic: stopped following run {id}; it goes on");
                    return Exit::Success;
                }
            }
        }
        return match store.find(&id) {
            Ok(r) => ended(r.status, &id, output),
            Err(e) => {
                eprintln!("medic: {e}");
                Exit::Engine
            }
        };
    }
    let mut shown = 0;
    let start = record.started_ms;
    loop {
        // The record first: a journal read after it holds every event up to its end.
        let status = match store.find(&id) {
            Ok(r) => r.status,
            Err(e) => {
                eprintln!("medic: {e}");
                return Exit::Engine;
            }
        };
        // What is new since the last look, a page at a time: a large fleet's journal is
        // neither read again at every look nor held whole.
        loop {
            match store.journal_from(&id, shown, PAGE) {
                Ok(page) => {
                    for e in &page {
                        print(e, start, output);
                    }
                    shown += page.len();
                    if page.len() < PAGE {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("medic: {e}");
                    return Exit::Engine;
                }
            }
        }
        if status != RunStatus::Running {
            return ended(status, &id, output);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = interrupt.recv() => {
                eprintln!("medic: stopped following run {id}; it goes on");
                return Exit::Success;
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The recorded run (an id or a unique prefix)
    id: String,
    /// Approve running in a protected environment, with the reason (a new approval: the
    /// old run's is not reused)
    #[arg(long, value_name = "REASON")]
    approve: Option<String>,
    /// Ask plugins to change nothing and report what they would do
    #[arg(long)]
    dry_run: bool,
    /// Wait this long for the run store or the runbook's lock when another run holds it
    #[arg(long, value_name = "DURATION", value_parser = crate::runbook::plan::parse_duration)]
    wait: Option<Duration>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

/// The run's record.
fn recorded(
    global: &GlobalArgs,
    id: &str,
    wait: Option<Duration>,
) -> Result<crate::store::RunRecord, Exit> {
    if global.server.is_some() {
        let store = super::runs::read_only(global)?;
        return super::runs::find(store.as_ref(), id);
    }
    let store = global.store("medic runs rerun", wait)?;
    super::runs::find(&store, id)
}

pub async fn rerun(global: &GlobalArgs, args: RerunArgs) -> Exit {
    let record = match recorded(global, &args.id, args.wait) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let path = std::path::PathBuf::from(&record.runbook_path);
    // Through --server the catalogue names runbooks by file stem, and the server checks them.
    if global.server.is_none() {
        match crate::input::read_text(&path, crate::input::MAX_RUNBOOK_BYTES) {
            Ok(text) => {
                let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
                if digest != record.runbook_sha256 {
                    eprintln!(
                        "medic: {} changed since run {} (sha256 {}…, now {}…): running it as it is now",
                        path.display(),
                        record.run_id,
                        record
                            .runbook_sha256
                            .get(..12)
                            .unwrap_or(&record.runbook_sha256),
                        &digest[..12]
                    );
                }
            }
            Err(e) => {
                eprintln!(
                    "medic: run {} used {}, which cannot be read now: {e}",
                    record.run_id,
                    path.display()
                );
                return Exit::Invalid;
            }
        }
    }
    let params: Vec<(String, String)> = record
        .params
        .iter()
        .filter(|(_, v)| v != crate::host::redact::MASK)
        .cloned()
        .collect();
    let environment = (record.environment != crate::runbook::plan::DEFAULT_ENVIRONMENT)
        .then(|| record.environment.clone());
    if args.output == OutputFormat::Human {
        eprintln!(
            "medic: running {} again as run {} did{}",
            path.display(),
            record.run_id,
            if params.is_empty() {
                String::new()
            } else {
                let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(" ({})", terminal::clean(&shown.join(" ")))
            }
        );
    }
    let run_args = super::run::RunArgs {
        target: super::run::Target {
            runbook: path,
            params,
            env: environment,
        },
        approve: args.approve,
        dry_run: args.dry_run,
        wait: args.wait,
        output: args.output,
    };
    super::run::run(global, run_args).await
}
