//! The run store: every run recorded as an append-only journal of events per run and a
//! summary record per run derived from it, behind [`backend::Backend`]: sled in the data
//! directory by default ([`embedded`]), held by a store daemon for every process on the host
//! ([`daemon`], reached through [`local`]), or PostgreSQL shared by many hosts
//! ([`postgres`]).
//!
//! Durability: every event that is shown as a result (a step's end, a gate check, a retry, a
//! fleet target, an approval and its decision, a phase change, the run's end) is flushed
//! (fsync) before it is passed on to the terminal, so what a responder saw is on disk after a
//! `kill -9`. An action's start is flushed before the action is called (write-ahead: a later
//! process knows it may have acted), and so is every key-value write a plugin makes (its
//! revert needs it). Two events are not flushed on their own and may be lost by a kill
//! before the next flush: a check step's start (a resumed run runs the check again) and a
//! gate's bake notice. `tests/e2e/recovery.rs` holds the store to exactly this. A flush
//! may cover several events (a successful step's end is written with the next event, and
//! targets of a fleet that finish together with the last of them: see [`recorder`]); none
//! is shown before it.
//! On the embedded store a flush is one `fdatasync` of its redo log ([`wal`]); on
//! PostgreSQL every write is committed, and so durable, before it returns.

pub mod approvals;
pub mod audit;
pub mod backend;
pub mod daemon;
pub mod drills;
mod embedded;
pub mod local;
pub mod near_disk;
pub mod postgres;
pub mod process;
pub mod recorder;
mod records;
pub mod remote;
pub mod stall;
pub mod stats;
pub mod tokens;
pub mod triggers;
mod wal;

use std::collections::{BTreeMap, HashMap};
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
        .filter(|v| !v.is_empty())
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
    },
    /// The store daemon holding the embedded store cannot be started or stopped answering.
    #[error(
        "the run store daemon for {dir}: {reason}; what it recorded before is kept: run the command again (the daemon's log is {dir}/store-daemon.log)"
    )]
    Daemon { dir: String, reason: String },
    #[error("the run store in {dir} is in use by another process")]
    BusyUnknown { dir: String },
    #[error(
        "the run store in {dir} was written by a newer medic (format {found}; this medic reads format {reads})"
    )]
    NewerFormat { dir: String, found: u32, reads: u32 },
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
    /// The PostgreSQL store answered with an error.
    #[error("run store {place}: {reason}")]
    Database { place: String, reason: String },
    /// The PostgreSQL store cannot be reached (down, refused, or the connection broke).
    #[error(
        "cannot reach the run store at {place}: {reason}; what it recorded before is kept there: check the database and try again"
    )]
    Unreachable { place: String, reason: String },
    #[error("run store {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    /// The embedded store's redo log cannot be written (see `store/wal.rs`).
    #[error("run store {dir}: writing its redo log: {source}")]
    Log { dir: String, source: std::io::Error },
    /// The data directory is not this user's alone.
    #[error("{0}")]
    Untrusted(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub runbook: String,
    pub pid: u32,
    /// When process `pid` started (see [`RunRecord::pid_start`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub since_ms: u64,
}

impl LockHolder {
    /// This process taking a lock for a run, now.
    pub fn this(run_id: &str, runbook: &str) -> LockHolder {
        let me = process::Process::this();
        LockHolder {
            run_id: run_id.to_owned(),
            runbook: runbook.to_owned(),
            pid: me.pid,
            pid_start: me.start,
            since_ms: now_ms(),
        }
    }

    /// The process holding the lock.
    pub fn process(&self) -> process::Process {
        process::Process {
            pid: self.pid,
            start: self.pid_start,
        }
    }
}

impl StoreError {
    /// An I/O error of the embedded store: sled and its redo log keep failing after one
    /// (they remember it), so whoever holds the store lets go and the next opens it anew.
    pub fn is_sled_io(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. }
                | StoreError::Log { .. }
                | StoreError::Sled {
                    source: sled::Error::Io(_),
                    ..
                }
        )
    }
}

/// What the embedded store's redo log would replay from a file holding `bytes` (changes per
/// frame, None for a frame that would be refused), and `bytes` read as one frame's body.
#[doc(hidden)]
pub fn inspect_redo_log(bytes: &[u8]) -> (Vec<Option<usize>>, Option<usize>) {
    wal::inspect(bytes)
}

/// How long a command waits, at most, by default, while a process other than the store
/// daemon holds the embedded store (a program using this library).
pub const BRIEF_WAIT: Duration = Duration::from_secs(10);

/// One plugin declaration's key-value entries.
pub type KvEntries = BTreeMap<String, Vec<u8>>;

struct KvJournalOf {
    store: Store,
    run_id: String,
}

impl crate::host::KvJournal for KvJournalOf {
    fn write(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        self.store
            .backend
            .append(
                &self.run_id,
                &JournalEntry::now(JournalEvent::KvSet {
                    space: space.to_owned(),
                    key: key.to_owned(),
                    value: value.map(hex::encode),
                }),
                true,
            )
            .map(|_| ())
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
/// writes through another).
#[derive(Clone)]
pub struct Store {
    /// The local data directory (the sockets, the plugin cache's neighbours; with the
    /// embedded store also approvals, tokens and the audit log).
    dir: PathBuf,
    backend: std::sync::Arc<dyn backend::Backend>,
    /// A shared store's documents (approvals, tokens, audit).
    documents: Option<std::sync::Arc<dyn backend::Documents>>,
}

/// Where approvals, API tokens and the audit log live: files in the data directory beside
/// the embedded store (every process on the host reads them there), or a shared store's
/// documents (every host does).
#[derive(Clone)]
pub enum Place {
    /// The data directory.
    Files(PathBuf),
    Shared(std::sync::Arc<dyn backend::Documents>),
}

/// Decodes a stored JSON value, naming where it was found when it is not what it should be.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    location: &str,
    key: &str,
    value: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        dir: location.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Opens (creating if needed) the embedded store in `dir` for a program using this
    /// library: through the store daemon when one runs, else by holding it itself, waiting
    /// up to [`BRIEF_WAIT`] while another process holds it. `command` says what this process
    /// is doing, for the message another process gets meanwhile.
    pub fn open(dir: &Path, command: &str) -> Result<Store, StoreError> {
        Store::open_waiting(dir, command, None)
    }

    /// [`Store::open`], waiting up to `wait` instead.
    pub fn open_waiting(
        dir: &Path,
        command: &str,
        wait: Option<Duration>,
    ) -> Result<Store, StoreError> {
        let wait = wait.unwrap_or(BRIEF_WAIT);
        let begun = std::time::Instant::now();
        loop {
            if let Some(local) = local::Local::connect(dir, None, wait)? {
                return Ok(Store::of(dir, local));
            }
            match embedded::Sled::open(dir, command) {
                Ok(sled) => {
                    if let Some(notice) = sled.take_repair_notice() {
                        eprintln!("medic: {notice}");
                    }
                    return Ok(Store::of(dir, sled));
                }
                Err(StoreError::Busy { .. } | StoreError::BusyUnknown { .. })
                    if begun.elapsed() < wait =>
                {
                    std::thread::sleep(Duration::from_millis(15));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the embedded store in `dir` through its store daemon, started with `start`
    /// when none runs (the `medic` binary passes [`daemon::start`]): any number of
    /// processes at once. Waits up to `wait` (default [`BRIEF_WAIT`]) while something other
    /// than a daemon holds the store.
    pub fn open_shared_locally(
        dir: &Path,
        start: std::sync::Arc<local::Starter>,
        wait: Option<Duration>,
    ) -> Result<Store, StoreError> {
        crate::private::private_dir(dir, "data directory").map_err(StoreError::Untrusted)?;
        match local::Local::connect(dir, Some(start), wait.unwrap_or(BRIEF_WAIT))? {
            Some(local) => Ok(Store::of(dir, local)),
            None => Err(StoreError::Daemon {
                dir: dir.display().to_string(),
                reason: "no store daemon answers".to_owned(),
            }),
        }
    }

    fn of(dir: &Path, backend: impl backend::Backend + 'static) -> Store {
        Store {
            dir: dir.to_owned(),
            backend: std::sync::Arc::new(backend),
            documents: None,
        }
    }

    /// Where this store's approvals, tokens and audit log live.
    pub fn place(&self) -> Place {
        match &self.documents {
            Some(docs) => Place::Shared(docs.clone()),
            None => Place::Files(self.dir.clone()),
        }
    }

    /// Connects to a PostgreSQL store (`postgres://...`), migrating its schema if needed.
    /// `dir` is the local data directory, for what stays local (approvals, tokens, audit).
    pub fn connect(url: &str, dir: &Path, command: &str) -> Result<Store, StoreError> {
        crate::private::private_dir(dir, "data directory").map_err(StoreError::Untrusted)?;
        let pg = std::sync::Arc::new(postgres::Postgres::connect(url, command)?);
        Ok(Store {
            dir: dir.to_owned(),
            backend: pg.clone(),
            documents: Some(pg),
        })
    }

    /// Whether the runs live in a database shared with other processes (which then need no
    /// socket to read them, and are never refused because another process holds them).
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Where the runs live, for messages: the data directory or the database (no password).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }

    pub fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.backend.put_record(r)
    }

    pub fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.backend.record(run_id)
    }

    /// Finds a run by its id or a unique prefix of it.
    pub fn find(&self, prefix: &str) -> Result<RunRecord, StoreError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        let mut found = self.backend.by_prefix(&prefix, 6)?;
        match found.len() {
            0 => Err(StoreError::NoSuchRun(prefix)),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::Ambiguous {
                prefix,
                matches: found.into_iter().map(|r| r.run_id).collect(),
            }),
        }
    }

    /// Appends an event to a run's journal; returns its sequence number. `durable`: flushed
    /// with everything before it when this returns (else at the next flush).
    pub fn append(
        &self,
        run_id: &str,
        event: JournalEvent,
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.backend
            .append(run_id, &JournalEntry::now(event), durable)
    }

    /// Appends entries that came together, in order, with the record as they leave the run
    /// (if given); see [`backend::Runs::append_many`].
    pub fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.backend.append_many(run_id, record, entries, durable)
    }

    /// A durable [`Store::append_many`], sent and confirmed later where the store can make
    /// it durable meanwhile; see [`backend::Runs::append_sent`].
    pub fn append_sent(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
    ) -> Result<Option<Box<dyn crate::ahead::Unconfirmed>>, StoreError> {
        self.backend.append_sent(run_id, record, entries)
    }

    /// See [`backend::Runs::sends_in_order`].
    pub fn sends_in_order(&self) -> bool {
        self.backend.sends_in_order()
    }

    /// Appends an event and writes the record as it leaves the run, both or neither;
    /// `durable`: flushed with everything before it when this returns.
    pub fn append_with_record(
        &self,
        record: &RunRecord,
        event: JournalEvent,
        durable: bool,
    ) -> Result<u32, StoreError> {
        self.backend
            .append_with_record(record, &JournalEntry::now(event), durable)
    }

    pub fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.journal_from(run_id, 0, usize::MAX)
    }

    /// A run's journal from its `from`th entry on, at most `limit` entries (those before are
    /// not read, beyond the ones appended in the same call as the `from`th): what a follower
    /// has not seen yet, a page at a time.
    pub fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.backend.journal_from(run_id, from, limit)
    }

    /// Newest first.
    pub fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.backend.list(filter, limit)
    }

    /// Finds runs that were in progress when their process died, marks them interrupted and
    /// releases their locks.
    pub fn recover(&self) -> Result<Vec<String>, StoreError> {
        self.backend.recover()
    }

    /// Takes a lock for a run; on conflict returns who holds it.
    pub fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        self.backend.acquire_lock(key, holder)
    }

    pub fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        self.backend.release_all_locks(run_id)
    }

    /// Deletes runs that started before `before_ms` and ended; returns how many.
    pub fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.backend.prune(before_ms)
    }

    /// The targets of fleet steps that ended, as journaled one by one (the last per target
    /// wins): a resumed fleet step does not run again what already succeeded.
    pub fn finished_targets(
        &self,
        run_id: &str,
    ) -> Result<BTreeMap<String, Vec<TargetReport>>, StoreError> {
        let mut out: BTreeMap<String, EndedTargets> = BTreeMap::new();
        for e in self.journal(run_id)? {
            if let JournalEvent::TargetFinished { step, report } = e.event {
                out.entry(step)
                    .or_default()
                    .add(std::sync::Arc::unwrap_or_clone(report));
            }
        }
        Ok(out.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
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
                            dir: self.location(),
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

/// A fleet step's targets as journaled one by one: the last report per target wins (a
/// resumed step tells again the targets it keeps), in the order they last ended.
#[derive(Default)]
struct EndedTargets {
    reports: Vec<Option<TargetReport>>,
    at: HashMap<String, usize>,
}

impl EndedTargets {
    fn add(&mut self, report: TargetReport) {
        if let Some(i) = self.at.insert(report.target.clone(), self.reports.len()) {
            self.reports[i] = None;
        }
        self.reports.push(Some(report));
    }

    fn into_vec(self) -> Vec<TargetReport> {
        self.reports.into_iter().flatten().collect()
    }
}

/// The step reports a journal holds, in order (the last report per step wins), and the steps
/// started without a report. A fleet step's report gets its targets back from their own
/// entries (its end does not repeat them).
pub fn steps_of(journal: &[JournalEntry]) -> RecordedSteps {
    let mut reports: Vec<StepReport> = Vec::new();
    let mut started: Vec<(Phase, String)> = Vec::new();
    let mut targets: HashMap<&str, EndedTargets> = HashMap::new();
    for e in journal {
        match &e.event {
            JournalEvent::StepStarted { phase, step, .. } => started.push((*phase, step.clone())),
            JournalEvent::TargetFinished { step, report } => {
                targets
                    .entry(step)
                    .or_default()
                    .add(TargetReport::clone(report));
            }
            JournalEvent::StepFinished { report } => {
                started.retain(|(_, s)| *s != report.id);
                reports.retain(|r| r.id != report.id);
                let mut report = report.clone();
                if let Some(ended) = targets.remove(report.id.as_str())
                    && report.targets.is_empty()
                {
                    report.targets = ended.into_vec();
                }
                reports.push(report);
            }
            _ => {}
        }
    }
    (reports, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{FleetTally, StepStatus};

    fn target(name: &str, status: StepStatus) -> TargetReport {
        TargetReport {
            target: name.to_owned(),
            summary: format!("{name} summary"),
            status,
            started_ms: 0,
            duration: std::time::Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
        }
    }

    fn step(id: &str, targets: Vec<TargetReport>, fleet: Option<FleetTally>) -> StepReport {
        StepReport {
            id: id.to_owned(),
            phase: Phase::Steps,
            plugin: "p".into(),
            status: StepStatus::Succeeded,
            summary: String::new(),
            duration: std::time::Duration::ZERO,
            params: Vec::new(),
            attempts: Vec::new(),
            targets,
            fleet,
        }
    }

    fn ended(step: &str, t: TargetReport) -> JournalEntry {
        JournalEntry::now(JournalEvent::TargetFinished {
            step: step.to_owned(),
            report: t.into(),
        })
    }

    #[test]
    fn a_fleet_steps_report_gets_its_targets_back_from_their_own_entries() {
        let failed = StepStatus::Failed;
        let ok = StepStatus::Succeeded;
        let tally = Some(FleetTally {
            targets: 3,
            ran: 3,
            succeeded: 2,
            failed: 1,
        });
        let mut again = target("a", ok.clone());
        again.summary = "a summary (before the resume)".into();
        let journal = vec![
            JournalEntry::now(JournalEvent::StepStarted {
                phase: Phase::Steps,
                step: "deploy".into(),
                plugin: "p".into(),
            }),
            ended("deploy", target("a", ok.clone())),
            ended("deploy", target("b", failed.clone())),
            // A resumed step tells again the targets it keeps: the last report wins.
            ended("deploy", again),
            ended("deploy", target("c", ok.clone())),
            JournalEntry::now(JournalEvent::StepFinished {
                report: step("deploy", Vec::new(), tally),
            }),
            // Its undoing's targets are its own.
            ended("deploy.rollback", target("c", ok.clone())),
            JournalEntry::now(JournalEvent::StepFinished {
                report: step("deploy.rollback", Vec::new(), tally),
            }),
            // An older medic's journal repeats the targets in the step's end: kept as is.
            ended("old", target("x", ok.clone())),
            JournalEntry::now(JournalEvent::StepFinished {
                report: step("old", vec![target("y", ok.clone())], None),
            }),
        ];
        let (reports, started) = steps_of(&journal);
        assert!(started.is_empty(), "{started:?}");
        let names = |id: &str| -> Vec<(String, String)> {
            reports
                .iter()
                .find(|r| r.id == id)
                .unwrap()
                .targets
                .iter()
                .map(|t| (t.target.clone(), t.summary.clone()))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            names("deploy"),
            [
                pair("b", "b summary"),
                pair("a", "a summary (before the resume)"),
                pair("c", "c summary"),
            ]
        );
        assert_eq!(names("deploy.rollback"), [pair("c", "c summary")]);
        assert_eq!(names("old"), [pair("y", "y summary")]);
        // Its plugin was called: a rollback undoes it.
        assert!(reports[0].ran());
        assert!(!step("none", Vec::new(), Some(FleetTally::default())).ran());
    }
}
