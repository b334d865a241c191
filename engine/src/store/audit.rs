//! The audit log: every change made through the API or to tokens, and every refused request:
//! who, what, when, from where, and the result. One JSON object per line in
//! `DATA_DIR/audit.jsonl` (0600), appended and synced before the answer goes out, so an
//! action that happened is never missing from it. Tokens never appear in it, only their
//! names.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "audit.jsonl";
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

#[derive(Debug, Clone)]
pub struct Audit {
    dir: PathBuf,
}

fn bounded(mut s: String) -> String {
    crate::host::outcome::truncate(&mut s, MAX_FIELD);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Audit {
    pub fn new(dir: &Path) -> Self {
        Audit {
            dir: dir.to_owned(),
        }
    }

    /// Appends one entry and syncs it.
    pub fn record(&self, who: &str, action: &str, from: &str, result: &str) -> Result<(), String> {
        let entry = AuditEntry {
            at_ms: super::now_ms(),
            who: bounded(who.to_owned()),
            action: bounded(action.to_owned()),
            from: bounded(from.to_owned()),
            result: bounded(result.to_owned()),
        };
        let mut line = serde_json::to_vec(&entry).expect("serialize");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.dir.join(FILE))
            .map_err(|e| format!("cannot open the audit log: {e}"))?;
        // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write the audit log: {e}"))
    }

    /// The newest `limit` entries at or after `since_ms`, newest last. A line that does not
    /// parse (a torn write after a crash) is skipped.
    pub fn read(&self, since_ms: u64, limit: usize) -> Result<Vec<AuditEntry>, String> {
        let f = match std::fs::File::open(self.dir.join(FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read the audit log: {e}")),
        };
        let mut out = std::collections::VecDeque::new();
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(|e| format!("cannot read the audit log: {e}"))?;
            let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) else {
                continue;
            };
            if entry.at_ms >= since_ms {
                out.push_back(entry);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }
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
        let all = audit.read(0, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[1].action.len() < 600 && !all[1].action.contains('\n'));
        assert_eq!(audit.read(0, 1).unwrap()[0].who, "token:b");
    }
}
