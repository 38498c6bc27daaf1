//! A structural pre-scan of the `objects` YAML, run before any value is
//! built from it. Anchors, aliases and merge keys are refused: a class never
//! needs them, and aliases let a few KiB of text expand into hundreds of MiB
//! (serde_yaml expands them while deserializing and has no limit for it).
//! Nesting is bounded, so nothing downstream recurses deeply. The scan is an
//! event parser: it allocates per event, never per expansion.

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Deepest nesting of lists and mappings accepted in `objects` (a class
/// needs four: the list, an object, its `jmesPath` list, an entry).
pub const MAX_DEPTH: usize = 32;

/// What the scan refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YamlRule {
    Anchor,
    Alias,
    MergeKey,
    TooDeep,
    /// Not YAML at all (the parser's own message, which quotes no input).
    Syntax(String),
}

impl fmt::Display for YamlRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlRule::Anchor => f.write_str("YAML anchors (&name) are not supported in objects; write each value out"),
            YamlRule::Alias => f.write_str("YAML aliases (*name) are not supported in objects; write each value out"),
            YamlRule::MergeKey => f.write_str("YAML merge keys (<<) are not supported in objects; write each key out"),
            YamlRule::TooDeep => write!(f, "objects nest deeper than {MAX_DEPTH} levels"),
            YamlRule::Syntax(m) => write!(f, "not valid YAML: {m}"),
        }
    }
}

/// A refused document and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub rule: YamlRule,
    /// The document of a multi-document stream (1-based).
    pub document: usize,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            // The parser's message carries its own position.
            YamlRule::Syntax(_) => self.rule.fmt(f),
            rule => write!(f, "{rule} (line {} column {})", self.line, self.column),
        }
    }
}

/// Scans `text` and refuses anchors, aliases, merge keys and deep nesting.
pub fn prescan(text: &str) -> Result<(), YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let mut document = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            rule: YamlRule::Syntax(e.to_string()),
            document: document.max(1),
            line: e.marker().line(),
            column: e.marker().col() + 1,
        })?;
        let refuse = |rule| {
            Err(YamlError {
                rule,
                document: document.max(1),
                line: mark.line(),
                column: mark.col() + 1,
            })
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => document += 1,
            Event::Alias(_) => return refuse(YamlRule::Alias),
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                return refuse(YamlRule::Anchor);
            }
            Event::Scalar(value, TScalarStyle::Plain, _, _) if value == "<<" => return refuse(YamlRule::MergeKey),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return refuse(YamlRule::TooDeep);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Option<YamlRule> {
        prescan(text).err().map(|e| e.rule)
    }

    #[test]
    fn plain_classes_pass() {
        assert_eq!(
            rule("- objectName: a\n  objectType: secretsmanager\n  jmesPath:\n    - path: x\n      objectAlias: y\n"),
            None
        );
        assert_eq!(rule(r#"[{"objectName": "a", "objectType": "ssmparameter"}]"#), None);
        assert_eq!(rule(""), None);
        assert_eq!(rule("- objectName: 'a&b*c'\n  objectAlias: \"<<\"\n"), None);
        assert_eq!(rule("- objectName: a&b\n  path: foo[*].bar\n"), None);
    }

    #[test]
    fn anchors_aliases_and_merge_keys_are_refused_with_their_position() {
        assert_eq!(rule("- &x {objectName: a}\n- *x\n"), Some(YamlRule::Anchor));
        assert_eq!(rule("- objectName: &n a\n"), Some(YamlRule::Anchor));
        let e = prescan("- objectName: a\n- {<<: {objectType: secretsmanager}}\n").unwrap_err();
        assert_eq!(e.rule, YamlRule::MergeKey);
        assert_eq!((e.line, e.column), (2, 4));
        assert!(e.to_string().contains("line 2 column 4"), "{e}");
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_first_anchor_without_expanding() {
        let mut doc = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 0..9u8 {
            let prev = (b'a' + i) as char;
            let next = (b'b' + i) as char;
            doc.push_str(&format!(
                "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        assert_eq!(rule(&doc), Some(YamlRule::Anchor));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(rule(&deep), Some(YamlRule::TooDeep));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(rule(&ok), None);
        // The parser has a recursion limit of its own, above ours.
        let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            rule(&very_deep),
            Some(YamlRule::TooDeep | YamlRule::Syntax(_))
        ));
    }

    #[test]
    fn syntax_errors_carry_no_input() {
        let e = prescan("- objectName: \"secret-canary\n").unwrap_err();
        assert!(matches!(e.rule, YamlRule::Syntax(_)), "{e:?}");
        assert!(!e.to_string().contains("secret-canary"), "{e}");
    }
}
