//! What the store's tests build on: a run's record, journal entries, a journal's keys.

use super::super::backend::Runs as _;
use super::super::{JournalEntry, JournalEvent, RunRecord, RunStatus};
use super::Sled;

/// A journal entry for tests: key `k{i}`, a value of `pad` bytes.
pub(in crate::store) fn test_kv(i: usize, pad: usize) -> JournalEntry {
    JournalEntry::now(JournalEvent::KvSet {
        space: "s".into(),
        key: format!("k{i}"),
        value: Some("0".repeat(pad)),
    })
}

/// The keys of a run's journal of [`test_kv`] entries, from its `from`th entry.
pub(in crate::store) fn test_keys(s: &Sled, run: &str, from: usize) -> Vec<String> {
    s.journal_from(run, from, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| match e.event {
            JournalEvent::KvSet { key, .. } => key,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A run's record for tests (its process is gone: pid 999999999).
pub(in crate::store) fn test_record(id: &str, started_ms: u64, status: RunStatus) -> RunRecord {
    RunRecord {
        v: 1,
        run_id: id.into(),
        runbook: "rb".into(),
        runbook_path: "rb.toml".into(),
        runbook_sha256: "0".repeat(64),
        plugins: vec![],
        params: vec![],
        environment: "dev".into(),
        trigger: crate::store::Trigger::Cli {
            user: "u".into(),
            host: "h".into(),
        },
        approval: None,
        lock: None,
        dry_run: false,
        notification: false,
        status,
        started_ms,
        ended_ms: None,
        pid: 999_999_999,
        pid_start: None,
        steps_total: 1,
        steps_done: 0,
        failed_step: None,
        changed: false,
        changed_ms: None,
        detected_ms: None,
        detected_by_gate: false,
        recovered_ms: None,
    }
}
