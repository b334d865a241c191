//! A run's detect/recover timeline: each step as a bar on one time axis, from the alert that
//! started it (when an alert did) to its end, with the moments that make the incident
//! figures marked (change in place, failure detected, recovered). Geometry only: the
//! template draws it, so step names are escaped like every other text on the page.

use serde_json::{Value, json};

use crate::executor::Phase;
use crate::store::{JournalEntry, JournalEvent, RunRecord, Trigger};

/// The chart's drawing area, in SVG user units.
const WIDTH: f64 = 720.0;
const LABELS: f64 = 150.0;
const ROW: f64 = 20.0;
const TOP: f64 = 34.0;
/// Rows drawn at most; a fleet run with hundreds of retries stays readable.
const MAX_ROWS: usize = 60;

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Steps => "steps",
        Phase::Rollback => "rollback",
        Phase::Verify => "verify",
        Phase::Finally => "finally",
    }
}

struct Bar {
    label: String,
    phase: Phase,
    start: u64,
    end: Option<u64>,
    status: String,
}

/// Bars from the journal: one per started step, ended by its report (a step started twice,
/// as a resumed run may, gets a bar each time).
fn bars(journal: &[JournalEntry]) -> Vec<Bar> {
    let mut out: Vec<Bar> = Vec::new();
    for e in journal {
        match &e.event {
            JournalEvent::StepStarted { phase, step, .. } => out.push(Bar {
                label: step.clone(),
                phase: *phase,
                start: e.at_ms,
                end: None,
                status: "running".into(),
            }),
            JournalEvent::StepFinished { report } => {
                if let Some(b) = out
                    .iter_mut()
                    .rev()
                    .find(|b| b.end.is_none() && b.label == report.id && b.phase == report.phase)
                {
                    b.end = Some(e.at_ms);
                    b.status = serde_json::to_value(&report.status)
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                }
            }
            _ => {}
        }
    }
    out
}

/// A label that fits the label column (about 22 characters at the chart's font size).
fn short(label: &str) -> String {
    if label.chars().count() <= 22 {
        label.to_owned()
    } else {
        let mut s: String = label.chars().take(21).collect();
        s.push('…');
        s
    }
}

fn span(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The chart for a run, or nothing when no step has started yet. `now_ms` ends the bars of
/// steps still running.
pub fn chart(record: &RunRecord, journal: &[JournalEntry], now_ms: u64) -> Option<Value> {
    let mut bars = bars(journal);
    if bars.is_empty() {
        return None;
    }
    let alert_ms = match &record.trigger {
        Trigger::Alert { starts_at_ms, .. } if *starts_at_ms > 0 => Some(*starts_at_ms),
        _ => None,
    };
    let last_event = journal.last().map_or(record.started_ms, |e| e.at_ms);
    let t0 = alert_ms.map_or(record.started_ms, |a| a.min(record.started_ms));
    let t1 = record
        .ended_ms
        .unwrap_or(if record.status == crate::store::RunStatus::Running {
            now_ms
        } else {
            last_event
        })
        .max(last_event)
        .max(t0 + 1);
    let truncated = bars.len().saturating_sub(MAX_ROWS);
    bars.truncate(MAX_ROWS);
    let scale = (WIDTH - LABELS - 10.0) / (t1 - t0) as f64;
    let x = |ms: u64| LABELS + (ms.clamp(t0, t1) - t0) as f64 * scale;
    let rows: Vec<Value> = bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let end = b.end.unwrap_or(t1);
            let (x0, x1) = (x(b.start), x(end));
            json!({
                "label": b.label,
                "short": short(&b.label),
                "phase": phase_name(b.phase),
                "status": b.status,
                "x": format!("{x0:.1}"),
                // A step of a millisecond still shows.
                "w": format!("{:.1}", (x1 - x0).max(2.0)),
                "y": format!("{:.1}", TOP + i as f64 * ROW),
                "ty": format!("{:.1}", TOP + i as f64 * ROW + ROW * 0.65),
                "took": span(end.saturating_sub(b.start)),
                "open": b.end.is_none(),
            })
        })
        .collect();
    let height = TOP + rows.len() as f64 * ROW + 8.0;
    let mut moments: Vec<(&str, u64)> = [
        ("alert fired", alert_ms),
        ("started", Some(record.started_ms)),
        ("changed", record.changed_ms),
        ("failure detected", record.detected_ms),
        ("recovered", record.recovered_ms),
        ("ended", record.ended_ms),
    ]
    .into_iter()
    .filter_map(|(n, at)| at.map(|at| (n, at)))
    .collect();
    // Where a person picked the run up again (`runs resume`, `runs rollback`, their buttons).
    moments.extend(journal.iter().filter_map(|e| match &e.event {
        JournalEvent::RunResumed { mode, .. } => Some((
            if mode == "rollback" {
                "rollback asked"
            } else {
                "resumed"
            },
            e.at_ms,
        )),
        _ => None,
    }));
    moments.sort_by_key(|&(_, at)| at);
    let marks: Vec<Value> = moments
        .iter()
        .map(|&(name, at)| {
            json!({ "name": name, "x": format!("{:.1}", x(at)), "at": span(at.saturating_sub(t0)) })
        })
        .collect();
    // Moments closer than a label's width share one label, anchored inside the chart so
    // that neither overlaps nor runs off an edge.
    let mut groups: Vec<(f64, f64, Vec<&str>)> = Vec::new();
    for &(name, at) in &moments {
        let at = x(at);
        match groups.last_mut() {
            Some((_, last, names)) if at - *last < 90.0 => {
                *last = at;
                names.push(name);
            }
            _ => groups.push((at, at, vec![name])),
        }
    }
    let labels: Vec<Value> = groups
        .iter()
        .enumerate()
        .map(|(i, (first, last, names))| {
            let right = *first > (LABELS + WIDTH) / 2.0;
            json!({
                "text": names.join(" · "),
                "x": format!("{:.1}", if right { *last } else { *first }),
                "anchor": if right { "end" } else { "start" },
                "y": if i % 2 == 0 { 12 } else { 26 },
            })
        })
        .collect();
    let mut figures = Vec::new();
    if let Some(a) = alert_ms {
        figures.push((
            "alert to run start",
            span(record.started_ms.saturating_sub(a)),
        ));
    }
    if let (Some(c), Some(d)) = (record.changed_ms, record.detected_ms) {
        figures.push(("time to detect", span(d.saturating_sub(c))));
    }
    if let (Some(d), Some(r)) = (record.detected_ms, record.recovered_ms) {
        figures.push(("time to recover", span(r.saturating_sub(d))));
    }
    if let (Some(a), Some(end)) = (alert_ms, record.recovered_ms.or(record.ended_ms)) {
        figures.push(("alert to resolution", span(end.saturating_sub(a))));
    }
    Some(json!({
        "width": WIDTH,
        "height": format!("{height:.0}"),
        "label_x": LABELS - 6.0,
        "rows": rows,
        "marks": marks,
        "mark_labels": labels,
        "truncated": truncated,
        "figures": figures,
        "total": span(t1 - t0),
    }))
}
