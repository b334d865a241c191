//! `medic demo` and the hidden `medic demo-service`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::run::{RunRequest, execute, exit_for, load_plan};
use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::demo::traffic::Tally;
use crate::demo::{Canary, DemoService, Faults};
use crate::executor::{Phase, RunReport};
use crate::store::Trigger;
use crate::store::recorder::Start;

/// The demo runbook, embedded so `medic demo` works from any directory.
const DEMO_RUNBOOK: &str = include_str!("../../../runbooks/canary-demo.toml");
const DEMO_PATH: &str = "runbooks/canary-demo.toml";
/// User requests per second through the demo proxy.
const TRAFFIC_RPS: u32 = 40;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Only the bad release (skip the good one)
    #[arg(long)]
    bad_only: bool,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The version running at start
    #[arg(long = "version", default_value = "v1")]
    initial: String,
    /// A version that fails when deployed (repeatable)
    #[arg(long = "bad")]
    bad: Vec<String>,
    /// A version that answers slowly when deployed (repeatable)
    #[arg(long = "slow")]
    slow: Vec<String>,
    /// A version that passes health checks but fails one request in three (repeatable)
    #[arg(long = "flaky")]
    flaky: Vec<String>,
    /// Take a deployed version at once but answer the deploy this much later (e.g. 2s)
    #[arg(long, value_name = "DURATION", value_parser = crate::runbook::plan::parse_duration)]
    deploy_delay: Option<std::time::Duration>,
    /// Serve a feature to the share of user requests this Unleash flag gives
    #[arg(long, value_name = "NAME", requires = "unleash")]
    feature_flag: Option<String>,
    /// Unleash's base URL, for --feature-flag (a client API token in UNLEASH_CLIENT_TOKEN)
    #[arg(long, value_name = "URL")]
    unleash: Option<String>,
    /// The feature fails every request it serves
    #[arg(long, requires = "feature_flag")]
    feature_broken: bool,
}

pub async fn service(args: ServiceArgs) -> Exit {
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "medic: the demo service only listens on loopback addresses, not {}",
            args.listen.ip()
        );
        return Exit::Invalid;
    }
    let faults = Faults {
        bad: args.bad.into_iter().collect(),
        slow: args.slow.into_iter().collect(),
        flaky: args.flaky.into_iter().collect(),
        deploy_delay: args.deploy_delay.unwrap_or_default(),
        feature: args.feature_flag.map(|flag| crate::demo::Feature {
            unleash: args.unleash.unwrap_or_default(),
            token: std::env::var("UNLEASH_CLIENT_TOKEN").unwrap_or_default(),
            flag,
            broken: args.feature_broken,
        }),
    };
    let svc = match DemoService::start_with(args.listen, &args.initial, faults).await {
        Ok(s) => s,
        Err(e) => return engine_error(anyhow::anyhow!("cannot listen on {}: {e}", args.listen)),
    };
    // The first line tells a parent process (tests, scripts) which port was chosen.
    println!("listening on {}", svc.addr);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return engine_error(e.into()),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    svc.stop().await;
    Exit::Success
}

pub async fn demo(global: &GlobalArgs, args: DemoArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let store = match global.store("medic demo", None) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    println!("Medic demo: a canary release of the demo service, gated on the errors users see.");
    println!(
        "Two instances run v1: `stable` takes all user traffic, `canary` none, behind a weighted"
    );
    println!(
        "proxy driven through HAProxy's runtime API. {TRAFFIC_RPS} user requests per second flow through it."
    );
    let mut scenarios = vec![
        ("v2", "a good build", Exit::Success),
        (
            "v3",
            "a flaky build: it passes its health check but fails one request in three",
            Exit::RolledBack,
        ),
    ];
    if args.bad_only {
        scenarios.remove(0);
    }
    let mut results = Vec::new();
    for (n, (version, what, expect)) in scenarios.into_iter().enumerate() {
        let faults = Faults {
            flaky: ["v3".to_string()].into(),
            ..Faults::default()
        };
        let setup = match Canary::start("v1", faults, TRAFFIC_RPS).await {
            Ok(s) => s,
            Err(e) => return engine_error(anyhow::anyhow!("cannot start the demo setup: {e}")),
        };
        let mut params = setup.params();
        params.push(("version".into(), version.into()));
        println!("\n── {}. {version}, {what} ──", n + 1);
        let shown: String = params
            .iter()
            .map(|(k, v)| format!(" --param {k}={v}"))
            .collect();
        println!("$ medic run {DEMO_PATH}{shown}");
        // Some traffic on stable first, as there would be in production.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let opts = crate::runbook::PlanOptions {
            params,
            environment: None,
            defer_secrets: false,
            sourced: None,
        };
        let plan = match load_plan(&host, Path::new(DEMO_PATH), Some(DEMO_RUNBOOK), &opts).await {
            Ok(p) => p,
            Err(exit) => return exit,
        };
        let request = RunRequest {
            plan: &plan,
            format: OutputFormat::Human,
            approval: None,
            dry_run: false,
            run_id: crate::executor::new_run_id(),
            start: Start::New,
            resume: None,
            trigger: Trigger::cli(),
            wait: None,
        };
        let signals = match super::signals::Signals::install_for_run() {
            Ok(s) => s,
            Err(exit) => return exit,
        };
        let report = match execute(&host, &store, global, request, signals).await {
            Ok(report) => report,
            Err(exit) => return exit,
        };
        let tally = setup.stop().await;
        println!("{}", traffic_line(&tally));
        print!("{}", timeline(&report, &plan));
        results.push((version, exit_for(&report), expect));
    }

    if results.iter().all(|(_, got, want)| got == want) {
        println!();
        if results.len() == 2 {
            println!("v2 passed every stage and was promoted to all users.");
        }
        println!(
            "v3 passed its health check, but the error-ratio gate saw its users' errors at 10% of"
        );
        println!(
            "traffic. Medic sent traffic back to stable first, redeployed v1 on the canary, and"
        );
        println!("verified that users were served again, with no one asked to act.");
        println!(
            "Every step ran in a fresh WebAssembly sandbox that could reach only the addresses it was granted."
        );
        Exit::Success
    } else {
        for (v, got, want) in &results {
            if got != want {
                eprintln!("medic: the demo run for {v} ended with {got:?}, expected {want:?}");
            }
        }
        Exit::RunFailed
    }
}

/// What the users saw during a run, per server.
fn traffic_line(t: &Tally) -> String {
    let per: Vec<String> = t
        .by_server
        .iter()
        .map(|(server, (n, e))| {
            if *e == 0 {
                format!("{server} {n}")
            } else {
                format!("{server} {n} ({e} errors)")
            }
        })
        .collect();
    format!(
        "users sent {} requests: {}; {} errors in all",
        t.requests,
        per.join(", "),
        t.errors
    )
}

/// The run as a timeline (offsets from its start), then the figures that matter after a
/// failed change: time to detect, to get traffic back, to be healthy again.
fn timeline(report: &RunReport, plan: &crate::runbook::Plan) -> String {
    let actions: Vec<&str> = plan
        .plugins
        .iter()
        .filter(|p| p.plugin.manifest.kind == crate::host::PluginKind::Action)
        .map(|p| p.alias.as_str())
        .collect();
    let mut rows: Vec<(Duration, &crate::executor::StepReport)> = report
        .steps
        .iter()
        .filter_map(|s| {
            // A step ends with its last call (a gate's bake time comes before its first).
            let last = s.attempts.last()?;
            let end = Duration::from_millis(last.started_ms)
                + Duration::from_micros(last.invocation.duration_us);
            Some((end, s))
        })
        .collect();
    rows.sort_by_key(|(end, _)| *end);
    let mut out = format!("timeline of run {}:\n", report.run_id);
    for (end, s) in &rows {
        let phase = match s.phase {
            Phase::Steps | Phase::Rollback => "",
            Phase::Verify => "verify ",
            Phase::Finally => "finally ",
        };
        let mark = if s.status.is_success() { "✓" } else { "✗" };
        let _ = writeln!(
            out,
            "  +{:>4.1}s  {mark} {:<20} {}",
            end.as_secs_f64(),
            format!("{phase}{}", s.id),
            s.summary
        );
    }
    let end_of = |phase: Phase, pick_last: bool| {
        let mut it = rows.iter().filter(|(_, s)| s.phase == phase);
        if pick_last { it.next_back() } else { it.next() }.map(|(end, _)| *end)
    };
    let failed = rows
        .iter()
        .find(|(_, s)| s.phase == Phase::Steps && s.status.is_failure())
        .map(|(end, _)| *end);
    if let Some(detected) = failed {
        let change = rows
            .iter()
            .filter(|(end, s)| {
                s.phase == Phase::Steps && *end <= detected && actions.contains(&s.plugin.as_str())
            })
            .map(|(end, _)| *end)
            .next_back();
        let mut figures = Vec::new();
        if let Some(change) = change {
            figures.push(format!(
                "detected {:.1}s after the change",
                (detected - change).as_secs_f64()
            ));
        }
        if let Some(back) = end_of(Phase::Rollback, false) {
            figures.push(format!(
                "first rollback step done {:.2}s after detection",
                back.saturating_sub(detected).as_secs_f64()
            ));
        }
        if let Some(healthy) = end_of(Phase::Verify, true) {
            figures.push(format!(
                "verified healthy {:.1}s after detection",
                healthy.saturating_sub(detected).as_secs_f64()
            ));
        }
        if !figures.is_empty() {
            let _ = writeln!(out, "  {}", figures.join("; "));
        }
    }
    out
}
