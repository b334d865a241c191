//! `[params]`: declared types, defaults, constraints, secrets and their sources, and the
//! values given on the command line.

use super::*;

impl Validator<'_> {
    pub(super) fn param_value(
        &mut self,
        name: &Spanned<String>,
        decl: &ParamDecl,
        ty: ValueType,
    ) -> Option<Value> {
        let sourced = |v: &Self| {
            v.sourced.as_ref().map(|s| {
                s.iter()
                    .find(|(k, _)| k == name.get_ref())
                    .map(|(_, v)| v.clone())
                    .ok_or(())
            })
        };
        if let Some(var) = &decl.from_env {
            let read =
                sourced(self).unwrap_or_else(|| std::env::var(var.get_ref()).map_err(|_| ()));
            return match read {
                Ok(v) => self.checked(name, decl, text_to_value(&v, ty), var.span(), "parameter"),
                Err(_) if self.defer_secrets && decl.secret => {
                    self.deferred
                        .push((name.get_ref().clone(), format!("${}", var.get_ref())));
                    None
                }
                Err(_) => {
                    self.err(Diagnostic::at(
                        var.span(),
                        format!(
                            "parameter `{}` comes from environment variable {}, which is not set",
                            name.get_ref(),
                            var.get_ref()
                        ),
                    ));
                    None
                }
            };
        }
        if let Some(file) = &decl.from_file {
            let path = self.base().join(file.get_ref());
            let read = match sourced(self) {
                Some(v) => v.map_err(|()| std::io::Error::from(std::io::ErrorKind::NotFound)),
                None => crate::input::read_text(&path, crate::input::MAX_PARAM_FILE_BYTES),
            };
            return match read {
                // Files written by editors and `echo` end with a newline that is not part of the value.
                Ok(v) => self.checked(
                    name,
                    decl,
                    text_to_value(v.trim_end_matches(['\n', '\r']), ty),
                    file.span(),
                    "parameter",
                ),
                Err(_) if self.defer_secrets && decl.secret => {
                    self.deferred
                        .push((name.get_ref().clone(), format!("file {}", file.get_ref())));
                    None
                }
                Err(e) => {
                    self.err(Diagnostic::at(
                        file.span(),
                        format!(
                            "parameter `{}` comes from {}, which cannot be read: {}",
                            name.get_ref(),
                            path.display(),
                            match e.kind() {
                                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                                std::io::ErrorKind::PermissionDenied => {
                                    "permission denied".to_owned()
                                }
                                _ => e.to_string(),
                            }
                        ),
                    ));
                    None
                }
            };
        }
        let default = decl.default.as_ref()?;
        self.checked(
            name,
            decl,
            toml_to_value(default.get_ref(), ty),
            default.span(),
            "default of parameter",
        )
    }

    /// Applies `pattern` and `values` to a value; errors point at `span`.
    pub(super) fn checked(
        &mut self,
        name: &Spanned<String>,
        decl: &ParamDecl,
        value: Result<Value, String>,
        span: Range<usize>,
        what: &str,
    ) -> Option<Value> {
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                // A secret's value must not appear in an error either.
                let e = if decl.secret {
                    "the value has the wrong type".to_owned()
                } else {
                    e
                };
                self.err(Diagnostic::at(
                    span,
                    format!("{what} `{}`: {e}", name.get_ref()),
                ));
                return None;
            }
        };
        self.constrain(name.get_ref(), decl, &value)
            .map_err(|e| self.err(Diagnostic::at(span, e)))
            .ok()?;
        Some(value)
    }

    pub(super) fn constrain(
        &self,
        name: &str,
        decl: &ParamDecl,
        value: &Value,
    ) -> Result<(), String> {
        let Value::Text(text) = value else {
            return Ok(());
        };
        let shown = if decl.secret {
            "the value".to_owned()
        } else {
            format!("`{text}`")
        };
        if let Some(values) = &decl.values
            && !values.get_ref().contains(text)
        {
            return Err(format!(
                "parameter `{name}`: {shown} is not one of {}",
                values.get_ref().join(", ")
            ));
        }
        if let Some(pattern) = &decl.pattern
            && let Ok(re) = regex::Regex::new(&format!("^(?:{})$", pattern.get_ref()))
            && !re.is_match(text)
        {
            return Err(format!(
                "parameter `{name}`: {shown} does not match the pattern `{}`",
                pattern.get_ref()
            ));
        }
        Ok(())
    }

    pub(super) fn params(&mut self, doc: &RunbookDoc, overrides: &[(String, String)]) {
        let mut types = BTreeMap::new();
        for (name, decl) in &doc.params {
            let decl = decl.get_ref();
            if !valid_name(name.get_ref()) {
                self.err(
                    Diagnostic::at(
                        name.span(),
                        format!(
                            "parameter name `{}` must be lowercase letters, digits and underscores",
                            name.get_ref()
                        ),
                    )
                    .help(
                        "templates refer to it as params.NAME, so dashes would read as subtraction",
                    ),
                );
            }
            let Some(ty) = PARAM_TYPES
                .iter()
                .find(|(n, _)| *n == decl.ty.get_ref())
                .map(|(_, t)| *t)
            else {
                let names: Vec<&str> = PARAM_TYPES.iter().map(|(n, _)| *n).collect();
                self.err(
                    Diagnostic::at(
                        decl.ty.span(),
                        format!("unknown parameter type `{}`", decl.ty.get_ref()),
                    )
                    .help(
                        did_you_mean(decl.ty.get_ref(), names.iter().copied())
                            .unwrap_or_else(|| format!("types: {}", names.join(", "))),
                    ),
                );
                continue;
            };
            let is_enum = decl.ty.get_ref() == "enum";
            match (&decl.values, is_enum) {
                (None, true) => self.err(Diagnostic::at(
                    decl.ty.span(),
                    format!("enum parameter `{}` needs `values = [...]`", name.get_ref()),
                )),
                (Some(v), false) => self.err(
                    Diagnostic::at(
                        v.span(),
                        format!(
                            "`values` is for enum parameters; `{}` is {}",
                            name.get_ref(),
                            decl.ty.get_ref()
                        ),
                    )
                    .help("write type = \"enum\""),
                ),
                (Some(v), true) if v.get_ref().is_empty() => {
                    self.err(Diagnostic::at(v.span(), "an enum needs at least one value"))
                }
                _ => {}
            }
            if let Some(p) = &decl.pattern {
                if ty != ValueType::Text {
                    self.err(Diagnostic::at(
                        p.span(),
                        format!(
                            "`pattern` applies to string parameters; `{}` is {}",
                            name.get_ref(),
                            decl.ty.get_ref()
                        ),
                    ));
                } else if let Err(e) = regex::Regex::new(p.get_ref()) {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    self.err(Diagnostic::at(
                        p.span(),
                        format!("invalid pattern: {first}"),
                    ));
                }
            }
            let sources = usize::from(decl.from_env.is_some())
                + usize::from(decl.from_file.is_some())
                + usize::from(decl.default.is_some());
            if sources > 1 {
                self.err(Diagnostic::at(
                    name.span(),
                    format!(
                        "parameter `{}` has more than one of `default`, `from_env` and `from_file`",
                        name.get_ref()
                    ),
                ));
            }
            if decl.secret
                && let Some(default) = &decl.default
            {
                self.err(Diagnostic::at(default.span(), format!("secret parameter `{}` has a default in the runbook, where anyone can read it", name.get_ref()))
                    .help("read it with from_env = \"VAR\" or from_file = \"path\""));
            }
            if decl.secret
                && decl.from_env.is_none()
                && decl.from_file.is_none()
                && decl.default.is_none()
            {
                self.err(Diagnostic::at(name.span(), format!("secret parameter `{}` needs `from_env` or `from_file`", name.get_ref()))
                    .help("secrets never come from the command line, which ends up in shell history and `ps`"));
            }
            if decl.secret {
                self.secret_names.insert(name.get_ref().clone());
            }
            if decl.secret && matches!(ty, ValueType::Boolean | ValueType::Duration) {
                self.err(Diagnostic::at(name.span(), format!("secret parameter `{}` is a {}: such a value cannot be masked without masking every one like it", name.get_ref(), if ty == ValueType::Boolean { "boolean" } else { "duration" }))
                    .help("secrets are strings, numbers or lists"));
            }
            types.insert(name.get_ref().clone(), ty);
            if let Some(value) = self.param_value(name, decl, ty) {
                if decl.secret
                    && let Value::Text(s) = &value
                    && !s.is_empty()
                {
                    self.secrets.push(s.clone());
                }
                self.params.insert(
                    name.get_ref().clone(),
                    ParamInfo {
                        value,
                        secret: decl.secret,
                    },
                );
            }
        }
        for (key, raw) in overrides {
            let Some((name, decl)) = doc.params.iter().find(|(k, _)| k.get_ref() == key) else {
                let names: Vec<&str> = doc.params.keys().map(|k| k.get_ref().as_str()).collect();
                let hint = did_you_mean(key, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        "this runbook takes no parameters".into()
                    } else {
                        format!("parameters: {}", names.join(", "))
                    }
                });
                self.err(
                    Diagnostic::new(
                        format!("--param {key}: the runbook declares no parameter `{key}`"),
                        None,
                    )
                    .help(hint),
                );
                continue;
            };
            let decl = decl.get_ref();
            if decl.secret {
                self.err(Diagnostic::new(format!("--param {key}: `{key}` is a secret and cannot be set on the command line"), None)
                    .help("it is read from its from_env or from_file source"));
                continue;
            }
            let Some(ty) = types.get(key).copied() else {
                continue;
            };
            let value =
                text_to_value(raw, ty).and_then(|v| self.constrain(key, decl, &v).map(|()| v));
            match value {
                Ok(value) => {
                    self.params.insert(
                        name.get_ref().clone(),
                        ParamInfo {
                            value,
                            secret: false,
                        },
                    );
                }
                Err(e) => self.err(Diagnostic::new(format!("--param {key}: {e}"), None)),
            }
        }
        for (name, decl) in &doc.params {
            let decl = decl.get_ref();
            let required = decl.required.unwrap_or(decl.default.is_none());
            let sourced = decl.from_env.is_some() || decl.from_file.is_some();
            if required
                && !sourced
                && !self.params.contains_key(name.get_ref())
                && types.contains_key(name.get_ref())
            {
                self.err(
                    Diagnostic::at(
                        name.span(),
                        format!(
                            "parameter `{}` is required and was not given",
                            name.get_ref()
                        ),
                    )
                    .help(format!("pass it with --param {}=VALUE", name.get_ref())),
                );
            }
        }
    }
}
