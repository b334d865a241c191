//! Who is calling: bearer tokens checked on every request, roles and environment grants
//! checked by each handler, failed attempts slowed down per address, and the audit trail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{HANDLING_TIME, State};
use crate::store::tokens::{Role, Token};

/// The connection's remote address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The token a request carries, checked.
#[derive(Debug, Clone)]
pub struct Caller(pub Token);

impl Caller {
    /// As recorded: in run records, approvals and the audit log.
    pub fn who(&self) -> String {
        format!("token:{}", self.0.name)
    }

    /// Refuses a caller whose role does not include `need`. `approver` and `responder` are
    /// separate jobs; `admin` has both.
    pub fn require(&self, need: Role) -> Result<(), ApiError> {
        let role = self.0.role;
        let ok = match need {
            Role::Viewer => true,
            Role::Responder => matches!(role, Role::Responder | Role::Admin),
            Role::Approver => matches!(role, Role::Approver | Role::Admin),
            Role::Admin => role == Role::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` is a {}; this needs the {} role",
                self.0.name,
                role.name(),
                need.name()
            )))
        }
    }

    /// Refuses a caller not granted `env` (a protected one must be granted by name).
    pub fn require_env(&self, env: &str, protected: bool) -> Result<(), ApiError> {
        if self.0.allows_env(env, protected) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` may not act in environment `{env}`{}",
                self.0.name,
                if protected {
                    " (protected environments must be granted by name: --env)"
                } else {
                    ""
                }
            )))
        }
    }
}

/// An error answer: a status, a stable code, and the message the CLI would print.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The message of an error answer, for the audit log.
#[derive(Debug, Clone)]
struct AuditNote(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .extensions_mut()
            .insert(AuditNote(format!("{}: {}", self.code, self.message)));
        response
    }
}

/// Failed authentications per address: after `LIMIT` in `WINDOW`, the address is answered
/// 429 until the window has passed, so a token cannot be guessed at network speed.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

const LIMIT: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most: past it, expired entries are dropped (and, failing that, all).
const TRACKED: usize = 10_000;

impl Limiter {
    pub(super) fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap();
        let (n, since) = failures.get(&ip)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*n >= LIMIT).then_some(left)
    }

    pub(super) fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if failures.len() >= TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the token of every request under `/api/v1` (except health), times the handling,
/// and audits every request: changes and refusals synced, answered reads appended.
pub async fn authenticate(
    AxumState(state): AxumState<Arc<State>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    // The path as sent: the nested router sees it without `/api/v1`.
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    let action = format!("{} {path}", request.method());
    let from = peer.ip().to_string();
    let audit = |who: &str, result: &str| {
        if let Err(e) = state.audit.record(who, &action, &from, result) {
            tracing::error!("{e}");
        }
    };
    if let Some(left) = state.limiter.blocked(peer.ip()) {
        audit("anonymous", "denied: too many failed authentications");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed authentications from this address; try again later",
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(left.as_secs().max(1)),
        );
        return response;
    }
    let token = match bearer(&request).map(|t| state.tokens.verify(t)) {
        Some(Ok(Some(token))) => token,
        Some(Err(e)) => {
            audit("anonymous", &format!("error: {e}"));
            return ApiError::internal(e).into_response();
        }
        _ => {
            state.limiter.failed(peer.ip());
            audit("anonymous", "denied: no valid token");
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid token is needed: Authorization: Bearer TOKEN (`medic token create`)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let caller = Caller(token);
    let who = caller.who();
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    request.extensions_mut().insert(caller);
    let response = match tokio::time::timeout(HANDLING_TIME, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "not answered within {}",
                humantime::format_duration(HANDLING_TIME)
            ),
        )
        .into_response(),
    };
    let status = response.status();
    let result = match response.extensions().get::<AuditNote>() {
        Some(AuditNote(note)) if status.is_client_error() => format!("denied: {note}"),
        Some(AuditNote(note)) => format!("error: {note}"),
        None if status.is_success() => "ok".to_owned(),
        None => format!("status {}", status.as_u16()),
    };
    // A change or a refusal must be on disk before the answer; a read need not wait for it.
    let durable = changes || status == StatusCode::FORBIDDEN;
    if let Err(e) = state.audit.append(&who, &action, &from, &result, durable) {
        tracing::error!("{e}");
    }
    response
}

/// `Query`, with a malformed query string answered as a JSON 400 like every other error.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Path`, with an undecodable segment answered as a JSON 400.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
