//! The trigger file format, as parsed: serde types that keep spans, and the JSON Schema every
//! file's shape is checked against before its meaning.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerFile {
    #[serde(default)]
    pub(super) trigger: Vec<Spanned<TriggerDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerDecl {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) source: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) secret_env: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub(super) matchers: Spanned<Vec<Spanned<String>>>,
    pub(super) runbook: Spanned<String>,
    #[serde(default)]
    pub(super) environment: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) group_by: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) cooldown: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) storm: Option<Spanned<StormDecl>>,
    #[serde(default)]
    pub(super) on_resolved: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) protected: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) approval_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) silence: Option<Spanned<SilenceDecl>>,
    #[serde(default)]
    pub(super) escalate: Option<Spanned<crate::drill::file::HookDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StormDecl {
    pub(super) runs: Spanned<u32>,
    pub(super) window: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceDecl {
    pub(super) alertmanager: Spanned<String>,
}

/// The JSON Schema of trigger files (`medic schema trigger`); the parser checks every file's
/// shape against it.
pub fn schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let duration =
            serde_json::json!({ "type": "string", "description": "A duration: 30s, 5m, 1h" });
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Medic triggers",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "trigger": {
                    "type": "array",
                    "description": "One [[trigger]] table per trigger",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["name", "match", "runbook"],
                        "properties": {
                            "name": { "type": "string" },
                            "source": { "enum": ["alertmanager", "webhook"], "description": "alertmanager (default): alerts posted to /api/v1/alerts/alertmanager; webhook: any JSON posted to /api/v1/hooks/NAME, signed with HMAC-SHA256 (X-Hub-Signature-256)" },
                            "secret_env": { "type": "string", "description": "For a webhook: the environment variable of medic serve that holds the HMAC key" },
                            "match": {
                                "type": "array",
                                "minItems": 1,
                                "description": "Alertmanager matchers on the alert's labels (a webhook's fields, nested ones joined with dots), all of which must hold: name=\"v\", name!=\"v\", name=~\"re\", name!~\"re\"",
                                "items": { "type": "string" }
                            },
                            "runbook": { "type": "string", "description": "The runbook to run, relative to this file" },
                            "environment": { "type": "string", "description": "May use the alert: {{ alert.labels.env }}" },
                            "params": { "type": "object", "description": "The runbook's parameters, by name; values may use the alert: {{ alert.labels.instance }}" },
                            "group_by": {
                                "type": "array",
                                "items": { "type": "string" },
                                "description": "Labels whose values make a group: one run at a time per group (default: the alert's fingerprint)"
                            },
                            "cooldown": duration.clone(),
                            "storm": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["runs", "window"],
                                "description": "At most `runs` runs per `window`; then the trigger stops until re-armed",
                                "properties": {
                                    "runs": { "type": "integer", "minimum": 1 },
                                    "window": duration.clone()
                                }
                            },
                            "on_resolved": { "enum": ["continue", "cancel"], "description": "continue (default): a run under way goes on; cancel: it is cancelled (and rolls back as its runbook says)" },
                            "protected": { "enum": ["refuse", "approve"], "description": "In a protected environment: refuse (default) never runs; approve waits for a person's approval" },
                            "approval_timeout": duration,
                            "silence": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["alertmanager"],
                                "description": "Silence the alert in Alertmanager while its run is under way",
                                "properties": {
                                    "alertmanager": { "type": "string", "description": "Alertmanager's URL, e.g. http://127.0.0.1:9093" }
                                }
                            },
                            "escalate": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["runbook"],
                                "description": "A notify runbook run when a triggered run fails or rolls back, or the storm brake trips",
                                "properties": {
                                    "runbook": { "type": "string", "description": "A runbook file, relative to this file" },
                                    "params": { "type": "object", "description": "The runbook's parameters, by name" }
                                }
                            }
                        }
                    }
                }
            }
        })
    });
    &SCHEMA
}

const TRIGGER_WORDS: crate::runbook::shape::Words = crate::runbook::shape::Words {
    lists: &[("trigger", "trigger")],
    maps: &[],
};

/// A trigger file as far as it parses, and every mistake in its shape.
pub(super) fn parse(text: &str) -> crate::runbook::shape::Parsed<TriggerFile> {
    crate::runbook::shape::parse(text, schema(), &TRIGGER_WORDS)
}
