//! Medic's benchmarks: what a plugin call, a plugin load and a whole `medic run` cost.
//!
//! `cargo bench -p medic` prints a table of medians and 90th percentiles. Without `--bench`
//! (as `cargo test -p medic --bench medic` runs it) it does a few iterations of each, to prove
//! the benchmark works; those figures mean nothing.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "medic/floor.rs"]
mod floor;
#[path = "medic/steps.rs"]
mod steps;

use medic::host::{Call, CallContext, HostConfig, PluginHost, PluginSource, Sandbox, Value};

/// Counts heap bytes in use (and the peak since a reset), for memory per concurrent run; only
/// between [`heap_from_here`] and [`heap_peak_since`]: counted always, every allocation of
/// every thread would update the same two counters, and the fleet rows (a run's thread and
/// the call threads allocating at once) measured that contention, not Medic.
struct Counting;

static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
// Signed: a block allocated before counting started may be freed while it counts.
static HEAP_NOW: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
static HEAP_PEAK: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
// Allocations while counting: on every thread, and on each thread by itself (const-initialized
// and without a destructor, so reading it never allocates). Wall time on a shared VM moves
// with its neighbours; how many blocks a target allocates does not, so small savings show.
static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
thread_local! {
    static THREAD_ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: delegates to the allocator the `medic` binary uses; the counters are plain atomics.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        if COUNTING.load(Relaxed) {
            let size = layout.size() as isize;
            let now = HEAP_NOW.fetch_add(size, Relaxed) + size;
            HEAP_PEAK.fetch_max(now, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
            let _ = THREAD_ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        if COUNTING.load(Relaxed) {
            // A growing Vec or String: counted as the allocation it is, and its bytes as moved.
            let grown = new_size as isize - layout.size() as isize;
            let now = HEAP_NOW.fetch_add(grown, Relaxed) + grown;
            HEAP_PEAK.fetch_max(now, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
            let _ = THREAD_ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        use std::sync::atomic::Ordering::Relaxed;
        if COUNTING.load(Relaxed) {
            HEAP_NOW.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

/// Starts counting the heap: what [`heap_peak_since`] is given.
fn heap_from_here() -> isize {
    use std::sync::atomic::Ordering::Relaxed;
    COUNTING.store(true, Relaxed);
    let now = HEAP_NOW.load(Relaxed);
    HEAP_PEAK.store(now, Relaxed);
    now
}

/// The most heap in use since `before` ([`heap_from_here`]) beyond what was in use then (the
/// peak starts there and only grows); stops counting.
fn heap_peak_since(before: isize) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    COUNTING.store(false, Relaxed);
    (HEAP_PEAK.load(Relaxed) - before) as usize
}

/// Allocations (and reallocations) counted so far: this thread's, every thread's.
fn allocs_so_far() -> (u64, u64) {
    (
        THREAD_ALLOCS.with(|n| n.get()),
        ALLOCS.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
    goal: Option<Duration>,
}

impl Stats {
    fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[((s.len() - 1) as f64 * q).round() as usize]
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1000.0)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn measure(name: &'static str, n: usize, goal: Option<Duration>, mut f: impl FnMut()) -> Stats {
    if n == 0 {
        // Filtered out: its setup may not have been done either.
        return Stats {
            name,
            samples: Vec::new(),
            goal,
        };
    }
    f(); // warm up
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    Stats {
        name,
        samples,
        goal,
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A minimal HTTP/1.1 server on loopback that answers 200 to everything, on its own thread.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                // Keep-alive: answer each request on the connection.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A benchmark runbook, planned (its plugin sources are absolute paths or builtins).
fn plan_of(rt: &tokio::runtime::Runtime, host: &PluginHost, text: &str) -> medic::runbook::Plan {
    let src = medic::runbook::Source {
        path: Path::new("bench.toml"),
        text,
    };
    rt.block_on(medic::runbook::plan(
        host,
        &src,
        &medic::runbook::PlanOptions::default(),
    ))
    .unwrap_or_else(|d| panic!("a benchmark runbook is invalid: {d:?}"))
}

/// Records a run into `store` as `medic run` does, showing nothing.
fn recorder<'a>(
    store: &'a medic::store::Store,
    quiet: &'a mut dyn medic::executor::Observer,
) -> medic::store::recorder::Recorder<'a> {
    medic::store::recorder::Recorder::new(
        store,
        quiet,
        medic::store::Trigger::cli(),
        None,
        medic::store::recorder::Start::New,
        false,
        medic::executor::Cancel::new(),
    )
}

/// The trivial call the call rows make: the hostile fixture told to succeed at once, in a
/// fresh sandbox with the default limits.
struct TrivialCall {
    plugin: medic::host::Plugin,
    params: medic::host::Values,
    ctx: CallContext,
    sandbox: Sandbox,
}

impl TrivialCall {
    fn load(rt: &tokio::runtime::Runtime, host: &PluginHost) -> TrivialCall {
        let hostile = PluginSource::File(medic::host::fixtures::HOSTILE.into());
        TrivialCall {
            plugin: rt.block_on(host.load(&hostile, None)).unwrap(),
            params: vec![("mode".to_string(), Value::Text("ok".into()))],
            ctx: CallContext {
                run_id: "bench".into(),
                step_id: "s".into(),
                attempt: 1,
                environment: "bench".into(),
                dry_run: false,
            },
            sandbox: Sandbox::default(),
        }
    }

    fn call(&self) -> Call {
        Call::Run {
            params: self.params.clone(),
        }
    }

    /// One call, on a fresh instance as every step gets; it must succeed.
    fn once(&self, rt: &tokio::runtime::Runtime, host: &PluginHost) {
        let inv = rt.block_on(host.invoke(&self.plugin, self.call(), &self.ctx, &self.sandbox));
        assert!(inv.result.is_ok());
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // `cargo bench -p medic -- NAME...` runs only the benchmarks whose name contains one of
    // the NAMEs (a ratio is printed when what it divides by ran too).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let iters = |name: &str, full_n: usize, smoke_n: usize| match (wanted(name), full) {
        (false, _) => 0,
        (true, true) => full_n,
        (true, false) => smoke_n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let probe = PluginSource::Builtin("http-probe".into());
    let mut results = Vec::new();

    // Compiling: what a first run pays, once per plugin version.
    let uncached = PluginHost::new(HostConfig {
        cache_dir: None,
        max_instances: 16,
        ..HostConfig::default()
    })
    .unwrap();
    results.push(measure(
        "compile http-probe (cold, no cache)",
        iters("compile http-probe (cold, no cache)", 10, 1),
        None,
        || {
            // Loaded plugins are kept by digest: forgotten, so each load compiles.
            uncached.forget_loaded();
            black_box(rt.block_on(uncached.load(&probe, None)).unwrap());
        },
    ));
    let host = PluginHost::new(HostConfig {
        cache_dir: Some(cache.path().to_owned()),
        max_instances: 64,
        ..HostConfig::default()
    })
    .unwrap();
    rt.block_on(host.load(&probe, None)).unwrap();
    results.push(measure(
        "load http-probe from the cache (incl. manifest call)",
        iters(
            "load http-probe from the cache (incl. manifest call)",
            200,
            3,
        ),
        Some(Duration::from_millis(1)),
        || {
            host.forget_loaded();
            black_box(rt.block_on(host.load(&probe, None)).unwrap());
        },
    ));

    // Validation and planning grow linearly with the runbook: 10,000 steps, each one's
    // condition referring to the step before it.
    let big = {
        let mut text = String::from(
            "[runbook]\nname = \"big\"\n\n[plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"127.0.0.1:8080\"] }\n",
        );
        for i in 0..10_000 {
            text += &format!("\n[[steps]]\nid = \"s{i}\"\nuses = \"probe\"\n");
            if i > 0 {
                text += &format!("when = \"steps.s{}.status == 'succeeded'\"\n", i - 1);
            }
            text += "with = { url = \"http://127.0.0.1:8080/health\" }\n";
        }
        text
    };
    // Its shape alone (syntax, keys, types against the schema), the first stage of the above.
    let shape_name = "shape of a 10,000-step runbook (parse and schema walk)";
    results.push(measure(shape_name, iters(shape_name, 10, 1), None, || {
        let parsed = medic::runbook::plan::parse(&big);
        assert_eq!(black_box(parsed.doc.unwrap()).steps.len(), 10_000);
    }));

    let big_name = "validate and plan a 10,000-step runbook";
    results.push(measure(
        big_name,
        iters(big_name, 10, 1),
        Some(Duration::from_millis(500)),
        || {
            let src = medic::runbook::Source {
                path: Path::new("big.toml"),
                text: &big,
            };
            let plan = rt
                .block_on(medic::runbook::plan(
                    &host,
                    &src,
                    &medic::runbook::PlanOptions::default(),
                ))
                .unwrap();
            assert_eq!(black_box(plan).steps.len(), 10_000);
        },
    ));

    // One call: a fresh sandboxed instance per call, as every step gets.
    let trivial = TrivialCall::load(&rt, &host);
    results.push(measure(
        "fresh sandboxed instance + call (trivial plugin)",
        iters(
            "fresh sandboxed instance + call (trivial plugin)",
            10_000,
            20,
        ),
        Some(Duration::from_micros(15)),
        || trivial.once(&rt, &host),
    ));
    results.push(measure(
        "the same work natively (the floor)",
        iters("the same work natively (the floor)", 10_000, 20),
        None,
        || {
            let mode = black_box(&trivial.params)[0].1.clone();
            let outcome = match mode {
                Value::Text(m) if m == "ok" => Ok(black_box(String::from("ok"))),
                _ => Err(()),
            };
            black_box(outcome).unwrap();
        },
    ));

    // A whole process: `medic run` of a 3-step runbook with a warm cache, as a responder runs it.
    let addr = http_server();
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("three.toml");
    let mut text = format!(
        "[runbook]\nname = \"three\"\n\n[plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = {{ http = [\"{addr}\"] }}\n"
    );
    for id in ["one", "two", "three"] {
        text += &format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"probe\"\nwith = {{ url = \"http://{addr}/health\" }}\n"
        );
    }
    std::fs::write(&runbook, text).unwrap();
    let medic = env!("CARGO_BIN_EXE_medic");
    let run = |runbook: &Path| {
        let out = Command::new(medic)
            .arg("run")
            .arg(runbook)
            .env("MEDIC_CACHE_DIR", cache.path())
            .env("MEDIC_DATA_DIR", cache.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    results.push(measure(
        "`medic run` process, 3 steps, warm cache",
        iters("`medic run` process, 3 steps, warm cache", 30, 2),
        Some(Duration::from_millis(30)),
        || run(&runbook),
    ));
    // What any `medic` process pays before it does anything (loading and relocating the
    // binary, the allocator, the command line), the floor of the row above.
    let idle = "`medic --version` process (the floor of any command)";
    results.push(measure(idle, iters(idle, 30, 2), None, || {
        let out = Command::new(medic).arg("--version").output().unwrap();
        assert!(out.status.success());
    }));

    // The run store: durable journal writes, listing a large history, size per run.
    let data = tempfile::tempdir().unwrap();
    let store = medic::store::Store::open(data.path(), "bench").unwrap();
    let event = || medic::store::JournalEvent::AttemptFinished {
        step: "deploy".into(),
        note: "check 3: GET http://127.0.0.1:8080/health answered 200 in 0.6 ms (2/3 in a row)"
            .into(),
    };
    let durable = "journal event, appended and flushed (durable)";
    results.push(measure(durable, iters(durable, 2_000, 20), None, || {
        store
            .append("01benchjournal00000000000000", event(), true)
            .unwrap();
    }));
    let batched = "journal event, appended (flushed at step boundaries)";
    results.push(measure(batched, iters(batched, 20_000, 20), None, || {
        store
            .append("01benchjournal00000000000001", event(), false)
            .unwrap();
    }));
    let history: usize = if full { 100_000 } else { 1_000 };
    let listing: &'static str = if full {
        "`medic runs list`: newest 50 of 100,000 runs"
    } else {
        "`medic runs list`: newest 50 of 1,000 runs"
    };
    let typical = medic::store::RunRecord {
        v: 1,
        run_id: String::new(),
        runbook: "demo-deploy".into(),
        runbook_path: "runbooks/demo.toml".into(),
        runbook_sha256: "4dc4930903930937".repeat(4),
        plugins: vec![],
        params: vec![
            ("host".into(), "127.0.0.1:8080".into()),
            ("version".into(), "v3".into()),
        ],
        environment: "staging".into(),
        trigger: medic::store::Trigger::Cli {
            user: "alice".into(),
            host: "laptop".into(),
        },
        approval: None,
        lock: None,
        dry_run: false,
        notification: false,
        status: medic::store::RunStatus::RolledBack,
        started_ms: 0,
        ended_ms: Some(420),
        pid: 1,
        pid_start: None,
        steps_total: 4,
        steps_done: 3,
        failed_step: Some("health_after".into()),
        changed: true,
        changed_ms: Some(5),
        detected_ms: Some(211),
        detected_by_gate: true,
        recovered_ms: Some(423),
    };
    if wanted(listing) {
        let start = medic::store::now_ms() - history as u64 * 1000;
        for i in 0..history {
            let mut r = typical.clone();
            r.run_id = format!("{i:026}");
            r.started_ms = start + i as u64 * 1000;
            store.put_record(&r).unwrap();
        }
        store.flush().unwrap();
    }
    results.push(measure(
        listing,
        iters(listing, 200, 5),
        Some(Duration::from_millis(50)),
        || {
            let listed = store
                .list(&medic::store::ListFilter::default(), 50)
                .unwrap();
            assert!(!listed.is_empty());
        },
    ));
    drop(store);
    if wanted("store size") {
        // A fresh store, so sled's preallocation for the history above does not hide growth.
        let fresh = tempfile::tempdir().unwrap();
        let sized = medic::store::Store::open(fresh.path(), "bench").unwrap();
        let empty = dir_size(fresh.path());
        let n: u64 = if full { 2_000 } else { 100 };
        for i in 0..n {
            let mut r = typical.clone();
            r.run_id = format!("zz{i:024}");
            sized.put_record(&r).unwrap();
            for _ in 0..12 {
                sized.append(&r.run_id, event(), false).unwrap();
            }
        }
        sized.flush().unwrap();
        drop(sized);
        let per_run = dir_size(fresh.path()).saturating_sub(empty) / n;
        println!(
            "store size: about {} per run ({n} runs of a record and 12 journal events each; sled's overhead included)",
            medic::host::limits::format_bytes(per_run)
        );
    }

    // The engine's own cost per step: a long runbook of trivial action steps, durably
    // recorded; once on disk, once on tmpfs (where a flush costs nothing), to tell the
    // engine's cost from the disk's.
    // Smoke runs (CI, debug builds) use 50 where the figures use 1,000.
    let scale: usize = if full { 1000 } else { 50 };
    let per_step_notes = steps::steps_and_fleets(&rt, &host, &mut results, &iters, scale, medic);
    let fleet_memory_note = if wanted("peak heap of a fleet step") {
        steps::fleet_memory(&rt, &host, scale)
    } else {
        None
    };
    // Many runs at once in one process, each mostly waiting on a gate, as runs do.
    let many = "1,000 concurrent runs in one process (3 steps, a gate)";
    let many_n = iters(many, 3, 1);
    let mut memory_note = None;
    if many_n > 0 {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[runbook]\nname = \"gated\"\n[plugins.noop]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\
             [[steps]]\nid = \"before\"\nuses = \"noop\"\n\
             [plugins.check]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\
             [[steps]]\nid = \"gate\"\nuses = \"check\"\ngate = {{ interval = \"100ms\", successes = 3, timeout = \"10s\" }}\n\
             [[steps]]\nid = \"after\"\nuses = \"noop\"\n",
            medic::host::fixtures::HOSTILE,
            medic::host::fixtures::SCRIPTED_CHECK
        );
        let shared: &'static PluginHost = Box::leak(Box::new(
            PluginHost::new(HostConfig {
                cache_dir: Some(cache.path().to_owned()),
                max_instances: 64,
                ..HostConfig::default()
            })
            .unwrap(),
        ));
        let plan = plan_of(&rt, shared, &text);
        // Tasks on a LocalSet must own what they use; a benchmark can leak these two.
        let plan: &'static medic::runbook::Plan = Box::leak(Box::new(plan));

        let store = medic::store::Store::open(&dir.path().join("data"), "bench").unwrap();
        let mut samples = Vec::new();
        let mut per_run = Vec::new();
        for _ in 0..many_n {
            let before = heap_from_here();
            let t = Instant::now();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..scale {
                    let (host, store) = (shared, store.clone());
                    set.spawn_local(async move {
                        let mut quiet = |_: &medic::executor::Event<'_>| {};
                        let mut recorder = recorder(&store, &mut quiet);
                        let report = medic::executor::execute(
                            host,
                            plan,
                            medic::executor::RunOptions::default(),
                            &mut recorder,
                        )
                        .await
                        .expect("nothing aborts the benchmark");
                        assert_eq!(
                            report.outcome,
                            medic::executor::RunOutcome::Succeeded,
                            "{:?}",
                            report.steps.iter().map(|s| &s.summary).collect::<Vec<_>>()
                        );
                    });
                }
                while let Some(done) = set.join_next().await {
                    done.unwrap();
                }
            });
            samples.push(t.elapsed());
            per_run.push((heap_peak_since(before) / scale) as u64);
        }
        per_run.sort_unstable();
        memory_note = Some(format!(
            "memory per concurrent run: about {} of heap (the peak over 1,000 runs in flight / 1,000; instance slots are pooled and reserved once)",
            medic::host::limits::format_bytes(per_run[per_run.len() / 2])
        ));
        results.push(Stats {
            name: many,
            samples,
            goal: None,
        });
    }

    // What `medic serve` costs while it waits.
    let mut serve_note = None;
    if wanted("medic serve idle RSS") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("drills")).unwrap();
        let mut child = Command::new(medic)
            .args(["serve", "--drills"])
            .arg(dir.path().join("drills"))
            .env("MEDIC_DATA_DIR", dir.path().join("data"))
            .env("MEDIC_CACHE_DIR", cache.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains("medic serve: pid"), "{line}");
        std::thread::sleep(Duration::from_millis(300));
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let _ = child.kill();
        let _ = child.wait();
        serve_note = Some(format!(
            "medic serve idle RSS: {}",
            medic::host::limits::format_bytes(kb * 1024)
        ));
    }

    println!(
        "\n{:56} {:>10} {:>10} {:>10}  goal",
        "benchmark", "median", "p90", "samples"
    );
    for r in results.iter().filter(|r| !r.samples.is_empty()) {
        let median = r.quantile(0.5);
        let goal = match r.goal {
            Some(g) if median <= g => format!("<= {} met", fmt(g)),
            Some(g) => format!("<= {} MISSED", fmt(g)),
            None => String::new(),
        };
        println!(
            "{:56} {:>10} {:>10} {:>10}  {goal}",
            r.name,
            fmt(median),
            fmt(r.quantile(0.9)),
            r.samples.len()
        );
    }
    // Each durable action step against its floor: one fdatasync and one sandboxed call.
    let median_of = |name: &str| {
        results
            .iter()
            .find(|r| r.name == name && !r.samples.is_empty())
            .map(|r| r.quantile(0.5))
    };
    if let (Some(floor), Some(call)) = (
        median_of(steps::FLOOR),
        median_of("fresh sandboxed instance + call (trivial plugin)"),
    ) {
        for name in [
            "1,000 action steps, recorded: per step",
            "1,000 action steps, recorded through the store daemon: per step",
        ] {
            if let Some(step) = median_of(name) {
                println!(
                    "{name}: {} = {:.2} x the floor rows (fdatasync {} + sandboxed call {}; the goal, <= {} x, is judged against both measured around each sample, below)",
                    fmt(step),
                    step.as_secs_f64() / (floor + call).as_secs_f64(),
                    fmt(floor),
                    fmt(call),
                    floor::GOAL_RATIO
                );
                if let Some(both) = median_of(steps::FLOOR_AND_CALL) {
                    println!(
                        "  = {:.2} x the two done in turn ({}: the call right after an fdatasync costs {} more than the two measured apart)",
                        step.as_secs_f64() / both.as_secs_f64(),
                        fmt(both),
                        fmt(both.saturating_sub(floor + call))
                    );
                }
            }
        }
        // Targets finishing together share a flush: a batch of 50 against one fdatasync and
        // 50 sandboxed calls.
        if let Some(target) = median_of(steps::FLEET_50) {
            let batch = target * 50;
            println!(
                "{}: a batch of 50 targets takes {} = {:.2} x the floor rows (fdatasync {} + 50 sandboxed calls {}; the goal, <= {} x, is judged against both measured around each sample, below)",
                steps::FLEET_50,
                fmt(batch),
                batch.as_secs_f64() / (floor + call * 50).as_secs_f64(),
                fmt(floor),
                fmt(call * 50),
                floor::GOAL_RATIO
            );
        }
    }
    if let Some(d) = results
        .iter()
        .find(|r| r.name == durable && !r.samples.is_empty())
    {
        println!(
            "durable journal writes: about {:.0} per second (one fsync each)",
            1.0 / d.quantile(0.5).as_secs_f64()
        );
    }
    for note in per_step_notes.into_iter().chain(
        [fleet_memory_note, memory_note, serve_note]
            .into_iter()
            .flatten(),
    ) {
        println!("{note}");
    }
    if !full {
        println!(
            "(smoke run: a few iterations, 50 steps or runs where the names say 1,000, in whatever profile this was built; run `cargo bench -p medic` for figures)"
        );
    }
}
