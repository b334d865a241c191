//! The engine's cost per step and per fleet target, durably recorded or not, beside the
//! disk's own floor: part of `benches/medic.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use medic::host::PluginHost;

use super::floor::{Floor, NEAR_SAMPLES, Near, on};
use super::{Stats, TrivialCall, fmt, measure, plan_of, recorder};

/// The floor's name in the results.
pub const FLOOR: &str = "raw write + fdatasync, 300 bytes (the disk's floor)";
/// The floor measured on the CPUs that do not take the disk's interrupts, where some do.
const FLOOR_ELSEWHERE: &str =
    "raw write + fdatasync, 300 bytes, on a CPU the disk's interrupts do not go to";
/// The floor and a sandboxed call, one after the other, in a loop: the least a durable
/// action step does, as it does it (the call right after the sync, not hot in a loop).
pub const FLOOR_AND_CALL: &str =
    "raw write + fdatasync, then a sandboxed call (both floors in turn)";
/// A fleet whose targets finish together, 50 at a time.
pub const FLEET_50: &str = "fleet of 1,000 targets, 50 at a time, recorded: per target";

/// The median of the sandboxed call's row, if it ran.
fn call_median(results: &[Stats]) -> Option<Duration> {
    results
        .iter()
        .find(|r| r.name.starts_with("fresh sandboxed"))
        .filter(|r| !r.samples.is_empty())
        .map(|r| r.quantile(0.5))
}

/// The store in `data`: in this process, or through the store daemon (`medic` the binary),
/// as `medic run` records.
fn open_store(medic: &'static str, data: &Path, daemon: bool) -> medic::store::Store {
    if daemon {
        let start: std::sync::Arc<medic::store::local::Starter> =
            std::sync::Arc::new(|dir| medic::store::daemon::start_with(medic.as_ref(), dir));
        medic::store::Store::open_shared_locally(data, start, None).unwrap()
    } else {
        medic::store::Store::open(data, "bench").unwrap()
    }
}

/// Measures a long runbook of trivial steps (action, check; on disk, tmpfs, through the
/// store daemon, unrecorded) and fleets, into `results`; returns notes on what the engine
/// adds to an unrecorded step and how many targets share a flush.
pub fn steps_and_fleets(
    rt: &tokio::runtime::Runtime,
    host: &PluginHost,
    results: &mut Vec<Stats>,
    iters: &dyn Fn(&str, usize, usize) -> usize,
    scale: usize,
    medic: &'static str,
) -> Vec<String> {
    let mut notes = Vec::new();
    // The physical floor of a durable step on this disk: one small write and fdatasync, on
    // the file system the stores use, into space written beforehand ([`Floor`]).
    let floor_name = FLOOR;
    let floor_dir = tempfile::tempdir().unwrap();
    let mut floor = Floor::new(floor_dir.path());
    let cpus = floor.near_disk.clone();
    results.push(on(cpus.as_ref(), || {
        measure(floor_name, iters(floor_name, 2_000, 20), None, || {
            floor.once()
        })
    }));
    // Where the floor is measured matters on a disk whose interrupts go to some CPUs only:
    // shown, as what a flush made elsewhere pays.
    if let Some((near, elsewhere)) = cpus.as_ref().and_then(|c| Some((c, c.others()?))) {
        let name = FLOOR_ELSEWHERE;
        results.push(on(Some(&elsewhere), || {
            measure(name, iters(floor_name, 2_000, 20), None, || floor.once())
        }));
        notes.push(format!(
            "the disk's interrupts go to CPU {near:?} of those this process may use: \
             Medic keeps its flushing thread there, and the floor is measured there"
        ));
    }
    let both = FLOOR_AND_CALL;
    let both_n = iters(both, 2_000, 20);
    if both_n > 0 {
        let trivial = TrivialCall::load(rt, host);
        results.push(on(cpus.as_ref(), || {
            measure(both, both_n, None, || {
                floor.once();
                trivial.once(rt, host);
            })
        }));
    }
    let variants = [
        ("1,000 action steps, recorded: per step", false, true, None),
        (
            "1,000 action steps, recorded through the store daemon: per step",
            false,
            true,
            Some("daemon"),
        ),
        ("1,000 check steps, recorded: per step", true, true, None),
        (
            "1,000 check steps, recorded through the store daemon: per step",
            true,
            true,
            Some("daemon"),
        ),
        (
            "1,000 action steps, recorded on tmpfs: per step",
            false,
            true,
            Some("/dev/shm"),
        ),
        (
            "1,000 action steps, not recorded: per step",
            false,
            false,
            None,
        ),
    ];
    for (name, checks, recorded, base) in variants {
        let daemon = base == Some("daemon");
        // The rows held against their floor take more samples: their ratio is a goal.
        let against_floor = recorded && !checks && (base.is_none() || daemon);
        let long_n = iters(name, if against_floor { NEAR_SAMPLES } else { 5 }, 1);
        if long_n == 0 || base.is_some_and(|b| !daemon && !Path::new(b).is_dir()) {
            continue;
        }
        let dir = match base {
            Some(b) if !daemon => tempfile::tempdir_in(b).unwrap(),
            _ => tempfile::tempdir().unwrap(),
        };
        let mut text = format!(
            "[runbook]\nname = \"long\"\n[plugins.noop]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
            if checks {
                medic::host::fixtures::SCRIPTED_CHECK
            } else {
                medic::host::fixtures::HOSTILE
            }
        );
        for i in 0..scale {
            text += &format!("[[steps]]\nid = \"s{i}\"\nuses = \"noop\"\n");
        }
        let plan = plan_of(rt, host, &text);
        let store = open_store(medic, &dir.path().join("data"), daemon);
        let mut samples = Vec::new();
        // The floor beside the store and a call, around each sample, for an action step on
        // the disk.
        let mut near = against_floor.then(|| Near::new(rt, host, dir.path(), call_median(results)));
        for i in 0..long_n + 1 {
            if let Some(near) = near.as_mut().filter(|_| i > 0) {
                near.beside(rt, host);
            }
            let mut quiet = |_: &medic::executor::Event<'_>| {};
            let mut recorder = recorder(&store, &mut quiet);
            let t = Instant::now();
            let observer: &mut dyn medic::executor::Observer = if recorded {
                &mut recorder
            } else {
                &mut |_: &medic::executor::Event<'_>| {}
            };
            let report = rt
                .block_on(medic::executor::execute(
                    host,
                    &plan,
                    medic::executor::RunOptions::default(),
                    observer,
                ))
                .expect("nothing aborts the benchmark");
            let took = t.elapsed();
            assert!(recorder.error.is_none());
            assert_eq!(report.steps.len(), scale);
            samples.push(took / scale as u32);
        }
        samples.remove(0); // the warm-up
        if let Some(near) = &mut near {
            near.beside(rt, host);
            notes.push(format!("{name}: {}", near.paired(&samples, 1)));
        }
        // The goal of a recorded step is a ratio to its floor, printed below.
        let stats = Stats {
            name,
            samples,
            goal: None,
        };
        if let (Some(call), false) = (call_median(results), recorded) {
            notes.push(format!(
                "per step, not recorded: {} in all, of which the plugin call is about {}: the engine adds {}",
                fmt(stats.quantile(0.5)),
                fmt(call),
                fmt(stats.quantile(0.5).saturating_sub(call))
            ));
        }
        results.push(stats);
    }

    // The fleet's calls alone, without the executor or the store: on a call thread one at a
    // time (the hand-off between threads, beside a call on the caller's thread), then 50 at a
    // time (both call threads busy, many instances in turn), as a fleet places them.
    calls_on_workers(rt, host, results, iters, scale, &mut notes);
    two_callers(rt, host, results, iters, &mut notes);

    // A fleet step over many targets, durably recorded (each target's end is flushed): one
    // at a time, then many at once.
    // Then targets whose calls each wait 10 ms (as a real call waits on the network), where
    // concurrency is what matters.
    // Store: none (not recorded), in this process, or through the store daemon.
    for (name, concurrency, wait, store_at) in [
        (
            "fleet of 1,000 targets, recorded: per target",
            1,
            None,
            Some(false),
        ),
        (
            "fleet of 1,000 targets, 50 at a time, not recorded: per target",
            50,
            None,
            None,
        ),
        (FLEET_50, 50, None, Some(false)),
        (
            "fleet of 1,000 targets, 50 at a time, recorded through the store daemon: per target",
            50,
            None,
            Some(true),
        ),
        (
            "fleet of 200 targets, each call waiting 10 ms, one at a time: per target",
            1,
            Some("10ms"),
            Some(false),
        ),
        (
            "fleet of 200 targets, each call waiting 10 ms, 50 at a time: per target",
            50,
            Some("10ms"),
            Some(false),
        ),
    ] {
        let recorded = store_at.is_some();
        let against_floor = recorded && concurrency == 50 && wait.is_none();
        let fleet_n = iters(name, if against_floor { NEAR_SAMPLES } else { 5 }, 1);
        if fleet_n == 0 {
            continue;
        }
        let scale = if wait.is_some() { scale / 5 } else { scale };
        let dir = tempfile::tempdir().unwrap();
        let with = match wait {
            Some(w) => format!("with = {{ mode = \"sleep\", sleep = \"{w}\" }}\n"),
            None => String::new(),
        };
        let text = fleet_runbook(scale, concurrency, &with);
        let plan = plan_of(rt, host, &text);
        let store = open_store(medic, &dir.path().join("data"), store_at == Some(true));
        let mut samples = Vec::new();
        let mut groups = 0usize;
        let mut cpu_from: Option<[std::time::Duration; 3]> = None;
        // Batches of 50 against the floor beside the store and the call, measured around
        // each sample.
        let mut near = against_floor.then(|| Near::new(rt, host, dir.path(), call_median(results)));
        for i in 0..fleet_n + 1 {
            if i > 0
                && let Some(near) = near.as_mut()
            {
                // Not the targets' CPU: left out of the split below.
                let before = threads_cpu();
                near.beside(rt, host);
                if let (Some(from), Some(before), Some(after)) =
                    (cpu_from.as_mut(), before, threads_cpu())
                {
                    for k in 0..3 {
                        from[k] += after[k].saturating_sub(before[k]);
                    }
                }
            }
            if i == 1 {
                cpu_from = threads_cpu();
            }
            let mut quiet = |_: &medic::executor::Event<'_>| {};
            let mut recorder = recorder(&store, &mut quiet);
            // Counted as the recorder is told them: a target told with none after it
            // (`more: false`) ends a group, which is one flush.
            let mut counting = |e: &medic::executor::Event<'_>| {
                if let medic::executor::Event::TargetFinished { more: false, .. } = e {
                    groups += 1;
                }
                if recorded {
                    medic::executor::Observer::on_event(&mut recorder, e);
                }
            };
            let t = Instant::now();
            let report = rt
                .block_on(medic::executor::execute(
                    host,
                    &plan,
                    medic::executor::RunOptions::default(),
                    &mut counting,
                ))
                .expect("nothing aborts the benchmark");
            let took = t.elapsed();
            assert!(recorder.error.is_none());
            assert_eq!(report.steps[0].fleet.map(|f| f.succeeded), Some(scale));
            assert_eq!(report.outcome, medic::executor::RunOutcome::Succeeded);
            samples.push(took / scale as u32);
        }
        samples.remove(0); // the warm-up
        // Taken before the burst after the last sample, which is not the targets' CPU.
        let cpu = (concurrency > 1 && wait.is_none())
            .then(|| cpu_from.and_then(|from| cpu_split(from, scale * fleet_n)))
            .flatten();
        if recorded && concurrency > 1 && wait.is_none() {
            notes.push(format!(
                "{name}: {:.1} targets flushed together on average",
                (scale * (fleet_n + 1)) as f64 / groups.max(1) as f64
            ));
            if let Some(near) = &mut near {
                near.beside(rt, host);
                notes.push(format!(
                    "{name}: a batch of 50: {}",
                    near.paired(&samples, 50)
                ));
            }
        }
        if let Some([run, calls, others]) = cpu {
            notes.push(format!(
                "{name}: CPU a target: the run's thread {run}, the call threads {calls}, others {others}"
            ));
        }
        results.push(Stats {
            name,
            samples,
            goal: None,
        });
    }

    notes
}

/// Sandboxed calls placed on the host's call threads ([`medic::host::Placement::Workers`]),
/// one at a time and 50 at a time, per call, with where the CPU went for the latter.
fn calls_on_workers(
    rt: &tokio::runtime::Runtime,
    host: &PluginHost,
    results: &mut Vec<Stats>,
    iters: &dyn Fn(&str, usize, usize) -> usize,
    scale: usize,
    notes: &mut Vec<String>,
) {
    use futures_util::stream::FuturesUnordered;
    let trivial = TrivialCall::load(rt, host);
    let call = || {
        host.invoke_on(
            &trivial.plugin,
            trivial.call(),
            trivial.ctx.clone(),
            trivial.sandbox.clone(),
            medic::host::Placement::Workers,
        )
    };
    let one = "sandboxed call on a call thread, one at a time";
    let one_n = iters(one, 10_000, 20);
    let cpu_from = threads_cpu();
    results.push(measure(one, one_n, None, || {
        assert!(rt.block_on(call()).result.is_ok());
    }));
    // Beside the 50-at-a-time split below: what a call costs a call thread with nothing
    // else in flight, its hand-off included.
    let split = cpu_from.filter(|_| one_n > 0);
    // `measure` makes one call more, its warm-up.
    if let Some([this, calls, others]) = split.and_then(|from| cpu_split(from, one_n + 1)) {
        notes.push(format!(
            "{one}: CPU a call: the caller's thread {this}, the call threads {calls}, others {others}"
        ));
    }
    let many = "sandboxed calls on the call threads, 50 at a time: per call";
    let rounds = iters(many, 5, 1);
    if rounds == 0 {
        return;
    }
    let mut samples = Vec::new();
    let mut cpu_from = None;
    for i in 0..rounds + 1 {
        if i == 1 {
            cpu_from = threads_cpu();
        }
        let t = Instant::now();
        rt.block_on(async {
            let mut running = FuturesUnordered::new();
            // Waited for as a fleet waits for its targets: a group of ends told together
            // wakes this thread once.
            let mut batching = medic::host::Batching::default();
            let mut started = 0;
            while started < scale || !running.is_empty() {
                while running.len() < 50 && started < scale {
                    running.push(call());
                    started += 1;
                }
                let inv = std::future::poll_fn(|cx| batching.poll_next(&mut running, cx))
                    .await
                    .expect("a call in flight");
                assert!(inv.result.is_ok());
            }
        });
        samples.push(t.elapsed() / scale as u32);
    }
    samples.remove(0); // the warm-up
    if let Some([this, calls, others]) = cpu_from.and_then(|from| cpu_split(from, scale * rounds)) {
        notes.push(format!(
            "{many}: CPU a call: the caller's thread {this}, the call threads {calls}, others {others}"
        ));
    }
    results.push(Stats {
        name: many,
        samples,
        goal: None,
    });
}

/// What two threads of one process calling at once cost each call, in CPU, against one
/// thread alone in the same rounds: the call threads run a fleet's calls so, and each pays
/// for what the two share in the process (two processes calling at once do not slow each
/// other: `bench/JOURNAL.md`, 2026-12-06). Beside it, the same with each thread on a
/// wasmtime engine of its own, which is what a call thread with an engine of its own would
/// save.
fn two_callers(
    rt: &tokio::runtime::Runtime,
    host: &PluginHost,
    results: &mut Vec<Stats>,
    iters: &dyn Fn(&str, usize, usize) -> usize,
    notes: &mut Vec<String>,
) {
    let name = "sandboxed calls, two threads of the process at once: CPU a call";
    let rounds = iters(name, 10, 1);
    if rounds == 0 {
        return;
    }
    let n = if rounds > 1 { 2_000 } else { 20 };
    // CPU a call of `n` calls on this thread, each on a fresh instance (as a step's), after a
    // few to warm it.
    let calls = |(trivial, host): (&TrivialCall, &PluginHost)| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..n / 20 + 1 {
            trivial.once(&rt, host);
        }
        let from = this_thread_cpu();
        for _ in 0..n {
            trivial.once(&rt, host);
        }
        this_thread_cpu()
            .zip(from)
            .map(|(to, from)| (to - from) / n as u32)
    };
    let shared = (&TrivialCall::load(rt, host), host);
    // The second thread on an engine of its own (its own pool of instance slots, the
    // plugin compiled into it), the first on the shared one: what sharing wasmtime's engine
    // costs, apart from sharing the process.
    let other = PluginHost::new(medic::host::HostConfig {
        cache_dir: None,
        max_instances: 16,
        ..medic::host::HostConfig::default()
    })
    .unwrap();
    let own = (&TrivialCall::load(rt, &other), &other);
    let (mut alone, mut two, mut apart) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        std::thread::scope(|s| {
            alone.extend(s.spawn(|| calls(shared)).join().unwrap());
        });
        for (both, into) in [((shared, shared), &mut two), ((shared, own), &mut apart)] {
            std::thread::scope(|s| {
                let (a, b) = (s.spawn(|| calls(both.0)), s.spawn(|| calls(both.1)));
                into.extend(a.join().unwrap());
                into.extend(b.join().unwrap());
            });
        }
    }
    if alone.is_empty() || two.is_empty() || apart.is_empty() {
        return; // no per-thread CPU clock here
    }
    let stats = Stats {
        name,
        samples: two,
        goal: None,
    };
    let median = |mut d: Vec<Duration>| {
        d.sort();
        d[d.len() / 2]
    };
    let (alone, apart) = (median(alone), median(apart));
    let two = stats.quantile(0.5);
    let x = |d: Duration| d.as_secs_f64() / alone.as_secs_f64().max(1e-9);
    notes.push(format!(
        "{name}: {} against {} for one thread alone in the same rounds ({:.2} x): what the two threads share in the process; {} ({:.2} x) with each thread on a wasmtime engine of its own",
        fmt(two),
        fmt(alone),
        x(two),
        fmt(apart),
        x(apart),
    ));
    results.push(stats);
}

/// The CPU time this thread has had, to the ns: the kernel's per-thread clock brings the
/// running thread's time up to date, where `schedstat` lags by up to a tick.
fn this_thread_cpu() -> Option<std::time::Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    ok.then(|| std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

/// The CPU each kind of thread ([`threads_cpu`]) has had since `from`, per one of `n`,
/// shown. Threads that ended between are not counted (none of the run's or the call
/// threads do).
fn cpu_split(from: [std::time::Duration; 3], n: usize) -> Option<[String; 3]> {
    let to = threads_cpu()?;
    Some(std::array::from_fn(|k| {
        fmt(to[k].saturating_sub(from[k]) / n as u32)
    }))
}

/// The CPU time this process's threads have had (Linux: `/proc/self/task/*/schedstat`, in
/// ns, finer than the clock ticks of `stat`): this thread's (where the bench drives a run),
/// the call threads', the others' (the store daemon's are another process's). Wall time on
/// a shared machine moves with its neighbours; where each target's CPU goes does not, and
/// says which thread to make cheaper.
fn threads_cpu() -> Option<[std::time::Duration; 3]> {
    let this = std::fs::read_link("/proc/thread-self").ok()?;
    let this = this.file_name()?.to_owned();
    let mut cpu = [std::time::Duration::ZERO; 3];
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?;
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // a thread that ended meanwhile
        };
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let kind = if task.file_name() == this {
            0
        } else if comm.trim() == "medic-call" {
            1
        } else {
            2
        };
        cpu[kind] += std::time::Duration::from_nanos(ns);
    }
    Some(cpu)
}

/// A runbook of one fleet step over `n` targets of the trivial plugin, `concurrency` at a
/// time; `with`: the step's parameters line, if any.
fn fleet_runbook(n: usize, concurrency: usize, with: &str) -> String {
    let targets: Vec<String> = (0..n).map(|i| format!("\"host-{i:05}\"")).collect();
    format!(
        "[runbook]\nname = \"fleet\"\n[plugins.noop]\nsource = {:?}\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\
         [[steps]]\nid = \"all\"\nuses = \"noop\"\n{with}[steps.fleet]\ntargets = [{}]\nmax_concurrency = {concurrency}\n",
        medic::host::fixtures::HOSTILE,
        targets.join(", ")
    )
}

/// The heap a fleet step holds at its peak, per target, for a fleet of `small` and of ten
/// times as many targets (100 at a time), unrecorded (the engine alone) and recorded (with
/// the embedded store's caches): bounded memory means a target costs its name and status,
/// not its calls, and the store's caches stop at their size. With it, the allocations a
/// target costs: a count, unlike a time, that a noisy machine does not blur.
pub fn fleet_memory(
    rt: &tokio::runtime::Runtime,
    host: &PluginHost,
    small: usize,
) -> Option<String> {
    let mut figures = Vec::new();
    let mut allocations = Vec::new();
    for recorded in [false, true] {
        for n in [small, small * 10] {
            let dir = tempfile::tempdir().unwrap();
            let text = fleet_runbook(n, 100, "");
            let plan = plan_of(rt, host, &text);
            drop(text);
            let store = medic::store::Store::open(&dir.path().join("data"), "bench").unwrap();
            let mut quiet = |_: &medic::executor::Event<'_>| {};
            let mut recorder = recorder(&store, &mut quiet);
            let mut unrecorded = |_: &medic::executor::Event<'_>| {};
            let observer: &mut dyn medic::executor::Observer = if recorded {
                &mut recorder
            } else {
                &mut unrecorded
            };
            let before = super::heap_from_here();
            let allocs_before = super::allocs_so_far();
            let report = rt
                .block_on(medic::executor::execute(
                    host,
                    &plan,
                    medic::executor::RunOptions::default(),
                    observer,
                ))
                .expect("nothing aborts the benchmark");
            let allocs_after = super::allocs_so_far();
            let peak = super::heap_peak_since(before);
            assert_eq!(report.outcome, medic::executor::RunOutcome::Succeeded);
            assert!(recorder.error.is_none());
            let how = if recorded { "recorded" } else { "unrecorded" };
            figures.push(format!(
                "{n} targets {how}: {} ({} a target)",
                medic::host::limits::format_bytes(peak as u64),
                medic::host::limits::format_bytes((peak / n) as u64),
            ));
            let per_target = |from: u64, to: u64| (to - from) as f64 / n as f64;
            allocations.push(format!(
                "{n} targets {how}: {:.1} on the run's thread, {:.1} on all threads",
                per_target(allocs_before.0, allocs_after.0),
                per_target(allocs_before.1, allocs_after.1),
            ));
        }
    }
    Some(format!(
        "peak heap of a fleet step, 100 at a time: {}\nallocations a fleet target, 100 at a time (the run's thread records every target): {}",
        figures.join("; "),
        allocations.join("; ")
    ))
}
