//! The provider's configuration, validated once at start-up: the server's
//! flags (each checked as clap parses it, in [`crate::cli::serve`]) and the
//! environment, checked together here into the settings every part of the
//! provider takes. `main` only wires what this produces; nothing reads a
//! flag or an environment variable later.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditSettings;
use crate::aws::{AwsClients, AwsSettings};
use crate::cli::{LogFormat, MemoryBudgetArg, ServeArgs, parse_duration};
use crate::events::{CONTROLLER, EventSettings};
use crate::fetch::{FetchSettings, Fetcher};
use crate::health::HttpSettings;
use crate::identity::{IdentityResolver, IdentitySettings, PodIdentityClient, PodIdentityConfig};
use crate::kube::{KubeClient, KubeSettings};
use crate::memory::{self, BudgetSettings, MemoryBudget};
use crate::mount::{MountSettings, Provider};
use crate::telemetry::Metrics;

/// What the process's environment says, read once (tests build their own).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `NODE_NAME` (the downward API): this node, for its region label and
    /// the events' reporting instance.
    pub node_name: Option<String>,
    /// The files `KUBECONFIG` lists; empty: the in-cluster configuration.
    pub kubeconfig: Vec<PathBuf>,
    /// `AWS_CA_BUNDLE`: more certificates to trust for AWS endpoints.
    pub aws_ca_bundle: Option<PathBuf>,
    /// `RUST_LOG`, which takes precedence over `--log-level`.
    pub rust_log: Option<String>,
    /// The container's memory limit (its cgroup), for `--memory-budget=auto`.
    pub memory_limit: Option<u64>,
}

impl Environment {
    /// The environment of this process.
    pub fn from_process() -> Self {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            node_name: non_empty("NODE_NAME"),
            kubeconfig: kubeconfig_paths(std::env::var_os("KUBECONFIG")),
            aws_ca_bundle: non_empty("AWS_CA_BUNDLE").map(PathBuf::from),
            rust_log: non_empty("RUST_LOG"),
            memory_limit: memory::container_limit(),
        }
    }
}

/// The files of a `KUBECONFIG` value (a path list), empty ones skipped.
fn kubeconfig_paths(value: Option<OsString>) -> Vec<PathBuf> {
    value
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A combination of values the provider cannot start with.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--memory-floor-per-mount ({}) must fit in --memory-budget ({})",
        memory::Bytes(*.floor), memory::Bytes(*.budget)
    )]
    FloorExceedsBudget { floor: u64, budget: u64 },
    #[error("invalid RUST_LOG {0:?}: {1}")]
    RustLog(String, String),
}

/// A combination of deadlines that works, but not as its parts promise: the
/// provider starts (a DaemonSet that refuses to start stops every mount on
/// every node) and says so at start.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineWarning {
    #[error(
        "--aws-operation-timeout ({}) does not fit twice in --mount-timeout ({}): a call that fails in the primary region may leave the failover region no time",
        fmt(*.operation), fmt(*.mount)
    )]
    OperationExceedsMount { operation: Duration, mount: Duration },
    #[error(
        "--aws-attempt-timeout ({}) is longer than --aws-operation-timeout ({}), which ends every attempt first",
        fmt(*.attempt), fmt(*.operation)
    )]
    AttemptExceedsOperation { attempt: Duration, operation: Duration },
    #[error(
        "--aws-connect-timeout ({}) is longer than --aws-attempt-timeout ({}), which ends every connection attempt first",
        fmt(*.connect), fmt(*.attempt)
    )]
    ConnectExceedsAttempt { connect: Duration, attempt: Duration },
    #[error(
        "--kube-timeout ({}) is not shorter than --mount-timeout ({}): a slow Kubernetes API fails mounts by their deadline instead of naming the API",
        fmt(*.kube), fmt(*.mount)
    )]
    KubeExceedsMount { kube: Duration, mount: Duration },
}

fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// How logs are written and filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Filter directives: `RUST_LOG` when set, else `--log-level`.
    pub filter: String,
}

/// The health and metrics endpoint.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A host and port (checked when parsed; resolved when bound).
    pub addr: String,
    pub settings: HttpSettings,
}

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub provider_volume: PathBuf,
    /// The version named in the AWS User-Agent (`--eks-addon-version`, else ours).
    pub app_version: String,
    pub log: LogConfig,
    pub kube: KubeSettings,
    /// The kubeconfig files; empty: in-cluster.
    pub kubeconfig: Vec<PathBuf>,
    pub aws: AwsSettings,
    pub aws_ca_bundle: Option<PathBuf>,
    pub pod_identity: PodIdentityConfig,
    pub identity: IdentitySettings,
    pub fetch: FetchSettings,
    pub memory: BudgetSettings,
    /// The container's memory limit the budget was derived from.
    pub memory_limit: Option<u64>,
    /// `known_region` is found at start (`AWS_REGION`, this node's label).
    pub mount: MountSettings,
    /// `None`: the endpoint is off (`--http-addr=""`).
    pub http: Option<HttpConfig>,
    pub node_name: Option<String>,
    /// Values accepted with a warning (logged once logging is set up).
    pub warnings: Vec<String>,
}

/// `filter` with the audit records on (at `info`, whatever the filter's
/// level) or off, unless it names their target itself.
fn with_audit(filter: &str, audit: bool) -> String {
    let names_it = filter
        .split(',')
        .any(|d| d.split(['=', '[']).next().map(str::trim) == Some(crate::audit::TARGET));
    if names_it {
        return filter.to_string();
    }
    let level = if audit { "info" } else { "off" };
    match filter.trim() {
        "" => format!("{}={level}", crate::audit::TARGET),
        f => format!("{f},{}={level}", crate::audit::TARGET),
    }
}

/// The longest Pod Identity Agent timeout that is not warned about.
const POD_IDENTITY_TIMEOUT_WARN: Duration = Duration::from_secs(30);

impl Config {
    /// Checks `args` and `env` together and builds the settings.
    pub fn new(args: &ServeArgs, env: Environment) -> Result<Self, ConfigError> {
        let mut warnings: Vec<String> = deadline_warnings(args).iter().map(ToString::to_string).collect();
        let log = LogConfig {
            format: args.log_format,
            filter: match env.rust_log {
                Some(f) => {
                    tracing_subscriber::EnvFilter::builder()
                        .parse(&f)
                        .map_err(|e| ConfigError::RustLog(f.clone(), e.to_string()))?;
                    f
                }
                None => args.log_level.clone(),
            },
        };
        let log = LogConfig {
            filter: with_audit(&log.filter, args.audit_log),
            ..log
        };
        let cluster = (!args.cluster_name.is_empty()).then(|| args.cluster_name.clone());
        let budget = match args.memory_budget {
            MemoryBudgetArg::Auto => memory::auto_budget(env.memory_limit),
            MemoryBudgetArg::Bytes(b) => b,
        };
        let floor = args.memory_floor_per_mount as u64;
        if floor > budget {
            return Err(ConfigError::FloorExceedsBudget { floor, budget });
        }
        let mut pod_identity = PodIdentityConfig {
            ipv4_endpoint: args.pod_identity_endpoint_ipv4.clone(),
            ipv6_endpoint: args.pod_identity_endpoint_ipv6.clone(),
            ..PodIdentityConfig::default()
        };
        if let Some(t) = pod_identity_timeout(&args.pod_identity_http_timeout, &mut warnings) {
            pod_identity.timeout = t;
        }
        let off = |d: Duration| (!d.is_zero()).then_some(d);
        // A fetch shared by concurrent mounts may run a little longer than a
        // mount, so a mount waiting for it fails at its own deadline, naming
        // its step (a fetch every waiter gave up on is abandoned anyway).
        let shared_deadline = args.mount_timeout + Duration::from_secs(1);
        Ok(Self {
            provider_volume: args.provider_volume.clone(),
            app_version: if args.eks_addon_version.is_empty() {
                env!("CARGO_PKG_VERSION").to_string()
            } else {
                args.eks_addon_version.clone()
            },
            log,
            kube: KubeSettings {
                qps: args.qps,
                burst: args.burst,
                timeout: args.kube_timeout,
            },
            kubeconfig: env.kubeconfig,
            aws: AwsSettings {
                connect_timeout: args.aws_connect_timeout,
                attempt_timeout: args.aws_attempt_timeout,
                operation_timeout: args.aws_operation_timeout,
                max_concurrent_calls: args.max_concurrent_aws_calls,
            },
            aws_ca_bundle: env.aws_ca_bundle,
            pod_identity,
            identity: IdentitySettings {
                cache_credentials: args.credential_cache,
                refresh_margin: args.credential_refresh_margin,
                pod_identity_scope: args.pod_identity_cache_scope,
                service_account_ttl: args.service_account_cache_ttl,
                shared_deadline,
                cluster_name: cluster.clone(),
            },
            fetch: FetchSettings {
                batch_get_secret_value: args.batch_get_secret_value,
                batch_throttle_backoff: args.batch_throttle_backoff,
                concurrency: args.max_concurrent_fetches,
                value_ttl: off(args.cache_ttl),
                stale_max_age: off(args.serve_stale_max_age),
                single_flight: args.single_flight,
                shared_deadline,
                throttle_retries: args.throttle_retries,
                acm_export_max_age: args.acm_export_max_age,
            },
            memory: BudgetSettings {
                total: budget,
                floor,
                mounts: args.max_concurrent_mounts,
            },
            memory_limit: env.memory_limit,
            mount: MountSettings {
                driver_writes: args.driver_writes_secrets,
                known_region: None,
                limits: args.limits.limits(),
                timeout: args.mount_timeout,
                max_concurrent_mounts: args.max_concurrent_mounts,
                max_inflight_response_bytes: args.max_inflight_response_bytes,
                max_connection_age: args.max_connection_age,
                rotation_events: EventSettings {
                    enabled: args.rotation_failure_events,
                    interval: args.rotation_event_interval,
                    instance: format!("{CONTROLLER}-{}", env.node_name.as_deref().unwrap_or("unknown-node")),
                },
                audit: Arc::new(AuditSettings {
                    enabled: args.audit_log,
                    max_objects: args.audit_max_objects,
                    node: env.node_name.clone(),
                    cluster,
                }),
                ..MountSettings::default()
            },
            http: (!args.http_addr.is_empty()).then(|| HttpConfig {
                addr: args.http_addr.clone(),
                settings: HttpSettings {
                    header_timeout: args.http_header_timeout,
                    idle_timeout: args.http_idle_timeout,
                    max_connections: args.http_max_connections,
                },
            }),
            node_name: env.node_name,
            warnings,
        })
    }
}

/// What a provider talks to: made from the environment by `main`, or
/// in-process by tests.
pub struct Peers {
    pub metrics: Arc<Metrics>,
    pub aws: AwsClients,
    pub kube: KubeClient,
    pub pod_identity: PodIdentityClient,
}

impl Config {
    /// The provider this configuration describes, over `peers`.
    pub fn provider(&self, peers: Peers) -> Arc<Provider> {
        let Peers {
            metrics,
            aws,
            kube,
            pod_identity,
        } = peers;
        let identity = IdentityResolver::new(
            aws.clone(),
            kube.clone(),
            pod_identity,
            self.identity.clone(),
            metrics.clone(),
        );
        let memory = MemoryBudget::new(self.memory, &metrics);
        let fetcher = Fetcher::new(aws.clone(), self.fetch.clone(), metrics.clone(), memory.clone());
        Provider::new(self.mount.clone(), aws, kube, identity, fetcher, metrics, memory)
    }
}

/// The rules between deadlines: a connection fits in an attempt, an
/// attempt in an operation, an operation in each region in a mount, and a
/// Kubernetes read in a mount.
pub fn deadline_warnings(args: &ServeArgs) -> Vec<DeadlineWarning> {
    let (connect, attempt, operation, mount, kube) = (
        args.aws_connect_timeout,
        args.aws_attempt_timeout,
        args.aws_operation_timeout,
        args.mount_timeout,
        args.kube_timeout,
    );
    let mut out = Vec::new();
    if connect > attempt {
        out.push(DeadlineWarning::ConnectExceedsAttempt { connect, attempt });
    }
    if attempt > operation {
        out.push(DeadlineWarning::AttemptExceedsOperation { attempt, operation });
    }
    if operation.saturating_mul(2) > mount {
        out.push(DeadlineWarning::OperationExceedsMount { operation, mount });
    }
    if kube >= mount {
        out.push(DeadlineWarning::KubeExceedsMount { kube, mount });
    }
    out
}

/// `--pod-identity-http-timeout`: empty is the default; an unparsable or
/// non-positive value is ignored with a warning (as the reference does),
/// a long one warned about.
fn pod_identity_timeout(raw: &str, warnings: &mut Vec<String>) -> Option<Duration> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match parse_duration(raw) {
        Some(d) if !d.is_zero() => {
            if d > POD_IDENTITY_TIMEOUT_WARN {
                warnings.push(format!("--pod-identity-http-timeout={raw} is longer than 30s"));
            }
            Some(d)
        }
        _ => {
            warnings.push(format!(
                "ignoring invalid --pod-identity-http-timeout={raw:?}: a positive duration such as 2s"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, normalize_args};
    use crate::identity::PodIdentityScope;
    use crate::limits::Limits;
    use clap::Parser;

    #[test]
    fn audit_records_are_on_at_any_level_unless_the_filter_names_them() {
        let audit = "csi_provider_aws::audit";
        assert_eq!(with_audit("warn", true), format!("warn,{audit}=info"));
        assert_eq!(with_audit("", false), format!("{audit}=off"));
        let own = format!("info,{audit}=off");
        assert_eq!(with_audit(&own, true), own, "the filter's own directive stays");
        assert_eq!(
            with_audit("csi_provider_aws::auditing=debug", true),
            format!("csi_provider_aws::auditing=debug,{audit}=info"),
            "another target that merely starts alike is not the audit's"
        );
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let argv = std::iter::once("csi-provider-aws").chain(flags.iter().copied());
        Cli::try_parse_from(normalize_args(argv.map(str::to_string)))
            .map(|c| c.serve)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
    }

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        Config::new(&args(flags), Environment::default())
    }

    #[test]
    fn defaults_match_the_reference_and_pass_every_rule() {
        let c = config(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.provider_volume, PathBuf::from(crate::cli::DEFAULT_PROVIDER_VOLUME));
        assert!(!c.mount.driver_writes);
        assert_eq!((c.kube.qps, c.kube.burst), (5.0, 250));
        assert_eq!(c.pod_identity.timeout, PodIdentityConfig::default().timeout);
        assert_eq!(c.pod_identity.ipv4_endpoint, PodIdentityConfig::default().ipv4_endpoint);
        assert_eq!(c.fetch.value_ttl, None, "the value cache is off by default");
        assert_eq!(c.fetch.stale_max_age, None);
        assert!(c.identity.cache_credentials && c.fetch.batch_get_secret_value && c.fetch.single_flight);
        assert_eq!(c.identity.service_account_ttl, Duration::from_secs(30));
        assert_eq!(c.fetch.batch_throttle_backoff, Duration::from_secs(60));
        assert_eq!(c.identity.refresh_margin, Duration::from_secs(300));
        assert_eq!(c.identity.pod_identity_scope, PodIdentityScope::Pod);
        assert!(
            c.mount.rotation_events.enabled,
            "rotation failures are visible by default"
        );
        assert_eq!(c.mount.rotation_events.interval, Duration::from_secs(300));
        assert_eq!(c.mount.rotation_events.instance, format!("{CONTROLLER}-unknown-node"));
        assert_eq!(
            c.mount.limits,
            Limits::default(),
            "flag defaults are the limits' defaults"
        );
        assert_eq!(c.mount.timeout, Duration::from_secs(60));
        assert_eq!(c.memory.total, memory::DEFAULT_BUDGET, "no container limit");
        assert_eq!(c.http.as_ref().map(|h| h.addr.as_str()), Some("0.0.0.0:8989"));
        assert_eq!(c.log.filter, "info,csi_provider_aws::audit=info");
        assert_eq!(c.app_version, env!("CARGO_PKG_VERSION"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn zero_durations_turn_features_off_and_others_turn_them_on() {
        let c =
            config(&["--cache-ttl=2m", "--serve-stale-max-age=1h", "--http-addr="]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.fetch.value_ttl, Some(Duration::from_secs(120)));
        assert_eq!(c.fetch.stale_max_age, Some(Duration::from_secs(3600)));
        assert!(c.http.is_none(), "an empty --http-addr turns the endpoint off");
    }

    #[test]
    fn the_environment_is_taken_from_the_environment_value() {
        let env = Environment {
            node_name: Some("ip-10-0-0-1".into()),
            kubeconfig: kubeconfig_paths(Some("/a/config::/b/config".into())),
            rust_log: Some("debug,hyper=info".into()),
            memory_limit: Some(100 * 1024 * 1024),
            ..Environment::default()
        };
        let c = Config::new(&args(&["--log-level=warn"]), env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.mount.rotation_events.instance, format!("{CONTROLLER}-ip-10-0-0-1"));
        assert_eq!(
            c.kubeconfig,
            vec![PathBuf::from("/a/config"), PathBuf::from("/b/config")]
        );
        assert_eq!(
            c.log.filter, "debug,hyper=info,csi_provider_aws::audit=info",
            "RUST_LOG takes precedence, and audit records stay on"
        );
        assert_eq!(c.memory.total, memory::auto_budget(Some(100 * 1024 * 1024)));
        let bad = Environment {
            rust_log: Some("info,[".into()),
            ..Environment::default()
        };
        assert!(matches!(Config::new(&args(&[]), bad), Err(ConfigError::RustLog(..))));
    }

    #[test]
    fn deadlines_that_do_not_fit_each_other_are_warned_about_with_both_values() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--mount-timeout=20s"],
                "--aws-operation-timeout (15s) does not fit twice in --mount-timeout (20s): a call that fails in the primary region may leave the failover region no time",
            ),
            (
                &["--aws-attempt-timeout=20s"],
                "--aws-attempt-timeout (20s) is longer than --aws-operation-timeout (15s), which ends every attempt first",
            ),
            (
                &["--aws-connect-timeout=6s"],
                "--aws-connect-timeout (6s) is longer than --aws-attempt-timeout (5s), which ends every connection attempt first",
            ),
            (
                &["--kube-timeout=1m"],
                "--kube-timeout (1m) is not shorter than --mount-timeout (1m): a slow Kubernetes API fails mounts by their deadline instead of naming the API",
            ),
        ];
        for (flags, message) in cases {
            let c = config(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            assert_eq!(c.warnings, vec![message.to_string()], "{flags:?}");
        }
        for fits in [
            &["--mount-timeout=30s"][..],
            &["--mount-timeout=2m", "--aws-operation-timeout=1m", "--kube-timeout=30s"],
        ] {
            assert_eq!(config(fits).map(|c| c.warnings), Ok(vec![]), "{fits:?}");
        }
    }

    #[test]
    fn a_memory_floor_larger_than_the_budget_is_refused() {
        assert_eq!(
            config(&["--memory-budget=8MiB", "--memory-floor-per-mount=9MiB"]).map(|_| ()),
            Err(ConfigError::FloorExceedsBudget {
                floor: 9 * 1024 * 1024,
                budget: 8 * 1024 * 1024
            })
        );
        assert_eq!(
            ConfigError::FloorExceedsBudget {
                floor: 9 * 1024 * 1024,
                budget: 8 * 1024 * 1024
            }
            .to_string(),
            "--memory-floor-per-mount (9.0 MiB) must fit in --memory-budget (8.0 MiB)"
        );
    }

    #[test]
    fn pod_identity_timeouts_parse_or_are_ignored_with_a_warning() {
        let t = |v: &str| {
            let c = config(&[&format!("--pod-identity-http-timeout={v}")]).unwrap_or_else(|e| panic!("{e}"));
            (c.pod_identity.timeout, c.warnings)
        };
        let default = PodIdentityConfig::default().timeout;
        assert_eq!(t("2s"), (Duration::from_secs(2), vec![]));
        assert_eq!(t("500ms"), (Duration::from_millis(500), vec![]));
        assert_eq!(t("1m30s").0, Duration::from_secs(90));
        assert_eq!(
            t("1m30s").1,
            vec!["--pod-identity-http-timeout=1m30s is longer than 30s".to_string()]
        );
        assert_eq!(
            t("banana"),
            (
                default,
                vec![
                    "ignoring invalid --pod-identity-http-timeout=\"banana\": a positive duration such as 2s"
                        .to_string()
                ]
            )
        );
        assert_eq!(t("0s").0, default);
    }
}
