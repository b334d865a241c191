//! Secret values masked wherever a plugin could echo them.

use crate::host::{Failure, Invocation, Value};

pub(crate) const MASK: &str = "••••••";

/// Replaces secret values wherever they could surface: a plugin that echoes its token into a
/// log line or summary must not leak it into the terminal or the record.
pub(super) struct Redactor {
    pub(super) secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    pub(super) fn value(&self, v: &Value) -> Value {
        match v {
            Value::Text(s) => Value::Text(self.text(s)),
            Value::TextList(l) => Value::TextList(l.iter().map(|s| self.text(s)).collect()),
            other => other.clone(),
        }
    }

    fn failure(&self, f: &mut Failure) {
        match f {
            Failure::InvalidParams { message }
            | Failure::Transient { message }
            | Failure::Permanent { message }
            | Failure::Denied { message }
            | Failure::Panic { message }
            | Failure::Trap { message }
            | Failure::Engine { message } => *message = self.text(message),
            Failure::Timeout { .. } | Failure::MemoryLimit { .. } | Failure::StackOverflow => {}
        }
    }

    pub(super) fn invocation(&self, inv: &mut Invocation) {
        if self.secrets.is_empty() {
            return;
        }
        match &mut inv.result {
            Ok(o) => {
                o.summary = self.text(&o.summary);
                for (_, v) in &mut o.outputs {
                    *v = self.value(v);
                }
            }
            Err(f) => self.failure(f),
        }
        for line in &mut inv.logs {
            line.message = self.text(&line.message);
            for (_, v) in &mut line.fields {
                *v = self.text(v);
            }
        }
        for u in &mut inv.capability_uses {
            u.detail = self.text(&u.detail);
            u.result = self.text(&u.result);
        }
        inv.stderr = self.text(&inv.stderr);
    }
}
