//! Journal entries and run records as read back from the store (a corrupted store, an
//! older or newer medic): decoded, and shown as `medic runs show` would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic::store::{JournalEntry, RunRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = serde_json::from_slice::<JournalEntry>(data) {
        let _ = serde_json::to_vec(&entry);
    }
    if let Ok(record) = serde_json::from_slice::<RunRecord>(data) {
        let _ = medic::store::stats::compute(std::slice::from_ref(&record));
        let _ = serde_json::to_vec(&record);
    }
    let _ = serde_json::from_slice::<medic::executor::OwnedEvent>(data);
});
