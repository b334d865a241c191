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
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
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
