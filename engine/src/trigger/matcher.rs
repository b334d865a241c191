//! Label matchers as Alertmanager writes them in routes and silences: `name = "value"`,
//! `name != "value"`, `name =~ "regex"`, `name !~ "regex"`. Regexes are anchored at both
//! ends, as Alertmanager anchors them; a missing label matches as the empty string.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    /// The anchored regex, for `=~` and `!~`.
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Matcher {
    /// Parses one matcher; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let s = text.trim();
        // Dots too: a webhook's nested fields (`deploy.service`).
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "`{text}` does not start with a label name (letters, digits, `_` and `.`, not a digit first)"
            ));
        }
        let rest = s[name_end..].trim_start();
        let (op, rest) = [
            ("=~", Op::Regex),
            ("!~", Op::NotRegex),
            ("!=", Op::NotEqual),
            ("=", Op::Equal),
        ]
        .into_iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (op, r.trim())))
        .ok_or_else(|| format!("`{text}` has no operator after `{name}`: use =, !=, =~ or !~"))?;
        let value = if let Some(inner) = rest.strip_prefix('"') {
            let Some(inner) = inner.strip_suffix('"') else {
                return Err(format!("`{text}`: the value's closing `\"` is missing"));
            };
            unescape(inner).ok_or_else(|| format!("`{text}`: a `\\` escapes nothing"))?
        } else {
            if rest.contains(|c: char| c.is_whitespace() || c == '"') {
                return Err(format!(
                    "`{text}`: quote a value that has spaces or quotes: {name}{}\"…\"",
                    match op {
                        Op::Equal => "=",
                        Op::NotEqual => "!=",
                        Op::Regex => "=~",
                        Op::NotRegex => "!~",
                    }
                ));
            }
            rest.to_owned()
        };
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        // The regex crate draws the pattern over several lines; the last says
                        // what is wrong, and the report already shows where.
                        let e = e.to_string();
                        let why = e.lines().last().unwrap_or("").trim_start_matches("error: ");
                        format!("`{text}`: not a regular expression: {why}")
                    })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(r)) => r.is_match(v),
            (Op::NotRegex, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }

    /// As Alertmanager's API v2 writes a silence's matcher.
    pub fn to_silence(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "value": self.value,
            "isRegex": matches!(self.op, Op::Regex | Op::NotRegex),
            "isEqual": matches!(self.op, Op::Equal | Op::Regex),
        })
    }
}

/// `\"`, `\\` and `\n` as Alertmanager reads them; any other backslash is kept, so a
/// regex's own escapes (`\.`, `\d`) mean what they say.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                c @ ('"' | '\\') => out.push(c),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_four_operators_match_as_alertmanager_does() {
        let l = labels(&[("alertname", "WebDown"), ("instance", "10.0.0.1:80")]);
        let m = |s: &str| Matcher::parse(s).unwrap().matches(&l);
        assert!(m("alertname = \"WebDown\""));
        assert!(m("alertname=WebDown"));
        assert!(!m("alertname != WebDown"));
        assert!(m(r#"instance =~ "10\.0\.0\.\d+:80""#));
        // Anchored: a part of the value is not a match.
        assert!(!m(r#"instance =~ "10\.0""#));
        assert!(m(r#"instance !~ "10\.0""#));
        // A missing label is the empty string.
        assert!(m("severity = \"\""));
        assert!(m("severity != critical"));
        assert!(m("severity !~ \"crit.*\""));
        assert!(
            m(r#"instance =~ "10\\.0\\.0\\.1:80""#),
            "an escaped backslash"
        );
        assert!(!m(r#"instance =~ "10\.0\.0\.2:80""#));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("= x", "label name"),
            ("alertname", "no operator"),
            ("alertname == x", "quote a value"),
            ("a =~ \"(\"", "not a regular expression"),
            ("a = \"x", "closing"),
            ("a = x y", "quote a value"),
            ("1a = x", "label name"),
        ] {
            let e = Matcher::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        // `==` reads as `=` then a value starting with `=`, as Alertmanager's parser reads it.
        assert_eq!(Matcher::parse("a ==x").unwrap().value, "=x");
    }
}
