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
    trigger_site_baking(extra, 8)
}

/// [`trigger_site`] with a gate of `checks` checks 100 ms apart before the fix acts.
pub(super) fn trigger_site_baking(extra: &str, checks: u32) -> Site {
    let site = Site::new();
    site.runbook(
        "fix",
        "\n[params.target]\ntype = \"string\"\n",
        &format!("[[steps]]\nid = \"settle\"\nuses = \"check\"\ngate = {{ interval = \"100ms\", successes = {checks}, timeout = \"30s\" }}\n\n\
         [[steps]]\nid = \"restart\"\nuses = \"act\"\nwith = {{ echo = \"{{{{ params.target }}}}\" }}\n"),
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
    // A big group (200 alerts, about 100 KiB, past the API's usual 64 KiB) is taken whole
    // (none matches: nothing is recorded for them).
    let big: Vec<Value> = (0..200)
        .map(|i| json!({ "status": "firing", "labels": { "alertname": "Other", "n": format!("{i:03}-{}", "x".repeat(300)) } }))
        .collect();
    let body = json!({ "version": "4", "alerts": big });
    assert!(body.to_string().len() > 64 << 10);
    let (status, answer) = api.post("/alerts/alertmanager", &am, body);
    assert_eq!(status, 200, "{answer}");
    let d = decisions(&answer);
    assert!(
        d.len() == 200 && d.iter().all(|(k, _)| k == "unmatched"),
        "{d:?}"
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

    // A storm: a burst of 50 distinct alerts. Three runs within the window (a's and two
    // more), then the brake trips once, escalates once, and holds the other 47.
    let burst: Vec<String> = (0..50).map(|i| format!("h{i:02}")).collect();
    let burst: Vec<(&str, &str)> = burst.iter().map(|h| ("firing", h.as_str())).collect();
    let d = send(&burst);
    let kinds: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&kinds[..3], ["start", "start", "braked"], "{d:?}");
    assert!(kinds[3..].iter().all(|k| *k == "braked"), "{d:?}");
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
        ["start", "attached", "cooled_down", "start", "start",]
            .into_iter()
            .chain(["braked"; 49])
            .chain(["start", "resolved"])
            .collect::<Vec<_>>()
    );
    let (_, stats) = api.get("/stats", &viewer);
    let t = &stats["triggers"]["web-down"];
    assert_eq!(
        [
            &t["alerts"],
            &t["runs_started"],
            &t["deduplicated"],
            &t["cooled_down"],
            &t["braked"],
            &t["escalated"]
        ],
        [56, 4, 1, 1, 49, 1].map(|n| json!(n)).each_ref(),
        "{stats}"
    );
    assert!(t["mean_time_to_remediate"].is_u64(), "{stats}");
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

    // The repository's example.
    let example = crate::cli::repo().join("triggers");
    let o = site
        .medic()
        .args(["trigger", "validate", "--triggers"])
        .arg(&example)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

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

/// Alertmanager's own alert list and silences, through its API v2.
fn am_get(am: &str, path: &str) -> Value {
    let rt = runtime();
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{am}/api/v2/{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn am_fire(am: &str, alertname: &str, instance: &str) {
    let rt = runtime();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{am}/api/v2/alerts"))
            .json(&json!([{
                "labels": { "alertname": alertname, "instance": instance, "job": "web" },
                "annotations": { "summary": "down" },
                "startsAt": chrono::Utc::now().to_rfc3339(),
                "endsAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            }]))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    });
}

/// The state of the silences (Alertmanager's) whose matchers include `instance=VALUE`.
fn silences_of(am: &str, instance: &str) -> Vec<String> {
    am_get(am, "silences")
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["matchers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "instance" && m["value"] == instance)
        })
        .map(|s| s["status"]["state"].as_str().unwrap().to_owned())
        .collect()
}

/// With a real Alertmanager posting to medic: the alert starts the runbook once; the alert
/// is silenced while the run is under way and the silence is expired when it ends; the
/// re-sends after it are cooled down; a remediation that cannot fix the fault escalates and
/// its silence is gone too.
#[test]
fn alertmanager_posts_medic_fixes_silences_meanwhile_and_escalates_what_it_cannot_fix() {
    let am_addr = format!("127.0.0.1:{}", crate::lab::free_port());
    let site = trigger_site_baking(
        &format!(
            "silence = {{ alertmanager = \"http://{am_addr}\" }}\n\n\
             [[trigger]]\nname = \"web-broken\"\nmatch = ['alertname = \"WebBroken\"']\n\
             runbook = \"../runbooks/broken.toml\"\ncooldown = \"1h\"\n\
             silence = {{ alertmanager = \"http://{am_addr}\" }}\n\
             escalate = {{ runbook = \"../runbooks/page.toml\" }}\n"
        ),
        30,
    );
    site.runbook(
        "broken",
        "",
        "[[steps]]\nid = \"restart\"\nuses = \"act\"\nwith = { mode = \"permanent\" }\n",
    );
    let token = site.token("alertmanager", &["--role", "responder"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let triggers = site.work.path().join("triggers");
    let (serve, api) = site.serve_with(false, &["--triggers", triggers.to_str().unwrap()]);
    let _am = alertmanager_posting_to(&am_addr, &api, &token);
    let alert_runs = || -> Vec<Value> {
        let (_, runs) = api.get("/runs?trigger=alert", &viewer);
        runs["runs"].as_array().unwrap().clone()
    };

    am_fire(&am_addr, "WebDown", "a");
    let mut run = Value::Null;
    for _ in 0..150 {
        if let Some(r) = alert_runs()
            .into_iter()
            .find(|r| r["trigger"]["fingerprint"].is_string())
        {
            run = r;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = run["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run started"))
        .to_owned();
    // Silenced while the run bakes (about 3 s).
    let mut silenced_during_run = false;
    for _ in 0..30 {
        let states = silences_of(&am_addr, "a");
        let running = api.get(&format!("/runs/{id}"), &viewer).1["run"]["status"] == "running";
        if running && states.iter().any(|s| s == "active") {
            silenced_during_run = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(silenced_during_run, "{:?}", am_get(&am_addr, "silences"));
    assert_eq!(wait_ended(&api, &viewer, &id)["status"], "succeeded");
    let mut expired = false;
    for _ in 0..50 {
        let states = silences_of(&am_addr, "a");
        if !states.is_empty() && states.iter().all(|s| s == "expired") {
            expired = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(expired, "{:?}", am_get(&am_addr, "silences"));
    // Alertmanager keeps sending the still-firing alert: cooled down, never a second run.
    let mut cooled = false;
    for _ in 0..100 {
        let (_, log) = api.get("/alerts", &viewer);
        if log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["decision"] == "cooled_down")
        {
            cooled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cooled, "{}", api.get("/alerts", &viewer).1);
    let starts_for_a = alert_runs()
        .iter()
        .filter(|r| r["trigger"]["labels"]["instance"] == "a")
        .count();
    assert_eq!(starts_for_a, 1);

    // A fix that fails: escalated, and the silence does not outlive the run.
    am_fire(&am_addr, "WebBroken", "b");
    let mut page = Value::Null;
    for _ in 0..150 {
        if let Some(r) = alert_runs()
            .into_iter()
            .find(|r| r["trigger"]["via"] == "escalation" && r["status"] != "running")
        {
            page = r;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(page["status"], "succeeded", "escalated: {page}");
    assert!(
        page["params"].to_string().contains("ended failed"),
        "{page}"
    );
    let broken = alert_runs()
        .into_iter()
        .find(|r| r["trigger"]["alert"] == "WebBroken" && r["trigger"]["via"] != "escalation")
        .unwrap();
    assert_eq!(broken["status"], "failed", "{broken}");
    let states = silences_of(&am_addr, "b");
    assert!(
        !states.is_empty() && states.iter().all(|s| s == "expired"),
        "{states:?}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// In a protected environment a triggered run waits for a person: the approvers are told,
/// nothing acts before the approval, and a run whose alert resolves before anyone decides is
/// dropped. A delivering token must be granted the environment by name.
#[test]
fn in_a_protected_environment_a_triggered_run_waits_for_a_person() {
    let site = trigger_site(
        "\n[[trigger]]\nname = \"prod-web\"\nmatch = ['alertname = \"ProdDown\"']\n\
         runbook = \"../runbooks/prod-fix.toml\"\nenvironment = \"prod\"\nprotected = \"approve\"\n\
         approval_timeout = \"60s\"\nescalate = { runbook = \"../runbooks/page.toml\" }\n",
    );
    site.runbook(
        "prod-fix",
        "\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"restart\"\nuses = \"act\"\n",
    );
    let am = site.token("alertmanager", &["--role", "responder", "--env", "prod"]);
    let ungranted = site.token("other-am", &["--role", "responder"]);
    let lead = site.token("lead", &["--role", "approver", "--env", "prod"]);
    let triggers = site.work.path().join("triggers");
    let (serve, api) = site.serve_with(false, &["--triggers", triggers.to_str().unwrap()]);
    let prod_alert = |status: &str, instance: &str| json!({ "version": "4", "alerts": [{ "status": status, "labels": { "alertname": "ProdDown", "instance": instance } }] });

    let (status, answer) = api.post("/alerts/alertmanager", &am, prod_alert("firing", "x"));
    assert_eq!(status, 200, "{answer}");
    let d = decisions(&answer);
    assert_eq!(d[0].0, "start", "{answer}");
    let id = d[0].1.clone().unwrap();
    let waiting = pending_approvals(&site.data.join("approvals"));
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].run_id, id);
    // The approvers are told (the escalation runbook, as an approval request).
    let mut told = Value::Null;
    for _ in 0..100 {
        let (_, runs) = api.get("/runs?trigger=alert", &lead);
        if let Some(r) = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"]["via"] == "approval-request" && r["status"] != "running")
        {
            told = r.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        told["params"].to_string().contains("medic approve"),
        "{told}"
    );
    let (_, journal) = api.get(&format!("/runs/{id}/journal"), &lead);
    assert!(
        !journal.to_string().contains("step_started"),
        "nothing acts before the approval: {journal}"
    );
    let (status, a) = api.post(
        &format!("/approvals/{id}/approve"),
        &lead,
        json!({ "reason": "INC-1: go" }),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(wait_ended(&api, &lead, &id)["status"], "succeeded");

    // Resolved before anyone decided: dropped, nothing done.
    let (_, answer) = api.post("/alerts/alertmanager", &am, prod_alert("firing", "y"));
    let id = decisions(&answer)[0].1.clone().unwrap();
    let (_, answer) = api.post("/alerts/alertmanager", &am, prod_alert("resolved", "y"));
    assert!(
        answer["decisions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("had not begun and is dropped"),
        "{answer}"
    );
    let run = wait_ended(&api, &lead, &id);
    assert_eq!(run["status"], "cancelled", "{run}");
    let (_, journal) = api.get(&format!("/runs/{id}/journal"), &lead);
    assert!(!journal.to_string().contains("step_started"), "{journal}");

    // A token not granted the protected environment starts nothing there.
    let (_, answer) = api.post(
        "/alerts/alertmanager",
        &ungranted,
        prod_alert("firing", "z"),
    );
    let d = &answer["decisions"][0];
    assert_eq!(d["decision"], "refused", "{answer}");
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("may not act in environment `prod`"),
        "{answer}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// A generic JSON webhook, signed with HMAC-SHA256 as GitHub signs them: a signed body whose
/// fields match starts its trigger's runbook with values from the body; an unsigned or
/// mis-signed one, or one for no trigger, is refused and audited.
#[test]
fn a_signed_webhook_starts_its_trigger_and_anything_unsigned_is_refused() {
    let site = trigger_site(
        "\n[[trigger]]\nname = \"deploy-failed\"\nsource = \"webhook\"\nsecret_env = \"HOOK_KEY\"\n\
         match = ['action = \"failed\"', 'deploy.service =~ \"web|api\"']\n\
         runbook = \"../runbooks/fix.toml\"\nparams = { target = \"{{ alert.labels['deploy.service'] }}\" }\n\
         group_by = [\"deploy.service\"]\ncooldown = \"1h\"\n",
    );
    let admin = site.token("ops", &["--role", "admin"]);
    let triggers = site.work.path().join("triggers");
    let (mut serve, api) = site.serve_env(
        false,
        &["--triggers", triggers.to_str().unwrap()],
        &[("HOOK_KEY", "k3y")],
    );
    let post = |name: &str, body: &str, signature: Option<String>| -> (u16, Value) {
        api.rt.block_on(async {
            let mut r = api
                .client
                .post(format!("{}/hooks/{name}", api.base))
                .header("content-type", "application/json")
                .body(body.to_owned());
            if let Some(s) = signature {
                r = r.header("X-Hub-Signature-256", s);
            }
            let response = r.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    };
    let sign = |key: &str, body: &str| {
        format!(
            "sha256={}",
            hex::encode(medic::trigger::webhook::hmac_sha256(
                key.as_bytes(),
                body.as_bytes()
            ))
        )
    };
    let body = r#"{"action":"failed","deploy":{"service":"web","id":7}}"#;
    assert_eq!(post("deploy-failed", body, None).0, 401);
    assert_eq!(
        post("deploy-failed", body, Some(sign("wrong", body))).0,
        401
    );
    assert_eq!(post("nope", body, Some(sign("k3y", body))).0, 404);
    let (status, answer) = post("deploy-failed", body, Some(sign("k3y", body)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decisions"][0]["decision"], "start", "{answer}");
    let id = answer["decisions"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = wait_ended(&api, &admin, &id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"]["via"], "webhook:deploy-failed", "{run}");
    assert!(
        run["params"].to_string().contains("\"target\",\"web\""),
        "{run}"
    );
    let other = r#"{"action":"succeeded","deploy":{"service":"web"}}"#;
    let (status, answer) = post("deploy-failed", other, Some(sign("k3y", other)));
    assert_eq!(
        (status, answer["decisions"][0]["decision"].as_str()),
        (200, Some("unmatched")),
        "{answer}"
    );
    // Alertmanager's deliveries do not reach a webhook trigger.
    let (_, answer) = api.post(
        "/alerts/alertmanager",
        &admin,
        json!({ "version": "4", "alerts": [{ "status": "firing", "labels": { "action": "failed", "deploy.service": "web" } }] }),
    );
    assert_eq!(answer["decisions"][0]["decision"], "unmatched", "{answer}");
    let (_, audit) = api.get("/audit?limit=1000", &admin);
    let denied = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["who"] == "webhook:deploy-failed"
                && e["result"]
                    .as_str()
                    .unwrap()
                    .contains("signature does not match")
        })
        .count();
    assert_eq!(denied, 2, "{audit}");
    // SIGHUP reloads the triggers; a set with a mistake is refused and the old one stays.
    let file = triggers.join("web.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("deploy-failed", "deploy-broke")).unwrap();
    serve.signal("-HUP");
    serve.wait_for("reloaded 2 triggers");
    assert_eq!(post("deploy-broke", body, Some(sign("k3y", body))).0, 200);
    std::fs::write(
        &file,
        text.replace("cooldown = \"1h\"", "cooldown = \"soon\""),
    )
    .unwrap();
    serve.signal("-HUP");
    serve.wait_for("trigger reload refused");
    let names: Vec<String> = api.get("/triggers", &admin).1["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["web-down", "deploy-broke"]);
    // Guessing is slowed down, for webhooks alone: bearer clients at the same address go on.
    for _ in 0..2 {
        assert_eq!(post("deploy-broke", body, None).0, 401);
    }
    assert_eq!(post("deploy-broke", body, Some(sign("k3y", body))).0, 429);
    assert_eq!(api.get("/whoami", &admin).0, 200);
    assert_eq!(serve.stop(), Some(0));
}

/// `on_resolved = "cancel"`: the alert resolving cancels the run under way, which ends
/// cancelled (its rollback, had it acted, as the runbook says).
#[test]
fn a_resolved_alert_cancels_its_run_when_the_trigger_says_so() {
    let site = trigger_site_baking("on_resolved = \"cancel\"\n", 50);
    let am = site.token("alertmanager", &["--role", "responder"]);
    let triggers = site.work.path().join("triggers");
    let (serve, api) = site.serve_with(false, &["--triggers", triggers.to_str().unwrap()]);
    let (_, answer) = api.post("/alerts/alertmanager", &am, payload(&[("firing", "a")]));
    let id = decisions(&answer)[0].1.clone().unwrap();
    // Under way (its gate bakes for about 5 s) when the alert resolves.
    for _ in 0..50 {
        let (_, j) = api.get(&format!("/runs/{id}/journal"), &am);
        if j.to_string().contains("step_started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, answer) = api.post("/alerts/alertmanager", &am, payload(&[("resolved", "a")]));
    let d = &answer["decisions"][0];
    assert!(
        d["detail"].as_str().unwrap().contains("is cancelled"),
        "{answer}"
    );
    let run = wait_ended(&api, &am, &id);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(serve.stop(), Some(0));
}

/// Alertmanager in HA sends each alert to every node. Two `medic serve` nodes sharing a
/// PostgreSQL store decide a trigger's alerts one at a time, so an alert delivered to both
/// at the same moment starts one run, and the other node attaches to it. One token, made on
/// one node, is known to both (tokens live in the shared store).
#[test]
fn two_nodes_on_a_shared_store_start_one_run_for_an_alert_sent_to_both() {
    let url = crate::pglab::database();
    let env = [("MEDIC_STORE", url.as_str())];
    let mut token = None;
    let nodes: Vec<(Site, String, Serve, Api)> = (0..2)
        .map(|_| {
            let site = trigger_site("");
            let am = token
                .get_or_insert_with(|| {
                    site.token_env("alertmanager", &["--role", "responder"], &env)
                })
                .clone();
            let triggers = site.work.path().join("triggers");
            let (serve, api) =
                site.serve_env(false, &["--triggers", triggers.to_str().unwrap()], &env);
            (site, am, serve, api)
        })
        .collect();
    let mut all = Vec::new();
    for _ in 0..3 {
        let answers: Vec<Vec<(String, Option<String>)>> = std::thread::scope(|s| {
            let posts: Vec<_> = nodes
                .iter()
                .map(|(_, am, _, api)| {
                    s.spawn(move || {
                        let (status, answer) =
                            api.post("/alerts/alertmanager", am, payload(&[("firing", "a")]));
                        assert_eq!(status, 200, "{answer}");
                        decisions(&answer)
                    })
                })
                .collect();
            posts.into_iter().map(|p| p.join().unwrap()).collect()
        });
        all.extend(answers.into_iter().flatten());
    }
    let starts = all.iter().filter(|(d, _)| d == "start").count();
    assert_eq!(starts, 1, "{all:?}");
    let run = all[0].1.clone();
    assert!(
        all.iter().all(|(_, id)| *id == run),
        "every decision names the one run: {all:?}"
    );
    let store = medic::store::Store::connect(&url, nodes[0].0.work.path(), "test").unwrap();
    let runs = store
        .list(&medic::store::ListFilter::default(), 10)
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
}
