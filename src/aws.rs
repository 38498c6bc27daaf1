//! AWS plumbing shared by identity (STS) and fetch (Secrets Manager, SSM):
//! one SDK configuration read once from the standard environment, one HTTP
//! client and connection pool, per-region clients that sign with the pod's
//! own credentials, and the single classification of SDK errors.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_secretsmanager::config::Region;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority, RetryReason,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::failure::{Failure, error_chain};
use crate::memory::{Charges, MountMemory, Stage};
use crate::secret::SecretString;
use crate::telemetry::{Family, Metrics, outcome};

/// Temporary AWS credentials of one pod.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl Credentials {
    /// A per-call configuration override that signs with these credentials.
    pub fn for_secrets_manager(&self) -> aws_sdk_secretsmanager::config::Builder {
        aws_sdk_secretsmanager::config::Builder::default()
            .credentials_provider(SharedCredentialsProvider::new(self.to_sdk()))
    }

    /// [`Self::for_secrets_manager`] for a call whose throttling is answered
    /// by another API rather than by retrying (see [`NoRetryWhenThrottled`]).
    pub fn for_secrets_manager_no_throttle_retry(&self) -> aws_sdk_secretsmanager::config::Builder {
        self.for_secrets_manager().retry_classifier(NoRetryWhenThrottled)
    }

    /// A per-call configuration override that signs with these credentials
    /// (STS `AssumeRole`: role chaining).
    pub fn for_sts(&self) -> aws_sdk_sts::config::Builder {
        aws_sdk_sts::config::Builder::default().credentials_provider(SharedCredentialsProvider::new(self.to_sdk()))
    }

    /// A per-call configuration override that signs with these credentials.
    pub fn for_ssm(&self) -> aws_sdk_ssm::config::Builder {
        aws_sdk_ssm::config::Builder::default().credentials_provider(SharedCredentialsProvider::new(self.to_sdk()))
    }

    /// A per-call configuration override that signs with these credentials.
    pub fn for_acm(&self) -> aws_sdk_acm::config::Builder {
        aws_sdk_acm::config::Builder::default().credentials_provider(SharedCredentialsProvider::new(self.to_sdk()))
    }

    fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose().to_string(),
            Some(self.session_token.expose().to_string()),
            self.expiration,
            "csi-provider-aws-pod",
        )
    }
}

/// Errors building the shared AWS configuration at start.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error("failed to read the CA bundle {path} named by AWS_CA_BUNDLE: {source}")]
    CaBundle {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    #[error("invalid application name {0:?} for the AWS User-Agent")]
    AppName(String),
}

/// Deadlines and concurrency of AWS calls (STS included).
#[derive(Debug, Clone, Copy)]
pub struct AwsSettings {
    /// Connecting to an endpoint (`--aws-connect-timeout`).
    pub connect_timeout: Duration,
    /// One attempt of a call, retries not included (`--aws-attempt-timeout`).
    pub attempt_timeout: Duration,
    /// One call with all its retries (`--aws-operation-timeout`).
    pub operation_timeout: Duration,
    /// AWS calls in flight at once, all mounts together
    /// (`--max-concurrent-aws-calls`).
    pub max_concurrent_calls: usize,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            max_concurrent_calls: 64,
        }
    }
}

/// Regional clients kept per service: one per region in use. Region names
/// are validated before a client is made; beyond this many, the least
/// recently made is dropped.
pub const MAX_REGIONAL_CLIENTS: usize = 64;

/// The AWS side of the provider: one configuration, and one client per
/// service and region, built once and shared by every mount. Clients carry
/// no credentials of their own: each call supplies the pod's credentials
/// (see [`Credentials::for_secrets_manager`] and friends), and no identity
/// is cached inside a client, so one pod's credentials can never sign
/// another pod's call. Every call goes through [`AwsClients::call`]: one
/// concurrency limit, one classification, one count.
#[derive(Clone)]
pub struct AwsClients {
    config: SdkConfig,
    clients: Arc<Mutex<RegionalClients>>,
    calls: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    pub settings: AwsSettings,
}

impl fmt::Debug for AwsClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsClients")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Clients of one service by region, in the order they were made.
struct ByRegion<C> {
    clients: HashMap<String, C>,
    order: VecDeque<String>,
}

impl<C> Default for ByRegion<C> {
    fn default() -> Self {
        Self {
            clients: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<C: Clone> ByRegion<C> {
    fn get(&mut self, region: &str, make: impl FnOnce() -> C) -> Option<C> {
        if !crate::region::is_region_name(region) {
            return None;
        }
        if let Some(c) = self.clients.get(region) {
            return Some(c.clone());
        }
        if self.order.len() >= MAX_REGIONAL_CLIENTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.clients.remove(&oldest);
        }
        let client = make();
        self.clients.insert(region.to_string(), client.clone());
        self.order.push_back(region.to_string());
        Some(client)
    }
}

#[derive(Default)]
struct RegionalClients {
    secrets_manager: ByRegion<aws_sdk_secretsmanager::Client>,
    ssm: ByRegion<aws_sdk_ssm::Client>,
    sts: ByRegion<aws_sdk_sts::Client>,
    acm: ByRegion<aws_sdk_acm::Client>,
}

impl AwsClients {
    /// Loads the SDK configuration from the environment (`AWS_ENDPOINT_URL*`,
    /// `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`,
    /// `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, profile files), with an HTTP
    /// client that honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` and trusts
    /// `ca_bundle` (`AWS_CA_BUNDLE`) too, and the deadlines of `settings`.
    /// No credentials are loaded: every call is signed with the credentials
    /// of the pod it serves.
    pub async fn from_env(
        app_version: &str,
        ca_bundle: Option<&std::path::Path>,
        settings: AwsSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AwsSetupError> {
        let mut trust = TrustStore::default();
        if let Some(path) = ca_bundle {
            let pem = std::fs::read(path).map_err(|source| AwsSetupError::CaBundle {
                path: path.display().to_string(),
                source,
            })?;
            trust = trust.with_pem_certificate(pem);
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| AwsSetupError::Tls(DisplayErrorContext(&e).to_string()))?;
        let http_client =
            aws_smithy_http_client::Builder::new().build_with_connector_fn(move |connector_settings, components| {
                let mut builder = aws_smithy_http_client::Connector::builder().proxy_config(ProxyConfig::from_env());
                if let Some(s) = connector_settings {
                    builder = builder.connector_settings(s.clone());
                }
                if let Some(sleep) = components.and_then(|c| c.sleep_impl()) {
                    builder = builder.sleep_impl(sleep);
                }
                builder
                    .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                    .tls_context(tls_context.clone())
                    .build()
            });
        let config = aws_config::defaults(BehaviorVersion::latest())
            .no_credentials()
            .http_client(http_client)
            .load()
            .await;
        Self::new(config, app_version, settings, metrics)
    }

    /// The clients over `config` (its HTTP client, endpoints, region and
    /// retry settings: the environment's, or a test's), naming our app with
    /// `app_version` and taking the deadlines of `settings`.
    pub fn new(
        config: SdkConfig,
        app_version: &str,
        settings: AwsSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AwsSetupError> {
        let app = format!("csi-provider-aws-{app_version}");
        let app_name = AppName::new(app.clone()).map_err(|_| AwsSetupError::AppName(app))?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.attempt_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .operation_timeout(settings.operation_timeout)
            .build();
        let config = config
            .into_builder()
            .app_name(app_name)
            .timeout_config(timeouts)
            .build();
        Ok(Self {
            config,
            clients: Arc::default(),
            calls: Arc::new(Semaphore::new(settings.max_concurrent_calls.max(1))),
            metrics,
            settings,
        })
    }

    /// The region of the environment (`AWS_REGION`, or the profile's).
    pub fn env_region(&self) -> Option<String> {
        self.config.region().map(|r| r.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegionalClients> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The STS client of a region (`None` for a name that is not a region).
    /// `AssumeRoleWithWebIdentity` is unsigned.
    pub fn sts(&self, region: &str) -> Option<aws_sdk_sts::Client> {
        self.lock().sts.get(region, || {
            let conf = aws_sdk_sts::config::Builder::from(&self.config)
                .region(Region::new(region.to_string()))
                // AssumeRole is signed with each pod's own credentials,
                // passed per call: nothing to cache across calls.
                .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache())
                .build();
            aws_sdk_sts::Client::from_conf(conf)
        })
    }

    /// The Secrets Manager client of a region (no credentials of its own).
    pub fn secrets_manager(&self, region: &str) -> Option<aws_sdk_secretsmanager::Client> {
        self.lock().secrets_manager.get(region, || {
            let conf = aws_sdk_secretsmanager::config::Builder::from(&self.config)
                .region(Region::new(region.to_string()))
                .identity_cache(aws_sdk_secretsmanager::config::IdentityCache::no_cache())
                .build();
            aws_sdk_secretsmanager::Client::from_conf(conf)
        })
    }

    /// The SSM client of a region (no credentials of its own).
    pub fn ssm(&self, region: &str) -> Option<aws_sdk_ssm::Client> {
        self.lock().ssm.get(region, || {
            let conf = aws_sdk_ssm::config::Builder::from(&self.config)
                .region(Region::new(region.to_string()))
                .identity_cache(aws_sdk_ssm::config::IdentityCache::no_cache())
                .build();
            aws_sdk_ssm::Client::from_conf(conf)
        })
    }

    /// The ACM client of a region (no credentials of its own).
    pub fn acm(&self, region: &str) -> Option<aws_sdk_acm::Client> {
        self.lock().acm.get(region, || {
            let conf = aws_sdk_acm::config::Builder::from(&self.config)
                .region(Region::new(region.to_string()))
                .identity_cache(aws_sdk_acm::config::IdentityCache::no_cache())
                .build();
            aws_sdk_acm::Client::from_conf(conf)
        })
    }

    /// Makes one AWS call: waits for one of `--max-concurrent-aws-calls`
    /// slots, sends it, classifies the result and counts it under `family`
    /// and `operation` (`service.Operation` for Secrets Manager and SSM).
    pub async fn call<T, E, Fut>(&self, family: Family, operation: &'static str, send: Fut) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let result = match self.calls.acquire().await {
            Ok(_permit) => send.await.map_err(|e| classify(&e)),
            Err(_) => Err(AwsError {
                failure: Failure::Unavailable,
                code: None,
                message: "the provider is shutting down".to_string(),
            }),
        };
        self.metrics
            .count(family, operation, outcome(&result, |e: &AwsError| e.failure));
        result
    }
}

// === charging responses as they arrive ===

/// Bytes held per byte of a response body while its call runs: the body as
/// received, the one buffer the SDK collects it into, and the output it is
/// parsed into.
pub const RESPONSE_FACTOR: u64 = 3;

/// An interceptor that charges the bodies of a call's responses to a
/// mount's memory budget as they arrive (every attempt), holding the
/// charges in `charges` until the caller drops them: a response larger than
/// what the mount may still hold stops being read, and the call fails.
#[derive(Debug, Clone)]
pub struct ChargeResponses {
    memory: MountMemory,
    charges: Arc<Charges>,
}

impl ChargeResponses {
    pub fn new(memory: MountMemory) -> Self {
        Self {
            memory,
            charges: Arc::new(Charges::default()),
        }
    }

    /// The charges of the responses so far, and their refusal if any.
    pub fn charges(&self) -> &Arc<Charges> {
        &self.charges
    }
}

impl Intercept for ChargeResponses {
    fn name(&self) -> &'static str {
        "ChargeResponses"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // A new attempt: what the last one received is dropped.
        self.charges.clear();
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(ChargedBody {
            inner: body,
            memory: self.memory.clone(),
            charges: self.charges.clone(),
        });
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        _context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // A refused body fails the attempt with an error of an interceptor,
        // which the SDK does not retry (it would read the body again).
        match self.charges.refusal() {
            Some(e) => Err(e.to_string().into()),
            None => Ok(()),
        }
    }
}

/// A response body whose data frames are charged before they are handed
/// on. A frame is charged without waiting: the call holds one of the
/// node's AWS call slots, which mounts holding memory may be waiting for.
struct ChargedBody {
    inner: SdkBody,
    memory: MountMemory,
    charges: Arc<Charges>,
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let frame = match std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let bytes = frame.data_ref().map_or(0, |d| d.len() as u64) * RESPONSE_FACTOR;
        if bytes == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.memory.try_charge(Stage::Aws, bytes) {
            Ok(c) => {
                self.charges.add(c);
                Poll::Ready(Some(Ok(frame)))
            }
            Err(e) => {
                let message = e.to_string();
                self.charges.refuse(e);
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// The error for a region no client is made for.
pub fn no_client(region: &str) -> AwsError {
    AwsError {
        failure: Failure::Rejected,
        code: None,
        message: format!("{} is not a region name", crate::limits::Echo(region)),
    }
}

/// Forbids the SDK's retry of a throttled call, leaving every other retry
/// (5xx, timeouts, connection errors) as the SDK's standard mode decides.
/// For `BatchGetSecretValue`, whose account-wide quota is 100 calls a second
/// and fixed, a retry adds load to the one quota that is exhausted and holds
/// the mount for the SDK's backoff, while `GetSecretValue` (10,000 a second)
/// serves the same objects at once.
#[derive(Debug)]
pub struct NoRetryWhenThrottled;

impl ClassifyRetry for NoRetryWhenThrottled {
    fn classify_retry(&self, _ctx: &InterceptorContext) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(&self, _ctx: &InterceptorContext, previous: &RetryAction) -> RetryAction {
        match previous {
            RetryAction::RetryIndicated(RetryReason::RetryableError {
                kind: aws_smithy_types::retry::ErrorKind::ThrottlingError,
                ..
            }) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "NoRetryWhenThrottled"
    }

    /// After the SDK's classifiers, whose verdict it refines.
    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// A classified AWS error: what went wrong, the service's code and message.
/// Never contains request payloads or credentials.
#[derive(Debug, Clone)]
pub struct AwsError {
    pub failure: Failure,
    pub code: Option<String>,
    pub message: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for AwsError {}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
];
const NOT_FOUND_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "NoSuchEntity",
];
const ACCESS_DENIED_CODES: &[&str] = &["AccessDeniedException", "AccessDenied", "KMSAccessDeniedException"];
/// The credentials themselves were refused: an expired session, or a key
/// AWS does not know (revoked or never valid).
const INVALID_CREDENTIALS_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
];
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalServiceError",
    "InternalServiceErrorException",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "IDPCommunicationError",
];

/// Classifies a service error by its code, and by its HTTP status when the
/// code is missing or not one of the known ones.
pub fn classify_code(code: Option<&str>, status: u16) -> Failure {
    let is = |set: &[&str]| code.is_some_and(|c| set.contains(&c));
    if is(THROTTLING_CODES) {
        Failure::Throttled
    } else if is(UNAVAILABLE_CODES) {
        Failure::Unavailable
    } else if is(NOT_FOUND_CODES) {
        Failure::NotFound
    } else if is(INVALID_CREDENTIALS_CODES) {
        Failure::InvalidCredentials
    } else if is(ACCESS_DENIED_CODES) {
        Failure::AccessDenied
    } else {
        Failure::from_status(status)
    }
}

/// Classifies any SDK error. The one place SDK failures become [`Failure`]s.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().map(str::to_string);
            let status = se.raw().status().as_u16();
            AwsError {
                failure: classify_code(code.as_deref(), status),
                message: se
                    .err()
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP status {status}")),
                code,
            }
        }
        SdkError::ResponseError(re) => {
            let status = re.raw().status().as_u16();
            AwsError {
                failure: Failure::from_status(status),
                code: None,
                message: format!("unreadable response with HTTP status {status}"),
            }
        }
        SdkError::DispatchFailure(d) if d.is_user() => AwsError {
            failure: Failure::Rejected,
            code: None,
            message: error_chain(err),
        },
        SdkError::ConstructionFailure(_) => AwsError {
            failure: Failure::Rejected,
            code: None,
            message: error_chain(err),
        },
        _ => AwsError {
            failure: Failure::Unavailable,
            code: None,
            message: error_chain(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_are_retryable_but_4xx_are_not() {
        assert_eq!(classify_code(Some("ThrottlingException"), 400), Failure::Throttled);
        assert_eq!(classify_code(None, 429), Failure::Throttled);
        assert_eq!(classify_code(Some("InternalServiceError"), 500), Failure::Unavailable);
        assert_eq!(classify_code(None, 503), Failure::Unavailable);
        assert_eq!(classify_code(Some("ResourceNotFoundException"), 400), Failure::NotFound);
        assert_eq!(classify_code(Some("AccessDeniedException"), 400), Failure::AccessDenied);
        assert_eq!(classify_code(None, 403), Failure::AccessDenied);
        assert_eq!(
            classify_code(Some("ExpiredTokenException"), 400),
            Failure::InvalidCredentials
        );
        assert_eq!(
            classify_code(Some("UnrecognizedClientException"), 400),
            Failure::InvalidCredentials
        );
        assert_eq!(
            classify_code(Some("InvalidClientTokenId"), 403),
            Failure::InvalidCredentials
        );
        assert!(!Failure::InvalidCredentials.is_retryable());
        assert_eq!(classify_code(Some("ValidationException"), 400), Failure::Rejected);
        // A code not known is classified by its status, as Kubernetes' and
        // the Pod Identity Agent's answers are.
        assert_eq!(classify_code(Some("SomethingNew"), 404), Failure::NotFound);
        assert_eq!(classify_code(Some("SomethingNew"), 401), Failure::AccessDenied);
        assert_eq!(classify_code(None, 429), Failure::from_status(429));
        assert!(Failure::Throttled.is_retryable());
        assert!(Failure::Unavailable.is_retryable());
        assert!(!Failure::NotFound.is_retryable());
        assert!(!Failure::AccessDenied.is_retryable());
        assert!(!Failure::Rejected.is_retryable());
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("very-secret-key".into()),
            session_token: SecretString::new("session-token-canary".into()),
            expiration: None,
        };
        let out = format!("{c:?}");
        assert!(
            !out.contains("very-secret-key") && !out.contains("session-token-canary"),
            "{out}"
        );
    }
}
