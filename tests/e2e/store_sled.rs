//! The embedded store's files as something else left them: an older medic (records before
//! the index of running runs, a journal with a key per entry), a newer one, a bad disk.

use medic::store::{JournalEntry, JournalEvent, ListFilter, RunStatus, Store, StoreError, now_ms};

use crate::store::{hex_of, record};

#[test]
fn a_store_from_a_newer_medic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert("format", "99").unwrap();
        db.flush().unwrap();
    }
    match Store::open_waiting(dir.path(), "test", Some(std::time::Duration::from_secs(5))) {
        Err(e @ StoreError::NewerFormat { found: 99, .. }) => assert!(
            e.to_string()
                .contains("written by a newer medic (format 99; this medic reads format 2)"),
            "{e}"
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer store was opened"),
    }
}

#[test]
fn a_run_recorded_before_the_index_of_running_runs_is_still_found_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What a medic before the index left: records only, one of them running for a
        // process that is gone.
        let db = sled::open(dir.path().join("db")).unwrap();
        let runs = db.open_tree("runs").unwrap();
        for (id, status) in [("01a", RunStatus::Succeeded), ("01b", RunStatus::Running)] {
            let r = record(id, "deploy", "prod", status, now_ms());
            runs.insert(id, serde_json::to_vec(&r).unwrap()).unwrap();
        }
        db.flush().unwrap();
    }
    let open = || {
        Store::open_waiting(dir.path(), "test", Some(std::time::Duration::from_secs(5))).unwrap()
    };
    let store = open();
    assert_eq!(store.recover().unwrap(), ["01b"]);
    assert!(store.recover().unwrap().is_empty(), "recovered once");
    drop(store);
    // Runs recorded since are in the index.
    let store = open();
    store
        .put_record(&record(
            "01c",
            "deploy",
            "prod",
            RunStatus::Running,
            now_ms(),
        ))
        .unwrap();
    drop(store);
    assert_eq!(open().recover().unwrap(), ["01c"]);
}

#[test]
fn a_journal_recorded_an_entry_per_key_reads_and_grows_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let kv = |i: u8| {
        JournalEntry::now(JournalEvent::KvSet {
            space: "s".into(),
            key: format!("k{i}"),
            value: Some(hex_of(i)),
        })
    };
    {
        // What a medic before chunks left: one key per entry, even for entries appended
        // together (run id, '/', sequence number big-endian).
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert("format", "1").unwrap();
        let r = record("01old", "deploy", "prod", RunStatus::Succeeded, now_ms());
        db.open_tree("runs")
            .unwrap()
            .insert("01old", serde_json::to_vec(&r).unwrap())
            .unwrap();
        let events = db.open_tree("events").unwrap();
        for i in 0..4u8 {
            let mut key = b"01old/".to_vec();
            key.extend_from_slice(&u32::from(i).to_be_bytes());
            events
                .insert(key, serde_json::to_vec(&kv(i)).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }
    let store =
        Store::open_waiting(dir.path(), "test", Some(std::time::Duration::from_secs(5))).unwrap();
    assert_eq!(
        store
            .append_many("01old", None, &[kv(4), kv(5), kv(6)], true)
            .unwrap(),
        6
    );
    for from in 0..8 {
        let keys: Vec<String> = store
            .journal_from("01old", from, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| match e.event {
                JournalEvent::KvSet { key, .. } => key,
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<String> = (from..7).map(|i| format!("k{i}")).collect();
        assert_eq!(keys, expected, "from {from}");
    }
    drop(store);
    // Marked as the layout it now has: a medic that reads only the old one refuses it.
    let db = sled::open(dir.path().join("db")).unwrap();
    assert_eq!(db.get("format").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_corrupt_record_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("runs")
            .unwrap()
            .insert("01bad", "{not json")
            .unwrap();
        db.flush().unwrap();
    }
    let store =
        Store::open_waiting(dir.path(), "test", Some(std::time::Duration::from_secs(5))).unwrap();
    let err = store
        .list(&ListFilter::default(), 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt entry 01bad"), "{err}");
}

/// A bad block in the middle of the redo log, found when the store daemon opens it after the
/// last one was killed (sled not yet given the runs): the replay stops there, and the intact
/// frames after it, which the log would go on over, are kept aside and named.
#[test]
fn a_redo_log_damaged_mid_way_is_kept_aside_and_the_runs_it_lost_are_named() {
    use crate::cli::{medic, stderr, stdout};
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let rb = crate::shared_store::quick_runbook(cache.path());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let o = medic(
            cache.path(),
            &["run", rb.to_str().unwrap(), "--output", "json"],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let started = crate::support::json_lines(&stdout(&o)).remove(0);
        ids.push(started["run_id"].as_str().unwrap().to_owned());
    }
    // SIGKILL: sled is given the runs only at a checkpoint or when the daemon lets go.
    crate::store_daemon::kill_daemon(&data);
    let log = data.join("journal.wal");
    let mut bytes = std::fs::read(&log).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    for b in &mut bytes[end / 2..end / 2 + 20] {
        *b ^= 0xff;
    }
    std::fs::write(&log, &bytes).unwrap();

    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("redo log in") && err.contains("stops at a damaged or torn frame"),
        "{err}"
    );
    assert!(err.contains(&ids[2]), "the newest run is named: {err}");
    let kept = err
        .split("the log as found is kept in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("where the log is kept");
    assert_eq!(
        std::fs::read(kept).unwrap(),
        bytes,
        "kept as found, before the log went on"
    );
    // Told once, to the first command.
    let o = medic(cache.path(), &["runs", "list"]);
    assert!(!stderr(&o).contains("redo log"), "{}", stderr(&o));
}
