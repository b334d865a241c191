//! Time, bounded by the call's deadline.

use std::time::Duration;

use crate::host::clock as wit;

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    wit::now_unix_ms()
}

/// What is left of the call's time budget.
pub fn remaining() -> Duration {
    Duration::from_millis(wit::remaining_ms())
}

/// Sleeps. A sleep that would run past the deadline ends the call as timed out, so check
/// [`remaining`] first when a plugin should rather report something.
pub fn sleep(duration: Duration) {
    wit::sleep_ms(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
}
