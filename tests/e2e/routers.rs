//! Canaries through real routers, judged by Prometheus: `runbooks/canary-haproxy.toml`
//! (HAProxy's runtime API) and `runbooks/canary-caddy.toml` (Caddy's admin API), with two
//! demo service instances behind the router, user traffic through it, and Prometheus scraping
//! both instances. A healthy candidate ends with all traffic; a flaky one (one user request in
//! three fails) is caught by its error ratio at 10% and traffic returns to stable.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use medic::demo::traffic::Traffic;
use medic::demo::{DemoService, Faults};
use medic::executor::{RunOutcome, RunReport, StepReport};

use crate::lab;
use crate::support::*;

/// The example runbooks bake 2 minutes and look at a minute of data; a test cannot wait that
/// long. The analysis still decides on what Prometheus scraped from real traffic. At 10% of
/// 40 requests/s the canary gets about 4 a second; a 4 s bake and a 10 s window give the
/// flaky build (one failure in three) many chances to show, even when a loaded machine
/// slows the traffic down (with 2 s and 5 s, a loaded CI run once saw no failure at 10%).
const QUICK: &[(&str, &str)] = &[
    ("bake = \"2m\"", "bake = \"4s\""),
    ("interval = \"30s\"", "interval = \"1s\""),
    ("[1m]", "[10s]"),
    ("timeout = \"5m\"", "timeout = \"30s\""),
];

fn flaky_v3() -> Faults {
    Faults {
        flaky: ["v3".to_string()].into(),
        ..Faults::default()
    }
}

/// Stable and canary instances (both running v1), Prometheus scraping them.
struct Backends {
    stable: DemoService,
    canary: DemoService,
    prometheus: lab::Server,
}

async fn backends() -> Backends {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let stable = DemoService::start_with(any, "v1", Faults::default())
        .await
        .unwrap();
    let canary = DemoService::start_with(any, "v1", flaky_v3())
        .await
        .unwrap();
    let prometheus = lab::prometheus(&[stable.addr.to_string(), canary.addr.to_string()]);
    Backends {
        stable,
        canary,
        prometheus,
    }
}

impl Backends {
    /// One instant query to the lab's Prometheus (Null when it does not answer).
    async fn query(&self, query: &str) -> serde_json::Value {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.prometheus.url(),
            url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        match client.get(&url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Waits (bounded) until Prometheus has scraped both instances a few times, so the first
    /// analysis has data to judge rather than an inconclusive empty answer.
    async fn scraped(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let answer = self
                .query("min(count_over_time(demo_requests_total[1m]))")
                .await;
            let count = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            if series == 1 && count >= 3.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Prometheus did not scrape the demo instances within 30 s");
    }

    /// Waits (bounded) until the canary's errors have left the analysis window: a healthy
    /// version deployed right after a flaky one must be judged on its own requests, not on
    /// the flaky one's errors still inside `rate(...[10s])`. (The demo service's counters
    /// carry no version label; in production the query would select the new version.)
    async fn quiet(&self) {
        let query = format!(
            "sum(rate(demo_errors_total{{instance=\"{}\"}}[10s]))",
            self.canary.addr
        );
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let answer = self.query(&query).await;
            let rate = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if rate == Some(0.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the canary's error rate did not return to 0 within 30 s");
    }

    fn params(&self, version: &str) -> Vec<(&'static str, String)> {
        vec![
            ("version", version.to_owned()),
            ("canary", self.canary.addr.to_string()),
            ("prometheus", self.prometheus.addr.clone()),
        ]
    }
}

/// The versions that answer `n` user requests through the router ("hello from v2").
async fn answered_by(front: &str, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = answers(front, n)
        .await
        .iter()
        .map(|b| b.rsplit(' ').next().unwrap_or("").to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepReport {
    report
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}

/// Each step's id and summary, to show when an assertion fails.
fn summaries(report: &RunReport) -> Vec<(&str, &str)> {
    report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.summary.as_str()))
        .collect()
}

/// What the flaky candidate's run must show, whatever the router: caught by its error ratio
/// at the first stage, traffic undone newest first, the canary redeployed, users served.
fn assert_caught_at_ten_percent(report: &RunReport, route_undo: &[&str]) {
    let steps = summaries(report);
    assert_eq!(report.outcome, RunOutcome::RolledBack, "{steps:#?}");
    let analysis = step(report, "rollout_10_error_ratio");
    assert!(
        analysis.status.is_failure() && analysis.summary.contains("not <= 0.05"),
        "{steps:#?}"
    );
    assert!(
        !report.steps.iter().any(|s| s.id == "rollout_50"),
        "{steps:#?}"
    );
    let undone: Vec<&str> = report
        .steps
        .iter()
        .filter(|s| s.id.ends_with(".rollback"))
        .map(|s| s.id.as_str())
        .collect();
    let mut want: Vec<String> = route_undo.iter().map(|r| format!("{r}.rollback")).collect();
    want.push("deploy.rollback".into());
    assert_eq!(undone, want, "traffic first, then the deploy");
    // Reported, never asserted: from the check that saw the errors to the last route
    // change undone, in the run's own clock.
    let seen = analysis.attempts.last().unwrap().started_ms;
    let last_route = step(report, &format!("{}.rollback", route_undo.last().unwrap()));
    let a = last_route.attempts.last().unwrap();
    eprintln!(
        "detection to all traffic on stable: {} ms (analysis interval 1 s)",
        a.started_ms + a.invocation.duration_us / 1000 - seen
    );
}

/// `get weight BACKEND/SERVER` on HAProxy's runtime API.
fn haproxy_weight(admin: &str, server: &str) -> String {
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("get weight be/{server}\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.trim().to_owned()
}

#[test]
fn through_haproxy_a_flaky_canary_is_sent_back_and_a_healthy_one_takes_all_traffic() {
    let rt = runtime();
    rt.block_on(async {
        let b = backends().await;
        let (haproxy, front) = lab::haproxy_weighted(&[
            ("stable", b.stable.addr.to_string(), 100),
            ("canary", b.canary.addr.to_string(), 0),
        ]);
        let traffic = Traffic::start(front.parse().unwrap(), 40);
        b.scraped().await;
        let host = host_with_cache(None);
        let mut params = b.params("v3");
        params.push(("proxy", front.clone()));
        params.push(("runtime_api", haproxy.addr.clone()));

        let report = run_example_with(&host, "canary-haproxy.toml", QUICK, &params).await;
        assert_caught_at_ten_percent(&report, &["rollout_10_2", "rollout_10_1"]);
        assert_eq!(haproxy_weight(&haproxy.addr, "canary"), "0 (initial 0)");
        assert_eq!(haproxy_weight(&haproxy.addr, "stable"), "100 (initial 100)");
        assert_eq!(answered_by(&front, 20).await, ["v1"]);

        params.retain(|(k, _)| *k != "version");
        params.push(("version", "v2".to_owned()));
        b.quiet().await;
        let report = run_example_with(&host, "canary-haproxy.toml", QUICK, &params).await;
        assert_eq!(
            report.outcome,
            RunOutcome::Succeeded,
            "{:#?}",
            summaries(&report)
        );
        assert_eq!(haproxy_weight(&haproxy.addr, "canary"), "100 (initial 0)");
        assert_eq!(haproxy_weight(&haproxy.addr, "stable"), "0 (initial 100)");
        assert_eq!(answered_by(&front, 20).await, ["v2"]);
        let tally = traffic.stop().await;
        assert!(tally.requests > 100, "{tally:?}");
    });
}

#[test]
fn through_caddy_a_flaky_canary_is_sent_back_and_a_healthy_one_takes_all_traffic() {
    let rt = runtime();
    rt.block_on(async {
        let b = backends().await;
        let (caddy, front) = lab::caddy(&b.stable.addr.to_string());
        let traffic = Traffic::start(front.parse().unwrap(), 40);
        b.scraped().await;
        let host = host_with_cache(None);
        let mut params = b.params("v3");
        params.push(("proxy", front.clone()));
        params.push(("stable", b.stable.addr.to_string()));
        params.push(("caddy_admin", caddy.addr.clone()));

        let report = run_example_with(&host, "canary-caddy.toml", QUICK, &params).await;
        assert_caught_at_ten_percent(&report, &["rollout_10"]);
        assert_eq!(answered_by(&front, 20).await, ["v1"]);
        // Caddy's upstreams are the stable instance alone again, as before the run.
        let config: serde_json::Value =
            reqwest::get(format!("{}/id/lb_proxy/upstreams", caddy.url()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(
            config,
            serde_json::json!([{ "dial": b.stable.addr.to_string() }])
        );

        params.retain(|(k, _)| *k != "version");
        params.push(("version", "v2".to_owned()));
        b.quiet().await;
        let report = run_example_with(&host, "canary-caddy.toml", QUICK, &params).await;
        assert_eq!(
            report.outcome,
            RunOutcome::Succeeded,
            "{:#?}",
            summaries(&report)
        );
        assert_eq!(answered_by(&front, 20).await, ["v2"]);
        let tally = traffic.stop().await;
        assert!(tally.requests > 100, "{tally:?}");
    });
}
