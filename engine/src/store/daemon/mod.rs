//! The store daemon (`medic store-daemon`, started by the first command that needs the
//! embedded store): it holds sled for every process on the host and answers
//! [`super::local`]'s requests on the data directory's socket, one thread per connection.
//! A connection's requests are served in order; appends read one after another are written
//! at once and flushed together, then answered ([`Unanswered`]).
//!
//! It prints one line on its standard output for the command that started it (`ready`,
//! `running` when another daemon got to the store first, `busy: WHY`, or `error: WHY`),
//! then writes only to its log (`DATA_DIR/store-daemon.log`). It ends once no client has
//! been connected for [`IDLE`]; a command connecting meanwhile finds the socket gone, or
//! its connection closed before its hello was answered, and starts another.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::backend::Runs;
use super::embedded::{RecordJson, Sled};
use super::local::{Answer, Request, SOCKET, Started, Watching, Welcome};

/// How long the daemon stays without clients before it lets go of the store.
pub const IDLE: Duration = Duration::from_secs(5);

/// How long the daemon waits for the store to close when it lets go of it.
pub const CLOSE: Duration = Duration::from_secs(10);

/// The daemon's log, in the data directory.
pub const LOG: &str = "store-daemon.log";

/// The largest request line read (a run record with its parameters, or a journal entry
/// with a plugin's key-value write).
const MAX_LINE: u64 = 16 << 20;

/// The daemon's exit codes: held by something else, or failed.
const EXIT_BUSY: i32 = 75;
const EXIT_FAILED: i32 = 3;

struct Daemon {
    sled: Sled,
    clients: AtomicUsize,
    /// When the last client left.
    left: Mutex<Instant>,
    /// Triggers held by a client's connection.
    held: Mutex<HashSet<String>>,
    released: Condvar,
    /// sled met an I/O error (a full disk): it fails every call from now on, so the daemon
    /// lets go at once and the next command opens the store anew.
    broken: std::sync::atomic::AtomicBool,
    socket: std::path::PathBuf,
    /// A connection's thread is watching its socket for the next request (see [`WATCH`]):
    /// one at a time, so that many clients never take every CPU spinning.
    watching: std::sync::atomic::AtomicBool,
    /// Where the thread of a connection opened while no other was is kept, for the
    /// connection's life: it makes the client's flushes itself (see
    /// [`crate::store::near_disk`]). The threads of connections opened beside it are left
    /// free, as the CPU work of many clients' writes would queue on these few CPUs.
    near_disk: Option<crate::cpus::Cpus>,
}

/// How long a connection's thread watches its socket for the client's next request after
/// answering one, before it sleeps in its read. A run's client asks again within its step's
/// call (tens of µs for a trivial one), and a thread that slept is woken late on a virtual
/// machine whose CPU went idle meanwhile (70 to 100 µs measured here), once per step.
const WATCH: Duration = Duration::from_micros(300);
fn log(line: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} medic store-daemon {}: {line}", std::process::id());
}

/// Tells the starting command how it went, then leaves standard output for good (the
/// command stops reading it).
fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto this process's own standard output; both descriptors are open.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Runs the daemon for the store in `dir` until it has been idle for [`IDLE`]; returns the
/// process's exit code.
pub fn run(dir: &Path) -> i32 {
    let sled = match Sled::open(dir, "medic store-daemon") {
        Ok(sled) => sled,
        // Another daemon got to it first (or is taking it now): commands reach that one.
        Err(StoreError::Busy { ref command, .. }) if command == "medic store-daemon" => {
            say("running");
            return 0;
        }
        Err(StoreError::BusyUnknown { .. }) => {
            say("running");
            return 0;
        }
        Err(e @ StoreError::Busy { .. }) => {
            say(&format!("busy: {e}"));
            return EXIT_BUSY;
        }
        Err(e) => {
            log(&e.to_string());
            say(&format!("error: {e}"));
            return EXIT_FAILED;
        }
    };
    let path = dir.join(SOCKET);
    // A socket left by a daemon that died: nobody listens there (this process holds sled).
    let _ = std::fs::remove_file(&path);
    let listener = match crate::private::at_socket(dir, SOCKET, |at| UnixListener::bind(at))
        .and_then(|l| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            Ok(l)
        }) {
        Ok(l) => l,
        Err(e) => {
            let e = format!("cannot listen on {}: {e}", path.display());
            log(&e);
            say(&format!("error: {e}"));
            return EXIT_FAILED;
        }
    };
    log(&format!("holding the run store in {}", dir.display()));
    say("ready");
    let daemon = Arc::new(Daemon {
        sled,
        clients: AtomicUsize::new(0),
        left: Mutex::new(Instant::now()),
        held: Mutex::default(),
        released: Condvar::new(),
        broken: std::sync::atomic::AtomicBool::new(false),
        socket: path.clone(),
        watching: std::sync::atomic::AtomicBool::new(false),
        near_disk: crate::store::near_disk::of(dir),
    });
    loop {
        let mut poll = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, 200) };
        if ready > 0 {
            match listener.accept() {
                Ok((stream, _)) => {
                    let alone = daemon.clients.fetch_add(1, Ordering::SeqCst) == 0;
                    let daemon = daemon.clone();
                    std::thread::spawn(move || {
                        if let Some(cpus) = daemon.near_disk.as_ref().filter(|_| alone) {
                            cpus.keep_this_thread();
                        }
                        serve(&daemon, stream);
                        *daemon.left.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                        daemon.clients.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => log(&format!("accept: {e}")),
            }
            continue;
        }
        if daemon.broken.load(Ordering::SeqCst) {
            log("the store failed with an I/O error: letting go of it, to be opened anew");
            break;
        }
        let idle = daemon.clients.load(Ordering::SeqCst) == 0
            && daemon
                .left
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= IDLE;
        if idle {
            break;
        }
    }
    // The socket goes first: from now on commands start another daemon, which takes the
    // store once this process lets go. Connections still queued are closed unanswered.
    let _ = std::fs::remove_file(&path);
    drop(listener);
    if daemon.broken.load(Ordering::SeqCst) {
        // Connections still open close with the process; the store's lock goes with it.
        // Now, without closing the store: everything acknowledged is in the redo log, and
        // sled's own flush on a full disk waits forever (seen: a daemon that never let go,
        // every later command timing out on it).
        std::process::exit(EXIT_FAILED);
    }
    if let Err(e) = daemon.sled.flush() {
        log(&format!("flushing the store: {e}"));
    }
    // The threads that served the last clients may hold the store a moment longer; closing
    // it (which says so in `owner.json`) waits for them, briefly.
    let mut daemon = daemon;
    for _ in 0..1000 {
        match Arc::try_unwrap(daemon) {
            Ok(alone) => {
                // Closing puts what waits in memory into sled and flushes it, and sled's
                // flush never returns where it cannot write (a full disk, a data directory
                // removed; seen: a daemon that never let go). Everything acknowledged is in
                // the redo log already, so the process ends without it, past `CLOSE`.
                let (closed, done) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    drop(alone);
                    let _ = closed.send(());
                });
                if done.recv_timeout(CLOSE).is_err() {
                    log(&format!(
                        "closing the run store took over {} s (can sled write there?): \
                         letting go of it without; its redo log has every change",
                        CLOSE.as_secs()
                    ));
                    return 0;
                }
                break;
            }
            Err(shared) => {
                daemon = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    log("no client for a while: letting go of the run store");
    0
}

/// The uid of the process at the other end of a Unix socket.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

fn serve(daemon: &Daemon, stream: UnixStream) {
    // The socket is 0600 in a 0700 directory; the kernel's word on who connected decides
    // too: only this user's own processes are answered.
    // SAFETY: getuid(2) cannot fail.
    if peer_uid(&stream) != Some(unsafe { libc::getuid() })
        || stream.set_nonblocking(false).is_err()
    {
        return;
    }
    let Ok(read) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read);
    let mut writer = stream;
    let mut watching = Watching::new(WATCH);
    let mut last_answer = Instant::now();
    let mut unanswered = Unanswered::default();
    loop {
        // Appends that came together are answered together, once one flush made them
        // durable: when no further request is there to read (or enough are waiting).
        if !unanswered.is_empty() && (unanswered.is_full() || !readable_now(&reader)) {
            if !unanswered.answer(daemon, &mut writer) {
                return;
            }
            last_answer = Instant::now();
        }
        let mut watched = None;
        if reader.buffer().is_empty()
            && unanswered.is_empty()
            && watching.now()
            && daemon
                .watching
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            watched = Some(super::local::watch_socket(writer.as_raw_fd(), WATCH));
            daemon.watching.store(false, Ordering::SeqCst);
        }
        let mut line = String::new();
        match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if unanswered.is_empty() {
            watching.came(last_answer.elapsed(), watched);
        }
        // Most requests are appends: read the fast way, or else as any request. Each is
        // written at once, and answered once no other request is there to read.
        if let Ok(mut append) = serde_json::from_str::<AppendWire>(&line) {
            let durable = std::mem::replace(&mut append.durable, false);
            unanswered.push(append_raw(&daemon.sled, append), durable);
            continue;
        }
        // Anything else is answered after the appends sent before it.
        if !unanswered.is_empty() && !unanswered.answer(daemon, &mut writer) {
            return;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::HoldTrigger { trigger }) => {
                hold(daemon, &trigger);
                let ok = writer.write_all(&answer_line(&Answer::Ok(serde_json::Value::Null)));
                if ok.is_ok() {
                    // Held until the client closes the connection (or dies).
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                }
                release(daemon, &trigger);
                return;
            }
            Ok(Request::Hello) => to_answer(value(Welcome {
                protocol: super::local::PROTOCOL,
                pid: std::process::id(),
                notice: daemon.sled.take_repair_notice(),
            })),
            Ok(request) => answered(daemon, call(&daemon.sled, request)),
            Err(e) => Answer::Err(format!("a request the store daemon does not know: {e}")),
        };
        if writer.write_all(&answer_line(&answer)).is_err() {
            return;
        }
        last_answer = Instant::now();
    }
}

/// The most appends of one connection written before they are flushed and answered.
const MOST_UNANSWERED: usize = 256;

/// A connection's appends written and not yet answered: what each came to, and whether it
/// asked to be durable. A client sends a run's appends one after another without waiting
/// for their answers (a run's checks in a row: [`super::local`]); those read together are
/// flushed once.
#[derive(Default)]
struct Unanswered {
    results: Vec<Result<serde_json::Value, StoreError>>,
    durable: bool,
}

impl Unanswered {
    fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    fn is_full(&self) -> bool {
        self.results.len() >= MOST_UNANSWERED
    }

    fn push(&mut self, result: Result<serde_json::Value, StoreError>, durable: bool) {
        self.durable |= durable && result.is_ok();
        self.results.push(result);
    }

    /// Flushes what asked to be durable, then answers each in order; false when the client
    /// is gone. A failed flush is the answer of every append written.
    fn answer(&mut self, daemon: &Daemon, writer: &mut UnixStream) -> bool {
        let flushed = match std::mem::take(&mut self.durable) {
            true => daemon.sled.flush().err().map(|e| answered(daemon, Err(e))),
            false => None,
        };
        let mut lines = Vec::new();
        for result in self.results.drain(..) {
            let answer = match (&flushed, result) {
                (Some(failed), Ok(_)) => answer_line(failed),
                (_, result) => answer_line(&answered(daemon, result)),
            };
            lines.extend_from_slice(&answer);
        }
        writer.write_all(&lines).is_ok()
    }
}

/// Whether the client's next request can be read without waiting: part of it is read, or
/// the socket has something.
fn readable_now(reader: &BufReader<UnixStream>) -> bool {
    !reader.buffer().is_empty()
        || super::local::watch_socket(reader.get_ref().as_raw_fd(), Duration::ZERO)
}

/// The answer to a call of the store; an I/O error there also makes this daemon let go.
fn answered(daemon: &Daemon, result: Result<serde_json::Value, StoreError>) -> Answer {
    if result.as_ref().is_err_and(StoreError::is_sled_io)
        && !daemon.broken.swap(true, Ordering::SeqCst)
    {
        // Before the error is told: whoever hears of it and tries again gets a new daemon,
        // never this one.
        let _ = std::fs::remove_file(&daemon.socket);
    }
    to_answer(result)
}

/// [`Request::AppendMany`] as the daemon reads it first: each entry kept as the client wrote
/// it, to be stored as it is. Read into [`JournalEntry`]s and written out again, a fleet's
/// targets (each with its report, attempts and logs) were two thirds of the daemon's work.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendWire<'a> {
    #[allow(dead_code)]
    op: AppendOp,
    run_id: String,
    #[serde(borrow)]
    record: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    entries: Vec<&'a serde_json::value::RawValue>,
    durable: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AppendOp {
    AppendMany,
}

/// What an entry must have to be stored unread: what every [`JournalEntry`] has. (The
/// clients are this user's own medic, of this daemon's protocol.)
#[derive(Deserialize)]
struct EntryHead {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    at_ms: u64,
    #[serde(rename = "type")]
    #[allow(dead_code)]
    kind: String,
}

/// What the store needs of a run's record stored unread (see [`RecordJson`]).
#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow)]
    run_id: std::borrow::Cow<'a, str>,
    status: super::RunStatus,
    #[allow(dead_code)]
    v: u32,
}

fn append_raw(sled: &Sled, a: AppendWire<'_>) -> Result<serde_json::Value, StoreError> {
    for entry in &a.entries {
        if let Err(e) = serde_json::from_str::<EntryHead>(entry.get()) {
            return Err(StoreError::Remote(format!(
                "a journal entry the store daemon does not know: {e}"
            )));
        }
    }
    let record = a
        .record
        .map(|raw| serde_json::from_str::<RecordHead>(raw.get()).map(|head| (head, raw)))
        .transpose()
        .map_err(|e| {
            StoreError::Remote(format!("a run record the store daemon does not know: {e}"))
        })?;
    let record = record.as_ref().map(|(head, raw)| RecordJson {
        run_id: &head.run_id,
        running: head.status == super::RunStatus::Running,
        json: raw.get().as_bytes().to_vec(),
    });
    of(sled.append_json(&a.run_id, record, &a.entries, a.durable))
}

fn hold(daemon: &Daemon, trigger: &str) {
    let mut held = daemon.held.lock().unwrap_or_else(|e| e.into_inner());
    while held.contains(trigger) {
        held = daemon
            .released
            .wait(held)
            .unwrap_or_else(|e| e.into_inner());
    }
    held.insert(trigger.to_owned());
}

fn release(daemon: &Daemon, trigger: &str) {
    daemon
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(trigger);
    daemon.released.notify_all();
}

fn answer_line(answer: &Answer) -> Vec<u8> {
    let mut line = serde_json::to_vec(answer).expect("answers serialize");
    line.push(b'\n');
    line
}

fn value<T: Serialize>(v: T) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::to_value(v).expect("store values serialize"))
}

fn of<T: Serialize>(result: Result<T, StoreError>) -> Result<serde_json::Value, StoreError> {
    value(result?)
}

fn to_answer(result: Result<serde_json::Value, StoreError>) -> Answer {
    match result {
        Ok(v) => Answer::Ok(v),
        Err(StoreError::Full { .. }) => Answer::Full,
        Err(e) => Answer::Err(e.to_string()),
    }
}

/// The answer line (JSON, newline-terminated) to one request line, as the daemon answers
/// it in the middle of a connection.
#[doc(hidden)]
pub fn answer_text(store: &super::Store, line: &str) -> String {
    let answer = match serde_json::from_str::<Request>(line) {
        Ok(request) => to_answer(call(store.backend.as_ref(), request)),
        Err(e) => Answer::Err(format!("a request the store daemon does not know: {e}")),
    };
    String::from_utf8(answer_line(&answer)).expect("JSON is UTF-8")
}

fn call(
    sled: &dyn super::backend::Backend,
    request: Request<'_>,
) -> Result<serde_json::Value, StoreError> {
    match request {
        Request::Hello | Request::HoldTrigger { .. } => Err(StoreError::Remote(
            "not a request for this point of a connection".to_owned(),
        )),
        Request::Flush => of(sled.flush()),
        Request::PutRecord { record } => of(sled.put_record(&record)),
        Request::Record { run_id } => of(sled.record(&run_id)),
        Request::ByPrefix { prefix, max } => of(sled.by_prefix(&prefix, max)),
        Request::AppendMany {
            run_id,
            record,
            entries,
            durable,
        } => of(sled.append_many(&run_id, record.as_deref().map(|r| &**r), &entries, durable)),
        Request::JournalFrom {
            run_id,
            from,
            limit,
        } => of(sled.journal_from(&run_id, from, limit)),
        Request::List { filter, limit } => of(sled.list(&filter, limit)),
        Request::Recover => of(sled.recover()),
        Request::AcquireLock { key, holder } => of(sled.acquire_lock(&key, &holder)),
        Request::ReleaseAllLocks { run_id } => of(sled.release_all_locks(&run_id)),
        Request::Prune { before_ms } => of(sled.prune(before_ms)),
        Request::PutDrill { record } => of(sled.put_drill(&record)),
        Request::DrillRecords { drill, since_ms } => {
            of(sled.drill_records(drill.as_deref(), since_ms))
        }
        Request::DrillLastScheduled { drill } => of(sled.drill_last_scheduled(&drill)),
        Request::ClaimDrillSlot { drill, ms } => of(sled.claim_drill_slot(&drill, ms)),
        Request::DrillPaused { drill } => of(sled.drill_paused(&drill)),
        Request::SetDrillPaused { drill, paused } => {
            of(sled.set_drill_paused(&drill, paused.as_ref()))
        }
        Request::TriggerState { trigger } => of(sled.trigger_state(&trigger)),
        Request::SetTriggerState { trigger, state } => of(sled.set_trigger_state(&trigger, &state)),
        Request::RecordAlert { record } => of(sled.record_alert(&record)),
        Request::Alerts { since_ms, limit } => of(sled.alerts(since_ms, limit)),
    }
}

/// Starts a store daemon for `dir` from this executable (the `medic` binary), in a session
/// of its own, and reads how it went.
pub fn start(dir: &Path) -> Result<Started, StoreError> {
    // This very program, even when an upgrade replaced its file since it started (its
    // daemon then speaks its protocol).
    let this = Path::new("/proc/self/exe");
    let exe = if this.exists() {
        this.to_owned()
    } else {
        std::env::current_exe().map_err(|e| StoreError::Daemon {
            dir: dir.display().to_string(),
            reason: format!("cannot find the medic executable: {e}"),
        })?
    };
    start_with(&exe, dir)
}

/// [`start`] from the `medic` executable `exe` (for programs that are not medic: tests and
/// benchmarks).
pub fn start_with(exe: &Path, dir: &Path) -> Result<Started, StoreError> {
    let shown = dir.display().to_string();
    // The daemon runs in `dir` itself: a relative `--data-dir` given to it as it was given
    // here would name `dir/dir`, a store nobody else uses, and every command would wait for
    // a daemon that never answers on this one's socket.
    let dir = &std::path::absolute(dir).map_err(|e| StoreError::Daemon {
        dir: shown.clone(),
        reason: format!("cannot tell where the data directory is: {e}"),
    })?;
    let failed = |reason: String| StoreError::Daemon {
        dir: shown.clone(),
        reason,
    };
    let log_path = dir.join(LOG);
    // The log holds a few lines per daemon; a long-lived host would still grow it forever.
    let too_big = std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(!too_big)
        .write(true)
        .truncate(too_big)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| failed(format!("cannot open {}: {e}", log_path.display())))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--data-dir")
        .arg(dir)
        .arg("store-daemon")
        // Not the starting command's directory, which it would keep busy (an unmount).
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe. In a session of its own, no terminal's
    // Ctrl-C or hangup, and no signal to the starting command's process group, reaches
    // the process every run on the host records through.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("cannot start the store daemon: {e}")))?;
    let mut said = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut said);
    }
    // Reaped whenever it ends, so it leaves no zombie behind a long-lived command.
    std::thread::spawn(move || child.wait());
    let said = said.trim();
    match said.split_once(": ") {
        _ if said == "ready" || said == "running" => Ok(Started::Running),
        Some(("busy", why)) => Ok(Started::Busy(why.to_owned())),
        Some(("error", why)) => Err(StoreError::Remote(why.to_owned())),
        _ => Err(failed(format!(
            "the store daemon ended without saying why (see {})",
            log_path.display()
        ))),
    }
}

/// For tests: serves one connection to the store `sled` on a thread of its own, as the
/// daemon serves each.
#[cfg(test)]
pub(in crate::store) fn serve_alone(sled: Sled, stream: UnixStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let daemon = Daemon {
            sled,
            clients: AtomicUsize::new(1),
            left: Mutex::new(Instant::now()),
            held: Mutex::default(),
            released: Condvar::new(),
            broken: std::sync::atomic::AtomicBool::new(false),
            socket: std::path::PathBuf::new(),
            watching: std::sync::atomic::AtomicBool::new(false),
            near_disk: None,
        };
        serve(&daemon, stream);
    })
}

#[cfg(test)]
mod tests;
