//! A gRPC client for a provider socket, as the driver dials it (authority
//! `localhost`, plain HTTP/2 over the Unix socket). Used by the `mount`
//! debug command and by the tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::v1alpha1::VersionRequest;
use crate::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;

/// Connects to the provider listening on `socket`.
pub async fn connect(socket: &Path) -> Result<CsiDriverProviderClient<Channel>, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(CsiDriverProviderClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Whether the provider on `socket` answers `Version` within `timeout`
/// (readiness, and the kubelet's probe); else the reason.
pub async fn answers_version(socket: &Path, timeout: std::time::Duration) -> Result<(), String> {
    let call = async {
        let mut client = connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        client
            .version(VersionRequest {
                version: crate::server::API_VERSION.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("Version failed: {}", s.message()))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(timeout))))
}
