//! The embedded backend: sled in the data directory.
//!
//! Layout (all keys and values versioned, so the format can evolve):
//! - tree `runs`: run id (a ULID, so keys sort by start time) -> [`RunRecord`] as JSON;
//! - tree `events`: run id + big-endian sequence number -> [`JournalEntry`] as JSON;
//! - tree `locks`: lock key -> [`LockHolder`] as JSON;
//! - tree `drills`: drill name, NUL, start time (big-endian ms), run id -> [`DrillRecord`];
//! - tree `drill_state`: per drill the last scheduled time handled, and `paused:NAME`;
//! - tree `triggers`: `state:NAME` -> trigger state, `alert:` time + id -> [`AlertRecord`].
//!
//! sled admits one process at a time: the store daemon ([`super::daemon`]) holds it for
//! every command on the host. The process holding the store says who it is in `owner.json`
//! beside the database, so another can name it.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::backend::{Runs, Schedules};
use super::drills::{DrillRecord, Paused};
use super::triggers::AlertRecord;
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
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let _ = self.db.flush();
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
    let open = || sled::Config::new().path(dir.join("db")).open();
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
    /// Journal appends read the last sequence number and write the next: one at a time, as
    /// a run's kv writes come from plugin calls beside the recorder's events.
    append_lock: std::sync::Mutex<()>,
    /// Clients of the store daemon recover at once: each dead run is journaled once.
    recovering: std::sync::Mutex<()>,
    /// What opening the store repaired, until someone reports it.
    repaired: std::sync::Mutex<Option<String>>,
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
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StoreError::of_sled(shown.clone(), e))
        };
        let store = Sled {
            runs: open("runs")?,
            events: open("events")?,
            locks: open("locks")?,
            drills: open("drills")?,
            drill_state: open("drill_state")?,
            triggers: open("triggers")?,
            append_lock: std::sync::Mutex::default(),
            recovering: std::sync::Mutex::default(),
            repaired: std::sync::Mutex::new(repaired),
            _guard: OwnerGuard {
                dir: dir.to_owned(),
                db: db.clone(),
            },
            db,
            dir: dir.to_owned(),
            shown: shown.clone(),
        };
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
                store
                    .db
                    .insert("format", FORMAT_VERSION.to_string().as_bytes())
                    .map_err(|e| store.err(e))?;
            }
        }
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    fn event_key(run_id: &str, seq: u32) -> Vec<u8> {
        let mut k = run_id.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn insert_json<T: Serialize>(
        &self,
        tree: &sled::Tree,
        key: impl AsRef<[u8]>,
        v: &T,
    ) -> Result<(), StoreError> {
        tree.insert(
            key.as_ref(),
            serde_json::to_vec(v).expect("records serialize"),
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    fn append_unflushed(&self, run_id: &str, entry: &JournalEntry) -> Result<u32, StoreError> {
        let _one_at_a_time = self
            .append_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        self.insert_json(&self.events, Self::event_key(run_id, next), entry)?;
        Ok(next)
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
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.insert_json(&self.runs, r.run_id.as_bytes(), r)
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
        let next = self.append_unflushed(run_id, entry)?;
        if durable {
            self.flush()?;
        }
        Ok(next)
    }

    /// Both become durable at the next flush, together: sled loses unflushed writes as one.
    fn append_with_record(
        &self,
        r: &RunRecord,
        entry: &JournalEntry,
        durable: bool,
    ) -> Result<u32, StoreError> {
        let seq = self.append_unflushed(&r.run_id, entry)?;
        self.put_record(r)?;
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
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut recovered = Vec::new();
        for kv in self.runs.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let mut r: RunRecord = self.decode(&k, &v)?;
            if r.status != RunStatus::Running || r.process().alive() {
                continue;
            }
            self.append_unflushed(
                &r.run_id,
                &JournalEntry::now(JournalEvent::RunInterrupted {
                    found_by_pid: std::process::id(),
                }),
            )?;
            r.status = RunStatus::Interrupted;
            self.put_record(&r)?;
            self.release_all_locks(&r.run_id)?;
            recovered.push(r.run_id);
        }
        // A lock whose process is gone, including one killed after taking its lock but
        // before recording its run.
        for kv in self.locks.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if self
                .decode::<LockHolder>(&k, &v)
                .is_ok_and(|h| !h.process().alive())
            {
                self.locks.remove(k).map_err(|e| self.err(e))?;
            }
        }
        self.flush()?;
        Ok(recovered)
    }

    fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        let value = serde_json::to_vec(holder).expect("lock holders serialize");
        match self
            .locks
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(|e| self.err(e))?
        {
            Ok(()) => {
                self.flush()?;
                Ok(Ok(()))
            }
            Err(cas) => {
                let current = cas
                    .current
                    .map(|v| self.decode::<LockHolder>(key.as_bytes(), &v))
                    .transpose()?;
                match current {
                    // The same run taking its lock again (a resume) is fine.
                    Some(h) if h.run_id == holder.run_id => {
                        self.insert_json(&self.locks, key.as_bytes(), holder)?;
                        Ok(Ok(()))
                    }
                    Some(h) => Ok(Err(h)),
                    None => Ok(Ok(())),
                }
            }
        }
    }

    fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        for kv in self.locks.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if self
                .decode::<LockHolder>(&k, &v)
                .is_ok_and(|h| h.run_id == run_id)
            {
                self.locks.remove(k).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
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
            for ek in self.events.scan_prefix(&prefix).keys() {
                self.events
                    .remove(ek.map_err(|e| self.err(e))?)
                    .map_err(|e| self.err(e))?;
            }
            self.runs.remove(&k).map_err(|e| self.err(e))?;
            n += 1;
        }
        self.flush()?;
        Ok(n)
    }
}

impl Schedules for Sled {
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        let tie = r.run_id.clone().unwrap_or_else(crate::executor::new_run_id);
        self.insert_json(&self.drills, drill_key(&r.drill, r.started_ms, &tie), r)?;
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
        // Compare-and-swap: threads of this process asking at once get it once. Each failed
        // swap means another claimant moved the slot on, so this ends within a few rounds.
        for _ in 0..64 {
            let current = self
                .drill_state
                .get(drill.as_bytes())
                .map_err(|e| self.err(e))?;
            let last = current
                .as_ref()
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes);
            if last.is_some_and(|last| last >= ms) {
                return Ok(false);
            }
            let swapped = self
                .drill_state
                .compare_and_swap(drill.as_bytes(), current, Some(&ms.to_be_bytes()[..]))
                .map_err(|e| self.err(e))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(true);
            }
        }
        Err(StoreError::Corrupt {
            dir: self.shown.clone(),
            key: drill.to_owned(),
            reason: "its schedule slot kept changing under this process".to_owned(),
        })
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
        match paused {
            Some(p) => self.insert_json(&self.drill_state, key.as_bytes(), p)?,
            None => {
                self.drill_state
                    .remove(key.as_bytes())
                    .map_err(|e| self.err(e))?;
            }
        }
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
        self.insert_json(&self.triggers, format!("state:{trigger}").as_bytes(), state)?;
        self.flush()
    }

    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        let mut key = b"alert:".to_vec();
        key.extend_from_slice(&record.at_ms.to_be_bytes());
        key.extend_from_slice(&id.to_be_bytes());
        self.insert_json(&self.triggers, key, record)
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
