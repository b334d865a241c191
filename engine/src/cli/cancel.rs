//! `medic runs cancel`: stop a run that is going on somewhere else (another terminal, `medic
//! serve`, a server's API) at its next safe point, as a Ctrl-C where it runs would.

use clap::Args;
use serde_json::json;

use super::runs::{find, read_only};
use super::{Exit, GlobalArgs, OutputFormat};
use crate::store::{RunRecord, RunStatus};

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A run id (or a unique prefix of one)
    id: String,
    /// Roll back what the run did (a run in `medic serve` or behind --server; default: what
    /// its runbook says)
    #[arg(long, conflicts_with = "no_rollback")]
    rollback: bool,
    /// Leave what the run did in place (a run in `medic serve` or behind --server)
    #[arg(long)]
    no_rollback: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

/// Cancels the run where it goes on: through the server behind --server, through the
/// `medic serve` of this data directory when the run is one of its, or in its own process.
pub(super) async fn cancel(global: &GlobalArgs, args: CancelArgs) -> Exit {
    // It becomes part of a URL's path (and a run id is a ULID).
    if args.id.is_empty() || !args.id.chars().all(|c| c.is_ascii_alphanumeric()) {
        eprintln!("medic: `{}` is not a run id (or a prefix of one)", args.id);
        return Exit::Invalid;
    }
    let rollback = match (args.rollback, args.no_rollback) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    match global.api_client() {
        Ok(Some(client)) => {
            let id = &args.id;
            return match client.request(
                reqwest::Method::POST,
                &format!("/runs/{id}/cancel"),
                Some(json!({ "rollback": rollback })),
            ) {
                Ok(v) => {
                    let id = v["run_id"].as_str().unwrap_or(id);
                    told(args.output, id, Took::Server, rollback);
                    Exit::Success
                }
                Err(e) => {
                    eprintln!("medic: {e}");
                    Exit::Invalid
                }
            };
        }
        Ok(None) => {}
        Err(exit) => return exit,
    }
    let record = match read_only(global).and_then(|store| find(store.as_ref(), &args.id)) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    if let Err(why) = running(&record) {
        eprintln!("medic: {why}");
        return Exit::Invalid;
    }
    let id = &record.run_id;
    if global.store_is_shared() {
        // A pid says nothing about a process on another host.
        eprintln!(
            "medic: run {id} runs in process {} of whichever host started it (the store is shared)\n  = help: stop it there (Ctrl-C or SIGTERM in its terminal), or through the API of the medic serve that runs it: `medic --server URL runs cancel {id}`",
            record.pid
        );
        return Exit::Invalid;
    }
    // Who stopped a run is on record, as the API's cancel is: in the audit log.
    let audited = |what: &str| {
        let place = global.place("medic runs cancel")?;
        let action = match rollback {
            Some(true) => format!("runs cancel {id} --rollback ({what})"),
            Some(false) => format!("runs cancel {id} --no-rollback ({what})"),
            None => format!("runs cancel {id} ({what})"),
        };
        let me = format!("user:{}", crate::private::me());
        if let Err(e) = crate::store::audit::Audit::at(&place).record(&me, &action, "", "ok") {
            eprintln!("medic: the cancel was not recorded in the audit log: {e}");
        }
        Ok::<(), Exit>(())
    };
    if let Some(serve) = global.through_serve() {
        let asked = json!({
            "op": "cancel_run", "run_id": id, "rollback": rollback, "abort": false,
        });
        match serve.call::<serde_json::Value>(&asked, std::time::Duration::from_secs(10)) {
            Ok(_) => {
                if let Err(exit) = audited("medic serve") {
                    return exit;
                }
                told(args.output, id, Took::Serve, rollback);
                return Exit::Success;
            }
            // Not one of serve's: a `medic run` of its own, below.
            Err(e) if e.to_string().contains("is running here") => {}
            // Serve has the run and said why not (a drill's run asked not to roll back).
            Err(crate::store::StoreError::Remote(why)) => {
                eprintln!("medic: medic serve refused the cancel: {why}");
                return Exit::Invalid;
            }
            Err(e) => {
                eprintln!("medic: medic serve did not take the cancel: {e}");
                return Exit::Engine;
            }
        }
    }
    let exit = in_its_process(&record, rollback, args.output);
    if exit == Exit::Success
        && let Err(exit) = audited(&format!("process {}", record.pid))
    {
        return exit;
    }
    exit
}

/// Refused, and why, unless the run is still going on.
fn running(record: &RunRecord) -> Result<(), String> {
    let id = &record.run_id;
    match record.status {
        RunStatus::Running => Ok(()),
        RunStatus::Interrupted => Err(gone(id, "its process stopped mid-run (interrupted)")),
        status => Err(format!(
            "run {id} is not running: it ended {}",
            status.name()
        )),
    }
}

/// A run whose process is gone, and what picks it up.
fn gone(id: &str, why: &str) -> String {
    format!(
        "run {id} is not running: {why}\n  = help: `medic runs show {id}`, then `medic runs rollback {id}` or `medic runs resume {id}`"
    )
}

/// A `medic run` on this host: cancelled as by the first Ctrl-C in its terminal, which asks
/// there whether to roll back, or rolls back as the runbook says when nobody is there. By
/// SIGUSR1, not SIGTERM: a responder who asks again while the rollback runs must not abort
/// it, as a third Ctrl-C (or SIGTERM) would.
fn in_its_process(record: &RunRecord, rollback: Option<bool>, output: OutputFormat) -> Exit {
    let id = &record.run_id;
    let process = record.process();
    let pid = process.pid;
    // Its process is a serve that no longer answers, or another data directory's: a SIGTERM
    // would stop serve and every run in it.
    let serve = process
        .command_line()
        .is_some_and(|args| args.iter().skip(1).any(|a| a == "serve"));
    if serve {
        eprintln!(
            "medic: run {id} runs in medic serve (process {pid}), which did not take the cancel\n  = help: is that serve answering on this data directory's socket? SIGTERM to medic serve stops every run in it at a safe point (each rolls back what it did), and `medic drill pause NAME` keeps a drill from starting again"
        );
        return Exit::Invalid;
    }
    if rollback.is_some() {
        eprintln!(
            "medic: run {id} runs in its own process ({pid}, `medic run` in a terminal), whose person decides whether to roll back\n  = help: without --rollback or --no-rollback, it is stopped as Ctrl-C there would stop it: asked there, or rolled back as the runbook says when nobody is there"
        );
        return Exit::Invalid;
    }
    match process.signal(libc::SIGUSR1) {
        Ok(()) => {
            told(output, id, Took::Process(pid), None);
            Exit::Success
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            eprintln!("medic: {}", gone(id, &format!("its process {pid} is gone")));
            Exit::Invalid
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            eprintln!(
                "medic: run {id} runs in process {pid} of another user, which this user may not stop\n  = help: stop it from its terminal, or as that user"
            );
            Exit::Invalid
        }
        Err(e) => {
            eprintln!("medic: cannot tell process {pid} of run {id} to stop: {e}");
            Exit::Engine
        }
    }
}

/// Who took a cancel.
#[derive(Clone, Copy)]
enum Took {
    /// The server behind --server.
    Server,
    /// This data directory's `medic serve`.
    Serve,
    /// The run's own process (a `medic run` in a terminal).
    Process(u32),
}

/// What a responder is told once the cancel was taken.
fn told(output: OutputFormat, id: &str, by: Took, rollback: Option<bool>) {
    if output == OutputFormat::Json {
        let by = match by {
            Took::Server => "server",
            Took::Serve => "serve",
            Took::Process(_) => "process",
        };
        println!(
            "{}",
            json!({ "run_id": id, "cancelled": true, "by": by, "rollback": rollback })
        );
        return;
    }
    let then = match rollback {
        Some(true) => "then rolls back what it did",
        Some(false) => "leaving what it did in place",
        None => "then rolls back as its runbook says",
    };
    let what = match by {
        Took::Server => {
            format!("cancelled in its medic serve: it stops at its next safe point, {then}")
        }
        Took::Serve => format!("cancelled in medic serve: it stops at its next safe point, {then}"),
        Took::Process(pid) => format!(
            "told to stop (process {pid}, as by a Ctrl-C in its terminal): it stops at its next safe point, and asks there whether to roll back, or rolls back as the runbook says when nobody is there; asked again, it goes on stopping as it was"
        ),
    };
    println!("run {id}: {what}\n  `medic runs follow {id}` shows it stopping");
}
