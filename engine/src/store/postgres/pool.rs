//! Connections to PostgreSQL, each on its own thread. The client is synchronous and must not
//! run on an async runtime's threads (it would block them, and it starts a runtime of its
//! own), so calls are sent to these threads and answered over a channel. A connection that
//! broke is made again at the next call: a database that comes back is used again.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::StoreError;

pub(super) type Job = Box<dyn FnOnce(Result<&mut postgres::Client, &str>) + Send>;

/// Why a call failed, before it is named for the user.
pub(super) enum Failure {
    Connect(String),
    /// The database refused what was asked, for the reason given (named with the store).
    Refused(String),
    Db(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// How connections are made: the parsed URL, and TLS when it asks for it
/// (`sslmode=require`).
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    /// With `sslmode=require` the connection is encrypted and the server's certificate and
    /// name are verified (stricter than libpq's `require`, which verifies neither): against
    /// the CAs in the PEM file `PGSSLROOTCERT` when set, as libpq's tools take it, else the
    /// system's. Otherwise plain (`prefer`, the default, then means plain).
    pub(super) fn new(config: postgres::Config) -> Result<Connector, String> {
        if config.get_ssl_mode() != postgres::config::SslMode::Require {
            return Ok(Connector { config, tls: None });
        }
        crate::host::install_crypto_provider();
        let builder = rustls::ClientConfig::builder();
        let client = match std::env::var_os("PGSSLROOTCERT") {
            Some(file) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(&file)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("PGSSLROOTCERT {}: {e}", file.to_string_lossy()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("PGSSLROOTCERT {}: {e}", file.to_string_lossy()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                builder
                    .with_platform_verifier()
                    .map_err(|e| format!("the system's certificate authorities: {e}"))?
                    .with_no_client_auth()
            }
        };
        Ok(Connector {
            config,
            tls: Some(tokio_postgres_rustls::MakeRustlsConnect::new(client)),
        })
    }

    pub(super) fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }
}

/// A fixed set of connections, shared by a process's runs, readers and heartbeat.
pub(super) struct Pool {
    place: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Pool {
    pub(super) fn start(
        config: &Connector,
        connections: usize,
        place: &str,
    ) -> Result<Pool, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..connections {
            let (rx, config) = (rx.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("medic-pg-{i}"))
                .spawn(move || worker(&config, &rx))
                .map_err(|e| StoreError::Database {
                    place: place.to_owned(),
                    reason: format!("cannot start a connection thread: {e}"),
                })?;
        }
        Ok(Pool {
            place: place.to_owned(),
            jobs: Mutex::new(tx),
        })
    }

    /// A sender for jobs that do not wait for their answer (the heartbeat).
    pub(super) fn sender(&self) -> mpsc::Sender<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on a connection; waits for its answer, at most [`ANSWER_WAIT`].
    pub(super) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call_within(f, ANSWER_WAIT)
    }

    /// Runs `f` on a connection; waits for its answer at most `wait`. A server that
    /// accepted the call and went quiet (stopped, its disk hung) gets the call's fate
    /// unknown: an error, as when a connection breaks mid-call.
    fn call_within<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, Failure> + Send + 'static,
        wait: Duration,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let r = match client {
                Ok(c) => f(c),
                Err(reason) => Err(Failure::Connect(reason.to_owned())),
            };
            let _ = tx.send(r);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job);
        let answer = match sent {
            Ok(()) => {
                let _waiting = crate::store::stall::waiting();
                match rx.recv_timeout(wait) {
                    Ok(answer) => Some(answer),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        return Err(StoreError::Unreachable {
                            place: self.place.clone(),
                            reason: format!(
                                "no answer in {} (the call's fate is unknown)",
                                humantime::format_duration(wait)
                            ),
                        });
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
            Err(_) => None,
        };
        match answer {
            Some(Ok(v)) => Ok(v),
            Some(Err(Failure::Store(e))) => Err(e),
            Some(Err(Failure::Refused(reason))) => Err(StoreError::Database {
                place: self.place.clone(),
                reason,
            }),
            Some(Err(Failure::Connect(reason))) => Err(StoreError::Unreachable {
                place: self.place.clone(),
                reason,
            }),
            Some(Err(Failure::Db(e))) if lost_connection(&e) => Err(StoreError::Unreachable {
                place: self.place.clone(),
                reason: message(&e),
            }),
            Some(Err(Failure::Db(e))) => Err(StoreError::Database {
                place: self.place.clone(),
                reason: message(&e),
            }),
            None => Err(StoreError::Unreachable {
                place: self.place.clone(),
                reason: "its connection threads ended".to_owned(),
            }),
        }
    }
}

pub(super) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The connection (not the statement) failed: broken, or the server shutting down.
fn lost_connection(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => e.is_closed() || e.as_db_error().is_none(),
    }
}

/// How long a call may wait for its answer, as through the store daemon: a slow disk under
/// the database, a prune of a big store, connections all busy.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// A connection idle this long is checked before use: a database restarted meanwhile (or a
/// connection cut by a proxy) is then noticed before a write is sent, not by failing it.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

fn worker(config: &Connector, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut client: Option<postgres::Client> = None;
    let mut last_used = std::time::Instant::now();
    loop {
        let job = {
            let rx = jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let stale = last_used.elapsed() > CHECK_AFTER_IDLE;
        if client.as_mut().is_some_and(|c| {
            c.is_closed() || (stale && c.is_valid(Duration::from_secs(2)).is_err())
        }) {
            client = None;
        }
        if client.is_none() {
            match config.connect() {
                Ok(c) => client = Some(c),
                Err(e) => {
                    job(Err(&message(&e)));
                    continue;
                }
            }
        }
        if let Some(c) = client.as_mut() {
            job(Ok(c));
        }
        last_used = std::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_goes_quiet_gets_an_error_in_bounded_time() {
        // Accepts connections and never answers: the startup exchange, then every call,
        // waits on it as on a stopped server.
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = quiet.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let (socket, _) = quiet.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(socket);
        });
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("medic")
            .dbname("medic");
        let pool = Pool::start(&Connector::new(config).unwrap(), 1, "quiet").unwrap();
        let answer = pool.call_within(
            |c| Ok(c.simple_query("SELECT 1").map(drop)?),
            Duration::from_millis(200),
        );
        // Without the bound the call would end only as the server hangs up, 3 s on, with
        // another error.
        match answer {
            Err(StoreError::Unreachable { place, reason }) => {
                assert_eq!(place, "quiet");
                assert!(reason.contains("no answer in 200ms"), "{reason}");
            }
            other => panic!("{:?}", other.map(|()| "an answer")),
        }
        held.join().unwrap();
    }
}
