//! Runs other processes ask for: `medic run` through the socket (its events streamed back,
//! cancelled when it goes away) and the API's runs (which belong to no connection).

use super::*;
use crate::store::recorder::Start;
use crate::store::remote::LineSender;

/// A run started by `medic run` through the socket.
pub(super) struct ClientRun {
    pub(super) run_id: String,
    pub(super) cancel: Cancel,
    /// The responder's answer to "roll back?"; none: the runbook's (yes).
    pub(super) rollback: Arc<Mutex<Option<bool>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// What `medic run` sends to run through `medic serve`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RunRequest {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) params: Vec<(String, String)>,
    pub(super) environment: Option<String>,
    pub(super) sourced: Vec<(String, String)>,
    pub(super) dry_run: bool,
    pub(super) approval: Option<crate::executor::Approval>,
    pub(super) trigger: crate::store::Trigger,
    pub(super) run_id: String,
    pub(super) lock_wait: Duration,
}

/// Sends each event to the client as it happens; a client gone cancels the run (it then
/// rolls back what it did, as an interrupted run does).
pub(super) struct Stream {
    pub(super) tx: LineSender,
    pub(super) cancel: Cancel,
    pub(super) metrics: Arc<Mutex<Metrics>>,
    /// Started through the API: nobody's going away cancels it.
    pub(super) detached: bool,
    /// Progress events (a fleet's targets, a gate's or retry's attempts) left out since the
    /// last line sent, because the client fell behind: it is told how many before the next
    /// line. Every other event is sent: it is what the client decides and exits on.
    pub(super) skipped: u64,
}

impl Stream {
    /// The client is gone: a run that belongs to it is cancelled (once).
    fn client_gone(&self) {
        if !self.detached && !self.cancel.is_cancelled() {
            println!("medic serve: the client of a run went away; cancelling it");
            self.cancel.cancel();
        }
    }
}

impl Observer for Stream {
    fn on_event(&mut self, event: &Event<'_>) {
        self.metrics.lock().unwrap().observe(event);
        if self.tx.is_closed() {
            // Nobody reads (a run started through the API, once started; a client gone):
            // no line is made for nobody (a large fleet's thousands of them).
            self.client_gone();
            return;
        }
        if event.is_progress() && self.tx.is_behind() {
            self.skipped += 1;
            return;
        }
        if self.skipped > 0 {
            let _ = self.tx.send(serde_json::json!({ "skipped": self.skipped }));
            self.skipped = 0;
        }
        let owned = crate::executor::OwnedEvent::from_event(event);
        if self.tx.send(serde_json::json!({ "event": owned })).is_err() {
            self.client_gone();
        }
    }
}

/// A run id a client proposes: a ULID as Medic writes them (lowercase), not recorded yet.
pub(super) fn fresh_run_id(store: &Store, id: &str) -> Result<(), String> {
    let well_formed = id.len() == 26
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        && ulid::Ulid::from_string(id).is_ok();
    if !well_formed {
        return Err(format!("`{id}` is not a run id"));
    }
    match store.record(id) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(format!("run {id} exists already: a new run needs a new id")),
        Err(e) => Err(e.to_string()),
    }
}

/// The API's operations: the socket's, `api_run`, which starts a run for the token in its
/// `caller`, and `api_pick_up`, which resumes or rolls back a recorded run for it (ops the
/// socket does not offer: its clients are this user, not tokens).
pub(super) fn api_ops(
    socket: crate::store::remote::Extension,
    tx: mpsc::Sender<Control>,
) -> crate::store::remote::Extension {
    Arc::new(move |mut request: serde_json::Value| {
        let (socket, tx) = (socket.clone(), tx.clone());
        Box::pin(async move {
            let op = request.get("op").and_then(|o| o.as_str()).unwrap_or("");
            if op == "api_alerts" || op == "api_hook" {
                let (reply, rx) = oneshot::channel();
                let control = if op == "api_hook" {
                    Control::Hook { request, reply }
                } else {
                    Control::Alerts { request, reply }
                };
                tx.send(control).await.ok()?;
                return rx.await.ok();
            }
            if op != "api_run" && op != "api_pick_up" {
                return socket(request).await;
            }
            let pick_up = op == "api_pick_up";
            let caller = request
                .get_mut("caller")
                .map(serde_json::Value::take)
                .and_then(|c| c.as_str().map(str::to_owned))?;
            let (reply, rx) = oneshot::channel();
            let control = if pick_up {
                Control::PickUp {
                    request,
                    caller,
                    reply,
                }
            } else {
                Control::Run {
                    request,
                    caller: Some(caller),
                    reply,
                }
            };
            tx.send(control).await.ok()?;
            rx.await.ok()
        })
    })
}

/// Plans the client's runbook (with the values its sources had there) and starts it. A run
/// started through the API (`caller`) belongs to no connection: it goes on when the caller
/// stops listening.
pub(super) async fn client_run(
    host: &Arc<PluginHost>,
    store: &Store,
    metrics: &Arc<Mutex<Metrics>>,
    request: serde_json::Value,
    caller: Option<String>,
    runs: &mut Vec<ClientRun>,
) -> Reply {
    runs.retain(|r| !r.task.is_finished());
    let mut req: RunRequest = match serde_json::from_value(request) {
        Ok(r) => r,
        Err(e) => return Reply::One(Err(format!("bad run request: {e}"))),
    };
    // Nothing the client says about who or which run is taken on trust: the id must be a
    // fresh run id (never one already recorded), and who started the run is this process's
    // user (the socket only answers its own user) on this host.
    if let Err(e) = fresh_run_id(store, &req.run_id) {
        return Reply::One(Err(e));
    }
    let detached = caller.is_some();
    req.trigger = match caller {
        Some(caller) => crate::store::Trigger::Api { caller },
        None => crate::store::Trigger::cli(),
    };
    if let Some(a) = &mut req.approval {
        a.by = match &req.trigger {
            crate::store::Trigger::Api { caller } => caller.clone(),
            _ => crate::cli::who(),
        };
        a.at = std::time::SystemTime::now();
    }
    let opts = crate::runbook::PlanOptions {
        params: req.params.clone(),
        environment: req.environment.clone(),
        defer_secrets: false,
        sourced: Some(req.sourced.clone()),
    };
    let plan = match plan_or_report(host, &req.path, &req.text, &opts).await {
        Ok(p) => p,
        Err(report) => return Reply::One(Err(report)),
    };
    if plan.environment.protected
        && req
            .approval
            .as_ref()
            .is_none_or(|a| a.reason.trim().is_empty())
    {
        return Reply::One(Err(format!(
            "environment `{}` is protected: running there needs an approval (--approve \"REASON\")",
            plan.environment.name
        )));
    }
    launch(
        host,
        store,
        metrics,
        Launch {
            plan,
            trigger: req.trigger,
            run_id: req.run_id,
            dry_run: req.dry_run,
            approval: req.approval,
            lock_wait: req.lock_wait,
            start: Start::New,
            resume: None,
            detached,
        },
        runs,
    )
}

/// Plans a runbook's text, or renders every mistake as `medic validate` prints them.
pub(super) async fn plan_or_report(
    host: &PluginHost,
    path: &std::path::Path,
    text: &str,
    opts: &crate::runbook::PlanOptions,
) -> Result<crate::runbook::Plan, String> {
    let src = crate::runbook::Source { path, text };
    crate::runbook::plan(host, &src, opts).await.map_err(|d| {
        crate::runbook::Report {
            path: &path.display().to_string(),
            text,
            diagnostics: &d,
        }
        .to_string()
    })
}

/// A planned run, ready to start in the background.
pub(super) struct Launch {
    pub(super) plan: crate::runbook::Plan,
    pub(super) trigger: crate::store::Trigger,
    pub(super) run_id: String,
    pub(super) dry_run: bool,
    pub(super) approval: Option<crate::executor::Approval>,
    pub(super) lock_wait: Duration,
    pub(super) start: Start,
    pub(super) resume: Option<crate::executor::Resume>,
    /// Started through the API: it belongs to no connection.
    pub(super) detached: bool,
}

/// Starts the run in the background, its events streamed to the returned receiver (which
/// ends with `done` or `error`).
pub(super) fn launch(
    host: &Arc<PluginHost>,
    store: &Store,
    metrics: &Arc<Mutex<Metrics>>,
    l: Launch,
    runs: &mut Vec<ClientRun>,
) -> Reply {
    let (tx, rx) = crate::store::remote::lines();
    let cancel = Cancel::new();
    let c = cancel.clone();
    let rollback = Arc::new(Mutex::new(None));
    let answer = rollback.clone();
    let run_id = l.run_id.clone();
    let (host, store, metrics) = (host.clone(), store.clone(), metrics.clone());
    let handle = tokio::runtime::Handle::current();
    let picked_up = match &l.start {
        Start::New => String::new(),
        Start::Resumed { mode, by, .. } => format!(" ({mode} by {by})"),
    };
    println!(
        "medic serve: run {} of {} for {}{picked_up}",
        l.run_id, l.plan.name, l.trigger
    );
    let task = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let mut stream = Stream {
                tx: tx.clone(),
                cancel: c.clone(),
                metrics,
                detached: l.detached,
                skipped: 0,
            };
            let spec = crate::drill::run::RunSpec {
                dry_run: l.dry_run,
                approval: l.approval,
                lock_wait: l.lock_wait,
                confirm_rollback: Box::new(move || answer.lock().unwrap().unwrap_or(true)),
                start: l.start,
                resume: l.resume,
                ..crate::drill::run::RunSpec::new(&l.plan, l.trigger, l.run_id)
            };
            let end =
                match crate::drill::run::recorded_run(&host, &store, spec, &mut stream, &c).await {
                    Ok((report, _)) => serde_json::json!({
                        "done": { "run_id": report.run_id, "store": store.location() }
                    }),
                    Err(
                        crate::drill::run::NotRun::Skipped(why)
                        | crate::drill::run::NotRun::Failed(why),
                    ) => {
                        serde_json::json!({ "error": why })
                    }
                };
            let _ = tx.send(end);
        })
    });
    runs.push(ClientRun {
        run_id,
        cancel,
        rollback,
        task,
    });
    Reply::Stream(rx)
}

/// What the API asks to pick up: run `run_id` again, for `caller`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct PickUpRequest {
    run_id: String,
    /// `resume` or `rollback`.
    mode: String,
    /// An approval given now (protected environments), or empty.
    #[serde(default)]
    reason: String,
    /// See [`crate::pickup::check_plugins`].
    #[serde(default)]
    accept_changed_plugins: bool,
}

/// Picks a recorded run up again, for the API's `caller`: the same checks as
/// `medic runs resume|rollback`, decided here in the loop that owns the runs, so two
/// requests for one run cannot both start it.
pub(super) async fn pick_up_run(
    host: &Arc<PluginHost>,
    store: &Store,
    metrics: &Arc<Mutex<Metrics>>,
    request: serde_json::Value,
    caller: String,
    runs: &mut Vec<ClientRun>,
) -> Reply {
    runs.retain(|r| !r.task.is_finished());
    let req: PickUpRequest = match serde_json::from_value(request) {
        Ok(r) => r,
        Err(e) => return Reply::One(Err(format!("bad pick-up request: {e}"))),
    };
    if runs.iter().any(|r| r.run_id == req.run_id) {
        return Reply::One(Err(format!("run {} is running here now", req.run_id)));
    }
    let record = match store.record(&req.run_id) {
        Ok(Some(r)) => r,
        Ok(None) => return Reply::One(Err(format!("no run {}", req.run_id))),
        Err(e) => return Reply::One(Err(e.to_string())),
    };
    let pick = match crate::pickup::prepare(store, &record, req.mode == "rollback") {
        Ok(p) => p,
        Err(r) => return Reply::One(Err(r.to_string())),
    };
    let plan = match plan_or_report(host, &pick.path, &pick.text, &pick.options).await {
        Ok(p) => p,
        Err(report) => return Reply::One(Err(report)),
    };
    pick_up_planned(
        host,
        store,
        metrics,
        Planned {
            record,
            pick,
            plan,
            reason: req.reason.trim(),
            caller,
            accept_changed_plugins: req.accept_changed_plugins,
        },
        runs,
    )
}

/// A recorded run, read and planned again, and who picks it up why.
pub(super) struct Planned<'a> {
    pub(super) record: crate::store::RunRecord,
    pub(super) pick: crate::pickup::PickUp,
    pub(super) plan: crate::runbook::Plan,
    /// An approval given now (protected environments), or empty.
    pub(super) reason: &'a str,
    pub(super) caller: String,
    /// See [`crate::pickup::check_plugins`].
    pub(super) accept_changed_plugins: bool,
}

/// Starts a planned pick-up: the approval and journal checks of `medic runs
/// resume|rollback`, then the run, detached from whoever asked.
pub(super) fn pick_up_planned(
    host: &Arc<PluginHost>,
    store: &Store,
    metrics: &Arc<Mutex<Metrics>>,
    p: Planned<'_>,
    runs: &mut Vec<ClientRun>,
) -> Reply {
    let Planned {
        record,
        pick,
        plan,
        reason,
        caller,
        accept_changed_plugins,
    } = p;
    if let Err(r) = crate::pickup::check_approval(&plan, &record, !reason.is_empty()) {
        return Reply::One(Err(r.to_string()));
    }
    let changed_plugins =
        match crate::pickup::check_plugins(&plan, &record, pick.mode, accept_changed_plugins) {
            Ok(changed) => changed,
            Err(r) => return Reply::One(Err(r.to_string())),
        };
    let resume = match crate::pickup::state(store, &record, pick.rollback_only) {
        Ok(r) => r,
        Err(r) => return Reply::One(Err(r.to_string())),
    };
    let approval = (!reason.is_empty())
        .then(|| crate::executor::Approval {
            by: caller.clone(),
            reason: reason.to_owned(),
            at: std::time::SystemTime::now(),
        })
        .or_else(|| record.approval.clone());
    launch(
        host,
        store,
        metrics,
        Launch {
            plan,
            trigger: record.trigger.clone(),
            run_id: record.run_id.clone(),
            dry_run: record.dry_run,
            approval,
            lock_wait: Duration::ZERO,
            start: Start::Resumed {
                mode: pick.mode.to_owned(),
                by: caller,
                record: Box::new(record),
                changed_plugins,
            },
            resume: Some(resume),
            detached: true,
        },
        runs,
    )
}
