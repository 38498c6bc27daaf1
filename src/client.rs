//! A gRPC client for a provider socket, as the driver dials it (authority
//! `localhost`, plain HTTP/2 over the Unix socket). Used by the `mount`
//! debug command and by the tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

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
