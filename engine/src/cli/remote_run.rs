//! `medic run` through a remote API (`--server`): the runbook, named by its file's stem,
//! must be in the server's catalogue (`medic serve --runbooks DIR`). The run happens there;
//! this process shows its timeline as it happens and exits as a local run would. A Ctrl-C
//! cancels it (rolled back as the runbook says); a second one leaves it running there.

use serde_json::json;

use super::client::ApiClient;
use super::run::RunArgs;
use super::signals::Signals;
use super::{Exit, terminal};
use crate::store::RunStatus;

pub(super) fn exit_for(status: RunStatus) -> Exit {
    match status {
        RunStatus::Succeeded | RunStatus::DryRun => Exit::Success,
        RunStatus::Failed => Exit::RunFailed,
        RunStatus::RolledBack => Exit::RolledBack,
        RunStatus::RollbackFailed | RunStatus::Interrupted => Exit::RollbackFailed,
        RunStatus::Cancelled => Exit::Cancelled,
        RunStatus::Running => Exit::Engine,
    }
}

pub async fn run(client: &ApiClient, args: &RunArgs, signals: Signals) -> Exit {
    let Some(name) = args
        .target
        .runbook
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
    else {
        eprintln!("medic: name a runbook of the server's catalogue");
        return Exit::Invalid;
    };
    let opts = args.target.options();
    let params: serde_json::Map<String, serde_json::Value> = opts
        .params
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let body = json!({
        "runbook": name,
        "params": params,
        "environment": opts.environment,
        "reason": args.approve.clone().unwrap_or_default(),
        "dry_run": args.dry_run,
    });
    let started = match client.request(reqwest::Method::POST, "/runs", Some(body)) {
        Ok(v) => v,
        Err(e) => {
            // Refused or invalid: nothing ran.
            eprintln!("medic: {e}");
            return Exit::Invalid;
        }
    };
    let Some(id) = started["run_id"].as_str().map(str::to_owned) else {
        eprintln!("medic: the server answered without a run id");
        return Exit::Engine;
    };
    println!(
        "run {id} of {name} in {} on {}",
        started["environment"].as_str().unwrap_or("?"),
        client.server()
    );
    follow(client, &id, None, signals).await
}

/// `medic runs resume|rollback ID` through the API: the server picks the run up; this
/// process shows what happens from there and exits as a local pick-up would.
pub async fn pick_up(
    client: &ApiClient,
    args: &super::runs::PickUpArgs,
    mode: &str,
    signals: Signals,
) -> Exit {
    let body = json!({
        "reason": args.approve.clone().unwrap_or_default(),
        "accept_changed_plugins": args.accept_changed_plugins,
    });
    let answer = match client.request(
        reqwest::Method::POST,
        &format!("/runs/{}/{mode}", args.id),
        Some(body),
    ) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("medic: {e}");
            return Exit::Invalid;
        }
    };
    let Some(id) = answer["run_id"].as_str().map(str::to_owned) else {
        eprintln!("medic: the server answered without a run id");
        return Exit::Engine;
    };
    if let Some(notice) = answer["notice"].as_str() {
        eprintln!("medic: {}", terminal::clean(notice));
    }
    println!(
        "run {id}: {} on {}",
        answer["mode"].as_str().unwrap_or(mode),
        client.server()
    );
    // What the run did before is in `medic runs show`; from here on is what happens now.
    let from = answer["events_from"].as_u64().map(|n| n as usize);
    follow(client, &id, from, signals).await
}

/// Shows run `id`'s journal from entry `from` as it grows, until the run ends; a Ctrl-C
/// cancels it on the server, a second stops following. Exits as the run ended.
async fn follow(client: &ApiClient, id: &str, from: Option<usize>, mut signals: Signals) -> Exit {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    client.follow(id, from, tx);
    let mut cancelled = false;
    let mut start_ms = None;
    loop {
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(Ok(e)) => {
                    let start = *start_ms.get_or_insert(e.at_ms);
                    if let Some(line) = super::runs::journal_line(&e.event) {
                        let at = humantime::format_duration(std::time::Duration::from_millis(
                            e.at_ms.saturating_sub(start),
                        ));
                        println!("  +{at:>7}  {}", terminal::clean(&line));
                    }
                }
                Some(Err(e)) => {
                    eprintln!("medic: {e}");
                    break;
                }
                None => break,
            },
            _ = signals.next() => {
                if cancelled {
                    eprintln!("medic: leaving run {id} on the server; `medic runs show {id}` tells how it ends");
                    return Exit::Cancelled;
                }
                cancelled = true;
                eprintln!("medic: cancelling run {id} on the server (Ctrl-C again to stop following it)");
                if let Err(e) = client.request(
                    reqwest::Method::POST,
                    &format!("/runs/{id}/cancel"),
                    Some(json!({})),
                ) {
                    eprintln!("medic: {e}");
                }
            }
        }
    }
    match client.request(reqwest::Method::GET, &format!("/runs/{id}"), None) {
        Ok(v) => {
            let status = v["run"]["status"]
                .as_str()
                .and_then(RunStatus::parse)
                .unwrap_or(RunStatus::Running);
            println!("run {id}: {}", status.name());
            exit_for(status)
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Engine
        }
    }
}
