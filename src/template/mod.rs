//! Templates: files rendered from the other files of a mount (the class's
//! `templates` parameter), on minijinja.
//!
//! The templates of a class are written by any tenant and run in the
//! provider that serves every namespace of the node, so the language is a
//! subset of Jinja in which every value that can grow is paid for:
//!
//! - the environment is empty but for the filters and tests listed here,
//!   each of which computes the size of its result before building it and
//!   charges it to the mount's work budget (`--max-template-work`);
//! - the operators that build values out of others (`~`, `+`, `*` and the
//!   rest of arithmetic), slices, block captures (`{% set x %}…`,
//!   `{% filter %}`), macros, calls, includes and recursive loops are refused
//!   when the template is compiled, so a value is either a file's value, a
//!   literal of the template, a part of one of them, or a paid-for result;
//! - every instruction costs fuel (`--max-template-fuel`, per mount), and the
//!   output is cut at the file and mount size limits as it is written.
//!
//! Errors name the template's file and line and say what is wrong with the
//! template, never what a value is: the messages come from the template's
//! text, value kinds, and this module.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::machinery::{Token, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use sha2::{Digest, Sha256};

use crate::limits::{Echo, Limit, LimitError, Limits, echo};
use crate::memory::{Charge, MemoryError, MountMemory, Stage};
use crate::secret::SecretBytes;

mod budget;
mod files;
mod filters;
mod rules;

pub use budget::Budget;
use budget::*;
pub use files::Files;
use files::*;
use filters::*;
use rules::*;

/// The variable through which a template reads the mount's files.
pub const FILES: &str = "files";

/// The filters a template may use.
pub const FILTERS: &[&str] = &[
    "b64decode",
    "b64encode",
    "default",
    "fromjson",
    "indent",
    "items",
    "join",
    "length",
    "lower",
    "replace",
    "shellquote",
    "tojson",
    "trim",
    "upper",
    "urlencode",
];

/// The tests a template may use (`is defined`, ...).
pub const TESTS: &[&str] = &["defined", "undefined", "none", "string", "mapping"];

/// The statements a template may use.
const STATEMENTS: &[&str] = &["if", "elif", "else", "endif", "for", "endfor", "set", "with", "endwith"];

/// Tokens of one tag (`{{ … }}` or `{% … %}`). The parser nests a chain of
/// filters, operators or `not`s as deep as it is long, and recurses over it
/// when it compiles and drops it; a bounded tag keeps that within the stack
/// of any thread (a legitimate tag holds a few dozen).
pub const MAX_TAG_TOKENS: usize = 200;

/// Words of the language that are not names.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// Bytes a compiled template holds per byte of its text, at most
/// (instructions with their spans, the environment), measured on templates
/// of the shortest tags (`template::tests`).
pub const COMPILED_FACTOR: u64 = 24;

/// A template that compiled under the rules of this module: compiled once,
/// when the class is validated, and rendered from that.
#[derive(Clone)]
pub struct Template {
    /// The file it renders (its name in errors).
    pub file: String,
    source: Arc<str>,
    /// The files it names literally (`files.name`, `files["name"]`), with
    /// the line of their first use.
    pub references: Vec<(String, u32)>,
    /// The compiled template, in an environment of its own whose filters
    /// charge `work`.
    env: Environment<'static>,
    work: Arc<WorkCell>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.source == other.source
    }
}

impl Eq for Template {}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("file", &self.file)
            .field("bytes", &self.source.len())
            .field("references", &self.references)
            .finish_non_exhaustive()
    }
}

/// A template that cannot be compiled or rendered: its file, the line, and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {}{}: {problem}", Echo(.file), .line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TemplateError {
    pub file: String,
    pub line: Option<u32>,
    pub problem: Problem,
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The template language's own error (syntax, undefined names, types).
    #[error("{0}")]
    Language(String),
    #[error("{what} is not available in templates{hint}")]
    NotAllowed { what: String, hint: &'static str },
    #[error("unknown filter {}; the filters are {}", Echo(.0), FILTERS.join(", "))]
    UnknownFilter(String),
    #[error("unknown test {}; the tests are {}", Echo(.0), TESTS.join(", "))]
    UnknownTest(String),
    #[error("{FILES}[{:?}] names no file of this mount", echo(.0))]
    NoSuchFile(String),
    #[error(transparent)]
    Limit(LimitError),
    #[error(transparent)]
    Memory(MemoryError),
}

impl TemplateError {
    fn new(file: &str, line: Option<u32>, problem: Problem) -> Self {
        Self {
            file: file.to_string(),
            line,
            problem,
        }
    }
}

impl Template {
    /// Checks `source` against the rules of this module and compiles it.
    pub fn compile(file: &str, source: &str) -> Result<Self, TemplateError> {
        let references = scan(file, source)?;
        let work = Arc::new(WorkCell::default());
        let mut env = environment(work.clone());
        if let Err(e) = env.add_template_owned(file.to_string(), source.to_string()) {
            return Err(language_error(file, &e));
        }
        Ok(Self {
            file: file.to_string(),
            source: Arc::from(source),
            references,
            env,
            work,
        })
    }

    /// An upper bound of what the compiled template holds (bytes).
    pub fn compiled_bytes(&self) -> u64 {
        (self.source.len() as u64).saturating_mul(COMPILED_FACTOR)
    }

    /// Renders the template from `files` within `budget`, writing at most
    /// `max_bytes` (`limit` names the limit that sets it). The version is a
    /// digest of the template and of the names and versions of the files it
    /// read: it changes exactly when one of those, or the template, does.
    pub fn render(
        &mut self,
        files: &Arc<Files>,
        budget: &mut Budget,
        max_bytes: u64,
        limit: Limit,
        limits: &Limits,
    ) -> Result<Rendered, TemplateError> {
        let view = Arc::new(View {
            files: files.clone(),
            read: Mutex::new(BTreeSet::new()),
            missing: Mutex::new(BTreeSet::new()),
        });
        // This render's filters charge the mount's work budget.
        self.work.set(Some(budget.work.clone()));
        let _unset = Unset(&self.work);
        self.env.set_fuel(Some(budget.fuel));
        let fail = |problem| TemplateError::new(&self.file, None, problem);
        let template = self
            .env
            .get_template(&self.file)
            .map_err(|e| language_error(&self.file, &e))?;
        let mut out = Capped::new(max_bytes, budget.work.clone());
        let ctx = minijinja::context! { files => Value::from_dyn_object(view.clone()) };
        let result = template.render_captured_to(ctx, &mut out);
        let consumed = match &result {
            Ok(captured) => captured.state().fuel_levels().map_or(0, |(used, _)| used),
            Err(_) => 0,
        };
        match result {
            Ok(_) => {}
            Err(_) if out.exceeded => {
                return Err(fail(Problem::Limit(LimitError {
                    subject: "the output".to_string(),
                    limit,
                    found: max_bytes.saturating_add(1),
                    at_least: true,
                    max: limit.max(limits),
                })));
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(fail(Problem::Limit(LimitError {
                    subject: "the render".to_string(),
                    limit: Limit::TemplateFuel,
                    found: limits.max_template_fuel.saturating_add(1),
                    at_least: true,
                    max: limits.max_template_fuel,
                })));
            }
            Err(e) => {
                let line = e.line().map(|l| l as u32);
                // The file the error is about: one that does not exist and
                // that the failing line names (not a probe such as
                // `files.x is defined` elsewhere).
                let text = line
                    .and_then(|l| self.source.lines().nth((l as usize).saturating_sub(1)))
                    .unwrap_or_default();
                let missing = view.missing.lock().map(|m| m.clone()).unwrap_or_default();
                let named = missing.into_iter().find(|name| {
                    [
                        format!("{FILES}.{name}"),
                        format!("{FILES}[\"{name}\"]"),
                        format!("{FILES}['{name}']"),
                    ]
                    .iter()
                    .any(|r| text.contains(r.as_str()))
                });
                if e.kind() == ErrorKind::UndefinedError
                    && let Some(name) = named
                {
                    return Err(TemplateError::new(&self.file, line, Problem::NoSuchFile(name)));
                }
                if let Some(p) = budget.work.take_problem() {
                    return Err(TemplateError::new(&self.file, line, p));
                }
                return Err(language_error(&self.file, &e));
            }
        }
        budget.fuel = budget.fuel.saturating_sub(consumed);
        let read = view.read.lock().map(|r| r.clone()).unwrap_or_default();
        let mut digest = Sha256::new();
        digest.update((self.source.len() as u64).to_be_bytes());
        digest.update(self.source.as_bytes());
        for name in &read {
            let version = files.entries.get(name).map(|e| e.version.as_str()).unwrap_or_default();
            for part in [name.as_str(), version] {
                digest.update((part.len() as u64).to_be_bytes());
                digest.update(part.as_bytes());
            }
        }
        let hash = digest.finalize();
        let version = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Rendered {
            contents: SecretBytes::new(std::mem::take(&mut out.buf)),
            version,
            read: read.into_iter().collect(),
            fuel: consumed,
        })
    }
}

/// A rendered template.
#[derive(Debug)]
pub struct Rendered {
    pub contents: SecretBytes,
    /// The template's `object_version`.
    pub version: String,
    /// The files it read.
    pub read: Vec<String>,
    /// The fuel (instructions) it used.
    pub fuel: u64,
}

/// The language error `e` of template `file`: its kind and detail (which
/// come from the template's text and value kinds, never from values) and
/// its line.
fn language_error(file: &str, e: &Error) -> TemplateError {
    let kind = e.kind();
    let text = match e.detail() {
        Some(d) => format!("{kind}: {}", echo(d)),
        None => kind.to_string(),
    };
    TemplateError::new(file, e.line().map(|l| l as u32), Problem::Language(text))
}

/// The first name the templates of a class read literally that `known`
/// says no file of the class has, as the error to report.
pub fn unknown_reference<'a>(
    templates: impl IntoIterator<Item = &'a Template>,
    known: impl Fn(&str) -> bool,
) -> Option<TemplateError> {
    templates.into_iter().find_map(|t| {
        t.references
            .iter()
            .find(|(name, _)| !known(name))
            .map(|(name, line)| TemplateError::new(&t.file, Some(*line), Problem::NoSuchFile(name.clone())))
    })
}

/// Compiles each of `sources` on a thread with the smallest stack the
/// provider parses on (2 MiB); a stack overflow fails the test.
#[cfg(test)]
fn on_small_stack(sources: Vec<String>) -> Vec<Result<(), TemplateError>> {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || sources.iter().map(|c| Template::compile("t", c).map(|_| ())).collect())
        .expect("thread")
        .join()
        .expect("no stack overflow")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str, &str)]) -> Arc<Files> {
        Arc::new(Files::new(entries.iter().map(|(n, v, ver)| {
            (n.to_string(), SecretBytes::from(v.to_string()), ver.to_string())
        })))
    }

    fn render_with(source: &str, f: &Arc<Files>, limits: &Limits) -> Result<Rendered, TemplateError> {
        let mut t = Template::compile("out.env", source)?;
        t.render(
            f,
            &mut Budget::new(limits),
            limits.max_file_bytes as u64,
            Limit::FileBytes,
            limits,
        )
    }

    fn render(source: &str, f: &Arc<Files>) -> Result<String, TemplateError> {
        render_with(source, f, &Limits::default())
            .map(|r| String::from_utf8(r.contents.expose().to_vec()).unwrap_or_default())
    }

    #[test]
    fn renders_files_filters_and_loops() {
        let f = files(&[
            ("db", r#"{"user":"app","password":"p'w d"}"#, "v1"),
            ("host", "db.internal\n", "3"),
            ("db-url", "x", "1"),
        ]);
        let out = render(
            "{% set db = files.db | fromjson %}USER={{ db.user }}\nPASS={{ db.password | shellquote }}\n\
             HOST={{ files.host | trim }}\nURL=postgres://{{ db.user }}:{{ db.password | urlencode }}@{{ files.host | trim }}\n\
             {% for k, v in db | items %}{{ k | upper }}={{ v | b64encode }}\n{% endfor %}{{ files[\"db-url\"] }}",
            &f,
        );
        assert_eq!(
            out.as_deref(),
            Ok(
                "USER=app\nPASS='p'\\''w d'\nHOST=db.internal\nURL=postgres://app:p%27w%20d@db.internal\n\
                PASSWORD=cCd3IGQ=\nUSER=YXBw\nx"
            )
        );
    }

    #[test]
    fn refuses_what_builds_values_and_names_the_line() {
        for (source, what) in [
            ("{{ files.a ~ files.a }}", "the operator `~`"),
            ("\n{{ files.a + files.a }}", "the operator `+`"),
            ("{{ files.a * 3 }}", "the operator `*`"),
            ("{{ files.a[1:] }}", "a slice"),
            ("{% set x %}{{ files.a }}{% endset %}", "{% set %} capturing a block"),
            ("{% filter upper %}x{% endfilter %}", "{% filter %}"),
            ("{% macro m() %}{% endmacro %}", "{% macro %}"),
            ("{% include 'x' %}", "{% include %}"),
            ("{{ range(10) }}", "calling a function"),
            ("{{ files.a.upper() }}", "calling a function"),
            ("{% for x in files recursive %}{% endfor %}", "a recursive loop"),
        ] {
            let e = Template::compile("t", source).expect_err(source);
            assert!(
                matches!(&e.problem, Problem::NotAllowed { what: w, .. } if w == what),
                "{source}: {e}"
            );
        }
        let e = Template::compile("t", "ok\n\n{{ files.a | nope }}").expect_err("unknown filter");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.problem, Problem::UnknownFilter("nope".into()));
        let e = Template::compile("t", "{% if files.a is odd %}{% endif %}").expect_err("unknown test");
        assert_eq!(e.problem, Problem::UnknownTest("odd".into()));
        let e = Template::compile("t", "x\n{% if %}").expect_err("syntax");
        assert!(e.to_string().starts_with("template t, line 2: syntax error"), "{e}");
    }

    /// What a review found could grow without being paid for, or walk a
    /// value per instruction, or overflow the stack, and what stays allowed.
    #[test]
    fn shared_structures_computed_indexes_and_comparisons_are_refused() {
        let doubling: String = std::iter::once("{% set a = [1] %}".to_string())
            .chain((0..64).map(|_| "{% set a = [a, a] %}".to_string()))
            .collect::<String>()
            + "{{ a in \"x\" }}";
        for (source, what) in [
            (
                doubling.as_str(),
                "a list or mapping literal holding a name or an expression",
            ),
            (
                "{% set a = {'k': files.a} %}",
                "a list or mapping literal holding a name or an expression",
            ),
            (
                "{% set a = [[[files.a]]] %}",
                "a list or mapping literal holding a name or an expression",
            ),
            ("{% set a = files.a, files.a %}", "a tuple"),
            ("{{ (files.a, files.a) }}", "a tuple"),
            ("{% for x in files.a, files.b %}{% endfor %}", "a tuple"),
            ("{{ files.a == files.b }}", "comparing two computed values"),
            (
                "{{ files.a < files.b | default('x') }}",
                "comparing two computed values",
            ),
            (
                "{{ files.a == none | default(files.b) }}",
                "comparing two computed values",
            ),
            ("{{ files[files.db] }}", "a computed index"),
            ("{% for k in files %}{{ files[k] }}{% endfor %}", "a computed index"),
            ("{{ files.a[100000] }}", "a computed index"),
            ("{{ 'x' in files.a }}", "`in` on a computed value"),
            ("{{ files.a in files }}", "`in` on a computed value"),
            ("{% set files = files.a %}", "assigning `files`"),
            ("{% for files in files.a %}{% endfor %}", "assigning `files`"),
            ("{% with files = 1 %}{% endwith %}", "assigning `files`"),
        ] {
            let e = Template::compile("t", source).expect_err(source);
            assert!(
                matches!(&e.problem, Problem::NotAllowed { what: w, .. } if w == what),
                "{source}: {e}"
            );
        }
        // An elif chain would overflow the parser's stack: refused first,
        // on the stack a mount runs on.
        let chain = format!("{{% if 1 %}}{}{{% endif %}}", "{% elif 1 %}".repeat(25_000));
        let e = on_small_stack(vec![chain]).remove(0).expect_err("too many elifs");
        assert!(
            matches!(&e.problem, Problem::NotAllowed { what, .. } if what == "an if with more than 64 elifs"),
            "{e}"
        );

        let f = files(&[
            ("a", "on", "1"),
            ("recursive", "r", "1"),
            ("j", "{\"k\": [1, 2], \"m\": {\"x\": \"y\"}}", "1"),
        ]);
        let allowed = "{% set j = files.j | fromjson %}{% with n = 1, m = 2 %}{{ n }}{{ m }}{% endwith %}\
                       {% if files.a == \"on\" and 3 > 2 and files.a in [\"on\", \"yes\"] %}on{% endif %}\
                       {{ files.recursive }}{{ j.k[1] }}{{ j[\"m\"].x }}{{ {\"a\": [1, {\"b\": none}]}.a[0] }}\
                       {% for k, v in j | items %}{{ k }}{% endfor %}{{ files.a | indent(2, first=true) }}\
                       {% if j.k is defined and j.nope is undefined %}!{% endif %}";
        assert_eq!(render(allowed, &f).as_deref(), Ok("12onr2y1km  on!"));
    }

    #[test]
    fn records_literal_references() {
        let t = Template::compile(
            "t",
            "{{ files.a }}\n{{ files['b-c'] }}{{ x.files.d }}{% for k in files %}{% endfor %}",
        )
        .expect("compiles");
        assert_eq!(t.references, vec![("a".to_string(), 1), ("b-c".to_string(), 2)]);
    }

    #[test]
    fn errors_never_carry_values() {
        let secret = "s3cr3t-value";
        let f = files(&[("a", secret, "1"), ("j", "{\"k\": \"s3cr3t-value\"", "1")]);
        for source in [
            "{{ files.missing }}",
            "{{ files.j | fromjson }}",
            "{{ (files.a | fromjson).x }}",
            "{{ files.a | b64decode }}",
            "{{ files.a.nothing }}",
            "{% for x in files.a | length %}{% endfor %}",
            "{{ files.a | items }}",
            "{{ files.a | join(1) }}",
        ] {
            let e = render(source, &f).expect_err(source);
            assert!(!e.to_string().contains(secret), "{source}: {e}");
        }
        let e = render("\n{{ files.missing }}", &f).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "template out.env, line 2: files[\"missing\"] names no file of this mount"
        );
    }

    #[test]
    fn bounded_by_fuel_work_and_output() {
        let big = "x".repeat(4096);
        let f = files(&[("a", &big, "1"), ("j", "{\"a\":1,\"b\":2,\"c\":3}", "1")]);
        let nested = "{% set j = files.j | fromjson %}{% for a in j %}{% for b in j %}{% for c in j %}\
                      {% for d in j %}{% for e in j %}{% for g in j %}.{% endfor %}{% endfor %}{% endfor %}\
                      {% endfor %}{% endfor %}{% endfor %}";
        for (source, limits, limit) in [
            (
                nested,
                Limits {
                    max_template_fuel: 1_000,
                    ..Limits::default()
                },
                Limit::TemplateFuel,
            ),
            (
                "{% set a = files.a | replace('x', files.a) %}{{ a | length }}",
                Limits {
                    max_template_work: 64 * 1024,
                    ..Limits::default()
                },
                Limit::TemplateWork,
            ),
            (
                "{% for k in files.j | fromjson %}{{ files.a }}{% endfor %}",
                Limits {
                    max_file_bytes: 10_000,
                    ..Limits::default()
                },
                Limit::FileBytes,
            ),
        ] {
            let e = render_with(source, &f, &limits).expect_err(source);
            assert!(matches!(&e.problem, Problem::Limit(l) if l.limit == limit), "{e}");
        }
    }

    #[test]
    fn version_follows_the_files_read_and_the_template() {
        let source = "{% if files.flag == 'on' %}{{ files.a }}{% else %}{{ files.b }}{% endif %}";
        let version = |entries: &[(&str, &str, &str)]| {
            render_with(source, &files(entries), &Limits::default())
                .map(|r| (r.version, r.read))
                .expect("renders")
        };
        let (v1, read) = version(&[("flag", "on", "1"), ("a", "A", "1"), ("b", "B", "1")]);
        assert_eq!(read, vec!["a".to_string(), "flag".to_string()]);
        // b is not read: its rotation does not change the version.
        assert_eq!(version(&[("flag", "on", "1"), ("a", "A", "1"), ("b", "B2", "2")]).0, v1);
        assert_ne!(version(&[("flag", "on", "1"), ("a", "A2", "2"), ("b", "B", "1")]).0, v1);
        let (v2, read) = version(&[("flag", "off", "2"), ("a", "A", "1"), ("b", "B", "1")]);
        assert_ne!(v2, v1);
        assert_eq!(read, vec!["b".to_string(), "flag".to_string()]);
        let mut other = Template::compile("out.env", "{{ files.a }}{{ files.flag }}").expect("compiles");
        let r = other
            .render(
                &files(&[("flag", "on", "1"), ("a", "A", "1")]),
                &mut Budget::new(&Limits::default()),
                1024,
                Limit::FileBytes,
                &Limits::default(),
            )
            .expect("renders");
        assert_ne!(
            r.version, v1,
            "another template reading the same files has another version"
        );
    }
}

#[cfg(test)]
mod nesting {
    use super::*;

    /// Deep nesting is refused by the parser's own depth limit, well within
    /// the stack of a runtime worker thread (2 MiB), in a debug build.
    #[test]
    fn deep_nesting_fails_cleanly_on_a_small_stack() {
        let cases = [
            format!("{{{{ {}files.a{} }}}}", "(".repeat(20_000), ")".repeat(20_000)),
            format!("{{{{ {}1{} }}}}", "[".repeat(20_000), "]".repeat(20_000)),
            format!("{{{{ {}1{} }}}}", "{'a': ".repeat(20_000), "}".repeat(20_000)),
            format!("{}{}", "{% if 1 %}".repeat(20_000), "{% endif %}".repeat(20_000)),
            format!(
                "{}{}",
                "{% for x in files %}".repeat(5_000),
                "{% endfor %}".repeat(5_000)
            ),
            format!("{{{{ files.a{} }}}}", " | trim".repeat(20_000)),
            format!("{{{{ {}files.a }}}}", "not ".repeat(20_000)),
            format!("{{{{ files.a{} }}}}", " or 1".repeat(20_000)),
        ];
        let results = on_small_stack(cases.to_vec());
        // Just within the tag limit, each of them compiles.
        let n = MAX_TAG_TOKENS / 2 - 2;
        let longest = [
            format!("{{{{ files.a{} }}}}", " | trim".repeat(n)),
            format!("{{{{ {}files.a }}}}", "not ".repeat(2 * n)),
            format!("{{{{ files.a{} }}}}", " or 1".repeat(n)),
            format!("{{{{ {}files.a{} }}}}", "(".repeat(30), ")".repeat(30)),
        ];
        for r in on_small_stack(longest.to_vec()) {
            assert!(r.is_ok(), "{r:?}");
        }
        for r in &results {
            assert!(r.is_err(), "{r:?}");
        }
    }
}
