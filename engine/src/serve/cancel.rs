//! A cancel for one run in `medic serve` (its client's Ctrl-C, `medic runs cancel`, the
//! API): a run given to serve, or the run a drill has going on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::Running;
use super::client::ClientRun;
use crate::store::Store;

/// The run a drill has going on now (its `before` runbook's, its own, its notification's),
/// set by the drill's observer as each starts and cleared as it ends.
pub(super) type DrillRun = Arc<Mutex<Option<String>>>;

/// What was asked of a run in serve.
pub(super) struct Asked<'a> {
    pub(super) run_id: &'a str,
    /// The responder's answer to "roll back?"; none: the runbook's.
    pub(super) rollback: Option<bool>,
    /// Stop now, even mid-rollback (a client's third Ctrl-C).
    pub(super) abort: bool,
}

/// Cancels (or aborts) the run `asked` names, if it goes on in this serve.
pub(super) fn cancel_run(
    store: &Store,
    client_runs: &mut Vec<ClientRun>,
    drills: &HashMap<String, Running>,
    asked: Asked<'_>,
) -> Result<serde_json::Value, String> {
    let Asked {
        run_id,
        rollback,
        abort,
    } = asked;
    client_runs.retain(|r| !r.task.is_finished());
    if let Some(r) = client_runs.iter().find(|r| r.run_id == run_id) {
        if let Some(yes) = rollback {
            *r.rollback.lock().unwrap() = Some(yes);
        }
        if abort {
            println!("medic serve: run {run_id}: aborted by its client");
            r.cancel
                .abort_because("its client's Ctrl-C three times, through medic serve");
        } else {
            println!("medic serve: run {run_id}: cancelled");
            r.cancel.cancel();
        }
        return Ok(json!({ "run_id": run_id }));
    }
    let Some((drill, running)) = drills
        .iter()
        .find(|(_, r)| r.run.lock().unwrap().as_deref() == Some(run_id))
    else {
        return Err(format!("no run {run_id} is running here"));
    };
    // A drill puts a fault in place to see it undone: what its run did is always rolled
    // back, and nothing but serve's own stop aborts it mid-way.
    if rollback.is_some() || abort {
        return Err(format!(
            "run {run_id} is drill {drill}'s, which always rolls back what it did: cancel it without --rollback or --no-rollback"
        ));
    }
    cancel_drill(store, drill, running)
}

/// Cancels drill `name`, run now for the client that sent `token` with it (`medic drill run`
/// through serve, at its Ctrl-C): not another run of the same drill started since.
pub(super) fn cancel_asked_drill(
    store: &Store,
    drills: &HashMap<String, Running>,
    name: &str,
    token: &str,
) -> Result<serde_json::Value, String> {
    match drills.get(name) {
        Some(running) if running.client.as_deref() == Some(token) => {
            cancel_drill(store, name, running)
        }
        _ => Err(format!("drill {name} is no longer running for this client")),
    }
}

/// Cancels a drill's run going on: it stops at its next safe point and rolls back.
fn cancel_drill(
    store: &Store,
    drill: &str,
    running: &Running,
) -> Result<serde_json::Value, String> {
    let run_id = running.run.lock().unwrap().clone();
    // Somebody must hear that a drill failed: as in a stop of serve, its notification goes on.
    if let Some(id) = &run_id
        && store
            .record(id)
            .is_ok_and(|r| r.is_some_and(|r| r.notification))
    {
        return Err(format!(
            "run {id} tells that drill {drill} failed, which is not cancelled: it ends on its own"
        ));
    }
    // Asked again (while it rolls back), it goes on as it was.
    if !running.cancel.is_cancelled() {
        match &run_id {
            Some(id) => println!(
                "medic serve: drill {drill}: run {id} cancelled; it rolls back what it did"
            ),
            None => println!("medic serve: drill {drill}: cancelled"),
        }
        running.cancel.cancel();
    }
    Ok(json!({ "run_id": run_id, "drill": drill }))
}
