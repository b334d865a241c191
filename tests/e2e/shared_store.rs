//! The shared store (`--store postgres://...`) through the real binary: many `medic run` at
//! once, several `medic serve` nodes on one schedule, and a node's runs found when it dies.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use medic::store::drills::DrillResult;
use medic::store::{ListFilter, RunStatus, Store};

use crate::cli::{medic_command, scripted_runbook, stderr, stdout};
use crate::serve::Serve;
use crate::support::json_lines;

fn medic_on(cache: &Path, url: &str, args: &[&str]) -> Output {
    medic_command(cache)
        .env("MEDIC_STORE", url)
        .args(args)
        .output()
        .expect("run medic")
}

/// An action, then a check: a few journal entries, no lock.
pub fn quick_runbook(dir: &Path) -> std::path::PathBuf {
    scripted_runbook(
        dir,
        "",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\n\n[[steps]]\nid = \"check\"\nuses = \"check\"\n",
    )
}

#[test]
fn ten_runs_at_once_with_readers_beside_them_none_refused_each_recorded_whole() {
    let url = crate::pglab::database();
    let cache = tempfile::tempdir().unwrap();
    ten_runs_at_once(cache.path(), &[("MEDIC_STORE", url.as_str())]);
    // The embedded store was never opened: everything is in the database.
    assert!(!cache.path().join("data").join("db").exists());
}

/// Ten `medic run` at once beside a loop of `runs list`, with `env` (the store): none is
/// refused, and each run's journal is whole.
pub fn ten_runs_at_once(cache: &Path, env: &[(&str, &str)]) {
    let medic = |args: &[&str]| {
        medic_command(cache)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run medic")
    };
    let rb = quick_runbook(cache);
    let rb = rb.to_str().unwrap();
    // Compile the plugins once, so the ten start together.
    let warm = medic(&["validate", rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let failures = std::thread::scope(|s| {
        let readers = s.spawn(|| {
            let mut failed = Vec::new();
            for _ in 0..20 {
                let o = medic(&["runs", "list"]);
                if o.status.code() != Some(0) {
                    failed.push(format!("runs list: {}", stderr(&o)));
                }
            }
            failed
        });
        let children: Vec<_> = (0..10)
            .map(|_| {
                medic_command(cache)
                    .envs(env.iter().copied())
                    .args(["run", rb])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut failed: Vec<String> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .filter(|o| o.status.code() != Some(0))
            .map(|o| format!("run: {}{}", stdout(&o), stderr(&o)))
            .collect();
        failed.extend(readers.join().unwrap());
        failed
    });
    assert!(failures.is_empty(), "{failures:#?}");
    let listed = medic(&["runs", "list", "--output", "json"]);
    let runs = json_lines(&stdout(&listed));
    assert_eq!(runs.len(), 10, "{}", stdout(&listed));
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        let id = r["run_id"].as_str().unwrap();
        let export: serde_json::Value =
            serde_json::from_str(&stdout(&medic(&["runs", "export", id]))).unwrap();
        let types: Vec<&str> = export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types.first(), Some(&"run_started"), "{types:?}");
        assert_eq!(types.last(), Some(&"run_finished"), "{types:?}");
        assert_eq!(
            types.iter().filter(|t| **t == "step_finished").count(),
            2,
            "{types:?}"
        );
    }
}

#[test]
fn three_serve_nodes_on_one_schedule_run_each_slot_once() {
    let url = crate::pglab::database();
    let work = tempfile::tempdir().unwrap();
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    // A drill's runbook breaks something and must be caught and rolled back.
    let rb = crate::cli::rolling_back_runbook(work.path());
    std::fs::write(
        drills.join("d.toml"),
        format!(
            "[[drill]]\nname = \"often\"\nrunbook = {:?}\nschedule = \"* * * * * *\"\n",
            rb.display().to_string()
        ),
    )
    .unwrap();
    // Each node has its own data directory (its socket, its cache), as on its own host.
    let mut nodes: Vec<Serve> = (0..3)
        .map(|i| {
            Serve::start_env(
                &work.path().join(format!("node{i}")),
                &drills,
                &[],
                &[("MEDIC_STORE", url.as_str())],
            )
        })
        .collect();
    // Every node sees the schedule come round; which one takes a slot is a race they settle
    // in the database, so no node is required to win one.
    for n in &mut nodes {
        n.wait_for("drill often: ");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = Store::connect(&url, work.path(), "test").unwrap();
    while store.drill_records(Some("often"), 0).unwrap().len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in nodes {
        assert_eq!(n.stop(), Some(0));
    }
    eprintln!(
        "three nodes, {} slots: one drill run each",
        store.drill_records(Some("often"), 0).unwrap().len()
    );
    let records = store.drill_records(Some("often"), 0).unwrap();
    assert!(records.len() >= 6, "{records:#?}");
    let mut slots: Vec<u64> = records.iter().filter_map(|r| r.scheduled_ms).collect();
    assert_eq!(
        slots.len(),
        records.len(),
        "every record is a scheduled one"
    );
    slots.sort_unstable();
    let before = slots.len();
    slots.dedup();
    assert_eq!(
        slots.len(),
        before,
        "a slot ran more than once: {records:#?}"
    );
    assert!(
        records.iter().all(|r| r.result == DrillResult::Passed),
        "{records:#?}"
    );
    let runs = store.list(&ListFilter::default(), 1000).unwrap();
    assert_eq!(runs.len(), records.len(), "one run per slot");
    assert!(runs.iter().all(|r| r.status == RunStatus::RolledBack));
}

/// Starts a `medic run` on the shared store at `url` of a runbook (`head` added to its
/// `[runbook]` table) that changes something, then sits in a 20 s action, and kills it with
/// SIGKILL inside that action. Returns the cache directory it used.
fn killed_mid_action(work: &Path, url: &str, head: &str) -> std::path::PathBuf {
    let rb = work.join("killed.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"killed\"\non_failure = \"rollback\"\n{head}\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.slow]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
             [[steps]]\nid = \"slow\"\nuses = \"slow\"\nwith = {{ mode = \"sleep\", sleep = \"20s\" }}\n\n\
             [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
            medic::host::fixtures::SCRIPTED_ACTION,
            medic::host::fixtures::SCRIPTED_CHECK,
            medic::host::fixtures::HOSTILE,
        ),
    )
    .unwrap();
    let cache = work.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut run = medic_command(&cache);
    run.env("MEDIC_STORE", url)
        .args(["run", rb.to_str().unwrap(), "--output", "json"]);
    crate::support::killed_inside(run, "slow");
    cache
}

fn serve_node(work: &Path, url: &str) -> Serve {
    let drills = work.join("drills");
    std::fs::create_dir_all(&drills).unwrap();
    Serve::start_env(&work.join("node"), &drills, &[], &[("MEDIC_STORE", url)])
}

/// A `medic run` killed mid-action with no other command afterwards: a `medic serve` on the
/// same store finds it by itself (its process is gone), marks it interrupted and, as the
/// runbook declares nothing, says a person must act; a responder then rolls it back.
#[test]
fn serve_finds_a_killed_runs_process_gone_and_leaves_it_to_a_person_by_default() {
    let url = crate::pglab::database();
    let work = tempfile::tempdir().unwrap();
    let mut node = serve_node(work.path(), &url);
    let cache = killed_mid_action(work.path(), &url, "");
    let said = node.wait_for("now marked interrupted");
    let store = Store::connect(&url, work.path(), "test").unwrap();
    let run = store.list(&ListFilter::default(), 10).unwrap().remove(0);
    assert!(said.contains(&run.run_id), "{said}");
    let told = node.wait_for("a person must act");
    assert!(
        told.contains(&format!("medic runs rollback {}", run.run_id)),
        "{told}"
    );
    assert_eq!(
        store.record(&run.run_id).unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    let o = medic_on(&cache, &url, &["runs", "rollback", &run.run_id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("✓ fine"), "{}", stdout(&o));
    assert_eq!(
        store.record(&run.run_id).unwrap().unwrap().status,
        RunStatus::RolledBack
    );
    assert_eq!(node.stop(), Some(0));
}

/// `on_interrupted = "rollback"`: the node that finds the run rolls it back by itself
/// (undo, then verify), recorded as picked up by medic serve.
#[test]
fn serve_rolls_back_a_killed_run_when_its_runbook_declares_it() {
    let url = crate::pglab::database();
    let work = tempfile::tempdir().unwrap();
    let mut node = serve_node(work.path(), &url);
    killed_mid_action(work.path(), &url, "on_interrupted = \"rollback\"");
    node.wait_for("rolling it back, as its runbook declares");
    let store = Store::connect(&url, work.path(), "test").unwrap();
    let id = store
        .list(&ListFilter::default(), 10)
        .unwrap()
        .remove(0)
        .run_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let r = store.record(&id).unwrap().unwrap();
        if r.status != RunStatus::Running && r.status != RunStatus::Interrupted
            || Instant::now() > deadline
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(record.status, RunStatus::RolledBack, "{record:?}");
    let journal = store.journal(&id).unwrap();
    let types: Vec<String> = journal
        .iter()
        .map(|e| {
            serde_json::to_value(&e.event).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        types.iter().any(|t| t == "run_interrupted") && types.iter().any(|t| t == "run_resumed"),
        "{types:?}"
    );
    let resumed = journal
        .iter()
        .map(|e| serde_json::to_value(&e.event).unwrap())
        .find(|e| e["type"] == "run_resumed")
        .unwrap();
    assert!(resumed.to_string().contains("on_interrupted"), "{resumed}");
    assert_eq!(node.stop(), Some(0));
}

#[test]
fn a_store_url_medic_does_not_know_or_cannot_reach_is_named() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic_on(cache.path(), "mysql://db/x", &["runs", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--store mysql://db/x: not a store this medic knows"),
        "{}",
        stderr(&o)
    );
    let port = crate::lab::free_port();
    let o = medic_command(cache.path())
        .env(
            "MEDIC_STORE",
            format!("postgres://medic@127.0.0.1:{port}/x"),
        )
        .env("PGPASSWORD", "hunter2")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot reach the run store at postgres://medic@127.0.0.1:{port}/x"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // The pool's size: what a busy `medic serve` may raise; nonsense is named.
    let url = crate::pglab::database();
    for (size, code) in [("0", 3), ("lots", 3), ("1", 0), ("32", 0)] {
        let o = medic_command(cache.path())
            .env("MEDIC_STORE", &url)
            .env("MEDIC_PG_CONNECTIONS", size)
            .args(["runs", "list"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{size}: {}", stderr(&o));
        if code != 0 {
            assert!(
                stderr(&o).contains(&format!("MEDIC_PG_CONNECTIONS={size}: give a number")),
                "{}",
                stderr(&o)
            );
        }
    }
}

/// The database goes away mid-run: the run stops at its next safe point saying why, what
/// was recorded stays whole, and once the database is back the run is found interrupted
/// and rolled back.
#[test]
fn a_database_gone_mid_run_stops_it_safely_and_it_is_rolled_back_once_back() {
    let url = crate::pglab::database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let env = [("MEDIC_STORE", url.as_str())];
    let (out, listed) = store_lost_mid_action(
        work.path(),
        &env,
        || {
            // The database refuses new connections and cuts this one's while the action runs.
            crate::pglab::admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"));
            crate::pglab::admin(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}'"
            ));
        },
        || {
            crate::pglab::admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
        },
    );
    assert!(
        stderr(&out).contains("cannot reach the run store at"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
}

/// The store lost while a run is inside a slow action (`cut`), then back (`restore`): the
/// run stops at once, exit 3, showing nothing it could not record (the slow step's end,
/// the step after); the step after, an action whose start could not be recorded, does not
/// act; the next command finds it interrupted with only its first step done, in a record
/// that agrees with the journal, and it is rolled back. The run's output, and
/// that of the `runs list` that found it.
pub fn store_lost_mid_action(
    work: &Path,
    env: &[(&str, &str)],
    cut: impl FnOnce(),
    restore: impl FnOnce(),
) -> (Output, Output) {
    let rb = work.join("long.toml");
    // Where the step after would act: nothing may connect.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let addr = target.local_addr().unwrap();
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"long\"\non_failure = \"rollback\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.slow]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
             [[steps]]\nid = \"slow\"\nuses = \"slow\"\nwith = {{ mode = \"sleep\", sleep = \"1s\" }}\n\n\
             [plugins.reach]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"after\"\nuses = \"reach\"\nwith = {{ mode = \"http\", url = \"http://{addr}/after\" }}\n\n\
             [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
            medic::host::fixtures::SCRIPTED_ACTION,
            medic::host::fixtures::SCRIPTED_CHECK,
            medic::host::fixtures::HOSTILE,
            medic::host::fixtures::HOSTILE,
        ),
    )
    .unwrap();
    let cache = work.join("cache");
    std::fs::create_dir(&cache).unwrap();
    let medic = |args: &[&str]| {
        medic_command(&cache)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run medic")
    };
    let mut cmd = medic_command(&cache);
    cmd.envs(env.iter().copied())
        .args(["run", rb.to_str().unwrap(), "--output", "json"]);
    let (child, mut shown, lines) = crate::support::run_until_started(cmd, "slow");
    cut();
    shown.extend(lines.map_while(Result::ok));
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("cannot record the run"), "{err}");
    assert_eq!(out.status.code(), Some(3), "{err}");
    // What was shown is what was recorded: the slow step's end could not be, so it is not
    // shown either, and nothing after it ran.
    let events: Vec<serde_json::Value> = shown
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step_of = |e: &serde_json::Value| {
        e["step"]
            .as_str()
            .or(e["step"]["id"].as_str())
            .map(str::to_owned)
    };
    assert!(
        !events.iter().any(|e| (e["event"] == "step_finished"
            && step_of(e).as_deref() == Some("slow"))
            || step_of(e).as_deref() == Some("after")),
        "shown without being recorded: {shown:#?}"
    );
    match target.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the step whose start was not recorded acted: {other:?}"),
    }
    restore();
    let listed = medic(&["runs", "list", "--output", "json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let runs = json_lines(&stdout(&listed));
    assert_eq!(runs[0]["status"], "interrupted", "{runs:?}");
    let id = runs[0]["run_id"].as_str().unwrap();
    let export: serde_json::Value =
        serde_json::from_str(&stdout(&medic(&["runs", "export", id]))).unwrap();
    let journal = export["journal"].as_array().unwrap();
    let finished: Vec<&str> = journal
        .iter()
        .filter(|e| e["type"] == "step_finished")
        .map(|e| e["report"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(finished, ["change"], "{journal:#?}");
    assert_eq!(
        export["record"]["steps_done"], 1,
        "the record agrees with the journal"
    );
    let o = medic(&["runs", "rollback", id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("✓ fine"), "{}", stdout(&o));
    (out, listed)
}

/// `sslmode=require`: encrypted, and the server's certificate verified against
/// `PGSSLROOTCERT` (or the system's CAs, which do not know this test's CA). The server takes
/// TLS connections only, so what works went over TLS.
#[test]
fn over_tls_the_server_is_verified_and_nothing_goes_in_clear() {
    let (url, ca) = crate::pglab::tls_database();
    let cache = tempfile::tempdir().unwrap();
    let rb = quick_runbook(cache.path());
    let with = |url: &str, ca: Option<&Path>, args: &[&str]| {
        let mut c = medic_command(cache.path());
        c.env("MEDIC_STORE", url).env_remove("PGSSLROOTCERT");
        if let Some(ca) = ca {
            c.env("PGSSLROOTCERT", ca);
        }
        c.args(args).output().unwrap()
    };
    let o = with(&url, Some(&ca), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = with(&url, Some(&ca), &["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 1, "{}", stderr(&o));

    let o = with(&url, None, &["runs", "list"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the run store at") && err.contains("certificate"),
        "{err}"
    );
    let o = with(
        &url.replace("sslmode=require", "sslmode=disable"),
        Some(&ca),
        &["runs", "list"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("no encryption"), "{}", stderr(&o));
}

/// Approvals, API tokens and the audit log live in the database too: a run waiting on one
/// host is approved from another, and a token made on one is known (and audited) on both.
#[test]
fn a_run_waiting_on_one_host_is_approved_from_another_and_tokens_are_shared() {
    let url = crate::pglab::database();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("host-a"), work.path().join("host-b"));
    let rb = crate::store_daemon::waiting_runbook(work.path(), "held");
    let run = medic_command(&a)
        .env("MEDIC_STORE", &url)
        .args(["run", rb.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Host B sees the request (bounded wait for the run to reach its approval).
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let o = medic_on(&b, &url, &["approve", "--output", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let lines = json_lines(&stdout(&o));
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(waiting.len(), 1, "host B never saw the request");
    let id = waiting[0]["run_id"].as_str().unwrap().to_owned();
    let o = medic_on(&b, &url, &["approve", &id, "--reason", "from host B"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("from host B"), "{}", stdout(&out));
    // Nothing was written in host A's data directory for it.
    assert!(!a.join("data").join("approvals").exists());

    let o = medic_on(&b, &url, &["token", "create", "ci", "--role", "viewer"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = medic_on(&a, &url, &["token", "list"]);
    assert!(stdout(&o).contains("ci"), "{}", stdout(&o));
    let o = medic_on(&a, &url, &["audit", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let entries = json_lines(&stdout(&o));
    assert!(
        entries.iter().any(|e| e["action"]
            .as_str()
            .unwrap_or("")
            .starts_with("token create ci")),
        "{entries:?}"
    );
    assert!(!b.join("data").join("tokens.json").exists());
}
