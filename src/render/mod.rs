//! Turning fetched values into the files of a mount and their versions:
//! one file per object (alias or translated name), or one per top-level key
//! of its JSON value (`jsonKeysAsFiles`), plus one per JMESPath entry, each
//! with its own mode; `object_version` ids are the file names. A value
//! that is a certificate with its key (`certificateFormat`, an ACM object)
//! becomes a directory of `tls.crt`, `tls.key` and `ca.crt`, made after
//! every other object's files (its password may be one of them).
//! Every file, and the mount as a whole, stays within the size limits: the
//! check is made as each file is added, so an oversized mount is refused
//! before it is built, and nothing is written. A value in several files is
//! one shared buffer, not copies.

pub mod json_keys;
pub mod write;

use crate::certificate::{self, CertificateError, Format};
use crate::encoding;
use crate::fetched::Fetched;
use crate::jmes::EvalError;
use crate::limits::{Echo, Limit, LimitError, Limits, echo};
use crate::memory::{Charge, MemoryError, MountMemory, Stage};
use crate::secret::SecretBytes;
use crate::spec::objects::CertificateSpec;
use crate::spec::paths::{self, Collision};
use crate::spec::{ObjectSpec, TemplateSpec};
use crate::template::{self, TemplateError};

/// Why the files of a mount could not be made. Errors name the object and
/// the expression, never a value.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("Invalid JSON used with jmesPath in secret: {}.", Echo(.0))]
    NotJson(String),
    #[error("Invalid JMES Path: {}.", Echo(.0))]
    InvalidPath(String),
    #[error("JMES Path - {} for object alias - {} does not point to a valid object.", Echo(.path), Echo(.alias))]
    NoMatch { path: String, alias: String },
    #[error("Invalid JMES search result type for path:{}. Only string is allowed.", Echo(.0))]
    NotString(String),
    #[error("jsonKeysAsFiles of object {}: {error}", Echo(.object))]
    JsonKeys {
        object: String,
        error: json_keys::SplitError,
    },
    #[error("invalid file name \"{}\" for {} of {}: {rule}", Echo(.file), Echo(.name), Echo(.object))]
    InvalidFileName {
        file: String,
        name: String,
        object: String,
        rule: crate::spec::PathRule,
    },
    #[error("objectEncoding of object {}: the value of file {} is not valid {encoding}", Echo(.object), Echo(.file))]
    NotEncoded {
        object: String,
        file: String,
        encoding: &'static str,
    },
    #[error("certificate {} of object {}: {problem}", Echo(.file), Echo(.object))]
    Certificate {
        object: String,
        file: String,
        problem: CertificateError,
    },
    #[error(
        "certificate {} of object {}: its certificatePasswordFile {} was not rendered",
        Echo(.file),
        Echo(.object),
        Echo(.password_file)
    )]
    PasswordFileMissing {
        object: String,
        file: String,
        password_file: String,
    },
    #[error(transparent)]
    Collision(#[from] Collision),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// One file of the mount.
#[derive(Debug, Clone)]
pub struct FileOut {
    pub path: String,
    pub mode: u32,
    pub contents: SecretBytes,
}

/// The version of one file, as reported to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    pub version: String,
}

/// The whole content of a mount.
#[derive(Debug, Default)]
pub struct Rendered {
    pub files: Vec<FileOut>,
    pub versions: Vec<Version>,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// The memory charges of the files rendered into new buffers (and of
    /// the work that made them), to be held as long as the files are.
    pub charges: Vec<Charge>,
}

/// The mount's memory, when rendering is metered (it is for a mount; the
/// offline `validate` and the fuzz targets render unmetered).
#[derive(Clone, Copy)]
struct Meter<'a>(Option<&'a MountMemory>);

impl Meter<'_> {
    /// Charges `bytes` of rendering now (a blocking thread cannot wait).
    fn charge(self, bytes: u64) -> Result<Option<Charge>, RenderError> {
        match self.0 {
            Some(m) => Ok(Some(m.try_charge(Stage::Files, bytes)?)),
            None => Ok(None),
        }
    }
}

impl Rendered {
    /// Keeps `charge`, settled to `bytes`, with the files.
    fn hold(&mut self, charge: Option<Charge>, bytes: usize) {
        if let Some(mut c) = charge {
            c.shrink_to(bytes as u64);
            self.charges.push(c);
        }
    }
}

impl Rendered {
    /// Adds a file, within the per-file and per-mount limits.
    fn add(&mut self, limits: &Limits, file: FileOut, version: &str) -> Result<(), RenderError> {
        // Objects whose files are known only from their values
        // (jsonKeysAsFiles) count here.
        limits.check(Limit::Files, self.files.len() as u64 + 1, || {
            format!("the files of this mount (up to {})", echo(&file.path))
        })?;
        let len = file.contents.len() as u64;
        limits.check(Limit::FileBytes, len, || format!("file {}", echo(&file.path)))?;
        self.total_bytes += len;
        limits.check(Limit::MountBytes, self.total_bytes, || {
            format!("the files of this mount (up to {})", echo(&file.path))
        })?;
        self.versions.push(Version {
            id: file.path.clone(),
            version: version.to_string(),
        });
        self.files.push(file);
        Ok(())
    }
}

/// Renders fetched values (in object order) into files and versions, then
/// the templates from those files. Files known only from the values (the
/// matches of an object that selects many, the keys of `jsonKeysAsFiles`)
/// are checked as names and for collisions with every other file here,
/// before anything is written.
///
/// With `memory`, every file made into a new buffer (a JMESPath result, a
/// decoded value, a key of `jsonKeysAsFiles`, a template's output) and the
/// work that makes it are charged to the mount's memory before they are
/// built, and a render the budget cannot hold fails.
pub fn render(
    objects: &[ObjectSpec],
    templates: &mut [TemplateSpec],
    values: Vec<Fetched>,
    limits: &Limits,
    memory: Option<&MountMemory>,
) -> Result<Rendered, RenderError> {
    let meter = Meter(memory);
    let mut out = Rendered::default();
    // Who wrote each file: the object, or the match of an object that
    // selects many (so a collision names the two AWS names).
    let mut owners: Vec<String> = Vec::new();
    let dynamic = objects.iter().any(|o| o.bulk.is_some() || o.json_keys);
    let mut certificates = Vec::new();
    for (object, fetched) in objects.iter().zip(values) {
        add_object(&mut out, &mut owners, &mut certificates, object, fetched, limits, meter)?;
    }
    add_certificates(&mut out, &mut owners, certificates, limits, meter)?;
    if !templates.is_empty() {
        add_templates(&mut out, &mut owners, templates, limits, memory)?;
    }
    if dynamic {
        let files = out
            .files
            .iter()
            .zip(&owners)
            .map(|(f, o)| (f.path.as_str(), o.as_str()));
        if let Some(c) = paths::find_collision(files) {
            return Err(RenderError::Collision(c));
        }
    }
    Ok(out)
}

/// Stands, in a [`PlannedFile`], for a top-level key of a JSON value.
pub const ANY_KEY: &str = "<key>";
/// Stands, in a [`PlannedFile`], for what a match's name adds to the path or
/// prefix of an object that selects many.
pub const ANY_NAME: &str = "<name>";

/// A file of a mount as it is known before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Relative to the mount; [`ANY_NAME`] and [`ANY_KEY`] stand where what
    /// AWS returns names the file.
    pub path: String,
    pub mode: u32,
    /// What AWS returns that names it, if anything does.
    pub named_by: Option<NamedBy>,
}

/// What names the files that only AWS can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedBy {
    /// The top-level keys of an object's value (`jsonKeysAsFiles`).
    Keys { object: String },
    /// The matches of an object that selects many (as it describes itself).
    Matches { selection: String },
    /// The top-level keys of the value of each match.
    KeysOfMatches { selection: String },
}

/// The files [`render`] makes of `objects` and `templates`, in its order,
/// with the names and modes it gives them: one entry per file, or per
/// pattern of files where AWS names them.
pub fn planned_files(objects: &[ObjectSpec], templates: &[TemplateSpec]) -> Vec<PlannedFile> {
    let mut out = Vec::new();
    // As `add_certificates`: after every other object's files.
    let mut certificates = Vec::new();
    let certificate_files = |c: &CertificateSpec, mode: u32| {
        c.files
            .iter()
            .map(move |f| PlannedFile {
                path: f.clone(),
                mode,
                named_by: None,
            })
            .collect::<Vec<_>>()
    };
    for object in objects {
        // As `add_object`: the files of any match, or of the object's value.
        let (file, selection) = match &object.bulk {
            Some(bulk) => (bulk.file_pattern(ANY_NAME), Some(object.name.clone())),
            None => (object.file.clone(), None),
        };
        // As `add_value`: the JMESPath entries, then the keys or the value.
        for j in &object.jmes {
            match &j.certificate {
                Some(c) => certificates.extend(certificate_files(c, j.mode)),
                None => out.push(PlannedFile {
                    path: j.file.clone(),
                    mode: j.mode,
                    named_by: None,
                }),
            }
        }
        if let Some(c) = &object.certificate {
            certificates.extend(certificate_files(c, object.mode));
            continue;
        }
        let (path, named_by) = match (object.json_keys, selection) {
            (false, None) => (file, None),
            (false, Some(selection)) => (file, Some(NamedBy::Matches { selection })),
            (true, None) => (
                json_keys::file_of(&file, ANY_KEY),
                Some(NamedBy::Keys {
                    object: object.name.clone(),
                }),
            ),
            (true, Some(selection)) => (
                json_keys::file_of(&file, ANY_KEY),
                Some(NamedBy::KeysOfMatches { selection }),
            ),
        };
        out.push(PlannedFile {
            path,
            mode: object.mode,
            named_by,
        });
    }
    out.extend(certificates);
    out.extend(templates.iter().map(|t| PlannedFile {
        path: t.file().to_string(),
        mode: t.mode,
        named_by: None,
    }));
    out
}

/// The files of the templates, rendered from the objects' files (not from
/// each other's), each within the file size limit and what is left of the
/// mount's, all within one budget of fuel and work.
fn add_templates(
    out: &mut Rendered,
    owners: &mut Vec<String>,
    templates: &mut [TemplateSpec],
    limits: &Limits,
    memory: Option<&MountMemory>,
) -> Result<(), RenderError> {
    let files = std::sync::Arc::new(template::Files::new(
        out.files
            .iter()
            .zip(&out.versions)
            .map(|(f, v)| (f.path.clone(), f.contents.clone(), v.version.clone())),
    ));
    let mut budget = template::Budget::metered(limits, memory.cloned());
    let meter = Meter(memory);
    for t in templates {
        let left = (limits.max_mount_bytes as u64).saturating_sub(out.total_bytes);
        let (max, limit) = if (limits.max_file_bytes as u64) <= left {
            (limits.max_file_bytes as u64, Limit::FileBytes)
        } else {
            (left, Limit::MountBytes)
        };
        let rendered = t
            .template
            .render(&files, &mut budget, max, limit, limits)
            .map_err(|e| match e.problem {
                template::Problem::Memory(m) => RenderError::Memory(m),
                _ => RenderError::Template(e),
            })?;
        // The output, charged once it is known (it is cut at `max`).
        let charge = meter.charge(rendered.contents.len() as u64)?;
        out.hold(charge, rendered.contents.len());
        let file = FileOut {
            path: t.file().to_string(),
            mode: t.mode,
            contents: rendered.contents,
        };
        out.add(limits, file, &rendered.version)?;
        owners.push(format!("template {}", t.file()));
    }
    out.charges.extend(budget.charges());
    Ok(())
}

/// The files of one object: each match of a bulk object, or the object's
/// own value.
fn add_object(
    out: &mut Rendered,
    owners: &mut Vec<String>,
    certificates: &mut Vec<Deferred>,
    object: &ObjectSpec,
    fetched: Fetched,
    limits: &Limits,
    meter: Meter<'_>,
) -> Result<(), RenderError> {
    let Some(bulk) = &object.bulk else {
        add_value(out, certificates, object, &object.file, fetched, limits, meter)?;
        owners.resize(out.files.len(), object.name.clone());
        return Ok(());
    };
    for (name, member) in fetched.members {
        let file = bulk.file_of(&name);
        if let Err(rule) = paths::check_relative_path(&file) {
            return Err(RenderError::InvalidFileName {
                file,
                name,
                object: object.name.clone(),
                rule,
            });
        }
        add_value(out, certificates, object, &file, member, limits, meter)?;
        owners.resize(out.files.len(), name);
    }
    Ok(())
}

/// The files of one value written as `file`: its JMESPath entries, and the
/// value itself or (`jsonKeysAsFiles`) one file per key under `file`.
fn add_value(
    out: &mut Rendered,
    certificates: &mut Vec<Deferred>,
    object: &ObjectSpec,
    file: &str,
    fetched: Fetched,
    limits: &Limits,
    meter: Meter<'_>,
) -> Result<(), RenderError> {
    for j in &object.jmes {
        // The evaluation's memory (the value parsed, the work), bounded
        // before it runs, then its result.
        let work = j.path.work_bound(fetched.value.len()).min(limits.max_jmespath_work);
        let parsed = (fetched.value.len() as u64).saturating_mul(crate::jmes::PARSE_FACTOR);
        let charge = meter.charge(work.saturating_add(parsed))?;
        let contents = j
            .path
            .evaluate_with(fetched.value.expose(), limits, j.non_string_json)
            .map_err(|e| match e {
                EvalError::NotJson => RenderError::NotJson(object.name.clone()),
                EvalError::Runtime => RenderError::InvalidPath(j.path.as_str().to_string()),
                EvalError::Null => RenderError::NoMatch {
                    path: j.path.as_str().to_string(),
                    alias: j.alias.clone(),
                },
                EvalError::NotString => RenderError::NotString(j.path.as_str().to_string()),
                EvalError::Work(found) => RenderError::Limit(LimitError {
                    subject: format!(
                        "object {}, jmesPath {} (for a value of {} bytes)",
                        echo(&object.name),
                        echo(j.path.as_str()),
                        fetched.value.len()
                    ),
                    limit: Limit::JmespathWork,
                    found,
                    at_least: false,
                    max: limits.max_jmespath_work,
                }),
            })?;
        out.hold(charge, contents.len());
        let contents = decode(out, meter, object, &j.file, j.encoding, contents)?;
        if let Some(spec) = &j.certificate {
            certificates.push(Deferred {
                object: object.name.clone(),
                file: j.file.clone(),
                spec: spec.clone(),
                mode: j.mode,
                contents,
                version: fetched.version.clone(),
            });
            continue;
        }
        out.add(
            limits,
            FileOut {
                path: j.file.clone(),
                mode: j.mode,
                contents,
            },
            &fetched.version,
        )?;
    }
    if object.json_keys {
        // The parsed value and the files made of it.
        let charge = meter.charge((fetched.value.len() as u64).saturating_mul(json_keys::WORK_FACTOR))?;
        let files = json_keys::split(file, fetched.value.expose()).map_err(|error| RenderError::JsonKeys {
            object: object.name.clone(),
            error,
        })?;
        out.hold(charge, files.iter().map(|(_, c)| c.len()).sum());
        for (path, contents) in files {
            let contents = decode(out, meter, object, &path, object.encoding, contents)?;
            let file = FileOut {
                path,
                mode: object.mode,
                contents,
            };
            out.add(limits, file, &fetched.version)?;
        }
        return Ok(());
    }
    let contents = decode(out, meter, object, file, object.encoding, fetched.value)?;
    if let Some(spec) = &object.certificate {
        certificates.push(Deferred {
            object: object.name.clone(),
            file: file.to_string(),
            spec: spec.clone(),
            mode: object.mode,
            contents,
            version: fetched.version,
        });
        return Ok(());
    }
    out.add(
        limits,
        FileOut {
            path: file.to_string(),
            mode: object.mode,
            contents,
        },
        &fetched.version,
    )
}

/// A value that is a certificate with its key, shaped once every other
/// object's files are made.
struct Deferred {
    object: String,
    /// The directory of its files.
    file: String,
    spec: CertificateSpec,
    mode: u32,
    contents: SecretBytes,
    version: String,
}

/// The files of each certificate: `tls.crt`, `tls.key` and, when its input
/// has one, `ca.crt`, with the value's version; a PKCS#12 file or an
/// encrypted key is opened with the contents of its password file.
fn add_certificates(
    out: &mut Rendered,
    owners: &mut Vec<String>,
    certificates: Vec<Deferred>,
    limits: &Limits,
    meter: Meter<'_>,
) -> Result<(), RenderError> {
    for d in certificates {
        let password = match &d.spec.password_file {
            None => None,
            Some(p) => match out.files.iter().find(|f| f.path == *p) {
                Some(f) => Some(f.contents.clone()),
                None => {
                    return Err(RenderError::PasswordFileMissing {
                        object: d.object,
                        file: d.file,
                        password_file: p.clone(),
                    });
                }
            },
        };
        // The parsed certificates and the files made of them.
        let charge = meter.charge((d.contents.len() as u64).saturating_mul(certificate::WORK_FACTOR))?;
        let password = password.as_ref().map(SecretBytes::expose);
        let shaped = match d.spec.format {
            Format::Pem => certificate::from_pem(d.contents.expose(), password, d.spec.chain),
            Format::Pkcs12 => certificate::from_pkcs12(d.contents.expose(), password.unwrap_or_default()),
        }
        .map_err(|problem| RenderError::Certificate {
            object: d.object.clone(),
            file: d.file.clone(),
            problem,
        })?;
        drop(d.contents);
        let [cert_file, key_file, ca_file] = d.spec.files;
        let files = [
            (cert_file, Some(shaped.cert)),
            (key_file, Some(shaped.key)),
            (ca_file, shaped.ca),
        ];
        out.hold(
            charge,
            files.iter().map(|(_, c)| c.as_ref().map_or(0, SecretBytes::len)).sum(),
        );
        for (path, contents) in files {
            let Some(contents) = contents else { continue };
            out.add(
                limits,
                FileOut {
                    path,
                    mode: d.mode,
                    contents,
                },
                &d.version,
            )?;
        }
        owners.resize(out.files.len(), d.object);
    }
    Ok(())
}

/// `contents` of `file` decoded from the object's (or entry's) encoding
/// (a new buffer, charged: at most the input's size, and the input's
/// whitespace-free copy while base64 is decoded).
fn decode(
    out: &mut Rendered,
    meter: Meter<'_>,
    object: &ObjectSpec,
    file: &str,
    encoding: crate::encoding::Encoding,
    contents: SecretBytes,
) -> Result<SecretBytes, RenderError> {
    if encoding == crate::encoding::Encoding::Utf8 {
        return Ok(contents);
    }
    let charge = meter.charge((contents.len() as u64).saturating_mul(2))?;
    let decoded = encoding::decode(encoding, contents).map_err(|_| RenderError::NotEncoded {
        object: object.name.clone(),
        file: file.to_string(),
        encoding: encoding.as_str(),
    })?;
    out.hold(charge, decoded.len());
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::objects::{ObjectRules, parse_objects};
    use crate::spec::templates::parse_templates;

    fn fetched(value: &str) -> Fetched {
        Fetched {
            value: SecretBytes::from(value.to_string()),
            version: "v1".into(),
            ..Default::default()
        }
    }

    /// The plan names the files render makes, in its order and with its
    /// modes: each entry is a file, or a pattern that the names AWS returns
    /// fill in.
    #[test]
    fn planned_files_are_the_rendered_files_in_their_order_with_their_modes() {
        let rules = ObjectRules::default();
        let objects = parse_objects(
            "- objectName: app/db\n  objectType: secretsmanager\n  filePermission: \"0400\"\n  \
             jmesPath:\n    - path: user\n      objectAlias: db-user\n      filePermission: \"0440\"\n\
             - objectName: creds\n  objectType: secretsmanager\n  objectAlias: keys\n  jsonKeysAsFiles: true\n\
             - parameterPath: /cfg\n  objectType: ssmparameter\n  objectAlias: cfg\n\
             - secretNamePrefix: team/\n  jsonKeysAsFiles: true\n",
            &rules,
        )
        .unwrap();
        let mut templates = parse_templates(Some("- fileName: url\n  template: x\n"), &rules, &objects).unwrap();

        let plan = planned_files(&objects, &templates);
        let file = |path: &str, mode: u32, named_by: Option<NamedBy>| PlannedFile {
            path: path.to_string(),
            mode,
            named_by,
        };
        assert_eq!(
            plan,
            vec![
                file("db-user", 0o440, None),
                file("app_db", 0o400, None),
                file("keys/<key>", 0o644, Some(NamedBy::Keys { object: "creds".into() })),
                file(
                    "cfg_<name>",
                    0o644,
                    Some(NamedBy::Matches {
                        selection: "parameterPath /cfg".into()
                    })
                ),
                file(
                    "<name>/<key>",
                    0o644,
                    Some(NamedBy::KeysOfMatches {
                        selection: "secretNamePrefix team/".into()
                    })
                ),
                file("url", 0o644, None),
            ]
        );

        let mut cfg = fetched("");
        cfg.members = vec![("/cfg/host".into(), fetched("h")), ("/cfg/port".into(), fetched("p"))];
        let mut team = fetched("");
        team.members = vec![("team/x".into(), fetched(r#"{"k": "v", "l": "w"}"#))];
        let values = vec![
            fetched(r#"{"user": "u"}"#),
            fetched(r#"{"a": "1", "b": "2"}"#),
            cfg,
            team,
        ];
        let rendered = render(&objects, &mut templates, values, &Limits::default(), None).unwrap();
        let got: Vec<(&str, u32)> = rendered.files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        // Each entry of the plan with the names AWS returned filled in.
        let fill = |i: usize, names: &[&str], keys: &[&str]| -> Vec<(String, u32)> {
            let mut paths = vec![plan[i].path.clone()];
            for (placeholder, values) in [(ANY_NAME, names), (ANY_KEY, keys)] {
                if paths[0].contains(placeholder) {
                    paths = paths
                        .iter()
                        .flat_map(|p| values.iter().map(move |v| p.replace(placeholder, v)))
                        .collect();
                }
            }
            paths.into_iter().map(|p| (p, plan[i].mode)).collect()
        };
        let expected: Vec<(String, u32)> = [
            fill(0, &[], &[]),
            fill(1, &[], &[]),
            fill(2, &[], &["a", "b"]),
            fill(3, &["host", "port"], &[]),
            fill(4, &["x"], &["k", "l"]),
            fill(5, &[], &[]),
        ]
        .concat();
        let expected: Vec<(&str, u32)> = expected.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        assert_eq!(got, expected);
    }

    /// A match whose name makes no file name fails the render naming the
    /// file (quoted), the match, the object and the rule.
    #[test]
    fn a_match_that_is_not_a_file_name_is_named_with_the_rule() {
        let rules = ObjectRules {
            translation: crate::spec::PathTranslation::Off,
            ..ObjectRules::default()
        };
        let objects = parse_objects("- parameterPath: /cfg\n  objectType: ssmparameter\n", &rules).unwrap();
        let mut cfg = fetched("");
        cfg.members = vec![("/cfg/x/..".into(), fetched("v"))];
        let err = render(&objects, &mut [], vec![cfg], &Limits::default(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid file name "x/.." for /cfg/x/.. of parameterPath /cfg: a path component is ".." (the parent directory)"#
        );
    }
}
