//! The local store, cache and approvals are trusted only when they are this user's alone;
//! what a plugin or a runbook prints cannot take over the terminal.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{MEDIC, medic, medic_command, scripted_runbook, stderr, stdout};

/// Every file and directory under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((
                e.path().display().to_string(),
                meta.mode() & 0o777,
                meta.is_dir(),
            ));
        }
    }
    out
}

#[test]
fn everything_medic_writes_is_private_whatever_the_umask() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "",
        "[[steps]]\nid = \"go\"\nuses = \"act\"\napproval = { timeout = \"2s\" }\n",
    );
    // A permissive umask, as some shells and CI runners have.
    let o = Command::new("sh")
        .args([
            "-c",
            &format!("umask 000; exec {MEDIC} run {}", rb.display()),
        ])
        .env("MEDIC_CACHE_DIR", cache.path().join("cache"))
        .env("MEDIC_DATA_DIR", cache.path().join("data"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let all = modes(cache.path());
    assert!(all.iter().any(|(p, ..)| p.ends_with("/key")), "{all:?}");
    assert!(all.iter().any(|(p, ..)| p.contains("approvals")), "{all:?}");
    for (path, mode, is_dir) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}, not {want:o}");
    }
}

#[test]
fn a_data_or_cache_directory_others_can_write_is_refused_by_name() {
    let top = tempfile::tempdir().unwrap();
    let open = top.path().join("shared");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = medic_command(top.path())
        .env("MEDIC_DATA_DIR", &open)
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the data directory {} is writable by every user",
            open.display()
        )),
        "{}",
        stderr(&o)
    );
    // A cache others can write is not used (the run still works, compiling in memory).
    let o = medic_command(top.path())
        .env("MEDIC_CACHE_DIR", &open)
        .args(["validate", "runbooks/demo.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not using the compiled-plugin cache")
            && stderr(&o).contains("writable by every user"),
        "{}",
        stderr(&o)
    );
    assert!(
        std::fs::read_dir(&open).unwrap().next().is_none(),
        "nothing was written into it"
    );
}

const TOKEN: &str = "s3cr3t T0ken-é";

/// A runbook whose plugin leaks the secret every way it can.
fn leaky_runbook(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[runbook]\nname = \"leaky\"\n\n\
         [params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"MEDIC_TEST_TOKEN\"\n\n\
         [plugins.leaky]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
         [[steps]]\nid = \"leak\"\nuses = \"leaky\"\non_failure = \"continue\"\n\
         with = {{ mode = \"leak\", url = \"http://127.0.0.1:9\", secret = \"{{{{ params.token }}}}\" }}\n\n\
         [[steps]]\nid = \"derived\"\nuses = \"leaky\"\non_failure = \"continue\"\n\
         with = {{ mode = \"leak\", url = \"http://127.0.0.1:9\", secret = \"{{{{ params.token | upper }}}}\" }}\n\n\
         [[steps]]\nid = \"denied\"\nuses = \"leaky\"\non_failure = \"continue\"\n\
         with = {{ mode = \"leak\", url = \"http://192.0.2.1:9\", secret = \"{{{{ params.token }}}}\" }}\n\n\
         [[steps]]\nid = \"panics\"\nuses = \"leaky\"\non_failure = \"continue\"\n\
         with = {{ mode = \"leak-panic\", secret = \"{{{{ params.token[2:] }}}}\" }}\n",
        medic::host::fixtures::HOSTILE
    );
    let path = dir.join("leaky.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_secret_never_shows_at_any_verbosity_nor_in_the_record_in_any_form() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = leaky_runbook(dir.path());
    let forms = [
        TOKEN.to_owned(),
        TOKEN.to_uppercase(),
        TOKEN[2..].to_owned(),
        "s3cr3t%20T0ken-%C3%A9".to_owned(),
        "s3cr3t+T0ken-%C3%A9".to_owned(),
        "T0ken".to_owned(),
    ];
    let check = |what: &str, text: &str| {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{what} shows {f:?}:\n{text}");
        }
    };
    for verbosity in [None, Some("-v"), Some("-vv"), Some("-vvv")] {
        let mut cmd = medic_command(cache.path());
        cmd.env("MEDIC_TEST_TOKEN", TOKEN);
        cmd.args(verbosity);
        cmd.args(["run", rb.to_str().unwrap()]);
        let o = cmd.output().unwrap();
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
        // The plugin did leak: its calls ran and were recorded, masked.
        assert!(out.contains("summary ••••••"), "{out}");
        assert!(out.contains("http GET 192.0.2.1:9/••••••"), "{out}");
        assert!(
            out.contains("plugin panicked: panicking with ••••••"),
            "{out}"
        );
        check(&format!("stdout {verbosity:?}"), &out);
        check(&format!("stderr {verbosity:?}"), &err);
    }
    let list = medic(cache.path(), &["runs", "list", "--output", "json"]);
    for line in stdout(&list).lines() {
        let run: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = run["run_id"].as_str().unwrap();
        for args in [
            vec!["runs", "export", id],
            vec!["runs", "show", id],
            vec!["runs", "logs", id],
        ] {
            let o = medic(cache.path(), &args);
            check(&format!("{args:?}"), &stdout(&o));
        }
    }
}

#[test]
fn a_plugin_that_exits_or_hands_over_too_much_fails_by_name() {
    use medic::host::{Failure, Sandbox};
    let rt = crate::support::runtime();
    rt.block_on(async {
        let host = crate::support::host_with_cache(None);
        let plugin = host
            .load(&crate::support::hostile_source(), None)
            .await
            .unwrap();
        for (mode, kind) in [("exit", "plugin_exit"), ("huge-summary", "limit")] {
            let inv = host
                .invoke(
                    &plugin,
                    crate::support::run_call(&[("mode", crate::support::text(mode))]),
                    &crate::support::ctx(mode),
                    &Sandbox::default(),
                )
                .await;
            let failure = inv.result.unwrap_err();
            assert_eq!(failure.kind(), kind, "{mode}: {failure}");
            // WASI preview 2 carries only success or failure: exit(3) arrives as 1.
            if let Failure::PluginExit { code } = failure {
                assert_ne!(code, 0);
            }
        }
    });
}

/// Runs `medic` to the end and returns its exit code, its peak resident memory in bytes and
/// its stderr. The peak is read by a small Python parent: Linux carries the maxrss of the
/// process that forked into the child it execs, so a child forked from this (large) test
/// process would report the test's own size.
fn peak_rss(cmd: Command) -> (Option<i32>, u64, String) {
    let mut wrapped = Command::new("/usr/bin/python3");
    wrapped
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:])\n\
             sys.stderr.write('maxrss %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
             sys.exit(r.returncode)",
        ])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let o = wrapped.output().unwrap();
    let err = stderr(&o);
    let kib: u64 = err
        .lines()
        .filter_map(|l| l.strip_prefix("maxrss "))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss reported: {err}"));
    (o.status.code(), kib * 1024, err)
}

/// The most memory a `medic run` may use whatever a plugin sends (stated in the README).
const RSS_BOUND: u64 = 256 << 20;

#[test]
fn floods_of_logs_capability_uses_and_output_leave_medic_small_and_the_record_bounded() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::new();
    for mode in [
        "giant-logs",
        "uses-flood",
        "log-flood",
        "stderr-flood",
        "huge-summary",
    ] {
        body += &format!(
            "[[steps]]\nid = \"{}\"\nuses = \"h\"\non_failure = \"continue\"\ntimeout = \"3s\"\nwith = {{ mode = \"{mode}\" }}\n\n",
            mode.replace('-', "_")
        );
    }
    let text = format!(
        "[runbook]\nname = \"floods\"\n\n[plugins.h]\nsource = \"{}\"\nmemory = \"256MiB\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n{body}",
        medic::host::fixtures::HOSTILE
    );
    let rb = dir.path().join("floods.toml");
    std::fs::write(&rb, text).unwrap();
    let mut cmd = medic_command(cache.path());
    cmd.args(["run", rb.to_str().unwrap()]);
    let (code, rss, err) = peak_rss(cmd);
    assert_eq!(code, Some(0), "every flood is a tolerated failure: {err}");
    eprintln!("peak RSS of medic under floods: {} MiB", rss >> 20);
    assert!(
        rss < RSS_BOUND,
        "medic grew to {} MiB (bound {} MiB)",
        rss >> 20,
        RSS_BOUND >> 20
    );
    let list = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let run: serde_json::Value =
        serde_json::from_str(stdout(&list).lines().next().unwrap()).unwrap();
    let export = medic(
        cache.path(),
        &["runs", "export", run["run_id"].as_str().unwrap()],
    );
    let size = export.stdout.len();
    assert!(size < 16 << 20, "the record is {} MiB", size >> 20);
    let e: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    let steps: Vec<&serde_json::Value> = e["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["type"] == "step_finished")
        .collect();
    let summary_of = |id: &str| {
        steps
            .iter()
            .find(|s| s["report"]["id"] == id)
            .map(|s| s["report"]["summary"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert!(
        summary_of("huge_summary").contains("went past a limit"),
        "{}",
        summary_of("huge_summary")
    );
}

#[test]
fn control_characters_from_plugins_and_runbooks_are_shown_escaped() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "",
        "[[steps]]\nid = \"forge\"\nuses = \"act\"\nwith = { mode = \"fail\", echo = \"\\u001b[2J\\r  ✓ deploy   act   1ms  fine\\nnext\" }\n",
    );
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert!(out.contains("\\u{1b}[2J\\r  ✓ deploy"), "{out}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("✓ deploy")),
        "a forged line:\n{out}"
    );
    // The record keeps the text as it was; showing it escapes it again.
    let list = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let run: serde_json::Value =
        serde_json::from_str(stdout(&list).lines().next().unwrap()).unwrap();
    let id = run["run_id"].as_str().unwrap();
    for args in [["runs", "show", id], ["runs", "logs", id]] {
        let shown = stdout(&medic(cache.path(), &args));
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\r'),
            "{args:?}: {shown:?}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let cache = tempfile::tempdir().unwrap();
    let mut child = medic_command(cache.path())
        .args(["schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head` that has read enough
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.code() == Some(0) || o.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// Runs a fleet step of the hostile plugin over `targets`, all at once, each call with
/// `timeout` and `with`; the run must end 0 (every failure within `max_errors`). Returns
/// each target's report and how long it took, in seconds, in the order they ended.
fn hostile_fleet(timeout: &str, with: &str, targets: &[&str]) -> Vec<(serde_json::Value, f64)> {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[runbook]\nname = \"fleet\"\n\n[plugins.h]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
         [[steps]]\nid = \"fleet\"\nuses = \"h\"\ntimeout = \"{timeout}\"\nwith = {with}\n\
         [steps.fleet]\ntargets = {targets:?}\nmax_concurrency = \"AllAtOnce\"\nmax_errors = \"100%\"\n",
        medic::host::fixtures::HOSTILE
    );
    let rb = dir.path().join("fleet.toml");
    std::fs::write(&rb, text).unwrap();
    let o = medic(
        cache.path(),
        &["run", rb.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ended: Vec<(serde_json::Value, f64)> = crate::support::json_lines(&stdout(&o))
        .into_iter()
        .filter(|e| e["event"] == "target_finished")
        .map(|e| {
            let t = e["target"].clone();
            let took = t["duration"]["secs"].as_f64().unwrap()
                + t["duration"]["nanos"].as_f64().unwrap() / 1e9;
            (t, took)
        })
        .collect();
    assert_eq!(ended.len(), targets.len());
    ended
}

#[test]
fn cpu_bound_fleet_targets_take_turns_and_each_ends_at_its_own_deadline() {
    // Ten targets whose plugin never stops computing, all at once, one second each.
    let targets = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"];
    for (t, took) in hostile_fleet("1s", r#"{ mode = "loop" }"#, &targets) {
        assert_eq!(
            t["status"]["failure"]["kind"],
            "timeout",
            "{}",
            serde_json::to_string_pretty(&t).unwrap()
        );
        // The limit under test: each call ends within its deadline + 20%, not after the
        // others' turns (10 s one after another, as before), nor counted from when a call
        // thread took it up.
        assert!(
            took < 1.2,
            "{} took {took:.2}s for a 1s deadline",
            t["target"]
        );
    }
}

#[test]
fn a_fleet_target_that_waits_is_not_held_up_by_targets_that_compute() {
    // Eight targets that never stop computing (until their 3 s deadline) and two that
    // sleep 50 ms, all at once: the sleepers wake in their turn, not after the others'.
    let with = r#"{ mode = "{% if target is startingwith('nap') %}sleep{% else %}loop{% endif %}", sleep = "50ms" }"#;
    let targets = [
        "t0", "t1", "t2", "t3", "nap0", "t4", "t5", "t6", "t7", "nap1",
    ];
    let mut naps = 0;
    for (t, took) in hostile_fleet("3s", with, &targets) {
        let pretty = serde_json::to_string_pretty(&t).unwrap();
        if !t["target"].as_str().unwrap().starts_with("nap") {
            assert_eq!(t["status"]["failure"]["kind"], "timeout", "{pretty}");
            assert!(
                took < 3.6,
                "{} took {took:.2}s for a 3s deadline",
                t["target"]
            );
            continue;
        }
        naps += 1;
        assert_eq!(t["status"]["status"], "succeeded", "{pretty}");
        // The limit under test: woken within a few of the others' 10 ms turns, not after
        // dozens of them (0.6 s and more at a scheduler's default intervals).
        assert!(took < 0.5, "{} took {took:.2}s to sleep 50 ms", t["target"]);
    }
    assert_eq!(naps, 2);
}

#[test]
fn a_decision_made_before_the_request_does_not_count() {
    use medic::executor::{Approver, Cancel, Decision};
    use medic::store::approvals::{StoreApprover, decide};
    let dir = tempfile::tempdir().unwrap();
    let approvals = dir.path().join("approvals");
    let rt = crate::support::runtime();
    rt.block_on(async {
        let place = medic::store::Place::Files(dir.path().to_owned());
        let approver = StoreApprover {
            place: place.clone(),
            policy: Default::default(),
        };
        let run = "01jfakerun00000000000000000";
        // An approval left by an earlier process for the same run and step (a resumed run
        // asks again): planted before the request, it must not let the step act.
        std::fs::create_dir_all(&approvals).unwrap();
        for name in [
            format!("{run}.go.decision.json"),
            format!("{run}.go.decision.00aa11bb22cc33dd.json"),
        ] {
            std::fs::write(
                approvals.join(name),
                r#"{"approved":true,"by":"someone@else","reason":"old","at_ms":1}"#,
            )
            .unwrap();
        }
        let cancel = Cancel::new();
        let asked = approver.wait(run, "go", "go?", Duration::from_millis(600), &cancel);
        assert_eq!(asked.await, Decision::TimedOut);

        // A decision made after the request counts.
        let waiting = approver.wait(run, "go", "go?", Duration::from_secs(20), &cancel);
        let deciding = async {
            for _ in 0..100 {
                if decide(&place, run, Some("go"), false, "me@here", &[], "no").is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the request never appeared");
        };
        let (decision, ()) = tokio::join!(waiting, deciding);
        assert_eq!(
            decision,
            Decision::Rejected {
                by: "me@here".into(),
                reason: "no".into()
            }
        );
        // Ids that would name a file elsewhere are refused.
        let escape = approver
            .wait("../../x", "go", "go?", Duration::from_secs(1), &cancel)
            .await;
        assert!(matches!(escape, Decision::Rejected { .. }), "{escape:?}");
        assert!(!dir.path().join("x.go.pending.json").exists());
    });
}

#[test]
fn identity_comes_from_the_real_user_not_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(dir.path(), "", "[[steps]]\nid = \"go\"\nuses = \"act\"\n");
    let o = medic_command(cache.path())
        .env("USER", "mallory")
        .env("LOGNAME", "mallory")
        .args(["run", rb.to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let list = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let run: serde_json::Value =
        serde_json::from_str(stdout(&list).lines().next().unwrap()).unwrap();
    let user = run["trigger"]["user"].as_str().unwrap();
    assert_ne!(user, "mallory", "{run}");
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(
        user == medic::private::user_name(uid) && !user.starts_with("uid "),
        "{user}"
    );
}

#[test]
fn a_bloated_manifest_is_refused_at_load_by_name() {
    let rt = crate::support::runtime();
    rt.block_on(async {
        let host = crate::support::host_with_cache(None);
        let source = medic::host::PluginSource::File(medic::host::fixtures::BLOATED.into());
        let e = host.load(&source, None).await.unwrap_err().to_string();
        assert!(e.contains("at most 256 are accepted"), "{e}");
    });
}

#[test]
fn a_client_sends_nothing_to_a_socket_another_user_serves() {
    // SAFETY: getuid(2) cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("not root: this test needs root to serve a socket as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A mistake makes the data directory writable by everyone; another user plants a fake
    // `medic serve` there, hoping for the secrets a client sends along with a run.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let notes = top.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = format!(
        "import socket, os\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind({sock:?})\n\
         os.chmod({sock:?}, 0o666)\n\
         s.listen(8)\n\
         open({notes:?} + '/ready', 'w').close()\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   open({notes:?} + '/connections', 'a').write('x')\n\
         \x20   c.settimeout(2)\n\
         \x20   try:\n\
         \x20       data = c.recv(65536)\n\
         \x20   except OSError:\n\
         \x20       data = b''\n\
         \x20   open({notes:?} + '/heard', 'ab').write(data)\n\
         \x20   try:\n\
         \x20       c.sendall(b'{{\"ok\": {{\"serving\": \"medic serve\", \"pid\": 1}}}}\\n')\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   c.close()\n",
        sock = data.join("medic.sock").display().to_string(),
        notes = notes.display().to_string(),
    );
    use std::os::unix::process::CommandExt;
    let mut server = Command::new("runuser")
        .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", &fake])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // runuser's child runs as another user: the whole group is stopped when the test ends.
    struct Group(i32);
    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the process group this test created.
            unsafe {
                libc::kill(-self.0, libc::SIGKILL);
            }
        }
    }
    let _group = Group(server.id() as i32);
    for _ in 0..400 {
        if notes.join("ready").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        notes.join("ready").exists(),
        "the fake server never started"
    );
    let rb = scripted_runbook(top.path(), "", "[[steps]]\nid = \"go\"\nuses = \"act\"\n");
    // Medic's own cache elsewhere: it makes its cache directory private.
    let cache = tempfile::tempdir().unwrap();
    let o = medic_command(cache.path())
        .env("MEDIC_DATA_DIR", &data)
        .args(["run", rb.to_str().unwrap()])
        .output()
        .unwrap();
    // The server notes a connection before anything else: give it a moment.
    for _ in 0..100 {
        if notes.join("heard").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("writable by every user"),
        "{}",
        stderr(&o)
    );
    let connections = std::fs::read_to_string(notes.join("connections")).unwrap_or_default();
    assert!(!connections.is_empty(), "the fake server was never reached");
    let said = std::fs::read_to_string(notes.join("heard")).unwrap_or_default();
    assert!(
        said.is_empty(),
        "the client talked to another user's socket: {said}"
    );
}
