//! The reference plugins against the real servers they drive (see `lab`).

use std::time::{Duration, Instant};

use medic::demo::DemoService;
use medic::executor::{self, RunOptions, RunOutcome, StepStatus};
use medic::host::{Call, Failure, Grants, HttpGrant, PluginSource, Sandbox, Status, Value};
use medic::runbook::{self, PlanOptions, Source};

use crate::lab;
use crate::support::*;

fn grants(addr: &str) -> Grants {
    Grants {
        http: vec![addr.parse::<HttpGrant>().unwrap()],
        kv: false,
    }
}

fn p(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn prometheus_query_compares_with_thresholds_and_handles_empty_results() {
    let prom = lab::prometheus(&[]);
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("prometheus-query".into())).await;
        let sb = Sandbox {
            grants: grants(&prom.addr),
            ..sandbox(Duration::from_secs(10))
        };
        let query = |q: &str, op: &str, t: f64, empty: &str| {
            let params = p(&[
                ("url", text(&prom.url())),
                ("query", text(q)),
                ("op", text(op)),
                ("threshold", Value::Float(t)),
                ("on_empty", text(empty)),
            ]);
            let (host, plugin, sb) = (host.clone(), &plugin, sb.clone());
            async move {
                host.invoke(plugin, Call::Run { params }, &ctx("q"), &sb)
                    .await
                    .result
            }
        };
        let ok = query("vector(0.004)", "<", 0.01, "fail").await.unwrap();
        assert_eq!(ok.status, Status::Success, "{}", ok.summary);
        assert_eq!(ok.metrics, vec![("value".to_string(), 0.004)]);
        let bad = query("vector(0.2)", "<", 0.01, "fail").await.unwrap();
        assert_eq!(bad.status, Status::Failure);
        assert!(bad.summary.contains("= 0.2, not < 0.01"), "{}", bad.summary);
        let ge = query("vector(3)", ">=", 3.0, "fail").await.unwrap();
        assert_eq!(ge.status, Status::Success);
        for (on_empty, want) in [
            ("pass", Status::Success),
            ("fail", Status::Failure),
            ("inconclusive", Status::Inconclusive),
        ] {
            let r = query("up{job=\"nothing-has-this-job\"}", "<", 1.0, on_empty)
                .await
                .unwrap();
            assert_eq!(r.status, want, "on_empty = {on_empty}: {}", r.summary);
            assert!(r.summary.contains("returned no data"), "{}", r.summary);
        }
        match query("sum(rate(", "<", 1.0, "fail").await.unwrap_err() {
            Failure::InvalidParams { message } => {
                assert!(message.contains("the query was refused"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn alertmanager_alerts_fail_while_matching_alerts_fire() {
    let am = lab::alertmanager();
    let rt = runtime();
    rt.block_on(async {
        // An alert, as Prometheus would send it.
        let now = std::time::SystemTime::now();
        let ends = humantime::format_rfc3339_seconds(now + Duration::from_secs(600)).to_string();
        let starts = humantime::format_rfc3339_seconds(now - Duration::from_secs(5)).to_string();
        let alert = serde_json::json!([{ "labels": { "alertname": "HighErrorRate", "service": "checkout", "severity": "page" }, "startsAt": starts, "endsAt": ends }]);
        let client = reqwest::Client::new();
        let posted = client.post(format!("{}/api/v2/alerts", am.url())).json(&alert).send().await.unwrap();
        assert!(posted.status().is_success(), "{}", posted.status());

        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("alertmanager-alerts".into())).await;
        let sb = Sandbox { grants: grants(&am.addr), ..sandbox(Duration::from_secs(10)) };
        let check = |matchers: &[&str]| {
            let params = p(&[("url", text(&am.url())), ("matchers", Value::TextList(matchers.iter().map(|m| m.to_string()).collect()))]);
            let (host, plugin, sb) = (host.clone(), &plugin, sb.clone());
            async move { host.invoke(plugin, Call::Run { params }, &ctx("alerts"), &sb).await.result.unwrap() }
        };
        // Alertmanager takes a moment to index a new alert: bounded wait.
        let started = Instant::now();
        let mut firing = check(&["service=checkout"]).await;
        while firing.status == Status::Success && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            firing = check(&["service=checkout"]).await;
        }
        assert_eq!(firing.status, Status::Failure, "{}", firing.summary);
        assert!(firing.summary.contains("1 alert firing matching service=\"checkout\": HighErrorRate"), "{}", firing.summary);
        assert!(firing.outputs.contains(&("firing".into(), Value::Integer(1))));
        let quiet = check(&["service=payments"]).await;
        assert_eq!(quiet.status, Status::Success, "{}", quiet.summary);
        let not_paging = check(&["service=checkout", "severity!=page"]).await;
        assert_eq!(not_paging.status, Status::Success, "{}", not_paging.summary);
    });
}

#[test]
fn webhook_notify_posts_json_and_slack_payloads() {
    let rt = runtime();
    rt.block_on(async {
        let hook = tiny_server(200, "ok").await;
        let down = tiny_server(503, "busy").await;
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("webhook-notify".into())).await;
        let sb = Sandbox {
            grants: Grants {
                http: vec![
                    hook.addr.to_string().parse().unwrap(),
                    down.addr.to_string().parse().unwrap(),
                ],
                kv: false,
            },
            ..sandbox(Duration::from_secs(5))
        };
        let post = |addr: std::net::SocketAddr, format: &str| {
            let params = p(&[
                ("url", text(&format!("http://{addr}/hooks/x"))),
                ("message", text("rolled back checkout")),
                ("format", text(format)),
            ]);
            let (host, plugin, sb) = (host.clone(), &plugin, sb.clone());
            async move {
                host.invoke(plugin, Call::Run { params }, &ctx("notify"), &sb)
                    .await
                    .result
            }
        };
        assert_eq!(
            post(hook.addr, "slack").await.unwrap().status,
            Status::Success
        );
        assert_eq!(
            post(hook.addr, "json").await.unwrap().status,
            Status::Success
        );
        let requests = hook.requests.lock().unwrap().clone();
        assert!(requests[0].starts_with("POST /hooks/x"), "{}", requests[0]);
        assert!(
            requests[0].ends_with(r#"{"text":"rolled back checkout"}"#),
            "{}",
            requests[0]
        );
        assert!(
            requests[1].contains(r#""message":"rolled back checkout""#)
                && requests[1].contains(r#""step":"notify""#),
            "{}",
            requests[1]
        );
        assert!(
            matches!(
                post(down.addr, "json").await.unwrap_err(),
                Failure::Transient { .. }
            ),
            "a 503 is worth a retry"
        );
    });
}

#[test]
fn an_error_ratio_gate_in_prometheus_rolls_back_a_bad_deploy() {
    let rt = runtime();
    let svc = rt
        .block_on(DemoService::start(
            "127.0.0.1:0".parse().unwrap(),
            "v1",
            ["v3".to_string()],
        ))
        .unwrap();
    let addr = svc.addr.to_string();
    let prom = lab::prometheus(std::slice::from_ref(&addr));
    rt.block_on(async {
        // Steady traffic, as users would send (bounded: it stops with the test).
        let traffic = {
            let url = format!("http://{addr}/");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..6000 {
                    let _ = client.get(&url).send().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let hook = tiny_server(200, "ok").await;
        let host = host_with_cache(None);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("runbooks/deploy-with-error-ratio-gate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let run = |version: &str| {
            let opts = PlanOptions {
                params: vec![
                    ("service".into(), addr.clone()),
                    ("prometheus".into(), prom.addr.clone()),
                    ("version".into(), version.into()),
                    ("notify".into(), "true".into()),
                    ("webhook".into(), hook.addr.to_string()),
                ],
                environment: None,
            };
            let (host, path, text) = (host.clone(), path.clone(), text.clone());
            async move {
                let plan = runbook::plan(
                    &host,
                    &Source {
                        path: &path,
                        text: &text,
                    },
                    &opts,
                )
                .await
                .unwrap_or_else(|d| panic!("{d:?}"));
                executor::execute(
                    &host,
                    &plan,
                    RunOptions::default(),
                    &mut |_: &executor::Event<'_>| {},
                )
                .await
            }
        };
        let good = run("v2").await;
        assert_eq!(
            good.outcome,
            RunOutcome::Succeeded,
            "{:#?}",
            good.steps
                .iter()
                .map(|s| (&s.id, &s.summary))
                .collect::<Vec<_>>()
        );

        let started = Instant::now();
        let bad = run("v3").await;
        let took = started.elapsed();
        let steps: Vec<(&String, &String)> =
            bad.steps.iter().map(|s| (&s.id, &s.summary)).collect();
        assert_eq!(bad.outcome, RunOutcome::RolledBack, "{steps:#?}");
        let gate = bad.steps.iter().find(|s| s.id == "error_ratio").unwrap();
        assert_eq!(gate.status, StepStatus::Failed, "{}", gate.summary);
        assert!(gate.summary.contains("not < 0.05"), "{}", gate.summary);
        let current = reqwest::get(format!("http://{addr}/version"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(current.trim(), "v2", "the bad deploy was not rolled back");
        let told = hook.requests.lock().unwrap().clone();
        assert_eq!(told.len(), 2, "one notification per run");
        assert!(
            told[1].contains("deploy of v3") && told[1].contains("error ratio failed"),
            "{}",
            told[1]
        );
        assert!(
            took < Duration::from_secs(60),
            "detection and rollback took {took:?}"
        );
        eprintln!("bad deploy detected and rolled back in {took:?}");
        traffic.abort();
    });
    drop(svc);
}
