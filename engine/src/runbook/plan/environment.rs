//! `[environments]`: names, protection, and variables every environment declares alike.

use super::*;

impl Validator<'_> {
    pub(super) fn environment(&mut self, doc: &RunbookDoc, chosen: Option<&str>) -> Environment {
        let names: Vec<&str> = doc
            .environments
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        for (name, decl) in &doc.environments {
            if !valid_name(name.get_ref()) {
                self.err(Diagnostic::at(
                    name.span(),
                    format!(
                        "environment name `{}` must be lowercase letters, digits and underscores",
                        name.get_ref()
                    ),
                ));
            }
            // Every environment declares the same variables, so a runbook valid for one is
            // valid for all and `medic validate` catches the gap before the prod run does.
            for (other, other_decl) in &doc.environments {
                for var in other_decl.get_ref().vars.keys() {
                    if !decl
                        .get_ref()
                        .vars
                        .keys()
                        .any(|k| k.get_ref() == var.get_ref())
                    {
                        self.err(Diagnostic::at(
                            name.span(),
                            format!(
                                "environment `{}` lacks variable `{}`, which `{}` declares",
                                name.get_ref(),
                                var.get_ref(),
                                other.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        let Some(chosen) = chosen else {
            if !names.is_empty() {
                self.err(Diagnostic::new(
                    format!(
                        "this runbook targets environments ({}): choose one with --env",
                        names.join(", ")
                    ),
                    None,
                ));
            }
            return Environment {
                name: DEFAULT_ENVIRONMENT.into(),
                protected: false,
                vars: Vec::new(),
                approvers: Vec::new(),
                min_approvals: 1,
            };
        };
        let Some((name, decl)) = doc.environments.iter().find(|(k, _)| k.get_ref() == chosen)
        else {
            let help = if names.is_empty() {
                "this runbook declares no [environments]; run it without --env".to_owned()
            } else {
                did_you_mean(chosen, names.iter().copied())
                    .unwrap_or_else(|| format!("environments: {}", names.join(", ")))
            };
            self.err(
                Diagnostic::new(
                    format!("--env {chosen}: the runbook declares no environment `{chosen}`"),
                    None,
                )
                .help(help),
            );
            return Environment {
                name: chosen.to_owned(),
                protected: false,
                vars: Vec::new(),
                approvers: Vec::new(),
                min_approvals: 1,
            };
        };
        let mut vars = Vec::new();
        for (k, val) in &decl.get_ref().vars {
            if !valid_name(k.get_ref()) {
                self.err(Diagnostic::at(
                    k.span(),
                    format!(
                        "variable name `{}` must be lowercase letters, digits and underscores",
                        k.get_ref()
                    ),
                ));
            }
            match var_value(val.get_ref()) {
                Ok(v) => vars.push((k.get_ref().clone(), v)),
                Err(e) => self.err(Diagnostic::at(val.span(), e)),
            }
        }
        let d = decl.get_ref();
        let approvers: Vec<String> = d
            .approvers
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default();
        let min_approvals = d.min_approvals.as_ref().map_or(1, |m| *m.get_ref());
        if let Some(m) = &d.min_approvals
            && !approvers.is_empty()
            && min_approvals as usize > approvers.len()
        {
            // A name may be a group of many people: worth saying, not refusing.
            self.err(
                Diagnostic::warning_at(
                    m.span(),
                    format!(
                        "environment `{}` needs {min_approvals} approvals but names {} approver{}",
                        name.get_ref(),
                        approvers.len(),
                        if approvers.len() == 1 { "" } else { "s" }
                    ),
                )
                .help("fine if one of them is a group; otherwise name more approvers, or lower min_approvals"),
            );
        }
        Environment {
            name: name.get_ref().clone(),
            protected: d.protected,
            vars,
            approvers,
            min_approvals,
        }
    }
}
