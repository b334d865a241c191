//! Fleet steps (`[steps.fleet]`): one sandboxed call per target, `max_concurrency` at a time;
//! more than `max_errors` failures stop new targets, and a rollback undoes target by target.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{medic, stderr, stdout};
use crate::support::runtime;

/// An HTTP server that holds every request for `hold` before answering, and remembers the
/// paths asked for and the most requests it ever had in flight at once.
pub(crate) struct Witness {
    pub(crate) addr: std::net::SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    most_in_flight: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

pub(crate) fn witness(hold: Duration) -> Witness {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (seen, most) = (paths.clone(), most_in_flight.clone());
    rt.spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (seen, most, in_flight) = (seen.clone(), most.clone(), in_flight.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match tokio::time::timeout(Duration::from_secs(2), sock.read(&mut chunk)).await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                seen.lock().unwrap().push(path);
                tokio::time::sleep(hold).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Witness {
        addr,
        paths,
        most_in_flight,
        _rt: rt,
    }
}

impl Witness {
    /// The paths asked for, with the brackets of `step[target]` decoded.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.replace("%5B", "[").replace("%5D", "]"))
            .collect()
    }

    /// The targets of the calls to `/{call}/{step}[TARGET]` (`run`, `deploy`), in the order
    /// they reached this server.
    pub(crate) fn targets(&self, call: &str, step: &str) -> Vec<String> {
        let prefix = format!("/{call}/{step}[");
        self.paths()
            .into_iter()
            .filter_map(|p| {
                p.strip_prefix(&prefix)
                    .and_then(|t| t.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .collect()
    }
}

pub(crate) fn runbook(dir: &std::path::Path, w: &Witness, body: &str) -> String {
    let text = format!(
        "[runbook]\nname = \"fleet\"\n\n[params.hosts]\ntype = \"list\"\ndefault = [\"web-1\", \"web-2\", \"web-3\", \"web-4\", \"web-5\", \"web-6\"]\n\n\
         [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
         [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n{body}",
        medic::host::fixtures::SCRIPTED_ACTION,
        medic::host::fixtures::SCRIPTED_CHECK,
        addr = w.addr,
    )
    .replace("@REC@", &format!("http://{}", w.addr));
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The report of a step, as journaled.
/// A step's journaled end, with its targets as journaled one by one before it (the end of
/// a fleet step counts them, it does not repeat them).
fn step_report(record: &serde_json::Value, id: &str) -> serde_json::Value {
    let journal = record["journal"].as_array().unwrap();
    let mut report = journal
        .iter()
        .find(|e| e["type"] == "step_finished" && e["report"]["id"] == id)
        .unwrap_or_else(|| panic!("no report of {id}: {record}"))["report"]
        .clone();
    assert!(report.get("targets").is_none(), "{report}");
    let targets: Vec<serde_json::Value> = journal
        .iter()
        .filter(|e| e["type"] == "target_finished" && e["step"] == id)
        .map(|e| e["report"].clone())
        .collect();
    assert_eq!(
        report["fleet"]["targets"].as_u64(),
        Some(targets.len() as u64),
        "{report}"
    );
    report["targets"] = targets.into();
    report
}

fn export(cache: &std::path::Path) -> serde_json::Value {
    let o = medic(cache, &["runs", "list", "--output", "json"]);
    let newest = stdout(&o).lines().next().expect("a run").to_owned();
    let run: serde_json::Value = serde_json::from_str(&newest).expect("runs list json");
    let id = run["run_id"].as_str().expect("a run id").to_owned();
    let o = medic(cache, &["runs", "export", &id]);
    serde_json::from_str(&stdout(&o)).expect("export json")
}

#[test]
fn a_fleet_step_calls_every_target_at_most_max_concurrency_at_a_time() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each call is held long enough that the three started together overlap on any machine.
    let w = witness(Duration::from_millis(500));
    let rb = runbook(
        dir.path(),
        &w,
        "[[steps]]\nid = \"restart\"\nuses = \"act\"\nwith = { record_url = \"@REC@\", echo = \"{{ target }}\" }\n\
         [steps.fleet]\ntargets = \"{{ params.hosts }}\"\nmax_concurrency = \"34%\"\n\n\
         [[steps]]\nid = \"after\"\nuses = \"check\"\nwith = { echo = \"{{ steps.restart.outputs.succeeded | join(',') }}\" }\n",
    );
    let o = medic(cache.path(), &["run", &rb]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("6 of 6 targets succeeded"), "{out}");
    // 34% of 6 targets rounds up to 3 at a time.
    assert_eq!(
        w.most_in_flight.load(Ordering::SeqCst),
        3,
        "{:?}",
        w.paths()
    );
    let mut paths = w.paths();
    paths.sort();
    let want: Vec<String> = (1..=6).map(|i| format!("/run/restart[web-{i}]")).collect();
    assert_eq!(paths, want);
    // Later steps see which targets succeeded, in the order they were listed.
    assert!(
        out.contains("call 1: web-1,web-2,web-3,web-4,web-5,web-6"),
        "{out}"
    );
    let record = export(cache.path());
    let restart = step_report(&record, "restart");
    let targets = restart["targets"].as_array().expect("per-target records");
    assert_eq!(targets.len(), 6);
    for t in targets {
        assert_eq!(t["status"]["status"], "succeeded", "{t}");
        assert_eq!(t["attempts"].as_array().unwrap().len(), 1, "{t}");
        let echoed = &t["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "echo")
            .unwrap()[1];
        assert_eq!(echoed["value"], t["target"], "{t}");
    }
}

#[test]
fn a_fleet_stops_starting_targets_after_max_errors_and_rolls_each_back_newest_first() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(10));
    let rb = runbook(
        dir.path(),
        &w,
        "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
         with = { record_url = \"@REC@\", echo = \"{{ target }}\", mode = \"{% if target in ['web-3', 'web-5'] %}permanent{% else %}ok{% endif %}\" }\n\
         [steps.fleet]\ntargets = \"{{ params.hosts }}\"\nmax_errors = 1\n\n\
         [[verify]]\nid = \"healthy\"\nuses = \"check\"\n",
    );
    let o = medic(cache.path(), &["run", &rb]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    // One at a time (the default): web-3 fails and is tolerated (max_errors 1), web-5 is
    // one too many, so web-6 never starts.
    assert!(
        out.contains("3 of 6 targets succeeded; failed: web-3 (error: call 1: web-3), web-5 (error: call 1: web-5); not started: web-6 (more than max_errors 1 failed)"),
        "{out}"
    );
    let runs: Vec<String> = w
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("/run/"))
        .collect();
    assert_eq!(
        runs,
        ["web-1", "web-2", "web-3", "web-4", "web-5"].map(|t| format!("/run/deploy[{t}]"))
    );
    // Undone newest first; the failed targets too (an action may fail half-way).
    let reverts: Vec<String> = w
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("/revert/"))
        .collect();
    assert_eq!(
        reverts,
        ["web-5", "web-4", "web-3", "web-2", "web-1"]
            .map(|t| format!("/revert/deploy.rollback[{t}]"))
    );
    assert!(out.contains("undid 5 targets"), "{out}");

    let record = export(cache.path());
    let deploy = step_report(&record, "deploy");
    let statuses: Vec<(String, String)> = deploy["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_owned(),
                t["status"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("web-1", "succeeded"),
            ("web-2", "succeeded"),
            ("web-3", "errored"),
            ("web-4", "succeeded"),
            ("web-5", "errored"),
            ("web-6", "skipped"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Each target is undone with its own outputs, kept as the plugin returned them for the
    // undo (a target that failed returned none).
    let undone: Vec<(String, String)> = step_report(&record, "deploy.rollback")["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_owned(),
                t["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        undone,
        [
            ("web-5", "undid nothing"),
            ("web-4", "undid web-4"),
            ("web-3", "undid nothing"),
            ("web-2", "undid web-2"),
            ("web-1", "undid web-1"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Each target's end was journaled as it happened, not only with the step.
    let journaled = record["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "target_finished")
        .count();
    assert_eq!(journaled, 6 + 5, "{record}");
}

#[test]
fn fleet_mistakes_are_refused_before_anything_runs() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(1));
    let cases = [
        (
            "targets = [\"a\", \"a\"]",
            "fleet target `a` is listed twice",
        ),
        ("targets = []", "the fleet has no targets"),
        (
            "targets = \"{{ params.hostz }}\"",
            "unknown parameter `hostz`",
        ),
        (
            "targets = [\"a\"]\nmax_concurrency = \"150%\"",
            "fleet max_concurrency: 150% is not a share of the targets",
        ),
        (
            "targets = [\"a\"]\nmax_concurrency = 0",
            "`max_concurrency` of the fleet of step `deploy` must be a count >= 1, a percent such as \"25%\", or OneAtATime, HalfAtATime or AllAtOnce, not the number 0",
        ),
        (
            "targets = [\"a\"]\nmax_errors = \"some\"",
            "fleet max_errors: `some` is neither a number nor a percent",
        ),
        (
            "targets = [\"a\"]\norder = \"reversed\"",
            "`order` of the fleet of step `deploy` must be one of \"listed\", \"reverse\", \"random\", not the string \"reversed\"",
        ),
    ];
    for (fleet, want) in cases {
        let rb = runbook(
            dir.path(),
            &w,
            &format!(
                "[[steps]]\nid = \"deploy\"\nuses = \"act\"\nwith = {{ echo = \"{{{{ target }}}}\" }}\n[steps.fleet]\n{fleet}\n"
            ),
        );
        let o = medic(cache.path(), &["validate", &rb]);
        assert_eq!(o.status.code(), Some(2), "{fleet}: {}", stdout(&o));
        assert!(stderr(&o).contains(want), "{fleet}: {}", stderr(&o));
    }
    // `target` exists only in fleet steps.
    let rb = runbook(
        dir.path(),
        &w,
        "[[steps]]\nid = \"deploy\"\nuses = \"act\"\nwith = { echo = \"{{ target }}\" }\n",
    );
    let o = medic(cache.path(), &["validate", &rb]);
    assert!(
        stderr(&o).contains("`target` is defined only in fleet steps"),
        "{}",
        stderr(&o)
    );
    assert!(w.paths().is_empty());
}

#[test]
fn a_fleet_whose_targets_cannot_be_known_changes_nothing_and_undoes_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(1));
    // `call` is a number, not a list: known only once `first` has run.
    let rb = runbook(
        dir.path(),
        &w,
        "[[steps]]\nid = \"first\"\nuses = \"check\"\n\n\
         [[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
         with = { record_url = \"@REC@\", echo = \"{{ target }}\" }\n\
         [steps.fleet]\ntargets = \"{{ steps.first.outputs.call }}\"\n\n\
         [[verify]]\nid = \"healthy\"\nuses = \"check\"\n",
    );
    let o = medic(cache.path(), &["run", &rb]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("is 1, not a list"), "{out}");
    // Its plugin was never called, so there is nothing of it to undo: no revert at all.
    assert!(!out.contains("deploy.rollback"), "{out}");
    assert!(w.paths().is_empty(), "{:?}", w.paths());
}

#[test]
fn a_large_fleet_names_a_few_targets_counts_the_rest_and_its_record_keeps_every_one() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::ZERO);
    let hosts: Vec<String> = (1..=14).map(|i| format!("h{i:02}")).collect();
    let list = hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Every target but the first two fails (tolerated), then a check fails: the rollback
    // reverts all 14 (an action may fail half-way), and every revert fails too.
    let rb = runbook(
        dir.path(),
        &w,
        &format!(
            "[[steps]]\nid = \"deploy\"\nuses = \"act\"\non_failure = \"rollback\"\nrollback = \"revert\"\n\
             with = {{ record_url = \"@REC@\", echo = \"{{{{ target }}}}\", revert_mode = \"permanent\", mode = \"{{% if target in ['h01', 'h02'] %}}ok{{% else %}}permanent{{% endif %}}\" }}\n\
             [steps.fleet]\ntargets = [{list}]\nmax_concurrency = 4\nmax_errors = \"100%\"\n\n\
             [[steps]]\nid = \"after\"\nuses = \"check\"\non_failure = \"rollback\"\nwith = {{ mode = \"fail\" }}\n\n\
             [[verify]]\nid = \"healthy\"\nuses = \"check\"\n"
        ),
    );
    let o = medic(cache.path(), &["run", &rb]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(5), "{out}{}", stderr(&o));
    let deploy_line = out
        .lines()
        .find(|l| l.contains("2 of 14 targets succeeded"))
        .unwrap_or_else(|| panic!("{out}"));
    // The first three failures by name (in the order they ended), then how many more.
    assert!(
        deploy_line.contains(" and 9 more (within max_errors 100%)")
            && deploy_line.matches("(error: call 1: h").count() == 3,
        "{deploy_line}"
    );
    let undo_line = out
        .lines()
        .find(|l| l.contains("of 14 targets could not be undone"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        undo_line.contains("14 of 14 targets could not be undone: ")
            && undo_line.ends_with(" and 4 more")
            && undo_line.matches("), h").count() == 9,
        "{undo_line}"
    );

    // The record keeps every target under its step, though the step's end only counts them.
    let record = export(cache.path());
    let deploy = step_report(&record, "deploy");
    assert_eq!(
        deploy["fleet"],
        serde_json::json!({"targets": 14, "ran": 14, "succeeded": 2, "failed": 12}),
        "{deploy}"
    );
    let undo = step_report(&record, "deploy.rollback");
    assert_eq!(undo["fleet"]["failed"], 14, "{undo}");
    // `runs logs` finds each target's call again from the journal.
    let id = record["record"]["run_id"].as_str().unwrap();
    let logs = stdout(&medic(
        cache.path(),
        &["runs", "logs", id, "--step", "deploy"],
    ));
    for h in &hosts {
        assert!(
            logs.lines()
                .any(|l| l.starts_with(&format!("deploy[{h}] #1 "))
                    && l.ends_with(&format!("echo {h}"))),
            "{h}: {logs}"
        );
    }
}

#[test]
fn each_targets_own_secret_is_masked_wherever_its_call_echoes_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::ZERO);
    // Each target's `echo` is rendered from the secret token and its name: a secret of its
    // own, joined to the run's secrets as the fleet renders it.
    let rb = runbook(
        dir.path(),
        &w,
        "[params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"FLEET_TOKEN\"\n\n\
         [[steps]]\nid = \"deploy\"\nuses = \"act\"\n\
         with = { record_url = \"@REC@\", echo = \"{{ params.token | upper }}-{{ target }}\" }\n\
         [steps.fleet]\ntargets = \"{{ params.hosts }}\"\nmax_concurrency = 3\n",
    );
    let o = crate::cli::medic_command(cache.path())
        .env("FLEET_TOKEN", "tok-8c1f2e9d")
        .args(["run", &rb])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("6 of 6 targets succeeded"), "{out}");
    let record = export(cache.path());
    let id = record["record"]["run_id"].as_str().unwrap().to_owned();
    let logs = stdout(&medic(cache.path(), &["runs", "logs", &id]));
    let text = format!("{out}\n{record}\n{logs}");
    assert!(!text.contains("TOK-8C1F2E9D"), "{text}");
    assert!(!text.contains("8C1F2E9D"), "{text}");
    // What each call echoed (its summary, its log line) is there, masked.
    assert_eq!(
        logs.lines().filter(|l| l.ends_with("echo ••••••")).count(),
        6,
        "{logs}"
    );
    let deploy = step_report(&record, "deploy");
    for t in deploy["targets"].as_array().unwrap() {
        assert_eq!(t["summary"], "call 1: ••••••", "{t}");
    }
}
