//! `medic serve`: a long-running process that owns the run store, runs the drill scheduler,
//! answers other `medic` commands on the data directory's socket, and exposes Prometheus
//! metrics.
//!
//! Signals: SIGHUP reloads the drill files (validated first: an invalid set keeps the old
//! one, and says why); SIGTERM or Ctrl-C stops scheduling, lets running drills reach a safe
//! point (they roll back what they did, as an interrupted run does), records, and exits.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::drill::load_dir_or_report as load;
use crate::drill::run::{Started, run_drill};
use crate::drill::scheduler::{Due, Scheduler, from_ms, jitter, to_ms};
use crate::executor::{Cancel, Event, Observer};
use crate::host::PluginHost;
use crate::store::drills::DrillRecord;
use crate::store::remote::Reply;
use crate::store::{ListFilter, RunStatus, Store, now_ms};

mod alerts;
mod cancel;
mod client;
mod interrupted;
mod metrics;

use client::*;
use metrics::*;

/// Requests from the socket that need the scheduler's state.
enum Control {
    RunNow {
        name: String,
        /// The client's own token, to cancel this run by ([`Control::CancelDrill`]).
        token: Option<String>,
        reply: oneshot::Sender<Result<DrillRecord, String>>,
    },
    List {
        reply: oneshot::Sender<serde_json::Value>,
    },
    Reload {
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Pause (`Some`) or resume (`None`) a drill's schedule.
    Pause {
        name: String,
        paused: Option<crate::store::drills::Paused>,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    /// `medic run` from another terminal: run it here, streaming its events back. Or a run
    /// started through the API by `caller` (a token), which no connection holds.
    Run {
        request: serde_json::Value,
        caller: Option<String>,
        reply: oneshot::Sender<Reply>,
    },
    /// An API caller's `resume` or `rollback` of a recorded run.
    PickUp {
        request: serde_json::Value,
        caller: String,
        reply: oneshot::Sender<Reply>,
    },
    /// Alerts delivered to the API.
    Alerts {
        request: serde_json::Value,
        reply: oneshot::Sender<Reply>,
    },
    /// A signed webhook delivery for one trigger.
    Hook {
        request: serde_json::Value,
        reply: oneshot::Sender<Reply>,
    },
    /// A person re-arms a trigger whose storm brake tripped.
    Rearm {
        name: String,
        by: String,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    /// The triggers and their state.
    Triggers {
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    /// That terminal's Ctrl-C: cancel (with the responder's answer to "roll back?") or abort.
    CancelRun {
        run_id: String,
        rollback: Option<bool>,
        abort: bool,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    /// The Ctrl-C of the terminal that asked for a drill (with the token it gave).
    CancelDrill {
        name: String,
        token: String,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
}

pub struct Config {
    pub drills_dir: PathBuf,
    /// `--triggers`: alert triggers.
    pub triggers_dir: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// `--listen`: the HTTP API.
    pub api: Option<crate::api::ApiConfig>,
}

struct Running {
    cancel: Cancel,
    /// The token of the client it was run for (`medic drill run` through serve), which may
    /// cancel it with that token.
    client: Option<String>,
    /// The run it has going on now, so that one can be cancelled by its id.
    run: cancel::DrillRun,
    task: tokio::task::JoinHandle<()>,
    started_ms: u64,
}

/// A drill run now for a client, who waits for its result and may cancel it with its token.
struct ForClient {
    reply: oneshot::Sender<Result<DrillRecord, String>>,
    token: Option<String>,
}

/// The scheduler's answer to a control message, or word that it is stopping.
async fn answer(rx: oneshot::Receiver<Result<serde_json::Value, String>>) -> Reply {
    Reply::One(
        rx.await
            .map_err(|_| "medic serve is stopping".to_owned())
            .and_then(|r| r),
    )
}

/// Runs until SIGTERM or Ctrl-C. `store` is held by this process.
pub async fn serve(host: PluginHost, store: Store, config: Config) -> Result<(), String> {
    let host = Arc::new(host);
    let drills = load(&host, &config.drills_dir).await?;
    warn_overlaps(&drills);
    let mut triggers = match &config.triggers_dir {
        Some(dir) => crate::trigger::load_dir_or_report(&host, dir).await?,
        None => Vec::new(),
    };

    let metrics = Arc::new(Mutex::new(Metrics::default()));
    {
        let mut m = metrics.lock().unwrap();
        for r in store
            .list(&ListFilter::default(), usize::MAX)
            .map_err(|e| e.to_string())?
        {
            if r.status != RunStatus::Running {
                *m.runs.entry(r.status.name().to_owned()).or_default() += 1;
            }
        }
        for r in store.drill_records(None, 0).map_err(|e| e.to_string())? {
            m.count_drill(&r);
        }
    }

    let (control_tx, mut control) = mpsc::channel::<Control>(16);
    let extension: crate::store::remote::Extension = {
        let tx = control_tx.clone();
        Arc::new(move |request: serde_json::Value| {
            let tx = tx.clone();
            Box::pin(async move {
                let op = request.get("op").and_then(|o| o.as_str()).unwrap_or("");
                match op {
                    "drill_run" => {
                        let name = request
                            .get("name")
                            .and_then(|n| n.as_str())
                            .unwrap_or("")
                            .to_owned();
                        let token = request
                            .get("token")
                            .and_then(|n| n.as_str())
                            .map(str::to_owned);
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::RunNow { name, token, reply }).await.ok()?;
                        Some(Reply::One(
                            rx.await
                                .map_err(|_| "medic serve is stopping".to_owned())
                                .and_then(|r| r)
                                .map(|r| serde_json::to_value(r).unwrap_or_default()),
                        ))
                    }
                    "drill_list" => {
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::List { reply }).await.ok()?;
                        Some(Reply::One(
                            rx.await.map_err(|_| "medic serve is stopping".to_owned()),
                        ))
                    }
                    "reload" => {
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::Reload { reply }).await.ok()?;
                        Some(Reply::One(
                            rx.await
                                .map_err(|_| "medic serve is stopping".to_owned())
                                .and_then(|r| r)
                                .map(|n| serde_json::json!({ "drills": n })),
                        ))
                    }
                    "drill_pause" | "drill_resume" => {
                        let name = request
                            .get("name")
                            .and_then(|n| n.as_str())
                            .unwrap_or("")
                            .to_owned();
                        // Who pauses: the API says which token; a socket client is this
                        // process's own user.
                        let by = request
                            .get("by")
                            .and_then(|n| n.as_str())
                            .map_or_else(crate::cli::who, str::to_owned);
                        let paused = (op == "drill_pause").then(|| crate::store::drills::Paused {
                            by,
                            reason: request
                                .get("reason")
                                .and_then(|r| r.as_str())
                                .unwrap_or("")
                                .trim()
                                .to_owned(),
                            at_ms: now_ms(),
                        });
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::Pause {
                            name,
                            paused,
                            reply,
                        })
                        .await
                        .ok()?;
                        Some(answer(rx).await)
                    }
                    "trigger_rearm" => {
                        let name = request
                            .get("name")
                            .and_then(|n| n.as_str())
                            .unwrap_or("")
                            .to_owned();
                        let by = request
                            .get("by")
                            .and_then(|n| n.as_str())
                            .map_or_else(crate::cli::who, str::to_owned);
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::Rearm { name, by, reply }).await.ok()?;
                        Some(answer(rx).await)
                    }
                    "trigger_list" => {
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::Triggers { reply }).await.ok()?;
                        Some(answer(rx).await)
                    }
                    "status" => Some(Reply::One(Ok(serde_json::json!({
                        "pid": std::process::id(), "serving": "medic serve",
                    })))),
                    "run" => {
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::Run {
                            request,
                            caller: None,
                            reply,
                        })
                        .await
                        .ok()?;
                        rx.await.ok()
                    }
                    "drill_cancel" => {
                        let field = |k: &str| {
                            request
                                .get(k)
                                .and_then(|n| n.as_str())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let (name, token) = (field("name"), field("token"));
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::CancelDrill { name, token, reply })
                            .await
                            .ok()?;
                        Some(answer(rx).await)
                    }
                    "cancel_run" => {
                        let run_id = request
                            .get("run_id")
                            .and_then(|n| n.as_str())
                            .unwrap_or("")
                            .to_owned();
                        let rollback = request.get("rollback").and_then(|r| r.as_bool());
                        let abort = request
                            .get("abort")
                            .and_then(|r| r.as_bool())
                            .unwrap_or(false);
                        let (reply, rx) = oneshot::channel();
                        tx.send(Control::CancelRun {
                            run_id,
                            rollback,
                            abort,
                            reply,
                        })
                        .await
                        .ok()?;
                        Some(answer(rx).await)
                    }
                    _ => None,
                }
            })
        })
    };
    let socket = crate::store::remote::serve_with(store.clone(), Some(extension.clone()))?;
    let api_task = match &config.api {
        None => None,
        Some(api) => {
            let ops = api_ops(extension, control_tx.clone());
            let (bound, task) = crate::api::start(api, store.clone(), host.clone(), ops).await?;
            let scheme = if api.tls.is_some() { "https" } else { "http" };
            println!("medic serve: API on {scheme}://{bound}/api/v1");
            Some(task)
        }
    };

    let metrics_task = match config.metrics {
        None => None,
        Some(addr) => {
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--metrics {addr}: metrics are served on loopback addresses only"
                ));
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--metrics {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            println!("medic serve: metrics on http://{bound}/metrics");
            let m = metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = m.clone();
                    async move {
                        let running = RUNNING.load(std::sync::atomic::Ordering::Relaxed);
                        (
                            [("content-type", "text/plain; version=0.0.4")],
                            m.lock().unwrap().render(running),
                        )
                    }
                }),
            );
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }))
        }
    };

    let now = Utc::now();
    // On a shared store the latest slots may be taken by the schedulers already running:
    // only those older than a lease are missed.
    let grace = if store.is_shared() {
        crate::store::postgres::LEASE
    } else {
        std::time::Duration::ZERO
    };
    let (mut scheduler, catch_up, missed) = Scheduler::new(drills, now, grace, |name| {
        store.drill_last_scheduled(name).ok().flatten().map(from_ms)
    });
    for m in missed {
        let record = DrillRecord::skipped(
            &m.drill,
            "schedule",
            Some(to_ms(m.last)),
            format!(
                "{} scheduled run{} missed while no scheduler ran (the last at {}); the drill's policy is to skip them",
                m.count,
                if m.count == 1 { " was" } else { "s were" },
                m.last.to_rfc3339()
            ),
        );
        // Recorded once, by the scheduler that takes the slot (a shared store has several).
        if !store
            .claim_drill_slot(&m.drill, to_ms(m.last))
            .unwrap_or(false)
        {
            continue;
        }
        if let Err(e) = store.put_drill(&record) {
            eprintln!("medic serve: recording missed runs of {}: {e}", m.drill);
        }
        metrics.lock().unwrap().count_drill(&record);
    }
    println!(
        "medic serve: pid {}, {} drill{} from {}, store {}",
        std::process::id(),
        scheduler.upcoming().len(),
        if scheduler.upcoming().len() == 1 {
            ""
        } else {
            "s"
        },
        config.drills_dir.display(),
        store.location()
    );

    let mut running: HashMap<String, Running> = HashMap::new();
    let mut client_runs: Vec<ClientRun> = Vec::new();
    let (done_tx, mut done) = mpsc::channel::<(String, DrillRecord)>(16);
    // `asked`: for a client, not the schedule.
    let start = |due: Due, running: &mut HashMap<String, Running>, asked: Option<ForClient>| {
        let name = due.drill.name.clone();
        let (reply, client) = asked.map(|a| (a.reply, a.token)).unzip();
        let client = client.flatten();
        // With a shared store several schedulers see the same slot: the one that takes it
        // runs it (or records why not), the others leave it.
        if reply.is_none() {
            match store.claim_drill_slot(&name, to_ms(due.scheduled)) {
                Ok(true) => {}
                Ok(false) => {
                    println!(
                        "medic serve: drill {name}: the run scheduled at {} is another scheduler's",
                        due.scheduled.to_rfc3339()
                    );
                    return;
                }
                Err(e) => {
                    // Unsure whether another took it: not running it is the safe side.
                    eprintln!("medic serve: drill {name}: cannot claim its scheduled run: {e}");
                    return;
                }
            }
        }
        if let Some(r) = running.get(&name) {
            // Overlapping its own previous run: skipped, and recorded as skipped.
            let record = DrillRecord::skipped(
                &name,
                if reply.is_some() {
                    "manual"
                } else {
                    "schedule"
                },
                reply.is_none().then(|| to_ms(due.scheduled)),
                format!(
                    "its previous run (started at {}) is still going",
                    from_ms(r.started_ms).to_rfc3339()
                ),
            );
            if let Err(e) = store.put_drill(&record) {
                eprintln!("medic serve: recording a skipped drill: {e}");
            }
            metrics.lock().unwrap().count_drill(&record);
            println!("medic serve: drill {name}: skipped, its previous run is still going");
            if let Some(reply) = reply {
                let _ = reply.send(Ok(record));
            }
            return;
        }
        if reply.is_none() {
            // A drill disabled in its file, like a paused one, still comes round: recorded
            // as skipped, saying why, so it stands out in its report rather than going quiet.
            if !due.drill.enabled {
                let record = DrillRecord::skipped(
                    &name,
                    "schedule",
                    Some(to_ms(due.scheduled)),
                    format!("disabled in {} (enabled = false)", due.drill.file.display()),
                );
                if let Err(e) = store.put_drill(&record) {
                    eprintln!("medic serve: recording a skipped drill: {e}");
                }
                metrics.lock().unwrap().count_drill(&record);
                println!("medic serve: drill {name}: skipped, disabled in its file");
                return;
            }
            // A paused drill's schedule still comes round: recorded as skipped, saying why,
            // so a paused drill stands out in its report rather than going quiet.
            if let Ok(Some(p)) = store.drill_paused(&name) {
                let record = DrillRecord::skipped(
                    &name,
                    "schedule",
                    Some(to_ms(due.scheduled)),
                    format!("paused by {}: {}", p.by, p.reason),
                );
                if let Err(e) = store.put_drill(&record) {
                    eprintln!("medic serve: recording a skipped drill: {e}");
                }
                metrics.lock().unwrap().count_drill(&record);
                println!("medic serve: drill {name}: skipped, paused by {}", p.by);
                return;
            }
        }
        let cancel = Cancel::new();
        let (host, store, metrics, done_tx) = (
            host.clone(),
            store.clone(),
            metrics.clone(),
            done_tx.clone(),
        );
        let c = cancel.clone();
        let run = cancel::DrillRun::default();
        let started = if reply.is_some() {
            Started::Manual
        } else {
            Started::Schedule {
                scheduled_ms: to_ms(due.scheduled),
            }
        };
        let wait = if reply.is_some() {
            Duration::ZERO
        } else {
            jitter(&due.drill)
        };
        RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The executor's futures are not Send (observers, prompts), so each drill gets a
        // blocking thread that drives it on this runtime.
        let handle = tokio::runtime::Handle::current();
        let watched = run.clone();
        let task = tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                if !c.sleep(wait).await {
                    RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err("medic serve is stopping".into()));
                    }
                    return;
                }
                println!("medic serve: drill {}: started", due.drill.name);
                let mut watch = Watch {
                    metrics: metrics.clone(),
                    drill: due.drill.name.clone(),
                    run: watched,
                };
                let record = run_drill(&host, &store, &due.drill, started, &mut watch, &c).await;
                metrics.lock().unwrap().count_drill(&record);
                RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(record.clone()));
                }
                let _ = done_tx.send((due.drill.name.clone(), record)).await;
            })
        });
        running.insert(
            name,
            Running {
                cancel,
                client,
                run,
                task,
                started_ms: now_ms(),
            },
        );
    };
    for due in catch_up {
        println!(
            "medic serve: drill {}: running once for the schedules missed while no scheduler ran",
            due.drill.name
        );
        start(due, &mut running, None);
    }

    let signal =
        |kind| tokio::signal::unix::signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
    // Runs whose process died are looked for at start (the first tick is at once), and on
    // a shared store, where other processes (other nodes) die too, as often as processes
    // renew their lease.
    let shared = store.is_shared();
    let mut recovery = tokio::time::interval(crate::store::postgres::HEARTBEAT);
    let mut recovered_once = false;
    loop {
        let wake = scheduler.next_wake();
        let sleep = match wake {
            Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            // Nothing scheduled: wake up now and then anyway (a reload may add drills).
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {
                for due in scheduler.take_due(Utc::now()) {
                    start(due, &mut running, None);
                }
            }
            _ = recovery.tick(), if shared || !recovered_once => {
                recovered_once = true;
                match store.recover() {
                    Ok(ids) if !ids.is_empty() => {
                        println!(
                            "medic serve: found {} run{} whose process died (gone, or its lease not renewed), now marked interrupted: {}",
                            ids.len(), if ids.len() == 1 { "" } else { "s" }, ids.join(", ")
                        );
                        interrupted::found(&host, &store, &metrics, ids, &mut client_runs).await;
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("medic serve: looking for interrupted runs: {e}"),
                }
            }
            Some((name, record)) = done.recv() => {
                running.remove(&name);
                println!("medic serve: drill {name}: {}{}", record.result.name(),
                    if record.reasons.is_empty() { String::new() } else { format!(": {}", record.reasons.join("; ")) });
            }
            Some(c) = control.recv() => match c {
                Control::RunNow { name, token, reply } => {
                    match scheduler.upcoming().into_iter().find(|(d, _)| d.name == name) {
                        Some((drill, _)) => {
                            let due = Due { drill: drill.clone(), scheduled: Utc::now(), catch_up: false };
                            start(due, &mut running, Some(ForClient { reply, token }));
                        }
                        None => {
                            let names: Vec<String> = scheduler.upcoming().iter().map(|(d, _)| d.name.clone()).collect();
                            let _ = reply.send(Err(format!("no drill `{name}` (drills: {})", names.join(", "))));
                        }
                    }
                }
                Control::List { reply } => {
                    let list: Vec<serde_json::Value> = scheduler.upcoming().into_iter().map(|(d, next)| serde_json::json!({
                        "name": d.name, "schedule": d.schedule.expression, "timezone": d.schedule.timezone.to_string(),
                        "next": next.map(|t| t.to_rfc3339()), "running": running.contains_key(&d.name),
                        "paused": store.drill_paused(&d.name).ok().flatten(),
                    })).collect();
                    let _ = reply.send(serde_json::Value::Array(list));
                }
                Control::Reload { reply } => {
                    let result = reload(&host, &config, &mut scheduler).await;
                    let _ = reply.send(result);
                }
                Control::Pause { name, paused, reply } => {
                    let known = scheduler.upcoming().iter().any(|(d, _)| d.name == name);
                    let answer = if !known {
                        Err(format!("no drill `{name}`"))
                    } else if paused.as_ref().is_some_and(|p| p.reason.is_empty()) {
                        Err("pausing a drill needs a reason".to_owned())
                    } else {
                        store
                            .set_drill_paused(&name, paused.as_ref())
                            .map(|()| serde_json::json!({ "name": name, "paused": paused }))
                            .map_err(|e| e.to_string())
                    };
                    if let Ok(v) = &answer {
                        println!("medic serve: drill {name}: {}", if v["paused"].is_null() { "resumed".to_owned() } else { format!("paused by {}", v["paused"]["by"].as_str().unwrap_or("?")) });
                    }
                    let _ = reply.send(answer);
                }
                Control::Run { request, caller, reply } => {
                    let _ = reply.send(client_run(&host, &store, &metrics, request, caller, &mut client_runs).await);
                }
                Control::PickUp { request, caller, reply } => {
                    let _ = reply.send(pick_up_run(&host, &store, &metrics, request, caller, &mut client_runs).await);
                }
                Control::Alerts { request, reply } => {
                    let ctx = alerts::Ctx { host: &host, store: &store, metrics: &metrics };
                    let _ = reply.send(alerts::receive(&ctx, &triggers, request, &mut client_runs).await);
                }
                Control::Hook { request, reply } => {
                    let ctx = alerts::Ctx { host: &host, store: &store, metrics: &metrics };
                    let answer = alerts::hook(&ctx, &triggers, request, &mut client_runs)
                        .await
                        .unwrap_or_else(|r| serde_json::json!({ "refused": r }));
                    let _ = reply.send(Reply::One(Ok(answer)));
                }
                Control::Rearm { name, by, reply } => {
                    let _ = reply.send(alerts::rearm(&store, &triggers, &name, &by));
                }
                Control::Triggers { reply } => {
                    let _ = reply.send(alerts::list(&store, &triggers));
                }
                Control::CancelRun { run_id, rollback, abort, reply } => {
                    let asked = cancel::Asked { run_id: &run_id, rollback, abort };
                    let _ = reply.send(cancel::cancel_run(&store, &mut client_runs, &running, asked));
                }
                Control::CancelDrill { name, token, reply } => {
                    let _ = reply.send(cancel::cancel_asked_drill(&store, &running, &name, &token));
                }
            },
            _ = hup.recv() => {
                let _ = reload(&host, &config, &mut scheduler).await;
                if let Some(dir) = &config.triggers_dir {
                    match crate::trigger::load_dir_or_report(&host, dir).await {
                        Ok(t) => {
                            println!("medic serve: reloaded {} trigger{} from {}", t.len(), if t.len() == 1 { "" } else { "s" }, dir.display());
                            triggers = t;
                        }
                        Err(why) => eprintln!("{why}\nmedic serve: trigger reload refused; the previous triggers stay"),
                    }
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }

    println!(
        "medic serve: stopping: no new drill starts; {} running drill{} finish at a safe point",
        running.len(),
        if running.len() == 1 { "" } else { "s" }
    );
    for r in running.values() {
        r.cancel.cancel();
    }
    for r in &client_runs {
        r.cancel.cancel();
    }
    for r in client_runs.drain(..) {
        let _ = r.task.await;
    }
    for (name, r) in running.drain() {
        if r.task.await.is_err() {
            eprintln!("medic serve: drill {name} ended abnormally");
        }
    }
    socket.abort();
    for t in [metrics_task, api_task].into_iter().flatten() {
        t.abort();
    }
    if let Err(e) = store.flush() {
        return Err(e.to_string());
    }
    println!("medic serve: stopped");
    Ok(())
}

fn warn_overlaps(drills: &[crate::drill::Drill]) {
    for w in crate::drill::overlaps(drills, Utc::now()) {
        eprintln!("medic serve: warning: {w}");
    }
}

/// Drills running now, for the metrics.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn reload(
    host: &PluginHost,
    config: &Config,
    scheduler: &mut Scheduler,
) -> Result<usize, String> {
    match load(host, &config.drills_dir).await {
        Ok(drills) => {
            warn_overlaps(&drills);
            let n = drills.len();
            scheduler.replace(drills, Utc::now());
            println!(
                "medic serve: reloaded {n} drill{} from {}",
                if n == 1 { "" } else { "s" },
                config.drills_dir.display()
            );
            Ok(n)
        }
        Err(why) => {
            eprintln!("{why}\nmedic serve: reload refused; the previous drills stay scheduled");
            Err(format!(
                "reload refused; the previous drills stay scheduled:\n{why}"
            ))
        }
    }
}
