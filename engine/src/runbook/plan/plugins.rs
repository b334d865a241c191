//! `[plugins]`: sources, pins, limits and grants; each plugin loaded and digested.

use super::*;

impl Validator<'_> {
    pub(super) async fn plugins(
        &mut self,
        host: &PluginHost,
        doc: &RunbookDoc,
        ctx: &minijinja::Value,
    ) -> Vec<Option<PlanPlugin>> {
        let mut out = Vec::new();
        for (alias, decl) in &doc.plugins {
            out.push(self.plugin(host, alias, decl.get_ref(), ctx).await);
        }
        out
    }

    pub(super) async fn plugin(
        &mut self,
        host: &PluginHost,
        alias: &Spanned<String>,
        decl: &PluginDecl,
        ctx: &minijinja::Value,
    ) -> Option<PlanPlugin> {
        let source = PluginSource::parse(decl.source.get_ref(), self.base());
        let pin = decl.sha256.as_ref();
        // What a URL serves can change under the same name: only a pinned one is run.
        if matches!(source, PluginSource::Url(_)) && pin.is_none() {
            self.err(
                Diagnostic::at(
                    decl.source.span(),
                    format!(
                        "plugin `{}` comes from a URL but has no `sha256` pin",
                        alias.get_ref()
                    ),
                )
                .help(format!(
                    "`medic plugin pin {}` downloads it and prints the line to add",
                    decl.source.get_ref()
                )),
            );
            return None;
        }
        let plugin = match host.load(&source, pin.map(|p| p.get_ref().as_str())).await {
            Ok(p) => p,
            Err(e) => {
                let span = match (&e, pin) {
                    (LoadError::DigestMismatch { .. } | LoadError::BadPin { .. }, Some(pin)) => {
                        pin.span()
                    }
                    _ => decl.source.span(),
                };
                self.err(Diagnostic::at(
                    span,
                    format!("plugin `{}`: {e}", alias.get_ref()),
                ));
                return None;
            }
        };
        let memory = match &decl.memory {
            None => limits::DEFAULT_MEMORY,
            Some(m) => match limits::parse_bytes(m.get_ref()) {
                Ok(n) if n > limits::MAX_MEMORY => {
                    self.err(Diagnostic::at(
                        m.span(),
                        format!(
                            "memory limit {} is above the maximum of {}",
                            m.get_ref(),
                            limits::format_bytes(limits::MAX_MEMORY)
                        ),
                    ));
                    limits::DEFAULT_MEMORY
                }
                Ok(n) if n < (2 << 20) => {
                    self.err(Diagnostic::at(
                        m.span(),
                        format!(
                            "memory limit {} is too small for any plugin (at least 2MiB)",
                            m.get_ref()
                        ),
                    ));
                    limits::DEFAULT_MEMORY
                }
                Ok(n) => n,
                Err(e) => {
                    self.err(Diagnostic::at(m.span(), e));
                    limits::DEFAULT_MEMORY
                }
            },
        };
        let timeout = decl
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, "plugin timeout"));

        let mut grants = Grants::default();
        let before_grants = self.diags.len();
        if let Some(g) = &decl.grants {
            for host_grant in &g.get_ref().http {
                let mut text = host_grant.get_ref().clone();
                if template::is_template(&text) {
                    if !self.check_public(&text, &host_grant.span(), Scope::Plan, "a grant") {
                        continue;
                    }
                    match template::render(&self.env, &text, ctx) {
                        Ok(t) => text = t,
                        Err(e) => {
                            self.err(Diagnostic::at(
                                host_grant.span(),
                                format!("cannot render grant: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                match text.parse::<HostGrant>() {
                    Ok(h) => grants.http.push(h),
                    Err(e) => self.err(Diagnostic::at(
                        host_grant.span(),
                        format!("http grant: {e}"),
                    )),
                }
            }
            for c in &g.get_ref().command {
                match CommandGrant::new(&c.get_ref().program, &c.get_ref().args) {
                    Ok(grant) => grants.command.push(grant),
                    Err(e) => self.err(Diagnostic::at(c.span(), format!("command grant: {e}"))),
                }
            }
            for tcp_grant in &g.get_ref().tcp {
                let mut text = tcp_grant.get_ref().clone();
                if template::is_template(&text) {
                    if !self.check_public(&text, &tcp_grant.span(), Scope::Plan, "a grant") {
                        continue;
                    }
                    match template::render(&self.env, &text, ctx) {
                        Ok(t) => text = t,
                        Err(e) => {
                            self.err(Diagnostic::at(
                                tcp_grant.span(),
                                format!("cannot render grant: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                match text.parse::<HostGrant>() {
                    Ok(h) if h.has_port() && text.parse::<std::net::SocketAddr>().is_ok() => {
                        grants.tcp.push(h)
                    }
                    Ok(_) => self.err(Diagnostic::at(
                        tcp_grant.span(),
                        format!(
                            "tcp grant: `{text}` must be an ip:port address, e.g. 127.0.0.1:9999"
                        ),
                    )),
                    Err(e) => self.err(Diagnostic::at(tcp_grant.span(), format!("tcp grant: {e}"))),
                }
            }
            grants.kv = g.get_ref().kv.as_ref().is_some_and(|k| *k.get_ref());
        }
        // Least privilege both ways: a plugin gets what it declares and nothing more.
        let uses = |c: &str| plugin.manifest.capabilities.iter().any(|x| x == c);
        let name = &plugin.manifest.name;
        let a = alias.get_ref();
        let grants_span = decl.grants.as_ref().map_or(alias.span(), |g| g.span());
        let declared_hosts = decl
            .grants
            .as_ref()
            .is_some_and(|g| !g.get_ref().http.is_empty());
        if uses("http") && !declared_hosts {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{a}` ({name}) needs the http capability, but no hosts are granted"
                    ),
                )
                .help(format!(
                    "add `http = [\"HOST:PORT\"]` under [plugins.{a}.grants]"
                )),
            );
        }
        if !uses("http") && declared_hosts {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!(
                        "plugin `{a}` ({name}) does not use http, but the runbook grants it hosts"
                    ),
                )
                .help("remove the http grant"),
            );
        }
        let granted_commands = decl
            .grants
            .as_ref()
            .is_some_and(|g| !g.get_ref().command.is_empty());
        if uses("command") && !granted_commands {
            self.err(
                Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) runs commands, but none are granted"))
                    .help(format!("add `command = [{{ program = \"/usr/bin/...\", args = [\"...\"] }}]` under [plugins.{a}.grants]")),
            );
        }
        if !uses("command") && granted_commands {
            self.err(Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) does not run commands, but the runbook grants it some")).help("remove the command grant"));
        }
        if uses("tcp")
            && grants.tcp.is_empty()
            && decl
                .grants
                .as_ref()
                .is_none_or(|g| g.get_ref().tcp.is_empty())
        {
            self.err(
                Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) needs the tcp capability, but no addresses are granted"))
                    .help(format!("add `tcp = [\"IP:PORT\"]` under [plugins.{a}.grants]")),
            );
        }
        if self.diags.len() > before_grants {
            // Its steps' URLs are not checked against grants already found wrong.
            self.grant_mistakes.insert(alias.get_ref().clone());
        }
        if !uses("tcp")
            && decl
                .grants
                .as_ref()
                .is_some_and(|g| !g.get_ref().tcp.is_empty())
        {
            self.err(Diagnostic::at(grants_span.clone(), format!("plugin `{a}` ({name}) does not use tcp, but the runbook grants it addresses")).help("remove the tcp grant"));
        }
        if !uses("kv") && grants.kv {
            self.err(
                Diagnostic::at(
                    grants_span.clone(),
                    format!("plugin `{a}` ({name}) does not use kv, but the runbook grants it"),
                )
                .help("remove `kv = true`"),
            );
        }
        if uses("kv") && !grants.kv {
            self.err(
                Diagnostic::at(
                    grants_span,
                    format!("plugin `{a}` ({name}) needs the kv capability, which is not granted"),
                )
                .help(format!("add `kv = true` under [plugins.{a}.grants]")),
            );
        }
        Some(PlanPlugin {
            alias: a.clone(),
            plugin: Arc::new(plugin),
            timeout,
            memory,
            grants: Arc::new(grants),
        })
    }
}
