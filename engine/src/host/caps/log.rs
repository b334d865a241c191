use crate::host::bindings::medic::plugin::log::{Host, Level};
use crate::host::outcome::{LogLevel, LogLine};
use crate::host::sandbox::StoreState;

use super::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES};

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("… [truncated]");
    }
    s
}

impl Host for StoreState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let caps = &mut self.caps;
        if caps.logs.len() >= MAX_LOG_LINES {
            caps.logs_dropped += 1;
            return Ok(());
        }
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let message = truncate(message, MAX_LOG_LINE_BYTES);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(32)
            .map(|(k, v)| (truncate(k, 128), truncate(v, MAX_LOG_LINE_BYTES)))
            .collect();
        let (plugin, step) = (&caps.plugin, &caps.step);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "medic::plugin", %plugin, %step, ?fields, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "medic::plugin", %plugin, %step, ?fields, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "medic::plugin", %plugin, %step, ?fields, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "medic::plugin", %plugin, %step, ?fields, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "medic::plugin", %plugin, %step, ?fields, "{message}")
            }
        }
        let at_ms = u64::try_from(caps.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        caps.logs.push(LogLine {
            level,
            message,
            fields,
            at_ms,
        });
        Ok(())
    }
}
