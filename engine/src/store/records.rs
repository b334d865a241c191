//! What the store keeps of a run: its record (who, what, how it ended) and its journal (every
//! event, in order).

use super::*;

/// Who started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    Cli {
        user: String,
        host: String,
    },
    Schedule {
        drill: String,
    },
    Api {
        caller: String,
    },
    /// An alert, through a trigger (`triggers/*.toml`).
    Alert {
        trigger: String,
        /// The alert's name (its `alertname` label).
        alert: String,
        fingerprint: String,
        labels: BTreeMap<String, String>,
        /// When the alert started firing (ms since the epoch; 0 when unknown).
        starts_at_ms: u64,
        /// Who delivered it (the receiver's token).
        via: String,
    },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Cli { user, host } => write!(f, "cli {user}@{host}"),
            Trigger::Schedule { drill } => write!(f, "schedule {drill}"),
            Trigger::Api { caller } => write!(f, "api {caller}"),
            Trigger::Alert { trigger, alert, .. } => {
                write!(f, "alert {alert} via trigger {trigger}")
            }
        }
    }
}

impl Trigger {
    pub fn cli() -> Self {
        Trigger::cli_of(crate::private::me())
    }

    /// A run started from a shell by `user` on this host.
    pub fn cli_of(user: String) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Trigger::Cli { user, host }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Cli { .. } => "cli",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Api { .. } => "api",
            Trigger::Alert { .. } => "alert",
        }
    }
}

/// How a run stands, or how it ended (also what the API's `status` filter takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    RolledBack,
    RollbackFailed,
    Cancelled,
    /// The process died mid-run; found and marked by the next process to open the store.
    Interrupted,
    /// A `--dry-run` in which every step said it would work.
    DryRun,
}

impl RunStatus {
    pub fn from_outcome(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Failed => RunStatus::Failed,
            RunOutcome::RolledBack => RunStatus::RolledBack,
            RunOutcome::RollbackFailed => RunStatus::RollbackFailed,
            RunOutcome::Cancelled => RunStatus::Cancelled,
            RunOutcome::DryRun => RunStatus::DryRun,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::RollbackFailed => "rollback_failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::DryRun => "dry_run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::RolledBack,
            RunStatus::RollbackFailed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
            RunStatus::DryRun,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRef {
    pub alias: String,
    pub source: String,
    pub sha256: String,
}

/// The summary of a run, kept up to date from its journal (for fast listing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub v: u32,
    pub run_id: String,
    pub runbook: String,
    pub runbook_path: String,
    pub runbook_sha256: String,
    pub plugins: Vec<PluginRef>,
    /// As shown: secrets masked.
    pub params: Vec<(String, String)>,
    pub environment: String,
    pub trigger: Trigger,
    pub approval: Option<Approval>,
    pub lock: Option<String>,
    pub dry_run: bool,
    /// A drill's notification run: it tells people, it changes nothing worth counting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notification: bool,
    pub status: RunStatus,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub pid: u32,
    /// When process `pid` started (clock ticks since boot): with the pid, it tells that
    /// process from a later one given the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub steps_total: usize,
    /// Main steps that ended (in any state).
    pub steps_done: usize,
    pub failed_step: Option<String>,
    /// An action step ran: the run changed something.
    pub changed: bool,
    /// When the last action step finished (the change was in place).
    pub changed_ms: Option<u64>,
    /// When the failure that started the rollback was detected (its step ended).
    pub detected_ms: Option<u64>,
    /// Whether that failure was caught by a gate.
    pub detected_by_gate: bool,
    /// When the verify checks passed after a rollback.
    pub recovered_ms: Option<u64>,
}

impl RunRecord {
    /// The process running the run (or that ran it last).
    pub fn process(&self) -> super::process::Process {
        super::process::Process {
            pid: self.pid,
            start: self.pid_start,
        }
    }
}

/// One journal event, with the time it was recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub v: u32,
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: JournalEvent,
}

impl JournalEntry {
    /// The event as recorded now.
    pub fn now(event: JournalEvent) -> JournalEntry {
        JournalEntry {
            v: super::FORMAT_VERSION,
            at_ms: super::now_ms(),
            event,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JournalEvent {
    RunStarted {
        pid: u32,
    },
    /// Another process picked the run up (`medic runs resume` or `medic runs rollback`).
    RunResumed {
        pid: u32,
        mode: String,
        /// Who picked it up (`user@host`).
        #[serde(default)]
        by: String,
        /// Plugins that differ from those the run started with (as they are now), taken
        /// anyway because whoever picked it up said so (`--accept-changed-plugins`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed_plugins: Vec<PluginRef>,
    },
    PhaseStarted {
        phase: Phase,
        reason: String,
    },
    StepStarted {
        phase: Phase,
        step: String,
        plugin: String,
    },
    /// A gate's bake time before its first check.
    Baking {
        step: String,
        wait_ms: u64,
    },
    /// A retry or gate check that is followed by another.
    AttemptFinished {
        step: String,
        note: String,
    },
    /// One target of a fleet step, done.
    TargetFinished {
        step: String,
        /// Shared with the event it journals (see [`crate::executor::Event::TargetFinished`]).
        #[serde(with = "crate::executor::shared")]
        report: std::sync::Arc<crate::executor::TargetReport>,
    },
    StepFinished {
        report: StepReport,
    },
    RunFinished {
        outcome: RunOutcome,
        duration_ms: u64,
    },
    /// Written by the process that found the run without an end.
    RunInterrupted {
        found_by_pid: u32,
    },
    /// The run's own process stopped it without finishing (a third Ctrl-C): it is left
    /// interrupted, for `medic runs rollback` or `resume`.
    RunAborted {
        reason: String,
    },
    ApprovalRequested {
        step: String,
        prompt: String,
        timeout_ms: u64,
    },
    ApprovalDecided {
        step: String,
        decision: crate::executor::Decision,
    },
    /// A plugin saved state for its revert (`space` is its plugin declaration), durably
    /// before the plugin went on: a later process undoes the step with it.
    KvSet {
        space: String,
        key: String,
        /// Hex of the bytes; none when the key was deleted.
        value: Option<String>,
    },
}
