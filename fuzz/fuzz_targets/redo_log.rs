//! The embedded store's redo log as a crash or a bad disk may leave it (`DATA_DIR/journal.wal`):
//! read and decoded as opening the store does, which must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = medic::store::inspect_redo_log(data);
});
