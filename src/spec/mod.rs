//! Parsing and validating a `MountRequest`: attributes, parameters, tokens,
//! permission and objects. Everything here is pure: no Kubernetes or AWS
//! call happens before a request has passed all of it.

pub mod arn;
pub mod bulk;
pub mod objects;
pub mod paths;
pub mod role;
pub mod templates;
pub mod yaml;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::limits::{Echo, LimitError, Limits};
use crate::region::{self, RegionError, Regions};
use crate::secret::SecretString;
pub use objects::{FailoverSpec, JmesSpec, ObjectRules, ObjectSpec};
pub use paths::{PathRule, PathTranslation};
pub use role::{AssumeRole, RoleError};
pub use templates::TemplateSpec;
pub use yaml::YamlError;

/// Attribute keys set by the kubelet and the driver.
pub mod keys {
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
    pub const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    pub const OBJECTS: &str = "objects";
    pub const REGION: &str = "region";
    pub const FAILOVER_REGION: &str = "failoverRegion";
    pub const PATH_TRANSLATION: &str = "pathTranslation";
    pub const USE_POD_IDENTITY: &str = "usePodIdentity";
    pub const PREFERRED_ADDRESS_TYPE: &str = "preferredAddressType";
}

/// Token audience for IRSA.
pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
/// Token audience for EKS Pod Identity.
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";

/// Where an object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    SecretsManager,
    Ssm,
    /// An ACM certificate, exported with its private key.
    Acm,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::SecretsManager => "secretsmanager",
            ObjectKind::Ssm => "ssmparameter",
            ObjectKind::Acm => "acm",
        }
    }
}

/// Which EKS Pod Identity Agent address to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPreference {
    /// IPv4, falling back to IPv6 when IPv4 cannot connect.
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

/// How the pod's AWS identity is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// IAM Roles for Service Accounts (the default).
    Irsa,
    /// EKS Pod Identity.
    PodIdentity(AddressPreference),
}

impl AuthMode {
    pub fn audience(self) -> &'static str {
        match self {
            AuthMode::Irsa => IRSA_AUDIENCE,
            AuthMode::PodIdentity(_) => POD_IDENTITY_AUDIENCE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Irsa => "irsa",
            AuthMode::PodIdentity(_) => "pod-identity",
        }
    }
}

/// The pod a mount is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub service_account: Option<String>,
}

impl PodInfo {
    /// The pod's namespace and name, or the attribute that is missing.
    pub fn namespace_and_name(&self) -> Result<(&str, &str), &'static str> {
        let namespace = self.namespace.as_deref().ok_or(keys::POD_NAMESPACE)?;
        let name = self.name.as_deref().ok_or(keys::POD_NAME)?;
        Ok((namespace, name))
    }
}

/// A fully validated mount request.
#[derive(Debug)]
pub struct MountSpec {
    pub target_path: PathBuf,
    pub pod: PodInfo,
    pub auth: AuthMode,
    /// The token for `auth`'s audience.
    pub token: SecretString,
    /// SPC `region`, if set.
    pub region: Option<String>,
    /// SPC `failoverRegion`, if set.
    pub failover_region: Option<String>,
    pub translation: PathTranslation,
    pub default_mode: u32,
    pub objects: Vec<ObjectSpec>,
    /// Files rendered from the objects' files (`templates`).
    pub templates: Vec<TemplateSpec>,
}

/// Bytes a validated object holds beyond its text: the structure, its
/// strings' allocations, a compiled JMESPath program per entry (its syntax
/// tree: a few hundred bytes per node, at most one node per byte of the
/// expression).
const OBJECT_OVERHEAD: u64 = 1024;
const JMES_BYTES_PER_BYTE: u64 = 256;

impl MountSpec {
    /// An upper bound of what the validated class holds, in bytes: its
    /// objects with their JMESPath programs, and its compiled templates.
    pub fn estimated_bytes(&self) -> u64 {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len) as u64;
        let objects: u64 = self
            .objects
            .iter()
            .map(|o| {
                let jmes: u64 = o
                    .jmes
                    .iter()
                    .map(|j| {
                        OBJECT_OVERHEAD
                            + (j.alias.len() + j.file.len()) as u64
                            + j.path.as_str().len() as u64 * JMES_BYTES_PER_BYTE
                    })
                    .sum();
                OBJECT_OVERHEAD
                    + (o.name.len() + o.file.len()) as u64
                    + text(&o.alias)
                    + text(&o.version)
                    + text(&o.version_label)
                    + jmes
            })
            .sum();
        let templates: u64 = self.templates.iter().map(|t| t.template.compiled_bytes()).sum();
        OBJECT_OVERHEAD + objects + templates
    }
}

/// A request that is malformed or names invalid parameters. User input is
/// echoed truncated ([`Echo`]).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("Missing mount path")]
    MissingTargetPath,
    #[error("target path {} is not an absolute path", Echo(.0))]
    RelativeTargetPath(String),
    #[error("failed to unmarshal attributes, error: {0}")]
    Attributes(String),
    #[error("failed to unmarshal secrets, error: {0}")]
    Secrets(String),
    #[error(
        "CSI token error: serviceAccount.tokens not provided - ensure tokenRequests is configured in CSIDriver spec"
    )]
    TokensMissing,
    #[error("failed to parse serviceAccount.tokens: {0}")]
    TokensInvalid(String),
    #[error(
        "Pod Identity token extraction failed: token for audience \"{POD_IDENTITY_AUDIENCE}\" not found - ensure tokenRequests includes this audience in CSIDriver"
    )]
    PodIdentityTokenMissing,
    #[error(
        "IRSA token extraction failed: token for audience \"{IRSA_AUDIENCE}\" not found - ensure tokenRequests includes this audience in CSIDriver"
    )]
    IrsaTokenMissing,
    #[error("{mode} token extraction failed: token for audience \"{audience}\" is empty")]
    TokenEmpty { mode: &'static str, audience: &'static str },
    #[error("failed to unmarshal file permission, error: {0}")]
    Permission(String),
    #[error("pathTranslation must be either 'False' or a single character string")]
    PathTranslation,
    #[error("failed to parse usePodIdentity value, error: strconv.ParseBool: parsing {:?}: invalid syntax", Echo(.0).to_string())]
    UsePodIdentity(String),
    #[error("invalid preferred address type: {}", Echo(.0))]
    AddressType(String),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
}

/// An invalid entry of the `objects` parameter. User input is echoed
/// truncated ([`Echo`]).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("Failed to load SecretProviderClass: {0}")]
    Load(String),
    #[error("Failed to load SecretProviderClass: {0}")]
    Yaml(YamlError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("no objects to mount: the SecretProviderClass parameter 'objects' is missing or an empty list")]
    NoObjects,
    #[error("Empty descriptor entry in SecretProviderClass")]
    EmptyEntry,
    #[error("Object name must be specified")]
    MissingName,
    #[error("jsonKeysAsFiles of object {} must be true or false: {}", Echo(.object), Echo(.value))]
    JsonKeysBool { object: String, value: String },
    #[error("objectEncoding of object {} must be utf-8, base64 or hex: {}", Echo(.object), Echo(.value))]
    InvalidEncoding { object: String, value: String },
    #[error("nonStringAsJson of a jmesPath entry of object {} must be true or false: {}", Echo(.object), Echo(.value))]
    NonStringBool { object: String, value: String },
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Bulk(#[from] bulk::BulkError),
    #[error("Invalid ARN format in object name: {}", Echo(.0))]
    InvalidArn(String),
    #[error("ARN region must match region {}: {}", Echo(.region), Echo(.name))]
    ArnRegion { region: String, name: String },
    #[error("Must use objectType when a full ARN is not specified: {}", Echo(.0))]
    TypeRequired(String),
    #[error("Invalid service in ARN: {}", Echo(.0))]
    InvalidService(String),
    #[error("Invalid objectType: {}", Echo(.0))]
    InvalidType(String),
    #[error("objectType does not match ARN: {}", Echo(.0))]
    TypeMismatch(String),
    #[error("Invalid File Permission: {}", Echo(.0))]
    InvalidPermission(String),
    #[error("ssm parameters can not specify both objectVersion and objectVersionLabel: {}", Echo(.0))]
    SsmBothVersions(String),
    #[error("Path must be specified for JMES object")]
    JmesMissingPath,
    #[error("Object alias must be specified for JMES object")]
    JmesMissingAlias,
    #[error("Invalid JMES Path: {}.", Echo(.0))]
    JmesInvalidPath(String),
    #[error(
        "object {}, jmesPath {}: {depth} levels of operators, more than the {} the evaluator allows; split the expression",
        Echo(.object),
        Echo(.path),
        crate::jmes::MAX_TREE_DEPTH
    )]
    JmesTreeDepth { object: String, path: String, depth: usize },
    #[error("object alias must be specified for objects with failover entries: {}", Echo(.0))]
    FailoverNeedsAlias(String),
    #[error("failover object allowed only when failover region is defined: {}", Echo(.0))]
    FailoverNeedsRegion(String),
    #[error("object versions must match between primary and failover regions: {}", Echo(.0))]
    FailoverVersionMismatch(String),
    #[error("path can not contain ../: {}", Echo(.0))]
    Traversal(String),
    #[error("invalid file name \"{}\" for object {}: {rule}", Echo(.file), Echo(.object))]
    InvalidFileName {
        file: String,
        object: String,
        rule: PathRule,
    },
    #[error("found descriptor with duplicate object name {}", Echo(.0))]
    DuplicateName(String),
    #[error("found duplicate object alias {}", Echo(.0))]
    DuplicateAlias(String),
    #[error(
        "Name already in use for objectAlias: found duplicate object alias {} in JMES path entry {}",
        Echo(.alias),
        Echo(.path)
    )]
    DuplicateJmesAlias { alias: String, path: String },
    #[error(transparent)]
    Collision(#[from] paths::Collision),
    #[error("certificateFormat of object {} must be pem or pkcs12: {}", Echo(.object), Echo(.value))]
    InvalidCertificateFormat { object: String, value: String },
    #[error("{field} of object {} needs certificateFormat", Echo(.object))]
    PasswordWithoutFormat { object: String, field: &'static str },
    #[error("object {}: certificateFormat and jsonKeysAsFiles exclude each other", Echo(.0))]
    CertificateWithJsonKeys(String),
    #[error(
        "certificatePasswordFile {} of object {} is not a file of this mount (name the file of another object or jmesPath entry, as templates do)",
        Echo(.file),
        Echo(.object)
    )]
    PasswordFileUnknown { object: String, file: String },
    #[error(
        "certificatePasswordFile {} of object {} names a file that is itself a certificate's",
        Echo(.file),
        Echo(.object)
    )]
    PasswordFileIsCertificate { object: String, file: String },
    #[error(
        "object {}: an ACM object is named by its certificate ARN (arn:<partition>:acm:<region>:<account>:certificate/<id>)",
        Echo(.0)
    )]
    AcmNeedsArn(String),
    #[error("object {}: {field} does not apply to an ACM certificate", Echo(.object))]
    AcmField { object: String, field: &'static str },
}

#[derive(Deserialize)]
struct TokenEntry {
    token: Option<String>,
}

/// A request's attributes and secrets, read: the first, cheap step of
/// parsing (the JSON maps). What the rest costs is then known in two more
/// cheap steps: [`Attributes::scan_cost`] bounds what pre-scanning the YAML
/// of `objects` and `templates` holds, and once [`Attributes::scan`] has
/// run, [`Attributes::parse_cost`] bounds what parsing builds.
#[derive(Debug)]
pub struct Attributes {
    target: PathBuf,
    attrs: HashMap<String, String>,
    secrets: HashMap<String, String>,
    /// What building the rest allocates at its peak (bytes), once scanned.
    parse_cost: Option<u64>,
}

/// Bytes compiling a template allocates at its peak per byte of its text
/// (its tokens, syntax tree and instructions), measured with a counting
/// allocator (`spec::tests`); what it holds afterwards is
/// [`crate::template::COMPILED_FACTOR`].
pub const TEMPLATE_COMPILE_FACTOR: u64 = 64;

impl Attributes {
    /// The YAML parameters, when within their size limit (a larger one is
    /// refused before it is read).
    fn yaml(&self, key: &str, limits: &Limits) -> Option<&str> {
        self.attrs
            .get(key)
            .map(String::as_str)
            .filter(|t| t.len() <= limits.max_objects_bytes)
    }

    /// An upper bound of what pre-scanning `objects` and `templates` holds.
    pub fn scan_cost(&self, limits: &Limits) -> u64 {
        [keys::OBJECTS, templates::KEY]
            .iter()
            .filter_map(|k| self.yaml(k, limits))
            .map(yaml::scan_bytes)
            .sum()
    }

    /// Pre-scans `objects` and `templates` for what parsing them builds
    /// (problems are left to the parse, which reports them in their place).
    pub fn scan(&mut self, limits: &Limits) {
        let built = |key: &'static str| -> u64 {
            self.yaml(key, limits)
                .and_then(|t| yaml::prescan(t, &yaml::Bounds::of(key, limits)).ok())
                .map_or(0, |s| s.parse_bytes())
        };
        // The rest of the parse (the token map, the objects made of the
        // values) holds what the request and the class are charged for.
        let compile = self
            .yaml(templates::KEY, limits)
            .map_or(0, |t| t.len() as u64 * TEMPLATE_COMPILE_FACTOR);
        // Parsing scans again, then builds values (the scan's memory freed).
        let cost = self.scan_cost(limits).max(built(keys::OBJECTS) + built(templates::KEY)) + compile;
        self.parse_cost = Some(cost);
    }

    /// An upper bound of what parsing the rest allocates at its peak, once
    /// [`Attributes::scan`] has run.
    pub fn parse_cost(&self) -> u64 {
        self.parse_cost.unwrap_or_default()
    }

    /// Whether the rest is worth a blocking thread: templates compile
    /// there, and large classes parse there.
    pub fn heavy(&self, inline: u64) -> bool {
        self.parse_cost() > inline || self.attrs.contains_key(templates::KEY)
    }
}

/// Reads `attributes` and `secrets` (JSON maps) for a mount of
/// `target_path`: the first step of [`parse_request`], bounded by the
/// request's size. Problems of `objects` and `templates` are found by the
/// last step, in their place among the other rules.
pub fn read_attributes(attributes: &str, secrets: &str, target_path: &str) -> Result<Attributes, SpecError> {
    if target_path.is_empty() {
        return Err(SpecError::MissingTargetPath);
    }
    let target = PathBuf::from(target_path);
    if !target.is_absolute() {
        return Err(SpecError::RelativeTargetPath(target_path.to_string()));
    }
    let attrs: HashMap<String, String> =
        serde_json::from_str(attributes).map_err(|e| SpecError::Attributes(json_error(&e)))?;
    let secrets: HashMap<String, String> = if secrets.is_empty() {
        HashMap::new()
    } else {
        serde_json::from_str::<Option<HashMap<String, String>>>(secrets)
            .map_err(|e| SpecError::Secrets(json_error(&e)))?
            .unwrap_or_default()
    };
    Ok(Attributes {
        target,
        attrs,
        secrets,
        parse_cost: None,
    })
}

/// Parses and validates a request under `limits`: everything but the rules
/// that need the resolved region ([`check_regions`]). `attributes`, `secrets`
/// and the token map are never echoed into errors: their parse errors carry
/// positions only.
pub fn parse_request(
    attributes: &str,
    secrets: &str,
    target_path: &str,
    permission: &str,
    limits: &Limits,
) -> Result<MountSpec, SpecError> {
    parse_attributes(read_attributes(attributes, secrets, target_path)?, permission, limits)
}

/// The second step of [`parse_request`]: everything else.
pub fn parse_attributes(read: Attributes, permission: &str, limits: &Limits) -> Result<MountSpec, SpecError> {
    let Attributes {
        target, attrs, secrets, ..
    } = read;

    // The driver copies the token map into the attributes; with Kubernetes
    // >= 1.35 (serviceAccountTokenInSecrets) it also travels in `secrets`,
    // which serves as a fallback should a driver stop copying it.
    let mut tokens = parse_tokens(attrs.get(keys::TOKENS).or_else(|| secrets.get(keys::TOKENS)))?;

    let default_mode = parse_permission(permission)?;

    let get = |k: &str| attrs.get(k).filter(|v| !v.is_empty()).cloned();
    let translation = match get(keys::PATH_TRANSLATION) {
        None => PathTranslation::default(),
        Some(v) if v.eq_ignore_ascii_case("false") => PathTranslation::Off,
        Some(v) if v.len() == 1 => PathTranslation::Replace(v.chars().next().unwrap_or('_')),
        Some(_) => return Err(SpecError::PathTranslation),
    };
    let use_pod_identity = match attrs.get(keys::USE_POD_IDENTITY).map(String::as_str) {
        None | Some("") => false,
        Some(v) => parse_go_bool(v).ok_or_else(|| SpecError::UsePodIdentity(v.to_string()))?,
    };
    let address = match get(keys::PREFERRED_ADDRESS_TYPE) {
        None => AddressPreference::Auto,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "auto" => AddressPreference::Auto,
            "ipv4" => AddressPreference::Ipv4,
            "ipv6" => AddressPreference::Ipv6,
            _ => return Err(SpecError::AddressType(v)),
        },
    };
    let auth = if use_pod_identity {
        AuthMode::PodIdentity(address)
    } else {
        AuthMode::Irsa
    };

    let region = get(keys::REGION);
    let failover_region = get(keys::FAILOVER_REGION);
    for (parameter, value) in [(keys::REGION, &region), (keys::FAILOVER_REGION, &failover_region)] {
        if let Some(v) = value {
            region::validate(parameter, v)?;
        }
    }

    let rules = ObjectRules {
        translation,
        default_mode,
        has_failover_region: failover_region.is_some(),
        limits: *limits,
    };
    let attr = |key: &str| attrs.get(key).map(String::as_str);
    let class_role = role::parse(
        role::Owner::Class,
        role::Fields {
            arn: attr(role::keys::ARN),
            external_id: attr(role::keys::EXTERNAL_ID),
            duration: attr(role::keys::DURATION),
            source_identity: attr(role::keys::SOURCE_IDENTITY),
            session_tags: attr(role::keys::SESSION_TAGS),
        },
    )?;
    let mut objects = objects::parse_objects(attrs.get(keys::OBJECTS).map(String::as_str).unwrap_or(""), &rules)?;
    if let Some(class_role) = &class_role {
        for o in objects.iter_mut().filter(|o| o.assume_role.is_none()) {
            o.assume_role = Some(class_role.clone());
        }
    }
    let templates = templates::parse_templates(attrs.get(templates::KEY).map(String::as_str), &rules, &objects)?;
    let roles = distinct_roles(&objects).len();
    limits
        .check(crate::limits::Limit::Roles, roles as u64, || {
            "objects (distinct assumeRoleArn, assumeRoleExternalId and assumeRoleDurationSeconds)".to_string()
        })
        .map_err(ObjectError::Limit)?;
    let selections = objects.iter().filter(|o| o.bulk.is_some()).count();
    limits
        .check(crate::limits::Limit::Selections, selections as u64, || {
            "objects (parameterPath, secretNamePrefix, secretFilters)".to_string()
        })
        .map_err(ObjectError::Limit)?;

    let token = match tokens.remove(auth.audience()) {
        None => {
            return Err(match auth {
                AuthMode::Irsa => SpecError::IrsaTokenMissing,
                AuthMode::PodIdentity(_) => SpecError::PodIdentityTokenMissing,
            });
        }
        Some(t) if t.is_empty() => {
            return Err(SpecError::TokenEmpty {
                mode: match auth {
                    AuthMode::Irsa => "IRSA",
                    AuthMode::PodIdentity(_) => "Pod Identity",
                },
                audience: auth.audience(),
            });
        }
        Some(t) => t,
    };

    Ok(MountSpec {
        target_path: target,
        pod: PodInfo {
            name: get(keys::POD_NAME),
            namespace: get(keys::POD_NAMESPACE),
            uid: get(keys::POD_UID),
            service_account: get(keys::SERVICE_ACCOUNT),
        },
        auth,
        token,
        region,
        failover_region,
        translation,
        default_mode,
        objects,
        templates,
    })
}

/// The distinct roles `objects` assume, in order of first use.
pub fn distinct_roles(objects: &[ObjectSpec]) -> Vec<&AssumeRole> {
    let mut roles: Vec<&AssumeRole> = Vec::new();
    for r in objects.iter().filter_map(|o| o.assume_role.as_ref()) {
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    roles
}

/// The regions of a mount once its primary region is known: the failover
/// region must differ from it, and every ARN must name the region it is
/// fetched from.
pub fn check_regions(spec: &MountSpec, primary: String) -> Result<Regions, SpecError> {
    let regions = Regions::new(primary, spec.failover_region.clone())?;
    objects::check_arn_regions(&spec.objects, &regions.primary, regions.failover.as_deref())?;
    Ok(regions)
}

/// The token map: a JSON object `audience -> {token, expirationTimestamp}`.
/// Audiences other than ours are ignored.
fn parse_tokens(raw: Option<&String>) -> Result<HashMap<String, SecretString>, SpecError> {
    let raw = match raw {
        None => return Err(SpecError::TokensMissing),
        Some(r) if r.is_empty() => return Err(SpecError::TokensMissing),
        Some(r) => r,
    };
    let map: HashMap<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| SpecError::TokensInvalid(json_error(&e)))?;
    let mut out = HashMap::new();
    for (audience, value) in map {
        let entry: TokenEntry = serde_json::from_value(value).map_err(|_| {
            SpecError::TokensInvalid(format!(
                "the entry for audience {audience:?} is not an object with a string \"token\""
            ))
        })?;
        out.insert(audience, SecretString::new(entry.token.unwrap_or_default()));
    }
    Ok(out)
}

/// `permission`: a JSON-encoded decimal file mode.
fn parse_permission(permission: &str) -> Result<u32, SpecError> {
    let mode: u32 = serde_json::from_str(permission).map_err(|e| SpecError::Permission(json_error(&e)))?;
    if mode > 0o777 {
        return Err(SpecError::Permission(format!("{mode} is not a file mode (0 to 511)")));
    }
    Ok(mode)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A JSON error without any quoted input: its category and position.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON value type",
        serde_json::error::Category::Eof => "unexpected end of JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(extra: &[(&str, &str)]) -> String {
        let mut m: HashMap<String, String> = HashMap::new();
        m.insert(
            keys::OBJECTS.into(),
            "- objectName: s\n  objectType: secretsmanager\n".into(),
        );
        m.insert(
            keys::TOKENS.into(),
            r#"{"sts.amazonaws.com":{"token":"tok-canary","expirationTimestamp":"2099-01-01T00:00:00Z"},"aud1":{"token":"x"}}"#
                .into(),
        );
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        serde_json::to_string(&m).unwrap()
    }

    #[test]
    fn a_minimal_request_parses_with_defaults() {
        let s = parse_request(
            &attrs(&[]),
            "null",
            "/var/lib/kubelet/pods/x/mount",
            "420",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(s.auth, AuthMode::Irsa);
        assert_eq!(s.default_mode, 0o644);
        assert_eq!(s.translation, PathTranslation::Replace('_'));
        assert_eq!(s.token.expose(), "tok-canary");
        assert!(s.region.is_none());
    }

    #[test]
    fn secrets_may_be_null_empty_or_a_map() {
        for secrets in ["null", "{}", r#"{"k":"v"}"#, ""] {
            assert!(
                parse_request(&attrs(&[]), secrets, "/t", "420", &Limits::default()).is_ok(),
                "{secrets}"
            );
        }
    }

    #[test]
    fn use_pod_identity_follows_go_parse_bool() {
        for (v, pi) in [
            ("1", true),
            ("t", true),
            ("TRUE", true),
            ("True", true),
            ("0", false),
            ("F", false),
            ("false", false),
        ] {
            let mut a: HashMap<String, String> = serde_json::from_str(&attrs(&[(keys::USE_POD_IDENTITY, v)])).unwrap();
            a.insert(
                keys::TOKENS.into(),
                r#"{"sts.amazonaws.com":{"token":"a"},"pods.eks.amazonaws.com":{"token":"b"}}"#.into(),
            );
            let s = parse_request(
                &serde_json::to_string(&a).unwrap(),
                "null",
                "/t",
                "420",
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(matches!(s.auth, AuthMode::PodIdentity(_)), pi, "{v}");
        }
    }

    #[test]
    fn path_translation_false_in_any_casing_turns_translation_off() {
        for v in ["False", "false", "FALSE", "fAlSe"] {
            let s = parse_request(
                &attrs(&[(keys::PATH_TRANSLATION, v)]),
                "null",
                "/t",
                "420",
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(s.translation, PathTranslation::Off, "{v}");
        }
    }

    #[test]
    fn the_token_map_may_arrive_in_secrets_only() {
        let mut a: HashMap<String, String> = serde_json::from_str(&attrs(&[])).unwrap();
        let tokens = a.remove(keys::TOKENS).unwrap();
        let secrets = serde_json::to_string(&HashMap::from([(keys::TOKENS, tokens)])).unwrap();
        let s = parse_request(
            &serde_json::to_string(&a).unwrap(),
            &secrets,
            "/t",
            "420",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(s.token.expose(), "tok-canary");
    }

    /// What parsing allocates at its peak, and what the class holds after
    /// it, against what a mount charges for them: the first step within the
    /// request's charge, the second within its announced cost, the class
    /// within its estimate.
    #[test]
    fn parsing_stays_within_its_charges_and_the_class_within_its_estimate() {
        let objects: String = (0..490)
            .map(|i| {
                format!(
                    "- objectName: prod/team-{i:04}/database-credentials\n  objectType: secretsmanager\n  objectAlias: db-{i:04}\n  jmesPath:\n    - {{path: username, objectAlias: u-{i}}}\n"
                )
            })
            .collect();
        // The most nodes per byte: a flow list of one-letter scalars under an
        // ignored key, up to the node limit.
        let flow = format!(
            "- objectName: a\n  objectType: secretsmanager\n  x: [{}]\n",
            "a,".repeat(31_000)
        );
        let anchored = format!(
            "- &o {{objectName: a, objectType: secretsmanager, filePermission: '0400', x: [{}]}}\n{}",
            "a,".repeat(1_000),
            (0..20)
                .map(|i| format!("- {{<<: *o, objectAlias: c{i}}}\n"))
                .collect::<String>()
        );
        let mut template = String::new();
        while template.len() < 190 * 1024 {
            template.push_str("{{ files.s }}\n");
        }
        let templates = format!(
            "- fileName: out\n  template: |\n{}",
            template.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        let mut short_tags = String::new();
        while short_tags.len() < 190 * 1024 {
            short_tags.push_str("{{a}}");
        }
        let short_tags = format!("- fileName: out\n  template: '{short_tags}'\n");
        let cases = [
            (
                "490 objects with a jmesPath entry each",
                attrs(&[(keys::OBJECTS, &objects)]),
            ),
            ("31,000 scalars in a flow list", attrs(&[(keys::OBJECTS, &flow)])),
            ("an object merged into 20 others", attrs(&[(keys::OBJECTS, &anchored)])),
            ("a 250 KiB template", attrs(&[("templates", &templates)])),
            ("a template of the shortest tags", attrs(&[("templates", &short_tags)])),
            ("1000 KiB of padding", attrs(&[("padding", &"p".repeat(1000 * 1024))])),
        ];
        for (what, attributes) in cases {
            let size = attributes.len() as u64;
            let limits = Limits::default();
            let (mut read, first, _) = measure(|| read_attributes(&attributes, "null", "/t").expect(what));
            let scan_cost = read.scan_cost(&limits);
            let ((), scanning, _) = measure(|| read.scan(&limits));
            let cost = read.parse_cost();
            let (spec, second, held) = measure(|| parse_attributes(read, "420", &limits));
            let spec = spec.unwrap_or_else(|e| panic!("{what}: {e}"));
            eprintln!(
                "{what}: {size} bytes; read peak {first} ({:.1}x), scan peak {scanning} (cost {scan_cost}), parse peak {second} (cost {cost}), class {held} (estimate {})",
                first as f64 / size as f64,
                spec.estimated_bytes()
            );
            assert!(
                scanning <= scan_cost,
                "{what}: scanning allocated {scanning}, {scan_cost} charged"
            );
            // The request's charge pays for the message and what is read
            // from it.
            let request = size * crate::memory::REQUEST_FACTOR;
            assert!(
                first + size <= request,
                "{what}: reading allocated {first}, {request} charged"
            );
            assert!(second <= cost, "{what}: parsing allocated {second}, {cost} charged");
            assert!(
                held <= spec.estimated_bytes(),
                "{what}: the class holds {held} bytes, estimated {}",
                spec.estimated_bytes()
            );
        }
    }

    /// `work` with what it allocated at its peak and still holds (bytes).
    fn measure<T>(work: impl FnOnce() -> T) -> (T, u64, u64) {
        let mut out = None;
        let info = allocation_counter::measure(|| out = Some(work()));
        let out = out.expect("ran");
        (out, info.bytes_max, info.bytes_current.max(0) as u64)
    }

    #[test]
    fn the_spec_debug_output_never_shows_the_token() {
        let s = parse_request(&attrs(&[]), "null", "/t", "420", &Limits::default()).unwrap();
        assert!(!format!("{s:?}").contains("tok-canary"));
    }
}
