//! A weighted HTTP proxy for the demo: user traffic is split between servers by weight, each
//! server's requests and errors are counted, and weights change at runtime.
//!
//! Weights change through the subset of HAProxy's runtime API that the `haproxy-weight`
//! plugin uses (a TCP listener, one command per connection), so the demo runbook is the one a
//! team would run against a real HAProxy: `get weight B/S`, `set weight B/S N`,
//! `set server B/S weight N`, `set server B/S state ready|drain|maint`,
//! `show servers state [B]`.
//!
//! A separate stats listener answers `GET /stats` (JSON: per server, its weight, state, totals
//! and the error ratio over the last [`WINDOW_SECS`] seconds, `null` without requests) and
//! `GET /metrics` (Prometheus text format).
//!
//! Servers are picked by smooth weighted round robin (as nginx does), so a 10% weight gets
//! exactly one request in ten, which keeps the demo's traffic counts readable.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The error ratio in `/stats` covers this many seconds.
pub const WINDOW_SECS: u64 = 5;
/// HAProxy's limit: a weight is 0 to 256.
const MAX_WEIGHT: u32 = 256;
/// Longest runtime API command line accepted.
const MAX_COMMAND: usize = 4096;
/// How long an upstream may take before the proxy answers 504.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A server behind the proxy, as configured at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// Administrative state, as HAProxy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }

    /// HAProxy's `srv_admin_state` bits (SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN).
    fn admin_bits(self) -> u32 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 0x08,
            AdminState::Maint => 0x01,
        }
    }
}

/// Requests and errors, in total and per second for the recent window.
#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    errors: u64,
    /// (second since start, requests, errors), oldest first, at most WINDOW_SECS entries.
    recent: VecDeque<(u64, u64, u64)>,
}

impl Counters {
    fn add(&mut self, second: u64, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        match self.recent.back_mut() {
            Some((s, r, e)) if *s == second => {
                *r += 1;
                *e += u64::from(error);
            }
            _ => self.recent.push_back((second, 1, u64::from(error))),
        }
        self.trim(second);
    }

    fn trim(&mut self, now: u64) {
        while self
            .recent
            .front()
            .is_some_and(|(s, _, _)| s + WINDOW_SECS <= now)
        {
            self.recent.pop_front();
        }
    }

    fn window(&mut self, now: u64) -> (u64, u64) {
        self.trim(now);
        self.recent
            .iter()
            .fold((0, 0), |(r, e), (_, rr, ee)| (r + rr, e + ee))
    }
}

#[derive(Debug)]
struct Server {
    name: String,
    addr: SocketAddr,
    initial_weight: u32,
    weight: AtomicU32,
    admin: AtomicU8,
    counters: Mutex<Counters>,
}

impl Server {
    fn state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// The weight that counts for new requests: none while drained or in maintenance.
    fn effective_weight(&self) -> u32 {
        match self.state() {
            AdminState::Ready => self.weight.load(Ordering::Relaxed),
            AdminState::Drain | AdminState::Maint => 0,
        }
    }
}

#[derive(Debug)]
struct Shared {
    backend: String,
    servers: Vec<Server>,
    /// Smooth weighted round robin: the running score of each server.
    scores: Mutex<Vec<i64>>,
    started: Instant,
    client: reqwest::Client,
}

impl Shared {
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn pick(&self) -> Option<usize> {
        let mut scores = self.scores.lock().unwrap();
        let weights: Vec<i64> = self
            .servers
            .iter()
            .map(|s| i64::from(s.effective_weight()))
            .collect();
        let total: i64 = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut best = None;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                scores[i] = 0;
                continue;
            }
            scores[i] += w;
            if best.is_none_or(|b: usize| scores[i] > scores[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        scores[chosen] -= total;
        Some(chosen)
    }

    fn server(&self, target: &str) -> Result<&Server, String> {
        let Some((backend, server)) = target.split_once('/') else {
            return Err("Require 'backend/server'.".into());
        };
        if backend != self.backend {
            return Err("No such backend.".into());
        }
        self.servers
            .iter()
            .find(|s| s.name == server)
            .ok_or_else(|| "No such server.".into())
    }

    /// One runtime API command, answered as HAProxy answers it.
    fn command(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            ["get", "weight", target] => self.server(target).map(|s| {
                format!(
                    "{} (initial {})\n",
                    s.weight.load(Ordering::Relaxed),
                    s.initial_weight
                )
            }),
            ["set", "weight", target, w] | ["set", "server", target, "weight", w] => {
                self.server(target).and_then(|s| {
                    let w: u32 = w.parse().ok().filter(|w| *w <= MAX_WEIGHT).ok_or_else(|| {
                        format!("Invalid weight '{w}': it must be 0 to {MAX_WEIGHT}.")
                    })?;
                    s.weight.store(w, Ordering::Relaxed);
                    Ok("\n".to_owned())
                })
            }
            ["set", "server", target, "state", state] => self.server(target).and_then(|s| {
                let state = match *state {
                    "ready" => AdminState::Ready,
                    "drain" => AdminState::Drain,
                    "maint" => AdminState::Maint,
                    other => {
                        return Err(format!(
                            "Invalid state '{other}': use 'ready', 'drain' or 'maint'."
                        ));
                    }
                };
                s.admin.store(state.as_u8(), Ordering::Relaxed);
                Ok("\n".to_owned())
            }),
            ["show", "servers", "state"] => Ok(self.state_dump()),
            ["show", "servers", "state", backend] if *backend == self.backend => {
                Ok(self.state_dump())
            }
            ["show", "servers", "state", _] => Err("Can't find backend.".into()),
            _ => Err(format!(
                "Unknown command: '{}'. This demo proxy answers get weight, set weight, \
                 set server and show servers state.",
                line.trim()
            )),
        };
        match result {
            Ok(answer) => answer,
            Err(message) => format!("{message}\n"),
        }
    }

    /// `show servers state`, in HAProxy's format (version 1; the columns haproxy-weight reads
    /// are exact, the rest are plausible constants).
    fn state_dump(&self) -> String {
        let mut out = String::from(
            "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
             srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
             srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
             srv_f_forced_id srv_fqdn srv_port srvrecord\n",
        );
        for (i, s) in self.servers.iter().enumerate() {
            let _ = writeln!(
                out,
                "1 {} {} {} {} 2 {} {} {} 0 6 3 4 6 0 0 0 - {} -",
                self.backend,
                i + 1,
                s.name,
                s.addr.ip(),
                s.state().admin_bits(),
                s.weight.load(Ordering::Relaxed),
                s.initial_weight,
                s.addr.port(),
            );
        }
        out
    }
}

/// One server's figures, as `/stats` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub address: String,
    pub weight: u32,
    pub state: AdminState,
    pub requests_total: u64,
    pub errors_total: u64,
    pub window_requests: u64,
    pub window_errors: u64,
    /// Errors / requests over the window; `None` without requests.
    pub error_ratio: Option<f64>,
}

/// A running proxy; its listeners stop when it is stopped or dropped.
pub struct DemoProxy {
    /// User traffic.
    pub http: SocketAddr,
    /// `/stats` and `/metrics`.
    pub stats: SocketAddr,
    /// The runtime API (TCP).
    pub runtime_api: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DemoProxy {
    /// Starts the three listeners on loopback ports chosen by the system.
    pub async fn start(backend: &str, servers: Vec<ServerConfig>) -> std::io::Result<DemoProxy> {
        crate::host::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(UPSTREAM_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            backend: backend.to_owned(),
            scores: Mutex::new(vec![0; servers.len()]),
            servers: servers
                .into_iter()
                .map(|c| Server {
                    name: c.name,
                    addr: c.addr,
                    initial_weight: c.weight,
                    weight: AtomicU32::new(c.weight),
                    admin: AtomicU8::new(AdminState::Ready.as_u8()),
                    counters: Mutex::default(),
                })
                .collect(),
            started: Instant::now(),
            client,
        });
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let http_listener = tokio::net::TcpListener::bind(loopback).await?;
        let http = http_listener.local_addr()?;
        let app = Router::new().fallback(forward).with_state(shared.clone());
        tasks.push(serve(http_listener, app, rx.clone()));

        let stats_listener = tokio::net::TcpListener::bind(loopback).await?;
        let stats = stats_listener.local_addr()?;
        let app = Router::new()
            .route("/stats", get(stats_json))
            .route("/metrics", get(metrics))
            .with_state(shared.clone());
        tasks.push(serve(stats_listener, app, rx.clone()));

        let api_listener = tokio::net::TcpListener::bind(loopback).await?;
        let runtime_api = api_listener.local_addr()?;
        tasks.push(tokio::spawn(runtime_api_loop(
            api_listener,
            shared.clone(),
            rx,
        )));

        Ok(DemoProxy {
            http,
            stats,
            runtime_api,
            shared,
            shutdown,
            tasks,
        })
    }

    /// Every server's figures, in configuration order.
    pub fn snapshot(&self) -> Vec<(String, ServerStats)> {
        snapshot(&self.shared)
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for DemoProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut rx: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await;
    })
}

async fn runtime_api_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut rx: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = rx.wait_for(|stop| *stop) => return,
        };
        let Ok((mut conn, _)) = accepted else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // Like HAProxy's non-interactive mode: one command line, one answer, close.
            let mut line = Vec::new();
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            line.extend_from_slice(&buf[..n]);
                            if line.contains(&b'\n') || line.len() > MAX_COMMAND {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            let answer = if read.is_err() {
                "Timeout waiting for a command.\n".to_owned()
            } else if line.len() > MAX_COMMAND {
                format!("Invalid command: longer than {MAX_COMMAND} bytes.\n")
            } else {
                let text = String::from_utf8_lossy(&line);
                shared.command(text.lines().next().unwrap_or(""))
            };
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(i) = shared.pick() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no server available: every weight is 0\n",
        )
            .into_response();
    };
    let server = &shared.servers[i];
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{}{path}", server.addr);
    let result = shared.client.request(method, &url).body(body).send().await;
    let (status, body) = match result {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(b) => (status, b),
                Err(e) => (
                    StatusCode::BAD_GATEWAY,
                    Bytes::from(format!("reading from {}: {e}\n", server.name)),
                ),
            }
        }
        Err(e) if e.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            Bytes::from(format!("{} did not answer in time\n", server.name)),
        ),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Bytes::from(format!("cannot reach {}: {e}\n", server.name)),
        ),
    };
    server
        .counters
        .lock()
        .unwrap()
        .add(shared.second(), status.is_server_error());
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&server.name) {
        response.headers_mut().insert("x-served-by", v);
    }
    response
}

fn snapshot(shared: &Shared) -> Vec<(String, ServerStats)> {
    let now = shared.second();
    shared
        .servers
        .iter()
        .map(|s| {
            let mut c = s.counters.lock().unwrap();
            let (window_requests, window_errors) = c.window(now);
            let stats = ServerStats {
                address: s.addr.to_string(),
                weight: s.weight.load(Ordering::Relaxed),
                state: s.state(),
                requests_total: c.requests,
                errors_total: c.errors,
                window_requests,
                window_errors,
                error_ratio: (window_requests > 0)
                    .then(|| window_errors as f64 / window_requests as f64),
            };
            (s.name.clone(), stats)
        })
        .collect()
}

async fn stats_json(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
    let servers: serde_json::Map<String, serde_json::Value> = snapshot(&shared)
        .into_iter()
        .map(|(name, s)| (name, serde_json::to_value(s).unwrap_or_default()))
        .collect();
    axum::Json(serde_json::json!({
        "backend": shared.backend,
        "window_seconds": WINDOW_SECS,
        "servers": servers,
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    let rows = snapshot(&shared);
    let mut out = String::new();
    let families = [
        (
            "demo_proxy_requests_total",
            "counter",
            "Requests forwarded to the server.",
        ),
        (
            "demo_proxy_errors_total",
            "counter",
            "Requests the server answered with a 5xx, or that failed.",
        ),
        (
            "demo_proxy_weight",
            "gauge",
            "The server's configured weight.",
        ),
    ];
    for (name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (server, s) in &rows {
            let v = match name {
                "demo_proxy_requests_total" => s.requests_total,
                "demo_proxy_errors_total" => s.errors_total,
                _ => u64::from(s.weight),
            };
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\",server=\"{server}\"}} {v}",
                shared.backend
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(weights: &[u32]) -> Shared {
        Shared {
            backend: "demo".into(),
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Server {
                    name: format!("s{i}"),
                    addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                    initial_weight: *w,
                    weight: AtomicU32::new(*w),
                    admin: AtomicU8::new(0),
                    counters: Mutex::default(),
                })
                .collect(),
            scores: Mutex::new(vec![0; weights.len()]),
            started: Instant::now(),
            client: {
                crate::host::install_crypto_provider();
                reqwest::Client::new()
            },
        }
    }

    fn picks(s: &Shared, n: usize) -> Vec<usize> {
        let mut counts = vec![0; s.servers.len()];
        for _ in 0..n {
            counts[s.pick().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn weights_split_traffic_exactly() {
        let s = shared(&[90, 10]);
        assert_eq!(picks(&s, 100), vec![90, 10]);
        s.command("set weight demo/s1 90");
        s.command("set weight demo/s0 10");
        assert_eq!(picks(&s, 100), vec![10, 90]);
        s.command("set server demo/s1 state drain");
        assert_eq!(picks(&s, 10), vec![10, 0]);
        s.command("set server demo/s0 state maint");
        assert_eq!(s.pick(), None);
    }

    #[test]
    fn runtime_api_answers_like_haproxy() {
        let s = shared(&[90, 0]);
        assert_eq!(s.command("get weight demo/s1"), "0 (initial 0)\n");
        assert_eq!(s.command("set server demo/s1 weight 25"), "\n");
        assert_eq!(s.command("get weight demo/s1"), "25 (initial 0)\n");
        assert_eq!(s.command("get weight demo/nope"), "No such server.\n");
        assert_eq!(s.command("get weight other/s1"), "No such backend.\n");
        assert_eq!(s.command("get weight s1"), "Require 'backend/server'.\n");
        assert!(
            s.command("set weight demo/s1 300")
                .starts_with("Invalid weight")
        );
        assert!(
            s.command("set server demo/s1 state off")
                .starts_with("Invalid state")
        );
        assert!(
            s.command("disable server demo/s1")
                .starts_with("Unknown command")
        );
        s.command("set server demo/s1 state drain");
        let dump = s.command("show servers state demo");
        let row: Vec<&str> = dump.lines().nth(3).unwrap().split_whitespace().collect();
        assert_eq!(
            &row[..8],
            ["1", "demo", "2", "s1", "127.0.0.1", "2", "8", "25"]
        );
        assert_eq!(
            s.command("show servers state other"),
            "Can't find backend.\n"
        );
    }

    #[test]
    fn the_window_forgets_old_seconds() {
        let mut c = Counters::default();
        c.add(0, true);
        c.add(1, false);
        c.add(1, false);
        assert_eq!(c.window(1), (3, 1));
        assert_eq!(c.window(WINDOW_SECS), (2, 0));
        assert_eq!(c.window(WINDOW_SECS + 1), (0, 0));
        assert_eq!((c.requests, c.errors), (3, 1));
    }
}
