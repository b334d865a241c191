//! `medic runs list`: the filters (`--status waiting`, `--since yesterday`...) and the
//! table people read.

use clap::Args;

use super::runs::{duration_of, time};
use super::{Exit, OutputFormat};
use crate::store::remote::Reader;
use crate::store::{ListFilter, RunStatus};

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    runbook: Option<String>,
    /// running, waiting (for a person's approval), succeeded, failed, rolled_back,
    /// rollback_failed, cancelled, interrupted, dry_run
    #[arg(long)]
    status: Option<String>,
    #[arg(long = "env")]
    environment: Option<String>,
    /// cli, schedule, api or alert
    #[arg(long)]
    trigger: Option<String>,
    /// Only runs started since: an age (2h, 7d), today, yesterday, a date (2026-11-01, UTC)
    /// or a time (2026-11-01T08:00:00Z)
    #[arg(long, value_parser = parse_moment)]
    since: Option<u64>,
    /// Only runs started before: the same forms as --since
    #[arg(long, value_parser = parse_moment)]
    until: Option<u64>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

/// A moment as `--since` takes it, in ms since the epoch.
fn parse_moment(s: &str) -> Result<u64, String> {
    moment(s.trim(), chrono::Utc::now())
}

fn moment(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<u64, String> {
    let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let at = match s {
        "today" => midnight(now.date_naive()),
        "yesterday" => now.date_naive().pred_opt().and_then(midnight),
        _ => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(midnight)
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc))
            })
            .or_else(|| {
                let age = humantime::parse_duration(s).ok()?;
                now.checked_sub_signed(chrono::Duration::from_std(age).ok()?)
            }),
    };
    at.map(|t| t.timestamp_millis().max(0) as u64).ok_or_else(|| {
        format!("`{s}` is not an age (12h, 7d), today, yesterday, a date (2026-11-01) or a time (2026-11-01T08:00:00Z)")
    })
}

pub(super) fn list(store: &dyn Reader, args: ListArgs) -> Result<(), Exit> {
    // Waiting is running with a person's decision pending: not a state of its own.
    let waiting_only = args.status.as_deref() == Some("waiting");
    let status = match args
        .status
        .as_deref()
        .map(|s| if s == "waiting" { "running" } else { s })
        .map(|s| RunStatus::parse(s).ok_or(s))
    {
        Some(Err(s)) => {
            eprintln!(
                "medic: unknown status `{s}` (running, waiting, succeeded, failed, rolled_back, rollback_failed, cancelled, interrupted, dry_run)"
            );
            return Err(Exit::Invalid);
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let filter = ListFilter {
        runbook: args.runbook,
        status,
        environment: args.environment,
        trigger: args.trigger,
        since_ms: args.since,
        until_ms: args.until,
        before: None,
    };
    let engine = |e: crate::store::StoreError| {
        eprintln!("medic: {e}");
        Exit::Engine
    };
    // Machines asking for JSON get records, whose status says `running`; people get the mark.
    let waiting = if waiting_only || args.output == OutputFormat::Human {
        store.waiting().map_err(engine)?
    } else {
        Vec::new()
    };
    let mut runs = store.list(&filter, args.limit).map_err(engine)?;
    if waiting_only {
        runs.retain(|r| waiting.contains(&r.run_id));
    }
    match args.output {
        OutputFormat::Json => {
            for r in &runs {
                println!("{}", serde_json::to_string(r).expect("records serialize"));
            }
        }
        OutputFormat::Human => {
            if runs.is_empty() {
                println!("no runs recorded in {}", store.location());
                return Ok(());
            }
            let rows: Vec<[String; 7]> = runs
                .iter()
                .map(|r| {
                    let mut status = r.status.name().to_owned();
                    if waiting.contains(&r.run_id) {
                        status += " (waiting for approval)";
                    } else if r.dry_run && r.status != RunStatus::DryRun {
                        status += " (dry run)";
                    }
                    [
                        r.run_id.clone(),
                        super::terminal::clean(&r.runbook).into_owned(),
                        super::terminal::clean(&r.environment).into_owned(),
                        status,
                        time(r.started_ms),
                        duration_of(r),
                        super::terminal::clean(&r.trigger.to_string()).into_owned(),
                    ]
                })
                .collect();
            print!("{}", table(&rows));
        }
    }
    Ok(())
}

/// The runs as a table with a header, each column as wide as its widest cell (the last
/// one, free text, is not padded); `TOOK` is right-aligned.
fn table(rows: &[[String; 7]]) -> String {
    const HEAD: [&str; 7] = [
        "RUN",
        "RUNBOOK",
        "ENV",
        "STATUS",
        "STARTED",
        "TOOK",
        "STARTED BY",
    ];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([HEAD[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..7).map(width).collect();
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match i {
                5 => out += &format!("{}{cell}  ", " ".repeat(pad)),
                6 => out += cell,
                _ => out += &format!("{cell}{}  ", " ".repeat(pad)),
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(HEAD);
    for r in rows {
        out += &line(std::array::from_fn(|i| r[i].as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_ages_days_dates_and_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T14:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = |s: &str| moment(s, now).unwrap();
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis() as u64
        };
        assert_eq!(at("2h"), ms("2026-11-29T12:30:00Z"));
        assert_eq!(at("7d"), ms("2026-11-22T14:30:00Z"));
        assert_eq!(at("today"), ms("2026-11-29T00:00:00Z"));
        assert_eq!(at("yesterday"), ms("2026-11-28T00:00:00Z"));
        assert_eq!(at("2026-11-01"), ms("2026-11-01T00:00:00Z"));
        assert_eq!(at("2026-11-01T08:00:00+01:00"), ms("2026-11-01T07:00:00Z"));
        assert!(moment("last tuesday", now).is_err());
    }

    #[test]
    fn the_table_stays_aligned_with_long_names() {
        let row = |runbook: &str, took: &str| -> [String; 7] {
            [
                "01m8kwa7tcgyv13f6vvwxgdg28".into(),
                runbook.into(),
                "prod".into(),
                "failed".into(),
                "2026-11-29 14:45:59Z".into(),
                took.into(),
                "cli root@vm".into(),
            ]
        };
        let out = table(&[
            row("x", "6ms"),
            row("a-very-long-runbook-name-indeed-with-more", "1m 2s"),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let col = |l: &str, s: &str| l.find(s).unwrap();
        assert_eq!(col(lines[0], "ENV"), col(lines[1], "prod"), "{out}");
        assert_eq!(col(lines[1], "prod"), col(lines[2], "prod"), "{out}");
        // TOOK is right-aligned: the durations end where the header does.
        let end = |l: &str, s: &str| l.find(s).unwrap() + s.len();
        assert_eq!(end(lines[0], "TOOK"), end(lines[1], "6ms"), "{out}");
        assert_eq!(end(lines[1], "6ms"), end(lines[2], "1m 2s"), "{out}");
    }
}
