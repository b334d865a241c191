//! `medic plan`: what a run would do, rendered before it runs.

use super::*;

/// Renders what can be rendered before the run (params, vars, env); templates that use step
/// outputs are shown as written, since they are rendered when their step runs.
pub(super) fn show_arg(arg: &Arg, ctx: &minijinja::Value) -> String {
    let env = template::environment();
    let one = |s: &str| {
        // Known only when the step runs (or, for `target`, per call).
        if s.contains("steps.") || s.contains("target") {
            s.to_owned()
        } else {
            template::render(&env, s, ctx).unwrap_or_else(|_| s.to_owned())
        }
    };
    match arg {
        Arg::Value(v) => v.to_string(),
        Arg::Template { source, .. } => one(source),
        Arg::ListTemplate(items) => format!(
            "[{}]",
            items.iter().map(|s| one(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

pub(super) fn context(plan: &Plan) -> minijinja::Value {
    let env = &plan.environment;
    minijinja::context! {
        params => template::map_to_jinja(plan.params.iter().map(|p| (&p.name, &p.value))),
        vars => template::map_to_jinja(env.vars.iter().map(|(k, v)| (k, v))),
        env => minijinja::context! { name => env.name.clone(), protected => env.protected },
    }
}

/// Hides every secret parameter's value wherever it shows up in a rendered text.
pub(super) fn masker(plan: &Plan) -> impl Fn(String) -> String + '_ {
    let secret_values: Vec<&str> = plan
        .params
        .iter()
        .filter(|p| p.secret)
        .filter_map(|p| match &p.value {
            Value::Text(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
        .collect();
    move |s: String| {
        secret_values
            .iter()
            .fold(s, |acc, v| acc.replace(v, "••••••"))
    }
}

/// `medic plan`: everything a run would do, in order, touching nothing.
pub fn render_plan(plan: &Plan, color: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let style = Style { color };
    let ctx = context(plan);
    let mask = masker(plan);
    let _ = writeln!(out, "{} {}", style.bold("runbook"), style.bold(&plan.name));
    if !plan.description.is_empty() {
        let _ = writeln!(out, "  {}", plan.description);
    }
    let _ = writeln!(
        out,
        "  file         {} (sha256 {})",
        plan.path.display(),
        &plan.sha256[..16]
    );
    let env = &plan.environment;
    let _ = writeln!(
        out,
        "  environment  {}{}",
        env.name,
        if env.protected {
            style.yellow(" (protected: needs --approve)")
        } else {
            String::new()
        }
    );
    for (k, v) in &env.vars {
        let _ = writeln!(out, "    vars.{k} = {v}");
    }
    if !plan.params.is_empty() || !plan.deferred.is_empty() {
        let _ = writeln!(out, "{}", style.bold("parameters"));
        let mut lines: Vec<(&str, String)> = plan
            .params
            .iter()
            .map(|p| {
                let shown = if p.secret {
                    "•••••• (secret)".to_owned()
                } else {
                    p.value.to_string()
                };
                (p.name.as_str(), shown)
            })
            .collect();
        // Not needed to show the plan: only a run reads them.
        lines.extend(
            plan.deferred
                .iter()
                .map(|(name, from)| (name.as_str(), format!("<secret from {from}>"))),
        );
        lines.sort_by(|a, b| a.0.cmp(b.0));
        for (name, shown) in lines {
            let _ = writeln!(out, "  {name} = {shown}");
        }
    }
    let _ = writeln!(out, "{}", style.bold("plugins"));
    for p in &plan.plugins {
        let m = &p.plugin.manifest;
        let hosts: Vec<String> = p.grants.http.iter().map(|h| h.to_string()).collect();
        let mut grants = Vec::new();
        if !hosts.is_empty() {
            grants.push(format!("http {}", hosts.join(", ")));
        }
        if !p.grants.tcp.is_empty() {
            let addrs: Vec<String> = p.grants.tcp.iter().map(|h| h.to_string()).collect();
            grants.push(format!("tcp {}", addrs.join(", ")));
        }
        for c in &p.grants.command {
            // Shown as written in the runbook, without the anchoring the grant adds.
            let args: Vec<&str> = c
                .args
                .iter()
                .map(|r| {
                    let full = r.as_str();
                    full.strip_prefix("^(?:")
                        .and_then(|p| p.strip_suffix(")$"))
                        .unwrap_or(full)
                })
                .collect();
            grants.push(if args.is_empty() {
                format!("command {} (no arguments)", c.program)
            } else {
                format!("command {} {}", c.program, args.join(" "))
            });
        }
        if p.grants.kv {
            grants.push("kv".into());
        }
        let _ = writeln!(
            out,
            "  {:12} {} {} ({:?}), sha256 {}…",
            p.alias,
            p.plugin.source,
            m.version,
            m.kind,
            &p.plugin.sha256[..12]
        );
        let _ = writeln!(
            out,
            "  {:12} grants: {}; memory {}",
            "",
            if grants.is_empty() {
                "none".into()
            } else {
                grants.join("; ")
            },
            crate::host::limits::format_bytes(p.memory)
        );
    }
    let print_step = |out: &mut String, n: usize, s: &PlanStep, main: bool| {
        let pp = &plan.plugins[s.plugin];
        let _ = writeln!(
            out,
            "  {n:>2}. {}  {}  {}",
            style.bold(&s.id),
            style.dim(&pp.alias),
            style.dim(&format!(
                "timeout {}",
                humantime::format_duration(s.timeout)
            ))
        );
        if let Some(d) = &s.description {
            let _ = writeln!(out, "        {d}");
        }
        if let Some(w) = &s.when {
            let _ = writeln!(out, "        when {w}");
        }
        for (k, a) in &s.with {
            let shown = if s.secret_params.contains(k) {
                "••••••".to_owned()
            } else {
                mask(show_arg(a, &ctx))
            };
            let _ = writeln!(out, "        {k} = {shown}");
        }
        if let Some(r) = s.retry {
            let _ = writeln!(
                out,
                "        retry: {} attempts on {} failures, backoff {} up to {}{}",
                r.attempts,
                match r.on {
                    crate::runbook::RetryOn::Transient => "transient",
                    crate::runbook::RetryOn::Any => "any",
                },
                humantime::format_duration(r.backoff),
                humantime::format_duration(r.max_backoff),
                if r.jitter { " with jitter" } else { "" }
            );
        }
        if let Some(f) = &s.fleet {
            let targets = match &f.targets {
                crate::runbook::FleetTargets::List(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|t| show_arg(
                            &Arg::Template {
                                source: t.clone(),
                                ty: crate::host::ValueType::Text
                            },
                            &ctx
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                // Known before the run unless it comes from a step's outputs.
                crate::runbook::FleetTargets::Expr(e) => Some(e)
                    .filter(|e| !e.contains("steps."))
                    .and_then(|e| template::eval(&template::environment(), e, &ctx).ok())
                    .filter(|v| !v.is_undefined())
                    .map_or_else(|| format!("{{{{ {e} }}}}"), |v| v.to_string()),
            };
            let _ = writeln!(
                out,
                "        fleet: {targets}, {} at a time, stops after more than {} failed, order {}",
                match f.max_concurrency {
                    crate::runbook::Amount::Count(1) => "one".to_owned(),
                    other => other.to_string(),
                },
                f.max_errors,
                match f.order {
                    crate::runbook::FleetOrder::Listed => "as listed",
                    crate::runbook::FleetOrder::Reverse => "reversed",
                    crate::runbook::FleetOrder::Random => "random",
                }
            );
        }
        if let Some(g) = s.gate {
            let _ = writeln!(
                out,
                "        gate: {}every {} until {} pass{} in a row{}; fails after {} or at {}{}",
                if g.delay.is_zero() {
                    String::new()
                } else {
                    format!("after {}, ", humantime::format_duration(g.delay))
                },
                humantime::format_duration(g.interval),
                g.successes,
                if g.successes == 1 { "" } else { "es" },
                if g.hold.is_zero() {
                    String::new()
                } else {
                    format!(" after watching {}", humantime::format_duration(g.hold))
                },
                plural(g.failures as usize, "failure"),
                humantime::format_duration(g.timeout),
                if g.pause_on_inconclusive {
                    "; inconclusive: a person decides"
                } else {
                    ""
                }
            );
        }
        match s.on_failure {
            _ if !main => {}
            OnFailure::Abort => {}
            OnFailure::Continue => {
                let _ = writeln!(out, "        on failure: continue");
            }
            OnFailure::Rollback => {
                let _ = writeln!(out, "        on failure: {}", style.yellow("roll back"));
            }
        }
        match &s.rollback {
            None => {}
            Some(StepRollback::Revert) => {
                let _ = writeln!(
                    out,
                    "        rollback: {}'s revert",
                    pp.plugin.manifest.name
                );
            }
            Some(StepRollback::Call {
                plugin,
                with,
                secret_params,
                ..
            }) => {
                let args: Vec<String> = with
                    .iter()
                    .map(|(k, a)| {
                        format!(
                            "{k} = {}",
                            if secret_params.contains(k) {
                                "••••••".to_owned()
                            } else {
                                mask(show_arg(a, &ctx))
                            }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "        rollback: {} with {}",
                    plan.plugins[*plugin].alias,
                    args.join(", ")
                );
            }
        }
    };
    let _ = writeln!(out, "{}", style.bold("steps"));
    for (i, s) in plan.steps.iter().enumerate() {
        print_step(&mut out, i + 1, s, true);
    }
    if let Some(r) = &plan.rollout {
        // Worst case: every route call and analysis check runs to its time limit.
        let worst = |ids: &[String]| -> std::time::Duration {
            ids.iter()
                .filter_map(|id| plan.steps.iter().find(|s| &s.id == id))
                .map(|s| match s.gate {
                    Some(g) => g.delay + g.timeout + s.timeout,
                    None => s.timeout,
                })
                .sum()
        };
        let total: std::time::Duration = r.stages.iter().map(|st| worst(&st.steps)).sum();
        let bake: std::time::Duration = r.stages.iter().map(|st| st.bake).sum();
        let _ = writeln!(
            out,
            "{}",
            style.bold(&format!(
                "rollout ({}): {}, {} {}, {} at worst",
                r.strategy,
                plural(r.stages.len(), "stage"),
                humantime::format_duration(bake),
                if r.strategy == "blue_green" {
                    "rollback window (watched)"
                } else {
                    "of baking"
                },
                humantime::format_duration(total)
            ))
        );
        let _ = writeln!(
            out,
            "  {:>5}  {:>6}  {:>8}  {:>10}  steps",
            "stage", "weight", "bake", "worst case"
        );
        for (i, st) in r.stages.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>5}  {:>5}%  {:>8}  {:>10}  {}",
                i + 1,
                st.weight,
                humantime::format_duration(st.bake).to_string(),
                humantime::format_duration(worst(&st.steps)).to_string(),
                st.steps.join(", ")
            );
        }
    }
    let undo: Vec<&str> = plan
        .steps
        .iter()
        .rev()
        .filter(|s| s.rollback.is_some())
        .map(|s| s.id.as_str())
        .collect();
    if !undo.is_empty() || !plan.rollback.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            style.bold("rollback path (newest first, for the steps that ran)")
        );
        if !undo.is_empty() {
            let _ = writeln!(out, "  undo: {}", undo.join(" ← "));
        }
        for (i, s) in plan.rollback.iter().enumerate() {
            print_step(&mut out, i + 1, s, false);
        }
    }
    if !plan.verify.is_empty() {
        let _ = writeln!(out, "{}", style.bold("verify (after a rollback)"));
        for (i, s) in plan.verify.iter().enumerate() {
            print_step(&mut out, i + 1, s, false);
        }
    }
    if !plan.finally.is_empty() {
        let _ = writeln!(out, "{}", style.bold("finally (always)"));
        for (i, s) in plan.finally.iter().enumerate() {
            print_step(&mut out, i + 1, s, false);
        }
    }
    out
}
