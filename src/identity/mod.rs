//! The pod's own AWS identity. IRSA: the ServiceAccount's role annotation,
//! then STS `AssumeRoleWithWebIdentity` with the pod's token. EKS Pod
//! Identity: the node-local agent with the pod's token. A pod's AWS calls
//! are signed only with the credentials obtained here for that pod; there
//! is no fallback to the provider's own credentials.

pub mod irsa;
pub mod pod_identity;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::aws::{AwsClients, AwsError, Credentials, Failure};
use crate::cache::Cache;
use crate::kube::{KubeClient, KubeError};
use crate::spec::{AuthMode, MountSpec};
use crate::telemetry::{Family, Metrics, outcome};

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
    #[error(transparent)]
    Shared(Arc<IdentityError>),
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
            IdentityError::Shared(e) => e.failure(),
        }
    }
}

/// Who a mount acts as. Credentials and values are cached per key and
/// never served to another key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// IRSA: a role's trust policy may admit only some ServiceAccounts, so
    /// the role alone is never the key.
    Irsa {
        role: String,
        namespace: String,
        service_account: String,
    },
    /// Pod Identity: per pod by default (the agent's session tags carry the
    /// pod name and UID), or per ServiceAccount when configured.
    PodIdentity {
        namespace: String,
        service_account: String,
        pod_uid: Option<String>,
    },
}

/// How Pod Identity credentials are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PodIdentityScope {
    /// One set of credentials per pod (namespace, ServiceAccount, pod UID).
    #[default]
    Pod,
    /// One set per ServiceAccount (ABAC on pod tags then sees the first pod).
    ServiceAccount,
}

/// Identity caching settings.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Keep credentials until their expiration minus `refresh_margin`.
    pub cache_credentials: bool,
    pub refresh_margin: Duration,
    pub pod_identity_scope: PodIdentityScope,
    /// How long a ServiceAccount's role annotation is kept (zero: not kept).
    pub service_account_ttl: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            cache_credentials: true,
            refresh_margin: Duration::from_secs(300),
            pod_identity_scope: PodIdentityScope::Pod,
            service_account_ttl: Duration::from_secs(30),
        }
    }
}

/// Obtains the credentials of the pod a mount is for.
pub struct IdentityResolver {
    pub aws: AwsClients,
    pub kube: KubeClient,
    pub pod_identity: PodIdentityClient,
    pub settings: IdentitySettings,
    pub metrics: Arc<Metrics>,
    credentials: Cache<IdentityKey, Credentials, IdentityError>,
    roles: Cache<(String, String), Option<String>, IdentityError>,
}

impl IdentityResolver {
    pub fn new(
        aws: AwsClients,
        kube: KubeClient,
        pod_identity: PodIdentityClient,
        settings: IdentitySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            aws,
            kube,
            pod_identity,
            settings,
            metrics,
            credentials: Cache::new(),
            roles: Cache::new(),
        }
    }

    /// The identity of the pod of `spec` and its credentials. STS uses
    /// `regions` in order: a retryable failure in the primary region moves
    /// on to the failover region.
    pub async fn credentials(
        &self,
        spec: &MountSpec,
        regions: &[String],
    ) -> Result<(IdentityKey, Credentials), IdentityError> {
        let namespace = spec
            .pod
            .namespace
            .clone()
            .ok_or(IdentityError::MissingPodAttribute(crate::spec::keys::POD_NAMESPACE))?;
        let sa = spec
            .pod
            .service_account
            .clone()
            .ok_or(IdentityError::MissingPodAttribute(crate::spec::keys::SERVICE_ACCOUNT))?;
        let (key, fetch): (IdentityKey, BoxFuture<'static, Result<Credentials, IdentityError>>) = match spec.auth {
            AuthMode::Irsa => {
                let role = self.role(&namespace, &sa).await?;
                let session = irsa::session_name(&namespace, spec.pod.name.as_deref().unwrap_or(&sa));
                let (aws, token, regions, metrics) = (
                    self.aws.clone(),
                    spec.token.clone(),
                    regions.to_vec(),
                    self.metrics.clone(),
                );
                let r = role.clone();
                let fetch = async move {
                    let mut regions = regions.iter().peekable();
                    while let Some(region) = regions.next() {
                        let result = irsa::assume_role(&aws, region, &r, &session, &token).await;
                        metrics.count(
                            Family::Sts,
                            "AssumeRoleWithWebIdentity",
                            outcome(&result, IdentityError::failure),
                        );
                        match result {
                            Err(e) if e.failure().is_retryable() && regions.peek().is_some() => {
                                tracing::warn!(%region, error = %e, "STS call failed; trying the next region");
                            }
                            result => return result,
                        }
                    }
                    Err(IdentityError::NoRegion)
                }
                .boxed();
                let key = IdentityKey::Irsa {
                    role,
                    namespace,
                    service_account: sa,
                };
                (key, fetch)
            }
            AuthMode::PodIdentity(preference) => {
                let pod_uid = match self.settings.pod_identity_scope {
                    PodIdentityScope::Pod => Some(spec.pod.uid.clone().unwrap_or_default()),
                    PodIdentityScope::ServiceAccount => None,
                };
                let (client, token, metrics) = (self.pod_identity.clone(), spec.token.clone(), self.metrics.clone());
                let fetch = async move {
                    let result = client.credentials(preference, &token).await;
                    metrics.count(
                        Family::PodIdentity,
                        "GetCredentials",
                        outcome(&result, IdentityError::failure),
                    );
                    result
                }
                .boxed();
                let key = IdentityKey::PodIdentity {
                    namespace,
                    service_account: sa,
                    pod_uid,
                };
                (key, fetch)
            }
        };
        if !self.settings.cache_credentials {
            return fetch.await.map(|c| (key, c));
        }
        let margin = self.settings.refresh_margin;
        let (result, lookup) = self
            .credentials
            .get_or_fetch(key.clone(), move || async move {
                let creds = fetch.await?;
                let until = creds
                    .expiration
                    .and_then(|e| e.duration_since(SystemTime::now()).ok())
                    .and_then(|left| left.checked_sub(margin))
                    .map(|keep| Instant::now() + keep);
                Ok((creds, until))
            })
            .await;
        self.metrics.count(Family::Cache, "credentials", lookup.as_str());
        result.map(|c| (key, c)).map_err(IdentityError::Shared)
    }

    /// The IRSA role of a ServiceAccount, through a short-lived cache.
    async fn role(&self, namespace: &str, sa: &str) -> Result<String, IdentityError> {
        let (kube, metrics, ttl) = (
            self.kube.clone(),
            self.metrics.clone(),
            self.settings.service_account_ttl,
        );
        let (ns, name) = (namespace.to_string(), sa.to_string());
        let lookup = move || async move {
            let result = kube.service_account_role(&ns, &name).await;
            metrics.count(
                Family::Kubernetes,
                "serviceaccounts",
                if result.is_ok() { "success" } else { "error" },
            );
            let role = result.map_err(|source| IdentityError::ServiceAccount {
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;
            Ok((role, (!ttl.is_zero()).then(|| Instant::now() + ttl)))
        };
        let role = if self.settings.service_account_ttl.is_zero() {
            lookup().await.map(|(r, _)| r)?
        } else {
            let (result, hit) = self
                .roles
                .get_or_fetch((namespace.to_string(), sa.to_string()), lookup)
                .await;
            self.metrics.count(Family::Cache, "service_account", hit.as_str());
            result.map_err(IdentityError::Shared)?
        };
        role.ok_or_else(|| IdentityError::NoRole {
            namespace: namespace.to_string(),
            name: sa.to_string(),
        })
    }
}
