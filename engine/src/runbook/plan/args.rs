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
                    if let Some(why) = self.plan_time_mismatch(s, spec.ty, uses_secret) {
                        self.err(
                            Diagnostic::at(
                                value.span(),
                                format!("step `{id}`, parameter `{}`: {why}", spec.name),
                            )
                            .help(format!("the plugin takes {} for `{}`", spec.ty, spec.name)),
                        );
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

    /// A template that uses only what is known before the run (parameters, variables, the
    /// environment) is rendered now: a value of the wrong type for the parameter is a
    /// mistake in the runbook, better found here than by the step mid-run. A secret value
    /// is not shown.
    fn plan_time_mismatch(&self, source: &str, ty: ValueType, secret: bool) -> Option<String> {
        let rendered = self.render_now(source)?;
        let e = text_to_value(&rendered, ty).err()?;
        Some(if secret {
            format!("`{source}` does not give {ty}")
        } else {
            format!("{e} (what `{source}` renders to here)")
        })
    }

    /// A template rendered now, when it uses only what is known before the run.
    pub(super) fn render_now(&self, source: &str) -> Option<String> {
        let refs = template::references(&self.env, source).ok()?;
        let plan_time = refs
            .iter()
            .all(|r| ["params", "vars", "env"].contains(&r.split('.').next().unwrap_or("")));
        if !plan_time {
            return None;
        }
        // A render error here is a missing value (a deferred secret) or already reported.
        template::render(&self.env, source, &self.ctx).ok()
    }

    /// Warns about URLs in a step's `with` that its plugin's http grants do not cover: the
    /// call would be refused mid-run. A warning, not an error: the plugin may not request
    /// that URL itself (it may pass it on, or use it as a label).
    pub(super) fn check_urls(
        &mut self,
        id: &str,
        with: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        pp: &PlanPlugin,
    ) {
        if !pp.plugin.manifest.capabilities.iter().any(|c| c == "http")
            || self.grant_mistakes.contains(&pp.alias)
        {
            return;
        }
        for (key, value) in with {
            let Some(text) = value.get_ref().as_str() else {
                continue;
            };
            let url = if template::is_template(text) {
                match self.render_now(text) {
                    Some(u) => u,
                    None => continue,
                }
            } else {
                text.to_owned()
            };
            if crate::host::caps::allows_url(&pp.grants.http, url.trim()) == Some(false) {
                let granted: Vec<String> = pp.grants.http.iter().map(ToString::to_string).collect();
                let host = reqwest::Url::parse(url.trim())
                    .ok()
                    .and_then(|u| {
                        u.host_str()
                            .map(|h| u.port().map_or(h.to_owned(), |p| format!("{h}:{p}")))
                    })
                    .unwrap_or_default();
                self.err(
                    Diagnostic::warning_at(
                        value.span(),
                        format!(
                            "step `{id}`, parameter `{}`: `{host}` is outside plugin `{}`'s http grants; a request to it will be refused",
                            key.get_ref(),
                            pp.alias
                        ),
                    )
                    .help(if granted.is_empty() {
                        format!("grant it: [plugins.{}] grants = {{ http = [\"{host}\"] }}", pp.alias)
                    } else {
                        format!("granted: {}", granted.join(", "))
                    }),
                );
            }
        }
    }
}
