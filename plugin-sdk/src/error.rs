use std::fmt;

use crate::bindings::medic::plugin::types as wit;

/// Why a plugin could not carry out a call. The kind tells the engine whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The parameters are wrong; retrying will not help.
    InvalidParams(String),
    /// Might work if retried: a timeout, a refused connection, a 503.
    Transient(String),
    /// Will not work if retried.
    Permanent(String),
    /// The plugin was refused a capability it needs.
    Denied(String),
}

impl Error {
    /// The parameters are wrong.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        Error::InvalidParams(msg.into())
    }

    /// A failure that a retry may fix.
    pub fn transient(msg: impl Into<String>) -> Self {
        Error::Transient(msg.into())
    }

    /// A failure that a retry will not fix.
    pub fn permanent(msg: impl Into<String>) -> Self {
        Error::Permanent(msg.into())
    }

    /// A capability was refused.
    pub fn denied(msg: impl Into<String>) -> Self {
        Error::Denied(msg.into())
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidParams(m)
            | Error::Transient(m)
            | Error::Permanent(m)
            | Error::Denied(m) => m,
        }
    }

    pub(crate) fn into_wit(self) -> wit::PluginError {
        match self {
            Error::InvalidParams(m) => wit::PluginError::InvalidParams(m),
            Error::Transient(m) => wit::PluginError::Transient(m),
            Error::Permanent(m) => wit::PluginError::Permanent(m),
            Error::Denied(m) => wit::PluginError::Denied(m),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Error::InvalidParams(_) => "invalid parameters",
            Error::Transient(_) => "transient error",
            Error::Permanent(_) => "permanent error",
            Error::Denied(_) => "denied",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}
