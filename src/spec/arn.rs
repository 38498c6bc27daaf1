//! ARN parsing and the rules that tie an ARN to an object type and a region.

use super::ObjectKind;

/// The parts of `arn:partition:service:region:account:resource` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Whether a name is meant as an ARN (the reference's test: an `arn:` prefix).
pub fn is_arn(name: &str) -> bool {
    name.starts_with("arn:")
}

/// Parses an ARN: the `arn:` prefix and at least six `:`-separated sections
/// (the resource may contain further colons).
pub fn parse(name: &str) -> Option<Arn<'_>> {
    let mut parts = name.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let partition = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    Some(Arn {
        partition,
        service,
        region,
        account,
        resource,
    })
}

/// The object kind an ARN service names: `secretsmanager`, `ssm` /
/// `ssmparameter` for Parameter Store, or `acm`.
pub fn kind_of_service(service: &str) -> Option<ObjectKind> {
    match service {
        "secretsmanager" => Some(ObjectKind::SecretsManager),
        "ssm" | "ssmparameter" => Some(ObjectKind::Ssm),
        "acm" => Some(ObjectKind::Acm),
        _ => None,
    }
}

/// The object kind an `objectType` names. Unlike ARN services, `ssm` is
/// not accepted here.
pub fn kind_of_object_type(object_type: &str) -> Option<ObjectKind> {
    match object_type {
        "secretsmanager" => Some(ObjectKind::SecretsManager),
        "ssmparameter" => Some(ObjectKind::Ssm),
        "acm" => Some(ObjectKind::Acm),
        _ => None,
    }
}

/// Whether `name` is an ACM certificate ARN:
/// `arn:<partition>:acm:<region>:<account>:certificate/<id>`, each part
/// present.
pub fn is_certificate_arn(name: &str) -> bool {
    parse(name).is_some_and(|a| {
        a.service == "acm"
            && !a.region.is_empty()
            && !a.account.is_empty()
            && a.resource
                .strip_prefix("certificate/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secrets_manager_arn_with_colons_in_resource() {
        let a = parse("arn:aws:secretsmanager:us-west-2:123456789012:secret:db-AbCdEf").unwrap();
        assert_eq!(a.service, "secretsmanager");
        assert_eq!(a.region, "us-west-2");
        assert_eq!(a.account, "123456789012");
        assert_eq!(a.resource, "secret:db-AbCdEf");
        assert_eq!(a.partition, "aws");
    }

    #[test]
    fn rejects_arn_with_too_few_sections() {
        assert!(parse("arn:aws:secretsmanager:us-west-2").is_none());
        assert!(parse("arn:aws:ssm:us-west-2:123").is_none());
        assert!(parse("notarn:aws:ssm:us-west-2:1:parameter/x").is_none());
    }

    #[test]
    fn ssm_is_a_service_but_not_an_object_type() {
        assert_eq!(kind_of_service("ssm"), Some(ObjectKind::Ssm));
        assert_eq!(kind_of_object_type("ssm"), None);
        assert_eq!(kind_of_object_type("ssmparameter"), Some(ObjectKind::Ssm));
        assert_eq!(kind_of_object_type("SecretsManager"), None);
    }
}
