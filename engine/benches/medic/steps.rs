//! The engine's cost per step and per fleet target, durably recorded or not, beside the
//! disk's own floor: part of `benches/medic.rs`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use medic::host::PluginHost;
use medic::store::near_disk::{self, Cpus};

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

/// Room for the floor's writes: a file written beforehand, as a log's segment is (a file
/// that grows makes each `fdatasync` write its size too).
const FLOOR_SPACE: u64 = 4 << 20;

/// The disk's floor: 300 bytes written in place and `fdatasync`ed, in a file of `dir`.
struct Floor {
    file: std::fs::File,
    at: u64,
    /// Where Medic keeps the thread that flushes a store in `dir`, if anywhere
    /// ([`near_disk`]): the floor is measured there too, at its best.
    near_disk: Option<Cpus>,
}

impl Floor {
    fn new(dir: &Path) -> Floor {
        let file = std::fs::File::create(dir.join("floor")).unwrap();
        (&file).write_all(&vec![0u8; FLOOR_SPACE as usize]).unwrap();
        file.sync_all().unwrap();
        Floor {
            file,
            at: 0,
            near_disk: near_disk::of(dir),
        }
    }

    fn once(&mut self) {
        std::os::unix::fs::FileExt::write_all_at(&self.file, &[7u8; 300], self.at).unwrap();
        self.file.sync_data().unwrap();
        self.at = (self.at + 300) % (FLOOR_SPACE - 300);
    }

    /// The median of a short burst: the floor as it is now. This disk's moves by half from
    /// one minute to the next, so a recorded row's ratio is also taken against the floor
    /// measured around each of its samples, not only against the floor row's, measured
    /// minutes before.
    fn now(&mut self) -> Duration {
        let cpus = self.near_disk.clone();
        on(cpus.as_ref(), || burst_median(NEAR_FLOOR_N, || self.once()))
    }
}

/// Runs `f` with this thread kept on `cpus` (if any), then lets it run anywhere it could.
fn on<R>(cpus: Option<&Cpus>, f: impl FnOnce() -> R) -> R {
    let Some(cpus) = cpus else { return f() };
    let before = near_disk::allowed();
    cpus.keep_this_thread();
    let r = f();
    if let Some(before) = before {
        before.keep_this_thread();
    }
    r
}

/// The median time of `n` runs of `f` in a row.
fn burst_median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut took: Vec<_> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    took.sort();
    took[took.len() / 2]
}

/// Flushes in each burst of [`Floor::now`].
const NEAR_FLOOR_N: usize = 100;

/// Sandboxed calls in each burst of [`Near::beside`], shared among the CPUs.
const NEAR_CALLS_N: usize = 200;

/// Samples of a row measured against the floor beside it (a full run; one in the smoke
/// run). Fifteen rather than five: a row's samples fall at both of this machine's speeds
/// ([`FAST_WITHIN`]), and the goal is judged on those at the fast one when there are
/// [`FAST_AT_LEAST`] of them.
const NEAR_SAMPLES: usize = 15;

/// A CPU whose calls took within this many times the fastest found it at its fast speed.
/// This machine's CPUs each run at one of two speeds, flipping within a second: a call takes
/// 12 to 16 µs or 18 to 26 µs, seldom in between. A lone call measured on a slow CPU slows
/// by 1.75 x, a fleet using both by less, so a ratio taken there flatters the fleet; and a
/// lone call on the fast CPU says nothing of the other, which the fleet uses too.
const FAST_WITHIN: f64 = 1.25;

/// Samples at the fast speed needed to judge the goal on them alone.
const FAST_AT_LEAST: usize = 5;

/// The goal for a durable action step, and a batch of 50 fleet targets: at most this many
/// times its floor.
pub const GOAL_RATIO: f64 = 1.3;

/// The floor and a sandboxed call, each measured by a short burst before and after each
/// sample of a recorded row (the burst after one sample is the one before the next). This
/// machine's disk moves by half, and its CPU's speed by half again, from one minute to the
/// next: a ratio against the floor and call rows, measured minutes before, tells the hour as
/// much as the engine, and one against a burst on one side of the sample only tells the
/// seconds around it (a fleet's sample lasts 20 ms).
struct Near {
    floor: Floor,
    call: TrivialCall,
    floors: Vec<Duration>,
    /// Each burst's call: the harmonic mean of the CPUs' medians (what the floor counts).
    calls: Vec<Duration>,
    /// Each burst's slowest CPU's median (whether the machine was at its fast speed).
    slowest: Vec<Duration>,
    /// The fastest a CPU has run the call, or the call row's median if faster: the
    /// machine's fast speed, should this row's bursts all have found it slow.
    fastest: Option<Duration>,
}

impl Near {
    fn new(
        rt: &tokio::runtime::Runtime,
        host: &PluginHost,
        dir: &Path,
        call_row: Option<Duration>,
    ) -> Near {
        Near {
            floor: Floor::new(dir),
            call: TrivialCall::load(rt, host),
            floors: Vec::new(),
            calls: Vec::new(),
            slowest: Vec::new(),
            fastest: call_row,
        }
    }

    /// One burst of each, between two samples (and before the first, and after the last).
    /// The calls are measured on each CPU in turn: this machine's CPUs change speed apart
    /// from each other, and a fleet's calls run on all of them.
    fn beside(&mut self, rt: &tokio::runtime::Runtime, host: &PluginHost) {
        self.floors.push(self.floor.now());
        let c = &self.call;
        let each = near_disk::allowed().map(|a| a.each()).unwrap_or_default();
        let per_cpu: Vec<Duration> = if each.len() > 1 {
            let n = NEAR_CALLS_N.div_ceil(each.len());
            each.iter()
                .map(|cpu| on(Some(cpu), || burst_median(n, || c.once(rt, host))))
                .collect()
        } else {
            vec![burst_median(NEAR_CALLS_N, || c.once(rt, host))]
        };
        // The harmonic mean: calls spread over CPUs at different speeds go at the sum of
        // their rates (the fast CPU takes more of them), so the arithmetic mean would
        // count a slow CPU for more than a fleet pays for it.
        let rate: f64 = per_cpu.iter().map(|d| 1.0 / d.as_secs_f64()).sum();
        self.calls
            .push(Duration::from_secs_f64(per_cpu.len() as f64 / rate));
        self.slowest
            .push(per_cpu.iter().max().copied().unwrap_or_default());
        self.fastest = per_cpu.iter().copied().chain(self.fastest).min();
    }

    /// A recorded row's samples against the floor and `calls` calls (1 for a step; 50 for a
    /// fleet target, whose floor is a batch of 50's), each against the mean of the bursts
    /// before and after it: "median x (each sample's)". The goal is judged on the samples
    /// every CPU ran at its fast speed on both sides of (see [`FAST_WITHIN`]), when there
    /// are enough of them, else on all.
    fn paired(&self, samples: &[Duration], calls: u32) -> String {
        let around = |d: &[Duration], i: usize| (d[i] + d[(i + 1).min(d.len() - 1)]) / 2;
        let ratios: Vec<f64> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let floor = around(&self.floors, i) + around(&self.calls, i) * calls;
                (*s * calls).as_secs_f64() / floor.as_secs_f64()
            })
            .collect();
        let fastest = self.fastest.unwrap_or_default();
        let fast = |i: usize| {
            [i, (i + 1).min(self.slowest.len() - 1)]
                .iter()
                .all(|&b| self.slowest[b].as_secs_f64() <= fastest.as_secs_f64() * FAST_WITHIN)
        };
        let each = ratios
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{r:.2}{}", if fast(i) { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ");
        let sorted = |mut r: Vec<f64>| {
            r.sort_by(f64::total_cmp);
            r
        };
        let at = |r: &[f64], q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
        let all = sorted(ratios.clone());
        let in_fast = sorted(
            ratios
                .iter()
                .enumerate()
                .filter(|(i, _)| fast(*i))
                .map(|(_, r)| *r)
                .collect(),
        );
        let (judged, on) = if in_fast.len() >= FAST_AT_LEAST.min(all.len()) {
            (
                &in_fast,
                format!(
                    "the {} of {} samples with every CPU at its fast speed around them",
                    in_fast.len(),
                    all.len()
                ),
            )
        } else {
            (
                &all,
                format!(
                    "all {} samples: only {} had every CPU at its fast speed around them",
                    all.len(),
                    in_fast.len()
                ),
            )
        };
        let verdict = if at(judged, 0.5) <= GOAL_RATIO {
            "met"
        } else {
            "MISSED"
        };
        let median = |d: &[Duration]| {
            let mut d = d.to_vec();
            d.sort();
            d[d.len() / 2]
        };
        let called = match calls {
            1 => "a sandboxed call".to_owned(),
            n => format!("{n} sandboxed calls"),
        };
        format!(
            "{:.2} x the floor + {called}, both measured around each sample, over {on} (goal <= {GOAL_RATIO} x: {verdict}; the middle half of them {:.2} to {:.2} x; all samples {:.2} x; {NEAR_FLOOR_N} fdatasyncs beside the store, median {}; {NEAR_CALLS_N} calls on the CPUs in turn, median {} a call, fastest {}) (each sample, s where a CPU was slow: {each})",
            at(judged, 0.5),
            at(judged, 0.25),
            at(judged, 0.75),
            at(&all, 0.5),
            fmt(median(&self.floors)),
            fmt(median(&self.calls)),
            fmt(fastest),
        )
    }
}

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
