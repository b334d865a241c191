//! Secret values masked wherever a plugin could echo them, before anything is written.
//!
//! The host masks at the source: a log line is masked before it is traced (`-v`) or kept, a
//! denied capability's detail before it is traced, and the whole [`Invocation`] (summary,
//! outputs and their names, metrics, log fields and their keys, capability uses, stderr,
//! panic and error text) before the call returns it. Masking comes before truncation, so a
//! secret straddling a cut is not half kept.
//!
//! What is masked, for each secret parameter value: its text, each item of a list, the
//! decimal form of a number, and the percent-encoded forms Medic itself produces (a URL's
//! query, a form body). Where secrets overlap, all they cover is masked, so a secret inside
//! a longer one leaves nothing behind. Error text also loses URL query strings, where tokens usually travel.

use std::sync::{Arc, LazyLock};

use aho_corasick::AhoCorasick;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use super::outcome::{Failure, Invocation};
use super::value::Value;

/// What a secret is replaced by.
pub const MASK: &str = "••••••";

/// Below this length a secret masks ordinary words (and, by what it masks, reveals itself):
/// Medic warns about such secrets.
pub const SHORT_SECRET: usize = 8;

/// The characters the URL standard encodes in a query and in a path (what `url`, and so
/// reqwest, write into the URLs that end up in error text).
const QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>');
const PATH: &AsciiSet = &QUERY.add(b'?').add(b'`').add(b'{').add(b'}');

/// The secret values of a run, in every form that could surface.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Every form of every secret, matched in one pass over a text (a fleet of 10,000
    /// targets may add a secret each: one `replace` per form made each call's masking, and
    /// so the fleet, quadratic). None: no secrets.
    forms: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor for these secret values (of any type).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Value>) -> Arc<Redactor> {
        let mut forms = Vec::new();
        let mut add = |s: String| {
            if s.is_empty() {
                return;
            }
            forms.push(url::form_urlencoded::byte_serialize(s.as_bytes()).collect());
            for set in [QUERY, PATH, NON_ALPHANUMERIC] {
                forms.push(utf8_percent_encode(&s, set).to_string());
            }
            forms.push(s);
        };
        for v in secrets {
            match v {
                Value::Text(s) => add(s.clone()),
                Value::TextList(items) => items.iter().cloned().for_each(&mut add),
                Value::Integer(i) => add(i.to_string()),
                Value::Float(f) => add(f.to_string()),
                // A secret boolean or duration cannot be masked without masking every
                // `true` or `30s`; they are refused as secrets by validation.
                Value::Boolean(_) | Value::Duration(_) => {}
            }
        }
        forms.retain(|f| !f.is_empty());
        forms.sort_unstable();
        forms.dedup();
        let forms = (!forms.is_empty()).then(|| {
            AhoCorasick::new(&forms)
                .expect("secret forms build a matcher (they are bounded by validation)")
        });
        Arc::new(Redactor { forms })
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_none()
    }

    /// `s` with every secret masked. Where secrets overlap, everything any of them covers is
    /// masked (once): a shorter secret inside or across a longer one leaves nothing behind.
    pub fn text(&self, s: &str) -> String {
        let Some(forms) = &self.forms else {
            return s.to_owned();
        };
        let mut spans: Vec<(usize, usize)> = forms
            .find_overlapping_iter(s)
            .map(|m| (m.start(), m.end()))
            .collect();
        if spans.is_empty() {
            return s.to_owned();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(s.len());
        let (mut at, mut open): (usize, Option<(usize, usize)>) = (0, None);
        for (start, end) in spans {
            match &mut open {
                Some((_, e)) if start < *e => *e = (*e).max(end),
                _ => {
                    if let Some((os, oe)) = open.replace((start, end)) {
                        out.push_str(&s[at..os]);
                        out.push_str(MASK);
                        at = oe;
                    }
                }
            }
        }
        if let Some((os, oe)) = open {
            out.push_str(&s[at..os]);
            out.push_str(MASK);
            at = oe;
        }
        out.push_str(&s[at..]);
        out
    }

    /// Masks in place, only allocating when something is found.
    pub fn mask(&self, s: &mut String) {
        if self.forms.as_ref().is_some_and(|f| f.is_match(s.as_str())) {
            *s = self.text(s);
        }
    }

    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::Text(s) => Value::Text(self.text(s)),
            Value::TextList(l) => Value::TextList(l.iter().map(|s| self.text(s)).collect()),
            Value::Integer(i) if self.text(&i.to_string()) != i.to_string() => {
                Value::Text(MASK.into())
            }
            Value::Float(f) if self.text(&f.to_string()) != f.to_string() => {
                Value::Text(MASK.into())
            }
            other => other.clone(),
        }
    }

    /// Error text as it may be kept: secrets masked, URL query strings cut.
    pub fn error_text(&self, s: &str) -> String {
        strip_queries(&self.text(s))
    }

    pub fn failure(&self, f: &mut Failure) {
        if let Some(message) = f.message_mut() {
            *message = self.error_text(message);
        }
    }

    /// Masks everything a call produced, names included.
    pub fn invocation(&self, inv: &mut Invocation) {
        match &mut inv.result {
            Ok(o) => {
                if !self.is_empty() {
                    self.mask(&mut o.summary);
                    for (k, v) in &mut o.outputs {
                        self.mask(k);
                        *v = self.value(v);
                    }
                    for (k, _) in &mut o.metrics {
                        self.mask(k);
                    }
                }
            }
            Err(f) => self.failure(f),
        }
        if self.is_empty() {
            return;
        }
        for line in &mut inv.logs {
            self.mask(&mut line.message);
            for (k, v) in &mut line.fields {
                self.mask(k);
                self.mask(v);
            }
        }
        for u in &mut inv.capability_uses {
            self.mask(&mut u.detail);
            self.mask(&mut u.result);
        }
        self.mask(&mut inv.stderr);
    }
}

/// `https://host/path?token=x` becomes `https://host/path?…`: query strings carry tokens.
fn strip_queries(s: &str) -> String {
    static QUERY: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#"(?i)\b(https?://[^\s?#"'<>]*)\?[^\s#"'<>]*"#).expect("valid regex")
    });
    QUERY.replace_all(s, "$1?…").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_inside_a_longer_one_and_every_form_is_masked() {
        let r = Redactor::new(&[
            Value::Text("hunter2hunter2".into()),
            Value::Text("hunter2h".into()),
            Value::Integer(987654321),
            Value::TextList(vec!["list-secret-1".into()]),
            Value::Text("a b&c=d/é".into()),
        ]);
        assert_eq!(r.text("x hunter2hunter2 y"), format!("x {MASK} y"));
        assert_eq!(r.text("pin 987654321"), format!("pin {MASK}"));
        assert_eq!(r.text("[list-secret-1]"), format!("[{MASK}]"));
        assert_eq!(r.text("q=a+b%26c%3Dd%2F%C3%A9"), format!("q={MASK}"));
        assert_eq!(r.text("/a%20b&c=d/%C3%A9"), format!("/{MASK}"));
        assert_eq!(
            r.value(&Value::Integer(987654321)),
            Value::Text(MASK.into())
        );
    }

    #[test]
    fn overlapping_secrets_leave_nothing_of_either_behind() {
        let r = Redactor::new(&[
            Value::Text("secret-long-value".into()),
            Value::Text("zz-secret".into()),
            Value::Text("adjacent".into()),
        ]);
        // Masking the longer one first would have left `zz-`, a third of the other.
        assert_eq!(r.text("<zz-secret-long-value>"), format!("<{MASK}>"));
        assert_eq!(
            r.text("adjacentadjacent zz-secret"),
            format!("{MASK}{MASK} {MASK}")
        );
        let mut s = "nothing here".to_owned();
        r.mask(&mut s);
        assert_eq!(s, "nothing here");
    }

    #[test]
    fn ten_thousand_secrets_each_masked_in_one_pass() {
        // A fleet of 10,000 targets, each with its own token.
        let secrets: Vec<Value> = (0..10_000)
            .map(|i| Value::Text(format!("token-{i:05}-x")))
            .collect();
        let r = Redactor::new(&secrets);
        assert_eq!(
            r.text("a token-00042-x b token-09999-x c token-10000-x"),
            format!("a {MASK} b {MASK} c token-10000-x")
        );
    }

    #[test]
    fn error_text_loses_query_strings() {
        let r = Redactor::new(&[]);
        assert_eq!(
            r.error_text("GET http://127.0.0.1:9/x?token=abc&b=1 failed: refused"),
            "GET http://127.0.0.1:9/x?… failed: refused"
        );
    }
}
