//! EKS Pod Identity: `GET /v1/credentials` on the node-local agent with the
//! pod's `pods.eks.amazonaws.com` token in `Authorization`. With the `auto`
//! address preference, IPv6 is tried when IPv4 cannot be reached (connection
//! refused, unreachable, timed out); `ipv4`/`ipv6` use one address only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::IdentityError;
use crate::aws::Credentials;
use crate::failure::{Failure, error_chain};
use crate::secret::SecretString;
use crate::spec::AddressPreference;
use crate::telemetry::{Family, Metrics, outcome};

/// Default agent endpoints.
pub const DEFAULT_IPV4_ENDPOINT: &str = "http://169.254.170.23/v1/credentials";
pub const DEFAULT_IPV6_ENDPOINT: &str = "http://[fd00:ec2::23]/v1/credentials";
/// Timeout of one agent request when `--pod-identity-http-timeout` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;
/// The most of an agent response that is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where the agent is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct PodIdentityConfig {
    pub ipv4_endpoint: String,
    pub ipv6_endpoint: String,
    pub timeout: Duration,
}

impl Default for PodIdentityConfig {
    fn default() -> Self {
        Self {
            ipv4_endpoint: DEFAULT_IPV4_ENDPOINT.to_string(),
            ipv6_endpoint: DEFAULT_IPV6_ENDPOINT.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A client for the Pod Identity Agent.
#[derive(Clone)]
pub struct PodIdentityClient {
    config: PodIdentityConfig,
    transport: Arc<dyn AgentTransport>,
    metrics: Arc<Metrics>,
}

/// Why one request to the agent got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The address could not be reached (refused, unreachable, no answer
    /// in time): with `auto`, the other address family is tried.
    Unreachable(String),
    /// It was reached, and the request or its answer failed.
    Failed(String),
}

/// The future of one request to the agent.
pub type AgentFuture<'a> = Pin<Box<dyn Future<Output = Result<(StatusCode, Bytes), TransportError>> + Send + 'a>>;

/// How the client reaches the agent: one `GET` of `url` with the pod's
/// token as `authorization`, within `timeout` to connect and answer and
/// again to read the answer, of which at most [`MAX_RESPONSE_BYTES`] are
/// read. [`HttpAgent`] over the network; tests answer in-process.
pub trait AgentTransport: Send + Sync + 'static {
    fn get<'a>(&'a self, url: &'a str, authorization: http::HeaderValue, timeout: Duration) -> AgentFuture<'a>;
}

/// The agent over HTTP: a connection per request, since a kept one would
/// keep the last request's headers, the pod's token in them, in its buffer.
pub struct HttpAgent {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl HttpAgent {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { http }
    }
}

impl AgentTransport for HttpAgent {
    fn get<'a>(&'a self, url: &'a str, authorization: http::HeaderValue, timeout: Duration) -> AgentFuture<'a> {
        Box::pin(async move {
            let request = Request::get(url)
                .header(header::AUTHORIZATION, authorization)
                .header(header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| TransportError::Failed(format!("invalid agent URL: {e}")))?;
            let response = match tokio::time::timeout(timeout, self.http.request(request)).await {
                Err(_) => return Err(TransportError::Unreachable(format!("timed out after {timeout:?}"))),
                Ok(Err(e)) if e.is_connect() => {
                    return Err(TransportError::Unreachable(format!(
                        "cannot connect: {}",
                        error_chain(&e)
                    )));
                }
                Ok(Err(e)) => return Err(TransportError::Failed(format!("request failed: {}", error_chain(&e)))),
                Ok(Ok(r)) => r,
            };
            let status = response.status();
            // The agent's answer is a small JSON document; more is not read.
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES);
            match tokio::time::timeout(timeout, body.collect()).await {
                Ok(Ok(b)) => Ok((status, b.to_bytes())),
                Ok(Err(e)) => Err(TransportError::Failed(format!("failed to read the response: {e}"))),
                Err(_) => Err(TransportError::Failed("timed out reading the response".to_string())),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: Option<String>,
}

#[derive(Deserialize)]
struct AgentError {
    code: Option<String>,
    message: Option<String>,
}

/// One failed attempt against one address.
enum Attempt {
    /// The address could not be reached: try the other family (auto).
    Unreachable(String),
    /// The agent answered with an error or garbage.
    Failed { failure: Failure, message: String },
}

impl PodIdentityClient {
    /// The client over HTTP.
    pub fn new(config: PodIdentityConfig, metrics: Arc<Metrics>) -> Self {
        let transport = Arc::new(HttpAgent::new(config.timeout));
        Self::with_transport(config, transport, metrics)
    }

    /// The client over `transport`.
    pub fn with_transport(
        config: PodIdentityConfig,
        transport: Arc<dyn AgentTransport>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            transport,
            metrics,
        }
    }

    /// Credentials for the pod whose token this is (counted once per
    /// credential fetch, however many attempts it took).
    pub async fn credentials(
        &self,
        preference: AddressPreference,
        token: &SecretString,
    ) -> Result<Credentials, IdentityError> {
        let result = self.fetch(preference, token).await;
        self.metrics.count(
            Family::PodIdentity,
            "GetCredentials",
            outcome(&result, IdentityError::failure),
        );
        result
    }

    async fn fetch(&self, preference: AddressPreference, token: &SecretString) -> Result<Credentials, IdentityError> {
        if token.expose().contains(['\r', '\n']) {
            return Err(IdentityError::PodIdentity {
                url: self.config.ipv4_endpoint.clone(),
                failure: Failure::Rejected,
                message: "the pods.eks.amazonaws.com token contains a line break".to_string(),
            });
        }
        let urls: Vec<&str> = match preference {
            AddressPreference::Ipv4 => vec![&self.config.ipv4_endpoint],
            AddressPreference::Ipv6 => vec![&self.config.ipv6_endpoint],
            AddressPreference::Auto => vec![&self.config.ipv4_endpoint, &self.config.ipv6_endpoint],
        };
        let mut last_error = None;
        for (i, url) in urls.iter().enumerate() {
            let has_next = i + 1 < urls.len();
            for attempt in 1..=ATTEMPTS {
                match self.get(url, token).await {
                    Ok(c) => return Ok(c),
                    Err(Attempt::Unreachable(message)) => {
                        last_error = Some(IdentityError::PodIdentity {
                            url: url.to_string(),
                            failure: Failure::Unavailable,
                            message,
                        });
                        if has_next {
                            tracing::info!(%url, "Pod Identity Agent unreachable; trying the next address");
                            break;
                        }
                    }
                    Err(Attempt::Failed { failure, message }) => {
                        let err = IdentityError::PodIdentity {
                            url: url.to_string(),
                            failure,
                            message,
                        };
                        if !failure.is_retryable() {
                            return Err(err);
                        }
                        last_error = Some(err);
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Err(last_error.unwrap_or(IdentityError::PodIdentity {
            url: self.config.ipv4_endpoint.clone(),
            failure: Failure::Unavailable,
            message: "no agent address to try".to_string(),
        }))
    }

    async fn get(&self, url: &str, token: &SecretString) -> Result<Credentials, Attempt> {
        let mut auth = http::HeaderValue::from_str(token.expose()).map_err(|_| Attempt::Failed {
            failure: Failure::Rejected,
            message: "the pods.eks.amazonaws.com token is not a valid header value".to_string(),
        })?;
        auth.set_sensitive(true);
        let (status, body) = self
            .transport
            .get(url, auth, self.config.timeout)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(message) => Attempt::Unreachable(message),
                TransportError::Failed(message) => Attempt::Failed {
                    failure: Failure::Unavailable,
                    message,
                },
            })?;
        if status != StatusCode::OK {
            let detail = serde_json::from_slice::<AgentError>(&body)
                .ok()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.code.unwrap_or_else(|| "error".into()),
                        e.message.unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            let failure = Failure::from_status(status.as_u16());
            return Err(Attempt::Failed {
                failure,
                message: format!("HTTP {} {}", status.as_u16(), detail).trim_end().to_string(),
            });
        }
        let creds: AgentCredentials = serde_json::from_slice(&body).map_err(|_| Attempt::Failed {
            failure: Failure::Unavailable,
            message: "the response is not a credentials document".to_string(),
        })?;
        let expiration = creds.expiration.as_deref().and_then(|e| {
            aws_smithy_types::DateTime::from_str(e, aws_smithy_types::date_time::Format::DateTime)
                .ok()
                .and_then(|d| SystemTime::try_from(d).ok())
        });
        Ok(Credentials {
            access_key_id: creds.access_key_id,
            secret_access_key: SecretString::new(creds.secret_access_key),
            session_token: SecretString::new(creds.token),
            expiration,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// An agent that answers from a script, in order, and records the URL
    /// and token of every request.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<(StatusCode, Bytes), TransportError>>>,
        asked: Mutex<Vec<(String, String)>>,
    }

    impl AgentTransport for Scripted {
        fn get<'a>(&'a self, url: &'a str, authorization: http::HeaderValue, _: Duration) -> AgentFuture<'a> {
            let token = authorization.to_str().unwrap_or_default().to_string();
            self.asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((url.to_string(), token));
            let answer = self
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
                .unwrap_or_else(|| Err(TransportError::Unreachable("no more answers".into())));
            Box::pin(async move { answer })
        }
    }

    const CREDENTIALS: &str = r#"{"AccessKeyId":"ASIAAGENT","SecretAccessKey":"agent-secret","Token":"agent-session","Expiration":"2099-01-01T00:00:00Z"}"#;

    fn ok() -> Result<(StatusCode, Bytes), TransportError> {
        Ok((StatusCode::OK, Bytes::from_static(CREDENTIALS.as_bytes())))
    }

    fn status(code: u16) -> Result<(StatusCode, Bytes), TransportError> {
        let body = r#"{"code":"Refused","message":"by the agent"}"#;
        Ok((
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            Bytes::from_static(body.as_bytes()),
        ))
    }

    async fn ask(
        answers: Vec<Result<(StatusCode, Bytes), TransportError>>,
        preference: AddressPreference,
    ) -> (Result<Credentials, IdentityError>, Vec<(String, String)>) {
        let agent = Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            ..Scripted::default()
        });
        let client = PodIdentityClient::with_transport(
            PodIdentityConfig::default(),
            agent.clone(),
            Arc::new(Metrics::default()),
        );
        let result = client
            .credentials(preference, &SecretString::new("pod-token".into()))
            .await;
        let asked = agent.asked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (result, asked)
    }

    #[tokio::test(start_paused = true)]
    async fn the_agents_document_becomes_the_pods_credentials() {
        let (result, asked) = ask(vec![ok()], AddressPreference::Auto).await;
        let c = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.access_key_id, "ASIAAGENT");
        assert_eq!(
            (c.secret_access_key.expose(), c.session_token.expose()),
            ("agent-secret", "agent-session")
        );
        assert!(c.expiration.is_some());
        assert_eq!(
            asked,
            vec![(DEFAULT_IPV4_ENDPOINT.to_string(), "pod-token".to_string())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn auto_tries_ipv6_when_ipv4_cannot_be_reached_and_strict_modes_do_not() {
        let unreachable = || Err(TransportError::Unreachable("cannot connect: refused".into()));
        let (result, asked) = ask(vec![unreachable(), ok()], AddressPreference::Auto).await;
        assert!(result.is_ok());
        let urls: Vec<_> = asked.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(urls, [DEFAULT_IPV4_ENDPOINT, DEFAULT_IPV6_ENDPOINT]);

        let (result, asked) = ask(
            vec![unreachable(), unreachable(), unreachable(), ok()],
            AddressPreference::Ipv4,
        )
        .await;
        assert!(matches!(
            result,
            Err(IdentityError::PodIdentity {
                failure: Failure::Unavailable,
                ..
            })
        ));
        assert!(asked.iter().all(|(u, _)| u == DEFAULT_IPV4_ENDPOINT), "{asked:?}");
        assert_eq!(asked.len(), ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_classified_by_status_and_only_retryable_ones_are_asked_again() {
        for (code, failure, requests) in [
            (401, Failure::AccessDenied, 1),
            (403, Failure::AccessDenied, 1),
            (404, Failure::NotFound, 1),
            (400, Failure::Rejected, 1),
            (429, Failure::Throttled, ATTEMPTS as usize),
            (500, Failure::Unavailable, ATTEMPTS as usize),
        ] {
            let answers = (0..ATTEMPTS).map(|_| status(code)).collect();
            let (result, asked) = ask(answers, AddressPreference::Ipv4).await;
            match result {
                Err(IdentityError::PodIdentity {
                    failure: f, message, ..
                }) => {
                    assert_eq!(f, failure, "HTTP {code}");
                    assert_eq!(message, format!("HTTP {code} Refused: by the agent"));
                }
                other => panic!("HTTP {code}: {other:?}"),
            }
            assert_eq!(asked.len(), requests, "HTTP {code}");
        }
        let html = (0..ATTEMPTS)
            .map(|_| Ok((StatusCode::OK, Bytes::from_static(b"<html>"))))
            .collect();
        let (result, _) = ask(html, AddressPreference::Ipv4).await;
        assert!(
            matches!(&result, Err(IdentityError::PodIdentity { message, .. }) if message == "the response is not a credentials document"),
            "{result:?}"
        );
    }
}
