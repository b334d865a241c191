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
pub(crate) mod fake {
    pub mod log {
        use super::super::{LogLine, with_host};
        pub use crate::bindings::medic::plugin::log::Level;

        pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
            let level = match level {
                Level::Trace => crate::log::Level::Trace,
                Level::Debug => crate::log::Level::Debug,
                Level::Info => crate::log::Level::Info,
                Level::Warn => crate::log::Level::Warn,
                Level::Error => crate::log::Level::Error,
            };
            with_host(|h| {
                h.record.logs.push(LogLine {
                    level,
                    message: message.to_owned(),
                    fields: fields.to_vec(),
                })
            });
        }
    }

    pub mod clock {
        use super::super::with_host;

        pub fn now_unix_ms() -> u64 {
            with_host(|h| h.now_unix_ms)
        }

        pub fn remaining_ms() -> u64 {
            with_host(|h| h.deadline_unix_ms.saturating_sub(h.now_unix_ms))
        }

        pub fn sleep_ms(ms: u64) {
            with_host(|h| {
                let until = h.now_unix_ms.saturating_add(ms);
                if until >= h.deadline_unix_ms {
                    h.now_unix_ms = h.deadline_unix_ms;
                    h.ended.get_or_insert_with(|| {
                        crate::Error::transient("the call ran past its deadline (a sleep)")
                    });
                } else {
                    h.now_unix_ms = until;
                }
            })
        }
    }

    pub mod kv {
        use super::super::{MAX_KEY_BYTES, MAX_TOTAL_BYTES, MAX_VALUE_BYTES, with_host};

        pub fn get(key: &str) -> Option<Vec<u8>> {
            with_host(|h| {
                if !h.allows("kv") {
                    return None;
                }
                h.kv.get(key).cloned()
            })
        }

        pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
            with_host(|h| {
                if !h.allows("kv") {
                    return Err("kv is not granted to this plugin".into());
                }
                if key.len() > MAX_KEY_BYTES {
                    return Err(format!("key is longer than {MAX_KEY_BYTES} bytes"));
                }
                if value.len() > MAX_VALUE_BYTES {
                    return Err(format!("value is larger than {MAX_VALUE_BYTES} bytes"));
                }
                let others: usize =
                    h.kv.iter()
                        .filter(|(k, _)| k.as_str() != key)
                        .map(|(k, v)| k.len() + v.len())
                        .sum();
                if others + key.len() + value.len() > MAX_TOTAL_BYTES {
                    return Err(format!(
                        "the run's state would exceed {MAX_TOTAL_BYTES} bytes"
                    ));
                }
                h.kv.insert(key.to_owned(), value.to_vec());
                Ok(())
            })
        }

        pub fn delete(key: &str) {
            with_host(|h| {
                if h.allows("kv") {
                    h.kv.remove(key);
                }
            })
        }
    }

    pub mod http {
        use super::super::{HttpCall, with_host};
        pub use crate::bindings::medic::plugin::http::{HttpError, Request, Response};

        pub fn send(request: &Request) -> Result<Response, HttpError> {
            with_host(|h| {
                if !h.allows("http") {
                    return Err(HttpError::Denied("http is not declared".into()));
                }
                if h.past_deadline() {
                    return Err(HttpError::Timeout("the call's deadline has passed".into()));
                }
                let call = HttpCall {
                    method: request.method.clone(),
                    url: request.url.clone(),
                    headers: request.headers.clone(),
                    body: request.body.clone(),
                };
                h.record.http.push(call.clone());
                let answer = h.http.iter_mut().find_map(|f| f(&call));
                match answer {
                    Some(Ok(r)) => Ok(Response {
                        status: r.status,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(n, v)| (n.to_ascii_lowercase(), v))
                            .collect(),
                        body: r.body,
                    }),
                    Some(Err(e)) => Err(match e {
                        crate::http::HttpError::Denied(m) => HttpError::Denied(m),
                        crate::http::HttpError::Timeout(m) => HttpError::Timeout(m),
                        crate::http::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                        crate::http::HttpError::Connection(m) => HttpError::Connection(m),
                        crate::http::HttpError::TooLarge(m) => HttpError::TooLarge(m),
                    }),
                    None => Err(HttpError::Denied(format!(
                        "the test harness has no reply for {} {}",
                        call.method, call.url
                    ))),
                }
            })
        }
    }

    pub mod tcp {
        use super::super::with_host;
        pub use crate::bindings::medic::plugin::tcp::TcpError;

        pub fn exchange(
            address: &str,
            request: &[u8],
            _timeout_ms: Option<u64>,
        ) -> Result<Vec<u8>, TcpError> {
            with_host(|h| {
                if !h.allows("tcp") {
                    return Err(TcpError::Denied("tcp is not declared".into()));
                }
                if h.past_deadline() {
                    return Err(TcpError::Timeout("the call's deadline has passed".into()));
                }
                h.record.tcp.push((address.to_owned(), request.to_vec()));
                match h.tcp.iter_mut().find_map(|f| f(address, request)) {
                    Some(Ok(bytes)) => Ok(bytes),
                    Some(Err(e)) => Err(match e {
                        crate::tcp::TcpError::Denied(m) => TcpError::Denied(m),
                        crate::tcp::TcpError::Timeout(m) => TcpError::Timeout(m),
                        crate::tcp::TcpError::Connection(m) => TcpError::Connection(m),
                        crate::tcp::TcpError::TooLarge(m) => TcpError::TooLarge(m),
                    }),
                    None => Err(TcpError::Denied(format!(
                        "the test harness has no reply for {address}"
                    ))),
                }
            })
        }
    }

    pub mod command {
        use super::super::{CommandCall, with_host};
        pub use crate::bindings::medic::plugin::command::{CommandError, CommandOutput};

        pub fn run(
            program: &str,
            args: &[String],
            _timeout_ms: Option<u64>,
        ) -> Result<CommandOutput, CommandError> {
            with_host(|h| {
                if !h.allows("command") {
                    return Err(CommandError::Denied("command is not declared".into()));
                }
                if h.past_deadline() {
                    return Err(CommandError::Timeout(
                        "the call's deadline has passed".into(),
                    ));
                }
                let call = CommandCall {
                    program: program.to_owned(),
                    args: args.to_vec(),
                };
                h.record.commands.push(call.clone());
                match h.commands.iter_mut().find_map(|f| f(&call)) {
                    Some(Ok(o)) => Ok(CommandOutput {
                        exit_code: o.exit_code,
                        stdout: o.stdout,
                        stderr: o.stderr,
                        truncated: o.truncated,
                    }),
                    Some(Err(e)) => Err(match e {
                        crate::command::CommandError::Denied(m) => CommandError::Denied(m),
                        crate::command::CommandError::Timeout(m) => CommandError::Timeout(m),
                        crate::command::CommandError::Failed(m) => CommandError::Failed(m),
                    }),
                    None => Err(CommandError::Denied(format!(
                        "the test harness has no reply for {program} {}",
                        args.join(" ")
                    ))),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Manifest, Param, Status, clock, http, kv, tcp};

    /// Polls a URL until it answers 200, sleeping between tries; stores the try count.
    struct Poller;

    impl Plugin for Poller {
        fn manifest() -> Manifest {
            Manifest::check("poller", "0.1.0")
                .param(Param::text("url").required())
                .param(Param::duration("every").default(Duration::from_secs(1)))
                .param(Param::float("ratio").default(0.5))
                .capability("http")
                .capability("kv")
        }

        fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
            let url = params.text("url")?;
            let every = params.duration("every")?;
            let mut tries = 0u32;
            loop {
                tries += 1;
                kv::set("tries", tries.to_string())?;
                match http::get(url).send() {
                    Ok(r) if r.status == 200 => {
                        return Ok(Outcome::success(format!("200 after {tries} tries"))
                            .output("ratio", params.float("ratio")?));
                    }
                    Ok(_) | Err(http::HttpError::Connection(_)) => clock::sleep(every),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// Uses tcp without declaring it.
    struct Sneaky;

    impl Plugin for Sneaky {
        fn manifest() -> Manifest {
            Manifest::action("sneaky", "0.1.0")
        }

        fn run(_ctx: &Context, _params: &Params) -> Result<Outcome, Error> {
            let _ = tcp::exchange("127.0.0.1:22", b"hello", None);
            Ok(Outcome::success("did nothing, honestly"))
        }
    }

    #[test]
    fn replies_come_in_order_and_the_clock_moves_with_sleeps() {
        let url = "http://svc.internal/health";
        let mut h = Harness::new()
            .clock(1_000)
            .param("url", url)
            .param("ratio", 2i64)
            .http_replies(
                "GET",
                url,
                vec![
                    Err(http::HttpError::Connection("refused".into())),
                    Ok(response(503, "")),
                    Ok(response(200, "ok")),
                ],
            );
        let call = h.run::<Poller>();
        assert_eq!(call.outcome().status, Status::Success);
        assert_eq!(call.outcome().summary, "200 after 3 tries");
        // An integer given for a float parameter is widened, as the engine does.
        assert_eq!(call.output("ratio"), Some(&Value::Float(2.0)));
        assert_eq!(call.http.len(), 3);
        assert_eq!(h.now_unix_ms(), 3_000);
        assert_eq!(h.kv_get("tries"), Some(&b"3"[..]));
    }

    #[test]
    fn a_sleep_past_the_deadline_ends_the_call_as_timed_out() {
        let url = "http://svc.internal/health";
        let mut h = Harness::new()
            .timeout(Duration::from_secs(5))
            .param("url", url)
            .param("every", Duration::from_secs(2))
            .http("GET", url, response(503, ""));
        let call = h.run::<Poller>();
        assert!(
            matches!(call.error(), Error::Transient(m) if m.contains("deadline")),
            "{:?}",
            call.result
        );
        // Tries at 0 s, 2 s and 4 s; the sleep from 4 s reaches the deadline.
        assert_eq!(call.http.len(), 3);
    }

    #[test]
    fn unanswered_requests_are_denied() {
        let mut h = Harness::new().param("url", "http://elsewhere.internal/");
        let call = h.run::<Poller>();
        assert!(matches!(call.error(), Error::Denied(m) if m.contains("no reply for GET")));
    }

    #[test]
    fn an_undeclared_capability_ends_the_call_as_denied() {
        let mut h = Harness::new().tcp("127.0.0.1:22", "SSH-2.0");
        let call = h.run::<Sneaky>();
        assert!(matches!(call.error(), Error::Denied(m) if m.contains("`tcp`")));
        assert!(call.tcp.is_empty());
    }

    #[test]
    fn kv_limits_are_the_engines() {
        let mut h = Harness::new();
        h.host().capabilities = vec!["kv".into()];
        CURRENT.with(|c| *c.borrow_mut() = h.host.take());
        assert!(fake::kv::set(&"k".repeat(300), b"v").is_err());
        assert!(fake::kv::set("big", &vec![0; MAX_VALUE_BYTES + 1]).is_err());
        // Keys count too: 15 full values fit in 1 MiB, a 16th does not.
        for i in 0..15 {
            assert!(fake::kv::set(&format!("k{i}"), &vec![0; MAX_VALUE_BYTES]).is_ok());
        }
        assert!(fake::kv::set("k15", &vec![0; MAX_VALUE_BYTES]).is_err());
        // Replacing an entry counts only the new value.
        assert!(fake::kv::set("k0", &vec![1; MAX_VALUE_BYTES]).is_ok());
        CURRENT.with(|c| c.borrow_mut().take());
    }

    #[test]
    #[should_panic(expected = "parameter `url` of plugin `poller` is required")]
    fn a_missing_required_parameter_is_a_mistake_in_the_test() {
        Harness::new().run::<Poller>();
    }

    #[test]
    #[should_panic(expected = "parameter `colour` is not declared by plugin `poller`")]
    fn an_unknown_parameter_is_a_mistake_in_the_test() {
        Harness::new()
            .param("url", "http://x/")
            .param("colour", "red")
            .run::<Poller>();
    }
}
