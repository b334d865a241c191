//! `webhook-notify`: POSTs a JSON message to a webhook (Slack-compatible payload, or a
//! generic one with the run's context), for runbooks and drills to tell people what happened.

use medic_plugin_sdk::http::{self, HttpError};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin};
use serde_json::json;

struct WebhookNotify;

impl Plugin for WebhookNotify {
    fn manifest() -> Manifest {
        Manifest::action("webhook-notify", env!("CARGO_PKG_VERSION"))
            .describe("Posts a JSON message to a webhook (generic or Slack-compatible)")
            .param(Param::text("url").required().describe("The webhook URL"))
            .param(Param::text("message").required().describe("What to say"))
            .param(
                Param::text("format")
                    .default("json")
                    .describe("json: {message, run_id, step, environment}; slack: {text}"),
            )
            .param(
                Param::text("token")
                    .secret()
                    .describe("Sent as a bearer token"),
            )
            .capability("http")
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let url = params.text("url")?;
        let message = params.text("message")?;
        let body = match params.text("format")? {
            "slack" => json!({ "text": message }),
            "json" => {
                json!({ "message": message, "run_id": ctx.run_id, "step": ctx.step_id, "environment": ctx.environment })
            }
            other => {
                return Err(Error::invalid_params(format!(
                    "parameter `format`: `{other}` is not json or slack"
                )));
            }
        };
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would post to the webhook: {message}"
            )));
        }
        let mut request = http::post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = params.opt_text("token")? {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = match request.send() {
            Ok(r) => r,
            Err(e @ (HttpError::Connection(_) | HttpError::Timeout(_))) => {
                return Err(Error::transient(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        match response.status {
            200..=299 => Ok(Outcome::success(format!(
                "posted to the webhook ({})",
                response.status
            ))
            .output("status", i64::from(response.status))),
            429 | 500..=599 => Err(Error::transient(format!(
                "the webhook answered {}",
                response.status
            ))),
            s => Err(Error::permanent(format!(
                "the webhook answered {s}: {}",
                response.text().trim()
            ))),
        }
    }
}

medic_plugin_sdk::export!(WebhookNotify);
