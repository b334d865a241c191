//! Step sections (`steps`, `rollback`, `verify`, `finally`): ids, plugins, timeouts,
//! conditions, retries, gates, approvals, and how each step is undone.

use super::*;

impl Validator<'_> {
    /// Validates one section of steps. `before` are ids of steps that always precede it (the
    /// main steps, for rollback/verify/finally); `all_ids` collects ids across sections so
    /// they are unique in the whole runbook.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn section(
        &mut self,
        doc: &RunbookDoc,
        decls: &[Spanned<StepDecl>],
        section: &str,
        before: &[String],
        plugins: &[Option<PlanPlugin>],
        default_on_failure: OnFailure,
        all_ids: &mut HashMap<String, Range<usize>>,
    ) -> Vec<PlanStep> {
        let aliases: Vec<&str> = doc.plugins.keys().map(|k| k.get_ref().as_str()).collect();
        let mut earlier: Vec<String> = before.to_vec();
        earlier.extend(decls.iter().map(|d| d.get_ref().id.get_ref().clone()));
        let mut position: HashMap<String, usize> = HashMap::with_capacity(earlier.len());
        for (i, id) in earlier.iter().enumerate() {
            position.entry(id.clone()).or_insert(i);
        }
        let earlier = earlier;
        let position = position;
        let mut out = Vec::new();
        for (index_in_section, decl) in decls.iter().enumerate() {
            let step = decl.get_ref();
            let id = step.id.get_ref();
            if !valid_name(id) {
                self.err(
                    Diagnostic::at(
                        step.id.span(),
                        format!("step id `{id}` must be lowercase letters, digits and underscores"),
                    )
                    .help_opt(name_hint(id).map(|h| format!("try `{h}`"))),
                );
            }
            if all_ids.contains_key(id) {
                self.err(
                    Diagnostic::at(step.id.span(), format!("step id `{id}` is used twice"))
                        .help("step ids must be unique across steps, rollback, verify and finally"),
                );
            } else {
                all_ids.insert(id.clone(), step.id.span());
            }
            // This step's place in the section: the steps before it are in scope.
            let scope_ids = Earlier {
                ids: &earlier,
                upto: before.len() + index_in_section,
                position: &position,
            };

            // A plugin that is unknown or did not load still leaves the rest of the step to
            // check: one wrong `uses` must not hide the other mistakes in it.
            let index = aliases.iter().position(|a| a == step.uses.get_ref());
            if index.is_none() {
                self.err(
                    Diagnostic::at(
                        step.uses.span(),
                        format!(
                            "step `{id}` uses `{}`, which is not declared under [plugins]",
                            step.uses.get_ref()
                        ),
                    )
                    .help(
                        did_you_mean(step.uses.get_ref(), aliases.iter().copied()).unwrap_or_else(
                            || {
                                format!(
                                    "declare it with [plugins.{}] source = \"builtin:...\"",
                                    step.uses.get_ref()
                                )
                            },
                        ),
                    ),
                );
            }
            let pp = index.and_then(|i| plugins[i].as_ref());
            let fleet = step
                .fleet
                .as_ref()
                .and_then(|f| self.fleet(id, f, Scope::Step(scope_ids)));
            let scope = if step.fleet.is_some() {
                Scope::Target(scope_ids)
            } else {
                Scope::Step(scope_ids)
            };
            let with = match pp {
                Some(pp) => {
                    self.check_urls(id, &step.with, pp);
                    self.args(id, &step.with, &step.id.span(), &pp.plugin, scope)
                }
                None => {
                    self.templates_only(&step.with, scope);
                    None
                }
            };
            if let (Some(_), Some(g)) = (&step.fleet, &step.gate) {
                self.err(
                    Diagnostic::at(g.span(), format!("step `{id}` has both a gate and a fleet"))
                        .help(format!(
                            "a gate watches one thing over time; watch the fleet in a gated step after `{id}`"
                        )),
                );
            }

            let timeout = step
                .timeout
                .as_ref()
                .and_then(|t| self.duration(t, "step timeout"))
                .or(pp.and_then(|pp| pp.timeout))
                .unwrap_or(limits::DEFAULT_TIMEOUT);
            let on_failure = step
                .on_failure
                .as_ref()
                .map(|o| *o.get_ref())
                .unwrap_or(default_on_failure);
            if section != "steps"
                && let Some(of) = &step.on_failure
            {
                self.err(Diagnostic::at(of.span(), format!("`on_failure` applies to [[steps]]; a failure in [[{section}]] never stops the rest of it")));
            }
            if section != "steps" && step.rollback.is_some() {
                self.err(Diagnostic::at(decl.span(), format!("step `{id}` in [[{section}]] has a rollback; only [[steps]] are rolled back")));
            }
            let when = step.when.as_ref().and_then(|w| match template::compile_expression(&self.env, w.get_ref()) {
                Ok(expr) => {
                    let refs = expr.undeclared_variables(true).into_iter().collect();
                    let filters_ok = self.check_filters(w.get_ref(), &w.span(), true);
                    // Decided once for the whole step, before any target.
                    let refs_ok = self.check_refs(refs, &w.span(), Scope::Step(scope_ids)).0;
                    (refs_ok && filters_ok).then(|| w.get_ref().clone())
                }
                Err(e) => {
                    let help = if lone_equals(w.get_ref()) {
                        "`=` assigns nothing in a condition: did you mean `==`?".to_owned()
                    } else {
                        "`when` is an expression, e.g. when = \"params.force or steps.check.status == 'failed'\"".to_owned()
                    };
                    self.err(Diagnostic::at(w.span(), format!("condition: {e}")).help(help));
                    None
                }
            });
            let retry = step.retry.as_ref().map(|r| {
                let rd = r.get_ref();
                if *rd.attempts.get_ref() < 1 || *rd.attempts.get_ref() > 100 {
                    self.err(Diagnostic::at(
                        rd.attempts.span(),
                        "retry attempts must be between 1 and 100",
                    ));
                }
                let backoff = rd
                    .backoff
                    .as_ref()
                    .and_then(|b| self.duration(b, "retry backoff"))
                    .unwrap_or(Duration::from_secs(1));
                let max_backoff = match rd.max_backoff.as_ref() {
                    None => Duration::from_secs(60).max(backoff),
                    Some(b) => match self.duration(b, "retry max_backoff") {
                        Some(m) if m < backoff => {
                            self.err(
                                Diagnostic::at(
                                    b.span(),
                                    format!(
                                        "retry max_backoff ({}) is shorter than its backoff ({})",
                                        humantime::format_duration(m),
                                        humantime::format_duration(backoff)
                                    ),
                                )
                                .help("max_backoff caps the growing wait; make it at least the backoff"),
                            );
                            backoff
                        }
                        Some(m) => m,
                        None => backoff,
                    },
                };
                Retry {
                    attempts: *rd.attempts.get_ref(),
                    backoff,
                    max_backoff,
                    jitter: rd.jitter,
                    on: rd.on,
                }
            });
            let gate = step.gate.as_ref().and_then(|g| {
                let gd = g.get_ref();
                if let Some(pp) = pp
                    && pp.plugin.manifest.kind != PluginKind::Check
                {
                    self.err(Diagnostic::at(
                        g.span(),
                        format!(
                            "step `{id}` has a gate but {} is an action; gates repeat checks",
                            pp.plugin.manifest.name
                        ),
                    ));
                }
                if step.retry.is_some() {
                    self.err(
                        Diagnostic::at(
                            g.span(),
                            format!("step `{id}` has both a gate and a retry"),
                        )
                        .help("a gate already repeats its check; set its `failures` instead"),
                    );
                }
                let delay = gd
                    .delay
                    .as_ref()
                    .map_or(Some(Duration::ZERO), |d| self.duration(d, "gate delay"));
                let interval = self.duration(&gd.interval, "gate interval");
                let limit = self.duration(&gd.timeout, "gate timeout");
                if let (Some(i), Some(l)) = (interval, limit)
                    && i > l
                {
                    self.err(
                        Diagnostic::at(
                            gd.interval.span(),
                            format!(
                                "gate interval ({}) is longer than its timeout ({}): it could check only once",
                                humantime::format_duration(i),
                                humantime::format_duration(l)
                            ),
                        )
                        .help("check more often than the time limit, e.g. interval = \"10s\" with timeout = \"5m\""),
                    );
                }
                let hold = match &gd.hold {
                    None => Some(Duration::ZERO),
                    Some(h) => match (self.duration(h, "gate hold"), limit) {
                        (Some(hold), Some(limit)) if hold >= limit => {
                            self.err(
                                Diagnostic::at(
                                    h.span(),
                                    format!(
                                        "gate hold ({}) must be shorter than its timeout ({})",
                                        humantime::format_duration(hold),
                                        humantime::format_duration(limit)
                                    ),
                                )
                                .help("the timeout counts from the first check, like the hold"),
                            );
                            None
                        }
                        (hold, _) => hold,
                    },
                };
                let successes = gd.successes.as_ref().map_or(1, |s| *s.get_ref());
                let failures = gd.failures.as_ref().map_or(1, |s| *s.get_ref());
                for (n, what) in [(&gd.successes, "successes"), (&gd.failures, "failures")] {
                    if let Some(n) = n
                        && *n.get_ref() == 0
                    {
                        self.err(Diagnostic::at(
                            n.span(),
                            format!("gate {what} must be at least 1"),
                        ));
                    }
                }
                let pause_on_inconclusive =
                    match gd.inconclusive.as_ref().map(|i| (i, i.get_ref().as_str())) {
                        None | Some((_, "ignore")) => false,
                        Some((_, "pause")) => true,
                        Some((i, other)) => {
                            self.err(
                                Diagnostic::at(
                                    i.span(),
                                    format!("gate inconclusive: `{other}` is not a choice"),
                                )
                                .help("use \"ignore\" (the default) or \"pause\" (ask a person)"),
                            );
                            false
                        }
                    };
                Some(Gate {
                    pause_on_inconclusive,
                    delay: delay?,
                    interval: interval?,
                    successes,
                    failures,
                    timeout: limit?,
                    hold: hold?,
                })
            });
            let rollback = step
                .rollback
                .as_ref()
                .and_then(|r| self.rollback(id, r, &pp?.plugin, plugins, &aliases, scope));
            let approval = step.approval.as_ref().and_then(|a| {
                if section != "steps" {
                    self.err(Diagnostic::at(
                        a.span(),
                        format!("step `{id}` in [[{section}]] asks for an approval; a rollback or cleanup must not wait for a person"),
                    ));
                }
                let timeout = self.duration(&a.get_ref().timeout, "approval timeout")?;
                // Rendered when the run asks (`{{ params.version }}` shows the version), and
                // shown to approvers and recorded: no secret in it.
                if let Some(p) = &a.get_ref().prompt {
                    self.check_public(p, &a.span(), scope, "an approval prompt");
                }
                let prompt = a.get_ref().prompt.clone().unwrap_or_else(|| format!("run step `{id}`?"));
                Some(ApprovalGate { timeout, prompt })
            });
            if let (Some(index), Some((with, secret_params))) = (index, with) {
                out.push(PlanStep {
                    id: id.clone(),
                    description: step.description.clone(),
                    plugin: index,
                    with,
                    secret_params,
                    timeout,
                    on_failure,
                    when,
                    retry,
                    gate,
                    rollback,
                    approval,
                    fleet,
                });
            }
        }
        out
    }

    pub(super) fn rollback(
        &mut self,
        id: &str,
        r: &Spanned<RollbackDecl>,
        plugin: &Plugin,
        plugins: &[Option<PlanPlugin>],
        aliases: &[&str],
        scope: Scope<'_>,
    ) -> Option<StepRollback> {
        let span = r.span();
        match r.get_ref() {
            RollbackDecl::Keyword(k) if k == "revert" => {
                if !plugin.manifest.supports_revert {
                    self.err(
                        Diagnostic::at(
                            span,
                            format!("step `{id}`: {} cannot revert itself", plugin.manifest.name),
                        )
                        .help("use rollback = { uses = \"PLUGIN\", with = { ... } } instead"),
                    );
                    return None;
                }
                Some(StepRollback::Revert)
            }
            RollbackDecl::Keyword(k) => {
                self.err(Diagnostic::at(span, format!("step `{id}`: unknown rollback `{k}`")).help("rollback = \"revert\", or rollback = { uses = \"PLUGIN\", with = { ... } }"));
                None
            }
            RollbackDecl::Call(call) => {
                // An empty `uses` stands for a missing one, already reported.
                let Some(index) = aliases.iter().position(|a| *a == call.uses) else {
                    if call.uses.is_empty() {
                        return None;
                    }
                    self.err(Diagnostic::at(span, format!("step `{id}`: the rollback uses `{}`, which is not declared under [plugins]", call.uses)).help_opt(did_you_mean(&call.uses, aliases.iter().copied())));
                    return None;
                };
                let pp = plugins[index].as_ref()?;
                let with: BTreeMap<Spanned<String>, Spanned<toml::Value>> = call
                    .with
                    .iter()
                    .map(|(k, v)| {
                        (
                            Spanned::new(span.clone(), k.clone()),
                            Spanned::new(span.clone(), v.clone()),
                        )
                    })
                    .collect();
                // The rollback may use the step's own outputs as well as earlier steps'.
                let inner = match scope {
                    Scope::Target(e) => Scope::Target(e.and_own()),
                    Scope::Step(e) => Scope::Step(e.and_own()),
                    Scope::Plan => Scope::Plan,
                };
                let (with, secret_params) =
                    self.args(&format!("{id} (rollback)"), &with, &span, &pp.plugin, inner)?;
                let timeout = call
                    .timeout
                    .as_ref()
                    .and_then(|t| self.duration_at(t, span.clone(), "rollback timeout"))
                    .or(pp.timeout)
                    .unwrap_or(limits::DEFAULT_TIMEOUT);
                Some(StepRollback::Call {
                    plugin: index,
                    with,
                    secret_params,
                    timeout,
                })
            }
        }
    }
}
