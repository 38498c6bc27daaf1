//! The pod's own AWS identity. IRSA: the ServiceAccount's role annotation,
//! then STS `AssumeRoleWithWebIdentity` with the pod's token. EKS Pod
//! Identity: the node-local agent with the pod's token. A pod's AWS calls
//! are signed only with the credentials obtained here for that pod; there
//! is no fallback to the provider's own credentials.

pub mod attribution;
pub mod chain;
pub mod irsa;
pub mod pod_identity;

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::aws::{AwsClients, AwsError, Credentials};
use crate::cache::{Abandoned, Cache};
use crate::failure::Failure;
use crate::kube::{KubeClient, KubeError};
use crate::limits::Echo;
use crate::region::{Failed, Regions, with_failover};
use crate::spec::{AssumeRole, AuthMode, MountSpec};
use crate::telemetry::{Family, Metrics};

pub use pod_identity::{PodIdentityClient, PodIdentityConfig};

/// Why the pod's credentials could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("missing attribute {0}: ensure podInfoOnMount is true in the CSIDriver")]
    MissingPodAttribute(&'static str),
    #[error("failed to get service account {}/{}: {source}", Echo(.namespace), Echo(.name))]
    ServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("An IAM role must be associated with service account {} (namespace: {})", Echo(.name), Echo(.namespace))]
    NoRole { namespace: String, name: String },
    #[error("failed to assume role {} with web identity (STS in {region}): {error}", Echo(.role))]
    Sts {
        role: String,
        region: String,
        error: AwsError,
    },
    #[error("getting the pod's credentials (Kubernetes API, STS or the EKS Pod Identity Agent): {0}")]
    Abandoned(Abandoned),
    #[error(transparent)]
    Shared(Arc<IdentityError>),
    #[error("{0}")]
    Chain(Box<chain::ChainError>),
    #[error("failed to get credentials from the EKS Pod Identity Agent at {url}: {message}")]
    PodIdentity {
        url: String,
        failure: Failure,
        message: String,
    },
}

impl From<Abandoned> for IdentityError {
    fn from(a: Abandoned) -> Self {
        IdentityError::Abandoned(a)
    }
}

impl IdentityError {
    pub fn failure(&self) -> Failure {
        match self {
            IdentityError::MissingPodAttribute(_) | IdentityError::NoRole { .. } => Failure::Rejected,
            IdentityError::ServiceAccount { source, .. } => source.failure(),
            IdentityError::Sts { error, .. } => error.failure,
            IdentityError::Chain(e) => e.error.failure,
            IdentityError::PodIdentity { failure, .. } => *failure,
            IdentityError::Abandoned(_) => Failure::Unavailable,
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
    /// A role assumed with the credentials of `source` (role chaining):
    /// never shared between pod identities, whatever the role.
    Chained {
        source: Box<IdentityKey>,
        role: String,
        external_id: Option<String>,
        /// Whether the session carries `SourceIdentity` and session tags:
        /// sessions with and without them are not the same credentials.
        attribution: (bool, bool),
    },
}

impl IdentityKey {
    /// Who these credentials are, for error messages (no pod UID, no
    /// external id).
    pub fn describe(&self) -> String {
        match self {
            IdentityKey::Irsa {
                role,
                namespace,
                service_account,
            } => format!(
                "role {} (IRSA of ServiceAccount {}/{})",
                Echo(role),
                Echo(namespace),
                Echo(service_account)
            ),
            IdentityKey::PodIdentity {
                namespace,
                service_account,
                ..
            } => format!(
                "the EKS Pod Identity role of ServiceAccount {}/{}",
                Echo(namespace),
                Echo(service_account)
            ),
            IdentityKey::Chained { role, .. } => format!("role {}", Echo(role)),
        }
    }
}

/// Credentials and the identity they belong to (the key of every cache
/// their values are kept in).
pub type Signer = (IdentityKey, Credentials);

/// The credentials of one mount: the pod's own, and those of every role its
/// objects assume.
pub struct Signers {
    pub pod: Signer,
    pub chained: Vec<(AssumeRole, Signer)>,
}

impl Signers {
    /// The credentials that fetch objects assuming `role` (none: the pod's);
    /// `None` if that role was not assumed (never the pod's own instead).
    pub fn get(&self, role: Option<&AssumeRole>) -> Option<&Signer> {
        match role {
            None => Some(&self.pod),
            Some(r) => self.chained.iter().find(|(c, _)| c == r).map(|(_, s)| s),
        }
    }
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
    /// How long a shared credential fetch may run before its waiters get an
    /// error.
    pub shared_deadline: Duration,
    /// The cluster's name (`--cluster-name`): the `eks-cluster-name` session
    /// tag of chained roles that ask for tags, and the audit record's.
    pub cluster_name: Option<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            cache_credentials: true,
            refresh_margin: Duration::from_secs(300),
            pod_identity_scope: PodIdentityScope::Pod,
            service_account_ttl: Duration::from_secs(30),
            shared_deadline: Duration::from_secs(60),
            cluster_name: None,
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
        let deadline = settings.shared_deadline;
        Self {
            aws,
            kube,
            pod_identity,
            settings,
            metrics,
            credentials: Cache::new().with_deadline(deadline),
            roles: Cache::new().with_deadline(deadline),
        }
    }

    /// The identity of the pod of `spec` and its credentials. STS is asked
    /// in the primary region, and in the failover region after a retryable
    /// failure.
    pub async fn credentials(
        &self,
        spec: &MountSpec,
        regions: &Regions,
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
                // Credentials are shared by the ServiceAccount's pods: the
                // session names the ServiceAccount, not the first pod.
                let session = attribution::session_name(&namespace, &sa);
                let (aws, token, regions) = (self.aws.clone(), spec.token.clone(), regions.clone());
                let r = role.clone();
                let fetch = async move {
                    let result = with_failover(&regions, IdentityError::failure, |region, _| {
                        irsa::assume_role(&aws, region, &r, &session, &token)
                    })
                    .await;
                    result.map_err(|f| match f {
                        Failed::Primary(e) | Failed::Both { failover: e, .. } => e,
                    })
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
                let (client, token) = (self.pod_identity.clone(), spec.token.clone());
                let fetch = async move { client.credentials(preference, &token).await }.boxed();
                let key = IdentityKey::PodIdentity {
                    namespace,
                    service_account: sa,
                    pod_uid,
                };
                (key, fetch)
            }
        };
        self.cached(key, fetch, "credentials").await
    }

    /// The credentials of the pod of `spec` and of every role its objects
    /// assume (each role once, concurrently).
    pub async fn signers(&self, spec: &MountSpec, regions: &Regions) -> Result<Signers, IdentityError> {
        let pod = self.credentials(spec, regions).await?;
        let roles = crate::spec::distinct_roles(&spec.objects);
        let chained = futures::future::try_join_all(roles.into_iter().map(|r| {
            let pod = &pod;
            async move { Ok::<_, IdentityError>((r.clone(), self.assume(spec, regions, pod, r).await?)) }
        }))
        .await?;
        Ok(Signers { pod, chained })
    }

    /// The credentials that fetch objects assuming `role` (none: the pod's
    /// own), obtained anew where the cache no longer holds them.
    pub async fn signer(
        &self,
        spec: &MountSpec,
        regions: &Regions,
        role: Option<&AssumeRole>,
    ) -> Result<Signer, IdentityError> {
        let pod = self.credentials(spec, regions).await?;
        match role {
            None => Ok(pod),
            Some(r) => self.assume(spec, regions, &pod, r).await,
        }
    }

    /// STS `AssumeRole` into `role` with the `source` credentials, in the
    /// primary region's STS and in the failover region's after a retryable
    /// failure; cached per (source identity, role, external id).
    async fn assume(
        &self,
        spec: &MountSpec,
        regions: &Regions,
        (source, creds): &Signer,
        role: &AssumeRole,
    ) -> Result<Signer, IdentityError> {
        let (namespace, service_account) = (
            spec.pod.namespace.clone().unwrap_or_default(),
            spec.pod.service_account.clone().unwrap_or_default(),
        );
        let workload = chain::Workload {
            session: attribution::session_name(&namespace, &service_account),
            namespace,
            service_account,
            cluster: self.settings.cluster_name.clone(),
            inherits_tags: matches!(source, IdentityKey::PodIdentity { .. }),
        };
        let (aws, regions, creds, r) = (self.aws.clone(), regions.clone(), creds.clone(), role.clone());
        let source_identity = source.describe();
        let fetch = async move {
            let result = with_failover(&regions, IdentityError::failure, |region, _| {
                chain::assume_role(&aws, region, &creds, &r, &workload, &source_identity)
            })
            .await;
            result.map_err(|f| match f {
                Failed::Primary(e) | Failed::Both { failover: e, .. } => e,
            })
        }
        .boxed();
        let key = IdentityKey::Chained {
            source: Box::new(source.clone()),
            role: role.arn.clone(),
            external_id: role.external_id.clone(),
            attribution: (role.source_identity, role.session_tags),
        };
        self.cached(key, fetch, "chained_credentials").await
    }

    /// `fetch` through the credential cache (single-flight, kept until the
    /// expiration minus the refresh margin), or directly when credentials
    /// are not cached.
    async fn cached(
        &self,
        key: IdentityKey,
        fetch: BoxFuture<'static, Result<Credentials, IdentityError>>,
        metric: &'static str,
    ) -> Result<Signer, IdentityError> {
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
        self.metrics.count(Family::Cache, metric, lookup.as_str());
        result.map(|c| (key, c)).map_err(IdentityError::Shared)
    }

    /// Drops the cached credentials of `key` if they are still `refused`
    /// (AWS refused them as expired or invalid), so the next lookup fetches
    /// new ones. Credentials fetched since are kept. Returns whether asking
    /// again gets other credentials: true whenever credentials are cached,
    /// whether this call dropped the refused ones or a concurrent mount
    /// refused the same ones first (its renewal is then joined or already
    /// kept, so there is still one renewal per refusal).
    pub fn forget(&self, key: &IdentityKey, refused: &Credentials) -> bool {
        if !self.settings.cache_credentials {
            return false;
        }
        let dropped = self
            .credentials
            .forget_if(key, |c| c.access_key_id == refused.access_key_id);
        if dropped {
            tracing::warn!("AWS refused this identity's cached credentials as expired or invalid; fetching new ones");
        }
        true
    }

    /// Drops expired credentials and role annotations (credentials are
    /// zeroized as they drop).
    pub fn sweep(&self) -> usize {
        self.credentials.sweep() + self.roles.sweep()
    }

    /// The IRSA role of a ServiceAccount, through a short-lived cache.
    async fn role(&self, namespace: &str, sa: &str) -> Result<String, IdentityError> {
        let (kube, ttl) = (self.kube.clone(), self.settings.service_account_ttl);
        let (ns, name) = (namespace.to_string(), sa.to_string());
        let lookup = move || async move {
            let role = kube
                .service_account_role(&ns, &name)
                .await
                .map_err(|source| IdentityError::ServiceAccount {
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
