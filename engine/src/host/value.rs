//! The engine's own value types, mirroring the WIT ones, with serde for records and output.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bindings::types as wit;

/// The type of a parameter or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueType {
    Text,
    Integer,
    Float,
    Boolean,
    Duration,
    TextList,
}

impl ValueType {
    pub(crate) fn from_wit(t: wit::ValueType) -> Self {
        match t {
            wit::ValueType::Text => ValueType::Text,
            wit::ValueType::Integer => ValueType::Integer,
            wit::ValueType::Float => ValueType::Float,
            wit::ValueType::Boolean => ValueType::Boolean,
            wit::ValueType::Duration => ValueType::Duration,
            wit::ValueType::TextList => ValueType::TextList,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Text => "text",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Boolean => "boolean",
            ValueType::Duration => "duration",
            ValueType::TextList => "text list",
        })
    }
}

/// A typed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
pub enum Value {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    #[serde(with = "duration_ms")]
    Duration(Duration),
    TextList(Vec<String>),
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Text(_) => ValueType::Text,
            Value::Integer(_) => ValueType::Integer,
            Value::Float(_) => ValueType::Float,
            Value::Boolean(_) => ValueType::Boolean,
            Value::Duration(_) => ValueType::Duration,
            Value::TextList(_) => ValueType::TextList,
        }
    }

    pub(crate) fn from_wit(v: wit::Value) -> Self {
        match v {
            wit::Value::Text(s) => Value::Text(s),
            wit::Value::Integer(i) => Value::Integer(i),
            wit::Value::Float(f) => Value::Float(f),
            wit::Value::Boolean(b) => Value::Boolean(b),
            wit::Value::Duration(ms) => Value::Duration(Duration::from_millis(ms)),
            wit::Value::TextList(l) => Value::TextList(l),
        }
    }

    pub(crate) fn to_wit(&self) -> wit::Value {
        match self {
            Value::Text(s) => wit::Value::Text(s.clone()),
            Value::Integer(i) => wit::Value::Integer(*i),
            Value::Float(f) => wit::Value::Float(*f),
            Value::Boolean(b) => wit::Value::Boolean(*b),
            Value::Duration(d) => {
                wit::Value::Duration(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Value::TextList(l) => wit::Value::TextList(l.clone()),
        }
    }
}

/// Values as a person reads them: durations as `1m 30s`, lists as `[a, b]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Duration(d) => write!(f, "{}", humantime::format_duration(*d)),
            Value::TextList(l) => write!(f, "[{}]", l.join(", ")),
        }
    }
}

/// Named values in declaration order.
pub type Values = Vec<(String, Value)>;

pub(crate) fn values_to_wit(values: &[(String, Value)]) -> wit::Values {
    values
        .iter()
        .map(|(n, v)| (n.clone(), v.to_wit()))
        .collect()
}
