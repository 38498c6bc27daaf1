//! The gRPC server on `<provider-volume>/aws.sock`: socket lifecycle
//! (stale socket removed, owner-only mode, removed on shutdown), graceful
//! drain of in-flight mounts, and the `CSIDriverProvider` service. This is
//! the only place that turns a [`MountError`] into a `tonic::Status`.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::aws::Failure;
use crate::limits::cap_message;
use crate::mount::{MountError, Provider, Reservation};
use crate::proto::v1alpha1::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::v1alpha1::{MountRequest, MountResponse, VersionRequest, VersionResponse};

/// How often expired credentials, values and batch denials are dropped.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The socket file name the driver looks for (`provider: aws`).
pub const SOCKET_NAME: &str = "aws.sock";
/// The API version of the driver contract.
pub const API_VERSION: &str = "v1alpha1";
/// Our runtime name, reported by `Version`.
pub const RUNTIME_NAME: &str = "csi-provider-aws";

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to prepare the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The `CSIDriverProvider` service.
pub struct ProviderService {
    provider: Arc<Provider>,
}

impl ProviderService {
    pub fn new(provider: Arc<Provider>) -> Self {
        Self { provider }
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(&self, _req: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn mount(&self, req: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let req = Arc::new(req.into_inner());
        // The pod's fields are recorded once the request is parsed.
        let span = tracing::info_span!(
            "mount",
            namespace = tracing::field::Empty,
            pod = tracing::field::Empty,
            uid = tracing::field::Empty
        );
        let metrics = self.provider.metrics.clone();
        async move {
            let _in_flight = metrics.mount_started();
            let started = Instant::now();
            let result = self.provider.mount(req.clone()).await;
            let elapsed = started.elapsed();
            let elapsed_ms = elapsed.as_millis() as u64;
            match result {
                Ok(mounted) => {
                    self.provider.rotation.mounted(&req);
                    let objects = mounted.response.object_version.len();
                    metrics.mount_finished(elapsed.as_secs_f64(), objects, None);
                    tracing::info!(objects, elapsed_ms, outcome = "success", "mount succeeded");
                    let mut response = Response::new(mounted.response);
                    if let Some(reservation) = mounted.reservation {
                        response.extensions_mut().insert(reservation);
                    }
                    Ok(response)
                }
                Err(e) => {
                    let code = error_code(&e);
                    metrics.mount_finished(elapsed.as_secs_f64(), 0, Some(code));
                    tracing::warn!(error = %e, code, elapsed_ms, outcome = "error", "mount failed");
                    let status = status(&e);
                    self.provider.rotation.failed(&req, code, status.message()).await;
                    Err(status)
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// The longest status message sent. The message travels in a gRPC trailer
/// (percent-encoded, up to three bytes per byte) that the driver's client
/// refuses above 16 KiB; user input in it is already truncated, and this
/// caps the whole.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// The gRPC status of a failed mount: the message users read in the pod's
/// `FailedMount` event, with a code that fits the failure.
pub fn status(e: &MountError) -> Status {
    let by_failure = |f: Failure| match f {
        Failure::NotFound => tonic::Code::NotFound,
        Failure::AccessDenied => tonic::Code::PermissionDenied,
        Failure::InvalidCredentials => tonic::Code::Unauthenticated,
        Failure::Throttled => tonic::Code::ResourceExhausted,
        Failure::Unavailable => tonic::Code::Unavailable,
        Failure::Rejected => tonic::Code::FailedPrecondition,
    };
    let code = match e {
        MountError::Spec(_) | MountError::Render(_) => tonic::Code::InvalidArgument,
        MountError::Fetch(f) if f.limit().is_some() => tonic::Code::InvalidArgument,
        MountError::Write(_) | MountError::Internal { .. } => tonic::Code::Internal,
        MountError::Busy { .. } => tonic::Code::ResourceExhausted,
        MountError::Deadline { .. } => tonic::Code::DeadlineExceeded,
        MountError::Region(_) | MountError::Identity(_) | MountError::Fetch(_) => by_failure(e.failure()),
    };
    Status::new(code, cap_message(e.to_string(), MAX_STATUS_MESSAGE))
}

/// A stable, bounded error code (for logs and metrics).
pub fn error_code(e: &MountError) -> &'static str {
    match e {
        MountError::Spec(_) => "InvalidRequest",
        MountError::Region(_) => "RegionLookupFailed",
        MountError::Render(crate::render::RenderError::Limit(_)) => "LimitExceeded",
        MountError::Render(crate::render::RenderError::Template(_)) => "TemplateFailed",
        MountError::Fetch(f) if f.limit().is_some() => "LimitExceeded",
        MountError::Render(_) => "JmesPathFailed",
        MountError::Write(_) => "FileWriteFailed",
        MountError::Busy { .. } => "Busy",
        MountError::Deadline { .. } => "DeadlineExceeded",
        MountError::Internal { .. } => "Internal",
        MountError::Identity(i) => match i.failure() {
            Failure::AccessDenied => "CredentialsDenied",
            Failure::Throttled => "CredentialsThrottled",
            Failure::Unavailable => "CredentialsUnavailable",
            Failure::NotFound | Failure::Rejected | Failure::InvalidCredentials => "CredentialsRejected",
        },
        MountError::Fetch(f) => match f.failure() {
            Failure::NotFound => "ObjectNotFound",
            Failure::AccessDenied => "AccessDenied",
            Failure::InvalidCredentials => "InvalidCredentials",
            Failure::Throttled => "Throttled",
            Failure::Unavailable => "AwsUnavailable",
            Failure::Rejected => "AwsRejected",
        },
    }
}

/// Binds `<dir>/aws.sock` with mode 0600. The socket is created inside a
/// private directory and renamed into place, so it is never reachable with
/// looser permissions. A stale socket is removed first.
pub fn bind_socket(dir: &Path) -> Result<(UnixListener, PathBuf), ServerError> {
    let path = dir.join(SOCKET_NAME);
    let sock_err = |source| ServerError::Socket {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(sock_err)?;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() || m.file_type().is_symlink() => {
            std::fs::remove_file(&path).map_err(sock_err)?;
        }
        Ok(_) => return Err(ServerError::NotASocket { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let private = dir.join(format!(".{SOCKET_NAME}.{}.d", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private).map_err(sock_err)?;
    let result = (|| {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let tmp = private.join(SOCKET_NAME);
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok::<_, io::Error>(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    Ok((result.map_err(sock_err)?, path))
}

/// Serves until `shutdown` resolves; then removes the socket (no new
/// mounts reach us) and waits for in-flight mounts to finish.
pub async fn serve(
    provider: Arc<Provider>,
    socket_dir: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let (listener, path) = bind_socket(socket_dir)?;
    tracing::info!(socket = %path.display(), "serving the CSI driver provider API");
    let remove_path = path.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: removing the socket and draining in-flight mounts");
        let _ = std::fs::remove_file(&remove_path);
    };
    let sweeper = tokio::spawn(provider.clone().sweep_every(SWEEP_EVERY));
    let max_request = provider.settings.limits.max_request_bytes;
    let streams = u32::try_from(provider.settings.max_concurrent_mounts.saturating_mul(2)).unwrap_or(u32::MAX);
    let service = CsiDriverProviderServer::new(ProviderService::new(provider))
        .max_decoding_message_size(max_request)
        // The driver's client accepts 4 MiB by default; files are bounded
        // by --max-mount-bytes well below that, this only bounds encoding.
        .max_encoding_message_size(usize::MAX);
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(streams)
        .layer(tower::layer::layer_fn(HoldUntilSent))
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    sweeper.abort();
    served?;
    let _ = std::fs::remove_file(&path);
    tracing::info!("stopped");
    Ok(())
}

// === impl HoldUntilSent ===

/// Keeps a response's [`Reservation`] (a share of
/// `--max-inflight-response-bytes`) until its body has been sent or dropped:
/// the encoded message lives that long.
#[derive(Clone)]
struct HoldUntilSent<S>(S);

impl<S, B> tower::Service<http::Request<B>> for HoldUntilSent<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            Ok(match response.extensions_mut().remove::<Reservation>() {
                Some(reservation) => response.map(|body| {
                    tonic::body::Body::new(Held {
                        body,
                        rest: bytes::Bytes::new(),
                        _reservation: reservation,
                    })
                }),
                None => response,
            })
        })
    }
}

/// What a response body hands to HTTP/2 at once: the transport takes the
/// next slice only once it has room to send it, so the body (and its
/// reservation) lasts until the response has nearly all been sent, instead
/// of ending as soon as the whole encoded message is queued.
const SLICE: usize = 64 * 1024;

/// A response body with the reservation it holds, sliced.
struct Held {
    body: tonic::body::Body,
    /// The rest of the data frame being sliced (the same allocation).
    rest: bytes::Bytes,
    _reservation: Reservation,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if !self.rest.is_empty() {
            let n = self.rest.len().min(SLICE);
            let slice = self.rest.split_to(n);
            return Poll::Ready(Some(Ok(http_body::Frame::data(slice))));
        }
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > SLICE => {
                    self.rest = data.split_off(SLICE);
                    Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}
