//! Runbook validation snapshots: every file in `tests/runbooks/bad/` is one distinct mistake
//! (or, for `several_*`, several) whose exact report (message, `file:line:col`, excerpt,
//! hint) is in the `.err` file beside it. Each file's first line names the lines of its
//! planted mistakes (`# mistakes on lines: 4, 7`): every one must be reported in the one run,
//! and nothing else. Every file in `tests/runbooks/good/` and `runbooks/` must validate.
//! Also `medic validate` and `medic plan` as a person runs them: every environment, warnings.
//!
//! After an intended change of wording, regenerate with `MEDIC_BLESS=1 cargo test -p medic
//! --test e2e runbooks` and review the diff.

use std::path::{Path, PathBuf};

use medic::runbook::{self, Report, Source};

use crate::cli::{medic, stderr, stdout};
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
/// `defer_secrets` as `medic validate` does (a secret's source need not exist here).
fn check(path: &Path, label: &str) -> Result<String, String> {
    check_with(path, label, false)
}

fn check_with(path: &Path, label: &str, defer_secrets: bool) -> Result<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        // Runbooks with environments are checked against staging, as `medic validate --env staging`.
        let opts = runbook::PlanOptions {
            environment: text
                .contains("[environments.staging]")
                .then(|| "staging".into()),
            defer_secrets,
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
                {
                    // A builtin's digest changes whenever its code or the SDK does.
                    let actual = regex::Regex::new(r"actual:   [0-9a-f]{64}").unwrap();
                    let report = report.replace(&repo().display().to_string(), "<repo>");
                    Err(actual
                        .replace_all(&report, "actual:   <digest>")
                        .into_owned()
                        + "\n")
                }
            }
        }
    })
}

#[test]
fn bad_runbooks_report_their_exact_mistakes() {
    let dir = repo().join("tests/runbooks/bad");
    let bless = std::env::var_os("MEDIC_BLESS").is_some();
    let files = toml_files(&dir);
    assert!(files.len() >= 100, "only {} bad runbooks", files.len());
    let mut mismatches = Vec::new();
    let mut planted_total = 0;
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
        // Every planted mistake is reported, at its line, and nothing else is.
        let text = std::fs::read_to_string(file).unwrap();
        let planted: std::collections::BTreeSet<usize> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# mistakes on lines:"))
            .unwrap_or_else(|| panic!("{name}: no `# mistakes on lines: N, ...` first line"))
            .split(',')
            .map(|n| n.trim().parse().expect("a line number"))
            .collect();
        planted_total += planted.len();
        let at = format!("--> bad/{name}:");
        let mut reported = std::collections::BTreeSet::new();
        let mut level = "";
        for line in report.lines() {
            if line.starts_with("error: ") {
                level = "error";
            } else if line.starts_with("warning: ") {
                level = "warning";
            }
            if let Some(pos) = line.trim_start().strip_prefix(&at)
                && level == "error"
            {
                reported.insert(pos.split(':').next().unwrap().parse::<usize>().unwrap());
            }
        }
        if planted != reported {
            mismatches.push(format!(
                "{name}: mistakes planted on lines {planted:?}, reported on lines {reported:?}"
            ));
        }
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
    assert!(
        planted_total >= 130,
        "only {planted_total} planted mistakes"
    );
}

/// Every good runbook's plan (`medic plan` output) is in the `.plan` file beside it.
#[test]
fn good_runbooks_have_the_expected_plan() {
    let bless = std::env::var_os("MEDIC_BLESS").is_some();
    let digest = regex::Regex::new(r"sha256 [0-9a-f]{12,16}").unwrap();
    let mut mismatches = Vec::new();
    for file in toml_files(&repo().join("tests/runbooks/good")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let rt = runtime();
        let plan = rt.block_on(async {
            let host = host_with_cache(None);
            let opts = runbook::PlanOptions {
                environment: text
                    .contains("[environments.staging]")
                    .then(|| "staging".into()),
                ..Default::default()
            };
            runbook::plan(
                &host,
                &Source {
                    path: &file,
                    text: &text,
                },
                &opts,
            )
            .await
            .expect("a good runbook")
        });
        // Digests change whenever a plugin is rebuilt; what the plan says around them does not.
        let rendered = medic::cli::output::render_plan(&plan, false)
            .replace(&repo().display().to_string(), "<repo>");
        let rendered = digest
            .replace_all(&rendered, "sha256 <digest>")
            .into_owned();
        let expected_path = file.with_extension("plan");
        if bless {
            std::fs::write(&expected_path, &rendered).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{rendered}",
                file.display()
            )),
            Err(_) => mismatches.push(format!(
                "{}: no .plan file (run with MEDIC_BLESS=1)",
                file.display()
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
        if let Err(report) = check_with(&file, &file.display().to_string(), true) {
            panic!("{} does not validate:\n{report}", file.display());
        }
    }
}

/// The subset of JSON Schema that `medic schema` uses: type, properties,
/// additionalProperties, required, items, enum, const, oneOf and local `$ref`s.
fn conforms(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    v: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value as J;
    if let Some(r) = schema.get("$ref").and_then(J::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return conforms(root, &root["$defs"][name], v, at);
    }
    if let Some(options) = schema.get("oneOf").and_then(J::as_array) {
        let ok = options
            .iter()
            .filter(|o| conforms(root, o, v, at).is_ok())
            .count();
        return if ok == 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches {ok} of the oneOf options"))
        };
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{at}: expected {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(J::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    let ty_ok = match schema.get("type").and_then(J::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("the validator does not know type {other}")),
    };
    if !ty_ok {
        return Err(format!("{at}: {v} is not {}", schema["type"]));
    }
    if let Some(obj) = v.as_object() {
        for req in schema
            .get("required")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                return Err(format!("{at}: missing {req}"));
            }
        }
        let props = schema.get("properties").and_then(J::as_object);
        for (k, child) in obj {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => conforms(root, s, child, &format!("{at}.{k}"))?,
                (None, Some(J::Bool(false))) => return Err(format!("{at}: unknown key {k}")),
                (None, Some(extra)) if extra.is_object() => {
                    conforms(root, extra, child, &format!("{at}.{k}"))?
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, child) in arr.iter().enumerate() {
            conforms(root, items, child, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn as_json(path: &Path) -> serde_json::Value {
    let t: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_value(t).unwrap()
}

#[test]
fn the_json_schema_accepts_every_valid_runbook_and_refuses_unknown_keys() {
    let schema = medic::runbook::schema::schema();
    let mut files = toml_files(&repo().join("tests/runbooks/good"));
    files.extend(toml_files(&repo().join("runbooks")));
    for f in &files {
        if let Err(e) = conforms(&schema, &schema, &as_json(f), "") {
            panic!("{} does not conform to the schema: {e}", f.display());
        }
    }
    for bad in [
        "unknown_step_key",
        "unknown_top_level_key",
        "rollback_malformed",
        "retry_unknown_on",
        "bad_on_failure",
    ] {
        let v = as_json(&repo().join(format!("tests/runbooks/bad/{bad}.toml")));
        assert!(
            conforms(&schema, &schema, &v, "").is_err(),
            "the schema accepts bad/{bad}.toml"
        );
    }
}

/// The runbook shown in the README is a real one: it validates (for both its environments).
#[test]
fn the_readme_runbook_validates() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, &readme[start..end]).unwrap();
    let text = readme[start..end].to_owned();
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        for env in ["staging", "prod"] {
            let opts = runbook::PlanOptions {
                environment: Some(env.into()),
                defer_secrets: true,
                sourced: None,
                ..Default::default()
            };
            if let Err(d) = runbook::plan(
                &host,
                &Source {
                    path: &path,
                    text: &text,
                },
                &opts,
            )
            .await
            {
                panic!(
                    "the README's runbook is invalid for {env}:\n{}",
                    Report {
                        path: "README.md",
                        text: &text,
                        diagnostics: &d
                    }
                );
            }
        }
    });
}

/// A URL the plugin's grants do not cover would be refused mid-run: validate and plan say so
/// with its place, as a warning (the plugin may not request it itself), and still succeed.
#[test]
fn a_url_outside_the_grants_is_a_warning_with_its_place() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("url.toml");
    std::fs::write(
        &rb,
        "[runbook]\nname = \"url\"\n\n[params.host]\ntype = \"string\"\ndefault = \"10.0.0.1:80\"\n\n\
         [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"127.0.0.1:8404\"] }\n\n\
         [[steps]]\nid = \"check\"\nuses = \"probe\"\nwith = { url = \"http://{{ params.host }}/health\" }\n\n\
         [[steps]]\nid = \"fine\"\nuses = \"probe\"\nwith = { url = \"http://127.0.0.1:8404/ok\" }\n",
    )
    .unwrap();
    for command in ["validate", "plan"] {
        let o = medic(cache.path(), &[command, rb.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{command}: {err}");
        assert!(
            err.contains("warning: step `check`, parameter `url`: `10.0.0.1` is outside plugin `probe`'s http grants"),
            "{command}: {err}"
        );
        assert!(err.contains("url.toml:15:16"), "{command}: {err}");
        assert!(err.contains("1 warning in"), "{command}: {err}");
        assert!(!err.contains("fine"), "{command}: {err}");
    }
}

#[test]
fn validate_reports_every_mistake_with_its_place() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(
        cache.path(),
        &["validate", "tests/runbooks/bad/several_mistakes.toml"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--> tests/runbooks/bad/several_mistakes.toml:"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("3 errors in tests/runbooks/bad/several_mistakes.toml"),
        "{err}"
    );

    let o = medic(cache.path(), &["validate", "runbooks/demo.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "runbooks/demo.toml is valid: runbook `demo-deploy`, 4 steps, 2 plugins"
    );

    // Without --env, every environment is checked and every mistake reported in one run:
    // those of all environments once, those of some with their environments named.
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("envs.toml");
    std::fs::write(
        &rb,
        "[runbook]\nname = \"envs\"\n\n\
         [environments.staging]\nvars = { host = \"127.0.0.1:8080\", port = \"8080\" }\n\n\
         [environments.prod]\nvars = { host = \"127.0.0.1:8081\" }\n\n\
         [environments.dev]\nvars = { host = \"127.0.0.1:8082\" }\n\n\
         [plugins.probe]\nsource = \"builtin:http-probe\"\ngrants = { http = [\"{{ vars.host }}\"] }\n\n\
         [[steps]]\nid = \"check\"\nuses = \"probe\"\ntimeout = \"soon\"\n\
         with = { url = \"http://{{ vars.host }}/{{ vars.port }}\" }\n",
    )
    .unwrap();
    let o = medic(cache.path(), &["validate", rb.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("`soon` is not a duration").count(), 1, "{err}");
    assert!(
        err.contains("unknown variable `port` in `vars.port` (in environments `dev`, `prod`)"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with(&format!("4 errors in {}", rb.display())),
        "{err}"
    );
}

#[test]
fn plan_shows_everything_and_touches_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let svc_addr = "127.0.0.1:9"; // nothing listens here: plan must not call anything
    let o = medic(
        cache.path(),
        &[
            "plan",
            "runbooks/demo.toml",
            "--param",
            &format!("host={svc_addr}"),
            "--param",
            "version=v7",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for expected in [
        "runbook demo-deploy",
        "version = v7",
        "url = http://127.0.0.1:9/deploy",
        "body_contains = {{ steps.deploy.outputs.version }}",
        "gate: every 200ms until 3 passes in a row; fails after 2 failures or at 10s",
        "retry: 3 attempts on transient failures, backoff 500ms",
        "rollback: http-deploy's revert",
        "undo: deploy",
        "verify (after a rollback)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
