//! Objects that select many: every SSM parameter under a path
//! (`parameterPath`, `GetParametersByPath`) or every Secrets Manager secret
//! whose name starts with a prefix and/or that matches filters
//! (`secretNamePrefix`, `secretFilters`, `BatchGetSecretValue` with
//! filters). Each match becomes a file named by its name relative to the
//! path or prefix.

use serde_yaml::Value;

use super::paths::PathTranslation;
use crate::limits::{Echo, Limits};

pub mod keys {
    pub const PARAMETER_PATH: &str = "parameterPath";
    pub const RECURSIVE: &str = "recursive";
    pub const SECRET_NAME_PREFIX: &str = "secretNamePrefix";
    pub const SECRET_FILTERS: &str = "secretFilters";
    pub const ALLOW_EMPTY: &str = "allowEmpty";
}

/// `secretFilters` keys: `BatchGetSecretValue`'s filters other than `name`
/// (that is `secretNamePrefix`, which also names the files) and `all`
/// (a fuzzy word search, too loose to select secrets for a pod).
pub const FILTER_KEYS: &[&str] = &["tag-key", "tag-value", "description", "primary-region"];
/// AWS's bounds of one filter: values per key and bytes per value.
const MAX_FILTER_VALUES: usize = 10;
const MAX_FILTER_VALUE_LEN: usize = 512;
/// SSM's bound of a parameter hierarchy.
const MAX_PATH_LEN: usize = 2048;

/// `secretFilters`: filter key and its values (any of them), in order.
pub type Filters = Vec<(String, Vec<String>)>;

/// What a bulk object selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selection {
    /// SSM parameters under `path`, one level or (`recursive`) all.
    Parameters { path: String, recursive: bool },
    /// Secrets Manager secrets by name prefix and filters (all must match).
    Secrets { prefix: Option<String>, filters: Filters },
}

/// A validated bulk object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BulkSpec {
    pub selection: Selection,
    /// Zero matches mount nothing instead of failing.
    pub allow_empty: bool,
    /// `objectAlias`: the directory (translation off) or prefix (on) of the
    /// files.
    pub alias: Option<String>,
    pub translation: PathTranslation,
}

impl BulkSpec {
    /// How the object is named in messages.
    pub fn describe(&self) -> String {
        match &self.selection {
            Selection::Parameters { path, .. } => format!("parameterPath {}", Echo(path)),
            Selection::Secrets { prefix: Some(p), .. } => format!("secretNamePrefix {}", Echo(p)),
            Selection::Secrets { filters, .. } => {
                let f: Vec<String> = filters
                    .iter()
                    .map(|(k, v)| format!("{k}={}", Echo(&v.join(","))))
                    .collect();
                format!("secretFilters {}", f.join(" "))
            }
        }
    }

    /// The file of a match named `name`: its name relative to the path or
    /// prefix (the last component of the name if that leaves nothing), under
    /// the alias, through `pathTranslation`.
    pub fn file_of(&self, name: &str) -> String {
        let base = match &self.selection {
            Selection::Parameters { path, .. } => Some(path.as_str()),
            Selection::Secrets { prefix, .. } => prefix.as_deref(),
        };
        let relative = base.and_then(|b| name.strip_prefix(b)).unwrap_or(name);
        let mut relative = relative.trim_start_matches('/');
        if relative.is_empty() {
            relative = name.rsplit('/').find(|c| !c.is_empty()).unwrap_or(name);
        }
        let joined = match &self.alias {
            Some(alias) => format!("{}/{relative}", alias.trim_end_matches('/')),
            None => relative.to_string(),
        };
        self.translation.file_name(&joined)
    }

    /// The file of any match, `placeholder` standing for the part of the
    /// match's name that [`Self::file_of`] keeps (what AWS returns decides it).
    pub fn file_pattern(&self, placeholder: &str) -> String {
        let name = match &self.selection {
            Selection::Parameters { path, .. } => format!("{}/{placeholder}", path.trim_end_matches('/')),
            Selection::Secrets { prefix, .. } => format!("{}{placeholder}", prefix.as_deref().unwrap_or_default()),
        };
        self.file_of(&name)
    }
}

/// The raw bulk fields of one object.
#[derive(Debug, Default)]
pub struct RawBulk {
    pub parameter_path: Option<String>,
    pub recursive: Option<String>,
    pub prefix: Option<String>,
    pub filters: Option<Filters>,
    pub allow_empty: Option<String>,
}

impl RawBulk {
    pub fn is_set(&self) -> bool {
        self.parameter_path.is_some() || self.prefix.is_some() || self.filters.is_some()
    }
}

/// Why bulk fields are invalid.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("object {}: {field} selects many objects and cannot be used with objectName", Echo(.what))]
    WithName { what: String, field: &'static str },
    #[error("object {}: parameterPath (SSM) and secretNamePrefix/secretFilters (Secrets Manager) exclude each other", Echo(.0))]
    Mixed(String),
    #[error("object {}: {field} needs objectType {expected}", Echo(.what))]
    WrongType {
        what: String,
        field: &'static str,
        expected: &'static str,
    },
    #[error("object {}: {field} makes no sense for an object that selects many (one file per match)", Echo(.what))]
    NotForSets { what: String, field: &'static str },
    #[error(
        "object {}: parameterPath must start with / and hold only letters, digits and _.-/ (at most 2048): {}",
        Echo(.what),
        Echo(.path)
    )]
    InvalidPath { what: String, path: String },
    #[error(
        "object {}: {field} values must be 1 to 512 characters of letters, digits, spaces and :_@/+=.-! (a leading ! negates), at most 10 per key: {}",
        Echo(.what),
        Echo(.value)
    )]
    InvalidFilterValue { what: String, field: String, value: String },
    #[error("object {}: secretFilters key {} is not one of tag-key, tag-value, description, primary-region", Echo(.what), Echo(.key))]
    InvalidFilterKey { what: String, key: String },
    #[error("object {}: {field} must be true or false: {}", Echo(.what), Echo(.value))]
    NotBool {
        what: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "object {}: {field} applies only to objects that select many (parameterPath, secretNamePrefix, secretFilters)",
        Echo(.what)
    )]
    OnlyForSets { what: String, field: &'static str },
    #[error(
        "object {}: secretFilters needs at least one filter, or a secretNamePrefix (an object never selects every secret)",
        Echo(.0)
    )]
    NoFilter(String),
    #[error("object {}: secretNamePrefix must not start with ! (a negated prefix cannot name the files)", Echo(.0))]
    NegatedPrefix(String),
}

/// Validates the bulk fields. `other_fields` are the single-object fields
/// that were set (names as written in the class), refused for sets.
pub fn validate(
    raw: RawBulk,
    object_type: Option<&str>,
    alias: Option<String>,
    other_fields: &[&'static str],
    translation: PathTranslation,
) -> Result<BulkSpec, BulkError> {
    let secrets = raw.prefix.is_some() || raw.filters.is_some();
    let what = raw
        .parameter_path
        .clone()
        .or_else(|| raw.prefix.clone())
        .unwrap_or_else(|| keys::SECRET_FILTERS.to_string());
    if raw.parameter_path.is_some() && secrets {
        return Err(BulkError::Mixed(what));
    }
    let (field, expected) = if secrets {
        let field = if raw.prefix.is_some() {
            keys::SECRET_NAME_PREFIX
        } else {
            keys::SECRET_FILTERS
        };
        (field, "secretsmanager")
    } else {
        (keys::PARAMETER_PATH, "ssmparameter")
    };
    if let Some(t) = object_type
        && !t.eq_ignore_ascii_case(expected)
    {
        return Err(BulkError::WrongType { what, field, expected });
    }
    if let Some(field) = other_fields.first() {
        return Err(BulkError::NotForSets { what, field });
    }
    let boolean = |field: &'static str, v: Option<String>| -> Result<bool, BulkError> {
        match v.as_deref() {
            None | Some("") => Ok(false),
            Some(s) => super::parse_go_bool(s).ok_or_else(|| BulkError::NotBool {
                what: what.clone(),
                field,
                value: s.to_string(),
            }),
        }
    };
    let allow_empty = boolean(keys::ALLOW_EMPTY, raw.allow_empty)?;
    let selection = if let Some(path) = raw.parameter_path {
        let valid = path.starts_with('/')
            && path.len() <= MAX_PATH_LEN
            && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if !valid {
            return Err(BulkError::InvalidPath { what, path });
        }
        let recursive = boolean(keys::RECURSIVE, raw.recursive)?;
        Selection::Parameters { path, recursive }
    } else {
        if raw.recursive.is_some() {
            return Err(BulkError::NotForSets {
                what,
                field: keys::RECURSIVE,
            });
        }
        if let Some(p) = &raw.prefix {
            if p.starts_with('!') {
                return Err(BulkError::NegatedPrefix(what));
            }
            check_filter_value(&what, keys::SECRET_NAME_PREFIX, p)?;
        }
        let filters = raw.filters.unwrap_or_default();
        if raw.prefix.is_none() && filters.is_empty() {
            return Err(BulkError::NoFilter(what));
        }
        for (key, values) in &filters {
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(BulkError::InvalidFilterKey { what, key: key.clone() });
            }
            let field = format!("secretFilters.{key}");
            if values.is_empty() || values.len() > MAX_FILTER_VALUES {
                return Err(BulkError::InvalidFilterValue {
                    what,
                    field,
                    value: format!("{} values", values.len()),
                });
            }
            for v in values {
                check_filter_value(&what, &field, v)?;
            }
        }
        Selection::Secrets {
            prefix: raw.prefix,
            filters,
        }
    };
    Ok(BulkSpec {
        selection,
        allow_empty,
        alias,
        translation,
    })
}

fn check_filter_value(what: &str, field: &str, v: &str) -> Result<(), BulkError> {
    let valid = !v.is_empty()
        && v.len() <= MAX_FILTER_VALUE_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" :_@/+=.-!".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(BulkError::InvalidFilterValue {
            what: what.to_string(),
            field: field.to_string(),
            value: v.to_string(),
        })
    }
}

/// Reads `secretFilters`: a mapping of filter key to a value or a list of
/// values, each a scalar; sizes are checked in [`validate`] (the YAML
/// itself is already bounded by `--max-objects-bytes`).
pub fn read_filters(v: &Value, field: &str, limits: &Limits) -> Result<Option<Filters>, String> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::Mapping(m) => m,
        _ => return Err(format!("{field} must be a mapping of filter key to values")),
    };
    let mut out: Filters = Vec::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            return Err(format!("{field} keys must be strings"));
        };
        let scalar = |v: &Value| -> Result<String, String> {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("{field}.{key} must be a string or a list of strings")),
            };
            if s.len() > limits.max_name_length.max(MAX_FILTER_VALUE_LEN) {
                return Err(format!(
                    "{field}.{key}: a value is longer than {MAX_FILTER_VALUE_LEN} bytes"
                ));
            }
            Ok(s)
        };
        let values = match v {
            Value::Sequence(items) if items.len() > MAX_FILTER_VALUES => {
                return Err(format!("{field}.{key}: more than {MAX_FILTER_VALUES} values"));
            }
            Value::Sequence(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(other)?],
        };
        if out.len() >= FILTER_KEYS.len() && !out.iter().any(|(k, _)| k == key) {
            return Err(format!("{field}: more than {} keys", FILTER_KEYS.len()));
        }
        match out.iter_mut().find(|(k, _)| k == key) {
            Some((_, existing)) => *existing = values,
            None => out.push((key.to_string(), values)),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(selection: Selection, alias: Option<&str>, translation: PathTranslation) -> BulkSpec {
        BulkSpec {
            selection,
            allow_empty: false,
            alias: alias.map(str::to_string),
            translation,
        }
    }

    #[test]
    fn files_are_named_relative_to_the_path_or_prefix_under_the_alias() {
        let path = |p: &str| Selection::Parameters {
            path: p.to_string(),
            recursive: true,
        };
        let off = PathTranslation::Off;
        let on = PathTranslation::default();
        assert_eq!(
            spec(path("/orders/prod"), None, on).file_of("/orders/prod/db/url"),
            "db_url"
        );
        assert_eq!(
            spec(path("/orders/prod/"), None, off).file_of("/orders/prod/db/url"),
            "db/url"
        );
        assert_eq!(
            spec(path("/orders/prod"), Some("cfg"), off).file_of("/orders/prod/db"),
            "cfg/db"
        );
        assert_eq!(
            spec(path("/orders/prod"), Some("cfg"), on).file_of("/orders/prod/db"),
            "cfg_db"
        );
        let prefix = |p: &str| Selection::Secrets {
            prefix: Some(p.to_string()),
            filters: vec![],
        };
        assert_eq!(spec(prefix("orders/prod/"), None, on).file_of("orders/prod/db"), "db");
        assert_eq!(spec(prefix("orders/pr"), None, off).file_of("orders/prod/db"), "od/db");
        assert_eq!(
            spec(prefix("orders/db"), None, on).file_of("orders/db"),
            "db",
            "the name itself"
        );
        let tags = Selection::Secrets {
            prefix: None,
            filters: vec![("tag-key".into(), vec!["team".into()])],
        };
        assert_eq!(
            spec(tags.clone(), Some("all"), off).file_of("orders/db"),
            "all/orders/db"
        );

        // The pattern of any match puts the placeholder where the part of
        // the name AWS decides goes.
        let any = |s: BulkSpec| s.file_pattern("<name>");
        assert_eq!(any(spec(path("/orders/prod"), None, on)), "<name>");
        assert_eq!(any(spec(path("/orders/prod/"), Some("cfg"), on)), "cfg_<name>");
        assert_eq!(any(spec(path("/"), Some("cfg/"), off)), "cfg/<name>");
        assert_eq!(any(spec(prefix("orders/pr"), Some("o"), off)), "o/<name>");
        assert_eq!(any(spec(tags, None, on)), "<name>");
    }
}
