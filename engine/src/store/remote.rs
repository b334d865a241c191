//! Reading the store while another process holds it. sled admits one process at a time, so
//! the process holding the store answers read-only queries on a Unix socket in the data
//! directory (`medic.sock`, permissions 0600), one JSON request and one JSON answer per
//! line; `medic runs list|show|logs|export` and `medic stats` use it when the store is busy.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::drills::DrillRecord;
use super::{JournalEntry, ListFilter, RecordedSteps, RunRecord, Store, StoreError};

pub const SOCKET: &str = "medic.sock";

/// What the read-only commands need of a store.
pub trait Reader {
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    fn find(&self, prefix: &str) -> Result<RunRecord, StoreError>;
    fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError>;
    /// A run's journal from its `from`th entry on, at most `limit` entries (a follower reads
    /// what it has not seen, a page at a time; it may get more from an older medic).
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    fn step_reports(&self, run_id: &str) -> Result<RecordedSteps, StoreError>;
    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError>;
    /// Alerts as they arrived at triggers, and what was decided (the newest `limit`).
    fn alerts(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<super::triggers::AlertRecord>, StoreError>;
    /// Runs waiting for a person (an approval): their ids.
    fn waiting(&self) -> Result<Vec<String>, StoreError>;
    /// Where the data lives, for messages.
    fn location(&self) -> String;
}

/// The runs with an approval request pending.
fn waiting_in(place: &super::Place) -> Vec<String> {
    let mut ids: Vec<String> = super::approvals::pending(place, None)
        .into_iter()
        .map(|p| p.run_id)
        .collect();
    ids.dedup();
    ids
}

impl Reader for Store {
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        Store::list(self, filter, limit)
    }
    fn find(&self, prefix: &str) -> Result<RunRecord, StoreError> {
        Store::find(self, prefix)
    }
    fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        Store::journal(self, run_id)
    }
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        Store::journal_from(self, run_id, from, limit)
    }
    fn step_reports(&self, run_id: &str) -> Result<RecordedSteps, StoreError> {
        Store::step_reports(self, run_id)
    }
    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        Store::drill_records(self, drill, since_ms)
    }
    fn alerts(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<super::triggers::AlertRecord>, StoreError> {
        Store::alerts(self, since_ms, limit)
    }
    fn waiting(&self) -> Result<Vec<String>, StoreError> {
        Ok(waiting_in(&self.place()))
    }
    fn location(&self) -> String {
        self.dir().display().to_string()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    List {
        filter: ListFilter,
        limit: usize,
    },
    Find {
        prefix: String,
    },
    Journal {
        run_id: String,
    },
    JournalFrom {
        run_id: String,
        from: usize,
        limit: usize,
    },
    StepReports {
        run_id: String,
    },
    DrillRecords {
        drill: Option<String>,
        since_ms: u64,
    },
    Alerts {
        since_ms: u64,
        limit: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(serde_json::Value),
    Err(String),
}

/// The answer line (JSON, newline-terminated) to one request line of a read-only query.
#[doc(hidden)]
pub fn answer_line(store: &Store, line: &str) -> String {
    String::from_utf8(json_line(&answer(store, line))).expect("JSON is UTF-8")
}

fn answer(store: &Store, line: &str) -> Answer {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Answer::Err(format!("bad request: {e}")),
    };
    let result = match request {
        Request::List { filter, limit } => store
            .list(&filter, limit)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::Find { prefix } => store
            .find(&prefix)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::Journal { run_id } => store
            .journal(&run_id)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::JournalFrom {
            run_id,
            from,
            limit,
        } => store
            .journal_from(&run_id, from, limit)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::StepReports { run_id } => store
            .step_reports(&run_id)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::DrillRecords { drill, since_ms } => store
            .drill_records(drill.as_deref(), since_ms)
            .map(|v| serde_json::to_value(v).expect("serialize")),
        Request::Alerts { since_ms, limit } => store
            .alerts(since_ms, limit)
            .map(|v| serde_json::to_value(v).expect("serialize")),
    };
    match result {
        Ok(v) => Answer::Ok(v),
        Err(e) => Answer::Err(e.to_string()),
    }
}

fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("serialize");
    bytes.push(b'\n');
    bytes
}

/// An extension's answer.
pub enum Reply {
    /// One answer line.
    One(Result<serde_json::Value, String>),
    /// Lines as they come; the connection closes after the last. When the client goes away,
    /// the sender sees the channel closed.
    Stream(Lines),
}

/// How many lines a stream holds for a reader that fell behind before its sender leaves out
/// the lines that may be left out ([`LineSender::is_behind`]): a run's progress must not
/// wait for a slow terminal, nor its lines pile up in memory (a 10,000-target fleet is
/// 10,000 lines).
pub const BEHIND: usize = 1024;

/// The sending end of a streamed reply: it knows how many lines are waiting to be read.
#[derive(Clone)]
pub struct LineSender {
    tx: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
    queued: Arc<AtomicUsize>,
}

/// The reading end of a streamed reply.
pub struct Lines {
    rx: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    queued: Arc<AtomicUsize>,
}

/// A streamed reply's two ends.
pub fn lines() -> (LineSender, Lines) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let queued = Arc::default();
    (
        LineSender {
            tx,
            queued: Arc::clone(&queued),
        },
        Lines { rx, queued },
    )
}

impl LineSender {
    /// Sends a line that must arrive. Err: the reader is gone.
    pub fn send(
        &self,
        line: serde_json::Value,
    ) -> Result<(), tokio::sync::mpsc::error::SendError<serde_json::Value>> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(line).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// Whether the reader has fallen [`BEHIND`]: lines that may be left out should be.
    pub fn is_behind(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= BEHIND
    }

    /// Whether the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Lines {
    /// The next line; `None` once the sender is gone and every line was read.
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        let line = self.rx.recv().await?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(line)
    }
}

/// More operations, answered by the process holding the store (`medic serve` answers runs,
/// drill and control requests): given a request whose `op` is not a read, the reply, or
/// `None` for an unknown `op`.
pub type Extension = std::sync::Arc<
    dyn Fn(
            serde_json::Value,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Reply>> + Send>>
        + Send
        + Sync,
>;

/// Serves read-only queries and `extension`'s operations on the data directory's socket for
/// as long as the returned task runs: `medic serve`, one per data directory (a second one is
/// refused, naming the first).
pub fn serve_with(
    store: Store,
    extension: Option<Extension>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let lock_path = store.dir().join("serve.lock");
    let shown = |e: std::io::Error| format!("{}: {e}", lock_path.display());
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(shown)?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        let mut pid = String::new();
        let _ = std::io::Read::read_to_string(&mut lock, &mut pid);
        return Err(format!(
            "medic serve already runs for the data directory {} (process {}): one serve per data directory",
            store.dir().display(),
            pid.trim()
        ));
    }
    lock.set_len(0).map_err(shown)?;
    std::io::Write::write_all(&mut lock, std::process::id().to_string().as_bytes())
        .map_err(shown)?;
    let path = store.dir().join(SOCKET);
    let shown = |e: std::io::Error| format!("cannot serve the socket {}: {e}", path.display());
    // A socket left by a serve that died: nobody listens there (this process holds the lock).
    let _ = std::fs::remove_file(&path);
    let listener =
        crate::private::at_socket(store.dir(), SOCKET, |at| tokio::net::UnixListener::bind(at))
            .map_err(shown)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(shown)?;
    Ok(tokio::spawn(async move {
        // Held for as long as this serves.
        let _lock = lock;
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            // The socket file is 0600, and the kernel's word on who connected decides too:
            // only this user's own processes are answered.
            // SAFETY: getuid(2) cannot fail.
            let me = unsafe { libc::getuid() };
            match conn.peer_cred() {
                Ok(cred) if cred.uid() == me => {}
                Ok(cred) => {
                    tracing::warn!(
                        "refused a connection to {} from user {}",
                        store.dir().join(SOCKET).display(),
                        cred.uid()
                    );
                    continue;
                }
                Err(_) => continue,
            }
            let store = store.clone();
            let extension = extension.clone();
            tokio::spawn(async move {
                let (read, mut write) = conn.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                // Bounded: a client gets at most 100 answers per connection.
                for _ in 0..100 {
                    let Ok(Ok(Some(line))) =
                        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
                    else {
                        return;
                    };
                    let extra = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .filter(|v| !is_read(v));
                    let reply = match (extra, &extension) {
                        (Some(request), Some(ext)) => match ext(request).await {
                            Some(Reply::One(Ok(v))) => Answer::Ok(v),
                            Some(Reply::One(Err(e))) => Answer::Err(e),
                            Some(Reply::Stream(mut rx)) => {
                                while let Some(v) = rx.recv().await {
                                    if write.write_all(&json_line(&v)).await.is_err() {
                                        return;
                                    }
                                }
                                return;
                            }
                            None => Answer::Err(format!("bad request: {line}")),
                        },
                        _ => {
                            let store = store.clone();
                            let reply =
                                tokio::task::spawn_blocking(move || answer(&store, &line)).await;
                            let Ok(reply) = reply else { return };
                            reply
                        }
                    };
                    if write.write_all(&json_line(&reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }))
}

/// Whether a request is one of the read-only queries every holder answers.
fn is_read(v: &serde_json::Value) -> bool {
    matches!(
        v.get("op").and_then(|o| o.as_str()),
        Some("list" | "find" | "journal" | "step_reports" | "drill_records" | "alerts")
    )
}

/// Connects, and checks that the process listening is this user's: a request may carry
/// secrets read from this user's environment and files (`medic run` through serve).
/// `dir`: the data directory served.
fn open(dir: &Path) -> std::io::Result<UnixStream> {
    use std::os::fd::AsFd;
    let conn = crate::private::at_socket(dir, SOCKET, |at| UnixStream::connect(at))?;
    // SAFETY: getuid(2) cannot fail.
    let me = unsafe { libc::getuid() };
    let theirs = crate::private::peer_uid(conn.as_fd())?;
    if theirs != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is served by user {theirs}, not this user ({me}): not talking to it",
                dir.join(SOCKET).display()
            ),
        ));
    }
    Ok(conn)
}

/// A store held by another process, read through its socket.
#[derive(Clone)]
pub struct Remote {
    /// The data directory served.
    dir: PathBuf,
}

impl Remote {
    /// Connects to the socket in `dir`, if a process of this user serves it.
    pub fn connect(dir: &Path) -> Option<Remote> {
        open(dir).ok().map(|_| Remote {
            dir: dir.to_owned(),
        })
    }

    fn ask<T: for<'de> Deserialize<'de>>(&self, request: &Request) -> Result<T, StoreError> {
        self.call(request, Duration::from_secs(30))
    }

    /// Sends a request whose answer is a stream of lines, read as they come (no timeout: a
    /// run may wait for an approval for hours).
    pub fn stream(
        &self,
        request: &impl Serialize,
    ) -> Result<std::io::Lines<BufReader<UnixStream>>, StoreError> {
        let io = |e: std::io::Error| StoreError::Io {
            dir: self.location(),
            source: e,
        };
        let mut conn = open(&self.dir).map_err(io)?;
        conn.write_all(&json_line(request)).map_err(io)?;
        Ok(BufReader::new(conn).lines())
    }

    /// Sends any request and waits up to `timeout` for its answer.
    pub fn call<T: for<'de> Deserialize<'de>>(
        &self,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let io = |e: std::io::Error| StoreError::Io {
            dir: self.location(),
            source: e,
        };
        let mut conn = open(&self.dir).map_err(io)?;
        conn.set_read_timeout(Some(timeout)).map_err(io)?;
        conn.write_all(&json_line(request)).map_err(io)?;
        let mut reply = String::new();
        BufReader::new(conn).read_line(&mut reply).map_err(io)?;
        let bad = |reason: String| StoreError::Corrupt {
            dir: self.location(),
            key: "socket answer".into(),
            reason,
        };
        match serde_json::from_str::<Answer>(&reply).map_err(|e| bad(e.to_string()))? {
            Answer::Ok(v) => serde_json::from_value(v).map_err(|e| bad(e.to_string())),
            Answer::Err(message) => Err(StoreError::Remote(message)),
        }
    }
}

impl Reader for Remote {
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.ask(&Request::List {
            filter: filter.clone(),
            limit,
        })
    }
    fn find(&self, prefix: &str) -> Result<RunRecord, StoreError> {
        self.ask(&Request::Find {
            prefix: prefix.into(),
        })
    }
    fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.ask(&Request::Journal {
            run_id: run_id.into(),
        })
    }
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        match self.ask(&Request::JournalFrom {
            run_id: run_id.into(),
            from,
            limit,
        }) {
            // A holder from before pages: the whole journal, less what was seen.
            Err(StoreError::Remote(why)) if why.starts_with("bad request: unknown variant") => {
                Ok(self.journal(run_id)?.into_iter().skip(from).collect())
            }
            other => other,
        }
    }
    fn step_reports(&self, run_id: &str) -> Result<RecordedSteps, StoreError> {
        self.ask(&Request::StepReports {
            run_id: run_id.into(),
        })
    }
    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        self.ask(&Request::DrillRecords {
            drill: drill.map(str::to_owned),
            since_ms,
        })
    }
    fn alerts(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<super::triggers::AlertRecord>, StoreError> {
        self.ask(&Request::Alerts { since_ms, limit })
    }
    fn waiting(&self) -> Result<Vec<String>, StoreError> {
        // Only the embedded store is read through `medic serve`: its approvals are files.
        Ok(waiting_in(&super::Place::Files(self.dir.clone())))
    }
    fn location(&self) -> String {
        format!("{} (through medic serve)", self.dir.join(SOCKET).display())
    }
}
