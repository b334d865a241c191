//! Sessions: a token given once at the login form opens a session; the browser keeps only a
//! random session id (HttpOnly, SameSite=Strict, Secure over HTTPS). The token's role and
//! environments are looked up again on every request, so revoking or expiring a token ends
//! its sessions at once. Every change carries the session's CSRF token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Form, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::super::State;
use super::super::auth::{Caller, Peer};
use crate::store::tokens::Token;

const COOKIE: &str = "medic_session";
/// How long a session lasts without a new login.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most: past it the oldest go.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: String,
    csrf: String,
    expires: Instant,
}

/// The open sessions (in memory: a restart of `medic serve` asks everyone to log in again).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// A logged-in user: the token (as it is now) and the session's CSRF token.
pub struct User {
    pub caller: Caller,
    pub csrf: String,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// The user of a request, or the login page to go to.
    pub fn user(&self, state: &State, headers: &HeaderMap) -> Result<User, Box<Response>> {
        let to_login = || Box::new(Redirect::to("/ui/login").into_response());
        let Some(id) = cookie_value(headers, COOKIE) else {
            return Err(to_login());
        };
        let (name, csrf) = {
            let mut sessions = self.0.lock().unwrap();
            match sessions.get(id) {
                Some(s) if s.expires > Instant::now() => (s.token.clone(), s.csrf.clone()),
                Some(_) => {
                    sessions.remove(id);
                    return Err(to_login());
                }
                None => return Err(to_login()),
            }
        };
        let now = crate::store::now_ms();
        let token = state
            .tokens
            .list()
            .ok()
            .and_then(|l| l.into_iter().find(|t| t.name == name && t.usable(now)));
        match token {
            Some(t) => Ok(User {
                caller: Caller(t),
                csrf,
            }),
            None => {
                self.0.lock().unwrap().remove(id);
                Err(to_login())
            }
        }
    }

    fn open(&self, token: &Token) -> Result<(String, String), String> {
        let id = crate::store::tokens::random_hex()?;
        let csrf = crate::store::tokens::random_hex()?;
        let mut sessions = self.0.lock().unwrap();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                token: token.name.clone(),
                csrf: csrf.clone(),
                expires: now + LIFETIME,
            },
        );
        Ok((id, csrf))
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers, COOKIE) {
            self.0.lock().unwrap().remove(id);
        }
    }
}

/// The user of a form POST: logged in, and the form carrying the session's CSRF token.
pub fn form_user(state: &State, headers: &HeaderMap, csrf: &str) -> Result<User, Box<Response>> {
    let user = state.sessions.user(state, headers)?;
    check_csrf(&user, csrf)?;
    Ok(user)
}

/// Audits an action taken through the UI, with how it ended.
pub fn audit<T>(
    state: &State,
    who: &str,
    action: &str,
    peer: SocketAddr,
    result: &Result<T, super::super::auth::ApiError>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("denied: {}", e.message),
    };
    if let Err(e) = state
        .audit
        .record(who, action, &peer.ip().to_string(), &outcome)
    {
        tracing::error!("{e}");
    }
}

/// Refuses a form whose CSRF token is not the session's.
pub fn check_csrf(user: &User, given: &str) -> Result<(), Box<Response>> {
    if same(&user.csrf, given) {
        Ok(())
    } else {
        Err(Box::new(super::pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this session (its CSRF token does not match). Reload the page and try again.",
            None,
        )))
    }
}

pub async fn login_form() -> Response {
    super::render(
        "login.html",
        minijinja::context! { error => None::<String> },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    AxumState(state): AxumState<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let from = peer.ip().to_string();
    let fail = |status: StatusCode, error: &str| {
        let mut r = super::render("login.html", minijinja::context! { error => error });
        *r.status_mut() = status;
        r
    };
    if state.limiter.blocked(peer.ip()).is_some() {
        let _ = state.audit.record(
            "anonymous",
            "POST /ui/login",
            &from,
            "denied: too many failed authentications",
        );
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins from this address; try again in a minute.",
        );
    }
    let token = match state.tokens.verify(form.token.trim()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            state.limiter.failed(peer.ip());
            let _ = state.audit.record(
                "anonymous",
                "POST /ui/login",
                &from,
                "denied: no valid token",
            );
            return fail(
                StatusCode::UNAUTHORIZED,
                "That is not a valid token (medic token create makes one).",
            );
        }
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let (id, _) = match state.sessions.open(&token) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let _ = state.audit.record(
        &format!("token:{}", token.name),
        "POST /ui/login",
        &from,
        "ok",
    );
    let secure = if state.tls { "; Secure" } else { "" };
    let mut r = Redirect::to("/ui/runs").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            LIFETIME.as_secs()
        ))
        .expect("a cookie of hex digits"),
    );
    r
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Ok(user) = state.sessions.user(&state, &headers)
        && check_csrf(&user, &form.csrf).is_err()
    {
        return Redirect::to("/ui/runs").into_response();
    }
    state.sessions.close(&headers);
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("medic_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
