//! `medic demo` and the hidden `medic demo-service`.

use std::net::SocketAddr;
use std::path::Path;

use clap::Args;

use super::run::{RunRequest, execute, exit_for, load_plan};
use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::demo::DemoService;
use crate::store::Trigger;
use crate::store::recorder::Start;

/// The demo runbook, embedded so `medic demo` works from any directory.
const DEMO_RUNBOOK: &str = include_str!("../../../runbooks/demo.toml");

#[derive(Debug, Args)]
pub struct DemoArgs {}

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
}

pub async fn service(args: ServiceArgs) -> Exit {
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "medic: the demo service only listens on loopback addresses, not {}",
            args.listen.ip()
        );
        return Exit::Invalid;
    }
    let svc = match DemoService::start_with(args.listen, &args.initial, args.bad, args.slow).await {
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

pub async fn demo(global: &GlobalArgs, _args: DemoArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let store = match global.store("medic demo", None) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let svc =
        match DemoService::start("127.0.0.1:0".parse().unwrap(), "v1", ["v3".to_string()]).await {
            Ok(s) => s,
            Err(e) => return engine_error(anyhow::anyhow!("cannot start the demo service: {e}")),
        };
    let addr = svc.addr.to_string();
    println!(
        "Demo service on http://{addr} running v1 (v3 is a bad build: its health check fails).\n"
    );

    let path = Path::new("runbooks/demo.toml");
    let mut results = Vec::new();
    for (version, expect) in [("v2", Exit::Success), ("v3", Exit::RolledBack)] {
        println!("$ medic run runbooks/demo.toml --param host={addr} --param version={version}");
        let params = vec![
            ("host".to_string(), addr.clone()),
            ("version".to_string(), version.to_string()),
        ];
        let opts = crate::runbook::PlanOptions {
            params,
            environment: None,
            defer_secrets: false,
        };
        let plan = match load_plan(&host, path, Some(DEMO_RUNBOOK), &opts).await {
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
        let exit = match execute(&host, &store, global, request).await {
            Ok(report) => exit_for(&report),
            Err(exit) => return exit,
        };
        println!();
        results.push((version, exit, expect));
    }
    svc.stop().await;

    let as_expected = results.iter().all(|(_, got, want)| got == want);
    if as_expected {
        println!(
            "v2 deployed and passed its health gate. v3 failed its health gate, and medic rolled"
        );
        println!("it back to v2 on its own, then verified the service healthy again.");
        println!(
            "Each step ran in a fresh WebAssembly sandbox that could reach only the demo service."
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
