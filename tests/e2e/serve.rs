//! `medic serve`: the scheduler in real time (briefly: per-second schedules), signals, and
//! its metrics scraped by a real Prometheus. Runs that other processes start through its
//! socket: `serve_runs`.

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

pub(crate) fn get_text(url: &str) -> Option<String> {
    crate::support::runtime().block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

pub(crate) fn drill_file(dir: &Path, name: &str, body: &str) {
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
pub(crate) fn slow_runbook(path: &Path, addr: &str) {
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
pub(crate) fn slow_lab() -> (
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
