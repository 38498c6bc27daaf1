//! One mount, top to bottom: parse and validate the request → resolve the
//! regions → obtain the pod's credentials → fetch every object → render the
//! files and versions → write them (provider-writes) or return them
//! (driver-writes). Nothing is written unless every step succeeded.

use std::sync::Arc;

use crate::aws::{AwsClients, Failure};
use crate::fetch::{FetchError, Fetcher, Regions};
use crate::identity::{IdentityError, IdentityResolver};
use crate::kube::{KubeClient, KubeError};
use crate::proto::v1alpha1::{File, MountRequest, MountResponse, ObjectVersion};
use crate::render::write::{WriteError, WriteOptions, write_atomic};
use crate::render::{self, RenderError};
use crate::spec::{self, MountSpec, SpecError};
use crate::telemetry::{Family, Metrics};

/// Above this response size the driver warns that Secret sync may fail.
const SYNC_WARN_BYTES: usize = 1024 * 1024;

/// Provider-wide settings that shape a mount.
#[derive(Debug, Clone, Default)]
pub struct MountSettings {
    /// Return files to the driver instead of writing them.
    pub driver_writes: bool,
    /// The region of this node, resolved once at start (`NODE_NAME`).
    pub node_region: Option<String>,
}

/// Everything a mount needs, shared by all mounts.
pub struct Provider {
    pub settings: MountSettings,
    pub aws: AwsClients,
    pub kube: KubeClient,
    pub identity: IdentityResolver,
    pub fetcher: Fetcher,
    pub metrics: Arc<Metrics>,
}

/// Why a mount failed. Mapped to a gRPC status in exactly one place
/// (`server::status`).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("failed to retrieve region from node. error {0}")]
    Region(RegionError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why the region could not be resolved from the pod's node.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("Region not found")]
    NotFound,
    #[error("missing attribute {0}: ensure podInfoOnMount is true in the CSIDriver")]
    MissingPodAttribute(&'static str),
    #[error("{0}")]
    Kube(#[from] KubeError),
}

impl MountError {
    /// The kind of failure, for status codes and metrics.
    pub fn failure(&self) -> Failure {
        match self {
            MountError::Spec(_) | MountError::Render(_) => Failure::Rejected,
            MountError::Region(RegionError::Kube(e)) if e.is_forbidden() => Failure::AccessDenied,
            MountError::Region(RegionError::Kube(_)) => Failure::Unavailable,
            MountError::Region(_) => Failure::Rejected,
            MountError::Identity(e) => e.failure(),
            MountError::Fetch(e) => e.failure(),
            MountError::Write(_) | MountError::Internal(_) => Failure::Unavailable,
        }
    }
}

impl Provider {
    pub fn new(
        settings: MountSettings,
        aws: AwsClients,
        kube: KubeClient,
        identity: IdentityResolver,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            aws,
            kube,
            identity,
            fetcher,
            metrics,
        })
    }

    /// Serves one `Mount` request.
    pub async fn mount(&self, req: &MountRequest) -> Result<MountResponse, MountError> {
        let spec = spec::parse_request(&req.attributes, &req.secrets, &req.target_path, &req.permission)?;
        let span = tracing::Span::current();
        for (field, value) in [
            ("namespace", &spec.pod.namespace),
            ("pod", &spec.pod.name),
            ("uid", &spec.pod.uid),
        ] {
            span.record(field, value.as_deref().unwrap_or_default());
        }
        let regions = self.resolve_regions(&spec).await?;
        spec::check_regions(&spec, &regions.primary)?;
        let (identity, creds) = self.identity.credentials(&spec, &regions.as_vec()).await?;
        let values = self
            .fetcher
            .fetch_all(&identity, &creds, &regions, &spec.objects)
            .await?;
        let rendered = render::render(&spec.objects, values)?;

        let object_version = rendered
            .versions
            .iter()
            .map(|v| ObjectVersion {
                id: v.id.clone(),
                version: v.version.clone(),
            })
            .collect();
        if self.settings.driver_writes {
            let total = rendered.total_bytes();
            if total > SYNC_WARN_BYTES {
                tracing::warn!(
                    bytes = total,
                    "the mount's files exceed 1 MiB: syncing them into a Kubernetes Secret may fail, and above \
                     4 MiB the driver rejects the response unless --max-call-recv-msg-size is raised"
                );
            }
            let files = rendered
                .files
                .iter()
                .map(|f| File {
                    path: f.path.clone(),
                    mode: f.mode as i32,
                    contents: f.contents.expose().to_vec(),
                })
                .collect();
            return Ok(MountResponse {
                object_version,
                error: None,
                files,
            });
        }
        let target = spec.target_path.clone();
        let files = rendered.files;
        // The write runs to completion even if the caller goes away, so a
        // cancelled mount never leaves a half-written volume behind.
        tokio::task::spawn_blocking(move || {
            write_atomic(
                &target,
                &files,
                WriteOptions {
                    touch_when_unchanged: true,
                },
            )
        })
        .await
        .map_err(|e| MountError::Internal(format!("file writer task failed: {e}")))??;
        Ok(MountResponse {
            object_version,
            error: None,
            files: Vec::new(),
        })
    }

    /// Primary region: SPC `region`, else the environment's, else the
    /// `topology.kubernetes.io/region` label of this node (read once at
    /// start) or, failing that, of the pod's node.
    async fn resolve_regions(&self, spec: &MountSpec) -> Result<Regions, MountError> {
        let known = spec
            .region
            .clone()
            .or_else(|| self.aws.env_region())
            .or_else(|| self.settings.node_region.clone());
        let primary = match known {
            Some(r) => r,
            None => self.node_region(spec).await.map_err(MountError::Region)?,
        };
        Ok(Regions {
            primary,
            failover: spec.failover_region.clone(),
        })
    }

    async fn node_region(&self, spec: &MountSpec) -> Result<String, RegionError> {
        let namespace = spec
            .pod
            .namespace
            .as_deref()
            .ok_or(RegionError::MissingPodAttribute(spec::keys::POD_NAMESPACE))?;
        let pod = spec
            .pod
            .name
            .as_deref()
            .ok_or(RegionError::MissingPodAttribute(spec::keys::POD_NAME))?;
        let node = self.kube.pod_node(namespace, pod).await;
        self.metrics.count(
            Family::Kubernetes,
            "pods",
            if node.is_ok() { "success" } else { "error" },
        );
        let node = node?.ok_or(RegionError::NotFound)?;
        let region = self.kube.node_region(&node).await;
        self.metrics.count(
            Family::Kubernetes,
            "nodes",
            if region.is_ok() { "success" } else { "error" },
        );
        region?.ok_or(RegionError::NotFound)
    }
}
