//! Templates and the names they may use where they appear; durations.

use super::*;

impl Validator<'_> {
    pub(super) fn plan_context(&self, environment: &Environment) -> minijinja::Value {
        minijinja::context! {
            params => template::map_to_jinja(self.params.iter().map(|(k, p)| (k, &p.value))),
            vars => template::map_to_jinja(environment.vars.iter().map(|(k, v)| (k, v))),
            env => minijinja::context! { name => environment.name.clone(), protected => environment.protected },
        }
    }

    /// Checks the names an expression or template refers to. Returns whether it is sound and
    /// whether it refers to a secret parameter.
    pub(super) fn check_refs(
        &mut self,
        refs: Vec<String>,
        span: &Range<usize>,
        scope: Scope<'_>,
    ) -> (bool, bool) {
        let mut ok = true;
        let mut secret = false;
        for r in refs {
            let parts: Vec<&str> = r.split('.').collect();
            let problem = match (parts[0], scope) {
                ("params", _) => match parts.get(1) {
                    None => None,
                    Some(p) => match self.params.get(*p) {
                        Some(info) => {
                            secret |= info.secret;
                            None
                        }
                        // A declared parameter without a value has its own error already.
                        None if self.src.text.contains(&format!("[params.{p}]")) => {
                            secret |= self.secret_names.contains(*p);
                            None
                        }
                        None => Some((
                            format!("unknown parameter `{p}` in `{r}`"),
                            did_you_mean(p, self.params.keys().map(String::as_str)),
                        )),
                    },
                },
                ("vars", _) => match parts.get(1) {
                    Some(v) if !self.vars.iter().any(|x| x == v) => Some((
                        format!("unknown variable `{v}` in `{r}`"),
                        did_you_mean(v, self.vars.iter().map(String::as_str)).or_else(|| {
                            Some("variables come from the selected [environments.NAME.vars]".into())
                        }),
                    )),
                    _ => None,
                },
                ("env", _) => match parts.get(1) {
                    None | Some(&"name") | Some(&"protected") => None,
                    Some(other) => Some((
                        format!("`{r}`: env has `name` and `protected`, not `{other}`"),
                        Some("environment variables are `vars.NAME`".into()),
                    )),
                },
                ("target", Scope::Target(_)) => None,
                ("target", _) => Some((
                    "`target` is defined only in fleet steps".to_owned(),
                    Some("run the step once per target with [steps.fleet] targets = [...]".into()),
                )),
                ("steps", Scope::Step(earlier) | Scope::Target(earlier)) => match parts.get(1) {
                    None => None,
                    Some(s) if earlier.contains(s) => match parts.get(2) {
                        None | Some(&"outputs") | Some(&"status") | Some(&"summary") => None,
                        Some(other) => Some((
                            format!(
                                "`{r}`: a step has `outputs`, `status` and `summary`, not `{other}`"
                            ),
                            None,
                        )),
                    },
                    Some(s) => Some((
                        format!("`{r}` refers to step `{s}`, which does not run before this one"),
                        did_you_mean(s, earlier.names().iter().map(String::as_str)),
                    )),
                },
                (root, _) => {
                    let roots: &[&str] = match scope {
                        Scope::Target(_) => &["params", "vars", "env", "steps", "target"],
                        Scope::Step(_) => &["params", "vars", "env", "steps"],
                        Scope::Plan => &["params", "vars", "env"],
                    };
                    Some((
                        format!("unknown name `{root}` in a template"),
                        did_you_mean(root, roots.iter().copied())
                            .or_else(|| Some(format!("available here: {}", roots.join(", ")))),
                    ))
                }
            };
            if let Some((msg, hint)) = problem {
                self.err(Diagnostic::at(span.clone(), msg).help_opt(hint));
                ok = false;
            }
        }
        (ok, secret)
    }

    /// Reports the filters and tests a template or expression uses that do not exist.
    pub(super) fn check_filters(
        &mut self,
        source: &str,
        span: &Range<usize>,
        expression: bool,
    ) -> bool {
        let unknown = template::unknown_filters(&self.env, source, expression);
        let ok = unknown.is_empty();
        for (message, hint) in unknown {
            self.err(Diagnostic::at(span.clone(), message).help_opt(hint));
        }
        ok
    }

    pub(super) fn check_template(
        &mut self,
        source: &str,
        span: &Range<usize>,
        scope: Scope<'_>,
    ) -> (bool, bool) {
        match template::references(&self.env, source) {
            Ok(refs) => {
                let names_ok = self.check_filters(source, span, false);
                let (ok, secret) = self.check_refs(refs, span, scope);
                (ok && names_ok, secret)
            }
            Err(e) => {
                let unclosed = source.matches("{{").count() > source.matches("}}").count()
                    || source.matches("{%").count() > source.matches("%}").count();
                self.err(
                    Diagnostic::at(span.clone(), format!("template error: {e}")).help_opt(
                        unclosed.then(|| {
                            "a `{{` (or `{%`) is not closed with `}}` (or `%}`)".to_owned()
                        }),
                    ),
                );
                (false, false)
            }
        }
    }

    /// Like [`Self::check_template`], for text Medic prints and records by design (lock
    /// keys, grants, fleet targets): a secret there is refused.
    pub(super) fn check_public(
        &mut self,
        source: &str,
        span: &Range<usize>,
        scope: Scope<'_>,
        what: &str,
    ) -> bool {
        let (ok, secret) = self.check_template(source, span, scope);
        if secret {
            self.secret_shown(span, what);
        }
        ok && !secret
    }

    pub(super) fn secret_shown(&mut self, span: &Range<usize>, what: &str) {
        self.err(
            Diagnostic::at(
                span.clone(),
                format!(
                    "{what} cannot use a secret parameter: it is shown and recorded as written"
                ),
            )
            .help("use a parameter that is not secret"),
        );
    }

    pub(super) fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        self.duration_at(s.get_ref(), s.span(), what)
    }

    pub(super) fn duration_at(
        &mut self,
        s: &str,
        span: Range<usize>,
        what: &str,
    ) -> Option<Duration> {
        match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.err(Diagnostic::at(
                    span,
                    format!("{what} must be more than zero"),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(Diagnostic::at(span, format!("{what}: {e}")));
                None
            }
        }
    }
}
