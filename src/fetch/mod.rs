//! Fetching the values of a mount's objects: Secrets Manager one object per
//! call, SSM in batches of up to ten selectors. Units run concurrently
//! (bounded) and the result is all or nothing. Each unit asks the primary
//! region first and the failover region only when the primary failed with a
//! retryable error (throttling, 5xx, timeout, connection failure).

pub mod secrets_manager;
pub mod ssm;

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt, stream};

use crate::aws::{AwsClients, AwsError, Credentials, Failure};
use crate::secret::SecretBytes;
use crate::spec::{ObjectKind, ObjectSpec};

/// Concurrent AWS calls per mount.
pub const CONCURRENCY: usize = 8;

/// A fetched value and its version in the store.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub value: SecretBytes,
    pub version: String,
}

/// The regions of a mount: primary, and the optional failover.
#[derive(Debug, Clone)]
pub struct Regions {
    pub primary: String,
    pub failover: Option<String>,
}

impl Regions {
    pub fn as_vec(&self) -> Vec<String> {
        std::iter::once(self.primary.clone())
            .chain(self.failover.clone())
            .collect()
    }
}

/// Why an object could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("failed to fetch secret {name} from Secrets Manager in {region}: {error}")]
    Secret {
        name: String,
        region: String,
        error: AwsError,
    },
    #[error("failed to fetch parameters {names} from SSM Parameter Store in {region}: {error}")]
    Parameters {
        names: String,
        region: String,
        error: AwsError,
    },
    #[error(
        "parameter {selector} not found in SSM Parameter Store in {region} (reported as invalid parameters: {invalid})"
    )]
    ParameterNotFound {
        selector: String,
        region: String,
        invalid: String,
    },
    #[error("SSM Parameter Store in {region} returned no value for parameter {selector}")]
    ParameterMissing { selector: String, region: String },
    #[error(
        "Failed to fetch secret from all regions. Verify secret exists and required permissions are granted for: {name}: {primary}; failover: {failover}"
    )]
    SecretAllRegions {
        name: String,
        primary: Box<FetchError>,
        failover: Box<FetchError>,
    },
    #[error("Failed to fetch parameters from all regions. {primary}; failover: {failover}")]
    ParametersAllRegions {
        primary: Box<FetchError>,
        failover: Box<FetchError>,
    },
}

impl FetchError {
    pub fn failure(&self) -> Failure {
        match self {
            FetchError::Secret { error, .. } | FetchError::Parameters { error, .. } => error.failure,
            FetchError::ParameterNotFound { .. } => Failure::NotFound,
            FetchError::ParameterMissing { .. } => Failure::Unavailable,
            FetchError::SecretAllRegions { failover, .. } | FetchError::ParametersAllRegions { failover, .. } => {
                failover.failure()
            }
        }
    }
}

/// One unit of work: a Secrets Manager object, or a batch of SSM objects.
enum Unit<'a> {
    Secret(usize, &'a ObjectSpec),
    Parameters(Vec<(usize, &'a ObjectSpec)>),
}

/// A running unit: the values of its objects, by object index.
type UnitFuture<'a> = BoxFuture<'a, Result<Vec<(usize, Fetched)>, FetchError>>;

/// Fetches every object, returning values in object order.
pub async fn fetch_all(
    aws: &AwsClients,
    creds: &Credentials,
    regions: &Regions,
    objects: &[ObjectSpec],
) -> Result<Vec<Fetched>, FetchError> {
    let mut units = Vec::new();
    let mut ssm_objects = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        match o.kind {
            ObjectKind::SecretsManager => units.push(Unit::Secret(i, o)),
            ObjectKind::Ssm => ssm_objects.push((i, o)),
        }
    }
    units.extend(
        ssm::batches(ssm_objects, |o| (o.name.clone(), o.ssm_selector()))
            .into_iter()
            .map(Unit::Parameters),
    );

    // Futures are lazy: building them all up front still runs at most
    // CONCURRENCY at a time.
    let futures: Vec<UnitFuture<'_>> = units
        .into_iter()
        .map(|unit| match unit {
            Unit::Secret(i, o) => async move {
                secrets_manager::fetch(aws, creds, regions, o)
                    .await
                    .map(|f| vec![(i, f)])
            }
            .boxed(),
            Unit::Parameters(batch) => async move { ssm::fetch(aws, creds, regions, &batch).await }.boxed(),
        })
        .collect();
    let results: Vec<Vec<(usize, Fetched)>> = stream::iter(futures).buffered(CONCURRENCY).try_collect().await?;

    let mut slots: Vec<Option<Fetched>> = vec![None; objects.len()];
    for (i, f) in results.into_iter().flatten() {
        slots[i] = Some(f);
    }
    slots
        .into_iter()
        .zip(objects)
        .map(|(slot, o)| {
            slot.ok_or_else(|| FetchError::ParameterMissing {
                selector: o.name.clone(),
                region: regions.primary.clone(),
            })
        })
        .collect()
}
