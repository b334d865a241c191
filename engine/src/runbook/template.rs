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
/// kept off the terminal (reported upstream-style in the note).
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
    contained(source, || {
        env.render_str(source, ctx).map_err(|e| message(&e))
    })
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
}
