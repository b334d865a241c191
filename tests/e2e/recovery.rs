//! Crash safety: a real `medic run` killed with SIGKILL at many points loses no recorded
//! event, is found interrupted by the next process, and can be resumed or rolled back.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::cli::{medic, medic_command, stderr, stdout};
use crate::support::{Tmpfs, json_lines};

const STEPS: usize = 6;

pub(crate) fn crashy_runbook(dir: &Path) -> std::path::PathBuf {
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

/// The journal is whole: contiguous, starts with run_started, every finished step was
/// started, and the record agrees with it.
pub(crate) fn check_journal(export: &serde_json::Value) {
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
    sigkill_campaign(50, None);
}

/// The same on the shared store: the next process (on the same host) finds the killed
/// run's process gone at once. `MEDIC_PG_KILLS=100` runs the long form.
#[test]
fn on_postgres_sigkill_loses_nothing_and_runs_can_be_resumed_or_rolled_back() {
    let kills = std::env::var("MEDIC_PG_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(26);
    sigkill_campaign(kills, Some(&crate::pglab::database()));
}

/// Kills `medic run` at `kills` points of its progress; after each, the next process must
/// find the run whole and interrupted, and resume or roll it back.
fn sigkill_campaign(kills: u64, store: Option<&str>) {
    let cache = tempfile::tempdir().unwrap();
    let cmd = || on_store(cache.path(), store);
    let medic = |args: &[&str]| cmd().args(args).output().expect("run medic");
    let dir = tempfile::tempdir().unwrap();
    let rb = crashy_runbook(dir.path());
    let rb = rb.to_str().unwrap();
    // Warm the compiled-plugin cache so every run starts equally fast.
    let warm = medic(&["validate", rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));

    // Kill points follow the run's own progress, not the clock, so they land the same under
    // any machine load: after the k-th journaled event (run start, each step's start and end),
    // plus 0-30 ms to land mid-step (steps take 40 ms); a few before the run starts at all.
    let events_per_run = 1 + 2 * STEPS;
    let (mut interrupted, mut resumed, mut rolled_back, mut finished, mut before_start) =
        (0, 0, 0, 0, 0);
    let mut seen: std::collections::BTreeSet<String> =
        json_lines(&stdout(&medic(&["runs", "list", "--output", "json"])))
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect();
    for i in 0..kills {
        let mut child = cmd()
            .args(["run", rb, "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if i < 3 {
            std::thread::sleep(Duration::from_millis(i * 5));
        } else {
            let target = (i as usize) % events_per_run;
            let mut lines = crate::verdicts::Lines::of(child.stdout.take().unwrap());
            for _ in 0..=target {
                if lines.next_line().is_none() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis((i / events_per_run as u64) * 10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The next process opens the store and finds the run.
        let listed = medic(&["runs", "list", "--output", "json", "--limit", "1000"]);
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
            serde_json::from_str(&stdout(&medic(&["runs", "export", &id])))
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
                    let o = medic(&["runs", "resume", &id]);
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "kill {i}: resume failed:\n{}\n{}",
                        stdout(&o),
                        stderr(&o)
                    );
                    let export: serde_json::Value =
                        serde_json::from_str(&stdout(&medic(&["runs", "export", &id]))).unwrap();
                    check_journal(&export);
                    assert_eq!(export["record"]["status"], "succeeded");
                    assert_eq!(
                        export["record"]["steps_done"].as_u64().unwrap() as usize,
                        STEPS,
                        "every step ended exactly once"
                    );
                    resumed += 1;
                } else {
                    let o = medic(&["runs", "rollback", &id]);
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
        interrupted >= kills / 2,
        "only {interrupted} of {kills} kills hit a run in progress"
    );
    // The lock of every interrupted run was released by recovery: a new run takes it at once.
    let o = medic(&["run", rb]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// One plain HTTP/1.0 request to the demo service, without going through medic: the status
/// code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    (code, body)
}

/// What identifies an event, printed (`medic run --output json`) or journaled, so the two
/// can be compared. None for what the store documents it may lose to a kill (a check step's
/// start and a bake notice are not flushed on their own) and for what is not a result.
fn event_key(e: &serde_json::Value, printed: bool, actions: &[&str]) -> Option<String> {
    let kind = e[if printed { "event" } else { "type" }].as_str()?;
    Some(match kind {
        "step_finished" => {
            let r = if printed { &e["step"] } else { &e["report"] };
            format!("finished {} {}", r["phase"], r["id"])
        }
        "attempt_finished" => format!("attempt {} {}", e["step"], e["note"]),
        "target_finished" => {
            let t = if printed { &e["target"] } else { &e["report"] };
            format!("target {} {}", e["step"], t["target"])
        }
        "phase_started" => format!("phase {}", e["phase"]),
        "run_finished" => "run finished".to_owned(),
        "step_started" if actions.contains(&e["plugin"].as_str()?) => {
            format!("started {} {}", e["phase"], e["step"])
        }
        "approval_requested" | "approval_decided" => format!("{kind} {}", e["step"]),
        _ => return None,
    })
}

/// A small deterministic generator: the campaign is random in where it kills, and the same
/// every time it runs (the seed is printed with any failure).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn a_sigkill_campaign_loses_no_shown_event_and_every_verdict_matches_the_service() {
    let cache = tempfile::tempdir().unwrap();
    // A real service whose deploys take effect at once and answer 30 ms later, so kills land
    // inside actions (the change made, the call not returned) as well as between steps,
    // during gates, and during rollbacks (v3 is bad: its runs roll back).
    let svc = crate::cli::service_with(&["--bad", "v3", "--deploy-delay", "30ms"]);
    let host = format!("host={}", svc.addr);
    let warm = medic(cache.path(), &["validate", "runbooks/demo.toml"]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let seed = 0x5eed_2026_u64;
    let mut rng = Rng(seed);
    let (mut picked_up, mut lost, mut false_verdicts, mut in_rollback) = (0, 0, 0, 0);
    let kills = 100;
    for i in 0..kills {
        http(&svc.addr, "POST", "/deploy", "v1");
        let to = if i % 2 == 0 { "v3" } else { "v2" };
        let mut child = medic_command(cache.path())
            .args([
                "run",
                "runbooks/demo.toml",
                "--output",
                "json",
                "--param",
                &host,
                "--param",
                &format!("version={to}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = crate::verdicts::Lines::of(child.stdout.take().unwrap());
        // Anywhere in the run (a v3 run shows about 16 events, a v2 run 12, so some kills
        // come after the end); every tenth lands before its last few events, to be picked up.
        let target = if i % 10 == 9 {
            rng.below(11)
        } else {
            rng.below(20)
        };
        for _ in 0..=target {
            if lines.next_line().is_none() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever was printed after the lines read, but before the kill, was shown too.
        let printed: Vec<serde_json::Value> = lines
            .rest()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let Some(id) = printed
            .first()
            .and_then(|e| e["run_id"].as_str())
            .map(str::to_owned)
        else {
            continue; // killed before the run started
        };
        in_rollback += usize::from(
            printed
                .iter()
                .any(|e| e["event"] == "phase_started" && e["phase"] == "rollback")
                && !printed.iter().any(|e| e["event"] == "run_finished"),
        );
        // The next process finds the run in a known state.
        let export: serde_json::Value =
            serde_json::from_str(&stdout(&medic(cache.path(), &["runs", "export", &id])))
                .unwrap_or_else(|e| panic!("kill {i} (seed {seed:#x}): export: {e}"));
        let status = export["record"]["status"].as_str().unwrap().to_owned();
        assert!(
            ["interrupted", "succeeded", "rolled_back"].contains(&status.as_str()),
            "kill {i}: run {id} is {status}"
        );
        check_journal(&export);
        let actions = ["deployer"];
        let journaled: std::collections::BTreeSet<String> = export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| event_key(e, false, &actions))
            .collect();
        for e in &printed {
            if let Some(k) = event_key(e, true, &actions)
                && !journaled.contains(&k)
            {
                lost += 1;
                eprintln!("kill {i} (seed {seed:#x}): shown but not recorded: {k}");
            }
        }
        // Every tenth interrupted run is picked up by a new process, alternately rolled back
        // and resumed, and its verdict is checked against the service itself.
        if i % 10 == 9 && status == "interrupted" {
            let rollback = (i / 10) % 2 == 0;
            let verb = if rollback { "rollback" } else { "resume" };
            let o = medic(cache.path(), &["runs", verb, &id]);
            let now = http(&svc.addr, "GET", "/version", "").1;
            let healthy = http(&svc.addr, "GET", "/health", "").0 == 200;
            let fits = match o.status.code() {
                Some(4) => now == "v1",
                Some(0) => !rollback && now == to && to == "v2",
                _ => false,
            };
            if !fits || !healthy {
                false_verdicts += 1;
                eprintln!(
                    "kill {i} (seed {seed:#x}): runs {verb} {id} exited {:?} with the service at {now}:\n{}\n{}",
                    o.status.code(),
                    stdout(&o),
                    stderr(&o)
                );
            }
            picked_up += 1;
        }
    }
    eprintln!(
        "{kills} kills (seed {seed:#x}): {in_rollback} during a rollback, {picked_up} picked up, {lost} shown events lost, {false_verdicts} false verdicts"
    );
    assert_eq!(lost, 0, "shown events were lost");
    assert_eq!(false_verdicts, 0, "verdicts disagreed with the service");
    assert!(picked_up >= 8, "only {picked_up} runs were picked up");
    assert!(
        in_rollback >= 5,
        "only {in_rollback} kills landed in a rollback"
    );
    let listed = medic(
        cache.path(),
        &["runs", "list", "--output", "json", "--limit", "1000"],
    );
    assert!(
        json_lines(&stdout(&listed))
            .iter()
            .all(|r| r["status"] != "running"),
        "a run is left in an unknown state"
    );
}

#[test]
fn sigkill_amid_checks_in_a_row_loses_no_shown_step_though_checks_share_flushes() {
    let cache = tempfile::tempdir().unwrap();
    // Checks in a row go on while their starts (each carrying the previous check's end) are
    // still on their way through the store daemon, sent on one connection without waiting
    // for the answers. The daemon outlives the run's process and stores what it was sent
    // (whether anything is shown before it is durable is the stall tests' part,
    // `store::recorder::tests`): what a kill must never leave is a shown step missing from
    // the journal, or a journal out of order.
    let steps: String = (0..60)
        .map(|i| format!("[[steps]]\nid = \"c{i}\"\nuses = \"check\"\n\n"))
        .collect();
    let rb = crate::cli::scripted_runbook(cache.path(), "", &steps);
    let rb = rb.to_str().unwrap();
    let warm = medic(cache.path(), &["validate", rb]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let mut rng = Rng(0xc4ec5);
    let (mut shown, mut lost, mut cut) = (0, 0, 0);
    for i in 0..12 {
        let lines = 2 + rng.below(100);
        let Some(killed) = kill_mid(cache.path(), None, &["run", rb], lines, rng.below(3000), i)
        else {
            continue;
        };
        cut += usize::from(!killed.printed.iter().any(|e| e["event"] == "run_finished"));
        check_journal(&killed.export);
        let finished: Vec<&str> = killed.export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "step_finished")
            .map(|e| e["report"]["id"].as_str().unwrap())
            .collect();
        let in_order: Vec<String> = (0..finished.len()).map(|n| format!("c{n}")).collect();
        assert_eq!(
            finished, in_order,
            "kill {i}: the steps journaled in order, none missing"
        );
        for k in killed.shown() {
            shown += usize::from(k.starts_with("finished"));
        }
        lost += killed.unrecorded().len();
    }
    eprintln!("12 kills: {cut} before the run's end, {shown} step ends shown");
    assert_eq!(lost, 0, "shown steps were lost");
    assert!(
        shown >= 60,
        "only {shown} steps were shown before the kills"
    );
}

/// A run killed mid-way ([`kill_mid`]): what its process printed, and the run as the next
/// process exports it.
pub(crate) struct Killed {
    pub(crate) printed: Vec<serde_json::Value>,
    pub(crate) export: serde_json::Value,
}

/// Kills `medic COMMAND --output json` (a command that runs a run: `run RB`, `runs resume
/// ID`), on the store at `store` (a URL, as `MEDIC_STORE` takes) or the embedded one in
/// `cache`, with SIGKILL `micros` after `lines` of its output were read (`kill`: its number,
/// for messages); None when it was killed before it printed its start.
pub(crate) fn kill_mid(
    cache: &Path,
    store: Option<&str>,
    command: &[&str],
    lines: u64,
    micros: u64,
    kill: u64,
) -> Option<Killed> {
    let mut child = on_store(cache, store)
        .args(command)
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut read = crate::verdicts::Lines::of(child.stdout.take().unwrap());
    for _ in 0..lines {
        if read.next_line().is_none() {
            break;
        }
    }
    std::thread::sleep(Duration::from_micros(micros));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever was printed after the lines read, but before the kill, was shown too.
    let printed: Vec<serde_json::Value> = read
        .rest()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = printed.first()?["run_id"].as_str()?.to_owned();
    let exported = on_store(cache, store)
        .args(["runs", "export", &id])
        .output()
        .unwrap();
    let export = serde_json::from_str(&stdout(&exported))
        .unwrap_or_else(|e| panic!("kill {kill}: export: {e}"));
    let killed = Killed { printed, export };
    for k in killed.unrecorded() {
        eprintln!("kill {kill}: shown but not recorded: {k}");
    }
    Some(killed)
}

/// `medic` with `cache`, on the store at `store` (a URL, as `MEDIC_STORE` takes) or the
/// embedded one in `cache`.
pub(crate) fn on_store(cache: &Path, store: Option<&str>) -> std::process::Command {
    let mut c = medic_command(cache);
    if let Some(url) = store {
        c.env("MEDIC_STORE", url);
    }
    c
}

impl Killed {
    /// What was printed, as [`event_key`] names it (no step's start: no actions).
    pub(crate) fn shown(&self) -> Vec<String> {
        self.printed
            .iter()
            .filter_map(|e| event_key(e, true, &[]))
            .collect()
    }

    /// What was printed and is not in the journal.
    pub(crate) fn unrecorded(&self) -> Vec<String> {
        let journaled: std::collections::BTreeSet<String> = self.export["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| event_key(e, false, &[]))
            .collect();
        self.shown()
            .into_iter()
            .filter(|k| !journaled.contains(k))
            .collect()
    }
}

/// A run that records a few events and succeeds: one action, one check.
fn quick_runbook(dir: &Path) -> std::path::PathBuf {
    crate::cli::scripted_runbook(
        dir,
        "",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\n\n[[steps]]\nid = \"check\"\nuses = \"check\"\n",
    )
}

/// The ids of the runs `medic runs list` shows, and what it said on stderr.
#[track_caller]
fn listed(cache: &Path, data: &Path) -> (Vec<String>, String) {
    let o = medic_command(cache)
        .env("MEDIC_DATA_DIR", data)
        .args(["runs", "list", "--output", "json", "--limit", "1000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "runs list: {}", stderr(&o));
    let ids = json_lines(&stdout(&o))
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, stderr(&o))
}

fn run_in(cache: &Path, data: &Path, rb: &Path) -> std::process::Output {
    medic_command(cache)
        .env("MEDIC_DATA_DIR", data)
        .args(["run", rb.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn an_unfinished_snapshot_left_by_a_kill_is_set_aside_and_the_store_opens_with_every_run() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let rb = quick_runbook(cache.path());
    for _ in 0..3 {
        let o = run_in(cache.path(), &data, &rb);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let (before, _) = listed(cache.path(), &data);
    assert_eq!(before.len(), 3);
    crate::store_daemon::until_let_go(&data);
    // What a kill in the middle of sled's snapshot write leaves: the first bytes of a
    // snapshot under its temporary name, newer than any snapshot in place.
    let db = data.join("db");
    let prefix: Vec<u8> = std::fs::read_dir(&db)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .map(|e| std::fs::read(e.path()).unwrap())
        .map(|b| b[..b.len() / 2].to_vec())
        .unwrap_or_else(|| b"a snapshot cut off mid-write".to_vec());
    std::fs::write(db.join("snap.7FFFFFFFFFFFFFFF.generating"), &prefix).unwrap();
    // sled alone never opens it again: the failure Medic repairs.
    match sled::Config::new().path(&db).open() {
        Err(sled::Error::Corruption { .. }) => {}
        other => panic!(
            "sled opened a store with a cut-off snapshot: {:?}",
            other.map(|_| ())
        ),
    }

    let (after, said) = listed(cache.path(), &data);
    assert_eq!(after, before, "every run is still there");
    assert!(
        said.contains("repaired the run store")
            && said.contains("snap.7FFFFFFFFFFFFFFF.generating")
            && said.contains("set it aside in"),
        "{said}"
    );
    let aside: Vec<_> = crate::support::files_under(&data.join("aside"));
    assert!(
        aside
            .iter()
            .any(|p| p.ends_with("snap.7FFFFFFFFFFFFFFF.generating")),
        "{aside:?}"
    );
    // Repaired once: the next process opens it without a word, and runs record again.
    let o = run_in(cache.path(), &data, &rb);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("repaired"), "{}", stderr(&o));
    assert_eq!(listed(cache.path(), &data).0.len(), 4);
}

/// A runbook of twelve steps whose parameters and summary hold 6 KB each: about 150 KB
/// recorded a run.
pub(crate) fn runbook_recording_a_lot(dir: &Path) -> std::path::PathBuf {
    let mut body = String::new();
    for i in 0..12 {
        body += &format!(
            "[[steps]]\nid = \"s{i}\"\nuses = \"act\"\nwith = {{ echo = \"{}\" }}\n\n",
            "x".repeat(6000)
        );
    }
    crate::cli::scripted_runbook(dir, "", &body)
}

#[test]
fn a_full_disk_stops_runs_with_an_error_saying_so_and_once_freed_every_run_is_there() {
    let cache = tempfile::tempdir().unwrap();
    // Room for a few of sled's segments (512 KiB each); little else.
    let fs = Tmpfs::mount("size=3m");
    let data = fs.dir.path().join("data");
    // Runs that record a lot, so that the store outgrows the space it set aside in a few.
    let rb = runbook_recording_a_lot(cache.path());
    let first = run_in(cache.path(), &data, &rb);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let filler = fs.fill();
    // Runs go on in the space the store holds already; the first that needs more stops with an
    // error that says what is wrong, and loses nothing recorded before.
    let (mut full, mut succeeded) = (None, 1);
    for _ in 0..40 {
        let o = run_in(cache.path(), &data, &rb);
        if o.status.code() != Some(0) {
            full = Some(o);
            break;
        }
        succeeded += 1;
    }
    let o = full.expect("40 runs of 72 KB on a full 3 MB file system all succeeded");
    assert!(
        stderr(&o).contains("is full; nothing recorded before is lost"),
        "exit {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    // Reading needs no space (opening the store writes nothing to sled): what was recorded
    // is there while the disk is still full. Every run that said it succeeded, and the one
    // stopped if it got as far as its start.
    let (during, _) = listed(cache.path(), &data);
    assert!(
        during.len() == succeeded || during.len() == succeeded + 1,
        "{succeeded} runs succeeded; listed on the full disk: {during:?}"
    );
    std::fs::remove_file(filler).unwrap();
    let (after, _) = listed(cache.path(), &data);
    assert_eq!(after, during, "the same once the disk has room");
    let o = medic_command(cache.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["runs", "list", "--status", "running", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        json_lines(&stdout(&o)).is_empty(),
        "no run is left marked running: {}",
        stdout(&o)
    );
    let o = run_in(cache.path(), &data, &quick_runbook(cache.path()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(listed(cache.path(), &data).0.len(), after.len() + 1);
}

#[test]
fn readers_never_fail_each_other_and_runs_are_not_refused_because_of_them() {
    let cache = tempfile::tempdir().unwrap();
    let rb = quick_runbook(cache.path());
    let first = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let id = json_lines(&stdout(&medic(
        cache.path(),
        &["runs", "list", "--output", "json"],
    )))[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two readers in a loop and runs one after another, all on one data directory: each
    // holds the store for moments, and every one of them must get its turn.
    let failures = std::thread::scope(|s| {
        let reader = |args: Vec<String>| {
            let cache = cache.path();
            s.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut failed = Vec::new();
                for _ in 0..40 {
                    let o = medic(cache, &args);
                    if o.status.code() != Some(0) {
                        failed.push(format!("{args:?}: {}", stderr(&o)));
                    }
                }
                failed
            })
        };
        let lists = reader(vec!["runs".into(), "list".into()]);
        let shows = reader(vec!["runs".into(), "show".into(), id.clone()]);
        let runs = s.spawn(|| {
            let mut failed = Vec::new();
            for _ in 0..8 {
                let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
                if o.status.code() != Some(0) {
                    failed.push(format!("run: {}", stderr(&o)));
                }
            }
            failed
        });
        [lists, shows, runs]
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    let all = json_lines(&stdout(&medic(
        cache.path(),
        &["runs", "list", "--output", "json"],
    )));
    assert_eq!(all.len(), 9);
}
