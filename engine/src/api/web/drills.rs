//! The drills page: per drill its pass rate, last pass, next run, and the time to recover
//! over its last runs as a chart (SVG drawn here: numbers only, nothing a runbook says);
//! pause, resume and run now for admins. A failing or stale drill stands out.

use std::sync::Arc;

use axum::extract::{Form, State as AxumState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::State;
use super::super::auth::{ApiError, Path};
use super::pages::{message, who};
use super::session::{audit, form_user};
use crate::store::drills::{DrillRecord, DrillResult};
use crate::store::tokens::Role;

/// Runs shown in a drill's chart, at most.
const TREND: usize = 20;
/// A drill that has not passed for this long is stale.
const STALE_MS: u64 = 7 * 24 * 3600 * 1000;

/// A polyline of values (oldest first) scaled to their largest, as an SVG of 240 x 60.
pub(super) fn trend_svg(points: &[u64]) -> String {
    let (w, h, pad) = (240.0_f64, 60.0_f64, 4.0_f64);
    let max = points.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = if points.len() > 1 {
        (w - 2.0 * pad) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let x = pad + step * i as f64;
            let y = h - pad - (v as f64 / max) * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let dots: String = coords
        .iter()
        .map(|c| {
            let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
            format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\"/>")
        })
        .collect();
    format!(
        "<svg class=\"trend\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" data-points=\"{}\"><polyline points=\"{}\"/>{dots}</svg>",
        points.len(),
        coords.join(" ")
    )
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub async fn page(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let list = match super::super::routes::ops(&state, json!({ "op": "drill_list" })).await {
        Ok(v) => v,
        Err(e) => return message(e.status, "Drills", &e.message, None),
    };
    let now = crate::store::now_ms();
    let since = now.saturating_sub(90 * 24 * 3600 * 1000);
    let store = state.store.clone();
    let records: Vec<DrillRecord> =
        tokio::task::spawn_blocking(move || store.drill_records(None, since))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
    let drills: Vec<Value> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let name = d["name"].as_str().unwrap_or("").to_owned();
            let mut mine: Vec<&DrillRecord> = records.iter().filter(|r| r.drill == name).collect();
            mine.sort_by_key(|r| r.started_ms);
            let judged: Vec<&&DrillRecord> = mine
                .iter()
                .filter(|r| matches!(r.result, DrillResult::Passed | DrillResult::Failed))
                .collect();
            let passed = judged.iter().filter(|r| r.result == DrillResult::Passed).count();
            let last_pass = mine
                .iter()
                .rev()
                .find(|r| r.result == DrillResult::Passed)
                .map(|r| r.started_ms);
            let last = judged.last().map(|r| r.result.name().to_owned());
            let recover: Vec<u64> = mine
                .iter()
                .filter_map(|r| r.recover_ms)
                .rev()
                .take(TREND)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let failing = last.as_deref() == Some("failed");
            let stale = last_pass.is_none_or(|t| now.saturating_sub(t) > STALE_MS);
            json!({
                "name": name,
                "schedule": d["schedule"],
                "next": d["next"],
                "running": d["running"],
                "paused": d["paused"],
                "runs": judged.len(),
                "pass_rate": (!judged.is_empty()).then(|| format!("{:.0}%", 100.0 * passed as f64 / judged.len() as f64)),
                "last": last,
                "last_pass": last_pass.map(super::pages::time),
                "recover_last": recover.last().map(|&ms| seconds(ms)),
                "chart": (!recover.is_empty()).then(|| trend_svg(&recover)),
                "failing": failing,
                "stale": stale,
            })
        })
        .collect();
    super::render(
        "drills.html",
        minijinja::context! {
            user => who(&user),
            admin => user.caller.0.role == Role::Admin,
            drills => drills,
        },
    )
}

#[derive(Deserialize)]
pub struct DrillForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub async fn act(
    AxumState(state): AxumState<Arc<State>>,
    Extension(peer): Extension<super::super::auth::Peer>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<DrillForm>,
) -> Response {
    let user = match form_user(&state, &headers, &form.csrf) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let caller = user.caller.clone();
    let who = caller.who();
    let result: Result<(), ApiError> = match action.as_str() {
        "run" => super::super::routes::run_drill(
            AxumState(state.clone()),
            Extension(caller),
            Path(name.clone()),
        )
        .await
        .map(|_| ()),
        "pause" => super::super::routes::pause_drill(
            AxumState(state.clone()),
            Extension(caller),
            Path(name.clone()),
            axum::body::Bytes::from(json!({ "reason": form.reason }).to_string().into_bytes()),
        )
        .await
        .map(|_: Json<Value>| ()),
        "resume" => super::super::routes::resume_drill(
            AxumState(state.clone()),
            Extension(caller),
            Path(name.clone()),
        )
        .await
        .map(|_| ()),
        other => Err(ApiError::not_found(format!("no action `{other}`"))),
    };
    audit(
        &state,
        &who,
        &format!("POST /ui/drills/{name}/{action}"),
        peer.0,
        &result,
    );
    match result {
        Ok(()) => Redirect::to("/ui/drills").into_response(),
        Err(e) => message(e.status, "Not done", &e.message, Some("/ui/drills")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trend_is_numbers_only() {
        let svg = trend_svg(&[1000, 3000, 2000]);
        assert!(svg.contains("data-points=\"3\""), "{svg}");
        assert!(
            svg.contains("<polyline points=\"4.0,38.7 120.0,4.0 236.0,21.3\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(trend_svg(&[5]).contains("data-points=\"1\""));
    }
}
