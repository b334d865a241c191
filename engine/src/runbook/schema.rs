//! A JSON Schema of the runbook format, for editors (Taplo, Even Better TOML, VS Code) to
//! complete and check runbooks. It mirrors [`super::model`]; the test suite validates every
//! example runbook against it, and checks that it refuses keys the parser refuses.

use std::sync::LazyLock;

use serde_json::{Value, json};

/// The runbook schema, built once: the parser checks every file's shape against it.
pub fn runbook() -> &'static Value {
    static SCHEMA: LazyLock<Value> = LazyLock::new(schema);
    &SCHEMA
}

/// What runbooks call their parts, for messages.
pub const RUNBOOK_WORDS: super::shape::Words = super::shape::Words {
    lists: &[
        ("steps", "step"),
        ("rollback", "rollback step"),
        ("verify", "verify step"),
        ("finally", "finally step"),
        ("route", "route call"),
        ("smoke", "smoke check"),
        ("analysis", "analysis"),
        ("command", "command grant"),
    ],
    maps: &[
        ("params", "parameter"),
        ("environments", "environment"),
        ("plugins", "plugin"),
    ],
};

/// The schema, as `medic schema` prints it.
pub fn schema() -> Value {
    let duration = json!({ "type": "string", "description": "A duration: 500ms, 30s, 2m, 1h" });
    let templated = json!({ "type": "string", "description": "May use templates: {{ params.x }}, {{ vars.x }}, {{ env.name }}, {{ steps.ID.outputs.x }}" });
    let on_failure = json!({ "enum": ["abort", "continue", "rollback"], "description": "abort: stop; continue: tolerate the failure and go on; rollback: undo, then verify" });
    let with = json!({ "type": "object", "description": "Parameters for the plugin, checked against its manifest", "additionalProperties": true });
    // Built apart: one json! for the whole schema exceeds the macro recursion limit.
    let route = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["uses"],
        "properties": { "uses": { "type": "string", "minLength": 1, "description": "A plugin declared under [plugins]" }, "with": with.clone(), "timeout": duration.clone() }
    });
    let analysis = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "uses", "interval", "timeout"],
        "properties": {
            "name": { "type": "string" },
            "uses": { "type": "string", "minLength": 1, "description": "A plugin declared under [plugins]" },
            "with": with.clone(),
            "interval": duration.clone(),
            "failure_limit": { "type": "integer", "minimum": 1 },
            "consecutive_successes": { "type": "integer", "minimum": 1 },
            "timeout": duration.clone()
        }
    });
    let smoke = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "uses"],
        "properties": { "name": { "type": "string" }, "uses": { "type": "string", "minLength": 1, "description": "A plugin declared under [plugins]" }, "with": with.clone(), "timeout": duration.clone() }
    });
    let fleet = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["targets"],
        "description": "Run the step once per target ({{ target }} in `with`), a few at a time",
        "properties": {
            "targets": { "title": "a list of strings, or one \"{{ expression }}\" that gives a list", "oneOf": [{ "type": "array", "items": { "type": "string" } }, { "type": "string" }] },
            "max_concurrency": { "title": "a count >= 1, a percent such as \"25%\", or OneAtATime, HalfAtATime or AllAtOnce", "oneOf": [{ "type": "integer", "minimum": 1 }, { "type": "string", "pattern": "^([0-9]+%|(CodeDeployDefault\\.)?(OneAtATime|HalfAtATime|AllAtOnce))$" }] },
            "max_errors": { "title": "a count or a percent of the targets such as \"10%\"", "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^[0-9]+%$" }] },
            "order": { "enum": ["listed", "reverse", "random"], "description": "listed (default), reverse or random" }
        }
    });
    let rollout = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["strategy", "route"],
        "description": "Progressive delivery after the steps: traffic moves to the candidate stage by stage",
        "properties": {
            "strategy": { "type": "string", "description": "canary, linear, all_at_once, blue_green, or a CodeDeploy name (Canary10Percent5Minutes, Linear10PercentEvery1Minute, AllAtOnce, ...)" },
            "weights": { "type": "array", "items": { "type": "integer" }, "description": "canary: the candidate's percent per stage, ending at 100" },
            "step": { "type": "integer", "description": "linear: percent added per stage" },
            "interval": duration.clone(),
            "bake": duration.clone(),
            "rollback_window": duration.clone(),
            "approve_before": { "type": "array", "items": { "type": "integer" } },
            "route": { "type": "array", "items": route },
            "smoke": { "type": "array", "items": smoke },
            "analysis": { "type": "array", "items": analysis }
        }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Medic runbook",
        "type": "object",
        "additionalProperties": false,
        // `steps` is not required here: the meaning checks say "the runbook has no steps" at
        // the [runbook] table, also for `steps = []`.
        "required": ["runbook"],
        "properties": {
            "runbook": {
                "type": "object",
                "description": "Every runbook starts with a [runbook] table that names it: name = \"...\"",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": { "type": "string" },
                    "description": { "type": "string" },
                    "owner": { "type": "string" },
                    "version": { "type": "string" },
                    "on_failure": on_failure,
                    "lock": templated,
                    "on_interrupted": { "enum": ["notify", "rollback"], "description": "What medic serve does with a run whose process died: notify (mark it interrupted, say so; a person acts) or rollback (undo it at once, then verify)" }
                }
            },
            "params": { "type": "object", "additionalProperties": { "$ref": "#/$defs/param" } },
            "environments": { "type": "object", "additionalProperties": { "$ref": "#/$defs/environment" } },
            "plugins": { "type": "object", "additionalProperties": { "$ref": "#/$defs/plugin" } },
            "steps": { "type": "array", "items": { "$ref": "#/$defs/step" }, "description": "Run in order" },
            "rollback": { "type": "array", "items": { "$ref": "#/$defs/step" }, "description": "Run after the steps' own rollbacks" },
            "verify": { "type": "array", "items": { "$ref": "#/$defs/step" }, "description": "Checks that prove health after a rollback" },
            "finally": { "type": "array", "items": { "$ref": "#/$defs/step" }, "description": "Always run, at the end" },
            "rollout": rollout
        },
        "$defs": {
            "duration": duration,
            "param": {
                "type": "object",
                "additionalProperties": false,
                "required": ["type"],
                "properties": {
                    "type": { "enum": ["string", "int", "float", "bool", "duration", "list", "enum"] },
                    "default": {},
                    "required": { "type": "boolean" },
                    "description": { "type": "string" },
                    "secret": { "type": "boolean" },
                    "from_env": { "type": "string" },
                    "from_file": { "type": "string" },
                    "pattern": { "type": "string" },
                    "values": { "type": "array", "items": { "type": "string" } }
                }
            },
            "environment": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "description": { "type": "string" },
                    "protected": { "type": "boolean" },
                    "vars": { "type": "object" },
                    "approvers": { "type": "array", "items": { "type": "string", "minLength": 1 }, "description": "Who may decide approvals here: user or token names" },
                    "min_approvals": { "type": "integer", "minimum": 1, "maximum": 10, "description": "Distinct approvals a step needs here; whoever started the run cannot give one" }
                }
            },
            "plugin": {
                "type": "object",
                "additionalProperties": false,
                "required": ["source"],
                "properties": {
                    "source": { "type": "string", "description": "builtin:NAME, a path to a .wasm component, or an https:// URL (which needs a sha256 pin)" },
                    "sha256": { "type": "string", "description": "Pin: a mismatch refuses to run" },
                    "memory": { "type": "string", "description": "e.g. 64MiB" },
                    "timeout": { "$ref": "#/$defs/duration" },
                    "grants": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "http": { "type": "array", "items": templated },
                            "tcp": { "type": "array", "items": templated, "description": "ip:port addresses for raw TCP exchanges" },
                            "command": {
                                "type": "array",
                                "description": "Programs the plugin may run (absolute paths), one full-match regex per argument",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "required": ["program"],
                                    "properties": { "program": { "type": "string" }, "args": { "type": "array", "items": { "type": "string" } } }
                                }
                            },
                            "kv": { "type": "boolean" }
                        }
                    }
                }
            },
            "step": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "uses"],
                "properties": {
                    "id": { "type": "string" },
                    "uses": { "type": "string", "minLength": 1, "description": "A plugin declared under [plugins]" },
                    "description": { "type": "string" },
                    "with": with,
                    "timeout": { "$ref": "#/$defs/duration" },
                    "on_failure": on_failure,
                    "when": { "type": "string", "description": "An expression; the step is skipped when false" },
                    "retry": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["attempts"],
                        "properties": {
                            "attempts": { "type": "integer", "minimum": 1, "maximum": 100, "description": "Total attempts, including the first" },
                            "backoff": { "$ref": "#/$defs/duration" },
                            "max_backoff": { "$ref": "#/$defs/duration" },
                            "jitter": { "type": "boolean" },
                            "on": { "enum": ["transient", "any"], "description": "transient (default): errors the plugin marks transient, and timeouts; any: every failure" }
                        }
                    },
                    "gate": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["interval", "timeout"],
                        "properties": {
                            "delay": { "$ref": "#/$defs/duration" },
                            "interval": { "$ref": "#/$defs/duration" },
                            "successes": { "type": "integer", "minimum": 1 },
                            "failures": { "type": "integer", "minimum": 1 },
                            "inconclusive": { "enum": ["ignore", "pause"], "description": "ignore (default): an inconclusive check counts neither way; pause: ask a person whether the gate passes" },
                            "hold": { "$ref": "#/$defs/duration" },
                            "timeout": { "$ref": "#/$defs/duration" }
                        }
                    },
                    "rollback": {
                        "description": "\"revert\" (the plugin's own undo), or another call: rollback = { uses = \"PLUGIN\", with = { ... } }",
                        "oneOf": [
                            { "const": "revert" },
                            {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["uses"],
                                "properties": { "uses": { "type": "string", "minLength": 1, "description": "A plugin declared under [plugins]" }, "with": { "type": "object" }, "timeout": { "$ref": "#/$defs/duration" } }
                            }
                        ]
                    },
                    "approval": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["timeout"],
                        "properties": { "timeout": { "$ref": "#/$defs/duration" }, "prompt": { "type": "string" } }
                    },
                    "fleet": fleet
                }
            }
        }
    })
}
