//! The modules of `src/` form layers: no module depends, directly or
//! through others, on a module that depends on it. A module is a file or
//! directory directly under `src/` (its submodules are part of it); it
//! depends on every module it names with a `crate::` path, tests included.

#![allow(clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display())
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a source file without its comments (line comments, doc
/// comments and block comments); string literals are kept.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            // A char literal holding a quote is not a string.
            ('\'', Some('"')) => {
                out.push(c);
                out.extend(chars.next());
            }
            _ => out.push(c),
        }
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segments `code` names after `crate::`, the members of
/// `crate::{a, b::c}` groups included.
fn named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Members at the group's own depth.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The module graph: for each module, the modules it names and the files
/// that name each.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let module = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        Some(first.trim_end_matches(".rs").to_string())
    };
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|p| module(p))
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module(file).filter(|m| modules.contains(m)) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rel = file
            .strip_prefix(src)
            .map_or_else(|_| file.display().to_string(), |p| p.display().to_string());
        for to in named(&code(&text)) {
            if to != from && modules.contains(&to) {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(rel.clone());
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// A cycle through `start`, if any: the modules in order.
fn cycle(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>, start: &str) -> Option<Vec<String>> {
    // Depth-first search with an explicit stack (the graph is small).
    let mut stack: Vec<(String, Vec<String>)> = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                return Some(path.clone());
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 20, "modules found: {:?}", edges.keys());
    let mut cycles = Vec::new();
    for module in edges.keys() {
        if let Some(path) = cycle(&edges, module) {
            let mut steps = Vec::new();
            for (i, from) in path.iter().enumerate() {
                let to = &path[(i + 1) % path.len()];
                let files = edges[from][to].iter().cloned().collect::<Vec<_>>().join(", ");
                steps.push(format!("  {from} -> {to}  ({files})"));
            }
            cycles.push(steps.join("\n"));
        }
    }
    assert!(
        cycles.is_empty(),
        "cycles in the module graph:\n{}",
        cycles.join("\n\n")
    );
}

#[test]
fn the_scanner_finds_paths_groups_and_skips_comments() {
    let text = r#"
        use crate::aws::{AwsClients, Failure};
        use crate::{limits::Echo, spec::{self, keys}, memory};
        // crate::commented
        /* crate::blocked */
        let s = "// not a comment"; let t = crate::region::validate(x);
        let q = '"'; let u = crate::kube::X;
    "#;
    let found = named(&code(text));
    let expected: BTreeSet<String> = ["aws", "limits", "spec", "memory", "region", "kube"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.entry(a.into()).or_default().entry(b.into()).or_default();
    }
    assert_eq!(cycle(&edges, "a"), Some(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(cycle(&edges, "d"), None);
}
