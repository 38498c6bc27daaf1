//! `csi-provider-aws probe`: the kubelet's liveness and readiness check,
//! run inside the container. It calls `Version` through the provider socket
//! (what the driver depends on) and exits 0 if it answers in time. Unlike an
//! HTTP probe it does not go through the network endpoint, which every pod
//! can reach and fill: a tenant holding all of that endpoint's connections
//! cannot make the kubelet restart the provider.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::DEFAULT_PROVIDER_VOLUME;
use super::serve::parse_positive_duration;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Directory of the provider socket (as given to the server).
    #[arg(long, default_value = DEFAULT_PROVIDER_VOLUME)]
    pub provider_volume: PathBuf,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

/// Calls `Version` through the socket; the reason when it does not answer.
pub async fn run(args: &ProbeArgs) -> Result<(), String> {
    let socket = args.provider_volume.join(crate::server::SOCKET_NAME);
    crate::client::answers_version(&socket, args.timeout).await
}
