//! Structured logging into the run record.
//!
//! Lines become part of the step's record and `tracing` events in the engine. The engine keeps
//! a bounded number of lines per call and truncates very long ones, so log what a responder
//! needs, not every byte of a response.

use crate::host::log as wit;

/// How important a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// For debugging a plugin.
    Debug,
    /// Normal progress.
    Info,
    /// Something a responder should notice.
    Warn,
    /// Something went wrong.
    Error,
}

/// Logs a line with structured fields.
///
/// ```no_run
/// use medic_plugin_sdk::log::{self, Level};
///
/// log::event(Level::Info, "probing", &[("url", "http://127.0.0.1:8080/health")]);
/// ```
pub fn event(level: Level, message: &str, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wit::log(level, message, &fields);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    event(Level::Debug, message, &[]);
}

/// Logs at info level.
pub fn info(message: &str) {
    event(Level::Info, message, &[]);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    event(Level::Warn, message, &[]);
}

/// Logs at error level.
pub fn error(message: &str) {
    event(Level::Error, message, &[]);
}
