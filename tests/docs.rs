//! The documentation against the binary and against itself: the flag tables
//! of `docs/flags.md` list exactly the flags each command's `--help` prints,
//! every command has its table, every relative link of the README,
//! CONTRIBUTING.md and `docs/` names a file and (after `#`) a heading that
//! exist, and the README's first SecretProviderClass is valid.
//!
//! Only the binary's `--help` output is read, never the source that defines
//! the flags, so the flags may move between modules freely.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// clap's own flags: every command takes `--help`, the top level
/// `--version`. docs/flags.md says so once, not in each table.
const BUILT_IN: &[&str] = &["--help", "--version"];

/// Each command's `--help` (its arguments before `--help`) and the heading of
/// its table in docs/flags.md. The default command is `serve`: both its
/// spellings are checked against the same table.
const COMMANDS: &[(&[&str], &str)] = &[
    (&[], "## `csi-provider-aws serve`"),
    (&["serve"], "## `csi-provider-aws serve`"),
    (&["mount"], "## `csi-provider-aws mount`"),
    (&["validate"], "## `csi-provider-aws validate`"),
    (&["probe"], "## `csi-provider-aws probe`"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map_err(|e| format!("read {}: {e}", path.display()))
        .unwrap()
}

/// `csi-provider-aws <args> --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "csi-provider-aws {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// Every `--name` in `text`, in order.
fn long_flags(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..len];
        if name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            flags.push(format!("--{name}"));
        }
        rest = &after[len..];
    }
    flags
}

/// The long flags a help text defines, clap's own aside. An option line is
/// indented by at most six spaces and starts with `-` (`-h, --help`,
/// `      --qps <QPS>`); its first long flag is the one it defines.
/// Descriptions are indented further and may name other flags (`--qps` in
/// `--burst`'s, the driver's `--max-call-recv-msg-size`): those are not read.
fn defined_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let text = line.trim_start();
            let indent = line.len() - text.len();
            if indent == 0 || indent > 6 || !text.starts_with('-') {
                return None;
            }
            long_flags(text).into_iter().next()
        })
        .filter(|flag| !BUILT_IN.contains(&flag.as_str()))
        .collect()
}

/// The flags in the first column of the table rows of `doc`'s section
/// `heading` (up to the next `## ` heading); `None` without that section.
fn documented_flags(doc: &str, heading: &str) -> Option<BTreeSet<String>> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with('|'))
            .filter_map(|row| row.replace("\\|", "/").split('|').nth(1).map(long_flags))
            .flatten()
            .collect(),
    )
}

#[test]
fn the_flag_tables_of_docs_flags_md_list_exactly_the_flags_of_each_commands_help() {
    let doc = read(&root().join("docs/flags.md"));
    let mut problems = Vec::new();
    for (args, heading) in COMMANDS {
        let command = [&["csi-provider-aws"], *args, &["--help"]].concat().join(" ");
        let binary = defined_flags(&help(args));
        assert!(
            !binary.is_empty(),
            "{command} lists no flag: is its format still clap's?"
        );
        let Some(documented) = documented_flags(&doc, heading) else {
            problems.push(format!("docs/flags.md has no section {heading:?} for {command}"));
            continue;
        };
        let missing: Vec<&String> = binary.difference(&documented).collect();
        let unknown: Vec<&String> = documented.difference(&binary).collect();
        if !missing.is_empty() {
            problems.push(format!("{heading}: not documented, but `{command}` lists {missing:?}"));
        }
        if !unknown.is_empty() {
            problems.push(format!(
                "{heading}: documented, but `{command}` does not list {unknown:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/flags.md and --help differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_command_of_the_binary_has_a_section_in_docs_flags_md() {
    let help = help(&[]);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(commands.contains(&"serve"), "no Commands: section in --help:\n{help}");
    for name in &commands {
        let heading = format!("## `csi-provider-aws {name}`");
        assert!(
            COMMANDS.iter().any(|(_, h)| *h == heading),
            "command {name} is new: add a table {heading:?} to docs/flags.md and a row to COMMANDS"
        );
    }
    assert!(
        COMMANDS
            .iter()
            .all(|(args, _)| args.iter().all(|a| commands.contains(a))),
        "COMMANDS names a command the binary no longer has: {commands:?}"
    );
}

#[test]
fn the_option_lines_of_a_help_text_are_read_and_its_descriptions_are_not() {
    let help = "Options:\n      --burst <BURST>\n          Kubernetes API burst before `--qps` spaces them\n\n  \
                -h, --help\n          Print help\n      --driver-writes-secrets[=<DRIVER_WRITES_SECRETS>]\n\n\
                Usage: csi-provider-aws mount --spc <FILE>\n";
    let flags: Vec<String> = defined_flags(help).into_iter().collect();
    assert_eq!(flags, ["--burst", "--driver-writes-secrets"]);
    let doc = "## `x`\n\n| Flag | Default |\n|---|---|\n| `--qps` / `--burst` | `5` |\n\
               | `--driver-writes-secrets[=true\\|false]` | `false` |\n## next\n| `--other` | |\n";
    let documented: Vec<String> = documented_flags(doc, "## `x`").unwrap().into_iter().collect();
    assert_eq!(documented, ["--burst", "--driver-writes-secrets", "--qps"]);
}

/// The user-facing Markdown files: the README, CONTRIBUTING.md and docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives the headings of a Markdown text: lower case,
/// characters other than letters, digits, spaces, `-` and `_` dropped,
/// spaces as `-`, and `-1`, `-2`, ... for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else {
            continue;
        };
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
    }
    seen
}

/// The targets of the inline links `[text](target)` of a Markdown text.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_of_the_docs_names_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let name = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a directory").join(path)
            };
            if !linked.exists() {
                broken.push(format!("{name}: ({target}): no file {}", linked.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && !anchors(&read(&linked)).contains(anchor)
            {
                broken.push(format!("{name}: ({target}): no heading #{anchor} in {path}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn headings_get_githubs_anchors() {
    let text = "# Limits (what one tenant can ask of a node)\n## `objectType`\n```sh\n# a comment\n```\n\
                ## IAM policy for the pod's role\n## Retries\n## Retries\n#hashtag\n";
    let found: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        found,
        [
            "iam-policy-for-the-pods-role",
            "limits-what-one-tenant-can-ask-of-a-node",
            "objecttype",
            "retries",
            "retries-1"
        ]
    );
}

#[test]
fn the_readmes_first_secretproviderclass_passes_validate() {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split("## A first SecretProviderClass")
        .nth(1)
        .expect("the README has a section \"A first SecretProviderClass\"");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("a yaml block in that section");
    assert!(yaml.contains("kind: SecretProviderClass"), "{yaml}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("first.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
