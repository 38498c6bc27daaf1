//! The SecretProviderClass `objects` parameter: a YAML (or JSON) list of
//! object descriptors. Keys match case-insensitively (the last of several
//! spellings wins), unknown keys are ignored, and YAML scalars of any type
//! are read as their string form.

use std::collections::HashSet;

use serde_yaml::{Mapping, Value};

use super::arn;
use super::bulk::{self, BulkError, BulkSpec, RawBulk};
use super::paths::{self, PathRule, PathTranslation};
use super::role::{self, AssumeRole, Owner};
use super::yaml;
use super::{ObjectError, ObjectKind};
use crate::certificate::{self, Chain, Format};
use crate::encoding::Encoding;
use crate::jmes::{self, CompileError, JmesPath};
use crate::limits::{Echo, Limit, LimitError, Limits, echo};

/// One validated object of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `objectName`: a name or an ARN.
    pub name: String,
    pub kind: ObjectKind,
    /// `objectAlias`, if set.
    pub alias: Option<String>,
    /// `objectVersion`: Secrets Manager VersionId or SSM version number.
    pub version: Option<String>,
    /// `objectVersionLabel`: Secrets Manager stage or SSM label.
    pub version_label: Option<String>,
    /// File mode of the object's file.
    pub mode: u32,
    /// File path relative to the mount.
    pub file: String,
    /// Extra files extracted with JMESPath.
    pub jmes: Vec<JmesSpec>,
    /// What to fetch in the failover region, when it differs.
    pub failover: Option<FailoverSpec>,
    /// The role the pod's credentials assume to fetch this object: the
    /// object's own `assumeRoleArn`, else the class's.
    pub assume_role: Option<AssumeRole>,
    /// `jsonKeysAsFiles`: every top-level key of the JSON value becomes a
    /// file under `file` (a directory then), instead of the value's own file.
    pub json_keys: bool,
    /// `objectEncoding` of the value (of each key's value with
    /// `jsonKeysAsFiles`, of each match's value for a bulk object).
    pub encoding: Encoding,
    /// Set when the object selects many (`parameterPath`, `secretNamePrefix`,
    /// `secretFilters`): `name` then describes the selection and `file` is
    /// unused; each match gets its own file.
    pub bulk: Option<BulkSpec>,
    /// Set when the value is a certificate with its key (`certificateFormat`,
    /// or an ACM object): `file` is then a directory of `tls.crt`, `tls.key`
    /// and `ca.crt`.
    pub certificate: Option<CertificateSpec>,
}

/// `certificateFormat` and `certificatePasswordFile` of an object or a
/// `jmesPath` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub format: Format,
    /// How its certificates make the chain: ordered by issuer (a bundle a
    /// user made), or as ACM gives it.
    pub chain: Chain,
    /// The file of this mount that holds the password of a PKCS#12 file or
    /// of an encrypted PEM key, as templates name files.
    pub password_file: Option<String>,
    /// The files written: `<file>/tls.crt`, `<file>/tls.key`,
    /// `<file>/ca.crt` (the last when the input has a chain).
    pub files: [String; 3],
}

impl CertificateSpec {
    fn new(format: Format, chain: Chain, password_file: Option<String>, file: &str) -> Self {
        Self {
            format,
            chain,
            password_file,
            files: [certificate::CERT_FILE, certificate::KEY_FILE, certificate::CA_FILE].map(|f| format!("{file}/{f}")),
        }
    }
}

/// `certificateFormat` and `certificatePasswordFile` as read, of `object`.
fn certificate_spec(
    format: Option<&str>,
    password_file: Option<String>,
    object: &str,
    file: &str,
) -> Result<Option<CertificateSpec>, ObjectError> {
    let format = match format {
        None => {
            if password_file.is_some() {
                return Err(ObjectError::PasswordWithoutFormat {
                    object: object.to_string(),
                    field: "certificatePasswordFile",
                });
            }
            return Ok(None);
        }
        Some(f) => Format::parse(f).ok_or_else(|| ObjectError::InvalidCertificateFormat {
            object: object.to_string(),
            value: f.to_string(),
        })?,
    };
    Ok(Some(CertificateSpec::new(format, Chain::Ordered, password_file, file)))
}

/// One `jmesPath` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JmesSpec {
    pub path: JmesPath,
    pub alias: String,
    pub mode: u32,
    pub file: String,
    /// `objectEncoding` of the result.
    pub encoding: Encoding,
    /// `nonStringAsJson`: a number, boolean, object or list result is
    /// written as compact JSON instead of failing the mount.
    pub non_string_json: bool,
    /// The result is a certificate with its key: `file` is a directory.
    pub certificate: Option<CertificateSpec>,
}

/// `objectEncoding` of `object` (its own, or of one of its `jmesPath`
/// entries).
fn encoding(raw: Option<&str>, object: &str) -> Result<Encoding, ObjectError> {
    match raw {
        None | Some("") => Ok(Encoding::Utf8),
        Some(v) => Encoding::parse(v).ok_or_else(|| ObjectError::InvalidEncoding {
            object: object.to_string(),
            value: v.to_string(),
        }),
    }
}

/// `failoverObject`: the object to read in the failover region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSpec {
    pub name: String,
    pub version: Option<String>,
    pub version_label: Option<String>,
}

impl ObjectSpec {
    /// The SSM selector-qualified name (`name`, `name:7`, `name:label`).
    pub fn ssm_selector(&self) -> String {
        ssm_selector(&self.name, &self.version, &self.version_label)
    }
}

impl FailoverSpec {
    pub fn ssm_selector(&self) -> String {
        ssm_selector(&self.name, &self.version, &self.version_label)
    }
}

fn ssm_selector(name: &str, version: &Option<String>, label: &Option<String>) -> String {
    match (version, label) {
        (Some(v), _) => format!("{name}:{v}"),
        (None, Some(l)) => format!("{name}:{l}"),
        (None, None) => name.to_string(),
    }
}

/// Context the validation needs from the other parameters.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRules {
    pub translation: PathTranslation,
    pub default_mode: u32,
    pub has_failover_region: bool,
    pub limits: Limits,
}

impl Default for ObjectRules {
    /// The driver's defaults: file mode 0644, `pathTranslation` `_`, no
    /// failover region, the default limits.
    fn default() -> Self {
        Self {
            translation: PathTranslation::default(),
            default_mode: 0o644,
            has_failover_region: false,
            limits: Limits::default(),
        }
    }
}

/// Raw descriptor fields, all optional strings.
#[derive(Debug, Default)]
struct RawObject {
    name: Option<String>,
    object_type: Option<String>,
    alias: Option<String>,
    version: Option<String>,
    version_label: Option<String>,
    file_permission: Option<String>,
    jmes: Vec<RawJmes>,
    failover: Option<RawFailover>,
    assume_role_arn: Option<String>,
    assume_role_external_id: Option<String>,
    assume_role_duration: Option<String>,
    assume_role_source_identity: Option<String>,
    assume_role_session_tags: Option<String>,
    json_keys: Option<String>,
    encoding: Option<String>,
    certificate_format: Option<String>,
    certificate_password_file: Option<String>,
    bulk: RawBulk,
}

#[derive(Debug, Default)]
struct RawJmes {
    path: Option<String>,
    alias: Option<String>,
    file_permission: Option<String>,
    encoding: Option<String>,
    non_string_json: Option<String>,
    certificate_format: Option<String>,
    certificate_password_file: Option<String>,
}

#[derive(Debug, Default)]
struct RawFailover {
    name: Option<String>,
    version: Option<String>,
    version_label: Option<String>,
}

/// Parses and validates the `objects` parameter. Entries are validated one
/// at a time in list order and the first failure is returned; file-name
/// collisions are checked across the whole list afterwards. The size of the
/// text, its YAML structure, the number of files and the length of every
/// field are bounded by `rules.limits` before anything else is looked at.
pub fn parse_objects(text: &str, rules: &ObjectRules) -> Result<Vec<ObjectSpec>, ObjectError> {
    let limits = &rules.limits;
    limits.check(Limit::ObjectsBytes, text.len() as u64, || "objects".to_string())?;
    yaml::prescan(text, &yaml::Bounds::of("objects", limits)).map_err(ObjectError::Yaml)?;
    // Aliases expanded and merge keys (`<<: *defaults`) applied, as the Go
    // provider's YAML reader does; what they expand to was measured by the
    // pre-scan.
    let doc: Value = yaml::load(text).map_err(ObjectError::Load)?;
    let items = match doc {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items,
        other => {
            return Err(ObjectError::Load(format!(
                "objects must be a list, found {}",
                kind_name(&other)
            )));
        }
    };
    if items.is_empty() {
        return Err(ObjectError::NoObjects);
    }
    limits.check(Limit::Files, items.len() as u64, || "objects".to_string())?;

    let mut objects: Vec<ObjectSpec> = Vec::with_capacity(items.len());
    let mut seen = Seen::default();
    let mut files = 0usize;
    // Each entry's values are dropped once it is read.
    for (index, item) in items.into_iter().enumerate() {
        let raw = match item {
            Value::Null => return Err(ObjectError::EmptyEntry),
            Value::Mapping(m) => read_object(&m, index, limits)?,
            other => {
                return Err(ObjectError::Load(format!(
                    "objects[{index}] must be a mapping, found {}",
                    kind_name(&other)
                )));
            }
        };
        files += 1 + raw.jmes.len();
        limits.check(Limit::Files, files as u64, || {
            format!("objects[0..={index}] with their jmesPath entries")
        })?;
        let spec = validate_object(raw, rules)?;
        seen.check(&spec)?;
        objects.push(spec);
    }
    check_file_collisions(&objects)?;
    check_password_files(&objects)?;
    Ok(objects)
}

fn validate_object(mut raw: RawObject, rules: &ObjectRules) -> Result<ObjectSpec, ObjectError> {
    if raw.bulk.is_set() {
        return validate_bulk(raw, rules);
    }
    let name = raw.name.take().ok_or(ObjectError::MissingName)?;
    for (set, field) in [
        (raw.bulk.recursive.is_some(), bulk::keys::RECURSIVE),
        (raw.bulk.allow_empty.is_some(), bulk::keys::ALLOW_EMPTY),
    ] {
        if set {
            return Err(BulkError::OnlyForSets { what: name, field }.into());
        }
    }
    raw.bulk = RawBulk::default();
    let (assume_role, json_keys, object_encoding) = shared_fields(&raw, &name)?;
    let kind = object_kind(&name, raw.object_type.as_deref())?;
    if kind == ObjectKind::Acm {
        check_acm(&raw, &name)?;
    }

    let mode = match &raw.file_permission {
        Some(p) => parse_file_permission(p)?,
        None => rules.default_mode,
    };

    if kind == ObjectKind::Ssm && raw.version.is_some() && raw.version_label.is_some() {
        return Err(ObjectError::SsmBothVersions(name));
    }
    if kind == ObjectKind::SecretsManager && raw.version.is_some() && raw.version_label.is_some() {
        tracing::warn!(
            object = %Echo(&name),
            "objectVersion and objectVersionLabel are both set; Secrets Manager rejects the \
             request unless the version carries that label"
        );
    }

    let mut jmes = Vec::with_capacity(raw.jmes.len());
    for entry in raw.jmes {
        let path = entry.path.ok_or(ObjectError::JmesMissingPath)?;
        let alias = entry.alias.ok_or(ObjectError::JmesMissingAlias)?;
        let path = compile_jmes(&path, &name, &rules.limits)?;
        let jmes_mode = match &entry.file_permission {
            Some(p) => parse_file_permission(p)?,
            None => mode,
        };
        let file = rules.translation.file_name(&alias);
        check_file_name(&file, &name)?;
        let non_string_json = match entry.non_string_json.as_deref() {
            None | Some("") => false,
            Some(v) => super::parse_go_bool(v).ok_or_else(|| ObjectError::NonStringBool {
                object: name.clone(),
                value: v.to_string(),
            })?,
        };
        let certificate = certificate_spec(
            entry.certificate_format.as_deref(),
            entry.certificate_password_file,
            &name,
            &file,
        )?;
        jmes.push(JmesSpec {
            path,
            alias,
            mode: jmes_mode,
            file,
            encoding: encoding(entry.encoding.as_deref(), &name)?,
            non_string_json,
            certificate,
        });
    }

    let failover = match raw.failover {
        Some(f) if f.name.is_some() => {
            let fname = f.name.unwrap_or_default();
            if raw.alias.is_none() {
                return Err(ObjectError::FailoverNeedsAlias(name));
            }
            if !rules.has_failover_region {
                return Err(ObjectError::FailoverNeedsRegion(name));
            }
            let fkind = object_kind(&fname, raw.object_type.as_deref())?;
            if fkind != kind {
                return Err(ObjectError::TypeMismatch(fname));
            }
            if kind == ObjectKind::Ssm && f.version.is_some() && f.version_label.is_some() {
                return Err(ObjectError::SsmBothVersions(fname));
            }
            if f.version != raw.version {
                return Err(ObjectError::FailoverVersionMismatch(name));
            }
            Some(FailoverSpec {
                name: fname,
                version: f.version.or_else(|| raw.version.clone()),
                version_label: f.version_label.or_else(|| raw.version_label.clone()),
            })
        }
        _ => None,
    };

    let base = raw.alias.as_deref().unwrap_or(&name);
    let file = rules.translation.file_name(base);
    check_file_name(&file, &name)?;
    let certificate = match kind {
        // An ACM export is a PEM bundle of the certificate, its chain and
        // the decrypted key.
        ObjectKind::Acm => Some(CertificateSpec::new(Format::Pem, Chain::Given, None, &file)),
        _ => certificate_spec(
            raw.certificate_format.as_deref(),
            raw.certificate_password_file.take(),
            &name,
            &file,
        )?,
    };
    if certificate.is_some() && json_keys {
        return Err(ObjectError::CertificateWithJsonKeys(name));
    }

    Ok(ObjectSpec {
        name,
        kind,
        alias: raw.alias,
        version: raw.version,
        version_label: raw.version_label,
        mode,
        file,
        jmes,
        failover,
        assume_role,
        json_keys,
        encoding: object_encoding,
        bulk: None,
        certificate,
    })
}

/// The fields an ACM object refuses: ACM has no versions to select, and
/// its value is always a certificate with its key. Its name must be a
/// certificate ARN.
fn check_acm(raw: &RawObject, name: &str) -> Result<(), ObjectError> {
    if !arn::is_certificate_arn(name) {
        return Err(ObjectError::AcmNeedsArn(name.to_string()));
    }
    for (set, field) in [
        (raw.version.is_some(), "objectVersion"),
        (raw.version_label.is_some(), "objectVersionLabel"),
        (!raw.jmes.is_empty(), "jmesPath"),
        (raw.json_keys.is_some(), "jsonKeysAsFiles"),
        (raw.encoding.is_some(), "objectEncoding"),
        (raw.certificate_format.is_some(), "certificateFormat"),
        (raw.certificate_password_file.is_some(), "certificatePasswordFile"),
    ] {
        if set {
            return Err(ObjectError::AcmField {
                object: name.to_string(),
                field,
            });
        }
    }
    if let Some(f) = raw.failover.as_ref().and_then(|f| f.name.as_deref())
        && !arn::is_certificate_arn(f)
    {
        return Err(ObjectError::AcmNeedsArn(f.to_string()));
    }
    Ok(())
}

/// Every `certificatePasswordFile` names a file of the mount known before
/// fetching (an object's or a `jmesPath` entry's), which is not itself one
/// of a certificate's files.
fn check_password_files(objects: &[ObjectSpec]) -> Result<(), ObjectError> {
    let certificates = || {
        objects.iter().flat_map(|o| {
            o.certificate
                .iter()
                .chain(o.jmes.iter().filter_map(|j| j.certificate.as_ref()))
                .map(move |c| (o, c))
        })
    };
    for (object, c) in certificates() {
        let Some(file) = &c.password_file else { continue };
        let error = |e: fn(String, String) -> ObjectError| e(object.name.clone(), file.clone());
        if certificates().any(|(_, other)| other.files.contains(file)) {
            return Err(error(|object, file| ObjectError::PasswordFileIsCertificate {
                object,
                file,
            }));
        }
        if !static_files(objects).any(|(f, _)| f == file) {
            return Err(error(|object, file| ObjectError::PasswordFileUnknown { object, file }));
        }
    }
    Ok(())
}

/// The fields every object has, one or many: `assumeRole*`,
/// `jsonKeysAsFiles` and `objectEncoding`.
fn shared_fields(raw: &RawObject, name: &str) -> Result<(Option<AssumeRole>, bool, Encoding), ObjectError> {
    let assume_role = role::parse(
        Owner::Object(name.to_string()),
        role::Fields {
            arn: raw.assume_role_arn.as_deref(),
            external_id: raw.assume_role_external_id.as_deref(),
            duration: raw.assume_role_duration.as_deref(),
            source_identity: raw.assume_role_source_identity.as_deref(),
            session_tags: raw.assume_role_session_tags.as_deref(),
        },
    )?;
    let json_keys = match raw.json_keys.as_deref() {
        None | Some("") => false,
        Some(v) => super::parse_go_bool(v).ok_or_else(|| ObjectError::JsonKeysBool {
            object: name.to_string(),
            value: v.to_string(),
        })?,
    };
    Ok((assume_role, json_keys, encoding(raw.encoding.as_deref(), name)?))
}

/// An object that selects many: the bulk fields, and the fields an object
/// shares with them (mode, role, `jsonKeysAsFiles`, alias).
fn validate_bulk(mut raw: RawObject, rules: &ObjectRules) -> Result<ObjectSpec, ObjectError> {
    if raw.name.is_some() {
        let field = if raw.bulk.parameter_path.is_some() {
            bulk::keys::PARAMETER_PATH
        } else if raw.bulk.prefix.is_some() {
            bulk::keys::SECRET_NAME_PREFIX
        } else {
            bulk::keys::SECRET_FILTERS
        };
        let what = raw.name.unwrap_or_default();
        return Err(BulkError::WithName { what, field }.into());
    }
    let mut refused = Vec::new();
    for (set, field) in [
        (raw.version.is_some(), "objectVersion"),
        (raw.version_label.is_some(), "objectVersionLabel"),
        (raw.failover.is_some(), "failoverObject"),
        (!raw.jmes.is_empty(), "jmesPath"),
        (raw.certificate_format.is_some(), "certificateFormat"),
        (raw.certificate_password_file.is_some(), "certificatePasswordFile"),
    ] {
        if set {
            refused.push(field);
        }
    }
    let spec = bulk::validate(
        std::mem::take(&mut raw.bulk),
        raw.object_type.as_deref(),
        raw.alias.clone(),
        &refused,
        rules.translation,
    )?;
    let name = spec.describe();
    let mode = match &raw.file_permission {
        Some(p) => parse_file_permission(p)?,
        None => rules.default_mode,
    };
    let (assume_role, json_keys, object_encoding) = shared_fields(&raw, &name)?;
    let file = match &raw.alias {
        Some(alias) => {
            let file = rules.translation.file_name(alias);
            check_file_name(&file, &name)?;
            file
        }
        None => String::new(),
    };
    let kind = match spec.selection {
        bulk::Selection::Parameters { .. } => ObjectKind::Ssm,
        bulk::Selection::Secrets { .. } => ObjectKind::SecretsManager,
    };
    Ok(ObjectSpec {
        name,
        kind,
        alias: raw.alias,
        version: None,
        version_label: None,
        mode,
        file,
        jmes: Vec::new(),
        failover: None,
        assume_role,
        json_keys,
        encoding: object_encoding,
        bulk: Some(spec),
        certificate: None,
    })
}

/// The type rules of an object name: ARN syntax, type inference from the ARN
/// service, and agreement between `objectType` and the ARN. The ARN's region
/// is checked later, once the region is resolved ([`check_arn_regions`]).
fn object_kind(name: &str, object_type: Option<&str>) -> Result<ObjectKind, ObjectError> {
    let parsed = if arn::is_arn(name) {
        Some(arn::parse(name).ok_or_else(|| ObjectError::InvalidArn(name.to_string()))?)
    } else {
        None
    };
    match (object_type, parsed) {
        (None, None) => Err(ObjectError::TypeRequired(name.to_string())),
        (None, Some(a)) => {
            arn::kind_of_service(a.service).ok_or_else(|| ObjectError::InvalidService(a.service.to_string()))
        }
        (Some(t), parsed) => {
            let kind = arn::kind_of_object_type(t).ok_or_else(|| ObjectError::InvalidType(t.to_string()))?;
            if let Some(a) = parsed
                && arn::kind_of_service(a.service) != Some(kind)
            {
                return Err(ObjectError::TypeMismatch(name.to_string()));
            }
            Ok(kind)
        }
    }
}

/// Checks that every ARN names the region it will be fetched from: object
/// names against the primary region, failover names against the failover
/// region.
pub fn check_arn_regions(objects: &[ObjectSpec], primary: &str, failover: Option<&str>) -> Result<(), ObjectError> {
    for o in objects {
        check_arn_region(&o.name, primary)?;
        if let (Some(f), Some(region)) = (&o.failover, failover) {
            check_arn_region(&f.name, region)?;
        }
    }
    Ok(())
}

fn check_arn_region(name: &str, region: &str) -> Result<(), ObjectError> {
    match arn::parse(name) {
        Some(a) if a.region != region => Err(ObjectError::ArnRegion {
            region: region.to_string(),
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// `filePermission`: four octal digits, no setuid/setgid/sticky bits.
pub fn parse_file_permission(p: &str) -> Result<u32, ObjectError> {
    let valid = p.len() == 4 && p.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(p, 8) {
        Ok(mode) if valid && mode <= 0o777 => Ok(mode),
        _ => Err(ObjectError::InvalidPermission(p.to_string())),
    }
}

fn check_file_name(file: &str, object: &str) -> Result<(), ObjectError> {
    match paths::check_relative_path(file) {
        Ok(()) => Ok(()),
        Err(PathRule::Traversal) => Err(ObjectError::Traversal(file.to_string())),
        Err(rule) => Err(ObjectError::InvalidFileName {
            file: file.to_string(),
            object: object.to_string(),
            rule,
        }),
    }
}

/// The reference's duplicate rules, in its order: a repeated object name
/// with the same alias and label, a repeated alias, a JMES alias already
/// used. Each check is one hash lookup.
#[derive(Default)]
struct Seen {
    objects: HashSet<(String, Option<String>, Option<String>)>,
    aliases: HashSet<String>,
}

impl Seen {
    fn check(&mut self, spec: &ObjectSpec) -> Result<(), ObjectError> {
        let key = (spec.name.clone(), spec.alias.clone(), spec.version_label.clone());
        if !self.objects.insert(key) {
            return Err(ObjectError::DuplicateName(spec.name.clone()));
        }
        if let Some(alias) = &spec.alias
            && !self.aliases.insert(alias.clone())
        {
            return Err(ObjectError::DuplicateAlias(alias.clone()));
        }
        for j in &spec.jmes {
            if !self.aliases.insert(j.alias.clone()) {
                return Err(ObjectError::DuplicateJmesAlias {
                    alias: j.alias.clone(),
                    path: j.path.as_str().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A `jmesPath` expression of object `name`, compiled under the limits.
fn compile_jmes(path: &str, name: &str, limits: &Limits) -> Result<JmesPath, ObjectError> {
    let subject = || format!("object {}, jmesPath {}", echo(name), echo(path));
    jmes::compile(path, limits).map_err(|e| match e {
        CompileError::Syntax => ObjectError::JmesInvalidPath(path.to_string()),
        CompileError::Length(n) => limit_error(limits, Limit::JmespathLength, n as u64, subject),
        CompileError::Depth(n) => limit_error(limits, Limit::JmespathDepth, n as u64, subject),
        CompileError::TreeDepth(depth) => ObjectError::JmesTreeDepth {
            object: name.to_string(),
            path: path.to_string(),
            depth,
        },
        CompileError::Work(n) => limit_error(limits, Limit::JmespathWork, n, || {
            format!("{} (whatever the secret's value)", subject())
        }),
    })
}

fn limit_error(limits: &Limits, limit: Limit, found: u64, subject: impl FnOnce() -> String) -> ObjectError {
    ObjectError::Limit(LimitError {
        subject: subject(),
        limit,
        found,
        at_least: false,
        max: limit.max(limits),
    })
}

/// Final file names must be unique, and no file may sit where another needs
/// a directory (`a` and `a/b` with translation off).
fn check_file_collisions(objects: &[ObjectSpec]) -> Result<(), ObjectError> {
    match paths::find_collision(static_files(objects)) {
        None => Ok(()),
        Some(c) => Err(ObjectError::Collision(c)),
    }
}

/// The files of `objects` known before fetching, with the object that
/// writes each: objects' own files and `jmesPath` entries. A bulk object's
/// files are known once fetched, and a jsonKeysAsFiles object's file is a
/// directory of them (both checked in render).
pub fn static_files(objects: &[ObjectSpec]) -> impl Iterator<Item = (&str, &str)> {
    objects.iter().flat_map(|o| {
        let own: Vec<&str> = match (&o.certificate, o.bulk.is_none() && !o.json_keys) {
            (Some(c), _) => c.files.iter().map(String::as_str).collect(),
            (None, true) => vec![o.file.as_str()],
            (None, false) => Vec::new(),
        };
        own.into_iter()
            .chain(o.jmes.iter().flat_map(|j| match &j.certificate {
                Some(c) => c.files.iter().map(String::as_str).collect::<Vec<_>>(),
                None => vec![j.file.as_str()],
            }))
            .map(move |f| (f, o.name.as_str()))
    })
}

// === YAML field extraction ===

fn read_object(m: &Mapping, index: usize, limits: &Limits) -> Result<RawObject, ObjectError> {
    let mut raw = RawObject::default();
    for (k, v) in m {
        let Some(key) = k.as_str() else { continue };
        let field = |name: &str| format!("objects[{index}].{name}");
        let name = |f: &str| scalar(v, &field(f), limits);
        match key.to_ascii_lowercase().as_str() {
            "objectname" => raw.name = name("objectName")?,
            "objecttype" => raw.object_type = name("objectType")?,
            "objectalias" => raw.alias = name("objectAlias")?,
            "objectversion" => raw.version = name("objectVersion")?,
            "objectversionlabel" => raw.version_label = name("objectVersionLabel")?,
            "filepermission" => raw.file_permission = permission_scalar(v, &field("filePermission"), limits)?,
            "jmespath" => raw.jmes = read_jmes(v, &field("jmesPath"), limits)?,
            "failoverobject" => raw.failover = read_failover(v, &field("failoverObject"), limits)?,
            "assumerolearn" => raw.assume_role_arn = name(role::keys::ARN)?,
            "assumeroleexternalid" => raw.assume_role_external_id = name(role::keys::EXTERNAL_ID)?,
            "assumeroledurationseconds" => raw.assume_role_duration = name(role::keys::DURATION)?,
            "assumerolesourceidentity" => raw.assume_role_source_identity = name(role::keys::SOURCE_IDENTITY)?,
            "assumerolesessiontags" => raw.assume_role_session_tags = name(role::keys::SESSION_TAGS)?,
            "jsonkeysasfiles" => raw.json_keys = name("jsonKeysAsFiles")?,
            "objectencoding" => raw.encoding = name("objectEncoding")?,
            "certificateformat" => raw.certificate_format = name("certificateFormat")?,
            "certificatepasswordfile" => raw.certificate_password_file = name("certificatePasswordFile")?,
            "parameterpath" => raw.bulk.parameter_path = name(bulk::keys::PARAMETER_PATH)?,
            "recursive" => raw.bulk.recursive = name(bulk::keys::RECURSIVE)?,
            "secretnameprefix" => raw.bulk.prefix = name(bulk::keys::SECRET_NAME_PREFIX)?,
            "secretfilters" => {
                raw.bulk.filters =
                    bulk::read_filters(v, &field(bulk::keys::SECRET_FILTERS), limits).map_err(ObjectError::Load)?
            }
            "allowempty" => raw.bulk.allow_empty = name(bulk::keys::ALLOW_EMPTY)?,
            _ => {}
        }
    }
    Ok(raw)
}

fn read_jmes(v: &Value, field: &str, limits: &Limits) -> Result<Vec<RawJmes>, ObjectError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => {
            return Err(ObjectError::Load(format!(
                "{field} must be a list, found {}",
                kind_name(other)
            )));
        }
    };
    limits.check(Limit::Files, items.len() as u64 + 1, || field.to_string())?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut raw = RawJmes::default();
        match item {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(key) = k.as_str() else { continue };
                    let f = |name: &str| format!("{field}[{i}].{name}");
                    match key.to_ascii_lowercase().as_str() {
                        // The expression has its own length limit.
                        "path" => raw.path = text(v, &f("path"))?,
                        "objectalias" => raw.alias = scalar(v, &f("objectAlias"), limits)?,
                        "filepermission" => raw.file_permission = permission_scalar(v, &f("filePermission"), limits)?,
                        "objectencoding" => raw.encoding = scalar(v, &f("objectEncoding"), limits)?,
                        "nonstringasjson" => raw.non_string_json = scalar(v, &f("nonStringAsJson"), limits)?,
                        "certificateformat" => raw.certificate_format = scalar(v, &f("certificateFormat"), limits)?,
                        "certificatepasswordfile" => {
                            raw.certificate_password_file = scalar(v, &f("certificatePasswordFile"), limits)?
                        }
                        _ => {}
                    }
                }
            }
            other => {
                return Err(ObjectError::Load(format!(
                    "{field}[{i}] must be a mapping, found {}",
                    kind_name(other)
                )));
            }
        }
        out.push(raw);
    }
    Ok(out)
}

fn read_failover(v: &Value, field: &str, limits: &Limits) -> Result<Option<RawFailover>, ObjectError> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::Mapping(m) => m,
        other => {
            return Err(ObjectError::Load(format!(
                "{field} must be a mapping, found {}",
                kind_name(other)
            )));
        }
    };
    let mut raw = RawFailover::default();
    for (k, v) in m {
        let Some(key) = k.as_str() else { continue };
        let f = |name: &str| format!("{field}.{name}");
        match key.to_ascii_lowercase().as_str() {
            "objectname" => raw.name = scalar(v, &f("objectName"), limits)?,
            "objectversion" => raw.version = scalar(v, &f("objectVersion"), limits)?,
            "objectversionlabel" => raw.version_label = scalar(v, &f("objectVersionLabel"), limits)?,
            _ => {}
        }
    }
    Ok(Some(raw))
}

/// A name-like scalar (a name, alias, version, label, type): a string of
/// at most `--max-name-length` bytes; empty and null mean "not set".
pub(super) fn scalar(v: &Value, field: &str, limits: &Limits) -> Result<Option<String>, ObjectError> {
    let s = text(v, field)?;
    if let Some(s) = &s {
        limits.check(Limit::NameLength, s.len() as u64, || field.to_string())?;
    }
    Ok(s)
}

/// A scalar as a string; empty and null mean "not set".
fn text(v: &Value, field: &str) -> Result<Option<String>, ObjectError> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(ObjectError::Load(format!(
                "{field} must be a string, found {}",
                kind_name(other)
            )));
        }
    };
    Ok(if s.is_empty() { None } else { Some(s) })
}

/// `filePermission` written as an unquoted number (`0600` reads as 600):
/// restore the four-digit form.
pub(super) fn permission_scalar(v: &Value, field: &str, limits: &Limits) -> Result<Option<String>, ObjectError> {
    match v {
        Value::Number(n) if n.is_u64() => Ok(Some(format!("{n:0>4}"))),
        _ => scalar(v, field, limits),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ObjectRules {
        ObjectRules {
            has_failover_region: true,
            ..ObjectRules::default()
        }
    }

    fn parse(yaml: &str) -> Result<Vec<ObjectSpec>, ObjectError> {
        parse_objects(yaml, &rules())
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
        let o = parse("- OBJECTNAME: s\n  ObjectType: secretsmanager\n  objectalias: a\n  colour: blue\n").unwrap();
        assert_eq!(o[0].name, "s");
        assert_eq!(o[0].kind, ObjectKind::SecretsManager);
        assert_eq!(o[0].file, "a");
    }

    #[test]
    fn the_last_spelling_of_a_key_wins() {
        let o = parse("- objectName: first\n  ObjectName: second\n  objectType: secretsmanager\n").unwrap();
        assert_eq!(o[0].name, "second");
    }

    #[test]
    fn yaml_scalars_are_read_as_strings() {
        let o = parse("- objectName: 12345\n  objectType: ssmparameter\n  objectVersion: 3\n").unwrap();
        assert_eq!(o[0].name, "12345");
        assert_eq!(o[0].version.as_deref(), Some("3"));
        assert_eq!(o[0].ssm_selector(), "12345:3");
        let o = parse("- objectName: flag\n  objectType: ssmparameter\n  objectVersionLabel: true\n").unwrap();
        assert_eq!(o[0].ssm_selector(), "flag:true");
    }

    #[test]
    fn unquoted_file_permissions_keep_their_four_digits() {
        let o = parse("- objectName: s\n  objectType: secretsmanager\n  filePermission: 0600\n").unwrap();
        assert_eq!(o[0].mode, 0o600);
        let o = parse("- objectName: s\n  objectType: secretsmanager\n  filePermission: \"0440\"\n").unwrap();
        assert_eq!(o[0].mode, 0o440);
    }

    #[test]
    fn a_json_list_is_accepted() {
        let o = parse(r#"[{"objectName": "s", "objectType": "secretsmanager"}, {"objectName": "p", "objectType": "ssmparameter"}]"#)
            .unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].kind, ObjectKind::Ssm);
    }

    #[test]
    fn arn_without_object_type_infers_the_type_including_ssm_service() {
        let o =
            parse("- objectName: arn:aws:ssm:us-west-2:123456789012:parameter/app/db\n  objectAlias: db\n").unwrap();
        assert_eq!(o[0].kind, ObjectKind::Ssm);
        let o = parse("- objectName: arn:aws:secretsmanager:us-west-2:123456789012:secret:x-AbC\n").unwrap();
        assert_eq!(o[0].kind, ObjectKind::SecretsManager);
        assert_eq!(
            o[0].file, "arn:aws:secretsmanager:us-west-2:123456789012:secret:x-AbC",
            "an ARN names its file as-is"
        );
    }

    #[test]
    fn same_object_with_different_aliases_or_labels_is_allowed() {
        let o = parse(
            "- objectName: s\n  objectType: secretsmanager\n  objectVersionLabel: AWSCURRENT\n  objectAlias: cur\n\
             - objectName: s\n  objectType: secretsmanager\n  objectVersionLabel: AWSPREVIOUS\n  objectAlias: prev\n",
        )
        .unwrap();
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn failover_object_inherits_the_primary_version_fields() {
        let o = parse(
            "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n  objectVersionLabel: AWSCURRENT\n  failoverObject:\n    objectName: t\n",
        )
        .unwrap();
        let f = o[0].failover.as_ref().unwrap();
        assert_eq!(f.name, "t");
        assert_eq!(f.version_label.as_deref(), Some("AWSCURRENT"));
    }

    #[test]
    fn an_empty_failover_object_is_ignored() {
        let o =
            parse("- objectName: s\n  objectType: secretsmanager\n  failoverObject:\n    objectVersion: v\n").unwrap();
        assert!(o[0].failover.is_none());
    }

    #[test]
    fn jmes_files_are_translated_like_object_names() {
        let o = parse(
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a.b\n      objectAlias: dir/key\n",
        )
        .unwrap();
        assert_eq!(o[0].jmes[0].file, "dir_key");
        assert_eq!(o[0].jmes[0].mode, 0o644);
    }

    #[test]
    fn file_permission_rejects_special_bits_and_bad_syntax() {
        assert_eq!(parse_file_permission("0777").unwrap(), 0o777);
        assert_eq!(parse_file_permission("0000").unwrap(), 0);
        for bad in ["1777", "2755", "4755", "777", "07777", "0o644", "abcd", "", "08 0"] {
            assert!(parse_file_permission(bad).is_err(), "{bad}");
        }
    }
}
