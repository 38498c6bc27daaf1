//! The bad-input table: malformed attributes, parameters and objects, each
//! with the message a user must see.

use super::fake_aws::secret_arn;
use super::*;

pub enum Expect {
    Exact(String),
    Prefix(&'static str),
}

pub type Edit = Box<dyn Fn(Req) -> Req>;

fn objects(yaml: &'static str) -> Edit {
    Box::new(move |r: Req| r.set("objects", yaml))
}

fn objects_owned(yaml: String) -> Edit {
    Box::new(move |r: Req| r.set("objects", &yaml))
}

const CENTRAL_ROLE: &str = "arn:aws:iam::111111111111:role/central-secrets";
const ROLE_ARN_RULE: &str = "assumeRoleArn of the SecretProviderClass must be an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>)";
const DURATION_RULE: &str =
    "assumeRoleDurationSeconds of the SecretProviderClass must be a whole number of seconds from 900 to 43200";
const EXTERNAL_ID_RULE: &str =
    "assumeRoleExternalId of the SecretProviderClass must be 2 to 1224 characters of letters, digits and +=,.@:/-";

fn templates(yaml: &'static str) -> Edit {
    Box::new(move |r: Req| r.set("templates", yaml))
}

fn one_template(text: String) -> Edit {
    Box::new(move |r: Req| {
        let yaml = serde_yaml::to_string(&vec![std::collections::BTreeMap::from([
            ("fileName", "a.env".to_string()),
            ("template", text.clone()),
        ])])
        .unwrap_or_default();
        r.set("templates", &yaml)
    })
}

fn exact(s: &str) -> Expect {
    Expect::Exact(s.to_string())
}

pub fn cases() -> Vec<(&'static str, Edit, Expect)> {
    let other_region_arn = secret_arn("eu-west-1", "s");
    let primary_arn = secret_arn(REGION, "s");
    vec![
        (
            "empty target path",
            Box::new(|mut r: Req| {
                r.target = "".into();
                r
            }),
            exact("Missing mount path"),
        ),
        (
            "relative target path",
            Box::new(|mut r: Req| {
                r.target = "pods/x/mount".into();
                r
            }),
            exact("target path pods/x/mount is not an absolute path"),
        ),
        (
            "attributes not JSON",
            Box::new(|mut r: Req| {
                r.raw_attributes = Some("{not json".into());
                r
            }),
            Expect::Prefix("failed to unmarshal attributes, error: invalid JSON at line 1"),
        ),
        (
            "attribute value not a string",
            Box::new(|mut r: Req| {
                r.raw_attributes = Some(r#"{"region": 5}"#.into());
                r
            }),
            exact("failed to unmarshal attributes, error: unexpected JSON value type at line 1 column 12"),
        ),
        (
            "secrets not JSON",
            Box::new(|mut r: Req| {
                r.secrets = "{oops".into();
                r
            }),
            Expect::Prefix("failed to unmarshal secrets, error: invalid JSON"),
        ),
        (
            "token map missing",
            Box::new(|mut r: Req| {
                r.tokens.clear();
                r
            }),
            exact(
                "CSI token error: serviceAccount.tokens not provided - ensure tokenRequests is configured in CSIDriver spec",
            ),
        ),
        (
            "token map not JSON",
            Box::new(|r: Req| r.set("csi.storage.k8s.io/serviceAccount.tokens", "{]")),
            Expect::Prefix("failed to parse serviceAccount.tokens: invalid JSON"),
        ),
        (
            "token entry not an object",
            Box::new(|r: Req| {
                r.set(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    r#"{"sts.amazonaws.com":"raw-token-canary"}"#,
                )
            }),
            exact(
                "failed to parse serviceAccount.tokens: the entry for audience \"sts.amazonaws.com\" is not an object with a string \"token\"",
            ),
        ),
        (
            "IRSA token audience missing",
            Box::new(|mut r: Req| {
                r.tokens.remove("sts.amazonaws.com");
                r
            }),
            exact(
                "IRSA token extraction failed: token for audience \"sts.amazonaws.com\" not found - ensure tokenRequests includes this audience in CSIDriver",
            ),
        ),
        (
            "Pod Identity token audience missing",
            Box::new(|mut r: Req| {
                r.tokens.remove("pods.eks.amazonaws.com");
                r.set("usePodIdentity", "true")
            }),
            exact(
                "Pod Identity token extraction failed: token for audience \"pods.eks.amazonaws.com\" not found - ensure tokenRequests includes this audience in CSIDriver",
            ),
        ),
        (
            "IRSA token empty",
            Box::new(|mut r: Req| {
                r.tokens.insert("sts.amazonaws.com".into(), "".into());
                r
            }),
            exact("IRSA token extraction failed: token for audience \"sts.amazonaws.com\" is empty"),
        ),
        (
            "permission not a number",
            Box::new(|mut r: Req| {
                r.permission = "\"0644\"".into();
                r
            }),
            Expect::Prefix("failed to unmarshal file permission, error: "),
        ),
        (
            "permission out of range",
            Box::new(|mut r: Req| {
                r.permission = "4095".into();
                r
            }),
            exact("failed to unmarshal file permission, error: 4095 is not a file mode (0 to 511)"),
        ),
        (
            "pathTranslation two characters",
            Box::new(|r: Req| r.set("pathTranslation", "ab")),
            exact("pathTranslation must be either 'False' or a single character string"),
        ),
        (
            "pathTranslation multibyte character",
            Box::new(|r: Req| r.set("pathTranslation", "é")),
            exact("pathTranslation must be either 'False' or a single character string"),
        ),
        (
            "usePodIdentity not a boolean",
            Box::new(|r: Req| r.set("usePodIdentity", "yes")),
            exact("failed to parse usePodIdentity value, error: strconv.ParseBool: parsing \"yes\": invalid syntax"),
        ),
        (
            "preferredAddressType unknown",
            Box::new(|r: Req| r.set("usePodIdentity", "true").set("preferredAddressType", "ipv5")),
            exact("invalid preferred address type: ipv5"),
        ),
        (
            "failover region equals region",
            Box::new(|r: Req| r.set("failoverRegion", REGION)),
            exact("us-west-2: failover region cannot be the same as the primary region"),
        ),
        (
            "objects missing",
            Box::new(|r: Req| r.unset("objects")),
            exact("no objects to mount: the SecretProviderClass parameter 'objects' is missing or an empty list"),
        ),
        (
            "objects empty list",
            objects("[]"),
            exact("no objects to mount: the SecretProviderClass parameter 'objects' is missing or an empty list"),
        ),
        (
            "objects not a list",
            objects("objectName: s"),
            exact("Failed to load SecretProviderClass: objects must be a list, found a mapping"),
        ),
        (
            "objects invalid YAML",
            objects("- objectName: [unclosed"),
            Expect::Prefix("Failed to load SecretProviderClass: "),
        ),
        (
            "null entry",
            objects("- objectName: a\n  objectType: secretsmanager\n-\n"),
            exact("Empty descriptor entry in SecretProviderClass"),
        ),
        (
            "entry is a string",
            objects("- just-a-name\n"),
            exact("Failed to load SecretProviderClass: objects[0] must be a mapping, found a string"),
        ),
        (
            "objectName missing",
            objects("- objectType: secretsmanager\n"),
            exact("Object name must be specified"),
        ),
        (
            "objectName empty",
            objects("- objectName: \"\"\n  objectType: secretsmanager\n"),
            exact("Object name must be specified"),
        ),
        (
            "objectName a list",
            objects("- objectName: [a, b]\n  objectType: secretsmanager\n"),
            exact("Failed to load SecretProviderClass: objects[0].objectName must be a string, found a list"),
        ),
        (
            "objectType missing without ARN",
            objects("- objectName: s\n"),
            exact("Must use objectType when a full ARN is not specified: s"),
        ),
        (
            "objectType ssm",
            objects("- objectName: s\n  objectType: ssm\n"),
            exact("Invalid objectType: ssm"),
        ),
        (
            "objectType wrong case",
            objects("- objectName: s\n  objectType: SecretsManager\n"),
            exact("Invalid objectType: SecretsManager"),
        ),
        (
            "ARN with too few sections",
            objects("- objectName: arn:aws:secretsmanager\n"),
            exact("Invalid ARN format in object name: arn:aws:secretsmanager"),
        ),
        (
            "ARN in another region",
            objects_owned(format!("- objectName: {other_region_arn}\n")),
            exact(&format!("ARN region must match region us-west-2: {other_region_arn}")),
        ),
        (
            "ARN of an unsupported service",
            objects("- objectName: arn:aws:s3:us-west-2:123456789012:bucket/x\n"),
            exact("Invalid service in ARN: s3"),
        ),
        (
            "objectType contradicts ARN",
            objects_owned(format!("- objectName: {primary_arn}\n  objectType: ssmparameter\n")),
            exact(&format!("objectType does not match ARN: {primary_arn}")),
        ),
        (
            "filePermission with three digits",
            objects("- objectName: s\n  objectType: secretsmanager\n  filePermission: \"644\"\n"),
            exact("Invalid File Permission: 644"),
        ),
        (
            "filePermission not octal",
            objects("- objectName: s\n  objectType: secretsmanager\n  filePermission: \"0999\"\n"),
            exact("Invalid File Permission: 0999"),
        ),
        (
            "filePermission with setuid",
            objects("- objectName: s\n  objectType: secretsmanager\n  filePermission: \"4755\"\n"),
            exact("Invalid File Permission: 4755"),
        ),
        (
            "SSM with both version fields",
            objects("- objectName: p\n  objectType: ssmparameter\n  objectVersion: 2\n  objectVersionLabel: stable\n"),
            exact("ssm parameters can not specify both objectVersion and objectVersionLabel: p"),
        ),
        (
            "jmesPath without path",
            objects("- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - objectAlias: a\n"),
            exact("Path must be specified for JMES object"),
        ),
        (
            "jmesPath without alias",
            objects("- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n"),
            exact("Object alias must be specified for JMES object"),
        ),
        (
            "jmesPath with a bad expression",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a[\n      objectAlias: a\n",
            ),
            exact("Invalid JMES Path: a[."),
        ),
        (
            "jmesPath with a bad permission",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n      objectAlias: a\n      filePermission: \"0800\"\n",
            ),
            exact("Invalid File Permission: 0800"),
        ),
        (
            "jmesPath not a list",
            objects("- objectName: s\n  objectType: secretsmanager\n  jmesPath: user\n"),
            exact("Failed to load SecretProviderClass: objects[0].jmesPath must be a list, found a string"),
        ),
        (
            "failoverObject without alias",
            Box::new(|r: Req| {
                r.set("failoverRegion", FAILOVER).set(
                    "objects",
                    "- objectName: s\n  objectType: secretsmanager\n  failoverObject:\n    objectName: t\n",
                )
            }),
            exact("object alias must be specified for objects with failover entries: s"),
        ),
        (
            "failoverObject without failoverRegion",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n  failoverObject:\n    objectName: t\n",
            ),
            exact("failover object allowed only when failover region is defined: s"),
        ),
        (
            "failoverObject version mismatch",
            Box::new(|r: Req| {
                r.set("failoverRegion", FAILOVER).set("objects", "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n  objectVersion: v1\n  failoverObject:\n    objectName: t\n    objectVersion: v2\n")
            }),
            exact("object versions must match between primary and failover regions: s"),
        ),
        (
            "failoverObject ARN in the primary region",
            {
                let arn = primary_arn.clone();
                Box::new(move |r: Req| {
                    r.set("failoverRegion", FAILOVER).set("objects", &format!("- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n  failoverObject:\n    objectName: {arn}\n"))
                })
            },
            exact(&format!("ARN region must match region us-east-2: {primary_arn}")),
        ),
        (
            "failoverObject SSM with both version fields",
            Box::new(|r: Req| {
                r.set("failoverRegion", FAILOVER).set("objects", "- objectName: p\n  objectType: ssmparameter\n  objectAlias: a\n  objectVersion: 3\n  failoverObject:\n    objectName: q\n    objectVersion: 3\n    objectVersionLabel: x\n")
            }),
            exact("ssm parameters can not specify both objectVersion and objectVersionLabel: q"),
        ),
        (
            "duplicate object name",
            objects("- objectName: s\n  objectType: secretsmanager\n- objectName: s\n  objectType: secretsmanager\n"),
            exact("found descriptor with duplicate object name s"),
        ),
        (
            "duplicate object name with same label",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  objectVersionLabel: AWSPREVIOUS\n- objectName: s\n  objectType: secretsmanager\n  objectVersionLabel: AWSPREVIOUS\n",
            ),
            exact("found descriptor with duplicate object name s"),
        ),
        (
            "duplicate alias",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n- objectName: t\n  objectType: secretsmanager\n  objectAlias: a\n",
            ),
            exact("found duplicate object alias a"),
        ),
        (
            "JMES alias already used",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a\n  jmesPath:\n    - path: user\n      objectAlias: a\n",
            ),
            exact("Name already in use for objectAlias: found duplicate object alias a in JMES path entry user"),
        ),
        (
            "names colliding after translation",
            objects("- objectName: a/b\n  objectType: secretsmanager\n- objectName: a_b\n  objectType: ssmparameter\n"),
            exact("found duplicate file name a_b: written by both a/b and a_b"),
        ),
        (
            "name equal to another object's alias",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: t\n- objectName: t\n  objectType: secretsmanager\n",
            ),
            exact("found duplicate file name t: written by both s and t"),
        ),
        (
            "file where a directory is needed",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    "- objectName: a\n  objectType: secretsmanager\n- objectName: a/b\n  objectType: secretsmanager\n",
                )
            }),
            exact("file name a of a conflicts with the directory needed for a/b of a/b"),
        ),
        (
            "alias traversing upwards",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    "- objectName: s\n  objectType: secretsmanager\n  objectAlias: ../../etc/passwd\n",
                )
            }),
            exact("path can not contain ../: ../../etc/passwd"),
        ),
        (
            "alias ..",
            objects("- objectName: s\n  objectType: secretsmanager\n  objectAlias: ..\n"),
            exact("path can not contain ../: .."),
        ),
        (
            "alias .",
            objects("- objectName: s\n  objectType: secretsmanager\n  objectAlias: .\n"),
            exact(r#"invalid file name "." for object s: a path component is "." (the current directory)"#),
        ),
        (
            "alias in the writer's reserved namespace",
            objects("- objectName: s\n  objectType: secretsmanager\n  objectAlias: ..data\n"),
            exact(
                r#"invalid file name "..data" for object s: names starting with ".." are reserved for the atomic writer's own entries (such as "..data")"#,
            ),
        ),
        (
            "alias with a dot component",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a/./b\n",
                )
            }),
            exact(r#"invalid file name "a/./b" for object s: a path component is "." (the current directory)"#),
        ),
        (
            "alias with an empty component",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    "- objectName: s\n  objectType: secretsmanager\n  objectAlias: a//b\n",
                )
            }),
            exact(r#"invalid file name "a//b" for object s: the path has an empty component (a doubled or trailing "/")"#),
        ),
        (
            "alias too long",
            objects_owned(format!(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}\n",
                "x".repeat(256)
            )),
            exact(&format!(
                r#"invalid file name "{}…(256 bytes)" for object s: a path component is longer than 255 bytes"#,
                "x".repeat(96)
            )),
        ),
        (
            "translation to slash makes an absolute path",
            Box::new(|r: Req| {
                r.set("pathTranslation", "/")
                    .set("objects", "- objectName: /abs\n  objectType: ssmparameter\n")
            }),
            exact(r#"invalid file name "/abs" for object /abs: the file name starts with "/" (an absolute path)"#),
        ),
        (
            "a name that is all slashes leaves an empty file name",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False")
                    .set("objects", "- objectName: /\n  objectType: ssmparameter\n")
            }),
            exact(r#"invalid file name "" for object /: the file name is empty"#),
        ),
        (
            "alias with a NUL byte",
            objects("- objectName: s\n  objectType: secretsmanager\n  objectAlias: \"a\\0b\"\n"),
            exact(r#"invalid file name "a\u{0}b" for object s: the file name contains a NUL byte"#),
        ),
        (
            "a file nested 1,000 directories deep",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    &format!(
                        "- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}f\n",
                        "d/".repeat(1000)
                    ),
                )
            }),
            Expect::Prefix("invalid file name \"d/d/d/"),
        ),
        (
            "a file nested 33 directories deep",
            Box::new(|r: Req| {
                r.set("pathTranslation", "False").set(
                    "objects",
                    &format!(
                        "- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}f\n",
                        "d/".repeat(33)
                    ),
                )
            }),
            exact(&format!(
                r#"invalid file name "{}f" for object s: the file is nested in more than 32 directories"#,
                "d/".repeat(33)
            )),
        ),
        (
            "assumeRoleArn not an ARN",
            Box::new(|r: Req| r.set("assumeRoleArn", "central-secrets")),
            exact(&format!("{ROLE_ARN_RULE}: central-secrets")),
        ),
        (
            "assumeRoleArn of a user",
            Box::new(|r: Req| r.set("assumeRoleArn", "arn:aws:iam::111111111111:user/ci")),
            exact(&format!("{ROLE_ARN_RULE}: arn:aws:iam::111111111111:user/ci")),
        ),
        (
            "assumeRoleArn with an 11-digit account",
            Box::new(|r: Req| r.set("assumeRoleArn", "arn:aws:iam::11111111111:role/x")),
            exact(&format!("{ROLE_ARN_RULE}: arn:aws:iam::11111111111:role/x")),
        ),
        (
            "assumeRoleDurationSeconds below 900",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE)
                    .set("assumeRoleDurationSeconds", "899")
            }),
            exact(&format!("{DURATION_RULE}: 899")),
        ),
        (
            "assumeRoleDurationSeconds above 43200",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE)
                    .set("assumeRoleDurationSeconds", "43201")
            }),
            exact(&format!("{DURATION_RULE}: 43201")),
        ),
        (
            "assumeRoleDurationSeconds with a unit",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE)
                    .set("assumeRoleDurationSeconds", "1h")
            }),
            exact(&format!("{DURATION_RULE}: 1h")),
        ),
        (
            "assumeRoleExternalId of one character",
            Box::new(|r: Req| r.set("assumeRoleArn", CENTRAL_ROLE).set("assumeRoleExternalId", "x")),
            exact(EXTERNAL_ID_RULE),
        ),
        (
            "assumeRoleExternalId with a space",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE)
                    .set("assumeRoleExternalId", "tenant 42")
            }),
            exact(EXTERNAL_ID_RULE),
        ),
        (
            "assumeRoleExternalId without assumeRoleArn",
            Box::new(|r: Req| r.set("assumeRoleExternalId", "tenant-42")),
            exact(
                "assumeRoleExternalId of the SecretProviderClass needs assumeRoleArn on the same class: an external id, a duration or attribution belongs to the role it is used with",
            ),
        ),
        (
            "object assumeRoleDurationSeconds without its own assumeRoleArn",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE).set(
                    "objects",
                    "- objectName: s\n  objectType: secretsmanager\n  assumeRoleDurationSeconds: 1800\n",
                )
            }),
            exact(
                "assumeRoleDurationSeconds of object s needs assumeRoleArn on the same object: an external id, a duration or attribution belongs to the role it is used with",
            ),
        ),
        (
            "object assumeRoleArn not a role",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  assumeRoleArn: arn:aws:iam::111111111111:group/g\n",
            ),
            exact(
                "assumeRoleArn of object s must be an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>): arn:aws:iam::111111111111:group/g",
            ),
        ),
        (
            "object assumeRoleExternalId with a quote",
            objects_owned(format!(
                "- objectName: s\n  objectType: secretsmanager\n  assumeRoleArn: {CENTRAL_ROLE}\n  assumeRoleExternalId: \"a'b\"\n"
            )),
            exact("assumeRoleExternalId of object s must be 2 to 1224 characters of letters, digits and +=,.@:/-"),
        ),
        (
            "object assumeRoleDurationSeconds negative",
            objects_owned(format!(
                "- objectName: s\n  objectType: secretsmanager\n  assumeRoleArn: {CENTRAL_ROLE}\n  assumeRoleDurationSeconds: -900\n"
            )),
            exact("assumeRoleDurationSeconds of object s must be a whole number of seconds from 900 to 43200: -900"),
        ),
        (
            "assumeRoleSourceIdentity not a boolean",
            Box::new(|r: Req| {
                r.set("assumeRoleArn", CENTRAL_ROLE)
                    .set("assumeRoleSourceIdentity", "yes")
            }),
            exact("assumeRoleSourceIdentity of the SecretProviderClass must be true or false: yes"),
        ),
        (
            "assumeRoleSessionTags without assumeRoleArn",
            Box::new(|r: Req| r.set("assumeRoleSessionTags", "true")),
            exact(
                "assumeRoleSessionTags of the SecretProviderClass needs assumeRoleArn on the same class: an external id, a duration or attribution belongs to the role it is used with",
            ),
        ),
        (
            "object assumeRoleSessionTags not a boolean",
            objects_owned(format!(
                "- objectName: s\n  objectType: secretsmanager\n  assumeRoleArn: {CENTRAL_ROLE}\n  assumeRoleSessionTags: \"on\\nx\"\n"
            )),
            exact("assumeRoleSessionTags of object s must be true or false: on\\nx"),
        ),
        (
            "object assumeRoleSourceIdentity without its own assumeRoleArn",
            objects("- objectName: s\n  objectType: secretsmanager\n  assumeRoleSourceIdentity: true\n"),
            exact(
                "assumeRoleSourceIdentity of object s needs assumeRoleArn on the same object: an external id, a duration or attribution belongs to the role it is used with",
            ),
        ),
        (
            "jsonKeysAsFiles not a boolean",
            objects("- objectName: s\n  objectType: secretsmanager\n  jsonKeysAsFiles: yes please\n"),
            exact("jsonKeysAsFiles of object s must be true or false: yes please"),
        ),
        (
            "certificateFormat unknown",
            objects("- objectName: s\n  objectType: secretsmanager\n  certificateFormat: der\n"),
            exact("certificateFormat of object s must be pem or pkcs12: der"),
        ),
        (
            "certificatePasswordFile without certificateFormat",
            objects("- objectName: s\n  objectType: secretsmanager\n  certificatePasswordFile: p\n"),
            exact("certificatePasswordFile of object s needs certificateFormat"),
        ),
        (
            "certificatePasswordFile not a file of the mount",
            objects("- objectName: s\n  objectType: secretsmanager\n  certificateFormat: pkcs12\n  certificatePasswordFile: nope\n"),
            exact(
                "certificatePasswordFile nope of object s is not a file of this mount (name the file of another object or jmesPath entry, as templates do)",
            ),
        ),
        (
            "certificatePasswordFile is a certificate's file",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  certificateFormat: pkcs12\n  certificatePasswordFile: t/tls.key\n\
                 - objectName: t\n  objectType: secretsmanager\n  certificateFormat: pem\n",
            ),
            exact("certificatePasswordFile t/tls.key of object s names a file that is itself a certificate's"),
        ),
        (
            "certificateFormat with jsonKeysAsFiles",
            objects("- objectName: s\n  objectType: secretsmanager\n  certificateFormat: pem\n  jsonKeysAsFiles: true\n"),
            exact("object s: certificateFormat and jsonKeysAsFiles exclude each other"),
        ),
        (
            "certificateFormat on a jmesPath entry, unknown",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n      objectAlias: b\n      certificateFormat: pfx\n",
            ),
            exact("certificateFormat of object s must be pem or pkcs12: pfx"),
        ),
        (
            "certificateFormat on an object that selects many",
            objects("- parameterPath: /tls\n  certificateFormat: pem\n"),
            Expect::Prefix("object /tls: certificateFormat makes no sense for an object that selects many"),
        ),
        (
            "acm object named by a name",
            objects("- objectName: web\n  objectType: acm\n"),
            exact(
                "object web: an ACM object is named by its certificate ARN (arn:<partition>:acm:<region>:<account>:certificate/<id>)",
            ),
        ),
        (
            "acm ARN of another resource",
            objects("- objectName: \"arn:aws:acm:us-west-2:123456789012:account\"\n"),
            exact(
                "object arn:aws:acm:us-west-2:123456789012:account: an ACM object is named by its certificate ARN (arn:<partition>:acm:<region>:<account>:certificate/<id>)",
            ),
        ),
        (
            "acm object with objectVersion",
            objects("- objectName: \"arn:aws:acm:us-west-2:123456789012:certificate/c1\"\n  objectVersion: \"2\"\n"),
            exact("object arn:aws:acm:us-west-2:123456789012:certificate/c1: objectVersion does not apply to an ACM certificate"),
        ),
        (
            "acm object with jmesPath",
            objects(
                "- objectName: \"arn:aws:acm:us-west-2:123456789012:certificate/c1\"\n  jmesPath:\n    - path: a\n      objectAlias: b\n",
            ),
            exact("object arn:aws:acm:us-west-2:123456789012:certificate/c1: jmesPath does not apply to an ACM certificate"),
        ),
        (
            "acm objectType with a secret ARN",
            objects_owned(format!("- objectName: {primary_arn}\n  objectType: acm\n")),
            exact(&format!("objectType does not match ARN: {primary_arn}")),
        ),
        (
            "parameterPath with objectName",
            objects("- objectName: s\n  parameterPath: /orders\n"),
            exact("object s: parameterPath selects many objects and cannot be used with objectName"),
        ),
        (
            "parameterPath and secretNamePrefix together",
            objects("- parameterPath: /orders\n  secretNamePrefix: orders/\n"),
            exact(
                "object /orders: parameterPath (SSM) and secretNamePrefix/secretFilters (Secrets Manager) exclude each other",
            ),
        ),
        (
            "parameterPath with objectType secretsmanager",
            objects("- parameterPath: /orders\n  objectType: secretsmanager\n"),
            exact("object /orders: parameterPath needs objectType ssmparameter"),
        ),
        (
            "parameterPath with objectVersion",
            objects("- parameterPath: /orders\n  objectVersion: 3\n"),
            exact("object /orders: objectVersion makes no sense for an object that selects many (one file per match)"),
        ),
        (
            "secretNamePrefix with failoverObject",
            Box::new(|r: Req| {
                r.set("failoverRegion", FAILOVER).set(
                    "objects",
                    "- secretNamePrefix: orders/\n  objectAlias: o\n  failoverObject: {objectName: x}\n",
                )
            }),
            exact("object orders/: failoverObject makes no sense for an object that selects many (one file per match)"),
        ),
        (
            "secretFilters with jmesPath",
            objects("- secretFilters: {tag-key: team}\n  jmesPath:\n    - path: a\n      objectAlias: a\n"),
            exact("object secretFilters: jmesPath makes no sense for an object that selects many (one file per match)"),
        ),
        (
            "parameterPath not starting with a slash",
            objects("- parameterPath: orders/prod\n"),
            exact(
                "object orders/prod: parameterPath must start with / and hold only letters, digits and _.-/ (at most 2048): orders/prod",
            ),
        ),
        (
            "recursive on secrets",
            objects("- secretNamePrefix: orders/\n  recursive: true\n"),
            exact("object orders/: recursive makes no sense for an object that selects many (one file per match)"),
        ),
        (
            "recursive on a single object",
            objects("- objectName: s\n  objectType: ssmparameter\n  recursive: true\n"),
            exact(
                "object s: recursive applies only to objects that select many (parameterPath, secretNamePrefix, secretFilters)",
            ),
        ),
        (
            "allowEmpty not a boolean",
            objects("- parameterPath: /orders\n  allowEmpty: sometimes\n"),
            exact("object /orders: allowEmpty must be true or false: sometimes"),
        ),
        (
            "secretFilters with the name key",
            objects("- secretFilters: {name: orders/}\n"),
            exact(
                "object secretFilters: secretFilters key name is not one of tag-key, tag-value, description, primary-region",
            ),
        ),
        (
            "secretFilters value with a character AWS refuses",
            objects("- secretFilters: {tag-value: \"a;b\"}\n"),
            exact(
                "object secretFilters: secretFilters.tag-value values must be 1 to 512 characters of letters, digits, spaces and :_@/+=.-! (a leading ! negates), at most 10 per key: a;b",
            ),
        ),
        (
            "secretFilters not a mapping",
            objects("- secretFilters: [team]\n"),
            exact(
                "Failed to load SecretProviderClass: objects[0].secretFilters must be a mapping of filter key to values",
            ),
        ),
        (
            "negated secretNamePrefix",
            objects("- secretNamePrefix: \"!orders/\"\n"),
            exact("object !orders/: secretNamePrefix must not start with ! (a negated prefix cannot name the files)"),
        ),
        (
            "objectEncoding not an encoding",
            objects("- objectName: s\n  objectType: secretsmanager\n  objectEncoding: base32\n"),
            exact("objectEncoding of object s must be utf-8, base64 or hex: base32"),
        ),
        (
            "jmesPath objectEncoding not an encoding",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n      objectAlias: a\n      objectEncoding: gzip\n",
            ),
            exact("objectEncoding of object s must be utf-8, base64 or hex: gzip"),
        ),
        (
            "nonStringAsJson not a boolean",
            objects(
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n      objectAlias: a\n      nonStringAsJson: maybe\n",
            ),
            exact("nonStringAsJson of a jmesPath entry of object s must be true or false: maybe"),
        ),
        (
            "secretFilters empty",
            objects("- secretFilters: {}\n"),
            exact(
                "object secretFilters: secretFilters needs at least one filter, or a secretNamePrefix (an object never selects every secret)",
            ),
        ),
        (
            "six distinct roles in one mount",
            objects_owned(
                (0..6)
                    .map(|i| {
                        format!(
                            "- objectName: s{i}\n  objectType: secretsmanager\n  assumeRoleArn: arn:aws:iam::11111111111{i}:role/r\n"
                        )
                    })
                    .collect(),
            ),
            exact(
                "objects (distinct assumeRoleArn, assumeRoleExternalId and assumeRoleDurationSeconds): 6 roles, more than the limit of 5 (--max-roles-per-mount)",
            ),
        ),
        (
            "eleven objects that select many",
            objects_owned((0..11).map(|i| format!("- parameterPath: /p{i}\n")).collect()),
            exact(
                "objects (parameterPath, secretNamePrefix, secretFilters): 11 objects that select many, more than the limit of 10 (--max-selections-per-mount)",
            ),
        ),
        (
            "template joining values",
            one_template("{{ files.s ~ 'x' }}".into()),
            exact(
                "template a.env, line 1: the operator `~` is not available in templates: write the parts one after the other ({{ a }}{{ b }}) instead of joining them",
            ),
        ),
        (
            "template repeating a value",
            one_template("ok\n{{ files.s * 1000000 }}".into()),
            Expect::Prefix("template a.env, line 2: the operator `*` is not available in templates"),
        ),
        (
            "template slicing a value",
            one_template("{{ files.s[0:4] }}".into()),
            exact("template a.env, line 1: a slice is not available in templates"),
        ),
        (
            "template capturing a block",
            one_template("{% set x %}{{ files.s }}{{ files.s }}{% endset %}".into()),
            exact("template a.env, line 1: {% set %} capturing a block is not available in templates: assign a value instead"),
        ),
        (
            "template macro",
            one_template("{% macro m() %}{{ m() }}{% endmacro %}".into()),
            exact("template a.env, line 1: {% macro %} is not available in templates: the statements are if, for, set and with"),
        ),
        (
            "template calling a function",
            one_template("{% for i in range(100000000) %}x{% endfor %}".into()),
            exact("template a.env, line 1: calling a function is not available in templates: use a filter (value | filter)"),
        ),
        (
            "template unknown filter",
            one_template("{{ files.s | tojsonx }}".into()),
            exact(
                "template a.env, line 1: unknown filter tojsonx; the filters are b64decode, b64encode, default, fromjson, indent, items, join, length, lower, replace, shellquote, tojson, trim, upper, urlencode",
            ),
        ),
        (
            "template syntax error",
            one_template("line 1\n{% if files.s %}".into()),
            Expect::Prefix("template a.env, line 2: syntax error: unexpected end of input"),
        ),
        (
            "template tag too long",
            one_template(format!("{{{{ files.s{} }}}}", " | trim".repeat(100))),
            exact(
                "template a.env, line 1: a tag of more than 200 tokens is not available in templates: split it, or use a set statement for a part of it",
            ),
        ),
        (
            "template naming a file the class does not have",
            one_template("{{ files.s }}\n{{ files['db-password'] }}".into()),
            exact("template a.env, line 2: files[\"db-password\"] names no file of this mount"),
        ),
        (
            "template file colliding with an object's",
            templates("- fileName: s\n  template: x\n"),
            exact("found duplicate file name s: written by both s and template s"),
        ),
        (
            "template without fileName",
            templates("- template: x\n"),
            exact("Failed to load SecretProviderClass: templates[0].fileName must be specified"),
        ),
        (
            "template without text",
            templates("- fileName: a.env\n"),
            exact("Failed to load SecretProviderClass: templates[0] (a.env): template must be specified"),
        ),
        (
            "templates not a list",
            templates("fileName: a.env\ntemplate: x\n"),
            exact("Failed to load SecretProviderClass: templates must be a list"),
        ),
        (
            "template file permission",
            templates("- fileName: a.env\n  filePermission: \"0999\"\n  template: x\n"),
            exact("Invalid File Permission: 0999"),
        ),
        (
            "templates too large",
            Box::new(|r: Req| {
                let yaml = format!("- fileName: a.env\n  template: \"{}\"\n", "x".repeat(300 * 1024));
                r.set("templates", &yaml)
            }),
            exact("templates: 307233 bytes, more than the limit of 262144 (--max-objects-bytes)"),
        ),
    ]
}
