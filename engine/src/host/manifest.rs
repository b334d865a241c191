//! A plugin's manifest as the engine holds it, checked when the plugin loads.

use serde::Serialize;

use super::bindings::types as wit;
use super::value::{Value, ValueType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Check,
    Action,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
    pub required: bool,
    pub default: Option<Value>,
    pub description: String,
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub kind: PluginKind,
    pub params: Vec<ParamSpec>,
    pub capabilities: Vec<String>,
    pub supports_revert: bool,
    pub supports_dry_run: bool,
}

/// Bounds on a manifest: real plugins declare a handful of parameters with a line each.
pub const MAX_PARAMS: usize = 256;
pub const MAX_TEXT_BYTES: usize = 4096;

/// Capabilities a plugin may declare. `log` and `clock` are always available.
pub const KNOWN_CAPABILITIES: &[&str] = &["log", "clock", "http", "tcp", "command", "kv"];

impl Manifest {
    /// Converts and checks what the plugin declared: a plugin with a broken manifest is refused
    /// at load time rather than failing in the middle of a run.
    pub(crate) fn from_wit(m: wit::Manifest) -> Result<Self, String> {
        let params: Vec<ParamSpec> = m
            .params
            .into_iter()
            .map(|p| ParamSpec {
                name: p.name,
                ty: ValueType::from_wit(p.type_),
                required: p.required,
                default: p.default.map(Value::from_wit),
                description: p.description,
                secret: p.secret,
            })
            .collect();
        if m.name.trim().is_empty() {
            return Err("the manifest has an empty name".into());
        }
        if params.len() > MAX_PARAMS {
            return Err(format!(
                "the manifest declares {} parameters; at most {MAX_PARAMS} are accepted",
                params.len()
            ));
        }
        let texts = [&m.name, &m.version, &m.description]
            .into_iter()
            .chain(params.iter().flat_map(|p| [&p.name, &p.description]));
        if let Some(long) = texts.into_iter().find(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(format!(
                "a name or description in the manifest is {} bytes long (at most {MAX_TEXT_BYTES}): `{}…`",
                long.len(),
                long.chars().take(40).collect::<String>()
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(params.len());
        for p in &params {
            if p.name.trim().is_empty() {
                return Err("a parameter has an empty name".into());
            }
            if !seen.insert(p.name.as_str()) {
                return Err(format!("parameter `{}` is declared twice", p.name));
            }
            if let Some(d) = &p.default
                && d.value_type() != p.ty
            {
                return Err(format!(
                    "parameter `{}` is declared {} but its default is {}",
                    p.name,
                    p.ty,
                    d.value_type()
                ));
            }
        }
        for c in &m.capabilities {
            if !KNOWN_CAPABILITIES.contains(&c.as_str()) {
                return Err(format!(
                    "capability `{c}` is unknown to this medic (known: {})",
                    KNOWN_CAPABILITIES.join(", ")
                ));
            }
        }
        Ok(Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            kind: match m.kind {
                wit::PluginKind::Check => PluginKind::Check,
                wit::PluginKind::Action => PluginKind::Action,
            },
            params,
            capabilities: m.capabilities,
            supports_revert: m.supports_revert,
            supports_dry_run: m.supports_dry_run,
        })
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}
