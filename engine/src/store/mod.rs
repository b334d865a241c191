//! The run store: every run recorded in sled, as an append-only journal of events per run and
//! a summary record per run derived from it.
//!
//! Layout (all keys and values versioned, so the format can evolve):
//! - tree `runs`: run id (a ULID, so keys sort by start time) -> [`RunRecord`] as JSON;
//! - tree `events`: run id + big-endian sequence number -> [`JournalEntry`] as JSON;
//! - tree `locks`: lock key -> [`LockHolder`] as JSON.
//!
//! Durability: every event that is shown as a result (a step's end, a gate check, a retry, a
//! fleet target, an approval and its decision, a phase change, the run's end) is flushed
//! (fsync) before it is passed on to the terminal, so what a responder saw is on disk after a
//! `kill -9`. An action's start is flushed before the action is called (write-ahead: a later
//! process knows it may have acted), and so is every key-value write a plugin makes (its
//! revert needs it). Two events are not flushed on their own and may be lost by a kill
//! before the next flush: a check step's start (a resumed run runs the check again) and a
//! gate's bake notice. `tests/e2e/recovery.rs` holds the store to exactly this.
//! sled admits one process at a time; the process holding the store says who it is in
//! `owner.json` beside the database, so a second process can name it.

pub mod approvals;
pub mod audit;
pub mod drills;
pub mod recorder;
mod records;
pub mod remote;
pub mod stats;
pub mod tokens;
pub mod triggers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use recorder::Recorder;

use crate::executor::{Approval, Phase, RunOutcome, StepReport, TargetReport};
pub use records::*;

/// Bumped when the format of records or journal entries changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// A parameter's value as recorded: the text `--param` parses back to the same value, so a
/// resumed run gets exactly the parameters the run started with.
pub fn param_text(v: &crate::host::Value) -> String {
    match v {
        // Items the comma form would split or mistake for the list form: as a JSON list.
        crate::host::Value::TextList(l)
            if l.iter()
                .any(|i| i.contains(',') || i.trim() != i || i.is_empty())
                || l.first().is_some_and(|i| i.starts_with('[')) =>
        {
            serde_json::to_string(l).expect("strings serialize")
        }
        crate::host::Value::TextList(l) => l.join(","),
        other => other.to_string(),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `--data-dir`, else `MEDIC_DATA_DIR`, else the platform data directory.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("MEDIC_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("medic")))
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error(
        "the run store in {dir} is in use by process {pid} ({command}, since {since}); wait for it to finish, or pass --wait DURATION"
    )]
    Busy {
        dir: String,
        pid: u32,
        command: String,
        since: String,
        /// The holder is a read-only command (it lets go within moments).
        brief: bool,
    },
    #[error("the run store in {dir} is in use by another process")]
    BusyUnknown { dir: String },
    #[error(
        "the run store in {dir} was written by a newer medic (format {found}; this medic reads format {FORMAT_VERSION})"
    )]
    NewerFormat { dir: String, found: u32 },
    #[error("run store {dir}: {source}")]
    Sled { dir: String, source: sled::Error },
    /// Writes fail for want of space: what was recorded before stays.
    #[error(
        "the disk holding the run store {dir} is full; nothing recorded before is lost: free some space and run again"
    )]
    Full { dir: String },
    #[error("run store {dir}: corrupt entry {key}: {reason}")]
    Corrupt {
        dir: String,
        key: String,
        reason: String,
    },
    #[error("no run matches `{0}`")]
    NoSuchRun(String),
    /// An error reported by the process holding the store.
    #[error("{0}")]
    Remote(String),
    #[error("`{prefix}` matches several runs: {}", matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("run store {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    /// The data directory is not this user's alone.
    #[error("{0}")]
    Untrusted(String),
}

impl StoreError {
    fn of_sled(dir: String, e: sled::Error) -> StoreError {
        match &e {
            sled::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                StoreError::Full { dir }
            }
            _ => StoreError::Sled { dir, source: e },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub runbook: String,
    pub pid: u32,
    pub since_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    command: String,
    since_ms: u64,
    /// A read-only command: it lets go within moments, so others wait for it rather than
    /// fail.
    #[serde(default)]
    brief: bool,
}

/// How long a command waits, at most, for a read-only command that holds the store (they
/// hold it for milliseconds; a slow disk or a huge `runs export` takes longer).
pub const BRIEF_WAIT: Duration = Duration::from_secs(10);

impl StoreError {
    /// A refusal that will pass within moments: the holder is another process's read-only
    /// command, or has not said who it is yet (it is starting, or ending). Decided from the
    /// one reading of `owner.json` the refusal was made of: a second reading could find the
    /// file already gone as the holder ends, and mistake a reader for a run.
    pub fn is_brief(&self) -> bool {
        match self {
            StoreError::Busy { pid, brief, .. } => *brief && *pid != std::process::id(),
            StoreError::BusyUnknown { .. } => true,
            _ => false,
        }
    }
}

/// One plugin declaration's key-value entries.
pub type KvEntries = BTreeMap<String, Vec<u8>>;

struct KvJournalOf {
    store: Store,
    run_id: String,
}

impl crate::host::KvJournal for KvJournalOf {
    fn write(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        self.store
            .append(
                &self.run_id,
                JournalEvent::KvSet {
                    space: space.to_owned(),
                    key: key.to_owned(),
                    value: value.map(hex::encode),
                },
            )
            .and_then(|_| self.store.flush())
            .map_err(|e| e.to_string())
    }
}

/// A run's step reports as recorded, and the steps that started but never ended.
pub type RecordedSteps = (Vec<StepReport>, Vec<(Phase, String)>);

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListFilter {
    pub runbook: Option<String>,
    pub status: Option<RunStatus>,
    pub environment: Option<String>,
    pub trigger: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Only runs older than this run id (ids sort by start time): the cursor of the page
    /// after the one that ended with it.
    #[serde(default)]
    pub before: Option<String>,
}

impl ListFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        self.runbook.as_ref().is_none_or(|n| *n == r.runbook)
            && self.status.is_none_or(|s| s == r.status)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == r.environment)
            && self.trigger.as_ref().is_none_or(|t| t == r.trigger.kind())
            && self.since_ms.is_none_or(|s| r.started_ms >= s)
            && self.until_ms.is_none_or(|u| r.started_ms <= u)
    }
}

/// A handle on the store. Clones share it (the socket server reads through one while the run
/// writes through another); the owner file goes when the last one does.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    events: sled::Tree,
    locks: sled::Tree,
    /// Drill results: drill name, NUL, start time (big-endian ms), run id.
    drills: sled::Tree,
    /// Per drill: the last scheduled time handled (for the missed-schedule policy).
    drill_state: sled::Tree,
    /// Per trigger its state (`state:NAME`), and alerts as they arrived (`alert:` time, id).
    triggers: sled::Tree,
    /// Journal appends read the last sequence number and write the next: one at a time, as
    /// a run's kv writes come from plugin calls beside the recorder's events.
    append_lock: std::sync::Arc<std::sync::Mutex<()>>,
    _guard: std::sync::Arc<OwnerGuard>,
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
            let _ = std::fs::remove_file(self.dir.join(remote::SOCKET));
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
/// open tried again; the repair is reported on stderr. sled takes its file lock before it
/// reads snapshots, so a corruption error means no other process held the store; openers
/// that hit it repair one at a time (`dir/repair.lock`).
fn open_repairing(dir: &Path) -> sled::Result<sled::Db> {
    let open = || sled::Config::new().path(dir.join("db")).open();
    let first = match open() {
        Err(e @ sled::Error::Corruption { .. }) => e,
        other => return other,
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
        other => return other,
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
    eprintln!(
        "medic: repaired the run store in {}: an unfinished snapshot left by a crash or a full disk ({}) kept it from opening; set it aside in {} and opened the store from its log (a snapshot only summarizes the log: nothing recorded is lost)",
        dir.display(),
        moved.join(", "),
        aside.display()
    );
    Ok(db)
}

impl Store {
    pub(crate) fn sled_err(&self, e: sled::Error) -> StoreError {
        StoreError::of_sled(self.dir.display().to_string(), e)
    }

    /// Opens (creating if needed) the store in `dir`. `command` says what this process is
    /// doing, for the message another process gets while this one holds the store.
    pub fn open(dir: &Path, command: &str) -> Result<Store, StoreError> {
        Store::open_as(dir, command, false)
    }

    /// [`Store::open`] for a read-only command: others that find the store held by it wait
    /// for it (up to [`BRIEF_WAIT`]) instead of failing.
    pub fn open_brief(dir: &Path, command: &str) -> Result<Store, StoreError> {
        Store::open_as(dir, command, true)
    }

    fn open_as(dir: &Path, command: &str, brief: bool) -> Result<Store, StoreError> {
        let shown = dir.display().to_string();
        crate::private::private_dir(dir, "data directory").map_err(StoreError::Untrusted)?;
        let db = match open_repairing(dir) {
            Ok(db) => db,
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
                            brief: o.brief,
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
        let store = Store {
            runs: open("runs")?,
            events: open("events")?,
            locks: open("locks")?,
            drills: open("drills")?,
            drill_state: open("drill_state")?,
            triggers: open("triggers")?,
            append_lock: std::sync::Arc::default(),
            _guard: std::sync::Arc::new(OwnerGuard {
                dir: dir.to_owned(),
                db: db.clone(),
            }),
            db,
            dir: dir.to_owned(),
        };
        match store.db.get("format").map_err(|e| store.sled_err(e))? {
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
                    .map_err(|e| store.sled_err(e))?;
            }
        }
        // Informational only (the sled file lock is what excludes other processes), so a
        // failure to write it is not fatal.
        let owner = Owner {
            pid: std::process::id(),
            command: command.to_owned(),
            since_ms: now_ms(),
            brief,
        };
        let _ = crate::private::write_atomic(
            &dir.join("owner.json"),
            &serde_json::to_vec(&owner).unwrap_or_default(),
        );
        Ok(store)
    }

    /// Opens the store, retrying while another process holds it, for at most `wait`, and
    /// for at most [`BRIEF_WAIT`] while a read-only command holds it.
    pub fn open_waiting(
        dir: &Path,
        command: &str,
        wait: Option<Duration>,
    ) -> Result<Store, StoreError> {
        let start = std::time::Instant::now();
        let deadline = start + wait.unwrap_or_default();
        loop {
            match Store::open(dir, command) {
                Err(e @ (StoreError::Busy { .. } | StoreError::BusyUnknown { .. }))
                    if std::time::Instant::now() < deadline
                        || (start.elapsed() < BRIEF_WAIT && e.is_brief()) =>
                {
                    // Short: a read-only holder lets go within milliseconds.
                    std::thread::sleep(Duration::from_millis(15));
                }
                other => return other,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled_err(e))
    }

    pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            dir: self.dir.display().to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    pub fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(r).expect("records serialize");
        self.runs
            .insert(r.run_id.as_bytes(), bytes)
            .map(|_| ())
            .map_err(|e| self.sled_err(e))
    }

    pub fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self
            .runs
            .get(run_id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => self.decode(run_id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Finds a run by its id or a unique prefix of it.
    pub fn find(&self, prefix: &str) -> Result<RunRecord, StoreError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        let mut found = Vec::new();
        for kv in self.runs.scan_prefix(prefix.as_bytes()).take(6) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            found.push(self.decode::<RunRecord>(&k, &v)?);
        }
        match found.len() {
            0 => Err(StoreError::NoSuchRun(prefix)),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::Ambiguous {
                prefix,
                matches: found.into_iter().map(|r| r.run_id).collect(),
            }),
        }
    }

    fn event_key(run_id: &str, seq: u32) -> Vec<u8> {
        let mut k = run_id.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Appends an event to a run's journal; returns its sequence number.
    pub fn append(&self, run_id: &str, event: JournalEvent) -> Result<u32, StoreError> {
        let _one_at_a_time = self
            .append_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        let next = match self.events.scan_prefix(&prefix).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(|e| self.sled_err(e))?;
                let tail: [u8; 4] = k[k.len() - 4..].try_into().unwrap_or([0; 4]);
                u32::from_be_bytes(tail) + 1
            }
            None => 0,
        };
        let entry = JournalEntry {
            v: FORMAT_VERSION,
            at_ms: now_ms(),
            event,
        };
        let bytes = serde_json::to_vec(&entry).expect("journal entries serialize");
        self.events
            .insert(Self::event_key(run_id, next), bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(next)
    }

    pub fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.journal_from(run_id, 0)
    }

    /// A run's journal from its `from`th entry on (those before are not decoded): what a
    /// follower has not seen yet.
    pub fn journal_from(&self, run_id: &str, from: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(b'/');
        self.events
            .scan_prefix(&prefix)
            .skip(from)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.sled_err(e))?;
                self.decode(&k, &v)
            })
            .collect()
    }

    /// Newest first.
    pub fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let runs = match &filter.before {
            Some(before) => self.runs.range(..before.as_bytes()),
            None => self.runs.range::<&[u8], _>(..),
        };
        for kv in runs.rev() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
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

    /// Finds runs that were in progress when their process died (none can be running now:
    /// this process holds the store), marks them interrupted and releases their locks.
    pub fn recover(&self) -> Result<Vec<String>, StoreError> {
        let mut recovered = Vec::new();
        for kv in self.runs.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let mut r: RunRecord = self.decode(&k, &v)?;
            if r.status != RunStatus::Running {
                continue;
            }
            self.append(
                &r.run_id,
                JournalEvent::RunInterrupted {
                    found_by_pid: std::process::id(),
                },
            )?;
            r.status = RunStatus::Interrupted;
            self.put_record(&r)?;
            self.release_all_locks(&r.run_id)?;
            recovered.push(r.run_id);
        }
        // No other process can hold the store, so a lock not taken by this process belongs to
        // a dead one, including one killed after taking its lock but before recording its run.
        for kv in self.locks.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if self
                .decode::<LockHolder>(&k, &v)
                .is_ok_and(|h| h.pid != std::process::id())
            {
                self.locks.remove(k).map_err(|e| self.sled_err(e))?;
            }
        }
        self.flush()?;
        Ok(recovered)
    }

    /// Takes a lock for a run; on conflict returns who holds it.
    pub fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        let value = serde_json::to_vec(holder).expect("lock holders serialize");
        match self
            .locks
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(|e| self.sled_err(e))?
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
                        self.locks
                            .insert(
                                key.as_bytes(),
                                serde_json::to_vec(holder).expect("serialize"),
                            )
                            .map_err(|e| self.sled_err(e))?;
                        Ok(Ok(()))
                    }
                    Some(h) => Ok(Err(h)),
                    None => Ok(Ok(())),
                }
            }
        }
    }

    pub fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        for kv in self.locks.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if self
                .decode::<LockHolder>(&k, &v)
                .is_ok_and(|h| h.run_id == run_id)
            {
                self.locks.remove(k).map_err(|e| self.sled_err(e))?;
            }
        }
        Ok(())
    }

    /// Deletes runs that started before `before_ms` and ended; returns how many.
    pub fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.runs.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
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
                    .remove(ek.map_err(|e| self.sled_err(e))?)
                    .map_err(|e| self.sled_err(e))?;
            }
            self.runs.remove(&k).map_err(|e| self.sled_err(e))?;
            n += 1;
        }
        self.flush()?;
        Ok(n)
    }

    /// The targets of fleet steps that ended, as journaled one by one (the last per target
    /// wins): a resumed fleet step does not run again what already succeeded.
    pub fn finished_targets(
        &self,
        run_id: &str,
    ) -> Result<BTreeMap<String, Vec<TargetReport>>, StoreError> {
        let mut out: BTreeMap<String, Vec<TargetReport>> = BTreeMap::new();
        for e in self.journal(run_id)? {
            if let JournalEvent::TargetFinished { step, report } = e.event {
                let targets = out.entry(step).or_default();
                targets.retain(|t| t.target != report.target);
                targets.push(report);
            }
        }
        Ok(out)
    }

    /// The key-value spaces of a run as its plugins left them, per plugin declaration.
    pub fn kv_state(&self, run_id: &str) -> Result<BTreeMap<String, KvEntries>, StoreError> {
        let mut out: BTreeMap<String, KvEntries> = BTreeMap::new();
        for e in self.journal(run_id)? {
            if let JournalEvent::KvSet { space, key, value } = e.event {
                let entries = out.entry(space).or_default();
                match value.map(hex::decode) {
                    Some(Ok(bytes)) => {
                        entries.insert(key, bytes);
                    }
                    Some(Err(e)) => {
                        return Err(StoreError::Corrupt {
                            dir: self.dir.display().to_string(),
                            key: format!("{run_id} kv {key}"),
                            reason: e.to_string(),
                        });
                    }
                    None => {
                        entries.remove(&key);
                    }
                }
            }
        }
        Ok(out)
    }

    /// A journal for a run's kv writes, flushed at each write.
    pub fn kv_journal(&self, run_id: &str) -> std::sync::Arc<dyn crate::host::KvJournal> {
        std::sync::Arc::new(KvJournalOf {
            store: self.clone(),
            run_id: run_id.to_owned(),
        })
    }

    /// The step reports of a run as recorded, in order (the last report per step wins).
    pub fn step_reports(&self, run_id: &str) -> Result<RecordedSteps, StoreError> {
        Ok(steps_of(&self.journal(run_id)?))
    }
}

/// The step reports a journal holds, in order (the last report per step wins), and the steps
/// started without a report.
pub fn steps_of(journal: &[JournalEntry]) -> RecordedSteps {
    let mut reports: Vec<StepReport> = Vec::new();
    let mut started: Vec<(Phase, String)> = Vec::new();
    for e in journal {
        match &e.event {
            JournalEvent::StepStarted { phase, step, .. } => started.push((*phase, step.clone())),
            JournalEvent::StepFinished { report } => {
                started.retain(|(_, s)| *s != report.id);
                reports.retain(|r| r.id != report.id);
                reports.push(report.clone());
            }
            _ => {}
        }
    }
    (reports, started)
}
