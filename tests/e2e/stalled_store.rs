//! A store that stops answering (its daemon stopped, as a hung disk or a quiet database
//! leaves it): the run waits and does nothing meanwhile, the responder is told, Ctrl-C and
//! SIGTERM are heard before and during the run (mid-step and mid-gate), a closed terminal's
//! rollback waits for the store instead of giving up, nothing is undone that could not be
//! recorded first, the wait is never counted as the plugin's time, and `medic serve`'s
//! readiness probe names it within its bound.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::cli::{medic, scripted_runbook, stderr};
use crate::verdicts::{SIGHUP, SIGINT, SIGTERM, export, signal, spawn, wait};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A server recording the paths asked (GET /run|revert/STEP from the scripted plugins) and
/// holding those ending in `held` for `hold` while answering the others at once.
pub(crate) fn holding_server(
    held: &'static str,
    hold: Duration,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    std::thread::spawn(move || {
        for sock in server.incoming().take(64) {
            let Ok(mut sock) = sock else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = [0u8; 2048];
                let n = sock.read(&mut head).unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let holds = path.ends_with(held);
                seen.lock().unwrap().push(path);
                if holds {
                    std::thread::sleep(hold);
                }
                let _ = sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    (addr, paths)
}

/// A process stopped (SIGSTOP) until this is dropped, however the test ends: a stopped
/// store daemon would outlive it.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, 19);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process this test stopped; gone already is fine.
        unsafe { libc_kill(self.0 as i32, 18) };
    }
}

/// Waits (at most 30 s) until `path` was asked of a [`holding_server`].
pub(crate) fn until_asked(paths: &std::sync::Mutex<Vec<String>>, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !paths.lock().unwrap().iter().any(|p| p == path) {
        assert!(Instant::now() < deadline, "{path} never asked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the store daemon until the result is dropped, and waits until medic says the run
/// waits for it.
fn stop_the_store(cache: &std::path::Path, err: &mut crate::verdicts::Lines) -> Stopped {
    let stopped = Stopped::stop(crate::store_daemon::daemon_pid(&cache.join("data")));
    err.until("has not answered for");
    assert!(
        err.seen
            .contains("the run waits for it and does nothing meanwhile"),
        "{}",
        err.seen
    );
    stopped
}

/// Stops the store daemon under run `id` and waits until medic says the run waits for it,
/// then sends `stop` three times (Ctrl-C's SIGINT or a supervisor's SIGTERM, the same stop):
/// medic stops (exit 5) without recording the abort, naming the command that picks the run
/// up. The daemon is continued however this ends.
fn three_stops_with_the_store_stopped(
    cache: &std::path::Path,
    child: &mut std::process::Child,
    err: &mut crate::verdicts::Lines,
    id: &str,
    stop: i32,
) {
    let stopped = stop_the_store(cache, err);
    signal(child.id(), stop);
    err.until("cancelling");
    signal(child.id(), stop);
    err.until("waiting for the store in");
    signal(child.id(), stop);
    let code = wait(child);
    let said = err.rest().to_owned();
    drop(stopped);
    assert_eq!(code, Some(5), "{said}");
    assert!(
        said.contains("aborted, without recording it: the store in")
            && said.contains(&format!("medic runs rollback {id}")),
        "{said}"
    );
}

/// The store stops answering (its daemon stopped, as a hung disk leaves it) while a step's
/// call runs: the run waits for it and does nothing more, the responder is told so, the
/// second Ctrl-C names the store rather than the step, and the third stops medic although
/// nothing can be recorded. The next command finds the run interrupted.
#[test]
fn a_third_ctrl_c_stops_medic_when_the_store_stops_answering_mid_run() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, paths) = holding_server("/one", Duration::from_millis(500));
    let rb = dir.path().join("two.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"two\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"one\"\nuses = \"act\"\nwith = {{ mode = \"http\", url = \"http://{addr}/one\" }}\n\n\
             [[steps]]\nid = \"two\"\nuses = \"act\"\nwith = {{ mode = \"http\", url = \"http://{addr}/two\" }}\n",
            medic::host::fixtures::HOSTILE,
        ),
    )
    .unwrap();
    let (mut child, mut out, mut err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
    out.until("· run ");
    let id = out.seen.split_whitespace().last().unwrap().to_owned();
    // Step one's call has reached the server: its start is on record, its end is not.
    until_asked(&paths, "/one");
    three_stops_with_the_store_stopped(cache.path(), &mut child, &mut err, &id, SIGINT);
    assert_eq!(
        *paths.lock().unwrap(),
        ["/one"],
        "nothing acted after the store stopped"
    );
    let record = export(cache.path(), &id);
    assert_eq!(record["record"]["status"], "interrupted", "{record}");
}

/// The store stops answering while an action's kv write waits to be made durable: that wait
/// is the store's, not the plugin's. The plugin used a fraction of its 2 s timeout; once the
/// store answers, 5 s on, the step succeeds rather than being failed as a timeout. The
/// responder was told the store did not answer.
#[test]
fn a_kv_write_held_by_a_stopped_store_does_not_use_up_the_plugins_timeout() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The plugin asks this server, then writes to kv: the store is stopped meanwhile.
    let (addr, paths) = holding_server("/run/deploy", Duration::from_millis(500));
    let rb = dir.path().join("kv.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"kv\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [[steps]]\nid = \"deploy\"\nuses = \"act\"\ntimeout = \"2s\"\nwith = {{ record_url = \"http://{addr}\" }}\n",
            medic::host::fixtures::SCRIPTED_ACTION,
        ),
    )
    .unwrap();
    let (mut child, mut out, mut err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
    until_asked(&paths, "/run/deploy");
    let daemon = crate::store_daemon::daemon_pid(&cache.path().join("data"));
    let stopped = Stopped::stop(daemon);
    err.until("has not answered for");
    drop(stopped);
    let code = wait(&mut child);
    let (out, err) = (out.rest().to_owned(), err.rest().to_owned());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("✓ deploy"), "{out}");
}

/// The store does not answer before a run starts (its daemon stopped): the responder is told
/// after 5 s that nothing has run yet, and one Ctrl-C stops medic (exit 6) instead of going
/// unheard until the store answers, up to 5 minutes on.
#[test]
fn ctrl_c_stops_medic_when_the_store_does_not_answer_before_the_run_starts() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "",
        "[[steps]]\nid = \"look\"\nuses = \"check\"\n",
    );
    // A run first, so that a daemon holds the store; then it stops answering.
    let o = medic(cache.path(), &["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let daemon = crate::store_daemon::daemon_pid(&cache.path().join("data"));
    let _stopped = Stopped::stop(daemon);
    let (mut child, mut out, mut err) = spawn(cache.path(), &["run", rb.to_str().unwrap()]);
    err.until("nothing has run yet");
    signal(child.id(), SIGINT);
    let code = wait(&mut child);
    let (out, err) = (out.rest().to_owned(), err.rest().to_owned());
    assert_eq!(code, Some(6), "{out}{err}");
    assert!(
        err.contains("stopped before anything ran: the store has not answered for"),
        "{err}"
    );
    assert!(!out.contains("look"), "{out}");
}

/// A TCP relay to `to` that stops passing bytes either way while held: a database that
/// stops answering with its connections left open (a stopped server, a hung disk under it).
/// Its threads end once it is dropped.
struct Relay {
    port: u16,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn to(to: u16) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (held, gone) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h, g) = (held.clone(), gone.clone());
        std::thread::spawn(move || {
            while !g.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (from, into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (held, gone) = (h.clone(), g.clone());
                    std::thread::spawn(move || Relay::pass(from, into, &held, &gone));
                }
            }
        });
        Relay { port, held, gone }
    }

    /// Copies `from` into `into` while not held, until either closes or the relay goes.
    fn pass(
        mut from: std::net::TcpStream,
        mut into: std::net::TcpStream,
        held: &std::sync::atomic::AtomicBool,
        gone: &std::sync::atomic::AtomicBool,
    ) {
        use std::sync::atomic::Ordering;
        let _ = from.set_read_timeout(Some(Duration::from_millis(10)));
        let mut buf = [0u8; 16 << 10];
        while !gone.load(Ordering::SeqCst) {
            if held.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if into.write_all(&buf[..n]).is_ok() => {}
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = into.shutdown(std::net::Shutdown::Both);
    }

    fn hold(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `GET /ready` of a `medic serve` whose database stops answering: it answers within its
/// 5 s bound, naming the store, and a second probe joins the check still waiting instead of
/// holding one more thread for up to 5 minutes; once the database answers, ready again.
#[test]
fn ready_names_a_database_that_stopped_answering_within_its_bound() {
    let url = crate::pglab::database();
    let (head, db) = url.rsplit_once('/').unwrap();
    let port: u16 = head.rsplit_once(':').unwrap().1.parse().unwrap();
    let relay = Relay::to(port);
    let relayed = format!("postgres://medic@127.0.0.1:{}/{db}", relay.port);
    let site = crate::api::Site::new();
    let (_serve, api) = site.serve_env(false, &[], &[("MEDIC_STORE", &relayed)]);
    let ready = || api.call(reqwest::Method::GET, "/ready", None, None);
    let (status, body) = ready();
    assert_eq!(
        (status, body["ready"].as_bool()),
        (200, Some(true)),
        "{body}"
    );

    relay.hold(true);
    let store_problem = |body: &serde_json::Value| -> f64 {
        let problems = body["problems"].as_array().cloned().unwrap_or_default();
        let store = problems
            .iter()
            .filter_map(|p| p.as_str()?.strip_prefix("store: no answer for "))
            .next()
            .unwrap_or_else(|| panic!("no store problem: {body}"));
        store.trim_end_matches(" s").parse().unwrap()
    };
    // The API client gives up after 30 s: without the bound, the store's own 5 minutes.
    let (status, body) = ready();
    assert_eq!(
        (status, body["ready"].as_bool()),
        (503, Some(false)),
        "{body}"
    );
    let first = store_problem(&body);
    assert!(first >= 5.0, "{body}");
    // Counted from the first probe's check, which it joined.
    let (status, body) = ready();
    assert_eq!(status, 503, "{body}");
    assert!(store_problem(&body) >= first + 4.0, "{body}");

    relay.hold(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = ready();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The store stops answering while a gate watches a change: the gate's checks go on until
/// more of them wait for the store than the run lets wait, then the run waits and the
/// responder is told. Three stops (a supervisor's SIGTERM, as Ctrl-C's) stop medic, and the
/// rollback the first asked for never acted, since its write-ahead could not be made
/// durable. Once the store answers, the run is found interrupted and `medic runs rollback`
/// undoes the change.
#[test]
fn stops_with_the_store_stopped_mid_gate_undo_nothing_unrecorded_and_runs_rollback_does() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, paths) = holding_server("/never", Duration::ZERO);
    // Kept: dropped, its reader would stop and close the pipe under medic's next line.
    let (mut child, _out, mut err, id) = run_until_the_gate(cache.path(), dir.path(), &addr);
    three_stops_with_the_store_stopped(cache.path(), &mut child, &mut err, &id, SIGTERM);
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy"],
        "the rollback acted while its start could not be recorded"
    );
    let record = export(cache.path(), &id);
    assert_eq!(record["record"]["status"], "interrupted", "{record}");
    let o = medic(cache.path(), &["runs", "rollback", &id]);
    let shown = crate::cli::stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{shown}{}", stderr(&o));
    assert!(
        shown.contains("↩ rolling back: the run was interrupted")
            && shown.contains("✓ deploy.rollback"),
        "{shown}"
    );
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy", "/revert/deploy.rollback"]
    );
}

/// `medic run` of [`gated_runbook`], once its gate watches: the child, its output and error
/// lines, and the run's id.
fn run_until_the_gate(
    cache: &std::path::Path,
    dir: &std::path::Path,
    addr: &str,
) -> (
    std::process::Child,
    crate::verdicts::Lines,
    crate::verdicts::Lines,
    String,
) {
    let rb = gated_runbook(dir, addr);
    let (child, mut out, err) = spawn(cache, &["run", rb.to_str().unwrap()]);
    out.until("· run ");
    let id = out.seen.split_whitespace().last().unwrap().to_owned();
    out.until("↻ bake");
    (child, out, err, id)
}

/// A deploy that records its calls to `addr` (`/run/deploy`, `/revert/deploy.rollback`), a
/// gate watching it for two minutes, and a verify: a run that can be stopped mid-gate.
fn gated_runbook(dir: &std::path::Path, addr: &str) -> std::path::PathBuf {
    let rb = dir.join("gated.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"gated\"\non_failure = \"rollback\"\n\n\
             [plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"deploy\"\nuses = \"act\"\nrollback = \"revert\"\nwith = {{ record_url = \"http://{addr}\" }}\n\n\
             [[steps]]\nid = \"bake\"\nuses = \"check\"\ngate = {{ interval = \"100ms\", successes = 1000, timeout = \"120s\" }}\n\n\
             [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
            medic::host::fixtures::SCRIPTED_ACTION,
            medic::host::fixtures::SCRIPTED_CHECK,
        ),
    )
    .unwrap();
    rb
}

/// The terminal goes away (SIGHUP) mid-gate while the store does not answer: nobody is left
/// to press Ctrl-C, so medic neither gives up nor acts unrecorded. The rollback the hang-up
/// asks for waits for its write-ahead; once the store answers, it runs, is verified and
/// recorded, and medic ends with the cancelled-and-rolled-back verdict.
#[test]
fn a_hang_up_with_the_store_stopped_mid_gate_rolls_back_once_the_store_answers() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, paths) = holding_server("/never", Duration::ZERO);
    let (mut child, mut out, mut err, id) = run_until_the_gate(cache.path(), dir.path(), &addr);
    let stopped = stop_the_store(cache.path(), &mut err);
    signal(child.id(), SIGHUP);
    err.until("the terminal went away");
    // Long enough for a rollback that did not wait for its write-ahead to have called out
    // (the revert answers at once), twice over.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy"],
        "the rollback acted while its start could not be recorded"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "medic gave up with nobody there to ask it to: {}",
        err.seen
    );
    drop(stopped);
    let code = wait(&mut child);
    let shown = out.rest().to_owned();
    let said = err.rest().to_owned();
    assert_eq!(code, Some(6), "{shown}\n{said}");
    assert!(
        shown.contains("✓ deploy.rollback") && shown.contains("rolled back and verified"),
        "{shown}"
    );
    // Told, though the run ended well within a second of the store's answer.
    assert!(said.contains("medic: the store answers again"), "{said}");
    assert_eq!(
        *paths.lock().unwrap(),
        ["/run/deploy", "/revert/deploy.rollback"]
    );
    let record = export(cache.path(), &id);
    assert_eq!(record["record"]["status"], "cancelled", "{record}");
}
