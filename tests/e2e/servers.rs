//! The reference plugins against the real servers they drive (see `lab`).

use std::time::{Duration, Instant};

use medic::demo::DemoService;
use medic::executor::{RunOutcome, StepStatus};
use medic::host::{Call, Failure, Grants, HostGrant, PluginSource, Sandbox, Status, Value};

use crate::lab;
use crate::support::*;

fn grants(addr: &str) -> Grants {
    Grants {
        http: vec![addr.parse::<HostGrant>().unwrap()],
        tcp: vec![],
        command: vec![],
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
            grants: grants(&prom.addr).into(),
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
        let sb = Sandbox { grants: grants(&am.addr).into(), ..sandbox(Duration::from_secs(10)) };
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
                tcp: vec![],
                command: vec![],
                kv: false,
            }
            .into(),
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
        let run = |version: &str| {
            let params = [
                ("service", addr.clone()),
                ("prometheus", prom.addr.clone()),
                ("version", version.to_owned()),
                ("notify", "true".to_owned()),
                ("webhook", hook.addr.to_string()),
            ];
            let host = host.clone();
            async move { run_example(&host, "deploy-with-error-ratio-gate.toml", &params).await }
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

#[test]
fn caddy_upstreams_shifts_weighted_traffic_and_reverts() {
    let rt = runtime();
    rt.block_on(async {
        let blue = tiny_server(200, "blue").await;
        let green = tiny_server(200, "green").await;
        let (caddy, proxy) = lab::caddy(&blue.addr.to_string());
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("caddy-upstreams".into())).await;
        let sb = Sandbox {
            grants: Grants {
                kv: true,
                ..grants(&caddy.addr)
            }
            .into(),
            kv: medic::host::KvSpace::new(),
            ..sandbox(Duration::from_secs(10))
        };
        let count = |n: usize| greens_of(&proxy, n);
        assert_eq!(count(8).await, 0, "all traffic starts on blue");

        let params = p(&[
            ("admin_url", text(&caddy.url())),
            ("handler_id", text("lb_proxy")),
            (
                "upstreams",
                Value::TextList(vec![
                    format!("{}*3", green.addr),
                    format!("{}*1", blue.addr),
                ]),
            ),
        ]);
        let shifted = host
            .invoke(
                &plugin,
                Call::Run {
                    params: params.clone(),
                },
                &ctx("shift"),
                &sb,
            )
            .await
            .result
            .unwrap();
        assert_eq!(shifted.status, Status::Success, "{}", shifted.summary);
        assert!(
            shifted
                .summary
                .starts_with(&format!("upstreams now {}×3, {}×1", green.addr, blue.addr)),
            "{}",
            shifted.summary
        );
        // Round robin over [green, green, green, blue]: exactly 3 in 4.
        assert_eq!(count(40).await, 30, "75% of requests go to green");

        let reverted = host
            .invoke(
                &plugin,
                Call::Revert {
                    params: params.clone(),
                    outputs: shifted.outputs.clone(),
                },
                &ctx("undo"),
                &sb,
            )
            .await
            .result
            .unwrap();
        assert!(
            reverted.summary.starts_with("restored upstreams"),
            "{}",
            reverted.summary
        );
        assert_eq!(count(8).await, 0, "traffic is back on blue");

        let wrong = p(&[
            ("admin_url", text(&caddy.url())),
            ("handler_id", text("no_such_handler")),
            ("upstreams", Value::TextList(vec![blue.addr.to_string()])),
        ]);
        match host
            .invoke(&plugin, Call::Run { params: wrong }, &ctx("wrong"), &sb)
            .await
            .result
            .unwrap_err()
        {
            Failure::Permanent { message } => assert!(
                message.contains("no handler with @id `no_such_handler`"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn supervisor_restart_changes_the_pid_and_names_faults() {
    let sup = lab::supervisord("sleeper");
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("supervisor-restart".into())).await;
        let sb = Sandbox {
            grants: grants(&sup.addr).into(),
            ..sandbox(Duration::from_secs(20))
        };
        let restart = |program: &str, password: &str| {
            let params = p(&[
                ("url", text(&format!("{}/RPC2", sup.url()))),
                ("program", text(program)),
                ("username", text("medic")),
                ("password", text(password)),
            ]);
            let (host, plugin, sb) = (host.clone(), &plugin, sb.clone());
            async move {
                host.invoke(plugin, Call::Run { params }, &ctx("restart"), &sb)
                    .await
                    .result
            }
        };
        // supervisord starts the program itself; wait (bounded) until it has a pid.
        let mut first = restart("sleeper", "s3cret").await;
        for _ in 0..50 {
            if first.as_ref().is_ok_and(|o| o.status == Status::Success) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            first = restart("sleeper", "s3cret").await;
        }
        let first = first.unwrap();
        assert_eq!(first.status, Status::Success, "{}", first.summary);
        let pid = |o: &medic::host::Outcome, k: &str| {
            o.outputs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_ne!(
            pid(&first, "pid_before"),
            pid(&first, "pid_after"),
            "{}",
            first.summary
        );
        assert!(matches!(pid(&first, "pid_after"), Value::Integer(n) if n > 0));

        match restart("nope", "s3cret").await.unwrap_err() {
            Failure::Permanent { message } => assert!(message.contains("BAD_NAME"), "{message}"),
            other => panic!("{other:?}"),
        }
        match restart("sleeper", "wrong").await.unwrap_err() {
            Failure::Permanent { message } => assert!(
                message.contains("refused the credentials (401)"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn the_restart_runbook_restarts_a_supervised_service_and_verifies_it() {
    let port = lab::free_port();
    let service = format!("127.0.0.1:{port}");
    let command = format!(
        "{} demo-service --listen {service} --version v1",
        env!("CARGO_BIN_EXE_medic")
    );
    let sup = lab::supervisord_running("checkout", &command);
    let rt = runtime();
    rt.block_on(async {
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("SUPERVISOR_PASSWORD", "s3cret") };
        let host = host_with_cache(None);
        let run = |force: bool| {
            let params = [
                ("service", service.clone()),
                ("supervisor", sup.addr.clone()),
                ("program", "checkout".to_owned()),
                ("force", force.to_string()),
            ];
            let host = host.clone();
            async move { run_example(&host, "restart-unhealthy-service.toml", &params).await }
        };
        // Healthy and not forced: nothing to restart (wait, bounded, for supervisord to start it).
        let mut calm = run(false).await;
        for _ in 0..20 {
            if calm
                .steps
                .iter()
                .any(|s| s.id == "diagnose" && s.status == StepStatus::Succeeded)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            calm = run(false).await;
        }
        assert_eq!(calm.outcome, RunOutcome::Succeeded);
        assert!(matches!(
            calm.steps
                .iter()
                .find(|s| s.id == "restart")
                .unwrap()
                .status,
            StepStatus::Skipped { .. }
        ));

        let forced = run(true).await;
        let steps: Vec<(&String, &String)> =
            forced.steps.iter().map(|s| (&s.id, &s.summary)).collect();
        assert_eq!(forced.outcome, RunOutcome::Succeeded, "{steps:#?}");
        let restart = forced.steps.iter().find(|s| s.id == "restart").unwrap();
        assert!(
            restart.summary.starts_with("restarted checkout: pid "),
            "{}",
            restart.summary
        );
        assert!(
            restart
                .params
                .iter()
                .any(|(k, v)| k == "password" && v.to_string() == "••••••")
        );
    });
}

#[test]
fn haproxy_weight_drains_and_reweights_servers_and_reverts() {
    let rt = runtime();
    rt.block_on(async {
        let blue = tiny_server(200, "blue").await;
        let green = tiny_server(200, "green").await;
        let (haproxy, front) = lab::haproxy(&[
            ("blue", blue.addr.to_string()),
            ("green", green.addr.to_string()),
        ]);
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("haproxy-weight".into())).await;
        let sb = Sandbox {
            grants: Grants {
                tcp: vec![haproxy.addr.parse().unwrap()],
                kv: true,
                ..Grants::default()
            }
            .into(),
            ..sandbox(Duration::from_secs(10))
        };
        let count = |n: usize| greens_of(&front, n);
        assert_eq!(count(20).await, 10, "50/50 to start");

        let drain = p(&[
            ("admin", text(&haproxy.addr)),
            ("backend", text("be")),
            ("server", text("blue")),
            ("state", text("drain")),
        ]);
        let drained = host
            .invoke(
                &plugin,
                Call::Run {
                    params: drain.clone(),
                },
                &ctx("drain"),
                &sb,
            )
            .await
            .result
            .unwrap();
        assert_eq!(drained.summary, "be/blue: weight 50 -> 50, ready -> drain");
        assert_eq!(count(12).await, 12, "a drained server gets no new traffic");
        let undo = host
            .invoke(
                &plugin,
                Call::Revert {
                    params: drain,
                    outputs: drained.outputs,
                },
                &ctx("undo"),
                &sb,
            )
            .await
            .result
            .unwrap();
        assert_eq!(undo.summary, "restored be/blue to weight 50, ready");
        assert_eq!(count(20).await, 10);

        let weigh = p(&[
            ("admin", text(&haproxy.addr)),
            ("backend", text("be")),
            ("server", text("green")),
            ("weight", Value::Integer(150)),
        ]);
        let weighed = host
            .invoke(&plugin, Call::Run { params: weigh }, &ctx("weigh"), &sb)
            .await
            .result
            .unwrap();
        assert!(
            weighed.summary.starts_with("be/green: weight 50 -> 150"),
            "{}",
            weighed.summary
        );
        assert_eq!(count(40).await, 30, "weights 150:50 send 3 in 4 to green");

        let bad = p(&[
            ("admin", text(&haproxy.addr)),
            ("backend", text("be")),
            ("server", text("purple")),
            ("weight", Value::Integer(1)),
        ]);
        match host
            .invoke(&plugin, Call::Run { params: bad }, &ctx("bad"), &sb)
            .await
            .result
            .unwrap_err()
        {
            Failure::Permanent { message } => assert!(
                message.contains("HAProxy refused") || message.contains("no server be/purple"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        // The runtime API is reachable only when granted.
        let ungranted = Sandbox {
            grants: Grants {
                kv: true,
                ..Grants::default()
            }
            .into(),
            ..sandbox(Duration::from_secs(5))
        };
        let denied = host
            .invoke(
                &plugin,
                Call::Run {
                    params: p(&[
                        ("admin", text(&haproxy.addr)),
                        ("backend", text("be")),
                        ("server", text("blue")),
                        ("weight", Value::Integer(1)),
                    ]),
                },
                &ctx("x"),
                &ungranted,
            )
            .await;
        match denied.result.unwrap_err() {
            Failure::Denied { message } => {
                assert!(message.contains("tcp is not granted"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn the_drain_runbook_takes_a_failing_backend_out_of_haproxy() {
    let rt = runtime();
    rt.block_on(async {
        let blue = tiny_server(200, "ok").await;
        let green = tiny_server(503, "broken").await;
        let (haproxy, front) = lab::haproxy(&[
            ("blue", blue.addr.to_string()),
            ("green", green.addr.to_string()),
        ]);
        let host = host_with_cache(None);
        let params = [
            ("haproxy", haproxy.addr.clone()),
            ("server", "green".to_owned()),
            ("server_addr", green.addr.to_string()),
            ("frontend", front.clone()),
        ];
        let report = run_example(&host, "drain-bad-backend.toml", &params).await;
        let steps: Vec<(&String, &String)> =
            report.steps.iter().map(|s| (&s.id, &s.summary)).collect();
        // The suspect's failed probe is tolerated (on_failure = continue): the remedy decides.
        assert_eq!(report.outcome, RunOutcome::Succeeded, "{steps:#?}");
        assert_eq!(
            report.steps[0].status,
            StepStatus::Failed,
            "the diagnosis is still recorded as failed"
        );
        let drain = report.steps.iter().find(|s| s.id == "drain").unwrap();
        assert_eq!(drain.status, StepStatus::Succeeded, "{steps:#?}");
        assert_eq!(drain.summary, "be/green: weight 50 -> 50, ready -> drain");
        let clean = report
            .steps
            .iter()
            .find(|s| s.id == "frontend_clean")
            .unwrap();
        assert_eq!(clean.status, StepStatus::Succeeded, "{}", clean.summary);
        assert!(
            clean.summary.starts_with("passed 10 times in a row"),
            "{}",
            clean.summary
        );
    });
}

/// How many of `n` requests through the proxy at `front` the "green" backend answers.
async fn greens_of(front: &str, n: usize) -> usize {
    answers(front, n)
        .await
        .iter()
        .filter(|b| *b == "green")
        .count()
}

#[test]
#[should_panic(
    expected = "`medic-no-such-server` is not installed: install the Debian package `medic-lab-package`"
)]
fn a_missing_server_fails_naming_its_package() {
    lab::require("medic-no-such-server", "medic-lab-package");
}

#[test]
fn a_rolling_restart_through_supervisord_stops_at_the_first_program_that_does_not_come_back() {
    // `broken` exits at once: supervisord cannot keep it running (SPAWN_ERROR).
    let sup = lab::supervisord_programs(&[
        ("web-1", "/bin/sleep 3600"),
        ("web-2", "/bin/sleep 3600"),
        ("broken", "/bin/false"),
        ("web-3", "/bin/sleep 3600"),
    ]);
    let rt = runtime();
    rt.block_on(async {
        // SAFETY: every test that reads it sets the same value.
        unsafe { std::env::set_var("SUPERVISOR_PASSWORD", "s3cret") };
        let host = host_with_cache(None);
        let params = [
            ("supervisor", sup.addr.clone()),
            ("programs", "web-1,web-2,broken,web-3".to_owned()),
        ];
        let report = run_example(&host, "rolling-restart.toml", &params).await;
        let restart = report.steps.iter().find(|s| s.id == "restart").unwrap();
        let targets: Vec<(&str, &StepStatus, &str)> = restart
            .targets
            .iter()
            .map(|t| (t.target.as_str(), &t.status, t.summary.as_str()))
            .collect();
        assert_eq!(report.outcome, RunOutcome::Failed, "{targets:#?}");
        assert_eq!(
            targets.iter().map(|t| t.0).collect::<Vec<_>>(),
            ["web-1", "web-2", "broken", "web-3"],
            "{targets:#?}"
        );
        for (name, status, summary) in &targets[..2] {
            assert_eq!(**status, StepStatus::Succeeded, "{name}: {summary}");
            assert!(
                summary.starts_with(&format!("restarted {name}: pid ")),
                "{summary}"
            );
        }
        assert!(targets[2].1.is_failure(), "{targets:#?}");
        // A spawn error is permanent: not retried, and the fleet stops there.
        assert!(targets[2].2.contains("SPAWN_ERROR"), "{targets:#?}");
        assert_eq!(restart.targets[2].attempts.len(), 1, "{targets:#?}");
        assert!(
            matches!(targets[3].1, StepStatus::Skipped { .. })
                && restart.targets[3].attempts.is_empty(),
            "{targets:#?}"
        );
        assert!(
            restart
                .summary
                .contains("not started: web-3 (more than max_errors 0 failed)"),
            "{}",
            restart.summary
        );
    });
}
