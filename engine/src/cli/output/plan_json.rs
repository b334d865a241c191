//! `medic plan --output json`: the plan as one JSON object, for machines (CI checks,
//! change records). The same content as the human plan, secrets as masked there; the schema
//! is in `medic plan --help`.

use serde_json::{Value as Json, json};

use super::*;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn grants(p: &crate::runbook::PlanPlugin) -> Json {
    let g = &p.grants;
    json!({
        "http": g.http.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tcp": g.tcp.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "command": g.command.iter().map(|c| json!({
            "program": c.program,
            // As written in the runbook, without the anchoring the grant adds.
            "args": c.args.iter().map(|r| {
                let full = r.as_str();
                full.strip_prefix("^(?:").and_then(|p| p.strip_suffix(")$")).unwrap_or(full)
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "kv": g.kv,
    })
}

pub fn plan_json(plan: &Plan, text: &str) -> Json {
    let ctx = plan::context(plan);
    let mask = plan::masker(plan);
    let args = |with: &[(String, Arg)], secret: &[String]| -> Json {
        with.iter()
            .map(|(k, a)| {
                let shown = if secret.contains(k) {
                    Json::Null
                } else {
                    Json::String(mask(plan::show_arg(a, &ctx)))
                };
                (k.clone(), shown)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let step = |s: &PlanStep| -> Json {
        let rollback = match &s.rollback {
            None => Json::Null,
            Some(StepRollback::Revert) => json!("revert"),
            Some(StepRollback::Call {
                plugin,
                with,
                secret_params,
                ..
            }) => {
                json!({ "plugin": plan.plugins[*plugin].alias, "with": args(with, secret_params) })
            }
        };
        json!({
            "id": s.id,
            "description": s.description,
            "plugin": plan.plugins[s.plugin].alias,
            "timeout_ms": ms(s.timeout),
            "when": s.when,
            "with": args(&s.with, &s.secret_params),
            "secret_params": s.secret_params,
            "on_failure": s.on_failure,
            "retry": s.retry.map(|r| json!({
                "attempts": r.attempts,
                "on": match r.on {
                    crate::runbook::RetryOn::Transient => "transient",
                    crate::runbook::RetryOn::Any => "any",
                },
                "backoff_ms": ms(r.backoff),
                "max_backoff_ms": ms(r.max_backoff),
                "jitter": r.jitter,
            })),
            "gate": s.gate.map(|g| json!({
                "delay_ms": ms(g.delay),
                "interval_ms": ms(g.interval),
                "successes": g.successes,
                "failures": g.failures,
                "timeout_ms": ms(g.timeout),
                "hold_ms": ms(g.hold),
                "inconclusive": if g.pause_on_inconclusive { "pause" } else { "fail" },
            })),
            "approval": s.approval.as_ref().map(|a| json!({
                "timeout_ms": ms(a.timeout),
                "prompt": mask(plan::show_arg(&Arg::Template { source: a.prompt.clone(), ty: crate::host::ValueType::Text }, &ctx)),
            })),
            "fleet": s.fleet.as_ref().map(|f| json!({
                "max_concurrency": f.max_concurrency.to_string(),
                "max_errors": f.max_errors.to_string(),
                "order": match f.order {
                    crate::runbook::FleetOrder::Listed => "listed",
                    crate::runbook::FleetOrder::Reverse => "reverse",
                    crate::runbook::FleetOrder::Random => "random",
                },
            })),
            "rollback": rollback,
        })
    };
    let mut params: Vec<Json> = plan
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "value": if p.secret { Json::Null } else { Json::String(p.value.to_string()) },
                "secret": p.secret,
                "from": Json::Null,
            })
        })
        .collect();
    params.extend(plan.deferred.iter().map(
        |(name, from)| json!({ "name": name, "value": Json::Null, "secret": true, "from": from }),
    ));
    params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let env = &plan.environment;
    json!({
        "runbook": plan.name,
        "description": plan.description,
        "file": plan.path,
        "sha256": plan.sha256,
        "environment": {
            "name": env.name,
            "protected": env.protected,
            "vars": env.vars.iter().map(|(k, v)| (k.clone(), Json::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
        },
        "lock": plan.lock,
        "on_interrupted": plan.on_interrupted,
        "params": params,
        "plugins": plan.plugins.iter().map(|p| json!({
            "alias": p.alias,
            "source": p.plugin.source.to_string(),
            "name": p.plugin.manifest.name,
            "version": p.plugin.manifest.version,
            "kind": format!("{:?}", p.plugin.manifest.kind).to_lowercase(),
            "sha256": p.plugin.sha256,
            "memory_bytes": p.memory,
            "grants": grants(p),
        })).collect::<Vec<_>>(),
        "steps": plan.steps.iter().map(step).collect::<Vec<_>>(),
        "rollout": plan.rollout.as_ref().map(|r| json!({
            "strategy": r.strategy,
            "stages": r.stages.iter().map(|st| json!({
                "weight": st.weight,
                "bake_ms": ms(st.bake),
                "steps": st.steps,
            })).collect::<Vec<_>>(),
        })),
        // Newest first: what a rollback undoes, for the steps that ran.
        "undo": plan.steps.iter().rev().filter(|s| s.rollback.is_some()).map(|s| s.id.as_str()).collect::<Vec<_>>(),
        "rollback": plan.rollback.iter().map(step).collect::<Vec<_>>(),
        "verify": plan.verify.iter().map(step).collect::<Vec<_>>(),
        "finally": plan.finally.iter().map(step).collect::<Vec<_>>(),
        "warnings": plan.warnings.iter().map(|d| crate::runbook::diag::to_json(text, d)).collect::<Vec<_>>(),
    })
}
