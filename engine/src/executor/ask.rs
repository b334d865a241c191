//! Asking a person: approvals before a step, decisions on inconclusive gates.

use std::time::Duration;

use super::{Decision, Event, Observer, Run};

impl Run<'_> {
    /// Asks a person (through the approver) and tells the observers, before and after.
    pub(super) async fn ask(
        &self,
        id: &str,
        prompt: &str,
        timeout: Duration,
        observer: &mut dyn Observer,
    ) -> Decision {
        crate::later::drop_now();
        observer.on_event(&Event::ApprovalRequested {
            id,
            prompt,
            timeout,
        });
        let decision = self
            .opts
            .approver
            .wait(&self.opts.run_id, id, prompt, timeout, &self.cancel)
            .await;
        observer.on_event(&Event::ApprovalDecided {
            id,
            decision: &decision,
        });
        decision
    }
}
