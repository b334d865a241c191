//! `runbooks/canary-demo.toml` against the demo's canary setup: two demo service instances
//! behind the weighted proxy, with user traffic, driven by `haproxy-weight` through the
//! proxy's runtime API.

use medic::demo::{Canary, Faults};
use medic::executor::{RunOutcome, StepStatus};

use crate::support::*;

/// Who answers `n` requests through the proxy, and with which body.
async fn served_by(proxy: std::net::SocketAddr, n: usize) -> Vec<(String, String)> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = client.get(format!("http://{proxy}/")).send().await.unwrap();
        let server = r.headers()["x-served-by"].to_str().unwrap().to_owned();
        seen.push((server, r.text().await.unwrap().trim().to_owned()));
    }
    seen
}

fn params(setup: &Canary, version: &str) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = setup
        .params()
        .into_iter()
        .map(|(k, v)| {
            let k: &'static str = match k.as_str() {
                "canary" => "canary",
                "proxy" => "proxy",
                "stats" => "stats",
                "runtime_api" => "runtime_api",
                other => panic!("unexpected parameter {other}"),
            };
            (k, v)
        })
        .collect();
    p.push(("version", version.to_string()));
    p
}

/// The proxy's weights: stable's, then the canary's.
fn proxy_weights(setup: &Canary) -> Vec<u32> {
    setup
        .proxy
        .snapshot()
        .iter()
        .map(|(_, s)| s.weight)
        .collect()
}

fn flaky_v3() -> Faults {
    Faults {
        flaky: ["v3".to_string()].into(),
        ..Faults::default()
    }
}

#[test]
fn a_healthy_canary_is_promoted_to_all_traffic() {
    let rt = runtime();
    rt.block_on(async {
        let setup = Canary::start("v1", flaky_v3(), 40).await.unwrap();
        let host = host_with_cache(None);
        let report = run_example(&host, "canary-demo.toml", &params(&setup, "v2")).await;
        assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");

        let weights: Vec<(String, u32)> = setup
            .proxy
            .snapshot()
            .into_iter()
            .map(|(name, s)| (name, s.weight))
            .collect();
        assert_eq!(
            weights,
            [("stable".to_string(), 0), ("canary".to_string(), 90)]
        );
        let seen = served_by(setup.proxy.http, 10).await;
        assert!(
            seen.iter()
                .all(|(s, body)| s == "canary" && body == "hello from v2"),
            "{seen:?}"
        );
        let tally = setup.stop().await;
        assert_eq!(tally.errors, 0, "{tally:?}");
        assert!(
            tally.by_server.get("canary").is_some_and(|(n, _)| *n > 0),
            "{tally:?}"
        );
    });
}

#[test]
fn a_flaky_canary_fails_the_error_ratio_gate_and_traffic_returns_to_stable() {
    let rt = runtime();
    rt.block_on(async {
        let setup = Canary::start("v1", flaky_v3(), 40).await.unwrap();
        let host = host_with_cache(None);
        let report = run_example(&host, "canary-demo.toml", &params(&setup, "v3")).await;
        assert_eq!(report.outcome, RunOutcome::RolledBack, "{report:#?}");

        let step = |id: &str| report.steps.iter().find(|s| s.id == id).unwrap();
        // The health check alone let the flaky build through; the users' error ratio did not.
        assert_eq!(step("canary_health").status, StepStatus::Succeeded);
        let gate = step("errors_at_10");
        assert_eq!(gate.status, StepStatus::Failed);
        // The gate baked before its first check, so the canary had traffic to be judged by.
        let shifted = step("shift_10").attempts.last().unwrap().started_ms;
        assert!(gate.attempts[0].started_ms >= shifted + 2000, "{gate:#?}");
        assert!(
            gate.summary.contains("/servers/canary/error_ratio is"),
            "{}",
            gate.summary
        );
        // Traffic went back to stable before the redeploy, the newest change first.
        let order: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.phase == medic::executor::Phase::Rollback)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(order, ["shift_10.rollback", "deploy.rollback"]);
        assert!(report.steps.iter().all(|s| s.id != "shift_50"));

        let snapshot = setup.proxy.snapshot();
        assert_eq!(snapshot[0].0, "stable");
        assert_eq!((snapshot[0].1.weight, snapshot[1].1.weight), (90, 0));
        let seen = served_by(setup.proxy.http, 10).await;
        assert!(
            seen.iter()
                .all(|(s, body)| s == "stable" && body == "hello from v1"),
            "{seen:?}"
        );
        let version = reqwest::get(format!("http://{}/version", setup.canary.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(version.trim(), "v1");

        // Users saw errors only from the canary, and only while it had traffic.
        let tally = setup.stop().await;
        let (canary, canary_errors) = tally.by_server.get("canary").copied().unwrap_or_default();
        assert!(canary_errors > 0 && canary_errors <= canary, "{tally:?}");
        assert_eq!(tally.errors, canary_errors, "{tally:?}");
    });
}

#[test]
fn a_rollout_block_canaries_like_the_hand_written_steps() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        // A good build: promoted through every stage.
        let setup = Canary::start("v1", flaky_v3(), 40).await.unwrap();
        let report = run_example(&host, "canary-rollout.toml", &params(&setup, "v2")).await;
        assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
        let smoked: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.id.contains("_smoke_") && s.status == StepStatus::Succeeded)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            smoked,
            [
                "rollout_10_smoke_canary_health",
                "rollout_50_smoke_canary_health",
                "rollout_100_smoke_canary_health"
            ]
        );
        let weights = proxy_weights(&setup);
        assert_eq!(
            weights,
            [0, 100],
            "stable drained, the candidate has it all"
        );
        setup.stop().await;

        // A flaky build: caught at 10%, traffic back to stable before the redeploy.
        let setup = Canary::start("v1", flaky_v3(), 40).await.unwrap();
        let report = run_example(&host, "canary-rollout.toml", &params(&setup, "v3")).await;
        assert_eq!(report.outcome, RunOutcome::RolledBack, "{report:#?}");
        let failed = report
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Failed)
            .unwrap();
        assert_eq!(failed.id, "rollout_10_errors");
        let undone: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.phase == medic::executor::Phase::Rollback)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            undone,
            [
                "rollout_10_2.rollback",
                "rollout_10_1.rollback",
                "deploy.rollback"
            ]
        );
        let weights = proxy_weights(&setup);
        assert_eq!(weights, [90, 0], "the weights from before the rollout");
        setup.stop().await;
    });
}

#[test]
fn blue_green_switches_at_once_and_watches_through_its_rollback_window() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        // The demo's canary runbook, switching all at once with a 3 s rollback window.
        let release = |version: &'static str| {
            let host = host.clone();
            async move {
                let blue_green = [(
                    "strategy = \"canary\"\nweights = [10, 50, 100]\nbake = \"2s\"",
                    "strategy = \"blue_green\"\nrollback_window = \"3s\"",
                )];
                let setup = Canary::start("v1", flaky_v3(), 40).await.unwrap();
                let p = params(&setup, version);
                let report = run_example_with(&host, "canary-rollout.toml", &blue_green, &p).await;
                (setup, report)
            }
        };
        // A good build: switched, watched for the whole window, kept.
        let (setup, report) = release("v2").await;
        assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
        let watch = report
            .steps
            .iter()
            .find(|s| s.id == "rollout_100_errors")
            .unwrap();
        // Checks 1 s apart cannot cover a 3 s window in fewer than four.
        assert!(watch.attempts.len() >= 4, "{watch:#?}");
        let weights = proxy_weights(&setup);
        assert_eq!(weights, [0, 100], "green has it all");
        setup.stop().await;

        // A flaky build: all traffic switched, the breach seen inside the window, back to blue.
        let (setup, report) = release("v3").await;
        assert_eq!(report.outcome, RunOutcome::RolledBack, "{report:#?}");
        let failed = report
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Failed)
            .unwrap();
        assert_eq!(failed.id, "rollout_100_errors");
        let weights = proxy_weights(&setup);
        assert_eq!(weights, [90, 0], "blue serves everything again, as before");
        setup.stop().await;
    });
}
