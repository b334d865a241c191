//! `medic plugin inspect|list|new`.

use std::path::PathBuf;

use clap::Subcommand;

use super::scaffold;

use super::{Exit, GlobalArgs, OutputFormat, engine_error};
use crate::host::{BUILTINS, Plugin, PluginSource, limits::format_bytes};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's manifest, contract version, capabilities, size and digest
    Inspect {
        /// A .wasm file, builtin:NAME, or an https:// URL
        plugin: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Print the `sha256 = "..."` line that pins a plugin in a runbook's [plugins.NAME]
    /// table (after checking that this medic can load it)
    Pin {
        /// A .wasm file, builtin:NAME, or an https:// URL (downloaded to compute it)
        plugin: String,
    },
    /// List the builtin plugins
    List {
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Create a plugin crate, ready to build and run
    New {
        /// The plugin's name (lower case, digits, dashes)
        name: String,
        /// A check observes; an action changes something and can revert it
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// Where to create it (default: ./NAME); must not exist or be empty
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin-sdk directory to depend on (default: a copy of the SDK this binary
        /// carries, written into the new crate)
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

fn print_plugin(p: &Plugin) {
    let m = &p.manifest;
    // Everything in a manifest is the plugin's own text: shown with control characters
    // escaped, like every other text from a plugin.
    let clean = |s: &str| super::terminal::clean(s).into_owned();
    println!(
        "{} {} ({:?})",
        clean(&m.name),
        clean(&m.version.to_string()),
        m.kind
    );
    if !m.description.is_empty() {
        println!("  {}", clean(&m.description));
    }
    println!("source:       {}", p.source);
    println!("sha256:       {}", p.sha256);
    println!("size:         {}", format_bytes(p.size as u64));
    println!("contract:     {}", p.contract);
    println!(
        "capabilities: {}",
        if m.capabilities.is_empty() {
            "none".to_string()
        } else {
            m.capabilities.join(", ")
        }
    );
    println!(
        "revert:       {}",
        if m.supports_revert { "yes" } else { "no" }
    );
    println!(
        "dry run:      {}",
        if m.supports_dry_run { "yes" } else { "no" }
    );
    println!(
        "param check:  {}",
        if p.validates() {
            "yes (medic validate asks it)"
        } else {
            "no (built before contract 0.1.1)"
        }
    );
    println!("parameters:");
    if m.params.is_empty() {
        println!("  (none)");
    }
    for param in &m.params {
        let mut flags = vec![param.ty.to_string()];
        if param.required {
            flags.push("required".into());
        }
        if let Some(d) = &param.default {
            let shown = d.to_string();
            // An empty or padded text default would read as no default at all.
            if shown.is_empty() || shown.trim() != shown {
                flags.push(format!("default {shown:?}"));
            } else {
                flags.push(format!("default {}", clean(&shown)));
            }
        }
        if param.secret {
            flags.push("secret".into());
        }
        println!("  {:16} {}", clean(&param.name), flags.join(", "));
        if !param.description.is_empty() {
            println!("  {:16} {}", "", clean(&param.description));
        }
    }
}

fn new_plugin(
    name: &str,
    kind: scaffold::Kind,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> Exit {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let result = sdk
        .as_deref()
        .map(scaffold::sdk_dir)
        .transpose()
        .and_then(|sdk| scaffold::generate(name, kind, &dir, sdk.as_deref()));
    match result {
        Ok(files) => {
            println!(
                "created {} plugin `{name}` in {}:",
                format!("{kind:?}").to_lowercase(),
                dir.display()
            );
            for f in files {
                println!("  {}", f.display());
            }
            println!();
            println!("next:");
            println!("  cd {}", dir.display());
            println!("  cargo test                                     # native tests, fake host");
            println!("  cargo build --release --target wasm32-wasip2  # the component");
            println!(
                "  medic run runbook.toml                         # see runbook.toml's header"
            );
            Exit::Success
        }
        Err(e) => {
            eprintln!("medic: {e}");
            Exit::Invalid
        }
    }
}

/// A plugin named on the command line (a file, `builtin:NAME` or a URL), loaded and checked.
async fn load_given(global: &GlobalArgs, plugin: &str) -> Result<Plugin, Exit> {
    let host = global.host().map_err(engine_error)?;
    let source = PluginSource::parse(plugin, &std::env::current_dir().unwrap_or_default());
    host.load(&source, None).await.map_err(|e| {
        eprintln!("medic: {e}");
        Exit::Invalid
    })
}

/// A plugin as JSON: `plugin inspect --output json` and each line of `plugin list`.
fn plugin_json(p: &Plugin) -> serde_json::Value {
    serde_json::json!({
        "source": p.source.to_string(), "sha256": p.sha256, "size": p.size,
        "contract": p.contract, "checks_params": p.validates(), "manifest": p.manifest,
    })
}

pub async fn main(global: &GlobalArgs, cmd: PluginCommand) -> Exit {
    let host = || global.host().map_err(engine_error);
    match cmd {
        PluginCommand::New {
            name,
            kind,
            dir,
            sdk,
        } => new_plugin(&name, kind, dir, sdk),
        PluginCommand::Inspect { plugin, output } => match load_given(global, &plugin).await {
            Ok(p) => {
                match output {
                    OutputFormat::Human => print_plugin(&p),
                    OutputFormat::Json => println!("{}", plugin_json(&p)),
                }
                Exit::Success
            }
            Err(exit) => exit,
        },
        PluginCommand::Pin { plugin } => {
            // A pin of something this medic cannot run would only fail later, at the worst time.
            match load_given(global, &plugin).await {
                Ok(p) => {
                    println!("sha256 = \"{}\"", p.sha256);
                    eprintln!(
                        "medic: {} {} ({:?}, {}) from {}: paste the line into its [plugins.NAME] table",
                        super::terminal::clean(&p.manifest.name),
                        super::terminal::clean(&p.manifest.version.to_string()),
                        p.manifest.kind,
                        p.contract,
                        p.source
                    );
                    Exit::Success
                }
                Err(exit) => exit,
            }
        }
        PluginCommand::List { output } => {
            let host = match host() {
                Ok(h) => h,
                Err(exit) => return exit,
            };
            for b in BUILTINS {
                match host.load(&PluginSource::Builtin(b.name.into()), None).await {
                    // One object per line, as `plugin inspect --output json` prints it.
                    Ok(p) if output == OutputFormat::Json => println!("{}", plugin_json(&p)),
                    Ok(p) => println!(
                        "builtin:{:14} {:6} {:?}  {}",
                        b.name, p.manifest.version, p.manifest.kind, p.manifest.description
                    ),
                    Err(e) => {
                        return engine_error(anyhow::anyhow!("builtin {} is broken: {e}", b.name));
                    }
                }
            }
            Exit::Success
        }
    }
}
