//! The command line as responders and plugin authors meet it: approvals from another
//! terminal, a plan without its secrets, list parameters, prompts, `runs follow` (Ctrl-C
//! included) and `runs rerun`, completions and the manual page, `validate --output json`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::cli::{decide, medic, medic_command, scripted_runbook, stderr, stdout};

#[test]
fn approval_steps_pause_until_approved_or_rejected_from_another_process() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The prompt is a template: approvers see the value, not `{{ params.color }}`.
    let body = "[[steps]]\nid = \"prepare\"\nuses = \"act\"\n\n\
                [[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"30s\", prompt = \"switch traffic to {{ params.color }}?\" }\n";
    let rb = scripted_runbook(
        dir.path(),
        "\n[params.color]\ntype = \"string\"\ndefault = \"green\"\n",
        body,
    );
    let approvals = cache.path().join("data/approvals");
    for (approve, code) in [(true, 0), (false, 1)] {
        let child = medic_command(cache.path())
            .args(["run", rb.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait (bounded) until the run asks.
        let waiting = crate::support::pending_approvals(&approvals);
        assert_eq!(waiting.len(), 1, "the run never asked for approval");
        assert_eq!(waiting[0].step, "go_live");
        let listed = medic(cache.path(), &["approve"]);
        assert!(
            stdout(&listed).contains("switch traffic to green?"),
            "{}",
            stdout(&listed)
        );
        // Listed as waiting on a person (the run holds the store: read through it).
        let o = medic(cache.path(), &["runs", "list", "--status", "waiting"]);
        assert!(
            stdout(&o).contains(&waiting[0].run_id)
                && stdout(&o).contains("running (waiting for approval)"),
            "{}{}",
            stdout(&o),
            stderr(&o)
        );
        // A reason without the run: refused, naming the run that waits.
        let o = medic(cache.path(), &["approve", "--reason", "looks fine"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("medic approve {} --reason", waiting[0].run_id)),
            "{}",
            stderr(&o)
        );
        // For machines: one object per waiting run.
        let listed = medic(cache.path(), &["approve", "--output", "json"]);
        let lines: Vec<serde_json::Value> = stdout(&listed)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{}", stdout(&listed));
        assert_eq!(lines[0]["run_id"], waiting[0].run_id.as_str());
        assert_eq!(lines[0]["prompt"], "switch traffic to green?");
        // A prefix of the run id is enough.
        if approve {
            decide(
                cache.path(),
                approve,
                &waiting[0].run_id[..10],
                "INC-7 checked dashboards",
            );
        } else {
            let o = medic(
                cache.path(),
                &[
                    "reject",
                    &waiting[0].run_id[..10],
                    "--reason",
                    "INC-7 checked dashboards",
                    "--output",
                    "json",
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
            assert_eq!(v["decision"], "rejected", "{v}");
            assert_eq!(v["run_id"], waiting[0].run_id.as_str(), "{v}");
            assert_eq!(v["step"], "go_live", "{v}");
            assert_eq!(
                (v["approvals"].as_u64(), v["needed"].as_u64()),
                (Some(0), Some(1)),
                "{v}"
            );
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(code), "{text}");
        assert!(
            text.contains("⏸ go_live waits for approval (up to 30s): switch traffic to green?"),
            "{text}"
        );
        if approve {
            assert!(
                text.contains("✓ go_live approved by") && text.contains("INC-7 checked dashboards"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("rejected by") && text.contains("INC-7 checked dashboards"),
                "{text}"
            );
        }
        let shown = medic(cache.path(), &["runs", "show", &waiting[0].run_id]);
        assert!(
            stdout(&shown).contains(if approve {
                "approved by"
            } else {
                "rejected by"
            }),
            "{}",
            stdout(&shown)
        );
    }
    // Nobody answers: the step fails when the timeout passes.
    let quick = scripted_runbook(
        dir.path(),
        "\n[params.color]\ntype = \"string\"\ndefault = \"green\"\n",
        &body.replace("30s", "300ms"),
    );
    let o = medic(cache.path(), &["run", quick.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("no approval within 300ms"),
        "{}",
        stdout(&o)
    );
    let o = medic(cache.path(), &["approve", "01zzzz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no run matching `01zzzz` is waiting for an approval"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plan_needs_no_secret_and_a_list_parameter_takes_the_json_form() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic_command(cache.path())
        .env_remove("SUPERVISOR_PASSWORD")
        .args([
            "plan",
            "runbooks/rolling-restart.toml",
            "-p",
            r#"programs=["web-1", "web,2"]"#,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("password = <secret from $SUPERVISOR_PASSWORD>"),
        "{out}"
    );
    // Two programs, the second with a comma in its name: not three, not `["web-1"`.
    assert!(out.contains(r#"fleet: ["web-1", "web,2"]"#), "{out}");
    // A run needs the secret, and says which variable is missing.
    let o = medic_command(cache.path())
        .env_remove("SUPERVISOR_PASSWORD")
        .args(["run", "runbooks/rolling-restart.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SUPERVISOR_PASSWORD, which is not set"),
        "{}",
        stderr(&o)
    );
    // A list that is neither form says how to write it.
    let o = medic(
        cache.path(),
        &[
            "plan",
            "runbooks/rolling-restart.toml",
            "-p",
            "programs=['a']",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(r#"write ["a", "b"] with double quotes, or a,b"#),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_approval_prompt_may_not_show_a_secret() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "\n[params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"MEDIC_TEST_TOKEN\"\n",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\n\
         approval = { timeout = \"30s\", prompt = \"use {{ params.token }}?\" }\n",
    );
    let o = medic(cache.path(), &["validate", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("an approval prompt cannot use a secret parameter"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn shell_completions_and_the_manual_page_come_from_the_command_line() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic(cache.path(), &["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let script = cache.path().join("medic.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    // bash loads it and registers the completion.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p medic", script.display()))
        .output()
        .unwrap();
    assert_eq!(loaded.status.code(), Some(0), "{}", stderr(&loaded));
    assert!(stdout(&loaded).contains("_medic"), "{}", stdout(&loaded));
    for shell in ["zsh", "fish"] {
        let o = medic(cache.path(), &["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("approve"), "{shell}: {}", stdout(&o));
    }
    let man = medic(cache.path(), &["man"]);
    assert_eq!(man.status.code(), Some(0), "{}", stderr(&man));
    let page = stdout(&man);
    assert!(page.contains(".TH medic 1"), "{page}");
    for sub in [
        "run",
        "plan",
        "runs",
        "approve",
        "drill",
        "serve",
        "completions",
    ] {
        assert!(
            page.contains(&format!("medic\\-{sub}(1)")),
            "{sub} not in the manual:\n{page}"
        );
    }
    // The demo's service is a fixture, hidden from both on purpose.
    assert!(!page.contains("demo\\-service"), "{page}");
}

#[test]
fn runs_follow_shows_a_run_from_another_terminal_until_it_ends_and_rerun_repeats_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "\n[params.color]\ntype = \"string\"\ndefault = \"green\"\n\n\
         [environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"prepare\"\nuses = \"act\"\n\n\
         [[steps]]\nid = \"go_live\"\nuses = \"act\"\n\
         approval = { timeout = \"30s\", prompt = \"switch to {{ params.color }}?\" }\n",
    );
    let rb = rb.to_str().unwrap();
    let run = medic_command(cache.path())
        .args(["run", rb, "-p", "color=blue", "--env", "staging"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = crate::support::pending_approvals(&cache.path().join("data/approvals"));
    assert_eq!(waiting.len(), 1, "the run never asked for approval");
    let id = waiting[0].run_id.clone();
    // Another terminal follows it (through the socket of the process running it).
    let mut follower = medic_command(cache.path())
        .args(["runs", "follow", &id[..10]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let asked = line.contains("waits for approval");
        seen.push(line);
        if asked {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("switch to blue?")),
        "{seen:#?}"
    );
    // A second follower's Ctrl-C ends the following, never the run: it still waits.
    let mut quitter = medic_command(cache.path())
        .args(["runs", "follow", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut q_lines = BufReader::new(quitter.stdout.take().unwrap()).lines();
    assert!(
        q_lines
            .by_ref()
            .map(Result::unwrap)
            .any(|l| l.contains("waits for approval")),
        "the second follower never showed the wait"
    );
    crate::verdicts::signal(quitter.id(), crate::verdicts::SIGINT);
    let q = quitter.wait_with_output().unwrap();
    assert_eq!(
        q.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&q.stderr)
    );
    assert!(
        String::from_utf8_lossy(&q.stderr)
            .contains(&format!("stopped following run {id}; it goes on")),
        "{}",
        String::from_utf8_lossy(&q.stderr)
    );
    let still = crate::support::pending_approvals(&cache.path().join("data/approvals"));
    assert_eq!(
        still.len(),
        1,
        "the run stopped waiting when a follower left"
    );
    assert_eq!(still[0].run_id, id);
    decide(cache.path(), true, &id, "INC-9");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = follower.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}\n{rest:#?}");
    assert!(
        rest.last()
            .is_some_and(|l| l == &format!("run {id}: succeeded")),
        "{rest:#?}"
    );
    let mut run = run;
    assert_eq!(run.wait().unwrap().code(), Some(0));
    // Following a run that ended shows all of it and exits as it did.
    let o = medic(cache.path(), &["runs", "follow", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("go_live"), "{}", stdout(&o));

    // Rerun: the same runbook, parameters and environment, as a new run (it asks again).
    let again = medic_command(cache.path())
        .args(["runs", "rerun", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = crate::support::pending_approvals(&cache.path().join("data/approvals"));
    if waiting.len() != 1 {
        let mut again = again;
        let _ = again.kill();
        let out = again.wait_with_output().unwrap();
        panic!(
            "the rerun never asked for approval: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_ne!(waiting[0].run_id, id);
    assert_eq!(waiting[0].prompt, "switch to blue?");
    decide(cache.path(), true, &waiting[0].run_id, "INC-9 again");
    let out = again.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<serde_json::Value> =
        stdout(&medic(cache.path(), &["runs", "list", "--output", "json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["environment"], "staging");
    assert_eq!(runs[0]["params"], runs[1]["params"]);
    // A run in a protected environment needs a new approval to be run again.
    let plain = scripted_runbook(
        dir.path(),
        "\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"prepare\"\nuses = \"act\"\n",
    );
    let o = medic(
        cache.path(),
        &[
            "run",
            plain.to_str().unwrap(),
            "--env",
            "prod",
            "--approve",
            "INC-9",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let prod: serde_json::Value = serde_json::from_str(
        stdout(&medic(
            cache.path(),
            &["runs", "list", "--env", "prod", "--output", "json"],
        ))
        .lines()
        .next()
        .unwrap(),
    )
    .unwrap();
    let prod_id = prod["run_id"].as_str().unwrap();
    let o = medic(cache.path(), &["runs", "rerun", prod_id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is protected"), "{}", stderr(&o));
    let o = medic(
        cache.path(),
        &["runs", "rerun", prod_id, "--approve", "INC-9 again"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn validate_speaks_json_for_machines() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = medic(
        cache.path(),
        &["validate", "runbooks/demo.toml", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["runbook"].as_str()),
        (Some(true), Some("demo-deploy"))
    );
    assert_eq!(v["steps"], 4, "{v}");
    // Every mistake, with where it is; exit 2 as for people.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[runbook]\nname = \"x\"\n\n[[steps]]\nid = \"a\"\nuses = \"nope\"\n\n[[steps]]\nid = \"a\"\nuses = \"nope\"\n",
    )
    .unwrap();
    let o = medic(
        cache.path(),
        &["validate", bad.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    let diags = v["diagnostics"].as_array().unwrap();
    assert!(diags.len() >= 2, "{v}");
    assert!(
        diags
            .iter()
            .any(|d| d["severity"] == "error" && d["at"]["line"] == 6 && d["at"]["col"] == 8),
        "{v}"
    );
    assert_eq!(stderr(&o), "", "JSON mode says it all on stdout");
}

/// `medic plan --output json`: the plan as one object (stages, undo order, rendered
/// arguments), its secrets never read, nor shown even when present.
#[test]
fn plan_speaks_json_for_machines() {
    let cache = tempfile::tempdir().unwrap();
    let o = medic_command(cache.path())
        .env("UNLEASH_ADMIN_TOKEN", "s3cr3t-admin-token")
        .args([
            "plan",
            "runbooks/flag-rollout.toml",
            "-p",
            "flag=checkout-v2",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains("s3cr3t"), "a secret shown: {text}");
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["runbook"], "flag-rollout");
    assert_eq!(plan["on_interrupted"], "rollback");
    let token = |plan: &serde_json::Value| {
        plan["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "token")
            .unwrap()
            .clone()
    };
    // Present: checked, never shown.
    let t = token(&plan);
    assert_eq!(
        (&t["value"], &t["secret"]),
        (&serde_json::Value::Null, &serde_json::json!(true))
    );
    // Absent: where a run will read it.
    let o = medic_command(cache.path())
        .env_remove("UNLEASH_ADMIN_TOKEN")
        .args(["plan", "runbooks/flag-rollout.toml", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let absent: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(token(&absent)["from"], "$UNLEASH_ADMIN_TOKEN");
    let weights: Vec<u64> = plan["rollout"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [5, 25, 100]);
    assert_eq!(
        plan["undo"],
        serde_json::json!(["rollout_100", "rollout_25", "rollout_5"])
    );
    let stage = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "rollout_25")
        .unwrap();
    assert_eq!(stage["with"]["flag"], "checkout-v2");
    assert_eq!(stage["with"]["rollout"], "25");
    assert_eq!(stage["with"]["token"], serde_json::Value::Null);
    assert_eq!(stage["rollback"], "revert");
    let gate = plan["verify"][0]["gate"].clone();
    assert_eq!(
        (gate["successes"].as_u64(), gate["failures"].as_u64()),
        (Some(3), Some(20))
    );
    assert_eq!(plan["plugins"][0]["grants"]["kv"], true);
}

/// Splits a shell command line into words (quotes kept together, shell operators end it).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, ' ') => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, '|' | '>' | '<' | ';' | '&') => break,
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// The README's command reference is true: every `medic ...` line in its shell blocks is one
/// the command line accepts (synopses with `[optional]` parts are checked without them), and
/// every command and subcommand appears in it.
#[test]
fn the_readme_command_reference_matches_the_command_line() {
    use clap::{CommandFactory, Parser};
    let readme = std::fs::read_to_string(crate::cli::repo().join("README.md")).unwrap();
    let mut in_sh = false;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, line) in readme.lines().enumerate() {
        if let Some(lang) = line.strip_prefix("```") {
            in_sh = !in_sh && lang == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let cmd = line.split(" #").next().unwrap_or_default().trim();
        if !cmd.starts_with("medic ") {
            continue;
        }
        // A synopsis: its optional parts are shown in brackets; the rest must parse.
        let cmd: String = {
            let mut depth = 0;
            cmd.chars()
                .filter(|c| {
                    match c {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            return false;
                        }
                        _ => {}
                    }
                    depth == 0
                })
                .collect()
        };
        let args = words(&cmd);
        checked += 1;
        if let Err(e) = medic::cli::Cli::try_parse_from(&args) {
            use clap::error::ErrorKind;
            if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                failures.push(format!("README.md:{}: {cmd}\n{e}", n + 1));
            }
        }
    }
    assert!(checked > 30, "only {checked} command lines found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every command and subcommand is in the README (hidden ones excepted).
    fn paths(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix} {}", sub.get_name());
            out.push(path.clone());
            paths(sub, &path, out);
        }
    }
    let mut all = Vec::new();
    paths(&medic::cli::Cli::command(), "medic", &mut all);
    let missing: Vec<&String> = all
        .iter()
        .filter(|p| !readme.contains(p.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}

/// A run killed while it waits for an approval: its request is left on disk, but nobody
/// will act on a decision. `medic approve` must not say "approved" to a responder who then
/// waits for a change that never comes: it refuses, names the run and what to do, and the
/// list of waiting approvals leaves the request out.
#[test]
fn approving_a_run_killed_while_it_waited_is_refused_and_names_the_interrupted_run() {
    let cache = tempfile::tempdir().unwrap();
    let (mut child, id) = waiting_for_approval(cache.path());
    child.kill().unwrap();
    child.wait().unwrap();

    let o = medic(cache.path(), &["approve", &id, "--reason", "go"]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("nobody waits for this approval any more")
            && err.contains(&format!("medic runs rollback {id}")),
        "{err}"
    );
    assert!(!stdout(&o).contains("approved"), "{}", stdout(&o));
    let o = medic(cache.path(), &["approve"]);
    assert!(
        stdout(&o).contains("no run is waiting for an approval"),
        "{}",
        stdout(&o)
    );
}

/// A responder reaching for `runs rollback` while the run is still waiting (its terminal
/// elsewhere): refused, told it is still running and how to stop it, and the run still
/// takes its decision afterwards. Two processes must never act on the same systems at once.
#[test]
fn rolling_back_or_resuming_a_run_still_running_is_refused_and_says_how_to_stop_it() {
    let cache = tempfile::tempdir().unwrap();
    let (child, id) = waiting_for_approval(cache.path());
    for verb in ["rollback", "resume"] {
        let o = medic(cache.path(), &["runs", verb, &id]);
        assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "run {id} is still running (process {})",
                child.id()
            )) && err.contains("stop it first"),
            "{err}"
        );
    }
    let o = medic(cache.path(), &["reject", &id, "--reason", "not now"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run took the rejection: failed"
    );
}

/// A `medic run` (its process, and its run's id) waiting for an approval before its only
/// step acts.
fn waiting_for_approval(cache: &std::path::Path) -> (std::process::Child, String) {
    let rb = scripted_runbook(
        cache,
        "",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"60s\" }\n",
    );
    let child = medic_command(cache)
        .args(["run", rb.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = crate::support::pending_approvals(&cache.join("data/approvals"));
    assert_eq!(waiting.len(), 1, "the run never asked");
    let id = waiting[0].run_id.clone();
    (child, id)
}
