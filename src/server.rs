//! The gRPC server on `<provider-volume>/aws.sock`: socket lifecycle
//! (stale socket removed, owner-only mode, removed on shutdown), graceful
//! drain of in-flight mounts, and the `CSIDriverProvider` service. This is
//! the only place that turns a [`MountError`] into a `tonic::Status`.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::time::Instant;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::audit::Audit;
use crate::events::Volume;
use crate::failure::Failure;
use crate::limits::{Escaped, cap_message, escaped};
use crate::mount::{Admitted, MountError, Provider, Reservation};
use crate::proto::v1alpha1::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::v1alpha1::{MountRequest, MountResponse, VersionRequest, VersionResponse};
use crate::render::RenderError;

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

    async fn mount(&self, mut req: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let admitted = req
            .extensions_mut()
            .remove::<Admission>()
            .and_then(|a| a.0.lock().ok().and_then(|mut a| a.take()));
        let req = req.into_inner();
        let volume = Volume::of(&req);
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
            let started = admitted.as_ref().map_or_else(Instant::now, |a| a.started);
            let mut audit = Audit::new(&self.provider.settings.audit, metrics.clone());
            if let Some((namespace, name, uid)) = volume.pod() {
                audit.pod(namespace, name, uid);
            }
            let result = self.provider.mount(req, admitted, &mut audit).await;
            let elapsed = started.elapsed();
            let elapsed_ms = elapsed.as_millis() as u64;
            match result {
                Ok(mounted) => {
                    self.provider.rotation.mounted(&volume);
                    let objects = mounted.response.object_version.len();
                    metrics.mount_finished(elapsed.as_secs_f64(), objects, None);
                    tracing::info!(objects, elapsed_ms, outcome = "success", "mount succeeded");
                    audit.finish(Ok(()));
                    let mut response = Response::new(mounted.response);
                    if let Some(reservation) = mounted.reservation {
                        response.extensions_mut().insert(reservation);
                    }
                    Ok(response)
                }
                Err(e) => {
                    let code = error_code(&e);
                    metrics.mount_finished(elapsed.as_secs_f64(), 0, Some(code));
                    tracing::warn!(error = %Escaped(&e), code, elapsed_ms, outcome = "error", "mount failed");
                    audit.finish(Err(code));
                    let status = status(&e);
                    self.provider.rotation.failed(&volume, code, status.message()).await;
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
        MountError::Render(RenderError::Memory(_)) => tonic::Code::ResourceExhausted,
        MountError::Spec(_) | MountError::Render(_) => tonic::Code::InvalidArgument,
        MountError::Fetch(f) if f.limit().is_some() => tonic::Code::InvalidArgument,
        MountError::Write(_) | MountError::Internal { .. } => tonic::Code::Internal,
        MountError::Busy { .. } | MountError::Memory(_) => tonic::Code::ResourceExhausted,
        MountError::Deadline { .. } => tonic::Code::DeadlineExceeded,
        MountError::Region(_) | MountError::Identity(_) | MountError::Fetch(_) => by_failure(e.failure()),
    };
    // Names in it are escaped already; AWS's and Kubernetes' own messages
    // are escaped here.
    Status::new(code, cap_message(escaped(&e.to_string()), MAX_STATUS_MESSAGE))
}

/// Every error code a failed mount is counted, logged and reported on its
/// pod with (the dashboard's "Mount errors by code" lists them).
pub const ERROR_CODES: &[&str] = &[
    "InvalidRequest",
    "RegionLookupFailed",
    "CredentialsDenied",
    "CredentialsThrottled",
    "CredentialsUnavailable",
    "CredentialsRejected",
    "ObjectNotFound",
    "AccessDenied",
    "InvalidCredentials",
    "Throttled",
    "AwsUnavailable",
    "AwsRejected",
    "LimitExceeded",
    "JmesPathFailed",
    "JsonKeysFailed",
    "InvalidFileName",
    "DecodeFailed",
    "CertificateFailed",
    "FileCollision",
    "TemplateFailed",
    "FileWriteFailed",
    "Busy",
    "MemoryExhausted",
    "DeadlineExceeded",
    "Internal",
];

/// A stable, bounded error code (for logs, metrics and pod events): one
/// per kind of error, every variant named (no catch-all).
pub fn error_code(e: &MountError) -> &'static str {
    match e {
        MountError::Spec(_) => "InvalidRequest",
        MountError::Region(_) => "RegionLookupFailed",
        MountError::Render(r) => render_code(r),
        MountError::Fetch(f) if f.limit().is_some() => "LimitExceeded",
        MountError::Write(_) => "FileWriteFailed",
        MountError::Busy { .. } => "Busy",
        MountError::Memory(_) => "MemoryExhausted",
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

/// The code of a rendering error.
fn render_code(e: &RenderError) -> &'static str {
    match e {
        RenderError::NotJson(_)
        | RenderError::InvalidPath(_)
        | RenderError::NoMatch { .. }
        | RenderError::NotString(_) => "JmesPathFailed",
        RenderError::JsonKeys { .. } => "JsonKeysFailed",
        RenderError::InvalidFileName { .. } => "InvalidFileName",
        RenderError::NotEncoded { .. } => "DecodeFailed",
        RenderError::Certificate { .. } | RenderError::PasswordFileMissing { .. } => "CertificateFailed",
        RenderError::Collision(_) => "FileCollision",
        RenderError::Limit(_) => "LimitExceeded",
        RenderError::Template(_) => "TemplateFailed",
        RenderError::Memory(_) => "MemoryExhausted",
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
    let admit = provider.clone();
    // The driver keeps one connection: recycled, its buffers (which hold
    // the last requests and the pods' tokens in them) are freed and zeroed.
    // Its mounts in flight answer first (they end by --mount-timeout): no
    // grace period is set, which would close the connection by force
    // instead (tonic then skips the graceful GOAWAY).
    let age = provider.settings.max_connection_age;
    let service = CsiDriverProviderServer::new(ProviderService::new(provider))
        .max_decoding_message_size(max_request)
        // The driver's client accepts 4 MiB by default; files are bounded
        // by --max-mount-bytes well below that, this only bounds encoding.
        .max_encoding_message_size(usize::MAX);
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(streams)
        // What the driver may send before the provider reads it: one
        // request, on a stream and on its connection.
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_connection_age(age)
        .layer(tower::layer::layer_fn(HoldUntilSent))
        .layer(tower::layer::layer_fn(move |inner| ChargeRequests {
            inner,
            provider: admit.clone(),
        }))
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    sweeper.abort();
    served?;
    let _ = std::fs::remove_file(&path);
    tracing::info!("stopped");
    Ok(())
}

/// HTTP/2 flow-control windows of the provider socket (stream and
/// connection): what a client may send that the provider has not read.
const WINDOW: u32 = 1024 * 1024;

/// The gRPC path of `Mount`.
const MOUNT_PATH: &str = "/v1alpha1.CSIDriverProvider/Mount";

// === impl ChargeRequests ===

/// What [`ChargeRequests`] took for a mount, handed to the service through
/// the request's extensions (which must be `Clone`).
#[derive(Clone)]
struct Admission(Arc<std::sync::Mutex<Option<Admitted>>>);

/// Charges each `Mount` request to the memory budget by its encoded size
/// (the gRPC length prefix), before it is decoded. A request that does not
/// fit is read to its end and dropped, never kept waiting unread (HTTP/2
/// shares one window between the mounts on the driver's connection), and
/// refused with `RESOURCE_EXHAUSTED`.
#[derive(Clone)]
struct ChargeRequests<S> {
    inner: S,
    provider: Arc<Provider>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for ChargeRequests<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The service that was made ready serves this call; its clone the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if req.uri().path() != MOUNT_PATH {
            return Box::pin(inner.call(req));
        }
        let provider = self.provider.clone();
        Box::pin(async move {
            let started = Instant::now();
            let (parts, mut body) = req.into_parts();
            let head = read_prefix(&mut body, started + provider.settings.timeout).await;
            let max = provider.settings.limits.max_request_bytes as u64;
            let admitted = match message_len(&head) {
                // Larger ones are refused by the transport before decoding.
                Some(len) if len <= max => provider.admit_request(len + PREFIX as u64, started).map(Some),
                _ => Ok(None),
            };
            match admitted {
                Err(e) => {
                    drain(body, started + provider.settings.timeout).await;
                    Ok(refused(&provider, &e, started))
                }
                Ok(admitted) => {
                    let mut req =
                        http::Request::from_parts(parts, tonic::body::Body::new(Prefixed { head, rest: body }));
                    if let Some(a) = admitted {
                        req.extensions_mut()
                            .insert(Admission(Arc::new(std::sync::Mutex::new(Some(a)))));
                    }
                    inner.call(req).await
                }
            }
        })
    }
}

/// `hint` with `bytes` more.
fn plus(mut hint: http_body::SizeHint, bytes: u64) -> http_body::SizeHint {
    // The upper bound first: a lower bound above it is refused.
    if let Some(upper) = hint.upper() {
        hint.set_upper(upper.saturating_add(bytes));
    }
    hint.set_lower(hint.lower().saturating_add(bytes));
    hint
}

/// The gRPC message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// The first bytes of a request body, at least the message prefix unless
/// the body ends (or errs, or stalls past `deadline`) first.
async fn read_prefix(body: &mut tonic::body::Body, deadline: Instant) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let mut head = bytes::BytesMut::new();
    while head.len() < PREFIX {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => head.extend_from_slice(&data),
                Err(_) => break,
            },
            _ => break,
        }
    }
    head.freeze()
}

/// The length of an uncompressed gRPC message from its prefix.
fn message_len(head: &[u8]) -> Option<u64> {
    match head {
        [0, a, b, c, d, ..] => Some(u64::from(u32::from_be_bytes([*a, *b, *c, *d]))),
        _ => None,
    }
}

/// Reads a refused request to its end, dropping it frame by frame, until
/// `deadline` (a body that stalls is abandoned with its stream).
async fn drain(mut body: tonic::body::Body, deadline: Instant) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout_at(deadline, async { while let Some(Ok(_)) = body.frame().await {} }).await;
}

/// The answer to a mount refused before its request was decoded: counted
/// and logged like any failed mount (its pod is not known yet).
fn refused(provider: &Provider, e: &MountError, started: Instant) -> http::Response<tonic::body::Body> {
    let code = error_code(e);
    provider
        .metrics
        .mount_finished(started.elapsed().as_secs_f64(), 0, Some(code));
    tracing::warn!(error = %Escaped(e), code, outcome = "error", "mount refused before its request was read");
    Audit::new(&provider.settings.audit, provider.metrics.clone()).finish(Err(code));
    status(e).into_http()
}

/// A body whose first bytes were read already.
struct Prefixed {
    head: bytes::Bytes,
    rest: tonic::body::Body,
}

impl http_body::Body for Prefixed {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if !self.head.is_empty() {
            let head = std::mem::take(&mut self.head);
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(head))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        plus(self.rest.size_hint(), self.head.len() as u64)
    }
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
        plus(self.body.size_hint(), self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Limit, LimitError};
    use crate::memory::{MemoryError, Stage};
    use crate::render::json_keys::SplitError;
    use crate::spec::PathRule;
    use crate::spec::paths::Collision;
    use crate::template::{Problem, TemplateError};

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn each_rendering_error_has_its_own_code_and_status() {
        let memory = MemoryError {
            stage: Stage::Files,
            wanted: 1,
            held: 0,
            budget: 1,
            shared: 1,
            waited: None,
        };
        let cases = [
            (
                RenderError::NotJson(s("a")),
                "JmesPathFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::InvalidPath(s("a")),
                "JmesPathFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::NoMatch {
                    path: s("p"),
                    alias: s("a"),
                },
                "JmesPathFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::NotString(s("p")),
                "JmesPathFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::JsonKeys {
                    object: s("o"),
                    error: SplitError::NotObject,
                },
                "JsonKeysFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::Certificate {
                    object: s("o"),
                    file: s("f"),
                    problem: crate::certificate::CertificateError::KeyMismatch,
                },
                "CertificateFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::InvalidFileName {
                    file: s("f"),
                    name: s("n"),
                    object: s("o"),
                    rule: PathRule::Empty,
                },
                "InvalidFileName",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::NotEncoded {
                    object: s("o"),
                    file: s("f"),
                    encoding: "base64",
                },
                "DecodeFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::Collision(Collision::Same {
                    file: s("f"),
                    first: s("a"),
                    second: s("b"),
                }),
                "FileCollision",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::Limit(LimitError {
                    subject: s("mount"),
                    limit: Limit::Files,
                    found: 2,
                    at_least: false,
                    max: 1,
                }),
                "LimitExceeded",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::Template(TemplateError {
                    file: s("t"),
                    line: None,
                    problem: Problem::Language(s("x")),
                }),
                "TemplateFailed",
                tonic::Code::InvalidArgument,
            ),
            (
                RenderError::Memory(memory),
                "MemoryExhausted",
                tonic::Code::ResourceExhausted,
            ),
        ];
        for (e, code, status_code) in cases {
            let text = e.to_string();
            let e = MountError::Render(e);
            assert_eq!(error_code(&e), code, "{text}");
            assert_eq!(status(&e).code(), status_code, "{text}");
            assert!(ERROR_CODES.contains(&code), "{code}");
        }
    }

    #[test]
    fn the_dashboard_lists_every_error_code() {
        let dashboard = include_str!("../deploy/grafana/csi-provider-aws.json");
        let listed = dashboard
            .lines()
            .find(|l| l.contains("\"description\": \"Codes: "))
            .unwrap_or_else(|| panic!("no list of codes in the dashboard"));
        for code in ERROR_CODES {
            assert!(listed.contains(code), "{code} is not in the dashboard's list: {listed}");
        }
    }
}
