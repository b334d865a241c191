//! The run store through its API: listing with filters, pruning, locks, format versions.

use medic::store::{
    JournalEvent, ListFilter, LockHolder, RunRecord, RunStatus, Store, StoreError, Trigger, now_ms,
};

fn record(id: &str, runbook: &str, env: &str, status: RunStatus, started_ms: u64) -> RunRecord {
    RunRecord {
        v: 1,
        run_id: id.into(),
        runbook: runbook.into(),
        runbook_path: "rb.toml".into(),
        runbook_sha256: "0".repeat(64),
        plugins: vec![],
        params: vec![],
        environment: env.into(),
        trigger: if env == "prod" {
            Trigger::Schedule {
                drill: "nightly".into(),
            }
        } else {
            Trigger::Cli {
                user: "u".into(),
                host: "h".into(),
            }
        },
        approval: None,
        lock: None,
        dry_run: false,
        notification: false,
        status,
        started_ms,
        ended_ms: Some(started_ms + 10),
        pid: 1,
        steps_total: 1,
        steps_done: 1,
        failed_step: None,
        changed: false,
        changed_ms: None,
        detected_ms: None,
        detected_by_gate: false,
        recovered_ms: None,
    }
}

#[test]
fn list_filters_newest_first_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    let now = now_ms();
    let day = 86_400_000;
    // ULIDs sort by time; these ids sort the same way as their start times.
    let runs = [
        (
            "01a",
            "deploy",
            "staging",
            RunStatus::Succeeded,
            now - 100 * day,
        ),
        (
            "01b",
            "deploy",
            "prod",
            RunStatus::RolledBack,
            now - 10 * day,
        ),
        (
            "01c",
            "restart",
            "staging",
            RunStatus::Failed,
            now - 2 * day,
        ),
        ("01d", "deploy", "staging", RunStatus::Succeeded, now - day),
    ];
    for (id, rb, env, st, at) in runs {
        store.put_record(&record(id, rb, env, st, at)).unwrap();
        store
            .append(id, JournalEvent::RunStarted { pid: 1 })
            .unwrap();
    }
    let ids = |f: ListFilter, limit| {
        store
            .list(&f, limit)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(ListFilter::default(), 50), ["01d", "01c", "01b", "01a"]);
    assert_eq!(ids(ListFilter::default(), 2), ["01d", "01c"]);
    assert_eq!(
        ids(
            ListFilter {
                runbook: Some("deploy".into()),
                ..Default::default()
            },
            50
        ),
        ["01d", "01b", "01a"]
    );
    assert_eq!(
        ids(
            ListFilter {
                status: Some(RunStatus::RolledBack),
                ..Default::default()
            },
            50
        ),
        ["01b"]
    );
    assert_eq!(
        ids(
            ListFilter {
                environment: Some("staging".into()),
                ..Default::default()
            },
            50
        ),
        ["01d", "01c", "01a"]
    );
    assert_eq!(
        ids(
            ListFilter {
                trigger: Some("schedule".into()),
                ..Default::default()
            },
            50
        ),
        ["01b"]
    );
    assert_eq!(
        ids(
            ListFilter {
                since_ms: Some(now - 5 * day),
                ..Default::default()
            },
            50
        ),
        ["01d", "01c"]
    );
    assert_eq!(
        ids(
            ListFilter {
                until_ms: Some(now - 5 * day),
                ..Default::default()
            },
            50
        ),
        ["01b", "01a"]
    );

    assert_eq!(store.find("01c").unwrap().runbook, "restart");
    assert!(matches!(
        store.find("01"),
        Err(StoreError::Ambiguous { .. })
    ));
    assert!(matches!(store.find("zz"), Err(StoreError::NoSuchRun(_))));

    assert_eq!(store.prune(now - 30 * day).unwrap(), 1);
    assert_eq!(ids(ListFilter::default(), 50), ["01d", "01c", "01b"]);
    assert!(
        store.journal("01a").unwrap().is_empty(),
        "pruning left the journal behind"
    );
    assert_eq!(store.journal("01b").unwrap().len(), 1);
}

#[test]
fn locks_exclude_other_runs_and_are_released_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let holder = |run: &str| LockHolder {
        run_id: run.into(),
        runbook: "deploy".into(),
        pid: 1,
        since_ms: now_ms(),
    };
    {
        let store = Store::open(dir.path(), "test").unwrap();
        let mut r = record("01x", "deploy", "prod", RunStatus::Running, now_ms());
        r.lock = Some("service:checkout:prod".into());
        store.put_record(&r).unwrap();
        assert!(
            store
                .acquire_lock("service:checkout:prod", &holder("01x"))
                .unwrap()
                .is_ok()
        );
        let held = store
            .acquire_lock("service:checkout:prod", &holder("01y"))
            .unwrap()
            .unwrap_err();
        assert_eq!(held.run_id, "01x");
        assert!(
            store
                .acquire_lock("service:checkout:prod", &holder("01x"))
                .unwrap()
                .is_ok(),
            "a run may take its own lock again"
        );
        assert!(
            store
                .acquire_lock("service:payments:prod", &holder("01y"))
                .unwrap()
                .is_ok(),
            "other keys are independent"
        );
        store.flush().unwrap();
        // The process "dies" here with 01x running.
    }
    let store =
        Store::open_waiting(dir.path(), "test", Some(std::time::Duration::from_secs(5))).unwrap();
    assert_eq!(store.recover().unwrap(), ["01x"]);
    assert_eq!(
        store.record("01x").unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    assert!(
        store
            .acquire_lock("service:checkout:prod", &holder("01z"))
            .unwrap()
            .is_ok(),
        "recovery releases the dead run's lock"
    );
    assert!(
        store
            .acquire_lock("service:payments:prod", &holder("01w"))
            .unwrap()
            .is_ok(),
        "a lock whose run never got a record (killed in between) is released too"
    );
}

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
                .contains("written by a newer medic (format 99")
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer store was opened"),
    }
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

#[test]
fn dry_runs_and_drill_notifications_count_neither_as_changes_nor_as_successes() {
    let mut changed = record("01a", "deploy", "staging", RunStatus::RolledBack, 1);
    changed.changed = true;
    let mut dry = record("01b", "deploy", "staging", RunStatus::DryRun, 2);
    dry.dry_run = true;
    dry.changed = true;
    let mut told = record("01c", "notify", "staging", RunStatus::Succeeded, 3);
    told.notification = true;
    told.changed = true;
    let st = medic::store::stats::compute(&[changed, dry, told]);
    assert_eq!(st.runs, 1, "{st:?}");
    assert_eq!(st.succeeded, 0, "{st:?}");
    assert_eq!((st.change_runs, st.failed_changes), (1, 1), "{st:?}");
    assert_eq!(st.change_failure_rate, Some(1.0));
}
