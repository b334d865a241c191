//! A steady stream of user requests, so a canary gets real traffic to be judged by.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

/// What the users saw: answers per server (from the proxy's `x-served-by` header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    /// Server name -> (answers, errors among them).
    pub by_server: BTreeMap<String, (u64, u64)>,
}

/// Sends `GET /` to a target at a fixed rate until stopped.
pub struct Traffic {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Tally>,
}

impl Traffic {
    pub fn start(target: SocketAddr, per_second: u32) -> Traffic {
        let (stop, mut rx) = watch::channel(false);
        let period = Duration::from_secs(1) / per_second.max(1);
        crate::host::install_crypto_provider();
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let Ok(client) = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
            else {
                return tally;
            };
            let url = format!("http://{target}/");
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rx.wait_for(|s| *s) => return tally,
                }
                tally.requests += 1;
                let (server, error) = match client.get(&url).send().await {
                    Ok(r) => {
                        let server = r
                            .headers()
                            .get("x-served-by")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("proxy")
                            .to_owned();
                        let error = r.status().is_server_error();
                        // Read the body so the connection is reused.
                        let _ = r.bytes().await;
                        (server, error)
                    }
                    Err(_) => ("unreachable".to_owned(), true),
                };
                tally.errors += u64::from(error);
                let entry = tally.by_server.entry(server).or_default();
                entry.0 += 1;
                entry.1 += u64::from(error);
            }
        });
        Traffic { stop, task }
    }

    pub async fn stop(self) -> Tally {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
