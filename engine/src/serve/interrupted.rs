//! Runs whose process died, as `medic serve` finds them (at start, and on a shared store as
//! often as processes renew their lease): each is counted
//! (`medic_runs_total{outcome="interrupted"}`) and said, and its runbook's `on_interrupted`
//! applies: `notify` leaves it to a person, `rollback` rolls it back here and now, as
//! `medic runs rollback` would.

use std::sync::{Arc, Mutex};

use super::client::{ClientRun, Planned, pick_up_planned, plan_or_report};
use super::metrics::Metrics;
use crate::host::PluginHost;
use crate::runbook::model::OnInterrupted;
use crate::store::Store;
use crate::store::remote::Reply;

/// Who rolls a run back when its runbook declares it.
const CALLER: &str = "medic serve (on_interrupted = \"rollback\")";

pub(super) async fn found(
    host: &Arc<PluginHost>,
    store: &Store,
    metrics: &Arc<Mutex<Metrics>>,
    ids: Vec<String>,
    runs: &mut Vec<ClientRun>,
) {
    for id in ids {
        *metrics
            .lock()
            .unwrap()
            .runs
            .entry("interrupted".to_owned())
            .or_default() += 1;
        let person =
            format!("a person must act: `medic runs rollback {id}` or `medic runs resume {id}`");
        let record = match store.record(&id) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                println!("medic serve: run {id} is interrupted; reading it: {e}; {person}");
                continue;
            }
        };
        // Read and planned once: what the runbook declares, and the rollback itself.
        let planned = match crate::pickup::prepare(store, &record, true) {
            Ok(pick) => plan_or_report(host, &pick.path, &pick.text, &pick.options)
                .await
                .map(|plan| (pick, plan)),
            Err(refused) => Err(refused.to_string()),
        };
        let (pick, plan) = match planned {
            Ok((pick, plan)) if plan.on_interrupted == OnInterrupted::Rollback => (pick, plan),
            Ok(_) => {
                println!(
                    "medic serve: run {id} ({}) is interrupted: its process died; {person}",
                    record.runbook
                );
                continue;
            }
            Err(why) => {
                println!(
                    "medic serve: run {id} ({}) is interrupted, and what its runbook declares cannot be read: {why}; {person}",
                    record.runbook
                );
                continue;
            }
        };
        println!(
            "medic serve: run {id} ({}) is interrupted: rolling it back, as its runbook declares (on_interrupted = \"rollback\")",
            record.runbook
        );
        let reason = format!(
            "on_interrupted = \"rollback\" in runbook {}: the process running it died",
            record.runbook
        );
        let planned = Planned {
            record,
            pick,
            plan,
            reason: &reason,
            caller: CALLER.to_owned(),
            // Unattended: nobody is there to accept other code undoing the change.
            accept_changed_plugins: false,
        };
        if let Reply::One(Err(why)) = pick_up_planned(host, store, metrics, planned, runs) {
            println!("medic serve: run {id}: cannot roll it back: {why}; {person}");
        }
    }
}
