//! `medic drill run NAME`: in this process, or in `medic serve` when it holds the store; either
//! way stopped as a run started from a shell is (`cli::signals`).

use std::path::Path;
use std::time::Duration;

use super::{describe, exit_for, load};
use crate::cli::signals::{self, Nth, Progress, Signals, Stops, Tracked};
use crate::cli::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::drill::run::{Started, run_drill};
use crate::executor::Cancel;
use crate::store::drills::DrillRecord;
use crate::store::remote::Remote;

/// `medic drill run NAME` while `medic serve` holds the store: serve runs it, on its own
/// drill set, and this waits for its result. Ctrl-C, SIGTERM or a closed terminal cancel it
/// in serve, which stops it at a safe point and undoes what it did; a second Ctrl-C says
/// so, a third stops waiting (serve goes on).
pub(super) async fn in_serve(remote: Remote, name: &str, output: OutputFormat) -> Exit {
    let mut signals = match Signals::install_for_run() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    // What this client cancels is the run it asked for, not one of the same drill after it.
    let token = crate::executor::new_run_id();
    let waiting = {
        let (remote, asked) = (
            remote.clone(),
            serde_json::json!({"op": "drill_run", "name": name, "token": token}),
        );
        tokio::task::spawn_blocking(move || {
            remote.call::<DrillRecord>(&asked, Duration::from_secs(24 * 3600))
        })
    };
    tokio::pin!(waiting);
    let mut stops = Stops::default();
    // Whether serve took the cancel: a Ctrl-C before serve has started the drill (or while
    // serve does not answer) asks again at the next one.
    let mut taken = false;
    let answer = loop {
        let stop = tokio::select! {
            answer = &mut waiting => break answer,
            stop = signals.next() => stop,
        };
        let Some(nth) = stops.count(stop) else {
            continue;
        };
        if nth == Nth::Third {
            eprintln!(
                "medic: stopped waiting for drill {name}, which goes on in medic serve\n  = its result: medic drill report {name}"
            );
            return Exit::Cancelled;
        }
        let more = if matches!(nth, Nth::First(_)) {
            "twice more"
        } else {
            "once more"
        };
        if taken {
            eprintln!(
                "\nmedic: drill {name} undoes what it did in medic serve\n  = Ctrl-C {more} stops waiting for it; it goes on there"
            );
            continue;
        }
        let asked = serde_json::json!({"op": "drill_cancel", "name": name, "token": token});
        match remote.call::<serde_json::Value>(&asked, Duration::from_secs(10)) {
            Ok(_) => {
                taken = true;
                eprintln!(
                    "\nmedic: cancelling drill {name} in medic serve: its current step finishes, then it undoes what it did\n  = Ctrl-C {more} stops waiting for it (it goes on in medic serve)"
                );
            }
            Err(e) => eprintln!(
                "\nmedic: medic serve did not take the cancel: {e}\n  = Ctrl-C asks again; {more} stops waiting"
            ),
        }
    };
    match answer {
        Ok(Ok(record)) if output == OutputFormat::Json => {
            println!("{}", serde_json::json!({ "drill": record }));
            exit_for(record.result)
        }
        Ok(Ok(record)) => {
            println!("drill {name} (run by medic serve): {}", describe(&record));
            if let Some(id) = &record.run_id {
                println!("  medic runs show {id}");
            }
            exit_for(record.result)
        }
        Ok(Err(e)) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
        Err(e) => {
            eprintln!("medic: waiting for medic serve: {e}");
            Exit::Engine
        }
    }
}

/// `medic drill run NAME` in this process. It stops as a run started from a shell does
/// (`cli::signals`): Ctrl-C, SIGTERM, a closed terminal or `medic runs cancel` cancel it at a
/// safe point, where it undoes what it did (a drill never leaves its fault in place); a
/// second Ctrl-C says what is still running, a third aborts and leaves the run interrupted.
pub(super) async fn here(
    global: &GlobalArgs,
    name: &str,
    dir: &Path,
    output: OutputFormat,
) -> Exit {
    // Before anything is loaded: from here on a stop is a cancel, never a death that leaves
    // a fault behind.
    let signals = match Signals::install_for_run() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let list = match load(global, dir).await {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let Some(drill) = list.iter().find(|d| d.name == name) else {
        let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "medic: no drill `{name}` in {}{}",
            dir.display(),
            crate::runbook::diag::did_you_mean(name, names.iter().copied())
                .map(|s| format!("; {s}"))
                .unwrap_or_else(|| format!(" (drills: {})", names.join(", ")))
        );
        return Exit::Invalid;
    };
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let store = match global.store("medic drill run", None) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let cancel = Cancel::new();
    let progress = Progress::following(store.location());
    let watcher = signals.watch(cancel.clone(), progress.clone());
    let mut shown = global.shown_as(output);
    let mut tracked = Tracked::new(progress, shown.as_mut());
    let record = run_drill(&host, &store, drill, Started::Manual, &mut tracked, &cancel).await;
    let exit = if cancel.is_aborted() {
        // Told already by the abort's bound, which is ending the process now.
        if !signals::claim_abort_told() {
            loop {
                std::thread::park();
            }
        }
        // Left interrupted, half undone: a person must act, as after `medic run`'s abort.
        Exit::RollbackFailed
    } else {
        exit_for(record.result)
    };
    watcher.ended(exit);
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "drill": record }));
    } else {
        println!("\ndrill {}: {}", drill.name, describe(&record));
    }
    exit
}
