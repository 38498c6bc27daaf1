//! A structural pre-scan of the YAML of `objects` and `templates`, run
//! before any value is built from it (it allocates per event, never per
//! expansion). It measures what the document stands for once its aliases
//! are expanded, as the parser that builds values will expand them:
//!
//! - anchors (`&a`), aliases (`*a`) and merge keys (`<<: *a`) are accepted,
//!   as the Go provider accepts them, but what they expand to counts: the
//!   expanded document must fit `--max-objects-bytes`, so an alias bomb (a
//!   few KiB that expand to hundreds of MiB) is refused at the alias that
//!   crosses the limit, with its line;
//! - lists and mappings nest at most [`MAX_DEPTH`] levels, aliases
//!   included, so nothing downstream recurses deeply;
//! - the expanded document holds at most [`NODES_PER_FILE`] nodes per file
//!   of `--max-files-per-mount`: building a value costs a few hundred bytes
//!   per node whatever its text, and the count (not the text) sets what
//!   parsing costs ([`Scan::parse_bytes`]).
//!
//! A document that is JSON (YAML's subset) is scanned and read by a JSON
//! reader, which holds its nesting and a string being unescaped while it
//! scans. A YAML
//! reader holds a flow collection (`{…}`, `[…]`) whole, a few hundred bytes
//! per token, while it could still turn out to be a mapping key: what the
//! scan of YAML may hold is bounded beforehand by [`scan_bytes`], from the
//! tokens the text can make at most.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Scanner, Token, TokenType};

use crate::limits::Limits;

/// Deepest nesting of lists and mappings accepted in `objects` (a class
/// needs four: the list, an object, its `jmesPath` list, an entry).
pub const MAX_DEPTH: usize = 32;

/// YAML nodes (scalars, lists, mappings) per file a mount may produce: a
/// class needs about ten per object with all its fields and five per
/// `jmesPath` entry.
pub const NODES_PER_FILE: u64 = 32;

/// Bytes the parser allocates per node it builds at most (a mapping entry
/// with its key, hashes and allocations), and per byte of text: measured
/// with a counting allocator (`spec::tests`).
pub const BYTES_PER_NODE: u64 = 512;
pub const BYTES_PER_TEXT_BYTE: u64 = 4;

/// What a YAML reader that builds values holds whatever the document (its
/// buffers), measured with a counting allocator.
pub const READER_BYTES: u64 = 96 * 1024;

/// Bytes a collection stands for in the expansion measure besides its
/// contents (its brackets and separators).
const COLLECTION_BYTES: u64 = 2;

/// Bytes a YAML reader holds per token it keeps (the token, its position,
/// the queue's slack), measured with a counting allocator.
pub const BYTES_PER_TOKEN: u64 = 256;

/// What reading JSON holds besides a string's unescaped copy: an error and
/// its text.
pub const JSON_SCAN_BYTES: u64 = 4096;

/// What the scan refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YamlRule {
    TooDeep,
    /// The document expands to more than the limit (aliases included).
    TooLarge {
        subject: &'static str,
        found: u64,
        max: u64,
        flag: Option<&'static str>,
    },
    /// The document expands to more nodes than the mount's files allow.
    TooManyNodes {
        found: u64,
        max: u64,
    },
    /// An alias inside the list or mapping it stands for.
    RecursiveAlias,
    /// An anchor or alias name of other characters than letters, digits,
    /// `-` and `_` (YAML readers differ on where such a name ends).
    AnchorName,
    /// Not YAML at all (the parser's own message, which quotes no input).
    Syntax(String),
}

impl fmt::Display for YamlRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlRule::TooDeep => write!(f, "objects nest deeper than {MAX_DEPTH} levels, aliases expanded"),
            YamlRule::TooLarge {
                subject,
                found,
                max,
                flag,
            } => {
                write!(
                    f,
                    "{subject}, with its YAML aliases expanded: {found} or more bytes, more than the limit of {max}"
                )?;
                match flag {
                    Some(flag) => write!(f, " ({flag})"),
                    None => Ok(()),
                }
            }
            YamlRule::TooManyNodes { found, max } => write!(
                f,
                "{found} or more YAML nodes with aliases expanded, more than the {max} a mount's files allow \
                 ({NODES_PER_FILE} per file of --max-files-per-mount)"
            ),
            YamlRule::RecursiveAlias => write!(
                f,
                "a YAML alias inside the list or mapping its anchor names (it would contain itself)"
            ),
            YamlRule::AnchorName => write!(
                f,
                "a YAML anchor or alias name of other characters than letters, digits, '-' and '_'"
            ),
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

/// What a document stands for with its aliases expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Nodes: scalars, lists and mappings.
    pub nodes: u64,
    /// Bytes of text (scalars, and two per collection).
    pub bytes: u64,
}

impl Scan {
    /// An upper bound of what building values from the document allocates.
    pub fn parse_bytes(&self) -> u64 {
        self.nodes
            .saturating_mul(BYTES_PER_NODE)
            .saturating_add(self.bytes.saturating_mul(BYTES_PER_TEXT_BYTE))
            .saturating_add(READER_BYTES)
    }

    fn add(&mut self, other: Scan) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// What the scan may accept.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Bytes of the expanded document, what it is called in the error, and
    /// the flag that sets the limit.
    pub bytes: u64,
    pub subject: &'static str,
    pub flag: Option<&'static str>,
    /// Nodes of the expanded document.
    pub nodes: u64,
}

/// How much larger than its text a manifest may expand (the limit YAML
/// readers of Kubernetes manifests put on aliasing is of this order).
pub const MANIFEST_EXPANSION: u64 = 64;

impl Bounds {
    /// The bounds of a class's `objects` or `templates` under `limits`.
    pub fn of(subject: &'static str, limits: &Limits) -> Self {
        Self {
            bytes: limits.max_objects_bytes as u64,
            subject,
            flag: Some("--max-objects-bytes"),
            nodes: (limits.max_files as u64).saturating_mul(NODES_PER_FILE),
        }
    }

    /// The bounds of a manifest of `len` bytes (read offline by `validate`).
    pub fn manifest(len: usize) -> Self {
        let bytes = (len as u64).saturating_mul(MANIFEST_EXPANSION).max(1 << 20);
        Self {
            bytes,
            subject: "the manifest",
            flag: None,
            nodes: bytes,
        }
    }
}

/// An open list or mapping: what it holds so far, its anchor, and the
/// deepest nesting below it.
struct Frame {
    anchor: usize,
    scan: Scan,
    below: usize,
}

/// Whether `text` is read as JSON: it opens a JSON list or object and a
/// JSON reader accepts it (YAML flow style that is not JSON is read as
/// YAML).
fn is_json(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'[' | b'{'))
        && serde_json::from_str::<de::IgnoredAny>(text).is_ok()
}

/// The document `text` as a value, read as JSON when it is JSON, else as
/// YAML with its merge keys applied: after [`prescan`] accepted it, what
/// it builds is bounded by [`Scan::parse_bytes`].
pub fn load(text: &str) -> Result<serde_yaml::Value, String> {
    if is_json(text) {
        return serde_json::from_str(text).map_err(|e| super::json_error(&e));
    }
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    value.apply_merge().map_err(|e| e.to_string())?;
    Ok(value)
}

/// An upper bound of what [`prescan`] (or any YAML reader) holds while it
/// reads `text`. In block style a reader holds at most one line's tokens; a
/// flow collection (`[…]`, `{…}`) that may turn out to be a mapping key it
/// holds whole until it closes. From the first bracket on, every token the
/// text can make counts (every indicator character, two for `:`, every run
/// of other characters, a few per line for blocks ending), except two
/// things skipped only while the text is read without doubt as YAML reads
/// it: comments outside any collection, and the content of block scalars
/// (`|`, `>`: one token) outside any collection. Doubt, from which on
/// everything counts, is a quote inside a collection (a quoted bracket
/// would close it early), a `#` inside one, or a quoted scalar outside any
/// that runs past its line or holds a bracket. The text of scalars counts
/// twice. JSON is read holding its nesting, a string being unescaped (in a
/// buffer grown by doubling) and an error's text: [`JSON_SCAN_BYTES`] and
/// twice the text at most.
pub fn scan_bytes(text: &str) -> u64 {
    if is_json(text) {
        return JSON_SCAN_BYTES + 2 * text.len() as u64;
    }
    let mut flow = false;
    let mut depth = 0usize;
    let mut trusted = true;
    let mut tokens = 0u64;
    let mut longest_line = 0u64;
    let mut block: Option<BlockScalar> = None;
    for line in text.split('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(b) = &mut block {
            if b.holds(indent, line.trim().is_empty()) {
                continue;
            }
            block = None;
        }
        let bytes = line.as_bytes();
        let mut count = 4u64;
        let mut in_run = false;
        let mut prev_blank = true;
        // The quote of a quoted scalar read outside any collection.
        let mut quote: Option<u8> = None;
        let mut end = bytes.len();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            count += token_weight(b, &mut in_run);
            if let Some(q) = quote {
                match b {
                    b'\\' if q == b'"' => {
                        // An escaped character is text.
                        i += 1;
                        if let Some(&next) = bytes.get(i) {
                            count += token_weight(next, &mut in_run);
                        }
                    }
                    b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if b == q => quote = None,
                    b'[' | b'{' | b']' | b'}' => {
                        // Within a quoted scalar, or a plain one that ends
                        // before it: either way where collections are is
                        // no longer told.
                        trusted = false;
                    }
                    _ => {}
                }
                prev_blank = false;
                i += 1;
                continue;
            }
            if b == b'#' && prev_blank {
                if depth == 0 && trusted {
                    end = i;
                    break;
                }
                trusted = false;
            }
            match b {
                b'[' | b'{' => {
                    flow = true;
                    depth += 1;
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' | b'\'' if depth > 0 => trusted = false,
                b'"' | b'\'' if trusted && prev_blank => quote = Some(b),
                _ => {}
            }
            prev_blank = matches!(b, b' ' | b'\t');
            i += 1;
        }
        if quote.is_some() {
            // A quoted scalar that runs past its line.
            trusted = false;
        }
        if !trusted {
            flow = true;
        }
        longest_line = longest_line.max(count);
        if flow {
            tokens += count;
        }
        if depth == 0
            && trusted
            && let Some(min) = block_header(&line[..end])
        {
            block = Some(BlockScalar { min, content: None });
        }
    }
    // Scalars are held as text too (and copied once into their event).
    (tokens + longest_line + 64)
        .saturating_mul(BYTES_PER_TOKEN)
        .saturating_add(2 * text.len() as u64)
}

/// The tokens a character of YAML may start (`in_run`: whether the one
/// before it continues a run of plain characters).
fn token_weight(b: u8, in_run: &mut bool) -> u64 {
    match b {
        // A value: the key it ends is a token too.
        b':' => {
            *in_run = false;
            2
        }
        b'[' | b'{' | b']' | b'}' | b'"' | b'\'' | b',' | b'-' | b'?' | b'&' | b'*' | b'!' | b'|' | b'>' | b'%'
        | b'@' | b'`' => {
            *in_run = false;
            1
        }
        b' ' | b'\t' | b'\r' => {
            *in_run = false;
            0
        }
        _ if !*in_run => {
            *in_run = true;
            1
        }
        _ => 0,
    }
}

/// A block scalar being read: the least indentation of its content (one
/// more than the node it is the value of), and its content's once seen.
struct BlockScalar {
    min: usize,
    content: Option<usize>,
}

impl BlockScalar {
    /// Whether a line of `indent` (or blank) is content of the scalar.
    fn holds(&mut self, indent: usize, blank: bool) -> bool {
        if blank {
            return true;
        }
        match self.content {
            Some(c) => indent >= c,
            None if indent >= self.min => {
                self.content = Some(indent);
                true
            }
            None => false,
        }
    }
}

/// If `line` (its comment cut) ends in a block scalar's header (`key: |`,
/// `- >-`, `key: &a !t |+`), the least indentation of its content: one
/// more than the column of the key or of the last `-` or `?` before it.
/// Anything else, an explicit indentation indicator (`|2`) included, is
/// not taken for a header, so its lines count.
fn block_header(line: &str) -> Option<usize> {
    let value = line.trim_end();
    let (before, indicator) = value.rsplit_once([' ', '\t']).unwrap_or(("", value));
    if !matches!(indicator, "|" | ">" | "|-" | "|+" | ">-" | ">+") {
        return None;
    }
    // Properties of the scalar (anchors, tags) before the indicator.
    let mut before = before.trim_end();
    while let Some((rest, word)) = before.rsplit_once([' ', '\t']).or(Some(("", before)))
        && (word.starts_with('&') || word.starts_with('!'))
    {
        before = rest.trim_end();
    }
    // Entries of lists and complex keys: `- `, `? `, as many as there are.
    let mut column = line.len() - line.trim_start_matches(' ').len();
    let mut parent = None;
    let mut rest = &before[column.min(before.len())..];
    while let Some(after) = rest.strip_prefix(['-', '?'])
        && (after.is_empty() || after.starts_with([' ', '\t']))
    {
        parent = Some(column);
        let blanks = after.len() - after.trim_start_matches([' ', '\t']).len();
        column += 1 + blanks;
        rest = &after[blanks..];
    }
    if rest.is_empty() {
        // `- |`: the value of a list's entry (or a line of its own).
        return Some(parent.unwrap_or(column) + 1);
    }
    // `key: |`: the value of a key in a mapping at the key's column.
    rest.ends_with(':').then_some(column + 1)
}

/// Scans `text` within `bounds`, expanding aliases as sizes only.
pub fn prescan(text: &str, bounds: &Bounds) -> Result<Scan, YamlError> {
    if is_json(text) {
        return prescan_json(text, bounds);
    }
    check_names(text)?;
    let mut parser = Parser::new_from_str(text);
    let mut document = 0usize;
    // Every anchor's expanded size and depth (the latest definition wins,
    // as in the parser).
    let mut anchors: HashMap<usize, (Scan, usize)> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut total = Scan::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            rule: YamlRule::Syntax(e.to_string()),
            document: document.max(1),
            line: e.marker().line(),
            column: e.marker().col() + 1,
        })?;
        let refuse = |rule| YamlError {
            rule,
            document: document.max(1),
            line: mark.line(),
            column: mark.col() + 1,
        };
        // A node (or an alias standing for one) of `scan` and `depth`.
        let mut add = |stack: &mut Vec<Frame>, scan: Scan, depth: usize| -> Result<(), YamlError> {
            if stack.len() + depth > MAX_DEPTH {
                return Err(refuse(YamlRule::TooDeep));
            }
            match stack.last_mut() {
                Some(parent) => {
                    parent.scan.add(scan);
                    parent.below = parent.below.max(depth);
                }
                None => total.add(scan),
            }
            let open = stack.iter().fold(total, |mut s, f| {
                s.add(f.scan);
                s
            });
            if open.bytes > bounds.bytes {
                return Err(refuse(YamlRule::TooLarge {
                    subject: bounds.subject,
                    found: open.bytes,
                    max: bounds.bytes,
                    flag: bounds.flag,
                }));
            }
            if open.nodes > bounds.nodes {
                return Err(refuse(YamlRule::TooManyNodes {
                    found: open.nodes,
                    max: bounds.nodes,
                }));
            }
            Ok(())
        };
        match event {
            Event::StreamEnd => return Ok(total),
            Event::DocumentStart => document += 1,
            Event::Scalar(value, _, anchor, _) => {
                let scan = Scan {
                    nodes: 1,
                    bytes: value.len() as u64,
                };
                if anchor != 0 {
                    anchors.insert(anchor, (scan, 0));
                }
                add(&mut stack, scan, 0)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() + 1 > MAX_DEPTH {
                    return Err(refuse(YamlRule::TooDeep));
                }
                stack.push(Frame {
                    anchor,
                    scan: Scan {
                        nodes: 1,
                        bytes: COLLECTION_BYTES,
                    },
                    below: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = stack.pop() {
                    let depth = frame.below + 1;
                    if frame.anchor != 0 {
                        anchors.insert(frame.anchor, (frame.scan, depth));
                    }
                    add(&mut stack, frame.scan, depth)?;
                }
            }
            Event::Alias(id) => {
                // An anchor names its node from where it starts: an alias
                // within it would make it contain itself (a reader that
                // builds values would expand it until its recursion limit).
                let Some(&(scan, depth)) = anchors.get(&id) else {
                    return Err(refuse(YamlRule::RecursiveAlias));
                };
                if stack.iter().any(|f| f.anchor == id) {
                    return Err(refuse(YamlRule::RecursiveAlias));
                }
                add(&mut stack, scan, depth)?;
            }
            _ => {}
        }
    }
}

/// Refuses an anchor (`&a`) or alias (`*a`) whose name holds other
/// characters than letters, digits, `-` and `_`. Readers differ on where
/// such a name ends (`&a:` is the anchor `a:` to this scan's reader, and
/// `a` before a `:` to the one that builds values), so what the scan counts
/// would not be what is built. The names are those the reader's own
/// scanner finds (run only when the text holds a `&` or `*`); its problems
/// are left to the parse, which reports them.
fn check_names(text: &str) -> Result<(), YamlError> {
    if !text.contains(['&', '*']) {
        return Ok(());
    }
    let plain = |name: &str| {
        name.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    };
    for Token(mark, token) in Scanner::new(text.chars()) {
        if let TokenType::Anchor(name) | TokenType::Alias(name) = &token
            && !plain(name)
        {
            return Err(YamlError {
                rule: YamlRule::AnchorName,
                document: 1,
                line: mark.line(),
                column: mark.col() + 1,
            });
        }
    }
    Ok(())
}

// === JSON ===

/// Scans a JSON document within `bounds` (its nodes and text; JSON has no
/// aliases), holding nothing but the nesting.
fn prescan_json(text: &str, bounds: &Bounds) -> Result<Scan, YamlError> {
    let count = Count {
        bounds,
        scan: Cell::new(Scan::default()),
        depth: Cell::new(0),
    };
    let mut reader = serde_json::Deserializer::from_str(text);
    let result = (&count).deserialize(&mut reader).and_then(|()| reader.end());
    match result {
        Ok(()) => Ok(count.scan.get()),
        Err(e) => {
            let rule = match count.refused(&e) {
                Some(rule) => rule,
                None => YamlRule::Syntax(super::json_error(&e)),
            };
            Err(YamlError {
                rule,
                document: 1,
                line: e.line(),
                column: e.column(),
            })
        }
    }
}

/// Counts the nodes of a JSON document as it is read.
struct Count<'a> {
    bounds: &'a Bounds,
    scan: Cell<Scan>,
    depth: Cell<usize>,
}

/// The marker of a refusal raised while counting (the error's text).
const REFUSED: &str = "csi-provider-aws: refused by the pre-scan";

impl Count<'_> {
    fn node<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let mut scan = self.scan.get();
        scan.add(Scan {
            nodes: 1,
            bytes: bytes as u64,
        });
        self.scan.set(scan);
        if scan.bytes > self.bounds.bytes || scan.nodes > self.bounds.nodes {
            return Err(E::custom(REFUSED));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.depth.set(self.depth.get() + 1);
        if self.depth.get() > MAX_DEPTH {
            return Err(E::custom(REFUSED));
        }
        self.node(COLLECTION_BYTES as usize)
    }

    /// The rule a counting error stands for, if it is one of ours.
    fn refused(&self, e: &serde_json::Error) -> Option<YamlRule> {
        if !e.to_string().starts_with(REFUSED) {
            return None;
        }
        let scan = self.scan.get();
        Some(if self.depth.get() > MAX_DEPTH {
            YamlRule::TooDeep
        } else if scan.bytes > self.bounds.bytes {
            YamlRule::TooLarge {
                subject: self.bounds.subject,
                found: scan.bytes,
                max: self.bounds.bytes,
                flag: self.bounds.flag,
            }
        } else {
            YamlRule::TooManyNodes {
                found: scan.nodes,
                max: self.bounds.nodes,
            }
        })
    }
}

impl<'de> DeserializeSeed<'de> for &Count<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.node(5)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.node(8)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.node(8)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.node(8)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.node(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.node(4)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        while seq.next_element_seed(self)?.is_some() {}
        self.depth.set(self.depth.get() - 1);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        self.depth.set(self.depth.get() - 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds::of("objects", &Limits::default())
    }

    fn rule(text: &str) -> Option<YamlRule> {
        prescan(text, &bounds()).err().map(|e| e.rule)
    }

    #[test]
    fn plain_classes_pass_and_are_measured() {
        let text = "- objectName: a\n  objectType: secretsmanager\n  jmesPath:\n    - path: x\n      objectAlias: y\n";
        let scan = prescan(text, &bounds()).unwrap();
        // The list, the object, four keys, four values, the entry's list
        // and mapping.
        assert_eq!(scan.nodes, 1 + 1 + 2 * 2 + 1 + 1 + 1 + 2 * 2);
        assert_eq!(rule(r#"[{"objectName": "a", "objectType": "ssmparameter"}]"#), None);
        assert_eq!(rule(""), None);
        assert_eq!(rule("- objectName: 'a&b*c'\n  objectAlias: \"<<\"\n"), None);
    }

    #[test]
    fn anchors_aliases_and_merge_keys_count_what_they_expand_to() {
        let plain = prescan(
            "- {objectName: a, objectType: secretsmanager}\n- {objectName: a, objectType: secretsmanager}\n",
            &bounds(),
        )
        .unwrap();
        let aliased = prescan("- &o {objectName: a, objectType: secretsmanager}\n- *o\n", &bounds()).unwrap();
        assert_eq!(plain, aliased);
        let merged = prescan(
            "- &base {objectType: secretsmanager, filePermission: '0400'}\n- <<: *base\n  objectName: a\n",
            &bounds(),
        )
        .unwrap();
        assert!(merged.nodes > 8, "{merged:?}");
    }

    #[test]
    fn an_alias_bomb_is_refused_by_its_expanded_size_at_the_alias_that_crosses_the_limit() {
        let mut doc = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 0..9u8 {
            let prev = (b'a' + i) as char;
            let next = (b'b' + i) as char;
            doc.push_str(&format!(
                "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let e = prescan(&doc, &bounds()).unwrap_err();
        assert!(
            matches!(e.rule, YamlRule::TooManyNodes { .. } | YamlRule::TooLarge { .. }),
            "{e}"
        );
        // Nine levels of nine: it crosses the limit a few lines in.
        assert!((3..=7).contains(&e.line), "{e}");
        assert!(e.to_string().contains("aliases expanded"), "{e}");
        // In bytes: a large scalar aliased many times.
        let big = format!("- &s {}\n{}", "x".repeat(4096), "- *s\n".repeat(100));
        let e = prescan(&big, &bounds()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--max-objects-bytes") && text.contains("YAML aliases expanded"),
            "{text}"
        );
    }

    #[test]
    fn nesting_is_bounded_aliases_included() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(rule(&deep), Some(YamlRule::TooDeep));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(rule(&ok), None);
        // Each half fits; the alias puts one inside the other.
        let half = MAX_DEPTH / 2 + 1;
        let doc = format!(
            "a: &d {}{}\nb: {}*d{}\n",
            "[".repeat(half),
            "]".repeat(half),
            "[".repeat(half),
            "]".repeat(half)
        );
        assert_eq!(rule(&doc), Some(YamlRule::TooDeep));
        // The parser has a recursion limit of its own, above ours.
        let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            rule(&very_deep),
            Some(YamlRule::TooDeep | YamlRule::Syntax(_))
        ));
    }

    #[test]
    fn nodes_are_bounded_by_the_mounts_files() {
        let doc = format!("- objectName: a\n  x: [{}]\n", "a,".repeat(40_000));
        let e = prescan(&doc, &bounds()).unwrap_err();
        assert!(matches!(e.rule, YamlRule::TooManyNodes { max: 32_000, .. }), "{e}");
        assert!(e.to_string().contains("--max-files-per-mount"), "{e}");
    }

    #[test]
    fn what_a_scan_holds_is_bounded_beforehand() {
        // A flow collection a YAML reader holds whole: its tokens.
        for n in [1_000usize, 20_000] {
            assert_scan_bounded(&format!("- {{x: [{}]}}\n", "a,".repeat(n)));
        }
        // Block YAML is charged for a line, JSON for its text, and the
        // brackets of a template in a block scalar for nothing.
        let small = |text: &str| scan_bytes(text) <= 2 * text.len() as u64 + 64 * 1024;
        let block = "- objectName: a\n  objectType: secretsmanager\n".repeat(2000);
        assert!(small(&block), "{}", scan_bytes(&block));
        let template = format!(
            "- fileName: a\n  template: |\n{}",
            "    {{ files.a | upper }}\n".repeat(5000)
        );
        assert!(small(&template), "{}", scan_bytes(&template));
        // A quoted bracket inside a collection: the collection is counted
        // to the end, block scalars or not.
        assert_scan_bounded(&format!("- {{x: [a, \"]]\", b |\n    {}]}}\n", "a, ".repeat(20_000)));
        // A quoted `#` inside a collection starts no comment.
        assert_scan_bounded(&format!("- [a, \"b #\", {}]\n", "c, ".repeat(20_000)));
        // A comment's brackets close nothing.
        assert_scan_bounded(&format!("- {{x: [a, # ]]\n b |\n    {}]}}\n", "a, ".repeat(20_000)));
        let json = r#"[{"objectName": "a"}]"#;
        assert_eq!(scan_bytes(json), JSON_SCAN_BYTES + 2 * json.len() as u64);
        // Refused JSON too: its error's text.
        assert_scan_bounded(&format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)));
        assert_scan_bounded(&format!("[\"{}\"]", "\\n".repeat(20_000)));
    }

    /// Documents whose collections the text alone could make look closed,
    /// commented or inside a block scalar: what scanning them holds stays
    /// within what was announced, whether the scan accepts them or not.
    #[test]
    fn what_a_scan_holds_is_bounded_whatever_the_text_pretends() {
        let items = "a, ".repeat(20_000);
        let docs = [
            // A block scalar ends at the first line less indented than its
            // content, not than its header.
            format!("- b: |\n    text\n  c:\n    [{items}]\n"),
            // Content less indented than the key it is the value of.
            format!("- b: |\n [{items}]\n"),
            // A quoted bracket closes nothing, and the `#` after it starts
            // no comment.
            format!("- [\"]\", \" #\", {items}]\n"),
            // A quoted scalar running over lines looks like a block
            // scalar's header.
            format!("a: \"x\nb: |\n  y\"\n  c: [{items}]\n"),
            // A plain key holding a quote, before a collection.
            format!("x \"y: [a, \"z\n {items}]\n"),
        ];
        for doc in &docs {
            assert_scan_bounded(doc);
        }
    }

    /// What scanning `doc` holds at its peak is within what was announced.
    fn assert_scan_bounded(doc: &str) {
        let info = allocation_counter::measure(|| {
            let _ = prescan(doc, &bounds());
        });
        assert!(
            info.bytes_max <= scan_bytes(doc),
            "{}: {} > {}",
            &doc[..20],
            info.bytes_max,
            scan_bytes(doc)
        );
    }

    #[test]
    fn an_alias_inside_its_own_anchor_is_refused() {
        let items = "  - x\n".repeat(1_000);
        let doc = format!("- &a\n{items}  - *a\n");
        let e = prescan(&doc, &bounds()).unwrap_err();
        assert_eq!(e.rule, YamlRule::RecursiveAlias, "{e}");
        assert_eq!(e.line, 1_002, "{e}");
        assert!(e.to_string().contains("would contain itself"), "{e}");
        assert_eq!(rule("a: &a {b: *a}\n"), Some(YamlRule::RecursiveAlias));
        // A name readers would end in different places: to one `{*a:}` is
        // the alias `a:` of a scalar, to the other a mapping whose key is
        // the list `a`, expanded each time.
        let big = format!("[{}x]", "x, ".repeat(1000));
        let doc = format!("- &a: small\n- &a {big}\n- [{}]\n", "{*a:}, ".repeat(200));
        let e = prescan(&doc, &bounds()).unwrap_err();
        assert_eq!((&e.rule, e.line, e.column), (&YamlRule::AnchorName, 1, 3), "{e}");
        assert_eq!(rule("a: &x.y 1\n"), Some(YamlRule::AnchorName));
        assert_eq!(
            rule("a: [&x 1, *x]\nb: 'q &a:' \nc: x &y:z\n# &a:\nd: |\n  a && b\n"),
            None
        );
        // An alias after its anchor's node ends is fine.
        assert_eq!(rule("a: &a [x]\nb: [*a, *a]\n"), None);
    }

    #[test]
    fn json_is_scanned_and_read_as_json() {
        let json = format!(
            "[{}]",
            (0..900)
                .map(|i| format!(r#"{{"objectName": "s{i}", "objectType": "secretsmanager"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let scan = prescan(&json, &bounds()).unwrap();
        assert_eq!(scan.nodes, 1 + 900 * 5);
        assert!(matches!(load(&json), Ok(serde_yaml::Value::Sequence(s)) if s.len() == 900));
        // YAML flow style that is not JSON is YAML.
        assert_eq!(rule("[{objectName: a, objectType: secretsmanager}]"), None);
        assert!(matches!(load("[{objectName: a}]"), Ok(serde_yaml::Value::Sequence(s)) if s.len() == 1));
        // JSON's own limits: nodes, nesting.
        let many = format!("[{}1]", "1,".repeat(40_000));
        assert!(matches!(rule(&many), Some(YamlRule::TooManyNodes { .. })));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(rule(&deep), Some(YamlRule::TooDeep));
    }

    #[test]
    fn syntax_errors_carry_no_input() {
        let e = prescan("- objectName: \"secret-canary\n", &bounds()).unwrap_err();
        assert!(matches!(e.rule, YamlRule::Syntax(_)), "{e:?}");
        assert!(!e.to_string().contains("secret-canary"), "{e}");
    }
}
