//! Alerts in through `POST /alerts/alertmanager`: a trigger starts one run per group,
//! attaches re-sent alerts to it, cools down after it, brakes a storm and escalates, is
//! re-armed by a person; every decision is recorded. And the trigger files' checks and
//! `medic trigger test`.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::cli::{stderr, stdout};

/// An Alertmanager webhook body (version 4) with one alert per (status, instance).
fn payload(alerts: &[(&str, &str)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(status, instance)| {
            json!({
                "status": status,
                "labels": { "alertname": "WebDown", "instance": instance, "job": "web" },
                "annotations": { "summary": "web is down" },
                "startsAt": "2026-11-29T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": format!("fp-{instance}"),
            })
        })
        .collect();
    json!({ "version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "medic", "alerts": alerts })
}

/// The runbook a trigger starts (a gate that bakes about a second, then an action that
/// echoes its target), the escalation runbook, and the trigger file.
pub(super) fn trigger_site(extra: &str) -> Site {
    let site = Site::new();
    site.runbook(
        "fix",
        "\n[params.target]\ntype = \"string\"\n",
        "[[steps]]\nid = \"settle\"\nuses = \"check\"\ngate = { interval = \"100ms\", successes = 8, timeout = \"30s\" }\n\n\
         [[steps]]\nid = \"restart\"\nuses = \"act\"\nwith = { echo = \"{{ params.target }}\" }\n",
    );
    site.runbook(
        "page",
        "\n[params.reason]\ntype = \"string\"\ndefault = \"\"\n",
        "[[steps]]\nid = \"page\"\nuses = \"act\"\nwith = { echo = \"{{ params.reason }}\" }\n",
    );
    let triggers = site.work.path().join("triggers");
    std::fs::create_dir(&triggers).unwrap();
    std::fs::write(
        triggers.join("web.toml"),
        format!(
            "[[trigger]]\nname = \"web-down\"\nmatch = ['alertname = \"WebDown\"', 'job =~ \"web|api\"']\n\
             runbook = \"../runbooks/fix.toml\"\nparams = {{ target = \"{{{{ alert.labels.instance }}}}\" }}\n\
             group_by = [\"instance\"]\ncooldown = \"1h\"\nstorm = {{ runs = 3, window = \"1h\" }}\n\
             escalate = {{ runbook = \"../runbooks/page.toml\" }}\n{extra}"
        ),
    )
    .unwrap();
    site
}

fn decisions(answer: &Value) -> Vec<(String, Option<String>)> {
    answer["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|d| {
            (
                d["decision"].as_str().unwrap().to_owned(),
                d["run_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn wait_ended(api: &Api, token: &str, id: &str) -> Value {
    for _ in 0..300 {
        let (_, run) = api.get(&format!("/runs/{id}"), token);
        if run["run"]["status"] != "running" && !run["run"].is_null() {
            return run["run"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("run {id} did not end within 30 s");
}

#[test]
fn a_trigger_runs_once_per_group_cools_down_brakes_a_storm_and_is_rearmed() {
    let site = trigger_site("");
    let am = site.token("alertmanager", &["--role", "responder"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let triggers = site.work.path().join("triggers");
    let (serve, api) = site.serve_with(false, &["--triggers", triggers.to_str().unwrap()]);
    let send = |alerts: &[(&str, &str)]| {
        let (status, answer) = api.post("/alerts/alertmanager", &am, payload(alerts));
        assert_eq!(status, 200, "{answer}");
        decisions(&answer)
    };
    assert_eq!(
        api.post("/alerts/alertmanager", &viewer, payload(&[("firing", "a")]))
            .0,
        403
    );
    let (status, e) = api.post(
        "/alerts/alertmanager",
        &am,
        json!({ "version": "3", "alerts": [] }),
    );
    assert_eq!(status, 400, "{e}");

    // One run for group a; Alertmanager's re-send while it runs is attached to it.
    let d = send(&[("firing", "a")]);
    assert_eq!(d[0].0, "start", "{d:?}");
    let run_a = d[0].1.clone().unwrap();
    let d = send(&[("firing", "a")]);
    assert_eq!(d, [("attached".to_owned(), Some(run_a.clone()))]);
    let run = wait_ended(&api, &viewer, &run_a);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"]["kind"], "alert", "{run}");
    assert_eq!(run["trigger"]["trigger"], "web-down", "{run}");
    assert_eq!(run["trigger"]["fingerprint"], "fp-a", "{run}");
    assert_eq!(run["trigger"]["labels"]["instance"], "a", "{run}");
    assert_eq!(run["trigger"]["via"], "token:alertmanager", "{run}");
    assert!(
        run["params"].to_string().contains("\"target\",\"a\""),
        "the parameter comes from the alert: {run}"
    );
    // Still firing after the fix (a rate() over 5m decays slowly): the cooldown holds.
    let d = send(&[("firing", "a")]);
    assert_eq!(d, [("cooled_down".to_owned(), Some(run_a.clone()))]);

    // A storm: three runs within the window, the fourth trips the brake and escalates.
    let d = send(&[("firing", "b"), ("firing", "c"), ("firing", "d")]);
    let kinds: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["start", "start", "braked"], "{d:?}");
    let mut escalated = Value::Null;
    for _ in 0..300 {
        let (_, runs) = api.get("/runs?trigger=alert", &viewer);
        if let Some(r) = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"]["via"] == "escalation")
            && r["status"] != "running"
        {
            escalated = r.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        escalated["status"], "succeeded",
        "the escalation ran: {escalated}"
    );
    assert!(
        escalated["params"].to_string().contains("storm brake"),
        "{escalated}"
    );
    let d = send(&[("firing", "e")]);
    assert_eq!(d[0].0, "braked", "held until a person re-arms it: {d:?}");
    let (status, t) = api.get("/triggers", &viewer);
    assert_eq!(status, 200, "{t}");
    assert!(!t["triggers"][0]["braked"].is_null(), "{t}");
    let (status, r) = api.post("/triggers/web-down/rearm", &am, json!({}));
    assert_eq!(status, 200, "{r}");
    let d = send(&[("firing", "e")]);
    assert_eq!(d[0].0, "start", "{d:?}");
    let run_e = d[0].1.clone().unwrap();
    // Resolved while its run goes on: the run goes on (on_resolved = "continue").
    let d = send(&[("resolved", "e")]);
    assert_eq!(d, [("resolved".to_owned(), Some(run_e.clone()))]);
    assert_eq!(wait_ended(&api, &viewer, &run_e)["status"], "succeeded");
    // An alert no trigger matches.
    let (_, answer) = api.post(
        "/alerts/alertmanager",
        &am,
        json!({ "version": "4", "alerts": [{ "status": "firing", "labels": { "alertname": "DiskFull" } }] }),
    );
    assert_eq!(decisions(&answer)[0].0, "unmatched", "{answer}");

    // Every decision is on record, in order.
    let (status, log) = api.get("/alerts", &viewer);
    assert_eq!(status, 200, "{log}");
    let recorded: Vec<&str> = log["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        recorded,
        [
            "start",
            "attached",
            "cooled_down",
            "start",
            "start",
            "braked",
            "braked",
            "start",
            "resolved"
        ]
    );
    let o = site.medic().args(["trigger", "log"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("web-down") && stdout(&o).contains("cooled_down"),
        "{}",
        stdout(&o)
    );
    assert_eq!(serve.stop(), Some(0));
}

/// `medic trigger validate` places every mistake of a trigger file; `medic trigger test`
/// shows what an alert would start, with what, and what the policies decide, running nothing.
#[test]
fn trigger_files_are_checked_and_a_payload_is_tried_without_running_anything() {
    let site = trigger_site("");
    let triggers = site.work.path().join("triggers");
    let dir = triggers.to_str().unwrap();
    let o = site
        .medic()
        .args(["trigger", "validate", "--triggers", dir])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 trigger valid"), "{}", stdout(&o));

    let p = site.work.path().join("alert.json");
    std::fs::write(&p, payload(&[("firing", "a:80")]).to_string()).unwrap();
    let o = site
        .medic()
        .args(["trigger", "test", "--triggers", dir, "--payload"])
        .arg(&p)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains("WebDown (fp-a:80) -> trigger web-down")
            && out.contains("param        target = a:80")
            && out.contains("start a run for group instance=a:80"),
        "{out}"
    );
    let o = site.medic().args(["runs", "list"]).output().unwrap();
    assert!(
        stdout(&o).contains("no runs recorded"),
        "nothing ran: {}",
        stdout(&o)
    );

    std::fs::write(
        triggers.join("bad.toml"),
        "[[trigger]]\nname = \"bad name\"\nmatch = ['alertname = x y', 'job =~ \"(\"']\n\
         runbook = \"../runbooks/fix.toml\"\nparams = { target = \"{{ params.x }}\" }\n\
         cooldwn = \"1h\"\non_resolved = \"stop\"\nstorm = { runs = 0, window = \"1h\" }\n",
    )
    .unwrap();
    let o = site
        .medic()
        .args(["trigger", "validate", "--triggers", dir])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for (line, says) in [
        (2, "not a trigger name"),
        (3, "quote a value"),
        (3, "not a regular expression: unclosed group"),
        (5, "`params.x` is not known here"),
        (6, "did you mean `cooldown`?"),
        (7, "on_resolved"),
        (8, "runs"),
    ] {
        assert!(
            err.split("\nerror: ")
                .any(|block| block.contains(says) && block.contains(&format!("bad.toml:{line}:"))),
            "line {line}, {says}:\n{err}"
        );
    }
}
