//! `[steps.fleet]`: targets, concurrency and error budgets.

use super::*;

impl Validator<'_> {
    pub(super) fn fleet(
        &mut self,
        id: &str,
        decl: &Spanned<FleetDecl>,
        scope: Scope<'_>,
    ) -> Option<Fleet> {
        let fd = decl.get_ref();
        let span = fd.targets.span();
        let targets = match fd.targets.get_ref() {
            toml::Value::Array(items) => {
                let mut list: Vec<String> = Vec::new();
                for item in items {
                    let Some(t) = item.as_str() else {
                        self.err(Diagnostic::at(
                            span.clone(),
                            format!(
                                "step `{id}`: fleet targets must be strings, found {}",
                                toml_kind(item)
                            ),
                        ));
                        return None;
                    };
                    if template::is_template(t) {
                        if !self.check_public(t, &span, scope, "fleet targets") {
                            return None;
                        }
                    } else if list.iter().any(|l| l == t) {
                        self.err(Diagnostic::at(
                            span.clone(),
                            format!("step `{id}`: fleet target `{t}` is listed twice"),
                        ));
                        return None;
                    }
                    list.push(t.to_owned());
                }
                if list.is_empty() {
                    self.err(Diagnostic::at(
                        span,
                        format!("step `{id}`: the fleet has no targets"),
                    ));
                    return None;
                }
                FleetTargets::List(list)
            }
            toml::Value::String(s) => {
                let Some(expr) = template::sole_expression(s) else {
                    self.err(Diagnostic::at(span, format!("step `{id}`: fleet targets must be a list, or one `{{{{ expression }}}}` that gives a list")).help("e.g. targets = [\"web-1\", \"web-2\"] or targets = \"{{ params.hosts }}\""));
                    return None;
                };
                match template::compile_expression(&self.env, expr) {
                    Ok(e) => {
                        let refs = e.undeclared_variables(true).into_iter().collect();
                        let filters_ok = self.check_filters(expr, &span, true);
                        let (ok, secret) = self.check_refs(refs, &span, scope);
                        let ok = ok && filters_ok;
                        if secret {
                            self.secret_shown(&span, "fleet targets");
                        }
                        if !ok || secret {
                            return None;
                        }
                    }
                    Err(e) => {
                        self.err(Diagnostic::at(
                            span,
                            format!("step `{id}`: fleet targets: {e}"),
                        ));
                        return None;
                    }
                }
                FleetTargets::Expr(expr.to_owned())
            }
            other => {
                self.err(Diagnostic::at(
                    span,
                    format!(
                        "step `{id}`: fleet targets must be a list of strings, found {}",
                        toml_kind(other)
                    ),
                ));
                return None;
            }
        };
        let max_concurrency = match &fd.max_concurrency {
            None => Some(Amount::Count(1)),
            Some(v) => self.amount(id, "max_concurrency", v, 1),
        };
        let max_errors = match &fd.max_errors {
            None => Some(Amount::Count(0)),
            Some(v) => self.amount(id, "max_errors", v, 0),
        };
        let order = match fd.order.as_ref().map(|o| (o, o.get_ref().as_str())) {
            None | Some((_, "listed")) => Some(FleetOrder::Listed),
            Some((_, "reverse")) => Some(FleetOrder::Reverse),
            Some((_, "random")) => Some(FleetOrder::Random),
            Some((o, other)) => {
                self.err(
                    Diagnostic::at(
                        o.span(),
                        format!("step `{id}`: fleet order `{other}` is not a choice"),
                    )
                    .help(
                        did_you_mean(other, ["listed", "reverse", "random"]).unwrap_or_else(|| {
                            "use \"listed\" (the default), \"reverse\" or \"random\"".into()
                        }),
                    ),
                );
                None
            }
        };
        Some(Fleet {
            targets,
            max_concurrency: max_concurrency?,
            max_errors: max_errors?,
            order: order?,
        })
    }

    /// A count (at least `min`), a percent, or (for concurrency) a CodeDeploy name.
    pub(super) fn amount(
        &mut self,
        id: &str,
        what: &str,
        v: &Spanned<toml::Value>,
        min: i64,
    ) -> Option<Amount> {
        let named = |s: &str| match s.strip_prefix("CodeDeployDefault.").unwrap_or(s) {
            "OneAtATime" => Some(Amount::Count(1)),
            "HalfAtATime" => Some(Amount::Percent(50)),
            "AllAtOnce" => Some(Amount::Percent(100)),
            _ => None,
        };
        let problem = match v.get_ref() {
            toml::Value::Integer(n) if *n >= min && *n <= u32::MAX as i64 => {
                return Some(Amount::Count(*n as u32));
            }
            toml::Value::Integer(n) if *n < min => format!("{n} is less than {min}"),
            toml::Value::Integer(n) => format!("{n} is more than any fleet"),
            toml::Value::String(s) if min > 0 && named(s).is_some() => return named(s),
            toml::Value::String(s) => match s.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
                Some(Ok(p)) if p <= 100 && (p > 0 || min == 0) => return Some(Amount::Percent(p)),
                Some(Ok(p)) => format!("{p}% is not a share of the targets"),
                _ => format!("`{s}` is neither a number nor a percent"),
            },
            other => format!("expected a number or a percent, found {}", toml_kind(other)),
        };
        let help = if min > 0 {
            "a count like 2, a percent like \"25%\", or OneAtATime, HalfAtATime, AllAtOnce"
        } else {
            "a count like 1 (0: stop at the first failure) or a percent like \"10%\""
        };
        self.err(
            Diagnostic::at(v.span(), format!("step `{id}`: fleet {what}: {problem}")).help(help),
        );
        None
    }
}
