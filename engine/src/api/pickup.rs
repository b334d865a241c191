//! `POST /api/v1/runs/ID/resume` and `.../rollback`: an interrupted, failed or cancelled run
//! picked up again by `medic serve`, with the checks `medic runs resume|rollback` makes.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::auth::{ApiError, Caller, Path};
use crate::pickup::Refused;
use crate::store::remote::Reply;
use crate::store::tokens::Role;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PickUpBody {
    /// An approval given now: needed in a protected environment when the run had none.
    #[serde(default)]
    reason: String,
    /// Go on with plugins that changed since the run started (recorded in its journal);
    /// otherwise such a run is refused (409).
    #[serde(default)]
    accept_changed_plugins: bool,
}

#[utoipa::path(post, path = "/runs/{id}/resume", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), request_body(content = Option<PickUpBody>, description = "optional"), responses((status = 202, description = "picked up: the run goes on (a run stopped during its rollback goes on rolling back)", body = super::openapi::PickedUp), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody), (status = 409, description = "the run cannot be resumed: its state, its runbook or a plugin changed (unless accept_changed_plugins), or an approval is missing", body = super::openapi::ErrorBody)))]
pub(super) async fn resume(
    state: AxumState<Arc<State>>,
    caller: Extension<Caller>,
    id: Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    pick_up(state, caller, id, bytes, false).await
}

#[utoipa::path(post, path = "/runs/{id}/rollback", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run")), request_body(content = Option<PickUpBody>, description = "optional"), responses((status = 202, description = "picked up: what the run did is undone, newest first, then verified", body = super::openapi::PickedUp), (status = 400, description = "a malformed request", body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, description = "the token's role or environments do not allow it", body = super::openapi::ErrorBody), (status = 404, description = "no such run", body = super::openapi::ErrorBody), (status = 409, description = "the run cannot be rolled back: its state, its runbook or a plugin changed (unless accept_changed_plugins), or an approval is missing", body = super::openapi::ErrorBody)))]
pub(super) async fn rollback(
    state: AxumState<Arc<State>>,
    caller: Extension<Caller>,
    id: Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    pick_up(state, caller, id, bytes, true).await
}

async fn pick_up(
    AxumState(state): AxumState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
    rollback_only: bool,
) -> Result<Response, ApiError> {
    resume_or_rollback(state, caller, id, bytes, rollback_only).await
}

/// Picks run `id` up for `caller` (the API's and the web UI's way).
pub(super) async fn resume_or_rollback(
    state: Arc<State>,
    caller: Caller,
    id: String,
    bytes: axum::body::Bytes,
    rollback_only: bool,
) -> Result<Response, ApiError> {
    caller.require(Role::Responder)?;
    let b: PickUpBody = super::routes::body(&bytes)?;
    let record = super::routes::find(&state, id).await?;
    // Checked here too (serve decides again when it starts the run) so that a refusal
    // names its cause with the right status, and the answer says what will happen.
    let store = state.store.clone();
    let r = record.clone();
    let (pick, events_from) = tokio::task::spawn_blocking(move || {
        let pick = crate::pickup::prepare(&store, &r, rollback_only)?;
        let events_from = store
            .journal(&r.run_id)
            .map_err(|e| Refused::Engine(e.to_string()))?
            .len();
        Ok::<_, Refused>((pick, events_from))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
    .map_err(|r| match r {
        Refused::Invalid(m) => ApiError::conflict(m),
        Refused::Engine(m) => ApiError::internal(m),
    })?;
    let protected = super::catalogue::protected(&pick.text, &record.environment);
    caller.require_env(&record.environment, protected)?;
    let request = json!({
        "op": "api_pick_up",
        "caller": caller.who(),
        "run_id": record.run_id,
        "mode": pick.mode,
        "reason": b.reason,
        "accept_changed_plugins": b.accept_changed_plugins,
    });
    match (state.ops)(request).await {
        Some(Reply::Stream(mut events)) => {
            super::started(&mut events, "the run was not picked up").await?;
            drop(events);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "run_id": record.run_id,
                    "mode": pick.mode,
                    "notice": pick.notice,
                    "events_from": events_from,
                })),
            )
                .into_response())
        }
        Some(Reply::One(Err(why))) => Err(ApiError::conflict(why)),
        _ => Err(ApiError::internal("medic serve did not pick the run up")),
    }
}
