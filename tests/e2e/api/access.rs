//! Roles, environments, approval policy, tokens, limits and the audit log.

use std::time::Duration;

use super::*;
use crate::cli::{stderr, stdout};
use crate::support::*;

#[test]
fn each_role_gets_what_it_may_do_over_https_and_everything_is_audited() {
    let site = Site::new();
    let admin = site.token("ops", &["--role", "admin"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let responder = site.token("fix", &["--role", "responder"]);
    let approver_staging = site.token("lead-staging", &["--role", "approver", "--env", "staging"]);
    let approver_prod = site.token("lead-prod", &["--role", "approver", "--env", "prod"]);
    let brief = site.token("brief", &["--role", "viewer", "--expires", "1s"]);

    let (serve, api) = site.serve(true);
    let base = api.base.clone();
    let (status, me) = api.get("/whoami", &viewer);
    assert_eq!((status, me["role"].as_str()), (200, Some("viewer")));
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = Api::new(base.replacen("https://", "http://", 1), None);
    let answered = plain.rt.block_on(async {
        plain
            .client
            .get(format!("{}/health", plain.base))
            .send()
            .await
    });
    assert!(
        !matches!(answered, Ok(r) if r.status().is_success()),
        "plain HTTP answered on the HTTPS port"
    );

    // A run in the protected environment, waiting for an approval, started through serve.
    let (run, id) = site.waiting_run(
        "\n[environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "INC-7",
    );

    // Everyone may read.
    let (status, runs) = api.get("/runs?status=running", &viewer);
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["runs"][0]["run_id"].as_str(), Some(id.as_str()));
    let (status, pending) = api.get("/approvals", &viewer);
    assert_eq!(
        (status, pending["approvals"][0]["step"].as_str()),
        (200, Some("go_live"))
    );
    let (status, shown) = api.get(&format!("/runs/{id}"), &viewer);
    assert_eq!(
        (status, shown["run"]["environment"].as_str()),
        (200, Some("prod"))
    );

    // Each refused what its role or environments do not allow, naming why.
    let reason = serde_json::json!({ "reason": "INC-7: checked the canary" });
    let approve = format!("/approvals/{id}/approve");
    let (status, e) = api.post(&approve, &viewer, reason.clone());
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (status, e) = api.post(&approve, &responder, reason.clone());
    assert_eq!(status, 403, "{e}");
    let (status, e) = api.post(
        &format!("/runs/{id}/cancel"),
        &responder,
        serde_json::json!({}),
    );
    assert_eq!(
        status, 403,
        "a protected environment must be granted by name: {e}"
    );
    let (status, e) = api.post(&approve, &approver_staging, reason.clone());
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("environment `prod`"),
        "{e}"
    );
    let (status, e) = api.get("/audit", &viewer);
    assert_eq!(status, 403, "{e}");
    // A decision needs a reason; a malformed body is a 400, not a crash.
    let (status, e) = api.post(&approve, &approver_prod, serde_json::json!({}));
    assert_eq!(status, 400, "{e}");
    let (status, e) = api.call(
        reqwest::Method::POST,
        &approve,
        Some(&approver_prod),
        Some(serde_json::json!({ "reason": 5 })),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );

    // The approver granted prod decides; the run goes on.
    let (status, d) = api.post(&approve, &approver_prod, reason);
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["by"].as_str(), Some("token:lead-prod"));
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("approved by token:lead-prod"), "{text}");

    // Revoked and expired tokens are refused.
    let o = site
        .medic()
        .args(["token", "revoke", "look"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(api.get("/whoami", &viewer).0, 401);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(api.get("/whoami", &brief).0, 401);

    // The audit log has every change and refusal, who, from where, and no token.
    let (status, audit) = api.get("/audit?limit=1000", &admin);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let has = |who: &str, action: &str, result: &str| {
        entries.iter().any(|e| {
            e["who"] == who
                && e["action"].as_str().unwrap().contains(action)
                && e["result"].as_str().unwrap().starts_with(result)
                && e["from"] == "127.0.0.1"
        })
    };
    assert!(
        has(
            "token:lead-prod",
            &format!("POST /api/v1/approvals/{id}/approve"),
            "ok"
        ),
        "{audit}"
    );
    assert!(
        has("token:lead-staging", "/approve", "denied: forbidden"),
        "{audit}"
    );
    assert!(has("token:fix", "/cancel", "denied"), "{audit}");
    assert!(has("token:look", "GET /api/v1/audit", "denied"), "{audit}");
    assert!(
        has("anonymous", "GET /api/v1/whoami", "denied: no valid token"),
        "{audit}"
    );
    // Reads are audited too (who looked at what), and can be left out.
    assert!(has("token:look", "GET /api/v1/runs", "ok"), "{audit}");
    let (_, changes) = api.get("/audit?limit=1000&reads=false", &admin);
    let changes = changes["entries"].as_array().unwrap();
    assert!(
        changes.len() < entries.len()
            && changes.iter().all(|e| {
                !(e["action"].as_str().unwrap().starts_with("GET ") && e["result"] == "ok")
            })
            && changes
                .iter()
                .any(|e| e["result"] == "denied: no valid token"),
        "{changes:?}"
    );
    let o = site
        .medic()
        .args(["audit", "--no-reads", "--limit", "1000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), changes.len(), "{}", stdout(&o));
    let file = std::fs::read_to_string(site.data.join("audit.jsonl")).unwrap();
    let tokens_file = std::fs::read_to_string(site.data.join("tokens.json")).unwrap();
    for t in [
        &admin,
        &viewer,
        &responder,
        &approver_staging,
        &approver_prod,
        &brief,
    ] {
        assert!(!file.contains(t.as_str()) && !tokens_file.contains(t.as_str()));
    }
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn guessing_is_slowed_down_requests_are_bounded_and_plain_http_stays_on_loopback() {
    let site = Site::new();

    let o = site
        .medic()
        .args([
            "serve",
            "--drills",
            site.drills.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("plain HTTP is served on loopback addresses only"),
        "{}",
        stderr(&o)
    );

    let admin = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    assert_eq!(
        api.call(reqwest::Method::GET, "/health", None, None).0,
        200,
        "health needs no token"
    );
    let (status, ready) = api.call(reqwest::Method::GET, "/ready", None, None);
    assert_eq!(
        (status, ready["ready"].as_bool()),
        (200, Some(true)),
        "{ready}"
    );
    // Too big a body is refused before any handler reads it, and the connection is said
    // closed, so the client's next request never lands on it half-read.
    for _ in 0..5 {
        let big = serde_json::json!({ "reason": "x".repeat(100 << 10) });
        let (status, _) = api.post("/approvals/nope/approve", &admin, big);
        assert_eq!(status, 413);
        // Unknown paths are JSON 404s.
        let (status, e) = api.get("/nothing-here", &admin);
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }

    // Five wrong tokens, then the address waits, even with a good token.
    for _ in 0..5 {
        assert_eq!(api.get("/runs", "medic_guess").0, 401);
    }
    let (status, e) = api.get("/runs", "medic_guess");
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (429, Some("too_many_attempts"))
    );
    assert_eq!(api.get("/runs", &admin).0, 429);
    let entries = std::fs::read_to_string(site.data.join("audit.jsonl")).unwrap();
    assert!(
        entries.contains("too many failed authentications"),
        "{entries}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// An environment's approval policy holds for the CLI and the API alike: only the named
/// approvers count, each once, the run needs as many as declared, and whoever started the
/// run cannot approve it under any identity.
#[test]
fn an_approval_policy_needs_distinct_named_approvers_and_never_the_starter() {
    let site = Site::new();
    let me = medic::private::me();
    let approve_as = |name: &str| site.token(name, &["--role", "approver", "--env", "prod"]);
    let (lead_a, intruder, myself) = (
        approve_as("lead-a"),
        approve_as("intruder"),
        approve_as(&me),
    );
    // Named through a group: `approvers` lists `oncall-leads`, the token is in it.
    let lead_b = site.token(
        "lead-b",
        &[
            "--role",
            "approver",
            "--env",
            "prod",
            "--group",
            "oncall-leads",
        ],
    );
    let (serve, api) = site.serve(false);
    let (run, id) = site.waiting_run(
        &format!(
            "\n[environments.prod]\nprotected = true\napprovers = [\"lead-a\", \"oncall-leads\", \"intruder-not\", \"{me}\"]\nmin_approvals = 2\n"
        ),
        "INC-8",
    );
    let approve = format!("/approvals/{id}/approve");
    let reason = |r: &str| serde_json::json!({ "reason": r });

    // The starter, from the CLI or with a token of the same name, cannot approve.
    let o = site
        .medic()
        .args(["approve", &id, "--reason", "mine"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("started this run and cannot approve it"),
        "{}",
        stderr(&o)
    );
    let (status, e) = api.post(&approve, &myself, reason("mine"));
    assert_eq!(status, 403, "{e}");
    // Someone not named is refused; a named approver counts once however often they try.
    let (status, e) = api.post(&approve, &intruder, reason("me too"));
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not among"),
        "{e}"
    );
    for _ in 0..2 {
        let (status, d) = api.post(&approve, &lead_a, reason("INC-8: canary clean"));
        assert_eq!(
            (status, d["approvals"].as_u64(), d["needed"].as_u64()),
            (200, Some(1), Some(2)),
            "{d}"
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        pending_approvals(&site.data.join("approvals")).len(),
        1,
        "one approver of two let the run go"
    );
    // The web UI shows the quorum's progress (the refused ones do not count).
    let page = ui_page(&api, &lead_b, "/approvals");
    assert!(
        page.contains("Approved so far: token:lead-a (1 of 2)"),
        "{page}"
    );
    let (status, d) = api.post(&approve, &lead_b, reason("INC-8: agreed"));
    assert_eq!((status, d["approvals"].as_u64()), (200, Some(2)), "{d}");
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("approved by token:lead-a, token:lead-b"),
        "{text}"
    );
    assert_eq!(serve.stop(), Some(0));
}

/// In a protected environment without a policy an approval still comes from someone else:
/// the starter cannot give it (CLI or a token of the same name); any approver of the
/// environment can. In an unprotected one an approval step is the responder's own go-ahead.
#[test]
fn a_protected_environment_never_takes_the_starters_own_approval() {
    let site = Site::new();
    let me = medic::private::me();
    let myself = site.token(&me, &["--role", "approver", "--env", "prod"]);
    let other = site.token("lead", &["--role", "approver", "--env", "prod"]);
    let (serve, api) = site.serve(false);
    let (run, id) = site.waiting_run("\n[environments.prod]\nprotected = true\n", "INC-12");
    let approve = format!("/approvals/{id}/approve");
    let o = site
        .medic()
        .args(["approve", &id, "--reason", "mine"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("started this run and cannot approve it"),
        "{}",
        stderr(&o)
    );
    let (status, e) = api.post(&approve, &myself, serde_json::json!({ "reason": "mine" }));
    assert_eq!(status, 403, "{e}");
    let (status, d) = api.post(
        &approve,
        &other,
        serde_json::json!({ "reason": "INC-12: ok" }),
    );
    assert_eq!(status, 200, "{d}");
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unprotected: the starter says go.
    let rb = crate::cli::scripted_runbook(
        site.work.path(),
        "",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"60s\", prompt = \"switch?\" }\n",
    );
    let run = site
        .medic()
        .args(["run", rb.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = pending_approvals(&site.data.join("approvals"));
    assert_eq!(waiting.len(), 1);
    let o = site
        .medic()
        .args(["approve", &waiting[0].run_id, "--reason", "go"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(run.wait_with_output().unwrap().status.code(), Some(0));
    assert_eq!(serve.stop(), Some(0));
}

/// Under a quorum, one named approver's rejection ends the wait at once, whatever approvals
/// came before: the step fails and the run says who rejected it and why.
#[test]
fn one_rejection_under_a_quorum_fails_the_step() {
    let site = Site::new();
    let lead_a = site.token("lead-a", &["--role", "approver", "--env", "prod"]);
    let lead_b = site.token("lead-b", &["--role", "approver", "--env", "prod"]);
    let (serve, api) = site.serve(false);
    let (run, id) = site.waiting_run(
        "\n[environments.prod]\nprotected = true\napprovers = [\"lead-a\", \"lead-b\"]\nmin_approvals = 2\n",
        "INC-9",
    );
    let (status, d) = api.post(
        &format!("/approvals/{id}/approve"),
        &lead_a,
        serde_json::json!({ "reason": "looks fine" }),
    );
    assert_eq!((status, d["approvals"].as_u64()), (200, Some(1)), "{d}");
    let (status, d) = api.post(
        &format!("/approvals/{id}/reject"),
        &lead_b,
        serde_json::json!({ "reason": "INC-9: error budget spent" }),
    );
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("rejected")),
        "{d}"
    );
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rejected by token:lead-b") && text.contains("error budget spent"),
        "{text}"
    );
    assert_eq!(serve.stop(), Some(0));
}
