//! Crash safety: a real `medic run` killed with SIGKILL at many points loses no recorded
//! event, is found interrupted by the next process, and can be resumed or rolled back.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::cli::{medic, medic_command, stderr, stdout};

const STEPS: usize = 6;

fn crashy_runbook(dir: &Path) -> std::path::PathBuf {
    let mut text = format!(
        "[runbook]\nname = \"crashy\"\non_failure = \"rollback\"\nlock = \"crashy:{{{{ env.name }}}}\"\n\n\
         [plugins.slow]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
         [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
        medic::host::fixtures::HOSTILE,
        medic::host::fixtures::SCRIPTED_CHECK
    );
    for i in 1..=STEPS {
        text += &format!(
            "\n[[steps]]\nid = \"s{i}\"\nuses = \"slow\"\nrollback = \"revert\"\nwith = {{ mode = \"sleep\", sleep = \"40ms\" }}\n"
        );
    }
    text += "\n[[verify]]\nid = \"fine\"\nuses = \"check\"\n";
    let path = dir.join("crashy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The journal is whole: contiguous, starts with run_started, every finished step was
/// started, and the record agrees with it.
fn check_journal(export: &serde_json::Value) {
    let journal = export["journal"].as_array().unwrap();
    assert_eq!(journal[0]["type"], "run_started", "{journal:?}");
    let mut started: Vec<String> = Vec::new();
    let mut finished_main = 0;
    for e in journal {
        match e["type"].as_str().unwrap() {
            "step_started" => started.push(e["step"].as_str().unwrap().to_owned()),
            "step_finished" => {
                let id = e["report"]["id"].as_str().unwrap();
                assert!(
                    started.iter().any(|s| s == id),
                    "{id} finished but never started"
                );
                if e["report"]["phase"] == "steps" {
                    finished_main += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        export["record"]["steps_done"].as_u64().unwrap() as usize,
        finished_main,
        "the record disagrees with the journal"
    );
}

#[test]
fn sigkill_at_fifty_points_loses_nothing_and_runs_can_be_resumed_or_rolled_back() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = crashy_runbook(dir.path());
    let rb = rb.to_str().unwrap();
    // Warm the compiled-plugin cache so every run starts equally fast.
    let warm = medic(cache.path(), &["validate", rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));

    // Kill points follow the run's own progress, not the clock, so they land the same under
    // any machine load: after the k-th journaled event (run start, each step's start and end),
    // plus 0-30 ms to land mid-step (steps take 40 ms); a few before the run starts at all.
    let events_per_run = 1 + 2 * STEPS;
    let (mut interrupted, mut resumed, mut rolled_back, mut finished, mut before_start) =
        (0, 0, 0, 0, 0);
    let mut seen: std::collections::BTreeSet<String> = json_lines(&stdout(&medic(
        cache.path(),
        &["runs", "list", "--output", "json"],
    )))
    .iter()
    .map(|r| r["run_id"].as_str().unwrap().to_owned())
    .collect();
    for i in 0..50u64 {
        let mut child = medic_command(cache.path())
            .args(["run", rb, "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if i < 3 {
            std::thread::sleep(Duration::from_millis(i * 5));
        } else {
            use std::io::{BufRead, BufReader};
            let target = (i as usize) % events_per_run;
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            for _ in 0..=target {
                if lines.next().is_none() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis((i / events_per_run as u64) * 10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The next process opens the store and finds the run.
        let listed = medic(
            cache.path(),
            &["runs", "list", "--output", "json", "--limit", "1000"],
        );
        assert_eq!(
            listed.status.code(),
            Some(0),
            "kill {i}: the store does not open: {}",
            stderr(&listed)
        );
        let runs = json_lines(&stdout(&listed));
        let Some(newest) = runs
            .iter()
            .find(|r| !seen.contains(r["run_id"].as_str().unwrap()))
        else {
            before_start += 1; // killed before the run was recorded
            continue;
        };
        let id = newest["run_id"].as_str().unwrap().to_owned();
        seen.insert(id.clone());
        assert!(
            runs.iter().all(|r| r["status"] != "running"),
            "kill {i}: a run is still marked running"
        );
        let export: serde_json::Value =
            serde_json::from_str(&stdout(&medic(cache.path(), &["runs", "export", &id])))
                .expect("export is JSON");
        check_journal(&export);
        match newest["status"].as_str().unwrap() {
            "interrupted" => {
                interrupted += 1;
                assert_eq!(
                    export["journal"].as_array().unwrap().last().unwrap()["type"],
                    "run_interrupted"
                );
                if interrupted % 2 == 1 {
                    let o = medic(cache.path(), &["runs", "resume", &id]);
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "kill {i}: resume failed:\n{}\n{}",
                        stdout(&o),
                        stderr(&o)
                    );
                    let export: serde_json::Value = serde_json::from_str(&stdout(&medic(
                        cache.path(),
                        &["runs", "export", &id],
                    )))
                    .unwrap();
                    check_journal(&export);
                    assert_eq!(export["record"]["status"], "succeeded");
                    assert_eq!(
                        export["record"]["steps_done"].as_u64().unwrap() as usize,
                        STEPS,
                        "every step ended exactly once"
                    );
                    resumed += 1;
                } else {
                    let o = medic(cache.path(), &["runs", "rollback", &id]);
                    assert_eq!(
                        o.status.code(),
                        Some(4),
                        "kill {i}: rollback failed:\n{}\n{}",
                        stdout(&o),
                        stderr(&o)
                    );
                    assert!(stdout(&o).contains("✓ fine"), "{}", stdout(&o));
                    rolled_back += 1;
                }
            }
            "succeeded" => finished += 1,
            other => panic!("kill {i}: unexpected status {other}"),
        }
    }
    eprintln!(
        "kills: {interrupted} interrupted ({resumed} resumed, {rolled_back} rolled back), {finished} finished first, {before_start} before the run was recorded"
    );
    assert!(
        interrupted >= 25,
        "only {interrupted} of 50 kills hit a run in progress"
    );
    // The lock of every interrupted run was released by recovery: a new run takes it at once.
    let o = medic(cache.path(), &["run", rb]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn while_a_run_holds_the_store_others_read_through_it_and_writers_are_told_who_holds_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A run that waits for an approval holds the store for as long as the test needs.
    let text = std::fs::read_to_string(crashy_runbook(dir.path()))
        .unwrap()
        .replacen(
            "id = \"s1\"\n",
            "id = \"s1\"\napproval = { timeout = \"60s\" }\n",
            1,
        );
    let rb = dir.path().join("held.toml");
    std::fs::write(&rb, text).unwrap();
    let data = cache.path().join("data");
    let child = medic_command(cache.path())
        .args(["run", rb.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = crate::support::pending_approvals(&data.join("approvals"));
    assert_eq!(waiting.len(), 1, "the run never started waiting");
    let run_id = waiting[0].run_id.clone();

    // Reading goes through the process that holds the store.
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs = json_lines(&stdout(&o));
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "running");
    let shown = medic(cache.path(), &["runs", "show", &run_id]);
    assert!(
        stdout(&shown).contains("s1 waits for approval"),
        "{}",
        stdout(&shown)
    );
    assert_eq!(medic(cache.path(), &["stats"]).status.code(), Some(0));

    // Writing needs the store itself: refused, naming the holder.
    let o = medic(cache.path(), &["runs", "prune", "--older-than", "1d"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(&format!("is in use by process {}", child.id())),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("medic run "), "{}", stderr(&o));

    // The socket is private to the user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("medic.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Release the run; a second run queued with --wait then gets the store.
    assert_eq!(
        medic(cache.path(), &["approve", &run_id]).status.code(),
        Some(0)
    );
    let plain = dir.path().join("crashy.toml");
    let o = medic(
        cache.path(),
        &["run", plain.to_str().unwrap(), "--wait", "30s"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(child.wait_with_output().unwrap().status.success());
}
