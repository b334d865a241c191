//! Holding a PostgreSQL advisory lock across several calls (a trigger's decision reads its
//! state, may start a run, and writes the state back): a session lock on a connection of
//! its own, on a thread of its own, released when the hold is dropped. Should the
//! connection break while held, the server releases the lock with it; the next hold makes a
//! new connection.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use super::pool::{Connector, message};
use crate::store::StoreError;

/// How long a hold waits for another process to let go before it fails.
const WAIT: Duration = Duration::from_secs(30);

enum Msg {
    Lock {
        key: i64,
        reply: mpsc::SyncSender<Result<(), String>>,
    },
    Unlock {
        key: i64,
    },
}

/// The one connection of a process that holds advisory locks.
pub(super) struct Holder {
    place: String,
    config: Connector,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
}

/// A lock held until dropped.
struct Held {
    key: i64,
    tx: mpsc::Sender<Msg>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Unlock { key: self.key });
    }
}

impl Holder {
    pub(super) fn new(config: &Connector, place: &str) -> Holder {
        Holder {
            place: place.to_owned(),
            config: config.clone(),
            tx: Mutex::new(None),
        }
    }

    /// Waits (at most [`WAIT`]) for the lock named `name` across every process on the
    /// database; it is held until the returned value is dropped.
    pub(super) fn hold(&self, name: &str) -> Result<Box<dyn Send>, StoreError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name.as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        let tx = {
            let mut slot = self
                .tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slot.as_ref() {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel();
                    let config = self.config.clone();
                    std::thread::Builder::new()
                        .name("medic-pg-hold".into())
                        .spawn(move || serve(&config, &rx))
                        .map_err(|e| self.error(format!("cannot start its thread: {e}")))?;
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        let (reply, answer) = mpsc::sync_channel(1);
        tx.send(Msg::Lock { key, reply })
            .map_err(|_| self.error("its thread ended".into()))?;
        match answer.recv() {
            Ok(Ok(())) => Ok(Box::new(Held { key, tx })),
            Ok(Err(reason)) => Err(self.error(reason)),
            Err(_) => Err(self.error("its thread ended".into())),
        }
    }

    fn error(&self, reason: String) -> StoreError {
        StoreError::Database {
            place: self.place.clone(),
            reason: format!("cannot take a lock shared with other processes: {reason}"),
        }
    }
}

fn serve(config: &Connector, rx: &mpsc::Receiver<Msg>) {
    let mut client: Option<postgres::Client> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Lock { key, reply } => {
                let result = (|| {
                    if client.as_ref().is_none_or(postgres::Client::is_closed) {
                        let mut c = config.connect().map_err(|e| message(&e))?;
                        c.batch_execute(&format!("SET lock_timeout = '{}s'", WAIT.as_secs()))
                            .map_err(|e| message(&e))?;
                        client = Some(c);
                    }
                    let c = client.as_mut().expect("connected above");
                    c.execute("SELECT pg_advisory_lock($1)", &[&key])
                        .map(|_| ())
                        .map_err(|e| message(&e))
                })();
                let _ = reply.send(result);
            }
            Msg::Unlock { key } => {
                let released = client
                    .as_mut()
                    .is_some_and(|c| c.execute("SELECT pg_advisory_unlock($1)", &[&key]).is_ok());
                if !released {
                    // Closing the session releases whatever it held.
                    client = None;
                }
            }
        }
    }
}
