//! What a run store must do, whatever holds the data: the embedded default (sled in the data
//! directory, [`super::embedded`]) and PostgreSQL shared by many hosts ([`super::postgres`])
//! implement it, and `tests/e2e/store_conformance.rs` holds both to the same behaviour.
//!
//! Derived views (a run's steps, its fleet targets, its key-value state) are computed by
//! [`super::Store`] from these operations, once, for both.

use super::drills::{DrillRecord, Paused};
use super::triggers::AlertRecord;
use super::{JournalEntry, ListFilter, LockHolder, RunRecord, StoreError};
use crate::trigger::policy::State;

/// A store: its runs and its schedules' state, each implemented apart.
pub trait Backend: Runs + Schedules {}

impl<T: Runs + Schedules> Backend for T {}

/// Runs: records, journals, locks, and finding the runs of processes that died.
pub trait Runs: Send + Sync {
    /// Where the data lives, for messages (never with a password).
    fn location(&self) -> String;
    /// Whether other processes (other hosts) use the same data at the same time: their runs
    /// can die while this process lives, and each slot or alert must be taken by one.
    fn is_shared(&self) -> bool {
        false
    }
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    fn put_record(&self, r: &RunRecord) -> Result<(), StoreError>;
    fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// At most `max` runs whose id starts with `prefix`, in id order.
    fn by_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// Appends to a run's journal; returns the entry's sequence number (0, 1, 2, ...).
    /// `durable`: everything written so far is durable when it returns (one call, so a
    /// store in another process is asked once).
    /// By default [`Runs::append_many`] of one entry.
    fn append(&self, run_id: &str, entry: &JournalEntry, durable: bool) -> Result<u32, StoreError> {
        self.append_many(run_id, None, std::slice::from_ref(entry), durable)
    }
    /// Appends to a run's journal and writes its record as that entry leaves it, both or
    /// neither: a crash never leaves a record that disagrees with its journal. `durable` as
    /// for [`Runs::append`]. By default [`Runs::append_many`] of one entry.
    fn append_with_record(
        &self,
        r: &RunRecord,
        entry: &JournalEntry,
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.append_many(&r.run_id, Some(r), std::slice::from_ref(entry), durable)
    }
    /// Appends `entries` to a run's journal in order and consecutively (no other writer's
    /// entry between them), then `record` as they leave it (if given); returns the last
    /// entry's sequence number; all or none. One call for entries that came together (a
    /// step's end with the next event, a fleet's targets finishing at once): one round trip
    /// to a store in another process, one frame of the embedded store's redo log, one
    /// transaction on PostgreSQL. No entries is an error ([`nothing_to_append`]).
    fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        durable: bool,
    ) -> Result<u32, StoreError>;
    /// A durable [`Runs::append_many`] that may return before it is durable: Some when the
    /// write was sent and its answer is yet to come ([`crate::ahead::Unconfirmed`]), as
    /// through the store daemon, which flushes in its own process meanwhile, or in the
    /// embedded store, whose own thread flushes where flushes are slower than waking it.
    /// By default the append is made and flushed here (None).
    fn append_sent(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
    ) -> Result<Option<Box<dyn crate::ahead::Unconfirmed>>, StoreError> {
        self.append_many(run_id, record, entries, true)
            .map(|_| None)
    }
    /// Whether a write may be sent ([`Runs::append_sent`]) while an earlier one to the same
    /// run's journal is still unconfirmed, and still land after it (as does any append to
    /// that journal made meanwhile): true where sends are made in order (the embedded
    /// store's log is written in the order of the calls; the store daemon's client sends a
    /// run's appends on one connection while any is unanswered, and the daemon serves a
    /// connection in order; by default a send is made and flushed before it returns).
    fn sends_in_order(&self) -> bool {
        true
    }
    /// A run's journal from its `from`th entry on, at most `limit` entries.
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// Newest first, at most `limit`.
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// Marks interrupted the runs whose process is gone (journaling `RunInterrupted`) and
    /// releases their locks; returns their ids. Each backend knows when a process is gone.
    fn recover(&self) -> Result<Vec<String>, StoreError>;
    /// Takes a lock for a run; on conflict returns who holds it. The same run taking its
    /// lock again (a resume) succeeds.
    fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError>;
    fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError>;
    /// Deletes runs that started before `before_ms` and ended; returns how many.
    fn prune(&self, before_ms: u64) -> Result<usize, StoreError>;
}

/// What schedulers and triggers remember: drill results and slots, trigger state, alerts.
pub trait Schedules: Send + Sync {
    /// Records a drill execution, durably.
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError>;
    /// A drill's records since `since_ms`, oldest first; every drill's when `drill` is None.
    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError>;
    /// The last scheduled time the scheduler handled for a drill.
    fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError>;
    /// Takes the scheduled slot `ms` of a drill for this process: true for exactly one of
    /// the schedulers that ask, false when the slot (or a later one) was handled already.
    fn claim_drill_slot(&self, drill: &str, ms: u64) -> Result<bool, StoreError>;
    fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError>;
    fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError>;

    /// Holds the trigger `trigger` for this process until the returned value is dropped:
    /// every scheduler sharing the store decides its alerts one at a time (reading its
    /// state, maybe starting a run, writing the state back), so an alert delivered to two
    /// nodes starts one run.
    fn hold_trigger(&self, trigger: &str) -> Result<Box<dyn Send>, StoreError>;
    /// A trigger's state, if it has one.
    fn trigger_state(&self, trigger: &str) -> Result<Option<State>, StoreError>;
    fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError>;
    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError>;
    /// Alerts recorded at or after `since_ms`, oldest first, at most the newest `limit`.
    fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError>;
}

/// Small documents shared by every process using a shared store: approvals waiting and
/// their decisions, the API token registry, the audit log. (The embedded store keeps these
/// as files in the data directory: every process on the host reads them there.) Keys sort
/// bytewise.
pub trait Documents: Send + Sync {
    fn document(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `key`. With `only_if`, only if its value is still that (`Some(None)`: only if
    /// there is none); returns whether it was written.
    fn put_document(
        &self,
        key: &str,
        value: &[u8],
        only_if: Option<Option<&[u8]>>,
    ) -> Result<bool, StoreError>;
    /// At most `limit` documents whose keys are in `from..to`, in key order, or from the
    /// largest key down when `descending`.
    fn documents(
        &self,
        from: &str,
        to: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Deletes the documents whose keys are in `from..to`; returns how many.
    fn delete_documents(&self, from: &str, to: &str) -> Result<usize, StoreError>;
}

/// [`Runs::append_many`] with no entries: a caller's mistake, said rather than ignored.
pub(super) fn nothing_to_append(location: &str, run_id: &str) -> StoreError {
    StoreError::Corrupt {
        dir: location.to_owned(),
        key: run_id.to_owned(),
        reason: "append_many was given no entries".to_owned(),
    }
}

/// The keys that start with `prefix`, as a range for [`Documents::documents`]: `prefix` up to
/// `prefix` with its last byte one higher.
pub fn prefix_range(prefix: &str) -> (String, String) {
    let mut end = prefix.as_bytes().to_vec();
    // Keys are ASCII here (names are checked): the last byte is below 0x7f.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (
        prefix.to_owned(),
        String::from_utf8(end).unwrap_or_else(|_| prefix.to_owned() + "\u{10ffff}"),
    )
}
