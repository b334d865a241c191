//! `http-probe`: checks that a URL answers with an expected status, optionally a body
//! substring, within a latency budget.

use std::time::Instant;

use medic_plugin_sdk::http::{self, HttpError};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, log};

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
            .param(Param::duration("max_latency").describe("Fail when slower than this"))
            .param(Param::duration("request_timeout").describe("Timeout of the request"))
            .capability("http")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let url = params.text("url")?;
        let method = params.text("method")?;
        let expect = params.text("expect_status")?;
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
        if let Some(max) = params.opt_duration("max_latency")?
            && latency_ms > max.as_secs_f64() * 1000.0
        {
            return Ok(outcome(Outcome::failure(format!(
                "{method} {url} took {latency_ms:.1} ms (max {} ms)",
                max.as_millis()
            ))));
        }
        Ok(outcome(Outcome::success(format!(
            "{method} {url} answered {} in {latency_ms:.1} ms",
            response.status
        ))))
    }
}

medic_plugin_sdk::export!(HttpProbe);

#[cfg(test)]
mod tests {
    use super::status_matches;

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
