//! Plugins' own parameter checks (the optional `validate` export): each planned step's
//! parameters whose values are known before the run, asked of its plugin.

use super::*;
use crate::host::ParamProblem;

impl Validator<'_> {
    /// Asks each step's plugin (and its rollback call's) about the step's parameters.
    /// Identical questions are asked once.
    pub(super) async fn plugin_checks(
        &mut self,
        host: &PluginHost,
        plugins: &[Option<PlanPlugin>],
        sections: &[(&[PlanStep], &[Spanned<StepDecl>])],
    ) {
        let mut asked: HashMap<String, Result<Vec<ParamProblem>, String>> = HashMap::new();
        // A plugin whose check traps or hangs is asked once: a hostile check must not cost
        // its timeout once per step.
        let mut broken: std::collections::HashSet<String> = Default::default();
        for (planned, decls) in sections {
            let by_id: HashMap<&str, &Spanned<StepDecl>> = decls
                .iter()
                .map(|d| (d.get_ref().id.get_ref().as_str(), d))
                .collect();
            for step in *planned {
                let Some(decl) = by_id.get(step.id.as_str()) else {
                    continue;
                };
                let mut calls = vec![(step.plugin, &step.with, &step.secret_params, None)];
                if let Some(StepRollback::Call {
                    plugin,
                    with,
                    secret_params,
                    ..
                }) = &step.rollback
                {
                    let span = decl.get_ref().rollback.as_ref().map(|r| r.span());
                    calls.push((*plugin, with, secret_params, span));
                }
                for (index, with, secret, rollback_span) in calls {
                    let Some(Some(pp)) = plugins.get(index) else {
                        continue;
                    };
                    if !pp.plugin.validates() || broken.contains(&pp.plugin.sha256) {
                        continue;
                    }
                    let values = self.known_values(with, secret);
                    let key = format!("{}\0{values:?}", pp.plugin.sha256);
                    let answer = match asked.get(&key) {
                        Some(a) => a.clone(),
                        None => {
                            let a = host.check_params(&pp.plugin, &values).await;
                            if a.is_err() {
                                broken.insert(pp.plugin.sha256.clone());
                            }
                            asked.insert(key, a.clone());
                            a
                        }
                    };
                    self.report_problems(&step.id, decl.get_ref(), pp, answer, rollback_span);
                }
            }
        }
    }

    /// The values a step's plugin gets that are known now: written out, or templates over
    /// parameters, variables and the environment. Secrets are left out: a plugin's answer is
    /// shown.
    fn known_values(&self, with: &[(String, Arg)], secret: &[String]) -> Vec<(String, Value)> {
        with.iter()
            .filter(|(name, _)| !secret.contains(name))
            .filter_map(|(name, arg)| {
                let value = match arg {
                    Arg::Value(v) => v.clone(),
                    Arg::Template { source, ty } => {
                        text_to_value(&self.render_now(source)?, *ty).ok()?
                    }
                    Arg::ListTemplate(_) => return None,
                };
                Some((name.clone(), value))
            })
            .collect()
    }

    fn report_problems(
        &mut self,
        id: &str,
        decl: &StepDecl,
        pp: &PlanPlugin,
        answer: Result<Vec<ParamProblem>, String>,
        rollback_span: Option<Range<usize>>,
    ) {
        let name = &pp.plugin.manifest.name;
        let problems = match answer {
            Ok(p) => p,
            Err(e) => {
                self.err(Diagnostic::at(
                    rollback_span.unwrap_or(decl.uses.span()),
                    format!("step `{id}`: plugin {name} could not check its parameters: {e}"),
                ));
                return;
            }
        };
        for p in problems {
            let span = rollback_span.clone().unwrap_or_else(|| {
                decl.with
                    .iter()
                    .find(|(k, _)| *k.get_ref() == p.name)
                    .map_or(decl.id.span(), |(_, v)| v.span())
            });
            let what = if p.name.is_empty() {
                "its parameters".to_owned()
            } else {
                format!("`{}`", p.name)
            };
            let whose = if rollback_span.is_some() {
                " (rollback)"
            } else {
                ""
            };
            self.err(Diagnostic::at(
                span,
                format!(
                    "step `{id}`{whose}: plugin {name} refuses {what}: {}",
                    p.message
                ),
            ));
        }
    }
}
