//! What one plugin call produced: an outcome or a named failure, plus everything the sandbox
//! observed (logs, capability uses, stderr).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bindings::types as wit;
use super::value::{Value, Values};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub summary: String,
    pub outputs: Values,
    pub metrics: Vec<(String, f64)>,
}

impl Outcome {
    pub(crate) fn from_wit(o: wit::Outcome) -> Self {
        Outcome {
            status: match o.status {
                wit::Status::Success => Status::Success,
                wit::Status::Failure => Status::Failure,
                wit::Status::Inconclusive => Status::Inconclusive,
            },
            summary: o.summary,
            outputs: o
                .outputs
                .into_iter()
                .map(|(n, v)| (n, Value::from_wit(v)))
                .collect(),
            metrics: o.metrics.into_iter().map(|m| (m.name, m.value)).collect(),
        }
    }
}

/// Why a call did not produce an outcome. Each variant is a distinct, named cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The plugin rejected its parameters.
    InvalidParams { message: String },
    /// The plugin reported an error that a retry may fix.
    Transient { message: String },
    /// The plugin reported an error that a retry will not fix.
    Permanent { message: String },
    /// The plugin used a capability it was not granted (or reported being denied one).
    Denied { message: String },
    /// The call ran past its deadline (in wasm code or in a host call).
    Timeout {
        #[serde(with = "ms")]
        after: Duration,
    },
    /// The plugin tried to grow its memory past the limit.
    MemoryLimit { limit: u64, requested: u64 },
    /// The plugin overflowed its stack (e.g. runaway recursion).
    StackOverflow,
    /// The plugin panicked; the message comes from its stderr.
    Panic { message: String },
    /// Any other trap (unreachable, out-of-bounds access...).
    Trap { message: String },
    /// The plugin called `exit` (WASI's `proc_exit`) instead of returning.
    PluginExit { code: i32 },
    /// The plugin went past a bound the engine sets on what it may hand over (one transfer
    /// of more than [`limits::MAX_TRANSFER_BYTES`](super::limits::MAX_TRANSFER_BYTES)).
    Limit { message: String },
    /// The plugin could not be instantiated or called at all.
    Engine { message: String },
}

mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Failure {
    pub(crate) fn from_wit(e: wit::PluginError) -> Self {
        match e {
            wit::PluginError::InvalidParams(message) => Failure::InvalidParams { message },
            wit::PluginError::Transient(message) => Failure::Transient { message },
            wit::PluginError::Permanent(message) => Failure::Permanent { message },
            wit::PluginError::Denied(message) => Failure::Denied { message },
        }
    }

    /// A short stable name for the cause, for output and records.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::InvalidParams { .. } => "invalid_params",
            Failure::Transient { .. } => "transient",
            Failure::Permanent { .. } => "permanent",
            Failure::Denied { .. } => "denied",
            Failure::Timeout { .. } => "timeout",
            Failure::MemoryLimit { .. } => "memory_limit",
            Failure::StackOverflow => "stack_overflow",
            Failure::Panic { .. } => "panic",
            Failure::Trap { .. } => "trap",
            Failure::PluginExit { .. } => "plugin_exit",
            Failure::Limit { .. } => "limit",
            Failure::Engine { .. } => "engine",
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient { .. } | Failure::Timeout { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::InvalidParams { message } => write!(f, "invalid parameters: {message}"),
            Failure::Transient { message } => write!(f, "transient error: {message}"),
            Failure::Permanent { message } => write!(f, "error: {message}"),
            Failure::Denied { message } => write!(f, "capability denied: {message}"),
            Failure::Timeout { after } => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            Failure::MemoryLimit { limit, requested } => write!(
                f,
                "memory limit exceeded: tried to grow to {} with a limit of {}",
                super::limits::format_bytes(*requested),
                super::limits::format_bytes(*limit)
            ),
            Failure::StackOverflow => f.write_str("stack overflow (runaway recursion?)"),
            Failure::Panic { message } => write!(f, "plugin panicked: {message}"),
            Failure::Trap { message } => write!(f, "plugin trapped: {message}"),
            Failure::PluginExit { code } => {
                write!(f, "plugin exited with code {code} instead of returning")
            }
            Failure::Limit { message } => write!(f, "plugin went past a limit: {message}"),
            Failure::Engine { message } => write!(f, "could not run the plugin: {message}"),
        }
    }
}

/// Cuts `s` to at most `max` bytes (on a character boundary), saying so, and gives back
/// the memory beyond: a plugin's 3 MiB string kept as 4 KiB must not hold its 3 MiB.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("… [truncated]");
    }
    s.shrink_to_fit();
}

/// What one call's outcome may hold (also stated in the README's sandbox section).
pub const MAX_SUMMARY_BYTES: usize = 16 << 10;
pub const MAX_OUTPUTS: usize = 64;
pub const MAX_OUTPUT_NAME_BYTES: usize = 128;
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
pub const MAX_OUTPUTS_TOTAL_BYTES: usize = 1 << 20;
pub const MAX_METRICS: usize = 64;
pub const MAX_ERROR_BYTES: usize = 16 << 10;

impl Outcome {
    /// Holds the outcome to the bounds above.
    pub(crate) fn bound(&mut self) {
        truncate(&mut self.summary, MAX_SUMMARY_BYTES);
        if self.outputs.len() > MAX_OUTPUTS {
            self.outputs.truncate(MAX_OUTPUTS);
            self.outputs.shrink_to_fit();
        }
        let mut total = MAX_OUTPUTS_TOTAL_BYTES;
        for (name, value) in &mut self.outputs {
            truncate(name, MAX_OUTPUT_NAME_BYTES);
            let mut budget = MAX_OUTPUT_BYTES.min(total);
            match value {
                Value::Text(t) => {
                    truncate(t, budget);
                    budget = budget.saturating_sub(t.len());
                }
                Value::TextList(items) => {
                    items.retain_mut(|item| {
                        let keep = budget > 0;
                        truncate(item, budget);
                        budget = budget.saturating_sub(item.len());
                        keep
                    });
                    items.shrink_to_fit();
                }
                _ => {}
            }
            total = total.saturating_sub(MAX_OUTPUT_BYTES.min(total) - budget);
        }
        self.metrics.truncate(MAX_METRICS);
        for (name, _) in &mut self.metrics {
            truncate(name, MAX_OUTPUT_NAME_BYTES);
        }
    }
}

impl Failure {
    /// The failure's text, for those that carry one (to mask, bound or escape it).
    pub fn message_mut(&mut self) -> Option<&mut String> {
        match self {
            Failure::InvalidParams { message }
            | Failure::Transient { message }
            | Failure::Permanent { message }
            | Failure::Denied { message }
            | Failure::Panic { message }
            | Failure::Trap { message }
            | Failure::Limit { message }
            | Failure::Engine { message } => Some(message),
            Failure::Timeout { .. }
            | Failure::MemoryLimit { .. }
            | Failure::StackOverflow
            | Failure::PluginExit { .. } => None,
        }
    }

    /// Holds a failure's text to [`MAX_ERROR_BYTES`].
    pub(crate) fn bound(&mut self) {
        if let Some(message) = self.message_mut() {
            truncate(message, MAX_ERROR_BYTES);
        }
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
    /// Milliseconds since the call started.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

/// One use of a capability, allowed or denied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapabilityUse {
    pub capability: String,
    /// What was done, without secrets: e.g. `GET 127.0.0.1:8080/health`.
    pub detail: String,
    pub allowed: bool,
    /// e.g. `200`, `denied: host not granted`, `timeout`.
    pub result: String,
    pub duration_us: u64,
}

/// Everything one call produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invocation {
    pub result: Result<Outcome, Failure>,
    pub logs: Vec<LogLine>,
    /// Lines beyond the per-call cap, counted but not kept.
    pub logs_dropped: u64,
    pub capability_uses: Vec<CapabilityUse>,
    /// The tail of what the plugin wrote to stdout and stderr.
    pub stderr: String,
    pub duration_us: u64,
    /// The outputs as the plugin returned them, when masking changed them: later steps and
    /// reverts need the real values. Never recorded nor shown.
    #[serde(skip)]
    pub unmasked_outputs: Option<Values>,
}

impl Invocation {
    /// A call the engine did not make, and why.
    pub fn not_called(why: &str) -> Invocation {
        Invocation {
            result: Err(Failure::Engine {
                message: why.to_owned(),
            }),
            logs: Vec::new(),
            logs_dropped: 0,
            capability_uses: Vec::new(),
            stderr: String::new(),
            duration_us: 0,
            unmasked_outputs: None,
        }
    }

    /// The outputs as the plugin returned them (secrets unmasked), for later steps.
    pub fn real_outputs(&self) -> Option<&Values> {
        self.unmasked_outputs
            .as_ref()
            .or_else(|| self.result.as_ref().ok().map(|o| &o.outputs))
    }
}
