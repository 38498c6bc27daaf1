//! Role chaining: STS `AssumeRole` signed with the pod's own credentials
//! (IRSA or Pod Identity), for the role a class or an object names in
//! `assumeRoleArn`. The STS client comes from the shared configuration, so
//! the regional endpoint, `AWS_ENDPOINT_URL_STS`, FIPS and proxy settings
//! apply as for IRSA.

use std::time::SystemTime;

use super::IdentityError;
use super::attribution::{self, tags};
use crate::aws::{AwsClients, AwsError, Credentials, no_client};
use crate::failure::Failure;
use crate::limits::Echo;
use crate::secret::SecretString;
use crate::spec::AssumeRole;
use crate::telemetry::Family;

/// Who a chained session is for, as AWS records it: the session name, and
/// what `SourceIdentity` and the session tags carry when the role asks for
/// them.
#[derive(Debug, Clone)]
pub struct Workload {
    pub session: String,
    pub namespace: String,
    pub service_account: String,
    /// `--cluster-name`, for the `eks-cluster-name` tag.
    pub cluster: Option<String>,
    /// The source session carries these tags already, transitively (EKS
    /// Pod Identity's): STS refuses a tag passed again, so none is sent.
    pub inherits_tags: bool,
}

impl Workload {
    /// The transitive session tags of this workload.
    fn tags(&self) -> Vec<aws_sdk_sts::types::Tag> {
        [
            (tags::NAMESPACE, Some(&self.namespace)),
            (tags::SERVICE_ACCOUNT, Some(&self.service_account)),
            (tags::CLUSTER_NAME, self.cluster.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            let value = attribution::tag_value(value?);
            aws_sdk_sts::types::Tag::builder().key(key).value(value).build().ok()
        })
        .collect()
    }
}

/// Assumes `role` in `region` with `source` credentials (which belong to
/// `source_identity`, named in errors) for `workload`.
pub async fn assume_role(
    aws: &AwsClients,
    region: &str,
    source: &Credentials,
    role: &AssumeRole,
    workload: &Workload,
    source_identity: &str,
) -> Result<Credentials, IdentityError> {
    let err = |error| {
        IdentityError::Chain(Box::new(ChainError {
            role: role.arn.clone(),
            source_identity: source_identity.to_string(),
            external_id: role.external_id.is_some(),
            attribution: permissions(role),
            region: region.to_string(),
            error,
        }))
    };
    let client = aws.sts(region).ok_or_else(|| err(no_client(region)))?;
    let tags = (role.session_tags && !workload.inherits_tags).then(|| workload.tags());
    let transitive = tags
        .as_ref()
        .map(|t| t.iter().map(|t| t.key().to_string()).collect::<Vec<_>>());
    let send = client
        .assume_role()
        .role_arn(&role.arn)
        .role_session_name(&workload.session)
        .set_external_id(role.external_id.clone())
        .set_duration_seconds(role.requested_duration())
        .set_source_identity(role.source_identity.then(|| workload.session.clone()))
        .set_tags(tags)
        .set_transitive_tag_keys(transitive)
        .customize()
        .config_override(source.for_sts())
        .send();
    let out = aws.call(Family::Chain, "AssumeRole", send).await.map_err(err)?;
    let Some(creds) = out.credentials else {
        return Err(err(AwsError {
            failure: Failure::Unavailable,
            code: None,
            message: "the response carried no credentials".to_string(),
        }));
    };
    Ok(Credentials {
        access_key_id: creds.access_key_id,
        secret_access_key: SecretString::new(creds.secret_access_key),
        session_token: SecretString::new(creds.session_token),
        expiration: SystemTime::try_from(creds.expiration).ok(),
    })
}

/// A failed `AssumeRole`: the target, who asked, and what to check.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to assume role {} from {source_identity} (STS in {region}): {error}{}",
    Echo(&self.role),
    hint(&self.error, &self.role, &self.source_identity, self.external_id, &self.attribution)
)]
pub struct ChainError {
    pub role: String,
    pub source_identity: String,
    /// Whether an external id was sent (never the id itself).
    pub external_id: bool,
    /// The trust-policy actions the attribution asked for needs.
    pub attribution: Vec<&'static str>,
    pub region: String,
    pub error: AwsError,
}

/// The trust-policy actions that `role`'s attribution needs besides
/// `sts:AssumeRole`.
fn permissions(role: &AssumeRole) -> Vec<&'static str> {
    let mut out = Vec::new();
    if role.source_identity {
        out.push("sts:SetSourceIdentity");
    }
    if role.session_tags {
        out.push("sts:TagSession");
    }
    out
}

/// What to check after an `AssumeRole` denial: both sides of the chain.
fn hint(error: &AwsError, role: &str, source_identity: &str, external_id: bool, attribution: &[&str]) -> String {
    if error.failure != Failure::AccessDenied {
        return String::new();
    }
    let condition = if external_id {
        " with the class's sts:ExternalId"
    } else {
        ""
    };
    let granted: String = attribution.iter().map(|a| format!(" and {a}")).collect();
    let also = match attribution {
        [] => String::new(),
        actions => format!(
            " and {} (the class asks for {})",
            actions.join(" and "),
            actions
                .iter()
                .map(|a| match *a {
                    "sts:SetSourceIdentity" => crate::spec::role::keys::SOURCE_IDENTITY,
                    _ => crate::spec::role::keys::SESSION_TAGS,
                })
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    };
    format!(
        ". Check that the trust policy of {} allows {source_identity} to call sts:AssumeRole{condition}{also}, and \
         that {source_identity} has an IAM policy allowing sts:AssumeRole{granted} on {}",
        Echo(role),
        Echo(role)
    )
}
