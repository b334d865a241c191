//! The audit log: every request to the API and every change to tokens: who, what, when, from
//! where, and the result. One JSON object per line in `DATA_DIR/audit.jsonl` (0600). A change
//! or a refusal is appended and synced before the answer goes out, so an action that happened
//! is never missing from it; a read is appended without waiting for the disk (a crash may
//! lose the last reads, never a change). Tokens never appear in it, only their names.
//!
//! The log rotates by size: past [`MAX_BYTES`] the file becomes `audit.jsonl.1` (older ones
//! move up to `.KEEP`, the oldest goes), so about `(KEEP + 1) * MAX_BYTES` stay on disk.
//! Readers see every file, oldest first.
//!
//! With a shared store the log is its documents instead (`audit/TIME/RANDOM`, every host's
//! entries in one log, each committed before the answer goes out), pruned with the runs.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "audit.jsonl";
/// Serialises rotation between processes (`medic serve` and `medic token ...`).
const LOCK: &str = "audit.lock";
/// The size at which the log rotates.
pub const MAX_BYTES: u64 = 16 << 20;
/// Rotated files kept.
pub const KEEP: usize = 4;
/// Longer fields are cut: the log must stay readable whatever a client sends.
const MAX_FIELD: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    /// `token:NAME`, `user:NAME` (the CLI), or `anonymous`.
    pub who: String,
    /// `POST /api/v1/runs/ID/cancel`, `token create`, ...
    pub action: String,
    /// The address the request came from; empty for the CLI.
    pub from: String,
    /// `ok`, `denied: ...`, `error: ...`.
    pub result: String,
}

impl AuditEntry {
    /// A read that was answered (not a change, not a refusal).
    pub fn is_read(&self) -> bool {
        (self.action.starts_with("GET ") || self.action.starts_with("HEAD ")) && self.result == "ok"
    }
}

#[derive(Clone)]
pub struct Audit {
    dir: PathBuf,
    /// A shared store's documents, instead of the files in `dir`.
    shared: Option<std::sync::Arc<dyn super::backend::Documents>>,
    max_bytes: u64,
    keep: usize,
}

const DOCS: &str = "audit/";

/// The document key of an entry at `at_ms`: keys sort by time.
fn key_at(at_ms: u64) -> String {
    format!("{DOCS}{at_ms:020}/")
}

/// The keys of the shared log's entries older than `before_ms`.
pub fn keys_before(before_ms: u64) -> (String, String) {
    (DOCS.to_owned(), key_at(before_ms))
}

fn bounded(mut s: String) -> String {
    crate::host::outcome::truncate(&mut s, MAX_FIELD);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Audit {
    /// The log in the data directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Audit {
            dir: dir.to_owned(),
            shared: None,
            max_bytes: MAX_BYTES,
            keep: KEEP,
        }
    }

    /// The log where a store keeps it.
    pub fn at(place: &super::Place) -> Self {
        match place {
            super::Place::Files(dir) => Audit::new(dir),
            super::Place::Shared(docs) => Audit {
                shared: Some(docs.clone()),
                ..Audit::new(Path::new(""))
            },
        }
    }

    /// Appends one entry and syncs it.
    pub fn record(&self, who: &str, action: &str, from: &str, result: &str) -> Result<(), String> {
        self.append(who, action, from, result, true)
    }

    /// Appends one entry; with `sync`, on disk before it returns.
    pub fn append(
        &self,
        who: &str,
        action: &str,
        from: &str,
        result: &str,
        sync: bool,
    ) -> Result<(), String> {
        let entry = AuditEntry {
            at_ms: super::now_ms(),
            who: bounded(who.to_owned()),
            action: bounded(action.to_owned()),
            from: bounded(from.to_owned()),
            result: bounded(result.to_owned()),
        };
        if let Some(docs) = &self.shared {
            let tie = super::tokens::random_hex()?;
            return docs
                .put_document(
                    &format!("{}{}", key_at(entry.at_ms), &tie[..16]),
                    &serde_json::to_vec(&entry).expect("serialize"),
                    None,
                )
                .map(|_| ())
                .map_err(|e| format!("cannot write the audit log: {e}"));
        }
        let mut line = serde_json::to_vec(&entry).expect("serialize");
        line.push(b'\n');
        let path = self.dir.join(FILE);
        let mut f = open_append(&path)?;
        let full = f
            .metadata()
            .map(|m| m.len() >= self.max_bytes)
            .unwrap_or(false);
        if full {
            drop(f);
            self.rotate()?;
            f = open_append(&path)?;
        }
        // A crash can leave a torn last line: start on a line of our own, or this entry
        // would be read as part of it and lost.
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut last = [0u8; 1];
        if len > 0
            && std::os::unix::fs::FileExt::read_at(&f, &mut last, len - 1).is_ok()
            && last[0] != b'\n'
        {
            line.insert(0, b'\n');
        }
        // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
        f.write_all(&line)
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) })
            .map_err(|e| format!("cannot write the audit log: {e}"))
    }

    /// Moves `audit.jsonl` to `.1` (and each older file one up, the oldest out), under a
    /// lock shared with other processes; a process that finds it done already does nothing.
    fn rotate(&self) -> Result<(), String> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.dir.join(LOCK))
            .map_err(|e| format!("cannot lock the audit log: {e}"))?;
        // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock the audit log: {}",
                std::io::Error::last_os_error()
            ));
        }
        let path = self.dir.join(FILE);
        let still_full = std::fs::metadata(&path).is_ok_and(|m| m.len() >= self.max_bytes);
        if !still_full {
            return Ok(());
        }
        let rotated = |n: usize| self.dir.join(format!("{FILE}.{n}"));
        let _ = std::fs::remove_file(rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(rotated(n), rotated(n + 1));
        }
        std::fs::rename(&path, rotated(1)).map_err(|e| format!("cannot rotate the audit log: {e}"))
    }

    /// The newest `limit` entries at or after `since_ms`, newest last, from every file of the
    /// log; without `reads`, answered reads are left out. A line that does not parse (a
    /// torn write after a crash) is skipped.
    pub fn read(
        &self,
        since_ms: u64,
        limit: usize,
        reads: bool,
    ) -> Result<Vec<AuditEntry>, String> {
        if let Some(docs) = &self.shared {
            return read_shared(docs.as_ref(), since_ms, limit, reads);
        }
        let mut files: Vec<PathBuf> = (1..=self.keep)
            .rev()
            .map(|n| self.dir.join(format!("{FILE}.{n}")))
            .collect();
        files.push(self.dir.join(FILE));
        let mut out = std::collections::VecDeque::new();
        for path in files {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read the audit log: {e}")),
            };
            // A file last written before `since_ms` holds nothing newer.
            let modified = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            if modified < since_ms {
                continue;
            }
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| format!("cannot read the audit log: {e}"))?;
                let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) else {
                    continue;
                };
                if entry.at_ms >= since_ms && (reads || !entry.is_read()) {
                    out.push_back(entry);
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
        }
        Ok(out.into())
    }
}

/// [`Audit::read`] of a shared log: pages from the newest back, until `limit` entries.
fn read_shared(
    docs: &dyn super::backend::Documents,
    since_ms: u64,
    limit: usize,
    reads: bool,
) -> Result<Vec<AuditEntry>, String> {
    const PAGE: usize = 500;
    let from = key_at(since_ms);
    let (_, mut upper) = super::backend::prefix_range(DOCS);
    let mut out = Vec::new();
    while out.len() < limit {
        let page = docs
            .documents(&from, &upper, true, PAGE)
            .map_err(|e| format!("cannot read the audit log: {e}"))?;
        for (_, v) in &page {
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(v) else {
                continue;
            };
            if reads || !entry.is_read() {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == PAGE => upper = key.clone(),
            _ => break,
        }
    }
    out.reverse();
    Ok(out)
}

fn open_append(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open the audit log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_bounded_and_read_back_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path());
        audit
            .record("token:a", "GET /x", "127.0.0.1", "ok")
            .unwrap();
        audit
            .record("token:b", &"y\n".repeat(1000), "127.0.0.1", "denied")
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        audit
            .record("token:after", "POST /z", "127.0.0.1", "ok")
            .unwrap();
        let all = audit.read(0, 10, true).unwrap();
        assert_eq!(all.len(), 3, "the entry after a torn line is kept: {all:?}");
        let all = &all[..2];
        assert!(all[1].action.len() < 600 && !all[1].action.contains('\n'));
        assert_eq!(audit.read(0, 1, true).unwrap()[0].who, "token:after");
        audit
            .append("token:c", "GET /y", "127.0.0.1", "ok", false)
            .unwrap();
        assert_eq!(audit.read(0, 10, true).unwrap().len(), 4);
        assert_eq!(
            audit.read(0, 10, false).unwrap().len(),
            2,
            "answered reads (GET /x, GET /y) are left out"
        );
    }

    #[test]
    fn the_log_rotates_by_size_keeping_the_newest_files_and_reads_them_all_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit {
            max_bytes: 1000,
            keep: 2,
            ..Audit::new(dir.path())
        };
        for i in 0..100 {
            audit
                .record(&format!("token:t{i:03}"), "POST /x", "127.0.0.1", "ok")
                .unwrap();
        }
        let files = |n: usize| dir.path().join(format!("{FILE}.{n}"));
        assert!(files(1).exists() && files(2).exists() && !files(3).exists());
        for path in [dir.path().join(FILE), files(1), files(2)] {
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= 1000 + 200, "{} is {len} bytes", path.display());
        }
        let all = audit.read(0, 1000, true).unwrap();
        let who: Vec<&str> = all.iter().map(|e| e.who.as_str()).collect();
        let mut sorted = who.clone();
        sorted.sort();
        assert_eq!(who, sorted, "oldest first across the files");
        assert_eq!(who.last(), Some(&"token:t099"));
        assert!(
            who.len() < 100 && who.len() > 20,
            "the oldest went with the file that fell off: {}",
            who.len()
        );
    }
}
