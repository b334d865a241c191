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
        let mut waiting =
            self.opts
                .approver
                .wait(&self.opts.run_id, id, prompt, timeout, &self.cancel);
        // Its first poll registers the request: whoever is told of it (an API client
        // following the run's events) can decide it at once, never before it can be found.
        let early =
            std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx))).await;
        observer.on_event(&Event::ApprovalRequested {
            id,
            prompt,
            timeout,
        });
        let decision = match early {
            std::task::Poll::Ready(decision) => decision,
            std::task::Poll::Pending => waiting.await,
        };
        observer.on_event(&Event::ApprovalDecided {
            id,
            decision: &decision,
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::executor::{Event, RunOptions, RunOutcome, execute};

    /// Whoever is told a run asks for an approval can decide it at once: it is registered
    /// before it is told (an API client approving on `approval_requested` was refused with
    /// "no run is waiting for an approval").
    #[tokio::test]
    async fn an_approval_can_be_decided_as_soon_as_it_is_told() {
        let (host, plan) = crate::executor::tests::one_probe(
            "approval = { timeout = \"60s\", prompt = \"go on?\" }\n",
        )
        .await;
        let data = tempfile::tempdir().unwrap();
        let place = crate::store::Place::Files(data.path().to_path_buf());
        let opts = RunOptions {
            run_id: "01asks".into(),
            approver: Arc::new(crate::store::approvals::StoreApprover {
                place: place.clone(),
                policy: crate::store::approvals::Policy::default(),
            }),
            ..RunOptions::default()
        };
        let mut decided = None;
        let mut decision = None;
        let mut observer = |e: &Event<'_>| {
            if let Event::ApprovalDecided { decision: d, .. } = e {
                decision = Some((*d).clone());
            }
            if let Event::ApprovalRequested { .. } = e {
                decided = Some(crate::store::approvals::decide(
                    &place,
                    "01asks",
                    None,
                    false,
                    "ops",
                    &[],
                    "no",
                ));
            }
        };
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            execute(&host, &plan, opts, &mut observer),
        )
        .await
        .expect("the decision is taken within 30 s, not the approval's 60 s")
        .expect("the run ends");
        let decided = decided.expect("the approval was told");
        assert!(decided.is_ok(), "{:?}", decided.err());
        // The run went on with that decision, not another (a timeout, a cancel).
        assert_eq!(
            decision,
            Some(crate::executor::Decision::Rejected {
                by: "ops".into(),
                reason: "no".into()
            })
        );
        assert_eq!(report.outcome, RunOutcome::Failed, "{report:?}");
    }
}
