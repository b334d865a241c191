//! The HTTP API of `medic serve --listen`, over real HTTPS with a certificate made here: each
//! role allowed and refused what it should be, environments granted by name, tokens revoked
//! and expired, failed authentication slowed down, requests bounded, every change and
//! refusal in the audit log and no token in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::{medic_command, stderr, stdout};
use crate::serve::Serve;
use crate::support::*;

/// A certificate for 127.0.0.1 signed by a CA made here (webpki refuses a CA certificate as a
/// server's own), made with openssl: (CA certificate, server certificate, server key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (Debian package openssl; scripts/setup --lab installs it)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=medic-test-ca"],
        ]
        .concat()
        .iter()
        .copied()
        .chain(["-keyout", &p("ca.key"), "-out", &p("ca.crt")])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .iter()
            .copied()
            .chain(["-keyout", &p("api.key"), "-out", &p("api.csr")])
            .collect::<Vec<_>>(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("api.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("api.crt"),
    ]);
    (dir.join("ca.crt"), dir.join("api.crt"), dir.join("api.key"))
}

/// `medic token create`: the token.
fn token(work: &Path, data: &Path, name: &str, args: &[&str]) -> String {
    let o = medic_command(work)
        .env("MEDIC_DATA_DIR", data)
        .args(["token", "create", name])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = stdout(&o).trim().to_owned();
    assert!(t.starts_with("medic_"), "{t}");
    t
}

/// A client with its own runtime: reqwest's connections belong to the runtime that made them.
struct Api {
    base: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Api {
    fn new(base: String, cert: Option<&Path>) -> Api {
        medic::host::install_crypto_provider();
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(cert) = cert {
            let pem = std::fs::read(cert).unwrap();
            b = b
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .https_only(true);
        }
        Api {
            base,
            rt: runtime(),
            client: b.build().unwrap(),
        }
    }

    /// (status, JSON body or null).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.rt.block_on(async {
            let mut r = self.client.request(method, format!("{}{path}", self.base));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let response = r.send().await.expect("request");
            let status = response.status().as_u16();
            let json = response.json().await.unwrap_or(serde_json::Value::Null);
            (status, json)
        })
    }

    fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
    }

    fn post(&self, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
    }
}

fn base_of(line: &str) -> String {
    line.split_once("API on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

#[test]
fn each_role_gets_what_it_may_do_over_https_and_everything_is_audited() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let (ca, cert, key) = certificate(work.path());
    let admin = token(work.path(), &data, "ops", &["--role", "admin"]);
    let viewer = token(work.path(), &data, "look", &["--role", "viewer"]);
    let responder = token(work.path(), &data, "fix", &["--role", "responder"]);
    let approver_staging = token(
        work.path(),
        &data,
        "lead-staging",
        &["--role", "approver", "--env", "staging"],
    );
    let approver_prod = token(
        work.path(),
        &data,
        "lead-prod",
        &["--role", "approver", "--env", "prod"],
    );
    let brief = token(
        work.path(),
        &data,
        "brief",
        &["--role", "viewer", "--expires", "1s"],
    );

    let mut serve = Serve::start(
        &data,
        &drills,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let base = base_of(&serve.wait_for("API on https://"));
    let api = Api::new(base.clone(), Some(&ca));
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
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "\n[environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"60s\", prompt = \"switch?\" }\n",
    );
    let run = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args([
            "run",
            rb.to_str().unwrap(),
            "--env",
            "prod",
            "--approve",
            "INC-7",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = pending_approvals(&data.join("approvals"));
    assert_eq!(waiting.len(), 1, "the run never asked for approval");
    let id = waiting[0].run_id.clone();

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
    let o = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
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
    let file = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let tokens_file = std::fs::read_to_string(data.join("tokens.json")).unwrap();
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
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();

    let o = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args([
            "serve",
            "--drills",
            drills.to_str().unwrap(),
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

    let admin = token(work.path(), &data, "ops", &["--role", "admin"]);
    let mut serve = Serve::start(&data, &drills, &["--listen", "127.0.0.1:0"]);
    let api = Api::new(base_of(&serve.wait_for("API on http://")), None);
    assert_eq!(
        api.call(reqwest::Method::GET, "/health", None, None).0,
        200,
        "health needs no token"
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
    let entries = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
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
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let me = medic::private::me();
    let approve_as = |name: &str| {
        token(
            work.path(),
            &data,
            name,
            &["--role", "approver", "--env", "prod"],
        )
    };
    let (lead_a, lead_b, intruder, myself) = (
        approve_as("lead-a"),
        approve_as("lead-b"),
        approve_as("intruder"),
        approve_as(&me),
    );
    let mut serve = Serve::start(&data, &drills, &["--listen", "127.0.0.1:0"]);
    let api = Api::new(base_of(&serve.wait_for("API on http://")), None);
    let rb = crate::cli::scripted_runbook(
        work.path(),
        &format!(
            "\n[environments.prod]\nprotected = true\napprovers = [\"lead-a\", \"lead-b\", \"intruder-not\", \"{me}\"]\nmin_approvals = 2\n"
        ),
        "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"60s\", prompt = \"switch?\" }\n",
    );
    let run = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
        .args([
            "run",
            rb.to_str().unwrap(),
            "--env",
            "prod",
            "--approve",
            "INC-8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = pending_approvals(&data.join("approvals"));
    assert_eq!(waiting.len(), 1, "the run never asked for approval");
    let id = waiting[0].run_id.clone();
    let approve = format!("/approvals/{id}/approve");
    let reason = |r: &str| serde_json::json!({ "reason": r });

    // The starter, from the CLI or with a token of the same name, cannot approve.
    let o = medic_command(work.path())
        .env("MEDIC_DATA_DIR", &data)
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
        pending_approvals(&data.join("approvals")).len(),
        1,
        "one approver of two let the run go"
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

/// Runs started through the API: from the catalogue of `--runbooks DIR`, by a responder in
/// its environments, a protected one only by name and with a reason, validation mistakes
/// answered with their place, and the run belonging to nobody's connection: it goes on,
/// is recorded as started by the token, and a responder can cancel it.
#[test]
fn a_responder_starts_and_cancels_runs_from_the_catalogue() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    let runbooks = work.path().join("runbooks");
    std::fs::create_dir(&drills).unwrap();
    std::fs::create_dir(&runbooks).unwrap();
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "\n[params.echo]\ntype = \"string\"\ndefault = \"hello\"\ndescription = \"What to say\"\n\n\
         [environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"say\"\nuses = \"act\"\nwith = { echo = \"{{ params.echo }}\" }\n\n\
         [[steps]]\nid = \"hold\"\nuses = \"act\"\nwhen = \"params.echo == 'wait'\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
    );
    std::fs::rename(&rb, runbooks.join("say.toml")).unwrap();
    let viewer = token(work.path(), &data, "look", &["--role", "viewer"]);
    let responder = token(work.path(), &data, "fix", &["--role", "responder"]);
    let prod = token(
        work.path(),
        &data,
        "fix-prod",
        &["--role", "responder", "--env", "prod"],
    );
    let mut serve = Serve::start(
        &data,
        &drills,
        &[
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
    );
    let api = Api::new(base_of(&serve.wait_for("API on http://")), None);

    let (status, list) = api.get("/runbooks", &viewer);
    assert_eq!(status, 200, "{list}");
    let say = &list["runbooks"][0];
    assert_eq!(
        (say["name"].as_str(), say["title"].as_str()),
        (Some("say"), Some("scripted"))
    );
    assert_eq!(say["params"][0]["name"].as_str(), Some("echo"));
    let prod_env = say["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap();
    assert_eq!(prod_env["protected"].as_bool(), Some(true));
    assert_eq!(api.get("/runbooks/..%2Fdata", &viewer).0, 404);

    let start = |token: &str, body: serde_json::Value| api.post("/runs", token, body);
    let (status, e) = start(
        &viewer,
        serde_json::json!({ "runbook": "say", "environment": "staging" }),
    );
    assert_eq!(status, 403, "{e}");
    let (status, e) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "prod", "reason": "INC-9" }),
    );
    assert_eq!(
        status, 403,
        "a protected environment must be granted by name: {e}"
    );
    let (status, e) = start(
        &prod,
        serde_json::json!({ "runbook": "say", "environment": "prod" }),
    );
    assert_eq!(status, 400, "a protected environment needs a reason: {e}");
    let (status, e) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "staging", "params": { "ecko": "x" } }),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (422, Some("invalid")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `echo`?"),
        "{e}"
    );

    // Started, then left alone: it runs to the end and is recorded as the token's.
    let (status, started) = start(
        &prod,
        serde_json::json!({ "runbook": "say", "environment": "prod", "reason": "INC-9: say it", "params": { "echo": "hi" } }),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let mut run = serde_json::Value::Null;
    for _ in 0..300 {
        run = api.get(&format!("/runs/{id}"), &viewer).1;
        if run["run"]["status"] != "running" && !run["run"].is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run["run"]["status"].as_str(), Some("succeeded"), "{run}");
    assert_eq!(
        run["run"]["trigger"]["caller"].as_str(),
        Some("token:fix-prod"),
        "{run}"
    );
    assert_eq!(
        run["run"]["approval"]["by"].as_str(),
        Some("token:fix-prod"),
        "{run}"
    );

    // One that waits is cancelled by a responder of its environment.
    let (status, started) = start(
        &responder,
        serde_json::json!({ "runbook": "say", "environment": "staging", "params": { "echo": "wait" } }),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(pending_approvals(&data.join("approvals")).len(), 1);
    let (status, c) = api.post(
        &format!("/runs/{id}/cancel"),
        &responder,
        serde_json::json!({}),
    );
    assert_eq!(status, 200, "{c}");
    for _ in 0..300 {
        run = api.get(&format!("/runs/{id}"), &viewer).1;
        if run["run"]["status"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run["run"]["status"].as_str(), Some("cancelled"), "{run}");
    assert_eq!(serve.stop(), Some(0));
}

/// Reads Server-Sent Events from `path` until `stop` says so (or the stream ends): their
/// (id, event type) in order.
fn read_events(
    api: &Api,
    path: &str,
    token: &str,
    last_id: Option<usize>,
    stop: impl Fn(&str) -> bool,
) -> Vec<(usize, String)> {
    api.rt.block_on(async {
        let mut r = api
            .client
            .get(format!("{}{path}", api.base))
            .bearer_auth(token);
        if let Some(id) = last_id {
            r = r.header("Last-Event-ID", id.to_string());
        }
        let mut response = r.send().await.expect("events");
        assert_eq!(response.status().as_u16(), 200);
        let mut buffer = String::new();
        let mut seen = Vec::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("the stream");
            let Some(chunk) = chunk else { return seen };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                if let (Some(id), Some(kind)) = (field("id:"), field("event:")) {
                    seen.push((id.parse().unwrap(), kind.clone()));
                    if stop(&kind) {
                        return seen;
                    }
                }
            }
        }
    })
}

/// A client following a run's events over SSE that drops mid-run and reconnects with
/// `Last-Event-ID` misses nothing and sees nothing twice, and the stream ends with the run.
#[test]
fn a_client_reconnecting_to_a_runs_events_misses_none() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    let runbooks = work.path().join("runbooks");
    std::fs::create_dir(&drills).unwrap();
    std::fs::create_dir(&runbooks).unwrap();
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "",
        "[[steps]]\nid = \"one\"\nuses = \"act\"\n\n[[steps]]\nid = \"hold\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n\n[[steps]]\nid = \"two\"\nuses = \"check\"\n",
    );
    std::fs::rename(&rb, runbooks.join("steps.toml")).unwrap();
    let ops = token(work.path(), &data, "ops", &["--role", "admin"]);
    let mut serve = Serve::start(
        &data,
        &drills,
        &[
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
    );
    let api = Api::new(base_of(&serve.wait_for("API on http://")), None);
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "steps" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let path = format!("/runs/{id}/events");

    let first = read_events(&api, &path, &ops, None, |k| k == "approval_requested");
    let last = first.last().unwrap().0;
    // Decided while nobody listens.
    let (status, d) = api.post(
        &format!("/approvals/{id}/approve"),
        &ops,
        serde_json::json!({ "reason": "go" }),
    );
    assert_eq!(status, 200, "{d}");
    let rest = read_events(&api, &path, &ops, Some(last), |_| false);
    let all: Vec<(usize, String)> = first.into_iter().chain(rest).collect();
    let ids: Vec<usize> = all.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (0..all.len()).collect::<Vec<_>>(), "{all:?}");
    let kinds: Vec<&str> = all.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert!(kinds.contains(&"approval_decided"), "{kinds:?}");
    // A run that has ended streams its whole journal, then ends.
    assert_eq!(read_events(&api, &path, &ops, None, |_| false), all);
    assert_eq!(serve.stop(), Some(0));
}

/// With `--server` and `--token`, the CLI reads runs and decides approvals through a remote
/// API over HTTPS (trusting a private CA with `--ca-cert`): the same lines as locally, the
/// API's refusals as errors with exit 2, and plain HTTP refused for a remote address.
#[test]
fn the_cli_reads_and_decides_through_a_remote_api() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    let runbooks = work.path().join("runbooks");
    std::fs::create_dir(&drills).unwrap();
    std::fs::create_dir(&runbooks).unwrap();
    let (ca, cert, key) = certificate(work.path());
    let rb = crate::cli::scripted_runbook(
        work.path(),
        "",
        "[[steps]]\nid = \"one\"\nuses = \"act\"\n\n[[steps]]\nid = \"hold\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
    );
    std::fs::rename(&rb, runbooks.join("steps.toml")).unwrap();
    let ops = token(work.path(), &data, "ops", &["--role", "admin"]);
    let viewer = token(work.path(), &data, "look", &["--role", "viewer"]);
    let mut serve = Serve::start(
        &data,
        &drills,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
    );
    let base = base_of(&serve.wait_for("API on https://"));
    let server = base.trim_end_matches("/api/v1").to_owned();
    let api = Api::new(base, Some(&ca));
    let (status, started) = api.post("/runs", &ops, serde_json::json!({ "runbook": "steps" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(pending_approvals(&data.join("approvals")).len(), 1);

    // Another machine: no data directory of its own, only the server and a token.
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |token: &str, args: &[&str]| {
        medic_command(elsewhere.path())
            .env("MEDIC_SERVER", &server)
            .env("MEDIC_TOKEN", token)
            .env("MEDIC_CA_CERT", &ca)
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&viewer, &["runs", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&id[..8]) && stdout(&o).contains("running"),
        "{}",
        stdout(&o)
    );
    let o = cli(&viewer, &["approve"]);
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("go on?"),
        "{}",
        stdout(&o)
    );
    let o = cli(&viewer, &["approve", &id, "--reason", "looks fine"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("is a viewer"), "{}", stderr(&o));
    let o = cli(&ops, &["approve", &id, "--reason", "INC-3: go"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("approved step hold of run") && stdout(&o).contains("token:ops"),
        "{}",
        stdout(&o)
    );
    let mut shown = String::new();
    for _ in 0..300 {
        let o = cli(&viewer, &["runs", "show", &id]);
        shown = stdout(&o);
        if !shown.contains("running") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shown.contains("succeeded"), "{shown}");
    assert!(shown.contains("hold"), "{shown}");
    let o = cli(&viewer, &["runs", "logs", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // `medic run` through the server: the timeline as it happens, and a local run's exit code.
    let undo = crate::cli::scripted_runbook(
        work.path(),
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"ok\"\nuses = \"check\"\n",
    );
    std::fs::rename(&undo, runbooks.join("undo.toml")).unwrap();
    let o = cli(&ops, &["run", "undo"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(
        out.contains("change") && out.contains("rolled_back"),
        "{out}"
    );
    let o = cli(&ops, &["run", "undo", "-p", "nope=1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("declares no parameter `nope`"),
        "{}",
        stderr(&o)
    );
    let o = cli(&viewer, &["run", "undo"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // What cannot go through the server yet is refused, never done on this machine instead.
    let o = cli(&ops, &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not go through --server"),
        "{}",
        stderr(&o)
    );

    // A token would cross the network in clear: refused before anything is sent.
    let o = medic_command(elsewhere.path())
        .env("MEDIC_SERVER", "http://192.0.2.1:8443")
        .env("MEDIC_TOKEN", &viewer)
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("use https"), "{}", stderr(&o));
    assert_eq!(serve.stop(), Some(0));
}

/// The OpenAPI document is generated from the code; the copy in the repository is the one
/// clients read. After an intended change: `MEDIC_BLESS=1 cargo test -p medic --test e2e
/// openapi`, and review the diff.
#[test]
fn the_openapi_document_in_the_repository_is_current() {
    let path = crate::cli::repo().join("engine/openapi.json");
    let doc = medic::api::openapi::document();
    if std::env::var_os("MEDIC_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == doc,
        "engine/openapi.json is out of date: MEDIC_BLESS=1 cargo test -p medic --test e2e openapi"
    );
    let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(parsed["openapi"].as_str(), Some("3.1.0"));
    // Every route the router serves is documented.
    let paths: Vec<&str> = parsed["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/health",
        "/whoami",
        "/runbooks",
        "/runbooks/{name}",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/journal",
        "/runs/{id}/events",
        "/runs/{id}/cancel",
        "/approvals",
        "/approvals/{id}/approve",
        "/approvals/{id}/reject",
        "/drills",
        "/drills/records",
        "/drills/{name}/run",
        "/audit",
        "/tokens",
    ] {
        assert!(paths.contains(&route), "{route} is not in the document");
    }
}

/// schemathesis (from PyPI; `scripts/setup --lab` installs it) generates requests from the
/// OpenAPI document, valid and not, against a live `medic serve`: no answer may be a server
/// error, break the document, accept what it forbids or refuse what it allows. A fixed
/// seed and example count keep the run the same size every time.
#[test]
fn the_api_holds_to_its_document_under_generated_requests() {
    let venv = std::path::Path::new(env!("CARGO_BIN_EXE_medic"))
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the medic binary lives in <target>/<profile>/")
        .join("schemathesis-4.32.5");
    let st = venv.join("bin/schemathesis");
    assert!(
        st.is_file(),
        "{} is missing: install it with `scripts/setup --lab` (scripts/test does)",
        st.display()
    );
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    let runbooks = work.path().join("runbooks");
    std::fs::create_dir(&drills).unwrap();
    std::fs::create_dir(&runbooks).unwrap();
    for name in ["blue_green", "fleet", "grants_and_bake"] {
        let from = crate::cli::repo().join(format!("tests/runbooks/good/{name}.toml"));
        std::fs::copy(&from, runbooks.join(format!("{name}.toml"))).unwrap();
    }
    let admin = token(work.path(), &data, "fuzz", &["--role", "admin"]);
    let mut serve = Serve::start(
        &data,
        &drills,
        &[
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
    );
    let base = base_of(&serve.wait_for("API on http://"));
    let o = Command::new(&st)
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--generation-with-security-parameters", "false"])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "20261129",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "30", "--no-color"])
        .output()
        .expect("run schemathesis");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("passed"), "{out}");
    // The server is still there, and answers.
    let api = Api::new(base, None);
    assert_eq!(api.get("/whoami", &admin).0, 200);
    assert_eq!(serve.stop(), Some(0));
}
