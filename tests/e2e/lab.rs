//! A lab of real servers for tests: each starts on a free loopback port with a generated
//! config in a temporary directory, is waited on until ready (bounded), and is killed when
//! dropped, even when a test fails. A missing binary fails the test with the Debian package to
//! install; it never passes silently. `scripts/test` installs them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds a server binary, or fails naming the package that provides it.
pub fn require(binary: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{binary}` is not installed: install the Debian package `{package}` (scripts/test does: apt-get install {package})"))
}

pub struct Server {
    name: &'static str,
    pub addr: String,
    child: Child,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first, waited for (at most 2 s): supervisord stops its programs on it,
        // where SIGKILL would leave them running, orphaned, after the test.
        // SAFETY: kill(2) on the process this value started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When a server counts as started.
enum Ready {
    /// `GET http://ADDR/PATH` answers 200.
    Http(&'static str),
    /// Something accepts connections on ADDR (every HTTP path may need credentials).
    Listening,
}

/// A blocking `GET` that says whether the answer is 200, so the lab needs no async runtime.
fn http_ok(addr: &str, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1) == Some("200")
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded) until `addr` is ready, failing early if the server exits.
    fn wait(&mut self, addr: &str, ready: Ready) {
        let limit = Duration::from_secs(20);
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited during startup with {status}", self.name);
            }
            let up = match ready {
                Ready::Http(path) => http_ok(addr, path),
                Ready::Listening => TcpStream::connect(addr).is_ok(),
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} was not ready at {addr} within {limit:?}", self.name);
    }
}

/// Starts `binary` (from `package`) with `args` in `dir`, its stderr kept in `dir/NAME.log`,
/// and waits until it serves `addr`.
fn launch(
    name: &'static str,
    package: &str,
    args: &[String],
    env: &[(&str, PathBuf)],
    dir: TempDir,
    addr: String,
    ready: Ready,
) -> Server {
    launch_bin(require(name, package), name, args, env, dir, addr, ready)
}

fn launch_bin(
    bin: PathBuf,
    name: &'static str,
    args: &[String],
    env: &[(&str, PathBuf)],
    dir: TempDir,
    addr: String,
    ready: Ready,
) -> Server {
    let log = std::fs::File::create(dir.path().join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or(Stdio::null());
    let child = Command::new(&bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut server = Server {
        name,
        addr: addr.clone(),
        child,
        _dir: dir,
    };
    server.wait(&addr, ready);
    server
}

fn path_arg(flag: &str, dir: &TempDir, file: &str) -> String {
    format!("{flag}={}", dir.path().join(file).display())
}

/// Prometheus scraping `targets` (host:port) every second.
pub fn prometheus(targets: &[String]) -> Server {
    prometheus_alerting(targets, None)
}

/// Prometheus scraping `targets` every second and, with `alerting` (rules YAML, an
/// Alertmanager's host:port), evaluating the rules every second and sending to it.
pub fn prometheus_alerting(targets: &[String], alerting: Option<(&str, &str)>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    if let Some((rules, alertmanager)) = alerting {
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        config += &format!(
            "rule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n",
            dir.path().join("rules.yml").display()
        );
    }
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let args = vec![
        path_arg("--config.file", &dir, "prometheus.yml"),
        format!("--web.listen-address={addr}"),
        path_arg("--storage.tsdb.path", &dir, "data"),
        "--web.enable-lifecycle".into(),
        // Alerts go to Alertmanager at most this often (1m by default): a resolution would
        // otherwise wait up to a minute after the last firing notice.
        "--rules.alert.resend-delay=1s".into(),
    ];
    launch(
        "prometheus",
        "prometheus",
        &args,
        &[],
        dir,
        addr,
        Ready::Http("/-/ready"),
    )
}

/// Alertmanager with a single receiver that sends nothing anywhere.
pub fn alertmanager() -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    alertmanager_at(
        addr,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
}

/// Alertmanager on `addr` with `config` (YAML).
pub fn alertmanager_at(addr: String, config: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let args = vec![
        path_arg("--config.file", &dir, "alertmanager.yml"),
        path_arg("--storage.path", &dir, "data"),
        format!("--web.listen-address={addr}"),
        "--cluster.listen-address=".into(),
    ];
    launch(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
        &args,
        &[],
        dir,
        addr,
        Ready::Http("/-/ready"),
    )
}

/// A Caddy reverse proxy (handler `@id` `lb_proxy`, round robin) in front of `upstream`.
/// Returns the server (admin API at `addr`) and the proxy's address.
pub fn caddy(upstream: &str) -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let (admin, proxy) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = serde_json::json!({
        "admin": { "listen": admin },
        "apps": { "http": { "servers": { "lb": {
            "listen": [proxy],
            "routes": [{ "handle": [{
                "@id": "lb_proxy",
                "handler": "reverse_proxy",
                "upstreams": [{ "dial": upstream }],
                "load_balancing": { "selection_policy": { "policy": "round_robin" } }
            }] }]
        } } } }
    });
    std::fs::write(dir.path().join("caddy.json"), config.to_string()).unwrap();
    let args = vec![
        "run".into(),
        "--config".into(),
        dir.path().join("caddy.json").display().to_string(),
    ];
    // Caddy keeps state under XDG directories and HOME: keep them inside the lab.
    let env = [
        ("XDG_DATA_HOME", dir.path().join("data")),
        ("XDG_CONFIG_HOME", dir.path().join("config")),
        ("HOME", dir.path().to_owned()),
    ];
    let mut server = launch(
        "caddy",
        "caddy",
        &args,
        &env,
        dir,
        admin,
        Ready::Http("/config/"),
    );
    server.wait(&proxy, Ready::Listening);
    (server, proxy)
}

/// supervisord with XML-RPC over HTTP (user `medic`, password `s3cret`) running `program`
/// as `/bin/sleep 3600`.
pub fn supervisord(program: &str) -> Server {
    supervisord_running(program, "/bin/sleep 3600")
}

/// supervisord running `program` as `command`.
pub fn supervisord_running(program: &str, command: &str) -> Server {
    supervisord_programs(&[(program, command)])
}

/// supervisord managing `programs` (name, command), each started at once.
pub fn supervisord_programs(programs: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = dir.path().display();
    let mut config = format!(
        "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
         [inet_http_server]\nport={addr}\nusername=medic\npassword=s3cret\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
    );
    for (program, command) in programs {
        config += &format!(
            "\n[program:{program}]\ncommand={command}\nautostart=true\nstartsecs=1\nstopwaitsecs=2\n"
        );
    }
    std::fs::write(dir.path().join("supervisord.conf"), config).unwrap();
    let args = vec![
        "-n".into(),
        "-c".into(),
        dir.path().join("supervisord.conf").display().to_string(),
    ];
    launch(
        "supervisord",
        "supervisor",
        &args,
        &[],
        dir,
        addr,
        Ready::Listening,
    )
}

/// HAProxy balancing round robin over `servers` (name, address), each with weight 50, with
/// its runtime API (`level admin`) on a TCP address. Returns the server (`addr`: the runtime
/// API) and the frontend's address.
pub fn haproxy(servers: &[(&str, String)]) -> (Server, String) {
    let weighted: Vec<(&str, String, u32)> =
        servers.iter().map(|(n, a)| (*n, a.clone(), 50)).collect();
    haproxy_weighted(&weighted)
}

/// Like [`haproxy`], each server with its own starting weight.
pub fn haproxy_weighted(servers: &[(&str, String, u32)]) -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let (admin, front) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut config = format!(
        "global\n  stats socket ipv4@{admin} level admin\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n\
         frontend fe\n  bind {front}\n  default_backend be\n\nbackend be\n  balance roundrobin\n"
    );
    for (name, addr, weight) in servers {
        config += &format!("  server {name} {addr} weight {weight}\n");
    }
    std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
    let args = vec![
        "-f".into(),
        dir.path().join("haproxy.cfg").display().to_string(),
    ];
    let mut server = launch(
        "haproxy",
        "haproxy",
        &args,
        &[],
        dir,
        admin,
        Ready::Listening,
    );
    server.wait(&front, Ready::Listening);
    (server, front)
}

/// The Python environment `scripts/setup --lab` installs moto (AWS emulation) into, in the
/// target directory.
fn moto_venv() -> PathBuf {
    let venv = std::path::Path::new(env!("CARGO_BIN_EXE_medic"))
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the medic binary lives in <target>/<profile>/")
        .join("moto-5.2.5");
    assert!(
        venv.join("bin/moto_server").is_file(),
        "{} is missing: install moto with `scripts/setup --lab` (scripts/test does)",
        venv.display()
    );
    venv
}

/// moto_server on loopback with an Application Load Balancer whose listener forwards to two
/// target groups (`blue` at weight 100, `green` at 0), and a CloudWatch alarm `web-5xx`.
pub struct Aws {
    pub server: Server,
    pub listener: String,
    pub blue: String,
    pub green: String,
    python: PathBuf,
}

impl Aws {
    /// A boto3 call through moto's Python environment; returns its JSON answer.
    fn boto(&self, op: &str, args: &[&str]) -> serde_json::Value {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/aws_lab.py");
        let out = Command::new(&self.python)
            .arg(script)
            .arg(self.server.url())
            .arg(op)
            .args(args)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "aws_lab.py {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("aws_lab.py answers JSON")
    }

    /// The listener's weights, by target group name.
    pub fn weights(&self) -> Vec<(String, i64)> {
        let v = self.boto("weights", &[&self.listener]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g[0].as_str()
                        .unwrap()
                        .rsplit('/')
                        .nth(1)
                        .unwrap()
                        .to_owned(),
                    g[1].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// Sets the alarm's state, as CloudWatch would when its metric crosses the threshold.
    pub fn set_alarm(&self, state: &str) {
        self.boto("alarm", &["web-5xx", state]);
    }
}

pub fn aws() -> Aws {
    let venv = moto_venv();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let server = launch_bin(
        venv.join("bin/moto_server"),
        "moto_server",
        &["-H".into(), "127.0.0.1".into(), "-p".into(), port],
        &[],
        dir,
        addr,
        Ready::Http("/moto-api/"),
    );
    let mut aws = Aws {
        server,
        listener: String::new(),
        blue: String::new(),
        green: String::new(),
        python: venv.join("bin/python"),
    };
    let made = aws.boto("setup", &[]);
    aws.listener = made["listener"].as_str().unwrap().to_owned();
    aws.blue = made["blue"].as_str().unwrap().to_owned();
    aws.green = made["green"].as_str().unwrap().to_owned();
    aws
}

/// chromedriver on a free port (WebDriver), for tests that drive headless Chromium.
pub fn chromedriver() -> Server {
    require("chromium", "chromium");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()];
    // Chromium leaves a directory of its own in the temporary directory at every start
    // (`org.chromium.Chromium.*`, dozens per suite run): in this server's, it goes with it.
    let tmp = dir.path().to_path_buf();
    launch(
        "chromedriver",
        "chromium-driver",
        &args,
        &[("TMPDIR", tmp)],
        dir,
        addr,
        // It answers HTTP/1.1 only; listening is ready (a session waits for it anyway).
        Ready::Listening,
    )
}
