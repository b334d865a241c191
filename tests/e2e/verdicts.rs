//! The verdict on the paths an incident takes: Ctrl-C, SIGTERM and a closed terminal in the
//! middle of a gate; a second and third Ctrl-C; a declined rollback; a rejected approval;
//! kill -9 inside an action, then `runs rollback` or `runs resume` in a new process; a kill
//! during the rollback; a resumed cancel; dry runs. Each test's setup walks into the hard
//! case (a verify with a gate, a change half made) instead of around it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::{MEDIC, medic, medic_command, scripted_runbook, service, stderr, stdout};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub(crate) const SIGHUP: i32 = 1;
pub(crate) const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
pub(crate) const SIGTERM: i32 = 15;

pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc_kill(pid as i32, sig) }, 0, "kill {pid} {sig}");
}

/// A child's output, line by line, as it comes (on a thread of its own, so reading never
/// blocks the test past its deadline).
pub(crate) struct Lines {
    rx: mpsc::Receiver<String>,
    pub(crate) seen: String,
}

impl Lines {
    pub(crate) fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: String::new(),
        }
    }

    /// Reads lines (at most 60 s) until one contains `needle`, or, without one, until the
    /// child closes its end. Returns whether the needle was seen.
    fn read(&mut self, needle: Option<&str>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.take(left) else {
                break;
            };
            if needle.is_some_and(|n| line.contains(n)) {
                return true;
            }
        }
        false
    }

    /// The next line (waiting at most 60 s for it), kept in `seen` too; none once the child
    /// closed its end.
    pub(crate) fn next_line(&mut self) -> Option<String> {
        match self.take(Duration::from_secs(60)) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line for 60 s; output so far:\n{}", self.seen)
            }
        }
    }

    /// The next line, waited for at most `within`, kept in `seen`.
    fn take(&mut self, within: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        let line = self.rx.recv_timeout(within)?;
        self.seen.push_str(&line);
        self.seen.push('\n');
        Ok(line)
    }

    /// Reads until a line contains `needle` (at most 60 s).
    pub(crate) fn until(&mut self, needle: &str) {
        if !self.read(Some(needle)) {
            panic!("no line with {needle:?}; output so far:\n{}", self.seen);
        }
    }

    /// Of a `--output json` run: reads until its start, and returns its id.
    pub(crate) fn run_id(&mut self) -> String {
        self.until("\"run_started\"");
        let started = self.seen.lines().find(|l| l.contains("run_started"));
        let started: serde_json::Value = serde_json::from_str(started.unwrap()).unwrap();
        started["run_id"].as_str().unwrap().to_owned()
    }

    /// Reads the rest, until the child closes its end (at most 60 s), and returns every line
    /// seen, those read before included.
    pub(crate) fn rest(&mut self) -> &str {
        self.read(None);
        &self.seen
    }
}

pub(crate) fn spawn(cache: &Path, args: &[&str]) -> (Child, Lines, Lines) {
    let mut child = medic_command(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::of(child.stdout.take().unwrap());
    let err = Lines::of(child.stderr.take().unwrap());
    (child, out, err)
}

pub(crate) fn wait(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "medic did not end within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn export(cache: &Path, id: &str) -> serde_json::Value {
    let o = medic(cache, &["runs", "export", id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn newest_run(cache: &Path) -> serde_json::Value {
    let o = medic(cache, &["runs", "list", "--output", "json", "--limit", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(stdout(&o).lines().next().expect("a run")).unwrap()
}

/// A change, a gate watching it, and a verify that needs several checks (more than one
/// interval) to pass: the case a cancel used to cut short.
const GATED_VERIFY: &str = "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
    [[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = { interval = \"100ms\", successes = 1000, timeout = \"60s\" }\n\n\
    [[steps]]\nid = \"later\"\nuses = \"act\"\n\n\
    [[verify]]\nid = \"fine\"\nuses = \"check\"\ngate = { interval = \"150ms\", successes = 4, timeout = \"20s\" }\n";

#[test]
fn a_cancel_mid_gate_rolls_back_and_waits_for_the_gated_verify_whatever_the_signal() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(dir.path(), "on_failure = \"rollback\"", GATED_VERIFY);
    for (sig, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")] {
        let (mut child, mut out, mut err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
        out.until("↻ bake");
        signal(child.id(), sig);
        let code = wait(&mut child);
        let out = out.rest().to_owned();
        let err = err.rest().to_owned();
        assert_eq!(code, Some(6), "{name}:\n{out}\n{err}");
        assert!(out.contains("✓ change.rollback"), "{name}:\n{out}");
        assert!(
            out.contains("✓ fine") && out.contains("passed 4 times in a row"),
            "{name}: the verify gate ran to its verdict:\n{out}"
        );
        assert!(
            out.contains("■ cancelled after") && out.contains("rolled back and verified"),
            "{name}:\n{out}"
        );
        assert!(!out.contains("ROLLBACK FAILED"), "{name}:\n{out}");
        let run = newest_run(cache.path());
        assert_eq!(run["status"], "cancelled", "{name}: {run}");
    }
}

#[test]
fn a_second_ctrl_c_says_what_runs_and_a_third_aborts_leaving_a_run_that_can_be_rolled_back() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The verify fails its first 12 checks (calls are counted across processes through the
    // run's journaled state), so the rollback is still verifying when the responder gives up.
    let body = GATED_VERIFY.replace(
        "id = \"fine\"\nuses = \"check\"\n",
        "id = \"fine\"\nuses = \"check\"\nwith = { mode = \"fail\", fail_times = 12 }\n",
    );
    let body = body.replace(
        "successes = 4, timeout",
        "successes = 1, failures = 100, timeout",
    );
    let rb = scripted_runbook(dir.path(), "on_failure = \"rollback\"", &body);
    let (mut child, mut out, mut err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
    out.until("↻ bake");
    signal(child.id(), SIGINT);
    out.until("↻ fine");
    signal(child.id(), SIGINT);
    err.until("Ctrl-C once more aborts");
    assert!(
        err.seen.contains("still running: verify check `fine`") && err.seen.contains("at most"),
        "{}",
        err.seen
    );
    signal(child.id(), SIGINT);
    let code = wait(&mut child);
    let err = err.rest().to_owned();
    let run = newest_run(cache.path());
    let id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        code,
        Some(5),
        "an abort leaves a person something to do:\n{err}"
    );
    assert!(
        err.contains(&format!("medic runs rollback {id}")),
        "the way out is printed:\n{err}"
    );
    assert_eq!(run["status"], "interrupted", "{run}");
    let journal = export(cache.path(), &id);
    let last = journal["journal"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "run_aborted", "{last}");

    // A new process finishes the job: undo again, verify until healthy.
    let o = medic(cache.path(), &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("✓ fine"), "{}", stdout(&o));
}

#[test]
fn a_rejected_or_unanswered_approval_undoes_only_what_acted() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // go_live's revert fails loudly: if it were called, the run would end rollback_failed.
    let body = "[[steps]]\nid = \"prepare\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
                [[steps]]\nid = \"go_live\"\nuses = \"act\"\nrollback = \"revert\"\n\
                approval = { timeout = \"TIMEOUT\", prompt = \"switch traffic?\" }\n\
                with = { revert_mode = \"permanent\" }\n\n\
                [[verify]]\nid = \"fine\"\nuses = \"check\"\n";
    for reject in [true, false] {
        let timeout = if reject { "60s" } else { "1s" };
        let rb = scripted_runbook(
            dir.path(),
            "on_failure = \"rollback\"",
            &body.replace("TIMEOUT", timeout),
        );
        let child = medic_command(cache.path())
            .args(["run", rb.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if reject {
            let waiting = crate::support::pending_approvals(&cache.path().join("data/approvals"));
            assert_eq!(waiting.len(), 1);
            crate::cli::decide(cache.path(), false, &waiting[0].run_id, "not now");
        }
        let o = child.wait_with_output().unwrap();
        let out = stdout(&o);
        assert_eq!(
            o.status.code(),
            Some(4),
            "reject={reject}:\n{out}{}",
            stderr(&o)
        );
        assert!(out.contains("✓ prepare.rollback"), "{out}");
        assert!(
            !out.contains("go_live.rollback"),
            "go_live never acted, so nothing of it is undone:\n{out}"
        );
        assert!(out.contains("↩ rolled back and verified healthy"), "{out}");
    }
}

/// The demo service with deploys that take effect at once and answer `delay` later.
fn slow_deploy_service(delay: &str) -> crate::cli::Service {
    crate::cli::service_with(&["--bad", "v3", "--deploy-delay", delay])
}

/// The demo service's version, by a plain HTTP/1.0 request (the test must not depend on the
/// code under test to read it).
fn version(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /version HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default()
}

/// Waits until the service runs `want` (at most 30 s).
fn until_version(addr: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while version(addr) != want {
        assert!(Instant::now() < deadline, "the service never ran {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `medic run runbooks/demo.toml` (a relative path, from the repository) deploying
/// `to`, and SIGKILLs it inside the deploy: after the service took the version, before the
/// call returned. Returns the run's id, as the run told it; no command has looked at the
/// store since, so the next one finds the run's process gone.
fn kill_inside_the_deploy(cache: &Path, addr: &str, to: &str) -> String {
    let (mut child, mut out, _err) = spawn(
        cache,
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &format!("host={addr}"),
            "--param",
            &format!("version={to}"),
            "--output",
            "json",
        ],
    );
    let id = out.run_id();
    until_version(addr, to);
    signal(child.id(), SIGKILL);
    wait(&mut child);
    id
}

#[test]
fn a_kill_inside_a_deploy_is_undone_by_runs_rollback_from_another_directory() {
    let cache = tempfile::tempdir().unwrap();
    let svc = slow_deploy_service("2s");
    let id = kill_inside_the_deploy(cache.path(), &svc.addr, "v2");
    assert_eq!(version(&svc.addr), "v2", "the change was made");

    let elsewhere = tempfile::tempdir().unwrap();
    let o = medic_command(cache.path())
        .current_dir(elsewhere.path())
        .args(["runs", "rollback", &id])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}\n{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("run {id} was left running by a process that died")),
        "{}",
        stderr(&o)
    );
    assert!(out.contains("redeployed v1 (was v2)"), "{out}");
    assert_eq!(version(&svc.addr), "v1", "the service is back where it was");
    // Who picked the run up is on record.
    let shown = stdout(&medic(cache.path(), &["runs", "show", &id]));
    assert!(shown.contains("picked up to rollback by "), "{shown}");
}

#[test]
fn a_resumed_deploy_still_rolls_back_to_the_version_before_the_change() {
    let cache = tempfile::tempdir().unwrap();
    let svc = slow_deploy_service("1s");
    // v3 is bad: once resumed, the gate after the deploy fails and the run rolls back.
    let id = kill_inside_the_deploy(cache.path(), &svc.addr, "v3");
    let o = medic(cache.path(), &["runs", "resume", &id]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}\n{}", stderr(&o));
    assert!(out.contains("redeployed v1 (was v3)"), "{out}");
    assert!(out.contains("✓ healthy_again"), "{out}");
    assert_eq!(version(&svc.addr), "v1");
}

#[test]
fn resuming_a_killed_run_at_once_names_it_as_the_run_resumed_not_one_to_see_to() {
    let cache = tempfile::tempdir().unwrap();
    let svc = slow_deploy_service("1s");
    let id = kill_inside_the_deploy(cache.path(), &svc.addr, "v2");
    // No command has looked at the store since: the resume (by a prefix of the id, as a
    // responder types it) is the one that finds the run's process gone.
    let o = medic(cache.path(), &["runs", "resume", &id[..12]]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{}\n{err}", stdout(&o));
    assert!(
        err.contains(&format!(
            "run {id} was left running by a process that died: now marked interrupted"
        )),
        "{err}"
    );
    // Not told to resume or roll back the very run it is resuming.
    assert!(!err.contains("whose process died mid-run"), "{err}");
    assert_eq!(version(&svc.addr), "v2");
}

#[test]
fn resuming_a_run_killed_during_its_rollback_continues_the_rollback() {
    let cache = tempfile::tempdir().unwrap();
    let svc = slow_deploy_service("2s");
    let (mut child, mut out, _err) = spawn(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--param",
            &format!("host={}", svc.addr),
            "--param",
            "version=v3",
        ],
    );
    out.until("↩ rolling back");
    // The revert's deploy took v1 and has not answered yet: kill inside the rollback.
    until_version(&svc.addr, "v1");
    signal(child.id(), SIGKILL);
    wait(&mut child);
    let id = newest_run(cache.path())["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = medic(cache.path(), &["runs", "resume", &id]);
    let out = stdout(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{out}\n{err}");
    assert!(err.contains("resuming continues the rollback"), "{err}");
    for forward in ["health_before", "health_after", "version_check", "deploy "] {
        assert!(
            !out.lines().any(|l| {
                let l = l.trim_start();
                ["✓ ", "✗ ", "! ", "↻ "]
                    .iter()
                    .any(|mark| l.starts_with(&format!("{mark}{forward}")))
            }),
            "a forward step ran again ({forward}):\n{out}"
        );
    }
    assert!(
        out.contains("deploy.rollback") && out.contains("✓ healthy_again"),
        "{out}"
    );
    assert_eq!(version(&svc.addr), "v1");
}

#[test]
fn resuming_a_cancelled_run_runs_the_steps_the_cancel_skipped() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No rollback path: the cancel leaves `first` in place and skips `later`. The gate's
    // first three checks are inconclusive; the resumed run's checks pass.
    let body = "[[steps]]\nid = \"first\"\nuses = \"act\"\n\n\
                [[steps]]\nid = \"bake\"\nuses = \"check\"\n\
                gate = { interval = \"500ms\", successes = 1, timeout = \"60s\" }\n\
                with = { mode = \"inconclusive\", fail_times = 3 }\n\n\
                [[steps]]\nid = \"later\"\nuses = \"act\"\n";
    let rb = scripted_runbook(dir.path(), "", body);
    let (mut child, mut out, _err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
    out.until("↻ bake");
    signal(child.id(), SIGINT);
    assert_eq!(wait(&mut child), Some(6), "{}", out.rest());
    assert!(out.rest().contains("skipped: the run was cancelled"));
    let id = newest_run(cache.path())["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let o = medic(cache.path(), &["runs", "resume", &id]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("✓ later"), "the skipped step ran:\n{out}");
    assert!(out.contains("✓ bake"), "{out}");
    assert_eq!(newest_run(cache.path())["status"], "succeeded");
}

#[test]
fn a_dry_run_has_its_own_outcome_and_is_not_counted() {
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&["v3"]);
    let o = medic(
        cache.path(),
        &[
            "run",
            "runbooks/demo.toml",
            "--dry-run",
            "--param",
            &format!("host={}", svc.addr),
            "--param",
            "version=v3",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("✓ dry run in"), "{out}");
    assert!(!out.contains("rolled back"), "{out}");
    assert_eq!(version(&svc.addr), "v1");
    assert_eq!(newest_run(cache.path())["status"], "dry_run");
    let o = medic(cache.path(), &["stats", "--output", "json"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["runs"], 0, "{stats}");
    assert_eq!(stats["change_runs"], 0, "{stats}");
}

/// `medic` in a real terminal (a pty from `script`): its own session, so closing the
/// terminal hangs it up as a closed ssh session would.
fn in_terminal(cache: &Path, args: &str) -> Child {
    let cmd = format!("exec {MEDIC} {args}");
    Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("MEDIC_CACHE_DIR", cache)
        .env("MEDIC_DATA_DIR", cache.join("data"))
        .env("NO_COLOR", "1")
        .current_dir(crate::cli::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux")
}

/// Waits (at most 60 s) until the newest run has ended, and returns it.
fn ended_run(cache: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = medic(cache, &["runs", "list", "--output", "json", "--limit", "1"]);
        if let Some(line) = stdout(&o).lines().next() {
            let run: serde_json::Value = serde_json::from_str(line).unwrap();
            if run["status"] != "running" {
                return run;
            }
        }
        assert!(Instant::now() < deadline, "the run never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_closed_terminal_mid_gate_rolls_back_verifies_and_records_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(dir.path(), "on_failure = \"rollback\"", GATED_VERIFY);
    let mut term = in_terminal(cache.path(), &format!("run {}", rb.display()));
    let mut screen = Lines::of(term.stdout.take().unwrap());
    screen.until("↻ bake");
    // The terminal goes away (its emulator or ssh session ends): the pty's master closes.
    term.kill().unwrap();
    term.wait().unwrap();
    let run = ended_run(cache.path());
    assert_eq!(run["status"], "cancelled", "{run}");
    let id = run["run_id"].as_str().unwrap();
    let o = medic(cache.path(), &["runs", "show", id]);
    let shown = stdout(&o);
    assert!(shown.contains("✓ change.rollback"), "{shown}");
    assert!(
        shown.contains("✓ fine"),
        "the gated verify ran to its verdict:\n{shown}"
    );
}

#[test]
fn declining_the_rollback_at_the_terminal_prints_the_command_that_does_it_later() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(dir.path(), "on_failure = \"rollback\"", GATED_VERIFY);
    let mut term = in_terminal(cache.path(), &format!("run {}", rb.display()));
    let mut keys = term.stdin.take().unwrap();
    let mut screen = Lines::of(term.stdout.take().unwrap());
    screen.until("↻ bake");
    keys.write_all(b"\x03").unwrap(); // Ctrl-C, through the terminal's line discipline
    keys.flush().unwrap();
    // The steps the cancel skipped are shown just before the question; the terminal keeps
    // the answer until medic reads it.
    screen.until("skipped: the run was cancelled");
    keys.write_all(b"n\n").unwrap();
    keys.flush().unwrap();
    let shown = screen.rest().to_owned();
    let run = ended_run(cache.path());
    let id = run["run_id"].as_str().unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(shown.contains("Roll back what it did?"), "{shown}");
    assert!(
        shown.contains(&format!("medic runs rollback {id}")),
        "the command is printed:\n{shown}"
    );
    assert!(
        !shown.contains("change.rollback"),
        "nothing was undone:\n{shown}"
    );
    assert!(shown.contains("nothing was rolled back"), "{shown}");
    term.wait().unwrap();
}

/// Ctrl-C three times while a check runs right after an action: the action's end and the
/// check's start were sent together, left unconfirmed while the check began, and shown once
/// durable. The abort records the run interrupted without waiting for the check and undoes
/// nothing; `medic runs rollback` from a new process then undoes the action.
#[test]
fn an_abort_while_a_check_runs_after_an_action_records_both_and_leaves_the_undo_to_runs_rollback() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, paths) = crate::stalled_store::holding_server("/run/probe", Duration::from_secs(20));
    let rb = dir.path().join("held.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"held\"\non_failure = \"rollback\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"deploy\"\nuses = \"act\"\nrollback = \"revert\"\nwith = {{ record_url = \"http://{addr}\" }}\n\n\
             [[steps]]\nid = \"probe\"\nuses = \"check\"\nwith = {{ record_url = \"http://{addr}\" }}\n\n\
             [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
            medic::host::fixtures::SCRIPTED_ACTION,
            medic::host::fixtures::SCRIPTED_CHECK,
        ),
    )
    .unwrap();
    let (mut child, mut out, mut err) = spawn(
        cache.path(),
        &["run", rb.to_str().unwrap(), "--output", "json"],
    );
    out.until("\"step\":\"probe\"}");
    crate::stalled_store::until_asked(&paths, "/run/probe");
    signal(child.id(), SIGINT);
    err.until("cancelling");
    signal(child.id(), SIGINT);
    err.until("still running: step `probe`");
    signal(child.id(), SIGINT);
    let code = wait(&mut child);
    let said = err.rest().to_owned();
    assert_eq!(code, Some(5), "{said}");
    assert!(said.contains("is recorded as interrupted"), "{said}");
    let id = newest_run(cache.path())["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = export(cache.path(), &id);
    assert_eq!(record["record"]["status"], "interrupted", "{record}");
    let journal = record["journal"].to_string();
    assert!(
        journal.contains("\"deploy\"") && journal.contains("\"probe\""),
        "{record}"
    );
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy", "/run/probe"],
        "nothing undone by the abort"
    );
    let o = medic(cache.path(), &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let shown = stdout(&o);
    assert!(
        shown.contains("↩ rolling back: the run was interrupted")
            && shown.contains("✓ deploy.rollback")
            && shown.contains("; interrupted: step probe")
            && !shown.contains("failed: step probe"),
        "{shown}"
    );
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy", "/run/probe", "/revert/deploy.rollback"]
    );
}
