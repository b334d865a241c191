//! Feature flags against a real Unleash (7.5.1 from npm, installed by `scripts/setup --lab`,
//! on the tests' PostgreSQL): `builtin:unleash-flag` turns a flag on in stages, off as a kill
//! switch, and reverts to exactly what was there; Unleash's refusals are named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{medic_command, stderr, stdout};

const TOKEN: &str = "*:*.medic-test-admin-token";
const CLIENT_TOKEN: &str = "*:production.medic-test-client-token";

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
                   authentication: {{ initApiTokens: [\n\
                     {{ environment: '*', project: '*', secret: '{TOKEN}', type: 'admin', tokenName: 'medic-tests' }},\n\
                     {{ environment: 'production', project: '*', secret: '{CLIENT_TOKEN}', type: 'client', tokenName: 'demo-service' }},\n\
                   ] }},\n\
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

/// User traffic: requests to `/` one after another until dropped (bounded to two minutes).
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn to(addr: &str) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, addr) = (stop.clone(), addr.to_owned());
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let started = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(120)
            {
                if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The demo service with a feature behind `flag`, reading it from `unleash`.
fn service_with_feature(unleash: &Unleash, flag: &str, broken: bool) -> crate::cli::Service {
    let mut args = vec!["--feature-flag", flag, "--unleash", unleash.url.as_str()];
    if broken {
        args.push("--feature-broken");
    }
    crate::cli::service_env(&args, &[("UNLEASH_CLIENT_TOKEN", CLIENT_TOKEN)])
}

fn stats(addr: &str) -> Value {
    crate::support::runtime().block_on(async {
        reqwest::get(format!("http://{addr}/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn repo_runbook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(format!("runbooks/{name}.toml"))
}

/// `medic run RUNBOOK` (a flag runbook) against `unleash` and the service at `service`.
fn run_flag_runbook(
    cache: &Path,
    runbook: &Path,
    unleash: &Unleash,
    service: &str,
    flag: &str,
) -> std::process::Output {
    let unleash_addr = unleash.url.trim_start_matches("http://").to_owned();
    medic_command(cache)
        .env("UNLEASH_ADMIN_TOKEN", TOKEN)
        .arg("run")
        .arg(runbook)
        .args(["-p", &format!("flag={flag}")])
        .args(["-p", &format!("unleash={unleash_addr}")])
        .args(["-p", &format!("service={service}")])
        .output()
        .unwrap()
}

/// `runbooks/flag-rollout.toml` with an earlier change before the rollout (the code shipped
/// dark, undone by its revert): what the flag must be undone before.
fn flag_rollout_after_a_change(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_runbook("flag-rollout")).unwrap();
    let change = format!(
        "[plugins.act]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
         [[steps]]\nid = \"ship_dark\"\nuses = \"act\"\nrollback = \"revert\"\n\n[rollout]\n",
        medic::host::fixtures::SCRIPTED_ACTION
    );
    assert!(text.contains("\n[rollout]\n"));
    let path = dir.join("flag-rollout-after-a-change.toml");
    std::fs::write(
        &path,
        text.replacen("\n[rollout]\n", &format!("\n{change}"), 1),
    )
    .unwrap();
    path
}

#[test]
fn flag_rollout_promotes_a_good_feature_and_switches_a_bad_one_off_first() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();

    unleash.flag("new-checkout");
    let good = service_with_feature(&unleash, "new-checkout", false);
    let _traffic = Traffic::to(&good.addr);
    let o = run_flag_runbook(
        cache.path(),
        &repo_runbook("flag-rollout"),
        &unleash,
        &good.addr,
        "new-checkout",
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let (on, strategies) = unleash.state("new-checkout", "production");
    assert!(
        on && strategies.len() == 1 && strategies[0][1]["rollout"] == "100",
        "{strategies:?}"
    );
    // Every user request now gets the feature.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&good.addr)["feature_share"] != 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stats(&good.addr)["feature_share"], 100);

    // A bad feature, shipped dark by an earlier step: caught at 5%, its flag back off (no
    // strategy, as before) first, then the earlier change undone.
    unleash.flag("bad-checkout");
    let bad = service_with_feature(&unleash, "bad-checkout", true);
    let _traffic = Traffic::to(&bad.addr);
    let o = run_flag_runbook(
        cache.path(),
        &flag_rollout_after_a_change(cache.path()),
        &unleash,
        &bad.addr,
        "bad-checkout",
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("✗ rollout_5_errors"), "{out}");
    assert!(!out.contains("rollout_25"), "it went past 5%: {out}");
    let rolling = out.find("rolling back").expect("a rollback");
    let first_undo = out[rolling..].lines().nth(1).unwrap_or_default();
    assert!(
        first_undo.contains("rollout_5.rollback") && first_undo.contains("back to off"),
        "the flag is not the first thing undone: {out}"
    );
    let second_undo = out[rolling..].lines().nth(2).unwrap_or_default();
    assert!(
        second_undo.contains("ship_dark.rollback"),
        "the earlier change is not undone after the flag: {out}"
    );
    assert_eq!(unleash.state("bad-checkout", "production"), (false, vec![]));
    assert_eq!(stats(&bad.addr)["feature_share"], 0);
}

#[test]
fn the_kill_switch_turns_a_hurting_feature_off_and_checks_users_get_the_old_behaviour() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();
    unleash.flag("hurting");
    unleash.switch("hurting", "production", true);
    let svc = service_with_feature(&unleash, "hurting", true);
    let _traffic = Traffic::to(&svc.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&svc.addr)["error_ratio"].as_f64().unwrap_or(0.0) < 0.5 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        stats(&svc.addr)["error_ratio"].as_f64().unwrap() > 0.5,
        "the feature does not hurt yet"
    );
    let o = run_flag_runbook(
        cache.path(),
        &repo_runbook("flag-kill-switch"),
        &unleash,
        &svc.addr,
        "hurting",
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(!unleash.state("hurting", "production").0);
    let s = stats(&svc.addr);
    assert_eq!(s["feature_share"], 0, "{s}");
    assert!(s["error_ratio"].as_f64().unwrap() <= 0.01, "{s}");
}

/// SIGKILL mid-rollout (the flag at 25%), then `medic runs rollback` from a new process: the
/// flag is back to exactly what it was before the run (its saved state is in the journal).
#[test]
fn a_rollout_killed_mid_way_is_rolled_back_to_exactly_the_flag_it_found() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();
    unleash.flag("half-way");
    // Before the run: on, for one constrained group at 10%.
    unleash.add_strategy(
        "half-way",
        "production",
        json!({
            "name": "flexibleRollout",
            "parameters": { "rollout": "10", "stickiness": "default", "groupId": "half-way" },
            "constraints": [{ "contextName": "appName", "operator": "IN", "values": ["web"] }],
        }),
    );
    unleash.switch("half-way", "production", true);
    let before = unleash.state("half-way", "production");
    let svc = service_with_feature(&unleash, "half-way", false);
    let _traffic = Traffic::to(&svc.addr);
    let mut child = medic_command(cache.path())
        .env("UNLEASH_ADMIN_TOKEN", TOKEN)
        .arg("run")
        .arg(repo_runbook("flag-rollout"))
        .args(["-p", "flag=half-way"])
        .args([
            "-p",
            &format!("unleash={}", unleash.url.trim_start_matches("http://")),
        ])
        .args(["-p", &format!("service={}", svc.addr)])
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::support::kill_when(&mut child, |line| {
        line.contains("\"step_finished\"") && line.contains("\"id\":\"rollout_25\"")
    });
    let (on, strategies) = unleash.state("half-way", "production");
    assert!(on && strategies[0][1]["rollout"] == "25", "{strategies:?}");
    let listed = medic_command(cache.path())
        .args(["runs", "list", "--output", "json"])
        .output()
        .unwrap();
    let run: Value = serde_json::from_str(stdout(&listed).lines().next().unwrap()).unwrap();
    assert_eq!(run["status"], "interrupted", "{run}");
    let o = medic_command(cache.path())
        .env("UNLEASH_ADMIN_TOKEN", TOKEN)
        .args(["runs", "rollback", run["run_id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(unleash.state("half-way", "production"), before);
}

/// SIGTERM while a stage bakes (its analysis gate waiting): the forward steps stop, and the
/// rollback puts the flag back exactly as it was before the run.
#[test]
fn sigterm_mid_gate_puts_the_flag_back() {
    let unleash = Unleash::start();
    let cache = tempfile::tempdir().unwrap();
    unleash.flag("interrupted");
    let before = unleash.state("interrupted", "production");
    let svc = service_with_feature(&unleash, "interrupted", false);
    let _traffic = Traffic::to(&svc.addr);
    let mut child = medic_command(cache.path())
        .env("UNLEASH_ADMIN_TOKEN", TOKEN)
        .arg("run")
        .arg(repo_runbook("flag-rollout"))
        .args(["-p", "flag=interrupted"])
        .args([
            "-p",
            &format!("unleash={}", unleash.url.trim_start_matches("http://")),
        ])
        .args(["-p", &format!("service={}", svc.addr)])
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, BufReader};
        let mut lines = BufReader::new(child.stdout.as_mut().unwrap()).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("\"step_started\"") && line.contains("\"rollout_25_errors\"") {
                break;
            }
        }
    }
    // The flag is at 25% and its gate is baking.
    assert_eq!(
        unleash.state("interrupted", "production").1[0][1]["rollout"],
        "25"
    );
    crate::verdicts::signal(child.id(), crate::verdicts::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(unleash.state("interrupted", "production"), before);
}
