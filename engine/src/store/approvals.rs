//! Approvals between processes. A run that reaches a step with an `approval` writes a pending
//! marker and waits; `medic approve` or `medic reject` (another process, or the API) writes
//! the decision next to it. With the embedded store they are files in `DATA_DIR/approvals/`
//! (written to a temporary name and renamed, so a reader never sees half of one); with a
//! shared store they are its documents, so a run waiting on one host is decided from any.
//! The first to find the decisions settle the request writes that as its verdict, if none
//! is there yet (a file linked into place, a conditional insert): the run and every decider
//! are told that one, however close together opposite decisions came.

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
    /// Who may decide, and how many must.
    #[serde(default)]
    pub policy: Policy,
    /// The process waiting for the decision: a request whose process died is no longer
    /// offered (nobody would act on the decision). None from a medic that did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiter: Option<Waiter>,
}

/// A process waiting for an approval, on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub host: String,
    pub pid: u32,
    /// Its start time ([`super::process::Process::start`]).
    pub start: Option<u64>,
}

impl Pending {
    /// Whether the process that asked is known to be gone: on this host (a data directory's
    /// requests are all of this host; a shared store's may be of others, whose processes
    /// are not looked at here).
    fn abandoned(&self, place: &Place) -> bool {
        self.waiter.as_ref().is_some_and(|w| {
            (matches!(place, Place::Files(_)) || w.host == super::process::hostname())
                && !super::process::Process {
                    pid: w.pid,
                    start: w.start,
                }
                .alive()
        })
    }
}

/// An environment's approval policy, as a waiting run states it: who may decide, how many
/// distinct approvals it needs, and who started the run, who may not approve it when the
/// environment is protected or has a policy (elsewhere an approval step is the responder's
/// own go-ahead). Checked by whoever decides (`medic approve`, the API) and again by the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min_approvals: u32,
    #[serde(default)]
    pub started_by: Option<String>,
}

fn one() -> u32 {
    1
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            approvers: Vec::new(),
            min_approvals: 1,
            started_by: None,
        }
    }
}

/// The name in an identity: `alice` in `alice@host`, `user:alice` or `token:alice`.
fn name_of(identity: &str) -> &str {
    let bare = identity
        .strip_prefix("token:")
        .or_else(|| identity.strip_prefix("user:"))
        .unwrap_or(identity);
    bare.split('@').next().unwrap_or(bare)
}

impl Policy {
    /// The policy of a run in `env`, started by `trigger`.
    pub fn for_run(env: &crate::runbook::Environment, trigger: &super::Trigger) -> Policy {
        let started_by = match trigger {
            super::Trigger::Cli { user, host } => format!("{user}@{host}"),
            super::Trigger::Api { caller } => caller.clone(),
            super::Trigger::Schedule { drill } => format!("schedule:{drill}"),
            super::Trigger::Alert { trigger, .. } => format!("trigger:{trigger}"),
        };
        Policy {
            approvers: env.approvers.clone(),
            min_approvals: env.min_approvals.max(1),
            started_by: (env.protected || env.has_approval_policy()).then_some(started_by),
        }
    }

    /// Why `by` (a member of `groups`) may not decide, if they may not. An approver entry
    /// names a person (user or token) or a group (a Unix group of a CLI user, a token's
    /// `--group`).
    pub fn refuses(&self, by: &str, groups: &[String]) -> Option<String> {
        if let Some(starter) = &self.started_by
            && name_of(starter) == name_of(by)
        {
            return Some(format!(
                "{by} started this run and cannot approve it: in this environment an approval comes from someone else"
            ));
        }
        if !self.approvers.is_empty()
            && !self
                .approvers
                .iter()
                .any(|a| a == name_of(by) || groups.contains(a))
        {
            return Some(format!(
                "{by} is not among this environment's approvers ({})",
                self.approvers.join(", ")
            ));
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DecisionFile {
    approved: bool,
    by: String,
    /// The groups `by` is in, as the deciding process found them.
    #[serde(default)]
    groups: Vec<String>,
    reason: String,
    at_ms: u64,
}

use super::Place;
use super::backend::prefix_range;
use crate::private::write_atomic;

/// Whether `s` can be part of a file name in the approvals directory (or a document key):
/// no separators, no `..`, nothing a shell or terminal would trip on.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.[]".contains(c))
}

fn dir_of(data: &Path) -> PathBuf {
    data.join("approvals")
}

fn pending_path(dir: &Path, run_id: &str, step: &str) -> PathBuf {
    dir.join(format!("{run_id}.{step}.pending.json"))
}

/// One per decider, so a quorum's decisions never overwrite each other.
fn decider_key(by: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(name_of(by).as_bytes())[..8])
}

fn decision_path(dir: &Path, run_id: &str, step: &str, by: &str) -> PathBuf {
    dir.join(format!("{run_id}.{step}.decision.{}.json", decider_key(by)))
}

const DOCS: &str = "approval/";

fn pending_key(run_id: &str, step: &str) -> String {
    format!("{DOCS}{run_id}/{step}/pending")
}

fn decisions_prefix(run_id: &str, step: &str) -> String {
    format!("{DOCS}{run_id}/{step}/decision/")
}

/// The decision that settled one request (`requested_ms` tells a request from the one a
/// resumed run makes again).
fn verdict_path(dir: &Path, run_id: &str, step: &str, requested_ms: u64) -> PathBuf {
    dir.join(format!("{run_id}.{step}.verdict.{requested_ms}.json"))
}

fn verdicts_prefix(run_id: &str, step: &str) -> String {
    format!("{DOCS}{run_id}/{step}/verdict/")
}

/// The decision a request was settled with: written once, by whoever first finds the
/// decisions on record settle it (a decider, once its decision is written, or the run as it
/// polls), and never replaced. Two opposite decisions made in the same instant can each find
/// the request unsettled and each be written; only one of them is then the verdict, and
/// only its decider is told the decision stands.
#[derive(Debug, Serialize, Deserialize)]
struct VerdictFile {
    approved: bool,
    by: String,
    reason: String,
}

impl VerdictFile {
    fn of(d: &Decision) -> Option<VerdictFile> {
        let (approved, by, reason) = match d {
            Decision::Approved { by, reason } => (true, by, reason),
            Decision::Rejected { by, reason } => (false, by, reason),
            Decision::TimedOut | Decision::Cancelled => return None,
        };
        Some(VerdictFile {
            approved,
            by: by.clone(),
            reason: reason.clone(),
        })
    }

    fn decision(self) -> Decision {
        let VerdictFile {
            approved,
            by,
            reason,
        } = self;
        if approved {
            Decision::Approved { by, reason }
        } else {
            Decision::Rejected { by, reason }
        }
    }
}

fn store_error(e: super::StoreError) -> String {
    e.to_string()
}

/// Writes the marker of a run waiting at a step.
fn put_pending(place: &Place, p: &Pending) -> Result<(), String> {
    let bytes = serde_json::to_vec(p).expect("serialize");
    match place {
        Place::Files(data) => {
            let path = pending_path(&dir_of(data), &p.run_id, &p.step);
            write_atomic(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Place::Shared(docs) => docs
            .put_document(&pending_key(&p.run_id, &p.step), &bytes, None)
            .map(|_| ())
            .map_err(store_error),
    }
}

fn remove_pending(place: &Place, run_id: &str, step: &str) {
    match place {
        Place::Files(data) => {
            let _ = std::fs::remove_file(pending_path(&dir_of(data), run_id, step));
        }
        Place::Shared(docs) => {
            let key = pending_key(run_id, step);
            let (from, to) = prefix_range(&key);
            let _ = docs.delete_documents(&from, &to);
        }
    }
}

/// The decisions written for a run's step.
fn decisions(place: &Place, run_id: &str, step: &str) -> Vec<DecisionFile> {
    match place {
        Place::Files(data) => {
            let prefix = format!("{run_id}.{step}.decision.");
            let Ok(entries) = std::fs::read_dir(dir_of(data)) else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".json")
                })
                .filter_map(|e| {
                    let bytes = crate::input::read_bounded(&e.path(), 64 << 10).ok()?;
                    serde_json::from_slice(&bytes).ok()
                })
                .collect()
        }
        Place::Shared(docs) => {
            let (from, to) = prefix_range(&decisions_prefix(run_id, step));
            docs.documents(&from, &to, false, 1000)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect()
        }
    }
}

/// Removes a request's decisions and its verdict.
fn clear_decisions(place: &Place, run_id: &str, step: &str) {
    match place {
        Place::Files(data) => {
            let prefixes = [
                format!("{run_id}.{step}.decision."),
                format!("{run_id}.{step}.verdict."),
            ];
            for e in std::fs::read_dir(dir_of(data))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Place::Shared(docs) => {
            for prefix in [
                decisions_prefix(run_id, step),
                verdicts_prefix(run_id, step),
            ] {
                let (from, to) = prefix_range(&prefix);
                let _ = docs.delete_documents(&from, &to);
            }
        }
    }
}

/// The verdict of a request, if one was written.
fn read_verdict(place: &Place, run_id: &str, step: &str, requested_ms: u64) -> Option<Decision> {
    let bytes = match place {
        Place::Files(data) => crate::input::read_bounded(
            &verdict_path(&dir_of(data), run_id, step, requested_ms),
            64 << 10,
        )
        .ok()?,
        Place::Shared(docs) => docs
            .document(&format!("{}{requested_ms}", verdicts_prefix(run_id, step)))
            .ok()??,
    };
    serde_json::from_slice::<VerdictFile>(&bytes)
        .ok()
        .map(VerdictFile::decision)
}

/// Writes `d` as the verdict of a request unless one is there already; returns whether it
/// was written.
fn claim_verdict(
    place: &Place,
    run_id: &str,
    step: &str,
    requested_ms: u64,
    d: &Decision,
) -> Result<bool, String> {
    let Some(v) = VerdictFile::of(d) else {
        return Ok(false);
    };
    let bytes = serde_json::to_vec(&v).expect("serialize");
    match place {
        Place::Files(data) => {
            let path = verdict_path(&dir_of(data), run_id, step, requested_ms);
            crate::private::write_new(&path, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Place::Shared(docs) => docs
            .put_document(
                &format!("{}{requested_ms}", verdicts_prefix(run_id, step)),
                &bytes,
                Some(None),
            )
            .map_err(store_error),
    }
}

fn put_decision(place: &Place, run_id: &str, step: &str, d: &DecisionFile) -> Result<(), String> {
    let bytes = serde_json::to_vec(d).expect("serialize");
    match place {
        Place::Files(data) => {
            write_atomic(&decision_path(&dir_of(data), run_id, step, &d.by), &bytes)
                .map_err(|e| e.to_string())
        }
        Place::Shared(docs) => docs
            .put_document(
                &format!("{}{}", decisions_prefix(run_id, step), decider_key(&d.by)),
                &bytes,
                None,
            )
            .map(|_| ())
            .map_err(store_error),
    }
}

/// Who has approved `p` so far, among those its policy counts (each once), oldest first.
pub fn approved_by(place: &Place, p: &Pending) -> Vec<String> {
    let mut found: Vec<(u64, String)> = decisions(place, &p.run_id, &p.step)
        .into_iter()
        .filter(|d| {
            d.approved && d.at_ms >= p.requested_ms && p.policy.refuses(&d.by, &d.groups).is_none()
        })
        .map(|d| (d.at_ms, d.by))
        .collect();
    found.sort();
    let mut names: Vec<String> = Vec::new();
    for (_, by) in found {
        if !names.contains(&by) {
            names.push(by);
        }
    }
    names
}

/// Waits for decisions written where the store keeps approvals.
pub struct StoreApprover {
    pub place: Place,
    /// The environment's policy for this run.
    pub policy: Policy,
}

impl StoreApprover {
    async fn wait_inner(
        &self,
        run_id: &str,
        step: &str,
        prompt: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Decision {
        if let Place::Files(data) = &self.place
            && let Err(e) = crate::private::private_dir(&dir_of(data), "approvals directory")
        {
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
            policy: self.policy.clone(),
            waiter: {
                let me = super::process::Process::this();
                Some(Waiter {
                    host: super::process::hostname(),
                    pid: me.pid,
                    start: me.start,
                })
            },
        };
        // Decisions left from an earlier request (a run resumed after a crash asks again)
        // answer nothing now.
        clear_decisions(&self.place, run_id, step);
        if let Err(e) = put_pending(&self.place, &pending) {
            return Decision::Rejected {
                by: "medic".into(),
                reason: e,
            };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut warned = false;
        let outcome = loop {
            match verdict(&self.place, &self.policy, run_id, step, requested_ms) {
                Ok(Some(d)) => break d,
                Ok(None) => {}
                // Asked again at the next poll (said once); a decider cannot be told the
                // request is settled without a verdict on record either.
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("approval of run {run_id} (step {step}): {e}");
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break Decision::TimedOut;
            }
            if !cancel.sleep(Duration::from_millis(200)).await {
                break Decision::Cancelled;
            }
        };
        remove_pending(&self.place, run_id, step);
        clear_decisions(&self.place, run_id, step);
        outcome
    }
}

impl Approver for StoreApprover {
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

/// The decision the decisions on record settle, once they do: any rejection by someone the
/// policy lets decide, or enough distinct approvals. Decisions older than the request, or by
/// someone the policy excludes (a file written by hand), count for nothing.
fn settled(
    place: &Place,
    policy: &Policy,
    run_id: &str,
    step: &str,
    requested_ms: u64,
) -> Option<Decision> {
    let mut approvals: Vec<DecisionFile> = Vec::new();
    for d in decisions(place, run_id, step) {
        if d.at_ms < requested_ms || policy.refuses(&d.by, &d.groups).is_some() {
            continue;
        }
        if !d.approved {
            return Some(Decision::Rejected {
                by: d.by,
                reason: d.reason,
            });
        }
        if !approvals.iter().any(|a| name_of(&a.by) == name_of(&d.by)) {
            approvals.push(d);
        }
    }
    if approvals.len() < policy.min_approvals.max(1) as usize {
        return None;
    }
    approvals.sort_by_key(|a| a.at_ms);
    let by: Vec<&str> = approvals.iter().map(|a| a.by.as_str()).collect();
    let reason: Vec<&str> = approvals.iter().map(|a| a.reason.as_str()).collect();
    Some(Decision::Approved {
        by: by.join(", "),
        reason: reason.join("; "),
    })
}

/// The decision a request is settled with: its verdict, written by the first to find the
/// decisions on record settle it (see [`VerdictFile`]). Everyone asks this, the run and each
/// decider, so all are told the same.
fn verdict(
    place: &Place,
    policy: &Policy,
    run_id: &str,
    step: &str,
    requested_ms: u64,
) -> Result<Option<Decision>, String> {
    if let Some(d) = read_verdict(place, run_id, step, requested_ms) {
        return Ok(Some(d));
    }
    let Some(d) = settled(place, policy, run_id, step, requested_ms) else {
        return Ok(None);
    };
    if claim_verdict(place, run_id, step, requested_ms, &d)? {
        return Ok(Some(d));
    }
    // Written by another in between: theirs stands. (Unreadable, it was at least written
    // from these same decisions.)
    Ok(Some(
        read_verdict(place, run_id, step, requested_ms).unwrap_or(d),
    ))
}

/// The approvals runs are waiting for, optionally only those of runs whose id starts with
/// `prefix`: not those whose process died (see [`Pending::abandoned`]).
pub fn pending(place: &Place, prefix: Option<&str>) -> Vec<Pending> {
    let mut all = requested(place, prefix);
    all.retain(|p| !p.abandoned(place));
    all
}

/// The approval requests on record, their process alive or not.
fn requested(place: &Place, prefix: Option<&str>) -> Vec<Pending> {
    let all: Vec<Pending> = match place {
        Place::Files(data) => std::fs::read_dir(dir_of(data))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pending.json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect(),
        Place::Shared(docs) => {
            let (from, to) = prefix_range(DOCS);
            docs.documents(&from, &to, false, 100_000)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k.ends_with("/pending"))
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect()
        }
    };
    let mut out: Vec<Pending> = all
        .into_iter()
        .filter(|p| prefix.is_none_or(|x| p.run_id.starts_with(&x.to_ascii_lowercase())))
        .collect();
    out.sort_by(|a, b| (&a.run_id, &a.step).cmp(&(&b.run_id, &b.step)));
    out
}

/// Records a decision for the one approval a run (by id prefix, and step if given) waits for,
/// if the run's policy lets `by` decide. Returns the approval and how many approvals it has
/// now (of `policy.min_approvals`).
pub fn decide(
    place: &Place,
    prefix: &str,
    step: Option<&str>,
    approved: bool,
    by: &str,
    groups: &[String],
    reason: &str,
) -> Result<(Pending, usize), String> {
    let (gone, candidates): (Vec<Pending>, Vec<Pending>) = requested(place, Some(prefix))
        .into_iter()
        .filter(|p| step.is_none_or(|s| s == p.step))
        .partition(|p| p.abandoned(place));
    let p = match candidates.len() {
        0 if !gone.is_empty() => {
            let which: Vec<String> = gone
                .iter()
                .map(|p| format!("{} (step {})", p.run_id, p.step))
                .collect();
            let id = &gone[0].run_id;
            return Err(format!(
                "nobody waits for this approval any more: the process of run {} died while it waited; the run is interrupted and decides nothing\n  = help: `medic runs show {id}`, then `medic runs rollback {id}` or `medic runs resume {id}`",
                which.join(", ")
            ));
        }
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
    if let Some(why) = p.policy.refuses(by, groups) {
        return Err(why);
    }
    // The run goes on with a settled request at its next poll (200 ms): a decision after
    // that would be told it counted when it did not, or, a rejection racing that poll, undo
    // a decision another person was already told stands.
    // The same person's same decision again (a retried request, a second click) is the one
    // the run goes on with: told so again, not refused.
    let verdict = verdict(place, &p.policy, &p.run_id, &p.step, p.requested_ms)
        .map_err(|e| format!("cannot record the decision: {e}"))?;
    if let Some(done) = verdict {
        let again = matches!(done, Decision::Approved { .. }) == approved
            && decisions(place, &p.run_id, &p.step).iter().any(|d| {
                d.approved == approved && d.at_ms >= p.requested_ms && name_of(&d.by) == name_of(by)
            });
        if !again {
            return Err(format!(
                "run {} (step {}) is already {}: the run goes on with that, not with this decision",
                p.run_id,
                p.step,
                told(&done)
            ));
        }
        let approvals = approvals_of(place, &p);
        return Ok((p, approvals));
    }
    let d = DecisionFile {
        approved,
        by: by.into(),
        groups: groups.to_vec(),
        reason: reason.into(),
        at_ms: now_ms(),
    };
    put_decision(place, &p.run_id, &p.step, &d)
        .map_err(|e| format!("cannot write the decision: {e}"))?;
    let approvals = after_writing(place, &p, approved)?;
    Ok((p, approvals))
}

/// What a decider whose decision is written is told: how many approvals `p` has, or that it
/// was decided otherwise in the same instant (by someone else, or by the same person from
/// another terminal), when the verdict is not this decision.
fn after_writing(place: &Place, p: &Pending, approved: bool) -> Result<usize, String> {
    let verdict = verdict(place, &p.policy, &p.run_id, &p.step, p.requested_ms)
        .map_err(|e| format!("cannot record the decision: {e}"))?;
    if let Some(done) = verdict
        && matches!(done, Decision::Approved { .. }) != approved
    {
        return Err(format!(
            "run {} (step {}) was {} at the same time: the run goes on with that, not with this decision",
            p.run_id,
            p.step,
            told(&done)
        ));
    }
    Ok(approvals_of(place, p))
}

/// How many approvals that count `p` has on record.
fn approvals_of(place: &Place, p: &Pending) -> usize {
    decisions(place, &p.run_id, &p.step)
        .into_iter()
        .filter(|d| {
            d.approved && d.at_ms >= p.requested_ms && p.policy.refuses(&d.by, &d.groups).is_none()
        })
        .count()
}

/// A settled decision as a responder is told it.
fn told(d: &Decision) -> String {
    match d {
        Decision::Approved { by, reason } => format!("approved by {by} ({reason})"),
        Decision::Rejected { by, reason } => format!("rejected by {by} ({reason})"),
        Decision::TimedOut => "timed out".into(),
        Decision::Cancelled => "cancelled".into(),
    }
}

#[cfg(test)]
mod tests;
