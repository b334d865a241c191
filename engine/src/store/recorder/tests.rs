use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{MAX_QUEUED, Recorder, Start};
use crate::executor::{Cancel, Event, RunOptions, RunOutcome, RunReport};
use crate::host::{HostConfig, PluginHost};
use crate::store::{JournalEvent, Store, StoreError, Trigger, embedded::Sled, wal::Wal};

/// Checks in a row, more than may be left unconfirmed at once.
const CHECKS: usize = MAX_QUEUED + 16;

/// A run of [`CHECKS`] check steps recorded in the embedded store, whose flushes stall from
/// the moment the run's start is shown until `stalled` (given the log and the frame count
/// when the stall began) returns; what was shown, in order, then the report and the
/// recorder's error.
fn checks_while_flushes_stall<T: Send>(
    stalled: impl FnOnce(&Wal, u64, &Mutex<Vec<String>>) -> T + Send,
) -> (T, Vec<String>, Option<RunReport>, Option<StoreError>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sled = Sled::open(&data, "test").unwrap();
    let wal = sled.wal();
    let store = Store::of(&data, sled);
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
    let mut text = format!(
        "[runbook]\nname = \"checks\"\n[plugins.check]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
        crate::host::fixtures::SCRIPTED_CHECK
    );
    for i in 0..CHECKS {
        text += &format!("[[steps]]\nid = \"c{i}\"\nuses = \"check\"\n");
    }
    let source = crate::runbook::Source {
        path: std::path::Path::new("checks.toml"),
        text: &text,
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
            let seen = stalled(&wal, from.load(Ordering::SeqCst), &shown);
            // Whatever `stalled` found, the disk comes back: the run ends either way.
            wal.hold_flushes(false);
            seen
        });
        let mut inner = |e: &Event<'_>| {
            let line = match e {
                Event::RunStarted { .. } => {
                    wal.hold_flushes(true);
                    // A flush this slow is handed to the store's flusher, not made inline.
                    wal.pretend_flushes_take(Duration::from_secs(1));
                    from.store(wal.written(), Ordering::SeqCst);
                    "run started".to_owned()
                }
                Event::StepStarted { id, .. } => format!("start {id}"),
                Event::StepFinished { report } => format!("end {}", report.id),
                Event::RunFinished { .. } => "run finished".to_owned(),
                _ => return,
            };
            shown.lock().unwrap().push(line);
        };
        let mut recorder = Recorder::new(
            &store,
            &mut inner,
            Trigger::cli(),
            None,
            Start::New,
            false,
            Cancel::new(),
        );
        let report = rt.block_on(crate::executor::execute(
            &host,
            &plan,
            RunOptions::default(),
            &mut recorder,
        ));
        let error = recorder.error.take();
        (watcher.join().unwrap(), report, error)
    });
    let shown = shown.into_inner().unwrap();
    (seen, shown, report, error, store)
}

/// Waits (bounded) until `n` frames were written since `from`, then a while more; returns
/// the frames written by then and what was shown.
fn written_and_shown(
    wal: &Wal,
    from: u64,
    n: u64,
    shown: &Mutex<Vec<String>>,
) -> (u64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while wal.written() < from + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Time to go further, if the run wrongly would.
    std::thread::sleep(Duration::from_millis(200));
    (wal.written() - from, shown.lock().unwrap().clone())
}

#[test]
fn checks_go_on_while_their_flushes_stall_and_are_shown_only_once_durable() {
    // The first check's start (nothing to wait for), then one write per check left
    // unconfirmed, the oldest of them waited for past `MAX_QUEUED`.
    let frames = 1 + MAX_QUEUED as u64 + 1;
    let ((written, stalled), shown, report, error, store) =
        checks_while_flushes_stall(|wal, from, shown| written_and_shown(wal, from, frames, shown));
    assert_eq!(
        written, frames,
        "checks ran on while no flush ended, as far as the bound: {stalled:?}"
    );
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
    let ends = journal
        .iter()
        .filter(|e| matches!(e.event, JournalEvent::StepFinished { .. }))
        .count();
    assert_eq!(ends, CHECKS);
    assert!(matches!(
        journal.last().map(|e| &e.event),
        Some(JournalEvent::RunFinished { .. })
    ));
}

#[test]
fn checks_whose_writes_failed_are_never_shown_and_the_run_stops() {
    let frames = 1 + MAX_QUEUED as u64 + 1;
    let (_, shown, _, error, _) = checks_while_flushes_stall(|wal, from, shown| {
        let seen = written_and_shown(wal, from, frames, shown);
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
