//! Key-value state that lives as long as the run.
//!
//! Each plugin declaration in a runbook has its own space: an action can store what it
//! changed, and its revert (or a later step using the same declaration) can read it back.
//! Requires the `kv` capability grant.

use crate::Error;
use crate::host::kv as wit;

/// Reads a value.
pub fn get(key: &str) -> Option<Vec<u8>> {
    wit::get(key)
}

/// Reads a value as UTF-8 text; `None` when absent or not text.
pub fn get_text(key: &str) -> Option<String> {
    get(key).and_then(|v| String::from_utf8(v).ok())
}

/// Stores a value. Fails when the key or value is too large or the run's store is full.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    wit::set(key, value.as_ref()).map_err(Error::permanent)
}

/// Removes a value.
pub fn delete(key: &str) {
    wit::delete(key)
}
