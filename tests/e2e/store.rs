//! The run store through its API, on both backends: one conformance suite that the embedded
//! store (sled) and PostgreSQL must each pass. The embedded store's files as older medics,
//! newer ones or a bad disk left them are in `store_sled.rs`; PostgreSQL's own (several
//! processes at once, fencing, lost connections) in `store_postgres.rs`.

use medic::store::drills::{DrillRecord, Paused};
use medic::store::{
    JournalEntry, JournalEvent, ListFilter, LockHolder, RunRecord, RunStatus, Store, StoreError,
    Trigger, now_ms,
};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Sled,
    Postgres,
}

/// A store's place: a data directory, and for PostgreSQL a fresh database.
pub(crate) struct Place {
    pub(crate) dir: TempDir,
    pub(crate) url: Option<String>,
}

impl Place {
    pub(crate) fn new(kind: Kind) -> Place {
        Place {
            dir: tempfile::tempdir().unwrap(),
            url: (kind == Kind::Postgres).then(crate::pglab::database),
        }
    }

    /// Opens it as a new process would.
    pub(crate) fn open(&self) -> Store {
        match &self.url {
            Some(url) => Store::connect(url, self.dir.path(), "test").unwrap(),
            None => Store::open_waiting(
                self.dir.path(),
                "test",
                Some(std::time::Duration::from_secs(5)),
            )
            .unwrap(),
        }
    }
}

/// Each conformance test, once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled_store {
            $(#[test] fn $name() { super::$name(super::Kind::Sled) })*
        }
        mod postgres_store {
            $(#[test] fn $name() { super::$name(super::Kind::Postgres) })*
        }
    };
}

conformance!(
    list_filters_newest_first_and_prune,
    locks_exclude_other_runs_and_are_released_by_recovery,
    journal_sequences_are_dense_under_concurrent_appends,
    entries_appended_together_keep_their_order_beside_other_writers,
    a_journal_reads_the_same_from_every_position,
    drill_records_state_and_slots,
    trigger_state_and_alerts,
    run_ids_are_found_by_prefix_literally,
    approvals_tokens_and_audit_are_seen_by_every_process,
);

/// A pid no process has (beyond Linux's largest, 2^22): the process that ran a record made
/// by these tests is gone.
const GONE: u32 = 999_999_999;

pub(crate) fn record(
    id: &str,
    runbook: &str,
    env: &str,
    status: RunStatus,
    started_ms: u64,
) -> RunRecord {
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
        pid: GONE,
        pid_start: None,
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

fn list_filters_newest_first_and_prune(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
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
            .append(id, JournalEvent::RunStarted { pid: 1 }, false)
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
    assert_eq!(ids(ListFilter::default(), usize::MAX).len(), 4, "no limit");
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

fn locks_exclude_other_runs_and_are_released_by_recovery(kind: Kind) {
    let place = Place::new(kind);
    let holder = |run: &str| LockHolder {
        pid: GONE,
        ..LockHolder::this(run, "deploy")
    };
    {
        let store = place.open();
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
    let store = place.open();
    assert_eq!(store.recover().unwrap(), ["01x"]);
    assert!(
        matches!(
            store.journal("01x").unwrap().last().map(|e| &e.event),
            Some(JournalEvent::RunInterrupted { .. })
        ),
        "recovery journals the interruption"
    );
    assert!(store.recover().unwrap().is_empty(), "recovered once");
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

fn journal_sequences_are_dense_under_concurrent_appends(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
    store
        .put_record(&record(
            "01j",
            "deploy",
            "staging",
            RunStatus::Running,
            now_ms(),
        ))
        .unwrap();
    // A run's kv writes come from plugin calls beside the recorder's events.
    let seqs: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            store
                                .append(
                                    "01j",
                                    JournalEvent::KvSet {
                                        space: format!("t{t}"),
                                        key: format!("k{i}"),
                                        value: Some(hex_of(i)),
                                    },
                                    false,
                                )
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
    assert_eq!(store.journal("01j").unwrap().len(), 100);
    assert_eq!(store.journal_from("01j", 90, usize::MAX).unwrap().len(), 10);
    let kv = store.kv_state("01j").unwrap();
    assert_eq!(kv.len(), 4);
    assert_eq!(kv["t2"]["k7"], vec![7u8]);
    assert!(store.journal("01other").unwrap().is_empty());
}

/// What the recorder does with a fleet's targets that finished together: one call for all,
/// while another thread of the run (a plugin's key-value write) appends beside it.
fn entries_appended_together_keep_their_order_beside_other_writers(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
    let mut r = record("01m", "deploy", "prod", RunStatus::Running, now_ms());
    store.put_record(&r).unwrap();
    let kv = |i: u8| JournalEvent::KvSet {
        space: "other".into(),
        key: format!("k{i}"),
        value: Some(hex_of(i)),
    };
    let batch = |b: u8| -> Vec<JournalEntry> {
        (0..5)
            .map(|i| {
                JournalEntry::now(JournalEvent::KvSet {
                    space: format!("batch{b}"),
                    key: format!("k{i}"),
                    value: Some(hex_of(i)),
                })
            })
            .collect()
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            for i in 0..100 {
                store.append("01m", kv(i), false).unwrap();
            }
        });
        for b in 0..10u8 {
            r.steps_done = usize::from(b) + 1;
            let last = store
                .append_many("01m", Some(&r), &batch(b), b == 9)
                .unwrap();
            let journal = store.journal("01m").unwrap();
            assert!(matches!(
                &journal[last as usize].event,
                JournalEvent::KvSet { space, key, .. } if *space == format!("batch{b}") && key == "k4"
            ));
        }
        other.join().unwrap();
    });
    let journal = store.journal("01m").unwrap();
    assert_eq!(journal.len(), 150);
    // Each batch's entries are consecutive, in order.
    for b in 0..10 {
        let at = journal
            .iter()
            .position(|e| matches!(&e.event, JournalEvent::KvSet { space, .. } if *space == format!("batch{b}")))
            .unwrap();
        for i in 0..5 {
            assert!(matches!(
                &journal[at + i].event,
                JournalEvent::KvSet { space, key, .. } if *space == format!("batch{b}") && *key == format!("k{i}")
            ));
        }
    }
    assert_eq!(store.record("01m").unwrap().unwrap().steps_done, 10);
    assert!(
        store.append_many("01m", None, &[], true).is_err(),
        "nothing to append is refused, not a silent success"
    );
}

/// Entries appended one at a time and together, read back from every position: a reader
/// that follows a run (`medic runs show --follow`, the API's event stream) starts where it
/// stopped, which may be inside what was appended together.
fn a_journal_reads_the_same_from_every_position(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
    let r = record("01p", "deploy", "prod", RunStatus::Running, now_ms());
    store.put_record(&r).unwrap();
    let kv = |i: u8| {
        JournalEntry::now(JournalEvent::KvSet {
            space: "s".into(),
            key: format!("k{i}"),
            value: Some(hex_of(i)),
        })
    };
    let mut next = 0u8;
    for n in [1, 3, 1, 1, 7, 2, 1] {
        let entries: Vec<JournalEntry> = (next..next + n).map(kv).collect();
        next += n;
        let last = store.append_many("01p", None, &entries, false).unwrap();
        assert_eq!(last, u32::from(next) - 1, "the last entry's number");
    }
    store.append("01p", kv(next).event, true).unwrap();
    let all = next + 1;
    let key_of = |e: &JournalEntry| match &e.event {
        JournalEvent::KvSet { key, .. } => key.clone(),
        other => panic!("{other:?}"),
    };
    for from in 0..=usize::from(all) + 2 {
        // Whole, and a page at a time of each size (pages end inside chunks, at their ends).
        for limit in [usize::MAX, 1, 2, 3, 5, 8] {
            let keys: Vec<String> = store
                .journal_from("01p", from, limit)
                .unwrap()
                .iter()
                .map(key_of)
                .collect();
            let expected: Vec<String> = (from..usize::from(all))
                .take(limit)
                .map(|i| format!("k{i}"))
                .collect();
            assert_eq!(keys, expected, "from {from}, at most {limit}");
        }
    }
    assert!(
        store
            .journal_from("01p", usize::MAX, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

pub(crate) fn hex_of(i: u8) -> String {
    format!("{i:02x}")
}

fn drill_records_state_and_slots(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
    let mut a = DrillRecord::new("rollback-a", "schedule", Some(100));
    a.started_ms = 2_000;
    a.run_id = Some("01ra".into());
    let mut b = DrillRecord::new("rollback-b", "manual", None);
    b.started_ms = 1_000;
    let mut a2 = DrillRecord::new("rollback-a", "manual", None);
    a2.started_ms = 3_000;
    for r in [&a, &b, &a2] {
        store.put_drill(r).unwrap();
    }
    let order = |drill: Option<&str>, since| {
        store
            .drill_records(drill, since)
            .unwrap()
            .iter()
            .map(|r| (r.drill.clone(), r.started_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(None, 0),
        [
            ("rollback-b".into(), 1_000),
            ("rollback-a".into(), 2_000),
            ("rollback-a".into(), 3_000)
        ]
    );
    assert_eq!(
        order(Some("rollback-a"), 2_500),
        [("rollback-a".into(), 3_000)]
    );
    assert!(order(Some("rollback"), 0).is_empty());

    assert_eq!(store.drill_last_scheduled("rollback-a").unwrap(), None);
    assert!(
        store.claim_drill_slot("rollback-a", 500).unwrap(),
        "a first slot"
    );
    assert_eq!(store.drill_last_scheduled("rollback-a").unwrap(), Some(500));
    assert!(
        !store.claim_drill_slot("rollback-a", 500).unwrap(),
        "handled already"
    );
    assert!(
        !store.claim_drill_slot("rollback-a", 400).unwrap(),
        "older than handled"
    );
    // Schedulers asking for the same slot at once: exactly one gets it.
    let won: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let store = if kind == Kind::Postgres {
                    place.open()
                } else {
                    store.clone()
                };
                s.spawn(move || store.claim_drill_slot("rollback-a", 600).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .filter(|_| true)
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(won, 1);
    assert_eq!(store.drill_last_scheduled("rollback-a").unwrap(), Some(600));
    assert!(
        store.claim_drill_slot("rollback-new", 1).unwrap(),
        "a first slot"
    );

    assert_eq!(store.drill_paused("rollback-a").unwrap(), None);
    let p = Paused {
        by: "ana".into(),
        reason: "maintenance window".into(),
        at_ms: 7,
    };
    store.set_drill_paused("rollback-a", Some(&p)).unwrap();
    assert_eq!(store.drill_paused("rollback-a").unwrap(), Some(p));
    assert_eq!(
        store.drill_last_scheduled("rollback-a").unwrap(),
        Some(600),
        "pausing keeps the schedule's place"
    );
    store.set_drill_paused("rollback-a", None).unwrap();
    assert_eq!(store.drill_paused("rollback-a").unwrap(), None);
}

fn trigger_state_and_alerts(kind: Kind) {
    use medic::store::triggers::AlertRecord;
    use medic::trigger::policy::State;
    let place = Place::new(kind);
    let store = place.open();
    assert_eq!(store.trigger_state("t").unwrap(), State::default());
    let mut s = State::default();
    s.started("g", "r1", 5);
    store.set_trigger_state("t", &s).unwrap();
    assert_eq!(store.trigger_state("t").unwrap(), s);
    for at in [10u64, 20, 20, 30] {
        store
            .record_alert(&AlertRecord {
                at_ms: at,
                trigger: "t".into(),
                alert: format!("A{at}"),
                fingerprint: "f".into(),
                status: "firing".into(),
                labels: Default::default(),
                starts_at_ms: 1,
                decision: "start".into(),
                run_id: None,
                detail: String::new(),
            })
            .unwrap();
    }
    let at = |since, limit| {
        store
            .alerts(since, limit)
            .unwrap()
            .iter()
            .map(|a| a.at_ms)
            .collect::<Vec<_>>()
    };
    // A state key written after the alerts does not leak into them.
    store.set_trigger_state("zz", &s).unwrap();
    assert_eq!(at(15, 10), [20, 20, 30]);
    assert_eq!(at(0, 2), [20, 30], "the newest, oldest first");
    assert!(at(31, 10).is_empty());
}

fn run_ids_are_found_by_prefix_literally(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open();
    for id in ["01ab", "01a_", "01a%"] {
        store
            .put_record(&record(id, "deploy", "staging", RunStatus::Succeeded, 1))
            .unwrap();
    }
    assert_eq!(store.find("01a_").unwrap().run_id, "01a_");
    assert_eq!(store.find("01a%").unwrap().run_id, "01a%");
    assert_eq!(store.find(" 01AB ").unwrap().run_id, "01ab");
    match store.find("01a") {
        Err(StoreError::Ambiguous { matches, .. }) => assert_eq!(matches.len(), 3),
        other => panic!("{other:?}"),
    }
    assert!(store.record("01").unwrap().is_none());
}

/// PostgreSQL: several processes at once, each seeing the others' runs, none taking a live
/// process's running run for interrupted.
/// processes (two hosts, on PostgreSQL) see them.
/// What stays beside the runs: approvals, API tokens, the audit log. Two places as two
/// processes (two hosts, on PostgreSQL) see them.
fn approvals_tokens_and_audit_are_seen_by_every_process(kind: Kind) {
    use medic::executor::{Approver, Cancel, Decision};
    use medic::store::approvals::{StoreApprover, decide, pending};
    use medic::store::audit::Audit;
    use medic::store::tokens::{Role, Tokens};
    let place = Place::new(kind);
    let of = |store: Store| store.place();
    let (one, two) = match &place.url {
        None => (
            medic::store::Place::Files(place.dir.path().to_owned()),
            medic::store::Place::Files(place.dir.path().to_owned()),
        ),
        Some(_) => (of(place.open()), of(place.open())),
    };

    // A run waiting on one is decided from the other; a second decider is told there is
    // nothing waiting any more.
    let rt = crate::support::runtime();
    let decision = rt.block_on(async {
        let approver = StoreApprover {
            place: one.clone(),
            policy: Default::default(),
        };
        let cancel = Cancel::new();
        let waiting = approver.wait(
            "01run",
            "go",
            "go?",
            std::time::Duration::from_secs(20),
            &cancel,
        );
        let deciding = async {
            for _ in 0..200 {
                let seen = pending(&two, None);
                if seen.len() == 1 {
                    assert_eq!(
                        (seen[0].run_id.as_str(), seen[0].step.as_str()),
                        ("01run", "go")
                    );
                    let (_, approvals) = decide(
                        &two,
                        "01r",
                        None,
                        true,
                        "alice@elsewhere",
                        &[],
                        "looks fine",
                    )
                    .unwrap();
                    assert_eq!(approvals, 1);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the request never appeared");
        };
        tokio::join!(waiting, deciding).0
    });
    assert_eq!(
        decision,
        Decision::Approved {
            by: "alice@elsewhere".into(),
            reason: "looks fine".into()
        }
    );
    assert!(pending(&one, None).is_empty() && pending(&two, None).is_empty());
    assert!(decide(&two, "01run", None, true, "bob", &[], "late").is_err());

    // Tokens made on one work on the other, and a revocation reaches both; two made at
    // once from both are both kept.
    let (t1, t2) = (Tokens::at(&one), Tokens::at(&two));
    let (secret, _) = t1
        .create(
            "ci",
            Role::Responder,
            &["staging".into()],
            &[],
            None,
            "user:test",
        )
        .unwrap();
    assert_eq!(t2.verify(&secret).unwrap().unwrap().name, "ci");
    assert!(
        t2.create("ci", Role::Viewer, &[], &[], None, "user:test")
            .is_err(),
        "a live name is taken"
    );
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            for i in 0..10 {
                t1.create(&format!("a{i}"), Role::Viewer, &[], &[], None, "user:test")
                    .unwrap();
            }
        });
        let b = s.spawn(|| {
            for i in 0..10 {
                t2.create(&format!("b{i}"), Role::Viewer, &[], &[], None, "user:test")
                    .unwrap();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
    });
    assert_eq!(t1.list().unwrap().len(), 21, "no change lost to another");
    t2.revoke("ci").unwrap();
    assert!(t1.verify(&secret).unwrap().is_none());

    // One audit log, oldest first, reads left out on request, the newest kept by a limit.
    let (a1, a2) = (Audit::at(&one), Audit::at(&two));
    a1.record("token:ci", "POST /api/v1/runs", "10.0.0.1", "ok")
        .unwrap();
    a2.append("token:ci", "GET /api/v1/runs", "10.0.0.2", "ok", false)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    a2.record("user:root", "token revoke ci", "", "ok").unwrap();
    let all = a1.read(0, 10, true).unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[2], "token revoke ci");
    assert_eq!(a2.read(0, 10, false).unwrap().len(), 2);
    assert_eq!(a2.read(0, 1, true).unwrap()[0].who, "user:root");
}
