//! Role chaining: `assumeRoleArn`, `assumeRoleExternalId`,
//! `assumeRoleDurationSeconds`, `assumeRoleSourceIdentity` and
//! `assumeRoleSessionTags`, as class parameters (every object) and as
//! fields of an object (that object, overriding the class). The pod's own
//! credentials assume the role before its objects are fetched.

use crate::limits::Echo;

/// The class parameters and object fields.
pub mod keys {
    pub const ARN: &str = "assumeRoleArn";
    pub const EXTERNAL_ID: &str = "assumeRoleExternalId";
    pub const DURATION: &str = "assumeRoleDurationSeconds";
    pub const SOURCE_IDENTITY: &str = "assumeRoleSourceIdentity";
    pub const SESSION_TAGS: &str = "assumeRoleSessionTags";
}

/// STS's bounds of `DurationSeconds`.
pub const MIN_DURATION: u32 = 900;
pub const MAX_DURATION: u32 = 43_200;
/// AWS limits a session obtained from another role's session (role
/// chaining, which is what assuming a role from IRSA or Pod Identity
/// credentials is) to one hour: longer durations are requested as this.
pub const CHAINED_MAX_DURATION: u32 = 3_600;
/// STS's bounds of `ExternalId` and of a role ARN.
const EXTERNAL_ID_LEN: std::ops::RangeInclusive<usize> = 2..=1224;
const ROLE_ARN_MAX: usize = 2048;

/// A role that the pod's own credentials assume (STS `AssumeRole`) before
/// fetching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssumeRole {
    pub arn: String,
    pub external_id: Option<String>,
    /// `DurationSeconds` as asked (900 to 43200); STS's default when unset.
    pub duration_seconds: Option<u32>,
    /// Send the session name as `SourceIdentity` (needs
    /// `sts:SetSourceIdentity` in the role's trust policy).
    pub source_identity: bool,
    /// Send the namespace, ServiceAccount and cluster name as transitive
    /// session tags (needs `sts:TagSession`).
    pub session_tags: bool,
}

impl AssumeRole {
    /// The `DurationSeconds` to send: what the class asked, within the one
    /// hour AWS allows a chained session.
    pub fn requested_duration(&self) -> Option<i32> {
        self.duration_seconds.map(|d| d.min(CHAINED_MAX_DURATION) as i32)
    }
}

/// Where the fields were set: the class or one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Class,
    Object(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Class => f.write_str("the SecretProviderClass"),
            Owner::Object(name) => write!(f, "object {}", Echo(name)),
        }
    }
}

/// An invalid role-chaining field. The external id is never echoed (it is
/// not secret, but it is the one thing an attacker guessing a confused
/// deputy would want).
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(
        "{key} of {owner} must be an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>): {}",
        Echo(.value),
        key = keys::ARN
    )]
    InvalidArn { owner: Owner, value: String },
    #[error(
        "{key} of {owner} must be 2 to 1224 characters of letters, digits and +=,.@:/-",
        key = keys::EXTERNAL_ID
    )]
    InvalidExternalId { owner: Owner },
    #[error(
        "{key} of {owner} must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}: {}",
        Echo(.value),
        key = keys::DURATION
    )]
    InvalidDuration { owner: Owner, value: String },
    #[error(
        "{key} of {owner} must be true or false: {}",
        Echo(.value)
    )]
    InvalidBool {
        owner: Owner,
        key: &'static str,
        value: String,
    },
    #[error(
        "{field} of {owner} needs {arn} on the same {}: an external id, a duration or attribution belongs to the role it is used with",
        if matches!(.owner, Owner::Class) { "class" } else { "object" },
        arn = keys::ARN
    )]
    WithoutArn { owner: Owner, field: &'static str },
}

/// The role-chaining fields of a class or an object, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub arn: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub duration: Option<&'a str>,
    pub source_identity: Option<&'a str>,
    pub session_tags: Option<&'a str>,
}

/// The fields of `owner`, validated; `None` when none is set (empty values
/// count as unset, as for every class parameter).
pub fn parse(owner: Owner, fields: Fields<'_>) -> Result<Option<AssumeRole>, RoleError> {
    let external_id = set(fields.external_id);
    let others = [
        (keys::EXTERNAL_ID, external_id),
        (keys::DURATION, set(fields.duration)),
        (keys::SOURCE_IDENTITY, set(fields.source_identity)),
        (keys::SESSION_TAGS, set(fields.session_tags)),
    ];
    let Some(arn) = set(fields.arn) else {
        return match others.iter().find(|(_, v)| v.is_some()) {
            None => Ok(None),
            Some(&(field, _)) => Err(RoleError::WithoutArn { owner, field }),
        };
    };
    if !is_role_arn(arn) {
        return Err(RoleError::InvalidArn {
            owner,
            value: arn.to_string(),
        });
    }
    if let Some(id) = external_id
        && !(EXTERNAL_ID_LEN.contains(&id.len()) && id.chars().all(is_external_id_char))
    {
        return Err(RoleError::InvalidExternalId { owner });
    }
    let duration_seconds = match set(fields.duration) {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(n) if (MIN_DURATION..=MAX_DURATION).contains(&n) => Some(n),
            _ => {
                return Err(RoleError::InvalidDuration {
                    owner,
                    value: d.to_string(),
                });
            }
        },
    };
    let flag = |key: &'static str, value: Option<&str>| match set(value) {
        None => Ok(false),
        Some(v) => super::parse_go_bool(v).ok_or_else(|| RoleError::InvalidBool {
            owner: owner.clone(),
            key,
            value: v.to_string(),
        }),
    };
    Ok(Some(AssumeRole {
        arn: arn.to_string(),
        external_id: external_id.map(str::to_string),
        duration_seconds,
        source_identity: flag(keys::SOURCE_IDENTITY, fields.source_identity)?,
        session_tags: flag(keys::SESSION_TAGS, fields.session_tags)?,
    }))
}

fn set(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty())
}

/// `arn:<partition>:iam::<12 digits>:role/<path/name>`, within STS's length
/// and character set.
fn is_role_arn(arn: &str) -> bool {
    if arn.len() > ROLE_ARN_MAX {
        return false;
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let name = resource.strip_prefix("role/").unwrap_or("");
    prefix == "arn"
        && partition.starts_with("aws")
        && partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
}

fn is_external_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::111111111111:role/secrets-reader";

    #[test]
    fn role_arns_are_iam_role_arns() {
        for ok in [
            ROLE,
            "arn:aws-cn:iam::111111111111:role/path/to/r",
            "arn:aws-us-gov:iam::111111111111:role/a+b=c,d.e@f_g-h",
        ] {
            assert!(is_role_arn(ok), "{ok}");
        }
        for bad in [
            "secrets-reader",
            "arn:aws:iam::111111111111:user/x",
            "arn:aws:iam::11111111111:role/x",
            "arn:aws:iam:us-east-1:111111111111:role/x",
            "arn:aws:sts::111111111111:role/x",
            "arn:aws:iam::111111111111:role/",
            "arn:aws:iam::111111111111:role/x y",
            "arn:aws:iam::111111111111:role/x/",
            "arn:other:iam::111111111111:role/x",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
        assert!(!is_role_arn(&format!("{ROLE}{}", "x".repeat(2048))));
    }

    #[test]
    fn fields_are_validated_and_name_their_owner() {
        let object = || Owner::Object("db".to_string());
        let f = |arn, external_id, duration| Fields {
            arn,
            external_id,
            duration,
            ..Fields::default()
        };
        let parse = |owner, (arn, external_id, duration)| parse(owner, f(arn, external_id, duration));
        assert_eq!(parse(Owner::Class, (None, Some(""), Some(""))).unwrap(), None);
        let r = parse(Owner::Class, (Some(ROLE), Some("tenant-42"), Some("7200")))
            .unwrap()
            .unwrap();
        assert!(!r.source_identity && !r.session_tags, "attribution is opt-in");
        assert_eq!(
            r.requested_duration(),
            Some(3600),
            "chained sessions last at most an hour"
        );
        let err = |e: RoleError| e.to_string();
        let msg = err(parse(object(), (Some(ROLE), None, Some("899"))).unwrap_err());
        assert!(
            msg.contains("assumeRoleDurationSeconds of object db") && msg.contains("900 to 43200"),
            "{msg}"
        );
        assert!(parse(object(), (Some(ROLE), None, Some("43201"))).is_err());
        assert!(parse(object(), (Some(ROLE), None, Some("1h"))).is_err());
        let msg = err(parse(object(), (Some(ROLE), Some("a b"), None)).unwrap_err());
        assert!(
            msg.contains("assumeRoleExternalId of object db") && !msg.contains("a b"),
            "{msg}"
        );
        assert!(parse(object(), (Some(ROLE), Some("x"), None)).is_err(), "too short");
        let msg = err(parse(Owner::Class, (None, Some("tenant-42"), None)).unwrap_err());
        assert!(msg.contains("needs assumeRoleArn on the same class"), "{msg}");
        let msg = err(parse(object(), (Some("role/x"), None, None)).unwrap_err());
        assert!(
            msg.contains("assumeRoleArn of object db must be an IAM role ARN"),
            "{msg}"
        );
    }

    #[test]
    fn attribution_is_asked_per_role_and_checked() {
        let with = |source_identity, session_tags| Fields {
            arn: Some(ROLE),
            source_identity,
            session_tags,
            ..Fields::default()
        };
        let r = parse(Owner::Class, with(Some("true"), Some("True"))).unwrap().unwrap();
        assert!(r.source_identity && r.session_tags);
        let r = parse(Owner::Class, with(Some("false"), None)).unwrap().unwrap();
        assert!(!r.source_identity && !r.session_tags);
        let msg = parse(Owner::Object("db".into()), with(None, Some("yes")))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "assumeRoleSessionTags of object db must be true or false: yes");
        let alone = Fields {
            source_identity: Some("true"),
            ..Fields::default()
        };
        let msg = parse(Owner::Class, alone).unwrap_err().to_string();
        assert!(
            msg.starts_with("assumeRoleSourceIdentity of the SecretProviderClass needs assumeRoleArn"),
            "{msg}"
        );
    }
}
