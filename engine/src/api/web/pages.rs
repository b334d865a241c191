//! The pages: runs, a run (live), approvals; and the forms that act, each going through the
//! same checks as the API (role, environment, approval policy) and the session's CSRF token.

use std::sync::Arc;

use axum::extract::{Form, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::super::State;
use super::super::auth::{ApiError, Path};
use super::session::{User, audit, form_user};
use crate::store::tokens::Role;
use crate::store::{ListFilter, RunStatus};

/// A page that says one thing (an error, a refusal), with a way back.
pub fn message(status: StatusCode, title: &str, text: &str, back: Option<&str>) -> Response {
    let mut r = super::render(
        "message.html",
        minijinja::context! { title, text, back => back.unwrap_or("/ui/runs"), user => None::<Value> },
    );
    *r.status_mut() = status;
    r
}

fn refused(e: ApiError, back: &str) -> Response {
    let title = if e.status == StatusCode::FORBIDDEN {
        "Not allowed"
    } else {
        "Not done"
    };
    message(e.status, title, &e.message, Some(back))
}

/// What every page knows of who is looking.
pub(super) fn who(user: &User) -> Value {
    let role = user.caller.0.role;
    serde_json::json!({
        "name": user.caller.0.name,
        "role": role.name(),
        "csrf": user.csrf,
        "responder": matches!(role, Role::Responder | Role::Admin),
        "approver": matches!(role, Role::Approver | Role::Admin),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    runbook: Option<String>,
    status: Option<String>,
    environment: Option<String>,
    trigger: Option<String>,
    /// How far back: `1h`, `24h`, `7d`, `30d`; anything else is all time.
    since: Option<String>,
}

/// The runs page's time spans: the value in its query, and what the page calls it.
const SPANS: [(&str, &str, u64); 5] = [
    ("", "any time", 0),
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 24 * 3600),
    ("7d", "last 7 days", 7 * 24 * 3600),
    ("30d", "last 30 days", 30 * 24 * 3600),
];

fn blank(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

pub async fn runs(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let status = blank(q.status.clone());
    let filter = ListFilter {
        runbook: blank(q.runbook.clone()),
        status: status.as_deref().and_then(RunStatus::parse),
        environment: blank(q.environment.clone()),
        trigger: blank(q.trigger.clone()),
        since_ms: SPANS
            .iter()
            .find(|(v, _, secs)| *secs > 0 && Some(*v) == q.since.as_deref())
            .map(|(_, _, secs)| crate::store::now_ms().saturating_sub(secs * 1000)),
        ..ListFilter::default()
    };
    let store = state.store.clone();
    let runs = match tokio::task::spawn_blocking(move || store.list(&filter, 200)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Store",
                &e.to_string(),
                None,
            );
        }
        Err(e) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Store",
                &e.to_string(),
                None,
            );
        }
    };
    let any_running = runs.iter().any(|r| r.status == RunStatus::Running);
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.run_id,
                "short": &r.run_id[..r.run_id.len().min(10)],
                "runbook": r.runbook,
                "environment": r.environment,
                "status": r.status.name(),
                "trigger": r.trigger.to_string(),
                "started": time(r.started_ms),
                "duration": r.ended_ms.map(|e| duration(e.saturating_sub(r.started_ms))),
            })
        })
        .collect();
    super::render(
        "runs.html",
        minijinja::context! {
            user => who(&user),
            runs => rows,
            live => any_running,
            q => serde_json::json!({
                "runbook": q.runbook.unwrap_or_default(),
                "status": q.status.unwrap_or_default(),
                "environment": q.environment.unwrap_or_default(),
                "trigger": q.trigger.unwrap_or_default(),
                "since": q.since.unwrap_or_default(),
            }),
            spans => SPANS.iter().map(|(v, label, _)| (*v, *label)).collect::<Vec<_>>(),
            statuses => ["running", "succeeded", "failed", "rolled_back", "rollback_failed", "cancelled", "interrupted", "dry_run"],
        },
    )
}

pub(super) fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

pub async fn run(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || {
        let record = store.find(&id)?;
        let journal = store.journal(&record.run_id)?;
        Ok::<_, crate::store::StoreError>((record, journal))
    })
    .await;
    let (record, journal) = match found {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return message(StatusCode::NOT_FOUND, "No such run", &e.to_string(), None),
        Err(e) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Store",
                &e.to_string(),
                None,
            );
        }
    };
    let (steps, unfinished) = crate::store::steps_of(&journal);
    let chart = super::timeline::chart(&record, &journal, crate::store::now_ms());
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            let attempts: Vec<Value> = s
                .attempts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "number": a.number,
                        "logs": a.invocation.logs.iter().map(|l| format!("{:?} {}", l.level, l.message)).collect::<Vec<_>>(),
                        "uses": a.invocation.capability_uses.iter().map(|u| format!("{} {} -> {}", u.capability, u.detail, u.result)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::json!({
                "id": s.id,
                "phase": format!("{:?}", s.phase).to_lowercase(),
                "status": serde_json::to_value(&s.status).ok().and_then(|v| v["status"].as_str().map(str::to_owned)).unwrap_or_default(),
                "summary": s.summary,
                "duration": duration(s.duration.as_millis() as u64),
                "attempts": attempts,
            })
        })
        .collect();
    let status = record.status;
    let can_pick_up = matches!(
        status,
        RunStatus::Interrupted | RunStatus::Cancelled | RunStatus::Failed
    );
    super::render(
        "run.html",
        minijinja::context! {
            user => who(&user),
            run => serde_json::json!({
                "id": record.run_id,
                "runbook": record.runbook,
                "environment": record.environment,
                "status": status.name(),
                "trigger": record.trigger.to_string(),
                "started": time(record.started_ms),
                "duration": record.ended_ms.map(|e| duration(e.saturating_sub(record.started_ms))),
                "params": record.params,
                "approval": record.approval.as_ref().map(|a| format!("{}: {}", a.by, a.reason)),
            }),
            steps => steps,
            chart => chart,
            unfinished => unfinished.iter().map(|(p, s)| format!("{} ({p:?})", s)).collect::<Vec<_>>(),
            running => status == RunStatus::Running,
            can_resume => can_pick_up,
            can_rollback => can_pick_up || status == RunStatus::RollbackFailed,
        },
    )
}

/// The run's journal as Server-Sent Events, for its page's live timeline.
pub async fn events(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = state.sessions.user(&state, &headers) {
        return *r;
    }
    match super::super::events::follow(AxumState(state), Path(id), headers).await {
        Ok(sse) => sse.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Cancel, resume or roll back, as the API does it for this user's token.
pub async fn run_action(
    AxumState(state): AxumState<Arc<State>>,
    Extension(peer): Extension<super::super::auth::Peer>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let user = match form_user(&state, &headers, &form.csrf) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let back = format!("/ui/runs/{id}");
    let caller = user.caller.clone();
    let who = caller.who();
    let body = axum::body::Bytes::from(
        serde_json::json!({ "reason": form.reason.trim() })
            .to_string()
            .into_bytes(),
    );
    let result = match action.as_str() {
        "cancel" => super::super::routes::cancel_run(
            AxumState(state.clone()),
            Extension(caller),
            Path(id.clone()),
            axum::body::Bytes::from_static(b"{}"),
        )
        .await
        .map(|_| ()),
        "resume" | "rollback" => super::super::pickup::resume_or_rollback(
            state.clone(),
            caller,
            id.clone(),
            body,
            action == "rollback",
        )
        .await
        .map(|_| ()),
        _ => Err(ApiError::not_found(format!("no action `{action}`"))),
    };
    audit(
        &state,
        &who,
        &format!("POST /ui/runs/{id}/{action}"),
        peer.0,
        &result,
    );
    match result {
        Ok(()) => Redirect::to(&back).into_response(),
        Err(e) => refused(e, &back),
    }
}

pub async fn approvals(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let place = state.store.place();
    let waiting = tokio::task::spawn_blocking(move || {
        crate::store::approvals::pending(&place, None)
            .into_iter()
            .map(|p| {
                let so_far = crate::store::approvals::approved_by(&place, &p);
                (p, so_far)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let now = crate::store::now_ms();
    let rows: Vec<Value> = waiting
        .iter()
        .map(|(p, so_far)| {
            serde_json::json!({
                "approved_by": so_far,
                "run_id": p.run_id,
                "step": p.step,
                "prompt": p.prompt,
                "waiting": duration(now.saturating_sub(p.requested_ms)),
                "left": duration(p.deadline_ms.saturating_sub(now)),
                "approvers": if p.policy.approvers.is_empty() { "any approver of the environment".to_owned() } else { p.policy.approvers.join(", ") },
                "needed": p.policy.min_approvals,
            })
        })
        .collect();
    super::render(
        "approvals.html",
        minijinja::context! { user => who(&user), approvals => rows },
    )
}

#[derive(Deserialize)]
pub struct DecideForm {
    csrf: String,
    reason: String,
    #[serde(default)]
    step: String,
}

pub async fn decide(
    AxumState(state): AxumState<Arc<State>>,
    Extension(peer): Extension<super::super::auth::Peer>,
    headers: HeaderMap,
    Path((id, decision)): Path<(String, String)>,
    Form(form): Form<DecideForm>,
) -> Response {
    let user = match form_user(&state, &headers, &form.csrf) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let approved = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return message(
                StatusCode::NOT_FOUND,
                "No such decision",
                &format!("`{other}`: approve or reject"),
                Some("/ui/approvals"),
            );
        }
    };
    let who = user.caller.who();
    let step = (!form.step.is_empty()).then_some(form.step.clone());
    let body = axum::body::Bytes::from(
        serde_json::json!({ "reason": form.reason, "step": step })
            .to_string()
            .into_bytes(),
    );
    let result: Result<Json<Value>, ApiError> =
        super::super::routes::decide(state.clone(), user.caller, id.clone(), body, approved).await;
    audit(
        &state,
        &who,
        &format!("POST /ui/approvals/{id}/{decision}"),
        peer.0,
        &result,
    );
    match result {
        Ok(_) => Redirect::to("/ui/approvals").into_response(),
        Err(e) => refused(e, "/ui/approvals"),
    }
}
