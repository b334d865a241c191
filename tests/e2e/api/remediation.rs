//! The whole loop with real servers: a demo service under supervisord breaks, Prometheus
//! sees it and fires an alert, Alertmanager posts it to `medic serve`, the trigger runs the
//! repository's restart runbook, and the alert resolves. Timings are printed, never asserted.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

fn get_json(url: &str) -> Value {
    runtime().block_on(async {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    })
}

fn deploy(service: &str, version: &str) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{service}/deploy"))
            .body(version.to_owned())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().as_u16() == 500,
            "{}",
            r.status()
        );
    });
}

/// Polls `f` every 100 ms for at most `secs` seconds.
fn within<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_broken_service_is_restarted_by_its_alert_and_the_alert_resolves() {
    let service = format!("127.0.0.1:{}", crate::lab::free_port());
    let sup = crate::lab::supervisord_running(
        "checkout",
        &format!(
            "{} demo-service --listen {service} --version v1 --bad v2",
            env!("CARGO_BIN_EXE_medic")
        ),
    );
    let am_addr = format!("127.0.0.1:{}", crate::lab::free_port());
    let site = Site::new();
    let triggers = site.work.path().join("triggers");
    std::fs::create_dir(&triggers).unwrap();
    let runbook = crate::cli::repo()
        .join("runbooks/restart-unhealthy-service.toml")
        .display()
        .to_string();
    std::fs::write(
        triggers.join("checkout.toml"),
        format!(
            "[[trigger]]\nname = \"checkout-bad-version\"\nmatch = ['alertname = \"CheckoutBadVersion\"', 'job = \"demo\"']\n\
             runbook = \"{runbook}\"\n\
             params = {{ service = \"{{{{ alert.labels.instance }}}}\", supervisor = \"{}\", program = \"checkout\" }}\n\
             group_by = [\"instance\"]\ncooldown = \"10m\"\nsilence = {{ alertmanager = \"http://{am_addr}\" }}\n",
            sup.addr
        ),
    )
    .unwrap();
    let token = site.token("alertmanager", &["--role", "responder"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let (mut serve, api) = site.serve_env(
        false,
        &[
            "--triggers",
            triggers.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
        ],
        &[("SUPERVISOR_PASSWORD", "s3cret")],
    );
    let metrics_line = serve.wait_for("metrics on ");
    let metrics_url = metrics_line
        .split("metrics on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let _am = alertmanager_posting_to(&am_addr, &api, &token);
    let rules = "groups:\n  - name: demo\n    rules:\n      - alert: CheckoutBadVersion\n        expr: demo_version_info{version=\"v2\"} == 1\n        for: 0s\n        annotations:\n          summary: checkout runs a bad version\n";
    let prom =
        crate::lab::prometheus_alerting(std::slice::from_ref(&service), Some((rules, &am_addr)));
    // Prometheus has scraped the healthy service before the fault.
    within(30, "the first scrape", || {
        let v = get_json(&format!(
            "http://{}/api/v1/query?query=demo_version_info",
            prom.addr
        ));
        (!v["data"]["result"].as_array()?.is_empty()).then_some(())
    });

    let broke = medic::store::now_ms();
    deploy(&service, "v2");
    let alerts = || -> Vec<Value> {
        api.get("/alerts", &viewer).1["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let first = within(60, "the alert reaching medic", || {
        alerts().into_iter().find(|a| a["decision"] == "start")
    });
    let id = first["run_id"].as_str().unwrap().to_owned();
    let run = within(60, "the restart run ending", || {
        let r = api.get(&format!("/runs/{id}"), &viewer).1;
        (r["run"]["status"] != "running").then_some(r)
    });
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let summary = |step: &str| {
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .map(|s| s["summary"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    assert!(
        summary("restart").starts_with("restarted checkout"),
        "{run}"
    );
    let version = runtime().block_on(async {
        reqwest::get(format!("http://{service}/version"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(version.trim(), "v1", "the restart brought back v1");
    let resolved = within(60, "the alert resolving", || {
        alerts().into_iter().find(|a| a["decision"] == "resolved")
    });
    // Re-sent while the alert was firing: never a second run.
    let decisions: Vec<String> = alerts()
        .iter()
        .map(|a| a["decision"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        decisions.iter().filter(|d| *d == "start").count(),
        1,
        "{decisions:?}"
    );
    // The silence lived with the run and no longer.
    let silences = get_json(&format!("http://{am_addr}/api/v2/silences"));
    let states: Vec<&str> = silences
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"]["state"].as_str().unwrap())
        .collect();
    assert!(
        !states.is_empty() && states.iter().all(|s| *s == "expired"),
        "{silences}"
    );

    // The figures, through the CLI while serve holds the store.
    let o = site
        .medic()
        .args(["stats", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", crate::cli::stderr(&o));
    let stats: Value = serde_json::from_str(&crate::cli::stdout(&o)).unwrap();
    let t = &stats["triggers"]["checkout-bad-version"];
    assert_eq!(
        (t["runs_started"].as_u64(), t["remediated"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    assert!(
        t["mean_time_to_detect"].is_u64() && t["mean_time_to_remediate"].is_u64(),
        "{stats}"
    );
    // Observed by the run's watcher once the run has ended (and its silence expired).
    let wanted = [
        "medic_trigger_alerts_total{trigger=\"checkout-bad-version\",decision=\"start\"} 1",
        "medic_trigger_time_to_remediate_seconds_count{trigger=\"checkout-bad-version\"} 1",
        "medic_trigger_time_to_detect_seconds_count{trigger=\"checkout-bad-version\"} 1",
    ];
    within(10, "the trigger's figures on /metrics", || {
        let metrics = runtime()
            .block_on(async { reqwest::get(&metrics_url).await.ok()?.text().await.ok() })?;
        wanted.iter().all(|l| metrics.contains(l)).then_some(())
    });
    let (started, ended) = (
        run["run"]["started_ms"].as_u64().unwrap(),
        run["run"]["ended_ms"].as_u64().unwrap(),
    );
    let at = |a: &Value| a["at_ms"].as_u64().unwrap();
    println!(
        "loop timings (1 s scrape and evaluation, 1 s group_wait): fault to alert at medic {} ms, alert to run start {} ms, run {} ms, fault to verified fix {} ms, run end to alert resolved at medic {} ms; decisions {decisions:?}",
        at(&first).saturating_sub(broke),
        started.saturating_sub(at(&first)),
        ended - started,
        ended.saturating_sub(broke),
        at(&resolved).saturating_sub(ended),
    );
    assert_eq!(serve.stop(), Some(0));
}
