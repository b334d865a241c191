use crate::bindings::medic::plugin::types as wit;
use crate::{Value, ValueType};

/// Whether a plugin observes or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Observes and reports health.
    Check,
    /// Changes something.
    Action,
}

/// A parameter declaration.
///
/// ```
/// use medic_plugin_sdk::Param;
///
/// let p = Param::integer("expect_status").default(200i64).describe("The status to expect");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub(crate) name: String,
    pub(crate) ty: ValueType,
    pub(crate) required: bool,
    pub(crate) default: Option<Value>,
    pub(crate) description: String,
    pub(crate) secret: bool,
}

impl Param {
    fn new(name: impl Into<String>, ty: ValueType) -> Self {
        Param {
            name: name.into(),
            ty,
            required: false,
            default: None,
            description: String::new(),
            secret: false,
        }
    }

    /// A text parameter.
    pub fn text(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::Text)
    }

    /// An integer parameter.
    pub fn integer(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::Integer)
    }

    /// A float parameter.
    pub fn float(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::Float)
    }

    /// A boolean parameter.
    pub fn boolean(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::Boolean)
    }

    /// A duration parameter (`"500ms"`, `"30s"`, `"2m"` in runbooks).
    pub fn duration(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::Duration)
    }

    /// A list-of-text parameter.
    pub fn text_list(name: impl Into<String>) -> Self {
        Self::new(name, ValueType::TextList)
    }

    /// The runbook must set it.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The value used when the runbook does not set it. It must have the declared type; the
    /// engine refuses to load a plugin whose default does not.
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// What it means, for `medic plugin inspect` and validation messages.
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The value is a secret: the engine never prints nor records it.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    fn into_wit(self) -> wit::ParamSpec {
        wit::ParamSpec {
            name: self.name,
            type_: self.ty.into_wit(),
            required: self.required,
            default: self.default.map(Value::into_wit),
            description: self.description,
            secret: self.secret,
        }
    }
}

/// What a plugin is and what it needs.
///
/// ```
/// use medic_plugin_sdk::{Manifest, Param};
///
/// let m = Manifest::action("flip", "1.0.0")
///     .describe("Flips a feature flag and flips it back on revert")
///     .param(Param::text("flag").required())
///     .capability("http")
///     .revertible()
///     .dry_run();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) kind: Kind,
    pub(crate) params: Vec<Param>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) revert: bool,
    pub(crate) dry_run: bool,
}

impl Manifest {
    fn new(kind: Kind, name: impl Into<String>, version: impl Into<String>) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            kind,
            params: Vec::new(),
            capabilities: Vec::new(),
            revert: false,
            dry_run: false,
        }
    }

    /// A check plugin. Checks change nothing, so they always support dry runs.
    pub fn check(name: impl Into<String>, version: impl Into<String>) -> Self {
        let mut m = Self::new(Kind::Check, name, version);
        m.dry_run = true;
        m
    }

    /// An action plugin.
    pub fn action(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self::new(Kind::Action, name, version)
    }

    /// A one-line description.
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Declares a parameter.
    pub fn param(mut self, param: Param) -> Self {
        self.params.push(param);
        self
    }

    /// Declares a capability the plugin uses: `"http"` or `"kv"` (granted by the runbook), or
    /// `"log"` and `"clock"` (always available).
    pub fn capability(mut self, name: impl Into<String>) -> Self {
        self.capabilities.push(name.into());
        self
    }

    /// The plugin implements [`crate::Plugin::revert`].
    pub fn revertible(mut self) -> Self {
        self.revert = true;
        self
    }

    /// The plugin honours [`crate::Context::dry_run`].
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    pub(crate) fn into_wit(self) -> wit::Manifest {
        wit::Manifest {
            name: self.name,
            version: self.version,
            description: self.description,
            kind: match self.kind {
                Kind::Check => wit::PluginKind::Check,
                Kind::Action => wit::PluginKind::Action,
            },
            params: self.params.into_iter().map(Param::into_wit).collect(),
            capabilities: self.capabilities,
            supports_revert: self.revert,
            supports_dry_run: self.dry_run,
        }
    }
}
