//! The pod's own AWS identity. IRSA: the ServiceAccount's role annotation,
//! then STS `AssumeRoleWithWebIdentity` with the pod's token. EKS Pod
//! Identity: the node-local agent with the pod's token. A pod's AWS calls
//! are signed only with the credentials obtained here for that pod; there
//! is no fallback to the provider's own credentials.

pub mod irsa;
pub mod pod_identity;

use crate::aws::{AwsClients, AwsError, Credentials, Failure};
use crate::kube::{KubeClient, KubeError};
use crate::spec::{AuthMode, MountSpec};

pub use pod_identity::{PodIdentityClient, PodIdentityConfig};

/// Why the pod's credentials could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("missing attribute {0}: ensure podInfoOnMount is true in the CSIDriver")]
    MissingPodAttribute(&'static str),
    #[error("failed to get service account {namespace}/{name}: {source}")]
    ServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("An IAM role must be associated with service account {name} (namespace: {namespace})")]
    NoRole { namespace: String, name: String },
    #[error("failed to assume role {role} with web identity (STS in {region}): {error}")]
    Sts {
        role: String,
        region: String,
        error: AwsError,
    },
    #[error("no region to call STS in")]
    NoRegion,
    #[error("failed to get credentials from the EKS Pod Identity Agent at {url}: {message}")]
    PodIdentity {
        url: String,
        failure: Failure,
        message: String,
    },
}

impl IdentityError {
    pub fn failure(&self) -> Failure {
        match self {
            IdentityError::MissingPodAttribute(_) | IdentityError::NoRole { .. } | IdentityError::NoRegion => {
                Failure::Rejected
            }
            IdentityError::ServiceAccount { source, .. } => {
                if source.is_forbidden() {
                    Failure::AccessDenied
                } else {
                    match source {
                        KubeError::Api(kube::Error::Api(s)) if s.code == 404 => Failure::NotFound,
                        _ => Failure::Unavailable,
                    }
                }
            }
            IdentityError::Sts { error, .. } => error.failure,
            IdentityError::PodIdentity { failure, .. } => *failure,
        }
    }
}

/// Obtains the credentials of the pod a mount is for.
pub struct IdentityResolver {
    pub aws: AwsClients,
    pub kube: KubeClient,
    pub pod_identity: PodIdentityClient,
}

impl IdentityResolver {
    /// Credentials for the pod of `spec`, using `regions` (primary first) for
    /// STS: a retryable STS failure in the primary region moves on to the
    /// failover region.
    pub async fn credentials(&self, spec: &MountSpec, regions: &[String]) -> Result<Credentials, IdentityError> {
        match spec.auth {
            AuthMode::Irsa => {
                let namespace = spec
                    .pod
                    .namespace
                    .as_deref()
                    .ok_or(IdentityError::MissingPodAttribute(crate::spec::keys::POD_NAMESPACE))?;
                let sa = spec
                    .pod
                    .service_account
                    .as_deref()
                    .ok_or(IdentityError::MissingPodAttribute(crate::spec::keys::SERVICE_ACCOUNT))?;
                let role = self
                    .kube
                    .service_account_role(namespace, sa)
                    .await
                    .map_err(|source| IdentityError::ServiceAccount {
                        namespace: namespace.to_string(),
                        name: sa.to_string(),
                        source,
                    })?
                    .ok_or_else(|| IdentityError::NoRole {
                        namespace: namespace.to_string(),
                        name: sa.to_string(),
                    })?;
                let session = irsa::session_name(namespace, spec.pod.name.as_deref().unwrap_or(sa));
                // STS is regional: a retryable failure in the primary
                // region moves on to the failover region, if any.
                let mut regions = regions.iter().peekable();
                while let Some(region) = regions.next() {
                    match irsa::assume_role(&self.aws, region, &role, &session, &spec.token).await {
                        Err(e) if e.failure().is_retryable() && regions.peek().is_some() => {
                            tracing::warn!(%region, error = %e, "STS call failed; trying the next region");
                        }
                        result => return result,
                    }
                }
                Err(IdentityError::NoRegion)
            }
            AuthMode::PodIdentity(preference) => self.pod_identity.credentials(preference, &spec.token).await,
        }
    }
}
