//! Approvals between processes. A run that reaches a step with an `approval` writes a pending
//! marker in `DATA_DIR/approvals/` and waits; `medic approve` or `medic reject` (another
//! process, which cannot open the store while the run holds it) writes the decision next to
//! it. Files are written to a temporary name and renamed, so a reader never sees half of one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::now_ms;
use crate::executor::{Approver, Cancel, Decision};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub run_id: String,
    pub step: String,
    pub prompt: String,
    pub deadline_ms: u64,
    /// When the run asked: a decision made before this (left by an earlier process, say)
    /// does not count.
    #[serde(default)]
    pub requested_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DecisionFile {
    approved: bool,
    by: String,
    reason: String,
    at_ms: u64,
}

use crate::private::write_atomic;

/// Whether `s` can be part of a file name in the approvals directory: no separators, no
/// `..`, nothing a shell or terminal would trip on.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.[]".contains(c))
}

fn pending_path(dir: &Path, run_id: &str, step: &str) -> PathBuf {
    dir.join(format!("{run_id}.{step}.pending.json"))
}

fn decision_path(dir: &Path, run_id: &str, step: &str) -> PathBuf {
    dir.join(format!("{run_id}.{step}.decision.json"))
}

/// Waits for decisions written as files in a directory.
pub struct FileApprover {
    pub dir: PathBuf,
}

impl FileApprover {
    async fn wait_inner(
        &self,
        run_id: &str,
        step: &str,
        prompt: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Decision {
        if let Err(e) = crate::private::private_dir(&self.dir, "approvals directory") {
            return Decision::Rejected {
                by: "medic".into(),
                reason: e,
            };
        }
        if !safe_name(run_id) || !safe_name(step) {
            return Decision::Rejected {
                by: "medic".into(),
                reason: format!("`{run_id}`/`{step}` cannot name an approval file"),
            };
        }
        let requested_ms = now_ms();
        let pending = Pending {
            run_id: run_id.into(),
            step: step.into(),
            prompt: prompt.into(),
            deadline_ms: requested_ms + timeout.as_millis() as u64,
            requested_ms,
        };
        let marker = pending_path(&self.dir, run_id, step);
        let decision = decision_path(&self.dir, run_id, step);
        // A decision left from an earlier request (a run resumed after a crash asks again)
        // answers nothing now.
        let _ = std::fs::remove_file(&decision);
        if let Err(e) = write_atomic(&marker, &serde_json::to_vec(&pending).expect("serialize")) {
            return Decision::Rejected {
                by: "medic".into(),
                reason: format!("cannot write {}: {e}", marker.display()),
            };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            if let Ok(bytes) = std::fs::read(&decision)
                && let Ok(d) = serde_json::from_slice::<DecisionFile>(&bytes)
                && d.at_ms >= requested_ms
            {
                break if d.approved {
                    Decision::Approved {
                        by: d.by,
                        reason: d.reason,
                    }
                } else {
                    Decision::Rejected {
                        by: d.by,
                        reason: d.reason,
                    }
                };
            }
            if tokio::time::Instant::now() >= deadline {
                break Decision::TimedOut;
            }
            if !cancel.sleep(Duration::from_millis(200)).await {
                break Decision::Cancelled;
            }
        };
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_file(&decision);
        outcome
    }
}

impl Approver for FileApprover {
    fn wait<'a>(
        &'a self,
        run_id: &'a str,
        step: &'a str,
        prompt: &'a str,
        timeout: Duration,
        cancel: &'a Cancel,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        Box::pin(self.wait_inner(run_id, step, prompt, timeout, cancel))
    }
}

/// The approvals runs are waiting for, optionally only those of runs whose id starts with
/// `prefix`.
pub fn pending(dir: &Path, prefix: Option<&str>) -> Vec<Pending> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Pending> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pending.json"))
        .filter_map(|e| serde_json::from_slice::<Pending>(&std::fs::read(e.path()).ok()?).ok())
        .filter(|p| prefix.is_none_or(|x| p.run_id.starts_with(&x.to_ascii_lowercase())))
        .collect();
    out.sort_by(|a, b| (&a.run_id, &a.step).cmp(&(&b.run_id, &b.step)));
    out
}

/// Records a decision for the one approval a run (by id prefix, and step if given) waits for.
pub fn decide(
    dir: &Path,
    prefix: &str,
    step: Option<&str>,
    approved: bool,
    by: &str,
    reason: &str,
) -> Result<Pending, String> {
    let candidates: Vec<Pending> = pending(dir, Some(prefix))
        .into_iter()
        .filter(|p| step.is_none_or(|s| s == p.step))
        .collect();
    let p = match candidates.len() {
        0 => {
            return Err(format!(
                "no run matching `{prefix}` is waiting for an approval{}",
                step.map(|s| format!(" at step `{s}`")).unwrap_or_default()
            ));
        }
        1 => candidates.into_iter().next().unwrap(),
        _ => {
            let which: Vec<String> = candidates
                .iter()
                .map(|p| format!("{} (step {})", p.run_id, p.step))
                .collect();
            return Err(format!(
                "`{prefix}` matches several waiting approvals: {}; give a longer id or --step",
                which.join(", ")
            ));
        }
    };
    let d = DecisionFile {
        approved,
        by: by.into(),
        reason: reason.into(),
        at_ms: now_ms(),
    };
    write_atomic(
        &decision_path(dir, &p.run_id, &p.step),
        &serde_json::to_vec(&d).expect("serialize"),
    )
    .map_err(|e| format!("cannot write the decision: {e}"))?;
    Ok(p)
}
