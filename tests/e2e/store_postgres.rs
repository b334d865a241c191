//! What is particular to the PostgreSQL store: several processes at once, each seeing the
//! others' runs and none taking a live one's for dead; a process on another host found dead
//! by its lease; lost connections made again; fencing of a stalled process; migrations.

use medic::store::{JournalEvent, LockHolder, RunStatus, Store, StoreError, now_ms};

use crate::store::{Kind, Place, record};

#[test]
fn postgres_processes_share_runs_and_recover_only_the_dead() {
    let place = Place::new(Kind::Postgres);
    let a = place.open();
    let b = place.open();
    a.put_record(&record(
        "01live",
        "deploy",
        "staging",
        RunStatus::Running,
        now_ms(),
    ))
    .unwrap();
    let holder = LockHolder::this("01live", "deploy");
    assert!(a.acquire_lock("svc", &holder).unwrap().is_ok());
    assert_eq!(b.find("01li").unwrap().status, RunStatus::Running);
    assert!(
        b.recover().unwrap().is_empty(),
        "a live process's run was taken for dead"
    );
    let other = LockHolder {
        run_id: "01other".into(),
        ..holder.clone()
    };
    assert_eq!(
        b.acquire_lock("svc", &other).unwrap().unwrap_err().run_id,
        "01live",
        "another process's live lock is refused"
    );
    // A process on another host whose heartbeat stopped (its host died) LEASE ago, with a
    // run and a lock: written as that process would have left them.
    let stale = now_ms() - medic::store::postgres::LEASE.as_millis() as u64 - 1_000;
    let url = place.url.as_deref().unwrap();
    let ghost = Store::connect(url, place.dir.path(), "ghost").unwrap();
    ghost
        .put_record(&record(
            "01dead",
            "deploy",
            "prod",
            RunStatus::Running,
            now_ms(),
        ))
        .unwrap();
    let dead_holder = LockHolder {
        run_id: "01dead".into(),
        ..holder.clone()
    };
    assert!(ghost.acquire_lock("svc-2", &dead_holder).unwrap().is_ok());
    let owner = crate::pglab::query(
        url,
        "SELECT owner_id FROM medic_runs WHERE run_id = '01dead'",
    );
    // Detached from this process: the row says another host, and its heartbeat is old.
    crate::pglab::query(url, &format!(
        "UPDATE medic_owners SET heartbeat_ms = {stale}, host = 'elsewhere', owner_id = 'ghost' WHERE owner_id = '{owner}';
         UPDATE medic_runs SET owner_id = 'ghost' WHERE owner_id = '{owner}';
         UPDATE medic_locks SET owner_id = 'ghost' WHERE owner_id = '{owner}'"
    ));
    assert_eq!(
        b.recover().unwrap(),
        ["01dead"],
        "only the dead process's run"
    );
    assert_eq!(
        b.record("01dead").unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    assert_eq!(
        b.record("01live").unwrap().unwrap().status,
        RunStatus::Running
    );
    assert!(
        b.acquire_lock("svc-2", &other).unwrap().is_ok(),
        "the dead run's lock is released"
    );
    assert!(
        a.recover().unwrap().is_empty(),
        "recovered by exactly one process"
    );
    drop(ghost);
    // The migrations ran once each, and a newer schema is refused.
    assert_eq!(
        crate::pglab::query(url, "SELECT count(*) FROM medic_schema_migrations"),
        "2"
    );
    crate::pglab::query(
        url,
        "INSERT INTO medic_schema_migrations VALUES (99, 'future', 0)",
    );
    match Store::connect(url, place.dir.path(), "test") {
        Err(e @ StoreError::NewerFormat { found: 99, .. }) => {
            assert!(e.to_string().contains("newer medic"), "{e}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer schema was used"),
    }
}

/// PostgreSQL down: a clear error naming the place without its password.
#[test]
fn postgres_unreachable_is_named_without_password() {
    let port = crate::lab::free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://medic:s3cret@127.0.0.1:{port}/nothing");
    let err = match Store::connect(&url, dir.path(), "test") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(
        err.contains("cannot reach the run store at postgres://medic@127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// Connections cut under a process (a database restart, a proxy's idle timeout): the next
/// call makes them again instead of failing.
#[test]
fn postgres_connections_cut_are_made_again() {
    let place = Place::new(Kind::Postgres);
    let store = place.open();
    store
        .put_record(&record(
            "01cut",
            "deploy",
            "staging",
            RunStatus::Succeeded,
            1,
        ))
        .unwrap();
    let url = place.url.as_deref().unwrap();
    let cut = crate::pglab::query(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'medic' AND datname = current_database()",
    );
    assert_ne!(cut, "0", "no connection was cut");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    for _ in 0..8 {
        assert_eq!(store.find("01cut").unwrap().run_id, "01cut");
    }
}

/// Fencing: a process that stalled past its lease, whose run was found interrupted and
/// picked up by another, is refused when it wakes and writes again, and nothing it tries
/// lands; a run found interrupted but not picked up yet, it takes back.
#[test]
fn postgres_a_stalled_process_cannot_write_over_a_run_picked_up_by_another() {
    let place = Place::new(Kind::Postgres);
    let url = place.url.clone().unwrap();
    let (a, c) = (place.open(), place.open());
    let interrupt = |id: &str| {
        crate::pglab::query(
            &url,
            &format!(
                "UPDATE medic_runs SET status = 'interrupted', owner_id = NULL WHERE run_id = '{id}'"
            ),
        )
    };
    let running = record("01stall", "deploy", "staging", RunStatus::Running, now_ms());
    a.append_with_record(&running, JournalEvent::RunStarted { pid: 1 }, false)
        .unwrap();
    // `a` stalls; another process finds the run interrupted, and `c` picks it up.
    interrupt("01stall");
    c.append_with_record(&running, JournalEvent::RunStarted { pid: 2 }, false)
        .unwrap();
    let before = c.journal("01stall").unwrap().len();
    let err = a
        .append_with_record(&running, JournalEvent::RunStarted { pid: 1 }, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run 01stall is run by another process now"),
        "{err}"
    );
    let mut ended = running.clone();
    ended.status = RunStatus::Succeeded;
    assert!(a.put_record(&ended).is_err(), "a record written over");
    assert_eq!(
        c.journal("01stall").unwrap().len(),
        before,
        "an entry landed"
    );
    assert_eq!(
        c.record("01stall").unwrap().unwrap().status,
        RunStatus::Running
    );
    // The process that picked it up goes on, and ends it.
    c.append_with_record(&ended, JournalEvent::RunStarted { pid: 2 }, false)
        .unwrap();
    // Found interrupted, nobody picked it up: the process that wakes takes it back.
    let mine = record("01mine", "deploy", "staging", RunStatus::Running, now_ms());
    a.append_with_record(&mine, JournalEvent::RunStarted { pid: 1 }, false)
        .unwrap();
    interrupt("01mine");
    a.append_with_record(&mine, JournalEvent::RunStarted { pid: 1 }, false)
        .unwrap();
    assert_eq!(
        c.record("01mine").unwrap().unwrap().status,
        RunStatus::Running
    );
}
