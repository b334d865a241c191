//! Execution semantics with real plugins: retries, timeouts, conditions, gates, `on_failure`,
//! rollback order, verify, finally, secrets.

use std::time::{Duration, Instant};

use medic::executor::{self, Event, Phase, RunOptions, RunOutcome, RunReport, StepStatus};
use medic::host::fixtures;
use medic::runbook::{self, PlanOptions, Source};

use crate::support::*;

const CHECK: &str =
    "[plugins.check]\nsource = \"@CHECK@\"\ngrants = { http = [\"@REC@\"], kv = true }\n\n";
const ACTION: &str =
    "[plugins.act]\nsource = \"@ACTION@\"\ngrants = { http = [\"@REC@\"], kv = true }\n\n";

/// Plans and runs a runbook (with the fixtures' paths and the recorder's address filled in),
/// collecting every event's short description.
fn run_with(text: &str, opts: PlanOptions) -> (RunReport, Vec<String>, Vec<String>) {
    let (report, events, paths) = run_aborting(text, opts, None);
    (report.expect("nothing aborts this run"), events, paths)
}

/// [`run_with`], aborting the run from inside the executor when the step `abort_at` starts.
fn run_aborting(
    text: &str,
    opts: PlanOptions,
    abort_at: Option<&str>,
) -> (Option<RunReport>, Vec<String>, Vec<String>) {
    let rt = runtime();
    rt.block_on(async {
        let rec = tiny_server(200, "ok").await;
        let text = text
            .replace("@CHECK@", fixtures::SCRIPTED_CHECK)
            .replace("@ACTION@", fixtures::SCRIPTED_ACTION)
            .replace("@REC@", &rec.addr.to_string());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rb.toml");
        let host = host_with_cache(None);
        let plan = match runbook::plan(
            &host,
            &Source {
                path: &path,
                text: &text,
            },
            &opts,
        )
        .await
        {
            Ok(p) => p,
            Err(d) => panic!(
                "invalid runbook: {}",
                runbook::Report {
                    path: "rb.toml",
                    text: &text,
                    diagnostics: &d
                }
            ),
        };
        let mut events = Vec::new();
        let cancel = executor::Cancel::new();
        let mut observer = |e: &Event<'_>| {
            if let Event::StepStarted { id, .. } = e
                && Some(*id) == abort_at
            {
                cancel.abort();
            }
            events.push(match e {
                Event::RunStarted { .. } => "run".to_string(),
                Event::PhaseStarted { phase, .. } => format!("phase {phase:?}"),
                Event::StepStarted { id, .. } => format!("start {id}"),
                Event::Baking { id, wait } => format!("bake {id} {wait:?}"),
                Event::AttemptFinished { id, attempt, .. } => {
                    format!("again {id} after {}", attempt.number)
                }
                Event::TargetFinished { id, target, .. } => {
                    format!("target {id} {}", target.target)
                }
                Event::StepFinished { report } => format!(
                    "{} {}",
                    report.id,
                    serde_json::to_value(&report.status).unwrap()["status"]
                        .as_str()
                        .unwrap()
                ),
                Event::ApprovalRequested { id, .. } => format!("approval? {id}"),
                Event::ApprovalDecided { id, decision } => format!("approval {id} {decision:?}"),
                Event::RunFinished { report } => format!("end {:?}", report.outcome),
            })
        };
        let run_opts = RunOptions {
            cancel: cancel.clone(),
            ..RunOptions::default()
        };
        let report = executor::execute(&host, &plan, run_opts, &mut observer).await;
        let paths = rec.paths.lock().unwrap().clone();
        (report, events, paths)
    })
}

fn run(text: &str) -> (RunReport, Vec<String>, Vec<String>) {
    run_with(text, PlanOptions::default())
}

fn step<'a>(r: &'a RunReport, id: &str) -> &'a medic::executor::StepReport {
    r.steps.iter().find(|s| s.id == id).unwrap_or_else(|| {
        panic!(
            "no step {id} in {:?}",
            r.steps.iter().map(|s| &s.id).collect::<Vec<_>>()
        )
    })
}

fn runbook(extra_head: &str, body: &str) -> String {
    format!("[runbook]\nname = \"t\"\n{extra_head}\n{CHECK}{ACTION}{body}")
}

#[test]
fn transient_errors_are_retried_with_backoff_and_permanent_ones_are_not() {
    let body = "[[steps]]\nid = \"flaky\"\nuses = \"act\"\nretry = { attempts = 4, backoff = \"100ms\", jitter = false }\nwith = { mode = \"transient\", fail_times = 2 }\n\n\
                [[steps]]\nid = \"broken\"\nuses = \"act\"\nretry = { attempts = 4, backoff = \"100ms\" }\nwith = { mode = \"permanent\" }\n";
    let started = Instant::now();
    let (r, events, _) = run(&runbook("", body));
    let flaky = step(&r, "flaky");
    assert_eq!(flaky.status, StepStatus::Succeeded);
    assert_eq!(flaky.attempts.len(), 3);
    assert_eq!(
        flaky.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3],
        "the plugin is told its attempt number"
    );
    // 100 ms then 200 ms of backoff between the three attempts.
    let gap = |a: usize| flaky.attempts[a + 1].started_ms - flaky.attempts[a].started_ms;
    assert!(
        gap(0) >= 100 && gap(1) >= 200,
        "backoff gaps {} and {} ms",
        gap(0),
        gap(1)
    );
    assert!(
        flaky.summary.ends_with("(attempt 3 of 4)"),
        "{}",
        flaky.summary
    );
    assert!(
        events.contains(&"again flaky after 1".to_string()),
        "{events:?}"
    );

    let broken = step(&r, "broken");
    assert_eq!(
        broken.attempts.len(),
        1,
        "a permanent error must not be retried"
    );
    assert!(matches!(broken.status, StepStatus::Errored { .. }));
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn retry_on_any_retries_failed_checks_too() {
    let body = "[[steps]]\nid = \"wobbly\"\nuses = \"check\"\nretry = { attempts = 3, backoff = \"10ms\", on = \"any\" }\nwith = { mode = \"fail\", fail_times = 2 }\n";
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(step(&r, "wobbly").attempts.len(), 3);
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    let body = "[[steps]]\nid = \"wobbly\"\nuses = \"check\"\nretry = { attempts = 3, backoff = \"10ms\" }\nwith = { mode = \"fail\", fail_times = 2 }\n";
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(
        step(&r, "wobbly").attempts.len(),
        1,
        "a failed check is not transient"
    );
    assert_eq!(r.outcome, RunOutcome::Failed);
}

#[test]
fn conditions_skip_steps_and_see_earlier_results() {
    let body = "[params.force]\ntype = \"bool\"\ndefault = false\n\n\
                [[steps]]\nid = \"probe\"\nuses = \"check\"\non_failure = \"continue\"\nwith = { mode = \"fail\" }\n\n\
                [[steps]]\nid = \"only_if_forced\"\nuses = \"act\"\nwhen = \"params.force\"\n\n\
                [[steps]]\nid = \"first\"\nuses = \"act\"\nwith = { echo = \"one\" }\n\n\
                [[steps]]\nid = \"second\"\nuses = \"act\"\nwith = { echo = \"two\" }\n\n\
                [[steps]]\nid = \"repair\"\nuses = \"act\"\nwhen = \"steps.probe.status == 'failed'\"\nwith = { echo = \"{{ steps.probe.summary }} then {{ steps.first.outputs.value }} {{ steps.second.outputs.value }}\" }\n";
    let (r, _, _) = run(&runbook("", body));
    // Steps with nothing to render build no template view; the ones after them still see
    // every step before, however many ran without one.
    assert!(
        step(&r, "repair").summary.ends_with(" then one two"),
        "{}",
        step(&r, "repair").summary
    );
    assert_eq!(
        step(&r, "only_if_forced").status,
        StepStatus::Skipped {
            reason: "`params.force` is false".into()
        }
    );
    assert_eq!(step(&r, "repair").status, StepStatus::Succeeded);
    assert!(
        step(&r, "repair").summary.contains("call 1: "),
        "{}",
        step(&r, "repair").summary
    );
    let (r, _, _) = run_with(
        &runbook("", body),
        PlanOptions {
            params: vec![("force".into(), "true".into())],
            environment: None,
            defer_secrets: false,
            sourced: None,
        },
    );
    assert_eq!(step(&r, "only_if_forced").status, StepStatus::Succeeded);
}

#[test]
fn gates_pass_after_consecutive_successes_and_fail_on_limits() {
    // Fails twice, then passes: with successes = 2 the gate passes on the 4th check.
    let body = "[[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"50ms\", successes = 2, failures = 3, timeout = \"10s\" }\nwith = { mode = \"fail\", fail_times = 2 }\n";
    let (r, events, _) = run(&runbook("", body));
    let bake = step(&r, "bake");
    assert_eq!(bake.status, StepStatus::Succeeded, "{}", bake.summary);
    assert_eq!(bake.attempts.len(), 4);
    assert!(
        bake.summary
            .starts_with("passed 2 times in a row (4 checks)"),
        "{}",
        bake.summary
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("again bake"))
            .count(),
        3
    );

    let body = "[[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"20ms\", successes = 2, failures = 2, timeout = \"10s\" }\nwith = { mode = \"fail\", fail_times = 5 }\n";
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(step(&r, "bake").status, StepStatus::Failed);
    assert!(
        step(&r, "bake")
            .summary
            .starts_with("failed 2 times (2 checks)"),
        "{}",
        step(&r, "bake").summary
    );

    // Inconclusive checks count neither way: the gate ends at its time limit.
    let body = "[[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"100ms\", successes = 1, failures = 1, timeout = \"450ms\" }\nwith = { mode = \"inconclusive\" }\n";
    let started = Instant::now();
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(step(&r, "bake").status, StepStatus::Failed);
    assert!(
        step(&r, "bake")
            .summary
            .starts_with("did not pass 1 times in a row within 450ms"),
        "{}",
        step(&r, "bake").summary
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn on_failure_abort_continue_and_finally() {
    let body = "[[steps]]\nid = \"a\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n[[steps]]\nid = \"b\"\nuses = \"check\"\n\n[[finally]]\nid = \"cleanup\"\nuses = \"act\"\n";
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert!(
        r.steps.iter().all(|s| s.id != "b"),
        "abort must stop the run"
    );
    assert_eq!(
        step(&r, "cleanup").status,
        StepStatus::Succeeded,
        "finally always runs"
    );
    assert_eq!(step(&r, "cleanup").phase, Phase::Finally);

    let (r, _, _) = run(&runbook("on_failure = \"continue\"", body));
    assert_eq!(
        r.outcome,
        RunOutcome::Succeeded,
        "a tolerated failure does not fail the run"
    );
    assert_eq!(step(&r, "b").status, StepStatus::Succeeded);
    assert_eq!(step(&r, "cleanup").status, StepStatus::Succeeded);

    let ok = "[[steps]]\nid = \"a\"\nuses = \"check\"\n\n[[finally]]\nid = \"cleanup\"\nuses = \"act\"\n";
    let (r, _, _) = run(&runbook("", ok));
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    assert_eq!(step(&r, "cleanup").status, StepStatus::Succeeded);
}

const THREE_ACTIONS: &str = "[[steps]]\nid = \"one\"\nuses = \"act\"\nrollback = \"revert\"\nwith = { record_url = \"http://@REC@\", echo = \"first\" }\n\n\
    [[steps]]\nid = \"two\"\nuses = \"act\"\nrollback = \"revert\"\nwith = { record_url = \"http://@REC@\", echo = \"second\" }\n\n\
    [[steps]]\nid = \"skipped\"\nuses = \"act\"\nwhen = \"false\"\nrollback = \"revert\"\n\n\
    [[steps]]\nid = \"three\"\nuses = \"act\"\nrollback = \"revert\"\nwith = { record_url = \"http://@REC@\", mode = \"permanent\" }\n\n\
    [[steps]]\nid = \"never\"\nuses = \"act\"\nrollback = \"revert\"\nwith = { record_url = \"http://@REC@\" }\n\n\
    [[rollback]]\nid = \"after_undo\"\nuses = \"act\"\nwith = { record_url = \"http://@REC@\" }\n\n\
    [[finally]]\nid = \"always\"\nuses = \"act\"\nwith = { record_url = \"http://@REC@\" }\n";

#[test]
fn rollback_runs_in_reverse_order_then_verifies() {
    let verify_ok = "\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\nwith = { record_url = \"http://@REC@\" }\n";
    let (r, events, paths) = run(&runbook(
        "on_failure = \"rollback\"",
        &format!("{THREE_ACTIONS}{verify_ok}"),
    ));
    assert_eq!(r.outcome, RunOutcome::RolledBack, "{events:?}");
    assert_eq!(
        paths,
        [
            "/run/one",
            "/run/two",
            "/run/three",
            // newest first; the failed step is undone too (it may have half-changed things)
            "/revert/three.rollback",
            "/revert/two.rollback",
            "/revert/one.rollback",
            "/run/after_undo",
            "/run/healthy",
            "/run/always",
        ]
    );
    // A revert receives the outputs of the run it undoes.
    assert_eq!(step(&r, "two.rollback").summary, "undid second");
    assert_eq!(step(&r, "three.rollback").summary, "undid nothing");
    assert_eq!(step(&r, "healthy").phase, Phase::Verify);
    assert!(
        events.contains(&"phase Rollback".to_string())
            && events.contains(&"phase Verify".to_string())
    );
}

#[test]
fn failing_verify_or_revert_means_rollback_failed() {
    let verify_bad =
        "\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n";
    let (r, _, _) = run(&runbook(
        "on_failure = \"rollback\"",
        &format!("{THREE_ACTIONS}{verify_bad}"),
    ));
    assert_eq!(r.outcome, RunOutcome::RollbackFailed);

    let verify_ok = "\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\n";
    let broken_revert = THREE_ACTIONS.replacen(
        "echo = \"second\"",
        "echo = \"second\", revert_mode = \"permanent\"",
        1,
    );
    let (r, _, paths) = run(&runbook(
        "on_failure = \"rollback\"",
        &format!("{broken_revert}{verify_ok}"),
    ));
    assert_eq!(r.outcome, RunOutcome::RollbackFailed);
    assert!(matches!(
        step(&r, "two.rollback").status,
        StepStatus::Errored { .. }
    ));
    // One failed revert does not stop the others: undo as much as possible.
    assert!(
        paths.contains(&"/revert/one.rollback".to_string()),
        "{paths:?}"
    );
}

#[test]
fn an_abort_seen_first_by_a_rollback_gate_leaves_the_run_without_a_verdict() {
    // The abort is raised from inside the executor, as the verify gate starts: the gate sees
    // its undo view cancelled and fails within the same poll. Racing the future against
    // `Cancel::aborted` cannot see that first, so the executor itself must not report the
    // cut-off rollback as failed (CI once saw exactly that: exit 5, "rollback failed").
    let verify = "\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\n\
                  gate = { interval = \"100ms\", successes = 3, timeout = \"20s\" }\n";
    let (r, events, paths) = run_aborting(
        &runbook(
            "on_failure = \"rollback\"",
            &format!("{THREE_ACTIONS}{verify}"),
        ),
        PlanOptions::default(),
        Some("healthy"),
    );
    assert!(
        r.is_none(),
        "an aborted run has no verdict: {:?}",
        r.map(|r| r.outcome)
    );
    assert!(
        events.iter().all(|e| !e.starts_with("end ")),
        "no RunFinished: {events:?}"
    );
    assert!(
        events.contains(&"start healthy".to_string())
            && paths.contains(&"/revert/one.rollback".to_string()),
        "the abort came during the verify, after the undo: {events:?} {paths:?}"
    );
    assert!(
        !paths.contains(&"/run/always".to_string()),
        "nothing more runs after an abort, finally steps included: {paths:?}"
    );
}

/// The three actions with their rollback, aborted from inside the executor as the step `at`
/// starts (as the recorder aborts a run whose write failed: that step's start was not
/// recorded). The run has no verdict; the events and the paths the plugins acted on.
fn aborted_at(at: &str) -> (Vec<String>, Vec<String>) {
    let verify = "\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\n";
    let (r, events, paths) = run_aborting(
        &runbook(
            "on_failure = \"rollback\"",
            &format!("{THREE_ACTIONS}{verify}"),
        ),
        PlanOptions::default(),
        Some(at),
    );
    assert!(r.is_none(), "an aborted run has no verdict");
    assert!(events.contains(&format!("start {at}")), "{events:?}");
    (events, paths)
}

/// An action whose start could not be recorded does not act, although the executor goes on
/// to its call before the run is dropped at its next wait; nothing after it acts either.
#[test]
fn an_action_whose_start_was_not_recorded_does_not_act() {
    let (events, paths) = aborted_at("two");
    assert_eq!(paths, ["/run/one"], "{events:?}");
}

/// The same for an undo: a revert whose start could not be recorded does not act, and no
/// undo after it does either.
#[test]
fn a_revert_whose_start_was_not_recorded_does_not_act() {
    let (events, paths) = aborted_at("two.rollback");
    let acted = [
        "/run/one",
        "/run/two",
        "/run/three",
        "/revert/three.rollback",
    ];
    assert_eq!(paths, acted, "{events:?}");
}

#[test]
fn rollback_calls_see_the_steps_outputs() {
    let body = "[[steps]]\nid = \"deploy\"\nuses = \"act\"\nwith = { echo = \"v2\" }\nrollback = { uses = \"act\", with = { echo = \"undo {{ steps.deploy.outputs.value }}\", record_url = \"http://@REC@\" } }\n\n\
                [[steps]]\nid = \"check_it\"\nuses = \"check\"\non_failure = \"rollback\"\nwith = { mode = \"fail\" }\n\n[[verify]]\nid = \"healthy\"\nuses = \"check\"\n";
    let (r, _, paths) = run(&runbook("", body));
    assert_eq!(r.outcome, RunOutcome::RolledBack);
    assert_eq!(step(&r, "deploy.rollback").summary, "call 1: undo v2");
    assert_eq!(paths, ["/run/deploy.rollback"]);
}

#[test]
fn secrets_never_appear_in_output_or_record() {
    let secret = "s3cr3t-token-value";
    // SAFETY: tests in this binary that read the environment do not read this variable.
    unsafe { std::env::set_var("MEDIC_TEST_SECRET_TOKEN", secret) };
    let body = "[params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"MEDIC_TEST_SECRET_TOKEN\"\n\n\
                [params.tag]\ntype = \"string\"\nsecret = true\nfrom_env = \"MEDIC_TEST_SECRET_TOKEN\"\n\n\
                [[steps]]\nid = \"leaky\"\nuses = \"act\"\nwith = { token = \"{{ params.token }}\", echo = \"tag={{ params.tag }}\", record_url = \"http://@REC@\" }\n";
    let (r, _, _) = run(&runbook("", body));
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains(secret),
        "the secret leaked into the record: {json}"
    );
    let leaky = step(&r, "leaky");
    assert!(leaky.summary.contains("token=••••••"), "{}", leaky.summary);
    assert!(
        leaky
            .params
            .iter()
            .any(|(k, v)| k == "token" && v.to_string() == "••••••")
    );
    // A parameter rendered from a secret is masked whole, not just the secret inside it.
    assert!(
        leaky
            .params
            .iter()
            .any(|(k, v)| k == "echo" && v.to_string() == "••••••")
    );
    let logs: Vec<&str> = leaky.attempts[0]
        .invocation
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert!(
        // `echo` is rendered from the secret, so its whole value is secret too.
        logs.iter().any(|l| l.contains("echo •••••• token=••••••")),
        "{logs:?}"
    );
}
