//! The CLI as a client of a remote `medic serve --listen`: with `--server URL` (or
//! `MEDIC_SERVER`) and `--token` (or `MEDIC_TOKEN`), the read commands (`runs list|show|logs|
//! export`, `stats`, `drill list|report`) read through the API, and `approve`/`reject` decide
//! through it, with the same output and exit codes as locally.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::store::drills::DrillRecord;
use crate::store::remote::Reader;
use crate::store::{JournalEntry, ListFilter, RecordedSteps, RunRecord, StoreError};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct ApiClient {
    base: String,
    token: String,
    ca: Option<Vec<u8>>,
}

impl ApiClient {
    pub fn new(server: &str, token: Option<&str>, ca: Option<&PathBuf>) -> Result<Self, String> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or("--server needs a token: --token or MEDIC_TOKEN (`medic token create`)")?;
        let url = reqwest::Url::parse(server).map_err(|e| format!("--server `{server}`: {e}"))?;
        let loopback = url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(format!(
                "--server `{server}`: use https (plain http only to a loopback address: the token would cross the network in clear)"
            ));
        }
        let ca = ca
            .map(|p| std::fs::read(p).map_err(|e| format!("--ca-cert {}: {e}", p.display())))
            .transpose()?;
        Ok(ApiClient {
            base: format!("{}/api/v1", url.as_str().trim_end_matches('/')),
            token: token.trim().to_owned(),
            ca,
        })
    }

    /// One request, on a thread of its own (the CLI's commands run inside its runtime, and
    /// these calls are synchronous): the answer's JSON, or the API's error message.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    crate::host::install_crypto_provider();
                    let mut b = reqwest::Client::builder().timeout(TIMEOUT);
                    if let Some(pem) = &self.ca {
                        let cert = reqwest::Certificate::from_pem(pem)
                            .map_err(|e| format!("--ca-cert: {e}"))?;
                        b = b.add_root_certificate(cert);
                    }
                    let client = b.build().map_err(|e| e.to_string())?;
                    let mut r = client.request(method, &url).bearer_auth(&self.token);
                    if let Some(body) = body {
                        r = r.json(&body);
                    }
                    let response = r.send().await.map_err(|e| format!("{}: {e}", self.base))?;
                    let status = response.status();
                    let json: Value = response
                        .json()
                        .await
                        .map_err(|e| format!("{url}: not a Medic API answer: {e}"))?;
                    if status.is_success() {
                        Ok(json)
                    } else {
                        Err(json["error"]["message"]
                            .as_str()
                            .map_or_else(|| format!("{url}: {status}"), str::to_owned))
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the API request's thread panicked".into()))
        })
    }

    /// The server, as given.
    pub fn server(&self) -> &str {
        self.base.trim_end_matches("/api/v1")
    }

    fn get<T: DeserializeOwned>(&self, path: &str, field: &str) -> Result<T, StoreError> {
        let v = self
            .request(reqwest::Method::GET, path, None)
            .map_err(StoreError::Remote)?;
        serde_json::from_value(v[field].clone())
            .map_err(|e| StoreError::Remote(format!("{}{path}: {e}", self.base)))
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("valid");
    for (k, v) in pairs {
        if let Some(v) = v {
            url.query_pairs_mut().append_pair(k, v);
        }
    }
    url.query().map(|q| format!("?{q}")).unwrap_or_default()
}

impl Reader for ApiClient {
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = filter.before.clone();
        // Pages of at most 500 (the API's), following the cursor.
        while out.len() < limit {
            let page = (limit - out.len()).min(500);
            let q = query(&[
                ("runbook", filter.runbook.clone()),
                ("status", filter.status.map(|s| s.name().to_owned())),
                ("environment", filter.environment.clone()),
                ("trigger", filter.trigger.clone()),
                ("since_ms", filter.since_ms.map(|v| v.to_string())),
                ("until_ms", filter.until_ms.map(|v| v.to_string())),
                ("cursor", cursor.clone()),
                ("limit", Some(page.to_string())),
            ]);
            let v = self
                .request(reqwest::Method::GET, &format!("/runs{q}"), None)
                .map_err(StoreError::Remote)?;
            let runs: Vec<RunRecord> = serde_json::from_value(v["runs"].clone())
                .map_err(|e| StoreError::Remote(e.to_string()))?;
            out.extend(runs);
            match v["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    fn find(&self, prefix: &str) -> Result<RunRecord, StoreError> {
        self.get(&format!("/runs/{prefix}"), "run")
    }

    fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.get(&format!("/runs/{run_id}/journal"), "journal")
    }

    // A follower through the API reads its events (`/runs/ID/events`), not this.
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        Ok(self
            .journal(run_id)?
            .into_iter()
            .skip(from)
            .take(limit)
            .collect())
    }

    fn step_reports(&self, run_id: &str) -> Result<RecordedSteps, StoreError> {
        let v = self
            .request(reqwest::Method::GET, &format!("/runs/{run_id}"), None)
            .map_err(StoreError::Remote)?;
        let steps = serde_json::from_value(v["steps"].clone())
            .map_err(|e| StoreError::Remote(e.to_string()))?;
        let unfinished = serde_json::from_value(v["unfinished"].clone())
            .map_err(|e| StoreError::Remote(e.to_string()))?;
        Ok((steps, unfinished))
    }

    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        let q = query(&[
            ("drill", drill.map(str::to_owned)),
            ("since_ms", Some(since_ms.to_string())),
        ]);
        self.get(&format!("/drills/records{q}"), "records")
    }

    fn alerts(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::store::triggers::AlertRecord>, StoreError> {
        let q = query(&[
            ("since_ms", Some(since_ms.to_string())),
            ("limit", Some(limit.clamp(1, 10_000).to_string())),
        ]);
        self.get(&format!("/alerts{q}"), "alerts")
    }

    fn waiting(&self) -> Result<Vec<String>, StoreError> {
        let waiting: Vec<crate::store::approvals::Pending> = self.get("/approvals", "approvals")?;
        let mut ids: Vec<String> = waiting.into_iter().map(|p| p.run_id).collect();
        ids.dedup();
        Ok(ids)
    }

    fn location(&self) -> String {
        self.base.clone()
    }
}

impl ApiClient {
    /// Follows a run's events (Server-Sent Events) on a thread of its own, sending each
    /// journal entry as it comes; the channel closes when the run has ended. A dropped
    /// connection is resumed from the last event seen, a few times. The channel is bounded:
    /// a terminal slower than the run holds the stream back (the server reads the journal as
    /// it is asked for it) instead of this process keeping every entry.
    pub fn follow(
        &self,
        run_id: &str,
        from: Option<usize>,
        tx: tokio::sync::mpsc::Sender<Result<JournalEntry, String>>,
    ) {
        let url = format!("{}/runs/{run_id}/events", self.base);
        let (token, ca) = (self.token.clone(), self.ca.clone());
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                crate::host::install_crypto_provider();
                let mut b = reqwest::Client::builder().connect_timeout(TIMEOUT);
                if let Some(pem) = &ca
                    && let Ok(cert) = reqwest::Certificate::from_pem(pem)
                {
                    b = b.add_root_certificate(cert);
                }
                let Ok(client) = b.build() else { return };
                let mut last: Option<usize> = from.and_then(|f| f.checked_sub(1));
                for _ in 0..5 {
                    let mut r = client.get(&url).bearer_auth(&token);
                    if let Some(id) = last {
                        r = r.header("Last-Event-ID", id.to_string());
                    }
                    let mut response = match r.send().await {
                        Ok(r) if r.status().is_success() => r,
                        Ok(r) => {
                            let _ = tx.send(Err(format!("{url}: {}", r.status()))).await;
                            return;
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let mut buffer = String::new();
                    loop {
                        match response.chunk().await {
                            Ok(Some(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                            // The run has ended: the server closed the stream.
                            Ok(None) => return,
                            Err(_) => break,
                        }
                        while let Some(end) = buffer.find("\n\n") {
                            let block: String = buffer.drain(..end + 2).collect();
                            let field = |name: &str| {
                                block
                                    .lines()
                                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                            };
                            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                                last = id.parse().ok().or(last);
                                if let Ok(entry) = serde_json::from_str::<JournalEntry>(data)
                                    && tx.send(Ok(entry)).await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                }
                let _ = tx
                    .send(Err(format!("{url}: the event stream kept breaking")))
                    .await;
            });
        });
    }
}
