//! Values as written in a runbook: names, durations, typed parameters.

use super::*;

pub(super) fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A valid name close to `s` (lower case, other characters as `_`), for a did-you-mean;
/// none when nothing close is valid.
pub(super) fn name_hint(s: &str) -> Option<String> {
    let mut hint: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    while hint.contains("__") {
        hint = hint.replace("__", "_");
    }
    let hint = hint.trim_matches('_').to_owned();
    (valid_name(&hint) && hint != s).then_some(hint)
}

pub(super) fn toml_kind(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the float {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// Whether an expression has a `=` that is not part of `==`, `!=`, `<=` or `>=` (outside
/// quotes): the usual slip in a condition.
pub(super) fn lone_equals(expr: &str) -> bool {
    let b = expr.as_bytes();
    let mut quote = None;
    for (i, &c) in b.iter().enumerate() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'=') => {
                let before = i.checked_sub(1).map(|j| b[j]);
                let after = b.get(i + 1).copied();
                let paired =
                    after == Some(b'=') || matches!(before, Some(b'=' | b'!' | b'<' | b'>'));
                if !paired {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// The longest anything in a runbook may last or wait (a timeout, an approval, a gate):
/// beyond it a value is a mistake (`99999999h`), and deadlines computed from it would
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 30s or 2m"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{s}` is longer than Medic waits for anything ({})",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// Converts text (a `--param` value or a rendered template) to a typed value.
pub fn text_to_value(s: &str, ty: ValueType) -> Result<Value, String> {
    match ty {
        ValueType::Text => Ok(Value::Text(s.to_owned())),
        ValueType::Integer => s
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("`{s}` is not an integer")),
        ValueType::Float => s
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("`{s}` is not a number")),
        ValueType::Boolean => match s.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{s}` is not true or false")),
        },
        ValueType::Duration => parse_duration(s).map(Value::Duration),
        // `["a", "b"]` (JSON, as TOML writes it too: items may hold commas) or `a,b`.
        ValueType::TextList if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<String>>(s.trim())
                .map(Value::TextList)
                .map_err(|e| {
                    format!(
                        "`{s}` is not a list of strings ({e}): write [\"a\", \"b\"] with double quotes, or a,b"
                    )
                })
        }
        ValueType::TextList => Ok(Value::TextList(
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        )),
    }
}

pub(super) fn toml_to_value(v: &toml::Value, ty: ValueType) -> Result<Value, String> {
    let wrong = || format!("expected {ty}, found {}", toml_kind(v));
    match (ty, v) {
        (ValueType::Text, toml::Value::String(s)) => Ok(Value::Text(s.clone())),
        (ValueType::Integer, toml::Value::Integer(i)) => Ok(Value::Integer(*i)),
        (ValueType::Float, toml::Value::Float(f)) => Ok(Value::Float(*f)),
        (ValueType::Float, toml::Value::Integer(i)) => Ok(Value::Float(*i as f64)),
        (ValueType::Boolean, toml::Value::Boolean(b)) => Ok(Value::Boolean(*b)),
        (ValueType::Duration, toml::Value::String(s)) => parse_duration(s).map(Value::Duration),
        (ValueType::TextList, toml::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("expected a list of strings, found {} in it", toml_kind(i))
                })
            })
            .collect::<Result<_, _>>()
            .map(Value::TextList),
        _ => Err(wrong()),
    }
}

/// Environment variables hold plain values: strings, numbers, booleans, lists of strings.
pub(super) fn var_value(v: &toml::Value) -> Result<Value, String> {
    match v {
        toml::Value::String(s) => Ok(Value::Text(s.clone())),
        toml::Value::Integer(i) => Ok(Value::Integer(*i)),
        toml::Value::Float(f) => Ok(Value::Float(*f)),
        toml::Value::Boolean(b) => Ok(Value::Boolean(*b)),
        toml::Value::Array(_) => toml_to_value(v, ValueType::TextList),
        other => Err(format!(
            "a variable must be a string, number, boolean or list of strings, not {}",
            toml_kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Result<Vec<String>, String> {
        match text_to_value(s, ValueType::TextList)? {
            Value::TextList(l) => Ok(l),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_hint_is_valid_or_not_given() {
        assert_eq!(name_hint("Check-Health").as_deref(), Some("check_health"));
        assert_eq!(name_hint("check_<b>").as_deref(), Some("check_b"));
        assert_eq!(name_hint("deploy.v2 now").as_deref(), Some("deploy_v2_now"));
        // Nothing valid is close: no hint rather than a wrong one.
        assert_eq!(name_hint("2fast"), None);
        assert_eq!(name_hint("<>"), None);
    }

    #[test]
    fn a_list_parameter_takes_the_json_form_and_the_comma_form() {
        assert_eq!(list(r#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(
            list(r#" [ "a, with comma", "b" ] "#).unwrap(),
            ["a, with comma", "b"]
        );
        assert_eq!(list("a, b,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(list("[]").unwrap(), Vec::<String>::new());
        let e = list(r#"["a","b""#).unwrap_err();
        assert!(e.contains("is not a list of strings"), "{e}");
        assert!(list("['a']").is_err(), "single quotes are not JSON");
    }

    #[test]
    fn a_recorded_list_reads_back_as_the_same_list() {
        for items in [
            vec!["a", "b"],
            vec!["a, with comma", "b"],
            vec![" padded", "x"],
            vec!["[looks like a list"],
            vec![],
        ] {
            let value = Value::TextList(items.iter().map(|s| s.to_string()).collect());
            let text = crate::store::param_text(&value);
            assert_eq!(
                text_to_value(&text, ValueType::TextList).unwrap(),
                value,
                "{text}"
            );
        }
    }
}
