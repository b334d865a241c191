//! Runs picked up again through the API (`POST /runs/ID/resume|rollback`, and the CLI's
//! `runs resume|rollback --server`), and a run that `medic serve` was stopped in the middle
//! of: each ends with the verdict the same run would have had in a shell.

use std::time::Duration;

use super::*;
use crate::cli::{medic_command, stderr, stdout};

/// The run's record and journal, read while serve runs (through the API).
fn journal_types(api: &Api, token: &str, id: &str) -> Vec<serde_json::Value> {
    let (status, j) = api.get(&format!("/runs/{id}/journal"), token);
    assert_eq!(status, 200, "{j}");
    j["journal"].as_array().unwrap().clone()
}

/// Polls run `id` until it no longer runs (bounded: 30 s); its record.
fn ended(api: &Api, token: &str, id: &str) -> serde_json::Value {
    for _ in 0..300 {
        let (_, run) = api.get(&format!("/runs/{id}"), token);
        if run["run"]["status"] != "running" {
            return run["run"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("run {id} still running after 30 s");
}

/// The journal in short: each entry's type, and its step when it has one.
fn outline(journal: &[serde_json::Value]) -> Vec<String> {
    journal
        .iter()
        .map(|e| {
            let step = e["step"].as_str().or(e["report"]["id"].as_str());
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or("?"),
                step.unwrap_or("")
            )
        })
        .collect()
}

fn started_steps(journal: &[serde_json::Value], step: &str) -> usize {
    journal
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == step)
        .count()
}

/// A failed run resumed by a responder goes on from the failed step (what succeeded is not
/// done twice), attributed to the token; another rolled back through the CLI client; the
/// state, role, environment and runbook checks refuse with the cause; and two rollbacks of
/// one run at once start it once.
#[test]
fn failed_runs_are_resumed_or_rolled_back_through_the_api_once() {
    let site = Site::new();
    let head = "\n[environments.staging]\n\n[environments.prod]\nprotected = true\n";
    // `flaky` fails its first call only: a resume succeeds.
    let body = "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
                [[steps]]\nid = \"flaky\"\nuses = \"act\"\nrollback = \"revert\"\n\
                with = { mode = \"permanent\", fail_times = 1 }\n\n\
                [[steps]]\nid = \"after\"\nuses = \"act\"\n\n\
                [[verify]]\nid = \"fine\"\nuses = \"check\"\n";
    site.runbook("deploy", head, body);
    let viewer = site.token("look", &["--role", "viewer"]);
    let responder = site.token("fix", &["--role", "responder"]);
    let prod = site.token("fix-prod", &["--role", "responder", "--env", "prod"]);
    let (serve, api) = site.serve(true);
    let start = |token: &str, env: &str, reason: &str| {
        let (status, s) = api.post(
            "/runs",
            token,
            serde_json::json!({ "runbook": "deploy", "environment": env, "reason": reason }),
        );
        assert_eq!(status, 202, "{s}");
        let id = s["run_id"].as_str().unwrap().to_owned();
        assert_eq!(ended(&api, token, &id)["status"], "failed");
        id
    };

    // Resume: refused to a viewer, then done by a responder.
    let id = start(&responder, "staging", "");
    let resume = format!("/runs/{id}/resume");
    assert_eq!(api.post(&resume, &viewer, serde_json::json!({})).0, 403);
    let (status, picked) = api.post(&resume, &responder, serde_json::json!({}));
    assert_eq!(status, 202, "{picked}");
    assert_eq!(picked["mode"], "resume", "{picked}");
    let from = picked["events_from"].as_u64().unwrap() as usize;
    // Followed from where the pick-up starts: its resumption first, its end last.
    let events = super::runs::read_events(
        &api,
        &format!("/runs/{id}/events"),
        &viewer,
        Some(from - 1),
        |_| false,
    );
    assert_eq!(
        events.first().map(|e| e.1.as_str()),
        Some("run_resumed"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(|e| e.1.as_str()),
        Some("run_finished"),
        "{events:?}"
    );
    let run = ended(&api, &viewer, &id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let journal = journal_types(&api, &viewer, &id);
    assert_eq!(
        started_steps(&journal, "change"),
        1,
        "done once: {:?}",
        outline(&journal)
    );
    assert_eq!(
        started_steps(&journal, "flaky"),
        2,
        "{:?}",
        outline(&journal)
    );
    let resumed = journal.iter().find(|e| e["type"] == "run_resumed").unwrap();
    assert_eq!(resumed["by"], "token:fix", "{resumed}");
    assert_eq!(resumed["mode"], "resume", "{resumed}");
    let (status, e) = api.post(&resume, &responder, serde_json::json!({}));
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended succeeded"),
        "{e}"
    );

    // Rollback of a protected run: the environment must be granted by name; the run's own
    // approval stands. Two requests at once start one rollback.
    let id = start(&prod, "prod", "INC-7: deploy");
    let rollback = format!("/runs/{id}/rollback");
    assert_eq!(
        api.post(&rollback, &responder, serde_json::json!({})).0,
        403
    );
    let answers: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2)
            .map(|_| s.spawn(|| api.post(&rollback, &prod, serde_json::json!({})).0))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut sorted = answers.clone();
    sorted.sort();
    assert_eq!(sorted, [202, 409], "one rollback starts: {answers:?}");
    let run = ended(&api, &viewer, &id);
    assert_eq!(run["status"], "rolled_back", "{run}");
    let journal = journal_types(&api, &viewer, &id);
    assert_eq!(
        started_steps(&journal, "change.rollback"),
        1,
        "{:?}",
        outline(&journal)
    );
    assert_eq!(
        started_steps(&journal, "flaky.rollback"),
        1,
        "{:?}",
        outline(&journal)
    );
    assert_eq!(
        started_steps(&journal, "fine"),
        1,
        "verified: {:?}",
        outline(&journal)
    );

    // The CLI as the client, from another machine; and a runbook changed since the run.
    let id = start(&responder, "staging", "");
    let elsewhere = tempfile::tempdir().unwrap();
    let server = api.base.trim_end_matches("/api/v1").to_owned();
    let cli = |args: &[&str]| {
        medic_command(elsewhere.path())
            .env("MEDIC_SERVER", &server)
            .env("MEDIC_TOKEN", &responder)
            .env("MEDIC_CA_CERT", site.ca())
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("picked up to rollback by token:fix")
            && out.contains("change.rollback")
            && out.contains("finished: rolled_back"),
        "{out}"
    );
    assert!(
        !out.contains("started (pid") && !out.contains("finished: failed"),
        "only what this pick-up does is shown: {out}"
    );
    let id = start(&responder, "staging", "");
    let path = site.runbooks.join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("id = \"after\"", "id = \"later\"")).unwrap();
    let o = cli(&["runs", "resume", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("changed since run"), "{}", stderr(&o));
    assert_eq!(ended(&api, &viewer, &id)["status"], "failed");
    assert_eq!(serve.stop(), Some(0));
}

/// `medic serve` stopped (SIGTERM) while a run it started for the API bakes behind a gate:
/// the run is cancelled, rolled back and verified through its gated verify before serve
/// exits, and recorded as cancelled, not left running or interrupted.
#[test]
fn stopping_serve_mid_gate_rolls_an_api_run_back_and_verifies_it() {
    let site = Site::new();
    site.runbook(
        "bake",
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"100ms\", successes = 1000, timeout = \"60s\" }\n\n\
         [[steps]]\nid = \"later\"\nuses = \"act\"\n\n\
         [[verify]]\nid = \"fine\"\nuses = \"check\"\ngate = { interval = \"150ms\", successes = 4, timeout = \"20s\" }\n",
    );
    let ops = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let (status, s) = api.post("/runs", &ops, serde_json::json!({ "runbook": "bake" }));
    assert_eq!(status, 202, "{s}");
    let id = s["run_id"].as_str().unwrap().to_owned();
    let mut baking = false;
    for _ in 0..300 {
        if started_steps(&journal_types(&api, &ops, &id), "bake") == 1 {
            baking = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(baking, "the run never reached its gate");
    assert_eq!(serve.stop(), Some(0));

    let o = site.medic().args(["runs", "export", &id]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let export: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        export["record"]["status"], "cancelled",
        "{}",
        export["record"]
    );
    let journal = export["journal"].as_array().unwrap();
    let finished = |step: &str| {
        journal.iter().any(|e| {
            e["type"] == "step_finished"
                && e["report"]["id"] == step
                && e["report"]["status"]["status"] == "succeeded"
        })
    };
    assert!(
        finished("change.rollback"),
        "undone: {:?}",
        outline(journal)
    );
    assert!(
        finished("fine"),
        "the gated verify ran to its verdict: {:?}",
        outline(journal)
    );
    assert_eq!(started_steps(journal, "later"), 0, "{:?}", outline(journal));
}

/// A plugin rebuilt after a run failed: a rollback through the API is refused (409) naming
/// it, unless the request accepts it; then the run is undone with the plugin there now, and
/// its journal records which.
#[test]
fn a_rollback_through_the_api_with_a_changed_plugin_is_refused_unless_accepted() {
    let site = Site::new();
    crate::changed_plugins::runbook(&site.runbooks, crate::changed_plugins::FAILING);
    let responder = site.token("fix", &["--role", "responder"]);
    let (serve, api) = site.serve(false);
    let (status, s) = api.post(
        "/runs",
        &responder,
        serde_json::json!({ "runbook": "changing" }),
    );
    assert_eq!(status, 202, "{s}");
    let id = s["run_id"].as_str().unwrap().to_owned();
    assert_eq!(ended(&api, &responder, &id)["status"], "failed");
    crate::changed_plugins::rebuild(&site.runbooks.join("act.wasm"));

    let rollback = format!("/runs/{id}/rollback");
    let (status, e) = api.post(&rollback, &responder, serde_json::json!({}));
    assert_eq!(status, 409, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the plugin `act` (") && message.contains("accept-changed-plugins"),
        "{e}"
    );
    assert_eq!(ended(&api, &responder, &id)["status"], "failed");

    let (status, picked) = api.post(
        &rollback,
        &responder,
        serde_json::json!({ "accept_changed_plugins": true }),
    );
    assert_eq!(status, 202, "{picked}");
    assert_eq!(ended(&api, &responder, &id)["status"], "rolled_back");
    let journal = journal_types(&api, &responder, &id);
    assert_eq!(
        started_steps(&journal, "change.rollback"),
        1,
        "{:?}",
        outline(&journal)
    );
    let resumed = journal.iter().find(|e| e["type"] == "run_resumed").unwrap();
    assert_eq!(resumed["changed_plugins"][0]["alias"], "act", "{resumed}");
    assert_eq!(serve.stop(), Some(0));
}
