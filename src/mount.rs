//! One mount, top to bottom: admission → parse and validate the request →
//! resolve the regions → obtain the pod's credentials → fetch every object
//! → render the files and versions → write them (provider-writes) or return
//! them (driver-writes). Nothing is written unless every step succeeded.
//!
//! Every step runs within the mount's deadline (`--mount-timeout`), and a
//! mount that outlives it fails naming the step it was in. Parsing and
//! rendering (YAML, JSON, JMESPath: CPU work on tenant input) run off the
//! async workers, a few at a time, so health checks and other pods' mounts
//! are not stalled by a large class.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::Semaphore;
use tracing::Span;

use crate::audit::{Audit, AuditSettings};
use crate::aws::AwsClients;
use crate::events::{EventSettings, RotationEvents};
use crate::failure::Failure;
use crate::fetch::{FetchError, Fetcher, MountQuota};
use crate::fetched::Fetched;
use crate::identity::{IdentityError, IdentityResolver, Signer, Signers};
use crate::kube::{KubeClient, NodeRegionError};
use crate::limits::Limits;
use crate::memory::{Charge, MemoryBudget, MemoryError, MountMemory, Stage as MemoryStage};
use crate::proto::v1alpha1::{File, MountRequest, MountResponse, ObjectVersion};
use crate::region::Regions;
use crate::render::write::{GateTicket, WriteError, WriteGates, WriteOptions, WriteOutcome};
use crate::render::{self, RenderError, Rendered};
use crate::spec::{self, MountSpec, SpecError};
use crate::telemetry::Metrics;

/// Above this response size the driver warns that Secret sync may fail.
const SYNC_WARN_BYTES: u64 = 1024 * 1024;

/// Provider-wide settings that shape a mount.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Return files to the driver instead of writing them.
    pub driver_writes: bool,
    /// The region of the environment (`AWS_REGION`) or of this node (read
    /// once at start from `NODE_NAME`), validated.
    pub known_region: Option<String>,
    /// What one request may ask for.
    pub limits: Limits,
    /// How long one mount may take, waiting for admission (at most half of
    /// it) included (`--mount-timeout`).
    pub timeout: Duration,
    /// Mounts served at once (`--max-concurrent-mounts`).
    pub max_concurrent_mounts: usize,
    /// Parses and renders run at once (the CPUs).
    pub max_concurrent_cpu_work: usize,
    /// Bytes of driver-writes responses being sent at once
    /// (`--max-inflight-response-bytes`): each is encoded into a buffer of
    /// its own, held until the driver has read it.
    pub max_inflight_response_bytes: usize,
    /// How failed rotations are reported on pods.
    pub rotation_events: EventSettings,
    /// Age at which a connection to the socket is recycled
    /// (`--max-connection-age`).
    pub max_connection_age: Duration,
    /// The record each mount leaves.
    pub audit: Arc<AuditSettings>,
}

impl Default for MountSettings {
    fn default() -> Self {
        Self {
            driver_writes: false,
            known_region: None,
            limits: Limits::default(),
            timeout: Duration::from_secs(60),
            max_concurrent_mounts: 128,
            max_concurrent_cpu_work: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_inflight_response_bytes: 32 * 1024 * 1024,
            rotation_events: EventSettings::default(),
            max_connection_age: Duration::from_secs(1),
            audit: Arc::default(),
        }
    }
}

/// Everything a mount needs, shared by all mounts.
pub struct Provider {
    pub settings: MountSettings,
    pub aws: AwsClients,
    pub kube: KubeClient,
    pub identity: IdentityResolver,
    pub fetcher: Fetcher,
    pub metrics: Arc<Metrics>,
    pub gates: WriteGates,
    /// What mounts may hold in memory, all together.
    pub memory: Arc<MemoryBudget>,
    admission: Semaphore,
    cpu: Arc<Semaphore>,
    /// Pod events of failed rotations.
    pub rotation: Arc<RotationEvents>,
    /// Kibibytes of driver-writes responses in flight, of `response_kib`.
    responses: Arc<Semaphore>,
    response_kib: usize,
}

/// A successful mount: the response, and the memory it holds until it has
/// been sent (driver-writes).
pub struct Mounted {
    pub response: MountResponse,
    pub reservation: Option<Reservation>,
}

/// A share of `--max-inflight-response-bytes` and the response's charge of
/// the memory budget, released when dropped: the server keeps it with the
/// response's body until the driver has read it.
#[derive(Clone)]
pub struct Reservation(#[allow(dead_code)] Arc<(tokio::sync::OwnedSemaphorePermit, Vec<Charge>)>);

/// What a mount took before its request was decoded: its memory ledger
/// (its deadline starts here) and the request's charge.
pub struct Admitted {
    pub started: Instant,
    pub memory: MountMemory,
    pub request: Charge,
}

/// The step a mount was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Admission,
    Respond,
    Parse,
    Region,
    Identity,
    Fetch,
    Render,
    Write,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Admission => "waiting for a free mount slot",
            Stage::Respond => "waiting for other responses to be sent (--max-inflight-response-bytes)",
            Stage::Parse => "validating the request",
            Stage::Region => "resolving the region (Kubernetes API)",
            Stage::Identity => "getting the pod's credentials (Kubernetes API, STS or the EKS Pod Identity Agent)",
            Stage::Fetch => "fetching from AWS Secrets Manager, SSM Parameter Store and ACM",
            Stage::Render => "rendering the files",
            Stage::Write => "writing the files",
        })
    }
}

/// Why a mount failed. Mapped to a gRPC status in exactly one place
/// (`server::status`).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Region(#[from] NodeRegionError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Fetch(FetchError),
    #[error(transparent)]
    Render(RenderError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(
        "the provider is already serving {limit} mounts (--max-concurrent-mounts) and none finished within {}; the mount will be retried",
        humantime::format_duration(*.waited)
    )]
    Busy { limit: usize, waited: Duration },
    #[error("mount deadline of {} (--mount-timeout) exceeded while {stage}", humantime::format_duration(*.after))]
    Deadline { stage: Stage, after: Duration },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("internal error while {stage}: {message}")]
    Internal { stage: Stage, message: String },
}

/// A memory refusal while fetching or rendering is the mount's own.
impl From<FetchError> for MountError {
    fn from(e: FetchError) -> Self {
        match e.memory() {
            Some(m) => MountError::Memory(m.clone()),
            None => MountError::Fetch(e),
        }
    }
}

impl From<RenderError> for MountError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Memory(m) => MountError::Memory(m),
            e => MountError::Render(e),
        }
    }
}

impl MountError {
    /// The kind of failure, for status codes and metrics.
    pub fn failure(&self) -> Failure {
        match self {
            MountError::Spec(_) | MountError::Render(_) => Failure::Rejected,
            MountError::Region(e) => e.failure(),
            MountError::Identity(e) => e.failure(),
            MountError::Fetch(e) => e.failure(),
            MountError::Busy { .. } | MountError::Memory(_) => Failure::Throttled,
            MountError::Write(_) | MountError::Deadline { .. } | MountError::Internal { .. } => Failure::Unavailable,
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
        memory: Arc<MemoryBudget>,
    ) -> Arc<Self> {
        let admission = Semaphore::new(settings.max_concurrent_mounts.max(1));
        let cpu = Arc::new(Semaphore::new(settings.max_concurrent_cpu_work.max(1)));
        let response_kib = kib(settings.max_inflight_response_bytes as u64).clamp(1, Semaphore::MAX_PERMITS);
        let responses = Arc::new(Semaphore::new(response_kib));
        let rotation = Arc::new(RotationEvents::new(
            settings.rotation_events.clone(),
            kube.clone(),
            metrics.clone(),
        ));
        Arc::new(Self {
            settings,
            aws,
            kube,
            identity,
            fetcher,
            metrics,
            gates: WriteGates::default(),
            memory,
            rotation,
            admission,
            cpu,
            responses,
            response_kib,
        })
    }

    /// The memory ledger of a new mount and the charge of its request,
    /// `encoded` bytes on the wire, taken as the request arrives and before
    /// it is decoded. The request is read at once whatever happens (one
    /// HTTP/2 window is shared by every mount on the driver's connection),
    /// so a request that does not fit is refused rather than kept waiting.
    pub fn admit_request(&self, encoded: u64, started: Instant) -> Result<Admitted, MountError> {
        let memory = MountMemory::new(self.memory.clone(), started + self.settings.timeout);
        let request = memory.try_charge(
            MemoryStage::Request,
            encoded.saturating_mul(crate::memory::REQUEST_FACTOR),
        )?;
        Ok(Admitted {
            started,
            memory,
            request,
        })
    }

    /// Serves one `Mount` request, with what the transport took for it
    /// (`None`: it is taken here), noting in `audit` what the mount's
    /// record says. The request is dropped once parsed.
    pub async fn mount(
        &self,
        req: MountRequest,
        admitted: Option<Admitted>,
        audit: &mut Audit,
    ) -> Result<Mounted, MountError> {
        let admitted = match admitted {
            Some(a) => a,
            None => self.admit_request(prost::Message::encoded_len(&req) as u64, Instant::now())?,
        };
        let Admitted {
            started,
            memory,
            request,
        } = admitted;
        let deadline = started + self.settings.timeout;
        let within = |stage| Step {
            stage,
            deadline,
            timeout: self.settings.timeout,
        };

        // A mount that could not start within half its budget is unlikely
        // to finish: it fails fast and the kubelet retries it.
        let _slot = self.admit(started + self.settings.timeout / 2).await?;
        let limits = self.settings.limits;
        let (spec, _class) = self.parse(req, &memory, within(Stage::Parse)).await?;
        drop(request);
        record_pod(&spec);
        audit.requested(&spec);
        let gate = (!self.settings.driver_writes).then(|| self.gates.enter(&spec.target_path));

        let regions = within(Stage::Region).run(self.regions(&spec)).await?;
        let signers = within(Stage::Identity)
            .run(self.identity.signers(&spec, &regions))
            .await?;
        audit.signers(&signers);
        let values = within(Stage::Fetch)
            .run(self.fetch(&spec, &regions, signers, within(Stage::Identity), &memory))
            .await?;
        audit.read(&spec.objects, &values);
        let (objects, mut templates) = (spec.objects, spec.templates);
        // Shaping a certificate may derive a key from a password (up to a
        // second of CPU): never on the async workers.
        let certificates = objects
            .iter()
            .any(|o| o.certificate.is_some() || o.jmes.iter().any(|j| j.certificate.is_some()));
        let heavy = !templates.is_empty() || certificates || render_work(&objects, &values) > INLINE_WORK;
        let render_memory = memory.clone();
        let rendered = within(Stage::Render)
            .cpu(heavy.then_some(&self.cpu), move || {
                render::render(&objects, &mut templates, values, &limits, Some(&render_memory))
            })
            .await?;
        match gate {
            None => {
                let (response, charges) = respond(rendered);
                let encoded = prost::Message::encoded_len(&response) as u64;
                let reservation = within(Stage::Respond)
                    .reserve(&self.responses, self.response_kib, encoded, &memory, charges)
                    .await?;
                Ok(Mounted {
                    response,
                    reservation: Some(reservation),
                })
            }
            Some(gate) => Ok(Mounted {
                response: within(Stage::Write).write(gate, rendered).await?,
                reservation: None,
            }),
        }
    }

    /// Parses and validates the request in steps, each charged to the
    /// mount's memory before it runs: reading the JSON maps (paid for by
    /// the request's charge), pre-scanning the YAML (what a scan may hold
    /// is bounded from the text), then building the class (what that builds
    /// the scan tells), on a blocking thread when it is large or compiles
    /// templates. Nothing of the request is held past the first step;
    /// returns the class with its charge.
    async fn parse(
        &self,
        req: MountRequest,
        memory: &MountMemory,
        step: Step,
    ) -> Result<(MountSpec, Vec<Charge>), MountError> {
        let limits = self.settings.limits;
        let large = (req.attributes.len() + req.secrets.len()) as u64 > INLINE_WORK;
        let (mut read, permission) = step
            .cpu(large.then_some(&self.cpu), move || {
                spec::read_attributes(&req.attributes, &req.secrets, &req.target_path)
                    .map(|read| (read, req.permission))
            })
            .await?;
        let scanning = memory.charge(MemoryStage::Request, read.scan_cost(&limits)).await?;
        let large = read.scan_cost(&limits) > INLINE_WORK;
        let read = step
            .cpu(large.then_some(&self.cpu), move || {
                read.scan(&limits);
                Ok::<_, MountError>(read)
            })
            .await?;
        // Building the class reads the YAML again: its charge covers that.
        drop(scanning);
        let parsing = memory.charge(MemoryStage::Request, read.parse_cost()).await?;
        let heavy = read.heavy(INLINE_WORK);
        let spec = step
            .cpu(heavy.then_some(&self.cpu), move || {
                spec::parse_attributes(read, &permission, &limits)
            })
            .await?;
        // What is left of the request: the class, for the mount.
        let class = settle(parsing, MemoryStage::Class, spec.estimated_bytes(), memory)?;
        Ok((spec, class))
    }

    /// Drops expired cache entries every `every` (secret values and
    /// credentials are zeroized as they drop), until the task is aborted.
    pub async fn sweep_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let swept = self.identity.sweep() + self.fetcher.sweep() + self.rotation.sweep();
            if swept > 0 {
                tracing::debug!(swept, "dropped expired cache entries");
            }
        }
    }

    /// A mount slot, waiting at most until `deadline`.
    async fn admit(&self, deadline: Instant) -> Result<tokio::sync::SemaphorePermit<'_>, MountError> {
        let waited = Instant::now();
        match tokio::time::timeout_at(deadline, self.admission.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(MountError::Internal {
                stage: Stage::Admission,
                message: "the provider is shutting down".to_string(),
            }),
            Err(_) => Err(MountError::Busy {
                limit: self.settings.max_concurrent_mounts,
                waited: waited.elapsed(),
            }),
        }
    }

    /// The regions of the mount, checked against its objects' ARNs.
    async fn regions(&self, spec: &MountSpec) -> Result<Regions, MountError> {
        // The class's `region`, else the environment's or this node's,
        // else the region of the pod's node.
        let primary = match spec.region.as_deref().or(self.settings.known_region.as_deref()) {
            Some(r) => r.to_string(),
            None => self.kube.pod_region(spec.pod.namespace_and_name()).await?,
        };
        Ok(spec::check_regions(spec, primary)?)
    }

    /// Every object, each with the credentials of its identity: the pod's
    /// own, or those of the role it assumes. Objects of one identity are
    /// fetched together (batches, single-flight, up to
    /// `--max-concurrent-fetches` calls at once); identities one after
    /// another, so a mount never has more calls in flight than that. The
    /// matches of objects that select many share one budget per mount.
    async fn fetch(
        &self,
        spec: &MountSpec,
        regions: &Regions,
        signers: Signers,
        renew: Step,
        memory: &MountMemory,
    ) -> Result<Vec<Fetched>, MountError> {
        let m = MountFetch {
            spec,
            regions,
            renew,
            quota: MountQuota::new(&self.settings.limits),
            memory,
            deadline: renew.deadline,
        };
        let mut groups: Vec<(Option<&spec::AssumeRole>, Vec<usize>)> = Vec::new();
        for (i, o) in spec.objects.iter().enumerate() {
            let role = o.assume_role.as_ref();
            match groups.iter_mut().find(|(r, _)| *r == role) {
                Some((_, members)) => members.push(i),
                None => groups.push((role, vec![i])),
            }
        }
        let signer = |role: Option<&spec::AssumeRole>| {
            signers.get(role).cloned().ok_or_else(|| MountError::Internal {
                stage: Stage::Fetch,
                message: "no credentials for an object's role".to_string(),
            })
        };
        if let [(role, _)] = groups.as_slice() {
            let signer = signer(*role)?;
            return self.fetch_as(&m, *role, signer, &spec.objects).await;
        }
        let mut out: Vec<Option<Fetched>> = std::iter::repeat_with(|| None).take(spec.objects.len()).collect();
        for (role, members) in &groups {
            let objects: Vec<spec::ObjectSpec> = members.iter().map(|&i| spec.objects[i].clone()).collect();
            let values = self.fetch_as(&m, *role, signer(*role)?, &objects).await?;
            for (&i, value) in members.iter().zip(values) {
                out[i] = Some(value);
            }
        }
        out.into_iter()
            .map(|v| {
                v.ok_or_else(|| MountError::Internal {
                    stage: Stage::Fetch,
                    message: "an object was not fetched".to_string(),
                })
            })
            .collect()
    }

    /// `objects` with one identity's credentials. If AWS refuses the cached
    /// credentials themselves (expired or invalid), they are dropped and the
    /// objects fetched once more with new ones (obtained within `renew`);
    /// an access denial is final.
    async fn fetch_as(
        &self,
        m: &MountFetch<'_>,
        role: Option<&spec::AssumeRole>,
        (identity, creds): Signer,
        objects: &[spec::ObjectSpec],
    ) -> Result<Vec<Fetched>, MountError> {
        let mount = crate::fetch::ForMount {
            quota: &m.quota,
            memory: m.memory,
            deadline: m.deadline,
        };
        // Identities are fetched one after another: a second attempt counts
        // its values against what was left before the first.
        let left = m.quota.left();
        match self
            .fetcher
            .fetch_all(&identity, &creds, m.regions, objects, &mount)
            .await
        {
            Err(e) if e.credentials_refused() && self.identity.forget(&identity, &creds) => {
                let (identity, creds) = m.renew.run(self.identity.signer(m.spec, m.regions, role)).await?;
                m.quota.restore(left);
                Ok(self
                    .fetcher
                    .fetch_all(&identity, &creds, m.regions, objects, &mount)
                    .await?)
            }
            result => Ok(result?),
        }
    }
}

/// CPU work (bytes of a request to parse, bytes of values and bound of
/// JMESPath work to render) up to which it runs inline on the async worker:
/// ordinary mounts take well under a millisecond and do not pay for a
/// thread hop; larger ones go to a blocking thread.
const INLINE_WORK: u64 = 256 * 1024;

/// An upper bound of the work of rendering `values`: their bytes, and the
/// bound of each JMESPath evaluation on them.
fn render_work(objects: &[spec::ObjectSpec], values: &[Fetched]) -> u64 {
    objects
        .iter()
        .zip(values)
        .map(|(o, v)| {
            let len = v.value.len() + v.members.iter().map(|(_, m)| m.value.len()).sum::<usize>();
            o.jmes
                .iter()
                .map(|j| j.path.work_bound(len))
                .fold(len as u64, u64::saturating_add)
        })
        .fold(0, u64::saturating_add)
}

/// Bytes in whole kibibytes (rounded up), as semaphore permits.
fn kib(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX)
}

/// The pod's fields on the mount's span, once the request is parsed.
fn record_pod(spec: &MountSpec) {
    let span = Span::current();
    for (field, value) in [
        ("namespace", &spec.pod.namespace),
        ("pod", &spec.pod.name),
        ("uid", &spec.pod.uid),
    ] {
        span.record(field, crate::limits::escaped(value.as_deref().unwrap_or_default()));
    }
}

/// The driver-writes response: files share the values' buffers; the
/// charges of the files rendered into new ones go with it.
fn respond(rendered: Rendered) -> (MountResponse, Vec<Charge>) {
    if rendered.total_bytes > SYNC_WARN_BYTES {
        tracing::warn!(
            bytes = rendered.total_bytes,
            "the mount's files exceed 1 MiB: syncing them into a Kubernetes Secret may fail, and above \
             4 MiB the driver rejects the response unless --max-call-recv-msg-size is raised"
        );
    }
    let response = MountResponse {
        object_version: versions(&rendered),
        error: None,
        files: rendered
            .files
            .into_iter()
            .map(|f| File {
                path: f.path,
                mode: f.mode as i32,
                contents: f.contents.share(),
            })
            .collect(),
    };
    (response, rendered.charges)
}

fn versions(rendered: &Rendered) -> Vec<ObjectVersion> {
    rendered
        .versions
        .iter()
        .map(|v| ObjectVersion {
            id: v.id.clone(),
            version: v.version.clone(),
        })
        .collect()
}

/// `charge` (of the work that made it) settled to `bytes` held for
/// `stage` from now on; more is taken if `bytes` exceeds it.
fn settle(mut charge: Charge, stage: MemoryStage, bytes: u64, memory: &MountMemory) -> Result<Vec<Charge>, MountError> {
    charge.restage(stage);
    if bytes <= charge.bytes() {
        charge.shrink_to(bytes);
        return Ok(vec![charge]);
    }
    let more = memory.try_charge(stage, bytes - charge.bytes())?;
    Ok(vec![charge, more])
}

/// What the fetches of one mount share.
struct MountFetch<'a> {
    spec: &'a MountSpec,
    regions: &'a Regions,
    /// Where new credentials are obtained if AWS refuses the cached ones.
    renew: Step,
    /// What the mount may still fetch (`--max-mount-bytes`, and the files
    /// of objects that select many), for the whole mount.
    quota: Arc<MountQuota>,
    /// The mount's memory ledger.
    memory: &'a MountMemory,
    /// The mount's deadline.
    deadline: Instant,
}

/// One step of a mount, bounded by the mount's deadline.
#[derive(Clone, Copy)]
struct Step {
    stage: Stage,
    deadline: Instant,
    timeout: Duration,
}

impl Step {
    fn expired(&self) -> MountError {
        MountError::Deadline {
            stage: self.stage,
            after: self.timeout,
        }
    }

    /// Awaits `fut` until the deadline.
    async fn run<T, E: Into<MountError>>(&self, fut: impl Future<Output = Result<T, E>>) -> Result<T, MountError> {
        match tokio::time::timeout_at(self.deadline, fut).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(self.expired()),
        }
    }

    /// Runs CPU work: inline when `blocking` is `None`, else on a blocking
    /// thread (one of its permits), in the mount's span, until the deadline.
    /// A panic fails this mount only.
    async fn cpu<T, E>(
        &self,
        blocking: Option<&Arc<Semaphore>>,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, MountError>
    where
        T: Send + 'static,
        E: Into<MountError> + Send + 'static,
    {
        let stage = self.stage;
        let panicked = || MountError::Internal {
            stage,
            message: "the work failed unexpectedly".to_string(),
        };
        let Some(cpu) = blocking else {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .map_err(|_| panicked())?
                .map_err(Into::into);
        };
        let span = Span::current();
        let cpu = cpu.clone();
        self.run(async move {
            let _permit = cpu.acquire_owned().await.map_err(|_| MountError::Internal {
                stage,
                message: "the provider is shutting down".to_string(),
            })?;
            tokio::task::spawn_blocking(move || span.in_scope(work))
                .await
                .map_err(|e| MountError::Internal {
                    stage,
                    message: if e.is_panic() {
                        "the work failed unexpectedly".to_string()
                    } else {
                        "the work was cancelled".to_string()
                    },
                })?
                .map_err(Into::into)
        })
        .await
    }

    /// Reserves `bytes` (an encoded response) of the responses in flight
    /// (all `capacity` if the response alone is larger), waiting until the
    /// deadline, then their memory.
    async fn reserve(
        &self,
        responses: &Arc<Semaphore>,
        capacity: usize,
        bytes: u64,
        memory: &MountMemory,
        mut charges: Vec<Charge>,
    ) -> Result<Reservation, MountError> {
        let want = u32::try_from(kib(bytes).clamp(1, capacity)).unwrap_or(u32::MAX);
        let stage = self.stage;
        let permit = self
            .run(async move {
                responses
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .map_err(|_| MountError::Internal {
                        stage,
                        message: "the provider is shutting down".to_string(),
                    })
            })
            .await?;
        // Taken without waiting: the mount holds a share of the responses
        // in flight, which mounts holding memory may be waiting for.
        charges.push(memory.try_charge(MemoryStage::Response, bytes)?);
        Ok(Reservation(Arc::new((permit, charges))))
    }

    /// Writes the files through the target's gate. The write runs to
    /// completion even if the caller goes away, so a cancelled mount never
    /// leaves a half-written volume behind; a later mount of the same
    /// target waits for it.
    async fn write(&self, gate: GateTicket, rendered: Rendered) -> Result<MountResponse, MountError> {
        let stage = self.stage;
        let span = Span::current();
        let object_version = versions(&rendered);
        let outcome = self
            .run(async move {
                tokio::task::spawn_blocking(move || {
                    span.in_scope(|| {
                        gate.write(
                            &rendered.files,
                            WriteOptions {
                                touch_when_unchanged: true,
                            },
                        )
                    })
                })
                .await
                .map_err(|e| MountError::Internal {
                    stage,
                    message: format!("file writer task failed: {e}"),
                })?
                .map_err(MountError::from)
            })
            .await?;
        if outcome == WriteOutcome::Superseded {
            tracing::info!("a later mount of this volume already wrote newer content; not overwriting it");
        }
        Ok(MountResponse {
            object_version,
            error: None,
            files: Vec::new(),
        })
    }
}
