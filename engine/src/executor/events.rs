//! What a run reports as it goes: [`Event`]s for observers in this process, and
//! [`OwnedEvent`]s for a process on the other end of `medic serve`'s socket.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Approval, Attempt, Decision, Phase, RunReport, StepReport, TargetReport};
use crate::runbook::Plan;

/// What happens during a run, in order.
#[derive(Debug)]
pub enum Event<'a> {
    RunStarted {
        run_id: &'a str,
        plan: &'a Plan,
        approval: Option<&'a Approval>,
    },
    PhaseStarted {
        phase: Phase,
        reason: &'a str,
    },
    StepStarted {
        phase: Phase,
        id: &'a str,
        plugin: &'a str,
    },
    /// A step waits for a person (`medic approve RUN` / `medic reject RUN`).
    ApprovalRequested {
        id: &'a str,
        prompt: &'a str,
        timeout: Duration,
    },
    ApprovalDecided {
        id: &'a str,
        decision: &'a Decision,
    },
    /// A gate waits its bake time before the first check.
    Baking {
        id: &'a str,
        wait: Duration,
    },
    /// A retry or gate check finished and another follows after `wait`.
    AttemptFinished {
        id: &'a str,
        attempt: &'a Attempt,
        note: &'a str,
        wait: Duration,
    },
    /// One target of a fleet step is done (or will not start).
    TargetFinished {
        id: &'a str,
        /// The plugin declaration called (`[plugins.NAME]`).
        plugin: &'a str,
        /// Shared, so an observer that keeps it (the recorder, until its write is durable)
        /// does not copy a report that can hold what the plugin logged and returned.
        target: &'a Arc<TargetReport>,
        /// Another target's result follows at once (targets that finished together): an
        /// observer may make this one durable with the last of them, one flush for all.
        more: bool,
    },
    StepFinished {
        report: &'a StepReport,
    },
    RunFinished {
        report: &'a RunReport,
    },
}

impl Event<'_> {
    /// One of many that tell how a step is getting on (a fleet's targets, a gate's or
    /// retry's attempts), none of which decides the run: an observer that cannot keep up
    /// may leave these out (and say so); every other event it must pass on.
    pub fn is_progress(&self) -> bool {
        matches!(
            self,
            Event::TargetFinished { .. } | Event::AttemptFinished { .. }
        )
    }
}

pub trait Observer {
    fn on_event(&mut self, event: &Event<'_>);
    /// The run's call (or a fleet's wait for its next target) has gone on long enough that
    /// what waits for its write to show should be shown now, instead of when the call ends:
    /// the write-ahead of the step's start is confirmed, waited for if need be
    /// ([`crate::ahead`]); of the writes left unconfirmed (a check's start, a fleet's
    /// targets), those durable by now are shown, none waited for. Only the recorder has
    /// anything to do.
    fn confirm_shown(&mut self) {}
    /// Whether something journaled waits for its write to be confirmed before it is shown,
    /// apart from the run's write-ahead (a check's start, sent with the end of the step
    /// before; a fleet's targets that ended together): a wait that goes on then has
    /// [`Observer::confirm_shown`] show it meanwhile.
    fn waits_to_show(&self) -> bool {
        false
    }
}

/// An [`Event`] that owns its data, to cross a process boundary (`medic run` through
/// `medic serve`). The plan is not sent: the receiver has planned the same runbook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OwnedEvent {
    RunStarted {
        run_id: String,
        approval: Option<Approval>,
    },
    PhaseStarted {
        phase: Phase,
        reason: String,
    },
    StepStarted {
        phase: Phase,
        id: String,
        plugin: String,
    },
    ApprovalRequested {
        id: String,
        prompt: String,
        timeout: Duration,
    },
    ApprovalDecided {
        id: String,
        decision: Decision,
    },
    Baking {
        id: String,
        wait: Duration,
    },
    AttemptFinished {
        id: String,
        attempt: Attempt,
        note: String,
        wait: Duration,
    },
    TargetFinished {
        id: String,
        /// Empty from a medic that did not send it.
        #[serde(default)]
        plugin: String,
        #[serde(with = "super::shared")]
        target: Arc<TargetReport>,
    },
    StepFinished {
        report: StepReport,
    },
    RunFinished {
        report: RunReport,
    },
}

impl OwnedEvent {
    pub fn from_event(e: &Event<'_>) -> OwnedEvent {
        match e {
            Event::RunStarted {
                run_id, approval, ..
            } => OwnedEvent::RunStarted {
                run_id: (*run_id).to_owned(),
                approval: approval.cloned(),
            },
            Event::PhaseStarted { phase, reason } => OwnedEvent::PhaseStarted {
                phase: *phase,
                reason: (*reason).to_owned(),
            },
            Event::StepStarted { phase, id, plugin } => OwnedEvent::StepStarted {
                phase: *phase,
                id: (*id).to_owned(),
                plugin: (*plugin).to_owned(),
            },
            Event::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => OwnedEvent::ApprovalRequested {
                id: (*id).to_owned(),
                prompt: (*prompt).to_owned(),
                timeout: *timeout,
            },
            Event::ApprovalDecided { id, decision } => OwnedEvent::ApprovalDecided {
                id: (*id).to_owned(),
                decision: (*decision).clone(),
            },
            Event::Baking { id, wait } => OwnedEvent::Baking {
                id: (*id).to_owned(),
                wait: *wait,
            },
            Event::AttemptFinished {
                id,
                attempt,
                note,
                wait,
            } => OwnedEvent::AttemptFinished {
                id: (*id).to_owned(),
                attempt: (*attempt).clone(),
                note: (*note).to_owned(),
                wait: *wait,
            },
            Event::TargetFinished {
                id, plugin, target, ..
            } => OwnedEvent::TargetFinished {
                id: (*id).to_owned(),
                plugin: (*plugin).to_owned(),
                target: Arc::clone(target),
            },
            Event::StepFinished { report } => OwnedEvent::StepFinished {
                report: (*report).clone(),
            },
            Event::RunFinished { report } => OwnedEvent::RunFinished {
                report: (*report).clone(),
            },
        }
    }

    /// The event again, with the receiver's own plan (needed by `RunStarted` only: without
    /// a plan, that one gives nothing).
    pub fn as_event<'a>(&'a self, plan: Option<&'a Plan>) -> Option<Event<'a>> {
        Some(match self {
            OwnedEvent::RunStarted { run_id, approval } => Event::RunStarted {
                run_id,
                plan: plan?,
                approval: approval.as_ref(),
            },
            OwnedEvent::PhaseStarted { phase, reason } => Event::PhaseStarted {
                phase: *phase,
                reason,
            },
            OwnedEvent::StepStarted { phase, id, plugin } => Event::StepStarted {
                phase: *phase,
                id,
                plugin,
            },
            OwnedEvent::ApprovalRequested {
                id,
                prompt,
                timeout,
            } => Event::ApprovalRequested {
                id,
                prompt,
                timeout: *timeout,
            },
            OwnedEvent::ApprovalDecided { id, decision } => Event::ApprovalDecided { id, decision },
            OwnedEvent::Baking { id, wait } => Event::Baking { id, wait: *wait },
            OwnedEvent::AttemptFinished {
                id,
                attempt,
                note,
                wait,
            } => Event::AttemptFinished {
                id,
                attempt,
                note,
                wait: *wait,
            },
            OwnedEvent::TargetFinished { id, plugin, target } => Event::TargetFinished {
                id,
                plugin,
                target,
                more: false,
            },
            OwnedEvent::StepFinished { report } => Event::StepFinished { report },
            OwnedEvent::RunFinished { report } => Event::RunFinished { report },
        })
    }
}

impl<F: FnMut(&Event<'_>)> Observer for F {
    fn on_event(&mut self, event: &Event<'_>) {
        self(event)
    }
}
