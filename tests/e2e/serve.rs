//! `medic serve`: the scheduler in real time (briefly: per-second schedules), the CLI
//! through its socket, signals, and its metrics scraped by a real Prometheus.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use medic::store::Store;
use medic::store::drills::{DrillRecord, DrillResult};

use crate::cli::{MEDIC, medic, repo, service, stderr, stdout};
use crate::lab;

/// A `medic serve` child with its output lines on a channel; killed on drop.
pub struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    pub fn start(data: &Path, drills: &Path, extra: &[&str]) -> Serve {
        Serve::start_env(data, drills, extra, &[])
    }

    /// [`Serve::start`] with more environment variables.
    pub fn start_env(data: &Path, drills: &Path, extra: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(MEDIC)
            .args(["serve", "--drills", drills.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .env("MEDIC_DATA_DIR", data)
            .env("MEDIC_CACHE_DIR", data.join("cache"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn medic serve");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut s = Serve {
            child,
            lines,
            seen: Vec::new(),
        };
        s.wait_for("medic serve: pid");
        s
    }

    /// Waits (at most 30 s) for a line containing `needle`, and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "medic serve never said {needle:?}; it said:\n{}",
            self.seen.join("\n")
        );
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("medic serve did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_text(url: &str) -> Option<String> {
    crate::support::runtime().block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

fn drill_file(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

fn demo_drill(name: &str, schedule: &str, host: &str, extra: &str) -> String {
    format!(
        "[[drill]]\nname = \"{name}\"\nrunbook = {:?}\nschedule = \"{schedule}\"\n\
         params = {{ host = \"{host}\", version = \"v3\" }}\n{extra}",
        repo().join("runbooks/demo.toml").display().to_string()
    )
}

/// Deploys v2, then soaks: a gate of 8 passes 500 ms apart (4 s); reverts on failure.
fn slow_runbook(path: &Path, addr: &str) {
    std::fs::write(
        path,
        format!(
            "[runbook]\nname = \"slow\"\non_failure = \"rollback\"\n\
             [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = {{ http = [\"{0}\"] }}\n\
             [plugins.deployer]\nsource = \"builtin:http-deploy\"\ngrants = {{ http = [\"{0}\"], kv = true }}\n\
             [[steps]]\nid = \"deploy\"\nuses = \"deployer\"\nrollback = \"revert\"\n\
             with = {{ url = \"http://{0}/deploy\", version_url = \"http://{0}/version\", version = \"v2\" }}\n\
             [[steps]]\nid = \"soak\"\nuses = \"probe\"\n\
             gate = {{ interval = \"500ms\", successes = 8, timeout = \"30s\" }}\n\
             with = {{ url = \"http://{0}/health\" }}\n\
             [[verify]]\nid = \"healthy\"\nuses = \"probe\"\nwith = {{ url = \"http://{0}/health\" }}\n",
            addr
        ),
    )
    .unwrap();
}

/// A work directory with `slow.toml` (see [`slow_runbook`]) against a fresh demo service,
/// an empty `drills/` beside it, and where `medic serve` keeps its data.
fn slow_lab() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    crate::cli::Service,
) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let svc = service(&[]);
    slow_runbook(&work.path().join("slow.toml"), &svc.addr);
    (work, data, drills, svc)
}

fn records(data: &Path) -> Vec<DrillRecord> {
    let store = Store::open(data, "test").unwrap();
    store.drill_records(None, 0).unwrap()
}

#[test]
fn serve_schedules_drills_and_the_cli_goes_through_it() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let svc = service(&["v3"]);
    // Its own service: runs of the same runbook on one service would interfere.
    let busy = service(&["v3"]);
    // Every 2 seconds: the real scheduler, on a short leash.
    drill_file(
        &drills,
        "a.toml",
        &demo_drill("often", "*/2 * * * * *", &busy.addr, ""),
    );
    drill_file(
        &drills,
        "b.toml",
        &demo_drill("nightly", "0 3 * * *", &svc.addr, ""),
    );
    let metrics = format!("127.0.0.1:{}", lab::free_port());
    let mut serve = Serve::start(&data, &drills, &["--metrics", &metrics]);
    serve.wait_for("drill often: passed");

    // While serve holds the store, the CLI reads and runs through its socket.
    let cache = work.path();
    let env = |args: &[&str]| {
        let mut c = crate::cli::medic_command(cache);
        c.env("MEDIC_DATA_DIR", &data).args(args);
        c.output().unwrap()
    };
    let o = env(&["drill", "run", "nightly"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("drill nightly (run by medic serve): passed"),
        "{}",
        stdout(&o)
    );
    // `medic run` goes through serve too, with the secrets this process can read.
    let runbook = work.path().join("secret.toml");
    let demo = std::fs::read_to_string(repo().join("runbooks/demo.toml")).unwrap();
    std::fs::write(
        &runbook,
        demo.replace(
            "[params.version]",
            "[params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"MEDIC_TEST_DEPLOY_TOKEN\"\n\n[params.version]",
        )
        .replace("version = \"{{ params.version }}\" }", "version = \"{{ params.version }}\", token = \"{{ params.token }}\" }"),
    )
    .unwrap();
    let o = crate::cli::medic_command(cache)
        .env("MEDIC_DATA_DIR", &data)
        .env("MEDIC_TEST_DEPLOY_TOKEN", "s3cret-from-the-client")
        .args([
            "run",
            runbook.to_str().unwrap(),
            "--param",
            &format!("host={}", svc.addr),
            "--param",
            "version=v3",
        ])
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(4), "{out}{err}");
    assert!(out.contains("redeployed v1 (was v3)"), "{out}");
    assert!(err.contains("by medic serve: medic runs show"), "{err}");
    assert!(
        !out.contains("s3cret-from-the-client") && !err.contains("s3cret"),
        "{out}{err}"
    );
    serve.wait_for("medic serve: run ");

    let o = env(&["runs", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("schedule often"), "{}", stdout(&o));
    assert!(stdout(&o).contains("schedule nightly"), "{}", stdout(&o));
    let o = env(&["drill", "report", "nightly", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report[0]["passed"], 1, "{report}");

    // The real Prometheus scrapes serve's metrics.
    let prom = lab::prometheus(std::slice::from_ref(&metrics));
    let url = format!(
        "http://{}/api/v1/query?query=medic_drills_total%7Bdrill%3D%22nightly%22%7D",
        prom.addr
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        last = get_text(&url).unwrap_or(last);
        if last.contains("\"result\":\"passed\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the drill: {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Per drill: when it last passed (a stale drill can alert on it), and its recovery times.
    let scrape = get_text(&format!("http://{metrics}/metrics")).unwrap();
    let last = scrape
        .lines()
        .find(|l| l.starts_with("medic_drill_last_success_timestamp_seconds{drill=\"nightly\"}"))
        .unwrap_or_else(|| panic!("{scrape}"));
    let at: f64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(at <= now && now - at < 600.0, "{last}");
    assert!(
        scrape.contains("medic_drill_recovery_seconds_count{drill=\"nightly\"}"),
        "{scrape}"
    );

    // SIGHUP: an invalid file keeps the old set; a valid change is taken.
    drill_file(&drills, "c.toml", "[[drill]]\nname = \"broken\"\n");
    serve.signal("-HUP");
    serve.wait_for("reload refused; the previous drills stay scheduled");
    std::fs::remove_file(drills.join("c.toml")).unwrap();
    serve.signal("-HUP");
    serve.wait_for("reloaded 2 drills");

    assert_eq!(serve.stop(), Some(0));
    let all = records(&data);
    assert!(
        all.iter()
            .any(|r| r.drill == "often" && r.result == DrillResult::Passed)
    );
    // A drill still running at SIGTERM is cancelled (and says so); every other one passed.
    assert!(
        all.iter()
            .filter(|r| !r.reasons.iter().any(|why| why.starts_with("cancelled")))
            .all(|r| r.result != DrillResult::Failed),
        "{all:#?}"
    );
}

#[test]
fn an_overlapping_drill_is_skipped_and_sigterm_leaves_a_consistent_record() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let svc = service(&[]);
    // A slow drill: its gate needs 8 passes 500 ms apart; it fires every second.
    slow_runbook(&work.path().join("slow.toml"), &svc.addr);
    drill_file(
        &drills,
        "slow.toml",
        "[[drill]]\nname = \"slow\"\nrunbook = \"../slow.toml\"\nschedule = \"* * * * * *\"\n",
    );
    let mut serve = Serve::start(&data, &drills, &[]);
    serve.wait_for("drill slow: started");
    serve.wait_for("drill slow: skipped, its previous run is still going");
    // Stop mid-drill: the run reaches a safe point, rolls back what it did, and is recorded.
    assert_eq!(serve.stop(), Some(0));

    let store = Store::open(&data, "test").unwrap();
    let runs = store.list(&Default::default(), 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status.name(), "cancelled", "{:#?}", runs[0]);
    assert!(runs[0].ended_ms.is_some());
    let all = store.drill_records(Some("slow"), 0).unwrap();
    assert!(
        all.iter().any(|r| r.result == DrillResult::Skipped
            && r.reasons[0].contains("its previous run (started at")),
        "{all:#?}"
    );
    let ran = all
        .iter()
        .find(|r| r.run_id.is_some())
        .expect("the drill's own record");
    assert_eq!(ran.result, DrillResult::Failed, "{ran:#?}");
    assert_eq!(ran.outcome.as_deref(), Some("cancelled"));
    // The deploy was undone on the way out.
    let version = get_text(&format!("http://{}/version", svc.addr)).unwrap();
    assert_eq!(version.trim(), "v1");
}

#[test]
fn missed_schedules_follow_each_drills_policy() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let svc = service(&["v3"]);
    drill_file(
        &drills,
        "d.toml",
        &(demo_drill(
            "catch-up",
            "0 * * * *",
            &svc.addr,
            "missed = \"run_once\"\n",
        ) + "\n"
            + &demo_drill("skipper", "0 * * * *", &svc.addr, "")),
    );
    {
        // As if a scheduler last handled them three hours ago.
        let store = Store::open(&data, "test").unwrap();
        let then = medic::store::now_ms() - 3 * 3600 * 1000;
        assert!(store.claim_drill_slot("catch-up", then).unwrap());
        assert!(store.claim_drill_slot("skipper", then).unwrap());
    }
    let mut serve = Serve::start(&data, &drills, &[]);
    serve.wait_for("drill catch-up: passed");
    assert_eq!(serve.stop(), Some(0));
    let all = records(&data);
    let skipped = all
        .iter()
        .find(|r| r.drill == "skipper")
        .expect("skipper's record");
    assert_eq!(skipped.result, DrillResult::Skipped);
    assert!(
        skipped.reasons[0].starts_with("3 scheduled runs were missed"),
        "{skipped:#?}"
    );
    let caught = all.iter().find(|r| r.drill == "catch-up").unwrap();
    assert_eq!(caught.result, DrillResult::Passed, "{caught:#?}");
    let o = medic(
        work.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "drill",
            "report",
            "skipper",
        ],
    );
    assert!(stdout(&o).contains("1 skipped"), "{}", stdout(&o));
}

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

/// The demo service's version, read without going through medic.
pub(crate) fn version_of(addr: &str) -> String {
    get_text(&format!("http://{addr}/version"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits (at most 30 s) until the service runs `want`.
fn until_version(addr: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while version_of(addr) != want {
        assert!(Instant::now() < deadline, "the service never ran {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn drills_sharing_a_target_never_overlap_and_validation_warns_of_it() {
    let (work, data, drills, svc) = slow_lab();
    // Two drills of one runbook in one environment, firing every second: without a lock,
    // one would roll back the other's deploy and judge the wrong change.
    for name in ["first", "second"] {
        drill_file(
            &drills,
            &format!("{name}.toml"),
            &format!(
                "[[drill]]\nname = \"{name}\"\nrunbook = \"../slow.toml\"\nschedule = \"* * * * * *\"\n"
            ),
        );
    }
    let o = medic(
        work.path(),
        &["drill", "validate", "--drills", drills.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("drills `first` and `second` share lock `drill:slow:default`"),
        "{}",
        stderr(&o)
    );

    let mut serve = Serve::start(&data, &drills, &[]);
    serve.wait_for("is held by run");
    assert_eq!(serve.stop(), Some(0));
    let store = Store::open(&data, "test").unwrap();
    let mut runs = store.list(&Default::default(), 100).unwrap();
    runs.sort_by_key(|r| r.started_ms);
    assert!(!runs.is_empty());
    for pair in runs.windows(2) {
        let ended = pair[0].ended_ms.expect("every run ended");
        assert!(
            ended <= pair[1].started_ms,
            "runs {} and {} of one target overlapped",
            pair[0].run_id,
            pair[1].run_id
        );
    }
    let skipped = store.drill_records(None, 0).unwrap();
    assert!(
        skipped.iter().any(|r| r.result == DrillResult::Skipped
            && r.reasons
                .iter()
                .any(|w| w.contains("lock `drill:slow:default`"))),
        "{skipped:#?}"
    );
    assert_eq!(version_of(&svc.addr), "v1");
}

#[test]
fn serve_stopping_mid_drill_still_rolls_back_and_tells_people() {
    let (work, data, drills, svc) = slow_lab();
    // The notification takes a gate of its own (three checks): a cancel would cut it.
    std::fs::write(
        work.path().join("tell.toml"),
        format!(
            "[runbook]\nname = \"tell\"\n\
             [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = {{ http = [\"{0}\"] }}\n\
             [[steps]]\nid = \"page\"\nuses = \"probe\"\n\
             gate = {{ interval = \"300ms\", successes = 3, timeout = \"10s\" }}\n\
             with = {{ url = \"http://{0}/health\" }}\n",
            svc.addr
        ),
    )
    .unwrap();
    drill_file(
        &drills,
        "slow.toml",
        "[[drill]]\nname = \"slow\"\nrunbook = \"../slow.toml\"\nschedule = \"0 3 * * *\"\n\
         notify = { runbook = \"../tell.toml\" }\n",
    );
    let serve = Serve::start(&data, &drills, &[]);
    let o = Command::new(MEDIC)
        .args(["drill", "run", "slow", "--drills", drills.to_str().unwrap()])
        .env("MEDIC_DATA_DIR", &data)
        .env("MEDIC_CACHE_DIR", data.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_version(&svc.addr, "v2");
    // In the soak gate now: serve is told to stop.
    assert_eq!(serve.stop(), Some(0));
    drop(o);
    let store = Store::open(&data, "test").unwrap();
    let runs = store.list(&Default::default(), 10).unwrap();
    let main = runs
        .iter()
        .find(|r| r.runbook == "slow")
        .expect("the drill's run");
    assert_eq!(main.status.name(), "cancelled", "{main:#?}");
    let told = runs
        .iter()
        .find(|r| r.runbook == "tell")
        .expect("the notification ran");
    assert!(told.notification, "{told:#?}");
    assert_eq!(
        told.status.name(),
        "succeeded",
        "the notification ran to its end: {told:#?}"
    );
    assert_eq!(version_of(&svc.addr), "v1", "the deploy was undone");
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
    serve.wait_for("cancelled by its client");
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
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let shown = lines
        .iter()
        .filter(|l| l["event"] == "target_finished")
        .count();
    let not_shown: u64 = lines
        .iter()
        .filter(|l| l["event"] == "not_shown")
        .map(|l| l["events"].as_u64().unwrap())
        .sum();
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
