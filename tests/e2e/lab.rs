//! A lab of real servers for tests: each starts on a free loopback port with a generated
//! config in a temporary directory, is waited on until ready (bounded), and is killed when
//! dropped, even when a test fails. A missing binary fails the test with the Debian package to
//! install; it never passes silently. `scripts/test` installs them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Polls `url` until it answers 200, for at most `limit`.
fn wait_ready(name: &str, child: &mut Child, url: &str, limit: Duration) {
    let started = Instant::now();
    let client = reqwest::blocking_get_ok;
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited during startup with {status}");
        }
        if client(url) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} was not ready at {url} within {limit:?}");
}

/// A tiny blocking GET over std, so the lab needs no runtime.
mod reqwest {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn blocking_get_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let Ok(mut s) = TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1) == Some("200")
    }
}

fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Child {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("{name}.log")))
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Prometheus scraping `targets` (host:port) every second.
pub fn prometheus(targets: &[String]) -> Server {
    let bin = require("prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let args = vec![
        format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        "--web.enable-lifecycle".into(),
    ];
    let mut child = spawn("prometheus", &bin, &args, dir.path());
    let addr = format!("127.0.0.1:{port}");
    wait_ready(
        "prometheus",
        &mut child,
        &format!("http://{addr}/-/ready"),
        Duration::from_secs(20),
    );
    Server {
        addr,
        child,
        _dir: dir,
    }
}

/// Alertmanager with a single receiver that sends nothing anywhere.
pub fn alertmanager() -> Server {
    let bin = require("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let args = vec![
        format!(
            "--config.file={}",
            dir.path().join("alertmanager.yml").display()
        ),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
    ];
    let mut child = spawn("alertmanager", &bin, &args, dir.path());
    let addr = format!("127.0.0.1:{port}");
    wait_ready(
        "alertmanager",
        &mut child,
        &format!("http://{addr}/-/ready"),
        Duration::from_secs(20),
    );
    Server {
        addr,
        child,
        _dir: dir,
    }
}

/// Waits until something accepts TCP connections on `addr` (for servers whose every HTTP path
/// needs credentials).
fn wait_listening(name: &str, child: &mut Child, addr: &str, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited during startup with {status}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} was not listening on {addr} within {limit:?}");
}

/// A Caddy reverse proxy (handler `@id` `lb_proxy`, round robin) in front of `upstream`.
/// Returns the server (admin API at `addr`) and the proxy's address.
pub fn caddy(upstream: &str) -> (Server, String) {
    let bin = require("caddy", "caddy");
    let dir = tempfile::tempdir().unwrap();
    let (admin, proxy) = (free_port(), free_port());
    let config = serde_json::json!({
        "admin": { "listen": format!("127.0.0.1:{admin}") },
        "apps": { "http": { "servers": { "lb": {
            "listen": [format!("127.0.0.1:{proxy}")],
            "routes": [{ "handle": [{
                "@id": "lb_proxy",
                "handler": "reverse_proxy",
                "upstreams": [{ "dial": upstream }],
                "load_balancing": { "selection_policy": { "policy": "round_robin" } }
            }] }]
        } } } }
    });
    std::fs::write(dir.path().join("caddy.json"), config.to_string()).unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(dir.path().join("caddy.json"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.path().join("caddy.log"))
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start caddy: {e}"));
    let addr = format!("127.0.0.1:{admin}");
    wait_ready(
        "caddy",
        &mut child,
        &format!("http://{addr}/config/"),
        Duration::from_secs(20),
    );
    wait_listening(
        "caddy proxy",
        &mut child,
        &format!("127.0.0.1:{proxy}"),
        Duration::from_secs(10),
    );
    (
        Server {
            addr,
            child,
            _dir: dir,
        },
        format!("127.0.0.1:{proxy}"),
    )
}

/// supervisord with XML-RPC over HTTP (user `medic`, password `s3cret`) running `program`
/// as `/bin/sleep 3600`.
pub fn supervisord(program: &str) -> Server {
    supervisord_running(program, "/bin/sleep 3600")
}

/// supervisord running `program` as `command`.
pub fn supervisord_running(program: &str, command: &str) -> Server {
    let bin = require("supervisord", "supervisor");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let config = format!(
        "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
         [inet_http_server]\nport=127.0.0.1:{port}\nusername=medic\npassword=s3cret\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [program:{program}]\ncommand={command}\nautostart=true\nstartsecs=1\nstopwaitsecs=2\n"
    );
    std::fs::write(dir.path().join("supervisord.conf"), config).unwrap();
    let args = vec![
        "-n".to_string(),
        "-c".to_string(),
        dir.path().join("supervisord.conf").display().to_string(),
    ];
    let mut child = spawn("supervisord", &bin, &args, dir.path());
    let addr = format!("127.0.0.1:{port}");
    wait_listening("supervisord", &mut child, &addr, Duration::from_secs(20));
    Server {
        addr,
        child,
        _dir: dir,
    }
}

/// HAProxy balancing round robin over `servers` (name, address), each with weight 50, with
/// its runtime API (`level admin`) on a TCP address. Returns the server (`addr`: the runtime
/// API) and the frontend's address.
pub fn haproxy(servers: &[(&str, String)]) -> (Server, String) {
    let bin = require("haproxy", "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (admin, front) = (free_port(), free_port());
    let mut config = format!(
        "global\n  stats socket ipv4@127.0.0.1:{admin} level admin\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n\
         frontend fe\n  bind 127.0.0.1:{front}\n  default_backend be\n\nbackend be\n  balance roundrobin\n"
    );
    for (name, addr) in servers {
        config += &format!("  server {name} {addr} weight 50\n");
    }
    std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
    let args = vec![
        "-f".to_string(),
        dir.path().join("haproxy.cfg").display().to_string(),
    ];
    let mut child = spawn("haproxy", &bin, &args, dir.path());
    let addr = format!("127.0.0.1:{admin}");
    wait_listening(
        "haproxy runtime API",
        &mut child,
        &addr,
        Duration::from_secs(20),
    );
    wait_listening(
        "haproxy frontend",
        &mut child,
        &format!("127.0.0.1:{front}"),
        Duration::from_secs(10),
    );
    (
        Server {
            addr,
            child,
            _dir: dir,
        },
        format!("127.0.0.1:{front}"),
    )
}
