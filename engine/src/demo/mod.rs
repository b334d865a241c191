//! The demo service: a small HTTP service with versions, a deploy endpoint, a health check
//! and Prometheus metrics. Versions can be made faulty, so a deploy can really fail:
//!
//! - a bad version fails everything, its health check included;
//! - a slow version answers `/` and `/health` correctly but 300 ms late;
//! - a flaky version passes its health check but fails one user request (`/`) in three: only
//!   an error-ratio gate on real traffic catches it.
//!
//! A feature behind an Unleash flag: the service reads the flag (Unleash's client API, every
//! 200 ms) and serves that share of user requests with the new behaviour, which fails every
//! time when the feature is declared broken, so a bad feature shows in the error ratio.
//!
//! `GET /health` (200, or 503 on a bad version), `GET /version`, `POST /deploy` (body: the
//! version, plain text), `GET /` (a greeting, or 500), `GET /metrics`, `GET /stats` (JSON:
//! the error ratio of the last [`WINDOW`] user requests, and the feature's share).
//!
//! [`proxy`] is a weighted proxy for canaries between two instances, [`traffic`] a steady
//! stream of user requests through it, and [`Canary`] puts the three together for `medic demo`.

pub mod proxy;
pub mod traffic;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Versions that misbehave when deployed.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail everything, health checks included.
    pub bad: BTreeSet<String>,
    /// Answer correctly but [`SLOW_BY`] late.
    pub slow: BTreeSet<String>,
    /// Pass health checks but fail one user request in three.
    pub flaky: BTreeSet<String>,
    /// A deploy takes the new version at once, then answers this much later: a caller killed
    /// in between has made a change it never heard the end of.
    pub deploy_delay: std::time::Duration,
    /// A feature behind a flag.
    pub feature: Option<Feature>,
}

/// A feature the service serves to the share of user requests its Unleash flag gives.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Unleash's base URL.
    pub unleash: String,
    /// A client API token for the flag's environment.
    pub token: String,
    pub flag: String,
    /// The new behaviour fails every request it serves.
    pub broken: bool,
}

/// User requests the windowed error ratio of `/stats` covers.
pub const WINDOW: usize = 100;

#[derive(Debug)]
struct DemoState {
    version: Mutex<String>,
    faults: Faults,
    /// User requests (`/`) served, for the flaky versions' one-in-three.
    served: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    deploys: AtomicU64,
    /// Percent of user requests the feature serves (0 while its flag is off).
    feature_share: std::sync::atomic::AtomicU8,
    /// The last [`WINDOW`] user requests: whether each went well.
    recent: Mutex<std::collections::VecDeque<bool>>,
}

impl DemoState {
    fn current(&self) -> (String, bool) {
        let v = self.version.lock().unwrap().clone();
        let bad = self.faults.bad.contains(&v);
        (v, bad)
    }

    /// A slow version answers after this delay (health checks and user requests alike).
    async fn lag(&self) {
        let slow = {
            let v = self.version.lock().unwrap();
            self.faults.slow.contains(&*v)
        };
        if slow {
            tokio::time::sleep(SLOW_BY).await;
        }
    }

    fn count(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Shared = Arc<DemoState>;

/// How much slower a slow version answers.
pub const SLOW_BY: std::time::Duration = std::time::Duration::from_millis(300);

async fn health(State(s): State<Shared>) -> (StatusCode, String) {
    s.lag().await;
    let (v, bad) = s.current();
    s.count(!bad);
    if bad {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: version {v} is failing\n"),
        )
    } else {
        (StatusCode::OK, "ok\n".into())
    }
}

async fn current_version(State(s): State<Shared>) -> String {
    s.count(true);
    format!("{}\n", s.current().0)
}

async fn root(State(s): State<Shared>) -> (StatusCode, String) {
    s.lag().await;
    let (v, bad) = s.current();
    let nth = s.served.fetch_add(1, Ordering::Relaxed);
    // The feature takes its share of requests spread evenly (at 5%, every 20th), so any
    // window of a few dozen requests shows it, however slow the traffic.
    let share = u64::from(s.feature_share.load(Ordering::Relaxed));
    let takes = (nth + 1) * share / 100 > nth * share / 100;
    let feature = s.faults.feature.as_ref().filter(|_| takes);
    let bad =
        bad || (s.faults.flaky.contains(&v) && nth % 3 == 2) || feature.is_some_and(|f| f.broken);
    s.count(!bad);
    {
        let mut recent = s.recent.lock().unwrap();
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(!bad);
    }
    let what = match feature {
        Some(f) => format!("{v} with {}", f.flag),
        None => v,
    };
    if bad {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error from {what}\n"),
        )
    } else {
        (StatusCode::OK, format!("hello from {what}\n"))
    }
}

async fn stats(State(s): State<Shared>) -> axum::Json<serde_json::Value> {
    let recent = s.recent.lock().unwrap();
    let errors = recent.iter().filter(|ok| !**ok).count();
    axum::Json(serde_json::json!({
        "requests": recent.len(),
        "errors": errors,
        "error_ratio": if recent.is_empty() { 0.0 } else { errors as f64 / recent.len() as f64 },
        "feature_share": s.feature_share.load(Ordering::Relaxed),
    }))
}

/// The share Unleash gives a flag (client API): 0 when off, its flexibleRollout's
/// percentage, else 100.
async fn read_flag(client: &reqwest::Client, f: &Feature) -> Option<u8> {
    let url = format!(
        "{}/api/client/features/{}",
        f.unleash.trim_end_matches('/'),
        f.flag
    );
    let body: serde_json::Value = client
        .get(url)
        .header("authorization", &f.token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    if body["enabled"] != true {
        return Some(0);
    }
    let strategies = body["strategies"].as_array()?;
    Some(
        match strategies.iter().find(|s| s["name"] == "flexibleRollout") {
            Some(s) => s["parameters"]["rollout"]
                .as_str()
                .and_then(|r| r.parse::<u8>().ok())
                .unwrap_or(0)
                .min(100),
            None => 100,
        },
    )
}

async fn deploy(State(s): State<Shared>, body: String) -> (StatusCode, String) {
    let v = body.trim();
    let valid = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        s.count(false);
        return (
            StatusCode::BAD_REQUEST,
            "the body must be a version like v2 or 1.4.0\n".into(),
        );
    }
    s.count(true);
    *s.version.lock().unwrap() = v.to_owned();
    s.deploys.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(s.faults.deploy_delay).await;
    (StatusCode::OK, format!("deployed {v}\n"))
}

async fn metrics(State(s): State<Shared>) -> String {
    let (v, _) = s.current();
    format!(
        "# HELP demo_requests_total Requests served.\n# TYPE demo_requests_total counter\ndemo_requests_total {}\n\
         # HELP demo_errors_total Requests answered with an error.\n# TYPE demo_errors_total counter\ndemo_errors_total {}\n\
         # HELP demo_deploys_total Deployments.\n# TYPE demo_deploys_total counter\ndemo_deploys_total {}\n\
         # HELP demo_version_info The running version.\n# TYPE demo_version_info gauge\ndemo_version_info{{version=\"{v}\"}} 1\n",
        s.requests.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        s.deploys.load(Ordering::Relaxed),
    )
}

/// A running demo service; stops when dropped.
pub struct DemoService {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DemoService {
    /// Starts on `listen` (use port 0 for any free port) with `version` running.
    pub async fn start(
        listen: SocketAddr,
        version: &str,
        bad: impl IntoIterator<Item = String>,
    ) -> std::io::Result<Self> {
        let faults = Faults {
            bad: bad.into_iter().collect(),
            ..Faults::default()
        };
        Self::start_with(listen, version, faults).await
    }

    /// Like [`DemoService::start`], with any kind of faulty version.
    pub async fn start_with(
        listen: SocketAddr,
        version: &str,
        faults: Faults,
    ) -> std::io::Result<Self> {
        let state = Arc::new(DemoState {
            version: Mutex::new(version.to_owned()),
            faults,
            served: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            deploys: AtomicU64::new(0),
            feature_share: std::sync::atomic::AtomicU8::new(0),
            recent: Mutex::new(std::collections::VecDeque::with_capacity(WINDOW)),
        });
        let poller = state.faults.feature.clone().map(|f| {
            let state = state.clone();
            crate::host::install_crypto_provider();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    if let Some(share) = read_flag(&client, &f).await {
                        state.feature_share.store(share, Ordering::Relaxed);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        });
        let app = Router::new()
            .route("/", get(root))
            .route("/health", get(health))
            .route("/version", get(current_version))
            .route("/deploy", post(deploy))
            .route("/metrics", get(metrics))
            .route("/stats", get(stats))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Some(p) = poller {
                p.abort();
            }
        });
        Ok(DemoService {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The demo's canary setup: two instances of the demo service running the same version
/// ("stable" with weight 90, "canary" with weight 0) behind a [`proxy::DemoProxy`], and a
/// steady stream of user traffic through the proxy.
pub struct Canary {
    pub stable: DemoService,
    pub canary: DemoService,
    pub proxy: proxy::DemoProxy,
    traffic: traffic::Traffic,
}

impl Canary {
    /// The proxy's backend name, as the runbook addresses it (`demo/stable`, `demo/canary`).
    pub const BACKEND: &'static str = "demo";

    pub async fn start(version: &str, faults: Faults, per_second: u32) -> std::io::Result<Canary> {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let stable = DemoService::start_with(loopback, version, faults.clone()).await?;
        let canary = DemoService::start_with(loopback, version, faults).await?;
        let proxy = proxy::DemoProxy::start(
            Self::BACKEND,
            vec![
                proxy::ServerConfig {
                    name: "stable".into(),
                    addr: stable.addr,
                    weight: 90,
                },
                proxy::ServerConfig {
                    name: "canary".into(),
                    addr: canary.addr,
                    weight: 0,
                },
            ],
        )
        .await?;
        let traffic = traffic::Traffic::start(proxy.http, per_second);
        Ok(Canary {
            stable,
            canary,
            proxy,
            traffic,
        })
    }

    /// The parameters `runbooks/canary-demo.toml` needs to reach this setup.
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("canary".into(), self.canary.addr.to_string()),
            ("proxy".into(), self.proxy.http.to_string()),
            ("stats".into(), self.proxy.stats.to_string()),
            ("runtime_api".into(), self.proxy.runtime_api.to_string()),
        ]
    }

    /// Stops everything and returns what the users saw.
    pub async fn stop(self) -> traffic::Tally {
        let tally = self.traffic.stop().await;
        self.proxy.stop().await;
        self.stable.stop().await;
        self.canary.stop().await;
        tally
    }
}
