//! The HTTP API of `medic serve --listen`, over real HTTPS with a certificate made here: each
//! role allowed and refused what it should be, environments granted by name, tokens revoked
//! and expired, failed authentication slowed down, requests bounded, every change and
//! refusal in the audit log and no token in it; runs started, followed and cancelled through
//! it, the CLI as its client; its OpenAPI document, and schemathesis held to it.

mod access;
mod alerts;
mod contract;
mod drills;
mod pickup;
mod remediation;
mod runs;
mod web;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::{medic_command, stderr, stdout};
use crate::serve::Serve;
use crate::support::*;

/// A certificate for 127.0.0.1 signed by a CA made here (webpki refuses a CA certificate as a
/// server's own), made with openssl: (CA certificate, server certificate, server key).
pub(super) fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
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

/// One test's machine: a data directory, and the drills and runbooks `medic serve` reads.
pub(super) struct Site {
    pub(super) work: tempfile::TempDir,
    pub(super) data: PathBuf,
    pub(super) drills: PathBuf,
    pub(super) runbooks: PathBuf,
}

impl Site {
    pub(super) fn new() -> Site {
        let work = tempfile::tempdir().unwrap();
        let (data, drills, runbooks) = (
            work.path().join("data"),
            work.path().join("drills"),
            work.path().join("runbooks"),
        );
        std::fs::create_dir(&drills).unwrap();
        std::fs::create_dir(&runbooks).unwrap();
        Site {
            work,
            data,
            drills,
            runbooks,
        }
    }

    /// `medic` on this machine.
    pub(super) fn medic(&self) -> Command {
        let mut cmd = medic_command(self.work.path());
        cmd.env("MEDIC_DATA_DIR", &self.data);
        cmd
    }

    /// `medic token create NAME ARGS`: the token.
    pub(super) fn token(&self, name: &str, args: &[&str]) -> String {
        self.token_env(name, args, &[])
    }

    /// [`Site::token`] with `env` (a shared store: the token is every node's).
    pub(super) fn token_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self
            .medic()
            .envs(env.iter().copied())
            .args(["token", "create", name])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let t = stdout(&o).trim().to_owned();
        assert!(t.starts_with("medic_"), "{t}");
        t
    }

    /// A scripted runbook (`crate::cli::scripted_runbook`) in the catalogue, as `NAME`.
    pub(super) fn runbook(&self, name: &str, head: &str, body: &str) {
        let rb = crate::cli::scripted_runbook(self.work.path(), head, body);
        std::fs::rename(&rb, self.runbooks.join(format!("{name}.toml"))).unwrap();
    }

    /// `medic serve` offering the runbooks, its API on a free loopback port, and a client of
    /// it. Plain HTTP, or HTTPS with a certificate made here (the client trusts its CA).
    pub(super) fn serve(&self, https: bool) -> (Serve, Api) {
        self.serve_with(https, &[])
    }

    /// [`Site::serve`] with more arguments.
    pub(super) fn serve_with(&self, https: bool, extra: &[&str]) -> (Serve, Api) {
        self.serve_env(https, extra, &[])
    }

    /// [`Site::serve`] with more arguments and environment variables.
    pub(super) fn serve_env(
        &self,
        https: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Serve, Api) {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--runbooks"]
            .map(String::from)
            .into();
        args.push(self.runbooks.display().to_string());
        args.extend(extra.iter().map(|a| a.to_string()));
        let tls = https.then(|| certificate(self.work.path()));
        if let Some((_, cert, key)) = &tls {
            args.extend(["--tls-cert".into(), cert.display().to_string()]);
            args.extend(["--tls-key".into(), key.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut serve = Serve::start_env(&self.data, &self.drills, &args, env);
        let base = base_of(&serve.wait_for("API on "));
        let api = Api::new(base, tls.as_ref().map(|(ca, _, _)| ca.as_path()));
        (serve, api)
    }

    /// The CA that `serve(true)`'s certificate is signed by.
    pub(super) fn ca(&self) -> PathBuf {
        self.work.path().join("ca.crt")
    }

    /// A run this machine's user starts through serve in the protected environment `prod`
    /// (declared in `head`), with `reason`, stopped at an approval step: the process and the
    /// run's id.
    pub(super) fn waiting_run(&self, head: &str, reason: &str) -> (std::process::Child, String) {
        let rb = crate::cli::scripted_runbook(
            self.work.path(),
            head,
            "[[steps]]\nid = \"go_live\"\nuses = \"act\"\napproval = { timeout = \"60s\", prompt = \"switch?\" }\n",
        );
        let run = self
            .medic()
            .args([
                "run",
                rb.to_str().unwrap(),
                "--env",
                "prod",
                "--approve",
                reason,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let waiting = pending_approvals(&self.data.join("approvals"));
        assert_eq!(waiting.len(), 1, "the run never asked for approval");
        (run, waiting[0].run_id.clone())
    }
}

/// A client with its own runtime: reqwest's connections belong to the runtime that made them.
pub(super) struct Api {
    pub(super) base: String,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: reqwest::Client,
}

impl Api {
    pub(super) fn new(base: String, cert: Option<&Path>) -> Api {
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
    pub(super) fn call(
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

    pub(super) fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
    }

    pub(super) fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
    }
}

pub(super) fn base_of(line: &str) -> String {
    line.split_once("API on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Alertmanager on `addr` posting every alert to `api`'s receiver with `token`: grouped by
/// alert name and instance, sent a second after the first alert of a group, re-sent every
/// 2 s while firing, and resolved alerts sent too.
pub(super) fn alertmanager_posting_to(addr: &str, api: &Api, token: &str) -> crate::lab::Server {
    crate::lab::alertmanager_at(
        addr.to_owned(),
        &[
            "route:",
            "  receiver: medic",
            "  group_by: ['alertname', 'instance']",
            "  group_wait: 1s",
            "  group_interval: 1s",
            "  repeat_interval: 2s",
            "receivers:",
            "  - name: medic",
            "    webhook_configs:",
            &format!("      - url: '{}/alerts/alertmanager'", api.base),
            "        send_resolved: true",
            "        http_config:",
            "          authorization:",
            &format!("            credentials: '{token}'"),
            "",
        ]
        .join("\n"),
    )
}

/// A page of the web UI as `token` sees it (logged in through its form; no browser).
pub(super) fn ui_page(api: &Api, token: &str, path: &str) -> String {
    let ui = api.base.replace("/api/v1", "/ui");
    api.rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let login = client
            .post(format!("{ui}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status().as_u16(), 303);
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned();
        client
            .get(format!("{ui}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}
