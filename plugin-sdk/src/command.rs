//! Allowlisted commands. The runbook grants exact programs and a pattern per argument; there
//! is no shell and no environment, output is capped, and the process is killed at the
//! deadline.
//!
//! ```no_run
//! use medic_plugin_sdk::command;
//!
//! # fn main() -> Result<(), medic_plugin_sdk::Error> {
//! let out = command::run("/usr/bin/systemctl", &["restart", "checkout.service"], None)?;
//! assert_eq!(out.exit_code, Some(0));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::host::command as wit;

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `None` when a signal ended the process.
    pub exit_code: Option<i32>,
    /// Standard output, up to the engine's cap.
    pub stdout: Vec<u8>,
    /// Standard error, up to the engine's cap.
    pub stderr: Vec<u8>,
    /// Output beyond the cap was dropped.
    pub truncated: bool,
}

/// Why a command did not produce an [`Output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The program or its arguments are not granted.
    Denied(String),
    /// The command's own timeout passed; it was killed.
    Timeout(String),
    /// It could not be started.
    Failed(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Denied(m) => write!(f, "command denied: {m}"),
            CommandError::Timeout(m) => write!(f, "command timeout: {m}"),
            CommandError::Failed(m) => write!(f, "command failed to start: {m}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Timeouts are transient; a refusal or a missing program is not.
impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Denied(_) => Error::Denied(e.to_string()),
            CommandError::Timeout(_) => Error::Transient(e.to_string()),
            CommandError::Failed(_) => Error::Permanent(e.to_string()),
        }
    }
}

/// Runs `program` with `args` and waits for it (within `timeout` and the call's deadline).
pub fn run(
    program: &str,
    args: &[&str],
    timeout: Option<Duration>,
) -> Result<Output, CommandError> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    wit::run(program, &args, timeout_ms)
        .map(|o| Output {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
            truncated: o.truncated,
        })
        .map_err(|e| match e {
            wit::CommandError::Denied(m) => CommandError::Denied(m),
            wit::CommandError::Timeout(m) => CommandError::Timeout(m),
            wit::CommandError::Failed(m) => CommandError::Failed(m),
        })
}
