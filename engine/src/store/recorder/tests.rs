use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{GROUPS_QUEUED, MAX_QUEUED, Recorder, Start};
use crate::executor::{Event, RunOptions, RunOutcome, RunReport};
use crate::host::{HostConfig, PluginHost};
use crate::store::{JournalEvent, Store, StoreError, Trigger, embedded::Sled, wal::Wal};

/// Checks in a row, more than may be left unconfirmed at once.
const CHECKS: usize = MAX_QUEUED + 16;

/// How far a run got while its flushes stall: in the process, frames written to the log
/// since the stall began; through the store daemon, appends sent and not yet answered.
type Progress<'a> = &'a (dyn Fn() -> u64 + Sync);

/// A run of [`CHECKS`] check steps recorded in the embedded store, in the process or through
/// a store daemon (`daemon`), whose flushes stall from the moment the run's start is shown
/// until `stalled` (given the log and how far the run got) returns; what was shown, in
/// order, then the report and the recorder's error.
fn checks_while_flushes_stall<T: Send>(
    daemon: bool,
    stalled: impl FnOnce(&Wal, Progress<'_>, &Mutex<Vec<String>>) -> T + Send,
) -> (T, Vec<String>, Option<RunReport>, Option<StoreError>, Store) {
    let mut text = format!(
        "[runbook]\nname = \"checks\"\n[plugins.check]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
        crate::host::fixtures::SCRIPTED_CHECK
    );
    for i in 0..CHECKS {
        text += &format!("[[steps]]\nid = \"c{i}\"\nuses = \"check\"\n");
    }
    while_flushes_stall(daemon, &text, Stall::AtRunStart, stalled)
}

/// When flushes begin to stall.
#[derive(Clone, Copy, PartialEq)]
enum Stall {
    /// Once the run's start is shown.
    AtRunStart,
    /// Once the first step's start is shown (durable: an action acts only after).
    AtStepStart,
}

/// Runs `text` as [`checks_while_flushes_stall`] does, flushes stalling from `stall` on.
fn while_flushes_stall<T: Send>(
    daemon: bool,
    text: &str,
    stall: Stall,
    stalled: impl FnOnce(&Wal, Progress<'_>, &Mutex<Vec<String>>) -> T + Send,
) -> (T, Vec<String>, Option<RunReport>, Option<StoreError>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sled = Sled::open(&data, "test").unwrap();
    let wal = sled.wal();
    let (store, in_flight) = if daemon {
        let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        // Ends as the store is dropped (its connection closes).
        crate::store::daemon::serve_alone(sled, server);
        let (local, in_flight) = crate::store::local::Local::over(client);
        (Store::of(&data, local), Some(in_flight))
    } else {
        (Store::of(&data, sled), None)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = PluginHost::new(HostConfig {
        cache_dir: None,
        max_instances: 4,
        ..HostConfig::default()
    })
    .unwrap();
    let source = crate::runbook::Source {
        path: std::path::Path::new("stalled.toml"),
        text,
    };
    let plan = rt
        .block_on(crate::runbook::plan(
            &host,
            &source,
            &crate::runbook::PlanOptions::default(),
        ))
        .unwrap();
    let shown = Mutex::new(Vec::new());
    let from = AtomicU64::new(u64::MAX);
    let (seen, report, error) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while from.load(Ordering::SeqCst) == u64::MAX && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let from = from.load(Ordering::SeqCst);
            let progress = || match &in_flight {
                Some(in_flight) => in_flight() as u64,
                None => wal.written() - from,
            };
            let seen = stalled(&wal, &progress, &shown);
            // Whatever `stalled` found, the disk comes back: the run ends either way.
            wal.hold_flushes(false);
            seen
        });
        let mut inner = |e: &Event<'_>| {
            let stalls = match e {
                Event::RunStarted { .. } => stall == Stall::AtRunStart,
                Event::StepStarted { .. } => stall == Stall::AtStepStart,
                _ => false,
            };
            if stalls && from.load(Ordering::SeqCst) == u64::MAX {
                wal.hold_flushes(true);
                // A flush this slow is handed to the store's flusher, not made inline.
                wal.pretend_flushes_take(Duration::from_secs(1));
                from.store(wal.written(), Ordering::SeqCst);
            }
            let line = match e {
                Event::RunStarted { .. } => "run started".to_owned(),
                Event::StepStarted { id, .. } => format!("start {id}"),
                Event::StepFinished { report } => format!("end {}", report.id),
                Event::TargetFinished { target, .. } => format!("target {}", target.target),
                Event::RunFinished { .. } => "run finished".to_owned(),
                _ => return,
            };
            shown.lock().unwrap().push(line);
        };
        // The run's own: a recorder that cannot write stops the run, as `medic run`'s does.
        let opts = RunOptions::default();
        let mut recorder = Recorder::new(
            &store,
            &mut inner,
            Trigger::cli(),
            None,
            Start::New,
            false,
            opts.cancel.clone(),
        );
        let report = rt.block_on(crate::executor::execute(&host, &plan, opts, &mut recorder));
        let error = recorder.error.take();
        (watcher.join().unwrap(), report, error)
    });
    let shown = shown.into_inner().unwrap();
    (seen, shown, report, error, store)
}

/// Waits (bounded) until the run got `n` far or stopped getting further, then a while more;
/// returns how far it got by then and what was shown.
fn progress_and_shown(
    progress: Progress<'_>,
    n: u64,
    shown: &Mutex<Vec<String>>,
) -> (u64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (progress(), Instant::now());
    while last.0 < n && last.1.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        let now = progress();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    // Time to go further, if the run wrongly would.
    std::thread::sleep(Duration::from_millis(200));
    (progress(), shown.lock().unwrap().clone())
}

/// How far checks get while their flushes stall: in the process, the first check's start
/// (nothing to wait for), then one frame per check left unconfirmed, the oldest of them
/// waited for past `MAX_QUEUED`; through the daemon, at most as many appends in flight (the
/// first check's start was answered unflushed), fewer where the socket's buffer fills first
/// (the daemon reads no more while its flush stalls).
fn stalled_at(daemon: bool) -> u64 {
    MAX_QUEUED as u64 + 1 + u64::from(!daemon)
}

fn checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable(daemon: bool) {
    let at = stalled_at(daemon);
    let ((got, stalled), shown, report, error, store) =
        checks_while_flushes_stall(daemon, |_, progress, shown| {
            progress_and_shown(progress, at, shown)
        });
    if daemon {
        assert!(
            (2..=at).contains(&got),
            "checks ran on while no flush ended, no further than the bound: {got}, {stalled:?}"
        );
    } else {
        assert_eq!(
            got, at,
            "checks ran on while no flush ended, as far as the bound: {stalled:?}"
        );
    }
    assert_eq!(
        stalled,
        ["run started", "start c0"],
        "nothing not yet durable is shown"
    );
    assert!(error.is_none(), "{error:?}");
    let report = report.expect("the run ends");
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let mut expected = vec!["run started".to_owned()];
    for i in 0..CHECKS {
        expected.push(format!("start c{i}"));
        expected.push(format!("end c{i}"));
    }
    expected.push("run finished".to_owned());
    assert_eq!(shown, expected, "everything shown, in order, once durable");
    let journal = store.journal(&report.run_id).unwrap();
    let steps: Vec<String> = journal
        .iter()
        .filter_map(|e| match &e.event {
            JournalEvent::StepStarted { step, .. } => Some(format!("start {step}")),
            JournalEvent::StepFinished { report } => Some(format!("end {}", report.id)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, expected[1..expected.len() - 1], "journaled in order");
    assert!(matches!(
        journal.last().map(|e| &e.event),
        Some(JournalEvent::RunFinished { .. })
    ));
}

fn checks_whose_writes_failed_are_never_shown_and_the_run_stops(daemon: bool) {
    let at = stalled_at(daemon);
    let (_, shown, _, error, _) = checks_while_flushes_stall(daemon, |wal, progress, shown| {
        let seen = progress_and_shown(progress, at, shown);
        // The disk fails under the stalled flush.
        wal.break_now();
        seen
    });
    assert!(
        error.is_some(),
        "the recorder says the run cannot be recorded"
    );
    assert_eq!(
        shown,
        ["run started", "start c0"],
        "what was not durable when the log broke is never shown"
    );
}

#[test]
fn checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable_in_the_process() {
    checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable(false);
}

#[test]
fn checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable_through_the_daemon() {
    checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable(true);
}

#[test]
fn checks_whose_writes_failed_are_never_shown_and_the_run_stops_in_the_process() {
    checks_whose_writes_failed_are_never_shown_and_the_run_stops(false);
}

#[test]
fn checks_whose_writes_failed_are_never_shown_and_the_run_stops_through_the_daemon() {
    checks_whose_writes_failed_are_never_shown_and_the_run_stops(true);
}

/// Targets of a fleet step: more than its concurrency, which is more than one (its calls on
/// the call threads, as a fleet's are).
const TARGETS: usize = 24;
const AT_ONCE: usize = 4;

/// A run of one fleet step of action targets whose flushes stall once the step's start is
/// shown (durable: no target acts before); each target's call asks a server on loopback,
/// which counts them: the last value returned.
fn fleet_while_flushes_stall<T: Send>(
    daemon: bool,
    stalled: impl FnOnce(&Wal, Progress<'_>, &Mutex<Vec<String>>) -> T + Send,
) -> (
    T,
    Vec<String>,
    Option<RunReport>,
    Option<StoreError>,
    Store,
    usize,
) {
    let (addr, calls) = counting_server(TARGETS);
    let targets: Vec<String> = (0..TARGETS).map(|i| format!("\"t{i:02}\"")).collect();
    let text = format!(
        "[runbook]\nname = \"fleet\"\n[plugins.act]\nsource = {:?}\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\
         [[steps]]\nid = \"all\"\nuses = \"act\"\nwith = {{ mode = \"http\", url = \"http://{addr}/\" }}\n\
         [steps.fleet]\ntargets = [{}]\nmax_concurrency = {AT_ONCE}\n",
        crate::host::fixtures::HOSTILE,
        targets.join(", ")
    );
    let (seen, shown, report, error, store) =
        while_flushes_stall(daemon, &text, Stall::AtStepStart, stalled);
    (
        seen,
        shown,
        report,
        error,
        store,
        calls.load(Ordering::SeqCst),
    )
}

/// A server on loopback answering each request 200 and counting them, until `most` came or
/// a minute passed.
fn counting_server(most: usize) -> (std::net::SocketAddr, std::sync::Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while counted.load(Ordering::SeqCst) < most && Instant::now() < deadline {
            let Ok((mut sock, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = sock.set_nonblocking(false);
            let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = [0u8; 1024];
            let _ = sock.read(&mut head);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, calls)
}

/// The targets a fleet's journal holds, in its order.
fn journaled_targets(store: &Store, run_id: &str) -> Vec<String> {
    store
        .journal(run_id)
        .unwrap()
        .iter()
        .filter_map(|e| match &e.event {
            JournalEvent::TargetFinished { report, .. } => {
                Some(format!("target {}", report.target))
            }
            _ => None,
        })
        .collect()
}

/// How far a fleet gets while its first group's flush stalls: through the daemon, the next
/// group is gathered meanwhile, sent, and waits for the first (two appends unanswered); in
/// the process, the run's thread flushes the group itself, leaving its CPU to the calls
/// running on the call threads (one frame of the log).
fn fleet_stalled_at(daemon: bool) -> u64 {
    if daemon { GROUPS_QUEUED as u64 + 1 } else { 1 }
}

fn a_fleets_targets_run_on_while_their_group_flushes_and_are_shown_once_durable(daemon: bool) {
    let at = fleet_stalled_at(daemon);
    let ((got, stalled), shown, report, error, store, _) =
        fleet_while_flushes_stall(daemon, |_, progress, shown| {
            progress_and_shown(progress, at, shown)
        });
    assert_eq!(
        got, at,
        "how far targets went while their first group flushed: {stalled:?}"
    );
    assert_eq!(
        stalled,
        ["run started", "start all"],
        "no target is shown before it is durable"
    );
    assert!(error.is_none(), "{error:?}");
    let report = report.expect("the run ends");
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let targets: Vec<&String> = shown.iter().filter(|l| l.starts_with("target ")).collect();
    assert_eq!(targets.len(), TARGETS, "every target shown once: {shown:?}");
    assert_eq!(
        targets,
        journaled_targets(&store, &report.run_id)
            .iter()
            .collect::<Vec<_>>(),
        "shown in the order journaled"
    );
    assert_eq!(shown[shown.len() - 2..], ["end all", "run finished"]);
}

fn a_fleet_whose_group_failed_to_flush_shows_none_of_it_and_starts_no_more(daemon: bool) {
    let at = fleet_stalled_at(daemon);
    let (_, shown, report, error, _, calls) =
        fleet_while_flushes_stall(daemon, |wal, progress, shown| {
            let seen = progress_and_shown(progress, at, shown);
            wal.break_now();
            seen
        });
    assert!(
        error.is_some(),
        "the recorder says the run cannot be recorded"
    );
    assert!(
        report.is_none(),
        "the run stopped at once, rollback included"
    );
    assert_eq!(
        shown,
        ["run started", "start all"],
        "what was not durable when the log broke is never shown"
    );
    // Those running as the first group was sent, those started while it was on its way (at
    // most a group's worth, as they end), and none once its write was found failed.
    assert!(
        (1..=AT_ONCE * (GROUPS_QUEUED + 2)).contains(&calls),
        "targets called: {calls} of {TARGETS}"
    );
}

#[test]
fn a_fleets_targets_run_on_while_their_group_flushes_and_are_shown_once_durable_in_the_process() {
    a_fleets_targets_run_on_while_their_group_flushes_and_are_shown_once_durable(false);
}

#[test]
fn a_fleets_targets_run_on_while_their_group_flushes_and_are_shown_once_durable_through_the_daemon()
{
    a_fleets_targets_run_on_while_their_group_flushes_and_are_shown_once_durable(true);
}

#[test]
fn a_fleet_whose_group_failed_to_flush_shows_none_of_it_and_starts_no_more_in_the_process() {
    a_fleet_whose_group_failed_to_flush_shows_none_of_it_and_starts_no_more(false);
}

#[test]
fn a_fleet_whose_group_failed_to_flush_shows_none_of_it_and_starts_no_more_through_the_daemon() {
    a_fleet_whose_group_failed_to_flush_shows_none_of_it_and_starts_no_more(true);
}
