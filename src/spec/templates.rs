//! The SecretProviderClass `templates` parameter: a YAML (or JSON) list of
//! files rendered from the other files of the mount.
//!
//! ```yaml
//! templates: |
//!   - fileName: db.env
//!     filePermission: "0400"
//!     template: |
//!       DB_USER={{ files.username }}
//!       DB_PASSWORD={{ files["db-password"] | shellquote }}
//! ```
//!
//! Keys match case-insensitively and unknown keys are ignored, as in
//! `objects`. A template's file name follows `pathTranslation` like an
//! `objectAlias`; its mode is its `filePermission`, else the class's.
//! Templates are compiled here, before any call, and every file they name
//! literally must be a file of the class (unless objects that select many
//! make the names known only once fetched).

use serde_yaml::{Mapping, Value};

use super::objects::{self, ObjectRules, ObjectSpec};
use super::paths::{self, PathRule};
use super::{ObjectError, SpecError, yaml};
use crate::limits::{Limit, echo};
use crate::template::{self, Template};

/// The parameter's name.
pub const KEY: &str = "templates";

/// One validated template of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    pub template: Template,
    /// Mode of the rendered file.
    pub mode: u32,
}

impl TemplateSpec {
    /// The file it renders, relative to the mount.
    pub fn file(&self) -> &str {
        &self.template.file
    }
}

/// Parses, checks and compiles the `templates` parameter (absent or empty:
/// none) against the mount's `objects`.
pub fn parse_templates(
    text: Option<&str>,
    rules: &ObjectRules,
    objects: &[ObjectSpec],
) -> Result<Vec<TemplateSpec>, SpecError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let limits = &rules.limits;
    let load = |m: String| SpecError::Object(ObjectError::Load(m));
    limits
        .check(Limit::ObjectsBytes, text.len() as u64, || KEY.to_string())
        .map_err(ObjectError::Limit)?;
    yaml::prescan(text, &yaml::Bounds::of(KEY, limits)).map_err(ObjectError::Yaml)?;
    let doc: Value = yaml::load(text).map_err(|e| load(format!("{KEY}: {e}")))?;
    let items = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        _ => return Err(load(format!("{KEY} must be a list"))),
    };
    let object_files: usize = objects.iter().map(|o| 1 + o.jmes.len()).sum();
    limits
        .check(Limit::Files, (object_files + items.len()) as u64, || {
            format!("objects with their jmesPath entries, and {KEY}")
        })
        .map_err(ObjectError::Limit)?;

    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::Mapping(m) = item else {
            return Err(load(format!("{KEY}[{index}] must be a mapping")));
        };
        out.push(read_template(m, index, rules)?);
    }
    check_files(&out, objects)?;
    Ok(out)
}

/// One entry: `fileName`, `template`, `filePermission`.
fn read_template(m: &Mapping, index: usize, rules: &ObjectRules) -> Result<TemplateSpec, SpecError> {
    let load = |m: String| SpecError::Object(ObjectError::Load(m));
    let (mut name, mut text, mut permission) = (None, None, None);
    for (k, v) in m {
        let Some(key) = k.as_str() else { continue };
        let field = |f: &str| format!("{KEY}[{index}].{f}");
        match key.to_ascii_lowercase().as_str() {
            "filename" => name = objects::scalar(v, &field("fileName"), &rules.limits)?,
            "template" => {
                text = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(load(format!("{} must be a string", field("template")))),
                }
            }
            "filepermission" => permission = objects::permission_scalar(v, &field("filePermission"), &rules.limits)?,
            _ => {}
        }
    }
    let name = name.ok_or_else(|| load(format!("{KEY}[{index}].fileName must be specified")))?;
    let text = text.ok_or_else(|| load(format!("{KEY}[{index}] ({}): template must be specified", echo(&name))))?;
    let file = rules.translation.file_name(&name);
    match paths::check_relative_path(&file) {
        Ok(()) => {}
        Err(PathRule::Traversal) => return Err(ObjectError::Traversal(file).into()),
        Err(rule) => {
            return Err(ObjectError::InvalidFileName {
                file,
                object: format!("{KEY}[{index}]"),
                rule,
            }
            .into());
        }
    }
    let mode = match permission {
        Some(p) => objects::parse_file_permission(&p)?,
        None => rules.default_mode,
    };
    Ok(TemplateSpec {
        template: Template::compile(&file, &text)?,
        mode,
    })
}

/// Template files must not collide with each other or with the objects'
/// files, and every file a template names literally must exist.
fn check_files(templates: &[TemplateSpec], objects: &[ObjectSpec]) -> Result<(), SpecError> {
    let object_files = objects::static_files(objects);
    let owners: Vec<String> = templates.iter().map(|t| format!("template {}", t.file())).collect();
    let files = object_files.chain(templates.iter().zip(&owners).map(|(t, o)| (t.file(), o.as_str())));
    if let Some(c) = paths::find_collision(files) {
        return Err(ObjectError::Collision(c).into());
    }
    // Objects that select many name their files once fetched; the files of
    // jsonKeysAsFiles lie under the object's file.
    if objects.iter().any(|o| o.bulk.is_some()) {
        return Ok(());
    }
    let known = |name: &str| {
        objects.iter().any(|o| {
            if o.json_keys {
                name.strip_prefix(o.file.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            } else {
                o.file == name
            }
        }) || objects.iter().flat_map(|o| &o.jmes).any(|j| j.file == name)
    };
    match template::unknown_reference(templates.iter().map(|t| &t.template), known) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_permission_reads_as_in_objects_even_unquoted() {
        let objects = objects::parse_objects(
            "- objectName: db\n  objectType: secretsmanager\n",
            &ObjectRules::default(),
        )
        .expect("objects");
        for text in [
            "- fileName: a.env\n  filePermission: 0400\n  template: \"{{ files.db }}\"\n",
            "- fileName: a.env\n  filePermission: \"0400\"\n  template: \"{{ files.db }}\"\n",
        ] {
            let t = parse_templates(Some(text), &ObjectRules::default(), &objects).expect(text);
            assert_eq!((t[0].file(), t[0].mode), ("a.env", 0o400), "{text}");
        }
    }
}
