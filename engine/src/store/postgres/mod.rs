//! The shared backend: PostgreSQL, for any number of processes on any number of hosts.
//!
//! - Schema: versioned migrations in `engine/migrations/postgres/`, applied at connect in one
//!   transaction under an advisory lock, so processes starting together migrate once.
//! - Durability: every write is one committed statement (or transaction) before it returns;
//!   `flush` has nothing left to do.
//! - Liveness: each process has a row in `medic_owners` and renews its `heartbeat_ms` every
//!   [`HEARTBEAT`]. A run still `running` is interrupted by whichever process looks next
//!   (`recover`, run by every command that opens the store, and by `medic serve` every
//!   [`HEARTBEAT`]) once its process's row is gone, its heartbeat is older than [`LEASE`],
//!   or, on the same host, its process no longer exists (found at once).
//! - Connections: a few per process, each on its own thread ([`pool`]); one that broke is
//!   made again at the next call, so a database that comes back is used again.

mod documents;
mod hold;
mod pool;
mod schedules;

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use pool::{Failure, Job, Pool, message};

use super::backend::Runs;
use super::{
    JournalEntry, JournalEvent, ListFilter, LockHolder, RunRecord, RunStatus, StoreError, decode,
    now_ms,
};

/// How often a process says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long after its last heartbeat a process's runs are taken for interrupted.
pub const LEASE: Duration = Duration::from_secs(20);
/// Connections per process by default: runs, readers and the heartbeat share them.
const CONNECTIONS: usize = 4;
/// The most `MEDIC_PG_CONNECTIONS` may ask for.
const MAX_CONNECTIONS: usize = 256;

/// Connections per process: `MEDIC_PG_CONNECTIONS` (a `medic serve` with hundreds of runs
/// in flight wants more than a command does), else [`CONNECTIONS`].
fn connections() -> Result<usize, String> {
    match std::env::var("MEDIC_PG_CONNECTIONS") {
        Err(_) => Ok(CONNECTIONS),
        Ok(v) if v.trim().is_empty() => Ok(CONNECTIONS),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
            _ => Err(format!(
                "MEDIC_PG_CONNECTIONS={v}: give a number of connections from 1 to {MAX_CONNECTIONS}"
            )),
        },
    }
}
/// Locks for journal appends, shared by runs whose ids hash alike.
const APPEND_STRIPES: usize = 64;

const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "shared documents: approvals, tokens, audit",
        include_str!("../../../migrations/postgres/0002_documents.sql"),
    ),
];
/// Serializes migrations of one database (an arbitrary constant: "medic" in ASCII).
const MIGRATION_LOCK: i64 = 0x006d_6564_6963;

pub(super) struct Postgres {
    place: String,
    owner_id: String,
    host: String,
    pool: Pool,
    /// Locks held across calls (a trigger's decision), on a connection of their own.
    holder: hold::Holder,
    /// A run's journal appends one at a time (its kv writes come from plugin calls beside
    /// the recorder's events), each run on one of these by its id, so that runs do not wait
    /// for each other; other processes never write the same run.
    append_locks: [Mutex<()>; APPEND_STRIPES],
    stop_heartbeat: Mutex<Option<mpsc::Sender<()>>>,
}

/// The URL as it may be shown: without its password.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => "the PostgreSQL store".to_owned(),
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Postgres {
    pub(super) fn connect(url: &str, command: &str) -> Result<Postgres, StoreError> {
        let place = shown(url);
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::Database {
            place: place.clone(),
            reason: format!("not a PostgreSQL connection URL: {e}"),
        })?;
        // The password stays out of the URL (and so out of `ps` and shell history) when it
        // comes from the environment, as libpq's tools take it.
        if config.get_password().is_none()
            && let Some(p) = std::env::var_os("PGPASSWORD")
        {
            config.password(p.as_encoded_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("medic");
        config.keepalives_idle(Duration::from_secs(30));
        let config = pool::Connector::new(config).map_err(|reason| StoreError::Database {
            place: place.clone(),
            reason,
        })?;
        let size = connections().map_err(|reason| StoreError::Database {
            place: place.clone(),
            reason,
        })?;
        let pool = Pool::start(&config, size, &place)?;
        let store = Postgres {
            holder: hold::Holder::new(&config, &place),
            place,
            owner_id: crate::executor::new_run_id(),
            host: super::process::hostname(),
            pool,
            append_locks: std::array::from_fn(|_| Mutex::new(())),
            stop_heartbeat: Mutex::new(None),
        };
        store.call(migrate)?;
        let (owner, host, pid, command) = (
            store.owner_id.clone(),
            store.host.clone(),
            std::process::id() as i32,
            command.to_owned(),
        );
        store.call(move |c| {
            c.execute(
                "INSERT INTO medic_owners (owner_id, host, pid, command, started_ms, heartbeat_ms)
                 VALUES ($1, $2, $3, $4, $5, $5)",
                &[&owner, &host, &pid, &command, &ms(now_ms())],
            )?;
            Ok(())
        })?;
        store.start_heartbeat();
        Ok(store)
    }

    /// Every append takes it, first dropping the run's last call's store (`crate::later`):
    /// it would otherwise hold its memory through the database's round trip.
    fn append_lock(&self, run_id: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        crate::later::drop_now();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        run_id.hash(&mut h);
        self.append_locks[(h.finish() % APPEND_STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.pool.call(f)
    }

    /// Renews this process's row every [`HEARTBEAT`] until the store is dropped. A row found
    /// gone (this process was taken for dead, e.g. after a long stall) is made again and
    /// reported: runs it had were interrupted by another process meanwhile.
    fn start_heartbeat(&self) {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let jobs = self.pool.sender();
        let (owner, host, place) = (self.owner_id.clone(), self.host.clone(), self.place.clone());
        let spawned = std::thread::Builder::new()
            .name("medic-pg-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(HEARTBEAT) {
                    let (owner, host, place) = (owner.clone(), host.clone(), place.clone());
                    let job: Job = Box::new(move |client| {
                        let Ok(c) = client else { return };
                        let now = ms(now_ms());
                        match c.execute(
                            "UPDATE medic_owners SET heartbeat_ms = $2 WHERE owner_id = $1",
                            &[&owner, &now],
                        ) {
                            Ok(0) => {
                                tracing::warn!(
                                    "{place}: this process was taken for dead (no heartbeat for {}s); its runs were interrupted",
                                    LEASE.as_secs()
                                );
                                let _ = c.execute(
                                    "INSERT INTO medic_owners (owner_id, host, pid, command, started_ms, heartbeat_ms)
                                     VALUES ($1, $2, $3, 'medic', $4, $4) ON CONFLICT DO NOTHING",
                                    &[&owner, &host, &(std::process::id() as i32), &now],
                                );
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!("{place}: heartbeat: {}", message(&e)),
                        }
                    });
                    if jobs.send(job).is_err() {
                        return;
                    }
                }
            });
        if spawned.is_ok() {
            *self
                .stop_heartbeat
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop_tx);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_heartbeat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Gone cleanly: nobody needs to wait out the lease (its runs ended or were
        // interrupted by this process itself).
        let owner = self.owner_id.clone();
        let _ = self.call(move |c| {
            c.execute("DELETE FROM medic_owners WHERE owner_id = $1", &[&owner])?;
            Ok(())
        });
    }
}

fn migrate(c: &mut postgres::Client) -> Result<(), Failure> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS medic_schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_ms bigint NOT NULL
         )",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM medic_schema_migrations",
            &[],
        )?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > latest {
        return Err(Failure::Store(StoreError::NewerFormat {
            dir: "the PostgreSQL store".to_owned(),
            found: u32::try_from(applied).unwrap_or(u32::MAX),
            reads: u32::try_from(latest).unwrap_or(u32::MAX),
        }));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO medic_schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
            &[version, name, &ms(now_ms())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// An owner's host, pid and last heartbeat.
type OwnerRow = (String, i32, i64);

/// The owner columns from `at` on of a row LEFT JOINed with `medic_owners`.
fn owner_row(r: &postgres::Row, at: usize) -> Option<OwnerRow> {
    let host: Option<String> = r.get(at);
    Some((host?, r.get(at + 1), r.get(at + 2)))
}

/// Whether the process `owner_id` is gone: its row removed, its heartbeat older than
/// [`LEASE`], or (on this host) its pid no longer a process.
fn owner_gone(owner_id: Option<&str>, row: Option<OwnerRow>, me: &str, host: &str) -> bool {
    let Some(owner_id) = owner_id else {
        return true;
    };
    if owner_id == me {
        return false;
    }
    match row {
        None => true,
        Some((h, pid, beat)) => {
            beat < ms(now_ms().saturating_sub(LEASE.as_millis() as u64))
                || (h == host
                    && !crate::store::process::Process {
                        pid: pid as u32,
                        start: None,
                    }
                    .alive())
        }
    }
}

fn rows_to<T: for<'de> serde::Deserialize<'de>>(
    place: &str,
    rows: &[postgres::Row],
    what: &str,
) -> Result<Vec<T>, Failure> {
    rows.iter()
        .map(|row| {
            let text: &str = row.get(0);
            decode(place, what, text.as_bytes()).map_err(Failure::Store)
        })
        .collect()
}

/// Appends inside `c` (a connection or a transaction); the sequence is the run's next.
fn insert_event(
    c: &mut impl postgres::GenericClient,
    run_id: &str,
    entry: &JournalEntry,
) -> Result<u32, postgres::Error> {
    let text = serde_json::to_string(entry).expect("journal entries serialize");
    let row = c.query_one(
        "INSERT INTO medic_events (run_id, seq, entry)
         SELECT $1, COALESCE(MAX(seq) + 1, 0), $2 FROM medic_events WHERE run_id = $1
         RETURNING seq",
        &[&run_id, &text],
    )?;
    Ok(row.get::<_, i32>(0) as u32)
}

/// A run record as its row: the JSON, and the columns queries filter on.
struct RecordRow {
    run_id: String,
    started_ms: i64,
    status: &'static str,
    runbook: String,
    environment: String,
    trigger_kind: &'static str,
    /// The process running it, while it runs.
    owner_id: Option<String>,
    record: String,
    /// The process writing it.
    writer: String,
}

impl RecordRow {
    fn of(r: &RunRecord, me: &str) -> RecordRow {
        RecordRow {
            run_id: r.run_id.clone(),
            started_ms: ms(r.started_ms),
            status: r.status.name(),
            runbook: r.runbook.clone(),
            environment: r.environment.clone(),
            trigger_kind: r.trigger.kind(),
            owner_id: (r.status == RunStatus::Running).then(|| me.to_owned()),
            record: serde_json::to_string(r).expect("records serialize"),
            writer: me.to_owned(),
        }
    }

    /// The error for a write refused because another process runs the run now.
    fn taken_over(&self) -> Failure {
        Failure::Refused(format!(
            "run {} is run by another process now (it was found interrupted while this one did not renew its lease, and picked up); this process stops changing it",
            self.run_id
        ))
    }

    fn upsert(&self, c: &mut impl postgres::GenericClient) -> Result<(), Failure> {
        let written = c.execute(
            &format!("INSERT INTO medic_runs {UPSERT_RUN}"),
            &self.params(),
        )?;
        if written == 0 {
            return Err(self.taken_over());
        }
        Ok(())
    }

    /// Writes the record and appends `entry` in one statement: atomic, one round trip and
    /// one commit (a transaction of two statements took four round trips). The entry is
    /// appended only if the record was written: both are refused together (see
    /// [`UPSERT_RUN`]).
    fn upsert_with_event(
        &self,
        c: &mut impl postgres::GenericClient,
        entry: &JournalEntry,
    ) -> Result<u32, Failure> {
        let text = serde_json::to_string(entry).expect("journal entries serialize");
        let mut params = self.params();
        params.push(&text);
        let row = c.query_opt(
            &format!(
                "WITH run AS (
                     INSERT INTO medic_runs {UPSERT_RUN} RETURNING run_id
                 ), event AS (
                     INSERT INTO medic_events (run_id, seq, entry)
                     SELECT run_id,
                            COALESCE((SELECT MAX(seq) + 1 FROM medic_events WHERE run_id = $1), 0),
                            $10
                     FROM run
                     RETURNING seq
                 )
                 SELECT seq FROM event"
            ),
            &params,
        )?;
        match row {
            Some(row) => Ok(row.get::<_, i32>(0) as u32),
            None => Err(self.taken_over()),
        }
    }

    fn params(&self) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
        vec![
            &self.run_id,
            &self.started_ms,
            &self.status,
            &self.runbook,
            &self.environment,
            &self.trigger_kind,
            &self.owner_id,
            &self.record,
            &self.writer,
        ]
    }
}

/// The columns and values ($1..$8, from [`RecordRow::params`]) of a run's row, replacing
/// what was there, unless another process runs the run now ($9 is the writer): a process
/// that stalled past its lease, whose run was found interrupted and picked up by another,
/// must not write over it when it wakes (fencing). Its run being interrupted but not yet
/// picked up, it takes it back.
const UPSERT_RUN: &str =
    "(run_id, started_ms, status, runbook, environment, trigger_kind, owner_id, record)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (run_id) DO UPDATE SET
         started_ms = EXCLUDED.started_ms, status = EXCLUDED.status,
         runbook = EXCLUDED.runbook, environment = EXCLUDED.environment,
         trigger_kind = EXCLUDED.trigger_kind, owner_id = EXCLUDED.owner_id,
         record = EXCLUDED.record
     WHERE NOT (medic_runs.status = 'running' AND medic_runs.owner_id IS DISTINCT FROM $9)";

/// A count as a SQL LIMIT (`usize::MAX` means no limit).
fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Runs for Postgres {
    fn location(&self) -> String {
        self.place.clone()
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        let row = RecordRow::of(r, &self.owner_id);
        self.call(move |c| row.upsert(c))
    }

    /// Committed, and so durable, whatever `_durable` says.
    fn append_with_record(
        &self,
        r: &RunRecord,
        entry: &JournalEntry,
        _durable: bool,
    ) -> Result<u32, StoreError> {
        let _one_at_a_time = self.append_lock(&r.run_id);
        let (row, entry) = (RecordRow::of(r, &self.owner_id), entry.clone());
        self.call(move |c| row.upsert_with_event(c, &entry))
    }

    fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let (id, place) = (run_id.to_owned(), self.place.clone());
        self.call(move |c| {
            let rows = c.query("SELECT record FROM medic_runs WHERE run_id = $1", &[&id])?;
            Ok(rows_to(&place, &rows, &id)?.pop())
        })
    }

    fn by_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RunRecord>, StoreError> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let (place, max) = (self.place.clone(), sql_limit(max));
        self.call(move |c| {
            let rows = c.query(
                "SELECT record FROM medic_runs WHERE run_id LIKE $1 ORDER BY run_id LIMIT $2",
                &[&pattern, &max],
            )?;
            rows_to(&place, &rows, "runs by prefix")
        })
    }

    fn append(
        &self,
        run_id: &str,
        entry: &JournalEntry,
        _durable: bool,
    ) -> Result<u32, StoreError> {
        let _one_at_a_time = self.append_lock(run_id);
        let (id, entry) = (run_id.to_owned(), entry.clone());
        self.call(move |c| insert_event(c, &id, &entry).map_err(Into::into))
    }

    /// One transaction, under the run's append lock: the entries are consecutive in the
    /// journal and committed together.
    fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        _durable: bool,
    ) -> Result<u32, StoreError> {
        let Some((last, rest)) = entries.split_last() else {
            return Err(super::backend::nothing_to_append(&self.place, run_id));
        };
        let _one_at_a_time = self.append_lock(run_id);
        let (id, rest, last) = (run_id.to_owned(), rest.to_vec(), last.clone());
        let row = record.map(|r| RecordRow::of(r, &self.owner_id));
        self.call(move |c| {
            let mut tx = c.transaction()?;
            for e in &rest {
                insert_event(&mut tx, &id, e)?;
            }
            let seq = match row {
                Some(row) => row.upsert_with_event(&mut tx, &last)?,
                None => insert_event(&mut tx, &id, &last)?,
            };
            tx.commit()?;
            Ok(seq)
        })
    }

    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        // Past the largest sequence number there is nothing (`as` would wrap it negative:
        // the whole journal).
        let Ok(from) = i32::try_from(from) else {
            return Ok(Vec::new());
        };
        let (id, place, limit) = (run_id.to_owned(), self.place.clone(), sql_limit(limit));
        self.call(move |c| {
            let rows = c.query(
                "SELECT entry FROM medic_events WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&id, &from, &limit],
            )?;
            rows_to(&place, &rows, &format!("{id} journal"))
        })
    }

    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let (f, place, limit) = (filter.clone(), self.place.clone(), sql_limit(limit));
        self.call(move |c| {
            let status = f.status.map(RunStatus::name);
            let (since, until) = (f.since_ms.map(ms), f.until_ms.map(ms));
            let rows = c.query(
                "SELECT record FROM medic_runs
                 WHERE ($1::text IS NULL OR runbook = $1)
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::text IS NULL OR environment = $3)
                   AND ($4::text IS NULL OR trigger_kind = $4)
                   AND ($5::bigint IS NULL OR started_ms >= $5)
                   AND ($6::bigint IS NULL OR started_ms <= $6)
                   AND ($7::text IS NULL OR run_id < $7)
                 ORDER BY run_id DESC LIMIT $8",
                &[
                    &f.runbook,
                    &status,
                    &f.environment,
                    &f.trigger,
                    &since,
                    &until,
                    &f.before,
                    &limit,
                ],
            )?;
            rows_to(&place, &rows, "runs")
        })
    }

    /// Other processes may be running runs right now: only those whose process is gone are
    /// interrupted, each by exactly one process (the status changes only if it is still
    /// `running` under the same owner), with its journal entry and lock release in the same
    /// transaction.
    fn recover(&self) -> Result<Vec<String>, StoreError> {
        let (me, host, place) = (self.owner_id.clone(), self.host.clone(), self.place.clone());
        self.call(move |c| {
            // Each running run with its owner's row, in one query: every command recovers,
            // and a busy database has many runs in flight.
            let running: Vec<(String, Option<String>, String, Option<OwnerRow>)> = c
                .query(
                    "SELECT r.run_id, r.owner_id, r.record, o.host, o.pid, o.heartbeat_ms
                     FROM medic_runs r LEFT JOIN medic_owners o ON o.owner_id = r.owner_id
                     WHERE r.status = 'running'",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), owner_row(r, 3)))
                .collect();
            let mut recovered = Vec::new();
            for (run_id, owner, text, row) in running {
                if !owner_gone(owner.as_deref(), row, &me, &host) {
                    continue;
                }
                let mut r: RunRecord = decode(&place, &run_id, text.as_bytes())?;
                r.status = RunStatus::Interrupted;
                let record = serde_json::to_string(&r).expect("records serialize");
                let mut tx = c.transaction()?;
                let changed = tx.execute(
                    "UPDATE medic_runs SET status = 'interrupted', owner_id = NULL, record = $2
                     WHERE run_id = $1 AND status = 'running' AND owner_id IS NOT DISTINCT FROM $3",
                    &[&run_id, &record, &owner],
                )?;
                if changed == 1 {
                    insert_event(
                        &mut tx,
                        &run_id,
                        &JournalEntry::now(JournalEvent::RunInterrupted {
                            found_by_pid: std::process::id(),
                        }),
                    )?;
                    tx.execute("DELETE FROM medic_locks WHERE run_id = $1", &[&run_id])?;
                    tx.commit()?;
                    recovered.push(run_id);
                }
            }
            // Locks of processes gone, including one killed after taking its lock but
            // before recording its run.
            let holders: Vec<(String, Option<OwnerRow>)> = c
                .query(
                    "SELECT DISTINCT l.owner_id, o.host, o.pid, o.heartbeat_ms
                     FROM medic_locks l LEFT JOIN medic_owners o ON o.owner_id = l.owner_id",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), owner_row(r, 1)))
                .collect();
            for (owner, row) in holders {
                if owner_gone(Some(&owner), row, &me, &host) {
                    c.execute("DELETE FROM medic_locks WHERE owner_id = $1", &[&owner])?;
                }
            }
            // Rows of processes gone that hold nothing any more (most commands end without
            // removing theirs: `exit` runs no destructors).
            let owners: Vec<(String, Option<OwnerRow>)> = c
                .query(
                    "SELECT owner_id, host, pid, heartbeat_ms FROM medic_owners o WHERE owner_id <> $1
                       AND NOT EXISTS (SELECT 1 FROM medic_runs r
                                       WHERE r.owner_id = o.owner_id AND r.status = 'running')
                       AND NOT EXISTS (SELECT 1 FROM medic_locks l WHERE l.owner_id = o.owner_id)",
                    &[&me],
                )?
                .iter()
                .map(|r| (r.get(0), owner_row(r, 1)))
                .collect();
            for (owner, row) in owners {
                if owner_gone(Some(&owner), row, &me, &host) {
                    c.execute("DELETE FROM medic_owners WHERE owner_id = $1", &[&owner])?;
                }
            }
            Ok(recovered)
        })
    }

    fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        let (key, h) = (key.to_owned(), holder.clone());
        let (me, host, place) = (self.owner_id.clone(), self.host.clone(), self.place.clone());
        self.call(move |c| {
            let text = serde_json::to_string(&h).expect("lock holders serialize");
            // Bounded: each round either takes the lock, names its live holder, or saw it
            // change hands under it (another process took or released it meanwhile).
            for _ in 0..5 {
                let taken = c.execute(
                    "INSERT INTO medic_locks (key, run_id, owner_id, holder) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &h.run_id, &me, &text],
                )?;
                if taken == 1 {
                    return Ok(Ok(()));
                }
                let Some(row) = c.query_opt(
                    "SELECT l.run_id, l.owner_id, l.holder, o.host, o.pid, o.heartbeat_ms
                     FROM medic_locks l LEFT JOIN medic_owners o ON o.owner_id = l.owner_id
                     WHERE l.key = $1",
                    &[&key],
                )?
                else {
                    continue;
                };
                let (run_id, owner, current): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                // The same run taking its lock again (a resume, maybe by another process),
                // or the lock of a process that is gone: taken over, if still as seen.
                if run_id == h.run_id || owner_gone(Some(&owner), owner_row(&row, 3), &me, &host) {
                    let moved = c.execute(
                        "UPDATE medic_locks SET run_id = $2, owner_id = $3, holder = $4
                         WHERE key = $1 AND owner_id = $5 AND run_id = $6",
                        &[&key, &h.run_id, &me, &text, &owner, &run_id],
                    )?;
                    if moved == 1 {
                        return Ok(Ok(()));
                    }
                    continue;
                }
                return Ok(Err(decode(&place, &key, current.as_bytes())?));
            }
            Err(Failure::Store(StoreError::Database {
                place,
                reason: format!("lock {key} kept changing hands; try again"),
            }))
        })
    }

    fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        let id = run_id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM medic_locks WHERE run_id = $1", &[&id])?;
            Ok(())
        })
    }

    fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        let before = ms(before_ms);
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM medic_events WHERE run_id IN
                     (SELECT run_id FROM medic_runs WHERE started_ms < $1 AND status <> 'running')",
                &[&before],
            )?;
            let n = tx.execute(
                "DELETE FROM medic_runs WHERE started_ms < $1 AND status <> 'running'",
                &[&before],
            )?;
            // The audit log goes with the runs it explains.
            let (from, to) = crate::store::audit::keys_before(before_ms);
            tx.execute(
                "DELETE FROM medic_documents WHERE key >= $1 AND key < $2",
                &[&from, &to],
            )?;
            tx.commit()?;
            Ok(n as usize)
        })
    }
}
