//! Alerts in and what triggers made of them: `POST /alerts/alertmanager` (Alertmanager's
//! webhook receiver, with a bearer token in `http_config.authorization`), the recorded
//! alerts and decisions, the triggers and their state, and re-arming a braked trigger.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::{ApiError, Caller, Path, Query};
use super::routes::{blocking, millis, ops, page, store_error};
use crate::store::tokens::Role;
use crate::trigger::alert::Webhook;

type Answer = Result<Json<Value>, ApiError>;

/// The largest Alertmanager delivery taken: 1,000 alerts of about 4 KiB each.
pub(super) const MAX_ALERTS_BODY: usize = 4 << 20;

#[utoipa::path(post, path = "/alerts/alertmanager", tag = "alerts", request_body(content = Object, description = "Alertmanager's webhook body (version 4)"), responses((status = 200, description = "each alert's decision per matching trigger", body = super::openapi::AlertDecisions), (status = 400, description = "not an Alertmanager webhook body", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role does not allow it", body = super::openapi::ErrorBody)))]
pub(super) async fn alertmanager(
    AxumState(state): AxumState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    bytes: axum::body::Bytes,
) -> Answer {
    caller.require(Role::Responder)?;
    let hook = Webhook::parse(&bytes).map_err(ApiError::bad_request)?;
    let mut token = caller.0.clone();
    token.hash.clear();
    let decisions = ops(
        &state,
        json!({ "op": "api_alerts", "alerts": hook.alerts, "via": caller.who(), "token": token }),
    )
    .await?;
    Ok(Json(decisions))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertsQuery {
    #[param(minimum = 0)]
    since_ms: Option<i64>,
    /// Entries at most, the newest (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertsQuery), responses((status = 200, description = "alerts as they arrived, oldest first, with what each trigger decided", body = super::openapi::AlertList), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn list(
    AxumState(state): AxumState<Arc<State>>,
    Query(q): Query<AlertsQuery>,
) -> Answer {
    let since = millis(q.since_ms, "since_ms")?.unwrap_or(0);
    let limit = page(q.limit, 100, 10_000)?;
    let store = state.store.clone();
    let alerts = blocking(move || store.alerts(since, limit).map_err(store_error)).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

#[utoipa::path(get, path = "/triggers", tag = "alerts", responses((status = 200, description = "each trigger, its brake and its groups' last runs", body = super::openapi::TriggerList), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody)))]
pub(super) async fn triggers(AxumState(state): AxumState<Arc<State>>) -> Answer {
    Ok(Json(ops(&state, json!({ "op": "trigger_list" })).await?))
}

#[utoipa::path(post, path = "/triggers/{name}/rearm", tag = "alerts", params(("name" = String, Path, description = "A trigger's name")), responses((status = 200, description = "re-armed", body = super::openapi::Rearmed), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role does not allow it", body = super::openapi::ErrorBody), (status = 409, description = "no such trigger", body = super::openapi::ErrorBody)))]
pub(super) async fn rearm(
    AxumState(state): AxumState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Answer {
    caller.require(Role::Responder)?;
    Ok(Json(
        ops(
            &state,
            json!({ "op": "trigger_rearm", "name": name, "by": caller.who() }),
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/hooks/{name}", tag = "alerts", security(()), params(("name" = String, Path, description = "A webhook trigger's name"), ("X-Hub-Signature-256" = String, Header, description = "sha256=HEX: HMAC-SHA256 of the body under the trigger's key")), request_body(content = Object, description = "Any JSON object; its fields (nested ones joined with dots) are what the trigger matches"), responses((status = 200, description = "the trigger's decision", body = super::openapi::AlertDecisions), (status = 400, description = "not JSON", body = super::openapi::ErrorBody), (status = 401, description = "no valid signature", body = super::openapi::ErrorBody), (status = 404, description = "no such webhook trigger", body = super::openapi::ErrorBody), (status = 429, description = "too many failed signatures from this address", body = super::openapi::ErrorBody), (status = 503, description = "the trigger's key is not set", body = super::openapi::ErrorBody)))]
pub(super) async fn hook(
    AxumState(state): AxumState<Arc<State>>,
    Extension(super::auth::Peer(peer)): Extension<super::auth::Peer>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    use axum::http::StatusCode;
    let who = format!("webhook:{name}");
    let action = format!("POST /api/v1/hooks/{name}");
    let from = peer.ip().to_string();
    let audit = |result: &str, durable: bool| {
        if let Err(e) = state.audit.append(&who, &action, &from, result, durable) {
            tracing::error!("{e}");
        }
    };
    if state.hook_limiter.blocked(peer.ip()).is_some() {
        audit("denied: too many failed signatures", true);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed authentications from this address; try again later",
        ));
    }
    let signature = headers
        .get(crate::trigger::webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 JSON"))?;
    let answer = ops(
        &state,
        json!({ "op": "api_hook", "trigger": name, "body": body, "signature": signature }),
    )
    .await?;
    let Some(refused) = answer.get("refused") else {
        audit("ok", true);
        return Ok(Json(answer));
    };
    let message = refused["message"].as_str().unwrap_or("refused").to_owned();
    let error = match refused["code"].as_str() {
        Some("bad_signature") => {
            state.hook_limiter.failed(peer.ip());
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
        Some("no_such_trigger") => {
            // Guessing trigger names is guessing too.
            state.hook_limiter.failed(peer.ip());
            ApiError::not_found(message)
        }
        Some("no_key") => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
        _ => ApiError::bad_request(message),
    };
    audit(&format!("denied: {}", error.message), true);
    Err(error)
}
