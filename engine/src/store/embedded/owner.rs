//! Who holds the embedded store (`owner.json`, for the message another process gets while
//! this one does), and the guard that lets go of it last: sled settled and flushed, the redo
//! log started over, sled's lock let go of, then `owner.json` removed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::wal::Wal;
use super::Pending;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Owner {
    pub(super) pid: u32,
    pub(super) command: String,
    pub(super) since_ms: u64,
}

pub(super) struct OwnerGuard {
    pub(super) dir: PathBuf,
    /// The last handle on sled (the store's others are dropped before this guard).
    pub(super) db: Option<sled::Db>,
    pub(super) wal: Arc<Wal>,
    /// The runs' and journals' changes since the last checkpoint, for sled before its last
    /// flush (the store's own handle is dropped before this guard).
    pub(super) pending: Option<Arc<Pending>>,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        let pending = self.pending.take();
        // The last holder: nobody writes any more, so the log can start over once sled has
        // it all (the next open then has nothing to replay). Not after the log broke: the
        // disk failed or is full, where sled's flush may never return; the next open
        // replays the log instead.
        if !self.wal.is_broken()
            && pending.as_ref().is_none_or(|p| p.settle().is_ok())
            && db.flush().is_ok()
        {
            let _ = self.wal.restart();
        }
        // Its trees are handles on sled too.
        drop(pending);
        // sled lets go of its lock when its last handle goes: `owner.json` goes after, so
        // whoever sees it gone finds the store free (seen: a test opening sled the moment
        // it went, refused sled's lock).
        drop(db);
        // Not quite then: sled's I/O threads each hold its files, its lock's included,
        // until the write they were given (already waited for) has let go of them. Opened
        // again at once in this process, the store was refused its lock (2 in 150 opens
        // under load); it is let go of only once sled's lock is.
        sled_lock_let_go(&self.dir.join("db").join("db"), SLED_LET_GO);
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

/// How long a store that was let go of waits for sled's threads to let go of its lock.
const SLED_LET_GO: Duration = Duration::from_secs(1);

/// Waits (at most `bound`) until nothing holds sled's lock on `lock`: a lock taken on a file
/// opened apart conflicts with sled's, even in this process.
fn sled_lock_let_go(lock: &std::path::Path, bound: Duration) {
    let Ok(file) = std::fs::File::open(lock) else {
        return;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let until = std::time::Instant::now() + bound;
    // SAFETY: flock(2) on a descriptor this function owns; released when `file` closes.
    while unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}
