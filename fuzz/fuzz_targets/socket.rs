//! A line on a data directory's sockets: the store daemon's (every store call) and `medic
//! serve`'s (the reads it answers).
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
    let answer = medic::store::daemon::answer_text(store(), line);
    assert!(answer.ends_with('\n'), "{answer}");
});
