//! Starting a runbook from the catalogue: its form is generated from the parameters it
//! declares (enums as selects, booleans as checkboxes, patterns checked by the browser too),
//! the plan is previewed as `medic plan` shows it, and only then can it run. Secret
//! parameters are never typed here: they come from their sources on the server.

use std::sync::Arc;

use axum::extract::{Form, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::super::State;
use super::super::auth::{ApiError, Path};
use super::pages::{message, who};
use super::session::{audit, form_user};

pub async fn list(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match super::super::catalogue::list(AxumState(state)).await {
        Ok(Json(v)) => super::render(
            "runbooks.html",
            minijinja::context! { user => who(&user), runbooks => v["runbooks"].clone() },
        ),
        Err(e) => message(e.status, "Runbooks", &e.message, None),
    }
}

/// The form, with the values given so far and, after a preview, the plan or its mistakes.
fn form_page(
    user: &super::session::User,
    runbook: &Value,
    values: &[(String, String)],
    checked: Option<&Value>,
) -> Response {
    let value = |k: &str| values.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let params: Vec<Value> = runbook["params"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut p| {
            let name = p["name"].as_str().unwrap_or("").to_owned();
            let given = value(&format!("p.{name}"));
            p["value"] = json!(
                given
                    .clone()
                    .or_else(|| p["default"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
            p["checked"] = json!(
                given.as_deref() == Some("true")
                    || (given.is_none() && p["default"].as_str() == Some("true"))
            );
            p
        })
        .collect();
    super::render(
        "runbook.html",
        minijinja::context! {
            user => who(user),
            runbook => runbook,
            params => params,
            environment => value("environment").unwrap_or_default(),
            reason => value("reason").unwrap_or_default(),
            checked => checked,
        },
    )
}

pub async fn show(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let user = match state.sessions.user(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match super::super::catalogue::show(AxumState(state), Path(name)).await {
        Ok(Json(runbook)) => form_page(&user, &runbook, &[], None),
        Err(e) => message(
            e.status,
            "No such runbook",
            &e.message,
            Some("/ui/runbooks"),
        ),
    }
}

/// Preview (the plan, nothing runs) or run, as the form's button says.
pub async fn submit(
    AxumState(state): AxumState<Arc<State>>,
    Extension(peer): Extension<super::super::auth::Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(values): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| {
        values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let user = match form_user(&state, &headers, &field("csrf")) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let runbook =
        match super::super::catalogue::show(AxumState(state.clone()), Path(name.clone())).await {
            Ok(Json(r)) => r,
            Err(e) => {
                return message(
                    e.status,
                    "No such runbook",
                    &e.message,
                    Some("/ui/runbooks"),
                );
            }
        };
    let params: serde_json::Map<String, Value> = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("p.")?.to_owned(), json!(v))))
        .filter(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty()))
        .collect();
    let environment = Some(field("environment")).filter(|e| !e.is_empty());
    if field("action") != "run" {
        let body = json!({ "environment": environment, "params": params });
        let checked = super::super::catalogue::check(
            AxumState(state.clone()),
            Path(name.clone()),
            axum::body::Bytes::from(body.to_string().into_bytes()),
        )
        .await;
        return match checked {
            Ok(Json(c)) => form_page(&user, &runbook, &values, Some(&c)),
            Err(e) => message(
                e.status,
                "Not checked",
                &e.message,
                Some(&format!("/ui/runbooks/{name}")),
            ),
        };
    }
    let body = json!({
        "runbook": name, "params": params, "environment": environment, "reason": field("reason"),
    });
    let who_ = user.caller.who();
    let started: Result<Response, ApiError> = super::super::catalogue::start(
        AxumState(state.clone()),
        Extension(user.caller.clone()),
        axum::body::Bytes::from(body.to_string().into_bytes()),
    )
    .await;
    audit(
        &state,
        &who_,
        &format!("POST /ui/runbooks/{name}"),
        peer.0,
        &started,
    );
    match started {
        Ok(response) => {
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            match v["run_id"].as_str() {
                Some(id) => Redirect::to(&format!("/ui/runs/{id}")).into_response(),
                None => message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Not started",
                    "the run has no id",
                    None,
                ),
            }
        }
        Err(e) => {
            let title = if e.status == StatusCode::FORBIDDEN {
                "Not allowed"
            } else {
                "Not started"
            };
            message(
                e.status,
                title,
                &e.message,
                Some(&format!("/ui/runbooks/{name}")),
            )
        }
    }
}
