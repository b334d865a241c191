//! Rollback drills: declared in TOML, run now or on schedule, refused where they must never
//! run, and reported.

use std::path::{Path, PathBuf};

use medic::drill::run::{Started, run_drill};
use medic::executor::Cancel;
use medic::store::drills::DrillResult;
use medic::store::{LockHolder, Store};

use crate::cli::{medic, repo, service, stderr, stdout};
use crate::support::*;

fn repo_runbook(name: &str) -> String {
    repo().join("runbooks").join(name).display().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_example_drills_validate() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(
        cache.path(),
        &["drill", "validate", "--drills", "runbooks/drills"],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("2 drills valid"), "{}", stdout(&o));
    let o = medic(
        cache.path(),
        &[
            "drill",
            "validate",
            "--drills",
            "runbooks/drills",
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    let names: Vec<&str> = v["drills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo-bad-deploy", "demo-forced-rollback"]);
    assert_eq!(v["drills"][1]["timezone"], "Europe/Paris");
}

#[test]
fn a_bad_deploy_drill_passes_and_is_reported() {
    let cache = tempfile::tempdir().unwrap();
    let drills = tempfile::tempdir().unwrap();
    let svc = service(&["v3"]);
    write(
        drills.path(),
        "demo.toml",
        &format!(
            "[[drill]]\nname = \"bad-deploy\"\nrunbook = {:?}\nschedule = \"0 3 * * *\"\n\
             params = {{ host = \"{}\", version = \"v3\" }}\n\
             expect = {{ outcome = \"rolled_back\", recover_within = \"1m\" }}\n",
            repo_runbook("demo.toml"),
            svc.addr
        ),
    );
    let dir = drills.path().to_str().unwrap();
    let o = medic(
        cache.path(),
        &["drill", "run", "bad-deploy", "--drills", dir],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("redeployed v1 (was v3)"), "{out}");
    assert!(
        out.contains("drill bad-deploy: passed, run ended rolled_back"),
        "{out}"
    );

    // The drill's run is an ordinary recorded run, triggered by the drill.
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let listed = stdout(&o);
    let run: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(run["trigger"]["kind"], "schedule", "{run}");
    assert_eq!(run["trigger"]["drill"], "bad-deploy", "{run}");

    let o = medic(cache.path(), &["drill", "report", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let r = &report[0];
    assert_eq!(r["drill"], "bad-deploy");
    assert_eq!(
        (r["passed"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(r["pass_rate"].as_f64(), Some(1.0));
    for series in ["time_to_detect", "time_to_roll_back", "time_to_healthy"] {
        assert_eq!(r[series]["samples"], 1, "{series}: {r}");
    }
    assert_eq!(
        r["recent_time_to_healthy_ms"][0], r["time_to_healthy"]["p50_ms"],
        "{r}"
    );
    assert_eq!(r["recovery_trend"], "unknown", "{r}");
    // A drill scheduled in its own timezone shows its next run there and in UTC.
    write(
        drills.path(),
        "tokyo.toml",
        &format!(
            "[[drill]]\nname = \"tokyo\"\nrunbook = {:?}\nschedule = \"0 3 * * *\"\n\
             timezone = \"Asia/Tokyo\"\nparams = {{ host = \"{}\" }}\n",
            repo_runbook("demo.toml"),
            svc.addr
        ),
    );
    let o = medic(cache.path(), &["drill", "list", "--drills", dir]);
    let out = stdout(&o);
    assert!(out.contains("passed, run ended rolled_back"), "{out}");
    let tokyo = out.lines().find(|l| l.starts_with("tokyo ")).unwrap();
    // 03:00 in Tokyo (UTC+9, no daylight saving) is 18:00 UTC the day before.
    assert!(tokyo.contains("18:00 UTC (03:00 Asia/Tokyo)"), "{out}");
    // The report of a drills directory shows the drill that never ran, standing out.
    let o = medic(cache.path(), &["drill", "report", "--drills", dir]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("drill bad-deploy (last 90d)"), "{out}");
    assert!(
        out.contains("recovery, last 1") && out.contains("(too few to tell)"),
        "{out}"
    );
    assert!(
        out.contains("drill tokyo: NEVER RAN in the last 90d: its rollback path is untested"),
        "{out}"
    );
    let o = medic(
        cache.path(),
        &["drill", "report", "--drills", dir, "--output", "json"],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report[1]["drill"], "tokyo", "{report}");
    assert_eq!(report[1]["total"], 0, "{report}");
    // For machines: the run's events, then the drill's record.
    let o = medic(
        cache.path(),
        &[
            "drill",
            "run",
            "bad-deploy",
            "--drills",
            dir,
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|e| e["event"] == "run_finished"),
        "{lines:?}"
    );
    let record = &lines.last().unwrap()["drill"];
    assert_eq!(record["drill"], "bad-deploy", "{record}");
    assert_eq!(record["result"], "passed", "{record}");
    assert_eq!(record["outcome"], "rolled_back", "{record}");
    assert!(record["recover_ms"].as_u64().is_some(), "{record}");
}

#[test]
fn a_drill_over_budget_fails_and_notifies() {
    let rt = runtime();
    let hook = rt.block_on(tiny_server(200, "ok"));
    let cache = tempfile::tempdir().unwrap();
    let drills = tempfile::tempdir().unwrap();
    let svc = service(&[]);
    write(
        drills.path(),
        "notify.toml",
        &format!(
            "[runbook]\nname = \"notify\"\n[params.drill]\ntype = \"string\"\n\
             [params.drill_summary]\ntype = \"string\"\n\
             [plugins.hook]\nsource = \"builtin:webhook-notify\"\ngrants = {{ http = [\"{0}\"] }}\n\
             [[steps]]\nid = \"tell\"\nuses = \"hook\"\n\
             with = {{ url = \"http://{0}/drills\", message = \"drill {{{{ params.drill }}}} failed: {{{{ params.drill_summary }}}}\" }}\n",
            hook.addr
        ),
    );
    write(
        drills.path(),
        "forced.toml",
        &format!(
            "[[drill]]\nname = \"forced\"\nrunbook = {:?}\nschedule = \"0 3 * * *\"\n\
             params = {{ host = \"{}\", version = \"v2\" }}\nfail_step = \"health_after\"\n\
             notify = {{ runbook = \"notify.toml\" }}\n\
             expect = {{ recover_within = \"1ms\" }}\n",
            repo_runbook("demo.toml"),
            svc.addr
        ),
    );
    // notify.toml is not a drill file: keep it out of the drills directory's scan.
    let dir = drills.path().join("set");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(drills.path().join("forced.toml"), dir.join("forced.toml")).unwrap();
    let text = std::fs::read_to_string(dir.join("forced.toml"))
        .unwrap()
        .replace("notify.toml", "../notify.toml");
    std::fs::write(dir.join("forced.toml"), text).unwrap();

    let o = medic(
        cache.path(),
        &["drill", "run", "forced", "--drills", dir.to_str().unwrap()],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("failed on purpose (drill fault)"), "{out}");
    assert!(out.contains("over the budget of 1ms"), "{out}");
    assert!(
        out.contains("left: rolled back and verified healthy; nothing to restore"),
        "{out}"
    );
    let requests = hook.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("drill forced failed: recovery took"),
        "{}",
        requests[0]
    );
}

#[test]
fn drills_never_run_in_protected_environments() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runbook = write(
        dir.path(),
        "rb.toml",
        "[runbook]\nname = \"rb\"\n[environments.staging]\n[environments.prod]\nprotected = true\n\
         [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"127.0.0.1:9\"] }\n\
         [[steps]]\nid = \"check\"\nuses = \"probe\"\nwith = { url = \"http://127.0.0.1:9/\" }\n",
    );
    let drills = dir.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    write(
        &drills,
        "d.toml",
        "[[drill]]\nname = \"d\"\nrunbook = \"../rb.toml\"\nenvironment = \"prod\"\nschedule = \"0 3 * * *\"\n",
    );
    let o = medic(
        cache.path(),
        &["drill", "validate", "--drills", drills.to_str().unwrap()],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "targets the protected environment `prod`: drills never run in protected environments"
        ),
        "{err}"
    );
    assert!(err.contains("d.toml:4:15"), "{err}");

    // Its fault injection and its notification act too: a `before` or `notify` runbook in a
    // protected environment is refused the same way.
    let hooked = dir.path().join("hooked");
    std::fs::create_dir(&hooked).unwrap();
    write(
        dir.path(),
        "other.toml",
        "[runbook]\nname = \"other\"\n[environments.staging]\nprotected = true\n\
         [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"127.0.0.1:9\"] }\n\
         [[steps]]\nid = \"check\"\nuses = \"probe\"\nwith = { url = \"http://127.0.0.1:9/\" }\n",
    );
    for hook in ["before", "notify"] {
        write(
            &hooked,
            "d.toml",
            &format!(
                "[[drill]]\nname = \"d\"\nrunbook = \"../rb.toml\"\nenvironment = \"staging\"\nschedule = \"0 3 * * *\"\n{hook} = {{ runbook = \"../other.toml\" }}\n"
            ),
        );
        let o = medic(
            cache.path(),
            &["drill", "validate", "--drills", hooked.to_str().unwrap()],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{hook}: {err}");
        assert!(
            err.contains(&format!(
                "{hook}: runbook `other` targets the protected environment `staging`"
            )),
            "{hook}: {err}"
        );
    }

    // A runbook made protected after the drills were loaded is refused at run time.
    std::fs::write(
        drills.join("d.toml"),
        "[[drill]]\nname = \"d\"\nrunbook = \"../rb.toml\"\nenvironment = \"staging\"\nschedule = \"0 3 * * *\"\n",
    )
    .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let loaded = medic::drill::load_dir(&host, &drills).await.unwrap();
        let text = std::fs::read_to_string(&runbook).unwrap().replace(
            "[environments.staging]",
            "[environments.staging]\nprotected = true",
        );
        std::fs::write(&runbook, text).unwrap();
        let store = Store::open(&cache.path().join("data"), "test").unwrap();
        let mut quiet = |_: &medic::executor::Event<'_>| {};
        let r = run_drill(
            &host,
            &store,
            &loaded[0],
            Started::Manual,
            &mut quiet,
            &Cancel::new(),
        )
        .await;
        assert_eq!(r.result, DrillResult::Refused, "{r:?}");
        assert!(r.run_id.is_none());
        assert_eq!(store.drill_records(Some("d"), 0).unwrap().len(), 1);
    });
}

#[test]
fn a_drill_whose_lock_is_held_is_skipped_and_recorded() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rb.toml",
        "[runbook]\nname = \"rb\"\nlock = \"svc:web\"\n\
         [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"127.0.0.1:9\"] }\n\
         [[steps]]\nid = \"check\"\nuses = \"probe\"\nwith = { url = \"http://127.0.0.1:9/\" }\n",
    );
    let drills = dir.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    write(
        &drills,
        "d.toml",
        "[[drill]]\nname = \"d\"\nrunbook = \"../rb.toml\"\nschedule = \"0 3 * * *\"\n",
    );
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let loaded = medic::drill::load_dir(&host, &drills).await.unwrap();
        let store = Store::open(&cache.path().join("data"), "test").unwrap();
        let holder = LockHolder::this("01incident", "fix-web");
        store.acquire_lock("svc:web", &holder).unwrap().unwrap();
        let mut quiet = |_: &medic::executor::Event<'_>| {};
        let r = run_drill(
            &host,
            &store,
            &loaded[0],
            Started::Manual,
            &mut quiet,
            &Cancel::new(),
        )
        .await;
        assert_eq!(r.result, DrillResult::Skipped, "{r:?}");
        assert_eq!(
            r.reasons,
            ["lock `svc:web` is held by run 01incident (fix-web)"]
        );
        assert!(
            store.list(&Default::default(), 10).unwrap().is_empty(),
            "nothing ran"
        );
    });
}

#[test]
fn a_bad_schedule_names_the_field_and_the_line() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.toml",
        &format!(
            "[[drill]]\nname = \"d\"\nrunbook = {:?}\nschedule = \"0 25 * * *\"\n",
            repo_runbook("demo.toml")
        ),
    );
    let o = medic(
        cache.path(),
        &[
            "drill",
            "validate",
            "--drills",
            dir.path().to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("schedule: field 2 (hour) `25`: Hours must be at most 23."),
        "{err}"
    );
    assert!(err.contains("d.toml:4:12"), "{err}");
    // For machines: not valid, each diagnostic with its file and place.
    let o = medic(
        cache.path(),
        &[
            "drill",
            "validate",
            "--drills",
            dir.path().to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    let d = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["message"]
                .as_str()
                .unwrap()
                .contains("field 2 (hour) `25`")
        })
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(d["at"]["line"], 4, "{d}");
    assert!(d["file"].as_str().unwrap().ends_with("d.toml"), "{d}");
}

/// Every mistake in a drill file at once, each at its place: a bad timezone does not hide a
/// bad cron field, an unknown key gets a did-you-mean, the runbook's parameters are checked
/// at the drill's own keys, and a drill missing its schedule does not hide the next one.
#[test]
fn every_mistake_in_a_drill_file_is_reported_at_once() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let demo = repo_runbook("demo.toml");
    write(
        dir.path(),
        "d.toml",
        &format!(
            r#"[[drill]]
name = "a"
runbook = {demo:?}
schedule = "0 25 * * *"
timezone = "Europe/Pariss"
jiter = "2m"
params = {{ hots = "127.0.0.1:8080", version = 3 }}
expect = {{ outcome = "rolledback" }}

[[drill]]
name = "b"
runbook = {demo:?}
missed = "never"
"#
        ),
    );
    let o = medic(
        cache.path(),
        &[
            "drill",
            "validate",
            "--drills",
            dir.path().to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for (at, what) in [
        ("d.toml:4:12", "schedule: field 2 (hour) `25`"),
        ("d.toml:5:12", "timezone: `Europe/Pariss` is not a timezone"),
        ("d.toml:6:1", "unknown key `jiter` in drill `a`"),
        (
            "d.toml:7:12",
            "params.hots: the runbook declares no parameter `hots`",
        ),
        ("d.toml:7:47", "params.version:"),
        (
            "d.toml:8:22",
            "`outcome` of the expect of drill `a` must be one of",
        ),
        ("d.toml:10:1", "drill `b` has no `schedule`"),
        ("d.toml:13:10", "`missed` of drill `b` must be one of"),
    ] {
        let shown = err
            .split("\n\n")
            .any(|block| block.contains(at) && block.contains(what));
        assert!(shown, "`{what}` at {at} missing:\n{err}");
    }
    assert!(err.contains("did you mean `jitter`?"), "{err}");
    assert!(err.contains("8 errors in"), "{err}");
}

/// The whole loop against the lab: a drill deploys a known-bad version; the error-ratio gate
/// reads the real Prometheus scraping the service; the rollback and verify run; the drill
/// passes with its recovery times recorded.
#[test]
fn a_drill_against_the_lab_catches_a_bad_deploy_in_prometheus() {
    let rt = runtime();
    let svc = rt
        .block_on(medic::demo::DemoService::start(
            "127.0.0.1:0".parse().unwrap(),
            "v1",
            ["v3".to_string()],
        ))
        .unwrap();
    let addr = svc.addr.to_string();
    let prom = crate::lab::prometheus(std::slice::from_ref(&addr));
    let traffic = {
        let url = format!("http://{addr}/");
        rt.spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..6000 {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let cache = tempfile::tempdir().unwrap();
    let drills = tempfile::tempdir().unwrap();
    write(
        drills.path(),
        "lab.toml",
        &format!(
            "[[drill]]\nname = \"prometheus-gate\"\nrunbook = {:?}\nschedule = \"0 4 * * *\"\n\
             params = {{ service = \"{addr}\", prometheus = \"{}\", version = \"v3\" }}\n\
             expect = {{ outcome = \"rolled_back\", recover_within = \"1m\" }}\n",
            repo_runbook("deploy-with-error-ratio-gate.toml"),
            prom.addr
        ),
    );
    let o = medic(
        cache.path(),
        &[
            "drill",
            "run",
            "prometheus-gate",
            "--drills",
            drills.path().to_str().unwrap(),
        ],
    );
    traffic.abort();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("error_ratio"), "{out}");
    assert!(
        out.contains("drill prometheus-gate: passed, run ended rolled_back"),
        "{out}"
    );

    let o = medic(cache.path(), &["drill", "report", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let healthy = report[0]["time_to_healthy"]["p50_ms"].as_u64().unwrap();
    let detect = report[0]["time_to_detect"]["p50_ms"].as_u64().unwrap();
    assert!(
        detect > 0 && detect <= healthy && healthy < 60_000,
        "{report}"
    );
    eprintln!("lab drill: detected in {detect} ms, healthy after {healthy} ms");
}

/// `before` breaks the service on purpose (deploys a bad build); the drill then checks that
/// the remediation runbook notices and repairs it (a supervisord restart brings the good
/// build back), within its budget.
#[test]
fn a_before_runbook_breaks_the_service_and_the_remediation_is_measured() {
    let port = crate::lab::free_port();
    let service = format!("127.0.0.1:{port}");
    let command = format!(
        "{} demo-service --listen {service} --version v1 --bad v3",
        env!("CARGO_BIN_EXE_medic")
    );
    let sup = crate::lab::supervisord_running("checkout", &command);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "break.toml",
        "[runbook]\nname = \"break-checkout\"\n[params.service]\ntype = \"string\"\n\
             [plugins.deployer]\nsource = \"builtin:http-deploy\"\ngrants = { http = [\"{{ params.service }}\"], kv = true }\n\
             [[steps]]\nid = \"bad_build\"\nuses = \"deployer\"\nretry = { attempts = 20, backoff = \"250ms\", on = \"any\" }\n\
             with = { url = \"http://{{ params.service }}/deploy\", version_url = \"http://{{ params.service }}/version\", version = \"v3\" }\n",
    );
    let drills = dir.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    write(
        &drills,
        "d.toml",
        &format!(
            "[[drill]]\nname = \"restart-heals\"\nrunbook = {:?}\nschedule = \"0 5 * * *\"\n\
             params = {{ service = \"{service}\", supervisor = \"{}\", program = \"checkout\" }}\n\
             before = {{ runbook = \"../break.toml\", params = {{ service = \"{service}\" }} }}\n\
             expect = {{ outcome = \"succeeded\", recover_within = \"30s\" }}\n",
            repo_runbook("restart-unhealthy-service.toml"),
            sup.addr
        ),
    );
    let o = crate::cli::medic_command(cache.path())
        .env("SUPERVISOR_PASSWORD", "s3cret")
        .args([
            "drill",
            "run",
            "restart-heals",
            "--drills",
            drills.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("deployed v3 (was v1)"), "the fault: {out}");
    assert!(
        out.contains("drill restart-heals: passed, run ended succeeded"),
        "{out}"
    );

    let o = medic(cache.path(), &["drill", "report", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let healthy = report[0]["time_to_healthy"]["p50_ms"].as_u64().unwrap();
    assert!(healthy > 0 && healthy < 30_000, "{report}");
    // The fault's run is recorded too, as part of the drill.
    let o = medic(cache.path(), &["runs", "list"]);
    assert!(stdout(&o).contains("break-checkout"), "{}", stdout(&o));
}

#[test]
fn a_drill_whose_rollback_fails_says_what_it_left_and_how_to_restore_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = crate::cli::scripted_runbook(
        dir.path(),
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"still_bad\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n",
    );
    let drills = dir.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    write(
        &drills,
        "d.toml",
        &format!(
            "[[drill]]\nname = \"broken-undo\"\nrunbook = {:?}\nschedule = \"0 3 * * *\"\n",
            rb.display().to_string()
        ),
    );
    let o = medic(
        cache.path(),
        &[
            "drill",
            "run",
            "broken-undo",
            "--drills",
            drills.to_str().unwrap(),
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let run_id = json_runs(cache.path())[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        out.contains("left: as the failed rollback left it, not verified healthy")
            && out.contains(&format!("`medic runs rollback {run_id}`")),
        "{out}"
    );
}

fn json_runs(cache: &Path) -> Vec<serde_json::Value> {
    stdout(&medic(cache, &["runs", "list", "--output", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `enabled = false` in a drill file: each scheduled run is recorded as skipped, saying
/// where it was disabled; `drill list` says so; `drill run` still runs it on demand.
#[test]
fn a_drill_disabled_in_its_file_is_skipped_on_schedule_but_runs_on_demand() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let rb = crate::cli::rolling_back_runbook(work.path());
    write(
        &drills,
        "d.toml",
        &format!(
            "[[drill]]\nname = \"off\"\nrunbook = {:?}\nschedule = \"* * * * * *\"\nenabled = false\n",
            rb.display().to_string()
        ),
    );
    let mut serve = crate::serve::Serve::start(&data, &drills, &[]);
    serve.wait_for("drill off: skipped, disabled in its file");
    assert_eq!(serve.stop(), Some(0));
    let skipped = Store::open(&data, "test")
        .unwrap()
        .drill_records(None, 0)
        .unwrap();
    assert!(!skipped.is_empty());
    assert!(
        skipped.iter().all(|r| r.result == DrillResult::Skipped
            && r.reasons[0].contains("d.toml (enabled = false)")),
        "{skipped:?}"
    );
    let cache = work.path();
    let o = crate::cli::medic_command(cache)
        .env("MEDIC_DATA_DIR", &data)
        .args(["drill", "list", "--drills", drills.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("disabled (enabled = false)"),
        "{}",
        stdout(&o)
    );
    let o = crate::cli::medic_command(cache)
        .env("MEDIC_DATA_DIR", &data)
        .args(["drill", "run", "off", "--drills", drills.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("drill off: passed"), "{}", stdout(&o));
}

/// `drills` and `triggers` are relative to where the command runs: from anywhere else, the
/// responder is told which directory is missing and how to name another.
#[test]
fn a_missing_drills_or_triggers_directory_says_how_to_name_one() {
    let cache = tempfile::tempdir().unwrap();
    for (args, flag, var) in [
        (&["drill", "list"][..], "--drills DIR", "MEDIC_DRILLS"),
        (
            &["trigger", "validate"][..],
            "--triggers DIR",
            "MEDIC_TRIGGERS",
        ),
    ] {
        let o = crate::cli::medic_command(cache.path())
            .current_dir(cache.path())
            .env_remove(var)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("there is no {}s directory", args[0]))
                && err.contains(&format!("name it with {flag} or {var}")),
            "{err}"
        );
    }
}
