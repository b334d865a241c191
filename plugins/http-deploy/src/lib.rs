//! `http-deploy`: deploys a version through an HTTP deployment API and can revert to the
//! version that ran before.
//!
//! The API: `GET version_url` answers the current version as plain text; `POST url` with the
//! version as a plain-text body deploys it. After deploying, the plugin reads the version back
//! and fails unless it is the one requested.

use medic_plugin_sdk::{
    Context, Error, Manifest, Outcome, Param, Params, Plugin, Value, http, kv, log,
};

struct HttpDeploy;

fn with_auth(request: http::Request, params: &Params) -> Result<http::Request, Error> {
    Ok(match params.opt_text("token")? {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    })
}

fn current_version(params: &Params) -> Result<String, Error> {
    let url = params
        .opt_text("version_url")?
        .unwrap_or(params.text("url")?);
    let response = with_auth(http::get(url), params)?.send()?;
    match response.status {
        200..=299 => Ok(response.text().trim().to_owned()),
        500..=599 => Err(Error::transient(format!(
            "GET {url} answered {}",
            response.status
        ))),
        s => Err(Error::permanent(format!("GET {url} answered {s}"))),
    }
}

fn deploy(params: &Params, version: &str) -> Result<(), Error> {
    let url = params.text("url")?;
    let response = with_auth(http::post(url), params)?
        .header("content-type", "text/plain")
        .body(version)
        .send()?;
    match response.status {
        200..=299 => {}
        500..=599 => {
            return Err(Error::transient(format!(
                "POST {url} answered {}: {}",
                response.status,
                response.text().trim()
            )));
        }
        s => {
            return Err(Error::permanent(format!(
                "POST {url} answered {s}: {}",
                response.text().trim()
            )));
        }
    }
    let now = current_version(params)?;
    if now != version {
        return Err(Error::permanent(format!(
            "deployed {version} but the service reports {now}"
        )));
    }
    Ok(())
}

impl Plugin for HttpDeploy {
    fn manifest() -> Manifest {
        Manifest::action("http-deploy", env!("CARGO_PKG_VERSION"))
            .describe("Deploys a version through an HTTP API; revert redeploys the previous one")
            .param(
                Param::text("url")
                    .required()
                    .describe("Deploy endpoint (POST the version)"),
            )
            .param(
                Param::text("version")
                    .required()
                    .describe("The version to deploy"),
            )
            .param(
                Param::text("version_url")
                    .describe("Where to GET the current version (default: `url`)"),
            )
            .param(
                Param::text("token")
                    .secret()
                    .describe("Bearer token for the API"),
            )
            .capability("http")
            .capability("kv")
            .revertible()
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let version = params.text("version")?;
        let now = current_version(params)?;
        // A retried or resumed call keeps what the first attempt found: the service may be
        // half-deployed by it, and the revert must go back to the version before the change.
        let previous = if ctx.attempt > 1 {
            kv::original(ctx, "previous_version")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or(now)
        } else {
            now
        };
        let done = |o: Outcome| {
            o.output("previous_version", previous.as_str())
                .output("version", version)
        };
        if previous == version {
            return Ok(done(Outcome::success(format!(
                "{version} is already deployed"
            ))));
        }
        if ctx.dry_run {
            return Ok(done(Outcome::success(format!(
                "would deploy {version} (now {previous})"
            ))));
        }
        // Saved (durably) before deploying: if this call dies mid-way, a revert in another
        // process still knows the target.
        kv::save_original(ctx, "previous_version", &previous)?;
        log::info(&format!("deploying {version} over {previous}"));
        deploy(params, version)?;
        Ok(done(Outcome::success(format!(
            "deployed {version} (was {previous})"
        ))))
    }

    fn revert(ctx: &Context, params: &Params, outputs: &Params) -> Result<Outcome, Error> {
        let target = match outputs.get("previous_version") {
            Some(Value::Text(v)) => v.clone(),
            _ => kv::original(ctx, "previous_version")
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| {
                    Error::permanent("no previous version recorded: nothing to revert to")
                })?,
        };
        let now = current_version(params)?;
        if now == target {
            return Ok(Outcome::success(format!("{target} is already deployed")));
        }
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would redeploy {target} (now {now})"
            )));
        }
        log::info(&format!("reverting {now} to {target}"));
        deploy(params, &target)?;
        Ok(Outcome::success(format!("redeployed {target} (was {now})"))
            .output("version", target.as_str()))
    }
}

medic_plugin_sdk::export!(HttpDeploy);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use medic_plugin_sdk::testing::{Harness, response};
    use medic_plugin_sdk::{Error, Status, Value};

    use super::HttpDeploy;

    /// A deploy API in memory: GET answers the current version, POST sets it.
    fn api(current: &Rc<RefCell<String>>) -> Harness {
        let state = current.clone();
        Harness::new()
            .param("url", "http://deploy.internal/deploy")
            .param("version_url", "http://deploy.internal/version")
            .http_handler(move |call| {
                let mut v = state.borrow_mut();
                Some(Ok(match (call.method.as_str(), call.url.as_str()) {
                    ("GET", "http://deploy.internal/version") => response(200, format!("{v}\n")),
                    ("POST", "http://deploy.internal/deploy") => {
                        *v = call.body_text();
                        response(200, "ok")
                    }
                    _ => response(404, "no such endpoint"),
                }))
            })
    }

    #[test]
    fn deploys_then_reverts_to_the_previous_version() {
        let current = Rc::new(RefCell::new("v1".to_string()));
        let mut h = api(&current).param("version", "v2");
        let run = h.run::<HttpDeploy>();
        assert_eq!(run.outcome().status, Status::Success);
        assert_eq!(run.outcome().summary, "deployed v2 (was v1)");
        assert_eq!(
            run.output("previous_version"),
            Some(&Value::Text("v1".into()))
        );
        assert_eq!(*current.borrow(), "v2");
        assert_eq!(h.kv_get("previous_version@test"), Some(&b"v1"[..]));
        assert!(run.logged("deploying v2 over v1"));

        let revert = h.revert::<HttpDeploy>(run.outputs());
        assert_eq!(revert.outcome().summary, "redeployed v1 (was v2)");
        assert_eq!(*current.borrow(), "v1");
        let posts: Vec<_> = revert.http.iter().filter(|c| c.method == "POST").collect();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].body_text(), "v1");
    }

    #[test]
    fn revert_without_outputs_uses_what_the_run_stored() {
        let current = Rc::new(RefCell::new("v1".to_string()));
        let mut h = api(&current).param("version", "v2");
        h.run::<HttpDeploy>().outcome();
        // A run that died before returning has no outputs; the kv entry is the fallback.
        let revert = h.revert::<HttpDeploy>(Default::default());
        assert_eq!(revert.outcome().summary, "redeployed v1 (was v2)");
    }

    #[test]
    fn a_retry_after_a_half_made_change_keeps_the_version_from_before_it() {
        // The first attempt saved v1 and was killed after the service took v2.
        let current = Rc::new(RefCell::new("v2".to_string()));
        let mut h = api(&current)
            .param("version", "v2")
            .attempt(2)
            .kv("previous_version@test", "v1");
        let run = h.run::<HttpDeploy>();
        assert_eq!(run.outcome().status, Status::Success);
        assert_eq!(
            run.output("previous_version"),
            Some(&Value::Text("v1".into())),
            "{}",
            run.outcome().summary
        );
        assert_eq!(h.kv_get("previous_version@test"), Some(&b"v1"[..]));
        let revert = h.revert::<HttpDeploy>(Default::default());
        assert_eq!(revert.outcome().summary, "redeployed v1 (was v2)");
        assert_eq!(*current.borrow(), "v1");
    }

    #[test]
    fn a_dry_run_changes_nothing() {
        let current = Rc::new(RefCell::new("v1".to_string()));
        let mut h = api(&current).param("version", "v2").dry_run(true);
        let run = h.run::<HttpDeploy>();
        assert_eq!(run.outcome().summary, "would deploy v2 (now v1)");
        assert_eq!(*current.borrow(), "v1");
        assert!(run.http.iter().all(|c| c.method == "GET"));
    }

    #[test]
    fn a_server_error_is_transient_and_a_refusal_permanent() {
        let mut h = Harness::new()
            .param("url", "http://deploy.internal/deploy")
            .param("version", "v2")
            .http(
                "GET",
                "http://deploy.internal/deploy",
                response(503, "busy"),
            );
        assert!(matches!(h.run::<HttpDeploy>().error(), Error::Transient(_)));

        let mut h = Harness::new()
            .param("url", "http://deploy.internal/deploy")
            .param("version", "v2")
            .param("token", "s3cret")
            .http("GET", "http://deploy.internal/deploy", response(200, "v1"))
            .http(
                "POST",
                "http://deploy.internal/deploy",
                response(403, "forbidden"),
            );
        let call = h.run::<HttpDeploy>();
        assert!(matches!(call.error(), Error::Permanent(m) if m.contains("403")));
        let auth = call.http[1]
            .headers
            .iter()
            .find(|(n, _)| n == "authorization");
        assert_eq!(auth.map(|(_, v)| v.as_str()), Some("Bearer s3cret"));
    }
}
