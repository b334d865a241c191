//! The embedded backend: sled in the data directory.
//!
//! Layout (all keys and values versioned, so the format can evolve):
//! - tree `runs`: run id (a ULID, so keys sort by start time) -> [`RunRecord`] as JSON;
//! - tree `events`: run id + big-endian sequence number -> [`JournalEntry`] as JSON;
//! - tree `locks`: lock key -> [`LockHolder`] as JSON;
//! - tree `drills`: drill name, NUL, start time (big-endian ms), run id -> [`DrillRecord`];
//! - tree `drill_state`: per drill the last scheduled time handled, and `paused:NAME`;
//! - tree `triggers`: `state:NAME` -> trigger state, `alert:` time + id -> [`AlertRecord`];
//! - tree `running`: the ids of runs whose record says `running` (written with the record,
//!   in one frame of the redo log), so that finding interrupted runs, which every command
//!   does first, reads those and not every run ever recorded.
//!
//! Every change is written to the redo log ([`super::wal`]) before sled, and made durable
//! there; sled is flushed only at the log's checkpoints and when the store closes.
//!
//! sled admits one process at a time: the store daemon ([`super::daemon`]) holds it for
//! every command on the host. The process holding the store says who it is in `owner.json`
//! beside the database, so another can name it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::backend::{Runs, Schedules};
use super::drills::{DrillRecord, Paused};
use super::triggers::AlertRecord;
use super::wal::{self, Change, Wal, WalError};
use super::{
    FORMAT_VERSION, JournalEntry, JournalEvent, ListFilter, LockHolder, RunRecord, RunStatus,
    StoreError, now_ms,
};
use crate::trigger::policy::State;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Owner {
    pid: u32,
    command: String,
    since_ms: u64,
}

struct OwnerGuard {
    dir: PathBuf,
    db: sled::Db,
    wal: Arc<Wal>,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        // The last holder: nobody writes any more, so the log can start over once sled has
        // it all (the next open then has nothing to replay).
        if self.db.flush().is_ok() {
            let _ = self.wal.restart();
        }
        let owner = self.dir.join("owner.json");
        if std::fs::read(&owner)
            .ok()
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
            .is_some_and(|o| o.pid == std::process::id())
        {
            let _ = std::fs::remove_file(owner);
        }
    }
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Opens sled in `dir/db`, repairing what sled 0.34 cannot: a snapshot it was writing when
/// its process was killed or the disk filled (`snap.*.generating`, never renamed into place)
/// is taken for the newest snapshot at the next open, fails its checksum, and the store
/// would never open again ("Read corrupted data"). Such a file is never complete by
/// construction (sled renames it once synced), so it is set aside in `dir/aside/` and the
/// open tried again; the repair is returned, to be reported. sled takes its file lock before it
/// reads snapshots, so a corruption error means no other process held the store; openers
/// that hit it repair one at a time (`dir/repair.lock`).
fn open_repairing(dir: &Path) -> sled::Result<(sled::Db, Option<String>)> {
    // sled's own periodic flush is off: the redo log makes changes durable, and sled is
    // flushed at its checkpoints.
    let open = || {
        sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(None)
            .open()
    };
    let first = match open() {
        Err(e @ sled::Error::Corruption { .. }) => e,
        other => return other.map(|db| (db, None)),
    };
    let Ok(lock) = std::fs::File::create(dir.join("repair.lock")) else {
        return Err(first);
    };
    if lock.lock().is_err() {
        return Err(first);
    }
    // Another process may have repaired it while this one waited for the lock.
    match open() {
        Err(sled::Error::Corruption { .. }) => {}
        other => return other.map(|db| (db, None)),
    }
    let unfinished: Vec<PathBuf> = std::fs::read_dir(dir.join("db"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
                })
                .collect()
        })
        .unwrap_or_default();
    if unfinished.is_empty() {
        return Err(first);
    }
    let aside = dir.join("aside").join(now_ms().to_string());
    if std::fs::create_dir_all(&aside).is_err() {
        return Err(first);
    }
    let mut moved = Vec::new();
    for path in &unfinished {
        let name = path.file_name().unwrap_or_default();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if std::fs::rename(path, aside.join(name)).is_err() {
            return Err(first);
        }
        moved.push(format!("{} ({size} bytes)", name.to_string_lossy()));
    }
    let db = open()?;
    let notice = format!(
        "repaired the run store in {}: an unfinished snapshot left by a crash or a full disk ({}) kept it from opening; set it aside in {} and opened the store from its log (a snapshot only summarizes the log: nothing recorded is lost)",
        dir.display(),
        moved.join(", "),
        aside.display()
    );
    Ok((db, Some(notice)))
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
/// Set in the default tree once the `running` index holds every running run (a store made
/// before the index gets it built at its first open).
const RUNNING_INDEXED: &str = "running-indexed";

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
    /// Changes are decided, logged and applied one at a time, so the log holds them in the
    /// order sled saw them (replay gives the same result), and a change decided from what it
    /// read (the next journal sequence number, a free lock, a drill slot) is decided on
    /// what is there.
    writing: Mutex<()>,
    /// Clients of the store daemon recover at once: each dead run is journaled once.
    recovering: Mutex<()>,
    /// What opening the store repaired, until someone reports it.
    repaired: Mutex<Option<String>>,
    _guard: OwnerGuard,
}

/// Changes to make together (one frame of the redo log): all or none survive a crash.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
}

impl Batch {
    fn put(&mut self, tree: u8, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.changes.push(Change {
            tree,
            key: key.as_ref().to_vec(),
            value: Some(value),
        });
    }

    fn put_json<T: Serialize>(&mut self, tree: u8, key: impl AsRef<[u8]>, v: &T) {
        self.put(tree, key, serde_json::to_vec(v).expect("records serialize"));
    }

    fn remove(&mut self, tree: u8, key: impl AsRef<[u8]>) {
        self.changes.push(Change {
            tree,
            key: key.as_ref().to_vec(),
            value: None,
        });
    }
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

    fn of_wal(dir: String, e: WalError) -> StoreError {
        match e {
            WalError::Io(io)
                if io.raw_os_error() == Some(libc::ENOSPC)
                    || io.kind() == std::io::ErrorKind::StorageFull =>
            {
                StoreError::Full { dir }
            }
            WalError::Io(source) => StoreError::Log { dir, source },
            WalError::Broken => StoreError::Log {
                dir,
                source: std::io::Error::other(
                    "an earlier write to it failed; the store must be opened again",
                ),
            },
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
        let wal = Arc::new(wal);
        let store = Sled {
            runs: open(RUNS)?,
            events: open(EVENTS)?,
            locks: open(LOCKS)?,
            drills: open(DRILLS)?,
            drill_state: open(DRILL_STATE)?,
            triggers: open(TRIGGERS)?,
            running: open(RUNNING)?,
            wal: wal.clone(),
            writing: Mutex::default(),
            recovering: Mutex::default(),
            repaired: Mutex::new(repaired),
            _guard: OwnerGuard {
                dir: dir.to_owned(),
                db: db.clone(),
                wal,
            },
            db,
            dir: dir.to_owned(),
            shown: shown.clone(),
        };
        store.replay(replay)?;
        match store.db.get("format").map_err(|e| store.err(e))? {
            Some(v) => {
                let found = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat { dir: shown, found });
                }
            }
            None => {
                store.write(|b| {
                    b.put(DEFAULT, "format", FORMAT_VERSION.to_string().into_bytes());
                    Ok(())
                })?;
                store.flush()?;
            }
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

    /// Applies the redo log's frames left by a process that stopped before its checkpoint
    /// (killed, or the machine lost power), then makes sled hold them and starts the log over.
    fn replay(&self, frames: Vec<Vec<u8>>) -> Result<(), StoreError> {
        if frames.is_empty() {
            return Ok(());
        }
        let count = frames.len();
        for body in frames {
            let changes = wal::decode(&body).ok_or_else(|| StoreError::Corrupt {
                dir: self.shown.clone(),
                key: wal::path(&self.dir).display().to_string(),
                reason: "a frame of the redo log passed its checksum but does not decode"
                    .to_owned(),
            })?;
            self.apply(changes)?;
        }
        self.checkpoint()?;
        tracing::info!(frames = count, store = %self.shown, "replayed the redo log");
        Ok(())
    }

    /// Builds the index of running runs for a store recorded before it existed: one scan of
    /// every record, once.
    fn index_running(&self) -> Result<(), StoreError> {
        if self
            .db
            .contains_key(RUNNING_INDEXED)
            .map_err(|e| self.err(e))?
        {
            return Ok(());
        }
        self.write(|b| {
            for kv in self.runs.iter() {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                // A record that does not decode is named when it is read, not here: the
                // store must still open.
                if self
                    .decode::<RunRecord>(&k, &v)
                    .is_ok_and(|r| r.status == RunStatus::Running)
                {
                    b.put(RUNNING, k, Vec::new());
                }
            }
            b.put(DEFAULT, RUNNING_INDEXED, b"1".to_vec());
            Ok(())
        })?;
        self.flush()
    }

    /// Writes a run's record in `b`, and its place in the index of running runs.
    fn put_run(b: &mut Batch, r: &RunRecord) {
        b.put_json(RUNS, &r.run_id, r);
        if r.status == RunStatus::Running {
            b.put(RUNNING, &r.run_id, Vec::new());
        } else {
            b.remove(RUNNING, &r.run_id);
        }
    }

    fn tree(&self, id: u8) -> Result<&sled::Tree, StoreError> {
        Ok(match id {
            DEFAULT => &self.db,
            RUNS => &self.runs,
            EVENTS => &self.events,
            LOCKS => &self.locks,
            DRILLS => &self.drills,
            DRILL_STATE => &self.drill_state,
            TRIGGERS => &self.triggers,
            RUNNING => &self.running,
            _ => {
                return Err(StoreError::Corrupt {
                    dir: self.shown.clone(),
                    key: wal::path(&self.dir).display().to_string(),
                    reason: format!("the redo log names tree {id}, which this medic does not have"),
                });
            }
        })
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        for c in changes {
            let tree = self.tree(c.tree)?;
            match c.value {
                Some(v) => tree.insert(c.key, v).map(|_| ()),
                None => tree.remove(c.key).map(|_| ()),
            }
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// sled made to hold everything in the log, which then starts over. Called with the
    /// writer lock held (or before anyone else can write).
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        self.wal
            .restart()
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))
    }

    /// Decides changes (`decide` may read the store: nobody else writes meanwhile), logs them
    /// as one frame, applies them to sled. Durable at the next [`Runs::flush`].
    fn write<R>(
        &self,
        decide: impl FnOnce(&mut Batch) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        let result = decide(&mut batch)?;
        if batch.changes.is_empty() {
            return Ok(result);
        }
        self.wal
            .append(&wal::encode(&batch.changes))
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))?;
        self.apply(batch.changes)?;
        if self.wal.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(result)
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

    /// Adds `entries` to a run's journal in `b`, in order; returns the last one's sequence
    /// number. As [`Sled::append_to`], once per run per batch.
    fn append_all_to(
        &self,
        b: &mut Batch,
        run_id: &str,
        entries: &[JournalEntry],
    ) -> Result<u32, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        let next = match self.events.scan_prefix(&prefix).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(|e| self.err(e))?;
                let tail: [u8; 4] = k[k.len() - 4..].try_into().unwrap_or([0; 4]);
                u32::from_be_bytes(tail) + 1
            }
            None => 0,
        };
        let mut seq = next;
        for (i, entry) in entries.iter().enumerate() {
            seq = next + i as u32;
            b.put_json(EVENTS, Self::event_key(run_id, seq), entry);
        }
        Ok(seq)
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

fn drill_key(drill: &str, started_ms: u64, tie: &str) -> Vec<u8> {
    let mut k = drill.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&started_ms.to_be_bytes());
    k.extend_from_slice(tie.as_bytes());
    k
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
            Self::put_run(b, r);
            Ok(())
        })
    }

    fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self.runs.get(run_id.as_bytes()).map_err(|e| self.err(e))? {
            Some(v) => self.decode(run_id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn by_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut found = Vec::new();
        for kv in self.runs.scan_prefix(prefix.as_bytes()).take(max) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            found.push(self.decode::<RunRecord>(&k, &v)?);
        }
        Ok(found)
    }

    fn append(&self, run_id: &str, entry: &JournalEntry, durable: bool) -> Result<u32, StoreError> {
        let next = self.write(|b| self.append_to(b, run_id, entry))?;
        if durable {
            self.flush()?;
        }
        Ok(next)
    }

    /// One frame of the redo log: both or neither survive a crash.
    fn append_with_record(
        &self,
        r: &RunRecord,
        entry: &JournalEntry,
        durable: bool,
    ) -> Result<u32, StoreError> {
        let seq = self.write(|b| {
            let seq = self.append_to(b, &r.run_id, entry)?;
            Self::put_run(b, r);
            Ok(seq)
        })?;
        if durable {
            self.flush()?;
        }
        Ok(seq)
    }

    fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        durable: bool,
    ) -> Result<u32, StoreError> {
        if entries.is_empty() {
            return Err(super::backend::nothing_to_append(&self.shown, run_id));
        }
        let seq = self.write(|b| {
            let seq = self.append_all_to(b, run_id, entries)?;
            if let Some(r) = record {
                Self::put_run(b, r);
            }
            Ok(seq)
        })?;
        if durable {
            self.flush()?;
        }
        Ok(seq)
    }

    fn journal_from(&self, run_id: &str, from: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        self.events
            .scan_prefix(&prefix)
            .skip(from)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                self.decode(&k, &v)
            })
            .collect()
    }

    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let runs = match &filter.before {
            Some(before) => self.runs.range(..before.as_bytes()),
            None => self.runs.range::<&[u8], _>(..),
        };
        for kv in runs.rev() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
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
            let Some(v) = self.runs.get(&id).map_err(|e| self.err(e))? else {
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
                Self::put_run(b, &r);
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
        for kv in self.runs.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
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
                for ek in self.events.scan_prefix(&prefix).keys() {
                    b.remove(EVENTS, ek.map_err(|e| self.err(e))?);
                }
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

impl Schedules for Sled {
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        let tie = r.run_id.clone().unwrap_or_else(crate::executor::new_run_id);
        self.write(|b| {
            b.put_json(DRILLS, drill_key(&r.drill, r.started_ms, &tie), r);
            Ok(())
        })?;
        self.flush()
    }

    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        let iter = match drill {
            Some(name) => {
                let mut prefix = name.as_bytes().to_vec();
                prefix.push(0);
                self.drills.scan_prefix(prefix)
            }
            None => self.drills.iter(),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let r: DrillRecord = self.decode(&k, &v)?;
            if r.started_ms >= since_ms {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.started_ms);
        Ok(out)
    }

    fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .drill_state
            .get(drill.as_bytes())
            .map_err(|e| self.err(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn claim_drill_slot(&self, drill: &str, ms: u64) -> Result<bool, StoreError> {
        // Read and written under the writer lock: threads of this process asking at once
        // get it once.
        let claimed = self.write(|b| {
            let last = self.drill_last_scheduled(drill)?;
            if last.is_some_and(|last| last >= ms) {
                return Ok(false);
            }
            b.put(DRILL_STATE, drill, ms.to_be_bytes().to_vec());
            Ok(true)
        })?;
        if claimed {
            self.flush()?;
        }
        Ok(claimed)
    }

    fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        let key = format!("paused:{drill}");
        match self
            .drill_state
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(v) => self.decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        let key = format!("paused:{drill}");
        self.write(|b| {
            match paused {
                Some(p) => b.put_json(DRILL_STATE, &key, p),
                None => b.remove(DRILL_STATE, &key),
            }
            Ok(())
        })?;
        self.flush()
    }

    /// One process at a time holds the store, and `medic serve` decides alerts one at a
    /// time: there is no one else to exclude.
    fn hold_trigger(&self, _trigger: &str) -> Result<Box<dyn Send>, StoreError> {
        Ok(Box::new(()))
    }

    fn trigger_state(&self, trigger: &str) -> Result<Option<State>, StoreError> {
        let key = format!("state:{trigger}");
        match self.triggers.get(key.as_bytes()).map_err(|e| self.err(e))? {
            Some(v) => self.decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError> {
        self.write(|b| {
            b.put_json(TRIGGERS, format!("state:{trigger}"), state);
            Ok(())
        })?;
        self.flush()
    }

    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        let mut key = b"alert:".to_vec();
        key.extend_from_slice(&record.at_ms.to_be_bytes());
        key.extend_from_slice(&id.to_be_bytes());
        self.write(|b| {
            b.put_json(TRIGGERS, key, record);
            Ok(())
        })
    }

    fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let mut from = b"alert:".to_vec();
        from.extend_from_slice(&since_ms.to_be_bytes());
        let mut out: Vec<AlertRecord> = self
            .triggers
            .range(from..b"alert;".to_vec())
            .rev()
            .take(limit)
            .map(|e| {
                let (k, v) = e.map_err(|e| self.err(e))?;
                self.decode(&k, &v)
            })
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}
