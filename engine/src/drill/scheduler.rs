//! When drills are due. The scheduler is a plain state machine over an injected clock: ask it
//! what is due at a time, and when to wake up next. `medic serve` drives it with the real
//! clock; the tests drive it through days of schedule in milliseconds.

use std::hash::BuildHasher;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{Drill, Missed};

/// A drill to run now, for this scheduled time.
#[derive(Debug, Clone)]
pub struct Due {
    pub drill: Drill,
    pub scheduled: DateTime<Utc>,
    /// Set when this is the one run of missed schedules (`missed = "run_once"`).
    pub catch_up: bool,
}

/// Schedules missed while no scheduler ran, for a drill whose policy is to skip them.
#[derive(Debug, Clone)]
pub struct MissedRuns {
    pub drill: String,
    pub count: usize,
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Entry {
    drill: Drill,
    next: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct Scheduler {
    entries: Vec<Entry>,
}

/// At most this many missed times are counted (a drill every second, down for a month).
const MISSED_COUNT_CAP: usize = 10_000;

pub fn from_ms(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub fn to_ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

impl Scheduler {
    /// A scheduler for `drills` at `now`. `last` gives the last scheduled time handled for
    /// a drill (from the store); schedules between it and `now - grace` were missed and
    /// follow the drill's policy: returned as due now (run once) or as missed (skip). With a
    /// store shared by several schedulers, `grace` leaves the latest slots to the schedulers
    /// already running, which take them as they come.
    pub fn new(
        drills: Vec<Drill>,
        now: DateTime<Utc>,
        grace: std::time::Duration,
        last: impl Fn(&str) -> Option<DateTime<Utc>>,
    ) -> (Scheduler, Vec<Due>, Vec<MissedRuns>) {
        let missed_until = now - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut due = Vec::new();
        let mut missed = Vec::new();
        let mut entries = Vec::new();
        for drill in drills {
            if let Some(last) = last(&drill.name) {
                let times: Vec<DateTime<Utc>> =
                    std::iter::successors(drill.schedule.next_after(last), |t| {
                        drill.schedule.next_after(*t)
                    })
                    .take_while(|t| *t <= missed_until)
                    .take(MISSED_COUNT_CAP)
                    .collect();
                if let Some(latest) = times.last().copied() {
                    match drill.missed {
                        Missed::RunOnce => due.push(Due {
                            drill: drill.clone(),
                            scheduled: latest,
                            catch_up: true,
                        }),
                        Missed::Skip => missed.push(MissedRuns {
                            drill: drill.name.clone(),
                            count: times.len(),
                            last: latest,
                        }),
                    }
                }
            }
            let next = drill.schedule.next_after(now);
            entries.push(Entry { drill, next });
        }
        (Scheduler { entries }, due, missed)
    }

    /// The drills, with their next scheduled time.
    pub fn upcoming(&self) -> Vec<(&Drill, Option<DateTime<Utc>>)> {
        self.entries.iter().map(|e| (&e.drill, e.next)).collect()
    }

    /// When something is next due.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// Everything due at or before `now`, each drill once (the latest of its times, when
    /// the clock jumped over several), and moves their next times past `now`.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        for e in &mut self.entries {
            let Some(mut t) = e.next else { continue };
            if t > now {
                continue;
            }
            // A clock that jumped (suspend, NTP step) fires a drill once, not once per
            // missed time.
            while let Some(n) = e.drill.schedule.next_after(t)
                && n <= now
            {
                t = n;
            }
            due.push(Due {
                drill: e.drill.clone(),
                scheduled: t,
                catch_up: false,
            });
            e.next = e.drill.schedule.next_after(now);
        }
        due
    }

    /// Replaces the drill set (a reload). Unchanged drills keep their next time; new or
    /// changed ones are scheduled from `now`.
    pub fn replace(&mut self, drills: Vec<Drill>, now: DateTime<Utc>) {
        let old = std::mem::take(&mut self.entries);
        for drill in drills {
            let next = match old.iter().find(|e| e.drill == drill) {
                Some(e) => e.next,
                None => drill.schedule.next_after(now),
            };
            self.entries.push(Entry { drill, next });
        }
    }
}

/// How long to wait before starting a drill: up to its jitter, at random, so drills on the
/// same schedule do not all hit a system at once.
pub fn jitter(drill: &Drill) -> Duration {
    if drill.jitter.is_zero() {
        return Duration::ZERO;
    }
    let random = std::collections::hash_map::RandomState::new().hash_one(&drill.name);
    Duration::from_millis(random % (drill.jitter.as_millis() as u64).max(1))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::drill::Schedule;
    use crate::executor::RunOutcome;

    fn drill(name: &str, cron: &str, missed: Missed) -> Drill {
        Drill {
            name: name.into(),
            file: PathBuf::from("drills/x.toml"),
            runbook: PathBuf::from("x.toml"),
            environment: None,
            params: vec![],
            schedule: Schedule::parse(cron, None).unwrap(),
            jitter: Duration::ZERO,
            missed,
            fail_step: None,
            before: None,
            notify: None,
            expect: RunOutcome::RolledBack,
            recover_within: None,
            lock: format!("drill:{name}:default"),
            enabled: true,
        }
    }

    #[test]
    fn drills_sharing_a_lock_at_the_same_minute_are_named() {
        let now = at("2026-11-29T00:00:00Z");
        let mut a = drill("a", "0 3 * * *", Missed::Skip);
        let mut b = drill("b", "0 3 * * Mon", Missed::Skip);
        let c = drill("c", "30 3 * * *", Missed::Skip);
        assert!(crate::drill::overlaps(&[a.clone(), b.clone()], now).is_empty());
        a.lock = "web:staging".into();
        b.lock = "web:staging".into();
        let mut c2 = c.clone();
        c2.lock = "web:staging".into();
        let w = crate::drill::overlaps(&[a, b, c2], now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`a` and `b` share lock `web:staging`")
                && w[0].contains("2026-11-30 03:00 UTC"),
            "{w:?}"
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Drives the scheduler through a span of time as `medic serve` would: wake at the next
    /// due time, take what is due. Returns (drill, scheduled) in firing order.
    fn simulate(
        s: &mut Scheduler,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let mut fired = Vec::new();
        let mut now = from;
        for _ in 0..100_000 {
            let Some(wake) = s.next_wake() else { break };
            if wake > to {
                break;
            }
            now = now.max(wake);
            for d in s.take_due(now) {
                fired.push((d.drill.name, d.scheduled.format("%H:%M").to_string()));
            }
        }
        fired
    }

    #[test]
    fn a_day_of_schedules_in_order() {
        let start = at("2026-11-23T00:00:00Z");
        let (mut s, due, missed) = Scheduler::new(
            vec![
                drill("every-6h", "0 */6 * * *", Missed::Skip),
                drill("nightly", "30 2 * * *", Missed::Skip),
            ],
            start,
            std::time::Duration::ZERO,
            |_| None,
        );
        assert!(due.is_empty() && missed.is_empty());
        let fired = simulate(&mut s, start, at("2026-11-23T23:59:59Z"));
        let expect: Vec<(String, String)> = [
            ("nightly", "02:30"),
            ("every-6h", "06:00"),
            ("every-6h", "12:00"),
            ("every-6h", "18:00"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(fired, expect);
    }

    #[test]
    fn missed_schedules_follow_the_policy() {
        let now = at("2026-11-23T12:00:00Z");
        let last = Some(at("2026-11-23T08:00:00Z"));
        let (_, due, missed) = Scheduler::new(
            vec![
                drill("skipper", "0 * * * *", Missed::Skip),
                drill("catcher", "0 * * * *", Missed::RunOnce),
                drill("fresh", "0 * * * *", Missed::RunOnce),
            ],
            now,
            std::time::Duration::ZERO,
            |name| if name == "fresh" { None } else { last },
        );
        // 09:00, 10:00, 11:00 and 12:00 were missed.
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].drill.as_str(), missed[0].count), ("skipper", 4));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].drill.name, "catcher");
        assert_eq!(due[0].scheduled, at("2026-11-23T12:00:00Z"));
        assert!(due[0].catch_up);
    }

    #[test]
    fn with_a_grace_the_latest_slots_are_not_missed() {
        // Another scheduler sharing the store takes the 12:00 slot as it comes; this one,
        // starting 10 s later, counts only what is older than its grace as missed.
        let now = at("2026-11-23T12:00:10Z");
        let (_, due, missed) = Scheduler::new(
            vec![
                drill("skipper", "0 * * * *", Missed::Skip),
                drill("catcher", "0 * * * *", Missed::RunOnce),
            ],
            now,
            std::time::Duration::from_secs(20),
            |_| Some(at("2026-11-23T10:00:00Z")),
        );
        assert_eq!((missed[0].drill.as_str(), missed[0].count), ("skipper", 1));
        assert_eq!(missed[0].last, at("2026-11-23T11:00:00Z"));
        assert_eq!(due[0].scheduled, at("2026-11-23T11:00:00Z"));
    }

    #[test]
    fn a_clock_jump_fires_once() {
        let start = at("2026-11-23T00:00:00Z");
        let (mut s, _, _) = Scheduler::new(
            vec![drill("m", "*/5 * * * *", Missed::Skip)],
            start,
            std::time::Duration::ZERO,
            |_| None,
        );
        let due = s.take_due(at("2026-11-23T01:02:00Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].scheduled, at("2026-11-23T01:00:00Z"));
        assert_eq!(s.next_wake(), Some(at("2026-11-23T01:05:00Z")));
    }

    #[test]
    fn a_reload_keeps_unchanged_drills_and_schedules_new_ones() {
        let start = at("2026-11-23T00:00:00Z");
        let (mut s, _, _) = Scheduler::new(
            vec![
                drill("a", "0 3 * * *", Missed::Skip),
                drill("b", "0 4 * * *", Missed::Skip),
            ],
            start,
            std::time::Duration::ZERO,
            |_| None,
        );
        s.replace(
            vec![
                drill("a", "0 3 * * *", Missed::Skip),
                drill("c", "0 1 * * *", Missed::Skip),
            ],
            at("2026-11-23T00:30:00Z"),
        );
        let names: Vec<(&str, Option<DateTime<Utc>>)> = s
            .upcoming()
            .into_iter()
            .map(|(d, t)| (d.name.as_str(), t))
            .collect();
        assert_eq!(
            names,
            [
                ("a", Some(at("2026-11-23T03:00:00Z"))),
                ("c", Some(at("2026-11-23T01:00:00Z")))
            ]
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut d = drill("j", "0 * * * *", Missed::Skip);
        assert_eq!(jitter(&d), Duration::ZERO);
        d.jitter = Duration::from_secs(30);
        for _ in 0..50 {
            assert!(jitter(&d) < Duration::from_secs(30));
        }
    }
}
