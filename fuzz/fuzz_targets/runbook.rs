//! A runbook's text, parsed, validated and planned (builtin plugins only: a fuzzed path is
//! never read), and every diagnostic rendered. Must never panic nor hang.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medic::host::{HostConfig, PluginHost};
use medic::runbook::{PlanOptions, Report, Source};

fn host() -> &'static (PluginHost, tokio::runtime::Runtime) {
    static HOST: OnceLock<(PluginHost, tokio::runtime::Runtime)> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = PluginHost::new(HostConfig {
            cache_dir: Some(std::env::temp_dir().join("medic-fuzz-cache")),
            max_instances: 16,
            ..HostConfig::default()
        })
        .expect("host");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (host, rt)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A plugin source that is a path would read the file system: builtins only.
    if text.contains("source")
        && !text.lines().all(|l| {
            let l = l.trim_start();
            !l.starts_with("source") || l.contains("builtin:")
        })
    {
        return;
    }
    if text.contains("from_file") {
        return;
    }
    let (host, rt) = host();
    let path = Path::new("fuzz.toml");
    let src = Source { path, text };
    for environment in [None, Some("staging".to_owned())] {
        let opts = PlanOptions {
            environment,
            defer_secrets: true,
            ..PlanOptions::default()
        };
        if let Err(diagnostics) = rt.block_on(medic::runbook::plan(host, &src, &opts)) {
            let _ = Report {
                path: "fuzz.toml",
                text,
                diagnostics: &diagnostics,
            }
            .to_string();
        }
    }
});
