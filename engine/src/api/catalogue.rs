//! The runbooks `medic serve --runbooks DIR` offers through the API, and starting them.
//! A runbook is named by its file's stem (`restart-web` for `DIR/restart-web.toml`); nothing
//! outside the directory can be named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::{ApiError, Caller, Path};
use crate::store::remote::Reply;
use crate::store::tokens::Role;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn dir(state: &State) -> Result<&std::path::Path, ApiError> {
    state.runbooks.as_deref().ok_or_else(|| {
        ApiError::not_found("this medic serve offers no runbooks (start it with --runbooks DIR)")
    })
}

/// A runbook's file and text, by name.
fn read(state: &State, name: &str) -> Result<(PathBuf, String), ApiError> {
    let dir = dir(state)?;
    if !valid_name(name) {
        return Err(ApiError::not_found(format!("no runbook named `{name}`")));
    }
    let path = dir.join(format!("{name}.toml"));
    match crate::input::read_text(&path, crate::input::MAX_RUNBOOK_BYTES) {
        Ok(text) => Ok((path, text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found(format!("no runbook named `{name}`")))
        }
        Err(e) => Err(ApiError::internal(format!("{}: {e}", path.display()))),
    }
}

/// What a caller needs to start it: its parameters (never a secret's value) and
/// environments.
fn describe(name: &str, text: &str) -> Value {
    let parsed = crate::runbook::plan::parse(text);
    let Some(doc) = parsed.doc else {
        return json!({ "name": name, "valid": false });
    };
    let meta = doc.runbook.get_ref();
    let params: Vec<Value> = doc
        .params
        .iter()
        .map(|(k, p)| {
            let p = p.get_ref();
            json!({
                "name": k.get_ref(),
                "type": p.ty.get_ref(),
                "required": p.required.unwrap_or(p.default.is_none()),
                "default": if p.secret { None } else { p.default.as_ref().map(|d| d.get_ref().to_string()) },
                "description": p.description,
                "secret": p.secret,
                "values": p.values.as_ref().map(|v| v.get_ref().clone()),
                "pattern": p.pattern.as_ref().map(|v| v.get_ref().clone()),
            })
        })
        .collect();
    let environments: Vec<Value> = doc
        .environments
        .iter()
        .map(|(k, e)| json!({ "name": k.get_ref(), "protected": e.get_ref().protected }))
        .collect();
    json!({
        "name": name,
        "title": meta.name.get_ref(),
        "description": meta.description,
        "params": params,
        "environments": environments,
        "valid": parsed.diags.is_empty(),
    })
}

#[utoipa::path(get, path = "/runbooks", tag = "runbooks", responses((status = 200, body = super::openapi::RunbookList), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, description = "no --runbooks", body = super::openapi::ErrorBody)))]
pub async fn list(AxumState(state): AxumState<Arc<State>>) -> Result<Json<Value>, ApiError> {
    let dir = dir(&state)?.to_owned();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml")
                .filter(|n| valid_name(n))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    let runbooks: Vec<Value> = names
        .iter()
        .filter_map(|n| read(&state, n).ok().map(|(_, text)| describe(n, &text)))
        .collect();
    Ok(Json(json!({ "runbooks": runbooks })))
}

#[utoipa::path(get, path = "/runbooks/{name}", tag = "runbooks", params(("name" = String, Path, description = "The runbook file's stem")), responses((status = 200, body = super::openapi::RunbookInfo), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn show(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, text) = read(&state, &name)?;
    Ok(Json(describe(&name, &text)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// A runbook of the catalogue, by its file's stem.
    runbook: String,
    /// By name.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, super::openapi::ParamValue>)]
    params: BTreeMap<String, Value>,
    environment: Option<String>,
    /// Why: required in a protected environment (recorded as its approval).
    #[serde(default)]
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

/// A parameter as `--param` gives it: lists joined with commas.
fn param_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "a list parameter holds strings".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        _ => Err("a parameter is a string, number, boolean or list of strings".into()),
    }
}

/// The parameters of a request body, as `--param NAME=VALUE` pairs.
fn params_of(params: &BTreeMap<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    params
        .iter()
        .map(|(k, v)| {
            param_text(v)
                .map(|t| (k.clone(), t))
                .map_err(|e| ApiError::bad_request(format!("params.{k}: {e}")))
        })
        .collect()
}

/// `POST /runs`: plans the runbook and starts it in this `medic serve`, answering 202 with
/// its id once it has started; the run goes on whether or not the caller keeps listening.
#[utoipa::path(post, path = "/runs", tag = "runs", request_body = StartBody, responses((status = 202, description = "started", body = super::openapi::Started), (status = 400, body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody), (status = 422, description = "the runbook does not validate with these parameters", body = super::openapi::ErrorBody)))]
pub async fn start(
    AxumState(state): AxumState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Responder)?;
    let b: StartBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let (path, text) = read(&state, &b.runbook)?;
    let env = b
        .environment
        .clone()
        .unwrap_or_else(|| crate::runbook::plan::DEFAULT_ENVIRONMENT.to_owned());
    let protected = protected(&text, &env);
    caller.require_env(&env, protected)?;
    if protected && b.reason.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "environment `{env}` is protected: starting a run there needs a \"reason\""
        )));
    }
    let params = params_of(&b.params)?;
    let approval = (!b.reason.trim().is_empty()).then(|| crate::executor::Approval {
        by: caller.who(),
        reason: b.reason.trim().to_owned(),
        at: std::time::SystemTime::now(),
    });
    let run_id = crate::executor::new_run_id();
    let request = json!({
        "op": "api_run",
        "caller": caller.who(),
        "sourced": crate::runbook::plan::read_sources(&path, &text),
        "path": path,
        "text": text,
        "params": params,
        "environment": b.environment,
        "dry_run": b.dry_run,
        "approval": approval,
        "trigger": crate::store::Trigger::Api { caller: caller.who() },
        "run_id": run_id,
        "lock_wait": std::time::Duration::ZERO,
    });
    match (state.ops)(request).await {
        Some(Reply::Stream(mut events)) => {
            super::started(&mut events, "the run did not start").await?;
            // Nobody listens to this run's events here: the run does not depend on it.
            drop(events);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "run_id": run_id, "runbook": b.runbook, "environment": env })),
            )
                .into_response())
        }
        Some(Reply::One(Err(why))) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            why,
        )),
        _ => Err(ApiError::internal("medic serve did not start the run")),
    }
}

/// Whether the runbook `text` declares environment `env` protected.
pub(super) fn protected(text: &str, env: &str) -> bool {
    crate::runbook::plan::parse(text).doc.is_some_and(|d| {
        d.environments
            .iter()
            .any(|(k, e)| k.get_ref() == env && e.get_ref().protected)
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    environment: Option<String>,
    /// By name, as for `POST /runs`.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, super::openapi::ParamValue>)]
    params: BTreeMap<String, Value>,
}

fn diagnostic(text: &str, d: &crate::runbook::Diagnostic) -> Value {
    crate::runbook::diag::to_json(text, d)
}

/// `POST /runbooks/NAME/check`: what `medic validate` and `medic plan` say, without running
/// anything: every mistake with its line and column, or the plan as `medic plan` prints it.
/// Secrets whose source is missing here are not required.
#[utoipa::path(post, path = "/runbooks/{name}/check", tag = "runbooks", params(("name" = String, Path, description = "The runbook file's stem")), request_body(content = Option<CheckBody>, description = "optional"), responses((status = 200, body = super::openapi::Checked), (status = 400, body = super::openapi::ErrorBody), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn check(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: CheckBody = super::routes::body(&bytes)?;
    let (path, text) = read(&state, &name)?;
    let params = params_of(&b.params)?;
    let opts = crate::runbook::PlanOptions {
        params,
        environment: b.environment,
        defer_secrets: true,
        sourced: None,
    };
    let src = crate::runbook::Source {
        path: &path,
        text: &text,
    };
    Ok(Json(
        match crate::runbook::plan(&state.host, &src, &opts).await {
            Ok(plan) => json!({
                "valid": true,
                "diagnostics": plan.warnings.iter().map(|d| diagnostic(&text, d)).collect::<Vec<_>>(),
                "plan": crate::cli::output::render_plan(&plan, false),
            }),
            Err(diags) => json!({
                "valid": false,
                "diagnostics": diags.iter().map(|d| diagnostic(&text, d)).collect::<Vec<_>>(),
                "plan": null,
            }),
        },
    ))
}
