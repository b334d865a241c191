//! The runbook file format, as parsed: serde types that keep spans and refuse unknown keys.
//! Nothing here is checked beyond syntax; [`super::plan`] turns it into a validated plan.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookDoc {
    pub runbook: Spanned<Meta>,
    #[serde(default)]
    pub params: BTreeMap<Spanned<String>, Spanned<ParamDecl>>,
    #[serde(default)]
    pub plugins: BTreeMap<Spanned<String>, Spanned<PluginDecl>>,
    #[serde(default)]
    pub steps: Vec<Spanned<StepDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub default: Option<Spanned<toml::Value>>,
    /// Defaults to true when there is no default value.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDecl {
    pub source: Spanned<String>,
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub grants: Option<Spanned<GrantsDecl>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsDecl {
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    #[serde(default)]
    pub kv: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDecl {
    pub id: Spanned<String>,
    pub uses: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub with: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// What a failure of this step does to the run: `abort` (the default) or `continue`.
    #[serde(default)]
    pub on_failure: Option<Spanned<OnFailure>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Abort,
    Continue,
}
