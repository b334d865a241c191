//! Runbook validation snapshots: every file in `tests/runbooks/bad/` is one distinct mistake
//! whose exact report (message, `file:line:col`, excerpt, hint) is in the `.err` file beside
//! it. Every file in `tests/runbooks/good/` and `runbooks/` must validate.
//!
//! After an intended change of wording, regenerate with `MEDIC_BLESS=1 cargo test -p medic
//! --test e2e runbooks` and review the diff.

use std::path::{Path, PathBuf};

use medic::runbook::{self, Report, Source};

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Validates a runbook; the report on failure, with the repository path made stable.
fn check(path: &Path, label: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        // Runbooks with environments are checked against staging, as `medic validate --env staging`.
        let opts = runbook::PlanOptions {
            environment: text
                .contains("[environments.staging]")
                .then(|| "staging".into()),
            ..Default::default()
        };
        match runbook::plan(&host, &Source { path, text: &text }, &opts).await {
            Ok(plan) => Ok(format!("{} steps", plan.steps.len())),
            Err(diags) => {
                let report = Report {
                    path: label,
                    text: &text,
                    diagnostics: &diags,
                }
                .to_string();
                Err(report.replace(&repo().display().to_string(), "<repo>") + "\n")
            }
        }
    })
}

#[test]
fn bad_runbooks_report_their_exact_mistakes() {
    let dir = repo().join("tests/runbooks/bad");
    let bless = std::env::var_os("MEDIC_BLESS").is_some();
    let files = toml_files(&dir);
    assert!(files.len() >= 30, "only {} bad runbooks", files.len());
    let mut mismatches = Vec::new();
    let mut seen_messages = std::collections::BTreeSet::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let report = match check(file, &format!("bad/{name}")) {
            Ok(_) => {
                mismatches.push(format!("{name}: validated, but it is supposed to be wrong"));
                continue;
            }
            Err(r) => r,
        };
        // Each file must teach something different: its first error line is unique (files
        // named several_* combine mistakes on purpose).
        if !name.starts_with("several_") {
            assert!(
                seen_messages.insert(report.lines().next().unwrap().to_owned()),
                "{name} repeats another file's mistake"
            );
        }
        let expected_path = file.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &report).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == report => {}
            Ok(expected) => mismatches.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{report}"
            )),
            Err(_) => mismatches.push(format!(
                "{name}: no {} (run with MEDIC_BLESS=1)\n{report}",
                expected_path.display()
            )),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn good_and_example_runbooks_validate() {
    let mut files = toml_files(&repo().join("tests/runbooks/good"));
    files.extend(toml_files(&repo().join("runbooks")));
    assert!(files.len() >= 3);
    for file in files {
        if let Err(report) = check(&file, &file.display().to_string()) {
            panic!("{} does not validate:\n{report}", file.display());
        }
    }
}
