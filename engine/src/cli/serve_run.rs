//! `medic run` while `medic serve` holds the store: the run goes to serve, and this process
//! shows it as it happens.

use std::time::Duration;

use super::run::{RunArgs, confirm_rollback, exit_for};
use super::signals::{Nth, Progress, Signals, Stop, Stops, Tracked};
use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::executor::{self, Approval};
use crate::runbook::Plan;
use crate::store::Trigger;

/// `medic serve` holds the store: it runs the runbook (and records it); this process shows
/// the run as it happens, as if it ran here. Plugins run in the serve process, with the
/// parameter values this process read from its own environment and files. A Ctrl-C here
/// does what it does for a local run: the first cancels (asking whether to roll back when
/// someone is at the terminal), the second says what is still running, the third aborts.
pub(super) async fn through_serve(
    global: &GlobalArgs,
    remote: &crate::store::remote::Remote,
    plan: &Plan,
    args: &RunArgs,
    approval: Option<Approval>,
    mut signals: Signals,
) -> Exit {
    let path =
        std::fs::canonicalize(&args.target.runbook).unwrap_or_else(|_| args.target.runbook.clone());
    let text = match crate::input::read_text(&path, crate::input::MAX_RUNBOOK_BYTES) {
        Ok(t) => t,
        Err(e) => return engine_error(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let opts = args.target.options();
    let run_id = executor::new_run_id();
    let request = serde_json::json!({
        "op": "run",
        "path": path,
        "sourced": crate::runbook::plan::read_sources(&path, &text),
        "text": text,
        "params": opts.params,
        "environment": opts.environment,
        "dry_run": args.dry_run,
        "approval": approval,
        "trigger": Trigger::cli(),
        "run_id": run_id,
        "lock_wait": args.wait.unwrap_or_default(),
    });
    let lines = match remote.stream(&request) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("medic: {e}");
            return Exit::Engine;
        }
    };
    // The socket is read on a thread of its own (blocking reads) so that signals are
    // handled while the run waits, for hours if an approval takes that long. A few lines
    // at most wait here: when the terminal is slower than the run, the socket fills and
    // medic serve leaves progress lines out (and says how many), rather than either
    // process holding every line of a large fleet.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        for line in lines {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut shown = global.shown_as(args.output);
    let progress = Progress::default();
    let mut tracked = Tracked::new(progress.clone(), shown.as_mut());
    let cancel_run = |rollback: Option<bool>, abort: bool| {
        let asked = serde_json::json!({
            "op": "cancel_run", "run_id": run_id, "rollback": rollback, "abort": abort,
        });
        if let Err(e) = remote.call::<serde_json::Value>(&asked, Duration::from_secs(10)) {
            eprintln!("medic: medic serve did not take the cancel: {e}");
        }
    };
    let mut stops = Stops::default();
    let mut report = None;
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            stop = signals.next() => {
                match stops.count(stop) {
                    None => {}
                    Some(Nth::First(Stop::Interrupt)) => {
                        eprintln!("\nmedic: {}", super::signals::CANCELLING);
                        let has_rollback = plan.steps.iter().any(|s| s.rollback.is_some())
                            || !plan.rollback.is_empty();
                        let answer = if has_rollback {
                            let yes = tokio::task::spawn_blocking(confirm_rollback)
                                .await
                                .unwrap_or(true);
                            if !yes {
                                eprintln!(
                                    "medic: nothing will be rolled back; what the run changed stays in place\n  = to roll it back later: medic runs rollback {run_id}"
                                );
                            }
                            Some(yes)
                        } else {
                            None
                        };
                        cancel_run(answer, false);
                    }
                    Some(Nth::First(_)) => cancel_run(None, false),
                    Some(Nth::Second) => eprintln!(
                        "\nmedic: {}\n  = {}",
                        progress.describe(),
                        super::signals::LAST_WARNING
                    ),
                    Some(Nth::Third) => {
                        cancel_run(None, true);
                        eprintln!(
                            "medic: aborting run {run_id} in medic serve: it is left interrupted\n  = a person must act: roll it back with  medic runs rollback {run_id}"
                        );
                    }
                }
                continue;
            }
        };
        let Some(Ok(line)) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("medic: unreadable answer from medic serve: {line}");
            return Exit::Engine;
        };
        if let Some(e) = v.get("event") {
            let Ok(owned) = serde_json::from_value::<executor::OwnedEvent>(e.clone()) else {
                eprintln!("medic: unreadable event from medic serve: {e}");
                return Exit::Engine;
            };
            use executor::Observer as _;
            if let Some(event) = owned.as_event(Some(plan)) {
                tracked.on_event(&event);
            }
            if let executor::OwnedEvent::RunFinished { report: r } = owned {
                report = Some(r);
            }
        } else if let Some(n) = v.get("skipped").and_then(|n| n.as_u64()) {
            // Said where the lines would have been, so a reader of either output knows there
            // is a gap and how large.
            match args.output {
                OutputFormat::Human => eprintln!(
                    "medic: {n} progress line{} not shown: this terminal fell behind the run (every one is recorded: medic runs show {run_id})",
                    if n == 1 { "" } else { "s" }
                ),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"event": "not_shown", "events": n, "why": "the reader fell behind the run; every event is recorded", "run_id": run_id})
                ),
            }
        } else if let Some(done) = v.get("done") {
            if args.output == OutputFormat::Human {
                eprintln!(
                    "recorded in {} by medic serve: medic runs show {}",
                    done["store"].as_str().unwrap_or("?"),
                    done["run_id"].as_str().unwrap_or("?")
                );
            }
        } else if let Some(e) = v.get("error").or_else(|| v.get("err")) {
            eprintln!("medic: {}", e.as_str().unwrap_or_default());
            // After a Ctrl-C the run ended as asked (aborted, or cancelled before it began).
            return match stops.so_far() {
                0 => Exit::Invalid,
                1 | 2 => Exit::Cancelled,
                _ => Exit::RollbackFailed,
            };
        }
    }
    match report {
        Some(r) => exit_for(&r),
        None => {
            eprintln!("medic: medic serve stopped before the run ended; see `medic runs list`");
            Exit::Engine
        }
    }
}
