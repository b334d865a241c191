use super::*;

fn waiting(data: &Path, min_approvals: u32) -> Place {
    std::fs::create_dir_all(dir_of(data)).unwrap();
    let place = Place::Files(data.to_owned());
    let p = Pending {
        run_id: "01settled".into(),
        step: "go".into(),
        prompt: "go?".into(),
        deadline_ms: now_ms() + 60_000,
        requested_ms: now_ms(),
        policy: Policy {
            min_approvals,
            ..Policy::default()
        },
        waiter: None,
    };
    put_pending(&place, &p).unwrap();
    place
}

fn by(place: &Place, who: &str, approved: bool) -> Result<(Pending, usize), String> {
    decide(place, "01settled", None, approved, who, &[], "because")
}

fn request(place: &Place) -> Pending {
    requested(place, None).remove(0)
}

/// What the waiting run goes on with, as it polls.
fn the_runs(place: &Place) -> Option<Decision> {
    let p = request(place);
    verdict(place, &p.policy, &p.run_id, &p.step, p.requested_ms).unwrap()
}

/// Written as a decider does once it has found the request unsettled, without being
/// told anything yet: what two deciders in the same instant both do.
fn written(place: &Place, who: &str, approved: bool) {
    let p = request(place);
    let d = DecisionFile {
        approved,
        by: who.into(),
        groups: Vec::new(),
        reason: "because".into(),
        at_ms: now_ms(),
    };
    put_decision(place, &p.run_id, &p.step, &d).unwrap();
}

/// Two opposite decisions that each found the request unsettled and were both written:
/// exactly one decider is told its decision stands, and it is the one the run goes on
/// with, in whichever order they were written and looked again.
#[test]
fn of_two_opposite_decisions_in_the_same_instant_only_the_one_the_run_takes_is_told_it_stands() {
    let dir = tempfile::tempdir().unwrap();
    // Both written before either looks again: the decisions settle it rejected (a
    // rejection wins), whoever looks first.
    for (n, first) in [(1, "alice"), (2, "bob")] {
        let place = waiting(&dir.path().join(format!("both{n}")), 1);
        written(&place, "alice", true);
        written(&place, "bob", false);
        let p = request(&place);
        let told = |who: &str| after_writing(&place, &p, who == "alice");
        let (one, other) = if first == "alice" {
            (told("alice"), told("bob"))
        } else {
            let bob = told("bob");
            (told("alice"), bob)
        };
        let e = one.unwrap_err();
        assert!(
            e.contains("was rejected by bob (because) at the same time"),
            "{e}"
        );
        other.unwrap();
        assert!(matches!(the_runs(&place), Some(Decision::Rejected { by, .. }) if by == "bob"));
    }
    // Alice looked again before Bob's rejection was written: her approval settled it,
    // and Bob, though his rejection is now on record, is told it does not count.
    let place = waiting(&dir.path().join("approval-first"), 1);
    written(&place, "alice", true);
    let p = request(&place);
    assert_eq!(after_writing(&place, &p, true).unwrap(), 1);
    written(&place, "bob", false);
    let e = after_writing(&place, &p, false).unwrap_err();
    assert!(
        e.contains("was approved by alice (because) at the same time"),
        "{e}"
    );
    assert!(matches!(the_runs(&place), Some(Decision::Approved { by, .. }) if by == "alice"));
    // Nor is his retry told it stands, though his rejection is on record.
    let e = by(&place, "bob", false).unwrap_err();
    assert!(e.contains("already approved by alice"), "{e}");
    // The run polled first: what it took is the verdict.
    let place = waiting(&dir.path().join("run-first"), 1);
    let p = request(&place);
    written(&place, "bob", false);
    assert!(matches!(the_runs(&place), Some(Decision::Rejected { .. })));
    written(&place, "alice", true);
    assert!(after_writing(&place, &p, true).is_err());
    assert!(matches!(the_runs(&place), Some(Decision::Rejected { .. })));
}

/// Between a decision that settles a request and the run's next poll, a later decision
/// is refused, naming the one the run goes on with: not told it counted.
#[test]
fn a_decision_after_the_one_that_settled_the_request_is_refused_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let place = waiting(&dir.path().join("one"), 1);
    assert_eq!(by(&place, "alice", true).unwrap().1, 1);
    // Her request retried: told it stands, as the first time.
    assert_eq!(by(&place, "alice", true).unwrap().1, 1);
    // Her own change of mind, once settled, is refused like anyone's.
    let e = by(&place, "alice", false).unwrap_err();
    assert!(e.contains("already approved by alice"), "{e}");
    let e = by(&place, "bob", false).unwrap_err();
    assert!(
        e.contains("already approved by alice (because)") && e.contains("not with this"),
        "{e}"
    );
    // What the run reads is still alice's approval alone.
    assert!(matches!(
        the_runs(&place),
        Some(Decision::Approved { by, .. }) if by == "alice"
    ));

    // Two approvals needed: one does not settle it, and a rejection then does.
    let place = waiting(&dir.path().join("two"), 2);
    assert_eq!(by(&place, "alice", true).unwrap().1, 1);
    by(&place, "bob", false).unwrap();
    let e = by(&place, "carol", true).unwrap_err();
    assert!(e.contains("already rejected by bob (because)"), "{e}");
}
