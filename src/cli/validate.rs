//! `csi-provider-aws validate FILE...`: checks SecretProviderClass manifests
//! offline with exactly the validation a Mount applies, before any
//! Kubernetes or AWS call. Multi-document YAML; classes of other providers
//! are skipped. Prints one line per problem and exits non-zero if any.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use serde_yaml::Value;

use crate::limits::{LimitArgs, Limits};
use crate::spec::{self, keys};

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// SecretProviderClass manifests (YAML; several documents per file allowed).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The limits the provider runs with (the same flags as `serve`).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// One problem found in one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub class: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.class, self.message)
    }
}

/// What was checked.
#[derive(Debug, Default)]
pub struct Report {
    pub classes: usize,
    pub problems: Vec<Problem>,
}

/// Validates the manifests in `text` (the contents of `file`) under
/// `limits`. A manifest is read as `kubectl` reads it, anchors, aliases and
/// merge keys resolved, once a pre-scan has bounded what they expand to.
pub fn validate_text(file: &str, text: &str, limits: &Limits, report: &mut Report) {
    if let Err(e) = spec::yaml::prescan(text, &spec::yaml::Bounds::manifest(text.len())) {
        let message = match &e.rule {
            spec::yaml::YamlRule::Syntax(m) => format!("not valid YAML: {m}"),
            _ => format!("not checked: {e}"),
        };
        report.problems.push(Problem {
            file: file.to_string(),
            class: format!("document {}", e.document),
            message,
        });
        return;
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc).and_then(|mut v| v.apply_merge().map(|()| v)) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(Problem {
                    file: file.to_string(),
                    class: format!("document {}", i + 1),
                    message: format!("not valid YAML: {e}"),
                });
                // The parser cannot resynchronise after a syntax error (it
                // would yield the same error forever): the rest of the file
                // is not checked.
                break;
            }
        };
        if value.get("kind").and_then(Value::as_str) != Some("SecretProviderClass") {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let spec = value.get("spec");
        if spec.and_then(|s| s.get("provider")).and_then(Value::as_str) != Some("aws") {
            continue;
        }
        report.classes += 1;
        let class = format!("SecretProviderClass {namespace}/{name}");
        for message in validate_class(spec.and_then(|s| s.get("parameters")), limits) {
            report.problems.push(Problem {
                file: file.to_string(),
                class: class.clone(),
                message,
            });
        }
    }
}

/// The problems of one class's parameters: each object on its own first
/// (so every faulty object is named), then the class as a whole, exactly as
/// a Mount would see it.
fn validate_class(parameters: Option<&Value>, limits: &Limits) -> Vec<String> {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    match parameters {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                match (k.as_str(), super::parameter_string(v)) {
                    (Some(k), Some(v)) => {
                        attrs.insert(k.to_string(), v);
                    }
                    _ => return vec!["spec.parameters must map strings to strings".to_string()],
                }
            }
        }
        Some(_) => return vec!["spec.parameters must be a mapping".to_string()],
    }
    let check = |attrs: &BTreeMap<String, String>| -> Result<(), String> {
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
        match spec.region.clone() {
            Some(region) => spec::check_regions(&spec, region)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
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
    if let Err(e) = check(&attrs)
        && !problems.contains(&e)
    {
        problems.push(e);
    }
    problems
}

/// Runs the command; returns whether every class is valid.
pub fn run(args: &ValidateArgs) -> bool {
    let mut report = Report::default();
    for path in &args.files {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => validate_text(&file, &text, &args.limits.limits(), &mut report),
            Err(e) => report.problems.push(Problem {
                file,
                class: "-".into(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    for p in &report.problems {
        println!("{p}");
    }
    eprintln!(
        "{} SecretProviderClass(es) for provider aws checked, {} problem(s)",
        report.classes,
        report.problems.len()
    );
    report.problems.is_empty()
}
