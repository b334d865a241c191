//! The HTTP API of `medic serve --listen`: JSON under `/api/v1`, bearer tokens with roles
//! ([`crate::store::tokens`]), every change and every refusal in the audit log.
//!
//! HTTPS with rustls from `--tls-cert/--tls-key`; plain HTTP only on a loopback address
//! (a token sent in clear over a network is a token given away). Requests are bounded: body
//! size, header size and read time, handling time, connections at once. No CORS headers are
//! sent, so browsers keep other sites' scripts out.

mod alerts;
mod auth;
mod catalogue;
mod events;
pub mod openapi;
mod pickup;
mod probe;
mod routes;
mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::remote::Extension;
use crate::store::tokens::Tokens;

/// Request bodies are small JSON documents.
const MAX_BODY: usize = 64 << 10;
/// Headers (and the request line) must fit in this, and arrive within `HEADER_TIME`.
const MAX_HEADERS: usize = 16 << 10;
const HEADER_TIME: Duration = Duration::from_secs(10);
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// A request is answered within this, or with 503.
const HANDLING_TIME: Duration = Duration::from_secs(30);
/// Connections open at once; more are closed at once.
const MAX_CONNECTIONS: usize = 512;

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Certificate chain and private key, PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--runbooks DIR`: the runbooks the API offers and starts.
    pub runbooks: Option<PathBuf>,
}

/// What the handlers share.
pub(crate) struct State {
    pub store: Store,
    /// Loads plugins to check runbooks (`POST /runbooks/NAME/check`).
    pub host: Arc<crate::host::PluginHost>,
    pub tokens: Tokens,
    pub audit: Audit,
    /// `medic serve`'s own operations (cancel a run, list and run drills), as the socket
    /// offers them.
    pub ops: Extension,
    pub limiter: auth::Limiter,
    /// Failed webhook signatures, apart: a misconfigured signer must not lock out the bearer
    /// clients (Alertmanager, responders) behind the same address, nor they it.
    pub hook_limiter: auth::Limiter,
    pub runbooks: Option<PathBuf>,
    /// The web UI's sessions.
    pub sessions: web::Sessions,
    /// Served over HTTPS (session cookies are then `Secure`).
    pub tls: bool,
    /// `GET /ready`'s check of the store in flight.
    pub store_probe: probe::StoreProbe,
}

/// Waits (10 s at most) for the first event of a run `medic serve` starts: it comes once the
/// run is recorded (so a client reading or following the run it is given finds it), or says
/// why the run did not start (`not_started` when it does not say).
async fn started(
    events: &mut crate::store::remote::Lines,
    not_started: &str,
) -> Result<(), auth::ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await {
        Ok(Some(first)) if first.get("error").is_some() => Err(auth::ApiError::conflict(
            first["error"].as_str().unwrap_or(not_started).to_owned(),
        )),
        Ok(None) => Err(auth::ApiError::internal("the run ended before it started")),
        Ok(Some(_)) | Err(_) => Ok(()),
    }
}

/// Binds and serves the API until the returned task is aborted. Refuses plain HTTP on an
/// address that is not loopback, and unreadable TLS files, before anything listens.
pub async fn start(
    config: &ApiConfig,
    store: Store,
    host: Arc<crate::host::PluginHost>,
    ops: Extension,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let addr = config.listen;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None if addr.ip().is_loopback() => None,
        None => {
            return Err(format!(
                "--listen {addr}: plain HTTP is served on loopback addresses only (tokens would \
                 cross the network in clear); give --tls-cert and --tls-key to serve HTTPS"
            ));
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let place = store.place();
    let state = Arc::new(State {
        tokens: Tokens::at(&place),
        audit: Audit::at(&place),
        store,
        host,
        ops,
        limiter: auth::Limiter::default(),
        hook_limiter: auth::Limiter::default(),
        runbooks: config.runbooks.clone(),
        sessions: web::Sessions::default(),
        tls: tls.is_some(),
        store_probe: probe::StoreProbe::default(),
    });
    let app = routes::router(state);
    let task = tokio::spawn(accept_loop(listener, tls, app));
    Ok((bound, task))
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::host::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let app = app.clone().layer(axum::Extension(auth::Peer(peer)));
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIME, acceptor.accept(tcp)).await
                    {
                        serve_connection(stream, app).await;
                    }
                }
                None => serve_connection(tcp, app).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, app: axum::Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let _ = hyper::server::conn::http1::Builder::new()
        // A client that sends its whole request and closes (a script, `curl` killed at once,
        // a closed laptop, a browser navigating away) still gets it carried out and audited:
        // without half-close, hyper reads the EOF while the request is handled and drops it,
        // possibly half-way (between finding the run and writing the decision) or before the
        // handler started. This covers every route, the API's and the web UI's alike.
        .half_close(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIME)
        .max_buf_size(MAX_HEADERS.max(8192))
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}
