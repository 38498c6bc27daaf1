//! The provider in the test's own process: the binary's configuration
//! (its flags, checked by the same [`Config`]) and the same [`Provider`],
//! over the in-repo fakes' handlers called directly. AWS is reached through
//! the SDK's HTTP client seam, Kubernetes through kube's tower service, the
//! Pod Identity Agent through its transport seam: no socket, no port, no
//! process, so a test can run with tokio's time paused and its waits cost
//! nothing.
//!
//! What stays end to end (the binary over its socket): the transport
//! itself (request limits, connection recycling, the HTTP endpoint), what
//! only a real connection shows (`--aws-connect-timeout`, the SDK over
//! real HTTP to moto), memory measured in /proc, signals and start-up.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use clap::Parser;
use csi_provider_aws::aws::AwsClients;
use csi_provider_aws::cli::Cli;
use csi_provider_aws::config::{Config, Environment, Peers};
use csi_provider_aws::identity::PodIdentityClient;
use csi_provider_aws::identity::pod_identity::{AgentFuture, AgentTransport, TransportError};
use csi_provider_aws::kube::KubeClient;
use csi_provider_aws::mount::Provider;
use csi_provider_aws::proto::v1alpha1::{MountRequest, MountResponse};
use csi_provider_aws::telemetry::Metrics;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use super::http::{Concurrency, Handler, Incoming2, answer};
use super::{FakeAgent, FakeAws, FakeKube, ROLE_A, ROLE_B, Req};

/// The SDK's HTTP client, answered by a fake's handler.
#[derive(Clone)]
struct SdkAnswers {
    handler: Handler,
    stats: Arc<Concurrency>,
}

impl std::fmt::Debug for SdkAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdkAnswers")
    }
}

impl HttpConnector for SdkAnswers {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (handler, stats) = (self.handler.clone(), self.stats.clone());
        let mut headers = http::HeaderMap::new();
        for (name, value) in request.headers().iter() {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        let path = request
            .uri()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.path_and_query().map(|p| p.to_string()))
            .unwrap_or_default();
        let incoming = Incoming2 {
            method: request.method().to_string(),
            path,
            headers,
            body: request.body().bytes().unwrap_or_default().to_vec(),
        };
        HttpConnectorFuture::new(async move {
            match answer(&handler, &stats, incoming).await {
                Some(reply) => {
                    let status = reply
                        .status
                        .try_into()
                        .map_err(|e| ConnectorError::other(Box::new(e), None))?;
                    let mut response = HttpResponse::new(status, SdkBody::from(reply.body));
                    response.headers_mut().insert("content-type", reply.content_type);
                    response
                        .headers_mut()
                        .insert("x-amzn-requestid", "00000000-0000-0000-0000-000000000000");
                    Ok(response)
                }
                None => Err(ConnectorError::io(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection reset",
                )))),
            }
        })
    }
}

impl HttpClient for SdkAnswers {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// The Pod Identity Agent's transport, answered by the fake agent's handler
/// (refused while the agent is down).
struct AgentAnswers(FakeAgent);

impl AgentTransport for AgentAnswers {
    fn get<'a>(&'a self, url: &'a str, authorization: http::HeaderValue, timeout: Duration) -> AgentFuture<'a> {
        Box::pin(async move {
            let (handler, up, stats) = self.0.handler();
            if !up {
                return Err(TransportError::Unreachable("cannot connect: connection refused".into()));
            }
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, authorization);
            let path = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.path_and_query().map(|p| p.to_string()))
                .unwrap_or_default();
            let request = Incoming2 {
                method: "GET".into(),
                path,
                headers,
                body: vec![],
            };
            match tokio::time::timeout(timeout, answer(&handler, &stats, request)).await {
                Err(_) => Err(TransportError::Unreachable(format!("timed out after {timeout:?}"))),
                Ok(None) => Err(TransportError::Failed("request failed: connection reset".into())),
                Ok(Some(reply)) => Ok((
                    http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::BAD_GATEWAY),
                    Bytes::from(reply.body),
                )),
            }
        })
    }
}

/// A Kubernetes client whose requests the fake API server's handler answers.
fn kube_client(handler: Handler) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes().to_vec())?;
            let incoming = Incoming2 {
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: parts.headers,
                body,
            };
            match answer(&handler, &Arc::new(Concurrency::default()), incoming).await {
                Some(reply) => Ok::<_, tower::BoxError>(
                    http::Response::builder()
                        .status(reply.status)
                        .header("content-type", reply.content_type)
                        .body(Full::new(Bytes::from(reply.body)))
                        .expect("response"),
                ),
                None => Err(tower::BoxError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection reset",
                ))),
            }
        }
    });
    kube::Client::new(service, "default")
}

/// Log lines written while a test runs, for it to read.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The provider and its fakes, in-process (the shape of [`super::Env`]).
pub struct InProc {
    pub aws: FakeAws,
    pub kube: FakeKube,
    pub agent: FakeAgent,
    pub provider: InProvider,
    _logging: tracing::subscriber::DefaultGuard,
}

/// The provider of an [`InProc`]: mounts as its gRPC service answers them.
pub struct InProvider {
    pub inner: Arc<Provider>,
    pub dir: tempfile::TempDir,
    logs: LogBuffer,
}

impl InProc {
    /// The provider with `flags` (as the binary takes them), two
    /// ServiceAccounts with IRSA roles (`sa-a`, `sa-b`), and the
    /// environment the end-to-end tests give the binary (no `AWS_REGION`,
    /// two attempts per AWS call). Its logs are captured on this thread.
    pub async fn start(flags: &[&str]) -> Self {
        Self::start_in(flags, Environment::default()).await
    }

    /// [`InProc::start`] in `env`.
    pub async fn start_in(flags: &[&str], env: Environment) -> Self {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info,csi_provider_aws=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let logging = tracing::subscriber::set_default(subscriber);
        let aws = FakeAws::start().await;
        let kube = FakeKube::start().await;
        let agent = FakeAgent::start("127.0.0.1:0").await;
        kube.add_service_account("default", "sa-a", Some(ROLE_A));
        kube.add_service_account("default", "sa-b", Some(ROLE_B));
        let agent_flag = format!("--pod-identity-endpoint-ipv4={}", agent.url());
        let argv = ["csi-provider-aws", agent_flag.as_str()]
            .into_iter()
            .chain(flags.iter().copied())
            .map(str::to_string);
        let cli = Cli::try_parse_from(csi_provider_aws::cli::normalize_args(argv)).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::new(cli.serve_args(), env).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::default());
        let (handler, stats) = aws.handler();
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(aws.endpoint())
            .http_client(SharedHttpClient::new(SdkAnswers { handler, stats }))
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        let peers = Peers {
            aws: AwsClients::new(sdk, &config.app_version, config.aws, metrics.clone())
                .unwrap_or_else(|e| panic!("{e}")),
            kube: KubeClient::new(kube_client(kube.handler()), config.kube, metrics.clone()),
            pod_identity: PodIdentityClient::with_transport(
                config.pod_identity.clone(),
                Arc::new(AgentAnswers(agent.clone())),
                metrics.clone(),
            ),
            metrics,
        };
        let inner = config.provider(peers);
        Self {
            aws,
            kube,
            agent,
            provider: InProvider {
                inner,
                dir: tempfile::tempdir().expect("tempdir"),
                logs,
            },
            _logging: logging,
        }
    }
}

impl InProvider {
    /// A fresh, empty target directory for a mount.
    pub fn target(&self, name: &str) -> std::path::PathBuf {
        let p = self.dir.path().join("pods").join(name).join("mount");
        std::fs::create_dir_all(&p).expect("target");
        p
    }

    /// One mount through the provider's gRPC service, as the driver's call
    /// reaches it (events, metrics and logs included): the response, or
    /// the status the driver gets.
    pub async fn mount(&self, req: &Req) -> Result<MountResponse, tonic::Status> {
        serve(self.inner.clone(), req.build()).await
    }

    /// [`InProvider::mount`] as a task of its own.
    pub fn spawn_mount(&self, req: &Req) -> tokio::task::JoinHandle<Result<MountResponse, tonic::Status>> {
        tokio::spawn(serve(self.inner.clone(), req.build()))
    }

    /// What the provider logged so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// `request` answered by the provider's gRPC service.
async fn serve(provider: Arc<Provider>, request: MountRequest) -> Result<MountResponse, tonic::Status> {
    use csi_provider_aws::proto::v1alpha1::csi_driver_provider_server::CsiDriverProvider;
    csi_provider_aws::server::ProviderService::new(provider)
        .mount(tonic::Request::new(request))
        .await
        .map(tonic::Response::into_inner)
}
