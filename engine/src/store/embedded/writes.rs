//! The write path: changes decided under one lock, logged as one frame of the redo log
//! ([`super::super::wal`]), then applied to sled (runs and journals: kept in memory until
//! the checkpoint, [`super::pending`]); replay and checkpoints.

use std::ops::Bound;
use std::sync::PoisonError;

use serde::Serialize;

use super::super::backend::Runs as _;
use super::super::wal::{self, Change, WalError};
use super::super::{RunRecord, RunStatus, StoreError};
use super::pending::Kept;
use super::{
    DEFAULT, DRILL_STATE, DRILLS, EVENTS, LOCKS, RUNNING, RUNNING_INDEXED, RUNS, Sled, TRIGGERS,
};

/// Changes to make together (one frame of the redo log): all or none survive a crash.
#[derive(Default)]
pub(super) struct Batch {
    changes: Vec<Change>,
    /// Journals' next sequence numbers as these changes leave them (`None`: forget it),
    /// remembered once the changes are applied.
    next_seqs: Vec<(Vec<u8>, Option<u32>)>,
}

/// How many journals' next sequence numbers are remembered; past it they are forgotten and
/// looked up again (a store daemon lives long, and a run's journal rarely grows after it).
const NEXT_SEQS: usize = 4096;

impl Batch {
    pub(super) fn next_seq(&mut self, journal: Vec<u8>, next: Option<u32>) {
        self.next_seqs.push((journal, next));
    }

    pub(super) fn put(&mut self, tree: u8, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.changes.push(Change {
            tree,
            key: key.as_ref().to_vec(),
            value: Some(value),
        });
    }

    pub(super) fn put_json<T: Serialize>(&mut self, tree: u8, key: impl AsRef<[u8]>, v: &T) {
        self.put(tree, key, serde_json::to_vec(v).expect("records serialize"));
    }

    pub(super) fn remove(&mut self, tree: u8, key: impl AsRef<[u8]>) {
        self.changes.push(Change {
            tree,
            key: key.as_ref().to_vec(),
            value: None,
        });
    }
}

impl StoreError {
    pub(super) fn of_wal(dir: String, e: WalError) -> StoreError {
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
    /// Applies the redo log's frames left by a process that stopped before its checkpoint
    /// (killed, or the machine lost power). The log goes on after them, and sled gets them
    /// at the next checkpoint: opening writes nothing to sled, so a store on a full disk
    /// still opens and reads.
    pub(super) fn replay(&self, frames: Vec<Vec<u8>>) -> Result<(), StoreError> {
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
        // A killed process's last frames may not be on disk yet: they are, before anyone
        // reads them (and acts on them).
        self.wal
            .sync_all()
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))?;
        tracing::info!(frames = count, store = %self.shown, "replayed the redo log");
        Ok(())
    }

    /// Builds the index of running runs for a store recorded before it existed: one scan of
    /// every record, once.
    pub(super) fn index_running(&self) -> Result<(), StoreError> {
        if self
            .db
            .contains_key(RUNNING_INDEXED)
            .map_err(|e| self.err(e))?
        {
            return Ok(());
        }
        self.write(|b| {
            for kv in self.scan(Kept::Runs, (Bound::Unbounded, Bound::Unbounded), false) {
                let (k, v) = kv?;
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

    /// Writes a run's record in `b`, and its place in the index of running runs when that
    /// changes (a run's record is written at nearly every step; a lookup costs less than a
    /// write).
    pub(super) fn put_run(&self, b: &mut Batch, r: &RunRecord) -> Result<(), StoreError> {
        self.put_run_json(
            b,
            &r.run_id,
            r.status == RunStatus::Running,
            serde_json::to_vec(r).expect("records serialize"),
        )
    }

    /// [`Sled::put_run`] of a record already in JSON: the store daemon stores its clients'
    /// records as they wrote them.
    pub(super) fn put_run_json(
        &self,
        b: &mut Batch,
        run_id: &str,
        running: bool,
        json: Vec<u8>,
    ) -> Result<(), StoreError> {
        b.put(RUNS, run_id, json);
        let indexed = self.running.contains_key(run_id).map_err(|e| self.err(e))?;
        match (running, indexed) {
            (true, false) => b.put(RUNNING, run_id, Vec::new()),
            (false, true) => b.remove(RUNNING, run_id),
            _ => {}
        }
        Ok(())
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
        let for_sled = self.pending.keep(changes, |tree| match tree {
            RUNS => Some(Kept::Runs),
            EVENTS => Some(Kept::Events),
            _ => None,
        });
        for c in for_sled {
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
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.pending.settle().map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        self.wal
            .restart()
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))
    }

    /// Decides changes (`decide` may read the store: nobody else writes meanwhile), logs them
    /// as one frame, applies them to sled. Durable at the next [`Runs::flush`].
    pub(super) fn write<R>(
        &self,
        decide: impl FnOnce(&mut Batch) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_logged(decide).map(|(result, _)| result)
    }

    /// [`Sled::write`], also saying which frame of the log the changes are in (0: none
    /// were made).
    pub(super) fn write_logged<R>(
        &self,
        decide: impl FnOnce(&mut Batch) -> Result<R, StoreError>,
    ) -> Result<(R, u64), StoreError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        let result = decide(&mut batch)?;
        if batch.changes.is_empty() {
            return Ok((result, 0));
        }
        let frame = self
            .wal
            .append_frame(&mut wal::encode(&batch.changes))
            .map_err(|e| StoreError::of_wal(self.shown.clone(), e))?;
        let applied = self.apply(batch.changes);
        if !batch.next_seqs.is_empty() {
            let mut known = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= NEXT_SEQS {
                known.clear();
            }
            for (journal, next) in batch.next_seqs {
                // Applied in part, sled says what is there.
                match next.filter(|_| applied.is_ok()) {
                    Some(n) => known.insert(journal, n),
                    None => known.remove(&journal),
                };
            }
        }
        applied?;
        if self.wal.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok((result, frame))
    }
}
