//! The drill file format, as parsed: serde types that keep spans, and the JSON Schema every
//! file's shape is checked against before its meaning.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrillFile {
    #[serde(default)]
    pub(super) drill: Vec<Spanned<DrillDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrillDecl {
    pub(super) name: Spanned<String>,
    pub(super) runbook: Spanned<String>,
    #[serde(default)]
    pub(super) environment: Option<Spanned<String>>,
    pub(super) schedule: Spanned<String>,
    #[serde(default)]
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) jitter: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) missed: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) fail_step: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) before: Option<Spanned<HookDecl>>,
    #[serde(default)]
    pub(super) notify: Option<Spanned<HookDecl>>,
    #[serde(default)]
    pub(super) expect: Option<Spanned<ExpectDecl>>,
    #[serde(default)]
    pub(super) enabled: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookDecl {
    pub(crate) runbook: Spanned<String>,
    #[serde(default)]
    pub(crate) params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// The JSON Schema of drill files (`medic schema drill`); the parser checks every file's
/// shape against it.
pub fn schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let duration =
            serde_json::json!({ "type": "string", "description": "A duration: 30s, 5m, 1h" });
        let params = serde_json::json!({ "type": "object", "description": "The runbook's parameters, by name" });
        let hook = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["runbook"],
            "properties": {
                "runbook": { "type": "string", "description": "A runbook file, relative to this file" },
                "params": params.clone()
            }
        });
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Medic drills",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "drill": {
                    "type": "array",
                    "description": "One [[drill]] table per drill",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["name", "runbook", "schedule"],
                        "properties": {
                            "name": { "type": "string" },
                            "runbook": { "type": "string", "description": "The runbook to drill, relative to this file" },
                            "environment": { "type": "string", "description": "Never a protected one" },
                            "schedule": { "type": "string", "description": "Cron: 5 fields (crontab), or 6/7 with seconds and year" },
                            "timezone": { "type": "string", "description": "An IANA name such as Europe/Paris; UTC by default" },
                            "jitter": duration.clone(),
                            "missed": { "enum": ["skip", "run_once"], "description": "skip (default): wait for the next time; run_once: after downtime, run one missed drill" },
                            "params": params,
                            "fail_step": { "type": "string", "description": "Force this step of the runbook to fail" },
                            "enabled": { "type": "boolean", "description": "false: its scheduled runs are recorded as skipped (saying so) until it is true again; `medic drill run` still runs it" },
                            "before": hook.clone(),
                            "notify": hook,
                            "expect": {
                                "type": "object",
                                "additionalProperties": false,
                                "properties": {
                                    "outcome": { "enum": ["rolled_back", "failed", "succeeded"], "description": "rolled_back (default): rolled back and verified healthy" },
                                    "recover_within": duration
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

const DRILL_WORDS: crate::runbook::shape::Words = crate::runbook::shape::Words {
    lists: &[("drill", "drill")],
    maps: &[],
};

/// A drill file as far as it parses, and every mistake in its shape.
pub(super) fn parse(text: &str) -> crate::runbook::shape::Parsed<DrillFile> {
    crate::runbook::shape::parse(text, schema(), &DRILL_WORDS)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectDecl {
    #[serde(default)]
    pub(super) outcome: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) recover_within: Option<Spanned<String>>,
}
