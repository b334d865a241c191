//! Alerts delivered to `medic serve`: each goes through the triggers that match it, and each
//! decision is recorded. A run a trigger starts is watched to its end: its Alertmanager
//! silence (when declared) lives exactly as long as the run, and a run that could not fix
//! the fault, or a storm brake that trips, is escalated so that people are paged.

use super::*;
use crate::store::recorder::Start;
use crate::store::triggers::AlertRecord;
use crate::trigger::policy::{Decision, ResolvedAction, RunView};
use crate::trigger::{Alert, Protected, Source, Trigger};

/// An Alertmanager delivery, as the API passes it on.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Delivery {
    pub(super) alerts: Vec<Alert>,
    /// Who delivered it (`token:NAME`).
    pub(super) via: String,
    /// The delivering token: a run starts only in an environment it may act in.
    pub(super) token: Option<crate::store::tokens::Token>,
}

/// What `medic serve` needs to act on alerts.
pub(super) struct Ctx<'a> {
    pub(super) host: &'a Arc<PluginHost>,
    pub(super) store: &'a Store,
    pub(super) metrics: &'a Arc<Mutex<Metrics>>,
}

/// How long a silence lasts at most when its run never reports an end (the run's watcher
/// expires it as soon as the run ends).
const SILENCE_CAP: Duration = Duration::from_secs(4 * 3600);

fn view(store: &Store, runs: &[ClientRun], run_id: &str) -> RunView {
    let here = runs
        .iter()
        .any(|r| r.run_id == run_id && !r.task.is_finished());
    // Under way but not begun: no step has started (it waits for its lock or an approval).
    let begun = || {
        store.journal(run_id).map_or(true, |j| {
            j.iter()
                .any(|e| matches!(e.event, crate::store::JournalEvent::StepStarted { .. }))
        })
    };
    match store.record(run_id) {
        Ok(Some(r)) if r.status == RunStatus::Running => {
            if begun() {
                RunView::Running
            } else {
                RunView::Queued
            }
        }
        Ok(Some(r)) => RunView::Ended {
            at_ms: r.ended_ms.unwrap_or(r.started_ms),
        },
        // Started here and not recorded yet: it waits for its lock.
        _ if here => RunView::Queued,
        _ => RunView::Unknown,
    }
}

/// Decides and acts for every alert of a delivery; the answer lists each decision.
pub(super) async fn receive(
    ctx: &Ctx<'_>,
    triggers: &[Trigger],
    request: serde_json::Value,
    runs: &mut Vec<ClientRun>,
) -> Reply {
    runs.retain(|r| !r.task.is_finished());
    let delivery: Delivery = match serde_json::from_value(request) {
        Ok(d) => d,
        Err(e) => return Reply::One(Err(format!("bad alert delivery: {e}"))),
    };
    let mut answers = Vec::new();
    for alert in &delivery.alerts {
        let matching: Vec<&Trigger> = triggers
            .iter()
            .filter(|t| t.source == Source::Alertmanager && t.matches(alert))
            .collect();
        if matching.is_empty() {
            answers.push(serde_json::json!({
                "alert": alert.name(), "fingerprint": alert.fingerprint, "trigger": null,
                "decision": "unmatched", "detail": "no trigger matches its labels",
            }));
            continue;
        }
        for t in matching {
            let answer = match decide(ctx, t, alert, &delivery, runs).await {
                Ok(r) => r,
                Err(e) => return Reply::One(Err(e)),
            };
            answers.push(serde_json::to_value(&answer).expect("serialize"));
        }
    }
    Reply::One(Ok(serde_json::json!({ "decisions": answers })))
}

/// A signed JSON delivery for one webhook trigger, as the API passes it on.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Hook {
    trigger: String,
    /// The body, as sent (the signature is over these bytes).
    body: String,
    signature: String,
}

/// Why a webhook delivery is refused before any decision.
#[derive(serde::Serialize)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub(super) enum HookRefused {
    NoSuchTrigger(String),
    BadSignature(String),
    /// The key is missing from medic serve's environment.
    NoKey(String),
    Malformed(String),
}

/// A webhook trigger's delivery: checked against its key, its fields made labels, then
/// decided as an alert is.
pub(super) async fn hook(
    ctx: &Ctx<'_>,
    triggers: &[Trigger],
    request: serde_json::Value,
    runs: &mut Vec<ClientRun>,
) -> Result<serde_json::Value, HookRefused> {
    runs.retain(|r| !r.task.is_finished());
    let h: Hook = serde_json::from_value(request)
        .map_err(|e| HookRefused::Malformed(format!("bad hook delivery: {e}")))?;
    let Some((t, key_env)) = triggers.iter().find_map(|t| match &t.source {
        Source::Webhook { secret_env } if t.name == h.trigger => Some((t, secret_env)),
        _ => None,
    }) else {
        return Err(HookRefused::NoSuchTrigger(format!(
            "no webhook trigger `{}`",
            h.trigger
        )));
    };
    let key = std::env::var(key_env).unwrap_or_default();
    if key.is_empty() {
        return Err(HookRefused::NoKey(format!(
            "trigger `{}`: its key ${key_env} is not set in medic serve's environment",
            t.name
        )));
    }
    if !crate::trigger::webhook::verify(key.as_bytes(), h.body.as_bytes(), &h.signature) {
        return Err(HookRefused::BadSignature(format!(
            "trigger `{}`: the body's signature does not match its key",
            t.name
        )));
    }
    let value: serde_json::Value = serde_json::from_str(&h.body)
        .map_err(|e| HookRefused::Malformed(format!("the body is not JSON: {e}")))?;
    let labels = crate::trigger::webhook::flatten(&value);
    let alert = Alert {
        status: "firing".into(),
        fingerprint: crate::trigger::alert::fingerprint(&labels),
        labels,
        annotations: Default::default(),
        starts_at: Utc::now().to_rfc3339(),
        ends_at: String::new(),
        generator_url: String::new(),
    };
    if !t.matches(&alert) {
        let record = AlertRecord {
            alert: t.name.clone(),
            decision: "unmatched".into(),
            detail: "the body's fields do not match the trigger".into(),
            ..record_of(t, &alert, now_ms())
        };
        ctx.store
            .record_alert(&record)
            .map_err(|e| HookRefused::Malformed(e.to_string()))?;
        return Ok(serde_json::json!({ "decisions": [record] }));
    }
    let delivery = Delivery {
        alerts: Vec::new(),
        via: format!("webhook:{}", t.name),
        token: None,
    };
    let record = decide(ctx, t, &alert, &delivery, runs)
        .await
        .map_err(HookRefused::Malformed)?;
    Ok(serde_json::json!({ "decisions": [record] }))
}

/// The record of `alert` at trigger `t`, its decision still to be said.
fn record_of(t: &Trigger, alert: &Alert, at_ms: u64) -> AlertRecord {
    AlertRecord {
        at_ms,
        trigger: t.name.clone(),
        alert: alert.name().to_owned(),
        fingerprint: alert.fingerprint.clone(),
        status: alert.status.clone(),
        labels: alert.labels.clone(),
        starts_at_ms: alert.starts_at_ms(),
        decision: String::new(),
        run_id: None,
        detail: String::new(),
    }
}

async fn decide(
    ctx: &Ctx<'_>,
    t: &Trigger,
    alert: &Alert,
    delivery: &Delivery,
    runs: &mut Vec<ClientRun>,
) -> Result<AlertRecord, String> {
    let store = ctx.store;
    // Other nodes sharing the store decide this trigger's alerts after this one has written
    // what it decided (Alertmanager in HA sends each alert to every node).
    let _held = store.hold_trigger(&t.name).map_err(|e| e.to_string())?;
    let now = now_ms();
    let mut state = store.trigger_state(&t.name).map_err(|e| e.to_string())?;
    state.forget_old(now, t.policy.cooldown + Duration::from_secs(3600), &|id| {
        view(store, runs, id)
    });
    let decision = t
        .policy
        .decide(&mut state, alert, now, &|id| view(store, runs, id));
    let mut record = record_of(t, alert, now);
    match decision {
        Decision::Start { group } => match start(ctx, t, alert, delivery, runs).await {
            Ok(run_id) => {
                state.started(&group, &run_id, now);
                record.decision = "start".into();
                record.detail = format!("started run {run_id} for group {group}");
                record.run_id = Some(run_id);
            }
            Err(why) => {
                record.decision = "refused".into();
                record.detail = why;
            }
        },
        Decision::Attached { group, run_id } => {
            record.decision = "attached".into();
            record.detail = format!("run {run_id} for group {group} is under way");
            record.run_id = Some(run_id);
        }
        Decision::CooledDown {
            group,
            run_id,
            until_ms,
        } => {
            record.decision = "cooled_down".into();
            record.detail = format!(
                "group {group}'s last run {run_id} ended less than the cooldown ago: no new run before {}",
                chrono::DateTime::from_timestamp_millis(until_ms as i64)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            );
            record.run_id = Some(run_id);
        }
        Decision::Braked { reason, tripped } => {
            record.decision = "braked".into();
            record.detail = reason.clone();
            if tripped {
                println!(
                    "medic serve: trigger {}: storm brake tripped: {reason}",
                    t.name
                );
                escalate(
                    ctx,
                    t,
                    alert,
                    &format!("storm brake tripped: {reason}"),
                    None,
                    Tell::Escalation,
                );
            }
        }
        Decision::Resolved {
            group,
            run_id,
            action,
        } => {
            record.decision = "resolved".into();
            record.detail = match (&run_id, action) {
                (Some(id), ResolvedAction::Drop | ResolvedAction::Cancel) => {
                    let found = runs.iter().find(|r| &r.run_id == id);
                    if let Some(r) = found {
                        r.cancel.cancel();
                    }
                    format!(
                        "the alert resolved: run {id} for group {group} {}",
                        if action == ResolvedAction::Drop {
                            "had not begun and is dropped"
                        } else {
                            "is cancelled, as the trigger declares"
                        }
                    )
                }
                (Some(id), _) => {
                    format!("the alert resolved: run {id} for group {group} goes on to its verdict")
                }
                (None, _) => "the alert resolved; no run of its group is under way".into(),
            };
            record.run_id = run_id;
        }
    }
    store
        .set_trigger_state(&t.name, &state)
        .map_err(|e| e.to_string())?;
    store.record_alert(&record).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    ctx.metrics
        .lock()
        .unwrap()
        .count_alert(&t.name, &record.decision);
    Ok(record)
}

/// Plans the trigger's runbook for `alert` and starts it; the error says why not.
async fn start(
    ctx: &Ctx<'_>,
    t: &Trigger,
    alert: &Alert,
    delivery: &Delivery,
    runs: &mut Vec<ClientRun>,
) -> Result<String, String> {
    let opts = t.render(alert)?;
    let text = crate::input::read_text(&t.runbook, crate::input::MAX_RUNBOOK_BYTES)
        .map_err(|e| format!("cannot read runbook {}: {e}", t.runbook.display()))?;
    let plan = plan_or_report(ctx.host, &t.runbook, &text, &opts).await?;
    let env = &plan.environment;
    if let Some(token) = &delivery.token
        && !token.allows_env(&env.name, env.protected)
    {
        return Err(format!(
            "token `{}` may not act in environment `{}`",
            token.name, env.name
        ));
    }
    if env.protected {
        match t.protected {
            Protected::Refuse => {
                return Err(format!(
                    "environment `{}` is protected and trigger `{}` refuses to run there",
                    env.name, t.name
                ));
            }
            Protected::Approve { .. } => {}
        }
    }
    let run_id = crate::executor::new_run_id();
    let mut plan = plan;
    if let (true, Protected::Approve { timeout }) = (plan.environment.protected, t.protected) {
        // Nothing acts before a person says yes: the first step waits for the approval
        // (the runbook's own approval on it, if any, is the one asked).
        let first = &mut plan.steps[0];
        if first.approval.is_none() {
            first.approval = Some(crate::runbook::plan::ApprovalGate {
                timeout,
                prompt: format!(
                    "alert {} (trigger {}) asks to run {} in protected environment {}: approve?",
                    alert.name(),
                    t.name,
                    plan.name,
                    plan.environment.name
                ),
            });
        }
        escalate(
            ctx,
            t,
            alert,
            &format!(
                "run {run_id} waits for an approval in protected environment {} (within {}): medic approve {run_id} --reason \"...\"",
                plan.environment.name,
                humantime::format_duration(timeout)
            ),
            Some(&run_id),
            Tell::ApprovalRequest,
        );
    }
    let trigger = crate::store::Trigger::Alert {
        trigger: t.name.clone(),
        alert: alert.name().to_owned(),
        fingerprint: alert.fingerprint.clone(),
        labels: alert.labels.clone(),
        starts_at_ms: alert.starts_at_ms(),
        via: delivery.via.clone(),
    };
    let reply = launch(
        ctx.host,
        ctx.store,
        ctx.metrics,
        Launch {
            plan,
            trigger,
            run_id: run_id.clone(),
            dry_run: false,
            approval: None,
            lock_wait: Duration::ZERO,
            start: Start::New,
            resume: None,
            detached: true,
        },
        runs,
    );
    let Reply::Stream(mut events) = reply else {
        return Err("the run did not start".into());
    };
    // Its first event says it started (recorded, its lock taken) or why not: a run that did
    // not start must not hold its group.
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(first)) => {
            if let Some(why) = first.get("error").and_then(|w| w.as_str()) {
                return Err(format!("the run did not start: {why}"));
            }
        }
        Ok(None) => return Err("the run ended before it started".into()),
        Err(_) => {}
    }
    let watch = Watch {
        host: ctx.host.clone(),
        store: ctx.store.clone(),
        metrics: ctx.metrics.clone(),
        trigger: t.clone(),
        alert: alert.clone(),
        run_id: run_id.clone(),
    };
    tokio::spawn(watch.follow(events));
    Ok(run_id)
}

/// A triggered run followed to its end, for its silence and escalation.
struct Watch {
    host: Arc<PluginHost>,
    store: Store,
    metrics: Arc<Mutex<Metrics>>,
    trigger: Trigger,
    alert: Alert,
    run_id: String,
}

impl Watch {
    async fn follow(self, mut events: crate::store::remote::Lines) {
        let silence = match &self.trigger.silence {
            None => None,
            Some(am) => {
                match create_silence(am, &self.alert, &self.trigger.name, &self.run_id).await {
                    Ok(id) => {
                        println!(
                            "medic serve: run {}: alert {} silenced in {am} ({id})",
                            self.run_id,
                            self.alert.name()
                        );
                        Some((am.clone(), id))
                    }
                    Err(e) => {
                        eprintln!(
                            "medic serve: run {}: cannot silence the alert: {e}",
                            self.run_id
                        );
                        None
                    }
                }
            }
        };
        let mut failed_to_start = None;
        while let Some(e) = events.recv().await {
            if let Some(why) = e.get("error").and_then(|w| w.as_str()) {
                failed_to_start = Some(why.to_owned());
                break;
            }
            if e.get("done").is_some() {
                break;
            }
        }
        if let Some((am, id)) = &silence
            && let Err(e) = expire_silence(am, id).await
        {
            eprintln!(
                "medic serve: run {}: cannot expire silence {id}: {e}",
                self.run_id
            );
        }
        let record = self.store.record(&self.run_id).ok().flatten();
        if let Some(r) = &record {
            let fixed = (r.status == RunStatus::Succeeded)
                .then_some(r.ended_ms)
                .flatten();
            self.metrics.lock().unwrap().observe_trigger(
                &self.trigger.name,
                self.alert.starts_at_ms(),
                r.started_ms,
                fixed,
            );
        }
        let status = record.map(|r| r.status);
        let why = match (failed_to_start, status) {
            (Some(why), _) => Some(format!("run {} did not start: {why}", self.run_id)),
            (
                None,
                Some(
                    s @ (RunStatus::Failed
                    | RunStatus::RolledBack
                    | RunStatus::RollbackFailed
                    | RunStatus::Interrupted),
                ),
            ) => Some(format!(
                "run {} ended {}: the fault is still there",
                self.run_id,
                s.name()
            )),
            _ => None,
        };
        if let Some(why) = why {
            let ctx = Ctx {
                host: &self.host,
                store: &self.store,
                metrics: &self.metrics,
            };
            escalate(
                &ctx,
                &self.trigger,
                &self.alert,
                &why,
                Some(&self.run_id),
                Tell::Escalation,
            );
        }
    }
}

/// Why people are told.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tell {
    /// Automation could not fix it (or the storm brake tripped): page people.
    Escalation,
    /// A run waits for their approval.
    ApprovalRequest,
}

impl Tell {
    fn via(self) -> &'static str {
        match self {
            Tell::Escalation => "escalation",
            Tell::ApprovalRequest => "approval-request",
        }
    }
}

/// Runs the trigger's escalation runbook (in the background) to tell people, or says there
/// is none.
fn escalate(
    ctx: &Ctx<'_>,
    t: &Trigger,
    alert: &Alert,
    why: &str,
    run_id: Option<&str>,
    tell: Tell,
) {
    if tell == Tell::Escalation {
        ctx.metrics
            .lock()
            .unwrap()
            .count_alert(&t.name, "escalated");
    }
    let Some(hook) = t.escalate.clone() else {
        eprintln!(
            "medic serve: trigger {}: {why}; it declares no escalation",
            t.name
        );
        return;
    };
    eprintln!("medic serve: trigger {}: escalating: {why}", t.name);
    let (host, store) = (ctx.host.clone(), ctx.store.clone());
    let mut params = hook.params.clone();
    for (k, v) in [
        ("trigger", t.name.clone()),
        ("alert", alert.name().to_owned()),
        ("reason", why.to_owned()),
        ("run", run_id.unwrap_or_default().to_owned()),
    ] {
        params.push((k.to_owned(), v));
    }
    let trigger = crate::store::Trigger::Alert {
        trigger: t.name.clone(),
        alert: alert.name().to_owned(),
        fingerprint: alert.fingerprint.clone(),
        labels: alert.labels.clone(),
        starts_at_ms: alert.starts_at_ms(),
        via: tell.via().into(),
    };
    let name = t.name.clone();
    // A run's future is not Send (plugin calls hold the sandbox): it gets a thread, as a
    // client's run does.
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let opts = crate::runbook::PlanOptions {
                params,
                environment: None,
                defer_secrets: false,
                sourced: None,
            };
            let plan = match crate::drill::plan_hook(&host, &hook.runbook, &opts).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("medic serve: trigger {name}: cannot escalate: {e}");
                    return;
                }
            };
            let spec = crate::drill::run::RunSpec {
                notification: true,
                ..crate::drill::run::RunSpec::new(&plan, trigger, crate::executor::new_run_id())
            };
            // Somebody must hear of it even while medic serve stops: only an abort stops it.
            let cancel = Cancel::new();
            let mut quiet = |_: &Event<'_>| {};
            match crate::drill::run::recorded_run(&host, &store, spec, &mut quiet, &cancel).await {
                Ok((report, _)) => println!(
                    "medic serve: trigger {name}: escalation run {} ended {}",
                    report.run_id,
                    RunStatus::from_outcome(report.outcome).name()
                ),
                Err(
                    crate::drill::run::NotRun::Skipped(e) | crate::drill::run::NotRun::Failed(e),
                ) => eprintln!("medic serve: trigger {name}: cannot escalate: {e}"),
            }
        })
    });
}

fn http() -> Result<reqwest::Client, String> {
    crate::host::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// A silence of the alert's exact label set, for as long as its run goes; its id.
async fn create_silence(
    alertmanager: &str,
    alert: &Alert,
    trigger: &str,
    run_id: &str,
) -> Result<String, String> {
    let matchers: Vec<serde_json::Value> = alert
        .labels
        .iter()
        .map(|(k, v)| serde_json::json!({ "name": k, "value": v, "isRegex": false, "isEqual": true }))
        .collect();
    let now = Utc::now();
    let body = serde_json::json!({
        "matchers": matchers,
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + SILENCE_CAP).to_rfc3339(),
        "createdBy": format!("medic trigger {trigger}"),
        "comment": format!("medic run {run_id} is fixing this; the silence ends with the run"),
    });
    let r = http()?
        .post(format!("{alertmanager}/api/v2/silences"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let answer: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("Alertmanager answered {status}: {answer}"));
    }
    answer["silenceID"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("Alertmanager answered without a silence id: {answer}"))
}

async fn expire_silence(alertmanager: &str, id: &str) -> Result<(), String> {
    let r = http()?
        .delete(format!("{alertmanager}/api/v2/silence/{id}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("Alertmanager answered {}", r.status()))
    }
}

/// Clears a trigger's storm brake: it remediates again.
pub(super) fn rearm(
    store: &Store,
    triggers: &[Trigger],
    name: &str,
    by: &str,
) -> Result<serde_json::Value, String> {
    if !triggers.iter().any(|t| t.name == name) {
        return Err(format!("no trigger `{name}`"));
    }
    let mut state = store.trigger_state(name).map_err(|e| e.to_string())?;
    let was = state.braked.take();
    // The runs that tripped it no longer count against the new window.
    state.starts.clear();
    store
        .set_trigger_state(name, &state)
        .map_err(|e| e.to_string())?;
    println!(
        "medic serve: trigger {name}: re-armed by {by}{}",
        if was.is_none() {
            " (it was not braked)"
        } else {
            ""
        }
    );
    Ok(serde_json::json!({ "trigger": name, "was_braked": was, "by": by }))
}

/// Each trigger, what it matches and starts, and its state.
pub(super) fn list(store: &Store, triggers: &[Trigger]) -> Result<serde_json::Value, String> {
    let mut out = Vec::new();
    for t in triggers {
        let state = store.trigger_state(&t.name).map_err(|e| e.to_string())?;
        out.push(serde_json::json!({
            "name": t.name,
            "file": t.file,
            "match": t.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "runbook": t.runbook,
            "environment": t.environment,
            "braked": state.braked,
            "groups": state.groups,
            "starts": state.starts,
        }));
    }
    Ok(serde_json::json!({ "triggers": out }))
}
