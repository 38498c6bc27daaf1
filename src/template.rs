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

/// What the templates of one mount may still spend.
#[derive(Debug)]
pub struct Budget {
    fuel: u64,
    work: Arc<Work>,
}

impl Budget {
    pub fn new(limits: &Limits) -> Self {
        Self::metered(limits, None)
    }

    /// A budget whose work is also charged to the mount's memory.
    pub fn metered(limits: &Limits, memory: Option<MountMemory>) -> Self {
        Self {
            fuel: limits.max_template_fuel,
            work: Arc::new(Work::new(limits.max_template_work, memory)),
        }
    }

    /// The memory charges of the work done so far, held until the files
    /// are no longer.
    pub fn charges(&self) -> Vec<Charge> {
        self.work
            .charges
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

/// Bytes the filters of a mount's templates may still build, and the
/// problem that stopped one of them (reported with the template's line).
#[derive(Debug)]
struct Work {
    remaining: AtomicU64,
    max: u64,
    problem: Mutex<Option<Problem>>,
    /// The mount's memory, charged for each filter's result.
    memory: Option<MountMemory>,
    charges: Mutex<Vec<Charge>>,
}

impl Work {
    fn new(max: u64, memory: Option<MountMemory>) -> Self {
        Self {
            remaining: AtomicU64::new(max),
            max,
            problem: Mutex::new(None),
            memory,
            charges: Mutex::new(Vec::new()),
        }
    }

    /// Pays for `bytes` of a filter's result before it is built.
    fn charge(&self, filter: &'static str, bytes: u64) -> Result<(), Error> {
        let paid = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(bytes));
        if paid.is_err() {
            return self.stop(Problem::Limit(LimitError {
                subject: format!("the filters of this mount's templates (at {filter})"),
                limit: Limit::TemplateWork,
                found: self.max.saturating_add(1),
                at_least: true,
                max: self.max,
            }));
        }
        self.hold(bytes)
    }

    /// Charges `bytes` the render holds to the mount's memory (not to the
    /// templates' work): one charge per kind, grown as the render goes.
    fn hold(&self, bytes: u64) -> Result<(), Error> {
        let Some(memory) = &self.memory else {
            return Ok(());
        };
        if bytes == 0 {
            return Ok(());
        }
        match memory.try_charge(Stage::Files, bytes) {
            Ok(c) => {
                if let Ok(mut charges) = self.charges.lock() {
                    let mut c = Some(c);
                    for held in charges.iter_mut() {
                        c = match c.take().map(|c| held.merge(c)) {
                            Some(Err(c)) => Some(c),
                            _ => None,
                        };
                    }
                    charges.extend(c);
                }
                Ok(())
            }
            Err(e) => self.stop(Problem::Memory(e)),
        }
    }

    /// Stops the render for `problem`.
    fn stop(&self, problem: Problem) -> Result<(), Error> {
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(problem);
        }
        Err(Error::new(ErrorKind::InvalidOperation, "out of template work"))
    }

    fn take_problem(&self) -> Option<Problem> {
        self.problem.lock().ok().and_then(|mut p| p.take())
    }
}

/// The work budget a compiled template's filters charge: the one of the
/// mount rendering it, set for the render.
#[derive(Debug, Default)]
struct WorkCell(Mutex<Option<Arc<Work>>>);

impl WorkCell {
    fn set(&self, work: Option<Arc<Work>>) {
        if let Ok(mut w) = self.0.lock() {
            *w = work;
        }
    }

    fn current(&self) -> Result<Arc<Work>, Error> {
        self.0.lock().ok().and_then(|w| w.clone()).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "a template runs only within a mount's budget",
            )
        })
    }

    fn charge(&self, filter: &'static str, bytes: u64) -> Result<(), Error> {
        self.current()?.charge(filter, bytes)
    }

    fn remaining(&self) -> u64 {
        self.current().map_or(0, |w| w.remaining.load(Ordering::Relaxed))
    }
}

/// Clears a template's work budget when its render ends.
struct Unset<'a>(&'a WorkCell);

impl Drop for Unset<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// The files of a mount, as templates read them.
#[derive(Debug, Default)]
pub struct Files {
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    contents: SecretBytes,
    version: String,
    /// The value as the template language sees it, made on first use.
    value: Mutex<Option<Value>>,
}

impl Files {
    pub fn new(files: impl IntoIterator<Item = (String, SecretBytes, String)>) -> Self {
        Self {
            entries: files
                .into_iter()
                .map(|(path, contents, version)| {
                    (
                        path,
                        Entry {
                            contents,
                            version,
                            value: Mutex::new(None),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("contents", &self.contents)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One template's view of the files: which it read, and the names it asked
/// for that do not exist (constants of the template: an index is always
/// one).
#[derive(Debug)]
struct View {
    files: Arc<Files>,
    read: Mutex<BTreeSet<String>>,
    missing: Mutex<BTreeSet<String>>,
}

impl Object for View {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let Some(entry) = self.files.entries.get(name) else {
            if let Ok(mut m) = self.missing.lock() {
                m.insert(name.to_string());
            }
            return None;
        };
        if let Ok(mut read) = self.read.lock() {
            read.insert(name.to_string());
        }
        let mut value = entry.value.lock().ok()?;
        Some(
            value
                .get_or_insert_with(|| {
                    let bytes = entry.contents.expose();
                    match std::str::from_utf8(bytes) {
                        Ok(s) => Value::from(s),
                        Err(_) => Value::from_bytes(bytes.to_vec()),
                    }
                })
                .clone(),
        )
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.files.entries.keys().map(|k| Value::from(k.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.files.entries.len())
    }
}

/// The output of a template, cut at `max` bytes.
/// Its buffer is charged to the mount's memory as it grows.
struct Capped {
    buf: Vec<u8>,
    max: u64,
    exceeded: bool,
    memory: Arc<Work>,
}

impl Capped {
    fn new(max: u64, memory: Arc<Work>) -> Self {
        Self {
            buf: Vec::new(),
            max,
            exceeded: false,
            memory,
        }
    }
}

impl io::Write for &mut Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let needed = self.buf.len() + data.len();
        if needed as u64 > self.max {
            self.exceeded = true;
            return Err(io::Error::other("template output limit"));
        }
        if needed > self.buf.capacity() {
            let capacity = needed.max(self.buf.capacity() * 2).min(self.max as usize);
            self.memory
                .hold((capacity - self.buf.capacity()) as u64)
                .map_err(|_| io::Error::other("memory budget"))?;
            self.buf.reserve_exact(capacity - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
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

// === The rules, checked on the template's tokens ===

/// Checks the template's tokens against the rules of this module and returns
/// the files it names literally.
///
/// Besides the operators, statements and calls refused outright, the rules
/// keep every operation whose cost grows with a value charged or bounded by
/// a constant of the template:
/// - a list or mapping literal holds constants only (names in literals would
///   build structures that share their parts, whose size doubles per
///   statement but whose fuel does not), and there are no tuples;
/// - a subscript is a constant (`x["key"]`, `x[3]` up to [`MAX_INDEX`]): a
///   computed index on a string walks it;
/// - a comparison has a constant on one side, and `in` tests membership in a
///   literal list, so neither walks two computed values;
/// - an `if` has at most [`MAX_ELIF`] `elif`s (the parser recurses once per
///   `elif`, without its depth guard);
/// - `files` is not assigned (so references stay checkable).
fn scan(file: &str, source: &str) -> Result<Vec<(String, u32)>, TemplateError> {
    let mut tokens: Vec<(Token<'_>, u32)> = Vec::new();
    for t in tokenize(source, false, syntax()) {
        match t {
            Ok((token, span)) => tokens.push((token, u32::from(span.start_line))),
            Err(e) => return Err(language_error(file, &e)),
        }
    }
    let refuse = |line: u32, what: &str, hint: &'static str| {
        Err(TemplateError::new(
            file,
            Some(line),
            Problem::NotAllowed {
                what: what.to_string(),
                hint,
            },
        ))
    };
    let mut references: Vec<(String, u32)> = Vec::new();
    // Open brackets, innermost last.
    let mut open: Vec<Open> = Vec::new();
    let mut tag = Tag::Print;
    let mut statement_start = false;
    // The `elif`s of each open `if`.
    let mut ifs: Vec<usize> = Vec::new();
    let mut in_tag = 0usize;
    for (i, (token, line)) in tokens.iter().enumerate() {
        let line = *line;
        match token {
            Token::BlockStart | Token::VariableStart => in_tag = 1,
            Token::BlockEnd | Token::VariableEnd => in_tag = 0,
            _ if in_tag > 0 => in_tag += 1,
            _ => {}
        }
        if in_tag > MAX_TAG_TOKENS {
            return refuse(
                line,
                &format!("a tag of more than {MAX_TAG_TOKENS} tokens"),
                ": split it, or use a set statement for a part of it",
            );
        }
        let at = |k: usize| tokens.get(k).map(|t| &t.0);
        let prev = i.checked_sub(1).and_then(at);
        let next = at(i + 1);
        let in_literal = open.iter().any(|o| matches!(o, Open::List | Open::Dict));
        if in_literal
            && !(is_constant(token)
                || matches!(
                    token,
                    Token::Comma | Token::BracketOpen | Token::BracketClose | Token::BraceOpen | Token::BraceClose
                )
                || (matches!(token, Token::Colon) && open.last() == Some(&Open::Dict)))
        {
            return refuse(
                line,
                "a list or mapping literal holding a name or an expression",
                ": literals hold constants only",
            );
        }
        match token {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Tilde => {
                return refuse(
                    line,
                    &format!("the operator {token}"),
                    ": write the parts one after the other ({{ a }}{{ b }}) instead of joining them",
                );
            }
            Token::BlockStart => {
                statement_start = true;
                tag = Tag::Other;
                continue;
            }
            Token::VariableStart => tag = Tag::Print,
            Token::BlockEnd => {
                if tag == (Tag::Set { assigned: false }) {
                    return refuse(line, "{% set %} capturing a block", ": assign a value instead");
                }
                open.clear();
            }
            Token::VariableEnd => open.clear(),
            Token::BracketOpen if !in_literal && ends_value(prev) => {
                let constant = match next {
                    Some(Token::Str(_) | Token::String(_)) => true,
                    Some(Token::Int(n)) => *n <= MAX_INDEX,
                    _ => false,
                };
                if matches!(next, Some(Token::Colon)) || matches!(at(i + 2), Some(Token::Colon)) {
                    return refuse(line, "a slice", "");
                }
                if !constant || !matches!(at(i + 2), Some(Token::BracketClose)) {
                    return refuse(
                        line,
                        "a computed index",
                        ": index with a constant (x[\"key\"], x[0] up to x[1024]), or iterate with items",
                    );
                }
                open.push(Open::Subscript);
            }
            Token::BracketOpen => {
                if in_literal
                    && !matches!(
                        prev,
                        Some(Token::BracketOpen | Token::BraceOpen | Token::Comma | Token::Colon)
                    )
                {
                    return refuse(line, "a computed index", "");
                }
                open.push(Open::List);
            }
            Token::ParenOpen => {
                let call = match prev {
                    Some(Token::Ident(name)) => !KEYWORDS.contains(name) && !is_filter_or_test(&tokens, i - 1),
                    Some(
                        Token::BracketClose | Token::ParenClose | Token::BraceClose | Token::Str(_) | Token::String(_),
                    ) => true,
                    _ => false,
                };
                if call {
                    return refuse(line, "calling a function", ": use a filter (value | filter)");
                }
                open.push(if matches!(prev, Some(Token::Ident(_))) {
                    Open::Args
                } else {
                    Open::Group
                });
            }
            Token::BraceOpen => open.push(Open::Dict),
            Token::BracketClose | Token::ParenClose | Token::BraceClose => {
                open.pop();
            }
            Token::Colon => match open.last() {
                Some(Open::Dict) => {}
                Some(Open::Subscript) => return refuse(line, "a slice", ""),
                _ => return refuse(line, "`:` outside a mapping literal", ""),
            },
            Token::Comma => {
                let allowed = match open.last() {
                    Some(Open::Args | Open::List | Open::Dict) => true,
                    Some(Open::Group | Open::Subscript) => false,
                    // Several targets (`for k, v in`, `set a, b =`) or
                    // several assignments (`with a = x, b = y`).
                    None => matches!(
                        tag,
                        Tag::For { looped: false } | Tag::With | Tag::Set { assigned: false }
                    ),
                };
                if !allowed {
                    return refuse(line, "a tuple", ": write the values one by one");
                }
            }
            Token::Assign => {
                if let Tag::Set { assigned } = &mut tag {
                    *assigned = true;
                }
            }
            Token::Eq | Token::Ne | Token::Lt | Token::Gt | Token::Lte | Token::Gte => {
                let before = prev.is_some_and(is_constant);
                let after = next.is_some_and(is_constant)
                    && !matches!(at(i + 2), Some(Token::Pipe | Token::Dot | Token::BracketOpen));
                if !before && !after {
                    return refuse(
                        line,
                        "comparing two computed values",
                        ": compare with a constant (x == \"on\", n > 3)",
                    );
                }
            }
            Token::Ident(name) => {
                let attribute = matches!(prev, Some(Token::Dot));
                if statement_start {
                    if !STATEMENTS.contains(name) {
                        return refuse(
                            line,
                            &format!("{{% {} %}}", echo(name)),
                            ": the statements are if, for, set and with",
                        );
                    }
                    tag = match *name {
                        "set" => Tag::Set { assigned: false },
                        "with" => Tag::With,
                        "for" => Tag::For { looped: false },
                        _ => Tag::Other,
                    };
                    match *name {
                        "if" => ifs.push(0),
                        "endif" => {
                            ifs.pop();
                        }
                        "elif" => {
                            if let Some(n) = ifs.last_mut() {
                                *n += 1;
                                if *n > MAX_ELIF {
                                    return refuse(
                                        line,
                                        &format!("an if with more than {MAX_ELIF} elifs"),
                                        ": split it, or map the cases with a literal mapping",
                                    );
                                }
                            }
                        }
                        _ => {}
                    }
                } else if attribute {
                    // An attribute name, not a keyword, filter or variable.
                } else if *name == "recursive" {
                    return refuse(line, "a recursive loop", "");
                } else if *name == "in" && tag == (Tag::For { looped: false }) && open.is_empty() {
                    tag = Tag::For { looped: true };
                } else if *name == "in" {
                    if !matches!(next, Some(Token::BracketOpen)) {
                        return refuse(
                            line,
                            "`in` on a computed value",
                            ": test membership in a literal list (x in [\"a\", \"b\"]), or a key with `is defined`",
                        );
                    }
                } else if matches!(prev, Some(Token::Pipe)) {
                    if !FILTERS.contains(name) {
                        return Err(TemplateError::new(
                            file,
                            Some(line),
                            Problem::UnknownFilter(name.to_string()),
                        ));
                    }
                } else if test_position(&tokens, i) {
                    if !TESTS.contains(name) {
                        return Err(TemplateError::new(
                            file,
                            Some(line),
                            Problem::UnknownTest(name.to_string()),
                        ));
                    }
                } else if *name == FILES {
                    let assigned = matches!(next, Some(Token::Assign))
                        || matches!(tag, Tag::Set { assigned: false } | Tag::For { looped: false });
                    if assigned {
                        return refuse(line, "assigning `files`", ": choose another name");
                    }
                    let named = match (next, at(i + 2), at(i + 3)) {
                        (Some(Token::Dot), Some(Token::Ident(n)), _) => Some(n.to_string()),
                        (Some(Token::BracketOpen), Some(Token::Str(n)), Some(Token::BracketClose)) => {
                            Some(n.to_string())
                        }
                        (Some(Token::BracketOpen), Some(Token::String(n)), Some(Token::BracketClose)) => {
                            Some(n.to_string())
                        }
                        _ => None,
                    };
                    if let Some(n) = named
                        && !references.iter().any(|(r, _)| *r == n)
                    {
                        references.push((n, line));
                    }
                }
            }
            _ => {}
        }
        statement_start = false;
    }
    Ok(references)
}

/// What an open bracket of an expression is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// `x[…]`
    Subscript,
    /// `[…]`
    List,
    /// `{…}`
    Dict,
    /// `(…)` around an expression.
    Group,
    /// `(…)` after a filter or test: its arguments.
    Args,
}

/// The tag being scanned, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// `{{ … }}`
    Print,
    /// `{% set … %}`, before or after its `=`.
    Set {
        assigned: bool,
    },
    /// `{% with … %}`
    With,
    /// `{% for … %}`, before or after the loop's `in`.
    For {
        looped: bool,
    },
    Other,
}

/// Greatest constant index of a subscript.
pub const MAX_INDEX: u64 = 1024;
/// Most `elif`s of one `if`.
pub const MAX_ELIF: usize = 64;

/// Words that are constants.
const CONSTANTS: &[&str] = &["true", "false", "none", "True", "False", "None"];

/// Whether a token is a constant of the template.
fn is_constant(t: &Token<'_>) -> bool {
    match t {
        Token::Str(_) | Token::String(_) | Token::Int(_) | Token::Int128(_) | Token::Float(_) => true,
        Token::Ident(n) => CONSTANTS.contains(n),
        _ => false,
    }
}

/// Whether a token ends a value, so that `[` after it is a subscript.
fn ends_value(t: Option<&Token<'_>>) -> bool {
    match t {
        Some(Token::Ident(n)) => !KEYWORDS.contains(n) || CONSTANTS.contains(n),
        Some(Token::Str(_) | Token::String(_) | Token::BracketClose | Token::ParenClose | Token::BraceClose) => true,
        _ => false,
    }
}

/// Whether the identifier at `i` names a filter or a test (so a `(` after it
/// passes arguments, not calls a function).
fn is_filter_or_test(tokens: &[(Token<'_>, u32)], i: usize) -> bool {
    matches!(i.checked_sub(1).map(|p| &tokens[p].0), Some(Token::Pipe)) || test_position(tokens, i)
}

/// Whether the identifier at `i` follows `is` or `is not`.
fn test_position(tokens: &[(Token<'_>, u32)], i: usize) -> bool {
    let at = |k: usize| i.checked_sub(k).map(|p| &tokens[p].0);
    matches!(at(1), Some(Token::Ident("is")))
        || (matches!(at(1), Some(Token::Ident("not"))) && matches!(at(2), Some(Token::Ident("is"))))
}

// === The environment: filters and tests ===

/// Jinja's delimiters; a template's last newline is kept (it is a file) and
/// the newline after a `{% … %}` tag is dropped, so loops and conditions on
/// lines of their own leave no empty lines.
fn syntax() -> SyntaxConfig {
    SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .build()
        .unwrap_or_default()
}

/// An environment with the syntax and behaviour of templates and nothing
/// else: no filters, tests or globals.
fn bare_environment() -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_syntax(syntax());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(16);
    env
}

/// An environment with only the filters and tests of this module, strict
/// about undefined values, and no auto-escaping.
fn environment(work: Arc<WorkCell>) -> Environment<'static> {
    let mut env = bare_environment();

    env.add_test("defined", |v: &Value| !v.is_undefined());
    env.add_test("undefined", |v: &Value| v.is_undefined());
    env.add_test("none", |v: &Value| v.is_none());
    env.add_test("string", |v: &Value| v.as_str().is_some());
    env.add_test("mapping", |v: &Value| {
        v.as_object().is_some_and(|o| o.repr() == ObjectRepr::Map)
    });

    env.add_filter("default", minijinja::filters::default);
    let w = work.clone();
    env.add_filter("length", move |v: &Value| -> Result<usize, Error> {
        // A string's length counts its characters.
        w.charge("length", v.as_bytes().map_or(0, <[u8]>::len) as u64)?;
        minijinja::filters::length(v)
    });
    let w = work.clone();
    env.add_filter("items", move |v: &Value| {
        let n = v.len().unwrap_or(0).max(1) as u64;
        w.charge("items", n.saturating_mul(64))?;
        minijinja::filters::items(v)
    });
    let w = work.clone();
    env.add_filter("trim", move |s: &str| -> Result<Value, Error> {
        w.charge("trim", s.len() as u64)?;
        let t = s.trim();
        Ok(Value::from(t))
    });
    let w = work.clone();
    env.add_filter("upper", move |s: &str| -> Result<Value, Error> {
        w.charge("upper", (s.len() as u64).saturating_mul(3))?;
        Ok(Value::from(s.to_uppercase()))
    });
    let w = work.clone();
    env.add_filter("lower", move |s: &str| -> Result<Value, Error> {
        w.charge("lower", (s.len() as u64).saturating_mul(3))?;
        Ok(Value::from(s.to_lowercase()))
    });
    let w = work.clone();
    env.add_filter(
        "replace",
        move |s: &str, from: &str, to: &str| -> Result<Value, Error> {
            if from.is_empty() {
                return Err(filter_error("replace", "the text to replace is empty"));
            }
            let n = s.matches(from).count() as u64;
            let size = (s.len() as u64)
                .saturating_sub(n.saturating_mul(from.len() as u64))
                .saturating_add(n.saturating_mul(to.len() as u64));
            w.charge("replace", size.max(s.len() as u64))?;
            Ok(Value::from(s.replace(from, to)))
        },
    );
    let w = work.clone();
    env.add_filter(
        "indent",
        move |s: &str, width: u32, first: Option<bool>, kwargs: Kwargs| -> Result<Value, Error> {
            let first = match first {
                Some(f) => Some(f),
                None => kwargs.get::<Option<bool>>("first")?,
            };
            kwargs.assert_all_used()?;
            if width > 64 {
                return Err(filter_error("indent", "the width is more than 64"));
            }
            let lines = s.lines().count() as u64;
            w.charge(
                "indent",
                (s.len() as u64).saturating_add(lines.saturating_mul(u64::from(width))),
            )?;
            let pad = " ".repeat(width as usize);
            let mut out = String::with_capacity(s.len() + lines as usize * pad.len());
            for (i, line) in s.split('\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                if !line.is_empty() && (i > 0 || first.unwrap_or(false)) {
                    out.push_str(&pad);
                }
                out.push_str(line);
            }
            Ok(Value::from(out))
        },
    );
    let w = work.clone();
    env.add_filter("join", move |v: &Value, sep: Option<&str>| -> Result<Value, Error> {
        let sep = sep.unwrap_or("");
        // Items are gathered before their sizes are known.
        let items = v.len().ok_or_else(|| filter_error("join", "joins a list of strings"))?;
        w.charge("join", (items as u64).saturating_mul(32))?;
        let mut parts: Vec<Value> = Vec::with_capacity(items);
        let mut size = 0u64;
        for item in v.try_iter()? {
            let len = item
                .as_str()
                .map(str::len)
                .ok_or_else(|| filter_error("join", &format!("joins strings only, found {}", item.kind())))?;
            size = size.saturating_add(len as u64).saturating_add(sep.len() as u64);
            parts.push(item);
        }
        w.charge("join", size)?;
        let mut out = String::with_capacity(size as usize);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(p.as_str().unwrap_or_default());
        }
        Ok(Value::from(out))
    });
    let w = work.clone();
    env.add_filter("fromjson", move |s: &str| -> Result<Value, Error> {
        // A parsed value takes up to ~30 times its text in memory (`[[],…]`).
        w.charge("fromjson", (s.len() as u64).saturating_mul(32))?;
        // Where the text stops being JSON says something about the value.
        serde_json::from_str::<Value>(s).map_err(|_| filter_error("fromjson", "the value is not JSON"))
    });
    let w = work.clone();
    env.add_filter("tojson", move |v: &Value| -> Result<Value, Error> {
        let remaining = w.remaining();
        let mut out = Capped::new(remaining, w.current()?);
        if serde_json::to_writer(&mut out, v).is_err() {
            if out.exceeded {
                w.charge("tojson", remaining.saturating_add(1))?;
            }
            return Err(filter_error("tojson", "the value cannot be written as JSON"));
        }
        w.charge("tojson", out.buf.len() as u64)?;
        let text = String::from_utf8(std::mem::take(&mut out.buf))
            .map_err(|_| filter_error("tojson", "the value cannot be written as JSON"))?;
        Ok(Value::from(text))
    });
    let w = work.clone();
    env.add_filter("b64encode", move |v: &Value| -> Result<Value, Error> {
        use base64::Engine;
        let bytes = bytes_of(v, "b64encode")?;
        w.charge("b64encode", (bytes.len() as u64).div_ceil(3).saturating_mul(4))?;
        Ok(Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)))
    });
    let w = work.clone();
    env.add_filter("b64decode", move |s: &str| -> Result<Value, Error> {
        w.charge("b64decode", s.len() as u64)?;
        let decoded = crate::encoding::decode(crate::encoding::Encoding::Base64, SecretBytes::from(s.to_string()))
            .map_err(|_| filter_error("b64decode", "the value is not base64"))?;
        Ok(match std::str::from_utf8(decoded.expose()) {
            Ok(text) => Value::from(text),
            Err(_) => Value::from_bytes(decoded.expose().to_vec()),
        })
    });
    let w = work.clone();
    env.add_filter("urlencode", move |s: &str| -> Result<Value, Error> {
        w.charge("urlencode", (s.len() as u64).saturating_mul(3))?;
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        Ok(Value::from(out))
    });
    let w = work;
    env.add_filter("shellquote", move |s: &str| -> Result<Value, Error> {
        let quotes = s.matches('\'').count() as u64;
        w.charge(
            "shellquote",
            (s.len() as u64)
                .saturating_add(quotes.saturating_mul(3))
                .saturating_add(2),
        )?;
        Ok(Value::from(format!("'{}'", s.replace('\'', r"'\''"))))
    });
    env
}

/// The bytes of a string or bytes value.
fn bytes_of<'a>(v: &'a Value, filter: &'static str) -> Result<&'a [u8], Error> {
    v.as_bytes()
        .ok_or_else(|| filter_error(filter, &format!("takes a string or bytes, found {}", v.kind())))
}

fn filter_error(filter: &'static str, reason: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{filter}: {reason}"))
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
