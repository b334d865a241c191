use crate::host::bindings::medic::plugin::log::{Host, Level};
use crate::host::outcome::{LogLevel, LogLine};
use crate::host::sandbox::StoreState;

use super::{
    MAX_LOG_BYTES_PER_CALL, MAX_LOG_FIELD_BYTES, MAX_LOG_FIELD_KEY_BYTES, MAX_LOG_FIELDS,
    MAX_LOG_LINE_BYTES, MAX_LOG_LINES,
};
use crate::host::outcome::truncate;

impl Host for StoreState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let caps = &mut self.caps;
        if caps.logs.len() >= MAX_LOG_LINES || caps.log_bytes >= MAX_LOG_BYTES_PER_CALL {
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
        // Masked before anything else (a secret straddling the cut is not half kept), then
        // cut, with the memory beyond the cut given back.
        let mut message = message;
        caps.redactor.mask(&mut message);
        truncate(&mut message, MAX_LOG_LINE_BYTES);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(MAX_LOG_FIELDS)
            .map(|(mut k, mut v)| {
                caps.redactor.mask(&mut k);
                caps.redactor.mask(&mut v);
                truncate(&mut k, MAX_LOG_FIELD_KEY_BYTES);
                truncate(&mut v, MAX_LOG_FIELD_BYTES);
                (k, v)
            })
            .collect();
        caps.log_bytes +=
            message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
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
