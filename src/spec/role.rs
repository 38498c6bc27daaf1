//! Role chaining: `assumeRoleArn`, `assumeRoleExternalId` and
//! `assumeRoleDurationSeconds`, as class parameters (every object) and as
//! fields of an object (that object, overriding the class). The pod's own
//! credentials assume the role before its objects are fetched.

use crate::limits::Echo;

/// The class parameters and object fields.
pub mod keys {
    pub const ARN: &str = "assumeRoleArn";
    pub const EXTERNAL_ID: &str = "assumeRoleExternalId";
    pub const DURATION: &str = "assumeRoleDurationSeconds";
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
        "{field} of {owner} needs {arn} on the same {}: an external id or a duration belongs to the role it is used with",
        if matches!(.owner, Owner::Class) { "class" } else { "object" },
        arn = keys::ARN
    )]
    WithoutArn { owner: Owner, field: &'static str },
}

/// The three fields of `owner`, validated; `None` when none is set (empty
/// values count as unset, as for every class parameter).
pub fn parse(
    owner: Owner,
    arn: Option<&str>,
    external_id: Option<&str>,
    duration: Option<&str>,
) -> Result<Option<AssumeRole>, RoleError> {
    let (arn, external_id, duration) = (set(arn), set(external_id), set(duration));
    let Some(arn) = arn else {
        return match (external_id, duration) {
            (None, None) => Ok(None),
            (Some(_), _) => Err(RoleError::WithoutArn {
                owner,
                field: keys::EXTERNAL_ID,
            }),
            (None, Some(_)) => Err(RoleError::WithoutArn {
                owner,
                field: keys::DURATION,
            }),
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
    let duration_seconds = match duration {
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
    Ok(Some(AssumeRole {
        arn: arn.to_string(),
        external_id: external_id.map(str::to_string),
        duration_seconds,
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
        assert_eq!(parse(Owner::Class, None, Some(""), Some("")).unwrap(), None);
        let r = parse(Owner::Class, Some(ROLE), Some("tenant-42"), Some("7200"))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.requested_duration(),
            Some(3600),
            "chained sessions last at most an hour"
        );
        let err = |e: RoleError| e.to_string();
        let msg = err(parse(object(), Some(ROLE), None, Some("899")).unwrap_err());
        assert!(
            msg.contains("assumeRoleDurationSeconds of object db") && msg.contains("900 to 43200"),
            "{msg}"
        );
        assert!(parse(object(), Some(ROLE), None, Some("43201")).is_err());
        assert!(parse(object(), Some(ROLE), None, Some("1h")).is_err());
        let msg = err(parse(object(), Some(ROLE), Some("a b"), None).unwrap_err());
        assert!(
            msg.contains("assumeRoleExternalId of object db") && !msg.contains("a b"),
            "{msg}"
        );
        assert!(parse(object(), Some(ROLE), Some("x"), None).is_err(), "too short");
        let msg = err(parse(Owner::Class, None, Some("tenant-42"), None).unwrap_err());
        assert!(msg.contains("needs assumeRoleArn on the same class"), "{msg}");
        let msg = err(parse(object(), Some("role/x"), None, None).unwrap_err());
        assert!(
            msg.contains("assumeRoleArn of object db must be an IAM role ARN"),
            "{msg}"
        );
    }
}
