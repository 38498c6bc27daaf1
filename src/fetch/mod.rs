//! Fetching the values of a mount's objects. Secrets Manager objects without
//! a version field go up to 20 per `BatchGetSecretValue`, the others one per
//! `GetSecretValue`; SSM objects go up to 10 selectors per `GetParameters`.
//! Units run concurrently (bounded) and the result is all or nothing. Each
//! unit asks the primary region first and the failover region only when the
//! primary failed with a retryable error (throttling, 5xx, timeout,
//! connection failure).
//!
//! Concurrent mounts that need the same unit for the same identity share one
//! call; with a value TTL, values are kept per identity and never served to
//! another identity.

pub mod acm;
pub mod bulk;
pub mod secrets_manager;
pub mod ssm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt, stream};

use crate::aws::{AwsClients, AwsError, ChargeResponses, Credentials};
use crate::cache::{Abandoned, Cache};
use crate::failure::Failure;
use crate::fetched::{Fetched, Source};
use crate::identity::IdentityKey;
use crate::limits::{Echo, Limit, LimitError, Limits};
use crate::memory::{MemoryBudget, MemoryError, MountMemory, Stage};
use crate::region::{Failed, Regions};
use crate::secret::SecretBytes;
use crate::spec::{ObjectKind, ObjectSpec};
use crate::telemetry::{Family, Metrics};

/// Default concurrent AWS calls per mount.
pub const CONCURRENCY: usize = 8;
/// How long an identity denied `BatchGetSecretValue` uses `GetSecretValue`.
pub const BATCH_DENIED_FOR: Duration = Duration::from_secs(15 * 60);

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Use `BatchGetSecretValue` for objects without a version field.
    pub batch_get_secret_value: bool,
    /// After `BatchGetSecretValue` is throttled, use `GetSecretValue` on this
    /// node for this long (`--batch-throttle-backoff`).
    pub batch_throttle_backoff: Duration,
    /// Concurrent AWS calls per mount.
    pub concurrency: usize,
    /// Keep values this long per identity (`None`: values are not kept).
    pub value_ttl: Option<Duration>,
    /// Serve an identity's last good value up to this old when AWS fails
    /// with a retryable error everywhere (`--serve-stale-max-age`).
    pub stale_max_age: Option<Duration>,
    /// Share one call between concurrent mounts of the same unit and identity.
    pub single_flight: bool,
    /// How long a shared fetch may run before its waiters get an error.
    pub shared_deadline: Duration,
    /// Throttled calls the node may retry before calls succeed again
    /// (`--throttle-retries`).
    pub throttle_retries: u32,
    /// Serve an identity's ACM export again, while `DescribeCertificate`
    /// reports the same certificate, up to this old
    /// (`--acm-export-max-age`; zero: export on every mount).
    pub acm_export_max_age: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            batch_get_secret_value: true,
            batch_throttle_backoff: Duration::from_secs(60),
            concurrency: CONCURRENCY,
            value_ttl: None,
            stale_max_age: None,
            single_flight: true,
            shared_deadline: Duration::from_secs(60),
            throttle_retries: DEFAULT_THROTTLE_RETRIES,
            acm_export_max_age: DEFAULT_ACM_EXPORT_MAX_AGE,
        }
    }
}

/// Default `--acm-export-max-age`.
pub const DEFAULT_ACM_EXPORT_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// Default `--throttle-retries`.
pub const DEFAULT_THROTTLE_RETRIES: u32 = 100;

/// Why an object could not be fetched. Names are echoed truncated.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("failed to fetch secret {} from Secrets Manager in {region}: {error}", Echo(.name))]
    Secret {
        name: String,
        region: String,
        error: AwsError,
    },
    #[error("failed to fetch secrets {} from Secrets Manager in {region}: {error}", Echo(.names))]
    SecretBatch {
        names: String,
        region: String,
        error: AwsError,
    },
    #[error("failed to fetch parameters {} from SSM Parameter Store in {region}: {error}", Echo(.names))]
    Parameters {
        names: String,
        region: String,
        error: AwsError,
    },
    #[error(
        "parameter {} not found in SSM Parameter Store in {region} (reported as invalid parameters: {})",
        Echo(.selector),
        Echo(.invalid)
    )]
    ParameterNotFound {
        selector: String,
        region: String,
        invalid: String,
    },
    #[error("{service} in {region} returned no value for {}", Echo(.selector))]
    Missing {
        service: &'static str,
        selector: String,
        region: String,
    },
    #[error(
        "Failed to fetch secret from all regions. Verify secret exists and required permissions are granted for: {}: {primary}; failover: {failover}",
        Echo(.name)
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
    #[error(
        "failed to read {} from {} in {region}: {error}{}",
        Echo(.what),
        .form.service(),
        if .error.failure == Failure::AccessDenied { format!(" (this needs {})", .form.actions()) } else { String::new() }
    )]
    Bulk {
        what: String,
        form: bulk::Form,
        region: String,
        error: AwsError,
    },
    #[error(
        "{} matches nothing in {} in {region} (set allowEmpty: true to mount no files for it)",
        Echo(.what),
        .form.service()
    )]
    NoMatches {
        what: String,
        form: bulk::Form,
        region: String,
    },
    #[error("Failed to read {} from all regions. {primary}; failover: {failover}", Echo(.what))]
    BulkAllRegions {
        what: String,
        primary: Box<FetchError>,
        failover: Box<FetchError>,
    },
    /// The values fetched, or the matches of objects that select many,
    /// exceed what one mount may hold.
    #[error(transparent)]
    TooMany(LimitError),
    /// Paging of an object that selects many did not end.
    #[error(
        "{} in {} in {region}: {problem}; the set is not mounted",
        Echo(.what),
        .form.service()
    )]
    Paging {
        what: String,
        form: bulk::Form,
        region: String,
        problem: bulk::PagingProblem,
    },
    /// The mount's memory budget refused what it fetched.
    #[error(transparent)]
    Memory(MemoryError),
    #[error("fetching from AWS Secrets Manager, SSM Parameter Store and ACM: {0}")]
    Abandoned(Abandoned),
    #[error(
        "failed to read certificate {} from ACM in {region}: {error}{}",
        Echo(.arn),
        certificate_hint(.arn, .action, .error)
    )]
    Certificate {
        arn: String,
        region: String,
        /// The IAM action of the call that failed.
        action: &'static str,
        error: AwsError,
    },
    #[error("ACM in {region} exported certificate {} in a form that cannot be used: {problem}", Echo(.arn))]
    CertificateUnusable {
        arn: String,
        region: String,
        problem: crate::certificate::CertificateError,
    },
    #[error("Failed to read certificate {} from all regions. {primary}; failover: {failover}", Echo(.arn))]
    CertificateAllRegions {
        arn: String,
        primary: Box<FetchError>,
        failover: Box<FetchError>,
    },
    #[error(transparent)]
    Shared(Arc<FetchError>),
}

/// What a user can do about a failed ACM call.
fn certificate_hint(arn: &str, action: &str, error: &AwsError) -> String {
    let account = crate::spec::arn::parse(arn).map_or("", |a| a.account);
    match (error.failure, error.code.as_deref()) {
        (Failure::AccessDenied, _) => format!(" (this needs {action} on the certificate)"),
        (Failure::NotFound, _) => format!(
            " (no such certificate in account {} as this identity sees it: a certificate of another account needs a role of that account, assumeRoleArn)",
            Echo(account)
        ),
        (_, Some("RequestInProgressException")) => " (the certificate is not issued yet)".to_string(),
        (_, Some("ValidationException")) if action == "acm:ExportCertificate" => {
            " (ACM exports private certificates, and public certificates requested as exportable)".to_string()
        }
        _ => String::new(),
    }
}

impl From<Abandoned> for FetchError {
    fn from(a: Abandoned) -> Self {
        FetchError::Abandoned(a)
    }
}

impl From<MemoryError> for FetchError {
    fn from(m: MemoryError) -> Self {
        FetchError::Memory(m)
    }
}

impl FetchError {
    pub fn failure(&self) -> Failure {
        match self {
            FetchError::Secret { error, .. }
            | FetchError::SecretBatch { error, .. }
            | FetchError::Parameters { error, .. }
            | FetchError::Bulk { error, .. }
            | FetchError::Certificate { error, .. } => error.failure,
            // ACM misbehaving: another region or a kept value may do.
            FetchError::CertificateUnusable { .. } => Failure::Unavailable,
            FetchError::ParameterNotFound { .. } | FetchError::NoMatches { .. } => Failure::NotFound,
            // Neither is a reason to ask another region or serve a kept value.
            FetchError::TooMany(_) | FetchError::Memory(_) => Failure::Rejected,
            // AWS (or a proxy in front of it) misbehaving: another region
            // or a kept value may do.
            FetchError::Paging { .. } => Failure::Unavailable,
            FetchError::Missing { .. } | FetchError::Abandoned(_) => Failure::Unavailable,
            FetchError::SecretAllRegions { failover, .. }
            | FetchError::ParametersAllRegions { failover, .. }
            | FetchError::BulkAllRegions { failover, .. }
            | FetchError::CertificateAllRegions { failover, .. } => failover.failure(),
            FetchError::Shared(e) => e.failure(),
        }
    }

    /// The per-mount limit the values (or the matches of objects that
    /// select many) exceeded.
    pub fn limit(&self) -> Option<&LimitError> {
        match self {
            FetchError::TooMany(l) => Some(l),
            FetchError::Shared(e) => e.limit(),
            _ => None,
        }
    }

    /// The memory budget's refusal, if that is what failed.
    pub fn memory(&self) -> Option<&MemoryError> {
        match self {
            FetchError::Memory(m) => Some(m),
            FetchError::Shared(e) => e.memory(),
            _ => None,
        }
    }

    /// Whether AWS refused the credentials themselves (expired, unknown),
    /// in any region: new credentials may succeed.
    pub fn credentials_refused(&self) -> bool {
        match self {
            FetchError::SecretAllRegions { primary, failover, .. }
            | FetchError::ParametersAllRegions { primary, failover }
            | FetchError::BulkAllRegions { primary, failover, .. }
            | FetchError::CertificateAllRegions { primary, failover, .. } => {
                primary.credentials_refused() || failover.credentials_refused()
            }
            FetchError::Shared(e) => e.credentials_refused(),
            other => other.failure() == Failure::InvalidCredentials,
        }
    }
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum UnitKind {
    Secret,
    SecretBatch,
    Parameters,
    /// One object that selects many.
    Bulk,
    /// One ACM certificate.
    Certificate,
}

/// What a unit fetches, for single-flight: the kind and every object field
/// that shapes the calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UnitKey {
    identity: IdentityKey,
    regions: Regions,
    kind: UnitKind,
    objects: Vec<ObjectKey>,
}

/// What identifies a value: the object and its version selectors, in both
/// regions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectKey {
    kind: ObjectKind,
    name: String,
    version: Option<String>,
    label: Option<String>,
    failover: Option<(String, Option<String>, Option<String>)>,
    bulk: Option<(crate::spec::bulk::Selection, bool)>,
}

impl ObjectKey {
    fn of(o: &ObjectSpec) -> Self {
        Self {
            kind: o.kind,
            name: o.name.clone(),
            version: o.version.clone(),
            label: o.version_label.clone(),
            failover: o
                .failover
                .as_ref()
                .map(|f| (f.name.clone(), f.version.clone(), f.version_label.clone())),
            bulk: o.bulk.as_ref().map(|b| (b.selection.clone(), b.allow_empty)),
        }
    }
}

type ValueKey = (IdentityKey, Regions, ObjectKey);
type UnitResult = Result<Vec<Fetched>, FetchError>;
/// A finished unit: the object indices it served and their values.
type UnitDone = Result<(Vec<usize>, Vec<Fetched>), FetchError>;

/// Fetches objects for mounts; shared by every mount.
pub struct Fetcher {
    aws: AwsClients,
    settings: FetchSettings,
    metrics: Arc<Metrics>,
    units: Cache<UnitKey, Arc<Vec<Fetched>>, FetchError>,
    /// Values and when they were fetched, kept for the longer of the value
    /// TTL and the stale maximum age.
    values: Cache<ValueKey, (Fetched, Instant), FetchError>,
    batch_denied: Cache<IdentityKey, (), FetchError>,
    /// Identities denied `DescribeCertificate` lately: they export every
    /// time, without asking first.
    describe_denied: Cache<IdentityKey, (), FetchError>,
    /// Set while batching backs off on this node after a throttled batch.
    batch_throttled: Cache<(), (), FetchError>,
    memory: Arc<MemoryBudget>,
    retries: Arc<RetryBudget>,
}

/// What a kept value weighs: its bytes and its matches'.
fn kept_weight(v: &(Fetched, Instant)) -> u64 {
    let f = &v.0;
    (f.value.len() + f.members.iter().map(|(n, m)| n.len() + m.value.len()).sum::<usize>()) as u64
}

/// What one unit needs to run on its own task.
#[derive(Clone)]
pub(crate) struct UnitContext {
    pub aws: AwsClients,
    pub creds: Credentials,
    pub regions: Regions,
    /// What the mount that started the unit may still fetch.
    pub quota: Arc<MountQuota>,
    /// The memory ledger of the mount that started the unit: its responses
    /// and values are charged there.
    pub memory: MountMemory,
    /// That mount's deadline: throttled calls are retried until it.
    pub deadline: Instant,
    pub retries: Arc<RetryBudget>,
}

/// Why an AWS call of a unit failed.
pub(crate) enum CallError {
    Aws(AwsError),
    Memory(MemoryError),
}

impl CallError {
    /// The fetch error: `aws` makes the one of an AWS error.
    pub fn into_fetch(self, aws: impl FnOnce(AwsError) -> FetchError) -> FetchError {
        match self {
            CallError::Aws(e) => aws(e),
            CallError::Memory(m) => FetchError::Memory(m),
        }
    }
}

/// The shortest and the longest backoff before retrying a throttled call
/// (exponential from the first, with full jitter).
const THROTTLE_BACKOFF_BASE: Duration = Duration::from_millis(100);
const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl UnitContext {
    /// One AWS call: `send` builds it (once per attempt) with the
    /// interceptor that charges its responses to the mount's memory as they
    /// arrive. A throttled call (after the SDK's own attempts) is retried
    /// with jittered exponential backoff while the mount's deadline and the
    /// node's retry budget allow, unless `retry_throttled` is false (another
    /// API answers for it). Returns the output and the charges of its
    /// responses, to be dropped once the values taken out of it are charged.
    pub async fn call<T, E, Fut>(
        &self,
        operation: &'static str,
        retry_throttled: bool,
        mut send: impl FnMut(ChargeResponses) -> Fut,
    ) -> Result<(T, ChargeResponses), CallError>
    where
        Fut: std::future::Future<
                Output = Result<
                    T,
                    aws_smithy_runtime_api::client::result::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let responses = ChargeResponses::new(self.memory.clone());
        let mut attempt = 0u32;
        loop {
            let result = self.aws.call(Family::Aws, operation, send(responses.clone())).await;
            if let Some(m) = responses.charges().refusal() {
                return Err(CallError::Memory(m));
            }
            let error = match result {
                Ok(out) => {
                    self.retries.succeeded();
                    return Ok((out, responses));
                }
                Err(e) => e,
            };
            if !(retry_throttled && error.failure == Failure::Throttled) {
                return Err(CallError::Aws(error));
            }
            attempt += 1;
            let ceiling = THROTTLE_BACKOFF_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(THROTTLE_BACKOFF_MAX);
            let backoff = ceiling.mul_f64(rand::random::<f64>());
            // The retry must leave the call time to answer within the
            // mount's deadline, or the throttling is the answer.
            if Instant::now() + backoff + THROTTLE_CALL_ROOM >= self.deadline || !self.retries.take() {
                return Err(CallError::Aws(error));
            }
            tracing::debug!(
                operation,
                attempt,
                ?backoff,
                "throttled; retrying within the mount's deadline"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    /// Whether a throttled call in `region` is retried: in the last region
    /// asked; the primary's throttling moves to the failover region instead.
    pub fn retries_throttled_in(&self, region: &str) -> bool {
        self.regions.failover.is_none() || region != self.regions.primary
    }

    /// `bytes` taken out of a response as a value, charged to the mount's
    /// memory (waiting within its deadline if the budget is in use).
    pub async fn value(&self, bytes: Vec<u8>) -> Result<SecretBytes, FetchError> {
        let charge = self.memory.charge(Stage::Values, bytes.len() as u64).await?;
        Ok(SecretBytes::charged(bytes, charge))
    }
}

/// Time left for a retried call to answer: a throttled call is retried
/// only if its backoff ends at least this long before the mount's deadline.
const THROTTLE_CALL_ROOM: Duration = Duration::from_secs(1);

/// The node's budget of retries of throttled calls, as the AWS SDKs keep
/// one per client: a retry spends [`RETRY_COST`] tokens, a successful call
/// earns one back, so when most calls are throttled retries stop, and a
/// throttled account is not hammered by every mount of the node at once.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU64,
    capacity: u64,
}

/// Tokens a retry of a throttled call spends.
pub const RETRY_COST: u64 = 5;

impl RetryBudget {
    /// A budget of `retries` retries.
    pub fn new(retries: u32) -> Self {
        let capacity = u64::from(retries) * RETRY_COST;
        Self {
            tokens: AtomicU64::new(capacity),
            capacity,
        }
    }

    /// Spends a retry, if the budget has one.
    pub fn take(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(RETRY_COST))
            .is_ok()
    }

    /// A call succeeded: one token back.
    pub fn succeeded(&self) {
        let _ = self.tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            (t < self.capacity).then_some(t + 1)
        });
    }
}

/// What one mount may still fetch, shared by all its units (and
/// identities): each value as it arrives counts towards `--max-mount-bytes`,
/// and each match of an object that select many towards
/// `--max-files-per-mount` too, so fetching stops (and what is in flight is
/// cancelled) as soon as the mount as a whole would exceed them.
#[derive(Debug)]
pub struct MountQuota {
    files: AtomicU64,
    bytes: AtomicU64,
    limits: Limits,
}

impl MountQuota {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            files: (limits.max_files as u64).into(),
            bytes: (limits.max_mount_bytes as u64).into(),
            limits: *limits,
        })
    }

    /// What is left now, to go back to if an attempt is made again.
    pub fn left(&self) -> (u64, u64) {
        (self.files.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Goes back to what was `left` (an attempt whose values are dropped).
    pub fn restore(&self, (files, bytes): (u64, u64)) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Takes `files` and `bytes` for the matches of `what`, or the limit
    /// they exceed.
    pub(crate) fn take(&self, what: &str, files: u64, bytes: u64) -> Result<(), FetchError> {
        self.take_for(files, bytes, || {
            format!("the mount, with the matches of {}", Echo(what))
        })
    }

    /// Takes `bytes` for the value of object `what`.
    fn take_value(&self, what: &str, bytes: u64) -> Result<(), FetchError> {
        self.take_for(0, bytes, || {
            format!("the values fetched for this mount (at object {})", Echo(what))
        })
    }

    fn take_for(&self, files: u64, bytes: u64, subject: impl FnOnce() -> String) -> Result<(), FetchError> {
        for (left, want, limit) in [
            (&self.files, files, Limit::Files),
            (&self.bytes, bytes, Limit::MountBytes),
        ] {
            if left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(want))
                .is_err()
            {
                let max = limit.max(&self.limits);
                return Err(FetchError::TooMany(LimitError {
                    subject: subject(),
                    limit,
                    found: max + 1,
                    at_least: true,
                    max,
                }));
            }
        }
        Ok(())
    }

    /// Pages one object that selects many may list.
    pub(crate) fn max_pages(&self) -> u32 {
        self.limits.max_pages
    }

    /// The error of a listing of `what` cut at the page cap.
    pub(crate) fn too_many_pages(&self, what: String) -> FetchError {
        FetchError::TooMany(self.limits.exceeded(Limit::Pages, what))
    }
}

/// What a mount brings to a fetch: its quota, its memory, its deadline.
pub struct ForMount<'a> {
    pub quota: &'a Arc<MountQuota>,
    pub memory: &'a MountMemory,
    pub deadline: Instant,
}

/// Maps the outcome of the failover step of one object to its error.
pub(crate) fn all_regions<T>(
    result: Result<T, Failed<FetchError>>,
    both: impl FnOnce(Box<FetchError>, Box<FetchError>) -> FetchError,
) -> Result<T, FetchError> {
    result.map_err(|f| match f {
        Failed::Primary(e) => e,
        Failed::Both { primary, failover } => both(Box::new(primary), Box::new(failover)),
    })
}

impl Fetcher {
    pub fn new(aws: AwsClients, settings: FetchSettings, metrics: Arc<Metrics>, memory: Arc<MemoryBudget>) -> Self {
        let deadline = settings.shared_deadline;
        let retries = Arc::new(RetryBudget::new(settings.throttle_retries));
        Self {
            aws,
            settings,
            metrics,
            units: Cache::new().with_deadline(deadline),
            // Values kept (value cache, last good values) weigh at most a
            // part of the budget; the oldest are evicted to make room.
            values: Cache::new().with_max_bytes(memory.kept_max(), kept_weight),
            batch_denied: Cache::new(),
            describe_denied: Cache::new(),
            batch_throttled: Cache::new(),
            memory,
            retries,
        }
    }

    /// Bytes of the values kept now.
    pub fn kept_bytes(&self) -> u64 {
        self.values.bytes()
    }

    /// Charges `v` (and its matches) as kept, replacing its fetch-time
    /// charges; `false` (keeping nothing) when the budget cannot hold it.
    fn charge_kept(&self, v: &Fetched) -> bool {
        let take = |len| self.memory.try_charge_detached(Stage::Kept, len).ok();
        v.value.recharge(take) && v.members.iter().all(|(_, m)| m.value.recharge(take))
    }

    fn batch_allowed(&self, identity: &IdentityKey) -> bool {
        self.settings.batch_get_secret_value
            && self.batch_denied.get(identity).is_none()
            && self.batch_throttled.get(&()).is_none()
    }

    /// Drops expired values and expired batch denials (values are zeroized
    /// as they drop).
    pub fn sweep(&self) -> usize {
        self.values.sweep()
            + self.batch_denied.sweep()
            + self.describe_denied.sweep()
            + self.batch_throttled.sweep()
            + self.units.sweep()
    }

    /// Fetches every object for `identity`, returning values in object order.
    pub async fn fetch_all(
        &self,
        identity: &IdentityKey,
        creds: &Credentials,
        regions: &Regions,
        objects: &[ObjectSpec],
        mount: &ForMount<'_>,
    ) -> Result<Vec<Fetched>, FetchError> {
        let mut slots: Vec<Option<Fetched>> = vec![None; objects.len()];
        let value_key = |o: &ObjectSpec| (identity.clone(), regions.clone(), ObjectKey::of(o));
        if let Some(ttl) = self.settings.value_ttl {
            for (slot, o) in slots.iter_mut().zip(objects) {
                *slot = self
                    .values
                    .get(&value_key(o))
                    .filter(|(_, at)| at.elapsed() < ttl)
                    .map(|(v, _)| v.served_from(Source::Cache));
                let hit = if slot.is_some() { "hit" } else { "miss" };
                self.metrics.count(Family::Cache, "values", hit);
            }
            for (slot, o) in slots.iter().zip(objects) {
                if let Some(v) = slot {
                    take_values(mount.quota, o, v)?;
                }
            }
        }

        let batch = self.batch_allowed(identity);
        let mut units: Vec<(UnitKind, Vec<usize>)> = Vec::new();
        let mut batchable = Vec::new();
        let mut parameters = Vec::new();
        for (i, o) in objects.iter().enumerate().filter(|(i, _)| slots[*i].is_none()) {
            if o.bulk.is_some() {
                units.push((UnitKind::Bulk, vec![i]));
                continue;
            }
            match o.kind {
                ObjectKind::SecretsManager if batch && o.version.is_none() && o.version_label.is_none() => {
                    batchable.push(i)
                }
                ObjectKind::SecretsManager => units.push((UnitKind::Secret, vec![i])),
                ObjectKind::Ssm => parameters.push((i, &objects[i])),
                ObjectKind::Acm => units.push((UnitKind::Certificate, vec![i])),
            }
        }
        for chunk in secrets_manager::batches(&batchable, |i| objects[*i].name.clone()) {
            units.push(if chunk.len() == 1 {
                (UnitKind::Secret, chunk)
            } else {
                (UnitKind::SecretBatch, chunk)
            });
        }
        for b in ssm::batches(parameters, |o| (o.name.clone(), o.ssm_selector())) {
            units.push((UnitKind::Parameters, b.into_iter().map(|(i, _)| i).collect()));
        }

        let ctx = UnitContext {
            aws: self.aws.clone(),
            creds: creds.clone(),
            regions: regions.clone(),
            quota: mount.quota.clone(),
            memory: mount.memory.clone(),
            deadline: mount.deadline,
            retries: self.retries.clone(),
        };
        let futures: Vec<BoxFuture<'_, UnitDone>> = units
            .into_iter()
            .map(|(kind, indices)| {
                let unit_objects: Vec<ObjectSpec> = indices.iter().map(|i| objects[*i].clone()).collect();
                let key = UnitKey {
                    identity: identity.clone(),
                    regions: regions.clone(),
                    kind: kind.clone(),
                    objects: unit_objects.iter().map(ObjectKey::of).collect(),
                };
                let ctx = ctx.clone();
                // The keys of the last good values, only when they may be served.
                let stale_keys: Vec<ValueKey> = match self.settings.stale_max_age {
                    Some(_) => indices.iter().map(|i| value_key(&objects[*i])).collect(),
                    None => Vec::new(),
                };
                // An ACM export kept for this identity, to serve again if
                // the certificate is unchanged.
                let kept = match kind {
                    UnitKind::Certificate if !self.settings.acm_export_max_age.is_zero() => indices
                        .first()
                        .and_then(|i| self.values.get(&value_key(&objects[*i])))
                        .filter(|(_, at)| at.elapsed() < self.settings.acm_export_max_age)
                        .map(|(value, _)| acm::Kept {
                            value,
                            describe: self.describe_denied.get(identity).is_none(),
                        }),
                    _ => None,
                };
                async move {
                    match self.run_unit(key, kind, ctx, unit_objects, kept).await {
                        Ok(values) => Ok((indices, values)),
                        Err(e) => match self.last_good(&stale_keys, &e) {
                            Some(values) => Ok((indices, values)),
                            None => Err(e),
                        },
                    }
                }
                .boxed()
            })
            .collect();
        // Each unit's values count as it finishes: the first that takes the
        // mount over what it may hold ends the fetch, and dropping the
        // stream cancels the units still in flight.
        let mut done = stream::iter(futures).buffered(self.settings.concurrency.max(1));
        let keep = self.settings.value_ttl.max(self.settings.stale_max_age);
        let acm_keep = (!self.settings.acm_export_max_age.is_zero()).then_some(self.settings.acm_export_max_age);
        while let Some(unit) = done.next().await {
            let (indices, values) = unit?;
            let now = Instant::now();
            for (i, v) in indices.into_iter().zip(values) {
                take_values(mount.quota, &objects[i], &v)?;
                let keep = match objects[i].kind {
                    ObjectKind::Acm => keep.max(acm_keep),
                    _ => keep,
                };
                if let Some(keep) = keep
                    && v.origin.source != Source::LastGood
                {
                    let key = value_key(&objects[i]);
                    // An export served again keeps its age: the key is
                    // exported anew once it is --acm-export-max-age old.
                    if objects[i].kind == ObjectKind::Acm
                        && self.values.get(&key).is_some_and(|(kept, _)| kept.version == v.version)
                    {
                        slots[i] = Some(v);
                        continue;
                    }
                    if self.charge_kept(&v) {
                        self.values.insert(key, (v.clone(), now), now + keep);
                    } else {
                        // What is kept must never be older than what was
                        // served: an older value kept would be served in
                        // the next brownout.
                        self.values.forget_if(&key, |_| true);
                    }
                }
                slots[i] = Some(v);
            }
        }
        drop(done);
        slots
            .into_iter()
            .zip(objects)
            .map(|(slot, o)| {
                slot.ok_or_else(|| FetchError::Missing {
                    service: "AWS",
                    selector: o.name.clone(),
                    region: regions.primary.clone(),
                })
            })
            .collect()
    }

    /// The last good values of a failed unit's objects for this identity,
    /// if the failure is retryable (throttling, 5xx, timeout, an outage in
    /// every region: never an access denial or a not-found, which must take
    /// effect) and every one of them is younger than
    /// `--serve-stale-max-age`.
    fn last_good(&self, keys: &[ValueKey], error: &FetchError) -> Option<Vec<Fetched>> {
        let max_age = self.settings.stale_max_age?;
        if !error.failure().is_retryable() {
            return None;
        }
        let mut oldest = Duration::ZERO;
        let values: Vec<Fetched> = keys
            .iter()
            .map(|k| {
                let (v, at) = self.values.get(k).filter(|(_, at)| at.elapsed() < max_age)?;
                oldest = oldest.max(at.elapsed());
                Some(v.served_from(Source::LastGood))
            })
            .collect::<Option<_>>()?;
        tracing::warn!(
            objects = values.len(),
            oldest = ?oldest,
            error = %crate::limits::Escaped(error),
            "AWS failed with a retryable error; serving this identity's last good values (--serve-stale-max-age)"
        );
        self.metrics.stale_served(error.failure().as_str(), values.len() as u64);
        Some(values)
    }

    /// Runs one unit, shared with concurrent identical units when enabled.
    async fn run_unit(
        &self,
        key: UnitKey,
        kind: UnitKind,
        ctx: UnitContext,
        objects: Vec<ObjectSpec>,
        kept: Option<acm::Kept>,
    ) -> Result<Vec<Fetched>, FetchError> {
        let batch_denied = self.batch_denied.clone();
        let describe_denied = self.describe_denied.clone();
        let batch_throttled = self.batch_throttled.clone();
        let backoff = self.settings.batch_throttle_backoff;
        let concurrency = self.settings.concurrency;
        let metrics = self.metrics.clone();
        let identity = key.identity.clone();
        let run = move || async move {
            let result: UnitResult = match kind {
                UnitKind::Secret => one_by_one(&ctx, &objects, concurrency).await,
                UnitKind::SecretBatch => match secrets_manager::fetch_batch(&ctx, &objects).await {
                    Err(secrets_manager::BatchError::Denied) => {
                        batch_denied.insert(identity, (), Instant::now() + BATCH_DENIED_FOR);
                        metrics.batch_fallback("denied");
                        tracing::info!(
                            "BatchGetSecretValue is denied for this identity; using GetSecretValue for {:?}",
                            BATCH_DENIED_FOR
                        );
                        one_by_one(&ctx, &objects, concurrency).await
                    }
                    Err(secrets_manager::BatchError::Throttled) => {
                        batch_throttled.insert((), (), Instant::now() + backoff);
                        metrics.batch_fallback("throttled");
                        tracing::warn!(
                            "BatchGetSecretValue is throttled (its quota is 100 calls per second per account and \
                             region); this node uses GetSecretValue for {:?} (--batch-throttle-backoff)",
                            backoff
                        );
                        one_by_one(&ctx, &objects, concurrency).await
                    }
                    Err(secrets_manager::BatchError::Fetch(e)) => Err(e),
                    Ok(v) => Ok(v),
                },
                UnitKind::Bulk => match objects.first() {
                    Some(o) => bulk::fetch(&ctx, o).await.map(|f| vec![f]),
                    None => Ok(Vec::new()),
                },
                UnitKind::Certificate => match objects.first() {
                    Some(o) => acm::fetch(&ctx, o, kept.as_ref()).await.map(|read| {
                        let (value, outcome) = match read {
                            acm::Read::Exported(v) => (v, "exported"),
                            acm::Read::Unchanged(v) => (v.served_from(Source::Cache), "unchanged"),
                            acm::Read::DescribeDenied(v) => {
                                describe_denied.insert(identity, (), Instant::now() + BATCH_DENIED_FOR);
                                tracing::info!(
                                    "DescribeCertificate is denied for this identity; its ACM certificates are \
                                     exported on every mount for {:?}",
                                    BATCH_DENIED_FOR
                                );
                                (v, "exported")
                            }
                        };
                        metrics.count(Family::Cache, "acm_exports", outcome);
                        vec![value]
                    }),
                    None => Ok(Vec::new()),
                },
                UnitKind::Parameters => {
                    let refs: Vec<(usize, &ObjectSpec)> = objects.iter().enumerate().collect();
                    ssm::fetch(&ctx, &refs).await.map(|mut v| {
                        v.sort_by_key(|(i, _)| *i);
                        v.into_iter().map(|(_, f)| f).collect()
                    })
                }
            };
            result.map(|v| (Arc::new(v), None))
        };
        if !self.settings.single_flight {
            return run().await.map(|(v, _)| v.as_ref().clone());
        }
        let (result, lookup) = self.units.get_or_fetch(key, run).await;
        if lookup == crate::cache::Lookup::Joined {
            self.metrics.count(Family::Cache, "single_flight", "joined");
        }
        result.map(|v| v.as_ref().clone()).map_err(FetchError::Shared)
    }
}

/// Counts a value of `object` towards the mount's quota (the matches of an
/// object that selects many counted themselves, page by page).
fn take_values(quota: &MountQuota, object: &ObjectSpec, v: &Fetched) -> Result<(), FetchError> {
    if object.bulk.is_some() {
        return Ok(());
    }
    quota.take_value(&object.name, v.value.len() as u64)
}

/// Secrets Manager objects with one `GetSecretValue` each, up to
/// `concurrency` at once, in object order; the first error fails them all.
async fn one_by_one(ctx: &UnitContext, objects: &[ObjectSpec], concurrency: usize) -> UnitResult {
    let fetches: Vec<BoxFuture<'_, Result<Fetched, FetchError>>> =
        objects.iter().map(|o| secrets_manager::fetch(ctx, o).boxed()).collect();
    stream::iter(fetches).buffered(concurrency.max(1)).try_collect().await
}
