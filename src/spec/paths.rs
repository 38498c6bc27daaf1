//! File-name rules: how an object's file name is derived (alias, path
//! translation) and which relative paths are acceptable. The acceptance rules
//! are the driver's own (a payload it would reject must never be produced),
//! plus `.`/`..` names, which the driver's atomic writer would mishandle.

use std::collections::HashMap;
use std::fmt;

use crate::limits::Echo;

/// The driver's limit for a whole path.
pub const MAX_PATH_LEN: usize = 4096;
/// The driver's (and Linux's) limit for one path component.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most directories a file may be nested in (`pathTranslation: False`):
/// far more than any volume layout needs, few enough that nothing walking
/// the volume goes deep.
pub const MAX_PATH_DEPTH: usize = 32;

/// How `/` in object names is handled (`pathTranslation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathTranslation {
    /// Replace every `/` with this character (default `_`).
    Replace(char),
    /// Keep inner slashes as subdirectories; strip leading slashes.
    Off,
}

impl Default for PathTranslation {
    fn default() -> Self {
        PathTranslation::Replace('_')
    }
}

impl PathTranslation {
    /// The file name for an object alias or name.
    pub fn file_name(self, base: &str) -> String {
        match self {
            PathTranslation::Replace(c) => base.replace('/', &c.to_string()),
            PathTranslation::Off => base.trim_start_matches('/').to_string(),
        }
    }
}

/// Why a relative path is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRule {
    Empty,
    Absolute,
    TooLong,
    ComponentTooLong,
    TooDeep,
    Traversal,
    Dot,
    EmptyComponent,
    ReservedPrefix,
    NulByte,
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRule::Empty => f.write_str("the file name is empty"),
            PathRule::Absolute => f.write_str("the file name starts with \"/\" (an absolute path)"),
            PathRule::TooLong => write!(f, "the path is longer than {MAX_PATH_LEN} bytes"),
            PathRule::ComponentTooLong => write!(f, "a path component is longer than {MAX_COMPONENT_LEN} bytes"),
            PathRule::TooDeep => write!(f, "the file is nested in more than {MAX_PATH_DEPTH} directories"),
            PathRule::Traversal => f.write_str("a path component is \"..\" (the parent directory)"),
            PathRule::Dot => f.write_str("a path component is \".\" (the current directory)"),
            PathRule::EmptyComponent => f.write_str("the path has an empty component (a doubled or trailing \"/\")"),
            PathRule::ReservedPrefix => f.write_str(
                "names starting with \"..\" are reserved for the atomic writer's own entries (such as \"..data\")",
            ),
            PathRule::NulByte => f.write_str("the file name contains a NUL byte"),
        }
    }
}

/// Checks a relative path against the driver's payload rules.
pub fn check_relative_path(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    if path.contains('\0') {
        return Err(PathRule::NulByte);
    }
    if path.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathRule::TooLong);
    }
    for (i, component) in path.split('/').enumerate() {
        if i > MAX_PATH_DEPTH {
            return Err(PathRule::TooDeep);
        }
        match component {
            "" => return Err(PathRule::EmptyComponent),
            "." => return Err(PathRule::Dot),
            ".." => return Err(PathRule::Traversal),
            c if c.len() > MAX_COMPONENT_LEN => return Err(PathRule::ComponentTooLong),
            c if i == 0 && c.starts_with("..") => return Err(PathRule::ReservedPrefix),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_replaces_every_slash_including_leading() {
        let t = PathTranslation::default();
        assert_eq!(t.file_name("/app/db"), "_app_db");
        assert_eq!(PathTranslation::Replace('-').file_name("a/b/c"), "a-b-c");
    }

    #[test]
    fn translation_off_strips_leading_slashes_only() {
        assert_eq!(PathTranslation::Off.file_name("//app/db"), "app/db");
    }

    #[test]
    fn driver_rules_reject_unclean_paths() {
        assert_eq!(check_relative_path(""), Err(PathRule::Empty));
        assert_eq!(check_relative_path("/a"), Err(PathRule::Absolute));
        assert_eq!(check_relative_path("a/"), Err(PathRule::EmptyComponent));
        assert_eq!(check_relative_path("a//b"), Err(PathRule::EmptyComponent));
        assert_eq!(check_relative_path("./a"), Err(PathRule::Dot));
        assert_eq!(check_relative_path("a/./b"), Err(PathRule::Dot));
        assert_eq!(check_relative_path("a/../b"), Err(PathRule::Traversal));
        assert_eq!(check_relative_path(".."), Err(PathRule::Traversal));
        assert_eq!(check_relative_path("..data"), Err(PathRule::ReservedPrefix));
        assert_eq!(check_relative_path("a/..b"), Ok(()));
        assert_eq!(check_relative_path(&"x".repeat(256)), Err(PathRule::ComponentTooLong));
        assert_eq!(check_relative_path(&"a/".repeat(2100)), Err(PathRule::TooLong));
        assert_eq!(check_relative_path(&format!("{}f", "d/".repeat(32))), Ok(()));
        assert_eq!(
            check_relative_path(&format!("{}f", "d/".repeat(33))),
            Err(PathRule::TooDeep)
        );
        assert_eq!(check_relative_path("dir/file.json"), Ok(()));
        assert_eq!(check_relative_path(".hidden"), Ok(()));
    }

    #[test]
    fn each_rule_names_what_is_wrong_with_the_name() {
        let message = |path: &str| check_relative_path(path).map_err(|r| r.to_string());
        let cases = [
            ("", "the file name is empty"),
            ("/etc/passwd", "the file name starts with \"/\" (an absolute path)"),
            ("a/../b", "a path component is \"..\" (the parent directory)"),
            ("..", "a path component is \"..\" (the parent directory)"),
            ("a/.", "a path component is \".\" (the current directory)"),
            ("a//b", "the path has an empty component (a doubled or trailing \"/\")"),
            ("a/", "the path has an empty component (a doubled or trailing \"/\")"),
            (
                "..data",
                "names starting with \"..\" are reserved for the atomic writer's own entries (such as \"..data\")",
            ),
            ("a\0b", "the file name contains a NUL byte"),
        ];
        for (path, expected) in cases {
            assert_eq!(message(path), Err(expected.to_string()), "{path:?}");
        }
        // Lengths are in bytes, as the driver counts them: 128 two-byte
        // characters are 256 bytes.
        assert_eq!(
            message(&"é".repeat(128)),
            Err("a path component is longer than 255 bytes".to_string())
        );
        assert_eq!(
            message(&"a/".repeat(2100)),
            Err("the path is longer than 4096 bytes".to_string())
        );
        assert_eq!(
            message(&format!("{}f", "d/".repeat(33))),
            Err("the file is nested in more than 32 directories".to_string())
        );
    }
}

/// Two files of a mount that cannot both exist. Names are echoed truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Collision {
    /// One file name, written by `first` and by `second`.
    #[error("found duplicate file name {}: written by both {} and {}", Echo(.file), Echo(.first), Echo(.second))]
    Same {
        file: String,
        first: String,
        second: String,
    },
    /// `file` (of `object`) is where `nested` (of `nested_object`) needs a
    /// directory.
    #[error(
        "file name {} of {} conflicts with the directory needed for {} of {}",
        Echo(.file),
        Echo(.object),
        Echo(.nested),
        Echo(.nested_object)
    )]
    FileIsDirectory {
        file: String,
        object: String,
        nested: String,
        nested_object: String,
    },
}

/// The first collision among `files` (file name, owner): a name written
/// twice, or a file where another needs a directory.
pub fn find_collision<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Collision> {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for (file, owner) in files {
        if let Some(first) = owners.insert(file, owner) {
            return Some(Collision::Same {
                file: file.to_string(),
                first: first.to_string(),
                second: owner.to_string(),
            });
        }
    }
    for (file, owner) in &owners {
        let mut end = 0;
        while let Some(slash) = file[end..].find('/') {
            let prefix = &file[..end + slash];
            if let Some(other) = owners.get(prefix) {
                return Some(Collision::FileIsDirectory {
                    file: prefix.to_string(),
                    object: other.to_string(),
                    nested: file.to_string(),
                    nested_object: owner.to_string(),
                });
            }
            end += slash + 1;
        }
    }
    None
}
