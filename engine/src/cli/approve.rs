//! `medic approve` and `medic reject`: locally through files in the data directory, or
//! through a remote API with `--server`.

use std::time::Duration;

use clap::Args;

use super::{Exit, GlobalArgs, OutputFormat};
use crate::store::now_ms;

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The waiting run's id (or a unique prefix); omit it to list what is waiting
    id: Option<String>,
    /// The step, when the run waits on several
    #[arg(long)]
    step: Option<String>,
    /// Why (recorded with your name)
    #[arg(long, default_value = "")]
    reason: String,
    /// Output format: `json` prints, for a decision, one object {"decision": "approved" |
    /// "rejected", "run_id", "step", "by", "approvals", "needed"}; without an id, one object
    /// per waiting run {"run_id", "step", "prompt", "deadline_ms", "requested_ms", "policy":
    /// {"approvers", "min_approvals", "starter", ...}}. Errors stay on stderr
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
}

/// What was decided, as printed.
struct Decided<'a> {
    approved: bool,
    run_id: &'a str,
    step: &'a str,
    by: &'a str,
    approvals: u64,
    needed: u64,
}

impl Decided<'_> {
    fn print(&self, output: OutputFormat) {
        if output == OutputFormat::Json {
            println!(
                "{}",
                serde_json::json!({
                    "decision": if self.approved { "approved" } else { "rejected" },
                    "run_id": self.run_id,
                    "step": self.step,
                    "by": self.by,
                    "approvals": self.approvals,
                    "needed": self.needed,
                })
            );
            return;
        }
        let progress = if self.approved && self.needed > 1 {
            format!(", {} of {} approvals", self.approvals, self.needed)
        } else {
            String::new()
        };
        println!(
            "{} step {} of run {} ({}{progress})",
            if self.approved {
                "approved"
            } else {
                "rejected"
            },
            self.step,
            self.run_id,
            self.by
        );
    }
}

/// What is waiting for a decision, one line each.
fn print_waiting(waiting: Vec<crate::store::approvals::Pending>, output: OutputFormat) {
    if output == OutputFormat::Json {
        for p in waiting {
            println!(
                "{}",
                serde_json::to_string(&p).expect("pending approvals serialize")
            );
        }
        return;
    }
    if waiting.is_empty() {
        println!("no run is waiting for an approval");
    }
    for p in waiting {
        let left = Duration::from_millis(p.deadline_ms.saturating_sub(now_ms()));
        let mut policy = Vec::new();
        if p.policy.min_approvals > 1 {
            policy.push(format!("needs {} approvals", p.policy.min_approvals));
        }
        if !p.policy.approvers.is_empty() {
            policy.push(format!("approvers: {}", p.policy.approvers.join(", ")));
        }
        let policy = if policy.is_empty() {
            String::new()
        } else {
            format!("  [{}]", policy.join("; "))
        };
        println!(
            "{}  step {}  ({} left)  {}{policy}",
            p.run_id,
            p.step,
            humantime::format_duration(Duration::from_secs(left.as_secs())),
            p.prompt
        );
    }
}

/// `medic approve` / `medic reject` through a remote API: the same lines and exit codes.
fn decide_remotely(client: &super::client::ApiClient, args: DecideArgs, approved: bool) -> Exit {
    let Some(id) = args.id else {
        return match client.request(reqwest::Method::GET, "/approvals", None) {
            Ok(v) => match serde_json::from_value::<Vec<_>>(v["approvals"].clone()) {
                Ok(waiting) if !args.reason.trim().is_empty() || args.step.is_some() => {
                    which_run(&waiting, approved)
                }
                Ok(waiting) => {
                    print_waiting(waiting, args.output);
                    Exit::Success
                }
                Err(e) => {
                    eprintln!("medic: {e}");
                    Exit::Engine
                }
            },
            Err(e) => {
                eprintln!("medic: {e}");
                Exit::Engine
            }
        };
    };
    let verb = if approved { "approve" } else { "reject" };
    let body = serde_json::json!({ "reason": args.reason.trim(), "step": args.step });
    match client.request(
        reqwest::Method::POST,
        &format!("/approvals/{id}/{verb}"),
        Some(body),
    ) {
        Ok(v) => {
            Decided {
                approved,
                run_id: v["run_id"].as_str().unwrap_or("?"),
                step: v["step"].as_str().unwrap_or("?"),
                by: v["by"].as_str().unwrap_or("?"),
                approvals: v["approvals"].as_u64().unwrap_or(0),
                needed: v["needed"].as_u64().unwrap_or(1),
            }
            .print(args.output);
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}

/// A decision without the run it is for: what is waiting, and how to decide it.
fn which_run(waiting: &[crate::store::approvals::Pending], approved: bool) -> Exit {
    let verb = if approved { "approve" } else { "reject" };
    eprintln!("medic: {verb} which run? a decision needs the run's id");
    match waiting {
        [] => eprintln!("  = no run is waiting for an approval"),
        [one] => eprintln!(
            "  = help: medic {verb} {} --reason \"...\"   (the one run waiting: step {}, {})",
            one.run_id, one.step, one.prompt
        ),
        many => {
            eprintln!("  = help: medic {verb} ID --reason \"...\", one of:");
            for p in many {
                eprintln!("      {}  step {}  {}", p.run_id, p.step, p.prompt);
            }
        }
    }
    Exit::Invalid
}

/// `medic approve` / `medic reject`: decisions travel through the files in the data
/// directory, or the shared store's documents.
pub fn decide(global: &GlobalArgs, args: DecideArgs, approved: bool) -> Exit {
    match global.api_client() {
        Ok(Some(client)) => return decide_remotely(&client, args, approved),
        Ok(None) => {}
        Err(exit) => return exit,
    }
    let place = match global.place("medic approve") {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let Some(id) = args.id else {
        let waiting = crate::store::approvals::pending(&place, None);
        // A reason or a step means a decision was meant: never a silent success.
        if !args.reason.trim().is_empty() || args.step.is_some() {
            return which_run(&waiting, approved);
        }
        print_waiting(waiting, args.output);
        return Exit::Success;
    };
    let by = super::run::who();
    match crate::store::approvals::decide(
        &place,
        &id,
        args.step.as_deref(),
        approved,
        &by,
        &crate::private::my_groups(),
        args.reason.trim(),
    ) {
        Ok((p, approvals)) => {
            Decided {
                approved,
                run_id: &p.run_id,
                step: &p.step,
                by: &by,
                approvals: approvals as u64,
                needed: u64::from(p.policy.min_approvals),
            }
            .print(args.output);
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}
