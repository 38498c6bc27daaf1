//! Secrets Manager `GetSecretValue`, by name or ARN, with `VersionId` and
//! `VersionStage`. The value is `SecretString`, else the raw `SecretBinary`.

use super::{FetchError, Fetched, Regions};
use crate::aws::{AwsClients, AwsError, Credentials, Failure, classify};
use crate::secret::SecretBytes;
use crate::spec::ObjectSpec;

pub async fn fetch(
    aws: &AwsClients,
    creds: &Credentials,
    regions: &Regions,
    object: &ObjectSpec,
) -> Result<Fetched, FetchError> {
    let primary = get(
        aws,
        creds,
        &regions.primary,
        &object.name,
        object.version.as_deref(),
        object.version_label.as_deref(),
    )
    .await;
    let error = match primary {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    let Some(failover_region) = regions.failover.as_deref() else {
        return Err(error);
    };
    if !error.failure().is_retryable() {
        return Err(error);
    }
    tracing::warn!(object = %object.name, region = %regions.primary, error = %error,
        "primary region failed with a retryable error; trying the failover region");
    let (name, version, label) = match &object.failover {
        Some(f) => (f.name.as_str(), f.version.as_deref(), f.version_label.as_deref()),
        None => (
            object.name.as_str(),
            object.version.as_deref(),
            object.version_label.as_deref(),
        ),
    };
    get(aws, creds, failover_region, name, version, label)
        .await
        .map_err(|failover| FetchError::SecretAllRegions {
            name: object.name.clone(),
            primary: Box::new(error),
            failover: Box::new(failover),
        })
}

async fn get(
    aws: &AwsClients,
    creds: &Credentials,
    region: &str,
    id: &str,
    version_id: Option<&str>,
    stage: Option<&str>,
) -> Result<Fetched, FetchError> {
    let err = |error: AwsError| FetchError::Secret {
        name: id.to_string(),
        region: region.to_string(),
        error,
    };
    let mut out = aws
        .secrets_manager(region, creds)
        .get_secret_value()
        .secret_id(id)
        .set_version_id(version_id.map(str::to_string))
        .set_version_stage(stage.map(str::to_string))
        .send()
        .await
        .map_err(|e| err(classify(&e)))?;
    let value = match (out.secret_string.take(), out.secret_binary.take()) {
        (Some(s), _) => SecretBytes::from(s),
        (None, Some(b)) => SecretBytes::from(b.into_inner()),
        (None, None) => {
            return Err(err(AwsError {
                failure: Failure::Rejected,
                code: None,
                message: "the secret version has neither SecretString nor SecretBinary".to_string(),
            }));
        }
    };
    Ok(Fetched {
        value,
        version: out.version_id.take().unwrap_or_default(),
    })
}
