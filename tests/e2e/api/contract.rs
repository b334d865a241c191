//! The API's document: checked in, and held to by generated requests.

use std::process::Command;

use super::*;

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
    let site = Site::new();
    for name in ["blue_green", "fleet", "grants_and_bake"] {
        let from = crate::cli::repo().join(format!("tests/runbooks/good/{name}.toml"));
        std::fs::copy(&from, site.runbooks.join(format!("{name}.toml"))).unwrap();
    }
    let admin = site.token("fuzz", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let base = api.base.clone();
    let o = Command::new(&st)
        .current_dir(site.work.path())
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        // A schema-valid start can still be refused (422) by the runbook it names: its own
        // parameters are checked, which the document cannot list.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth,positive_data_acceptance",
        ])
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
    assert_eq!(api.get("/whoami", &admin).0, 200);
    assert_eq!(serve.stop(), Some(0));
}
