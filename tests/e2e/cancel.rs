//! `medic runs cancel`: a responder stops a run going on elsewhere, mid-approval after it
//! changed something, in a terminal of its own or in `medic serve`.

use std::process::{Child, Output, Stdio};

use crate::cli::{medic, medic_command, scripted_runbook, stderr, stdout};
use crate::serve::Serve;
use crate::verdicts::{SIGHUP, SIGINT, SIGTERM, signal, spawn, wait};

/// Changes something, then waits for an approval; verified healthy after a rollback, whose
/// undoing takes `undo` (a plugin call that sleeps that long; none: the action's revert).
fn changed_then_waiting(dir: &std::path::Path, undo: Option<&str>) -> std::path::PathBuf {
    let (slow, rollback) = match undo {
        Some(took) => (
            format!(
                "[plugins.slow]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n",
                medic::host::fixtures::HOSTILE
            ),
            format!("{{ uses = \"slow\", with = {{ mode = \"sleep\", sleep = \"{took}\" }} }}"),
        ),
        None => (String::new(), "\"revert\"".to_owned()),
    };
    scripted_runbook(
        dir,
        "on_failure = \"rollback\"",
        &format!(
            "{slow}[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = {rollback}\n\n\
             [[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = {{ timeout = \"60s\" }}\n\n\
             [[verify]]\nid = \"ok\"\nuses = \"check\"\n"
        ),
    )
}

/// `medic run` of `rb` in the data directory `data`, once it waits for its approval: the
/// process and the run's id.
fn waiting(
    work: &std::path::Path,
    data: &std::path::Path,
    rb: &std::path::Path,
) -> (Child, String) {
    let child = medic_command(work)
        .env("MEDIC_DATA_DIR", data)
        .args(["run", rb.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = crate::support::pending_approvals(&data.join("approvals"));
    assert_eq!(waiting.len(), 1, "the run never asked");
    (child, waiting[0].run_id.clone())
}

/// `medic ARGS` with the data directory `data`.
fn medic_in(work: &std::path::Path, data: &std::path::Path, args: &[&str]) -> Output {
    medic_command(work)
        .env("MEDIC_DATA_DIR", data)
        .args(args)
        .output()
        .unwrap()
}

/// A run in another terminal, stopped by `medic runs cancel`, stops as a Ctrl-C there would:
/// with nobody at that terminal, it undoes its change and verifies. A responder asking
/// three more times while the undoing takes its time does not abort it (three Ctrl-C
/// would). Whether to roll back is not the canceller's to choose for such a run; a run that
/// ended is not cancelled again.
#[test]
fn a_run_in_another_terminal_cancelled_mid_approval_undoes_its_change_however_often_asked() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let rb = changed_then_waiting(work.path(), Some("5s"));
    let (child, id) = waiting(work.path(), &data, &rb);
    let cancel = |args: &[&str]| {
        let mut all = vec!["runs", "cancel"];
        all.extend_from_slice(args);
        medic_in(work.path(), &data, &all)
    };
    let o = cancel(&[&id, "--no-rollback"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("whose person decides whether to roll back"),
        "{}",
        stderr(&o)
    );
    let o = cancel(&[&id[..12]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("run {id}: told to stop (process {}", child.id())),
        "{}",
        stdout(&o)
    );
    // The undoing sleeps 5 s: these land while it runs (or before it starts), even from a
    // slow machine.
    for _ in 0..3 {
        let o = cancel(&[&id]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let child_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(6),
        "cancelled, not aborted\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cancelled while waiting for approval")
            && text.contains("change.rollback")
            && text.contains("rolled back and verified"),
        "{text}"
    );
    // Who stopped it is on record: each cancel that was sent, not the refused one.
    let audit = stdout(&medic_in(work.path(), &data, &["audit"]));
    let sent = format!("runs cancel {id} (process {})", child_pid);
    assert_eq!(audit.matches(&sent).count(), 4, "{audit}");
    assert!(
        audit.contains("user:") && !audit.contains("--no-rollback"),
        "{audit}"
    );
    let o = cancel(&[&id]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not running: it ended cancelled"),
        "{}",
        stderr(&o)
    );
    for no_run in ["01nosuchrun", "../tokens"] {
        let o = medic(work.path(), &["runs", "cancel", no_run]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    }
}

/// A run going through `medic serve`, cancelled without a rollback: it stops mid-approval
/// and leaves its change in place, as asked (the runbook would have rolled back); its
/// client exits as cancelled. Then `medic runs rollback` undoes the change.
#[test]
fn a_run_in_serve_cancelled_without_a_rollback_leaves_its_change_for_a_later_rollback() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let rb = changed_then_waiting(work.path(), None);
    let serve = Serve::start(&data, &drills, &[]);
    let (child, id) = waiting(work.path(), &data, &rb);
    let o = medic_in(
        work.path(),
        &data,
        &["runs", "cancel", &id, "--no-rollback", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let told: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        told,
        serde_json::json!({ "run_id": id, "cancelled": true, "by": "serve", "rollback": false })
    );
    let audit = stdout(&medic_in(work.path(), &data, &["audit"]));
    assert!(
        audit.contains(&format!("runs cancel {id} --no-rollback (medic serve)")),
        "{audit}"
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(
        text.contains("nothing was rolled back") && !text.contains("change.rollback"),
        "{text}"
    );
    let o = medic_in(work.path(), &data, &["runs", "rollback", &id]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "rolled back\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("change.rollback") && stdout(&o).contains("verified healthy"),
        "{}",
        stdout(&o)
    );
    assert_eq!(serve.stop(), Some(0));
}

/// The id of the newest run in `data`, once it is recorded as running.
fn running_run(work: &std::path::Path, data: &std::path::Path) -> String {
    for _ in 0..500 {
        let o = medic_in(work, data, &["runs", "list", "--output", "json"]);
        if let Some(line) = stdout(&o).lines().next() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            if r["status"] == "running" {
                return r["run_id"].as_str().unwrap().to_owned();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no run started");
}

/// A work directory, its data directory (the one `medic_command` gives), and its drills
/// directory holding a drill whose runbook changes something, then holds for `hold`;
/// expected to roll back and recover within a minute.
fn slow_drill(hold: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (work, data, drills) = (
        dir.path(),
        dir.path().join("data"),
        dir.path().join("drills"),
    );
    std::fs::create_dir(&drills).unwrap();
    let rb = scripted_runbook(
        work,
        "on_failure = \"rollback\"",
        &format!(
            "[plugins.slow]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
             [[steps]]\nid = \"hold\"\nuses = \"slow\"\nwith = {{ mode = \"sleep\", sleep = \"{hold}\" }}\n\n\
             [[verify]]\nid = \"ok\"\nuses = \"check\"\n",
            medic::host::fixtures::HOSTILE
        ),
    );
    std::fs::write(
        drills.join("slow.toml"),
        format!(
            "[[drill]]\nname = \"slow\"\nrunbook = {rb:?}\nschedule = \"0 3 * * *\"\n\
             expect = {{ outcome = \"rolled_back\", recover_within = \"1m\" }}\n"
        ),
    )
    .unwrap();
    (dir, data, drills)
}

/// A drill's run in `medic serve` is cancelled by its id, alone: serve and its other work go
/// on. It undoes its change, as a drill always does, so a cancel that asks to leave the
/// change in place is refused and says why; the drill is recorded as not passed, naming the
/// cancel.
#[test]
fn a_drills_run_in_serve_is_cancelled_by_its_id_and_undoes_its_change() {
    let (work, data, drills) = slow_drill("3s");
    let mut serve = Serve::start(&data, &drills, &[]);
    // Through serve, which runs it on its own drill set.
    let client = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["drill", "run", "slow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = running_run(work.path(), &data);
    let o = medic_in(
        work.path(),
        &data,
        &["runs", "cancel", &id, "--no-rollback"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("is drill slow's, which always rolls back what it did"),
        "{}",
        stderr(&o)
    );
    let o = medic_in(
        work.path(),
        &data,
        &["runs", "cancel", &id[..12], "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let told: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        told,
        serde_json::json!({ "run_id": id, "cancelled": true, "by": "serve", "rollback": null })
    );
    serve.wait_for(&format!("drill slow: run {id} cancelled"));
    // Asked again while it undoes its change: taken, and it goes on undoing it.
    let o = medic_in(work.path(), &data, &["runs", "cancel", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("drill slow (run by medic serve): failed")
            && text.contains("`medic runs cancel`"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = stdout(&medic_in(work.path(), &data, &["runs", "show", &id]));
    assert!(
        shown.contains("change.rollback") && shown.contains("cancelled"),
        "{shown}"
    );
    let audit = stdout(&medic_in(work.path(), &data, &["audit"]));
    assert_eq!(
        audit
            .matches(&format!("runs cancel {id} (medic serve)"))
            .count(),
        2,
        "{audit}"
    );
    // Serve goes on: the drill runs again, to its end (its run, not failing, succeeds).
    let o = medic_in(work.path(), &data, &["drill", "run", "slow"]);
    assert!(stdout(&o).contains("run ended succeeded"), "{}", stdout(&o));
    assert_eq!(serve.stop(), Some(0));
}

/// `medic drill run` by hand is a run like any other: `medic runs cancel`, a supervisor's
/// SIGTERM or a closed terminal's SIGHUP stops it at a safe point, where it undoes its change
/// and verifies, instead of killing it with its fault still in place.
#[test]
fn a_drill_run_by_hand_is_cancelled_and_undoes_its_change() {
    let (work, data, drills) = slow_drill("3s");
    for by in ["runs cancel", "SIGTERM", "SIGHUP"] {
        let child = medic_command(work.path())
            .env("MEDIC_DATA_DIR", &data)
            .args(["drill", "run", "slow", "--drills", drills.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let id = running_run(work.path(), &data);
        match by {
            "SIGTERM" => signal(child.id(), SIGTERM),
            "SIGHUP" => signal(child.id(), SIGHUP),
            _ => {
                let o = medic_in(work.path(), &data, &["runs", "cancel", &id]);
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            }
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("change.rollback") && text.contains("rolled back and verified"),
            "{by}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o = medic_in(work.path(), &data, &["runs", "show", &id]);
        assert!(stdout(&o).contains("cancelled"), "{by}: {}", stdout(&o));
    }
}

/// A responder at a drill run by hand has the Ctrl-C of `medic run`: the second says what
/// still runs and for how long at most, the third aborts, leaving the drill's run
/// interrupted (exit 5) with the command that finishes the job, which then undoes the
/// change and verifies.
#[test]
fn a_drill_run_by_hand_aborted_by_a_third_ctrl_c_is_left_for_runs_rollback() {
    let (work, _data, drills) = slow_drill("20s");
    let (mut child, mut out, mut err) = spawn(
        work.path(),
        &[
            "drill",
            "run",
            "slow",
            "--drills",
            drills.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    // Its start, as an event: the step holds for 20 s from there.
    out.until("\"step\":\"hold\"");
    signal(child.id(), SIGINT);
    err.until("Ctrl-C twice more aborts");
    signal(child.id(), SIGINT);
    err.until("Ctrl-C once more aborts");
    assert!(
        err.seen.contains("still running: step `hold`") && err.seen.contains("at most"),
        "{}",
        err.seen
    );
    signal(child.id(), SIGINT);
    let code = wait(&mut child);
    let said = out.rest().to_owned();
    let o = medic(work.path(), &["runs", "list", "--output", "json"]);
    let run: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    let id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(code, Some(5), "{said}\n{}", err.rest());
    assert_eq!(run["status"], "interrupted", "{run}");
    assert!(
        said.contains(&format!("medic runs rollback {id}")),
        "{said}"
    );
    assert_eq!(abort_reason(work.path(), &id), "Ctrl-C three times");
    let o = medic(work.path(), &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("change.rollback"), "{}", stdout(&o));
}

/// Why run `id` was aborted, as the last entry of its record says; it is left interrupted.
fn abort_reason(work: &std::path::Path, id: &str) -> String {
    let record = crate::verdicts::export(work, id);
    assert_eq!(record["record"]["status"], "interrupted", "{record}");
    let last = record["journal"].as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "run_aborted", "{last}");
    last["reason"].as_str().unwrap_or_default().to_owned()
}

/// `medic run` through serve, aborted by its client's third Ctrl-C while a step holds: the
/// run in serve stops at once, undoing nothing, and is left interrupted, its record saying
/// who aborted it; `medic runs rollback` then undoes the change while serve goes on.
#[test]
fn a_run_through_serve_aborted_by_its_clients_third_ctrl_c_is_left_for_runs_rollback() {
    let (work, data, drills) = slow_drill("20s");
    let mut serve = Serve::start(&data, &drills, &[]);
    let runbook = work.path().join("scripted.toml");
    let (mut client, mut out, mut err) = spawn(
        work.path(),
        &["run", runbook.to_str().unwrap(), "--output", "json"],
    );
    let id = out.run_id();
    out.until("\"step\":\"hold\"");
    signal(client.id(), SIGINT);
    err.until("cancelling: the current step finishes");
    serve.wait_for(&format!("run {id}: cancelled"));
    signal(client.id(), SIGINT);
    err.until("Ctrl-C once more aborts");
    signal(client.id(), SIGINT);
    err.until(&format!("aborting run {id} in medic serve"));
    let code = wait(&mut client);
    assert_eq!(code, Some(5), "{}\n{}", out.rest(), err.rest());
    serve.wait_for(&format!("run {id}: aborted by its client"));

    assert_eq!(
        abort_reason(work.path(), &id),
        "its client's Ctrl-C three times, through medic serve"
    );
    // Nothing was undone by the abort: a responder's rollback does it.
    let o = medic(work.path(), &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("change.rollback"), "{}", stdout(&o));
    assert_eq!(serve.stop(), Some(0));
}

/// `medic drill run` through serve, stopped at its own terminal: its Ctrl-C cancels the drill
/// it asked serve for, which stops at a safe point and undoes its change; a second says so,
/// and the client waits for the drill's result. Serve goes on with the same drill. A third
/// Ctrl-C stops the client waiting, not the undoing.
#[test]
fn a_drill_run_through_serve_is_cancelled_by_its_clients_ctrl_c() {
    let (work, data, drills) = slow_drill("5s");
    let mut serve = Serve::start(&data, &drills, &[]);
    let (mut client, mut out, mut err) = spawn(work.path(), &["drill", "run", "slow"]);
    let id = running_run(work.path(), &data);
    signal(client.id(), SIGINT);
    err.until("cancelling drill slow in medic serve");
    serve.wait_for(&format!("drill slow: run {id} cancelled"));
    signal(client.id(), SIGINT);
    err.until("undoes what it did in medic serve");
    let code = wait(&mut client);
    let text = out.rest().to_owned();
    assert_eq!(code, Some(1), "{text}\n{}", err.rest());
    assert!(
        text.contains("drill slow (run by medic serve): failed"),
        "{text}"
    );
    let shown = stdout(&medic_in(work.path(), &data, &["runs", "show", &id]));
    assert!(
        shown.contains("change.rollback") && shown.contains("cancelled"),
        "{shown}"
    );
    let o = medic_in(work.path(), &data, &["drill", "run", "slow"]);
    assert!(stdout(&o).contains("run ended succeeded"), "{}", stdout(&o));
    // A third Ctrl-C stops the client waiting (exit 6); serve goes on undoing, and stopping
    // serve waits for it.
    let (mut client, _out, mut err) = spawn(work.path(), &["drill", "run", "slow"]);
    let id = running_run(work.path(), &data);
    for told in [
        "cancelling drill slow in medic serve",
        "undoes what it did in medic serve",
        "stopped waiting for drill slow, which goes on in medic serve",
    ] {
        signal(client.id(), SIGINT);
        err.until(told);
    }
    assert_eq!(wait(&mut client), Some(6), "{}", err.rest());
    assert_eq!(serve.stop(), Some(0));
    let shown = stdout(&medic_in(work.path(), &data, &["runs", "show", &id]));
    assert!(
        shown.contains("change.rollback") && shown.contains("cancelled"),
        "{shown}"
    );
}
