//! Text from plugins, parameters and runbooks is shown with its control characters escaped:
//! an ESC sequence must not hide or recolour text, and a carriage return or newline must not
//! forge a `✓ succeeded` line of Medic's own.

use std::borrow::Cow;

use crate::executor::{OwnedEvent, StepReport, StepStatus, TargetReport};
use crate::host::{Failure, Invocation, Value};

/// Characters that steer a terminal rather than print: C0 and C1 controls, DEL, and the
/// Unicode bidirectional overrides (which reorder what is shown).
fn steers(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every steering character escaped (`\u{1b}`, `\n`, `\r`...).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(steers) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if steers(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Like [`clean`], keeping newlines (for text shown line by line, such as stderr).
fn clean_lines(s: &str) -> String {
    s.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

fn in_place(s: &mut String) {
    if let Cow::Owned(c) = clean(s) {
        *s = c;
    }
}

fn value(v: &mut Value) {
    match v {
        Value::Text(t) => in_place(t),
        Value::TextList(items) => items.iter_mut().for_each(in_place),
        _ => {}
    }
}

fn failure(f: &mut Failure) {
    if let Some(message) = f.message_mut() {
        in_place(message);
    }
}

fn status(s: &mut StepStatus) {
    match s {
        StepStatus::Errored { failure: f } => failure(f),
        StepStatus::Skipped { reason } => in_place(reason),
        StepStatus::Succeeded | StepStatus::Failed => {}
    }
}

fn invocation(inv: &mut Invocation) {
    match &mut inv.result {
        Ok(o) => {
            in_place(&mut o.summary);
            for (k, v) in &mut o.outputs {
                in_place(k);
                value(v);
            }
        }
        Err(f) => failure(f),
    }
    for line in &mut inv.logs {
        in_place(&mut line.message);
        for (k, v) in &mut line.fields {
            in_place(k);
            in_place(v);
        }
    }
    for u in &mut inv.capability_uses {
        in_place(&mut u.detail);
        in_place(&mut u.result);
    }
    inv.stderr = clean_lines(&inv.stderr);
}

fn target(t: &mut TargetReport) {
    in_place(&mut t.target);
    in_place(&mut t.summary);
    status(&mut t.status);
    for (_, v) in &mut t.params {
        value(v);
    }
    for a in &mut t.attempts {
        invocation(&mut a.invocation);
    }
}

fn report(r: &mut StepReport) {
    in_place(&mut r.summary);
    status(&mut r.status);
    for (_, v) in &mut r.params {
        value(v);
    }
    for a in &mut r.attempts {
        invocation(&mut a.invocation);
    }
    r.targets.iter_mut().for_each(target);
}

/// Escapes every text of an event that came from outside Medic.
pub fn sanitize(e: &mut OwnedEvent) {
    match e {
        OwnedEvent::RunStarted { approval, .. } => {
            if let Some(a) = approval {
                in_place(&mut a.reason);
            }
        }
        OwnedEvent::PhaseStarted { reason, .. } => in_place(reason),
        OwnedEvent::StepStarted { .. } | OwnedEvent::Baking { .. } => {}
        OwnedEvent::ApprovalRequested { prompt, .. } => in_place(prompt),
        OwnedEvent::ApprovalDecided { decision, .. } => match decision {
            crate::executor::Decision::Approved { by, reason }
            | crate::executor::Decision::Rejected { by, reason } => {
                in_place(by);
                in_place(reason);
            }
            _ => {}
        },
        OwnedEvent::AttemptFinished { attempt, note, .. } => {
            in_place(note);
            invocation(&mut attempt.invocation);
        }
        OwnedEvent::TargetFinished { target: t, .. } => target(std::sync::Arc::make_mut(t)),
        OwnedEvent::StepFinished { report: r } => report(r),
        OwnedEvent::RunFinished { report: r } => r.steps.iter_mut().for_each(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_characters_are_shown_not_obeyed() {
        assert_eq!(clean("ok"), "ok");
        assert_eq!(
            clean("x\r  ✓ succeeded\n\u{1b}[2Jgone\u{202e}"),
            "x\\r  ✓ succeeded\\n\\u{1b}[2Jgone\\u{202e}"
        );
        assert_eq!(clean_lines("a\u{1b}\nb"), "a\\u{1b}\nb");
    }
}
