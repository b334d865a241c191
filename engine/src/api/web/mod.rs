//! The web UI, served under `/ui` by `medic serve --listen` beside the API, with the same
//! tokens: a login form takes a token and opens a session (an HttpOnly, SameSite=Strict
//! cookie; Secure over HTTPS). Every change is a form POST carrying the session's CSRF token.
//! Pages are rendered on the server (minijinja, HTML autoescaped: nothing a plugin or a
//! runbook says can become markup), with one small script for live updates; every asset is
//! in the binary, and a Content-Security-Policy allows nothing else.

mod drills;
mod pages;
mod session;
mod start;
mod stats;
mod timeline;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::State;
pub use session::Sessions;

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("runs.html", include_str!("templates/runs.html")),
        ("run.html", include_str!("templates/run.html")),
        ("approvals.html", include_str!("templates/approvals.html")),
        ("message.html", include_str!("templates/message.html")),
        ("runbooks.html", include_str!("templates/runbooks.html")),
        ("runbook.html", include_str!("templates/runbook.html")),
        ("drills.html", include_str!("templates/drills.html")),
        ("stats.html", include_str!("templates/stats.html")),
        ("triggers.html", include_str!("templates/triggers.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
});

/// A page, rendered; a template mistake is a bug, answered as a 500 that says so.
fn render(name: &str, ctx: minijinja::Value) -> Response {
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html_response(axum::http::StatusCode::OK, html),
        Err(e) => {
            tracing::error!("web UI: page {name}: {e:#}");
            html_response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("<!doctype html><p>medic: page {name} failed to render</p>"),
            )
        }
    }
}

fn html_response(status: axum::http::StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

/// No inline script or style, nothing from elsewhere, no framing, no referrer.
fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(h);
    r
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::to("/ui/runs") }),
        )
        .route(
            "/ui/",
            get(|| async { axum::response::Redirect::to("/ui/runs") }),
        )
        .route(
            "/ui/static/medic.css",
            get(|| async { asset("text/css", include_str!("static/medic.css")) }),
        )
        .route(
            "/ui/static/medic.js",
            get(|| async { asset("text/javascript", include_str!("static/medic.js")) }),
        )
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/runs/{id}/events", get(pages::events))
        .route("/ui/runs/{id}/{action}", post(pages::run_action))
        .route("/ui/runbooks", get(start::list))
        .route("/ui/runbooks/{name}", get(start::show).post(start::submit))
        .route("/ui/stats", get(stats::page))
        .route("/ui/triggers", get(stats::triggers))
        .route("/ui/drills", get(drills::page))
        .route("/ui/drills/{name}/{action}", post(drills::act))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/approvals/{id}/{decision}", post(pages::decide))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_what_it_shows() {
        let html = TEMPLATES
            .get_template("message.html")
            .unwrap()
            .render(minijinja::context! {
                title => "<b>t</b>", text => "<script>alert(1)</script>", back => "/ui/runs",
                user => None::<()>,
            })
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
        let login = TEMPLATES
            .get_template("login.html")
            .unwrap()
            .render(minijinja::context! { error => None::<String> })
            .unwrap();
        assert!(
            login.contains("id=\"token\"") && !login.contains("Log out"),
            "{login}"
        );
        for name in [
            "runs.html",
            "run.html",
            "approvals.html",
            "runbooks.html",
            "runbook.html",
            "drills.html",
            "stats.html",
            "triggers.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }
}
