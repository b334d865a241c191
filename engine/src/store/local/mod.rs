//! The embedded store shared by every process on a host: sled admits one process per data
//! directory, so one process, the store daemon ([`super::daemon`]), holds it and every
//! command reaches it through the data directory's socket (`store.sock`, 0600), one JSON
//! request and one JSON answer per line. Runs keep executing in their own process (signals,
//! Ctrl-C and kill -9 keep their meaning); only their store calls travel. A run's appends
//! may be sent without waiting for the answers of those before them ([`pipe`]).
//!
//! The first command that needs the store starts the daemon (`medic store-daemon`, in a
//! session of its own so that neither Ctrl-C nor a closed terminal reaches it); it exits
//! once no client has been connected for [`super::daemon::IDLE`].

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backend::{Runs, Schedules};
use super::drills::{DrillRecord, Paused};
use super::triggers::AlertRecord;
use super::{JournalEntry, ListFilter, LockHolder, RunRecord, StoreError};
use crate::trigger::policy::State;

mod pipe;
#[cfg(test)]
mod tests;

pub const SOCKET: &str = "store.sock";

/// The version of the requests and answers below: a client and a daemon of different
/// medic versions (an upgrade while a daemon runs) must agree on it. 2: every append is
/// `append_many`.
pub const PROTOCOL: u32 = 2;

fn all() -> usize {
    usize::MAX
}

/// One call of [`Runs`] or [`Schedules`], as sent to the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request<'a> {
    /// The first line of every connection. The answer is [`Welcome`].
    Hello,
    Flush,
    PutRecord {
        record: Box<RunRecord>,
    },
    Record {
        run_id: String,
    },
    ByPrefix {
        prefix: String,
        max: usize,
    },
    /// Every journal append (one entry or several, with or without the record). A client
    /// sends it from the caller's entries and record, not from copies of them (a fleet's
    /// targets that finish together are dozens of reports); read, it owns them.
    AppendMany {
        run_id: Cow<'a, str>,
        record: Option<Box<Cow<'a, RunRecord>>>,
        entries: Cow<'a, [JournalEntry]>,
        durable: bool,
    },
    JournalFrom {
        run_id: String,
        from: usize,
        /// Absent from an older medic's request: all of it.
        #[serde(default = "all")]
        limit: usize,
    },
    List {
        filter: ListFilter,
        limit: usize,
    },
    Recover,
    AcquireLock {
        key: String,
        holder: LockHolder,
    },
    ReleaseAllLocks {
        run_id: String,
    },
    Prune {
        before_ms: u64,
    },
    PutDrill {
        record: Box<DrillRecord>,
    },
    DrillRecords {
        drill: Option<String>,
        since_ms: u64,
    },
    DrillLastScheduled {
        drill: String,
    },
    ClaimDrillSlot {
        drill: String,
        ms: u64,
    },
    DrillPaused {
        drill: String,
    },
    SetDrillPaused {
        drill: String,
        paused: Option<Paused>,
    },
    /// Holds the trigger until the connection closes: the connection is the hold's own.
    HoldTrigger {
        trigger: String,
    },
    TriggerState {
        trigger: String,
    },
    SetTriggerState {
        trigger: String,
        state: State,
    },
    RecordAlert {
        record: Box<AlertRecord>,
    },
    Alerts {
        since_ms: u64,
        limit: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Answer {
    Ok(serde_json::Value),
    /// The disk is full (kept apart: callers tell the user what to do about it).
    Full,
    Err(String),
}

/// The daemon's answer to [`Request::Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Welcome {
    pub protocol: u32,
    pub pid: u32,
    /// What opening the store repaired, told to the first client.
    pub notice: Option<String>,
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What starting a store daemon came to.
pub enum Started {
    /// A daemon holds the store: the one started, or another that got to it first.
    Running,
    /// Something other than a daemon holds the store (a process using the library, or an
    /// older medic): the message naming it.
    Busy(String),
}

/// Starts a store daemon for a data directory ([`super::daemon::start`] for the `medic`
/// binary). A library user without one only connects to a daemon already running.
pub type Starter = dyn Fn(&Path) -> Result<Started, StoreError> + Send + Sync;

/// How long a command waits for a store daemon to answer (opening a big store takes time).
const START_WAIT: Duration = Duration::from_secs(30);

/// How long a call may wait for its answer: a slow disk, or a prune of a big store.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// A client of the store daemon.
pub(super) struct Local {
    dir: PathBuf,
    /// The data directory as shown in errors (shared with appends sent: [`pipe::Sent`]).
    shown: Arc<str>,
    start: Option<std::sync::Arc<Starter>>,
    /// Connections not in use, and how many calls wait for an answer: shared with appends
    /// sent and not yet confirmed ([`pipe::Sent`]).
    pool: Arc<Pool>,
    /// Runs' appends in flight, each run's on one connection.
    pipes: Arc<pipe::Pipes>,
}

#[derive(Default)]
struct Pool {
    /// Connections not in use: each call takes one (or makes one), so the threads of a
    /// process call at once.
    idle: Mutex<Vec<Conn>>,
    /// Calls waiting for their answer.
    in_flight: AtomicUsize,
}

impl Pool {
    /// Counts a call waiting for its answer; returns whether it should watch for it
    /// ([`WATCH`]): when it is the only one, and no sandboxed calls run on the call threads
    /// meanwhile (their CPU is what the watching would take).
    fn begin(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 && !crate::host::calls_on_call_threads()
    }

    fn put_back(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(conn);
    }
}

impl Local {
    /// Connects to the daemon holding the store in `dir`, starting one with `start` when
    /// none answers, for at most `wait` while something else holds the store. None when no
    /// daemon answers and there is no `start`. The repair notice, if any, is printed.
    pub(super) fn connect(
        dir: &Path,
        start: Option<std::sync::Arc<Starter>>,
        wait: Duration,
    ) -> Result<Option<Local>, StoreError> {
        let local = Local {
            dir: dir.to_owned(),
            shown: dir.display().to_string().into(),
            start,
            pool: Arc::default(),
            pipes: Arc::default(),
        };
        let Some((conn, welcome)) = local.open(wait)? else {
            return Ok(None);
        };
        if let Some(notice) = welcome.notice {
            eprintln!("medic: {notice}");
        }
        local.put_back(conn);
        Ok(Some(local))
    }

    /// For tests: a client whose only connection is `stream`, with no daemon to connect to
    /// beside it; and how many of its calls wait for their answer.
    #[cfg(test)]
    pub(in crate::store) fn over(
        stream: UnixStream,
    ) -> (Local, impl Fn() -> usize + Send + Sync + 'static) {
        let read = stream.try_clone().unwrap();
        let local = Local {
            dir: PathBuf::from("/nonexistent/medic-test"),
            shown: "test".into(),
            start: None,
            pool: Arc::default(),
            pipes: Arc::default(),
        };
        local.put_back(Conn {
            reader: BufReader::new(read),
            writer: stream,
        });
        let pool = local.pool.clone();
        (local, move || pool.in_flight.load(Ordering::SeqCst))
    }

    /// A new connection: to the daemon that answers, or to one started for it. Waits at
    /// most `wait` while something else holds the store, and at most [`START_WAIT`] for a
    /// daemon to answer.
    fn open(&self, wait: Duration) -> Result<Option<(Conn, Welcome)>, StoreError> {
        let begun = Instant::now();
        loop {
            if let Some(opened) = self.hello()? {
                return Ok(Some(opened));
            }
            let Some(start) = &self.start else {
                return Ok(None);
            };
            let pause = match start(&self.dir)? {
                // The daemon that holds the store binds its socket a moment after taking it.
                Started::Running => Duration::from_millis(10),
                Started::Busy(why) if begun.elapsed() >= wait => {
                    return Err(StoreError::Remote(why));
                }
                Started::Busy(_) => Duration::from_millis(100),
            };
            if begun.elapsed() >= START_WAIT.max(wait) {
                return Err(self.unreachable("no store daemon answered in time"));
            }
            std::thread::sleep(pause);
        }
    }

    /// Connects to the socket and says hello: None when nobody answers there; an error when
    /// a daemon of another medic version does.
    fn hello(&self) -> Result<Option<(Conn, Welcome)>, StoreError> {
        let Ok(stream) = crate::private::at_socket(&self.dir, SOCKET, |at| UnixStream::connect(at))
        else {
            return Ok(None);
        };
        let Ok(read) = stream.try_clone() else {
            return Ok(None);
        };
        let _ = stream.set_read_timeout(Some(ANSWER_WAIT));
        let mut conn = Conn {
            reader: BufReader::new(read),
            writer: stream,
        };
        // A daemon that is letting go closes connections it has not answered: nothing was
        // asked yet, so trying again is safe.
        let Ok(Ok(welcome)) = exchange(&mut conn, &Request::Hello, false) else {
            return Ok(None);
        };
        match serde_json::from_value::<Welcome>(welcome.clone()) {
            Ok(w) if w.protocol == PROTOCOL => Ok(Some((conn, w))),
            _ => Err(self.unreachable(&format!(
                "the store daemon holding it (process {}) is another medic version (protocol {}; this medic speaks {PROTOCOL}); it ends {} s after the last command using it, an older `medic serve` say, stops",
                welcome["pid"],
                welcome["protocol"],
                super::daemon::IDLE.as_secs()
            ))),
        }
    }

    fn put_back(&self, conn: Conn) {
        self.pool.put_back(conn);
    }

    fn unreachable(&self, reason: &str) -> StoreError {
        StoreError::Daemon {
            dir: self.shown.to_string(),
            reason: reason.to_owned(),
        }
    }

    /// Takes an idle connection, or makes one (starting a daemon when the last one ended
    /// after a failure).
    fn take(&self) -> Result<Conn, StoreError> {
        let idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => match self.open(super::BRIEF_WAIT)? {
                Some((conn, _)) => Ok(conn),
                None => Err(self.unreachable("no store daemon answers")),
            },
        }
    }

    fn call<T: DeserializeOwned>(&self, request: &Request<'_>) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        // A broken connection is dropped, not put back: the call's fate is unknown (an
        // append may have been made), so it is not tried again; the next call connects
        // anew.
        let alone = self.pool.begin();
        let answer = exchange(&mut conn, request, alone);
        self.pool.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = answer.map_err(|e| stopped_answering(&self.shown, &e))?;
        self.put_back(conn);
        value_of(&self.shown, answer)
    }
}

fn stopped_answering(shown: &str, e: &std::io::Error) -> StoreError {
    StoreError::Daemon {
        dir: shown.to_owned(),
        reason: format!("the store daemon stopped answering: {e}"),
    }
}

fn value_of<T: DeserializeOwned>(
    shown: &str,
    answer: Result<serde_json::Value, AnswerError>,
) -> Result<T, StoreError> {
    match answer {
        Ok(v) => serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
            dir: shown.to_owned(),
            key: "the store daemon's answer".to_owned(),
            reason: e.to_string(),
        }),
        Err(AnswerError::Full) => Err(StoreError::Full {
            dir: shown.to_owned(),
        }),
        Err(AnswerError::Other(message)) => Err(StoreError::Remote(message)),
    }
}

enum AnswerError {
    Full,
    Other(String),
}

/// How long a call that is alone in its process watches for its answer before it sleeps:
/// a durable append is answered after the daemon's `fdatasync`, a few hundred µs, and a
/// thread that slept that long is woken late on a virtual machine whose CPU went idle
/// meanwhile (measured here: 380 µs a recorded step through the daemon sleeping, 250 to
/// 285 µs watching). Calls made together do not watch: they would take the CPU the daemon
/// answers them with; nor does a call made while sandboxed calls run on the call threads (a
/// fleet's targets told together): it would take theirs.
pub(super) const WATCH: Duration = Duration::from_micros(500);

/// Returns once `fd` has something to read or `watch` has passed, whichever comes first,
/// without sleeping meanwhile: on a virtual machine a thread that sleeps for less than a
/// millisecond is woken late (its virtual CPU went idle), which costs more than the wait.
/// Returns whether something came (a line, the other end hanging up, an error: the read
/// that follows tells which).
pub(super) fn watch_socket(fd: std::os::fd::RawFd, watch: Duration) -> bool {
    let mut socket = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; a timeout of 0 returns at once.
    watch_until(watch, || unsafe { libc::poll(&mut socket, 1, 0) } != 0)
}

/// Returns once `done` says so or `watch` has passed, whichever comes first, without
/// sleeping meanwhile (see [`watch_socket`] for why); returns whether `done` said so.
pub(super) fn watch_until(watch: Duration, mut done: impl FnMut() -> bool) -> bool {
    let begun = Instant::now();
    loop {
        if done() {
            return true;
        }
        if begun.elapsed() >= watch {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// The most waits without watching after watches in vain (at most one watch in nine is
/// then spent in vain on a peer that is slow to ask again).
const UNWATCHED_AFTER_MISS: u32 = 8;

/// Whether a thread that waits for its peer's next request (the store daemon's connection
/// thread for its client's, the embedded store's flusher for its run's) watches for it
/// rather than sleeping: not after a watch in vain, for 1, 2, 4, then 8 waits as such
/// watches follow each other (a fleet's run gathering targets, a plugin waiting on the
/// network: a thread spinning for them would take a CPU their calls want), but again as soon
/// as a request comes within a watch of the last. (With 8 waits unwatched after any miss,
/// one slow step made the next 8 fast ones each pay a late wake-up: 7 to 10 % of the step
/// bench's requests through the daemon were read by a thread that had gone to sleep; 2 to
/// 4 % since.)
#[derive(Debug)]
pub(super) struct Watching {
    /// How long a watch lasts.
    watch: Duration,
    /// Waits still to make without watching.
    skip: u32,
    /// Watches in vain in a row.
    misses: u32,
}

impl Watching {
    pub(super) fn new(watch: Duration) -> Watching {
        Watching {
            watch,
            skip: 0,
            misses: 0,
        }
    }

    /// Whether to watch for the next request; counts one skipped when not.
    pub(super) fn now(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// A request came `gap` after the last, after a watch that found it (`Some(true)`), one
    /// in vain (`Some(false)`), or none.
    pub(super) fn came(&mut self, gap: Duration, watched: Option<bool>) {
        if gap < self.watch {
            (self.skip, self.misses) = (0, 0);
        } else if watched == Some(false) {
            self.misses = self.misses.saturating_add(1);
            self.skip = (1u32 << (self.misses - 1).min(3)).min(UNWATCHED_AFTER_MISS);
        }
    }
}

/// Sends one request line and reads its answer line; `watch`: see [`WATCH`].
fn exchange(
    conn: &mut Conn,
    request: &Request<'_>,
    watch: bool,
) -> std::io::Result<Result<serde_json::Value, AnswerError>> {
    send(conn, request)?;
    receive(conn, watch)
}

fn send(conn: &mut Conn, request: &Request<'_>) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    conn.writer.write_all(&line)?;
    // While the daemon works (a durable append: its `fdatasync`), the run's last call's
    // store is dropped: that work is off the step's path.
    crate::later::drop_now();
    Ok(())
}

/// Reads one answer line; `watch`: see [`WATCH`].
fn receive(
    conn: &mut Conn,
    watch: bool,
) -> std::io::Result<Result<serde_json::Value, AnswerError>> {
    let _waiting = super::stall::waiting();
    if watch && conn.reader.buffer().is_empty() {
        watch_socket(conn.reader.get_ref().as_raw_fd(), WATCH);
    }
    // Not watched for because calls run on the call threads: woken by the answer, this
    // thread goes on rather than wait out a call thread's time slice.
    let _given_way = (!watch).then(crate::host::give_way).flatten();
    let mut answer = String::new();
    if conn.reader.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed",
        ));
    }
    let answer: Answer = serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(match answer {
        Answer::Ok(v) => Ok(v),
        Answer::Full => Err(AnswerError::Full),
        Answer::Err(m) => Err(AnswerError::Other(m)),
    })
}

/// An append as sent, made of the caller's entries and record, not copies of them.
fn appending<'a>(
    run_id: &'a str,
    record: Option<&'a RunRecord>,
    entries: &'a [JournalEntry],
    durable: bool,
) -> Request<'a> {
    Request::AppendMany {
        run_id: Cow::Borrowed(run_id),
        record: record.map(|r| Box::new(Cow::Borrowed(r))),
        entries: Cow::Borrowed(entries),
        durable,
    }
}

/// A trigger held by the daemon for as long as its connection is open.
struct Held(#[allow(dead_code)] Conn);

impl Runs for Local {
    fn location(&self) -> String {
        self.shown.to_string()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.call(&Request::Flush)
    }
    fn put_record(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.call(&Request::PutRecord {
            record: Box::new(r.clone()),
        })
    }
    fn record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.call(&Request::Record {
            run_id: run_id.to_owned(),
        })
    }
    fn by_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.call(&Request::ByPrefix {
            prefix: prefix.to_owned(),
            max,
        })
    }
    fn append_many(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
        durable: bool,
    ) -> Result<u32, StoreError> {
        let request = appending(run_id, record, entries, durable);
        match self.append_after_pipe(run_id, &request) {
            Some(answer) => answer,
            None => self.call(&request),
        }
    }
    fn append_sent(
        &self,
        run_id: &str,
        record: Option<&RunRecord>,
        entries: &[JournalEntry],
    ) -> Result<Option<Box<dyn crate::ahead::Unconfirmed>>, StoreError> {
        let request = appending(run_id, record, entries, true);
        let sent = self.send_on_pipe(run_id, &request)?;
        Ok(Some(Box::new(sent)))
    }
    fn journal_from(
        &self,
        run_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.call(&Request::JournalFrom {
            run_id: run_id.to_owned(),
            from,
            limit,
        })
    }
    fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.call(&Request::List {
            filter: filter.clone(),
            limit,
        })
    }
    fn recover(&self) -> Result<Vec<String>, StoreError> {
        self.call(&Request::Recover)
    }
    fn acquire_lock(
        &self,
        key: &str,
        holder: &LockHolder,
    ) -> Result<Result<(), LockHolder>, StoreError> {
        self.call(&Request::AcquireLock {
            key: key.to_owned(),
            holder: holder.clone(),
        })
    }
    fn release_all_locks(&self, run_id: &str) -> Result<(), StoreError> {
        self.call(&Request::ReleaseAllLocks {
            run_id: run_id.to_owned(),
        })
    }
    fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.call(&Request::Prune { before_ms })
    }
}

impl Schedules for Local {
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        self.call(&Request::PutDrill {
            record: Box::new(r.clone()),
        })
    }
    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        self.call(&Request::DrillRecords {
            drill: drill.map(str::to_owned),
            since_ms,
        })
    }
    fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        self.call(&Request::DrillLastScheduled {
            drill: drill.to_owned(),
        })
    }
    fn claim_drill_slot(&self, drill: &str, ms: u64) -> Result<bool, StoreError> {
        self.call(&Request::ClaimDrillSlot {
            drill: drill.to_owned(),
            ms,
        })
    }
    fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        self.call(&Request::DrillPaused {
            drill: drill.to_owned(),
        })
    }
    fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        self.call(&Request::SetDrillPaused {
            drill: drill.to_owned(),
            paused: paused.cloned(),
        })
    }
    fn hold_trigger(&self, trigger: &str) -> Result<Box<dyn Send>, StoreError> {
        let mut conn = self.take()?;
        let request = Request::HoldTrigger {
            trigger: trigger.to_owned(),
        };
        match exchange(&mut conn, &request, false) {
            Ok(Ok(_)) => Ok(Box::new(Held(conn))),
            Ok(Err(AnswerError::Full)) => Err(StoreError::Full {
                dir: self.shown.to_string(),
            }),
            Ok(Err(AnswerError::Other(m))) => Err(StoreError::Remote(m)),
            Err(e) => Err(self.unreachable(&format!("the store daemon stopped answering: {e}"))),
        }
    }
    fn trigger_state(&self, trigger: &str) -> Result<Option<State>, StoreError> {
        self.call(&Request::TriggerState {
            trigger: trigger.to_owned(),
        })
    }
    fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError> {
        self.call(&Request::SetTriggerState {
            trigger: trigger.to_owned(),
            state: state.clone(),
        })
    }
    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        self.call(&Request::RecordAlert {
            record: Box::new(record.clone()),
        })
    }
    fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.call(&Request::Alerts { since_ms, limit })
    }
}
