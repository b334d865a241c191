//! Templates and conditions: one small, well-known language (minijinja), with strict
//! undefined behaviour so a misspelled name is an error, never an empty string.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};

use crate::host::Value;

pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Runs a call into minijinja, which panics on some malformed input (`a}}b` as an
/// expression: "empty lexer stack"). A runbook must never crash Medic, so the panic is
/// contained and becomes an error naming the template; minijinja's own panic message is
/// kept off the terminal (reported upstream-style in the issue's note).
fn contained<T>(source: &str, call: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_minijinja = info
                .location()
                .is_some_and(|l| l.file().contains("minijinja"));
            if !in_minijinja {
                default(info);
            }
        }));
    });
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(format!(
            "`{source}` could not be parsed (the template engine gave up on it): check its braces and quotes"
        ))
    })
}

fn message(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    if let Some(detail) = e.detail()
        && !msg.contains(detail)
    {
        msg = format!("{msg}: {detail}");
    }
    msg
}

/// An expression (a condition, fleet targets), compiled, or why not.
pub fn compile_expression<'env, 'source>(
    env: &'env Environment<'source>,
    source: &'source str,
) -> Result<minijinja::Expression<'env, 'source>, String> {
    contained(source, || {
        env.compile_expression(source).map_err(|e| message(&e))
    })
}

/// Evaluates an expression against `ctx`.
pub fn eval(
    env: &Environment<'_>,
    source: &str,
    ctx: &minijinja::Value,
) -> Result<minijinja::Value, String> {
    contained(source, || {
        env.compile_expression(source)
            .and_then(|e| e.eval(ctx))
            .map_err(|e| message(&e))
    })
}

/// The names a template refers to, as dotted paths (`params.url`, `steps.deploy.outputs.v`).
pub fn references(env: &Environment<'_>, source: &str) -> Result<Vec<String>, String> {
    contained(source, || {
        let t = env.template_from_str(source).map_err(|e| e.to_string())?;
        let mut vars: Vec<String> = t.undeclared_variables(true).into_iter().collect();
        vars.sort();
        Ok(vars)
    })
}

pub fn render(
    env: &Environment<'_>,
    source: &str,
    ctx: &minijinja::Value,
) -> Result<String, String> {
    // Text with no delimiter renders as itself (unless it ends in a line break). A fleet's
    // listed targets are such text: lexing each was 9% of the run's thread in a fleet of
    // 1,000 trivial targets, all of it before the first call.
    if is_plain(source) {
        return Ok(source.to_owned());
    }
    contained(source, || {
        env.render_str(source, ctx).map_err(|e| message(&e))
    })
}

/// Whether `source` renders as itself: no `{` (every delimiter starts with one) and no
/// trailing line break (minijinja drops one, `\n`, `\r\n` or a lone `\r`). True of the
/// syntax and settings of [`environment`], which every caller of [`render`] passes.
fn is_plain(source: &str) -> bool {
    !source.contains('{') && !source.ends_with(['\n', '\r'])
}

/// Filter and test names minijinja knows, for did-you-mean hints only: whether a name is
/// known is asked of the environment itself.
const KNOWN: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "defined",
    "undefined",
    "none",
    "number",
    "even",
    "odd",
    "true",
    "false",
    "divisibleby",
    "iterable",
    "mapping",
    "sequence",
    "startingwith",
    "endingwith",
    "in",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "boolean",
];

/// Filters (`| name`) and tests (`is name`) a template or expression uses that the template
/// engine does not have: `{{ params.v | uper }}` fails only when rendered, i.e. mid-run, so
/// it is found here, before anything runs. Each with a did-you-mean hint.
pub fn unknown_filters(
    env: &Environment<'_>,
    source: &str,
    expression: bool,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (kind, name) in filter_and_test_names(source, expression) {
        let probe = match kind {
            Kind::Filter => format!("none | {name}"),
            Kind::Test => format!("none is {name}"),
        };
        let unknown = contained(&probe, || {
            Ok(env
                .compile_expression(&probe)
                .and_then(|e| e.eval(minijinja::context! {}))
                .err()
                .is_some_and(|e| {
                    matches!(
                        e.kind(),
                        minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
                    )
                }))
        })
        .unwrap_or(false);
        if unknown {
            let what = match kind {
                Kind::Filter => "filter",
                Kind::Test => "test",
            };
            let hint = super::diag::did_you_mean(&name, KNOWN.iter().copied());
            let message = format!("unknown {what} `{name}`");
            if !out.iter().any(|(m, _)| *m == message) {
                out.push((message, hint));
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Filter,
    Test,
}

/// The names after `|` and after `is` (or `is not`), in the code parts of a template (or in
/// a whole expression), outside string literals.
fn filter_and_test_names(source: &str, expression: bool) -> Vec<(Kind, String)> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut code = expression;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    let ident_at = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let start = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        (start < j && !b[start].is_ascii_digit()).then(|| (source[start..j].to_owned(), j))
    };
    while i < b.len() {
        let c = b[i];
        if !code {
            if c == b'{' && matches!(b.get(i + 1), Some(b'{' | b'%')) {
                code = true;
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), b'\\') => i += 1,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'}' | b'%') if !expression && b.get(i + 1) == Some(&b'}') => {
                code = false;
                i += 2;
                continue;
            }
            (None, b'|') => {
                if let Some((name, _)) = ident_at(i + 1) {
                    out.push((Kind::Filter, name));
                }
            }
            (None, b'i')
                if b.get(i + 1) == Some(&b's')
                    && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
                    && b.get(i + 2).is_some_and(u8::is_ascii_whitespace) =>
            {
                if let Some((mut name, end)) = ident_at(i + 2) {
                    if name == "not"
                        && let Some((next, _)) = ident_at(end)
                    {
                        name = next;
                    }
                    out.push((Kind::Test, name));
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The expression of a template that is exactly one `{{ expression }}`.
pub fn sole_expression(source: &str) -> Option<&str> {
    source
        .trim()
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.contains("{{") && !e.contains("}}"))
}

/// A list from a template: `{{ params.hosts }}` gives the list itself (rendering it would give
/// its printed form); any other template is rendered and split at commas.
pub fn render_list(
    env: &Environment<'_>,
    source: &str,
    ctx: &minijinja::Value,
) -> Result<Vec<String>, String> {
    match sole_expression(source) {
        Some(expr) => eval_list(env, expr, ctx),
        None => render(env, source, ctx).map(|s| split_list(&s)),
    }
}

/// The list an expression gives; a text is split at commas, like `--param hosts=a,b`.
pub fn eval_list(
    env: &Environment<'_>,
    expr: &str,
    ctx: &minijinja::Value,
) -> Result<Vec<String>, String> {
    let value = eval(env, expr, ctx).map_err(|e| format!("`{expr}`: {e}"))?;
    if value.is_undefined() {
        return Err(format!("`{expr}` is undefined"));
    }
    match value.as_str() {
        Some(s) => Ok(split_list(s)),
        None => Ok(value
            .try_iter()
            .map_err(|_| format!("`{expr}` is {value}, not a list"))?
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect()),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

pub fn to_jinja(v: &Value) -> minijinja::Value {
    match v {
        Value::Text(s) => minijinja::Value::from(s.clone()),
        Value::Integer(i) => minijinja::Value::from(*i),
        Value::Float(f) => minijinja::Value::from(*f),
        Value::Boolean(b) => minijinja::Value::from(*b),
        Value::Duration(d) => minijinja::Value::from(humantime::format_duration(*d).to_string()),
        Value::TextList(l) => minijinja::Value::from(l.clone()),
    }
}

pub fn map_to_jinja<'a>(
    values: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> minijinja::Value {
    let m: BTreeMap<String, minijinja::Value> = values
        .into_iter()
        .map(|(k, v)| (k.clone(), to_jinja(v)))
        .collect();
    minijinja::Value::from(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_delimiters_renders_as_minijinja_renders_it() {
        let env = environment();
        let ctx = minijinja::context! { target => "x" };
        let texts = [
            "",
            "host-00001",
            "web 1 ",
            " a\tb ",
            "100%",
            "a#b",
            "a}b",
            "}}",
            "%}",
            "#}",
            "line\nline",
            "a\r",
            "\r\n x",
            "naïve ✓",
            "-",
            "a\n",
            "a\r\n",
            "\n",
            "a\n\n",
            "a\n\r",
            "a\r\r",
            "a}}b",
            "{",
            "a{b",
            "{{ target }}",
            "{# c #}x",
            "{% if true %}y{% endif %}",
        ];
        for text in texts {
            let slow = env.render_str(text, &ctx).map_err(|e| message(&e));
            if is_plain(text) {
                assert_eq!(render(&env, text, &ctx), slow, "{text:?}");
            } else {
                assert_eq!(render(&env, text, &ctx).ok(), slow.ok(), "{text:?}");
            }
        }
        assert!(is_plain("host-00001") && !is_plain("a\n") && !is_plain("{{ target }}"));
    }

    #[test]
    fn malformed_templates_are_errors_not_panics() {
        let env = environment();
        let ctx = minijinja::context! {};
        for bad in ["a}}b", "}}", "a %} b", "{{ a }}}}", "((((", "{% if %}"] {
            assert!(compile_expression(&env, bad).is_err() || eval(&env, bad, &ctx).is_err());
            let _ = references(&env, bad);
            let _ = render(&env, bad, &ctx);
        }
        let e = eval(&env, "a}}b", &ctx).unwrap_err();
        assert!(e.contains("`a}}b`"), "{e}");
    }

    #[test]
    fn unknown_filters_and_tests_are_found_before_rendering() {
        let env = environment();
        let found = |s: &str, expr: bool| -> Vec<String> {
            unknown_filters(&env, s, expr)
                .into_iter()
                .map(|(m, h)| format!("{m} {}", h.unwrap_or_default()))
                .collect()
        };
        assert_eq!(
            found("x {{ params.v | uper }} y", false),
            ["unknown filter `uper` did you mean `upper`?"]
        );
        assert!(found("{{ params.v | upper | trim }} '|nope' {{ 'a|b' }}", false).is_empty());
        assert_eq!(
            found("steps.a.status is not faild", true),
            ["unknown test `faild` "]
        );
        assert!(found("x is defined and y is not none", true).is_empty());
        assert!(found("this | is not code", false).is_empty());
    }
}
