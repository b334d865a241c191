//! A step's `with`, checked against its plugin's manifest.

use super::*;

impl Validator<'_> {
    /// Checks a step's `with` against the plugin's manifest. Returns the arguments (defaults
    /// filled in) and the names of those that are secret.
    pub(super) fn args(
        &mut self,
        id: &str,
        with: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        id_span: &Range<usize>,
        plugin: &Plugin,
        scope: Scope<'_>,
    ) -> Option<CheckedArgs> {
        let manifest = &plugin.manifest;
        let mut ok = true;
        let mut out = Vec::new();
        let mut secret = Vec::new();
        for (key, value) in with {
            let Some(spec) = manifest.param(key.get_ref()) else {
                let hint = did_you_mean(
                    key.get_ref(),
                    manifest.params.iter().map(|p| p.name.as_str()),
                )
                .unwrap_or_else(|| {
                    format!(
                        "{} takes: {}",
                        manifest.name,
                        manifest
                            .params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                self.err(
                    Diagnostic::at(
                        key.span(),
                        format!(
                            "step `{id}`: plugin {} has no parameter `{}`",
                            manifest.name,
                            key.get_ref()
                        ),
                    )
                    .help(hint),
                );
                ok = false;
                continue;
            };
            if spec.secret {
                secret.push(spec.name.clone());
            }
            let arg = match value.get_ref() {
                toml::Value::String(s) if template::is_template(s) => {
                    let (sound, uses_secret) = self.check_template(s, &value.span(), scope);
                    if uses_secret && !spec.secret {
                        secret.push(spec.name.clone());
                    }
                    if !sound {
                        ok = false;
                        continue;
                    }
                    Arg::Template {
                        source: s.clone(),
                        ty: spec.ty,
                    }
                }
                toml::Value::Array(items)
                    if spec.ty == ValueType::TextList
                        && items
                            .iter()
                            .any(|i| i.as_str().is_some_and(template::is_template)) =>
                {
                    let mut sources = Vec::new();
                    for i in items {
                        match i.as_str() {
                            Some(s) => {
                                let (sound, uses_secret) =
                                    self.check_template(s, &value.span(), scope);
                                ok &= sound;
                                if uses_secret && !secret.contains(&spec.name) {
                                    secret.push(spec.name.clone());
                                }
                                sources.push(s.to_owned());
                            }
                            None => {
                                self.err(Diagnostic::at(value.span(), format!("step `{id}`, parameter `{}`: expected a list of strings, found {}", spec.name, toml_kind(i))));
                                ok = false;
                            }
                        }
                    }
                    Arg::ListTemplate(sources)
                }
                other => match toml_to_value(other, spec.ty) {
                    Ok(v) => Arg::Value(v),
                    Err(e) => {
                        self.err(Diagnostic::at(
                            value.span(),
                            format!("step `{id}`, parameter `{}`: {e}", spec.name),
                        ));
                        ok = false;
                        continue;
                    }
                },
            };
            out.push((spec.name.clone(), arg));
        }
        for spec in &manifest.params {
            if with.keys().any(|k| *k.get_ref() == spec.name) {
                continue;
            }
            let misspelled = with.keys().any(|k| {
                manifest.param(k.get_ref()).is_none()
                    && did_you_mean(k.get_ref(), [spec.name.as_str()]).is_some()
            });
            match &spec.default {
                Some(d) => out.push((spec.name.clone(), Arg::Value(d.clone()))),
                // A misspelled key already got a did-you-mean for this parameter.
                None if spec.required && misspelled => {}
                None if spec.required => {
                    self.err(
                        Diagnostic::at(
                            id_span.clone(),
                            format!(
                                "step `{id}`: plugin {} requires parameter `{}`",
                                manifest.name, spec.name
                            ),
                        )
                        .help(if spec.description.is_empty() {
                            format!("add `{} = ...` to the step's `with`", spec.name)
                        } else {
                            format!("{}: {}", spec.name, spec.description)
                        }),
                    );
                    ok = false;
                }
                None => {}
            }
        }
        ok.then_some((out, secret))
    }

    /// The templates in a `with` whose plugin is unknown: the names they use are still
    /// checked, the parameters themselves cannot be.
    pub(super) fn templates_only(
        &mut self,
        with: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        scope: Scope<'_>,
    ) {
        for value in with.values() {
            let texts: Vec<&str> = match value.get_ref() {
                toml::Value::String(s) => vec![s],
                toml::Value::Array(items) => items.iter().filter_map(|i| i.as_str()).collect(),
                _ => Vec::new(),
            };
            for t in texts {
                if template::is_template(t) {
                    self.check_template(t, &value.span(), scope);
                }
            }
        }
    }
}
