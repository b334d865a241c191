//! The disk's floor, and how a recorded row is held against it: the floor and a sandboxed
//! call measured around each of the row's samples, on every CPU, and the goal judged on the
//! samples the machine ran at its fast speed. Part of `benches/medic.rs`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use medic::cpus::{self, Cpus};
use medic::host::PluginHost;
use medic::store::near_disk;

use super::{TrivialCall, fmt};

/// Room for the floor's writes: a file written beforehand, as a log's segment is (a file
/// that grows makes each `fdatasync` write its size too).
const FLOOR_SPACE: u64 = 4 << 20;

/// The disk's floor: 300 bytes written in place and `fdatasync`ed, in a file of `dir`.
pub(super) struct Floor {
    file: std::fs::File,
    at: u64,
    /// Where Medic keeps the thread that flushes a store in `dir`, if anywhere
    /// ([`near_disk`]): the floor is measured there too, at its best.
    pub(super) near_disk: Option<Cpus>,
}

impl Floor {
    pub(super) fn new(dir: &Path) -> Floor {
        let file = std::fs::File::create(dir.join("floor")).unwrap();
        (&file).write_all(&vec![0u8; FLOOR_SPACE as usize]).unwrap();
        file.sync_all().unwrap();
        Floor {
            file,
            at: 0,
            near_disk: near_disk::of(dir),
        }
    }

    pub(super) fn once(&mut self) {
        std::os::unix::fs::FileExt::write_all_at(&self.file, &[7u8; 300], self.at).unwrap();
        self.file.sync_data().unwrap();
        self.at = (self.at + 300) % (FLOOR_SPACE - 300);
    }

    /// A short burst: the floor as it is now. This disk's moves by half from one minute to
    /// the next, so a recorded row's ratio is also taken against the floor measured around
    /// each of its samples, not only against the floor row's, measured minutes before.
    fn now(&mut self) -> Burst {
        let cpus = self.near_disk.clone();
        on(cpus.as_ref(), || burst(NEAR_FLOOR_N, || self.once()))
    }
}

/// Runs `f` with this thread kept on `cpus` (if any), then lets it run anywhere it could.
pub(super) fn on<R>(cpus: Option<&Cpus>, f: impl FnOnce() -> R) -> R {
    let Some(cpus) = cpus else { return f() };
    let before = cpus::allowed();
    cpus.keep_this_thread();
    let r = f();
    if let Some(before) = before {
        before.keep_this_thread();
    }
    r
}

/// The times of `n` runs of `f` in a row.
#[derive(Clone, Copy, Default)]
struct Burst {
    median: Duration,
    /// What `n` of them in a row take, each: what a row's sample (its time over its steps,
    /// each paying its flush and its call, the slow ones too) is held against.
    mean: Duration,
}

fn burst(n: usize, mut f: impl FnMut()) -> Burst {
    let mut took: Vec<_> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    took.sort();
    Burst {
        median: took[took.len() / 2],
        mean: took.iter().sum::<Duration>() / n as u32,
    }
}

/// Flushes in each burst of [`Floor::now`].
const NEAR_FLOOR_N: usize = 100;

/// Sandboxed calls in each burst of [`Near::beside`], shared among the CPUs.
const NEAR_CALLS_N: usize = 200;

/// Samples of a row measured against the floor beside it (a full run; one in the smoke
/// run). Fifteen rather than five: a row's samples fall at both of this machine's speeds
/// ([`FAST_WITHIN`]), and the goal is judged on those at the fast one when there are
/// [`FAST_AT_LEAST`] of them.
pub(super) const NEAR_SAMPLES: usize = 15;

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
pub(super) struct Near {
    floor: Floor,
    call: TrivialCall,
    floors: Vec<Burst>,
    /// Each burst's call: the harmonic means of the CPUs' medians and of their means (what
    /// the floor counts).
    calls: Vec<Burst>,
    /// Each burst's slowest CPU's median (whether the machine was at its fast speed).
    slowest: Vec<Duration>,
    /// The fastest a CPU has run the call, or the call row's median if faster: the
    /// machine's fast speed, should this row's bursts all have found it slow.
    fastest: Option<Duration>,
}

impl Near {
    pub(super) fn new(
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
    pub(super) fn beside(&mut self, rt: &tokio::runtime::Runtime, host: &PluginHost) {
        self.floors.push(self.floor.now());
        let c = &self.call;
        let each = cpus::allowed().map(|a| a.each()).unwrap_or_default();
        let per_cpu: Vec<Burst> = if each.len() > 1 {
            let n = NEAR_CALLS_N.div_ceil(each.len());
            each.iter()
                .map(|cpu| on(Some(cpu), || burst(n, || c.once(rt, host))))
                .collect()
        } else {
            vec![burst(NEAR_CALLS_N, || c.once(rt, host))]
        };
        // The harmonic mean: calls spread over CPUs at different speeds go at the sum of
        // their rates (the fast CPU takes more of them), so the arithmetic mean would
        // count a slow CPU for more than a fleet pays for it.
        let harmonic = |pick: fn(&Burst) -> Duration| {
            let rate: f64 = per_cpu.iter().map(|b| 1.0 / pick(b).as_secs_f64()).sum();
            Duration::from_secs_f64(per_cpu.len() as f64 / rate)
        };
        self.calls.push(Burst {
            median: harmonic(|b| b.median),
            mean: harmonic(|b| b.mean),
        });
        let medians = per_cpu.iter().map(|b| b.median);
        self.slowest.push(medians.clone().max().unwrap_or_default());
        self.fastest = medians.chain(self.fastest).min();
    }

    /// A recorded row's samples against the floor and `calls` calls (1 for a step; 50 for a
    /// fleet target, whose floor is a batch of 50's), each against the mean of the bursts
    /// before and after it: "median x (each sample's)". The goal is judged on the samples
    /// every CPU ran at its fast speed on both sides of (see [`FAST_WITHIN`]), when there
    /// are enough of them, else on all.
    pub(super) fn paired(&self, samples: &[Duration], calls: u32) -> String {
        let ratios_by = |pick: fn(&Burst) -> Duration| -> Vec<f64> {
            let around =
                |d: &[Burst], i: usize| (pick(&d[i]) + pick(&d[(i + 1).min(d.len() - 1)])) / 2;
            samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let floor = around(&self.floors, i) + around(&self.calls, i) * calls;
                    (*s * calls).as_secs_f64() / floor.as_secs_f64()
                })
                .collect()
        };
        // A sample is a mean (a row's time over its steps), so against the bursts' means; a
        // flush's tail, which comes and goes on this disk, is paid by both.
        let ratios = ratios_by(|b| b.mean);
        let by_medians = ratios_by(|b| b.median);
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
        let fast_only = |r: &[f64]| {
            sorted(
                r.iter()
                    .enumerate()
                    .filter(|(i, _)| fast(*i))
                    .map(|(_, r)| *r)
                    .collect(),
            )
        };
        let in_fast = fast_only(&ratios);
        let on_fast = in_fast.len() >= FAST_AT_LEAST.min(all.len());
        let (judged, on) = if on_fast {
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
        let by_medians = if on_fast {
            fast_only(&by_medians)
        } else {
            sorted(by_medians)
        };
        let median = |d: &[Burst], pick: fn(&Burst) -> Duration| {
            let mut d: Vec<Duration> = d.iter().map(pick).collect();
            d.sort();
            d[d.len() / 2]
        };
        let called = match calls {
            1 => "a sandboxed call".to_owned(),
            n => format!("{n} sandboxed calls"),
        };
        format!(
            "{:.2} x the floor + {called}, both measured around each sample, over {on} (goal <= {GOAL_RATIO} x: {verdict}; the middle half of them {:.2} to {:.2} x; all samples {:.2} x; against the bursts' medians rather than their means {:.2} x; {NEAR_FLOOR_N} fdatasyncs beside the store, mean {} (median {}); {NEAR_CALLS_N} calls on the CPUs in turn, mean {} a call (median {}), fastest {}) (each sample, s where a CPU was slow: {each})",
            at(judged, 0.5),
            at(judged, 0.25),
            at(judged, 0.75),
            at(&all, 0.5),
            at(&by_medians, 0.5),
            fmt(median(&self.floors, |b| b.mean)),
            fmt(median(&self.floors, |b| b.median)),
            fmt(median(&self.calls, |b| b.mean)),
            fmt(median(&self.calls, |b| b.median)),
            fmt(fastest),
        )
    }
}
