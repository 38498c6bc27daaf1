//! `csi-provider-aws serve` (the default command): the flags of the
//! provider, with the reference's names and defaults plus our own. Each
//! value is checked as it is parsed; rules between values and the
//! environment are [`crate::config::Config`]'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::{DEFAULT_PROVIDER_VOLUME, parse_duration};
use crate::aws::AwsSettings;
use crate::identity::PodIdentityScope;
use crate::identity::pod_identity::{DEFAULT_IPV4_ENDPOINT, DEFAULT_IPV6_ENDPOINT};
use crate::limits::{LimitArgs, parse_count};
use crate::mount::MountSettings;

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
    #[arg(long, default_value_t = 5.0, value_parser = parse_qps)]
    pub qps: f32,
    /// Kubernetes API burst: the reads a node may make at once before
    /// `--qps` spaces them. One per distinct ServiceAccount at most, so it
    /// fits a node full of new pods (EKS runs at most 250 per node).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Version reported in the AWS User-Agent instead of ours.
    #[arg(long, default_value = "")]
    pub eks_addon_version: String,
    /// HTTP timeout for the EKS Pod Identity Agent (e.g. 2s, 500ms). An
    /// invalid or non-positive value is ignored with a warning, as the Go
    /// provider does.
    #[arg(long, default_value = "")]
    pub pod_identity_http_timeout: String,
    /// EKS Pod Identity Agent credentials URL over IPv4.
    #[arg(long, default_value = DEFAULT_IPV4_ENDPOINT, value_parser = parse_endpoint)]
    pub pod_identity_endpoint_ipv4: String,
    /// EKS Pod Identity Agent credentials URL over IPv6.
    #[arg(long, default_value = DEFAULT_IPV6_ENDPOINT, value_parser = parse_endpoint)]
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
    /// Serve an identity's ACM export (certificate and private key) again
    /// while DescribeCertificate, asked with the same identity on each mount,
    /// reports the same certificate, up to this old; then export anew
    /// (0 = export on every mount).
    #[arg(long, default_value = "1h", value_parser = parse_flag_duration)]
    pub acm_export_max_age: Duration,
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
    #[arg(long, default_value_t = crate::fetch::CONCURRENCY, value_parser = parse_count)]
    pub max_concurrent_fetches: usize,
    /// Address (host:port) of the /healthz, /readyz and /metrics endpoint
    /// ("" disables it).
    #[arg(long, default_value = "0.0.0.0:8989", value_parser = parse_http_addr)]
    pub http_addr: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or directives
    /// such as info,csi_provider_aws=debug); RUST_LOG, when set, takes
    /// precedence.
    #[arg(long, default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Write an audit record per mount (log target csi_provider_aws::audit,
    /// whatever --log-level says): the pod, its roles, and each object's ARN,
    /// version, region and source, or the failed mount's error code.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set)]
    pub audit_log: bool,
    /// Objects one audit record lists; past this it counts the rest.
    #[arg(long, default_value_t = crate::audit::DEFAULT_MAX_OBJECTS, value_parser = parse_count)]
    pub audit_max_objects: usize,
    /// The cluster's name: the eks-cluster-name session tag of chained roles
    /// that ask for tags (assumeRoleSessionTags), and the audit record's.
    #[arg(long, default_value = "", value_parser = parse_cluster_name)]
    pub cluster_name: String,
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
    /// One AWS call, all retries included (the failover region gets its
    /// own): twice this must fit in --mount-timeout.
    #[arg(long, default_value = "15s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub aws_operation_timeout: Duration,
    /// One Kubernetes API request (connect, send, answer).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, help_heading = "Deadlines")]
    pub kube_timeout: Duration,
    /// Mounts served at once; more wait (within --mount-timeout) and then
    /// fail with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = MountSettings::default().max_concurrent_mounts, value_parser = parse_count,
          help_heading = "Deadlines")]
    pub max_concurrent_mounts: usize,
    /// Bytes of driver-writes responses being sent at once (each is encoded
    /// into its own buffer until the driver has read it); more wait.
    #[arg(long, default_value = "32MiB", value_parser = crate::limits::parse_bytes, help_heading = "Deadlines")]
    pub max_inflight_response_bytes: usize,
    /// AWS calls in flight at once, all mounts together.
    #[arg(long, default_value_t = AwsSettings::default().max_concurrent_calls, value_parser = parse_count,
          help_heading = "Deadlines")]
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
    #[arg(long, default_value_t = 32, value_parser = parse_count, help_heading = "HTTP endpoint")]
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

/// A positive duration (`500ms`, `30s`, `2m`).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "invalid duration {s:?}: a positive duration such as 500ms, 30s or 2m"
        )),
    }
}

/// A duration where `0` turns the feature off.
fn parse_flag_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).ok_or_else(|| format!("invalid duration {s:?} (examples: 30s, 5m, 500ms; 0 turns it off)"))
}

/// `--qps`: a positive, finite rate.
fn parse_qps(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
        _ => Err(format!(
            "invalid rate {s:?}: a positive number of queries per second, such as 5 or 0.5"
        )),
    }
}

/// An EKS Pod Identity Agent URL: `http://` and a host (the agent listens
/// on a link-local address, without TLS).
fn parse_endpoint(s: &str) -> Result<String, String> {
    let bad = || format!("invalid URL {s:?}: an http:// URL with a host, such as {DEFAULT_IPV4_ENDPOINT}");
    let uri: http::Uri = s.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(s.to_string()),
        _ => Err(bad()),
    }
}

/// `--http-addr`: empty (off), or a host (an IP address or a name) and a
/// port, an IPv6 address in brackets.
fn parse_http_addr(s: &str) -> Result<String, String> {
    if s.is_empty() || s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let valid_host = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match s.rsplit_once(':') {
        Some((host, port)) if valid_host(host) && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!(
            "invalid address {s:?}: a host and port such as 0.0.0.0:8989 or [::]:8989, or \"\" to turn the endpoint off"
        )),
    }
}

/// `--cluster-name`: empty, or an EKS cluster name (1 to 100 letters,
/// digits, `-` and `_`, starting with a letter or digit).
fn parse_cluster_name(s: &str) -> Result<String, String> {
    let valid = s.len() <= 100
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid cluster name {:?}: up to 100 letters, digits, - and _, starting with a letter or digit",
            crate::limits::echo(s)
        ))
    }
}

/// `--log-level`: a level, or filter directives as RUST_LOG takes them. A
/// lone word that is not a level is refused: as a directive it would name
/// a module and silence every other.
fn parse_log_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let rule = "a level (off, error, warn, info, debug, trace) or directives such as info,csi_provider_aws=debug";
    let lone = !s.contains(['=', ',']);
    if lone && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim())) {
        return Err(format!("invalid log level {s:?}: {rule}"));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid log level {s:?}: {e}; {rule}"))
}
