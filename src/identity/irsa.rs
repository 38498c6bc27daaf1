//! IRSA: STS `AssumeRoleWithWebIdentity` with the pod's `sts.amazonaws.com`
//! token. The STS client comes from the shared configuration, so
//! `AWS_ENDPOINT_URL_STS`, FIPS and proxy settings apply to it as well.

use std::time::SystemTime;

use super::IdentityError;
use crate::aws::{AwsClients, AwsError, Credentials, no_client};
use crate::failure::Failure;
use crate::secret::SecretString;
use crate::telemetry::Family;

/// Assumes `role` with the pod's web-identity token in `region`.
pub async fn assume_role(
    aws: &AwsClients,
    region: &str,
    role: &str,
    session: &str,
    token: &SecretString,
) -> Result<Credentials, IdentityError> {
    let err = |error| IdentityError::Sts {
        role: role.to_string(),
        region: region.to_string(),
        error,
    };
    let client = aws.sts(region).ok_or_else(|| err(no_client(region)))?;
    let send = client
        .assume_role_with_web_identity()
        .role_arn(role)
        .role_session_name(session)
        .web_identity_token(token.expose())
        .send();
    let out = aws
        .call(Family::Sts, "AssumeRoleWithWebIdentity", send)
        .await
        .map_err(err)?;
    let creds = out.credentials.ok_or_else(|| IdentityError::Sts {
        role: role.to_string(),
        region: region.to_string(),
        error: AwsError {
            failure: Failure::Unavailable,
            code: None,
            message: "the response carried no credentials".to_string(),
        },
    })?;
    Ok(Credentials {
        access_key_id: creds.access_key_id,
        secret_access_key: SecretString::new(creds.secret_access_key),
        session_token: SecretString::new(creds.session_token),
        expiration: SystemTime::try_from(creds.expiration).ok(),
    })
}
