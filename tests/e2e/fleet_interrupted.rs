//! Fleet steps interrupted: a run killed (SIGKILL) or stopped (SIGTERM) mid-fleet or after
//! it, resumed or rolled back by another process, and a store daemon that stops answering
//! or is killed mid-fleet; slow targets (each held by a test server) and fast ones (ends
//! told in groups, sharing flushes), with long forms of the kill campaigns
//! (`MEDIC_FLEET_KILLS=N`).

use std::time::Duration;

use crate::cli::{medic, stderr, stdout};
use crate::fleet::{runbook, witness};
use crate::recovery::{Rng, check_journal, kill_mid, on_store};

/// `medic run RB --output json`, read until `n` targets were shown: the child, its run id,
/// the targets shown, and its output and errors to come (each line waited for at most 60
/// s). A run that ends first fails the test.
fn run_until_targets(
    cache: &std::path::Path,
    rb: &str,
    n: usize,
) -> (
    std::process::Child,
    String,
    Vec<String>,
    crate::verdicts::Lines,
    crate::verdicts::Lines,
) {
    let (child, mut out, mut err) = json_run(cache, rb);
    let mut run_id = String::new();
    let mut shown = Vec::new();
    while let Some(line) = out.next_line() {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "run_started" {
            run_id = event["run_id"].as_str().unwrap().to_owned();
        }
        if event["event"] == "target_finished" {
            shown.push(event["target"]["target"].as_str().unwrap().to_owned());
            if shown.len() == n {
                return (child, run_id, shown, out, err);
            }
        }
    }
    panic!("the fleet ended early: {shown:?}\n{}", err.rest());
}

/// The targets a run's export journaled, in its order.
fn journaled_targets(record: &serde_json::Value) -> Vec<&str> {
    record["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "target_finished")
        .map(|e| e["report"]["target"].as_str().unwrap())
        .collect()
}

/// A `medic run` of a six-target fleet (two at a time, each call held 300 ms), killed with
/// SIGKILL once two targets have ended. Returns the run id and the targets that ended.
fn killed_fleet(cache: &std::path::Path, rb: &str) -> (String, Vec<String>) {
    let (mut child, run_id, ended, _, _) = run_until_targets(cache, rb, 2);
    child.kill().unwrap();
    child.wait().unwrap();
    // The two targets that ended are on record, each as it ended.
    let o = medic(cache, &["runs", "export", &run_id]);
    let record: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(journaled_targets(&record), ended, "{record}");
    (run_id, ended)
}

const KILLABLE: &str = "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
     with = { record_url = \"@REC@\", echo = \"{{ target }}\" }\n\
     [steps.fleet]\ntargets = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\nmax_concurrency = 2\n\n\
     [[verify]]\nid = \"healthy\"\nuses = \"check\"\n";

#[test]
fn a_fleet_killed_mid_step_rolls_back_every_target() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(300));
    let rb = runbook(dir.path(), &w, KILLABLE);
    let (run_id, _) = killed_fleet(cache.path(), &rb);
    // Which targets the dead process had started is unknown, so every one is undone
    // (reverts must be safe when there is nothing to undo).
    let o = medic(cache.path(), &["runs", "rollback", &run_id]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("undid 6 targets"), "{out}");
    let mut reverted = w.targets("revert", "deploy.rollback");
    reverted.sort();
    assert_eq!(reverted, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn a_resumed_fleet_does_not_run_again_the_targets_that_succeeded() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(300));
    let rb = runbook(dir.path(), &w, KILLABLE);
    let (run_id, ended) = killed_fleet(cache.path(), &rb);
    let o = medic(cache.path(), &["runs", "resume", &run_id]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("6 of 6 targets succeeded (2 before the resume)"),
        "{out}"
    );
    let runs = w.paths();
    for t in ["a", "b", "c", "d", "e", "f"] {
        let calls = runs
            .iter()
            .filter(|p| **p == format!("/run/deploy[{t}]"))
            .count();
        if ended.iter().any(|e| e == t) {
            assert_eq!(calls, 1, "{t} succeeded before the kill: {runs:?}");
            assert!(
                out.contains(&format!("call 1: {t} (before the resume)")),
                "{out}"
            );
        } else {
            // Cut off in flight (run again: actions must be idempotent) or never started.
            assert!((1..=2).contains(&calls), "{t}: {runs:?}");
        }
    }
}

#[test]
fn a_run_killed_after_its_fleet_step_is_rolled_back_by_another_process_for_the_targets_that_ran() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(300));
    // `c` fails and nothing after it starts (max_errors 0); the failure is tolerated and the
    // run goes on to `slow`, where it is killed. The process that rolls it back knows which
    // targets ran only from the journal: the step's end counts them, each target's own entry
    // says whether it ran.
    let rb = runbook(
        dir.path(),
        &w,
        "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"continue\"\nrollback = \"revert\"\n\
         with = { record_url = \"@REC@\", echo = \"{{ target }}\", mode = \"{% if target == 'c' %}permanent{% else %}ok{% endif %}\" }\n\
         [steps.fleet]\ntargets = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\nmax_errors = 0\n\n\
         [[steps]]\nid = \"slow\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
         with = { record_url = \"@REC@\" }\n\n\
         [[verify]]\nid = \"healthy\"\nuses = \"check\"\n",
    );
    let (mut child, mut out, _err) = json_run(cache.path(), &rb);
    let mut run_id = String::new();
    let mut deploy_summary = String::new();
    while let Some(line) = out.next_line() {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "run_started" {
            run_id = event["run_id"].as_str().unwrap().to_owned();
        }
        if event["event"] == "step_finished" && event["step"]["id"] == "deploy" {
            deploy_summary = event["step"]["summary"].as_str().unwrap().to_owned();
        }
        if event["event"] == "step_started" && event["step"] == "slow" {
            break;
        }
    }
    // Inside `slow`'s call (the witness holds it 300 ms).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        deploy_summary.contains("not started: d, e, f (more than max_errors 0 failed)"),
        "{deploy_summary}"
    );
    let o = medic(cache.path(), &["runs", "rollback", &run_id]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("undid 3 targets"), "{out}");
    let reverted: Vec<String> = w
        .paths()
        .into_iter()
        .filter_map(|p| p.strip_prefix("/revert/").map(str::to_owned))
        .collect();
    // Newest first; `c` too (an action may fail half-way); never the targets that did not run.
    assert_eq!(
        reverted,
        [
            "slow.rollback",
            "deploy.rollback[c]",
            "deploy.rollback[b]",
            "deploy.rollback[a]"
        ]
    );
}

#[test]
fn sigterm_mid_fleet_lets_the_targets_in_flight_finish_and_undoes_exactly_those_that_ran() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(300));
    let rb = runbook(dir.path(), &w, KILLABLE);
    let (mut child, mut out, _err) = json_run(cache.path(), &rb);
    let mut ended = 0;
    let mut summary = String::new();
    let mut signalled = false;
    // Bounded: the run ends by itself in about a second (6 targets, 2 at a time, 300 ms),
    // and each line is waited for at most 60 s.
    while let Some(line) = out.next_line() {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "target_finished" {
            ended += 1;
            if ended == 2 && !signalled {
                // Once the next two targets' calls are in flight (the witness holds them).
                for _ in 0..200 {
                    if w.paths().iter().filter(|p| p.starts_with("/run/")).count() == 4 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                crate::verdicts::signal(child.id(), crate::verdicts::SIGTERM);
                signalled = true;
            }
        }
        if event["event"] == "step_finished" && event["step"]["id"] == "deploy" {
            summary = event["step"]["summary"].as_str().unwrap().to_owned();
        }
    }
    let status = crate::verdicts::wait(&mut child);
    assert!(signalled);
    assert_eq!(status, Some(6), "{summary}");
    let mut ran = w.targets("run", "deploy");
    // The two in flight at the signal finished; nothing started after it. Two at a time:
    // within a pair, either may reach the server first.
    assert_eq!(ran.len(), 4, "{ran:?} {summary}");
    ran[..2].sort();
    ran[2..].sort();
    assert_eq!(ran, ["a", "b", "c", "d"], "{summary}");
    assert!(
        summary.ends_with("4 of 6 targets succeeded; not started: e, f (cancelled)"),
        "{summary}"
    );
    let mut reverted = w.targets("revert", "deploy.rollback");
    // Newest first, two at a time (the step's concurrency): d and c together, then b and a;
    // within a pair, either may reach the server first.
    assert_eq!(reverted.len(), 4, "{reverted:?}");
    reverted[..2].sort();
    reverted[2..].sort();
    assert_eq!(reverted, ["c", "d", "a", "b"]);
}

/// A fleet's targets that ended together are written while the next group gathers, one
/// group at most on its way. The store daemon stopped mid-fleet (as a stalled disk holds
/// it): few targets start after (those in flight, then at most two groups' worth), none
/// of them is shown, and once the daemon is killed the run stops, saying why, with every
/// target it showed on record. (The plugin keeps nothing in the store: a plugin's own
/// key-value write would wait for the daemon too, and hold its target.)
#[test]
fn a_fleet_starts_few_targets_once_the_store_daemon_stops_answering() {
    const TARGETS: usize = 30;
    const AT_ONCE: usize = 3;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(100));
    let targets: Vec<String> = (0..TARGETS).map(|i| format!("\"t{i:02}\"")).collect();
    let rb = dir.path().join("fleet.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"fleet\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"deploy\"\nuses = \"act\"\n\
             with = {{ mode = \"http\", url = \"http://{addr}/{{{{ target }}}}\" }}\n\
             [steps.fleet]\ntargets = [{}]\nmax_concurrency = {AT_ONCE}\n",
            medic::host::fixtures::HOSTILE,
            targets.join(", "),
            addr = w.addr,
        ),
    )
    .unwrap();
    let (mut child, run_id, mut shown, mut out, mut err) =
        run_until_targets(cache.path(), rb.to_str().unwrap(), AT_ONCE);
    let daemon = crate::store_daemon::daemon_pid(&cache.path().join("data"));
    crate::verdicts::signal(daemon, 19);
    let called = w.paths().len();
    // Time for the run to go on if it wrongly would: 10 rounds of targets.
    std::thread::sleep(Duration::from_millis(1500));
    let called_after = w.paths().len();
    crate::verdicts::signal(daemon, 9);
    let seen = out.seen.len();
    let rest: Vec<String> = out.rest()[seen..].lines().map(str::to_owned).collect();
    let status = crate::verdicts::wait(&mut child);
    let err = err.rest().to_owned();
    assert!(
        called_after - called <= 3 * AT_ONCE && called_after < TARGETS,
        "targets called once the daemon stopped: {} (of {TARGETS}, {called} before)",
        called_after - called
    );
    assert!(err.contains("cannot record the run"), "{err}{rest:#?}");
    assert_eq!(status, Some(3), "{err}");
    for line in &rest {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_ne!(event["event"], "step_finished", "{rest:#?}");
        if event["event"] == "target_finished" {
            shown.push(event["target"]["target"].as_str().unwrap().to_owned());
        }
    }
    // What was shown is on record (the next command's daemon finds the run's process gone).
    let o = medic(cache.path(), &["runs", "export", &run_id]);
    let record: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(record["record"]["status"], "interrupted", "{record}");
    let journaled = journaled_targets(&record);
    for target in &shown {
        assert!(
            journaled.contains(&target.as_str()),
            "{target} shown, not recorded: {journaled:?}"
        );
    }
}

#[test]
fn sigkill_inside_a_fleet_loses_no_shown_target_though_targets_share_flushes() {
    let cache = tempfile::tempdir().unwrap();
    // Targets that finish together (ten at a time, each call 5 ms) are told together and
    // flushed once: a kill between their journaling and that flush must show none of them.
    let targets: Vec<String> = (0..60).map(|i| format!("\"t{i}\"")).collect();
    let rb = cache.path().join("fleet.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"fleet\"\n[plugins.work]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"all\"\nuses = \"work\"\nwith = {{ mode = \"sleep\", sleep = \"5ms\" }}\n\
             [steps.fleet]\ntargets = [{}]\nmax_concurrency = 10\n",
            medic::host::fixtures::HOSTILE,
            targets.join(", ")
        ),
    )
    .unwrap();
    let rb = rb.to_str().unwrap();
    let warm = medic(cache.path(), &["validate", rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let mut rng = Rng(0xf1ee7);
    let (mut shown, mut lost) = (0, 0);
    for i in 0..12 {
        let lines = 2 + rng.below(50);
        let Some(killed) = kill_mid(cache.path(), None, &["run", rb], lines, rng.below(3000), i)
        else {
            continue;
        };
        check_journal(&killed.export);
        for k in killed.shown() {
            shown += usize::from(k.starts_with("target"));
        }
        lost += killed.unrecorded().len();
    }
    assert_eq!(lost, 0, "shown targets were lost");
    assert!(
        shown >= 60,
        "only {shown} targets were shown before the kills"
    );
}

/// Targets that take no time, 50 at a time: their ends are held on the call threads and told
/// in groups, each group waking the run once (`host::pool`), and a group told together is
/// flushed once. A kill anywhere in that loses no target shown, and another process resuming
/// the run calls every target not on record once and none on record again, also when that
/// resume is itself killed and the run resumed once more (a target kept through both says
/// so once). Eight kills here; `MEDIC_FLEET_KILLS=N` runs the long form.
#[test]
fn sigkill_amid_fast_targets_told_in_groups_loses_none_shown_and_a_resume_calls_each_once() {
    fast_fleet_killed(None, fleet_kills(8));
}

/// The same on PostgreSQL, where the run's own process commits each group: killed, it takes
/// with it whatever it had not committed, and showed none of that.
#[test]
fn on_postgres_sigkill_amid_fast_targets_loses_none_shown_and_a_resume_calls_each_once() {
    fast_fleet_killed(Some(&crate::pglab::database()), fleet_kills(6));
}

/// Kills `medic run` of [`fast_fleet`] `kills` times, on the store at `store` or the
/// embedded one, and resumes every other run cut short in a new process; every other of
/// those resumes is killed too, and the run resumed again.
fn fast_fleet_killed(store: Option<&str>, kills: u64) {
    let cache = tempfile::tempdir().unwrap();
    let (rb, names) = fast_fleet(cache.path());
    let rb = rb.as_str();
    let medic = |args: &[&str]| on_store(cache.path(), store).args(args).output().unwrap();
    let targets_of = |export: &serde_json::Value| -> Vec<(String, String)> {
        export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "target_finished")
            .map(|e| {
                let r = &e["report"];
                (
                    r["target"].as_str().unwrap().to_owned(),
                    r["summary"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut rng = Rng(0xfa57_f1ee7);
    let (mut shown, mut lost, mut resumed, mut resumes_killed) = (0, 0, 0, 0);
    for i in 0..kills {
        let lines = 2 + rng.below(FAST_TARGETS as u64);
        let Some(killed) = kill_mid(cache.path(), store, &["run", rb], lines, rng.below(3000), i)
        else {
            continue;
        };
        check_journal(&killed.export);
        shown += killed
            .shown()
            .iter()
            .filter(|k| k.starts_with("target"))
            .count();
        lost += killed.unrecorded().len();
        let before = targets_of(&killed.export);
        let on_record: std::collections::BTreeSet<&str> =
            before.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            on_record.len(),
            before.len(),
            "kill {i}: a target journaled twice"
        );
        // A run may have ended on record before the kill cut off the printing of its end.
        let cut = killed.export["record"]["status"] != "succeeded";
        if !cut || i % 2 == 1 {
            continue;
        }
        let id = killed.printed[0]["run_id"].as_str().unwrap();
        // Every other resume is itself killed, then the run is resumed again.
        let mut done = false;
        if i % 4 == 0 {
            let lines = 2 + rng.below(FAST_TARGETS as u64);
            let resume = ["runs", "resume", id];
            let k = kill_mid(cache.path(), store, &resume, lines, rng.below(3000), i)
                .unwrap_or_else(|| panic!("kill {i}: the resume did not say it began"));
            check_journal(&k.export);
            lost += k.unrecorded().len();
            // Killed after its end, it left nothing to resume.
            done = k.export["record"]["status"] == "succeeded";
            resumes_killed += usize::from(!done);
        }
        if !done {
            let o = medic(&["runs", "resume", id]);
            assert_eq!(o.status.code(), Some(0), "kill {i}: {}", stderr(&o));
            assert!(
                stdout(&o).contains(&format!(
                    "{FAST_TARGETS} of {FAST_TARGETS} targets succeeded"
                )),
                "kill {i}: {}",
                stdout(&o)
            );
        }
        let export: serde_json::Value =
            serde_json::from_str(&stdout(&medic(&["runs", "export", id]))).unwrap();
        check_journal(&export);
        assert_eq!(export["record"]["status"], "succeeded", "kill {i}");
        // Kept through two resumes, a target says so once.
        for (t, summary) in targets_of(&export) {
            assert!(
                summary.matches("(before the resume)").count() <= 1,
                "kill {i}: {t}: {summary}"
            );
        }
        // Called after the kill: every target not on record, each once.
        let mut called: Vec<String> = targets_of(&export)[before.len()..]
            .iter()
            .filter(|(_, summary)| !summary.ends_with("(before the resume)"))
            .map(|(t, _)| t.clone())
            .collect();
        called.sort();
        let missing: Vec<&String> = names
            .iter()
            .filter(|t| !on_record.contains(t.as_str()))
            .collect();
        assert_eq!(
            called.iter().collect::<Vec<_>>(),
            missing,
            "kill {i}: the resume called exactly the targets not on record"
        );
        // And each target on record at the kill (all succeeded) is kept, saying so (so are
        // those a killed resume called before its own kill).
        let after = targets_of(&export);
        let kept: std::collections::BTreeSet<&str> = after[before.len()..]
            .iter()
            .filter(|(_, summary)| summary.ends_with("(before the resume)"))
            .map(|(t, _)| t.as_str())
            .collect();
        assert!(
            on_record.is_subset(&kept),
            "kill {i}: not kept by the resume: {:?}",
            on_record.difference(&kept).collect::<Vec<_>>()
        );
        resumed += 1;
    }
    eprintln!(
        "{kills} kills: {shown} targets shown, {resumed} runs resumed ({resumes_killed} of them killed mid-resume and resumed again)"
    );
    assert_eq!(lost, 0, "shown targets were lost");
    assert!(resumed >= 1, "no kill left a run to resume");
}

/// Targets in the fast fleet ([`fast_fleet`]).
const FAST_TARGETS: usize = 400;

/// A runbook of [`FAST_TARGETS`] targets whose calls take no time, 50 at a time, in `dir`:
/// its path, and the targets' names.
fn fast_fleet(dir: &std::path::Path) -> (String, Vec<String>) {
    let names: Vec<String> = (0..FAST_TARGETS).map(|i| format!("t{i:03}")).collect();
    let listed: Vec<String> = names.iter().map(|t| format!("{t:?}")).collect();
    let rb = dir.join("fast-fleet.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"fast-fleet\"\n[plugins.work]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"all\"\nuses = \"work\"\nwith = {{ mode = \"ok\" }}\n\
             [steps.fleet]\ntargets = [{}]\nmax_concurrency = 50\n",
            medic::host::fixtures::HOSTILE,
            listed.join(", ")
        ),
    )
    .unwrap();
    let rb = rb.to_str().unwrap().to_owned();
    let warm = medic(dir, &["validate", &rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    (rb, names)
}

/// How many kills a campaign makes: `MEDIC_FLEET_KILLS` (its long form), else `short`.
fn fleet_kills(short: u64) -> u64 {
    std::env::var("MEDIC_FLEET_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(short)
}

/// The fast fleet with the store daemon killed (SIGKILL) amid its targets, where the daemon
/// takes groups of them written together and answers each group once it is durable: every
/// target the run showed is in the journal the next daemon replays, the journal is whole,
/// and the run, stopped, is not left running. Four kills here; `MEDIC_FLEET_KILLS=N` runs
/// the long form.
#[test]
fn the_store_daemon_killed_amid_fast_targets_loses_no_target_shown() {
    let kills = fleet_kills(4);
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let (rb, _) = fast_fleet(cache.path());
    let mut rng = Rng(0xdead_f1ee7);
    let (mut shown, mut stopped) = (0, 0);
    for i in 0..kills {
        let (mut child, mut out, _err) = json_run(cache.path(), &rb);
        for _ in 0..2 + rng.below(FAST_TARGETS as u64) {
            if out.next_line().is_none() {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        crate::store_daemon::kill_daemon(&data);
        // The run finds its store gone and stops by itself; what it printed until then was
        // shown too.
        out.rest();
        let status = crate::verdicts::wait(&mut child);
        let printed: Vec<serde_json::Value> = out
            .seen
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        stopped += usize::from(status != Some(0));
        let id = printed[0]["run_id"].as_str().unwrap().to_owned();
        let o = medic(cache.path(), &["runs", "export", &id]);
        assert_eq!(o.status.code(), Some(0), "kill {i}: {}", stderr(&o));
        let killed = crate::recovery::Killed {
            printed,
            export: serde_json::from_str(&stdout(&o)).unwrap(),
        };
        check_journal(&killed.export);
        assert_ne!(killed.export["record"]["status"], "running", "kill {i}");
        shown += killed
            .shown()
            .iter()
            .filter(|k| k.starts_with("target"))
            .count();
        assert_eq!(
            killed.unrecorded(),
            Vec::<String>::new(),
            "kill {i}: shown but not recorded"
        );
    }
    eprintln!("{kills} daemon kills: {shown} targets shown, {stopped} runs stopped by them");
    assert!(stopped >= 1, "no kill landed inside a run");
}

/// SIGTERM, Ctrl-C's SIGINT and a closed terminal's SIGHUP, in turn, amid a fleet of 200
/// quick targets, 50 at a time (each call one request to a server that answers at once):
/// the targets in flight finish, none starts after, and the rollback undoes exactly the
/// targets that ran, each once, whatever group their ends were told in. Three signals at
/// seeded points here; `MEDIC_FLEET_KILLS=N` runs the long form.
#[test]
fn a_signal_amid_quick_targets_stops_the_fleet_and_undoes_exactly_those_that_ran() {
    use crate::verdicts::{SIGHUP, SIGINT, SIGTERM};
    const TARGETS: usize = 200;
    let names: Vec<String> = (0..TARGETS).map(|i| format!("t{i:03}")).collect();
    let listed: Vec<String> = names.iter().map(|t| format!("{t:?}")).collect();
    let cache = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5167_7e4d);
    let (mut signalled, mut ran_in_all) = (0, 0);
    for round in 0..fleet_kills(3) {
        let by = [SIGTERM, SIGINT, SIGHUP][round as usize % 3];
        let dir = tempfile::tempdir().unwrap();
        let w = witness(Duration::ZERO);
        let rb = runbook(
            dir.path(),
            &w,
            &format!(
                "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
                 with = {{ record_url = \"@REC@\", echo = \"{{{{ target }}}}\" }}\n\
                 [steps.fleet]\ntargets = [{}]\nmax_concurrency = 50\n\n\
                 [[verify]]\nid = \"healthy\"\nuses = \"check\"\n",
                listed.join(", ")
            ),
        );
        let (mut child, mut out, _err) = json_run(cache.path(), &rb);
        let at = 1 + rng.below(TARGETS as u64 - 60) as usize;
        let (mut ended, mut sent) = (0, false);
        let mut summary = String::new();
        let mut run_id = String::new();
        // Bounded: each line is waited for at most 60 s, the run's end as long.
        while let Some(line) = out.next_line() {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["event"] == "run_started" {
                run_id = event["run_id"].as_str().unwrap().to_owned();
            }
            if event["event"] == "target_finished" {
                ended += 1;
                if ended == at && !sent {
                    crate::verdicts::signal(child.id(), by);
                    sent = true;
                }
            }
            if event["event"] == "step_finished" && event["step"]["id"] == "deploy" {
                summary = event["step"]["summary"].as_str().unwrap().to_owned();
            }
        }
        let status = crate::verdicts::wait(&mut child);
        let mut ran = w.targets("run", "deploy");
        if ran.len() == TARGETS {
            // Every target was called before the signal was seen: nothing to compare.
            assert!(matches!(status, Some(0 | 6)), "{summary}");
            continue;
        }
        signalled += 1;
        ran_in_all += ran.len();
        assert_eq!(status, Some(6), "round {round} (signal {by}): {summary}");
        ran.sort();
        let unique = ran.len();
        ran.dedup();
        assert_eq!(ran.len(), unique, "round {round}: a target called twice");
        assert!(
            summary.starts_with(&format!(
                "{} of {TARGETS} targets succeeded; not started: ",
                ran.len()
            )) && summary.ends_with("(cancelled)"),
            "round {round}: {} ran: {summary}",
            ran.len()
        );
        let mut reverted = w.targets("revert", "deploy.rollback");
        reverted.sort();
        assert_eq!(reverted, ran, "round {round}: undone, each once: what ran");
        // And the journal has each that ran, as it ended.
        let o = medic(cache.path(), &["runs", "export", &run_id]);
        let export: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let mut journaled: Vec<String> = export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "target_finished"
                    && e["step"] == "deploy"
                    && e["report"]["status"]["status"] == "succeeded"
            })
            .map(|e| e["report"]["target"].as_str().unwrap().to_owned())
            .collect();
        journaled.sort();
        assert_eq!(
            journaled, ran,
            "round {round}: journaled as succeeded: what ran"
        );
    }
    eprintln!("{signalled} signals amid the fleet: {ran_in_all} targets ran and were undone");
    assert!(signalled >= 1, "no signal came before the fleet's end");
}

/// `medic run RB --output json` on the embedded store in `cache`: the child, and its output
/// and errors read line by line (each line waited for at most 60 s).
fn json_run(
    cache: &std::path::Path,
    rb: &str,
) -> (
    std::process::Child,
    crate::verdicts::Lines,
    crate::verdicts::Lines,
) {
    crate::verdicts::spawn(cache, &["run", rb, "--output", "json"])
}
