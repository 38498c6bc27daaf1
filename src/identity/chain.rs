//! Role chaining: STS `AssumeRole` signed with the pod's own credentials
//! (IRSA or Pod Identity), for the role a class or an object names in
//! `assumeRoleArn`. The STS client comes from the shared configuration, so
//! the regional endpoint, `AWS_ENDPOINT_URL_STS`, FIPS and proxy settings
//! apply as for IRSA.

use std::time::SystemTime;

use super::IdentityError;
use crate::aws::{AwsClients, AwsError, Credentials, no_client};
use crate::failure::Failure;
use crate::limits::Echo;
use crate::secret::SecretString;
use crate::spec::AssumeRole;
use crate::telemetry::Family;

/// Assumes `role` in `region` with `source` credentials (which belong to
/// `source_identity`, named in errors).
pub async fn assume_role(
    aws: &AwsClients,
    region: &str,
    source: &Credentials,
    role: &AssumeRole,
    session: &str,
    source_identity: &str,
) -> Result<Credentials, IdentityError> {
    let err = |error| {
        IdentityError::Chain(Box::new(ChainError {
            role: role.arn.clone(),
            source_identity: source_identity.to_string(),
            external_id: role.external_id.is_some(),
            region: region.to_string(),
            error,
        }))
    };
    let client = aws.sts(region).ok_or_else(|| err(no_client(region)))?;
    let send = client
        .assume_role()
        .role_arn(&role.arn)
        .role_session_name(session)
        .set_external_id(role.external_id.clone())
        .set_duration_seconds(role.requested_duration())
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
    hint(&self.error, &self.role, &self.source_identity, self.external_id)
)]
pub struct ChainError {
    pub role: String,
    pub source_identity: String,
    /// Whether an external id was sent (never the id itself).
    pub external_id: bool,
    pub region: String,
    pub error: AwsError,
}

/// What to check after an `AssumeRole` denial: both sides of the chain.
fn hint(error: &AwsError, role: &str, source_identity: &str, external_id: bool) -> String {
    if error.failure != Failure::AccessDenied {
        return String::new();
    }
    let condition = if external_id {
        " with the class's sts:ExternalId"
    } else {
        ""
    };
    format!(
        ". Check that the trust policy of {} allows {source_identity} to call sts:AssumeRole{condition}, and that \
         {source_identity} has an IAM policy allowing sts:AssumeRole on {}",
        Echo(role),
        Echo(role)
    )
}
