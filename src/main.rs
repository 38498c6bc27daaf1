//! The `csi-provider-aws` binary: serve the provider API (default), or run
//! an operator command.

use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use csi_provider_aws::aws::AwsClients;
use csi_provider_aws::config::{Cli, Command, LogFormat, ServeArgs, normalize_args};
use csi_provider_aws::events::EventSettings;
use csi_provider_aws::fetch::{FetchSettings, Fetcher};
use csi_provider_aws::health::{self, HttpSettings};
use csi_provider_aws::identity::{IdentityResolver, IdentitySettings, PodIdentityClient, PodIdentityConfig};
use csi_provider_aws::kube::{KubeClient, KubeSettings};
use csi_provider_aws::memory::MemoryBudget;
use csi_provider_aws::mount::{MountSettings, Provider};
use csi_provider_aws::region;
use csi_provider_aws::telemetry::Metrics;
use tracing_subscriber::EnvFilter;

/// Every heap allocation is zeroed when freed: buffers the provider does
/// not own (HTTP bodies, the SDK's parsed responses, gRPC frames) held
/// secret values and credentials too.
#[cfg(feature = "zeroize-heap")]
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> = zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    let serve_args = match &cli.command {
        Some(Command::Serve(a)) => a,
        _ => &cli.serve,
    };
    init_logging(serve_args.log_format, &serve_args.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Some(Command::Mount(args)) => match csi_provider_aws::cli::mount::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Some(Command::Validate(args)) => {
                if csi_provider_aws::cli::validate::run(&args) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Some(Command::Probe(args)) => match csi_provider_aws::cli::probe::run(&args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(reason) => {
                    eprintln!("not ready: {reason}");
                    ExitCode::FAILURE
                }
            },
            Some(Command::Serve(args)) => serve(args).await,
            None => serve(cli.serve).await,
        }
    })
}

/// Logs to standard error: text (coloured on a terminal) or JSON; the level
/// from RUST_LOG when set, else `--log-level`.
fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting; this provider requires tokenRequests for sts.amazonaws.com and \
         pods.eks.amazonaws.com in the CSIDriver spec"
    );
    let metrics = Arc::new(Metrics::default());
    let aws = match AwsClients::from_env(&args.app_version(), args.aws_settings(), metrics.clone()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "invalid AWS configuration");
            return ExitCode::from(64);
        }
    };
    if let Some(r) = aws.env_region()
        && let Err(e) = region::validate("AWS_REGION", &r)
    {
        tracing::error!(error = %e, "invalid AWS configuration");
        return ExitCode::from(64);
    }
    let kube_settings = KubeSettings {
        qps: args.qps,
        burst: args.burst,
        timeout: args.kube_timeout,
    };
    let kube = match KubeClient::from_env(kube_settings, metrics.clone()).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client (set KUBECONFIG or run in a cluster)");
            return ExitCode::from(64);
        }
    };
    let mut pod_identity = PodIdentityConfig {
        ipv4_endpoint: args.pod_identity_endpoint_ipv4.clone(),
        ipv6_endpoint: args.pod_identity_endpoint_ipv6.clone(),
        ..PodIdentityConfig::default()
    };
    if let Some(t) = args.pod_identity_timeout() {
        pod_identity.timeout = t;
    }
    let identity = IdentityResolver::new(
        aws.clone(),
        kube.clone(),
        PodIdentityClient::new(pod_identity, metrics.clone()),
        IdentitySettings {
            cache_credentials: args.credential_cache,
            refresh_margin: args.credential_refresh_margin,
            pod_identity_scope: args.pod_identity_cache_scope,
            service_account_ttl: args.service_account_cache_ttl,
            shared_deadline: shared_deadline(&args),
        },
        metrics.clone(),
    );
    let limit = csi_provider_aws::memory::container_limit();
    let memory = MemoryBudget::new(args.memory_settings(limit), &metrics);
    tracing::info!(
        budget = %csi_provider_aws::memory::Bytes(memory.total()),
        container_limit = %limit.map_or_else(|| "none".to_string(), |l| csi_provider_aws::memory::Bytes(l).to_string()),
        "memory budget for what mounts hold (--memory-budget)"
    );
    let fetcher = Fetcher::new(
        aws.clone(),
        FetchSettings {
            batch_get_secret_value: args.batch_get_secret_value,
            batch_throttle_backoff: args.batch_throttle_backoff,
            concurrency: args.max_concurrent_fetches.max(1),
            value_ttl: (!args.cache_ttl.is_zero()).then_some(args.cache_ttl),
            stale_max_age: (!args.serve_stale_max_age.is_zero()).then_some(args.serve_stale_max_age),
            single_flight: args.single_flight,
            shared_deadline: shared_deadline(&args),
            throttle_retries: args.throttle_retries,
        },
        metrics.clone(),
        memory.clone(),
    );
    let known_region = match aws.env_region() {
        Some(r) => Some(r),
        None => node_region(&kube).await,
    };
    let provider = Provider::new(
        MountSettings {
            driver_writes: args.driver_writes_secrets,
            known_region,
            limits: args.limits(),
            timeout: args.mount_timeout,
            max_concurrent_mounts: args.max_concurrent_mounts.max(1),
            max_inflight_response_bytes: args.max_inflight_response_bytes,
            max_connection_age: args.max_connection_age,
            rotation_events: EventSettings {
                enabled: args.rotation_failure_events,
                interval: args.rotation_event_interval,
                instance: format!(
                    "{}-{}",
                    csi_provider_aws::events::CONTROLLER,
                    std::env::var("NODE_NAME").unwrap_or_else(|_| "unknown-node".to_string())
                ),
            },
            ..MountSettings::default()
        },
        aws,
        kube,
        identity,
        fetcher,
        metrics,
        memory,
    );
    let http = if args.http_addr.is_empty() {
        None
    } else {
        // Probes and scrapes depend on the endpoint: failing to bind stops the start.
        match health::bind(&args.http_addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::error!(addr = %args.http_addr, error = %e, "cannot bind the --http-addr endpoint");
                return ExitCode::from(64);
            }
        }
    };
    let http_settings = HttpSettings {
        header_timeout: args.http_header_timeout,
        idle_timeout: args.http_idle_timeout,
        max_connections: args.http_max_connections.max(1),
    };
    let _http_task = http.map(|listener| {
        let socket = args.provider_volume.join(csi_provider_aws::server::SOCKET_NAME);
        tokio::spawn(health::serve(listener, http_settings, socket, provider.metrics.clone()))
    });
    match csi_provider_aws::server::serve(provider, &args.provider_volume, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// How long a fetch shared by concurrent mounts may run: a little longer
/// than a mount, so a mount that waits for it fails at its own deadline,
/// naming its step (a fetch every waiter gave up on is abandoned anyway).
fn shared_deadline(args: &ServeArgs) -> std::time::Duration {
    args.mount_timeout + std::time::Duration::from_secs(1)
}

/// This node's region, read once from its `topology.kubernetes.io/region`
/// label (`NODE_NAME` from the downward API), when `AWS_REGION` does not
/// make it unnecessary. Without it, mounts fall back to looking up the
/// pod's node.
async fn node_region(kube: &KubeClient) -> Option<String> {
    let node = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty())?;
    match kube.node_region(&node).await {
        Ok(Some(r)) => match region::validate("the label topology.kubernetes.io/region of this node", &r) {
            Ok(()) => {
                tracing::info!(%node, region = %r, "region of this node");
                Some(r)
            }
            Err(e) => {
                tracing::warn!(%node, error = %e, "ignoring this node's region label; looking up regions per mount");
                None
            }
        },
        Ok(None) => {
            tracing::warn!(%node, "node has no topology.kubernetes.io/region label; looking up regions per mount");
            None
        }
        Err(e) => {
            tracing::warn!(%node, error = %e, "cannot read this node; looking up regions per mount");
            None
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
