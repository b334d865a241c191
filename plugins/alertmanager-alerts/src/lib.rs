//! `alertmanager-alerts`: fails while alerts matching the given labels are firing in
//! Alertmanager (active, not silenced, not inhibited).

use medic_plugin_sdk::http::{self, HttpError, query_string};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin};
use serde_json::Value;

struct AlertmanagerAlerts;

/// `label=value` or `label!=value` (and `=~`, `!~`) into Alertmanager's matcher syntax.
fn matcher(text: &str) -> Result<String, Error> {
    for op in ["!=", "=~", "!~", "="] {
        if let Some((label, value)) = text.split_once(op) {
            let label = label.trim();
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            return Ok(format!(
                "{label}{op}\"{}\"",
                value.trim().replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
    }
    Err(Error::invalid_params(format!(
        "parameter `matchers`: `{text}` is not like alertname=HighErrorRate or severity!=info"
    )))
}

impl Plugin for AlertmanagerAlerts {
    fn manifest() -> Manifest {
        Manifest::check("alertmanager-alerts", env!("CARGO_PKG_VERSION"))
            .describe("Fails while matching alerts are firing in Alertmanager")
            .param(Param::text("url").required().describe("Alertmanager base URL, e.g. http://127.0.0.1:9093"))
            .param(Param::text_list("matchers").default(Vec::<String>::new()).describe("Label matchers, e.g. [\"service=checkout\", \"severity!=info\"]; none: any alert"))
            .capability("http")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let base = params.text("url")?.trim_end_matches('/');
        let matchers = params
            .text_list("matchers")?
            .iter()
            .map(|m| matcher(m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pairs = vec![
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
        ];
        pairs.extend(matchers.iter().map(|m| ("filter", m.as_str())));
        let url = format!("{base}/api/v2/alerts?{}", query_string(&pairs));
        let response = match http::get(&url).send() {
            Ok(r) => r,
            Err(e @ (HttpError::Connection(_) | HttpError::Timeout(_))) => {
                return Err(Error::transient(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        match response.status {
            200 => {}
            400 => {
                return Err(Error::invalid_params(format!(
                    "Alertmanager refused the matchers: {}",
                    response.text().trim()
                )));
            }
            s if s >= 500 => return Err(Error::transient(format!("Alertmanager answered {s}"))),
            s => return Err(Error::permanent(format!("Alertmanager answered {s}"))),
        }
        let alerts: Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::permanent(format!("the answer is not JSON: {e}")))?;
        let alerts = alerts
            .as_array()
            .ok_or_else(|| Error::permanent("the answer is not a list of alerts"))?;
        let mut names: Vec<String> = alerts
            .iter()
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        let scope = if matchers.is_empty() {
            String::new()
        } else {
            format!(" matching {}", matchers.join(", "))
        };
        let outcome = if alerts.is_empty() {
            Outcome::success(format!("no alerts firing{scope}"))
        } else {
            Outcome::failure(format!(
                "{} alert{} firing{scope}: {}",
                alerts.len(),
                if alerts.len() == 1 { "" } else { "s" },
                names.join(", ")
            ))
        };
        Ok(outcome
            .output("firing", alerts.len() as i64)
            .output("alertnames", names)
            .metric("firing", alerts.len() as f64))
    }
}

medic_plugin_sdk::export!(AlertmanagerAlerts);

#[cfg(test)]
mod tests {
    use super::matcher;

    #[test]
    fn matchers() {
        assert_eq!(matcher("alertname=High").unwrap(), "alertname=\"High\"");
        assert_eq!(matcher("severity!=info").unwrap(), "severity!=\"info\"");
        assert_eq!(matcher("job=~api.*").unwrap(), "job=~\"api.*\"");
        assert!(matcher("no operator").is_err());
        assert!(matcher("=x").is_err());
    }
}
