//! Host capabilities. Each one is denied unless the runbook grants it, checked at call time,
//! bounded by the call's deadline, and recorded.

pub mod clock;
pub mod command;
pub mod http;
pub mod kv;
pub mod log;
pub mod tcp;

use std::time::{Duration, Instant};

pub use command::CommandGrant;
pub use http::{HostGrant, allows_url};
pub use kv::{KvJournal, KvSpace};

use super::outcome::{CapabilityUse, LogLine};

/// What a runbook grants one plugin declaration.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Hosts the plugin may send HTTP requests to. Empty: no HTTP at all.
    pub http: Vec<HostGrant>,
    /// `ip:port` addresses the plugin may exchange raw TCP with. Empty: none.
    pub tcp: Vec<HostGrant>,
    /// Programs (with argument patterns) the plugin may run. Empty: none.
    pub command: Vec<CommandGrant>,
    /// Whether the plugin may use run-scoped key-value state.
    pub kv: bool,
}

/// The trap raised when a host call would run past the call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded in a host call")]
pub struct DeadlineExceeded;

/// The trap raised when a plugin uses a capability it was not granted and cannot be told so
/// through the interface's own error type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CapabilityDenied(pub String);

/// The trap raised when a capability that acts is used while the step's start, sent while
/// the call began, could not be recorded ([`crate::ahead`]): nothing is done unrecorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotRecorded(pub String);

/// Bounds on what one call may leave in the record (and hold in memory): at most 1 MiB of
/// log text and about 2 MiB of capability uses per call, whatever the plugin sends.
pub const MAX_LOG_LINES: usize = 1000;
pub const MAX_LOG_LINE_BYTES: usize = 4096;
pub const MAX_LOG_FIELDS: usize = 16;
pub const MAX_LOG_FIELD_KEY_BYTES: usize = 64;
pub const MAX_LOG_FIELD_BYTES: usize = 1024;
pub const MAX_LOG_BYTES_PER_CALL: usize = 1 << 20;
pub const MAX_CAPABILITY_USES: usize = 1000;
pub const MAX_USE_DETAIL_BYTES: usize = 1024;

/// What a call waited for the run's store inside its host calls (its step's start confirmed
/// before a capability acts, a kv write made durable before the plugin is told it
/// succeeded): the store's time, not the plugin's, so the call's deadline and its outer
/// bound move by it. Shared between the call's state and its outer bound. (Counted per
/// call, where the wait happens, rather than read off the run's write-ahead state at every
/// epoch tick.)
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreWaited(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl StoreWaited {
    pub fn add(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Per-call state of the capabilities.
pub(crate) struct CapState {
    pub grants: std::sync::Arc<Grants>,
    pub kv: KvSpace,
    pub http: http::LazyHttp,
    pub started: Instant,
    /// `started` + the call's timeout; see [`CapState::deadline`].
    pub deadline: Instant,
    /// What the call waited for the store in its own host calls.
    pub store_waited: StoreWaited,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u64,
    pub uses: Vec<CapabilityUse>,
    /// The first denial; a call that was denied a capability fails even if the plugin
    /// carries on, so a plugin cannot hide that it tried.
    pub denied: Option<String>,
    /// Identifies the call in tracing events.
    pub plugin: String,
    pub step: String,
    /// Masks secrets before anything is traced or kept.
    pub redactor: std::sync::Arc<crate::host::redact::Redactor>,
    /// Log text kept so far (bounded by [`MAX_LOG_BYTES_PER_CALL`]).
    pub log_bytes: usize,
}

impl CapState {
    /// When the call's time is up: its timeout from when it was asked for, plus what it
    /// waited meanwhile for its step's start to be recorded and for its kv writes to be
    /// (not the plugin's time).
    pub fn deadline(&self) -> Instant {
        self.deadline + self.store_waited.get()
    }

    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Before a capability acts (its grant checked): the step's start must be recorded.
    /// Returns `start` (when the use began) moved by the wait, which is not the use's time.
    pub fn before_acting(&self, start: Instant) -> wasmtime::Result<Instant> {
        let begun = Instant::now();
        let settled = crate::ahead::settle();
        self.store_waited.add(begun.elapsed());
        settled.map_err(|why| wasmtime::Error::new(NotRecorded(why)))?;
        Ok(start + begun.elapsed())
    }

    pub fn record(
        &mut self,
        capability: &'static str,
        mut detail: String,
        allowed: bool,
        mut result: String,
        since: Instant,
    ) {
        // Bounded like logs: a plugin looping over a capability must not grow the record
        // forever, nor one use (a 1 MiB URL) hold much.
        if self.uses.len() >= MAX_CAPABILITY_USES {
            return;
        }
        for text in [&mut detail, &mut result] {
            self.redactor.mask(text);
            crate::host::outcome::truncate(text, MAX_USE_DETAIL_BYTES);
        }
        self.uses.push(CapabilityUse {
            capability: capability.to_owned(),
            detail,
            allowed,
            result,
            duration_us: u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }

    pub fn deny(
        &mut self,
        capability: &'static str,
        mut detail: String,
        mut reason: String,
    ) -> String {
        for text in [&mut detail, &mut reason] {
            *text = self.redactor.error_text(text);
            crate::host::outcome::truncate(text, MAX_USE_DETAIL_BYTES);
        }
        let message = format!("{capability} {detail}: {reason}");
        tracing::warn!(target: "medic::plugin", plugin = %self.plugin, step = %self.step, "capability denied: {message}");
        self.record(
            capability,
            detail,
            false,
            format!("denied: {reason}"),
            Instant::now(),
        );
        if self.denied.is_none() {
            self.denied = Some(message.clone());
        }
        message
    }
}

// The `types` interface holds only types, but the generated linker still wants a Host impl.
impl crate::host::bindings::medic::plugin::types::Host for crate::host::sandbox::StoreState {}
