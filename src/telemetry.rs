//! Metrics: counters of AWS, STS, Pod Identity and Kubernetes calls by
//! operation and outcome, cache lookups, and per-mount instruments, in a
//! Prometheus registry (exported on `/metrics` by [`crate::health`]).
//! Label values are bounded: operation and resource names, outcome kinds and
//! error codes only — never object names, values, tokens or pod names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::failure::Failure;

/// A counter family of the call hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Secrets Manager and SSM calls (operation = `service.Operation`).
    Aws,
    /// STS `AssumeRoleWithWebIdentity` (IRSA credential fetches).
    Sts,
    /// EKS Pod Identity Agent requests (Pod Identity credential fetches).
    PodIdentity,
    /// STS `AssumeRole` with the pod's credentials (role chaining).
    Chain,
    /// Kubernetes API reads (operation = resource).
    Kubernetes,
    /// Cache lookups (operation = cache name; outcome hit, miss or joined).
    Cache,
}

/// The outcome label of a call.
pub fn outcome<T, E>(r: &Result<T, E>, failure: impl Fn(&E) -> Failure) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(e) => failure(e).as_str(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsLabels {
    service: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    mode: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeLabels {
    resource: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    outcome: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    service: String,
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = MetricFamily<L, Histogram, fn() -> Histogram>;

/// The provider's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    aws: MetricFamily<AwsLabels, Counter>,
    credentials: MetricFamily<CredentialLabels, Counter>,
    kubernetes: MetricFamily<KubeLabels, Counter>,
    cache: MetricFamily<CacheLabels, Counter>,
    batch_fallbacks: MetricFamily<ReasonLabels, Counter>,
    stale_served: MetricFamily<ReasonLabels, Counter>,
    objects_read: MetricFamily<ReadLabels, Counter>,
    rotation_failures: MetricFamily<CodeLabels, Counter>,
    rotation_events: MetricFamily<ResultLabels, Counter>,
    mounts: MetricFamily<MountLabels, Counter>,
    mount_duration: HistogramFamily<OutcomeLabels>,
    mount_objects: Histogram,
    in_flight: Gauge,
    tasks: Gauge,
    open_fds: Gauge,
    memory_budget: Gauge,
    memory_reserved: Gauge,
    memory_used: MetricFamily<StageLabels, Gauge>,
    memory_refusals: MetricFamily<StageLabels, Counter>,
    memory_waits: MetricFamily<StageLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("csi_provider_aws");
        let aws = MetricFamily::<AwsLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "Secrets Manager and SSM calls by service, operation and outcome",
            aws.clone(),
        );
        let credentials = MetricFamily::<CredentialLabels, Counter>::default();
        registry.register(
            "credential_fetches",
            "Credential fetches (STS for IRSA, the agent for Pod Identity) by mode and outcome",
            credentials.clone(),
        );
        let kubernetes = MetricFamily::<KubeLabels, Counter>::default();
        registry.register(
            "kubernetes_calls",
            "Kubernetes API reads by resource and outcome",
            kubernetes.clone(),
        );
        let cache = MetricFamily::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Cache lookups by cache and result (hit, miss, joined)",
            cache.clone(),
        );
        let batch_fallbacks = MetricFamily::<ReasonLabels, Counter>::default();
        registry.register(
            "batch_fallbacks",
            "BatchGetSecretValue calls replaced by GetSecretValue, by reason (throttled, denied)",
            batch_fallbacks.clone(),
        );
        let stale_served = MetricFamily::<ReasonLabels, Counter>::default();
        registry.register(
            "stale_values_served",
            "Objects served from an identity's last good value while AWS failed, by failure (throttled, unavailable)",
            stale_served.clone(),
        );
        let objects_read = MetricFamily::<ReadLabels, Counter>::default();
        registry.register(
            "objects_read",
            "Values read for mounts (matches included), by service (secretsmanager, ssm, acm), source (aws, cache, \
             last-good) and the mount's outcome (success, error, cancelled)",
            objects_read.clone(),
        );
        let rotation_failures = MetricFamily::<CodeLabels, Counter>::default();
        registry.register(
            "rotation_failures",
            "Failed mounts of volumes already mounted (rotation), by error code",
            rotation_failures.clone(),
        );
        let rotation_events = MetricFamily::<ResultLabels, Counter>::default();
        registry.register(
            "rotation_events",
            "SecretRotationFailed pod events, by result (created, updated, aggregated, rate_limited, failed)",
            rotation_events.clone(),
        );
        let mounts = MetricFamily::<MountLabels, Counter>::default();
        registry.register("mounts", "Mount requests by outcome and error code", mounts.clone());
        let mount_duration: HistogramFamily<OutcomeLabels> =
            MetricFamily::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "mount_duration_seconds",
            "Mount duration by outcome",
            mount_duration.clone(),
        );
        let mount_objects = Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0]);
        registry.register("mount_objects", "Objects per successful mount", mount_objects.clone());
        let in_flight = Gauge::default();
        registry.register("mounts_in_flight", "Mounts being served", in_flight.clone());
        let tasks = Gauge::default();
        registry.register("runtime_tasks", "Tasks alive in the async runtime", tasks.clone());
        let open_fds = Gauge::default();
        registry.register("open_fds", "File descriptors the process has open", open_fds.clone());
        let memory_budget = Gauge::default();
        registry.register(
            "memory_budget_bytes",
            "The memory budget for what mounts hold (--memory-budget)",
            memory_budget.clone(),
        );
        let memory_reserved = Gauge::default();
        registry.register(
            "memory_reserved_bytes",
            "The part of the memory budget reserved for each admitted mount's floor",
            memory_reserved.clone(),
        );
        let memory_used = MetricFamily::<StageLabels, Gauge>::default();
        registry.register(
            "memory_used_bytes",
            "Bytes of the memory budget held now, by stage",
            memory_used.clone(),
        );
        let memory_refusals = MetricFamily::<StageLabels, Counter>::default();
        registry.register(
            "memory_refusals",
            "Charges of the memory budget refused (the mount failed with RESOURCE_EXHAUSTED), by stage",
            memory_refusals.clone(),
        );
        let memory_waits = MetricFamily::<StageLabels, Counter>::default();
        registry.register(
            "memory_waits",
            "Charges of the memory budget that had to wait for other mounts to free memory, by stage",
            memory_waits.clone(),
        );
        let build = MetricFamily::<BuildLabels, Gauge>::default();
        registry.register("build_info", "Build information", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        Self {
            registry,
            aws,
            credentials,
            kubernetes,
            cache,
            batch_fallbacks,
            stale_served,
            objects_read,
            rotation_failures,
            rotation_events,
            mounts,
            mount_duration,
            mount_objects,
            in_flight,
            tasks,
            open_fds,
            memory_budget,
            memory_reserved,
            memory_used,
            memory_refusals,
            memory_waits,
        }
    }
}

impl Metrics {
    /// Counts one call or lookup.
    pub fn count(&self, family: Family, operation: &'static str, outcome: &'static str) {
        let outcome = outcome.to_string();
        match family {
            Family::Aws => {
                let (service, operation) = operation.split_once('.').unwrap_or(("aws", operation));
                self.aws
                    .get_or_create(&AwsLabels {
                        service: service.to_string(),
                        operation: operation.to_string(),
                        outcome,
                    })
                    .inc();
            }
            Family::Sts | Family::PodIdentity | Family::Chain => {
                let mode = match family {
                    Family::Sts => "irsa",
                    Family::PodIdentity => "pod_identity",
                    _ => "assume_role",
                };
                self.credentials
                    .get_or_create(&CredentialLabels {
                        mode: mode.to_string(),
                        outcome,
                    })
                    .inc();
            }
            Family::Kubernetes => {
                self.kubernetes
                    .get_or_create(&KubeLabels {
                        resource: operation.to_string(),
                        outcome,
                    })
                    .inc();
            }
            Family::Cache => {
                self.cache
                    .get_or_create(&CacheLabels {
                        cache: operation.to_string(),
                        result: outcome,
                    })
                    .inc();
            }
        }
    }

    /// A batch whose objects were fetched one by one: `throttled` or
    /// `denied`.
    pub fn batch_fallback(&self, reason: &'static str) {
        self.batch_fallbacks
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// `objects` served from their last good value after a `reason`
    /// failure (`--serve-stale-max-age`).
    pub fn stale_served(&self, reason: &'static str, objects: u64) {
        self.stale_served
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(objects);
    }

    /// `n` values a mount read from `source`, by the mount's `outcome`.
    pub fn objects_read(&self, service: &'static str, source: &'static str, outcome: &'static str, n: u64) {
        self.objects_read
            .get_or_create(&ReadLabels {
                service: service.to_string(),
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc_by(n);
    }

    /// A failed mount of a volume that was already mounted.
    pub fn rotation_failure(&self, code: &'static str) {
        self.rotation_failures
            .get_or_create(&CodeLabels { code: code.to_string() })
            .inc();
    }

    /// What became of a rotation failure's pod event.
    pub fn rotation_event(&self, result: &'static str) {
        self.rotation_events
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// The memory budget's instruments: sets its size and reserve, and
    /// returns the used gauge, refusal and wait counters of each stage.
    pub fn memory(
        &self,
        stages: &[&'static str],
        total: u64,
        reserved: u64,
    ) -> (Vec<Gauge>, Vec<Counter>, Vec<Counter>) {
        self.memory_budget.set(total as i64);
        self.memory_reserved.set(reserved as i64);
        let label = |s: &str| StageLabels { stage: s.to_string() };
        (
            stages
                .iter()
                .map(|s| self.memory_used.get_or_create(&label(s)).clone())
                .collect(),
            stages
                .iter()
                .map(|s| self.memory_refusals.get_or_create(&label(s)).clone())
                .collect(),
            stages
                .iter()
                .map(|s| self.memory_waits.get_or_create(&label(s)).clone())
                .collect(),
        )
    }

    /// A mount started; the guard records its end.
    pub fn mount_started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }

    /// Records a finished mount: `code` is `None` on success, else the
    /// bounded error code.
    pub fn mount_finished(&self, seconds: f64, objects: usize, code: Option<&'static str>) {
        let outcome = if code.is_some() { "error" } else { "success" };
        self.mounts
            .get_or_create(&MountLabels {
                outcome: outcome.to_string(),
                code: code.unwrap_or("").to_string(),
            })
            .inc();
        self.mount_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(seconds);
        if code.is_none() {
            self.mount_objects.observe(objects as f64);
        }
    }

    /// The Prometheus text exposition (OpenMetrics). Process gauges (tasks,
    /// file descriptors) are read at each scrape.
    pub fn encode(&self) -> String {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Keeps the in-flight gauge up while a mount runs.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_exported_with_bounded_labels() {
        let m = Metrics::default();
        m.count(Family::Aws, "secretsmanager.BatchGetSecretValue", "success");
        m.count(Family::Aws, "secretsmanager.BatchGetSecretValue", "success");
        m.count(Family::Aws, "ssm.GetParameters", "throttled");
        m.count(Family::Sts, "AssumeRoleWithWebIdentity", "success");
        m.count(Family::PodIdentity, "GetCredentials", "unavailable");
        m.count(Family::Kubernetes, "serviceaccounts", "success");
        m.count(Family::Cache, "credentials", "hit");
        {
            let _g = m.mount_started();
            m.mount_finished(0.012, 3, None);
        }
        m.mount_finished(0.5, 1, Some("ObjectNotFound"));
        let text = m.encode();
        for line in [
            r#"csi_provider_aws_aws_calls_total{service="secretsmanager",operation="BatchGetSecretValue",outcome="success"} 2"#,
            r#"csi_provider_aws_aws_calls_total{service="ssm",operation="GetParameters",outcome="throttled"} 1"#,
            r#"csi_provider_aws_credential_fetches_total{mode="irsa",outcome="success"} 1"#,
            r#"csi_provider_aws_credential_fetches_total{mode="pod_identity",outcome="unavailable"} 1"#,
            r#"csi_provider_aws_kubernetes_calls_total{resource="serviceaccounts",outcome="success"} 1"#,
            r#"csi_provider_aws_cache_lookups_total{cache="credentials",result="hit"} 1"#,
            r#"csi_provider_aws_mounts_total{outcome="success",code=""} 1"#,
            r#"csi_provider_aws_mounts_total{outcome="error",code="ObjectNotFound"} 1"#,
            "csi_provider_aws_mounts_in_flight 0",
            "csi_provider_aws_mount_objects_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains(&format!(
            "csi_provider_aws_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn outcomes_are_bounded_labels() {
        let ok: Result<(), Failure> = Ok(());
        assert_eq!(outcome(&ok, |f| *f), "success");
        for (f, label) in [
            (Failure::NotFound, "not_found"),
            (Failure::AccessDenied, "access_denied"),
            (Failure::Throttled, "throttled"),
            (Failure::Unavailable, "unavailable"),
            (Failure::InvalidCredentials, "invalid_credentials"),
            (Failure::Rejected, "rejected"),
        ] {
            let r: Result<(), Failure> = Err(f);
            assert_eq!(outcome(&r, |f| *f), label);
        }
    }
}
