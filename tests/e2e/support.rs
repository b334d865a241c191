//! Helpers shared by the end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use medic::host::{
    Call, CallContext, HostConfig, Plugin, PluginHost, PluginSource, Sandbox, Value,
};

pub fn host_with_cache(dir: Option<std::path::PathBuf>) -> Arc<PluginHost> {
    Arc::new(
        PluginHost::new(HostConfig {
            cache_dir: dir,
            max_instances: 16,
            ..HostConfig::default()
        })
        .expect("host"),
    )
}

pub fn hostile_source() -> PluginSource {
    PluginSource::File(medic::host::fixtures::HOSTILE.into())
}

/// Each non-empty line of `out` as JSON (`--output json`), or a panic naming the line.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    // Tests make their own HTTP requests too, possibly before any host installs this.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap()
}

pub fn ctx(step: &str) -> CallContext {
    CallContext {
        run_id: "test-run".into(),
        step_id: step.into(),
        attempt: 1,
        environment: "test".into(),
        dry_run: false,
    }
}

pub fn run_call(params: &[(&str, Value)]) -> Call {
    Call::Run {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn sandbox(timeout: Duration) -> Sandbox {
    Sandbox {
        timeout,
        ..Sandbox::default()
    }
}

pub async fn load(host: &PluginHost, source: &PluginSource) -> Plugin {
    host.load(source, None)
        .await
        .unwrap_or_else(|e| panic!("loading {source}: {e}"))
}

/// A tiny HTTP server on loopback answering every request with `status` and `body`, counting
/// requests. Bounded: it stops when the returned guard is dropped.
pub struct TinyServer {
    pub addr: std::net::SocketAddr,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    /// Request paths in the order they arrived.
    pub paths: Arc<std::sync::Mutex<Vec<String>>>,
    /// The raw requests (head and body) in the order they arrived.
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self._task.abort();
    }
}

pub async fn tiny_server(status: u16, body: &'static str) -> TinyServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let raw = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (seen, raw) = (seen.clone(), raw.clone());
            tokio::spawn(async move {
                // Read the head, then as much body as content-length says (bounded in time and size).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                loop {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                    if buf.len() > 1 << 20 {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(path) = text.split_whitespace().nth(1) {
                    seen.lock().unwrap().push(path.to_owned());
                }
                raw.lock().unwrap().push(text);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    TinyServer {
        addr,
        hits,
        paths,
        requests,
        _task: task,
    }
}

/// Plans `runbooks/NAME` (the examples users get) with `params` and runs it, unrecorded.
pub async fn run_example(
    host: &PluginHost,
    name: &str,
    params: &[(&str, String)],
) -> medic::executor::RunReport {
    run_example_with(host, name, &[], params).await
}

/// Runs an example runbook with parts of its text replaced (shorter bakes and intervals, so
/// a test can wait for them); every replacement must apply.
pub async fn run_example_with(
    host: &PluginHost,
    name: &str,
    replace: &[(&str, &str)],
    params: &[(&str, String)],
) -> medic::executor::RunReport {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("runbooks")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{name} has no `{from}` any more");
        text = text.replace(from, to);
    }
    let opts = medic::runbook::PlanOptions {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let source = medic::runbook::Source {
        path: &path,
        text: &text,
    };
    let plan = medic::runbook::plan(host, &source, &opts)
        .await
        .unwrap_or_else(|d| {
            panic!(
                "{}",
                medic::runbook::Report {
                    path: name,
                    text: &text,
                    diagnostics: &d
                }
            )
        });
    // A fleet step's targets are told one by one, not kept in its report: gathered here as
    // the store gathers them from the journal.
    let mut targets: Vec<(String, medic::executor::TargetReport)> = Vec::new();
    let mut report = medic::executor::execute(
        host,
        &plan,
        medic::executor::RunOptions::default(),
        &mut |e: &medic::executor::Event<'_>| {
            if let medic::executor::Event::TargetFinished { id, target, .. } = e {
                targets.push((
                    (*id).to_owned(),
                    medic::executor::TargetReport::clone(target),
                ));
            }
        },
    )
    .await
    .expect("nothing aborts this run");
    for (id, target) in targets {
        if let Some(step) = report.steps.iter_mut().find(|s| s.id == id) {
            step.targets.push(target);
        }
    }
    report
}

/// The approvals waiting in `dir`, once there is at least one (bounded: about 30 s).
/// The bodies (trimmed) of `n` requests to `GET http://FRONT/`. Each request uses a fresh
/// connection: proxies let a keep-alive connection opened before a config change finish on
/// the old configuration, which would blur what users get now.
pub async fn answers(front: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        let body = client
            .get(format!("http://{front}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push(body.trim().to_owned());
    }
    seen
}

pub fn pending_approvals(dir: &std::path::Path) -> Vec<medic::store::approvals::Pending> {
    let data = medic::store::Place::Files(dir.parent().expect("DATA/approvals").to_owned());
    for _ in 0..1500 {
        let waiting = medic::store::approvals::pending(&data, None);
        if !waiting.is_empty() {
            return waiting;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Vec::new()
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Reads `child`'s stdout line by line until a line satisfies `at`, then kills it with
/// SIGKILL and waits for it: a crash at a chosen point of a run's own progress.
pub fn kill_when(child: &mut std::process::Child, at: impl Fn(&str) -> bool) {
    use std::io::{BufRead, BufReader};
    let lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    for line in lines.map_while(Result::ok) {
        if at(&line) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Spawns `cmd` (a `medic run ... --output json`) and kills it with SIGKILL once step
/// `step` has started: inside its call.
pub fn killed_inside(mut cmd: std::process::Command, step: &str) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = format!("\"{step}\"");
    kill_when(&mut child, |line| {
        line.contains("\"step_started\"") && line.contains(&id)
    });
}

/// A run's JSON events, read as they come.
pub type Events = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Spawns `cmd` (a `medic run ... --output json`), its stdout and stderr piped, and reads its
/// events until step `step` has started. Returns the child, what it showed up to that
/// line, and the events still to come. A run that ends first fails the test with its error.
pub fn run_until_started(
    mut cmd: std::process::Command,
    step: &str,
) -> (std::process::Child, Vec<String>, Events) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut shown = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let quoted = format!("\"{step}\"");
    for line in lines.by_ref().map_while(Result::ok) {
        let started = line.contains("\"step_started\"") && line.contains(&quoted);
        shown.push(line);
        if started {
            return (child, shown, lines);
        }
    }
    let out = child.wait_with_output().unwrap();
    panic!(
        "the run ended before `{step}` started: {shown:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs mounted with `options` (and mode 0700) on a new directory, unmounted on drop.
/// Needs root (CI and this project's machines run the suite as root); anything else fails
/// the test saying so.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("{options},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test mounts a tmpfs, which needs root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs { dir }
    }

    /// Writes a file until the file system is full.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 << 10];
        for _ in 0..1024 {
            if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
                return path;
            }
        }
        panic!("a small tmpfs never filled");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
