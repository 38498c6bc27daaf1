//! `csi-provider-aws validate FILE...`: checks SecretProviderClass manifests
//! offline with exactly the validation a Mount applies, before any
//! Kubernetes or AWS call. Multi-document YAML. Prints, in input order, a
//! verdict on every SecretProviderClass (valid, each of its problems, or
//! skipped for another provider) and a line for every file, then the
//! totals; with `--show-files`, the files each valid class makes. Exits
//! non-zero if there is any problem.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use serde_yaml::Value;

use crate::limits::{Echo, Escaped, LimitArgs, Limits};
use crate::render::{self, NamedBy, PlannedFile};
use crate::spec::{self, MountSpec, keys};

/// The shape of the output, for `validate --help`.
const OUTPUT_HELP: &str = "\
Output (stdout), in the order of the files and of the documents in them:
  FILE: SecretProviderClass NAMESPACE/NAME: valid
  FILE: SecretProviderClass NAMESPACE/NAME: PROBLEM      (one line per problem)
  FILE: SecretProviderClass NAMESPACE/NAME: skipped: spec.provider is P, not aws
  FILE: document N: PROBLEM      (a class without a metadata.name, or YAML that cannot be read)
  FILE: cannot read: ERROR
  FILE: C SecretProviderClass(es) for provider aws: V valid, I invalid, P problem(s)
then the same counts over all files:
  F file(s), C SecretProviderClass(es) for provider aws: V valid, I invalid, P problem(s)
With --show-files, under each valid class, one line per file it makes:
    MODE  PATH
    MODE  PATH  # what AWS returns that names it (PATH holds <key> or <name>)

Exit status: 0 if there is no problem, 1 if there is one, 2 for wrong arguments.";

#[derive(Debug, Clone, Args)]
#[command(after_long_help = OUTPUT_HELP)]
pub struct ValidateArgs {
    /// SecretProviderClass manifests (YAML; several documents per file allowed).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Under each valid class, list the files a mount of it makes.
    ///
    /// In the names the driver writes (after pathTranslation, with aliases,
    /// jmesPath entries, jsonKeysAsFiles and templates), in the order the
    /// provider returns them, each with its mode. Where what AWS returns
    /// names the files (the keys of jsonKeysAsFiles, the matches of
    /// parameterPath, secretNamePrefix or secretFilters), the line is a
    /// pattern with <key> or <name> and says so. Nothing is fetched.
    #[arg(long)]
    pub show_files: bool,
    /// The limits the provider runs with (the same flags as `serve`).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The verdict on one SecretProviderClass, or a problem of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A class for provider aws without problems, and the files it makes.
    Valid { class: String, files: Vec<PlannedFile> },
    /// One problem of a class, or (`subject` `None`) of the file itself.
    Problem { subject: Option<String>, message: String },
    /// A SecretProviderClass of another provider.
    Skipped { class: String, reason: String },
}

/// What was found, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// SecretProviderClasses for provider aws.
    pub classes: usize,
    /// Those of them with a problem.
    pub invalid: usize,
    /// Problems, of classes and of files.
    pub problems: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.classes += other.classes;
        self.invalid += other.invalid;
        self.problems += other.problems;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} SecretProviderClass(es) for provider aws: {} valid, {} invalid, {} problem(s)",
            self.classes,
            self.classes.saturating_sub(self.invalid),
            self.invalid,
            self.problems
        )
    }
}

/// The verdicts on one file, in its order.
#[derive(Debug, Default)]
pub struct FileReport {
    pub verdicts: Vec<Verdict>,
    pub counts: Counts,
}

impl FileReport {
    fn problem(&mut self, subject: Option<String>, message: String) {
        self.counts.problems += 1;
        self.verdicts.push(Verdict::Problem { subject, message });
    }

    /// Writes the verdicts, then the file's counts, each line starting with
    /// `file`; with `show_files`, the files of each valid class.
    pub fn write(&self, out: &mut impl Write, file: &str, show_files: bool) -> io::Result<()> {
        for verdict in &self.verdicts {
            match verdict {
                Verdict::Valid { class, files } => {
                    writeln!(out, "{file}: {class}: valid")?;
                    if show_files {
                        for f in files {
                            write_planned(out, f)?;
                        }
                    }
                }
                Verdict::Problem {
                    subject: Some(subject),
                    message,
                } => writeln!(out, "{file}: {subject}: {message}")?,
                Verdict::Problem { subject: None, message } => writeln!(out, "{file}: {message}")?,
                Verdict::Skipped { class, reason } => writeln!(out, "{file}: {class}: skipped: {reason}")?,
            }
        }
        writeln!(out, "{file}: {}", self.counts)
    }
}

/// One line of `--show-files`: mode, path (escaped, not cut: it is the
/// name to check) and, for a pattern, what names its files.
fn write_planned(out: &mut impl Write, f: &PlannedFile) -> io::Result<()> {
    let (mode, path) = (f.mode, Escaped(&f.path));
    let depends = "the names depend on what AWS returns";
    match &f.named_by {
        None => writeln!(out, "    {mode:04o}  {path}"),
        Some(NamedBy::Keys { object }) => writeln!(
            out,
            "    {mode:04o}  {path}  # one per top-level key of the value of {} (jsonKeysAsFiles); {depends}",
            Echo(object)
        ),
        Some(NamedBy::Matches { selection }) => writeln!(
            out,
            "    {mode:04o}  {path}  # one per match of {}; {depends}",
            Echo(selection)
        ),
        Some(NamedBy::KeysOfMatches { selection }) => writeln!(
            out,
            "    {mode:04o}  {path}  # one per top-level key of the value of each match of {} (jsonKeysAsFiles); {depends}",
            Echo(selection)
        ),
    }
}

/// How a SecretProviderClass is named in the report, or why it cannot be:
/// a class without a usable `metadata.name` is named by its document, and
/// that is a problem of its own (Kubernetes refuses it).
fn class_name(doc: &Value, index: usize) -> Result<String, (String, &'static str)> {
    let metadata = doc.get("metadata");
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let problem = match metadata.and_then(|m| m.get("name")) {
        Some(Value::String(name)) if !name.trim().is_empty() => {
            return Ok(format!("SecretProviderClass {}/{}", Echo(namespace), Echo(name)));
        }
        None | Some(Value::Null) => "metadata.name is missing",
        Some(Value::String(name)) if name.is_empty() => "metadata.name is empty",
        Some(Value::String(_)) => "metadata.name is blank (only whitespace)",
        Some(_) => "metadata.name is not a string",
    };
    Err((format!("document {index}"), problem))
}

/// Validates the manifests in `text`. A manifest is read as `kubectl`
/// reads it, anchors, aliases and merge keys resolved, once a pre-scan has
/// bounded what they expand to.
pub fn validate_text(text: &str, limits: &Limits) -> FileReport {
    let mut report = FileReport::default();
    if let Err(e) = spec::yaml::prescan(text, &spec::yaml::Bounds::manifest(text.len())) {
        let message = match &e.rule {
            spec::yaml::YamlRule::Syntax(m) => format!("not valid YAML: {m}"),
            _ => format!("not checked: {e}"),
        };
        report.problem(Some(format!("document {}", e.document)), message);
        return report;
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc).and_then(|mut v| v.apply_merge().map(|()| v)) {
            Ok(v) => v,
            Err(e) => {
                report.problem(Some(format!("document {}", i + 1)), format!("not valid YAML: {e}"));
                // The parser cannot resynchronise after a syntax error (it
                // would yield the same error forever): the rest of the file
                // is not checked.
                break;
            }
        };
        if value.get("kind").and_then(Value::as_str) != Some("SecretProviderClass") {
            continue;
        }
        let name = class_name(&value, i + 1);
        let spec = value.get("spec");
        let provider = spec.and_then(|s| s.get("provider"));
        if provider.and_then(Value::as_str) != Some("aws") {
            let reason = match provider {
                None | Some(Value::Null) => "spec.provider is missing".to_string(),
                Some(Value::String(p)) => format!("spec.provider is {}, not aws", Echo(p)),
                Some(_) => "spec.provider is not a string".to_string(),
            };
            let class = name.unwrap_or_else(|(document, _)| document);
            report.verdicts.push(Verdict::Skipped { class, reason });
            continue;
        }
        report.counts.classes += 1;
        let problems_before = report.counts.problems;
        let class = match name {
            Ok(class) => class,
            Err((document, problem)) => {
                report.problem(Some(document.clone()), problem.to_string());
                document
            }
        };
        match validate_class(spec.and_then(|s| s.get("parameters")), limits) {
            Err(messages) => {
                for message in messages {
                    report.problem(Some(class.clone()), message);
                }
            }
            // Without a name, the class is invalid for that alone.
            Ok(_) if report.counts.problems > problems_before => {}
            Ok(mount) => {
                let files = render::planned_files(&mount.objects, &mount.templates);
                report.verdicts.push(Verdict::Valid { class, files });
            }
        }
        if report.counts.problems > problems_before {
            report.counts.invalid += 1;
        }
    }
    report
}

/// The class its parameters make, or their problems: each object on its
/// own first (so every faulty object is named), then the class as a whole,
/// exactly as a Mount would see it.
fn validate_class(parameters: Option<&Value>, limits: &Limits) -> Result<MountSpec, Vec<String>> {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    match parameters {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                match (k.as_str(), super::parameter_string(v)) {
                    (Some(k), Some(v)) => {
                        attrs.insert(k.to_string(), v);
                    }
                    _ => return Err(vec!["spec.parameters must map strings to strings".to_string()]),
                }
            }
        }
        Some(_) => return Err(vec!["spec.parameters must be a mapping".to_string()]),
    }
    let check = |attrs: &BTreeMap<String, String>| -> Result<MountSpec, String> {
        let mut full = attrs.clone();
        // The kubelet's part of a mount: pod information and tokens for both
        // audiences, so only the class itself is judged.
        full.insert(keys::POD_NAMESPACE.into(), "validate".into());
        full.insert(keys::POD_NAME.into(), "validate".into());
        full.insert(keys::SERVICE_ACCOUNT.into(), "validate".into());
        full.insert(
            keys::TOKENS.into(),
            r#"{"sts.amazonaws.com":{"token":"validate"},"pods.eks.amazonaws.com":{"token":"validate"}}"#.into(),
        );
        let json = serde_json::to_string(&full).map_err(|e| e.to_string())?;
        let spec = spec::parse_request(&json, "null", "/validate", "420", limits).map_err(|e| e.to_string())?;
        // With the class's own region the region rules apply offline too.
        if let Some(region) = spec.region.clone() {
            spec::check_regions(&spec, region).map_err(|e| e.to_string())?;
        }
        Ok(spec)
    };
    let mut problems = Vec::new();
    // Object by object only for `objects` that pass the structural limits
    // (the whole class is checked below and reports those).
    let splittable = |o: &String| {
        o.len() <= limits.max_objects_bytes
            && spec::yaml::prescan(o, &spec::yaml::Bounds::of("objects", limits)).is_ok()
    };
    if let Some(Ok(Value::Sequence(items))) = attrs
        .get(keys::OBJECTS)
        .filter(|o| splittable(o))
        .map(|o| serde_yaml::from_str::<Value>(o).and_then(|mut v| v.apply_merge().map(|()| v)))
    {
        // Only the parameters that shape objects, so that a faulty
        // parameter elsewhere does not hide the objects' own problems.
        let shaping: BTreeMap<String, String> = attrs
            .iter()
            .filter(|(k, _)| [keys::REGION, keys::FAILOVER_REGION, keys::PATH_TRANSLATION].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for item in items.iter().filter(|i| i.is_mapping()) {
            let mut one = shaping.clone();
            let single = serde_yaml::to_string(&vec![item.clone()]).unwrap_or_default();
            one.insert(keys::OBJECTS.into(), single);
            if let Err(e) = check(&one) {
                problems.push(e);
            }
        }
    }
    match check(&attrs) {
        Ok(spec) if problems.is_empty() => Ok(spec),
        Ok(_) => Err(problems),
        Err(e) => {
            if !problems.contains(&e) {
                problems.push(e);
            }
            Err(problems)
        }
    }
}

/// Runs the command; returns whether every class is valid (and every file
/// could be read and written about).
pub fn run(args: &ValidateArgs) -> bool {
    let limits = args.limits.limits();
    let mut out = io::stdout().lock();
    let mut total = Counts::default();
    for path in &args.files {
        let file = path.display().to_string();
        let report = match std::fs::read_to_string(path) {
            Ok(text) => validate_text(&text, &limits),
            Err(e) => {
                let mut report = FileReport::default();
                report.problem(None, format!("cannot read: {e}"));
                report
            }
        };
        total.add(report.counts);
        // Output that cannot be written (a closed pipe) ends the run.
        if report.write(&mut out, &file, args.show_files).is_err() {
            return false;
        }
    }
    let written = writeln!(out, "{} file(s), {total}", args.files.len()).and_then(|()| out.flush());
    written.is_ok() && total.problems == 0
}
