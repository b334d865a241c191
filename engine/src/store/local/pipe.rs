//! A run's appends in flight to the store daemon: sent on one connection, one after another,
//! their answers read later. The daemon serves a connection's requests in order, so they land
//! in the order they were sent ([`super::super::backend::Runs::sends_in_order`]), and it makes
//! those that reached it together durable with one flush: checks in a row share flushes
//! through the daemon as they do in the process.
//!
//! A run has at most one pipe at a time, opened by its first append sent while none is open
//! and closed once every answer sent on it was read: its connection then goes back to the
//! pool, and the run's next append may go on any connection, since everything before it is
//! answered, so stored. Meanwhile every append of the run goes on the pipe (a plugin's key
//! value write during a check whose start is still in flight lands after that start).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{AnswerError, Conn, Local, Pool, Request, receive, send, stopped_answering, value_of};
use crate::store::StoreError;

/// Every run's open pipe, by run id.
#[derive(Default)]
pub(super) struct Pipes(Mutex<HashMap<String, Arc<Pipe>>>);

pub(super) struct Pipe {
    run_id: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// None before the first send and once closed.
    conn: Option<Conn>,
    /// Requests sent on the pipe, and answers read off it: request `n` is answered by the
    /// `n`th answer.
    sent: u64,
    read: u64,
    /// Answers read and not yet taken by their [`Sent`] (another's wait read them first).
    answers: BTreeMap<u64, Result<serde_json::Value, AnswerError>>,
    /// No more sends: every answer was read, or the connection broke.
    closed: bool,
    /// Why the connection broke: the answer of every request not answered before.
    broken: Option<std::io::Error>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipes {
    /// The run's open pipe, if it has one.
    pub(super) fn open(&self, run_id: &str) -> Option<Arc<Pipe>> {
        lock(&self.0).get(run_id).cloned()
    }

    /// The run's open pipe, or a new one.
    fn open_or_new(&self, run_id: &str) -> Arc<Pipe> {
        let mut pipes = lock(&self.0);
        if let Some(pipe) = pipes.get(run_id) {
            return pipe.clone();
        }
        let pipe = Arc::new(Pipe {
            run_id: run_id.to_owned(),
            state: Mutex::default(),
        });
        pipes.insert(run_id.to_owned(), pipe.clone());
        pipe
    }

    /// Forgets `pipe`, closed: the run's next append opens another.
    fn forget(&self, pipe: &Arc<Pipe>) {
        let mut pipes = lock(&self.0);
        if pipes
            .get(&pipe.run_id)
            .is_some_and(|p| Arc::ptr_eq(p, pipe))
        {
            pipes.remove(&pipe.run_id);
        }
    }
}

/// An append sent on a pipe, its answer not taken yet: the daemon makes it durable (its
/// `fdatasync`) while the run goes on with what cannot act ([`crate::ahead`]), or with the
/// next check.
pub(super) struct Sent {
    pipe: Arc<Pipe>,
    /// Which of the pipe's requests this is.
    n: u64,
    /// The answer was taken (a `Sent` dropped unconfirmed still waits for its answer).
    taken: bool,
    /// Whether to watch for the answer rather than sleep ([`super::WATCH`]).
    watch: bool,
    local: Shared,
    /// Until the answer is taken, calls on this process's call threads give way between
    /// them: the daemon's thread that makes this write durable, woken by the disk, may be
    /// waiting for the CPU one of them holds.
    _given_way: Option<crate::host::GivenWay>,
}

/// What a [`Sent`] needs of its [`Local`] once the call that sent it returned.
#[derive(Clone)]
pub(super) struct Shared {
    pub pool: Arc<Pool>,
    pub pipes: Arc<Pipes>,
    pub shown: Arc<str>,
}

impl Local {
    /// Sends `request`, an append to `run_id`'s journal, on the run's pipe (opening one).
    pub(super) fn send_on_pipe(
        &self,
        run_id: &str,
        request: &Request<'_>,
    ) -> Result<Sent, StoreError> {
        let local = self.shared();
        loop {
            let pipe = local.pipes.open_or_new(run_id);
            let mut state = lock(&pipe.state);
            if state.closed {
                // Closed between finding it and using it: drained, so any connection will do.
                drop(state);
                local.pipes.forget(&pipe);
                continue;
            }
            if state.conn.is_none() {
                match self.take() {
                    Ok(conn) => state.conn = Some(conn),
                    Err(e) => {
                        state.closed = true;
                        drop(state);
                        local.pipes.forget(&pipe);
                        return Err(e);
                    }
                }
            }
            let watch = local.pool.begin();
            let conn = state.conn.as_mut().expect("a connection was just set");
            if let Err(e) = send(conn, request) {
                let error = stopped_answering(&local.shown, &e);
                // Counted unanswered with the others, which this break answers too.
                state.sent += 1;
                state.broke(e, &local);
                drop(state);
                local.pipes.forget(&pipe);
                return Err(error);
            }
            state.sent += 1;
            let n = state.sent - 1;
            drop(state);
            return Ok(Sent {
                pipe,
                n,
                taken: false,
                watch,
                local,
                _given_way: crate::host::give_way(),
            });
        }
    }

    /// Makes an append of `run_id`'s journal, on its pipe if one is open (else None): it
    /// must land after what was sent there.
    pub(super) fn append_after_pipe(
        &self,
        run_id: &str,
        request: &Request<'_>,
    ) -> Option<Result<u32, StoreError>> {
        self.pipes.open(run_id)?;
        Some(
            self.send_on_pipe(run_id, request)
                .and_then(|mut sent| sent.answer())
                .and_then(|v| value_of(&self.shown, Ok(v))),
        )
    }

    fn shared(&self) -> Shared {
        Shared {
            pool: self.pool.clone(),
            pipes: self.pipes.clone(),
            shown: self.shown.clone(),
        }
    }
}

impl State {
    /// Reads the next answer off the connection.
    fn read_one(&mut self, local: &Shared, watch: bool) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match receive(conn, watch) {
            Ok(answer) => {
                local.pool.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.answers.insert(self.read, answer);
                self.read += 1;
                if self.read == self.sent {
                    // Everything sent was answered: the connection is clean, for any call.
                    self.closed = true;
                    if let Some(conn) = self.conn.take() {
                        local.pool.put_back(conn);
                    }
                }
            }
            Err(e) => self.broke(e, local),
        }
    }

    /// The connection broke: dropped, not put back (see `Local::call`); every request not
    /// answered is answered by the error.
    fn broke(&mut self, e: std::io::Error, local: &Shared) {
        let unanswered = usize::try_from(self.sent - self.read).unwrap_or(usize::MAX);
        local.pool.in_flight.fetch_sub(unanswered, Ordering::SeqCst);
        self.read = self.sent;
        self.conn = None;
        self.closed = true;
        self.broken = Some(e);
    }

    /// Whether an answer can be read without waiting: a whole line is buffered, or the
    /// socket has something (a line, the daemon hanging up).
    fn has_answer(&self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        conn.reader.buffer().contains(&b'\n')
            || super::watch_socket(conn.reader.get_ref().as_raw_fd(), std::time::Duration::ZERO)
    }

    /// Takes request `n`'s answer, if it was read (or the connection broke).
    fn take(&mut self, n: u64, shown: &str) -> Option<Result<serde_json::Value, StoreError>> {
        if let Some(answer) = self.answers.remove(&n) {
            return Some(match answer {
                Ok(v) => Ok(v),
                Err(e) => value_of(shown, Err(e)),
            });
        }
        let broken = self.broken.as_ref()?;
        Some(Err(stopped_answering(shown, broken)))
    }
}

impl Sent {
    /// Waits for the answer (reading those of requests sent before it on the way).
    fn answer(&mut self) -> Result<serde_json::Value, StoreError> {
        if std::mem::replace(&mut self.taken, true) {
            return Ok(serde_json::Value::Null);
        }
        let mut state = lock(&self.pipe.state);
        let answer = loop {
            if let Some(answer) = state.take(self.n, &self.local.shown) {
                break answer;
            }
            // Watch only for this one's own answer: the ones before it are read on the way.
            let watch = self.watch && state.read == self.n;
            state.read_one(&self.local, watch);
        };
        let closed = state.closed;
        drop(state);
        if closed {
            self.local.pipes.forget(&self.pipe);
        }
        answer
    }
}

impl crate::ahead::Unconfirmed for Sent {
    fn confirm(mut self: Box<Self>) -> Result<(), StoreError> {
        let answer = self.answer();
        answer.and_then(|v| value_of::<u32>(&self.local.shown, Ok(v)).map(drop))
    }

    fn is_answered(&self) -> bool {
        if self.taken {
            return true;
        }
        // Another thread waiting on the pipe reads for this one too: not answered yet.
        let Ok(mut state) = self.pipe.state.try_lock() else {
            return false;
        };
        loop {
            if state.answers.contains_key(&self.n) || state.broken.is_some() {
                return true;
            }
            if !state.has_answer() {
                return false;
            }
            state.read_one(&self.local, false);
        }
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        // Waited for even when nobody asks: the run's next write must not overtake it, and
        // the connection is then reusable.
        let _ = self.answer();
    }
}
