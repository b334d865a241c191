//! The embedded store shared by every command on a host through its store daemon: runs,
//! readers and writers at once on one data directory, none refused; the daemon outside
//! every terminal's reach; its death mid-run stopping the run safely.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{medic, medic_command, stderr, stdout};
use crate::support::json_lines;

/// The pid of the daemon holding the store in `data` (it says so in `owner.json`).
pub(crate) fn daemon_pid(data: &Path) -> u32 {
    let owner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("owner.json")).unwrap()).unwrap();
    assert_eq!(owner["command"], "medic store-daemon", "{owner}");
    owner["pid"].as_u64().unwrap() as u32
}

fn alive(pid: u32) -> bool {
    medic::store::process::Process { pid, start: None }.alive()
}

/// Whether `pid` is still alive after a bounded wait for it to end: a daemon that let go of
/// the store (its `owner.json` gone) still closes sled and logs before its process ends,
/// which takes a moment on a busy machine.
fn still_alive_after_a_while(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    alive(pid)
}

/// Kills the store daemon holding the store in `data` with SIGKILL, and waits (bounded) for
/// it to be gone.
pub(crate) fn kill_daemon(data: &Path) {
    let daemon = daemon_pid(data);
    crate::verdicts::signal(daemon, 9);
    assert!(!still_alive_after_a_while(daemon));
}

/// Waits (bounded) until no store daemon holds the store in `data`: it let go after its
/// idle time. What a test then does to the files is what a crash would leave.
pub fn until_let_go(data: &Path) {
    let deadline = Instant::now() + medic::store::daemon::IDLE + Duration::from_secs(10);
    while data.join("owner.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !data.join("owner.json").exists(),
        "the store daemon stayed without clients"
    );
}

/// A runbook named `name` whose first step waits for an approval (up to a minute), with a
/// lock of its own.
pub fn waiting_runbook(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(crate::recovery::crashy_runbook(dir))
        .unwrap()
        .replace("crashy", name)
        .replacen(
            "id = \"s1\"\n",
            "id = \"s1\"\napproval = { timeout = \"60s\" }\n",
            1,
        );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits (bounded) until `n` runs wait for an approval; their run ids.
fn waiting_runs(data: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<String> =
            medic::store::approvals::pending(&medic::store::Place::Files(data.to_owned()), None)
                .into_iter()
                .map(|p| p.run_id)
                .collect();
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_runs_at_once_on_one_data_directory_with_readers_beside_them_none_refused() {
    let cache = tempfile::tempdir().unwrap();
    crate::shared_store::ten_runs_at_once(cache.path(), &[]);
}

#[test]
fn while_a_run_waits_others_read_prune_and_run_beside_it_and_a_lock_is_waited_for() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let held = waiting_runbook(dir.path(), "held");
    let child = medic_command(cache.path())
        .args(["run", held.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = waiting_runs(&data, 1);
    assert_eq!(waiting.len(), 1, "the run never started waiting");
    let run_id = waiting[0].clone();

    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs = json_lines(&stdout(&o));
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(
        runs[0]["status"], "running",
        "a live run is not taken for dead"
    );
    let shown = medic(cache.path(), &["runs", "show", &run_id]);
    assert!(
        stdout(&shown).contains("s1 waits for approval"),
        "{}",
        stdout(&shown)
    );
    assert_eq!(medic(cache.path(), &["stats"]).status.code(), Some(0));
    let o = medic(cache.path(), &["runs", "prune", "--older-than", "1d"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Another runbook runs to its end meanwhile.
    let quick = crate::shared_store::quick_runbook(dir.path());
    let o = medic(cache.path(), &["run", quick.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The socket is private to the user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("store.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // The same runbook again waits for the lock the first run holds, then gets it.
    let mut second = medic_command(cache.path())
        .args(["run", held.to_str().unwrap(), "--wait", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second run ended instead of waiting for the lock"
    );
    assert_eq!(
        waiting_runs(&data, 1).len(),
        1,
        "the second run waits for the lock, not for an approval"
    );
    let o = medic(cache.path(), &["approve", &run_id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    let second_id = loop {
        let other = waiting_runs(&data, 1).into_iter().find(|id| *id != run_id);
        match other {
            Some(id) => break id,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("the second run never got the lock to wait for its approval"),
        }
    };
    let o = medic(cache.path(), &["approve", &second_id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // While it waited, it said for what, and when it got it.
    let said = stderr(&out);
    assert!(
        said.contains(&format!("is held by run {run_id} (held, pid "))
            && said.contains("waiting up to")
            && said.contains("got lock"),
        "{said}"
    );
    assert!(child.wait_with_output().unwrap().status.success());
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let statuses: Vec<String> = json_lines(&stdout(&o))
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["succeeded"; 3], "{}", stdout(&o));
}

#[test]
fn ctrl_c_while_waiting_for_a_lock_runs_nothing_and_leaves_the_holder_alone() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let held = waiting_runbook(cache.path(), "held");
    let first = medic_command(cache.path())
        .args(["run", held.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = waiting_runs(&data, 1);
    assert_eq!(
        holder.len(),
        1,
        "the first run never waited for its approval"
    );
    let mut second = medic_command(cache.path())
        .args(["run", held.to_str().unwrap(), "--wait", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it says it waits, Ctrl-C.
    use std::io::{BufRead, BufReader};
    let mut err = BufReader::new(second.stderr.take().unwrap());
    let mut said = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !said.contains("waiting up to") && Instant::now() < deadline {
        if err.read_line(&mut said).unwrap() == 0 {
            break;
        }
    }
    assert!(
        said.contains(&format!("is held by run {}", holder[0])),
        "{said}"
    );
    crate::verdicts::signal(second.id(), libc::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(6), "{said}{rest}");
    assert!(rest.contains("cancelled while waiting for lock"), "{rest}");
    // The holder still waits, and is the only run recorded.
    assert_eq!(waiting_runs(&data, 1), holder);
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 1, "{}", stdout(&o));
    let o = medic(cache.path(), &["approve", &holder[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(first.wait_with_output().unwrap().status.success());
}

#[test]
fn a_hangup_of_the_terminal_that_started_the_daemon_leaves_other_runs_recording() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let first = waiting_runbook(dir.path(), "first");
    let other = waiting_runbook(dir.path(), "other");
    // The first command starts the daemon, from a process group of its own, as a shell
    // starts a job: what the terminal sends reaches that whole group.
    let mut a = medic_command(cache.path())
        .args(["run", first.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    assert_eq!(
        waiting_runs(&data, 1).len(),
        1,
        "the first run never waited"
    );
    let daemon = daemon_pid(&data);
    let b = medic_command(cache.path())
        .args(["run", other.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = waiting_runs(&data, 2);
    assert_eq!(waiting.len(), 2, "the second run never waited");

    // The terminal of the first closes.
    // SAFETY: kill(2) on the process group this test started.
    assert_eq!(unsafe { libc::kill(-(a.id() as i32), libc::SIGHUP) }, 0);
    let code = a.wait().unwrap().code();
    assert_eq!(code, Some(6), "the first run is cancelled");
    assert!(alive(daemon), "the daemon went with the terminal");

    let b_id = medic::store::approvals::pending(&medic::store::Place::Files(data.to_owned()), None)
        .into_iter()
        .map(|p| p.run_id)
        .next()
        .expect("the other run still waits");
    let o = medic(cache.path(), &["approve", &b_id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = b.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let o = medic(cache.path(), &["runs", "show", &b_id]);
    assert!(stdout(&o).contains("succeeded"), "{}", stdout(&o));
}

#[test]
fn the_daemon_killed_mid_run_stops_the_run_safely_and_it_is_rolled_back_after() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("cache").join("data");
    let (out, listed) = crate::shared_store::store_lost_mid_action(
        work.path(),
        &[],
        || crate::verdicts::signal(daemon_pid(&data), 9),
        // The next command starts another daemon, which finds the run's process gone.
        || {},
    );
    assert!(stderr(&out).contains("store daemon"), "{}", stderr(&out));
    assert!(
        stderr(&listed).contains("found 1 run whose process died"),
        "{}",
        stderr(&listed)
    );
}

/// An action's start is sent to the daemon and its call begins while the daemon makes it
/// durable (`medic::ahead`). Here the daemon stops answering right then (stopped, then
/// killed): the step after `slow` has its start sent and its call begun, and its plugin
/// asks for an HTTP request at once; that request must wait for the start to be recorded,
/// and, since it never is, never go out.
#[test]
fn a_call_begun_before_its_start_was_confirmed_never_acts_when_the_daemon_dies_unanswering() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("cache").join("data");
    let (out, listed) = crate::shared_store::store_lost_mid_action(
        work.path(),
        &[],
        || {
            let pid = daemon_pid(&data);
            crate::verdicts::signal(pid, 19);
            // `slow` sleeps 1 s; then the next start is sent to the stopped daemon and the
            // next call begins, asking for its request.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(3));
                crate::verdicts::signal(pid, 9);
            });
        },
        || {},
    );
    assert!(stderr(&out).contains("store daemon"), "{}", stderr(&out));
    assert!(
        stderr(&listed).contains("found 1 run whose process died"),
        "{}",
        stderr(&listed)
    );
}

/// The time a call waits for its step's start to be recorded is not the plugin's: a daemon
/// slow to answer (stopped for longer than the step's timeout) delays the action, and the
/// action then runs with its whole time, as it did when the start was awaited before the
/// call began.
#[test]
fn a_call_waiting_for_its_start_to_be_recorded_keeps_its_whole_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target = rt.block_on(crate::support::tiny_server(200, "ok"));
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let data = cache.join("data");
    let rb = work.path().join("slowed.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"slowed\"\n\n\
             [plugins.h]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"slow\"\nuses = \"h\"\nwith = {{ mode = \"sleep\", sleep = \"1s\" }}\n\n\
             [[steps]]\nid = \"after\"\nuses = \"h\"\ntimeout = \"3s\"\nwith = {{ mode = \"http\", url = \"http://{addr}/after\" }}\n",
            medic::host::fixtures::HOSTILE,
            addr = target.addr,
        ),
    )
    .unwrap();
    std::fs::create_dir(&cache).unwrap();
    let mut cmd = medic_command(&cache);
    cmd.args(["run", rb.to_str().unwrap(), "--output", "json"]);
    let (child, mut shown, lines) = crate::support::run_until_started(cmd, "slow");
    {
        let pid = daemon_pid(&data);
        crate::verdicts::signal(pid, 19);
        // `slow` ends after 1 s; `after` then waits for its start until the daemon goes on,
        // 5 s after it stopped: well past `after`'s 3 s. Its timeout leaves room for its own
        // part (instantiating, reaching its request), which a loaded machine (the whole
        // suite at once) once stretched to about 1 s of a 1 s timeout.
        std::thread::sleep(Duration::from_millis(5000));
        assert_eq!(
            target.hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "acted before its start was recorded"
        );
        crate::verdicts::signal(pid, 18);
        shown.extend(lines.map_while(Result::ok));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        shown.join("\n"),
        stderr(&out)
    );
    assert_eq!(target.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let finished: Vec<serde_json::Value> = shown
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "step_finished")
        .collect();
    assert_eq!(finished.len(), 2, "{shown:#?}");
    assert_eq!(
        finished[1]["step"]["status"]["status"], "succeeded",
        "{shown:#?}"
    );
}

/// A step's start sent while its call begins is shown once recorded, while the call runs,
/// not when it ends; so is the end of the step before, which rode with it. The call here
/// waits for a server that answers only once the test has seen both (or after 20 s, which
/// fails the test): ordered, not timed.
#[test]
fn a_steps_start_and_the_previous_end_are_shown_while_its_call_runs() {
    shown_while_held(medic::host::fixtures::HOSTILE, "mode = \"http\", url");
}

/// The same for a check after an action: a check's start is not flushed before its call
/// (it changes nothing), but sent with the action's end and left unconfirmed while the run
/// goes on; a check still running shows both once they are durable, not at its end (a
/// responder saw nothing of a finished deploy while the health probe after it waited).
#[test]
fn a_checks_start_and_the_actions_end_before_it_are_shown_while_the_check_runs() {
    shown_while_held(medic::host::fixtures::SCRIPTED_CHECK, "record_url");
}

/// Runs a quick action, then step `held` of plugin `held` (`url`: its parameter given the
/// held server's address), and checks both steps' starts and ends were shown in order, the
/// first three before the held call was answered.
fn shown_while_held(held: &str, url: &str) {
    use std::io::{Read, Write};
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let answered = std::thread::spawn(move || {
        let (mut sock, _) = server.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = sock.read(&mut head).unwrap();
        let by_test = released.recv_timeout(Duration::from_secs(20)).is_ok();
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
        by_test
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let rb = work.path().join("held.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"held\"\n\n\
             [plugins.h]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [plugins.c]\nsource = \"{held}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"quick\"\nuses = \"h\"\n\n\
             [[steps]]\nid = \"held\"\nuses = \"c\"\nwith = {{ {url} = \"http://{addr}/held\" }}\n",
            medic::host::fixtures::HOSTILE,
        ),
    )
    .unwrap();
    let mut cmd = medic_command(&cache);
    cmd.args(["run", rb.to_str().unwrap(), "--output", "json"]);
    let (child, mut shown, lines) = crate::support::run_until_started(cmd, "held");
    let _ = release.send(());
    shown.extend(lines.map_while(Result::ok));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        answered.join().unwrap(),
        "the start of `held` was shown only once its call ended: {shown:#?}"
    );
    let order: Vec<String> = shown
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] != "run_started" && e["event"] != "run_finished")
        .map(|e| {
            let step = e["step"].as_str().or(e["step"]["id"].as_str()).unwrap();
            format!("{} {step}", e["event"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        order,
        [
            "step_started quick",
            "step_finished quick",
            "step_started held",
            "step_finished held"
        ]
    );
}

#[test]
fn the_daemon_killed_after_runs_ended_loses_nothing_they_recorded() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let rb = crate::shared_store::quick_runbook(cache.path());
    let mut before = Vec::new();
    for _ in 0..5 {
        let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    for r in json_lines(&stdout(&o)) {
        let id = r["run_id"].as_str().unwrap().to_owned();
        let export = stdout(&medic(cache.path(), &["runs", "export", &id]));
        before.push((id, export));
    }
    assert_eq!(before.len(), 5);
    // sled is flushed only at checkpoints and when the daemon lets go: what the runs
    // recorded is in the redo log alone when the daemon is killed.
    let kill = || kill_daemon(&data);
    kill();
    assert!(
        std::fs::metadata(data.join("journal.wal")).unwrap().len() > 1000,
        "the redo log holds the runs"
    );
    let exported = |before: &[(String, String)], when: &str| {
        for (id, export) in before {
            let o = medic(cache.path(), &["runs", "export", id]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_eq!(&stdout(&o), export, "run {id} {when}");
        }
    };
    exported(&before, "after the daemon was killed");
    // The next daemon replayed the log and goes on writing after it (sled gets it all at
    // the log's next checkpoint): a second kill loses neither what was replayed nor what
    // came after.
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let newest = json_lines(&stdout(&o))[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let export = stdout(&medic(cache.path(), &["runs", "export", &newest]));
    before.push((newest, export));
    kill();
    exported(&before, "after the daemon was killed twice");
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 7);
    // Let go (idle): sled holds it all (the redo log is not read here), and the log starts
    // over.
    until_let_go(&data);
    {
        let db = sled::open(data.join("db")).unwrap();
        assert_eq!(db.open_tree("runs").unwrap().len(), 7);
        let events = db.open_tree("events").unwrap();
        for (id, _) in &before {
            assert!(
                events.scan_prefix(format!("{id}/")).next().is_some(),
                "run {id}'s journal is in sled"
            );
        }
    }
    exported(&before, "after the daemon let go");
}

#[test]
fn a_daemon_whose_store_cannot_be_closed_still_lets_go() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    // Steps that record a lot: sled writes a leaf of their journal, past 128 KiB, as a file
    // of its own when it is flushed, which it cannot once the data directory is gone; its
    // flush then never returns.
    let rb = crate::recovery::runbook_recording_a_lot(cache.path());
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let daemon = daemon_pid(&data);
    std::fs::remove_dir_all(&data).unwrap();
    let deadline = Instant::now()
        + medic::store::daemon::IDLE
        + medic::store::daemon::CLOSE
        + Duration::from_secs(10);
    while alive(daemon) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(daemon), "the daemon never let go of its store");
}

#[test]
fn the_daemon_lets_go_when_idle_and_a_program_holding_the_store_is_named() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let o = medic(cache.path(), &["runs", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let daemon = daemon_pid(&data);
    // A program using the library meanwhile goes through the daemon.
    let store = medic::store::Store::open(&data, "test").unwrap();
    assert!(store.list(&Default::default(), 10).unwrap().is_empty());
    drop(store);
    until_let_go(&data);
    assert!(
        !still_alive_after_a_while(daemon),
        "the daemon stayed without clients"
    );
    assert!(!data.join("store.sock").exists());

    // Now the program holds the store itself: a command waits for it, then names it.
    let store = medic::store::Store::open(&data, "a test holding the store").unwrap();
    let rb = crate::shared_store::quick_runbook(cache.path());
    let o = medic(
        cache.path(),
        &["run", rb.to_str().unwrap(), "--wait", "300ms"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "is in use by process {} (a test holding the store",
            std::process::id()
        )),
        "{}",
        stderr(&o)
    );
    drop(store);
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_daemon_of_another_medic_version_is_named_not_spoken_to() {
    use std::io::{BufRead, BufReader, Write};
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    std::fs::create_dir(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // What a daemon of a later medic would answer.
    let listener = std::os::unix::net::UnixListener::bind(data.join("store.sock")).unwrap();
    let answering = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("hello"), "{line}");
        (&conn)
            .write_all(b"{\"ok\":{\"protocol\":99,\"pid\":4242,\"notice\":null}}\n")
            .unwrap();
    });
    let o = medic(cache.path(), &["runs", "list"]);
    answering.join().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(process 4242) is another medic version (protocol 99"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_append_whose_entries_are_not_journal_entries_is_refused_by_name_and_stores_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let rb = crate::shared_store::quick_runbook(cache.path());
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    let id = json_lines(&stdout(&o))[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = stdout(&medic(cache.path(), &["runs", "export", &id]));
    // Spoken to as a client of its protocol would, while it still holds the store.
    let socket = std::os::unix::net::UnixStream::connect(data.join(medic::store::local::SOCKET))
        .expect("the daemon is still there");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut writer = socket;
    let mut ask = |line: String| {
        writer.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    };
    let hello = ask(r#"{"op":"hello"}"#.to_owned());
    assert!(hello["ok"]["protocol"].is_u64(), "{hello}");
    for entries in [
        r#"[5]"#,
        r#"[{"v":1,"at_ms":1}]"#,
        r#"[{"v":1,"at_ms":"soon","type":"run_started","pid":1}]"#,
    ] {
        let answer = ask(format!(
            r#"{{"op":"append_many","run_id":"{id}","record":null,"entries":{entries},"durable":true}}"#
        ));
        let err = answer["err"].as_str().unwrap_or_default();
        assert!(
            err.contains("a journal entry the store daemon does not know"),
            "{entries}: {answer}"
        );
    }
    // The connection still answers after the refusals.
    let answer = ask(format!(
        r#"{{"op":"journal_from","run_id":"{id}","from":0}}"#
    ));
    let journal = answer["ok"].as_array().expect("the journal");
    assert_eq!(
        stdout(&medic(cache.path(), &["runs", "export", &id])),
        before,
        "the refused appends changed the run's record"
    );
    assert!(!journal.is_empty());
}
