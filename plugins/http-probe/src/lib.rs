//! `http-probe`: checks that a URL answers with an expected status, optionally a body
//! substring or a value at a JSON pointer, within a latency budget.
//!
//! The JSON checks make it a metric gate for any service that reports numbers as JSON: the
//! value at `json_pointer` must equal `json_equals`, or lie within `json_min`..`json_max`.

use std::time::Instant;

use medic_plugin_sdk::http::{self, HttpError};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, log};
use serde_json::Value;

struct HttpProbe;

/// Parses a status set such as `200`, `200,204` or `2xx,301`.
fn status_matches(spec: &str, status: u16) -> Result<bool, Error> {
    let status = status.to_string();
    for part in spec.split(',').map(str::trim) {
        let valid = part.len() == 3
            && part
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || (i > 0 && c.eq_ignore_ascii_case(&'x')));
        if !valid {
            return Err(Error::invalid_params(format!(
                "parameter `expect_status`: `{part}` is not a status like 200 or 2xx"
            )));
        }
        if part
            .chars()
            .zip(status.chars())
            .all(|(p, s)| p.eq_ignore_ascii_case(&'x') || p == s)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Plugin for HttpProbe {
    fn manifest() -> Manifest {
        Manifest::check("http-probe", env!("CARGO_PKG_VERSION"))
            .describe("Checks that a URL answers with the expected status, body and latency")
            .param(Param::text("url").required().describe("The URL to request"))
            .param(
                Param::text("method")
                    .default("GET")
                    .describe("The HTTP method"),
            )
            .param(
                Param::text("expect_status")
                    .default("200")
                    .describe("Accepted statuses: `200`, `200,204` or `2xx`"),
            )
            .param(Param::text("body_contains").describe("Text the body must contain"))
            .param(
                Param::text("json_pointer")
                    .describe("A JSON pointer (RFC 6901) into the body, e.g. `/status` or `/servers/0/ratio`"),
            )
            .param(
                Param::text("json_equals")
                    .describe("The value at `json_pointer` must be this (a string, or a number/bool/null as written)"),
            )
            .param(Param::float("json_min").describe("The number at `json_pointer` must be at least this"))
            .param(Param::float("json_max").describe("The number at `json_pointer` must be at most this"))
            .param(Param::duration("max_latency").describe("Fail when slower than this"))
            .param(Param::duration("request_timeout").describe("Timeout of the request"))
            .capability("http")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let url = params.text("url")?;
        let method = params.text("method")?;
        let expect = params.text("expect_status")?;
        let json = JsonCheck::from_params(params)?;
        let mut request = http::request(method, url);
        if let Some(t) = params.opt_duration("request_timeout")? {
            request = request.timeout(t);
        }

        let started = Instant::now();
        let response = match request.send() {
            Ok(r) => r,
            // An unreachable service is the check's answer, not a plugin error.
            Err(e @ (HttpError::Connection(_) | HttpError::Timeout(_))) => {
                return Ok(Outcome::failure(format!("{method} {url}: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outcome = |o: Outcome| {
            o.output("status", i64::from(response.status))
                .output("latency_ms", latency_ms)
                .metric("latency_ms", latency_ms)
        };

        if !status_matches(expect, response.status)? {
            log::warn(&format!("unexpected status {}", response.status));
            return Ok(outcome(Outcome::failure(format!(
                "{method} {url} answered {} (expected {expect})",
                response.status
            ))));
        }
        if let Some(needle) = params.opt_text("body_contains")?
            && !response.text().contains(needle)
        {
            return Ok(outcome(Outcome::failure(format!(
                "{method} {url} answered {} but the body lacks {needle:?}",
                response.status
            ))));
        }
        let mut outcome_with_value: Option<Value> = None;
        if let Some(check) = &json {
            let found = match check.evaluate(&response.text()) {
                Ok(v) => v,
                Err(why) => {
                    return Ok(outcome(Outcome::failure(format!(
                        "{method} {url} answered {}, but {why}",
                        response.status
                    ))));
                }
            };
            outcome_with_value = Some(found);
        }
        let outcome = |o: Outcome| match &outcome_with_value {
            Some(v) => {
                let o = outcome(o);
                match v.as_f64() {
                    Some(n) => o.output("json_value", n).metric("json_value", n),
                    None => o.output("json_value", display(v)),
                }
            }
            None => outcome(o),
        };
        if let Some(max) = params.opt_duration("max_latency")?
            && latency_ms > max.as_secs_f64() * 1000.0
        {
            return Ok(outcome(Outcome::failure(format!(
                "{method} {url} took {latency_ms:.1} ms (max {} ms)",
                max.as_millis()
            ))));
        }
        let shown = match (&json, &outcome_with_value) {
            (Some(check), Some(v)) => format!(", {} = {}", check.pointer, display(v)),
            _ => String::new(),
        };
        Ok(outcome(Outcome::success(format!(
            "{method} {url} answered {} in {latency_ms:.1} ms{shown}",
            response.status
        ))))
    }
}

/// What the body must hold at a JSON pointer.
struct JsonCheck {
    pointer: String,
    equals: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
}

impl JsonCheck {
    fn from_params(params: &Params) -> Result<Option<JsonCheck>, Error> {
        let equals = params.opt_text("json_equals")?.map(str::to_owned);
        let min = params.opt_float("json_min")?;
        let max = params.opt_float("json_max")?;
        let Some(pointer) = params.opt_text("json_pointer")? else {
            if equals.is_some() || min.is_some() || max.is_some() {
                return Err(Error::invalid_params(
                    "`json_equals`, `json_min` and `json_max` need `json_pointer`",
                ));
            }
            return Ok(None);
        };
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(Error::invalid_params(format!(
                "parameter `json_pointer`: `{pointer}` must be empty or start with `/`"
            )));
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            return Err(Error::invalid_params(format!(
                "`json_min` ({lo}) is above `json_max` ({hi})"
            )));
        }
        Ok(Some(JsonCheck {
            pointer: pointer.to_owned(),
            equals,
            min,
            max,
        }))
    }

    /// The value found, or why the body fails the check.
    fn evaluate(&self, body: &str) -> Result<Value, String> {
        let doc: Value =
            serde_json::from_str(body).map_err(|e| format!("the body is not JSON ({e})"))?;
        let v = doc
            .pointer(&self.pointer)
            .cloned()
            .ok_or_else(|| format!("the body has nothing at {}", self.pointer))?;
        if let Some(want) = &self.equals
            && display(&v) != *want
        {
            return Err(format!(
                "{} is {} (expected {want})",
                self.pointer,
                display(&v)
            ));
        }
        if self.min.is_some() || self.max.is_some() {
            let Some(n) = v.as_f64() else {
                return Err(format!("{} is {}, not a number", self.pointer, display(&v)));
            };
            if let Some(lo) = self.min
                && n < lo
            {
                return Err(format!("{} is {n} (min {lo})", self.pointer));
            }
            if let Some(hi) = self.max
                && n > hi
            {
                return Err(format!("{} is {n} (max {hi})", self.pointer));
            }
        }
        Ok(v)
    }
}

/// A JSON value as a person writes it: strings without quotes, anything else as JSON.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

medic_plugin_sdk::export!(HttpProbe);

#[cfg(test)]
mod tests {
    use super::{JsonCheck, status_matches};

    fn check(pointer: &str, equals: Option<&str>, min: Option<f64>, max: Option<f64>) -> JsonCheck {
        JsonCheck {
            pointer: pointer.into(),
            equals: equals.map(Into::into),
            min,
            max,
        }
    }

    #[test]
    fn json_checks() {
        let body = r#"{"status":"up","servers":{"canary":{"error_ratio":0.25,"ok":true}}}"#;
        assert!(
            check("/status", Some("up"), None, None)
                .evaluate(body)
                .is_ok()
        );
        let e = check("/status", Some("down"), None, None)
            .evaluate(body)
            .unwrap_err();
        assert_eq!(e, "/status is up (expected down)");
        assert!(
            check("/servers/canary/ok", Some("true"), None, None)
                .evaluate(body)
                .is_ok()
        );
        let ratio = "/servers/canary/error_ratio";
        assert!(check(ratio, None, None, Some(0.3)).evaluate(body).is_ok());
        let e = check(ratio, None, None, Some(0.05))
            .evaluate(body)
            .unwrap_err();
        assert_eq!(e, "/servers/canary/error_ratio is 0.25 (max 0.05)");
        let e = check(ratio, None, Some(0.5), None)
            .evaluate(body)
            .unwrap_err();
        assert_eq!(e, "/servers/canary/error_ratio is 0.25 (min 0.5)");
        let e = check("/status", None, None, Some(1.0))
            .evaluate(body)
            .unwrap_err();
        assert_eq!(e, "/status is up, not a number");
        let e = check("/nope", None, None, None).evaluate(body).unwrap_err();
        assert_eq!(e, "the body has nothing at /nope");
        assert!(
            check("", None, None, None)
                .evaluate("not json")
                .unwrap_err()
                .starts_with("the body is not JSON")
        );
    }

    #[test]
    fn status_sets() {
        assert!(status_matches("200", 200).unwrap());
        assert!(!status_matches("200", 201).unwrap());
        assert!(status_matches("200, 204", 204).unwrap());
        assert!(status_matches("2xx", 299).unwrap());
        assert!(!status_matches("2xx", 301).unwrap());
        assert!(status_matches("2xx,301", 301).unwrap());
        assert!(status_matches("20", 200).is_err());
        assert!(status_matches("x00", 200).is_err());
    }
}
