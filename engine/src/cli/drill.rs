//! `medic drill validate|list|run|report`.

mod run;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::drill::report::{Percentiles, reports};
use crate::drill::scheduler::from_ms;
use crate::drill::{Drill, load_dir_or_report};
use crate::store::drills::{DrillRecord, DrillResult};
use crate::store::now_ms;

#[derive(Debug, Args)]
pub struct DrillsDir {
    /// The directory of drill files (*.toml with [[drill]] tables)
    #[arg(
        long = "drills",
        env = "MEDIC_DRILLS",
        default_value = "drills",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Check every drill file; nothing runs
    Validate {
        #[command(flatten)]
        drills: DrillsDir,
        /// Output format: `json` prints one object {"dir", "valid", "drills": [{"name",
        /// "runbook", "schedule", "timezone", "environment", "file"}], "warnings",
        /// "diagnostics": [{"file", "severity", "message", "help", "at": {"line", "col"}}]}
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// The drills, their next scheduled time and last result
    List {
        #[command(flatten)]
        drills: DrillsDir,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Run a drill now (the scheduler's code path), and record its result
    Run {
        /// The drill's name
        name: String,
        #[command(flatten)]
        drills: DrillsDir,
        /// Output format: `json` prints the run's events as `medic run --output json` does,
        /// then the drill's record as one object {"drill": {"drill", "trigger", "result",
        /// "reasons", "run_id", "outcome", "detect_ms", "rollback_ms", "recover_ms", ...}}
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Stop a drill's scheduled runs (each is recorded as skipped, with the reason) until
    /// it is resumed; `medic drill run` still runs it
    Pause {
        /// The drill's name
        name: String,
        /// Why (shown in every skipped run's record)
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        drills: DrillsDir,
    },
    /// Put a paused drill back on its schedule
    Resume {
        /// The drill's name
        name: String,
        #[command(flatten)]
        drills: DrillsDir,
    },
    /// Pass rate, time to detect, roll back and be healthy (p50/p90), trend, last failures
    Report {
        /// One drill (default: all)
        name: Option<String>,
        /// Report the drills declared here (those never run in the window included, so
        /// that they stand out), instead of every drill the store has results of
        #[arg(long, value_name = "DIR")]
        drills: Option<PathBuf>,
        /// How far back (e.g. 90d, 12h)
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
}

async fn load(global: &GlobalArgs, dir: &std::path::Path) -> Result<Vec<Drill>, Exit> {
    let host = global.host().map_err(engine_error)?;
    load_dir_or_report(&host, dir).await.map_err(|report| {
        eprintln!("{report}; no drill is valid until all are fixed");
        Exit::Invalid
    })
}

/// `medic drill validate --output json`: the drills, or every mistake, as one object.
async fn validate_json(global: &GlobalArgs, dir: &std::path::Path) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let (valid, drills, warnings, diagnostics) = match crate::drill::load_dir(&host, dir).await {
        Ok(list) => {
            let warnings: Vec<String> = crate::drill::overlaps(&list, chrono::Utc::now());
            let drills: Vec<serde_json::Value> = list
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "name": d.name,
                        "runbook": d.runbook,
                        "schedule": d.schedule.expression,
                        "timezone": d.schedule.timezone.to_string(),
                        "environment": d.environment,
                        "file": d.file,
                    })
                })
                .collect();
            (true, drills, warnings, Vec::new())
        }
        Err(errors) => {
            let diagnostics: Vec<serde_json::Value> = errors
                .iter()
                .flat_map(|e| {
                    e.diagnostics.iter().map(move |d| {
                        let mut j = crate::runbook::diag::to_json(&e.text, d);
                        j["file"] = serde_json::json!(e.path);
                        j
                    })
                })
                .collect();
            (false, Vec::new(), Vec::new(), diagnostics)
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "dir": dir, "valid": valid, "drills": drills,
            "warnings": warnings, "diagnostics": diagnostics,
        })
    );
    if valid { Exit::Success } else { Exit::Invalid }
}

fn time(ms: u64) -> String {
    from_ms(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn short(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A window as people write it: `90d`, `12h`.
fn window(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ => humantime::format_duration(Duration::from_secs(s)).to_string(),
    }
}

fn describe(d: &DrillRecord) -> String {
    let mut parts = vec![d.result.name().to_owned()];
    if let Some(o) = &d.outcome {
        parts.push(format!("run ended {o}"));
    }
    if let Some(t) = d.detect_ms {
        parts.push(format!("detected in {}", short(Duration::from_millis(t))));
    }
    if let Some(t) = d.recover_ms {
        parts.push(format!("healthy after {}", short(Duration::from_millis(t))));
    }
    let mut line = parts.join(", ");
    if !d.reasons.is_empty() {
        line.push_str(&format!(": {}", d.reasons.join("; ")));
    }
    line
}

pub async fn main(global: &GlobalArgs, cmd: DrillCommand) -> Exit {
    match cmd {
        DrillCommand::Pause {
            name,
            reason,
            drills,
        } => pause(global, &name, Some(reason), &drills.dir).await,
        DrillCommand::Resume { name, drills } => pause(global, &name, None, &drills.dir).await,
        DrillCommand::Validate {
            drills,
            output: OutputFormat::Json,
        } => validate_json(global, &drills.dir).await,
        DrillCommand::Validate { drills, .. } => match load(global, &drills.dir).await {
            Ok(list) => {
                for d in &list {
                    println!(
                        "{}: {} every `{}` ({}){}",
                        d.name,
                        d.runbook.display(),
                        d.schedule.expression,
                        d.schedule.timezone,
                        d.environment
                            .as_ref()
                            .map(|e| format!(" in {e}"))
                            .unwrap_or_default()
                    );
                }
                for w in crate::drill::overlaps(&list, chrono::Utc::now()) {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: {} drill{} valid",
                    drills.dir.display(),
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                );
                Exit::Success
            }
            Err(exit) => exit,
        },
        DrillCommand::List { drills, output } => {
            let list = match load(global, &drills.dir).await {
                Ok(l) => l,
                Err(exit) => return exit,
            };
            let reader = match global.reader("medic drill list (reading)") {
                Ok(r) => r,
                Err(exit) => return exit,
            };
            let now = chrono::Utc::now();
            let mut rows = Vec::new();
            for d in &list {
                let last = match reader.drill_records(Some(&d.name), 0) {
                    Ok(mut v) => v.pop(),
                    Err(e) => {
                        eprintln!("medic: {e}");
                        return Exit::Engine;
                    }
                };
                rows.push((d, d.schedule.next_after(now), last));
            }
            match output {
                OutputFormat::Json => {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(d, next, last)| {
                            serde_json::json!({
                                "name": d.name, "runbook": d.runbook, "schedule": d.schedule.expression,
                                "timezone": d.schedule.timezone.to_string(), "environment": d.environment,
                                "next": next.map(|t| t.to_rfc3339()), "last": last,
                                "enabled": d.enabled,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                OutputFormat::Human => {
                    // The next run in UTC, and in the drill's own timezone when it has one
                    // (the schedule is written in it: `0 3 * * *` means 03:00 there).
                    let next_of = |d: &Drill, next: &Option<chrono::DateTime<chrono::Utc>>| {
                        if !d.enabled {
                            return "disabled (enabled = false)".to_owned();
                        }
                        next.map_or("never".to_owned(), |t| {
                            let utc = t.format("%Y-%m-%d %H:%M UTC").to_string();
                            let tz = d.schedule.timezone;
                            if tz == chrono_tz::UTC {
                                utc
                            } else {
                                format!("{utc} ({} {tz})", t.with_timezone(&tz).format("%H:%M"))
                            }
                        })
                    };
                    let nexts: Vec<String> = rows.iter().map(|(d, n, _)| next_of(d, n)).collect();
                    let w = nexts.iter().map(String::len).max().unwrap_or(4).max(4);
                    println!("{:24} {:18} {:w$} last", "drill", "schedule", "next");
                    for ((d, _, last), next) in rows.iter().zip(&nexts) {
                        println!(
                            "{:24} {:18} {:w$} {}",
                            d.name,
                            d.schedule.expression,
                            next,
                            last.as_ref().map_or("never run".into(), |l| format!(
                                "{} at {}",
                                describe(l),
                                time(l.started_ms)
                            ))
                        );
                    }
                }
            }
            Exit::Success
        }
        DrillCommand::Run {
            name,
            drills,
            output,
        } => {
            match global.api_client() {
                Ok(Some(client)) => return run_remotely(&client, &name),
                Ok(None) => {}
                Err(exit) => return exit,
            }
            if let Some(remote) = global.through_serve() {
                return run::in_serve(remote, &name, output).await;
            }
            run::here(global, &name, &drills.dir, output).await
        }
        DrillCommand::Report {
            name,
            drills,
            since,
            output,
        } => {
            let declared = match &drills {
                Some(dir) => match load(global, dir).await {
                    Ok(list) => Some(list.into_iter().map(|d| d.name).collect::<Vec<_>>()),
                    Err(exit) => return exit,
                },
                None => None,
            };
            let reader = match global.reader("medic drill report (reading)") {
                Ok(r) => r,
                Err(exit) => return exit,
            };
            let since_ms = now_ms().saturating_sub(since.as_millis() as u64);
            let records = match reader.drill_records(name.as_deref(), since_ms) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("medic: {e}");
                    return Exit::Engine;
                }
            };
            let mut all = reports(&records);
            if let Some(declared) = &declared {
                all.retain(|r| declared.contains(&r.drill));
                for d in declared {
                    if name.as_ref().is_none_or(|n| n == d) && !all.iter().any(|r| &r.drill == d) {
                        all.push(crate::drill::report::DrillReport::never_ran(d));
                    }
                }
                all.sort_by(|a, b| a.drill.cmp(&b.drill));
            }
            if output == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                return Exit::Success;
            }
            if all.is_empty() {
                println!(
                    "no drill ran in the last {}{}",
                    window(since),
                    name.map(|n| format!(" named `{n}`")).unwrap_or_default()
                );
                return Exit::Success;
            }
            let pct = |p: &Option<Percentiles>| {
                p.as_ref().map_or("-".to_owned(), |p| {
                    format!(
                        "p50 {} · p90 {} ({} runs)",
                        short(Duration::from_millis(p.p50_ms)),
                        short(Duration::from_millis(p.p90_ms)),
                        p.samples
                    )
                })
            };
            for r in &all {
                if r.total == 0 {
                    println!(
                        "drill {}: NEVER RAN in the last {}: its rollback path is untested",
                        r.drill,
                        window(since)
                    );
                    continue;
                }
                println!("drill {} (last {})", r.drill, window(since));
                println!(
                    "  pass rate          {} ({} passed, {} failed; {} skipped, {} refused)",
                    r.pass_rate
                        .map_or("-".into(), |p| format!("{:.0}%", p * 100.0)),
                    r.passed,
                    r.failed,
                    r.skipped,
                    r.refused
                );
                println!("  time to detect     {}", pct(&r.time_to_detect));
                println!("  time to roll back  {}", pct(&r.time_to_roll_back));
                println!("  time to healthy    {}", pct(&r.time_to_healthy));
                if !r.recent_time_to_healthy_ms.is_empty() {
                    let times: Vec<String> = r
                        .recent_time_to_healthy_ms
                        .iter()
                        .map(|ms| short(Duration::from_millis(*ms)))
                        .collect();
                    println!(
                        "  recovery, last {}  {} ({})",
                        times.len(),
                        times.join(" "),
                        match r.recovery_trend {
                            crate::drill::report::Trend::Improving => "getting faster",
                            crate::drill::report::Trend::Steady => "steady",
                            crate::drill::report::Trend::Worsening => "getting SLOWER",
                            crate::drill::report::Trend::Unknown => "too few to tell",
                        }
                    );
                }
                println!(
                    "  trend              {}",
                    match r.trend {
                        crate::drill::report::Trend::Improving => "improving",
                        crate::drill::report::Trend::Steady => "steady",
                        crate::drill::report::Trend::Worsening => "worsening",
                        crate::drill::report::Trend::Unknown => "not enough drills yet",
                    }
                );
                for f in &r.last_failures {
                    println!(
                        "  failed at {}: {}{}",
                        time(f.started_ms),
                        f.reasons.join("; "),
                        f.run_id
                            .as_ref()
                            .map(|id| format!(" (medic runs show {id})"))
                            .unwrap_or_default()
                    );
                }
            }
            Exit::Success
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    drills: DrillsDir,
    /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9464)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the HTTP API (/api/v1) here: HTTPS with --tls-cert/--tls-key, or plain HTTP
    /// on a loopback address (e.g. 127.0.0.1:8443)
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The API's certificate chain, PEM
    #[arg(long, value_name = "FILE", requires = "tls_key", requires = "listen")]
    tls_cert: Option<std::path::PathBuf>,
    /// The API's private key, PEM
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The runbooks the API offers and starts (`*.toml` here, named by file stem)
    #[arg(long, value_name = "DIR", requires = "listen")]
    runbooks: Option<std::path::PathBuf>,
    /// Alert triggers (`*.toml` here): Alertmanager posts to /api/v1/alerts/alertmanager
    #[arg(long, value_name = "DIR", requires = "listen")]
    triggers: Option<std::path::PathBuf>,
}

pub async fn serve(global: &GlobalArgs, args: ServeArgs) -> Exit {
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    // Not recovered here: serve finds the runs of dead processes itself, and applies what
    // their runbooks declare (`on_interrupted`).
    let store = match global.connect_shared("medic serve") {
        Some(Ok(s)) => s,
        Some(Err(exit)) => return exit,
        None => match global.local_store(None) {
            Ok(s) => s,
            Err(exit) => return exit,
        },
    };
    let config = crate::serve::Config {
        drills_dir: args.drills.dir,
        triggers_dir: args.triggers,
        metrics: args.metrics,
        api: args.listen.map(|listen| crate::api::ApiConfig {
            listen,
            tls: args.tls_cert.zip(args.tls_key),
            runbooks: args.runbooks,
        }),
    };
    match crate::serve::serve(host, store, config).await {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("medic serve: {e}");
            Exit::Invalid
        }
    }
}

/// `medic drill run` through a remote API: the record when the drill is quick, else word
/// that it runs there.
fn run_remotely(client: &super::client::ApiClient, name: &str) -> Exit {
    match client.request(reqwest::Method::POST, &format!("/drills/{name}/run"), None) {
        Ok(v) if v["drill"].is_null() => {
            println!(
                "drill {name} is running on {}; `medic drill report {name}` tells how it ends",
                client.server()
            );
            Exit::Success
        }
        Ok(v) => match serde_json::from_value::<DrillRecord>(v["drill"].clone()) {
            Ok(record) => {
                println!(
                    "drill {name} (run by {}): {}",
                    client.server(),
                    describe(&record)
                );
                exit_for(record.result)
            }
            Err(e) => {
                eprintln!("medic: {e}");
                Exit::Engine
            }
        },
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}

/// `medic drill pause|resume`: through a remote API, or the local `medic serve`, or (no
/// server running) in the store itself, which the scheduler reads when the drill is due.
async fn pause(
    global: &GlobalArgs,
    name: &str,
    reason: Option<String>,
    dir: &std::path::Path,
) -> Exit {
    if reason.as_ref().is_some_and(|r| r.trim().is_empty()) {
        eprintln!("medic: pausing a drill needs a reason (--reason)");
        return Exit::Invalid;
    }
    let verb = if reason.is_some() {
        "paused"
    } else {
        "resumed"
    };
    let answer: Result<serde_json::Value, String> = match global.api_client() {
        Err(exit) => return exit,
        Ok(Some(client)) => match &reason {
            Some(r) => client.request(
                reqwest::Method::POST,
                &format!("/drills/{name}/pause"),
                Some(serde_json::json!({ "reason": r })),
            ),
            None => client.request(
                reqwest::Method::POST,
                &format!("/drills/{name}/resume"),
                None,
            ),
        },
        Ok(None) => match global.through_serve() {
            Some(remote) => remote
                .call(
                    &serde_json::json!({
                        "op": if reason.is_some() { "drill_pause" } else { "drill_resume" },
                        "name": name, "reason": reason,
                    }),
                    Duration::from_secs(30),
                )
                .map_err(|e| e.to_string()),
            None => {
                // No scheduler to ask: the drill files say which names exist.
                let list = match load(global, dir).await {
                    Ok(l) => l,
                    Err(exit) => return exit,
                };
                if !list.iter().any(|d| d.name == name) {
                    let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
                    eprintln!(
                        "medic: no drill `{name}` in {}{}",
                        dir.display(),
                        crate::runbook::diag::did_you_mean(name, names.iter().copied())
                            .map(|h| format!("; {h}"))
                            .unwrap_or_default()
                    );
                    return Exit::Invalid;
                }
                let store = match global.store(&format!("medic drill pause {name}"), None) {
                    Ok(s) => s,
                    Err(exit) => return exit,
                };
                let paused = reason.map(|r| crate::store::drills::Paused {
                    by: super::run::who(),
                    reason: r.trim().to_owned(),
                    at_ms: crate::store::now_ms(),
                });
                store
                    .set_drill_paused(name, paused.as_ref())
                    .map(|()| serde_json::json!({ "name": name, "paused": paused }))
                    .map_err(|e| e.to_string())
            }
        },
    };
    match answer {
        Ok(_) => {
            println!("drill {name} {verb}");
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}

/// A drill's result as the exit code of the command that ran it.
fn exit_for(result: DrillResult) -> Exit {
    match result {
        DrillResult::Passed => Exit::Success,
        DrillResult::Failed => Exit::RunFailed,
        DrillResult::Skipped | DrillResult::Refused => Exit::Invalid,
    }
}
