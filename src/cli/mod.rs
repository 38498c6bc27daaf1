//! Operator commands beside the server.

pub mod mount;
pub mod probe;
pub mod validate;

use serde_yaml::Value;

/// A SecretProviderClass parameter value: the CRD holds strings, but YAML
/// authors write unquoted numbers and booleans too.
pub(crate) fn parameter_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
