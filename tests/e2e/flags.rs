//! Feature flags against a real Unleash (7.5.1 from npm, installed by `scripts/setup --lab`,
//! on the tests' PostgreSQL): `builtin:unleash-flag` turns a flag on in stages, off as a kill
//! switch, and reverts to exactly what was there; Unleash's refusals are named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{medic_command, stderr, stdout};

const TOKEN: &str = "*:*.medic-test-admin-token";

/// An Unleash server on a free loopback port with an admin token; killed on drop.
pub struct Unleash {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Unleash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unleash_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_medic"))
        .parent()
        .and_then(Path::parent)
        .expect("the medic binary lives in <target>/<profile>/")
        .join("unleash-7.5.1");
    assert!(
        dir.join("node_modules/unleash-server").is_dir(),
        "{} is missing: install Unleash with `scripts/setup --lab` (scripts/test does)",
        dir.display()
    );
    dir
}

impl Unleash {
    pub fn start() -> Unleash {
        let prefix = unleash_dir();
        let db = crate::pglab::database();
        let (hostport, name) = db
            .trim_start_matches("postgres://medic@")
            .split_once('/')
            .unwrap();
        let (host, port) = hostport.split_once(':').unwrap();
        let http_port = crate::lab::free_port();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("start.cjs");
        std::fs::write(
            &script,
            format!(
                "const unleash = require(require.resolve('unleash-server', {{ paths: [{prefix:?}] }}));\n\
                 unleash.start({{\n\
                   db: {{ user: 'medic', password: '', host: '{host}', port: {port}, database: '{name}', ssl: false }},\n\
                   server: {{ port: {http_port} }},\n\
                   authentication: {{ initApiTokens: [{{ environment: '*', project: '*', secret: '{TOKEN}', type: 'admin', tokenName: 'medic-tests' }}] }},\n\
                 }}).then(() => console.log('unleash ready'));\n",
                prefix = prefix.join("node_modules").display().to_string(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("unleash.log")).unwrap();
        let child = Command::new("node")
            .arg(&script)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("node is needed (Debian package `nodejs`)");
        let mut u = Unleash {
            url: format!("http://127.0.0.1:{http_port}"),
            child,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = u.child.try_wait() {
                panic!(
                    "Unleash exited during startup with {status}: {}",
                    std::fs::read_to_string(u._dir.path().join("unleash.log")).unwrap_or_default()
                );
            }
            if u.get("/api/admin/projects").is_some() {
                return u;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Unleash was not ready within 60 s");
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let rt = crate::support::runtime();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut r = client
                .request(method.parse().unwrap(), format!("{}{path}", self.url))
                .header("authorization", TOKEN);
            if let Some(b) = body {
                r = r.json(&b);
            }
            match r.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
                }
                Err(_) => (0, Value::Null),
            }
        })
    }

    fn get(&self, path: &str) -> Option<Value> {
        match self.request("GET", path, None) {
            (200, v) => Some(v),
            _ => None,
        }
    }

    /// Creates a flag (off in every environment, no strategy).
    pub fn flag(&self, name: &str) {
        let (status, v) = self.request(
            "POST",
            "/api/admin/projects/default/features",
            Some(json!({ "name": name, "type": "release" })),
        );
        assert!(status == 201 || status == 200, "{status}: {v}");
    }

    fn env_path(name: &str, env: &str) -> String {
        format!("/api/admin/projects/default/features/{name}/environments/{env}")
    }

    pub fn add_strategy(&self, name: &str, env: &str, strategy: Value) {
        let (status, v) = self.request(
            "POST",
            &format!("{}/strategies", Self::env_path(name, env)),
            Some(strategy),
        );
        assert!(status == 200 || status == 201, "{status}: {v}");
    }

    pub fn switch(&self, name: &str, env: &str, on: bool) {
        let (status, v) = self.request(
            "POST",
            &format!(
                "{}/{}",
                Self::env_path(name, env),
                if on { "on" } else { "off" }
            ),
            None,
        );
        assert_eq!(status, 200, "{v}");
    }

    /// (enabled, strategies as (name, parameters, constraints)) in `env`.
    pub fn state(&self, name: &str, env: &str) -> (bool, Vec<Value>) {
        let f = self
            .get(&format!("/api/admin/projects/default/features/{name}"))
            .expect("the flag exists");
        let e = f["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env)
            .unwrap()
            .clone();
        let strategies = e["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| json!([s["name"], s["parameters"], s["constraints"]]))
            .collect();
        (e["enabled"].as_bool().unwrap(), strategies)
    }
}

/// A runbook that sets flag `flag` in production through `stages` (each a `with` table's
/// extra keys), then runs a check that passes or fails, with a verify check.
fn flag_runbook(dir: &Path, url: &str, flag: &str, stages: &[&str], check: &str) -> PathBuf {
    let addr = url.trim_start_matches("http://");
    let mut text = format!(
        "[runbook]\nname = \"flag\"\non_failure = \"rollback\"\n\n\
         [params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"UNLEASH_TOKEN\"\n\n\
         [plugins.flag]\nsource = \"builtin:unleash-flag\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
         [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n",
        medic::host::fixtures::SCRIPTED_CHECK
    );
    for (i, extra) in stages.iter().enumerate() {
        text += &format!(
            "\n[[steps]]\nid = \"stage{i}\"\nuses = \"flag\"\nrollback = \"revert\"\n\
             with = {{ url = \"{url}\", token = \"{{{{ params.token }}}}\", environment = \"production\", flag = \"{flag}\", {extra} }}\n"
        );
    }
    text += &format!(
        "\n[[steps]]\nid = \"watch\"\nuses = \"check\"\nwith = {{ mode = \"{check}\" }}\n\n\
         [[verify]]\nid = \"healthy\"\nuses = \"check\"\n"
    );
    let path = dir.join(format!("{flag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(cache: &Path, rb: &Path) -> std::process::Output {
    medic_command(cache)
        .env("UNLEASH_TOKEN", TOKEN)
        .args(["run", rb.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn a_flag_rolled_out_in_stages_is_reverted_to_exactly_what_was_there() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();

    // A good feature: dark (off, no strategy), then 5%, 25%, 100%; it stays.
    unleash.flag("good-feature");
    let rb = flag_runbook(
        cache.path(),
        &unleash.url,
        "good-feature",
        &["rollout = 5", "rollout = 25", "rollout = 100"],
        "ok",
    );
    let o = run(cache.path(), &rb);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("flag good-feature in production: on at 100% (was on at 25%)"),
        "{}",
        stdout(&o)
    );
    let (on, strategies) = unleash.state("good-feature", "production");
    assert!(on);
    assert_eq!(strategies.len(), 1, "{strategies:?}");
    assert_eq!(strategies[0][1]["rollout"], "100");

    // A flag already on at 10% for one constrained group: a bad widening is caught and the
    // flag goes back to exactly that, constraint and all.
    unleash.flag("bad-feature");
    let constrained = json!({
        "name": "flexibleRollout",
        "parameters": { "rollout": "10", "stickiness": "userId", "groupId": "bad-feature" },
        "constraints": [{ "contextName": "userId", "operator": "IN", "values": ["alice", "bob"] }],
    });
    unleash.add_strategy("bad-feature", "production", constrained);
    unleash.switch("bad-feature", "production", true);
    let before = unleash.state("bad-feature", "production");
    let rb = flag_runbook(
        cache.path(),
        &unleash.url,
        "bad-feature",
        &["rollout = 25", "rollout = 50"],
        "fail",
    );
    let o = run(cache.path(), &rb);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("flag bad-feature in production back to on at 10%"),
        "{}",
        stdout(&o)
    );
    assert_eq!(unleash.state("bad-feature", "production"), before);
    // The other environment was never touched.
    assert_eq!(unleash.state("bad-feature", "development"), (false, vec![]));

    // The kill switch: off now; its revert turns it back on as it was.
    let rb = flag_runbook(
        cache.path(),
        &unleash.url,
        "bad-feature",
        &["state = \"off\""],
        "fail",
    );
    let o = run(cache.path(), &rb);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(unleash.state("bad-feature", "production"), before);
    let rb = flag_runbook(
        cache.path(),
        &unleash.url,
        "bad-feature",
        &["state = \"off\""],
        "ok",
    );
    let o = run(cache.path(), &rb);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(!unleash.state("bad-feature", "production").0);
}

#[test]
fn unleash_refusals_are_named() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();
    unleash.flag("known");
    let cases = [
        (
            "missing",
            "production",
            TOKEN,
            "There's no feature named \"missing\"",
        ),
        (
            "known",
            "staging",
            TOKEN,
            "has no environment `staging` (it has: development, production)",
        ),
        (
            "known",
            "production",
            "*:*.wrong",
            "Unleash refused the token (401)",
        ),
    ];
    for (flag, env, token, said) in cases {
        let addr = unleash.url.trim_start_matches("http://");
        let rb = cache.path().join("one.toml");
        std::fs::write(
            &rb,
            format!(
                "[runbook]\nname = \"one\"\n\n[params.token]\ntype = \"string\"\nsecret = true\nfrom_env = \"UNLEASH_TOKEN\"\n\n\
                 [plugins.flag]\nsource = \"builtin:unleash-flag\"\ngrants = {{ http = [\"{addr}\"], kv = true }}\n\n\
                 [[steps]]\nid = \"set\"\nuses = \"flag\"\n\
                 with = {{ url = \"{}\", token = \"{{{{ params.token }}}}\", environment = \"{env}\", flag = \"{flag}\", rollout = 5 }}\n",
                unleash.url
            ),
        )
        .unwrap();
        let o = medic_command(cache.path())
            .env("UNLEASH_TOKEN", token)
            .args(["run", rb.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(said), "{flag}/{env}: {}", stdout(&o));
        assert!(
            !stdout(&o).contains("wrong"),
            "the token was shown: {}",
            stdout(&o)
        );
    }
    assert_eq!(unleash.state("known", "production"), (false, vec![]));
}
