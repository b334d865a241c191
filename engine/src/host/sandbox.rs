//! One sandboxed call: a fresh store and instance, limits, captured output, and the
//! classification of whatever went wrong into a named [`Failure`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::caps::{CapState, CapabilityDenied, DeadlineExceeded, Grants, KvSpace};
use super::limits::{Limiter, MemoryLimitExceeded};
use super::outcome::{Failure, Invocation, Outcome};
use super::redact::Redactor;
use super::value::{Values, values_to_wit};
use super::{EPOCH_TICK, Plugin, PluginHost, bindings};

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) caps: CapState,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The limits and grants of one call.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub timeout: Duration,
    pub memory: u64,
    pub grants: Arc<Grants>,
    pub kv: KvSpace,
    /// The run's secrets: masked in everything the call produces, before it is traced,
    /// truncated or returned.
    pub redactor: Arc<Redactor>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            timeout: super::limits::DEFAULT_TIMEOUT,
            memory: super::limits::DEFAULT_MEMORY,
            grants: Arc::default(),
            kv: KvSpace::new(),
            redactor: Arc::default(),
        }
    }
}

/// Where a call stands in a run (passed to the plugin as its context).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    pub environment: String,
    pub dry_run: bool,
}

/// What to call.
#[derive(Debug, Clone)]
pub enum Call {
    Run { params: Values },
    Revert { params: Values, outputs: Values },
}

impl Call {
    pub fn params(&self) -> &Values {
        match self {
            Call::Run { params } | Call::Revert { params, .. } => params,
        }
    }

    pub fn into_params(self) -> Values {
        match self {
            Call::Run { params } | Call::Revert { params, .. } => params,
        }
    }
}

/// Keeps the tail of what a plugin writes to stdout/stderr. Writes never fail: a plugin that
/// floods its output is bounded here, not crashed by a full pipe.
#[derive(Clone, Default)]
pub(crate) struct OutputTail(Arc<Mutex<Vec<u8>>>);

const OUTPUT_TAIL_BYTES: usize = 16 << 10;

impl OutputTail {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for OutputTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut tail = self.0.lock().unwrap();
        tail.extend_from_slice(buf);
        // Trim in batches so a flood of small writes costs amortised O(1) per byte.
        if tail.len() > 2 * OUTPUT_TAIL_BYTES {
            let excess = tail.len() - OUTPUT_TAIL_BYTES;
            tail.drain(..excess);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Rust's panic output is `thread '…' panicked at FILE:LINE:COL:\nMESSAGE\nnote: …`.
fn panic_message(output: &str) -> Option<String> {
    let start = output.rfind("panicked at ")?;
    let after = &output[start..];
    let (location, rest) = after.split_once('\n')?;
    let message: Vec<&str> = rest
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    let location = location
        .trim_start_matches("panicked at ")
        .trim_end_matches(':');
    Some(format!("{} (at {location})", message.join("\n").trim()))
}

fn classify(err: &wasmtime::Error, timeout: Duration, output: &str) -> Failure {
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return Failure::Timeout { after: timeout };
    }
    if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::MemoryLimit {
            limit: m.limit,
            requested: m.requested,
        };
    }
    if let Some(CapabilityDenied(message)) = err.downcast_ref::<CapabilityDenied>() {
        return Failure::Denied {
            message: message.clone(),
        };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Failure::PluginExit { code: exit.0 };
    }
    // wasmtime's own type for it is private; its message is stable and says what it is.
    if format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return Failure::Limit {
            message: format!(
                "it handed over more than {} in one transfer",
                super::limits::format_bytes(super::limits::MAX_TRANSFER_BYTES as u64)
            ),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout { after: timeout },
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match panic_message(output) {
            Some(message) => Failure::Panic { message },
            None => Failure::Trap {
                message: "unreachable code reached (the plugin aborted)".into(),
            },
        },
        Some(trap) => Failure::Trap {
            message: trap.to_string(),
        },
        None => Failure::Engine {
            message: format!("{err:#}"),
        },
    }
}

impl PluginHost {
    pub(crate) fn new_store(
        &self,
        plugin: &str,
        sandbox: &Sandbox,
        step: &str,
        output: &OutputTail,
    ) -> Store<StoreState> {
        let state = state_of(
            self.http.clone(),
            plugin.to_owned(),
            sandbox.clone(),
            step.to_owned(),
            output.clone(),
            Instant::now(),
        );
        store_of(&self.engine, state)
    }

    /// Runs one call in a fresh sandbox, on the caller's thread. Never panics and never
    /// returns early on a plugin's misbehaviour: every cause ends up in
    /// [`Invocation::result`].
    pub async fn invoke(
        &self,
        plugin: &Plugin,
        call: Call,
        ctx: &CallContext,
        sandbox: &Sandbox,
    ) -> Invocation {
        self.invoke_on(plugin, call, ctx.clone(), sandbox.clone(), Placement::Here)
            .await
    }

    /// [`PluginHost::invoke`], placed as asked, with the context and sandbox given away: a
    /// run makes both for each call and the call's store takes them, so nothing of them is
    /// copied again (a fleet's run thread makes one call per target).
    pub fn invoke_on(
        &self,
        plugin: &Plugin,
        call: Call,
        ctx: CallContext,
        sandbox: Sandbox,
        placement: Placement,
    ) -> impl Future<Output = Invocation> + Send + use<> {
        // The run's last call's store goes first: its memory slot is then free for this
        // one (warm), and its share of the budget is not waited for by its own run.
        crate::later::drop_now();
        let asked = Instant::now();
        let output = OutputTail::default();
        let redactor = sandbox.redactor.clone();
        let whole = self.whole_call(
            plugin,
            call,
            ctx,
            sandbox,
            output.clone(),
            asked,
            placement == Placement::Here,
        );
        let threads = match placement {
            Placement::Here => None,
            Placement::Workers => self.calls.threads(),
        };
        match threads {
            // Boxed: the call's future (its store being made, wasmtime's) is most of a step's,
            // and a run's future is as large as its largest step; held inline, every run in
            // flight carried it while it waited (a gate, a backoff, an approval), not only
            // while it called.
            None => Either::Left(Box::pin(whole)),
            // The whole call is the task's, its result's reading and masking included: the
            // caller's thread (a fleet's run, which records every target) only waits for
            // it. Dropped (the run stopped), the task is aborted: the call ends at its next
            // yield, as it would on this thread, instead of running on unowned.
            Some(threads) => {
                // Boxed: the task's cell then holds a pointer. Its stage is copied whole
                // as the task is made, ends and is let go, on the run's thread and the call
                // thread in turn; inline, that was the call's future each time.
                let task = threads.spawn(Box::pin(whole));
                Either::Right(async move {
                    match task.await {
                        Ok(inv) => inv,
                        // A panic inside wasmtime or a host function: the call's state went
                        // with it.
                        Err(e) => settled(
                            Err(Failure::Engine {
                                message: format!("the call's task failed: {e}"),
                            }),
                            Findings::default(),
                            output.contents(),
                            asked,
                            &redactor,
                        ),
                    }
                })
            }
        }
    }

    /// The whole of one call, owning all it needs, to run wherever it is polled: its share
    /// of the memory budget, its store made, used and dropped (its instance's memory reset),
    /// and its result read and masked. `here`: on the run's own thread, whose next wait
    /// drops the store (`crate::later`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn whole_call(
        &self,
        plugin: &Plugin,
        call: Call,
        ctx: CallContext,
        sandbox: Sandbox,
        output: OutputTail,
        asked: Instant,
        here: bool,
    ) -> impl Future<Output = Invocation> + Send + use<> {
        let mib = u32::try_from(sandbox.memory.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .clamp(1, self.memory_budget_mib);
        let budget = self.memory.clone();
        let engine = self.engine.clone();
        let http = self.http.clone();
        let name = plugin.manifest.name.clone();
        let pre = plugin.pre.clone();
        let exports = plugin.exports;
        async move {
            // The call's memory limit is drawn from the host's budget before it starts, so
            // calls running together never hold more than the budget (the semaphore is never
            // closed, and is fair: a call does not pass one waiting). Waiting for the budget
            // is not the call's time; waiting for a call thread is: its deadline counts from
            // when it was asked for.
            let (memory, started) = match budget.clone().try_acquire_many_owned(mib) {
                Ok(permit) => (Ok(permit), asked),
                Err(_) => (budget.acquire_many_owned(mib).await, Instant::now()),
            };
            let timeout = sandbox.timeout;
            let redactor = sandbox.redactor.clone();
            let deadline_unix_ms = (std::time::SystemTime::now()
                + timeout.saturating_sub(started.elapsed()))
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
            let wit_ctx = bindings::types::Context {
                step_id: ctx.step_id.clone(),
                run_id: ctx.run_id,
                attempt: ctx.attempt,
                environment: ctx.environment,
                dry_run: ctx.dry_run,
                timeout_ms: timeout.as_millis() as u64,
                deadline_unix_ms,
            };
            let state = state_of(http, name, sandbox, ctx.step_id, output.clone(), started);
            let mut store = store_of(&engine, state);
            // Epoch interruption stops wasm code and host calls check the deadline
            // themselves; this outer bound is the backstop for anything that slips through
            // both.
            // It moves, as the deadline does, by what the call waited for the store
            // (`caps::StoreWaited`).
            let backstop = timeout + 4 * EPOCH_TICK + Duration::from_millis(50);
            let store_waited = store.data().caps.store_waited.clone();
            let until = || started + backstop + store_waited.get();
            let raw = {
                let mut call = std::pin::pin!(run(&pre, exports, &mut store, &wit_ctx, &call));
                loop {
                    let bound = until();
                    match tokio::time::timeout_at(bound.into(), &mut call).await {
                        Ok(answer) => break Ok(answer),
                        Err(elapsed) if until() <= bound => break Err(elapsed),
                        Err(_) => {}
                    }
                }
            };
            let findings = Findings::take(&mut store.data_mut().caps);
            // The store (its instance's memory reset, the rest of its state) and the call's
            // share of the budget go together. A run's own call leaves them for the run's
            // next wait (`crate::later`: while its next write waits for the disk). Calls made
            // together drop them at once, where they ran: on the call threads, not on the
            // run's, which records every target (it was 7% of that thread's time in a fleet
            // of trivial targets); and none of them waits for the budget while another's
            // leftover holds it.
            if here {
                crate::later::keep(Box::new((store, memory)));
            } else {
                drop((store, memory));
            }
            let captured = output.contents();
            let result = match raw {
                Err(_) => Err(Failure::Timeout { after: timeout }),
                Ok(Err(err)) => Err(classify(&err, timeout, &captured)),
                Ok(Ok(Err(plugin_error))) => Err(Failure::from_wit(plugin_error)),
                Ok(Ok(Ok(outcome))) => Ok(Outcome::from_wit(outcome)),
            };
            settled(result, findings, captured, started, &redactor)
        }
    }
}

/// A call's invocation from its result and what its state left, masked and bounded.
fn settled(
    result: Result<Outcome, Failure>,
    findings: Findings,
    stderr: String,
    started: Instant,
    redactor: &Redactor,
) -> Invocation {
    let Findings {
        denied,
        logs,
        logs_dropped,
        uses,
    } = findings;
    let result = match (denied, result) {
        // A call that was denied a capability fails as denied, whatever it returned, unless
        // it already failed for a more fundamental reason (a trap or timeout).
        (
            Some(message),
            Ok(_)
            | Err(Failure::Denied { .. } | Failure::Permanent { .. } | Failure::Transient { .. }),
        ) => Err(Failure::Denied { message }),
        (_, result) => result,
    };
    let mut inv = Invocation {
        result,
        logs,
        logs_dropped,
        capability_uses: uses,
        stderr,
        duration_us: started.elapsed().as_micros() as u64,
        unmasked_outputs: None,
    };
    if !redactor.is_empty()
        && let Ok(o) = &inv.result
    {
        let mut real = o.clone();
        real.bound();
        inv.unmasked_outputs = Some(real.outputs);
    }
    // Masked before bounded: a secret straddling a cut is not half kept.
    redactor.invocation(&mut inv);
    match &mut inv.result {
        Ok(o) => o.bound(),
        Err(f) => f.bound(),
    }
    if inv.unmasked_outputs.as_ref() == inv.result.as_ref().ok().map(|o| &o.outputs) {
        inv.unmasked_outputs = None;
    }
    inv
}

/// What a call's state leaves for its record: its logs, capability uses and first denial.
#[derive(Default)]
struct Findings {
    denied: Option<String>,
    logs: Vec<super::outcome::LogLine>,
    logs_dropped: u64,
    uses: Vec<super::outcome::CapabilityUse>,
}

impl Findings {
    fn take(caps: &mut super::caps::CapState) -> Findings {
        Findings {
            denied: caps.denied.take(),
            logs: std::mem::take(&mut caps.logs),
            logs_dropped: caps.logs_dropped,
            uses: std::mem::take(&mut caps.uses),
        }
    }
}

/// What a call's store holds: its sandbox, limits, grants and captured output.
/// Its deadline is `sandbox.timeout` from `started`, when the call was asked for: a call
/// that waited for a call thread has had that wait counted.
fn state_of(
    http: super::caps::http::LazyHttp,
    plugin: String,
    sandbox: Sandbox,
    step: String,
    output: OutputTail,
    started: Instant,
) -> StoreState {
    let mut wasi = WasiCtx::builder();
    // Deny by default, stated explicitly: no env, args, preopens, sockets or name lookups.
    wasi.stdout(output.clone())
        .stderr(output)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    StoreState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: Limiter {
            limit: sandbox.memory,
            in_use: 0,
        },
        caps: CapState {
            grants: sandbox.grants,
            kv: sandbox.kv,
            http,
            started,
            deadline: started + sandbox.timeout,
            store_waited: Default::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            uses: Vec::new(),
            denied: None,
            plugin,
            step,
            redactor: sandbox.redactor,
            log_bytes: 0,
        },
    }
}

/// A store for one call, with its limits and its state's deadline.
fn store_of(engine: &wasmtime::Engine, state: StoreState) -> Store<StoreState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // wasmtime would otherwise copy up to 128 MiB per transfer out of the guest.
    store.set_hostcall_fuel(super::limits::MAX_TRANSFER_BYTES);
    // At every epoch tick a running plugin yields, so calls sharing a thread (a fleet's
    // targets, more of them than there are call threads) take turns instead of running one
    // after another, and each one's own deadline is checked on time: past it, the call traps
    // (`Trap::Interrupt`, a timeout).
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |store| {
        Ok(if Instant::now() >= store.data().caps.deadline() {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Yield(1)
        })
    });
    store
}

/// Instantiates the plugin in `store` and makes the call.
async fn run(
    pre: &bindings::MedicPluginPre<StoreState>,
    exports: bindings::Exports,
    store: &mut Store<StoreState>,
    ctx: &bindings::types::Context,
    call: &Call,
) -> wasmtime::Result<Result<bindings::types::Outcome, bindings::types::PluginError>> {
    let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
    let (answer,) = match call {
        Call::Run { params } => {
            let params = values_to_wit(params);
            let run = exports.run(&mut *store, &instance)?;
            run.call_async(&mut *store, (ctx, &params)).await?
        }
        Call::Revert { params, outputs } => {
            let (params, outputs) = (values_to_wit(params), values_to_wit(outputs));
            let revert = exports.revert(&mut *store, &instance)?;
            revert
                .call_async(&mut *store, (ctx, &params, &outputs))
                .await?
        }
    };
    Ok(answer)
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the caller's thread: one call at a time gains nothing from a hand-off between
    /// threads, and pays for it. Inside a run, the call's store is dropped at the run's next
    /// wait ([`crate::later`]), so calls placed here must not overlap within a run.
    Here,
    /// On the host's call threads, one per core: calls made together (a fleet's targets)
    /// use every core instead of taking turns on one.
    Workers,
}

/// A failure outside a normal call (e.g. while describing itself), as one line.
pub(crate) fn describe_error(err: &wasmtime::Error, timeout: Duration, output: &str) -> String {
    classify(err, timeout, output).to_string()
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_extracted() {
        let out = "\nthread '<unnamed>' panicked at src/lib.rs:57:24:\nboom\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(out).unwrap(), "boom (at src/lib.rs:57:24)");
        assert!(panic_message("nothing here").is_none());
    }
}
