use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::bindings::medic::plugin::types as wit;

/// The type of a parameter or output value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A string.
    Text,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true` or `false`.
    Boolean,
    /// A length of time (written like `"30s"` or `"2m"` in runbooks).
    Duration,
    /// A list of strings.
    TextList,
}

impl ValueType {
    pub(crate) fn into_wit(self) -> wit::ValueType {
        match self {
            ValueType::Text => wit::ValueType::Text,
            ValueType::Integer => wit::ValueType::Integer,
            ValueType::Float => wit::ValueType::Float,
            ValueType::Boolean => wit::ValueType::Boolean,
            ValueType::Duration => wit::ValueType::Duration,
            ValueType::TextList => wit::ValueType::TextList,
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

/// A typed value: a parameter the plugin receives, or an output it returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Text(String),
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// A length of time, with millisecond precision.
    Duration(Duration),
    /// A list of strings.
    TextList(Vec<String>),
}

impl Value {
    /// The type of this value.
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

    pub(crate) fn into_wit(self) -> wit::Value {
        match self {
            Value::Text(s) => wit::Value::Text(s),
            Value::Integer(i) => wit::Value::Integer(i),
            Value::Float(f) => wit::Value::Float(f),
            Value::Boolean(b) => wit::Value::Boolean(b),
            Value::Duration(d) => {
                wit::Value::Duration(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Value::TextList(l) => wit::Value::TextList(l),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}
impl From<Duration> for Value {
    fn from(d: Duration) -> Self {
        Value::Duration(d)
    }
}
impl From<Vec<String>> for Value {
    fn from(l: Vec<String>) -> Self {
        Value::TextList(l)
    }
}

/// Named values: the parameters of a call, or the outputs of an earlier run (for revert).
///
/// The typed getters fail with [`Error::InvalidParams`] naming the parameter, so a plugin can
/// use `?` and the responder sees which parameter was wrong.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, Value)>,
}

impl Params {
    /// An empty set of values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a value (useful in tests).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((name, value)),
        }
        self
    }

    pub(crate) fn from_wit(values: wit::Values) -> Self {
        Params {
            entries: values
                .into_iter()
                .map(|(n, v)| (n, Value::from_wit(v)))
                .collect(),
        }
    }

    /// The value named `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Whether a value named `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Iterates over all values in the order they were given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    fn required(&self, name: &str) -> Result<&Value, Error> {
        self.get(name)
            .ok_or_else(|| Error::invalid_params(format!("parameter `{name}` is required")))
    }

    fn mistyped(name: &str, want: ValueType, got: &Value) -> Error {
        Error::invalid_params(format!(
            "parameter `{name}` must be {want}, not {}",
            got.value_type()
        ))
    }

    /// A required text parameter.
    pub fn text(&self, name: &str) -> Result<&str, Error> {
        match self.required(name)? {
            Value::Text(s) => Ok(s),
            other => Err(Self::mistyped(name, ValueType::Text, other)),
        }
    }

    /// An optional text parameter.
    pub fn opt_text(&self, name: &str) -> Result<Option<&str>, Error> {
        self.get(name).map(|_| self.text(name)).transpose()
    }

    /// A required integer parameter.
    pub fn integer(&self, name: &str) -> Result<i64, Error> {
        match self.required(name)? {
            Value::Integer(i) => Ok(*i),
            other => Err(Self::mistyped(name, ValueType::Integer, other)),
        }
    }

    /// An optional integer parameter.
    pub fn opt_integer(&self, name: &str) -> Result<Option<i64>, Error> {
        self.get(name).map(|_| self.integer(name)).transpose()
    }

    /// A required float parameter. Integers are accepted and converted.
    pub fn float(&self, name: &str) -> Result<f64, Error> {
        match self.required(name)? {
            Value::Float(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            other => Err(Self::mistyped(name, ValueType::Float, other)),
        }
    }

    /// An optional float parameter.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, Error> {
        self.get(name).map(|_| self.float(name)).transpose()
    }

    /// A required boolean parameter.
    pub fn boolean(&self, name: &str) -> Result<bool, Error> {
        match self.required(name)? {
            Value::Boolean(b) => Ok(*b),
            other => Err(Self::mistyped(name, ValueType::Boolean, other)),
        }
    }

    /// An optional boolean parameter.
    pub fn opt_boolean(&self, name: &str) -> Result<Option<bool>, Error> {
        self.get(name).map(|_| self.boolean(name)).transpose()
    }

    /// A required duration parameter.
    pub fn duration(&self, name: &str) -> Result<Duration, Error> {
        match self.required(name)? {
            Value::Duration(d) => Ok(*d),
            other => Err(Self::mistyped(name, ValueType::Duration, other)),
        }
    }

    /// An optional duration parameter.
    pub fn opt_duration(&self, name: &str) -> Result<Option<Duration>, Error> {
        self.get(name).map(|_| self.duration(name)).transpose()
    }

    /// A required list-of-text parameter.
    pub fn text_list(&self, name: &str) -> Result<&[String], Error> {
        match self.required(name)? {
            Value::TextList(l) => Ok(l),
            other => Err(Self::mistyped(name, ValueType::TextList, other)),
        }
    }

    /// An optional list-of-text parameter.
    pub fn opt_text_list(&self, name: &str) -> Result<Option<&[String]>, Error> {
        self.get(name).map(|_| self.text_list(name)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_name_the_parameter_and_the_types() {
        let p = Params::new().with("port", "eighty").with("n", 3i64);
        let err = p.integer("port").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid parameters: parameter `port` must be integer, not text"
        );
        assert_eq!(p.float("n").unwrap(), 3.0);
        assert_eq!(p.opt_text("missing").unwrap(), None);
        assert_eq!(
            p.text("missing").unwrap_err().to_string(),
            "invalid parameters: parameter `missing` is required"
        );
    }

    #[test]
    fn with_replaces_an_existing_value() {
        let p = Params::new().with("a", 1i64).with("a", 2i64);
        assert_eq!(p.iter().count(), 1);
        assert_eq!(p.integer("a").unwrap(), 2);
    }
}
