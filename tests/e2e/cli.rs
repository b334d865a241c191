//! The real `medic` binary against a real HTTP service on loopback (`medic demo-service`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MEDIC: &str = env!("CARGO_BIN_EXE_medic");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A `medic demo-service` process, killed on drop.
pub struct Service {
    child: Child,
    pub addr: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn service(bad: &[&str]) -> Service {
    let args: Vec<&str> = bad.iter().flat_map(|b| ["--bad", b]).collect();
    service_with(&args)
}

/// A demo service at v1 with these extra arguments (`--bad v3`, `--deploy-delay 2s`...).
pub fn service_with(args: &[&str]) -> Service {
    service_env(args, &[])
}

/// [`service_with`] with environment variables.
pub fn service_env(args: &[&str], env: &[(&str, &str)]) -> Service {
    let mut cmd = Command::new(MEDIC);
    cmd.envs(env.iter().copied());
    cmd.args(["demo-service", "--listen", "127.0.0.1:0", "--version", "v1"]);
    cmd.args(args);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demo-service");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the service's address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Service { child, addr }
}

/// `medic` with this test's own cache and data directory, no colors, run from the repository.
pub fn medic_command(cache: &Path) -> Command {
    let mut cmd = Command::new(MEDIC);
    cmd.env("MEDIC_CACHE_DIR", cache)
        .env("MEDIC_DATA_DIR", cache.join("data"))
        .env("NO_COLOR", "1")
        .current_dir(repo());
    cmd
}

pub fn medic(cache: &Path, args: &[&str]) -> Output {
    medic_command(cache).args(args).output().expect("run medic")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_deploys_and_checks_against_a_real_service() {
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&["v3"]);
    let host = format!("host={}", svc.addr);

    let good = medic(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &host,
            "--param",
            "version=v2",
        ],
    );
    let out = stdout(&good);
    assert_eq!(
        good.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        stderr(&good)
    );
    for step in ["health_before", "deploy", "health_after", "version_check"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("✓ {step} "))),
            "{step} did not succeed:\n{out}"
        );
    }
    assert!(out.contains("deployed v2 (was v1)"), "{out}");
    assert!(out.contains("✓ succeeded in"), "{out}");

    let bad = medic(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &host,
            "--param",
            "version=v3",
        ],
    );
    let out = stdout(&bad);
    assert_eq!(bad.status.code(), Some(4), "rolled back: {out}");
    assert!(out.contains("deployed v3 (was v2)"), "{out}");
    assert!(
        out.contains("✓ deploy.rollback") && out.contains("redeployed v2 (was v3)"),
        "{out}"
    );
    assert!(out.contains("✓ healthy_again"), "{out}");
    assert!(out.contains("✗ health_after"), "{out}");
    assert!(out.contains("answered 503 (expected 200)"), "{out}");
    assert!(
        !out.contains("version_check"),
        "a step after the failure ran:\n{out}"
    );
}

#[test]
fn json_output_is_one_event_per_line() {
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&[]);
    let o = medic(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &format!("host={}", svc.addr),
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "step_finished").count(), 4);
    assert_eq!(events.last().unwrap()["outcome"], "succeeded");
    assert_eq!(events[0]["runbook_sha256"].as_str().unwrap().len(), 64);
    let deploy = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"]["id"] == "deploy")
        .unwrap();
    let uses = deploy["step"]["attempts"][0]["invocation"]["capability_uses"]
        .as_array()
        .unwrap();
    assert!(
        uses.iter()
            .any(|u| u["detail"] == format!("POST {}/deploy", svc.addr)),
        "{uses:?}"
    );
}

#[test]
fn hostile_steps_fail_by_name_and_the_next_step_still_runs() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("hostile.toml");
    let mut text = format!(
        "[runbook]\nname = \"hostile\"\n\n[plugins.bad]\nsource = \"{}\"\nmemory = \"16MiB\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
        medic::host::fixtures::HOSTILE
    );
    let modes = [
        "loop",
        "memory",
        "recursion",
        "panic",
        "log-flood",
        "sleep",
        "ok",
    ];
    for mode in modes {
        let id = mode.replace('-', "_");
        text += &format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"bad\"\ntimeout = \"1s\"\non_failure = \"continue\"\nwith = {{ mode = \"{mode}\" }}\n"
        );
    }
    std::fs::write(&runbook, text).unwrap();
    let started = Instant::now();
    let o = medic(cache.path(), &["run", runbook.to_str().unwrap()]);
    let took = started.elapsed();
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        stderr(&o)
    );
    let expect = [
        ("loop", "timed out after 1s"),
        ("memory", "memory limit exceeded"),
        ("recursion", "stack overflow"),
        ("panic", "plugin panicked: hostile plugin panics on purpose"),
        ("log_flood", "timed out after 1s"),
        ("sleep", "timed out after 1s"),
    ];
    for (id, cause) in expect {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("! {id} ")))
            .unwrap_or_else(|| panic!("no failure line for {id}:\n{out}"));
        assert!(line.contains(cause), "{id}: expected {cause:?} in {line:?}");
    }
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("✓ ok ")),
        "the last step did not run:\n{out}"
    );
    assert!(out.contains("more log lines dropped"), "{out}");
    assert!(
        out.contains("✓ succeeded in")
            && out
                .contains("(tolerated failures: loop, memory, recursion, panic, log_flood, sleep)"),
        "{out}"
    );
    assert!(
        out.lines().all(|l| l.chars().count() < 400),
        "log lines are shortened for the terminal"
    );
    // Four 1 s timeouts and three fast failures; generous bound for a loaded CI machine.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn exit_codes_are_distinct() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(cache.path(), &["run", "no/such/runbook.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "medic: cannot read runbook no/such/runbook.toml: no such file"
    );

    let o = medic(
        cache.path(),
        &["run", "runbooks/demo.toml", "--param", "nope"],
    );
    assert_eq!(o.status.code(), Some(2), "a usage error is invalid input");

    let o = medic(
        cache.path(),
        &["run", "runbooks/demo.toml", "--param", "colour=red"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--param colour: the runbook declares no parameter `colour`"),
        "{}",
        stderr(&o)
    );

    // A cache directory that cannot be created is not fatal: plugins compile in memory.
    let file = cache.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = medic(&file.join("sub"), &["validate", "runbooks/demo.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the compiled-plugin cache"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn runs_are_recorded_listed_shown_and_pruned_by_retention() {
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&["v3"]);
    let host = format!("host={}", svc.addr);
    for v in ["v2", "v3"] {
        medic(
            cache.path(),
            &[
                "run",
                "runbooks/demo.toml",
                "--param",
                &host,
                "--param",
                &format!("version={v}"),
            ],
        );
    }
    let listed: Vec<serde_json::Value> =
        stdout(&medic(cache.path(), &["runs", "list", "--output", "json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["status"], "rolled_back", "newest first");
    assert_eq!(listed[1]["status"], "succeeded");
    let id = listed[0]["run_id"].as_str().unwrap();
    let rolled = stdout(&medic(
        cache.path(),
        &["runs", "list", "--status", "rolled_back"],
    ));
    // A header, then the one run, its columns under the header's.
    let lines: Vec<&str> = rolled.lines().collect();
    assert_eq!(lines.len(), 2, "{rolled}");
    assert!(
        lines[0].starts_with("RUN ") && lines[0].contains("STATUS"),
        "{rolled}"
    );
    assert_eq!(
        lines[0].find("STATUS"),
        lines[1].find("rolled_back"),
        "{rolled}"
    );
    // Time filters: today has both runs, a date long past has none, tomorrow's none.
    let o = medic(
        cache.path(),
        &["runs", "list", "--since", "today", "--output", "json"],
    );
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stderr(&o));
    let o = medic(
        cache.path(),
        &["runs", "list", "--until", "2020-01-01", "--output", "json"],
    );
    assert_eq!(stdout(&o).lines().count(), 0, "{}", stderr(&o));
    let o = medic(cache.path(), &["runs", "list", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not an age"), "{}", stderr(&o));
    let shown = stdout(&medic(cache.path(), &["runs", "show", &id[..12]]));
    for expected in [
        "rolled_back",
        "↩ rolling back",
        "✓ deploy.rollback",
        "finished: rolled_back",
        "recovered ",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
    let logs = stdout(&medic(
        cache.path(),
        &["runs", "logs", id, "--step", "deploy"],
    ));
    assert!(logs.contains("deploying v3 over v2"), "{logs}");
    let stats: serde_json::Value = serde_json::from_str(&stdout(&medic(
        cache.path(),
        &["stats", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(stats["runs"], 2);
    assert_eq!(stats["rolled_back"], 1);
    assert_eq!(stats["change_failure_rate"], 0.5);
    assert!(stats["mean_time_to_recover"].as_u64().unwrap() > 0);
    // A retention of 1ms prunes both earlier runs after the next one.
    std::thread::sleep(Duration::from_millis(5));
    let o = medic(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &host,
            "--retention",
            "1ms",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let left = stdout(&medic(cache.path(), &["runs", "list", "--output", "json"]));
    assert_eq!(left.lines().count(), 1, "{left}");
}

#[test]
fn plugin_inspect_and_list() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(cache.path(), &["plugin", "inspect", "builtin:http-deploy"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let digest = medic::host::BUILTINS
        .iter()
        .find(|b| b.name == "http-deploy")
        .unwrap()
        .sha256;
    assert!(out.contains(&format!("sha256:       {digest}")), "{out}");
    assert!(out.contains("contract:     medic:plugin@0.1.1"), "{out}");
    assert!(out.contains("capabilities: http, kv"), "{out}");
    assert!(out.contains("token            text, secret"), "{out}");
    // An empty default reads as one, not as nothing.
    let o = medic(
        cache.path(),
        &["plugin", "inspect", medic::host::fixtures::SCRIPTED_ACTION],
    );
    assert!(
        stdout(&o).contains("echo             text, default \"\""),
        "{}",
        stdout(&o)
    );

    let o = medic(
        cache.path(),
        &["plugin", "inspect", medic::host::fixtures::INCOMPATIBLE],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("medic:plugin@9.0.0"), "{}", stderr(&o));

    let o = medic(cache.path(), &["plugin", "list"]);
    let out = stdout(&o);
    assert!(
        out.contains("builtin:http-probe") && out.contains("builtin:http-deploy"),
        "{out}"
    );
    // For machines: every builtin, one inspect-shaped object per line, digest as embedded.
    let o = medic(cache.path(), &["plugin", "list", "--output", "json"]);
    let listed: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), medic::host::BUILTINS.len());
    for (v, b) in listed.iter().zip(medic::host::BUILTINS) {
        assert_eq!(v["source"], format!("builtin:{}", b.name), "{v}");
        assert_eq!(v["sha256"], b.sha256, "{v}");
        assert_eq!(v["manifest"]["name"], b.name, "{v}");
    }
}

#[test]
fn demo_runs_end_to_end_and_leaves_no_process() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(cache.path(), &["demo"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        stderr(&o)
    );
    // The good build went all the way; the flaky one was caught by the users' error ratio.
    assert!(out.contains("demo/stable: weight 90 -> 0"), "{out}");
    assert!(out.contains("/servers/canary/error_ratio is"), "{out}");
    assert!(out.contains("restored demo/canary to weight 0"), "{out}");
    assert!(out.contains("redeployed v1 (was v3)"), "{out}");
    assert!(out.contains("↩ rolled back and verified healthy"), "{out}");
    assert!(out.contains("timeline of run"), "{out}");
    assert!(out.contains("detected "), "{out}");
    // Both runs are in the store, with the outcomes the demo claims.
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let listed = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{listed}{}", stderr(&o));
    assert!(
        listed.contains("\"succeeded\"") && listed.contains("\"rolled_back\""),
        "{listed}"
    );
}

/// `medic approve RUN --reason REASON` (or `reject`), which must be taken.
pub fn decide(cache: &Path, approve: bool, run_id: &str, reason: &str) {
    let verb = if approve { "approve" } else { "reject" };
    let o = medic(cache, &[verb, run_id, "--reason", reason]);
    assert_eq!(o.status.code(), Some(0), "{verb}: {}", stderr(&o));
}

/// A runbook over the scripted fixtures, written to a temporary directory.
pub fn scripted_runbook(dir: &Path, head: &str, body: &str) -> PathBuf {
    let text = format!(
        "[runbook]\nname = \"scripted\"\n{head}\n[plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n[plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n{body}",
        medic::host::fixtures::SCRIPTED_CHECK,
        medic::host::fixtures::SCRIPTED_ACTION
    );
    let path = dir.join("scripted.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A scripted runbook that changes something, then fails a check, so it rolls back and
/// verifies healthy (`medic run` exits 4; a drill of it passes).
pub fn rolling_back_runbook(dir: &Path) -> PathBuf {
    scripted_runbook(
        dir,
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"ok\"\nuses = \"check\"\n",
    )
}

#[test]
fn each_outcome_has_its_exit_code() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let undoable = "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n[[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n";
    let cases = [
        (
            "on_failure = \"rollback\"",
            format!("{undoable}[[verify]]\nid = \"ok\"\nuses = \"check\"\n"),
            4,
            "↩ rolled back and verified healthy",
        ),
        (
            "on_failure = \"rollback\"",
            format!(
                "{undoable}[[verify]]\nid = \"bad\"\nuses = \"check\"\nwith = {{ mode = \"fail\" }}\n"
            ),
            5,
            "✗ ROLLBACK FAILED",
        ),
        (
            "",
            format!("{undoable}[[verify]]\nid = \"ok\"\nuses = \"check\"\n"),
            1,
            "✗ failed after",
        ),
    ];
    for (head, body, code, line) in cases {
        let rb = scripted_runbook(dir.path(), head, &body);
        let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains(line), "{}", stdout(&o));
    }
}

#[test]
fn protected_environments_need_an_approval_that_is_recorded() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head = "\n[environments.staging]\nvars = { region = \"eu\" }\n\n[environments.prod]\nprotected = true\nvars = { region = \"us\" }\n";
    let body = "[[steps]]\nid = \"change\"\nuses = \"act\"\nwith = { echo = \"{{ env.name }} {{ vars.region }}\" }\n";
    let rb = scripted_runbook(dir.path(), head, body);
    let rb = rb.to_str().unwrap();

    let o = medic(cache.path(), &["run", rb]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("this runbook targets environments (prod, staging): choose one with --env"),
        "{}",
        stderr(&o)
    );

    let o = medic(cache.path(), &["run", rb, "--env", "staging"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("call 1: staging eu"), "{}", stdout(&o));

    let o = medic(cache.path(), &["run", rb, "--env", "prod"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("environment `prod` is protected"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).is_empty(),
        "nothing may run without the approval"
    );

    let o = medic_command(cache.path())
        .args([
            "run",
            rb,
            "--env",
            "prod",
            "--approve",
            "INC-1234 rollback of checkout",
            "--output",
            "json",
        ])
        .env("USER", "alice")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["environment"], "prod");
    assert_eq!(first["approval"]["reason"], "INC-1234 rollback of checkout");
    // Who approved is the real user (the password database), whatever $USER claims.
    // SAFETY: getuid(2) cannot fail.
    let me = medic::private::user_name(unsafe { libc::getuid() });
    let by = first["approval"]["by"].as_str().unwrap();
    assert!(
        by.starts_with(&format!("{me}@")) && !by.starts_with("alice@"),
        "{by}"
    );

    let o = medic(cache.path(), &["validate", rb]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).trim().ends_with("environments prod, staging"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn ctrl_c_stops_at_a_safe_point_and_rolls_back() {
    use std::io::Read;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
                [[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"100ms\", successes = 1000, timeout = \"60s\" }\n\n\
                [[steps]]\nid = \"later\"\nuses = \"act\"\n\n\
                [[verify]]\nid = \"fine\"\nuses = \"check\"\n";
    let rb = scripted_runbook(dir.path(), "on_failure = \"rollback\"", body);
    let mut child = medic_command(cache.path())
        .args(["run", rb.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt mid-run, not mid-startup: wait until the gate is checking.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the run ended before it could be interrupted:\n{out}");
        }
        out.push_str(&line);
        if line.contains("↻ bake") {
            break;
        }
    }
    let started = Instant::now();
    // SAFETY: kill(2) on a child we own.
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    reader.read_to_string(&mut out).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(6), "{out}");
    assert!(out.contains("cancelled after"), "{out}");
    assert!(
        out.contains("- later") && out.contains("skipped: the run was cancelled"),
        "{out}"
    );
    assert!(
        out.contains("✓ change.rollback"),
        "non-interactive: rolls back as the runbook says:\n{out}"
    );
    assert!(out.contains("✓ fine"), "{out}");
    assert!(out.contains("■ cancelled after"), "{out}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn an_inconclusive_gate_can_pause_for_a_person() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = "[[steps]]\nid = \"analysis\"\nuses = \"check\"\n\
                gate = { interval = \"100ms\", timeout = \"30s\", inconclusive = \"pause\" }\n\
                with = { mode = \"inconclusive\" }\n";
    let rb = scripted_runbook(dir.path(), "", body);
    let approvals = cache.path().join("data/approvals");
    for (approve, code, said) in [
        (true, 0, "inconclusive, passed by"),
        (false, 1, "inconclusive, failed by"),
    ] {
        let child = medic_command(cache.path())
            .args(["run", rb.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let waiting = crate::support::pending_approvals(&approvals);
        assert_eq!(waiting.len(), 1, "the run never paused");
        assert!(
            waiting[0].prompt.contains("analysis is inconclusive"),
            "{}",
            waiting[0].prompt
        );
        decide(
            cache.path(),
            approve,
            &waiting[0].run_id,
            "looked at the dashboards",
        );
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(code), "{text}");
        assert!(
            text.contains(said) && text.contains("looked at the dashboards"),
            "{text}"
        );
    }
}
