//! The few Kubernetes calls the provider makes (a ServiceAccount's role
//! annotation; a pod's node and that node's region label; the pod events
//! of failed rotations), through one client shared by all mounts and one
//! `--qps`/`--burst` rate limiter.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{GetParams, Patch, PatchParams, PostParams};

use crate::failure::Failure;
use crate::region::{self, RegionError};
use crate::telemetry::{Family, Metrics, outcome};

/// The IRSA role annotation on a ServiceAccount.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The node label holding the AWS region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// A failed Kubernetes read.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes configuration: {0}")]
    Config(String),
    #[error("{}", describe(.0))]
    Api(#[from] kube::Error),
    #[error("the Kubernetes API did not answer within {} (--kube-timeout)", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// The API server's answer, or for a failure to get one, the causes.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(_) => e.to_string(),
        other => format!(
            "the Kubernetes API did not answer: {}",
            crate::failure::error_chain(other)
        ),
    }
}

/// Why the region of a pod's node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeRegionError {
    #[error("failed to retrieve region from node. error Region not found")]
    NotFound,
    #[error(
        "failed to retrieve region from node. error missing attribute {0}: ensure podInfoOnMount is true in the CSIDriver"
    )]
    MissingPodAttribute(&'static str),
    #[error("failed to retrieve region from node. error {0}")]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Invalid(#[from] RegionError),
}

impl NodeRegionError {
    pub fn failure(&self) -> Failure {
        match self {
            NodeRegionError::Kube(e) => e.failure(),
            NodeRegionError::NotFound | NodeRegionError::MissingPodAttribute(_) | NodeRegionError::Invalid(_) => {
                Failure::Rejected
            }
        }
    }
}

impl KubeError {
    /// The one classification of Kubernetes failures: denied by RBAC, not
    /// found (a missing pod, ServiceAccount or node alike), throttled, or
    /// the API server unreachable, failing or slow.
    pub fn failure(&self) -> Failure {
        match self {
            KubeError::Api(kube::Error::Api(s)) => Failure::from_status(s.code),
            KubeError::Config(_) => Failure::Rejected,
            KubeError::Api(_) | KubeError::TimedOut(_) => Failure::Unavailable,
        }
    }
}

/// Deadlines of Kubernetes requests.
#[derive(Debug, Clone, Copy)]
pub struct KubeSettings {
    pub qps: f32,
    pub burst: u32,
    /// Connecting, and waiting for an answer (`--kube-timeout`).
    pub timeout: Duration,
}

/// A rate-limited Kubernetes client.
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
    /// One request, whole (`--kube-timeout`): the connection's own
    /// timeouts bound each of its phases only.
    timeout: Duration,
}

impl KubeClient {
    /// The kubeconfig files (merged as kubectl merges `KUBECONFIG`'s), or
    /// the in-cluster configuration when there are none.
    pub async fn from_config(
        kubeconfig: &[std::path::PathBuf],
        settings: KubeSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KubeError> {
        let config_error = |e: kube::config::KubeconfigError| KubeError::Config(e.to_string());
        let mut config = if kubeconfig.is_empty() {
            kube::Config::incluster().map_err(|e| KubeError::Config(e.to_string()))?
        } else {
            let merged = kubeconfig
                .iter()
                .try_fold(kube::config::Kubeconfig::default(), |m, p| {
                    kube::config::Kubeconfig::read_from(p).and_then(|c| m.merge(c))
                })
                .map_err(config_error)?;
            kube::Config::from_custom_kubeconfig(merged, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(config_error)?
        };
        config.connect_timeout = Some(settings.timeout);
        config.read_timeout = Some(settings.timeout);
        config.write_timeout = Some(settings.timeout);
        // One request per read, bounded by --kube-timeout and counted by the
        // limiter. kube-client's default retry layer would repeat a 429, 503
        // or 504 up to 15 times with growing backoff (minutes in all): past
        // any mount deadline, hiding the real error behind it, and piling
        // unlimited requests onto an API server that is already failing.
        // The driver retries a failed mount.
        config.default_retry = false;
        let client = kube::Client::try_from(config)?;
        Ok(Self::new(client, settings, metrics))
    }

    /// The client over `client` (any tower service: the API server's
    /// connection, or a test's), within `settings`' rate and deadline.
    pub fn new(client: kube::Client, settings: KubeSettings, metrics: Arc<Metrics>) -> Self {
        let KubeSettings { qps, burst, timeout } = settings;
        let period = if qps > 0.0 {
            Duration::from_secs_f64(1.0 / f64::from(qps))
        } else {
            Duration::from_millis(1)
        };
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            client,
            limiter: Arc::new(RateLimiter::direct(quota)),
            metrics,
            timeout,
        }
    }

    /// One call, through the limiter, counted by resource and outcome.
    async fn read<T>(
        &self,
        resource: &'static str,
        get: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        self.limiter.until_ready().await;
        let result = match tokio::time::timeout(self.timeout, get).await {
            Ok(r) => r.map_err(KubeError::Api),
            Err(_) => Err(KubeError::TimedOut(self.timeout)),
        };
        self.metrics
            .count(Family::Kubernetes, resource, outcome(&result, KubeError::failure));
        result
    }

    /// The `eks.amazonaws.com/role-arn` annotation of a ServiceAccount.
    ///
    /// Read as metadata only (the annotation is all the provider needs) and
    /// at `resourceVersion=0`, so the API server answers from its watch
    /// cache instead of a quorum read from etcd; the cache lags etcd by
    /// milliseconds, far less than `--service-account-cache-ttl`.
    pub async fn service_account_role(&self, namespace: &str, name: &str) -> Result<Option<String>, KubeError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let sa = self
            .read("serviceaccounts", api.get_metadata_with(name, &GetParams::any()))
            .await?;
        Ok(sa
            .metadata
            .annotations
            .and_then(|mut a| a.remove(ROLE_ANNOTATION))
            .filter(|r| !r.is_empty()))
    }

    /// The name of the node a pod runs on.
    pub async fn pod_node(&self, namespace: &str, name: &str) -> Result<Option<String>, KubeError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let pod = self.read("pods", api.get(name)).await?;
        Ok(pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()))
    }

    /// The `topology.kubernetes.io/region` label of a node.
    pub async fn node_region(&self, node: &str) -> Result<Option<String>, KubeError> {
        let api = Api::<Node>::all(self.client.clone());
        let node = self.read("nodes", api.get(node)).await?;
        Ok(node
            .metadata
            .labels
            .and_then(|mut l| l.remove(REGION_LABEL))
            .filter(|r| !r.is_empty()))
    }

    /// The region of the node `pod` (its namespace and name, or the
    /// attribute that is missing) runs on: that node's
    /// `topology.kubernetes.io/region` label, which must be a region name.
    pub async fn pod_region(&self, pod: Result<(&str, &str), &'static str>) -> Result<String, NodeRegionError> {
        let (namespace, pod) = pod.map_err(NodeRegionError::MissingPodAttribute)?;
        let node = self.pod_node(namespace, pod).await?.ok_or(NodeRegionError::NotFound)?;
        let region = self.node_region(&node).await?.ok_or(NodeRegionError::NotFound)?;
        region::validate("the label topology.kubernetes.io/region of the pod's node", &region)?;
        Ok(region)
    }

    /// Creates `event` in `namespace` (events.k8s.io/v1); returns its name.
    pub async fn create_event(&self, namespace: &str, event: &Event) -> Result<String, KubeError> {
        let api = Api::<Event>::namespaced(self.client.clone(), namespace);
        let created = self.read("events", api.create(&PostParams::default(), event)).await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Merges `patch` into event `name` of `namespace`.
    pub async fn patch_event(&self, namespace: &str, name: &str, patch: serde_json::Value) -> Result<(), KubeError> {
        let api = Api::<Event>::namespaced(self.client.clone(), namespace);
        self.read("events", api.patch(name, &PatchParams::default(), &Patch::Merge(patch)))
            .await
            .map(|_| ())
    }
}
