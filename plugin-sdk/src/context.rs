use std::time::Duration;

use crate::bindings::medic::plugin::types as wit;

/// Where a call stands in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The run's unique id.
    pub run_id: String,
    /// The id of the step in the runbook.
    pub step_id: String,
    /// 1 for the first attempt, then 2, 3... on retries and resumed runs.
    pub attempt: u32,
    /// The environment the run targets, e.g. `staging`.
    pub environment: String,
    /// When set, an action must change nothing and report what it would do.
    pub dry_run: bool,
    /// The whole call's budget. Use [`crate::clock::remaining`] for what is left of it.
    pub timeout: Duration,
    /// The deadline as milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
}

impl Context {
    pub(crate) fn from_wit(c: wit::Context) -> Self {
        Context {
            run_id: c.run_id,
            step_id: c.step_id,
            attempt: c.attempt,
            environment: c.environment,
            dry_run: c.dry_run,
            timeout: Duration::from_millis(c.timeout_ms),
            deadline_unix_ms: c.deadline_unix_ms,
        }
    }
}
