use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::host::bindings::medic::plugin::clock::Host;
use crate::host::sandbox::StoreState;

use super::DeadlineExceeded;

impl Host for StoreState {
    async fn now_unix_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    async fn remaining_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.caps.remaining().as_millis() as u64)
    }

    async fn sleep_ms(&mut self, ms: u64) -> wasmtime::Result<()> {
        let wanted = Duration::from_millis(ms);
        let remaining = self.caps.remaining();
        if wanted >= remaining {
            // Sleep to the deadline rather than failing at once, so the call ends when its
            // budget is spent, as it would have without the sleep.
            tokio::time::sleep(remaining).await;
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        tokio::time::sleep(wanted).await;
        Ok(())
    }
}
