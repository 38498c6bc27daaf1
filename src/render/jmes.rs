//! JMESPath extraction: a string found in an object's JSON value becomes a
//! file of its own. Only string results are accepted. Errors name the
//! object and the expression, never the value.

use crate::secret::SecretBytes;
use crate::spec::{JmesSpec, ObjectSpec};

/// Why a JMESPath file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("Invalid JSON used with jmesPath in secret: {0}.")]
    NotJson(String),
    #[error("Invalid JMES Path: {0}.")]
    InvalidPath(String),
    #[error("JMES Path - {path} for object alias - {alias} does not point to a valid object.")]
    NoMatch { path: String, alias: String },
    #[error("Invalid JMES search result type for path:{0}. Only string is allowed.")]
    NotString(String),
}

pub fn extract(object: &ObjectSpec, entry: &JmesSpec, value: &SecretBytes) -> Result<SecretBytes, RenderError> {
    let text = std::str::from_utf8(value.expose()).map_err(|_| RenderError::NotJson(object.name.clone()))?;
    let data = jmespath::Variable::from_json(text).map_err(|_| RenderError::NotJson(object.name.clone()))?;
    let expr = jmespath::compile(&entry.path).map_err(|_| RenderError::InvalidPath(entry.path.clone()))?;
    let result = expr
        .search(data)
        .map_err(|_| RenderError::InvalidPath(entry.path.clone()))?;
    if result.is_null() {
        return Err(RenderError::NoMatch {
            path: entry.path.clone(),
            alias: entry.alias.clone(),
        });
    }
    match result.as_string() {
        Some(s) => Ok(SecretBytes::from(s.clone())),
        None => Err(RenderError::NotString(entry.path.clone())),
    }
}
