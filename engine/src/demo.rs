//! The demo service: a small HTTP service with versions, a deploy endpoint, a health check
//! and Prometheus metrics. Versions listed as bad answer errors, so a deploy can really fail.
//!
//! A slow version answers `/` and `/health` correctly but 300 ms late.
//!
//! `GET /health` (200, or 503 on a bad version), `GET /version`, `POST /deploy` (body: the
//! version, plain text), `GET /` (a greeting, or 500 on a bad version), `GET /metrics`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

#[derive(Debug)]
struct DemoState {
    version: Mutex<String>,
    bad: BTreeSet<String>,
    /// Versions that answer correctly but slowly.
    slow: BTreeSet<String>,
    requests: AtomicU64,
    errors: AtomicU64,
    deploys: AtomicU64,
}

impl DemoState {
    fn current(&self) -> (String, bool) {
        let v = self.version.lock().unwrap().clone();
        let bad = self.bad.contains(&v);
        (v, bad)
    }

    /// A slow version answers after this delay (health checks and user requests alike).
    async fn lag(&self) {
        let slow = {
            let v = self.version.lock().unwrap();
            self.slow.contains(&*v)
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
    s.count(!bad);
    if bad {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error from {v}\n"),
        )
    } else {
        (StatusCode::OK, format!("hello from {v}\n"))
    }
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
        Self::start_with(listen, version, bad, []).await
    }

    /// Like [`DemoService::start`], with versions that fail by being slow instead.
    pub async fn start_with(
        listen: SocketAddr,
        version: &str,
        bad: impl IntoIterator<Item = String>,
        slow: impl IntoIterator<Item = String>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(DemoState {
            version: Mutex::new(version.to_owned()),
            bad: bad.into_iter().collect(),
            slow: slow.into_iter().collect(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            deploys: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/", get(root))
            .route("/health", get(health))
            .route("/version", get(current_version))
            .route("/deploy", post(deploy))
            .route("/metrics", get(metrics))
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
