//! Stats and triggers: change failure rate, rollback success, time to recover and to detect,
//! week by week (charts drawn here) and per runbook; per trigger, what its alerts met; and
//! the alerts as they arrived.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::super::State;
use super::pages::{message, time, who};
use crate::store::{ListFilter, RunRecord, stats};

const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
/// Weeks in the charts.
const WEEKS: u64 = 12;

fn pct(r: Option<f64>) -> Value {
    json!(r.map(|r| format!("{:.0}%", r * 100.0)))
}

fn secs(d: Option<std::time::Duration>) -> Value {
    json!(d.map(|d| format!("{:.1} s", d.as_secs_f64())))
}

fn summary(s: &stats::Stats) -> Value {
    json!({
        "runs": s.runs,
        "success_rate": pct(s.success_rate),
        "change_failure_rate": pct(s.change_failure_rate),
        "rollback_success_rate": pct(s.rollback_success_rate),
        "mttr": secs(s.mean_time_to_recover),
        "detect": secs(s.mean_time_to_detect),
    })
}

pub async fn page(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let now = crate::store::now_ms();
    let since = now.saturating_sub(WEEKS * WEEK_MS);
    let store = state.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        let filter = ListFilter {
            since_ms: Some(since),
            ..ListFilter::default()
        };
        Ok::<_, crate::store::StoreError>((
            store.list(&filter, usize::MAX)?,
            store.alerts(since, usize::MAX)?,
        ))
    })
    .await;
    let (records, alerts) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return message(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Stats",
                &e.to_string(),
                None,
            );
        }
        Err(e) => {
            return message(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Stats",
                &e.to_string(),
                None,
            );
        }
    };
    // Week by week, oldest first.
    let weeks: Vec<stats::Stats> = (0..WEEKS)
        .rev()
        .map(|w| {
            let to = now.saturating_sub(w * WEEK_MS);
            let from = to.saturating_sub(WEEK_MS);
            let these: Vec<RunRecord> = records
                .iter()
                .filter(|r| r.started_ms >= from && r.started_ms < to)
                .cloned()
                .collect();
            stats::compute(&these)
        })
        .collect();
    let per_mille = |r: Option<f64>| r.map_or(0, |r| (r * 1000.0) as u64);
    let charts = json!({
        "change_failure_rate": super::drills::trend_svg(&weeks.iter().map(|s| per_mille(s.change_failure_rate)).collect::<Vec<_>>()),
        "mttr": super::drills::trend_svg(&weeks.iter().map(|s| s.mean_time_to_recover.map_or(0, |d| d.as_millis() as u64)).collect::<Vec<_>>()),
        "runs": super::drills::trend_svg(&weeks.iter().map(|s| s.runs as u64).collect::<Vec<_>>()),
        "rollback_success": super::drills::trend_svg(&weeks.iter().map(|s| per_mille(s.rollback_success_rate)).collect::<Vec<_>>()),
        "detect": super::drills::trend_svg(&weeks.iter().map(|s| s.mean_time_to_detect.map_or(0, |d| d.as_millis() as u64)).collect::<Vec<_>>()),
    });
    let mut by_runbook: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
    for r in &records {
        by_runbook
            .entry(r.runbook.clone())
            .or_default()
            .push(r.clone());
    }
    let runbooks: Vec<Value> = by_runbook
        .iter()
        .map(|(name, rs)| {
            let mut v = summary(&stats::compute(rs));
            v["name"] = json!(name);
            v
        })
        .collect();
    let triggers: Vec<Value> = stats::by_trigger(&records, &alerts)
        .into_iter()
        .map(|(name, t)| {
            let mut v = serde_json::to_value(&t).unwrap_or_default();
            v["name"] = json!(name);
            v["detect"] = secs(t.mean_time_to_detect);
            v["remediate"] = secs(t.mean_time_to_remediate);
            v
        })
        .collect();
    super::render(
        "stats.html",
        minijinja::context! {
            user => who(&user),
            all => summary(&stats::compute(&records)),
            charts => charts,
            runbooks => runbooks,
            triggers => triggers,
            weeks => WEEKS,
        },
    )
}

pub async fn triggers(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let list = super::super::routes::ops(&state, json!({ "op": "trigger_list" }))
        .await
        .map(|v| v["triggers"].clone())
        .unwrap_or_default();
    let since = crate::store::now_ms().saturating_sub(WEEK_MS);
    let store = state.store.clone();
    let alerts = tokio::task::spawn_blocking(move || store.alerts(since, 200))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let rows: Vec<Value> = alerts
        .iter()
        .rev()
        .map(|a| {
            json!({
                "at": time(a.at_ms), "trigger": a.trigger, "alert": a.alert, "status": a.status,
                "decision": a.decision, "detail": a.detail, "run_id": a.run_id,
            })
        })
        .collect();
    super::render(
        "triggers.html",
        minijinja::context! { user => who(&user), triggers => list, alerts => rows },
    )
}
