//! The embedded backend: sled in the data directory.
//!
//! Layout (all keys and values versioned, so the format can evolve):
//! - tree `runs`: run id (a ULID, so keys sort by start time) -> [`RunRecord`] as JSON;
//! - tree `events`: run id, `/`, big-endian sequence number -> the [`JournalEntry`] as JSON,
//!   or a JSON array of consecutive entries (appended together, or joined at a checkpoint),
//!   keyed by the last one's number (stores written before that have one key per entry,
//!   which reads the same);
//! - tree `locks`: lock key -> [`LockHolder`] as JSON;
//! - tree `drills`: drill name, NUL, start time (big-endian ms), run id -> [`DrillRecord`];
//! - tree `drill_state`: per drill the last scheduled time handled, and `paused:NAME`;
//! - tree `triggers`: `state:NAME` -> trigger state, `alert:` time + id -> [`AlertRecord`];
//! - tree `running`: the ids of runs whose record says `running` (written with the record,
//!   in one frame of the redo log), so that finding interrupted runs, which every command
//!   does first, reads those and not every run ever recorded.
//!
//! Every change is written to the redo log ([`super::wal`]) before sled, and made durable
//! there; sled is flushed only at the log's checkpoints and when the store closes. Changes to
//! `runs` and `events` reach sled only then ([`pending`]); until then reads see them over
//! sled's.
//!
//! sled admits one process at a time: the store daemon ([`super::daemon`]) holds it for
//! every command on the host. The process holding the store says who it is in `owner.json`
//! beside the database, so another can name it.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

mod flusher;
mod owner;
mod pending;
mod repair;
mod schedules;
#[cfg(test)]
mod test_support;
mod writes;

use pending::{Kept, Pending, merge, prefixed};

use owner::{Owner, OwnerGuard};
use repair::open_repairing;
#[cfg(test)]
pub(super) use test_support::{test_keys, test_kv, test_record};
use writes::Batch;

use super::backend::Runs;
use super::wal::{self, Wal, WalError};
use super::{
    JournalEntry, JournalEvent, ListFilter, LockHolder, RunRecord, RunStatus, StoreError, now_ms,
};

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The trees, by the number the redo log names them with (0 is sled's default tree).
const DEFAULT: u8 = 0;
const RUNS: u8 = 1;
const EVENTS: u8 = 2;
const LOCKS: u8 = 3;
const DRILLS: u8 = 4;
const DRILL_STATE: u8 = 5;
const TRIGGERS: u8 = 6;
const RUNNING: u8 = 7;
const TREES: [&str; 8] = [
    "",
    "runs",
    "events",
    "locks",
    "drills",
    "drill_state",
    "triggers",
    "running",
];
/// The layout of this store, in the default tree's `format` key: 2 since a journal's entries
/// appended together are one key (1: one key per entry).
const LAYOUT: u32 = 2;
/// Set in the default tree once the `running` index holds every running run (a store made
/// before the index gets it built at its first open).
const RUNNING_INDEXED: &str = "running-indexed";

/// A run's record as a write stores it: its JSON, and what the index of running runs needs
/// from it. The store daemon stores its clients' records as they wrote them: read into a
/// [`RunRecord`] and written out again, a record took 5 to 7 µs of the 16 µs the daemon
/// spent on a step's append before its log write.
pub(super) struct RecordJson<'a> {
    pub run_id: &'a str,
    pub running: bool,
    pub json: Vec<u8>,
}

impl RecordJson<'_> {
    fn of(r: &RunRecord) -> RecordJson<'_> {
        RecordJson {
            run_id: &r.run_id,
            running: r.status == RunStatus::Running,
            json: serde_json::to_vec(r).expect("records serialize"),
        }
    }
}

pub(super) struct Sled {
    dir: PathBuf,
    shown: String,
    db: sled::Db,
    runs: sled::Tree,
    events: sled::Tree,
    locks: sled::Tree,
    drills: sled::Tree,
    drill_state: sled::Tree,
    triggers: sled::Tree,
    running: sled::Tree,
    wal: Arc<Wal>,
    /// Changes to `runs` and `events` since the last checkpoint: reads see them over sled's.
    pending: Arc<Pending>,
    /// Changes are decided, logged and applied one at a time, so the log holds them in the
    /// order sled saw them (replay gives the same result), and a change decided from what it
    /// read (the next journal sequence number, a free lock, a drill slot) is decided on
    /// what is there.
    writing: Mutex<()>,
    /// The next sequence number of runs' journals, as appended last (sled's backward scan
    /// for the last key cost as much as the insert). Changed only with what a write commits
    /// ([`Batch::next_seq`]); a run not here is looked up in sled, so forgetting is always
    /// safe.
    next_seq: Mutex<HashMap<Vec<u8>, u32>>,
    /// Clients of the store daemon recover at once: each dead run is journaled once.
    recovering: Mutex<()>,
    /// What opening the store repaired, until someone reports it.
    repaired: Mutex<Option<String>>,
    /// Started at the first write it is worth handing over ([`Runs::append_sent`]); stopped
    /// before the guard's last flush.
    flusher: std::sync::OnceLock<Option<flusher::Flusher>>,
    _guard: OwnerGuard,
}

impl StoreError {
    fn of_sled(dir: String, e: sled::Error) -> StoreError {
        match &e {
            // sled hands out copies of an error it met before (made anew from its kind), so
            // the kind says it as well as the OS error number.
            sled::Error::Io(io)
                if io.raw_os_error() == Some(libc::ENOSPC)
                    || io.kind() == std::io::ErrorKind::StorageFull =>
            {
                StoreError::Full { dir }
            }
            _ => StoreError::Sled { dir, source: e },
        }
    }
}

impl Sled {
    /// Opens (creating if needed) the store in `dir`. `command` says what this process is
    /// doing, for the message another process gets while this one holds the store.
    pub(super) fn open(dir: &Path, command: &str) -> Result<Sled, StoreError> {
        let shown = dir.display().to_string();
        crate::private::private_dir(dir, "data directory").map_err(StoreError::Untrusted)?;
        let (db, repaired) = match open_repairing(dir) {
            Ok(opened) => opened,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(
                    match std::fs::read(dir.join("owner.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
                    {
                        Some(o) => StoreError::Busy {
                            dir: shown,
                            pid: o.pid,
                            command: o.command,
                            since: format_time(o.since_ms),
                        },
                        None => StoreError::BusyUnknown { dir: shown },
                    },
                );
            }
            Err(e) => {
                return Err(StoreError::of_sled(shown, e));
            }
        };
        let open = |tree: u8| {
            db.open_tree(TREES[usize::from(tree)])
                .map_err(|e| StoreError::of_sled(shown.clone(), e))
        };
        let (wal, replay) = Wal::open(&wal::path(dir))
            .map_err(|e| StoreError::of_wal(shown.clone(), WalError::Io(e)))?;
        let repaired = repair::with_damage(dir, &shown, &wal, repaired, RUNS)?;
        let wal = Arc::new(wal);
        let (runs, events) = (open(RUNS)?, open(EVENTS)?);
        let pending = Arc::new(Pending::new(runs.clone(), events.clone()));
        let store = Sled {
            runs,
            events,
            locks: open(LOCKS)?,
            drills: open(DRILLS)?,
            drill_state: open(DRILL_STATE)?,
            triggers: open(TRIGGERS)?,
            running: open(RUNNING)?,
            wal: wal.clone(),
            pending: pending.clone(),
            writing: Mutex::default(),
            next_seq: Mutex::default(),
            recovering: Mutex::default(),
            repaired: Mutex::new(repaired),
            flusher: std::sync::OnceLock::new(),
            _guard: OwnerGuard {
                dir: dir.to_owned(),
                db: Some(db.clone()),
                wal,
                pending: Some(pending),
            },
            db,
            dir: dir.to_owned(),
            shown: shown.clone(),
        };
        store.replay(replay)?;
        let found = match store.db.get("format").map_err(|e| store.err(e))? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u32::MAX),
            None => 0,
        };
        if found > LAYOUT {
            return Err(StoreError::NewerFormat {
                dir: shown,
                found,
                reads: LAYOUT,
            });
        }
        if found < LAYOUT {
            // A store of layout 1 reads as it is (its journal's chunks are of one entry);
            // from now on a medic that reads only 1 refuses it instead of calling its
            // chunks corrupt.
            store.write(|b| {
                b.put(DEFAULT, "format", LAYOUT.to_string().into_bytes());
                Ok(())
            })?;
            store.flush()?;
        }
        store.index_running()?;
        // Informational only (the sled file lock is what excludes other processes), so a
        // failure to write it is not fatal.
        let owner = Owner {
            pid: std::process::id(),
            command: command.to_owned(),
            since_ms: now_ms(),
        };
        let _ = crate::private::write_atomic(
            &store.dir.join("owner.json"),
            &serde_json::to_vec(&owner).unwrap_or_default(),
        );
        Ok(store)
    }

    /// What opening the store repaired, once: a message for the user.
    pub(super) fn take_repair_notice(&self) -> Option<String> {
        self.repaired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::of_sled(self.shown.clone(), e)
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        super::decode(&self.shown, &String::from_utf8_lossy(key), value)
    }

    /// A run's record as stored, unread (what the store daemon was sent).
    #[cfg(test)]
    pub(super) fn record_json(&self, run_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.run_value(run_id.as_bytes())?.map(|v| v.to_vec()))
    }

    /// A run's record as stored: changed since the last checkpoint, or in sled.
    fn run_value(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        match self.pending.get(Kept::Runs, key) {
            Some(changed) => Ok(changed),
            None => self.runs.get(key).map_err(|e| self.err(e)),
        }
    }

    /// The entries of `runs` or `events` in `range` (in reverse when `rev`), with the
    /// changes since the last checkpoint.
    fn scan(
        &self,
        tree: Kept,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        rev: bool,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        // The changes first: a checkpoint meanwhile puts them in sled before it forgets them.
        let changes = self.pending.range(
            tree,
            (
                range.0.as_ref().map(Vec::as_slice),
                range.1.as_ref().map(Vec::as_slice),
            ),
        );
        let stored = match tree {
            Kept::Runs => self.runs.range(range),
            Kept::Events => self.events.range(range),
        };
        let stored: Box<dyn Iterator<Item = _>> = if rev {
            Box::new(stored.rev())
        } else {
            Box::new(stored)
        };
        merge(stored, changes, rev).map(|kv| kv.map_err(|e| self.err(e)))
    }

    fn event_key(run_id: &str, seq: u32) -> Vec<u8> {
        let mut k = run_id.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Adds `entry` to a run's journal in `b`; returns its sequence number. Called inside
    /// [`Sled::write`] (the number is read from what is there), once per run per batch.
    fn append_to(
        &self,
        b: &mut Batch,
        run_id: &str,
        entry: &JournalEntry,
    ) -> Result<u32, StoreError> {
        self.append_all_to(b, run_id, std::slice::from_ref(entry))
    }

    /// The sequence number a key of the events tree ends with.
    fn seq_of(key: &[u8]) -> u32 {
        let tail: [u8; 4] = key[key.len().saturating_sub(4)..]
            .try_into()
            .unwrap_or([0; 4]);
        u32::from_be_bytes(tail)
    }

    /// Adds `entries` to a run's journal in `b`, in order; returns the last one's sequence
    /// number. As [`Sled::append_to`], once per run per batch.
    ///
    /// Entries appended together are one chunk: one key of the events tree, named by the
    /// last entry's sequence number, whose value is the entry itself when alone and a JSON
    /// array of them otherwise. One sled insert per store call instead of one per entry (sled's
    /// insert was a third of a recorded step's CPU, and a fleet's targets that finish
    /// together come in dozens); a journal written before chunks reads the same, every entry
    /// of it being a chunk of one.
    fn append_all_to<E: serde::Serialize>(
        &self,
        b: &mut Batch,
        run_id: &str,
        entries: &[E],
    ) -> Result<u32, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        let known = self
            .next_seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&prefix)
            .copied();
        let next = match known {
            Some(next) => next,
            None => match self.scan(Kept::Events, prefixed(&prefix), true).next() {
                Some(kv) => Self::seq_of(&kv?.0) + 1,
                None => 0,
            },
        };
        let last = next + u32::try_from(entries.len().saturating_sub(1)).unwrap_or(u32::MAX);
        match entries {
            [one] => b.put_json(EVENTS, Self::event_key(run_id, last), one),
            many => b.put_json(EVENTS, Self::event_key(run_id, last), &many),
        }
        b.next_seq(prefix, Some(last + 1));
        Ok(last)
    }

    /// [`Runs::append_many`] of any entries that serialize as [`JournalEntry`]s do: the store
    /// daemon passes on its clients' entries as they wrote them.
    pub(crate) fn append_entries<E: serde::Serialize>(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[E],
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.append_json(run_id, record.map(RecordJson::of), entries, durable)
    }

    /// [`Sled::append_entries`] with the record in JSON already (see [`RecordJson`]).
    pub(super) fn append_json<E: serde::Serialize>(
        &self,
        run_id: &str,
        record: Option<RecordJson<'_>>,
        entries: &[E],
        durable: bool,
    ) -> Result<u32, StoreError> {
        // A write flushed here holds the run's thread in the `fdatasync`: the run's last
        // call's store (`crate::later`) goes first rather than hold its memory through it.
        crate::later::drop_now();
        let (seq, _) = self.append_unflushed(run_id, record, entries)?;
        if durable {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Returns the last entry's sequence number in the journal and the frame of the log
    /// the entries are in.
    fn append_unflushed<E: serde::Serialize>(
        &self,
        run_id: &str,
        record: Option<RecordJson<'_>>,
        entries: &[E],
    ) -> Result<(u32, u64), StoreError> {
        if entries.is_empty() {
            return Err(super::backend::nothing_to_append(&self.shown, run_id));
        }
        self.write_logged(|b| {
            let seq = self.append_all_to(b, run_id, entries)?;
            if let Some(r) = record {
                self.put_run_json(b, r.run_id, r.running, r.json)?;
            }
            Ok(seq)
        })
    }

    /// For tests: the store's redo log.
    #[cfg(test)]
    pub(in crate::store) fn wal(&self) -> Arc<Wal> {
        self.wal.clone()
    }

    /// [`Runs::append_sent`]: None when the write was flushed here.
    fn hand_over(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
    ) -> Result<Option<flusher::Handed>, StoreError> {
        // While sandboxed calls run on the call threads (a fleet's targets), this thread's
        // flush leaves them its CPU as it waits; the flusher's would take a share of it (a
        // fleet's target: 19.2 -> 21.2 µs, 10 rounds interleaved, its CPU 4 to 6 µs more).
        let flusher = (self.wal.flush_time() > flusher::HAND_OFF_PAST
            && !crate::host::calls_on_call_threads())
        .then(|| {
            self.flusher
                .get_or_init(|| {
                    flusher::Flusher::start(
                        self.wal.clone(),
                        crate::store::near_disk::of(&self.dir),
                    )
                })
                .as_ref()
        })
        .flatten();
        let Some(flusher) = flusher else {
            return self
                .append_many(run_id, record, entries, true)
                .map(|_| None);
        };
        let (_, frame) = self.append_unflushed(run_id, record.map(RecordJson::of), entries)?;
        let handed = flusher.hand(&self.wal, frame, &self.shown);
        // While the flusher flushes, the run's last call's store goes (`crate::later`).
        crate::later::drop_now();
        Ok(Some(handed))
    }

    /// The entries of one chunk of a journal (see [`Sled::append_all_to`]).
    fn chunk(&self, key: &[u8], value: &[u8]) -> Result<Vec<JournalEntry>, StoreError> {
        if value.first() == Some(&b'[') {
            self.decode(key, value)
        } else {
            Ok(vec![self.decode(key, value)?])
        }
    }

    /// Removes a run's locks in `b`.
    fn release_locks_in(&self, b: &mut Batch, run_id: &str) -> Result<(), StoreError> {
        for kv in self.locks.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if self
                .decode::<LockHolder>(&k, &v)
                .is_ok_and(|h| h.run_id == run_id)
            {
                b.remove(LOCKS, k);
            }
        }
        Ok(())
    }
}

impl Runs for Sled {
    fn location(&self) -> String {
        self.shown.clone()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.wal
            .sync(self.wal.written())
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))
    }

    fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.write(|b| {
            self.put_run(b, r)?;
            Ok(())
        })
    }

    fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self.run_value(run_id.as_bytes())? {
            Some(v) => self.decode(run_id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn by_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut found = Vec::new();
        for kv in self
            .scan(Kept::Runs, prefixed(prefix.as_bytes()), false)
            .take(max)
        {
            let (k, v) = kv?;
            found.push(self.decode::<RunRecord>(&k, &v)?);
        }
        Ok(found)
    }

    /// Where flushes take longer than a hand-off to another thread, the frame is written
    /// and its flush handed to the store's flusher: the run's call begins meanwhile.
    fn append_sent(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
    ) -> Result<Option<Box<dyn crate::ahead::Unconfirmed>>, StoreError> {
        let handed = self.hand_over(run_id, record, entries)?;
        Ok(handed.map(|h| Box::new(h) as Box<dyn crate::ahead::Unconfirmed>))
    }

    /// One frame of the redo log: all or nothing survives a crash.
    fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.append_entries(run_id, record, entries, durable)
    }

    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        let Ok(start) = u32::try_from(from) else {
            return Ok(Vec::new());
        };
        // A chunk's key is its last entry's number: the first key at or past `from` is the
        // chunk that holds it, and nothing before it is read.
        let (_, end) = prefixed(&prefix);
        let mut out = Vec::new();
        // The first entry not yet read: a checkpoint during this read may join chunks read
        // already with the next (`Pending::settle`), and those entries are not read twice.
        let mut next = from;
        for kv in self.scan(
            Kept::Events,
            (Bound::Included(Self::event_key(run_id, start)), end),
            false,
        ) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let chunk = self.chunk(&k, &v)?;
            let last = Self::seq_of(&k) as usize;
            let first = (last + 1).saturating_sub(chunk.len());
            out.extend(chunk.into_iter().skip(next.saturating_sub(first)));
            next = next.max(last + 1);
        }
        out.truncate(limit);
        Ok(out)
    }

    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let upto = match &filter.before {
            Some(before) => Bound::Excluded(before.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        for kv in self.scan(Kept::Runs, (Bound::Unbounded, upto), true) {
            let (k, v) = kv?;
            let r: RunRecord = self.decode(&k, &v)?;
            if filter.since_ms.is_some_and(|s| r.started_ms < s) {
                // Ids sort by start time: everything further is older.
                break;
            }
            if filter.matches(&r) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Runs and locks are owned by processes on this host (the store daemon holds sled for
    /// all of them): a run still `running` whose process is gone was interrupted.
    fn recover(&self) -> Result<Vec<String>, StoreError> {
        let _one_at_a_time = self
            .recovering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut recovered = Vec::new();
        for id in self.running.iter().keys() {
            let id = id.map_err(|e| self.err(e))?;
            let Some(v) = self.run_value(&id)? else {
                continue;
            };
            let mut r: RunRecord = self.decode(&id, &v)?;
            if r.status != RunStatus::Running || r.process().alive() {
                continue;
            }
            self.write(|b| {
                self.append_to(
                    b,
                    &r.run_id,
                    &JournalEntry::now(JournalEvent::RunInterrupted {
                        found_by_pid: std::process::id(),
                    }),
                )?;
                r.status = RunStatus::Interrupted;
                self.put_run(b, &r)?;
                self.release_locks_in(b, &r.run_id)
            })?;
            recovered.push(r.run_id);
        }
        // A lock whose process is gone, including one killed after taking its lock but
        // before recording its run.
        self.write(|b| {
            for kv in self.locks.iter() {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                if self
                    .decode::<LockHolder>(&k, &v)
                    .is_ok_and(|h| !h.process().alive())
                {
                    b.remove(LOCKS, k);
                }
            }
            Ok(())
        })?;
        self.flush()?;
        Ok(recovered)
    }

    fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        let (taken, new) = self.write(|b| {
            let current = self
                .locks
                .get(key.as_bytes())
                .map_err(|e| self.err(e))?
                .map(|v| self.decode::<LockHolder>(key.as_bytes(), &v))
                .transpose()?;
            match current {
                Some(h) if h.run_id != holder.run_id => Ok((Err(h), false)),
                // Free, or the same run taking its lock again (a resume).
                current => {
                    b.put_json(LOCKS, key, holder);
                    Ok((Ok(()), current.is_none()))
                }
            }
        })?;
        if new {
            self.flush()?;
        }
        Ok(taken)
    }

    fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        self.write(|b| self.release_locks_in(b, run_id))
    }

    fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.scan(Kept::Runs, (Bound::Unbounded, Bound::Unbounded), false) {
            let (k, v) = kv?;
            let r: RunRecord = self.decode(&k, &v)?;
            if r.started_ms >= before_ms {
                break;
            }
            if r.status == RunStatus::Running {
                continue;
            }
            let mut prefix = r.run_id.as_bytes().to_vec();
            prefix.push(b'/');
            // A run goes whole or not at all.
            self.write(|b| {
                for kv in self.scan(Kept::Events, prefixed(&prefix), false) {
                    b.remove(EVENTS, kv?.0);
                }
                b.next_seq(prefix.clone(), None);
                b.remove(RUNS, &k);
                b.remove(RUNNING, &k);
                Ok(())
            })?;
            n += 1;
        }
        self.flush()?;
        Ok(n)
    }
}
