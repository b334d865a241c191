use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::Local;
use crate::ahead::Unconfirmed;
use crate::executor::Phase;
use crate::store::backend::Runs;
use crate::store::embedded::{Sled, test_record};
use crate::store::wal::Wal;
use crate::store::{JournalEntry, JournalEvent, RunStatus, StoreError};

const RUN: &str = "01PIPE";

/// Appends sent together, more than the daemon could take in one read.
const SENT: usize = 12;

fn entry(i: usize) -> JournalEntry {
    JournalEntry::now(JournalEvent::PhaseStarted {
        phase: Phase::Steps,
        reason: i.to_string(),
    })
}

/// A client of a daemon serving the store of a new data directory on its one connection,
/// whose flushes stall until told otherwise, with `SENT` appends to one run sent before the
/// daemon reads any of them; the log, its frames before them, and the appends.
fn sent_while_flushes_stall(dir: &std::path::Path) -> Stalling {
    let sled = Sled::open(&dir.join("data"), "test").unwrap();
    let wal = sled.wal();
    wal.hold_flushes(true);
    let from = wal.written();
    let (client, server) = UnixStream::pair().unwrap();
    let (local, in_flight) = Local::over(client);
    let record = test_record(RUN, 1, RunStatus::Running);
    let sent = (0..SENT)
        .map(|i| {
            local
                .append_sent(RUN, (i == 0).then_some(&record), &[entry(i)])
                .unwrap()
                .expect("sent to the daemon, not made here")
        })
        .collect();
    // Ends as the client is dropped (its connection closes).
    crate::store::daemon::serve_alone(sled, server);
    Stalling {
        local,
        in_flight: Box::new(in_flight),
        wal,
        from,
        sent,
    }
}

struct Stalling {
    local: Local,
    /// How many of the client's calls wait for their answer.
    in_flight: Box<dyn Fn() -> usize>,
    wal: std::sync::Arc<Wal>,
    /// The log's frames before the appends.
    from: u64,
    sent: Vec<Box<dyn Unconfirmed>>,
}

/// Lets the stalled flushes go when dropped: a test that fails while they stall fails rather
/// than waits forever for the appends' answers as they are dropped. Made after them, so
/// dropped before them.
struct Stalled(std::sync::Arc<Wal>);

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.hold_flushes(false);
    }
}

/// Waits (bounded) until `n` frames were written since `from`, then a while more; the frames
/// written by then.
fn written_after(wal: &Wal, from: u64, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while wal.written() < from + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    wal.written() - from
}

#[test]
fn a_runs_appends_sent_together_are_written_together_answered_once_durable_and_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let Stalling {
        local,
        in_flight,
        wal,
        from,
        sent,
    } = sent_while_flushes_stall(dir.path());
    let _stalled = Stalled(wal.clone());
    assert_eq!(
        written_after(&wal, from, SENT as u64),
        SENT as u64,
        "the daemon writes every append it can read before it flushes"
    );
    assert!(
        sent.iter().all(|s| !s.is_answered()),
        "none is answered before it is durable"
    );
    std::thread::scope(|s| {
        // A write of the run made meanwhile (a plugin's key-value write during a check)
        // lands after them: it goes on their connection (the only one there is).
        let after = s.spawn(|| local.append_many(RUN, None, &[entry(SENT)], false));
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_flight() < SENT + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(in_flight(), SENT + 1, "sent behind the others");
        wal.hold_flushes(false);
        for s in sent {
            s.confirm().unwrap();
        }
        assert_eq!(after.join().unwrap().unwrap(), SENT as u32);
    });
    assert_eq!(in_flight(), 0);
    let reasons: Vec<String> = local
        .journal_from(RUN, 0, usize::MAX)
        .expect("read on the connection the appends gave back")
        .into_iter()
        .map(|e| match e.event {
            JournalEvent::PhaseStarted { reason, .. } => reason,
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<String> = (0..=SENT).map(|i| i.to_string()).collect();
    assert_eq!(reasons, expected, "journaled in the order sent");
    assert!(local.pipes.open(RUN).is_none(), "the run's pipe closed");
}

#[test]
fn appends_in_flight_when_the_disk_fails_are_each_told_so_and_none_is_taken_for_stored() {
    let dir = tempfile::tempdir().unwrap();
    let Stalling {
        local,
        wal,
        from,
        sent,
        ..
    } = sent_while_flushes_stall(dir.path());
    let _stalled = Stalled(wal.clone());
    assert_eq!(written_after(&wal, from, SENT as u64), SENT as u64);
    // The disk fails under the stalled flush.
    wal.break_now();
    wal.hold_flushes(false);
    for s in sent {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.is_answered() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(s.is_answered(), "a failure is an answer");
        let e = s.confirm().expect_err("not stored");
        assert!(
            !matches!(e, StoreError::Daemon { .. }),
            "the disk's error: {e}"
        );
    }
    drop(local);
}

#[test]
fn appends_in_flight_when_the_daemon_hangs_up_are_each_told_so() {
    let (client, server) = UnixStream::pair().unwrap();
    let (local, in_flight) = Local::over(client);
    let sent: Vec<_> = (0..3)
        .map(|i| local.append_sent(RUN, None, &[entry(i)]).unwrap().unwrap())
        .collect();
    assert_eq!(in_flight(), 3);
    drop(server);
    for s in sent {
        let e = s.confirm().expect_err("no answer came");
        assert!(
            e.to_string().contains("stopped answering"),
            "named as the daemon gone: {e}"
        );
    }
    assert_eq!(in_flight(), 0);
    // The broken connection is not used again; there is no other daemon to reach here.
    let e = local
        .append_sent(RUN, None, &[entry(3)])
        .err()
        .expect("nothing to send it to");
    assert!(e.to_string().contains("no store daemon answers"), "{e}");
}
