//! The resources under `/api/v1`, each checking its caller's role and environments.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, ApiError, Caller, Path, Query};
use super::{MAX_BODY, State};
use crate::store::remote::Reply;
use crate::store::tokens::Role;
use crate::store::{ListFilter, RunRecord, RunStatus, StoreError};

type Shared = AxumState<Arc<State>>;
type Answer = Result<Json<Value>, ApiError>;

pub fn router(state: Arc<State>) -> Router {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/runbooks", get(super::catalogue::list))
        .route("/runbooks/{name}", get(super::catalogue::show))
        .route("/runbooks/{name}/check", post(super::catalogue::check))
        .route("/stats", get(stats))
        .route("/runs", get(list_runs).post(super::catalogue::start))
        .route("/runs/{id}", get(show_run))
        .route("/runs/{id}/journal", get(journal))
        .route("/runs/{id}/events", get(super::events::follow))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/resume", post(super::pickup::resume))
        .route("/runs/{id}/rollback", post(super::pickup::rollback))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/drills", get(drills))
        .route("/drills/records", get(drill_records))
        .route("/drills/{name}/run", post(run_drill))
        .route("/drills/{name}/pause", post(pause_drill))
        .route("/drills/{name}/resume", post(resume_drill))
        .route("/alerts", get(super::alerts::list))
        .route(
            "/alerts/alertmanager",
            // A group of alerts with their labels and annotations outgrows the usual bound.
            post(super::alerts::alertmanager)
                .layer(DefaultBodyLimit::max(super::alerts::MAX_ALERTS_BODY)),
        )
        .route("/triggers", get(super::alerts::triggers))
        .route("/triggers/{name}/rearm", post(super::alerts::rearm))
        .route("/audit", get(audit))
        .route("/tokens", get(tokens))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/ready", get(ready))
        // Signed, not bearer-authenticated: the trigger's key is the credential.
        .route("/api/v1/hooks/{name}", post(super::alerts::hook))
        .nest("/api/v1", api)
        .merge(super::web::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(close_unread))
        .with_state(state)
}

/// A request whose body was refused unread (too large) leaves the connection in an unknown
/// state: say it closes, so the client does not send its next request on it.
async fn close_unread(mut response: Response) -> Response {
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::not_found("no such resource; the API is under /api/v1").into_response()
}

#[utoipa::path(get, path = "/ready", security(()), tag = "service", responses((status = 200, description = "the store answers and the scheduler runs", body = super::openapi::Ready), (status = 503, description = "not ready, and why", body = super::openapi::Ready)))]
pub(super) async fn ready(AxumState(state): Shared) -> Response {
    let store = state.store.clone();
    let store_check = move || {
        store
            .list(&ListFilter::default(), 1)
            .map(|_| ())
            .map_err(|e| store_error(e).message)
    };
    // The scheduler's loop answers the socket's operations: a listing proves it turns.
    let wait = super::probe::READY_WAIT;
    let scheduler = tokio::time::timeout(wait, (state.ops)(json!({ "op": "drill_list" })));
    // Both at once: the probe answers within `wait` whatever holds either.
    let (store_ok, scheduler) = tokio::join!(state.store_probe.check(store_check, wait), scheduler);
    let scheduler_ok = matches!(scheduler, Ok(Some(Reply::One(Ok(_)))));
    let mut problems = Vec::new();
    if let Err(e) = store_ok {
        problems.push(format!("store: {e}"));
    }
    if !scheduler_ok {
        problems.push(format!("scheduler: no answer within {} s", wait.as_secs()));
    }
    let status = if problems.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": problems.is_empty(), "problems": problems })),
    )
        .into_response()
}

#[utoipa::path(get, path = "/health", security(()), tag = "service", responses((status = 200, body = super::openapi::Health)))]
pub(super) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

#[utoipa::path(get, path = "/whoami", tag = "service", responses((status = 200, body = super::openapi::WhoAmI), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    let t = &caller.0;
    Json(json!({
        "name": t.name, "role": t.role, "envs": t.envs, "groups": t.groups, "expires_ms": t.expires_ms,
    }))
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NoSuchRun(_) | StoreError::Ambiguous { .. } => {
            ApiError::not_found(e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Blocking store calls run off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

/// Protected environments are those whose runs needed an approval reason.
fn protected(record: &RunRecord) -> bool {
    record.approval.is_some()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    runbook: Option<String>,
    #[param(value_type = Option<crate::store::RunStatus>)]
    status: Option<String>,
    environment: Option<String>,
    /// cli, schedule, api or alert.
    trigger: Option<String>,
    #[param(minimum = 0)]
    since_ms: Option<i64>,
    #[param(minimum = 0)]
    until_ms: Option<i64>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Runs per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// A page size in its documented range.
pub(super) fn page(limit: Option<u32>, default: u32, max: u32) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n as usize),
        n => Err(ApiError::bad_request(format!(
            "limit {n} is not from 1 to {max}"
        ))),
    }
}

/// An empty query value is no value (what an HTML form sends for an empty field).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// A time in milliseconds since the epoch: never negative.
pub(super) fn millis(v: Option<i64>, name: &str) -> Result<Option<u64>, ApiError> {
    v.map(|ms| u64::try_from(ms).map_err(|_| ApiError::bad_request(format!("{name} must be >= 0"))))
        .transpose()
}

#[utoipa::path(get, path = "/runs", tag = "runs", params(ListQuery), responses((status = 200, body = super::openapi::RunList), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn list_runs(AxumState(state): Shared, Query(q): Query<ListQuery>) -> Answer {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            RunStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("`{s}` is not a run status")))?,
        ),
    };
    let limit = page(q.limit, 50, 500)?;
    let filter = ListFilter {
        runbook: given(q.runbook),
        status,
        environment: given(q.environment),
        trigger: given(q.trigger),
        since_ms: millis(q.since_ms, "since_ms")?,
        until_ms: millis(q.until_ms, "until_ms")?,
        before: given(q.cursor),
    };
    let store = state.store.clone();
    let runs = blocking(move || store.list(&filter, limit).map_err(store_error)).await?;
    // A full page may have more after it.
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.run_id.clone()))
        .flatten();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

pub(super) async fn find(state: &Arc<State>, id: String) -> Result<RunRecord, ApiError> {
    let store = state.store.clone();
    blocking(move || store.find(&id).map_err(store_error)).await
}

#[utoipa::path(get, path = "/runs/{id}", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), responses((status = 200, body = super::openapi::RunDetail), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody)))]
pub(super) async fn show_run(AxumState(state): Shared, Path(id): Path<String>) -> Answer {
    let record = find(&state, id).await?;
    let store = state.store.clone();
    let run_id = record.run_id.clone();
    let (steps, unfinished) =
        blocking(move || store.step_reports(&run_id).map_err(store_error)).await?;
    Ok(Json(
        json!({ "run": record, "steps": steps, "unfinished": unfinished }),
    ))
}

#[utoipa::path(get, path = "/runs/{id}/journal", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), responses((status = 200, body = super::openapi::Journal), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody)))]
pub(super) async fn journal(AxumState(state): Shared, Path(id): Path<String>) -> Answer {
    let record = find(&state, id).await?;
    let store = state.store.clone();
    let entries = blocking(move || store.journal(&record.run_id).map_err(store_error)).await?;
    Ok(Json(json!({ "journal": entries })))
}

/// A JSON body, or none; a malformed one (blank is malformed: no JSON value) is a 400 naming
/// the mistake.
pub(super) fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    // `null` is no body too.
    serde_json::from_slice::<Option<T>>(bytes)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    /// Roll back what the run did (default: what the runbook says).
    rollback: Option<bool>,
}

pub(super) async fn ops(state: &Arc<State>, request: Value) -> Result<Value, ApiError> {
    match (state.ops)(request).await {
        Some(Reply::One(Ok(v))) => Ok(v),
        Some(Reply::One(Err(e))) => Err(ApiError::conflict(e)),
        _ => Err(ApiError::internal("medic serve did not answer")),
    }
}

#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), request_body(content = Option<CancelBody>, description = "optional"), responses((status = 200, body = super::openapi::Cancelled), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody), (status = 409, description = "the run is not in a state that allows it", body = super::openapi::ErrorBody)))]
pub(super) async fn cancel_run(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Answer {
    caller.require(Role::Responder)?;
    let b: CancelBody = body(&bytes)?;
    let record = find(&state, id).await?;
    caller.require_env(&record.environment, protected(&record))?;
    if record.status != RunStatus::Running {
        return Err(ApiError::conflict(format!(
            "run {} is not running (it {})",
            record.run_id,
            record.status.name()
        )));
    }
    let answer = ops(
        &state,
        json!({ "op": "cancel_run", "run_id": record.run_id, "rollback": b.rollback, "abort": false }),
    )
    .await?;
    Ok(Json(
        json!({ "run_id": record.run_id, "cancelled": answer }),
    ))
}

#[utoipa::path(get, path = "/approvals", tag = "approvals", responses((status = 200, body = super::openapi::Approvals), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn approvals(AxumState(state): Shared) -> Answer {
    let place = state.store.place();
    let waiting = blocking(move || Ok(crate::store::approvals::pending(&place, None))).await?;
    Ok(Json(json!({ "approvals": waiting })))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideBody {
    /// Why (not only spaces).
    #[schema(min_length = 1, pattern = "\\S")]
    reason: String,
    /// The step, when the run waits at more than one.
    step: Option<String>,
}

pub(super) async fn decide(
    state: Arc<State>,
    caller: Caller,
    id: String,
    bytes: axum::body::Bytes,
    approved: bool,
) -> Answer {
    caller.require(Role::Approver)?;
    let b: DecideBody = body(&bytes)?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "a decision needs a reason: {\"reason\": \"...\"}",
        ));
    }
    let record = find(&state, id).await?;
    caller.require_env(&record.environment, protected(&record))?;
    let place = state.store.place();
    let who = caller.who();
    let groups = caller.0.groups.clone();
    let run_id = record.run_id.clone();
    let (pending, approvals) = blocking(move || {
        crate::store::approvals::decide(
            &place,
            &run_id,
            b.step.as_deref(),
            approved,
            &who,
            &groups,
            b.reason.trim(),
        )
        .map_err(|e| {
            if e.contains("cannot approve it") || e.contains("not among") {
                ApiError::forbidden(e)
            } else {
                ApiError::conflict(e)
            }
        })
    })
    .await?;
    Ok(Json(json!({
        "run_id": pending.run_id, "step": pending.step,
        "decision": if approved { "approved" } else { "rejected" }, "by": caller.who(),
        "approvals": approvals, "needed": pending.policy.min_approvals,
    })))
}

#[utoipa::path(post, path = "/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), request_body = DecideBody, responses((status = 200, body = super::openapi::Decided), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody), (status = 409, description = "the run is not in a state that allows it", body = super::openapi::ErrorBody)))]
pub(super) async fn approve(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Answer {
    decide(state, caller, id, bytes, true).await
}

#[utoipa::path(post, path = "/approvals/{id}/reject", tag = "approvals", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), request_body = DecideBody, responses((status = 200, body = super::openapi::Decided), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody), (status = 409, description = "the run is not in a state that allows it", body = super::openapi::ErrorBody)))]
pub(super) async fn reject(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Answer {
    decide(state, caller, id, bytes, false).await
}

#[utoipa::path(get, path = "/drills", tag = "drills", responses((status = 200, body = super::openapi::Drills), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn drills(AxumState(state): Shared) -> Answer {
    let list = ops(&state, json!({ "op": "drill_list" })).await?;
    Ok(Json(json!({ "drills": list })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RecordsQuery {
    drill: Option<String>,
    #[param(minimum = 0)]
    since_ms: Option<i64>,
}

#[utoipa::path(get, path = "/drills/records", tag = "drills", params(RecordsQuery), responses((status = 200, body = super::openapi::DrillRecords), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn drill_records(
    AxumState(state): Shared,
    Query(q): Query<RecordsQuery>,
) -> Answer {
    let since = millis(q.since_ms, "since_ms")?.unwrap_or(0);
    let store = state.store.clone();
    let records = blocking(move || {
        store
            .drill_records(given(q.drill).as_deref(), since)
            .map_err(store_error)
    })
    .await?;
    Ok(Json(json!({ "records": records })))
}

#[utoipa::path(post, path = "/drills/{name}/run", tag = "drills", params(("name" = String, Path, description = "A drill's name")), responses((status = 200, description = "done", body = super::openapi::DrillRun), (status = 202, description = "still running: its record comes with /drills/records", body = super::openapi::DrillRun), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 409, description = "the run is not in a state that allows it", body = super::openapi::ErrorBody)))]
pub(super) async fn run_drill(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    // A drill can take minutes: the answer waits a little for a quick result (or a
    // refusal), then says it is running; its record comes with `/drills/records`.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let running = state.clone();
    tokio::spawn(async move {
        let _ = tx.send(ops(&running, json!({ "op": "drill_run", "name": name })).await);
    });
    match tokio::time::timeout(std::time::Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(record))) => Ok(Json(json!({ "drill": record })).into_response()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ApiError::internal("medic serve did not answer")),
        Err(_) => Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(json!({ "drill": null, "state": "running" })),
        )
            .into_response()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    #[param(minimum = 0)]
    since_ms: Option<i64>,
    /// Entries at most, the newest (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Include answered reads (default true); refused ones are always included.
    reads: Option<bool>,
}

#[utoipa::path(get, path = "/audit", tag = "service", params(AuditQuery), responses((status = 200, body = super::openapi::AuditList), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody)))]
pub(super) async fn audit(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Answer {
    caller.require(Role::Admin)?;
    let since = millis(q.since_ms, "since_ms")?.unwrap_or(0);
    let limit = page(q.limit, 100, 10_000)?;
    let audit = state.audit.clone();
    let reads = q.reads.unwrap_or(true);
    let entries =
        blocking(move || audit.read(since, limit, reads).map_err(ApiError::internal)).await?;
    Ok(Json(json!({ "entries": entries })))
}

#[utoipa::path(get, path = "/tokens", tag = "service", responses((status = 200, body = super::openapi::TokenList), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody)))]
pub(super) async fn tokens(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
) -> Answer {
    caller.require(Role::Admin)?;
    let tokens = state.tokens.list().map_err(ApiError::internal)?;
    // The digests stay on the server.
    let shown: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "role": t.role, "envs": t.envs, "groups": t.groups, "created_ms": t.created_ms,
                "created_by": t.created_by, "expires_ms": t.expires_ms, "revoked_ms": t.revoked_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": shown })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    runbook: Option<String>,
    environment: Option<String>,
    /// Runs started since (default: the last 30 days).
    #[param(minimum = 0)]
    since_ms: Option<i64>,
}

#[utoipa::path(get, path = "/stats", tag = "runs", params(StatsQuery), responses((status = 200, body = super::openapi::StatsBody), (status = 400, body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn stats(AxumState(state): Shared, Query(q): Query<StatsQuery>) -> Answer {
    let month = crate::store::now_ms().saturating_sub(30 * 24 * 3600 * 1000);
    let filter = ListFilter {
        runbook: given(q.runbook),
        environment: given(q.environment),
        since_ms: Some(millis(q.since_ms, "since_ms")?.unwrap_or(month)),
        ..ListFilter::default()
    };
    let by_trigger = filter.runbook.is_none() && filter.environment.is_none();
    let since = filter.since_ms.unwrap_or(0);
    let store = state.store.clone();
    let (records, alerts) = blocking(move || {
        let records = store.list(&filter, usize::MAX).map_err(store_error)?;
        let alerts = if by_trigger {
            store.alerts(since, usize::MAX).map_err(store_error)?
        } else {
            Vec::new()
        };
        Ok((records, alerts))
    })
    .await?;
    Ok(Json(json!({
        "stats": crate::store::stats::compute(&records),
        "triggers": crate::store::stats::by_trigger(&records, &alerts),
    })))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    /// Why (not only spaces): shown in every skipped drill's record.
    #[schema(min_length = 1, pattern = "\\S")]
    reason: String,
}

async fn pause(
    state: &Arc<State>,
    caller: &Caller,
    name: String,
    reason: Option<String>,
) -> Answer {
    caller.require(Role::Admin)?;
    let op = if reason.is_some() {
        "drill_pause"
    } else {
        "drill_resume"
    };
    match ops(
        state,
        json!({ "op": op, "name": name, "by": caller.who(), "reason": reason }),
    )
    .await
    {
        Ok(v) => Ok(Json(v)),
        Err(e) if e.message.starts_with("no drill") => Err(ApiError::not_found(e.message)),
        Err(e) => Err(e),
    }
}

#[utoipa::path(post, path = "/drills/{name}/pause", tag = "drills", params(("name" = String, Path, description = "A drill's name")), request_body = PauseBody, responses((status = 200, body = super::openapi::PauseState), (status = 400, body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody)))]
pub(super) async fn pause_drill(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Answer {
    let b: PauseBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request("pausing a drill needs a reason"));
    }
    pause(&state, &caller, name, Some(b.reason)).await
}

#[utoipa::path(post, path = "/drills/{name}/resume", tag = "drills", params(("name" = String, Path, description = "A drill's name")), responses((status = 200, body = super::openapi::PauseState), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody)))]
pub(super) async fn resume_drill(
    AxumState(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Answer {
    pause(&state, &caller, name, None).await
}
