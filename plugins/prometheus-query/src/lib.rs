//! `prometheus-query`: runs a PromQL instant query against the Prometheus HTTP API and
//! compares the result with a threshold, e.g. an error ratio below 0.01.
//!
//! Every series in the result must satisfy the comparison; the worst value is reported. What
//! an empty result means is the runbook's choice (`on_empty`): no data may be good news
//! (no errors), bad news (no traffic) or unknown (a gate then waits).

use medic_plugin_sdk::http::{self, HttpError, query_string};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin};
use serde_json::Value;

struct PrometheusQuery;

#[derive(Clone, Copy)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn parse(s: &str) -> Result<Op, Error> {
        Ok(match s.trim() {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => {
                return Err(Error::invalid_params(format!(
                    "parameter `op`: `{other}` is not one of <, <=, >, >=, ==, !="
                )));
            }
        })
    }

    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Gt => v > t,
            Op::Ge => v >= t,
            Op::Eq => v == t,
            Op::Ne => v != t,
        }
    }

    /// Of two values, the one further from satisfying the comparison.
    fn worse(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Lt | Op::Le => a.max(b),
            Op::Gt | Op::Ge => a.min(b),
            Op::Eq | Op::Ne => a,
        }
    }
}

/// The (labels, value) samples of an instant-query answer.
fn samples(body: &Value) -> Result<Vec<(String, f64)>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            body["errorType"], body["error"]
        ));
    }
    let value_of = |pair: &Value| -> Result<f64, String> {
        let text = pair
            .get(1)
            .and_then(Value::as_str)
            .ok_or("a sample without a value")?;
        text.parse::<f64>()
            .map_err(|_| format!("`{text}` is not a number"))
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or("no result array")?
            .iter()
            .map(|s| Ok((s["metric"].to_string(), value_of(&s["value"])?)))
            .collect(),
        Some("scalar") => Ok(vec![("scalar".into(), value_of(&data["result"])?)]),
        other => Err(format!(
            "result type {other:?} is not supported (use an instant vector or scalar)"
        )),
    }
}

impl Plugin for PrometheusQuery {
    fn manifest() -> Manifest {
        Manifest::check("prometheus-query", env!("CARGO_PKG_VERSION"))
            .describe("Compares the result of a PromQL instant query with a threshold")
            .param(
                Param::text("url")
                    .required()
                    .describe("Prometheus base URL, e.g. http://127.0.0.1:9090"),
            )
            .param(Param::text("query").required().describe(
                "PromQL, e.g. sum(rate(errors_total[1m])) / sum(rate(requests_total[1m]))",
            ))
            .param(
                Param::text("op")
                    .default("<")
                    .describe("How the value must compare: <, <=, >, >=, ==, !="),
            )
            .param(
                Param::float("threshold")
                    .required()
                    .describe("What the value is compared with"),
            )
            .param(
                Param::text("on_empty")
                    .default("inconclusive")
                    .describe("An empty result is: pass, fail or inconclusive"),
            )
            .capability("http")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let base = params.text("url")?.trim_end_matches('/');
        let query = params.text("query")?;
        let op = Op::parse(params.text("op")?)?;
        let threshold = params.float("threshold")?;
        let on_empty = params.text("on_empty")?;
        if !["pass", "fail", "inconclusive"].contains(&on_empty) {
            return Err(Error::invalid_params(format!(
                "parameter `on_empty`: `{on_empty}` is not pass, fail or inconclusive"
            )));
        }
        let url = format!("{base}/api/v1/query?{}", query_string(&[("query", query)]));
        let response = match http::get(&url).send() {
            Ok(r) => r,
            Err(e @ (HttpError::Connection(_) | HttpError::Timeout(_))) => {
                return Err(Error::transient(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            Error::permanent(format!(
                "Prometheus answered {} with a body that is not JSON: {e}",
                response.status
            ))
        })?;
        if response.status == 400 || response.status == 422 {
            return Err(Error::invalid_params(format!(
                "the query was refused: {}",
                body["error"].as_str().unwrap_or("?")
            )));
        }
        if response.status >= 500 {
            return Err(Error::transient(format!(
                "Prometheus answered {}",
                response.status
            )));
        }
        let samples = samples(&body).map_err(Error::permanent)?;
        let Some(worst) = samples
            .iter()
            .map(|(_, v)| *v)
            .reduce(|a, b| op.worse(a, b))
        else {
            let summary = format!("`{query}` returned no data");
            return Ok(match on_empty {
                "pass" => Outcome::success(summary),
                "fail" => Outcome::failure(summary),
                _ => Outcome::inconclusive(summary),
            }
            .output("series", 0i64));
        };
        let failing: Vec<&(String, f64)> = samples
            .iter()
            .filter(|(_, v)| !op.holds(*v, threshold))
            .collect();
        let op_text = params.text("op")?.trim();
        let outcome = if worst.is_nan() {
            Outcome::inconclusive(format!("`{query}` is NaN (no traffic?)"))
        } else if failing.is_empty() {
            Outcome::success(format!("`{query}` = {worst} {op_text} {threshold}"))
        } else {
            Outcome::failure(format!(
                "`{query}` = {worst}, not {op_text} {threshold} ({} of {} series)",
                failing.len(),
                samples.len()
            ))
        };
        Ok(outcome
            .output("value", worst)
            .output("series", samples.len() as i64)
            .metric("value", worst))
    }
}

medic_plugin_sdk::export!(PrometheusQuery);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_and_scalars_and_refuses_errors() {
        let v: Value = serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"value":[1,"0.5"]},{"metric":{},"value":[1,"NaN"]}]}}"#).unwrap();
        let s = samples(&v).unwrap();
        assert_eq!(s[0].1, 0.5);
        assert!(s[1].1.is_nan());
        let v: Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
        )
        .unwrap();
        assert_eq!(samples(&v).unwrap()[0].1, 2.0);
        let v: Value = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap();
        assert!(samples(&v).unwrap_err().contains("parse error"));
        assert_eq!(Op::Lt.worse(0.1, 0.3), 0.3);
        assert_eq!(Op::Ge.worse(0.1, 0.3), 0.1);
    }
}
