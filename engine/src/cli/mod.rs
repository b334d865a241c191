//! The `medic` command: argument parsing and dispatch. One file per subcommand.
//!
//! Exit codes (documented in `medic --help` and the README): 0 success · 1 the run failed ·
//! 2 invalid input · 3 engine error · 4 rolled back · 5 rollback failed · 6 cancelled.

mod approve;
mod cancel;
mod client;
mod demo;
mod drill;
mod follow;
pub mod output;
mod plugin;
mod remote_run;
mod run;
mod serve_run;
pub use run::who;
mod runs;
mod runs_list;
mod scaffold;
mod signals;
mod terminal;
mod token;
mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::host::{HostConfig, PluginHost};

/// Distinct exit codes: scripts and schedulers branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything succeeded.
    Success = 0,
    /// The run ran and failed (a step failed or errored).
    RunFailed = 1,
    /// The input is wrong: arguments, runbook, plugin file. Nothing ran.
    Invalid = 2,
    /// Medic itself failed (I/O, engine setup). Nothing or only part ran.
    Engine = 3,
    /// A step failed; the rollback ran and the verify checks passed.
    RolledBack = 4,
    /// A rollback or verify check failed: a person must act.
    RollbackFailed = 5,
    /// Cancelled by a signal (rolled back if the runbook or the responder said so).
    Cancelled = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the run failed (a step failed or errored; nothing was rolled back)
  2  invalid input (arguments, runbook, plugin); nothing ran
  3  engine error (medic itself failed, or the run store is busy)
  4  rolled back: a step failed, the rollback ran and verify passed
  5  rollback failed: a rollback or verify check failed; a person must act
  6  cancelled (Ctrl-C or SIGTERM)";

#[derive(Debug, Parser)]
#[command(name = "medic", version, about = "Runs operational runbooks made of sandboxed WebAssembly plugins", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where compiled plugins are cached [default: the platform cache directory]
    #[arg(long, global = true, env = "MEDIC_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins every time instead of using the cache
    #[arg(long, global = true)]
    no_cache: bool,
    /// Where runs are recorded [default: $MEDIC_DATA_DIR, else the platform data directory]
    #[arg(long, global = true, env = "MEDIC_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A store shared by several processes and hosts: a PostgreSQL URL
    /// (postgres://USER@HOST:PORT/DB; the password from PGPASSWORD) [default: the embedded
    /// store in the data directory]
    #[arg(
        long,
        global = true,
        env = "MEDIC_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    store: Option<String>,
    /// Keep recorded runs this long (e.g. 90d); older ones are pruned after each run
    #[arg(long, global = true, env = "MEDIC_RETENTION", value_name = "DURATION", value_parser = parse_retention)]
    retention: Option<std::time::Duration>,
    /// Show plugin log lines (-v) and engine debug output (-vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// When to use colors
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// A remote `medic serve --listen`: run, read runs, decide approvals through its API
    #[arg(long, global = true, env = "MEDIC_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The API token for --server (prefer MEDIC_TOKEN: an argument shows in `ps` and history)
    #[arg(
        long,
        global = true,
        env = "MEDIC_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Trust this CA (PEM) for --server and for plugins from https:// URLs, besides the
    /// system's
    #[arg(long, global = true, env = "MEDIC_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for a person
    Human,
    /// One JSON object per line, for machines
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a runbook
    Run(run::RunArgs),
    /// Check a runbook without running anything
    Validate(run::CheckArgs),
    /// Show what a run would do: steps, rendered parameters, gates, the rollback path
    Plan(run::ValidateArgs),
    /// Print a JSON Schema of the runbook (or drill) file format, for editors
    Schema {
        #[arg(value_enum, default_value = "runbook")]
        format: SchemaFormat,
    },
    /// Inspect and list plugins
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Recorded runs: list, show, logs, export, prune, resume, rollback
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Success rate, change failure rate, rollback success and recovery times
    Stats(runs::StatsArgs),
    /// Approve the step a run is waiting on
    Approve(approve::DecideArgs),
    /// Reject the step a run is waiting on (the step fails)
    Reject(approve::DecideArgs),
    /// Rollback drills: validate, list, run now, report
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Alert triggers: validate, list, test a payload, re-arm, log
    #[command(subcommand)]
    Trigger(trigger::TriggerCommand),
    /// Run the drill scheduler and serve other medic commands, until SIGTERM
    Serve(drill::ServeArgs),
    /// API tokens for `medic serve --listen`: create, list, revoke
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// What was done through the API and to tokens: who, what, when, from where, result
    Audit(token::AuditArgs),
    /// Run the demo: a demo service on loopback, and a runbook that deploys to it
    Demo(demo::DemoArgs),
    /// Print a shell completion script (e.g. `medic completions bash > /etc/bash_completion.d/medic`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, generated from this command line (`medic man | man -l -`)
    Man,
    /// Serve the demo service in the foreground (used by tests and the demo)
    // Hidden on purpose: the demo's and the tests' fixture, not a tool for users.
    #[command(hide = true)]
    DemoService(demo::ServiceArgs),
    /// Hold the embedded store for every command on this host (started by them)
    // Hidden on purpose: commands start it and it ends by itself.
    #[command(hide = true)]
    StoreDaemon,
}

impl Command {
    /// Commands that act on this machine's store or files only: with `--server`, refused.
    fn local_only(&self) -> Option<&'static str> {
        match self {
            Command::Runs(runs::RunsCommand::Prune { .. }) => Some("runs prune"),
            Command::Token(_) => Some("token"),
            Command::Audit(_) => Some("audit"),
            Command::Serve(_) => Some("serve"),
            _ => None,
        }
    }

    /// Whether the command runs plugins or writes records (then a closed pipe must not
    /// kill it).
    fn changes_things(&self) -> bool {
        match self {
            Command::Run(_)
            | Command::Serve(_)
            | Command::Demo(_)
            | Command::DemoService(_)
            | Command::StoreDaemon => true,
            Command::Runs(cmd) => matches!(
                cmd,
                runs::RunsCommand::Resume(_)
                    | runs::RunsCommand::Rerun(_)
                    | runs::RunsCommand::Rollback(_)
                    | runs::RunsCommand::Prune { .. }
            ),
            Command::Drill(cmd) => matches!(
                cmd,
                drill::DrillCommand::Run { .. }
                    | drill::DrillCommand::Pause { .. }
                    | drill::DrillCommand::Resume { .. }
            ),
            Command::Approve(_) | Command::Reject(_) | Command::Token(_) => true,
            Command::Trigger(cmd) => matches!(cmd, trigger::TriggerCommand::Rearm { .. }),
            Command::Validate(_)
            | Command::Audit(_)
            | Command::Plan(_)
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::Man
            | Command::Plugin(_)
            | Command::Stats(_) => false,
        }
    }
}

impl GlobalArgs {
    fn host(&self) -> anyhow::Result<PluginHost> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(crate::host::default_cache_dir)
        };
        PluginHost::new(HostConfig {
            cache_dir,
            ca_cert: self.ca_cert.clone(),
            ..HostConfig::default()
        })
    }

    pub(crate) fn data_dir(&self) -> Result<PathBuf, Exit> {
        self.data_dir
            .clone()
            .or_else(crate::store::default_data_dir)
            .ok_or_else(|| {
                eprintln!("medic: no data directory: pass --data-dir or set MEDIC_DATA_DIR");
                Exit::Invalid
            })
    }

    /// The shared store named by `--store`, connected, its dead processes' runs recovered;
    /// None for the embedded store.
    pub(crate) fn shared_store(&self, command: &str) -> Option<Result<crate::store::Store, Exit>> {
        self.shared_store_acting_on(command, None)
    }

    fn shared_store_acting_on(
        &self,
        command: &str,
        acting_on: Option<&str>,
    ) -> Option<Result<crate::store::Store, Exit>> {
        Some(
            self.connect_shared(command)?
                .and_then(|store| Self::recover(store, acting_on)),
        )
    }

    /// [`GlobalArgs::shared_store`] without recovering (`medic serve` recovers, and applies
    /// what runbooks declare for the runs it finds).
    pub(crate) fn connect_shared(
        &self,
        command: &str,
    ) -> Option<Result<crate::store::Store, Exit>> {
        let url = self.store.as_deref()?;
        Some((|| {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                eprintln!(
                    "medic: --store {}: not a store this medic knows; give a PostgreSQL URL (postgres://USER@HOST:PORT/DB), or leave it out for the embedded store in the data directory",
                    crate::store::postgres::shown(url)
                );
                return Err(Exit::Invalid);
            }
            let dir = self.data_dir()?;
            crate::store::Store::connect(url, &dir, command).map_err(|e| {
                eprintln!("medic: {e}");
                Exit::Engine
            })
        })())
    }

    /// Where approvals, API tokens and the audit log are: the shared store's documents with
    /// `--store`, else files in the data directory.
    pub(crate) fn place(&self, command: &str) -> Result<crate::store::Place, Exit> {
        match self.connect_shared(command) {
            Some(store) => Ok(store?.place()),
            None => Ok(crate::store::Place::Files(self.data_dir()?)),
        }
    }

    /// Opens the run store, recovering runs whose process died.
    pub(crate) fn store(
        &self,
        command: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<crate::store::Store, Exit> {
        self.store_acting_on(command, wait, None)
    }

    /// [`GlobalArgs::store`] for a command that acts on one run (`acting_on`: its id, or a
    /// prefix of it): found with its process dead, that run is named as the one acted on,
    /// not among the runs a responder is told to see to.
    pub(crate) fn store_acting_on(
        &self,
        command: &str,
        wait: Option<std::time::Duration>,
        acting_on: Option<&str>,
    ) -> Result<crate::store::Store, Exit> {
        if let Some(shared) = self.shared_store_acting_on(command, acting_on) {
            return shared;
        }
        Self::recover(self.local_store(wait)?, acting_on)
    }

    /// The embedded store, through the store daemon (started if none runs), without
    /// recovering (`medic serve` recovers, and applies what runbooks declare for the runs it
    /// finds).
    pub(crate) fn local_store(
        &self,
        wait: Option<std::time::Duration>,
    ) -> Result<crate::store::Store, Exit> {
        let dir = self.data_dir()?;
        crate::store::Store::open_shared_locally(
            &dir,
            std::sync::Arc::new(crate::store::daemon::start),
            wait,
        )
        .map_err(|e| {
            eprintln!("medic: {e}");
            Exit::Engine
        })
    }

    /// For read-only commands: the remote API's answers with `--server`, else the store.
    fn reader(&self, command: &str) -> Result<Box<dyn crate::store::remote::Reader>, Exit> {
        if let Some(client) = self.api_client()? {
            return Ok(Box::new(client));
        }
        Ok(Box::new(self.store(command, None)?))
    }

    /// The remote API, when `--server` is given.
    pub(crate) fn api_client(&self) -> Result<Option<client::ApiClient>, Exit> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        client::ApiClient::new(server, self.token.as_deref(), self.ca_cert.as_ref())
            .map(Some)
            .map_err(|e| {
                eprintln!("medic: {e}");
                Exit::Invalid
            })
    }

    /// The `medic serve` running on this data directory, when there is one: runs and drill
    /// commands go through it (it runs them, and holds their state).
    fn through_serve(&self) -> Option<crate::store::remote::Remote> {
        // A shared store admits every process: nothing needs to go through another.
        if self.store.is_some() {
            return None;
        }
        let dir = self.data_dir().ok()?;
        let remote = crate::store::remote::Remote::connect(&dir)?;
        let status: serde_json::Value = remote
            .call(
                &serde_json::json!({"op": "status"}),
                std::time::Duration::from_secs(5),
            )
            .ok()?;
        (status["serving"] == "medic serve").then_some(remote)
    }

    /// A store shared by several hosts (`--store`), not this host's data directory.
    fn store_is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// Marks the runs of dead processes interrupted, saying so; `acting_on`: the run (or a
    /// prefix of its id) the command is about to act on.
    fn recover(
        store: crate::store::Store,
        acting_on: Option<&str>,
    ) -> Result<crate::store::Store, Exit> {
        let ids = match store.recover() {
            Ok(ids) => ids,
            Err(e) => {
                eprintln!("medic: {e}");
                return Err(Exit::Engine);
            }
        };
        let (this, others): (Vec<_>, Vec<_>) = ids
            .into_iter()
            .partition(|id| acting_on.is_some_and(|a| !a.is_empty() && id.starts_with(a)));
        for id in this {
            eprintln!(
                "medic: run {id} was left running by a process that died: now marked interrupted"
            );
        }
        if !others.is_empty() {
            eprintln!(
                "medic: found {} run{} whose process died mid-run, now marked interrupted: {}\n  = help: `medic runs show ID`, then `medic runs resume ID` or `medic runs rollback ID`",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                others.join(", ")
            );
        }
        Ok(store)
    }

    fn color_stderr(&self) -> bool {
        use std::io::IsTerminal;
        self.color_for(std::io::stderr().is_terminal())
    }

    fn color(&self) -> bool {
        use std::io::IsTerminal;
        self.color_for(std::io::stdout().is_terminal())
    }

    /// What shows a run's events on stdout as `format` asks: lines for a person, or a JSON
    /// object an event.
    fn shown_as(&self, format: OutputFormat) -> Box<dyn crate::executor::Observer> {
        match format {
            OutputFormat::Human => Box::new(output::HumanOutput::new(self.color(), self.verbose)),
            OutputFormat::Json => Box::new(output::JsonOutput),
        }
    }

    fn color_for(&self, terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

fn init_tracing(verbose: u8, color: bool) {
    let default = match verbose {
        // Plugin lines are shown with their step by the progress output; -v streams them live.
        0 => "warn,medic::plugin=off",
        1 => "warn,medic::plugin=info",
        // Medic's own events only: other crates log what passes through them at debug level
        // (wasmtime-wasi a plugin's raw stderr, HTTP clients URLs and headers), before any
        // secret in it could be masked.
        2 => "warn,medic=debug",
        _ => "info,medic=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .try_init();
}

/// The command line, where a `MEDIC_*` variable that is set but empty counts as unset, as an
/// empty `XDG_*` does: `MEDIC_SERVER= medic run ...` is how a responder runs locally while the
/// server in their profile is down, and an empty value left by a template is neither a path
/// nor a URL. An empty value typed after a flag (`--data-dir ""`) is still refused.
fn command() -> clap::Command {
    fn unset_empty(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty());
            if empty { arg.env(None::<&str>) } else { arg }
        })
        .mut_subcommands(unset_empty)
    }
    unset_empty(Cli::command())
}

pub fn main() -> ExitCode {
    // Everything Medic writes (records, approvals, the plugin cache) is this user's alone.
    crate::private::restrict_umask();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if !cli.command.changes_things() {
        // `medic runs list | head`: a reader that went away ends a read-only command quietly
        // (as SIGPIPE does for every other Unix tool), rather than in a panic on the next
        // write. Commands that change things keep ignoring it: a closed pipe must not stop a
        // run half-way, and their output tolerates a missing reader.
        // SAFETY: resetting one signal's disposition at start, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::StoreDaemon = cli.command {
        let Ok(dir) = cli.global.data_dir() else {
            return Exit::Invalid.into();
        };
        return ExitCode::from(u8::try_from(crate::store::daemon::run(&dir)).unwrap_or(3));
    }
    init_tracing(cli.global.verbose, cli.global.color_stderr());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medic: cannot start the async runtime: {e}");
            return Exit::Engine.into();
        }
    };
    if cli.global.server.is_some()
        && let Some(what) = cli.command.local_only()
    {
        // Acting on this machine's store while the user thinks of the server would be
        // worse than refusing.
        eprintln!(
            "medic: `{what}` does not go through --server (MEDIC_SERVER) yet; unset it to run it on this machine"
        );
        return Exit::Invalid.into();
    }
    let exit = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(&cli.global, args).await,
            Command::Validate(args) => run::validate(&cli.global, args).await,
            Command::Plan(args) => run::plan(&cli.global, args).await,
            Command::Schema { format } => {
                let schema = match format {
                    SchemaFormat::Runbook => crate::runbook::schema::runbook(),
                    SchemaFormat::Drill => crate::drill::schema(),
                    SchemaFormat::Trigger => crate::trigger::schema(),
                };
                println!(
                    "{}",
                    serde_json::to_string_pretty(schema).expect("serialize")
                );
                Exit::Success
            }
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut <Cli as clap::CommandFactory>::command(),
                    "medic",
                    &mut std::io::stdout(),
                );
                Exit::Success
            }
            Command::Man => {
                let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
                match man.render(&mut std::io::stdout()) {
                    Ok(()) => Exit::Success,
                    Err(e) => {
                        eprintln!("medic: {e}");
                        Exit::Engine
                    }
                }
            }
            Command::Plugin(cmd) => plugin::main(&cli.global, cmd).await,
            Command::Drill(cmd) => drill::main(&cli.global, cmd).await,
            Command::Trigger(cmd) => trigger::main(&cli.global, cmd).await,
            Command::Serve(args) => drill::serve(&cli.global, args).await,
            Command::Runs(cmd) => runs::main(&cli.global, cmd).await,
            Command::Stats(args) => runs::stats(&cli.global, args),
            Command::Approve(args) => approve::decide(&cli.global, args, true),
            Command::Token(cmd) => token::main(&cli.global, cmd),
            Command::Audit(args) => token::audit(&cli.global, args),
            Command::Reject(args) => approve::decide(&cli.global, args, false),
            Command::Demo(args) => demo::demo(&cli.global, args).await,
            Command::DemoService(args) => demo::service(args).await,
            Command::StoreDaemon => unreachable!("handled before the runtime starts"),
        }
    });
    // Plugin calls never outlive their deadline, but don't let a stray task hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit.into()
}

/// Prints an engine error as a chain (`medic: a: b: c`) and returns the matching exit code.
fn engine_error(e: anyhow::Error) -> Exit {
    eprintln!("medic: {e:#}");
    Exit::Engine
}

fn parse_retention(s: &str) -> Result<std::time::Duration, String> {
    // An age looks back in time (`90d`): not bounded like a wait.
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 12h, 7d or 90d"))
}

/// Parses `--param name=value`.
fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("`{s}` has an empty name"));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaFormat {
    /// Runbook files
    Runbook,
    /// Drill files (`drills/*.toml`)
    Drill,
    /// Trigger files (`triggers/*.toml`)
    Trigger,
}
