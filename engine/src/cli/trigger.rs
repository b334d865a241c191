//! `medic trigger validate|list|test|rearm|log`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::store::RunStatus;
use crate::trigger::alert::Webhook;
use crate::trigger::policy::{Decision, RunView, State};
use crate::trigger::{Trigger, load_dir_or_report};

#[derive(Debug, Args)]
pub struct TriggersDir {
    /// The directory of trigger files (*.toml with [[trigger]] tables)
    #[arg(
        long = "triggers",
        env = "MEDIC_TRIGGERS",
        default_value = "triggers",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Check every trigger file; nothing runs
    Validate {
        #[command(flatten)]
        triggers: TriggersDir,
    },
    /// The triggers: what each matches and starts
    List {
        #[command(flatten)]
        triggers: TriggersDir,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Which triggers an Alertmanager webhook body would set off, with what, and what their
    /// policies would decide now; nothing runs
    Test {
        #[command(flatten)]
        triggers: TriggersDir,
        /// A webhook body as Alertmanager posts it (version 4)
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Re-arm a trigger whose storm brake tripped: it remediates again
    Rearm {
        /// The trigger's name
        name: String,
    },
    /// Alerts as they arrived, and what each trigger decided
    Log {
        /// How far back (e.g. 1h, 7d)
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        since: Duration,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
}

async fn load(global: &GlobalArgs, dir: &Path) -> Result<Vec<Trigger>, Exit> {
    let host = global.host().map_err(engine_error)?;
    load_dir_or_report(&host, dir).await.map_err(|report| {
        eprintln!("{report}; no trigger is valid until all are fixed");
        Exit::Invalid
    })
}

pub async fn main(global: &GlobalArgs, cmd: TriggerCommand) -> Exit {
    match cmd {
        TriggerCommand::Validate { triggers } => match load(global, &triggers.dir).await {
            Ok(list) => {
                println!(
                    "{}: {} trigger{} valid",
                    triggers.dir.display(),
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                );
                Exit::Success
            }
            Err(exit) => exit,
        },
        TriggerCommand::List { triggers, output } => {
            let list = match load(global, &triggers.dir).await {
                Ok(l) => l,
                Err(exit) => return exit,
            };
            for t in &list {
                match output {
                    OutputFormat::Json => println!("{}", describe(t)),
                    OutputFormat::Human => println!(
                        "{}  when {}  runs {}{}",
                        t.name,
                        t.matchers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        t.runbook.display(),
                        t.environment
                            .as_ref()
                            .map(|e| format!(" in {e}"))
                            .unwrap_or_default()
                    ),
                }
            }
            Exit::Success
        }
        TriggerCommand::Test {
            triggers,
            payload,
            output,
        } => test(global, &triggers.dir, &payload, output).await,
        TriggerCommand::Rearm { name } => rearm(global, &name),
        TriggerCommand::Log {
            since,
            limit,
            output,
        } => log(global, since, limit, output),
    }
}

fn describe(t: &Trigger) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "file": t.file,
        "match": t.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "runbook": t.runbook,
        "environment": t.environment,
        "params": t.params,
        "group_by": t.policy.group_by,
        "cooldown_s": t.policy.cooldown.as_secs(),
        "on_resolved": t.policy.on_resolved,
        "protected": t.protected,
        "silence": t.silence,
    })
}

/// The triggers' states and their runs, as the store has them now: from `medic serve`
/// when one runs on this data directory, else from the store itself; none when there is no
/// store.
fn states(global: &GlobalArgs, names: &[String]) -> Vec<(String, State)> {
    if let Some(remote) = global.through_serve()
        && let Ok(v) = remote.call::<serde_json::Value>(
            &serde_json::json!({ "op": "trigger_list" }),
            Duration::from_secs(10),
        )
    {
        return v["triggers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let state = State {
                    groups: serde_json::from_value(t["groups"].clone()).ok()?,
                    starts: serde_json::from_value(t["starts"].clone()).unwrap_or_default(),
                    braked: serde_json::from_value(t["braked"].clone()).ok()?,
                };
                Some((t["name"].as_str()?.to_owned(), state))
            })
            .collect();
    }
    let store = match global.shared_store("medic trigger test") {
        Some(Ok(store)) => store,
        Some(Err(_)) => return Vec::new(),
        None => {
            let Ok(store) = global.local_store(None) else {
                return Vec::new();
            };
            store
        }
    };
    names
        .iter()
        .filter_map(|n| Some((n.clone(), store.trigger_state(n).ok()?)))
        .collect()
}

async fn test(global: &GlobalArgs, dir: &Path, payload: &Path, output: OutputFormat) -> Exit {
    let list = match load(global, dir).await {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let body = match std::fs::read(payload) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("medic: cannot read {}: {e}", payload.display());
            return Exit::Invalid;
        }
    };
    let hook = match Webhook::parse(&body) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("medic: {}: {e}", payload.display());
            return Exit::Invalid;
        }
    };
    let names: Vec<String> = list.iter().map(|t| t.name.clone()).collect();
    let mut states = states(global, &names);
    let reader = global.reader("medic trigger test").ok();
    let view = |id: &str| -> RunView {
        match reader.as_ref().and_then(|r| r.find(id).ok()) {
            Some(r) if r.status == RunStatus::Running => RunView::Running,
            Some(r) => RunView::Ended {
                at_ms: r.ended_ms.unwrap_or(r.started_ms),
            },
            None => RunView::Unknown,
        }
    };
    let now = crate::store::now_ms();
    let mut results = Vec::new();
    for alert in &hook.alerts {
        let matching: Vec<&Trigger> = list.iter().filter(|t| t.matches(alert)).collect();
        if matching.is_empty() {
            results.push(serde_json::json!({
                "alert": alert.name(), "fingerprint": alert.fingerprint, "trigger": null,
                "decision": "unmatched",
            }));
        }
        for t in matching {
            let state = match states.iter_mut().find(|(n, _)| n == &t.name) {
                Some((_, s)) => s,
                None => {
                    states.push((t.name.clone(), State::default()));
                    &mut states.last_mut().expect("pushed").1
                }
            };
            let decision = t.policy.decide(state, alert, now, &view);
            if let Decision::Start { group } = &decision {
                // Later alerts of the same payload see this one's run as under way.
                state.started(group, "(this payload)", now);
            }
            let rendered = t.render(alert);
            results.push(serde_json::json!({
                "alert": alert.name(),
                "fingerprint": alert.fingerprint,
                "trigger": t.name,
                "runbook": t.runbook,
                "environment": rendered.as_ref().ok().map(|o| o.environment.clone()),
                "params": rendered.as_ref().ok().map(|o| o.params.clone()),
                "render_error": rendered.as_ref().err(),
                "decision": decision,
            }));
        }
    }
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": results }))
                .expect("serialize")
        ),
        OutputFormat::Human => {
            for r in &results {
                let alert = format!(
                    "{} ({})",
                    r["alert"].as_str().unwrap_or(""),
                    r["fingerprint"].as_str().unwrap_or("")
                );
                let Some(trigger) = r["trigger"].as_str() else {
                    println!("{alert}: no trigger matches");
                    continue;
                };
                println!("{alert} -> trigger {trigger}");
                println!("  runbook      {}", r["runbook"].as_str().unwrap_or(""));
                if let Some(e) = r["render_error"].as_str() {
                    println!("  cannot render: {e}");
                } else {
                    println!(
                        "  environment  {}",
                        r["environment"]
                            .as_str()
                            .unwrap_or("(the runbook's default)")
                    );
                    for p in r["params"].as_array().into_iter().flatten() {
                        println!(
                            "  param        {} = {}",
                            p[0].as_str().unwrap_or(""),
                            p[1].as_str().unwrap_or("")
                        );
                    }
                }
                println!("  decision     {}", explain(&r["decision"]));
            }
        }
    }
    Exit::Success
}

/// A decision in words.
fn explain(d: &serde_json::Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    match d["decision"].as_str().unwrap_or("") {
        "start" => format!("start a run for group {}", s("group")),
        "attached" => format!(
            "attach to run {} (group {} is being fixed)",
            s("run_id"),
            s("group")
        ),
        "cooled_down" => format!(
            "nothing: group {}'s last run {} ended less than the cooldown ago",
            s("group"),
            s("run_id")
        ),
        "braked" => format!("nothing: {}", s("reason")),
        "resolved" => format!("resolved: {}", s("action")),
        other => other.to_owned(),
    }
}

fn rearm(global: &GlobalArgs, name: &str) -> Exit {
    let answer = match global.api_client() {
        Err(exit) => return exit,
        Ok(Some(client)) => client.request(
            reqwest::Method::POST,
            &format!("/triggers/{name}/rearm"),
            None,
        ),
        Ok(None) => match global.through_serve() {
            Some(remote) => remote
                .call::<serde_json::Value>(
                    &serde_json::json!({ "op": "trigger_rearm", "name": name }),
                    Duration::from_secs(30),
                )
                .map_err(|e| e.to_string()),
            None => {
                eprintln!(
                    "medic: no medic serve runs on this data directory: triggers act only in medic serve, so there is nothing to re-arm here"
                );
                return Exit::Invalid;
            }
        },
    };
    match answer {
        Ok(v) => {
            println!(
                "trigger {name} re-armed{}",
                if v["was_braked"].is_null() {
                    " (its brake was not on)"
                } else {
                    ""
                }
            );
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}

fn log(global: &GlobalArgs, since: Duration, limit: usize, output: OutputFormat) -> Exit {
    let since_ms = crate::store::now_ms().saturating_sub(since.as_millis() as u64);
    let alerts = match global.reader("medic trigger log") {
        Ok(r) => r.alerts(since_ms, limit).map_err(|e| e.to_string()),
        Err(exit) => return exit,
    };
    match alerts {
        Ok(list) => {
            for a in list {
                match output {
                    OutputFormat::Json => {
                        println!("{}", serde_json::to_string(&a).expect("serialize"))
                    }
                    OutputFormat::Human => println!(
                        "{}  {:16} {} {:8} {:11} {}",
                        chrono::DateTime::from_timestamp_millis(a.at_ms as i64)
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                        a.trigger,
                        super::terminal::clean(&a.alert),
                        a.status,
                        a.decision,
                        super::terminal::clean(&a.detail)
                    ),
                }
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Engine
        }
    }
}
