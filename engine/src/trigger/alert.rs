//! Alerts as they arrive: Alertmanager's webhook payload (version 4), and what a trigger's
//! templates see of one alert (`{{ alert.labels.instance }}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Alertmanager's webhook body (`version` "4").
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

/// One alert, as Alertmanager sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's fingerprint of the label set; computed here when absent.
    #[serde(default)]
    pub fingerprint: String,
}

/// Alerts in one request, at most: a bigger batch is refused whole.
pub const MAX_ALERTS: usize = 1000;

impl Webhook {
    /// Parses and checks a body; the error says what is wrong with it.
    pub fn parse(body: &[u8]) -> Result<Webhook, String> {
        let mut w: Webhook = serde_json::from_slice(body)
            .map_err(|e| format!("not an Alertmanager webhook: {e}"))?;
        if w.version != "4" {
            return Err(format!(
                "Alertmanager webhook version {:?}: only version \"4\" is understood",
                w.version
            ));
        }
        if w.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "{} alerts in one request; at most {MAX_ALERTS}",
                w.alerts.len()
            ));
        }
        for a in &mut w.alerts {
            if a.status != "firing" && a.status != "resolved" {
                return Err(format!(
                    "alert status {:?}: \"firing\" or \"resolved\"",
                    a.status
                ));
            }
            if a.fingerprint.is_empty() {
                a.fingerprint = fingerprint(&a.labels);
            }
        }
        Ok(w)
    }
}

/// A stable digest of a label set (the first 16 hex digits of its SHA-256), for alerts that
/// come without Alertmanager's own.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    pub fn firing(&self) -> bool {
        self.status == "firing"
    }

    /// When it started firing, in ms since the epoch (0 when unknown).
    pub fn starts_at_ms(&self) -> u64 {
        chrono::DateTime::parse_from_rfc3339(&self.starts_at)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .unwrap_or(0)
    }

    /// What templates see: `alert.labels`, `alert.annotations`, `alert.status`,
    /// `alert.starts_at`, `alert.fingerprint`, `alert.name`.
    pub fn context(&self) -> minijinja::Value {
        minijinja::context! {
            alert => minijinja::context! {
                labels => self.labels.clone(),
                annotations => self.annotations.clone(),
                status => self.status.clone(),
                starts_at => self.starts_at.clone(),
                fingerprint => self.fingerprint.clone(),
                name => self.name().to_owned(),
            }
        }
    }

    /// A sample for checking templates when a trigger is loaded: every label a template
    /// names is there, so only mistakes of form show.
    pub fn sample() -> minijinja::Value {
        minijinja::context! {
            alert => minijinja::context! {
                labels => minijinja::Value::from_object(Anything),
                annotations => minijinja::Value::from_object(Anything),
                status => "firing",
                starts_at => "2026-01-01T00:00:00Z",
                fingerprint => "0123456789abcdef",
                name => "Sample",
            }
        }
    }
}

/// A map that has every key (its value is the key's name): template checks at load time.
#[derive(Debug)]
struct Anything;

impl minijinja::value::Object for Anything {
    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        Some(minijinja::Value::from(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alertmanager_body_is_read_and_checked() {
        let body = br#"{"version":"4","groupKey":"{}:{alertname=\"WebDown\"}","status":"firing","receiver":"medic",
            "groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am",
            "alerts":[{"status":"firing","labels":{"alertname":"WebDown","instance":"a:80"},
            "annotations":{"summary":"down"},"startsAt":"2026-11-29T10:00:00.5Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://prom","fingerprint":"abc"}]}"#;
        let w = Webhook::parse(body).unwrap();
        let a = &w.alerts[0];
        assert_eq!((a.name(), a.fingerprint.as_str()), ("WebDown", "abc"));
        assert_eq!(a.starts_at_ms(), 1_795_946_400_500);
        assert!(a.firing());
        let no_fp = br#"{"version":"4","alerts":[{"status":"resolved","labels":{"a":"b"}}]}"#;
        let w = Webhook::parse(no_fp).unwrap();
        assert_eq!(w.alerts[0].fingerprint.len(), 16);
        for (bad, says) in [
            (&br#"{"version":"3","alerts":[]}"#[..], "version"),
            (br#"{"version":"4","alerts":[{"status":"odd"}]}"#, "status"),
            (br#"{"alerts":[]}"#, "not an Alertmanager webhook"),
        ] {
            let e = Webhook::parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
