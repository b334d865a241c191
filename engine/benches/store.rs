//! The run store on both backends: the embedded store (sled, in a data directory) and
//! PostgreSQL 15 (a cluster started on loopback by the bench, as the tests start theirs).
//!
//! `cargo bench -p medic --bench store` prints the figures for the README; without `--bench`
//! (`cargo test -p medic --bench store`) it runs small sizes to prove the bench works, and
//! those figures mean nothing.
//!
//! - journal write: one journal entry with its run record, made durable (what the recorder
//!   does for every event shown to a responder);
//! - `runs list` newest 50 of 100,000 runs, and the newest 50 rolled back (1 run in 100);
//! - finding interrupted runs among those 100,000 (none running), which every command does;
//! - 1,000 runs at once, each writing 12 durable journal entries of about 300 bytes,
//!   spread over three store handles (three processes' worth of connections, as three
//!   `medic serve` nodes would have; sled itself admits one process, so one).
//!
//! The embedded store is measured twice: sled in this process, and through the store daemon
//! that holds it for `medic` commands (each call a round trip on its Unix socket).

// Shared with the tests, which use more of it.
#[allow(dead_code)]
#[path = "../../tests/e2e/pglab.rs"]
mod pglab;

use std::time::{Duration, Instant};

use medic::store::{JournalEvent, ListFilter, RunRecord, RunStatus, Store, Trigger};

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

struct Sizes {
    appends: usize,
    runs: usize,
    lists: usize,
    concurrent: usize,
}

/// A record the size of a real one (three plugins, a few parameters).
fn record(id: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        v: 1,
        run_id: id.into(),
        runbook: "bench".into(),
        runbook_path: "/srv/runbooks/deploy-with-error-ratio-gate.toml".into(),
        runbook_sha256: "0".repeat(64),
        plugins: ["deploy", "probe", "gate"]
            .iter()
            .map(|a| medic::store::PluginRef {
                alias: (*a).into(),
                source: format!("builtin:{a}"),
                sha256: "1".repeat(64),
            })
            .collect(),
        params: vec![
            ("service".into(), "checkout".into()),
            ("version".into(), "v2.14.3".into()),
        ],
        environment: "staging".into(),
        trigger: Trigger::Cli {
            user: "oncall".into(),
            host: "bench".into(),
        },
        approval: None,
        lock: Some("service:checkout:staging".into()),
        dry_run: false,
        notification: false,
        status,
        started_ms: 1,
        ended_ms: None,
        pid: 1,
        pid_start: None,
        steps_total: 5,
        steps_done: 0,
        failed_step: None,
        changed: false,
        changed_ms: None,
        detected_ms: None,
        detected_by_gate: false,
        recovered_ms: None,
    }
}

fn kv_event(i: usize) -> JournalEvent {
    JournalEvent::KvSet {
        space: "deploy".into(),
        key: format!("key-{i}"),
        value: Some("ab".repeat(120)),
    }
}

/// One entry with its record, then made durable, `n` times: medians and p90.
fn journal_writes(store: &Store, n: usize) -> (Duration, Duration) {
    let mut r = record(&medic::executor::new_run_id(), RunStatus::Running);
    store.put_record(&r).unwrap();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        r.steps_done = i;
        store.append_with_record(&r, kv_event(i), true).unwrap();
        samples.push(t.elapsed());
    }
    (quantile(&mut samples, 0.5), quantile(&mut samples, 0.9))
}

/// Ids that sort as ULIDs do, oldest first.
fn id_of(i: usize) -> String {
    format!("{i:026}")
}

fn fill_sled(store: &Store, n: usize) {
    for i in 0..n {
        let status = if i % 100 == 0 {
            RunStatus::RolledBack
        } else {
            RunStatus::Succeeded
        };
        store.put_record(&record(&id_of(i), status)).unwrap();
    }
    store.flush().unwrap();
}

/// The same records as `fill_sled`, in one statement (100,000 single inserts would measure
/// the fill, not the listing).
fn fill_postgres(url: &str, n: usize) {
    let template = serde_json::to_string(&record("RUNID", RunStatus::Succeeded)).unwrap();
    assert!(template.contains("\"status\":\"succeeded\""));
    pglab::query(
        url,
        &format!(
            "INSERT INTO medic_runs (run_id, started_ms, status, runbook, environment, trigger_kind, owner_id, record)
             SELECT id, i, status, 'bench', 'staging', 'cli', NULL,
                    replace(replace($t${template}$t$, '\"RUNID\"', '\"' || id || '\"'),
                            '\"status\":\"succeeded\"', '\"status\":\"' || status || '\"')
             FROM (SELECT i, lpad(i::text, 26, '0') AS id,
                          CASE WHEN i % 100 = 0 THEN 'rolled_back' ELSE 'succeeded' END AS status
                   FROM generate_series(0, {}) i) g",
            n - 1
        ),
    );
}

/// Finding interrupted runs (every command does it first), none running.
fn recovering(store: &Store, n: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert!(store.recover().unwrap().is_empty());
            t.elapsed()
        })
        .collect();
    quantile(&mut samples, 0.5)
}

fn listing(store: &Store, filter: &ListFilter, n: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let got = store.list(filter, 50).unwrap();
            let d = t.elapsed();
            assert!(!got.is_empty());
            d
        })
        .collect();
    quantile(&mut samples, 0.5)
}

/// `runs` runs at once over `handles`: wall time, entries per second, p50/p99 per entry.
fn concurrent(handles: &[Store], runs: usize) -> (Duration, f64, Duration, Duration) {
    let start = Instant::now();
    let mut samples: Vec<Duration> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..runs)
            .map(|i| {
                let store = handles[i % handles.len()].clone();
                s.spawn(move || {
                    let mut r = record(&medic::executor::new_run_id(), RunStatus::Running);
                    let mut lat = Vec::with_capacity(12);
                    for e in 0..12 {
                        let t = Instant::now();
                        let event = if e == 0 {
                            JournalEvent::RunStarted { pid: 1 }
                        } else {
                            kv_event(e)
                        };
                        if e == 11 {
                            r.status = RunStatus::Succeeded;
                        }
                        store.append_with_record(&r, event, true).unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let wall = start.elapsed();
    let rate = samples.len() as f64 / wall.as_secs_f64();
    (
        wall,
        rate,
        quantile(&mut samples, 0.5),
        quantile(&mut samples, 0.99),
    )
}

/// The embedded store in `data` as `medic` commands reach it: through a store daemon.
fn through_daemon(data: &std::path::Path) -> Store {
    let start: std::sync::Arc<medic::store::local::Starter> = std::sync::Arc::new(|dir| {
        medic::store::daemon::start_with(env!("CARGO_BIN_EXE_medic").as_ref(), dir)
    });
    Store::open_shared_locally(data, start, None).unwrap()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            appends: 2_000,
            runs: 100_000,
            lists: 50,
            concurrent: 1_000,
        }
    } else {
        Sizes {
            appends: 20,
            runs: 500,
            lists: 3,
            concurrent: 12,
        }
    };
    let rolled_back = ListFilter {
        status: Some(RunStatus::RolledBack),
        ..Default::default()
    };
    println!(
        "| figure | embedded: sled in the process | embedded: through the store daemon (medic commands) | PostgreSQL 15 |\n|---|---|---|---|"
    );
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Embedded.
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(&dir.path().join("data"), "bench").unwrap();
    let (s_p50, s_p90) = journal_writes(&sled, sizes.appends);
    let daemon_dir = tempfile::tempdir().unwrap();
    let through = || through_daemon(&daemon_dir.path().join("data"));
    let local = through();
    let (l_p50, l_p90) = journal_writes(&local, sizes.appends);
    // Postgres.
    let url = pglab::database();
    let pg_dir = tempfile::tempdir().unwrap();
    let connect = || Store::connect(&url, pg_dir.path(), "bench").unwrap();
    let pg = connect();
    let (p_p50, p_p90) = journal_writes(&pg, sizes.appends);
    rows.push((
        "journal write, durable (entry + record), p50 / p90".into(),
        format!("{} / {}", fmt(s_p50), fmt(s_p90)),
        format!("{} / {}", fmt(l_p50), fmt(l_p90)),
        format!("{} / {}", fmt(p_p50), fmt(p_p90)),
    ));

    let (sw, sr, s50, s99) = concurrent(std::slice::from_ref(&sled), sizes.concurrent);
    let clients = [local.clone(), through(), through()];
    let (lw, lr, l50, l99) = concurrent(&clients, sizes.concurrent);
    let nodes = [pg.clone(), connect(), connect()];
    let (pw, pr, p50, p99) = concurrent(&nodes, sizes.concurrent);
    rows.push((
        format!(
            "{} runs at once, 12 durable entries each: wall time",
            sizes.concurrent
        ),
        format!("{:.2} s (1 process)", sw.as_secs_f64()),
        format!("{:.2} s (3 client handles)", lw.as_secs_f64()),
        format!("{:.2} s (3 nodes)", pw.as_secs_f64()),
    ));
    rows.push((
        "... entries per second".into(),
        format!("{sr:.0}"),
        format!("{lr:.0}"),
        format!("{pr:.0}"),
    ));
    rows.push((
        "... per-entry latency p50 / p99".into(),
        format!("{} / {}", fmt(s50), fmt(s99)),
        format!("{} / {}", fmt(l50), fmt(l99)),
        format!("{} / {}", fmt(p50), fmt(p99)),
    ));

    // Listing, on stores holding only the filled runs.
    let dir2 = tempfile::tempdir().unwrap();
    let sled2 = Store::open(&dir2.path().join("data"), "bench").unwrap();
    fill_sled(&sled2, sizes.runs);
    let url2 = pglab::database();
    let pg2 = Store::connect(&url2, pg_dir.path(), "bench").unwrap();
    fill_postgres(&url2, sizes.runs);
    let (s_all, s_rolled, s_recover) = (
        listing(&sled2, &ListFilter::default(), sizes.lists),
        listing(&sled2, &rolled_back, sizes.lists),
        recovering(&sled2, sizes.lists),
    );
    // The same store through a daemon, once the bench lets go of it.
    drop(sled2);
    let local2 = through_daemon(&dir2.path().join("data"));
    rows.push((
        format!("runs list: newest 50 of {}", sizes.runs),
        fmt(s_all),
        fmt(listing(&local2, &ListFilter::default(), sizes.lists)),
        fmt(listing(&pg2, &ListFilter::default(), sizes.lists)),
    ));
    rows.push((
        format!(
            "runs list: newest 50 rolled back (1 in 100) of {}",
            sizes.runs
        ),
        fmt(s_rolled),
        fmt(listing(&local2, &rolled_back, sizes.lists)),
        fmt(listing(&pg2, &rolled_back, sizes.lists)),
    ));
    rows.push((
        format!(
            "finding interrupted runs (every command does it first) among {}",
            sizes.runs
        ),
        fmt(s_recover),
        fmt(recovering(&local2, sizes.lists)),
        fmt(recovering(&pg2, sizes.lists)),
    ));
    for (name, s, l, p) in rows {
        println!("| {name} | {s} | {l} | {p} |");
    }
    if !full {
        println!(
            "(smoke run: sizes are tiny, the figures mean nothing; `cargo bench -p medic --bench store`)"
        );
    }
}
