//! `jsonKeysAsFiles`: every top-level key of a JSON object value becomes a
//! file of its own, named by the key, under the object's file name (a
//! directory then). String values are written as they are, other values as
//! compact JSON. Keys that are not valid file names, and keys that appear
//! twice in the value, are refused: both would otherwise lose a file
//! silently.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use zeroize::Zeroize;

use crate::limits::Echo;
use crate::secret::SecretBytes;
use crate::spec::PathRule;
use crate::spec::paths;

/// Why a value could not be split into files (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// Not JSON, or JSON but not an object.
    NotObject,
    /// A key that would not make a file name.
    Key { key: String, rule: KeyRule },
    /// A key that appears twice.
    Duplicate(String),
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are quoted so that an empty one, or one of spaces, shows.
        match self {
            SplitError::NotObject => f.write_str("the value is not a JSON object"),
            SplitError::Key { key, rule } => write!(f, "key \"{}\" is not a file name: {rule}", Echo(key)),
            SplitError::Duplicate(key) => write!(f, "key \"{}\" appears more than once in the value", Echo(key)),
        }
    }
}

/// Why a key is not a file name: the path rules of [`paths`], said of the
/// key (one component of the file's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    Slash,
    Path(PathRule),
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Slash => f.write_str("it contains \"/\", which would make a subdirectory"),
            KeyRule::Path(PathRule::Empty) => f.write_str("it is empty"),
            KeyRule::Path(PathRule::Dot) => f.write_str("\".\" is the current directory"),
            KeyRule::Path(PathRule::Traversal) => f.write_str("\"..\" is the parent directory"),
            KeyRule::Path(PathRule::NulByte) => f.write_str("it contains a NUL byte"),
            KeyRule::Path(PathRule::ComponentTooLong) => {
                write!(f, "it is longer than {} bytes", paths::MAX_COMPONENT_LEN)
            }
            // Rules of the whole path (the object's file name and the key).
            KeyRule::Path(
                rule @ (PathRule::TooLong
                | PathRule::TooDeep
                | PathRule::Absolute
                | PathRule::EmptyComponent
                | PathRule::ReservedPrefix),
            ) => rule.fmt(f),
        }
    }
}

/// The top-level entries of a JSON object, in document order, keeping
/// duplicates (a map would silently keep only the last).
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(EntriesVisitor).map_err(de::Error::custom)
    }
}

/// The file of key `key` of an object written as `dir`.
pub fn file_of(dir: &str, key: &str) -> String {
    format!("{dir}/{key}")
}

/// The files of `value` under directory `dir`: `(dir/key, contents)` in the
/// value's key order. serde_json bounds the nesting it parses (128 levels).
/// Bytes splitting may hold per byte of the value: the parsed entries and
/// the files made of them.
pub const WORK_FACTOR: u64 = 4;

pub fn split(dir: &str, value: &[u8]) -> Result<Vec<(String, SecretBytes)>, SplitError> {
    let Entries(entries) = serde_json::from_slice(value).map_err(|_| SplitError::NotObject)?;
    let mut out: Vec<(String, SecretBytes)> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut failure = None;
    for (key, value) in entries {
        if failure.is_some() {
            wipe(value);
            continue;
        }
        let path = file_of(dir, &key);
        // `dir` is a valid file name: the driver's rules, applied to the
        // whole path, judge the key (an empty one as a file name of its own,
        // not as the empty component it leaves in the path).
        let rule = if key.contains('/') {
            Some(KeyRule::Slash)
        } else if key.is_empty() {
            Some(KeyRule::Path(PathRule::Empty))
        } else {
            paths::check_relative_path(&path).err().map(KeyRule::Path)
        };
        if let Some(rule) = rule {
            failure = Some(SplitError::Key { key, rule });
            wipe(value);
            continue;
        }
        if !seen.insert(key.clone()) {
            failure = Some(SplitError::Duplicate(key));
            wipe(value);
            continue;
        }
        let contents = match value {
            Value::String(s) => SecretBytes::new(s.into_bytes()),
            other => {
                let json = serde_json::to_vec(&other).unwrap_or_default();
                wipe(other);
                SecretBytes::new(json)
            }
        };
        out.push((path, contents));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Zeroizes the strings of a parsed value as it drops (without recursion).
fn wipe(root: Value) {
    let mut stack = vec![root];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(mut s) => s.zeroize(),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (mut k, v) in map {
                    k.zeroize();
                    stack.push(v);
                }
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str, v: &str) -> Result<Vec<(String, String)>, SplitError> {
        split(dir, v.as_bytes()).map(|f| {
            f.into_iter()
                .map(|(p, c)| (p, String::from_utf8(c.expose().to_vec()).unwrap()))
                .collect()
        })
    }

    #[test]
    fn strings_as_they_are_other_values_as_compact_json_in_key_order() {
        let got = files(
            "db",
            r#"{"user": "admin", "port": 5432, "tls": {"ca": "x", "on": true}, "hosts": ["a", "b"], "none": null}"#,
        )
        .unwrap();
        let want = [
            ("db/user", "admin"),
            ("db/port", "5432"),
            ("db/tls", r#"{"ca":"x","on":true}"#),
            ("db/hosts", r#"["a","b"]"#),
            ("db/none", "null"),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(files("db", "{}").unwrap(), vec![]);
    }

    #[test]
    fn non_objects_bad_keys_and_duplicates_are_refused() {
        for v in ["[1]", "\"s\"", "not json", "", "{\"a\":"] {
            assert_eq!(files("d", v), Err(SplitError::NotObject), "{v}");
        }
        let key = |k: &str| match files("d", &format!("{{{}: 1}}", serde_json::to_string(k).unwrap())) {
            Err(SplitError::Key { rule, .. }) => Some(rule),
            _ => None,
        };
        assert_eq!(key("a/b"), Some(KeyRule::Slash));
        assert_eq!(key(".."), Some(KeyRule::Path(PathRule::Traversal)));
        assert_eq!(key("."), Some(KeyRule::Path(PathRule::Dot)));
        assert_eq!(key("..data"), None, "reserved only at the top of the volume");
        assert_eq!(key(""), Some(KeyRule::Path(PathRule::Empty)));
        assert_eq!(key(&"k".repeat(256)), Some(KeyRule::Path(PathRule::ComponentTooLong)));
        assert_eq!(key("nul\0"), Some(KeyRule::Path(PathRule::NulByte)));
        assert_eq!(key("ok"), None);
        assert_eq!(
            files("d", r#"{"a": 1, "b": 2, "a": 3}"#),
            Err(SplitError::Duplicate("a".into()))
        );
        // Deep nesting is bounded by the parser, not a stack overflow.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(files("d", &deep), Err(SplitError::NotObject));
    }

    #[test]
    fn a_refused_key_is_quoted_and_the_rule_is_said_of_the_key() {
        let message = |v: &str| files("db", v).map(|_| ()).map_err(|e| e.to_string());
        let cases = [
            (r#"{"": 1}"#, r#"key "" is not a file name: it is empty"#),
            (
                r#"{"..": 1}"#,
                r#"key ".." is not a file name: ".." is the parent directory"#,
            ),
            (
                r#"{".": 1}"#,
                r#"key "." is not a file name: "." is the current directory"#,
            ),
            (
                r#"{"../escape": 1}"#,
                r#"key "../escape" is not a file name: it contains "/", which would make a subdirectory"#,
            ),
            (
                r#"{"a\u0000b": 1}"#,
                r#"key "a\u{0}b" is not a file name: it contains a NUL byte"#,
            ),
            (r#"{"a": 1, "a": 2}"#, r#"key "a" appears more than once in the value"#),
        ];
        for (value, expected) in cases {
            assert_eq!(message(value), Err(expected.to_string()), "{value}");
        }
        assert_eq!(message(r#"{" ": 1}"#), Ok(()), "a key of spaces is a file name");
        let long = format!(r#"{{"{}": 1}}"#, "k".repeat(256));
        assert_eq!(
            message(&long),
            Err(format!(
                r#"key "{}…(256 bytes)" is not a file name: it is longer than 255 bytes"#,
                "k".repeat(96)
            ))
        );
        // The rules of the whole path are said of the path.
        let deep = "d/".repeat(33);
        assert_eq!(
            files(deep.trim_end_matches('/'), r#"{"k": 1}"#)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(r#"key "k" is not a file name: the file is nested in more than 32 directories"#.to_string())
        );
    }
}
