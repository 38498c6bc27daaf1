//! The `csi-provider-aws` binary: serve the provider API (default), or run
//! an operator command.

use std::process::ExitCode;
use std::sync::Arc;

use clap::CommandFactory;
use csi_provider_aws::aws::AwsClients;
use csi_provider_aws::cli::{Cli, Command, LogFormat};
use csi_provider_aws::config::{Config, Environment, Peers};
use csi_provider_aws::health;
use csi_provider_aws::identity::PodIdentityClient;
use csi_provider_aws::kube::KubeClient;
use csi_provider_aws::memory::Bytes;
use csi_provider_aws::region;
use csi_provider_aws::telemetry::Metrics;
use tracing_subscriber::EnvFilter;

/// Every heap allocation is zeroed when freed: buffers the provider does
/// not own (HTTP bodies, the SDK's parsed responses, gRPC frames) held
/// secret values and credentials too.
#[cfg(all(feature = "zeroize-heap", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> = zeroizing_alloc::ZeroAlloc(std::alloc::System);

/// The static builds allocate through mimalloc (musl's allocator holds one
/// lock for every thread), zeroed the same way.
#[cfg(all(feature = "zeroize-heap", target_env = "musl"))]
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<mimalloc::MiMalloc> = zeroizing_alloc::ZeroAlloc(mimalloc::MiMalloc);

#[cfg(all(not(feature = "zeroize-heap"), target_env = "musl"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::from_args(std::env::args());
    // The server's configuration is checked whole before anything starts;
    // a value it refuses is a usage error, as clap's own are.
    let config = match &cli.command {
        Some(Command::Serve(_)) | None => match Config::new(cli.serve_args(), Environment::from_process()) {
            Ok(c) => Some(c),
            Err(e) => Cli::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit(),
        },
        Some(_) => None,
    };
    match &config {
        Some(c) => init_logging(c.log.format, &c.log.filter),
        None => init_logging(LogFormat::Text, "info"),
    }
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
            Some(Command::Serve(_)) | None => match config {
                Some(config) => serve(config).await,
                None => ExitCode::FAILURE,
            },
        }
    })
}

/// Logs to standard error: text (coloured on a terminal) or JSON, with
/// the configuration's filter (checked already).
fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false);
            builder
                .json()
                .event_format(csi_provider_aws::audit::AuditJson(json))
                .init()
        }
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn serve(mut config: Config) -> ExitCode {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting; this provider requires tokenRequests for sts.amazonaws.com and \
         pods.eks.amazonaws.com in the CSIDriver spec"
    );
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::default());
    let aws = match AwsClients::from_env(
        &config.app_version,
        config.aws_ca_bundle.as_deref(),
        config.aws,
        metrics.clone(),
    )
    .await
    {
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
    let kube = match KubeClient::from_config(&config.kubeconfig, config.kube, metrics.clone()).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client (set KUBECONFIG or run in a cluster)");
            return ExitCode::from(64);
        }
    };
    config.mount.known_region = match aws.env_region() {
        Some(r) => Some(r),
        None => node_region(&kube, config.node_name.as_deref()).await,
    };
    let pod_identity = PodIdentityClient::new(config.pod_identity.clone(), metrics.clone());
    let provider = config.provider(Peers {
        metrics,
        aws,
        kube,
        pod_identity,
    });
    tracing::info!(
        budget = %Bytes(provider.memory.total()),
        container_limit = %config.memory_limit.map_or_else(|| "none".to_string(), |l| Bytes(l).to_string()),
        "memory budget for what mounts hold (--memory-budget)"
    );
    let http = match &config.http {
        None => None,
        // Probes and scrapes depend on the endpoint: failing to bind stops the start.
        Some(http) => match health::bind(&http.addr).await {
            Ok(listener) => Some((listener, http.settings)),
            Err(e) => {
                tracing::error!(addr = %http.addr, error = %e, "cannot bind the --http-addr endpoint");
                return ExitCode::from(64);
            }
        },
    };
    let _http_task = http.map(|(listener, settings)| {
        let socket = config.provider_volume.join(csi_provider_aws::server::SOCKET_NAME);
        tokio::spawn(health::serve(listener, settings, socket, provider.metrics.clone()))
    });
    match csi_provider_aws::server::serve(provider, &config.provider_volume, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// This node's region, read once from its `topology.kubernetes.io/region`
/// label (`NODE_NAME` from the downward API), when `AWS_REGION` does not
/// make it unnecessary. Without it, mounts fall back to looking up the
/// pod's node.
async fn node_region(kube: &KubeClient, node: Option<&str>) -> Option<String> {
    let node = node?;
    match kube.node_region(node).await {
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
