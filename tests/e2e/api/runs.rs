//! Runs through the API: the catalogue, starting, following (SSE), cancelling, and the CLI
//! as a client.

use std::time::Duration;

use super::*;
use crate::cli::{medic_command, stderr, stdout};
use crate::support::*;

/// Runs started through the API: from the catalogue of `--runbooks DIR`, by a responder in
/// its environments, a protected one only by name and with a reason, validation mistakes
/// answered with their place, and the run belonging to nobody's connection: it goes on,
/// is recorded as started by the token, and a responder can cancel it.
#[test]
pub(super) fn a_responder_starts_and_cancels_runs_from_the_catalogue() {
    let site = Site::new();
    site.runbook(
        "say",
        "\n[params.echo]\ntype = \"string\"\ndefault = \"hello\"\ndescription = \"What to say\"\n\n\
         [environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"say\"\nuses = \"act\"\nwith = { echo = \"{{ params.echo }}\" }\n\n\
         [[steps]]\nid = \"hold\"\nuses = \"act\"\nwhen = \"params.echo == 'wait'\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
    );
    let viewer = site.token("look", &["--role", "viewer"]);
    let responder = site.token("fix", &["--role", "responder"]);
    let prod = site.token("fix-prod", &["--role", "responder", "--env", "prod"]);
    let (serve, api) = site.serve(false);

    let (status, list) = api.get("/runbooks", &viewer);
    assert_eq!(status, 200, "{list}");
    let say = &list["runbooks"][0];
    assert_eq!(
        (say["name"].as_str(), say["title"].as_str()),
        (Some("say"), Some("scripted"))
    );
    assert_eq!(say["params"][0]["name"].as_str(), Some("echo"));
    let prod_env = say["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap();
    assert_eq!(prod_env["protected"].as_bool(), Some(true));
    assert_eq!(api.get("/runbooks/..%2Fdata", &viewer).0, 404);

    // Checked as `medic validate` / `medic plan` would, running nothing.
    let (status, checked) = api.post(
        "/runbooks/say/check",
        &viewer,
        serde_json::json!({ "environment": "staging", "params": { "echo": "hi" } }),
    );
    assert_eq!(
        (status, checked["valid"].as_bool()),
        (200, Some(true)),
        "{checked}"
    );
    assert!(
        checked["plan"].as_str().unwrap().contains("say"),
        "{checked}"
    );
    let (status, checked) = api.post(
        "/runbooks/say/check",
        &viewer,
        serde_json::json!({ "environment": "qa" }),
    );
    assert_eq!(
        (status, checked["valid"].as_bool()),
        (200, Some(false)),
        "{checked}"
    );
    assert!(
        checked["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("qa"),
        "{checked}"
    );

    let start = |token: &str, body: serde_json::Value| api.post("/runs", token, body);
    let (status, e) = start(
        &viewer,
        serde_json::json!({ "runbook": "say", "environment": "staging" }),
    );
    assert_eq!(status, 403, "{e}");
    let (status, e) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "prod", "reason": "INC-9" }),
    );
    assert_eq!(
        status, 403,
        "a protected environment must be granted by name: {e}"
    );
    let (status, e) = start(
        &prod,
        serde_json::json!({ "runbook": "say", "environment": "prod" }),
    );
    assert_eq!(status, 400, "a protected environment needs a reason: {e}");
    let (status, e) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "staging", "params": { "ecko": "x" } }),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (422, Some("invalid")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `echo`?"),
        "{e}"
    );

    // Started, then left alone: it runs to the end and is recorded as the token's.
    let (status, started) = start(
        &prod,
        serde_json::json!({ "runbook": "say", "environment": "prod", "reason": "INC-9: say it", "params": { "echo": "hi" } }),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    // The run the answer names is there at once: a client reading it never gets a 404.
    let (status, first) = api.get(&format!("/runs/{id}"), &viewer);
    assert_eq!(status, 200, "{first}");
    let mut run = serde_json::Value::Null;
    for _ in 0..300 {
        run = api.get(&format!("/runs/{id}"), &viewer).1;
        if run["run"]["status"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run["run"]["status"].as_str(), Some("succeeded"), "{run}");
    assert_eq!(
        run["run"]["trigger"]["caller"].as_str(),
        Some("token:fix-prod"),
        "{run}"
    );
    assert_eq!(
        run["run"]["approval"]["by"].as_str(),
        Some("token:fix-prod"),
        "{run}"
    );

    // One that waits is cancelled by a responder of its environment.
    let (status, started) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "staging", "params": { "echo": "wait" } }),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(pending_approvals(&site.data.join("approvals")).len(), 1);
    let (status, c) = api.post(
        &format!("/runs/{id}/cancel"),
        &responder,
        serde_json::json!({}),
    );
    assert_eq!(status, 200, "{c}");
    for _ in 0..300 {
        run = api.get(&format!("/runs/{id}"), &viewer).1;
        if run["run"]["status"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run["run"]["status"].as_str(), Some("cancelled"), "{run}");
    let (status, stats) = api.get("/stats", &viewer);
    assert_eq!(
        (status, stats["stats"]["runs"].as_u64()),
        (200, Some(2)),
        "{stats}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// Reads Server-Sent Events from `path` until `stop` says so (or the stream ends): their
/// (id, event type) in order.
pub(super) fn read_events(
    api: &Api,
    path: &str,
    token: &str,
    last_id: Option<usize>,
    stop: impl Fn(&str) -> bool,
) -> Vec<(usize, String)> {
    api.rt.block_on(async {
        let mut r = api
            .client
            .get(format!("{}{path}", api.base))
            .bearer_auth(token);
        if let Some(id) = last_id {
            r = r.header("Last-Event-ID", id.to_string());
        }
        let mut response = r.send().await.expect("events");
        assert_eq!(response.status().as_u16(), 200);
        let mut buffer = String::new();
        let mut seen = Vec::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("the stream");
            let Some(chunk) = chunk else { return seen };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                if let (Some(id), Some(kind)) = (field("id:"), field("event:")) {
                    seen.push((id.parse().unwrap(), kind.clone()));
                    if stop(&kind) {
                        return seen;
                    }
                }
            }
        }
    })
}

/// A client following a run's events over SSE that drops mid-run and reconnects with
/// `Last-Event-ID` misses nothing and sees nothing twice, and the stream ends with the run.
#[test]
pub(super) fn a_client_reconnecting_to_a_runs_events_misses_none() {
    let site = Site::new();
    site.runbook(
        "steps",
        "",
        "[[steps]]\nid = \"one\"\nuses = \"act\"\n\n[[steps]]\nid = \"hold\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n\n[[steps]]\nid = \"two\"\nuses = \"check\"\n",
    );
    let ops = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "steps" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let path = format!("/runs/{id}/events");

    let first = read_events(&api, &path, &ops, None, |k| k == "approval_requested");
    let last = first.last().unwrap().0;
    // Decided while nobody listens.
    let (status, d) = api.post(
        &format!("/approvals/{id}/approve"),
        &ops,
        serde_json::json!({ "reason": "go" }),
    );
    assert_eq!(status, 200, "{d}");
    let rest = read_events(&api, &path, &ops, Some(last), |_| false);
    let all: Vec<(usize, String)> = first.into_iter().chain(rest).collect();
    let ids: Vec<usize> = all.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (0..all.len()).collect::<Vec<_>>(), "{all:?}");
    let kinds: Vec<&str> = all.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert!(kinds.contains(&"approval_decided"), "{kinds:?}");
    // A run that has ended streams its whole journal, then ends.
    assert_eq!(read_events(&api, &path, &ops, None, |_| false), all);
    assert_eq!(serve.stop(), Some(0));
}

/// A run's events are streamed a page at a time (the next page read once the last is sent):
/// a run longer than a page, followed live and again once it has ended, streams every entry
/// once, in order, and then ends.
#[test]
pub(super) fn a_run_longer_than_a_page_of_events_streams_every_entry_once() {
    const TARGETS: usize = 1200;
    let site = Site::new();
    let targets = (0..TARGETS)
        .map(|i| format!("\"t{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    site.runbook(
        "wide",
        "",
        &format!(
            "[[steps]]\nid = \"probe\"\nuses = \"check\"\n\
             [steps.fleet]\ntargets = [{targets}]\nmax_concurrency = 50\n"
        ),
    );
    let ops = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "wide" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let path = format!("/runs/{id}/events");
    let live = read_events(&api, &path, &ops, None, |_| false);
    let after = read_events(&api, &path, &ops, None, |_| false);
    for events in [&live, &after] {
        let ids: Vec<usize> = events.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, (0..events.len()).collect::<Vec<_>>());
        assert_eq!(
            events
                .iter()
                .filter(|(_, k)| k == "target_finished")
                .count(),
            TARGETS
        );
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("run_finished"));
    }
    assert_eq!(live, after);
    assert_eq!(serve.stop(), Some(0));
}

/// With `--server` and `--token`, the CLI reads runs and decides approvals through a remote
/// API over HTTPS (trusting a private CA with `--ca-cert`): the same lines as locally, the
/// API's refusals as errors with exit 2, and plain HTTP refused for a remote address.
#[test]
pub(super) fn the_cli_reads_and_decides_through_a_remote_api() {
    let site = Site::new();
    site.runbook(
        "steps",
        "",
        "[[steps]]\nid = \"one\"\nuses = \"act\"\n\n[[steps]]\nid = \"hold\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
    );
    let ops = site.token("ops", &["--role", "admin"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let (serve, api) = site.serve(true);
    let server = api.base.trim_end_matches("/api/v1").to_owned();
    let ca = site.ca();
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "steps" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(pending_approvals(&site.data.join("approvals")).len(), 1);

    // Another machine: no data directory of its own, only the server and a token.
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |token: &str, args: &[&str]| {
        medic_command(elsewhere.path())
            .env("MEDIC_SERVER", &server)
            .env("MEDIC_TOKEN", token)
            .env("MEDIC_CA_CERT", &ca)
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&viewer, &["runs", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&id[..8]) && stdout(&o).contains("running"),
        "{}",
        stdout(&o)
    );
    let o = cli(&viewer, &["approve"]);
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("go on?"),
        "{}",
        stdout(&o)
    );
    let o = cli(&viewer, &["approve", &id, "--reason", "looks fine"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("is a viewer"), "{}", stderr(&o));
    let o = cli(&ops, &["approve", &id, "--reason", "INC-3: go"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("approved step hold of run") && stdout(&o).contains("token:ops"),
        "{}",
        stdout(&o)
    );
    // A run's timeline once it no longer shows it running (at most 30 s).
    let ended = |id: &str| {
        let mut shown = String::new();
        for _ in 0..300 {
            shown = stdout(&cli(&viewer, &["runs", "show", id]));
            if !shown.contains("running") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        shown
    };
    let shown = ended(&id);
    assert!(shown.contains("succeeded"), "{shown}");
    assert!(shown.contains("hold"), "{shown}");
    let o = cli(&viewer, &["runs", "logs", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // `medic runs cancel` through the server: a viewer may not; a responder's cancel stops
    // the run at its approval.
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "steps" }));
    assert_eq!(status, 202, "{started}");
    let again = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(pending_approvals(&site.data.join("approvals")).len(), 1);
    let o = cli(&viewer, &["runs", "cancel", &again]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("is a viewer"), "{}", stderr(&o));
    let o = cli(&ops, &["runs", "cancel", &again, "--no-rollback"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("run {again}: cancelled in its medic serve"))
            && stdout(&o).contains("leaving what it did in place"),
        "{}",
        stdout(&o)
    );
    let shown = ended(&again);
    assert!(shown.contains("cancelled"), "{shown}");

    // `medic run` through the server: the timeline as it happens, and a local run's exit code.
    site.runbook(
        "undo",
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"ok\"\nuses = \"check\"\n",
    );
    let o = cli(&ops, &["run", "undo"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(
        out.contains("change") && out.contains("rolled_back"),
        "{out}"
    );
    let o = cli(&ops, &["run", "undo", "-p", "nope=1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("declares no parameter `nope`"),
        "{}",
        stderr(&o)
    );
    let o = cli(&viewer, &["run", "undo"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // What cannot go through the server yet is refused, never done on this machine instead.
    let o = cli(&ops, &["runs", "prune", "--older-than", "30d"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not go through --server"),
        "{}",
        stderr(&o)
    );

    // A token would cross the network in clear: refused before anything is sent.
    let o = medic_command(elsewhere.path())
        .env("MEDIC_SERVER", "http://192.0.2.1:8443")
        .env("MEDIC_TOKEN", &viewer)
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("use https"), "{}", stderr(&o));
    assert_eq!(serve.stop(), Some(0));
}

/// An approval sent by a client that hangs up at once (a closed laptop, a dropped link) is
/// carried out and audited all the same: the server does not stop half-way with the
/// connection, which would leave the run waiting and nobody knowing the click was lost.
#[test]
fn an_approval_whose_client_hangs_up_at_once_is_carried_out_and_audited() {
    use std::io::Write;
    let site = Site::new();
    site.runbook(
        "hold",
        "",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
    );
    let ops = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "hold" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let waiting = || {
        api.get("/approvals", &ops).1["approvals"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    };
    for _ in 0..100 {
        if waiting() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(waiting(), "{}", api.get("/approvals", &ops).1);

    // The whole request, then the connection closed without reading the answer.
    let url = reqwest::Url::parse(&api.base).unwrap();
    let body = r#"{"reason":"INC-9: go"}"#;
    let mut tcp =
        std::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
    write!(
        tcp,
        "POST {}/approvals/{id}/approve HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ops}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        url.path(),
        url.authority(),
        body.len()
    )
    .unwrap();
    drop(tcp);

    let mut run = serde_json::Value::Null;
    for _ in 0..100 {
        run = api.get(&format!("/runs/{id}"), &ops).1;
        if run["run"]["status"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let (_, audit) = api.get("/audit?limit=1000", &ops);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["who"] == "token:ops"
                && e["action"] == format!("POST /api/v1/approvals/{id}/approve")
                && e["result"] == "ok"),
        "{audit}"
    );
    assert_eq!(serve.stop(), Some(0));
}
