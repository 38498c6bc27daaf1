//! Command line: the reference's flags with the same names and defaults
//! (Go's `-flag` spelling is accepted too), plus our own.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::aws::AwsSettings;
use crate::identity::PodIdentityScope;
use crate::identity::pod_identity::{DEFAULT_IPV4_ENDPOINT, DEFAULT_IPV6_ENDPOINT};
use crate::limits::{LimitArgs, Limits};
use crate::mount::MountSettings;

/// Default socket directory (the driver's `--provider-volume`).
pub const DEFAULT_PROVIDER_VOLUME: &str = "/var/run/secrets-store-csi-providers";

#[derive(Debug, Parser)]
#[command(
    name = "csi-provider-aws",
    version,
    about = "AWS Secrets Manager and SSM Parameter Store provider for the Secrets Store CSI driver",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the provider API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Play the driver's role: mount a SecretProviderClass through a running provider.
    Mount(crate::cli::mount::MountArgs),
    /// Check SecretProviderClass manifests offline, exactly as a Mount would.
    Validate(crate::cli::validate::ValidateArgs),
    /// Liveness and readiness: call Version through the provider socket.
    Probe(crate::cli::probe::ProbeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of the provider socket; the socket is <dir>/aws.sock.
    #[arg(long, default_value = DEFAULT_PROVIDER_VOLUME)]
    pub provider_volume: PathBuf,
    /// Return files to the driver instead of writing them into the pod volume.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set)]
    pub driver_writes_secrets: bool,
    /// Kubernetes API queries per second.
    #[arg(long, default_value_t = 5.0)]
    pub qps: f32,
    /// Kubernetes API burst: the reads a node may make at once before
    /// `--qps` spaces them. One per distinct ServiceAccount at most, so it
    /// fits a node full of new pods (EKS runs at most 250 per node).
    #[arg(long, default_value_t = 250)]
    pub burst: u32,
    /// Version reported in the AWS User-Agent instead of ours.
    #[arg(long, default_value = "")]
    pub eks_addon_version: String,
    /// HTTP timeout for the EKS Pod Identity Agent (e.g. 2s, 500ms).
    #[arg(long, default_value = "")]
    pub pod_identity_http_timeout: String,
    /// EKS Pod Identity Agent credentials URL over IPv4.
    #[arg(long, default_value = DEFAULT_IPV4_ENDPOINT)]
    pub pod_identity_endpoint_ipv4: String,
    /// EKS Pod Identity Agent credentials URL over IPv6.
    #[arg(long, default_value = DEFAULT_IPV6_ENDPOINT)]
    pub pod_identity_endpoint_ipv6: String,
    /// Keep fetched values this long per identity (0 = off). Rotations and
    /// IAM revocations then take up to this long to reach pods.
    #[arg(long, default_value = "0", value_parser = parse_flag_duration)]
    pub cache_ttl: Duration,
    /// When AWS fails with a retryable error (throttling, 5xx, timeout,
    /// region outage) in every region, serve an identity's last good value
    /// of an object if it is younger than this (0 = off). Never after an
    /// access denial or a not-found, never to another identity.
    #[arg(long, default_value = "0", value_parser = parse_flag_duration)]
    pub serve_stale_max_age: Duration,
    /// Record a Warning event (SecretRotationFailed) on a pod whose mounted
    /// volume failed to refresh.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set)]
    pub rotation_failure_events: bool,
    /// Least time between two writes of one pod's SecretRotationFailed event
    /// (failures in between are counted into its series).
    #[arg(long, default_value = "5m", value_parser = parse_flag_duration)]
    pub rotation_event_interval: Duration,
    /// Cache credentials per identity until their expiration minus the margin.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set)]
    pub credential_cache: bool,
    /// Refresh cached credentials this long before they expire.
    #[arg(long, default_value = "5m", value_parser = parse_flag_duration)]
    pub credential_refresh_margin: Duration,
    /// Share Pod Identity credentials per pod (default) or per ServiceAccount.
    #[arg(long, value_enum, default_value = "pod")]
    pub pod_identity_cache_scope: PodIdentityScope,
    /// Keep ServiceAccount role annotations this long (0 = read every mount).
    #[arg(long, default_value = "30s", value_parser = parse_flag_duration)]
    pub service_account_cache_ttl: Duration,
    /// Fetch Secrets Manager objects without a version field up to 20 per
    /// BatchGetSecretValue call.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set)]
    pub batch_get_secret_value: bool,
    /// After BatchGetSecretValue is throttled, fetch with GetSecretValue on
    /// this node for this long (its account-wide quota is 100 calls per
    /// second, GetSecretValue's 10,000).
    #[arg(long, default_value = "60s", value_parser = parse_flag_duration)]
    pub batch_throttle_backoff: Duration,
    /// Concurrent AWS calls per mount (1 = one after another).
    #[arg(long, default_value_t = crate::fetch::CONCURRENCY)]
    pub max_concurrent_fetches: usize,
    /// Address of the /healthz, /readyz and /metrics endpoint ("" disables it).
    #[arg(long, default_value = "0.0.0.0:8989")]
    pub http_addr: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Let concurrent mounts of the same objects by the same identity share calls.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set)]
    pub single_flight: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    // === deadlines and concurrency ===
    /// How long one mount may take, every step included; keep it below the
    /// kubelet's deadline for NodePublishVolume (about 2 minutes).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub mount_timeout: Duration,
    /// Connecting to an AWS endpoint (STS included).
    #[arg(long, default_value = "3s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub aws_connect_timeout: Duration,
    /// One attempt of an AWS call.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub aws_attempt_timeout: Duration,
    /// One AWS call, all retries included (the failover region gets its own).
    #[arg(long, default_value = "15s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub aws_operation_timeout: Duration,
    /// One Kubernetes API request (connect, send, answer).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub kube_timeout: Duration,
    /// Mounts served at once; more wait (within --mount-timeout) and then
    /// fail with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = MountSettings::default().max_concurrent_mounts, help_heading = "Deadlines")]
    pub max_concurrent_mounts: usize,
    /// Bytes of driver-writes responses being sent at once (each is encoded
    /// into its own buffer until the driver has read it); more wait.
    #[arg(long, default_value = "32MiB", value_parser = crate::limits::parse_bytes, help_heading = "Deadlines")]
    pub max_inflight_response_bytes: usize,
    /// AWS calls in flight at once, all mounts together.
    #[arg(long, default_value_t = AwsSettings::default().max_concurrent_calls, help_heading = "Deadlines")]
    pub max_concurrent_aws_calls: usize,
    /// Age at which a connection to the provider socket is recycled (HTTP/2
    /// GOAWAY once its mounts have answered; the driver reconnects): the
    /// transport's buffers holding the last requests, the pods' tokens in
    /// them, are freed (and zeroed) with it.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub max_connection_age: Duration,
    /// Throttled AWS calls the node may retry (with jittered backoff, within
    /// the mount's deadline) before calls succeed again: each retry spends
    /// one, every five successful calls earn one back.
    #[arg(long, default_value_t = crate::fetch::DEFAULT_THROTTLE_RETRIES, help_heading = "Deadlines")]
    pub throttle_retries: u32,

    // === memory ===
    /// Memory for everything mounts hold, all together (requests, classes,
    /// AWS responses, values, files, responses, kept values): `auto` (half
    /// of the container's memory limit, else 50MiB) or a size (KiB, MiB).
    #[arg(long, default_value = "auto", value_parser = parse_budget, help_heading = "Memory")]
    pub memory_budget: MemoryBudgetArg,
    /// What each admitted mount may hold out of a reserve no other mount
    /// can take (a typical mount's whole life fits in it).
    #[arg(long, default_value = "256KiB", value_parser = crate::limits::parse_bytes, help_heading = "Memory")]
    pub memory_floor_per_mount: usize,

    // === the health and metrics endpoint ===
    /// How long a client may take to send a request's headers.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, help_heading = "HTTP endpoint")]
    pub http_header_timeout: Duration,
    /// How long a connection may stay open without a request.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, help_heading = "HTTP endpoint")]
    pub http_idle_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    #[arg(long, default_value_t = 32, help_heading = "HTTP endpoint")]
    pub http_max_connections: usize,
}

/// `--memory-budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBudgetArg {
    /// A share of the container's memory limit.
    Auto,
    Bytes(u64),
}

fn parse_budget(s: &str) -> Result<MemoryBudgetArg, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(MemoryBudgetArg::Auto);
    }
    let bytes = crate::limits::parse_bytes(s).map_err(|e| format!("{e}, or auto"))? as u64;
    if bytes < crate::memory::MIN_BUDGET {
        return Err(format!(
            "invalid memory budget {s:?}: at least {} (or auto)",
            crate::memory::Bytes(crate::memory::MIN_BUDGET)
        ));
    }
    Ok(MemoryBudgetArg::Bytes(bytes))
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "invalid duration {s:?}: a positive duration such as 500ms, 30s or 2m"
        )),
    }
}

fn parse_flag_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).ok_or_else(|| format!("invalid duration {s:?} (examples: 30s, 5m, 500ms)"))
}

impl ServeArgs {
    /// The Pod Identity timeout: unparsable or non-positive values are
    /// ignored with a warning (as the reference does), long ones warned about.
    pub fn pod_identity_timeout(&self) -> Option<Duration> {
        let raw = self.pod_identity_http_timeout.trim();
        if raw.is_empty() {
            return None;
        }
        match parse_duration(raw) {
            Some(d) if !d.is_zero() => {
                if d > Duration::from_secs(30) {
                    tracing::warn!(timeout = raw, "--pod-identity-http-timeout is longer than 30s");
                }
                Some(d)
            }
            _ => {
                tracing::warn!(timeout = raw, "ignoring invalid --pod-identity-http-timeout");
                None
            }
        }
    }

    /// The request limits.
    pub fn limits(&self) -> Limits {
        self.limits.limits()
    }

    /// The memory budget: its size (from `limit`, the container's memory
    /// limit, when `auto`) and how it is shared.
    pub fn memory_settings(&self, limit: Option<u64>) -> crate::memory::BudgetSettings {
        crate::memory::BudgetSettings {
            total: match self.memory_budget {
                MemoryBudgetArg::Auto => crate::memory::auto_budget(limit),
                MemoryBudgetArg::Bytes(b) => b,
            },
            floor: self.memory_floor_per_mount as u64,
            mounts: self.max_concurrent_mounts.max(1),
        }
    }

    /// Deadlines and concurrency of AWS calls.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            connect_timeout: self.aws_connect_timeout,
            attempt_timeout: self.aws_attempt_timeout,
            operation_timeout: self.aws_operation_timeout,
            max_concurrent_calls: self.max_concurrent_aws_calls.max(1),
        }
    }

    /// The version for the User-Agent.
    pub fn app_version(&self) -> String {
        if self.eks_addon_version.is_empty() {
            env!("CARGO_PKG_VERSION").to_string()
        } else {
            self.eks_addon_version.clone()
        }
    }
}

/// A positive duration argument (`2s`, `500ms`).
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_positive_duration(s)
}

/// Parses a duration such as `2s`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

/// Long flags that Go's flag package also accepts with a single dash.
const GO_FLAGS: &[&str] = &[
    "provider-volume",
    "driver-writes-secrets",
    "qps",
    "burst",
    "eks-addon-version",
    "pod-identity-http-timeout",
    "pod-identity-endpoint-ipv4",
    "pod-identity-endpoint-ipv6",
    "cache-ttl",
    "serve-stale-max-age",
    "credential-cache",
    "credential-refresh-margin",
    "pod-identity-cache-scope",
    "service-account-cache-ttl",
    "batch-get-secret-value",
    "batch-throttle-backoff",
    "max-concurrent-fetches",
    "single-flight",
    "http-addr",
    "log-format",
    "log-level",
    "max-objects-bytes",
    "max-files-per-mount",
    "max-roles-per-mount",
    "max-selections-per-mount",
    "max-name-length",
    "max-jmespath-length",
    "max-jmespath-depth",
    "max-jmespath-work",
    "max-file-bytes",
    "max-mount-bytes",
    "max-request-bytes",
    "mount-timeout",
    "aws-connect-timeout",
    "aws-attempt-timeout",
    "aws-operation-timeout",
    "kube-timeout",
    "max-concurrent-mounts",
    "max-concurrent-aws-calls",
    "max-inflight-response-bytes",
    "max-connection-age",
    "throttle-retries",
    "max-pages-per-selection",
    "memory-budget",
    "memory-floor-per-mount",
    "http-header-timeout",
    "http-idle-timeout",
    "http-max-connections",
];

/// Rewrites Go-style `-flag` arguments to `--flag`.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") {
                let name = a[1..].split('=').next().unwrap_or_default();
                if GO_FLAGS.contains(&name) {
                    return format!("-{a}");
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let args = normalize_args(args.iter().map(|s| s.to_string()));
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = parse(&["csi-provider-aws"]);
        assert_eq!(c.serve.provider_volume, PathBuf::from(DEFAULT_PROVIDER_VOLUME));
        assert!(!c.serve.driver_writes_secrets);
        assert_eq!(c.serve.qps, 5.0);
        assert_eq!(c.serve.burst, 250);
        assert_eq!(c.serve.pod_identity_timeout(), None);
        assert_eq!(c.serve.pod_identity_endpoint_ipv4, DEFAULT_IPV4_ENDPOINT);
        assert_eq!(c.serve.cache_ttl, Duration::ZERO, "the value cache is off by default");
        assert!(c.serve.credential_cache && c.serve.batch_get_secret_value && c.serve.single_flight);
        assert_eq!(c.serve.service_account_cache_ttl, Duration::from_secs(30));
        assert_eq!(c.serve.batch_throttle_backoff, Duration::from_secs(60));
        assert_eq!(c.serve.credential_refresh_margin, Duration::from_secs(300));
        assert_eq!(c.serve.pod_identity_cache_scope, PodIdentityScope::Pod);
        assert!(
            c.serve.rotation_failure_events,
            "rotation failures are visible by default"
        );
        assert_eq!(c.serve.rotation_event_interval, Duration::from_secs(300));
        assert_eq!(
            c.serve.limits(),
            Limits::default(),
            "flag defaults are the limits' defaults"
        );
        assert_eq!(c.serve.mount_timeout, Duration::from_secs(60));
        assert!(c.serve.aws_operation_timeout * 2 < c.serve.mount_timeout);
    }

    #[test]
    fn limits_take_sizes_and_reject_nonsense() {
        let c = parse(&[
            "x",
            "--max-objects-bytes=512KiB",
            "--max-mount-bytes=8MiB",
            "--max-file-bytes",
            "4096",
        ]);
        assert_eq!(c.serve.limits().max_objects_bytes, 512 * 1024);
        assert_eq!(c.serve.limits().max_mount_bytes, 8 * 1024 * 1024);
        assert_eq!(c.serve.limits().max_file_bytes, 4096);
        for bad in [
            "--max-objects-bytes=0",
            "--max-objects-bytes=lots",
            "--max-jmespath-depth=65",
            "--max-jmespath-depth=0",
            "--mount-timeout=0s",
            "--aws-operation-timeout=soon",
        ] {
            assert!(Cli::try_parse_from(["x", bad]).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&["x", "-max-jmespath-depth=64"])
                .serve
                .limits()
                .max_jmespath_depth,
            64
        );
    }

    #[test]
    fn the_go_call_pattern_can_be_configured() {
        let c = parse(&[
            "x",
            "--cache-ttl=0",
            "--credential-cache=false",
            "--service-account-cache-ttl=0",
            "--batch-get-secret-value=false",
            "--max-concurrent-fetches=1",
            "--single-flight=false",
            "--pod-identity-cache-scope=service-account",
        ]);
        assert!(!c.serve.credential_cache && !c.serve.batch_get_secret_value && !c.serve.single_flight);
        assert_eq!(c.serve.service_account_cache_ttl, Duration::ZERO);
        assert_eq!(c.serve.max_concurrent_fetches, 1);
        assert_eq!(c.serve.pod_identity_cache_scope, PodIdentityScope::ServiceAccount);
        assert!(Cli::try_parse_from(["x", "--cache-ttl=banana"]).is_err());
    }

    #[test]
    fn driver_writes_secrets_accepts_bare_and_valued_forms() {
        assert!(parse(&["x", "--driver-writes-secrets"]).serve.driver_writes_secrets);
        assert!(
            parse(&["x", "--driver-writes-secrets=true"])
                .serve
                .driver_writes_secrets
        );
        assert!(
            !parse(&["x", "--driver-writes-secrets=false"])
                .serve
                .driver_writes_secrets
        );
        assert!(parse(&["x", "-driver-writes-secrets"]).serve.driver_writes_secrets);
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let c = parse(&["x", "-provider-volume=/tmp/p", "-qps", "20", "--burst=40"]);
        assert_eq!(c.serve.provider_volume, PathBuf::from("/tmp/p"));
        assert_eq!(c.serve.qps, 20.0);
        assert_eq!(c.serve.burst, 40);
    }

    #[test]
    fn pod_identity_timeout_parses_durations_and_ignores_bad_values() {
        let t = |v: &str| {
            parse(&["x", &format!("--pod-identity-http-timeout={v}")])
                .serve
                .pod_identity_timeout()
        };
        assert_eq!(t("2s"), Some(Duration::from_secs(2)));
        assert_eq!(t("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(t("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(t("banana"), None);
        assert_eq!(t("0s"), None);
    }
}
