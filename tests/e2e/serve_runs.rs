//! `medic run` through `medic serve`'s socket: the client's Ctrl-C, its going away, a client
//! slower than the run, approvals, and what serve does not take from a client on trust.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medic::store::Store;

use crate::cli::{MEDIC, service, stderr};
use crate::serve::{Serve, drill_file, get_text, slow_lab, slow_runbook, version_of};

#[test]
fn a_run_whose_client_goes_away_is_cancelled_and_rolled_back() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let svc = service(&[]);
    let runbook = work.path().join("slow.toml");
    slow_runbook(&runbook, &svc.addr);
    let mut serve = Serve::start(&data, &drills, &[]);

    let mut client = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["run", runbook.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap()).lines();
    let deployed = out
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .any(|l| l.contains("deployed v2 (was v1)"));
    assert!(deployed, "the client never showed the deploy");
    client.kill().unwrap();
    let _ = client.wait();

    serve.wait_for("the client of a run went away; cancelling it");
    assert_eq!(serve.stop(), Some(0));
    let store = Store::open(&data, "test").unwrap();
    let runs = store.list(&Default::default(), 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status.name(), "cancelled", "{:#?}", runs[0]);
    let version = get_text(&format!("http://{}/version", svc.addr)).unwrap();
    assert_eq!(version.trim(), "v1", "the deploy was rolled back");
}

#[test]
fn approvals_work_for_runs_going_through_serve() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"30s\", prompt = \"switch?\" }\n",
    );
    let serve = Serve::start(&data, &drills, &[]);
    let child = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["run", rb.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let approvals = data.join("approvals");
    let waiting = crate::support::pending_approvals(&approvals);
    assert_eq!(waiting.len(), 1, "the run never asked for approval");
    let o = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["approve", &waiting[0].run_id, "--reason", "INC-9 ok"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("waits for approval") && text.contains("approved by"),
        "{text}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// Of a `--output json` client's lines: the targets it showed, and how many it said it
/// left out.
fn shown_and_not_shown(lines: &[serde_json::Value]) -> (usize, u64) {
    let shown = lines
        .iter()
        .filter(|l| l["event"] == "target_finished")
        .count();
    let not_shown = lines
        .iter()
        .filter(|l| l["event"] == "not_shown")
        .map(|l| l["events"].as_u64().unwrap())
        .sum();
    (shown, not_shown)
}

#[test]
fn a_ctrl_c_through_serve_cancels_as_a_local_one_does() {
    let (work, data, drills, svc) = slow_lab();
    drill_file(
        &drills,
        "idle.toml",
        "[[drill]]\nname = \"idle\"\nrunbook = \"../slow.toml\"\nschedule = \"0 3 1 1 *\"\n",
    );
    let mut serve = Serve::start(&data, &drills, &[]);
    let mut client = Command::new(MEDIC)
        .args(["run", work.path().join("slow.toml").to_str().unwrap()])
        .env("MEDIC_DATA_DIR", &data)
        .env("MEDIC_CACHE_DIR", data.join("cache"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut shown = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the run ended early:\n{shown}"
        );
        shown.push_str(&line);
        if line.contains("↻ soak") {
            break;
        }
    }
    let ok = Command::new("kill")
        .args(["-INT", &client.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::io::Read::read_to_string(&mut out, &mut shown).unwrap();
    let o = client.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(6), "{shown}\n{err}");
    assert!(
        err.contains("cancelling: the current step finishes"),
        "{err}"
    );
    assert!(shown.contains("✓ deploy.rollback"), "{shown}");
    assert!(
        shown.contains("■ cancelled after") && shown.contains("rolled back and verified"),
        "{shown}"
    );
    serve.wait_for(": cancelled");
    assert_eq!(serve.stop(), Some(0));
    assert_eq!(version_of(&svc.addr), "v1");
}

#[test]
fn serve_trusts_no_run_id_trigger_or_user_from_its_clients() {
    use medic::store::remote::Remote;
    let (work, data, drills, _svc) = slow_lab();
    drill_file(
        &drills,
        "idle.toml",
        "[[drill]]\nname = \"idle\"\nrunbook = \"../slow.toml\"\nschedule = \"0 3 1 1 *\"\n",
    );
    let mut serve = Serve::start(&data, &drills, &[]);
    let path = work.path().join("slow.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let request = |run_id: &str| {
        serde_json::json!({
            "op": "run", "path": path, "text": text, "params": [], "environment": null,
            "sourced": [], "dry_run": false, "approval": null, "run_id": run_id,
            "trigger": { "kind": "cli", "user": "mallory", "host": "elsewhere" },
            "lock_wait": { "secs": 0, "nanos": 0 },
        })
    };
    let remote = Remote::connect(&data).expect("serve's socket");
    let first_line = |req: serde_json::Value| -> serde_json::Value {
        let mut lines = remote.stream(&req).unwrap();
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
    };
    // An id that is not a run id (here, one that would name a file elsewhere) is refused.
    let answer = first_line(request("../../approvals/x"));
    assert!(
        answer["err"].as_str().unwrap().contains("is not a run id"),
        "{answer}"
    );
    // A fresh id runs, recorded as started by this user, whatever the client claimed.
    let id = medic::executor::new_run_id();
    let mut lines = remote.stream(&request(&id)).unwrap();
    let done = lines
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v.get("done").cloned()
        })
        .expect("the run ended");
    assert_eq!(done["run_id"], id.as_str());
    // The same id again would rewrite a recorded run: refused.
    let answer = first_line(request(&id));
    assert!(
        answer["err"].as_str().unwrap().contains("exists already"),
        "{answer}"
    );
    serve.wait_for(&format!("medic serve: run {id}"));
    let o = Command::new(MEDIC)
        .args(["runs", "list", "--output", "json"])
        .env("MEDIC_DATA_DIR", &data)
        .env("MEDIC_CACHE_DIR", data.join("cache"))
        .output()
        .unwrap();
    let run: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_ne!(run["trigger"]["user"], "mallory", "{run}");
    assert_ne!(run["trigger"]["host"], "elsewhere", "{run}");

    // Another user who reaches the socket (its file made world-writable here, as a
    // mistake would) is not answered: the server checks who connected.
    // SAFETY: getuid(2) cannot fail.
    if unsafe { libc::getuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(
            data.join("medic.sock"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let probe = format!(
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n    \
             s.sendall(b'{{\"op\": \"list\", \"filter\": {{}}, \"limit\": 5}}\\n')\n    \
             s.settimeout(5)\n    print(repr(s.recv(4096)))\nexcept OSError:\n    print(repr(b''))\n",
            data.join("medic.sock").display().to_string()
        );
        let o = Command::new("runuser")
            .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", &probe])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "b''",
            "another user got an answer"
        );
        serve.wait_for("refused a connection");
    } else {
        eprintln!("not root: the other-user half of this test needs root to act as nobody");
    }
    assert_eq!(serve.stop(), Some(0));
}

/// A `medic run` through serve whose output nobody reads for a while (a pager left open, a
/// slow terminal) must neither hold up the run nor have either process keep every line of
/// a large fleet: serve leaves progress lines out once the client is far behind, and says
/// how many; the record keeps them all.
#[test]
fn a_client_that_falls_behind_a_large_fleet_is_told_what_it_missed_and_the_record_has_it_all() {
    const TARGETS: usize = 2000;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let targets = (0..TARGETS)
        .map(|i| format!("\"host-{i:04}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "",
        &format!(
            "[[steps]]\nid = \"probe\"\nuses = \"check\"\n\
             [steps.fleet]\ntargets = [{targets}]\nmax_concurrency = 50\n"
        ),
    );
    let serve = Serve::start(&data, &drills, &[]);
    let client = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["run", rb.to_str().unwrap(), "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the client's output until the run is recorded as ended: it ends all the
    // same (a pipe holds a few hundred of its lines).
    let deadline = Instant::now() + Duration::from_secs(300);
    let record = loop {
        let store_says = crate::cli::medic_command(work.path())
            .env("MEDIC_DATA_DIR", &data)
            .args(["runs", "list", "--output", "json"])
            .output()
            .unwrap();
        let runs = String::from_utf8_lossy(&store_says.stdout).into_owned();
        if let Some(r) = runs
            .lines()
            .next()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["status"] != "running")
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end while its client was not read: {runs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["status"], "succeeded", "{record}");

    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = crate::support::json_lines(&text);
    let (shown, not_shown) = shown_and_not_shown(&lines);
    // Each target exactly once: shown, or counted as not shown.
    assert!(not_shown > 0, "nothing was left out: {shown} shown");
    assert_eq!(shown + not_shown as usize, TARGETS, "{shown} + {not_shown}");
    // What decides and ends a run is never left out.
    assert!(
        lines.iter().any(|l| l["event"] == "step_finished")
            && lines.last().unwrap()["event"] == "run_finished",
        "{}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    let step = lines
        .iter()
        .find(|l| l["event"] == "step_finished")
        .unwrap();
    assert_eq!(
        step["step"]["summary"],
        format!("{TARGETS} of {TARGETS} targets succeeded"),
        "{step}"
    );

    // The record has every target: read a page at a time through serve's socket by a
    // follower, and whole once serve is gone.
    let id = record["run_id"].as_str().unwrap();
    let followed = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["runs", "follow", id, "--output", "json"])
        .output()
        .unwrap();
    let followed: Vec<serde_json::Value> = String::from_utf8_lossy(&followed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        followed
            .iter()
            .filter(|e| e["type"] == "target_finished")
            .count(),
        TARGETS
    );
    assert_eq!(
        followed.last().unwrap()["type"],
        "run_finished",
        "{:?}",
        followed.last()
    );
    assert_eq!(serve.stop(), Some(0));
    let store = Store::open(&data, "test").unwrap();
    let recorded = store
        .journal(id)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event, medic::store::JournalEvent::TargetFinished { .. }))
        .count();
    assert_eq!(recorded, TARGETS);
}

/// The incident path of a client that fell behind: a responder presses Ctrl-C in the middle
/// of a large fleet whose output the terminal has not kept up with. The cancel is not held
/// back by the lines waiting for the client: the targets in flight finish, no other starts,
/// exactly the targets that ran are undone, and every target's line is shown or counted as
/// not shown, once.
#[test]
fn ctrl_c_mid_fleet_from_a_client_that_fell_behind_cancels_and_undoes_exactly_what_ran() {
    const TARGETS: usize = 2500;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let w = crate::fleet::witness(Duration::ZERO);
    let targets = (0..TARGETS)
        .map(|i| format!("\"h{i:04}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rb = crate::fleet::runbook(
        work.path(),
        &w,
        &format!(
            "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
             with = {{ record_url = \"@REC@\", echo = \"{{{{ target }}}}\" }}\n\
             [steps.fleet]\ntargets = [{targets}]\nmax_concurrency = 50\n\n\
             [[verify]]\nid = \"healthy\"\nuses = \"check\"\n"
        ),
    );
    let serve = Serve::start(&data, &drills, &[]);
    let client = crate::cli::medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["run", &rb, "--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the client's output: by the time 1,600 targets have run, it holds far
    // fewer lines than that, and serve has been leaving lines out.
    let ran_now = || w.paths().iter().filter(|p| p.starts_with("/run/")).count();
    let deadline = Instant::now() + Duration::from_secs(300);
    while ran_now() < 1600 {
        assert!(
            Instant::now() < deadline,
            "only {} targets ran in 300 s",
            ran_now()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("cancelling"), "{err}");

    let lines = crate::support::json_lines(&text);
    let (shown, not_shown) = shown_and_not_shown(&lines);
    assert!(not_shown > 0, "the client never fell behind: {shown} shown");
    let end = lines.last().unwrap();
    assert_eq!(end["event"], "run_finished", "{end}");
    assert_eq!(end["outcome"], "cancelled", "{end}");

    // Exactly what ran was undone: none that never started, none twice.
    let mut ran = w.targets("run", "deploy");
    let mut reverted = w.targets("revert", "deploy.rollback");
    ran.sort();
    reverted.sort();
    assert!(
        ran.len() >= 1600 && ran.len() < TARGETS,
        "{} of {TARGETS} ran: the cancel did not stop the fleet",
        ran.len()
    );
    assert_eq!(reverted, ran);

    // Each target's line (the fleet's and its undo's) was shown or counted, once.
    assert_eq!(serve.stop(), Some(0));
    let store = Store::open(&data, "test").unwrap();
    let id = end["run_id"].as_str().unwrap();
    let recorded = store
        .journal(id)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event, medic::store::JournalEvent::TargetFinished { .. }))
        .count();
    assert_eq!(
        shown + not_shown as usize,
        recorded,
        "{shown} + {not_shown}"
    );
}
