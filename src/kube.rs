//! The few Kubernetes reads the provider needs (a ServiceAccount's role
//! annotation; a pod's node and that node's region label), through one
//! client shared by all mounts and one `--qps`/`--burst` rate limiter.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::Api;

/// The IRSA role annotation on a ServiceAccount.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The node label holding the AWS region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// A failed Kubernetes read.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
}

impl KubeError {
    /// Whether the API server answered "forbidden" (RBAC).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, KubeError::Api(kube::Error::Api(s)) if s.code == 403)
    }
}

/// A rate-limited Kubernetes client.
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl KubeClient {
    /// `KUBECONFIG` when set, in-cluster configuration otherwise.
    pub async fn from_env(qps: f32, burst: u32) -> Result<Self, KubeError> {
        let config = if std::env::var_os("KUBECONFIG").is_some() {
            kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?
        } else {
            kube::Config::incluster().map_err(|e| KubeError::Config(e.to_string()))?
        };
        let client = kube::Client::try_from(config)?;
        Ok(Self::new(client, qps, burst))
    }

    pub fn new(client: kube::Client, qps: f32, burst: u32) -> Self {
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
        }
    }

    /// The `eks.amazonaws.com/role-arn` annotation of a ServiceAccount.
    pub async fn service_account_role(&self, namespace: &str, name: &str) -> Result<Option<String>, KubeError> {
        self.limiter.until_ready().await;
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await?;
        Ok(sa
            .metadata
            .annotations
            .and_then(|mut a| a.remove(ROLE_ANNOTATION))
            .filter(|r| !r.is_empty()))
    }

    /// The name of the node a pod runs on.
    pub async fn pod_node(&self, namespace: &str, name: &str) -> Result<Option<String>, KubeError> {
        self.limiter.until_ready().await;
        let pod = Api::<Pod>::namespaced(self.client.clone(), namespace).get(name).await?;
        Ok(pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()))
    }

    /// The `topology.kubernetes.io/region` label of a node.
    pub async fn node_region(&self, node: &str) -> Result<Option<String>, KubeError> {
        self.limiter.until_ready().await;
        let node = Api::<Node>::all(self.client.clone()).get(node).await?;
        Ok(node
            .metadata
            .labels
            .and_then(|mut l| l.remove(REGION_LABEL))
            .filter(|r| !r.is_empty()))
    }
}
