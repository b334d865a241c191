//! Test a plugin with plain `cargo test`, without an engine: [`Harness`] calls the plugin's
//! `run` and `revert` natively, with a fake host behind every capability.
//!
//! - HTTP, TCP and commands answer from canned replies or handlers you give; anything else is
//!   denied, as the engine denies a host the runbook did not grant.
//! - Key-value state lives in the harness, so a `run` followed by a `revert` sees what the run
//!   stored, as in a real run. The engine's size limits apply.
//! - The clock is fake: it starts where you say and moves only when the plugin sleeps. A sleep
//!   past the deadline ends the call as timed out, as it does in the engine.
//! - A capability the manifest does not declare ends the call as denied: the engine would
//!   never grant it.
//! - Parameters are checked against the manifest and defaults applied, as the engine does
//!   before a call; a mistake there panics with the reason, since it is a mistake in the test.
//!
//! ```
//! use medic_plugin_sdk::testing::{Harness, response};
//! use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, Status, http};
//!
//! struct Ping;
//!
//! impl Plugin for Ping {
//!     fn manifest() -> Manifest {
//!         Manifest::check("ping", "0.1.0")
//!             .param(Param::text("url").required())
//!             .capability("http")
//!     }
//!
//!     fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
//!         let url = params.text("url")?;
//!         let r = http::get(url).send()?;
//!         Ok(if r.status == 200 {
//!             Outcome::success(format!("{url} answered 200"))
//!         } else {
//!             Outcome::failure(format!("{url} answered {}", r.status))
//!         })
//!     }
//! }
//!
//! let mut h = Harness::new()
//!     .param("url", "http://api.internal/health")
//!     .http("GET", "http://api.internal/health", response(503, "down"));
//! let call = h.run::<Ping>();
//! assert_eq!(call.outcome().status, Status::Failure);
//! assert_eq!(call.http.len(), 1);
//! ```
//!
//! Only in native builds: a component talks to the real engine.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::command::{CommandError, Output};
use crate::http::{HttpError, Response};
use crate::log::Level;
use crate::manifest::Manifest;
use crate::tcp::TcpError;
use crate::{Context, Error, Outcome, Params, Plugin, Value, ValueType};

/// The engine's limits on key-value state (per plugin declaration and run).
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 << 10;
const MAX_TOTAL_BYTES: usize = 1 << 20;

/// An HTTP request the plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The method, as the plugin gave it.
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// The request headers.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl HttpCall {
    /// The body as text (lossy), or an empty string.
    pub fn body_text(&self) -> String {
        self.body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

/// A command the plugin ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCall {
    /// The program path.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// A line the plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields.
    pub fields: Vec<(String, String)>,
}

/// A response with this status and body, and no headers.
pub fn response(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

/// A 200 response with a JSON body and its content type.
pub fn json(body: impl Into<String>) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into().into_bytes(),
    }
}

/// A command's output: exit code and standard output.
pub fn exited(code: i32, stdout: impl Into<Vec<u8>>) -> Output {
    Output {
        exit_code: Some(code),
        stdout: stdout.into(),
        stderr: Vec::new(),
        truncated: false,
    }
}

type HttpHandler = Box<dyn FnMut(&HttpCall) -> Option<Result<Response, HttpError>>>;
type TcpHandler = Box<dyn FnMut(&str, &[u8]) -> Option<Result<Vec<u8>, TcpError>>>;
type CommandHandler = Box<dyn FnMut(&CommandCall) -> Option<Result<Output, CommandError>>>;

/// Replies in order; the last one repeats.
fn sequence<T: Clone>(replies: Vec<T>) -> impl FnMut() -> Option<T> {
    let mut queue: VecDeque<T> = replies.into();
    move || {
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    }
}

/// The fake host's state: what it answers, and what happened during the current call.
#[derive(Default)]
struct FakeHost {
    http: Vec<HttpHandler>,
    tcp: Vec<TcpHandler>,
    commands: Vec<CommandHandler>,
    kv: BTreeMap<String, Vec<u8>>,
    now_unix_ms: u64,
    // Per call:
    capabilities: Vec<String>,
    deadline_unix_ms: u64,
    ended: Option<Error>,
    record: Record,
}

#[derive(Default)]
struct Record {
    logs: Vec<LogLine>,
    http: Vec<HttpCall>,
    tcp: Vec<(String, Vec<u8>)>,
    commands: Vec<CommandCall>,
}

impl FakeHost {
    /// Whether the call may use `capability`; ends the call as denied when it may not.
    fn allows(&mut self, capability: &str) -> bool {
        if self.ended.is_some() {
            return false;
        }
        if self.capabilities.iter().any(|c| c == capability) {
            return true;
        }
        self.ended = Some(Error::denied(format!(
            "the plugin used `{capability}`, which its manifest does not declare; the engine \
             would never grant it"
        )));
        false
    }

    fn past_deadline(&self) -> bool {
        self.now_unix_ms >= self.deadline_unix_ms
    }
}

thread_local! {
    static CURRENT: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

fn with_host<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(h) => f(h),
        None => panic!(
            "medic_plugin_sdk: a capability was called outside the engine; in native tests, \
             call the plugin through medic_plugin_sdk::testing::Harness"
        ),
    })
}

/// Calls a plugin natively with faked capabilities. Build it, call [`Harness::run`] (and
/// [`Harness::revert`]), and assert on the returned [`Call`].
pub struct Harness {
    host: Option<FakeHost>,
    params: Params,
    environment: String,
    dry_run: bool,
    attempt: u32,
    timeout: Duration,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness with no canned replies, empty state, a 30 s call budget, and the clock at
    /// 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Harness {
            host: Some(FakeHost {
                now_unix_ms: 1_767_225_600_000,
                ..FakeHost::default()
            }),
            params: Params::new(),
            environment: "test".into(),
            dry_run: false,
            attempt: 1,
            timeout: Duration::from_secs(30),
        }
    }

    fn host(&mut self) -> &mut FakeHost {
        self.host.as_mut().expect("the harness is not in a call")
    }

    /// Sets a parameter for the next calls.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params = self.params.with(name, value);
        self
    }

    /// The environment the calls target (default `test`).
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.environment = name.into();
        self
    }

    /// Calls as a dry run.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The attempt number the context reports (default 1).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The call's time budget (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the fake clock starts, in milliseconds since the Unix epoch.
    pub fn clock(mut self, unix_ms: u64) -> Self {
        self.host().now_unix_ms = unix_ms;
        self
    }

    /// Answers every `method url` request with `reply`.
    pub fn http(self, method: &str, url: &str, reply: Response) -> Self {
        self.http_replies(method, url, vec![Ok(reply)])
    }

    /// Answers `method url` requests with these replies in order; the last one repeats.
    pub fn http_replies(
        mut self,
        method: &str,
        url: &str,
        replies: Vec<Result<Response, HttpError>>,
    ) -> Self {
        assert!(!replies.is_empty(), "http_replies needs at least one reply");
        let (method, url) = (method.to_ascii_uppercase(), url.to_owned());
        let mut next = sequence(replies);
        self.host().http.push(Box::new(move |call: &HttpCall| {
            (call.method.eq_ignore_ascii_case(&method) && call.url == url)
                .then(&mut next)
                .flatten()
        }));
        self
    }

    /// Answers HTTP requests with a handler; `None` passes the request on to the handlers
    /// added after it (and, when none answers, denies it).
    pub fn http_handler(
        mut self,
        handler: impl FnMut(&HttpCall) -> Option<Result<Response, HttpError>> + 'static,
    ) -> Self {
        self.host().http.push(Box::new(handler));
        self
    }

    /// Answers every TCP exchange with `address` with `answer`.
    pub fn tcp(mut self, address: &str, answer: impl Into<Vec<u8>>) -> Self {
        let (address, answer) = (address.to_owned(), answer.into());
        self.host().tcp.push(Box::new(move |to: &str, _: &[u8]| {
            (to == address).then(|| Ok(answer.clone()))
        }));
        self
    }

    /// Answers TCP exchanges with a handler given the address and the request bytes.
    pub fn tcp_handler(
        mut self,
        handler: impl FnMut(&str, &[u8]) -> Option<Result<Vec<u8>, TcpError>> + 'static,
    ) -> Self {
        self.host().tcp.push(Box::new(handler));
        self
    }

    /// Runs of `program` (any arguments) produce `output`.
    pub fn command(mut self, program: &str, output: Output) -> Self {
        let program = program.to_owned();
        self.host()
            .commands
            .push(Box::new(move |call: &CommandCall| {
                (call.program == program).then(|| Ok(output.clone()))
            }));
        self
    }

    /// Answers commands with a handler.
    pub fn command_handler(
        mut self,
        handler: impl FnMut(&CommandCall) -> Option<Result<Output, CommandError>> + 'static,
    ) -> Self {
        self.host().commands.push(Box::new(handler));
        self
    }

    /// Presets a key-value entry, as an earlier call would have left it.
    pub fn kv(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.host().kv.insert(key.to_owned(), value.into());
        self
    }

    /// A key-value entry as the plugin left it.
    pub fn kv_get(&self, key: &str) -> Option<&[u8]> {
        self.host
            .as_ref()
            .and_then(|h| h.kv.get(key))
            .map(Vec::as_slice)
    }

    /// The fake clock now, in milliseconds since the Unix epoch.
    pub fn now_unix_ms(&self) -> u64 {
        self.host.as_ref().map_or(0, |h| h.now_unix_ms)
    }

    /// Calls the plugin's `run` with the parameters set so far.
    pub fn run<P: Plugin>(&mut self) -> Call {
        let manifest = P::manifest();
        let params = self.checked_params(&manifest);
        self.call(&manifest, |ctx| P::run(ctx, &params))
    }

    /// Calls the plugin's `check_params` with the parameters set so far, as `medic validate`
    /// does before any run (with defaults applied).
    pub fn check_params<P: Plugin>(&self) -> Vec<crate::ParamProblem> {
        let manifest = P::manifest();
        P::check_params(&self.checked_params(&manifest))
    }

    /// Calls the plugin's `revert` with the parameters set so far and the outputs of an
    /// earlier run (`call.outputs()`). Panics when the manifest does not declare revert,
    /// since the engine would never call it.
    pub fn revert<P: Plugin>(&mut self, outputs: Params) -> Call {
        let manifest = P::manifest();
        assert!(
            manifest.revert,
            "plugin `{}` does not declare revert (Manifest::revertible), so the engine never calls it",
            manifest.name
        );
        let params = self.checked_params(&manifest);
        self.call(&manifest, |ctx| P::revert(ctx, &params, &outputs))
    }

    /// The parameters as the engine would pass them: checked against the manifest, with
    /// defaults applied.
    fn checked_params(&self, manifest: &Manifest) -> Params {
        for (name, _) in self.params.iter() {
            assert!(
                manifest.params.iter().any(|p| p.name == name),
                "parameter `{name}` is not declared by plugin `{}`",
                manifest.name
            );
        }
        let mut out = Params::new();
        for p in &manifest.params {
            let value = match (self.params.get(&p.name), &p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    assert!(
                        !p.required,
                        "parameter `{}` of plugin `{}` is required",
                        p.name, manifest.name
                    );
                    continue;
                }
            };
            let value = match (p.ty, value) {
                // The engine widens integers given for float parameters.
                (ValueType::Float, Value::Integer(i)) => Value::Float(i as f64),
                (ty, v) => {
                    assert_eq!(
                        v.value_type(),
                        ty,
                        "parameter `{}` of plugin `{}` must be {ty}",
                        p.name,
                        manifest.name
                    );
                    v
                }
            };
            out = out.with(p.name.clone(), value);
        }
        out
    }

    fn call(
        &mut self,
        manifest: &Manifest,
        f: impl FnOnce(&Context) -> Result<Outcome, Error>,
    ) -> Call {
        let mut host = self.host.take().expect("the harness is not in a call");
        host.capabilities = manifest.capabilities.clone();
        host.deadline_unix_ms = host.now_unix_ms + self.timeout.as_millis() as u64;
        host.ended = None;
        host.record = Record::default();
        let ctx = Context {
            run_id: "01harness0000000000000000".into(),
            step_id: "test".into(),
            attempt: self.attempt,
            environment: self.environment.clone(),
            dry_run: self.dry_run,
            timeout: self.timeout,
            deadline_unix_ms: host.deadline_unix_ms,
        };
        CURRENT.with(|c| *c.borrow_mut() = Some(host));
        // Put the host back even when the plugin panics, so the harness stays usable.
        struct Restore<'a>(&'a mut Option<FakeHost>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.0 = CURRENT.with(|c| c.borrow_mut().take());
            }
        }
        let restore = Restore(&mut self.host);
        let returned = f(&ctx);
        drop(restore);
        let host = self.host.as_mut().expect("the host is back");
        let record = std::mem::take(&mut host.record);
        let result = match host.ended.take() {
            Some(why) => Err(why),
            None => returned,
        };
        Call {
            result,
            logs: record.logs,
            http: record.http,
            tcp: record.tcp,
            commands: record.commands,
        }
    }
}

/// What one call did.
#[derive(Debug)]
pub struct Call {
    /// What the plugin returned, or how the host ended the call (deadline passed, an
    /// undeclared capability used).
    pub result: Result<Outcome, Error>,
    /// Lines logged, in order.
    pub logs: Vec<LogLine>,
    /// HTTP requests sent, in order.
    pub http: Vec<HttpCall>,
    /// TCP exchanges: address and request bytes.
    pub tcp: Vec<(String, Vec<u8>)>,
    /// Commands run.
    pub commands: Vec<CommandCall>,
}

impl Call {
    /// The outcome; panics with the error when the call failed.
    #[track_caller]
    pub fn outcome(&self) -> &Outcome {
        match &self.result {
            Ok(o) => o,
            Err(e) => panic!("the call failed: {e}"),
        }
    }

    /// The error; panics with the outcome when the call returned one.
    #[track_caller]
    pub fn error(&self) -> &Error {
        match &self.result {
            Ok(o) => panic!("the call returned an outcome: {o:?}"),
            Err(e) => e,
        }
    }

    /// An output of the outcome, by name.
    pub fn output(&self, name: &str) -> Option<&Value> {
        self.result
            .as_ref()
            .ok()?
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The outcome's outputs as parameters for [`Harness::revert`].
    pub fn outputs(&self) -> Params {
        let mut p = Params::new();
        if let Ok(o) = &self.result {
            for (n, v) in &o.outputs {
                p = p.with(n.clone(), v.clone());
            }
        }
        p
    }

    /// Whether a logged message contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }
}

/// The fake capability interfaces, with the signatures of the generated imports.
pub(crate) mod fake;

#[cfg(test)]
mod tests;
