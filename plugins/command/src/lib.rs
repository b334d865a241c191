//! `command`: runs an allowlisted program, the escape hatch for tools with no API
//! (`systemctl`, `kubectl`, a vendor CLI).
//!
//! The risk, plainly: a granted program can do anything it can do as the user medic runs as.
//! The runbook grants exact paths and one pattern per argument, there is no shell (no globbing,
//! pipes or `;`), the environment is empty, and the process is killed at the deadline, but the
//! program itself is trusted. Grant the narrowest command that does the job.

use std::time::Duration;

use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, command};

struct Command;

fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(max.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

impl Plugin for Command {
    fn manifest() -> Manifest {
        Manifest::action("command", env!("CARGO_PKG_VERSION"))
            .describe(
                "Runs an allowlisted program (no shell, empty environment, killed at the deadline)",
            )
            .param(
                Param::text("program")
                    .required()
                    .describe("Absolute path of a granted program"),
            )
            .param(
                Param::text_list("args")
                    .default(Vec::<String>::new())
                    .describe("Arguments; each must match the grant's pattern"),
            )
            .param(
                Param::integer("expect_exit")
                    .default(0i64)
                    .describe("The exit code that means success"),
            )
            .param(Param::duration("timeout").describe("Kill the program after this long"))
            .capability("command")
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let program = params.text("program")?;
        let args: Vec<&str> = params
            .text_list("args")?
            .iter()
            .map(String::as_str)
            .collect();
        let shown = format!("{program} {}", args.join(" "))
            .trim_end()
            .to_owned();
        if ctx.dry_run {
            return Ok(Outcome::success(format!("would run {shown}")));
        }
        let expect = params.integer("expect_exit")?;
        let timeout: Option<Duration> = params.opt_duration("timeout")?;
        let out = command::run(program, &args, timeout)?;
        let outcome = match out.exit_code {
            Some(code) if i64::from(code) == expect => {
                Outcome::success(format!("{shown}: exit {code}"))
            }
            Some(code) => Outcome::failure(format!(
                "{shown}: exit {code} (expected {expect}): {}",
                tail(&out.stderr, 200)
            )),
            None => Outcome::failure(format!("{shown}: killed by a signal")),
        };
        Ok(outcome
            .output("exit_code", i64::from(out.exit_code.unwrap_or(-1)))
            .output("stdout", tail(&out.stdout, 4096))
            .output("truncated", out.truncated))
    }
}

medic_plugin_sdk::export!(Command);
