//! Request limits. One provider per node serves every namespace, and the
//! `objects` of a SecretProviderClass (names, counts, JMESPath expressions)
//! are written by any tenant. Every limit here is checked before any
//! Kubernetes or AWS call (or, for sizes that only exist once values are
//! fetched, before anything is written), is a documented flag, and has a
//! default that no legitimate class reaches. A violation names the object,
//! the limit and the flag.

use std::fmt;

/// Largest echo of user input kept in an error message.
pub const ECHO_MAX: usize = 128;

/// The request limits of one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the `objects` parameter.
    pub max_objects_bytes: usize,
    /// Files one mount may produce (objects, `jmesPath` entries, and every
    /// other file-producing field).
    pub max_files: usize,
    /// Bytes of a name-like field: `objectName` (names and ARNs), aliases,
    /// versions and labels.
    pub max_name_length: usize,
    /// Bytes of one JMESPath expression.
    pub max_jmespath_length: usize,
    /// Nesting depth of one JMESPath expression.
    pub max_jmespath_depth: usize,
    /// Upper bound, computed before evaluating, of what one JMESPath
    /// evaluation may allocate (bytes).
    pub max_jmespath_work: u64,
    /// Bytes of one file.
    pub max_file_bytes: usize,
    /// Bytes of all files of one mount.
    pub max_mount_bytes: usize,
    /// Bytes of one `Mount` request (gRPC message).
    pub max_request_bytes: usize,
    /// Distinct roles one mount assumes (`assumeRoleArn`): each is an STS
    /// call and a group of fetches.
    pub max_roles: usize,
    /// Objects of one mount that select many (`parameterPath`,
    /// `secretNamePrefix`, `secretFilters`): each lists pages.
    pub max_selections: usize,
    /// Instructions the templates of one mount may run.
    pub max_template_fuel: u64,
    /// Bytes the filters of one mount's templates may build.
    pub max_template_work: u64,
    /// Pages one object that selects many may list, empty ones included.
    pub max_pages: u32,
}

/// Nesting depth above which `--max-jmespath-depth` cannot be set: the
/// JMESPath parser and evaluator recurse once per level, and this many
/// levels fit the smallest thread stack the provider runs them on.
pub const JMESPATH_DEPTH_CAP: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_objects_bytes: 256 * 1024,
            max_files: 1000,
            max_name_length: 2048,
            max_jmespath_length: 1024,
            max_jmespath_depth: 16,
            max_jmespath_work: 32 * 1024 * 1024,
            max_file_bytes: 1024 * 1024,
            max_mount_bytes: 3 * 1024 * 1024,
            max_request_bytes: 1024 * 1024,
            max_roles: 5,
            max_selections: 10,
            max_template_fuel: 500_000,
            max_template_work: 16 * 1024 * 1024,
            // Every match of the largest mount (`--max-files-per-mount`)
            // in full pages of ten, twice over.
            max_pages: 200,
        }
    }
}

/// The request limits as flags (of `serve` and `validate`).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Largest `objects` (or `templates`) parameter (bytes; KiB and MiB suffixes allowed).
    #[arg(long, default_value = "256KiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_objects_bytes: usize,
    /// Most files one mount may produce (objects and jmesPath entries).
    #[arg(long, default_value_t = Limits::default().max_files, value_parser = parse_count,
          help_heading = "Request limits")]
    pub max_files_per_mount: usize,
    /// Longest objectName, objectAlias, objectVersion or objectVersionLabel (bytes).
    #[arg(long, default_value_t = Limits::default().max_name_length, value_parser = parse_count,
          help_heading = "Request limits")]
    pub max_name_length: usize,
    /// Longest JMESPath expression (bytes).
    #[arg(long, default_value_t = Limits::default().max_jmespath_length, value_parser = parse_count,
          help_heading = "Request limits")]
    pub max_jmespath_length: usize,
    /// Deepest nesting of a JMESPath expression (at most 64).
    #[arg(long, default_value_t = Limits::default().max_jmespath_depth,
          value_parser = parse_depth,
          help_heading = "Request limits")]
    pub max_jmespath_depth: usize,
    /// Most work one JMESPath evaluation may do, as bounded before it runs (bytes).
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_jmespath_work: usize,
    /// Largest file (bytes).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_file_bytes: usize,
    /// Largest total of one mount's files (bytes); keep it below the driver's
    /// --max-call-recv-msg-size (4 MiB) in driver-writes mode.
    #[arg(long, default_value = "3MiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_mount_bytes: usize,
    /// Largest Mount request accepted from the driver (bytes).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_request_bytes: usize,
    /// Distinct roles one mount may assume (assumeRoleArn).
    #[arg(long, default_value_t = Limits::default().max_roles, help_heading = "Request limits")]
    pub max_roles_per_mount: usize,
    /// Objects of one mount that may select many (parameterPath,
    /// secretNamePrefix, secretFilters).
    #[arg(long, default_value_t = Limits::default().max_selections, help_heading = "Request limits")]
    pub max_selections_per_mount: usize,
    /// Instructions the templates of one mount may run (templates parameter).
    #[arg(long, default_value_t = Limits::default().max_template_fuel, help_heading = "Request limits")]
    pub max_template_fuel: u64,
    /// Bytes the filters of one mount's templates may build, as computed
    /// before each is run.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes, help_heading = "Request limits")]
    pub max_template_work: usize,
    /// Pages one object that selects many may list (parameterPath,
    /// secretNamePrefix, secretFilters), empty pages included.
    #[arg(long, default_value_t = Limits::default().max_pages, value_parser = clap::value_parser!(u32).range(1..),
          help_heading = "Request limits")]
    pub max_pages_per_selection: u32,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_objects_bytes: self.max_objects_bytes,
            max_files: self.max_files_per_mount,
            max_name_length: self.max_name_length,
            max_jmespath_length: self.max_jmespath_length,
            max_jmespath_depth: self.max_jmespath_depth,
            max_jmespath_work: self.max_jmespath_work as u64,
            max_file_bytes: self.max_file_bytes,
            max_mount_bytes: self.max_mount_bytes,
            max_request_bytes: self.max_request_bytes,
            max_roles: self.max_roles_per_mount,
            max_selections: self.max_selections_per_mount,
            max_template_fuel: self.max_template_fuel,
            max_template_work: self.max_template_work as u64,
            max_pages: self.max_pages_per_selection,
        }
    }
}

fn parse_depth(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=JMESPATH_DEPTH_CAP).contains(&n) => Ok(n),
        _ => Err(format!("invalid depth {s:?}: a number from 1 to {JMESPATH_DEPTH_CAP}")),
    }
}

/// A count of at least one.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("invalid count {s:?}: a whole number of at least 1")),
    }
}

/// A size in bytes: a number, optionally with a KiB or MiB suffix.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (number, unit) = if let Some(n) = t.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1024)
    } else {
        (t, 1)
    };
    number
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid size {s:?}: a positive number of bytes, or KiB/MiB (256KiB, 3MiB)"))
}

/// Which limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ObjectsBytes,
    Files,
    NameLength,
    JmespathLength,
    JmespathDepth,
    JmespathWork,
    FileBytes,
    MountBytes,
    Roles,
    Selections,
    TemplateFuel,
    TemplateWork,
    Pages,
}

impl Limit {
    /// The flag that sets this limit.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::ObjectsBytes => "--max-objects-bytes",
            Limit::Files => "--max-files-per-mount",
            Limit::NameLength => "--max-name-length",
            Limit::JmespathLength => "--max-jmespath-length",
            Limit::JmespathDepth => "--max-jmespath-depth",
            Limit::JmespathWork => "--max-jmespath-work",
            Limit::FileBytes => "--max-file-bytes",
            Limit::MountBytes => "--max-mount-bytes",
            Limit::Roles => "--max-roles-per-mount",
            Limit::Selections => "--max-selections-per-mount",
            Limit::TemplateFuel => "--max-template-fuel",
            Limit::TemplateWork => "--max-template-work",
            Limit::Pages => "--max-pages-per-selection",
        }
    }

    /// What is measured, with its unit.
    fn measure(self) -> &'static str {
        match self {
            Limit::ObjectsBytes => "bytes",
            Limit::Files => "files",
            Limit::NameLength | Limit::JmespathLength => "bytes",
            Limit::JmespathDepth => "levels of nesting",
            Limit::JmespathWork => "bytes of evaluation work (estimated before evaluating)",
            Limit::FileBytes | Limit::MountBytes => "bytes",
            Limit::Roles => "roles",
            Limit::Selections => "objects that select many",
            Limit::TemplateFuel => "instructions",
            Limit::TemplateWork => "bytes built by filters",
            Limit::Pages => "pages, empty ones included",
        }
    }

    /// The configured maximum.
    pub fn max(self, limits: &Limits) -> u64 {
        let v = match self {
            Limit::ObjectsBytes => limits.max_objects_bytes,
            Limit::Files => limits.max_files,
            Limit::NameLength => limits.max_name_length,
            Limit::JmespathLength => limits.max_jmespath_length,
            Limit::JmespathDepth => limits.max_jmespath_depth,
            Limit::JmespathWork => return limits.max_jmespath_work,
            Limit::FileBytes => limits.max_file_bytes,
            Limit::MountBytes => limits.max_mount_bytes,
            Limit::Roles => limits.max_roles,
            Limit::Selections => limits.max_selections,
            Limit::TemplateFuel => return limits.max_template_fuel,
            Limit::TemplateWork => return limits.max_template_work,
            Limit::Pages => return u64::from(limits.max_pages),
        };
        v as u64
    }
}

/// A limit exceeded by a request: what (the object and field, already
/// truncated), how much, and the limit with its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {found}{at_least} {measure}, more than the limit of {max} ({flag})",
    at_least = if *.at_least { " or more" } else { "" },
    measure = .limit.measure(),
    flag = .limit.flag())]
pub struct LimitError {
    pub subject: String,
    pub limit: Limit,
    pub found: u64,
    /// `found` is a lower bound (counting stopped at the limit).
    pub at_least: bool,
    pub max: u64,
}

impl Limits {
    /// `Ok` when `found` is within `limit`, else the error for `subject`.
    pub fn check(&self, limit: Limit, found: u64, subject: impl FnOnce() -> String) -> Result<(), LimitError> {
        let max = limit.max(self);
        if found <= max {
            return Ok(());
        }
        Err(LimitError {
            subject: subject(),
            limit,
            found,
            at_least: false,
            max,
        })
    }

    /// Like [`Limits::check`] for counts that stop at the first excess.
    pub fn exceeded(&self, limit: Limit, subject: String) -> LimitError {
        let max = limit.max(self);
        LimitError {
            subject,
            limit,
            found: max.saturating_add(1),
            at_least: true,
            max,
        }
    }
}

/// User input as echoed in an error: kept whole up to [`ECHO_MAX`] bytes,
/// else its start and its length, its control characters escaped
/// ([`Escaped`]). Errors travel in a gRPC trailer (16 KiB at most) into a
/// pod event and the provider's log; a long name must not turn the
/// validation message into a transport error, and a line break or a
/// terminal escape in a name must not forge a log line or hide one.
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= ECHO_MAX {
            return Escaped(s).fmt(f);
        }
        let mut end = ECHO_MAX - 32;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…({} bytes)", Escaped(&s[..end]), s.len())
    }
}

/// Text from outside the provider (a tenant's names, an AWS or Kubernetes
/// error message) as it is written into a log field, an error or an event:
/// every control character (line breaks, tabs, escape, the C1 controls),
/// the Unicode line and paragraph separators and the bidirectional
/// formatting characters (which reorder what a terminal shows) are written
/// as escapes (`\n`, `\u{1b}`), in text and JSON logs alike.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        write!(EscapeWriter(f), "{}", self.0)
    }
}

/// Whether `c` is escaped in logs and messages.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

struct EscapeWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapeWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(needs_escape) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// [`Escaped`] as a `String`.
pub fn escaped(s: &str) -> String {
    Escaped(s).to_string()
}

/// [`Echo`] as a `String`.
pub fn echo(s: &str) -> String {
    Echo(s).to_string()
}

/// Cuts `message` to at most `max` bytes (at a character boundary), saying
/// so at the end.
pub fn cap_message(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    const MARK: &str = "… (message truncated)";
    let mut end = max.saturating_sub(MARK.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(MARK);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_echoed_whole_and_long_input_is_cut_with_its_length() {
        assert_eq!(echo("prod/db"), "prod/db");
        let long = "n".repeat(20_000);
        let e = echo(&long);
        assert!(e.len() < ECHO_MAX + 20, "{}", e.len());
        assert!(e.ends_with("…(20000 bytes)"), "{e}");
        let multibyte = "é".repeat(200);
        assert!(echo(&multibyte).ends_with("…(400 bytes)"));
    }

    #[test]
    fn a_limit_error_names_the_subject_the_limit_and_the_flag() {
        let l = Limits::default();
        assert!(l.check(Limit::Files, 1000, || "x".into()).is_ok());
        let e = l.check(Limit::Files, 1001, || "the mount".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the mount: 1001 files, more than the limit of 1000 (--max-files-per-mount)"
        );
        let e = l.exceeded(Limit::Files, "the mount".into());
        assert_eq!(
            e.to_string(),
            "the mount: 1001 or more files, more than the limit of 1000 (--max-files-per-mount)"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        let forged = "prod/db\n2026-12-07T10:00:00Z  INFO mount succeeded\u{1b}[8m hidden\u{202e}rev\r\t\u{85}";
        let e = echo(forged);
        assert!(!e.chars().any(needs_escape), "{e:?}");
        assert_eq!(
            e,
            "prod/db\\n2026-12-07T10:00:00Z  INFO mount succeeded\\u{1b}[8m hidden\\u{202e}rev\\r\\t\\u{85}"
        );
        // Escaping twice changes nothing: a backslash is not escaped.
        assert_eq!(escaped(&e), e);
        assert_eq!(escaped("plain é ✓ text"), "plain é ✓ text");
        // A long name is cut, then escaped.
        let long = format!("{}\n{}", "a".repeat(90), "b".repeat(200));
        assert!(!echo(&long).contains('\n'));
    }

    #[test]
    fn messages_are_capped_at_a_character_boundary() {
        assert_eq!(cap_message("short".into(), 100), "short");
        let m = cap_message("é".repeat(5000), 4096);
        assert!(m.len() <= 4096, "{}", m.len());
        assert!(m.ends_with("(message truncated)"));
    }
}
