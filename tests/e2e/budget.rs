//! The host's memory budget: calls running together never hold more than it, and a call
//! that ended (or was given up) holds none of it, whatever its run does next.

use std::path::Path;
use std::time::Duration;

/// A host whose calls together may have `budget` bytes of memory, and the hostile plugin.
async fn hostile_within(budget: u64) -> (medic::host::PluginHost, medic::host::Plugin) {
    let host = medic::host::PluginHost::new(medic::host::HostConfig {
        cache_dir: None,
        max_instances: 16,
        memory_budget: budget,
        ..medic::host::HostConfig::default()
    })
    .unwrap();
    let plugin = host
        .load(&crate::support::hostile_source(), None)
        .await
        .unwrap();
    (host, plugin)
}

#[test]
fn calls_in_flight_together_stay_within_the_hosts_memory_budget() {
    use medic::host::{Placement, Sandbox, Value};
    let rt = crate::support::runtime();
    rt.block_on(async {
        // Room for two 64 MiB calls at a time.
        let (host, plugin) = hostile_within(128 << 20).await;
        // Shorter than a call's wait for the budget and its own 400 ms together: the wait is
        // not the call's time, on the caller's thread or on the call threads.
        let sb = Sandbox {
            memory: 64 << 20,
            timeout: Duration::from_millis(700),
            ..Sandbox::default()
        };
        let call = || {
            crate::support::run_call(&[
                ("mode", crate::support::text("sleep")),
                ("sleep", Value::Duration(Duration::from_millis(400))),
            ])
        };
        let ctx = crate::support::ctx("s");
        for placement in [Placement::Here, Placement::Workers] {
            let started = std::time::Instant::now();
            let one = || host.invoke_on(&plugin, call(), ctx.clone(), sb.clone(), placement);
            let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
            for inv in [a, b, c, d] {
                assert!(inv.result.is_ok(), "{placement:?}: {:?}", inv.result);
            }
            // Four calls of 400 ms, two at a time: two rounds at least.
            assert!(
                started.elapsed() >= Duration::from_millis(800),
                "{placement:?}: the calls ran together past the budget: {:?}",
                started.elapsed()
            );
        }
    });
}

#[test]
fn a_call_on_the_call_threads_that_is_given_up_stops_there_and_frees_its_memory() {
    use medic::host::{Placement, Sandbox, Status};
    let rt = crate::support::runtime();
    rt.block_on(async {
        // Room for one 64 MiB call at a time.
        let (host, plugin) = hostile_within(64 << 20).await;
        let sb = Sandbox {
            memory: 64 << 20,
            timeout: Duration::from_secs(120),
            ..Sandbox::default()
        };
        let ctx = crate::support::ctx("s");
        let looping = crate::support::run_call(&[("mode", crate::support::text("loop"))]);
        // Given up (as a run that stops drops its calls) while it computes on a call thread.
        let given_up = tokio::time::timeout(
            Duration::from_millis(500),
            host.invoke_on(
                &plugin,
                looping,
                ctx.clone(),
                sb.clone(),
                Placement::Workers,
            ),
        )
        .await;
        assert!(given_up.is_err(), "an endless call ended: {given_up:?}");
        // Had it gone on computing, it would hold the whole budget for two minutes.
        let ok = crate::support::run_call(&[("mode", crate::support::text("ok"))]);
        for placement in [Placement::Workers, Placement::Here] {
            let next = tokio::time::timeout(
                Duration::from_secs(30),
                host.invoke_on(&plugin, ok.clone(), ctx.clone(), sb.clone(), placement),
            )
            .await
            .expect("the call given up still holds its memory: it is still running");
            assert_eq!(
                next.result.as_ref().map(|o| o.status).ok(),
                Some(Status::Success),
                "{:?}",
                next.result
            );
        }
    });
}

/// Plans a runbook of the hostile plugin, limited to 64 MiB a call, with `steps` after it.
async fn hostile_plan(host: &medic::host::PluginHost, steps: &str) -> medic::runbook::Plan {
    let text = format!(
        "[runbook]\nname = \"budget\"\n\n[plugins.h]\nsource = \"{}\"\nmemory = \"64MiB\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n{steps}",
        medic::host::fixtures::HOSTILE
    );
    let source = medic::runbook::Source {
        path: Path::new("budget.toml"),
        text: &text,
    };
    medic::runbook::plan(host, &source, &medic::runbook::PlanOptions::default())
        .await
        .unwrap_or_else(|d| panic!("{d:?}"))
}

const OK_STEP: &str = "[[steps]]\nid = \"ok\"\nuses = \"h\"\nwith = { mode = \"ok\" }\n";

/// A run of `plan` with the default options, given 30 s: a call waiting for memory that
/// another run holds would wait forever.
async fn bounded_run(
    host: &medic::host::PluginHost,
    plan: &medic::runbook::Plan,
) -> Result<Option<medic::executor::RunReport>, tokio::time::error::Elapsed> {
    tokio::time::timeout(
        Duration::from_secs(30),
        medic::executor::execute(
            host,
            plan,
            medic::executor::RunOptions::default(),
            &mut |_: &medic::executor::Event<'_>| {},
        ),
    )
    .await
}

fn all_succeeded(report: &medic::executor::RunReport) -> bool {
    report.steps.iter().all(|s| s.status.is_success())
}

#[test]
fn a_runs_calls_one_after_another_fit_a_budget_and_a_pool_of_one_call() {
    let rt = crate::support::runtime();
    rt.block_on(async {
        // Room for one 64 MiB call, and one instance: a run's call whose store were still
        // held (it is dropped at the run's next wait, `medic::later`) when the next one
        // starts would leave the next waiting for the budget forever, or without an instance.
        let host = medic::host::PluginHost::new(medic::host::HostConfig {
            cache_dir: None,
            max_instances: 1,
            memory_budget: 64 << 20,
            ..medic::host::HostConfig::default()
        })
        .unwrap();
        let steps: String = (0..3)
            .map(|i| OK_STEP.replace("\"ok\"\nuses", &format!("\"ok{i}\"\nuses")))
            .collect::<Vec<_>>()
            .join("\n");
        let plan = hostile_plan(&host, &steps).await;
        let report = tokio::time::timeout(
            Duration::from_secs(30),
            medic::executor::execute(
                &host,
                &plan,
                medic::executor::RunOptions::default(),
                &mut |_: &medic::executor::Event<'_>| {},
            ),
        )
        .await
        .expect("the run's second call waited for the first one's memory")
        .expect("not aborted");
        assert_eq!(report.steps.len(), 3);
        assert!(all_succeeded(&report), "{:?}", report.steps);
    });
}

#[test]
fn a_run_waiting_between_attempts_holds_none_of_the_hosts_budget() {
    use medic::executor::{Cancel, Event, RunOptions};
    let rt = crate::support::runtime();
    rt.block_on(async {
        // Room for one 64 MiB call at a time.
        let (host, _) = hostile_within(64 << 20).await;
        let waiting = hostile_plan(
            &host,
            "[[steps]]\nid = \"fails\"\nuses = \"h\"\nwith = { mode = \"fail\" }\n\
             retry = { attempts = 2, backoff = \"10m\", on = \"any\" }\n",
        )
        .await;
        let other = hostile_plan(&host, OK_STEP).await;
        let cancel = Cancel::new();
        let (first_attempt, attempted) = tokio::sync::oneshot::channel();
        let mut first_attempt = Some(first_attempt);
        let mut told = |e: &Event<'_>| {
            if let Event::AttemptFinished { .. } = e
                && let Some(tx) = first_attempt.take()
            {
                let _ = tx.send(());
            }
        };
        let a = medic::executor::execute(
            &host,
            &waiting,
            RunOptions {
                cancel: cancel.clone(),
                ..RunOptions::default()
            },
            &mut told,
        );
        let b = async {
            attempted.await.unwrap();
            // The first run now waits ten minutes for its second attempt; this one's call
            // needs the whole budget meanwhile.
            let b = bounded_run(&host, &other).await;
            cancel.cancel();
            b
        };
        let (a, b) = tokio::join!(a, b);
        let b = b
            .expect("a call waited for the memory of a run waiting between attempts")
            .expect("not aborted");
        assert!(all_succeeded(&b), "{:?}", b.steps);
        let a = a.expect("cancelled, not aborted");
        assert_eq!(a.steps[0].attempts.len(), 1, "{:?}", a.steps);
    });
}

#[test]
fn a_cancelled_run_asking_whether_to_roll_back_holds_none_of_the_hosts_budget() {
    use medic::executor::{Cancel, Event, RunOptions};
    use std::sync::{Arc, Mutex};
    let rt = crate::support::runtime();
    rt.block_on(async {
        // Room for one 64 MiB call at a time.
        let (host, _) = hostile_within(64 << 20).await;
        let host = Arc::new(host);
        let asked = hostile_plan(
            &host,
            &format!(
                "[plugins.c]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n{OK_STEP}\n{}\n\
                 [[rollback]]\nid = \"undo\"\nuses = \"h\"\nwith = {{ mode = \"ok\" }}\n\n\
                 [[verify]]\nid = \"fine\"\nuses = \"c\"\n",
                medic::host::fixtures::SCRIPTED_CHECK,
                OK_STEP.replace("\"ok\"\nuses", "\"ok2\"\nuses")
            ),
        )
        .await;
        let other = Arc::new(hostile_plan(&host, OK_STEP).await);
        let cancel = Cancel::new();
        // The other run's report, from inside the question: a responder thinking it over
        // (a prompt blocks the run's thread) while another run needs the whole budget.
        let other_report = Arc::new(Mutex::new(None));
        let confirm_rollback = {
            let (host, other, other_report) = (host.clone(), other.clone(), other_report.clone());
            Box::new(move || {
                let report = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(bounded_run(&host, &other))
                });
                *other_report.lock().unwrap() = Some(report);
                false
            })
        };
        let stop = cancel.clone();
        let report = medic::executor::execute(
            &host,
            &asked,
            RunOptions {
                cancel: cancel.clone(),
                confirm_rollback,
                ..RunOptions::default()
            },
            // Cancelled once its first call is done, so it asks before the second.
            &mut |e: &Event<'_>| {
                if let Event::StepFinished { .. } = e {
                    stop.cancel();
                }
            },
        )
        .await
        .expect("cancelled, not aborted");
        assert!(report.steps[0].status.is_success(), "{:?}", report.steps);
        // Told no: the second step skipped as cancelled, nothing rolled back or verified.
        let ids: Vec<&str> = report.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["ok", "ok2"], "{:?}", report.steps);
        assert!(
            matches!(&report.steps[1].status, medic::executor::StepStatus::Skipped { reason }
                if reason == medic::executor::CANCELLED_SKIP),
            "{:?}",
            report.steps[1]
        );
        let other = other_report
            .lock()
            .unwrap()
            .take()
            .expect("the run asked whether to roll back")
            .expect("a call waited for the memory of a run asking whether to roll back")
            .expect("not aborted");
        assert!(all_succeeded(&other), "{:?}", other.steps);
    });
}
