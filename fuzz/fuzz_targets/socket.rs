//! A line on the store's socket, answered by the process holding the store (the read-only
//! queries every holder answers).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medic::store::Store;

fn store() -> &'static Store {
    static STORE: OnceLock<(Store, tempfile::TempDir)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&dir.path().join("data"), "fuzz").expect("store");
            (store, dir)
        })
        .0
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let answer = medic::store::remote::answer_line(store(), line);
    assert!(answer.ends_with('\n'), "{answer}");
});
