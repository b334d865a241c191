//! `medic token create|list|revoke` (who may use the HTTP API) and `medic audit` (what was
//! done through it). Both work on the data directory's files, so they work while `medic serve`
//! holds the run store.

use std::time::Duration;

use clap::Subcommand;

use super::{Exit, GlobalArgs, OutputFormat};
use crate::store::audit::Audit;
use crate::store::now_ms;
use crate::store::tokens::{Role, Token, Tokens};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is shown once, only its digest is kept
    Create {
        /// A name for whoever uses it (recorded as `token:NAME`)
        name: String,
        /// viewer (read), responder (start, cancel, resume, roll back runs), approver
        /// (decide approvals), admin (everything)
        #[arg(long, value_parser = Role::parse)]
        role: Role,
        /// An environment it may act in (repeat for more). None: every environment that is
        /// not protected; a protected one must be named
        #[arg(long = "env", value_name = "ENV")]
        envs: Vec<String>,
        /// A group it belongs to, for environments whose `approvers` name groups (repeat for
        /// more)
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long it is valid: 30d, 12h, or `never`
        #[arg(long, default_value = "90d")]
        expires: String,
    },
    /// List the tokens (never the tokens themselves)
    List {
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
    },
    /// Revoke a token at once
    Revoke { name: String },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Entries newer than this (e.g. 1h, 7d)
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// At most this many, the newest
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Leave out answered reads (GET requests that succeeded)
    #[arg(long)]
    no_reads: bool,
    #[arg(long, value_enum, default_value = "human")]
    output: OutputFormat,
}

fn when(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn describe(t: &Token, now: u64) -> String {
    let envs = if t.envs.is_empty() {
        "unprotected environments".to_owned()
    } else {
        t.envs.join(", ")
    };
    let state = match (t.revoked_ms, t.expires_ms) {
        (Some(r), _) => format!("revoked {}", when(r)),
        (None, Some(e)) if e <= now => format!("expired {}", when(e)),
        (None, Some(e)) => format!("expires {}", when(e)),
        (None, None) => "never expires".to_owned(),
    };
    let groups = if t.groups.is_empty() {
        String::new()
    } else {
        format!("  groups {}", t.groups.join(", "))
    };
    format!(
        "{:20} {:10} {envs:30} {state}  (created {} by {}){groups}",
        t.name,
        t.role.name(),
        when(t.created_ms),
        t.created_by
    )
}

pub fn main(global: &GlobalArgs, cmd: TokenCommand) -> Exit {
    let place = match global.place("medic token") {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let tokens = Tokens::at(&place);
    let audit = Audit::at(&place);
    let me = format!("user:{}", crate::private::me());
    let record = |action: &str, result: &str| {
        if let Err(e) = audit.record(&me, action, "", result) {
            eprintln!("medic: {e}");
        }
    };
    match cmd {
        TokenCommand::Create {
            name,
            role,
            envs,
            groups,
            expires,
        } => {
            let expires_ms = match expires.trim() {
                "never" => None,
                text => match humantime::parse_duration(text) {
                    Ok(d) => Some(now_ms().saturating_add(d.as_millis() as u64)),
                    Err(_) => {
                        eprintln!(
                            "medic: --expires `{text}` is not a duration (30d, 12h) nor `never`"
                        );
                        return Exit::Invalid;
                    }
                },
            };
            let action = format!("token create {name}");
            match tokens.create(&name, role, &envs, &groups, expires_ms, &me) {
                Ok((secret, t)) => {
                    record(&action, &format!("ok: {}", t.role.name()));
                    eprintln!("created {}", describe(&t, now_ms()));
                    eprintln!("the token is shown once; keep it in a secret store:");
                    println!("{secret}");
                    Exit::Success
                }
                Err(e) => {
                    record(&action, &format!("error: {e}"));
                    eprintln!("medic: {e}");
                    Exit::Invalid
                }
            }
        }
        TokenCommand::List { output } => match tokens.list() {
            Ok(list) => {
                let now = now_ms();
                for t in &list {
                    match output {
                        OutputFormat::Human => println!("{}", describe(t, now)),
                        OutputFormat::Json => println!(
                            "{}",
                            serde_json::json!({
                                "name": t.name, "role": t.role, "envs": t.envs, "groups": t.groups,
                                "created_ms": t.created_ms, "created_by": t.created_by,
                                "expires_ms": t.expires_ms, "revoked_ms": t.revoked_ms,
                            })
                        ),
                    }
                }
                if list.is_empty() && output == OutputFormat::Human {
                    println!("no tokens (`medic token create NAME --role ROLE`)");
                }
                Exit::Success
            }
            Err(e) => {
                eprintln!("medic: {e}");
                Exit::Engine
            }
        },
        TokenCommand::Revoke { name } => {
            let action = format!("token revoke {name}");
            match tokens.revoke(&name) {
                Ok(_) => {
                    record(&action, "ok");
                    println!("revoked token `{name}`");
                    Exit::Success
                }
                Err(e) => {
                    record(&action, &format!("error: {e}"));
                    eprintln!("medic: {e}");
                    Exit::Invalid
                }
            }
        }
    }
}

pub fn audit(global: &GlobalArgs, args: AuditArgs) -> Exit {
    let place = match global.place("medic audit") {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let since = args
        .since
        .map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64));
    match Audit::at(&place).read(since, args.limit, !args.no_reads) {
        Ok(entries) => {
            for e in entries {
                match args.output {
                    OutputFormat::Human => println!(
                        "{}  {:22} {:16} {}  -> {}",
                        when(e.at_ms),
                        e.who,
                        if e.from.is_empty() { "-" } else { &e.from },
                        super::terminal::clean(&e.action),
                        super::terminal::clean(&e.result)
                    ),
                    OutputFormat::Json => {
                        println!("{}", serde_json::to_string(&e).expect("serialize"))
                    }
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
