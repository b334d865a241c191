//! `medic runs list|show|logs|export|prune|resume|rollback|cancel` and `medic stats`.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};

use super::output::format_duration;
use super::run::{RunRequest, execute, exit_for, load_plan};
use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::executor::{Phase, StepStatus};
use crate::pickup::Refused;
use crate::store::recorder::Start;
use crate::store::remote::Reader;
use crate::store::{JournalEvent, ListFilter, RunRecord, RunStatus, now_ms, stats};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recorded runs, newest first
    List(super::runs_list::ListArgs),
    /// A run's timeline: steps, durations, outcomes and the rollback path
    Show {
        /// A run id (or a unique prefix of one)
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// The log lines plugins wrote during a run
    Logs {
        id: String,
        /// Only this step
        #[arg(long)]
        step: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Everything recorded about a run, as JSON
    Export { id: String },
    /// Delete runs older than a duration
    Prune {
        /// e.g. 90d
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: Duration,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Show a run's timeline as it happens, until it ends (Ctrl-C stops following, not the
    /// run); exits as the run does
    Follow {
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Start the runbook of a recorded run again, with the same parameters and environment
    /// (secrets read again from their sources; a protected environment needs --approve)
    Rerun(super::follow::RerunArgs),
    /// Continue an interrupted run from the first step that did not complete
    Resume(PickUpArgs),
    /// Undo what an interrupted, failed or cancelled run did (newest first), then verify
    Rollback(PickUpArgs),
    /// Stop a run going on elsewhere (another terminal, medic serve) at its next safe point,
    /// as Ctrl-C where it runs would
    Cancel(super::cancel::CancelArgs),
}

#[derive(Debug, Args)]
pub struct PickUpArgs {
    pub(super) id: String,
    /// Approve continuing in a protected environment (the original approval is kept on record)
    #[arg(long, value_name = "REASON")]
    pub(super) approve: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
    /// Wait this long for the run store or the runbook's lock when another run holds it
    #[arg(long, value_name = "DURATION", value_parser = crate::runbook::plan::parse_duration)]
    pub(super) wait: Option<std::time::Duration>,
    /// Go on with plugins that changed since the run started (recorded in its journal)
    #[arg(long)]
    pub(super) accept_changed_plugins: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    runbook: Option<String>,
    #[arg(long = "env")]
    environment: Option<String>,
    /// The window, e.g. 30d
    #[arg(long, value_parser = parse_age, default_value = "30d")]
    since: Duration,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

fn parse_age(s: &str) -> Result<Duration, String> {
    // An age looks back in time (`90d`): not bounded like a wait.
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 12h, 7d or 90d"))
}

pub(super) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
        + "Z"
}

fn ago(d: Duration) -> u64 {
    now_ms().saturating_sub(d.as_millis() as u64)
}

pub(super) fn read_only(global: &GlobalArgs) -> Result<Box<dyn Reader>, Exit> {
    global.reader("medic runs (reading)")
}

pub(super) fn find(store: &dyn Reader, id: &str) -> Result<RunRecord, Exit> {
    store.find(id).map_err(|e| {
        eprintln!("medic: {e}");
        Exit::Invalid
    })
}

pub(super) fn duration_of(r: &RunRecord) -> String {
    r.ended_ms
        .map(|e| format_duration(Duration::from_millis(e.saturating_sub(r.started_ms))))
        .unwrap_or_else(|| "-".into())
}

pub async fn main(global: &GlobalArgs, cmd: RunsCommand) -> Exit {
    match cmd {
        RunsCommand::Resume(args) => return pick_up(global, args, false).await,
        RunsCommand::Rollback(args) => return pick_up(global, args, true).await,
        RunsCommand::Follow { id, output } => {
            return super::follow::follow(global, &id, output).await;
        }
        RunsCommand::Rerun(args) => return super::follow::rerun(global, args).await,
        RunsCommand::Cancel(args) => return super::cancel::cancel(global, args).await,
        _ => {}
    }
    if let RunsCommand::Prune { older_than, output } = cmd {
        return prune(global, older_than, output);
    }
    let store = match read_only(global) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let result = match cmd {
        RunsCommand::List(args) => super::runs_list::list(store.as_ref(), args),
        RunsCommand::Show { id, output } => show(store.as_ref(), &id, output),
        RunsCommand::Logs { id, step, output } => {
            logs(store.as_ref(), &id, step.as_deref(), output)
        }
        RunsCommand::Export { id } => export(store.as_ref(), &id),
        RunsCommand::Prune { .. }
        | RunsCommand::Resume(_)
        | RunsCommand::Rollback(_)
        | RunsCommand::Follow { .. }
        | RunsCommand::Rerun(_)
        | RunsCommand::Cancel(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => Exit::Success,
        Err(exit) => exit,
    }
}

fn prune(global: &GlobalArgs, older_than: Duration, output: OutputFormat) -> Exit {
    let store = match global.store("medic runs prune", None) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let result: Result<(), Exit> = match store.prune(ago(older_than)) {
        Ok(n) => {
            match output {
                OutputFormat::Human => println!(
                    "pruned {n} run{} older than {}",
                    if n == 1 { "" } else { "s" },
                    humantime::format_duration(older_than)
                ),
                OutputFormat::Json => println!("{}", serde_json::json!({ "pruned": n })),
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Err(Exit::Engine)
        }
    };
    match result {
        Ok(()) => Exit::Success,
        Err(exit) => exit,
    }
}

fn show(store: &dyn Reader, id: &str, output: OutputFormat) -> Result<(), Exit> {
    let r = find(store, id)?;
    let journal = store.journal(&r.run_id).map_err(|e| {
        eprintln!("medic: {e}");
        Exit::Engine
    })?;
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "record": r, "journal": journal }));
        return Ok(());
    }
    println!("run {}  {}", r.run_id, r.status.name());
    println!(
        "  runbook      {} ({}, sha256 {}…)",
        r.runbook,
        r.runbook_path,
        &r.runbook_sha256[..16.min(r.runbook_sha256.len())]
    );
    println!("  environment  {}", r.environment);
    println!(
        "  started      {} by {}{}",
        time(r.started_ms),
        r.trigger,
        if r.dry_run { " (dry run)" } else { "" }
    );
    if let Some(a) = &r.approval {
        println!(
            "  approved by  {}: {}",
            a.by,
            super::terminal::clean(&a.reason)
        );
    }
    if !r.params.is_empty() {
        let p: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  params       {}", p.join(" "));
    }
    for p in &r.plugins {
        println!(
            "  plugin       {} = {} (sha256 {}…)",
            p.alias,
            p.source,
            p.sha256.get(..12).unwrap_or(&p.sha256)
        );
    }
    if let Some(l) = &r.lock {
        println!("  lock         {l}");
    }
    println!("timeline");
    let start = journal.first().map_or(r.started_ms, |e| e.at_ms);
    for e in &journal {
        let at = format!(
            "+{:>7}",
            format_duration(Duration::from_millis(e.at_ms.saturating_sub(start)))
        );
        let Some(line) = journal_line(&e.event) else {
            continue;
        };
        // Recorded text came from plugins, parameters and runbooks: shown, never obeyed.
        println!("  {at}  {}", super::terminal::clean(&line));
    }
    if r.status == RunStatus::Interrupted {
        println!(
            "this run was interrupted: `medic runs resume {0}` continues it, `medic runs rollback {0}` undoes it",
            r.run_id
        );
    }
    if let (Some(d), Some(h)) = (r.detected_ms, r.recovered_ms) {
        println!(
            "recovered {} after the failure was detected",
            format_duration(Duration::from_millis(h.saturating_sub(d)))
        );
    }
    Ok(())
}

/// One line of a run's timeline for a journal event (none for a step's start: its end
/// says it all). Recorded text came from plugins, parameters and runbooks: the caller
/// cleans it before showing it.
pub(super) fn journal_line(event: &JournalEvent) -> Option<String> {
    Some(match event {
        JournalEvent::RunStarted { pid } => format!("started (pid {pid})"),
        JournalEvent::RunResumed {
            pid,
            mode,
            by,
            changed_plugins,
        } => {
            let mut line = format!("picked up to {mode} by {by} (pid {pid})");
            if !changed_plugins.is_empty() {
                let named: Vec<String> = changed_plugins
                    .iter()
                    .map(|p| {
                        format!(
                            "{} (now sha256 {}…)",
                            p.alias,
                            p.sha256.get(..12).unwrap_or(&p.sha256)
                        )
                    })
                    .collect();
                line += &format!(
                    ", accepting plugins changed since the run started: {}",
                    named.join(", ")
                );
            }
            line
        }
        JournalEvent::PhaseStarted { phase, reason } => format!(
            "{} ({reason})",
            match phase {
                Phase::Steps => "steps",
                Phase::Rollback => "↩ rolling back",
                Phase::Verify => "⚕ verifying",
                Phase::Finally => "⋯ finally",
            }
        ),
        JournalEvent::StepStarted { .. } => return None,
        JournalEvent::Baking { step, wait_ms } => format!(
            "  ⧗ {step}: baking {} before the first check",
            humantime::format_duration(Duration::from_millis(*wait_ms))
        ),
        JournalEvent::AttemptFinished { step, note } => format!("  ↻ {step}: {note}"),
        JournalEvent::TargetFinished { step, report } => format!(
            "    {} {step} {}  {}  {}",
            status_mark(&report.status),
            report.target,
            format_duration(report.duration),
            report.summary
        ),
        JournalEvent::StepFinished { report } => {
            let mark = status_mark(&report.status);
            format!(
                "  {mark} {}  {}  {}  {}",
                report.id,
                report.plugin,
                format_duration(report.duration),
                report.summary
            )
        }
        JournalEvent::RunFinished {
            outcome,
            duration_ms,
        } => format!(
            "finished: {} after {}",
            RunStatus::from_outcome(*outcome).name(),
            format_duration(Duration::from_millis(*duration_ms))
        ),
        JournalEvent::RunInterrupted { found_by_pid } => {
            format!("interrupted: its process died (found by pid {found_by_pid})")
        }
        JournalEvent::RunAborted { reason } => format!("interrupted: aborted ({reason})"),
        JournalEvent::KvSet { space, key, value } => format!(
            "  ⛁ {space}: {} state `{key}`",
            if value.is_some() { "saved" } else { "deleted" }
        ),
        JournalEvent::ApprovalRequested {
            step,
            prompt,
            timeout_ms,
        } => format!(
            "  ⏸ {step} waits for approval (up to {}): {prompt}",
            format_duration(Duration::from_millis(*timeout_ms))
        ),
        JournalEvent::ApprovalDecided { step, decision } => match decision {
            crate::executor::Decision::Approved { by, reason } => {
                format!("  ✓ {step} approved by {by}: {reason}")
            }
            crate::executor::Decision::Rejected { by, reason } => {
                format!("  ✗ {step} rejected by {by}: {reason}")
            }
            crate::executor::Decision::TimedOut => format!("  ✗ {step}: no decision in time"),
            crate::executor::Decision::Cancelled => {
                format!("  ■ {step}: cancelled while waiting")
            }
        },
    })
}

fn logs(
    store: &dyn Reader,
    id: &str,
    only: Option<&str>,
    output: OutputFormat,
) -> Result<(), Exit> {
    let r = find(store, id)?;
    let (reports, _) = store.step_reports(&r.run_id).map_err(|e| {
        eprintln!("medic: {e}");
        Exit::Engine
    })?;
    if let Some(step) = only
        && !reports.iter().any(|s| s.id == step)
    {
        let ids: Vec<&str> = reports.iter().map(|s| s.id.as_str()).collect();
        eprintln!(
            "medic: run {} has no step `{step}` (steps: {})",
            r.run_id,
            ids.join(", ")
        );
        return Err(Exit::Invalid);
    }
    for s in reports.iter().filter(|s| only.is_none_or(|o| o == s.id)) {
        for (target, a) in s.calls() {
            let who = match target {
                Some(t) => format!("{}[{t}]", s.id),
                None => s.id.clone(),
            };
            for l in &a.invocation.logs {
                match output {
                    OutputFormat::Json => println!(
                        "{}",
                        serde_json::json!({"step": s.id, "target": target, "attempt": a.number, "line": l})
                    ),
                    OutputFormat::Human => println!(
                        "{} #{} +{}ms [{}] {}",
                        who,
                        a.number,
                        a.started_ms + l.at_ms,
                        l.level,
                        super::terminal::clean(&l.message)
                    ),
                }
            }
            if a.invocation.logs_dropped > 0 && output == OutputFormat::Human {
                println!(
                    "{} #{} ({} more lines dropped: over the per-call cap)",
                    who, a.number, a.invocation.logs_dropped
                );
            }
        }
    }
    Ok(())
}

fn export(store: &dyn Reader, id: &str) -> Result<(), Exit> {
    let r = find(store, id)?;
    let journal = store.journal(&r.run_id).map_err(|e| {
        eprintln!("medic: {e}");
        Exit::Engine
    })?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "format": crate::store::FORMAT_VERSION, "record": r, "journal": journal })).expect("serialize"));
    Ok(())
}

/// `medic runs resume` and `medic runs rollback`: pick a run up from its journal.
async fn pick_up(global: &GlobalArgs, args: PickUpArgs, rollback_only: bool) -> Exit {
    let mode = if rollback_only { "rollback" } else { "resume" };
    let signals = match super::signals::Signals::install_for_run() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    match global.api_client() {
        Ok(Some(client)) => {
            return super::remote_run::pick_up(&client, &args, mode, signals).await;
        }
        Ok(None) => {}
        Err(exit) => return exit,
    }
    let host = match global.host() {
        Ok(h) => h,
        Err(e) => return engine_error(e),
    };
    let command = format!("medic runs {mode} {}", args.id);
    let store = match global.store_acting_on(&command, args.wait, Some(&args.id)) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let record = match find(&store, &args.id) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let refused = |r: Refused| {
        eprintln!("medic: {r}");
        match r {
            Refused::Invalid(_) => Exit::Invalid,
            Refused::Engine(_) => Exit::Engine,
        }
    };
    let pick = match crate::pickup::prepare(&store, &record, rollback_only) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    if let Some(notice) = &pick.notice {
        eprintln!("medic: {notice}");
    }
    let plan = match load_plan(&host, &pick.path, Some(&pick.text), &pick.options).await {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    if let Err(r) = crate::pickup::check_approval(&plan, &record, args.approve.is_some()) {
        return refused(r);
    }
    let changed_plugins = match crate::pickup::check_plugins(
        &plan,
        &record,
        pick.mode,
        args.accept_changed_plugins,
    ) {
        Ok(changed) => changed,
        Err(r) => return refused(r),
    };
    let resume = match crate::pickup::state(&store, &record, pick.rollback_only) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let approval = args
        .approve
        .map(|reason| crate::executor::Approval {
            by: super::run::who(),
            reason,
            at: std::time::SystemTime::now(),
        })
        .or_else(|| record.approval.clone());
    let request = RunRequest {
        plan: &plan,
        format: args.output,
        approval,
        dry_run: record.dry_run,
        run_id: record.run_id.clone(),
        start: Start::Resumed {
            mode: pick.mode.into(),
            by: super::run::who(),
            record: Box::new(record.clone()),
            changed_plugins,
        },
        resume: Some(resume),
        trigger: record.trigger.clone(),
        wait: args.wait,
    };
    match execute(&host, &store, global, request, signals).await {
        Ok(report) => exit_for(&report),
        Err(exit) => exit,
    }
}

pub fn stats(global: &GlobalArgs, args: StatsArgs) -> Exit {
    let store = match read_only(global) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let filter = ListFilter {
        runbook: args.runbook.clone(),
        environment: args.environment.clone(),
        since_ms: Some(ago(args.since)),
        ..ListFilter::default()
    };
    let records = match store.list(&filter, usize::MAX) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("medic: {e}");
            return Exit::Engine;
        }
    };
    let st = stats::compute(&records);
    // Alerts belong to no runbook or environment: per trigger only when not filtered so.
    let triggers = if args.runbook.is_none() && args.environment.is_none() {
        let alerts = store
            .alerts(ago(args.since), usize::MAX)
            .unwrap_or_else(|e| {
                eprintln!("medic: the triggers' alerts could not be read, so per-trigger figures are left out: {e}");
                Vec::new()
            });
        stats::by_trigger(&records, &alerts)
    } else {
        Default::default()
    };
    match args.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&st).expect("serialize");
            v["triggers"] = serde_json::to_value(&triggers).expect("serialize");
            println!("{v}");
        }
        OutputFormat::Human => {
            let pct = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
            let dur = |d: Option<Duration>| d.map_or("-".to_owned(), format_duration);
            println!(
                "runs in the last {}: {}",
                humantime::format_duration(args.since),
                st.runs
            );
            println!(
                "  success rate            {} ({} of {} ended)",
                pct(st.success_rate),
                st.succeeded,
                st.ended
            );
            println!(
                "  change failure rate     {} ({} of {} change runs)",
                pct(st.change_failure_rate),
                st.failed_changes,
                st.change_runs
            );
            println!(
                "  rollback success rate   {} ({} rolled back, {} rollback failed)",
                pct(st.rollback_success_rate),
                st.rolled_back,
                st.rollback_failed
            );
            println!(
                "  time to recover         mean {}, p90 {}",
                dur(st.mean_time_to_recover),
                dur(st.p90_time_to_recover)
            );
            println!(
                "  time to detect (gates)  mean {}",
                dur(st.mean_time_to_detect)
            );
            for (name, t) in &triggers {
                println!(
                    "trigger {name}: {} alerts, {} runs started ({} remediated), {} deduplicated, {} cooled down, {} braked, {} refused, {} escalated",
                    t.alerts,
                    t.runs_started,
                    t.remediated,
                    t.deduplicated,
                    t.cooled_down,
                    t.braked,
                    t.refused,
                    t.escalated
                );
                println!(
                    "  time to detect          mean {}, p90 {}  (alert start to run start)",
                    dur(t.mean_time_to_detect),
                    dur(t.p90_time_to_detect)
                );
                println!(
                    "  time to remediate       mean {}, p90 {}  (alert start to verified fix)",
                    dur(t.mean_time_to_remediate),
                    dur(t.p90_time_to_remediate)
                );
            }
        }
    }
    Exit::Success
}

fn status_mark(status: &StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Errored { .. } => "!",
        StepStatus::Skipped { .. } => "-",
    }
}
