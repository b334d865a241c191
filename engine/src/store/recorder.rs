//! Records a run as it happens: an [`Observer`] that journals every event, keeps the run's
//! summary record current, and passes the events on to the output.
//!
//! Group commit: a step's successful end is shown only once it is durable, but it is not
//! written on its own: it is held, and journaled with the next event in one store call
//! (`append_many`), which is flushed before either is shown (an action's write-ahead start,
//! a gate check, the run's end...). A run of action steps thus costs one flush and one store
//! call per step (one round trip to the store daemon), not two. Targets of a fleet step that
//! finished together are told together (`more`) and journaled the same way, with the last of
//! them. A kill between loses only what was held, which was never shown: the step's start is
//! journaled, so a pick-up treats the step as possibly done (an action is undone or run
//! again, never taken for not run).
//!
//! The run's record is written with an event only when it changed (a step's end, the run's
//! end): a step's start or a target's end leaves it as it was.
//!
//! A check needs no flush of its own: where the store keeps a run's writes in order (the
//! embedded store's log; the store daemon, which is sent a run's writes on one connection),
//! a check's start is sent with the previous step's held end and the run goes on without
//! waiting for its flush ([`Queued`]). What it carries is shown once the log is durable past
//! it, which the store makes it for every write sent meanwhile at once (the embedded store's
//! flusher; the daemon, which flushes what it read together once): checks in a row share
//! flushes. Anything else written waits for them first, so everything is still shown in
//! order, and only after it is durable.

use crate::executor::{Cancel, Event, Observer, Phase};
use crate::host::PluginKind;

use super::{JournalEvent, PluginRef, RunRecord, RunStatus, Store, StoreError, Trigger, now_ms};

/// How the run came to this process.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new run.
    New,
    /// An interrupted run picked up again (`resume` or `rollback`), with its record.
    Resumed {
        mode: String,
        /// Who picked it up.
        by: String,
        record: Box<RunRecord>,
        /// Plugins changed since the run started, accepted by whoever picked it up.
        changed_plugins: Vec<PluginRef>,
    },
}

pub struct Recorder<'a> {
    store: &'a Store,
    inner: &'a mut dyn Observer,
    trigger: Trigger,
    lock: Option<String>,
    start: Start,
    dry_run: bool,
    notification: bool,
    record: Option<RunRecord>,
    /// The record changed since it was last written: the next event is written with it.
    /// (Most events leave it as it was: a step's start, a target, an attempt.)
    record_changed: bool,
    /// Plugin declarations that are actions, and steps that are gates (from the plan).
    actions: Vec<String>,
    /// Every plugin declaration (from the plan): what `unshown` names by index.
    aliases: Vec<String>,
    gated: Vec<String>,
    /// The first write that failed. The run is aborted (its rollback included): a run that
    /// cannot be recorded must not go on changing things.
    pub error: Option<StoreError>,
    cancel: Cancel,
    /// Events held to be journaled with the next one, in one store call (one round trip to
    /// the store daemon, one frame of its log): a successful step's end, targets that
    /// finished together with more to come.
    held: Vec<super::JournalEntry>,
    /// The held events' plugins (a target's, as an index into `aliases`; a step's end names
    /// its own), one each: once the write that journals them is durable, they are shown
    /// from what it wrote (the first entries of `written`), not from copies of their own.
    unshown: Vec<Option<usize>>,
    /// What the last write journaled, until what was held among it is shown.
    written: Vec<super::JournalEntry>,
    /// An action's start sent and not yet confirmed ([`crate::ahead`]): what it carries
    /// (`unshown`, and the start itself: phase, step, plugin) is shown once it is.
    deferred: Option<(Phase, String, String)>,
    /// The run's write-ahead state, once a write was left to it.
    ahead: Option<std::sync::Arc<crate::ahead::Ahead>>,
    /// Checks' starts sent and not yet shown, oldest first.
    queued: std::collections::VecDeque<Queued>,
}

/// A write sent and left unconfirmed while the run goes on: a check's start, with what was
/// held before it (a check changes nothing, so nothing waits for its start to be durable
/// but the showing of what the write carries, then the start itself); or a fleet's targets
/// that finished together, shown once durable while the next targets run.
struct Queued {
    sent: Box<dyn crate::ahead::Unconfirmed>,
    /// The held events' markers (see `Recorder::unshown`) and what the write journaled.
    unshown: Vec<Option<usize>>,
    written: Vec<super::JournalEntry>,
    /// A check's start, shown after what the write carried.
    start: Option<(Phase, String, String)>,
}

/// Checks' starts left unconfirmed at most at once; past that the oldest is waited for. The
/// store's flusher takes every write sent while it flushed at once, so about one flush's time
/// of checks are in flight: this bounds what is held only where checks outrun the disk.
const MAX_QUEUED: usize = 64;

/// Groups of a fleet's targets left unconfirmed at most at once: the group before is waited
/// for as the next is sent. Targets change things, and a run whose record cannot be written
/// must stop changing them: no more than one group's worth of targets (about the fleet's
/// concurrency) start while a write of targets is on its way, as many as were running while
/// it was written anyway, and the disk's flush overlaps the gathering of the next group.
const GROUPS_QUEUED: usize = 1;

/// A write already durable when sent (the store flushed it itself).
struct Durable;

impl crate::ahead::Unconfirmed for Durable {
    fn confirm(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_answered(&self) -> bool {
        true
    }
}

impl<'a> Recorder<'a> {
    pub fn new(
        store: &'a Store,
        inner: &'a mut dyn Observer,
        trigger: Trigger,
        lock: Option<String>,
        start: Start,
        dry_run: bool,
        cancel: Cancel,
    ) -> Self {
        Recorder {
            store,
            inner,
            trigger,
            lock,
            start,
            dry_run,
            notification: false,
            record: None,
            record_changed: false,
            actions: Vec::new(),
            aliases: Vec::new(),
            gated: Vec::new(),
            error: None,
            cancel,
            held: Vec::new(),
            unshown: Vec::new(),
            written: Vec::new(),
            deferred: None,
            ahead: None,
            queued: std::collections::VecDeque::new(),
        }
    }

    /// Records the run as a drill's notification (left out of the statistics).
    pub fn notification(mut self) -> Self {
        self.notification = true;
        self
    }

    pub fn run_id(&self) -> Option<&str> {
        self.record.as_ref().map(|r| r.run_id.as_str())
    }

    /// The run was stopped without finishing (its future dropped): recorded as interrupted,
    /// as if its process had died, so `medic runs rollback` and `resume` pick it up.
    pub fn aborted(&mut self, reason: &str) {
        if let Some(r) = &mut self.record {
            r.status = RunStatus::Interrupted;
            self.record_changed = true;
        }
        self.write(
            JournalEvent::RunAborted {
                reason: reason.to_owned(),
            },
            true,
        );
        self.show_unshown();
    }

    /// Shows what waited for a flush, once it is durable: never after a write failed (what
    /// is shown is what was recorded).
    fn show_unshown(&mut self) {
        if self.error.is_some() {
            return;
        }
        let written = std::mem::take(&mut self.written);
        let unshown = std::mem::take(&mut self.unshown);
        self.show_held(&unshown, &written);
    }

    /// Shows the held events of a write (`unshown`, the first of `written`), now durable.
    fn show_held(&mut self, unshown: &[Option<usize>], written: &[super::JournalEntry]) {
        for (plugin, entry) in unshown.iter().zip(written) {
            let plugin = plugin.map_or("", |i| self.aliases[i].as_str());
            let event = match &entry.event {
                JournalEvent::TargetFinished { step, report } => Event::TargetFinished {
                    id: step,
                    plugin,
                    target: report,
                    more: false,
                },
                JournalEvent::StepFinished { report } => Event::StepFinished { report },
                _ => continue,
            };
            self.inner.on_event(&event);
        }
    }

    /// Journals `event` with what is held, and the record if it changed.
    fn write(&mut self, event: JournalEvent, flush: bool) {
        self.write_ahead(event, flush, false);
    }

    /// [`Recorder::write`]; with `defer` (a durable action's start, one call to follow on
    /// this thread) the write may be sent and its confirmation left to the run
    /// ([`crate::ahead`]): returns whether it was, and then nothing of it is shown yet.
    fn write_ahead(&mut self, event: JournalEvent, flush: bool, defer: bool) -> bool {
        // Whatever was sent before is confirmed (and shown) first: this write lands after it.
        self.show_queued(0);
        self.confirm();
        if self.error.is_some() {
            return false;
        }
        // Events waiting to be shown are made durable by this write, whatever it is, and are
        // shown before it.
        let flush = flush || !self.unshown.is_empty();
        let Some(record) = &self.record else {
            return false;
        };
        let mut entries = std::mem::take(&mut self.held);
        entries.push(super::JournalEntry::now(event));
        let changed = self.record_changed.then_some(record);
        let mut deferred = false;
        let result = match defer && flush {
            false => self
                .store
                .append_many(&record.run_id, changed, &entries, flush)
                .map(drop),
            true => match self.store.append_sent(&record.run_id, changed, &entries) {
                Ok(Some(sent)) => match crate::ahead::current() {
                    Some(ahead) => {
                        ahead.defer(sent);
                        self.ahead = Some(ahead);
                        deferred = true;
                        Ok(())
                    }
                    None => crate::ahead::Unconfirmed::confirm(sent),
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if result.is_ok() {
            self.record_changed = false;
            self.written = entries;
        }
        if let Err(e) = result {
            self.fail(e);
        }
        deferred
    }

    /// Sends `event` with what is held, and leaves it [`Queued`] (a check's start, `start`;
    /// a fleet's targets): the run goes on, with at most `keep` writes left unconfirmed.
    fn queue(&mut self, event: JournalEvent, start: Option<(Phase, String, String)>, keep: usize) {
        // An action's start left to the run was sent before: shown first.
        self.confirm();
        if self.error.is_some() {
            return;
        }
        let Some(record) = &self.record else { return };
        let mut entries = std::mem::take(&mut self.held);
        entries.push(super::JournalEntry::now(event));
        let changed = self.record_changed.then_some(record);
        match self.store.append_sent(&record.run_id, changed, &entries) {
            Ok(sent) => {
                self.record_changed = false;
                self.queued.push_back(Queued {
                    sent: sent.unwrap_or_else(|| Box::new(Durable)),
                    unshown: std::mem::take(&mut self.unshown),
                    written: entries,
                    start,
                });
                self.show_queued(keep);
            }
            Err(e) => self.fail(e),
        }
    }

    /// Shows the queued checks' starts (and what each carried) whose writes are durable,
    /// oldest first, waiting for the oldest while more than `keep` are left. A write that
    /// failed stops the run, and nothing after it is shown.
    fn show_queued(&mut self, keep: usize) {
        while let Some(front) = self.queued.front() {
            if self.queued.len() <= keep && !front.sent.is_answered() {
                return;
            }
            let Some(q) = self.queued.pop_front() else {
                return;
            };
            if let Err(e) = q.sent.confirm() {
                self.fail(e);
            }
            if self.error.is_some() {
                // Each is still waited for as it is dropped: the log broke for all of them.
                self.queued.clear();
                return;
            }
            self.show_held(&q.unshown, &q.written);
            if let Some((phase, id, plugin)) = &q.start {
                self.inner.on_event(&Event::StepStarted {
                    phase: *phase,
                    id,
                    plugin,
                });
            }
        }
    }

    /// Confirms a write left to the run, if any, and shows what waited for it.
    fn confirm(&mut self) {
        let Some(ahead) = &self.ahead else { return };
        if let Some(e) = ahead.take_error() {
            self.deferred = None;
            self.fail(e);
            return;
        }
        if let Some((phase, id, plugin)) = self.deferred.take() {
            self.show_unshown();
            if self.error.is_none() {
                self.inner.on_event(&Event::StepStarted {
                    phase,
                    id: &id,
                    plugin: &plugin,
                });
            }
        }
    }

    /// The index of a plugin declaration in `aliases`, added if it is not there.
    fn alias_of(&mut self, plugin: &str) -> usize {
        match self.aliases.iter().position(|a| a == plugin) {
            Some(i) => i,
            None => {
                self.aliases.push(plugin.to_owned());
                self.aliases.len() - 1
            }
        }
    }

    fn fail(&mut self, e: StoreError) {
        if self.error.is_some() {
            return;
        }
        let id = self.record.as_ref().map_or("", |r| r.run_id.as_str());
        // Stopped at once, rollback included: an undo that cannot be recorded would leave a
        // record claiming the change is still in place, and a later rollback would undo it
        // twice. The run stays as recorded, to be picked up.
        eprintln!(
            "medic: cannot record the run ({e}); stopping now without undoing anything, since a change that cannot be recorded must not be made\n  = help: once the store is back, `medic runs show {id}`, then `medic runs rollback {id}` or `medic runs resume {id}`"
        );
        self.error = Some(e);
        self.cancel.abort();
    }
}

impl Observer for Recorder<'_> {
    fn confirm_shown(&mut self) {
        // Not waited for: a fleet's run thread, still gathering targets, would stop starting
        // them until the disk caught up; asked again while anything waits.
        self.show_queued(usize::MAX);
        self.confirm();
    }

    fn waits_to_show(&self) -> bool {
        !self.queued.is_empty()
    }

    fn on_event(&mut self, event: &Event<'_>) {
        // A start left to the run is confirmed, and it and what it carried are shown, before
        // anything after it (the step's end, if the call was quick). Checks' starts already
        // durable are shown; the others stay queued until their flush or the next write.
        self.show_queued(usize::MAX);
        self.confirm();
        match event {
            Event::RunStarted {
                run_id,
                plan,
                approval,
            } => {
                let me = super::process::Process::this();
                let pid = me.pid;
                self.actions = plan
                    .plugins
                    .iter()
                    .filter(|p| p.plugin.manifest.kind == PluginKind::Action)
                    .map(|p| p.alias.clone())
                    .collect();
                self.aliases = plan.plugins.iter().map(|p| p.alias.clone()).collect();
                self.gated = plan
                    .steps
                    .iter()
                    .filter(|s| s.gate.is_some())
                    .map(|s| s.id.clone())
                    .collect();
                let (record, journal) = match &self.start {
                    Start::New => (
                        RunRecord {
                            v: super::FORMAT_VERSION,
                            run_id: (*run_id).to_owned(),
                            runbook: plan.name.clone(),
                            // Absolute, so `runs rollback`/`resume` work from any directory.
                            runbook_path: std::path::absolute(&plan.path)
                                .unwrap_or_else(|_| plan.path.clone())
                                .display()
                                .to_string(),
                            runbook_sha256: plan.sha256.clone(),
                            plugins: plan
                                .plugins
                                .iter()
                                .map(|p| PluginRef {
                                    alias: p.alias.clone(),
                                    source: p.plugin.source.to_string(),
                                    sha256: p.plugin.sha256.clone(),
                                })
                                .collect(),
                            params: plan
                                .params
                                .iter()
                                .map(|p| {
                                    (
                                        p.name.clone(),
                                        if p.secret {
                                            "••••••".into()
                                        } else {
                                            super::param_text(&p.value)
                                        },
                                    )
                                })
                                .collect(),
                            environment: plan.environment.name.clone(),
                            trigger: self.trigger.clone(),
                            approval: approval.cloned(),
                            lock: self.lock.clone(),
                            dry_run: self.dry_run,
                            notification: self.notification,
                            status: RunStatus::Running,
                            started_ms: now_ms(),
                            ended_ms: None,
                            pid,
                            pid_start: me.start,
                            steps_total: plan.steps.len(),
                            steps_done: 0,
                            failed_step: None,
                            changed: false,
                            changed_ms: None,
                            detected_ms: None,
                            detected_by_gate: false,
                            recovered_ms: None,
                        },
                        JournalEvent::RunStarted { pid },
                    ),
                    Start::Resumed {
                        mode,
                        by,
                        record,
                        changed_plugins,
                    } => {
                        let mut r = (**record).clone();
                        r.status = RunStatus::Running;
                        r.pid = pid;
                        r.pid_start = me.start;
                        r.ended_ms = None;
                        (
                            r,
                            JournalEvent::RunResumed {
                                pid,
                                mode: mode.clone(),
                                by: by.clone(),
                                changed_plugins: changed_plugins.clone(),
                            },
                        )
                    }
                };
                self.record = Some(record);
                self.record_changed = true;
                self.write(journal, true);
            }
            Event::PhaseStarted { phase, reason } => self.write(
                JournalEvent::PhaseStarted {
                    phase: *phase,
                    reason: (*reason).to_owned(),
                },
                true,
            ),
            Event::StepStarted { phase, id, plugin } => {
                // Write-ahead for actions: an interrupted run must know an action may have
                // acted. A check changes nothing, and a resumed run runs it again, so its
                // start rides on the next flush (its end, at the latest).
                let flush = self.actions.iter().any(|a| a == plugin);
                // One call follows on this thread (not a fleet's): it starts while the
                // daemon makes this durable, and nothing in it acts before (`crate::ahead`).
                let one_call = crate::ahead::take_one_call();
                let event = JournalEvent::StepStarted {
                    phase: *phase,
                    step: (*id).to_owned(),
                    plugin: (*plugin).to_owned(),
                };
                // A check's start that carries what must be flushed before it is shown (the
                // previous step's end), or that must be shown after what is queued: queued.
                if !flush
                    && one_call
                    && (!self.unshown.is_empty() || !self.queued.is_empty())
                    && self.store.sends_in_order()
                {
                    let start = (*phase, (*id).to_owned(), (*plugin).to_owned());
                    self.queue(event, Some(start), MAX_QUEUED);
                    return;
                }
                if self.write_ahead(event, flush, one_call) {
                    self.deferred = Some((*phase, (*id).to_owned(), (*plugin).to_owned()));
                    return;
                }
            }
            Event::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => self.write(
                JournalEvent::ApprovalRequested {
                    step: (*id).to_owned(),
                    prompt: (*prompt).to_owned(),
                    timeout_ms: timeout.as_millis() as u64,
                },
                true,
            ),
            Event::ApprovalDecided { id, decision } => self.write(
                JournalEvent::ApprovalDecided {
                    step: (*id).to_owned(),
                    decision: (*decision).clone(),
                },
                true,
            ),
            Event::Baking { id, wait } => self.write(
                JournalEvent::Baking {
                    step: (*id).to_owned(),
                    wait_ms: wait.as_millis() as u64,
                },
                false,
            ),
            // A check's or retry's result is durable before it is shown: what a responder saw
            // on the terminal is in the record after a kill.
            Event::AttemptFinished { id, note, .. } => self.write(
                JournalEvent::AttemptFinished {
                    step: (*id).to_owned(),
                    note: (*note).to_owned(),
                },
                true,
            ),
            // A fleet's targets change things one by one, and each result is shown: each is
            // on disk before it is shown. Targets that finished together are flushed once,
            // with the last of them, and shown then: where the store keeps a run's writes in
            // order, while the next targets run ([`GROUPS_QUEUED`]).
            Event::TargetFinished {
                id,
                plugin,
                target,
                more,
            } => {
                let journaled = JournalEvent::TargetFinished {
                    step: (*id).to_owned(),
                    report: std::sync::Arc::clone(target),
                };
                let queued = !*more && self.store.sends_in_order();
                if *more || queued {
                    if self.error.is_none() && self.record.is_some() {
                        let alias = self.alias_of(plugin);
                        self.unshown.push(Some(alias));
                        if queued {
                            self.queue(journaled, None, GROUPS_QUEUED);
                        } else {
                            self.held.push(super::JournalEntry::now(journaled));
                        }
                    }
                    return;
                }
                self.write(journaled, true);
            }
            Event::StepFinished { report } => {
                if let Some(r) = &mut self.record {
                    self.record_changed = true;
                    let now = now_ms();
                    match report.phase {
                        Phase::Steps => {
                            r.steps_done += 1;
                            // An action that ran may have changed things even when it failed.
                            if self.actions.contains(&report.plugin) && report.ran() {
                                r.changed = true;
                                r.changed_ms = Some(now);
                            }
                            if report.status.is_failure() && r.failed_step.is_none() {
                                r.failed_step = Some(report.id.clone());
                                r.detected_ms = Some(now);
                                r.detected_by_gate = self.gated.contains(&report.id);
                            }
                        }
                        Phase::Verify if report.status.is_success() => r.recovered_ms = Some(now),
                        _ => {}
                    }
                }
                // A step that succeeded is followed at once by the next event (the next
                // step's start, a bake, an approval, a phase, the run's end): held, journaled
                // with that one and shown after its flush. A failure is journaled and shown at
                // once: a person may be asked what to do about it next, and must see it first.
                let ride = report.status.is_success();
                let journaled = JournalEvent::StepFinished {
                    report: (*report).clone(),
                };
                if ride {
                    if self.error.is_none() && self.record.is_some() {
                        self.held.push(super::JournalEntry::now(journaled));
                        self.unshown.push(None);
                    }
                    return;
                }
                self.write(journaled, true);
            }
            Event::RunFinished { report } => {
                if let Some(r) = &mut self.record {
                    self.record_changed = true;
                    r.status = RunStatus::from_outcome(report.outcome);
                    r.ended_ms = Some(now_ms());
                    if r.status != RunStatus::RolledBack {
                        r.recovered_ms = None;
                    }
                }
                self.write(
                    JournalEvent::RunFinished {
                        outcome: report.outcome,
                        duration_ms: report.duration.as_millis() as u64,
                    },
                    true,
                );
            }
        }
        // What is shown is what was recorded: once a write failed, nothing more is shown as
        // if it were (the error already said the run stops there).
        self.show_unshown();
        if self.error.is_none() {
            self.inner.on_event(event);
        }
    }
}

#[cfg(test)]
mod tests;
