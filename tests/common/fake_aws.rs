//! An in-repo fake of the AWS APIs the provider calls, for fault injection
//! and call counting: Secrets Manager `GetSecretValue`, SSM `GetParameters`,
//! ACM `DescribeCertificate` and `ExportCertificate` (awsJson1.1) and STS `AssumeRoleWithWebIdentity` and `AssumeRole` (query protocol). Every
//! call is recorded with the access key that signed it and the region of
//! its SigV4 scope.
//!
//! Faults: [`Fault`] answers matching calls with an AWS error; a [`Rule`]
//! can also reset the connection, hang, or answer late ([`Effect`]), for
//! one operation or all, in one region or all. [`FakeAws::set_quota`]
//! enforces an account-wide rate on an operation (a token bucket shared by
//! every client, answering `ThrottlingException` beyond it, as AWS does).
//! [`FakeAws::recover`] clears every fault and quota at once. Calls that got a fault are marked in the log
//! ([`Call::injected`]), so a test can prove its fault fired.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::http::{Concurrency, Handler, Incoming2, Reply, Server};

pub const ACCOUNT: &str = "123456789012";

#[derive(Debug, Clone)]
pub struct Call {
    pub op: String,
    pub region: Option<String>,
    pub access_key: Option<String>,
    /// SecretId, or the Names of GetParameters, or the RoleArn.
    pub names: Vec<String>,
    pub token: Option<String>,
    pub session: Option<String>,
    /// `AssumeRole`'s `ExternalId` and `DurationSeconds`.
    pub external_id: Option<String>,
    pub duration_seconds: Option<String>,
    pub user_agent: String,
    /// The fault this call got, if any (e.g. "reset", "hang", "503 ServiceUnavailable").
    pub injected: Option<String>,
    /// `ExportCertificate`'s passphrase (decoded).
    pub passphrase: Option<Vec<u8>>,
    /// `AssumeRole`'s `SourceIdentity`, session tags (key, value) and
    /// transitive tag keys.
    pub source_identity: Option<String>,
    pub tags: Vec<(String, String)>,
    pub transitive_tags: Vec<String>,
}

/// An ACM certificate: its PEM, its chain's, its key (PKCS#8 DER) and
/// serial (as ACM shows it: hex bytes separated by colons).
#[derive(Debug, Clone)]
pub struct AcmCertificate {
    pub certificate: String,
    pub chain: String,
    pub key: Vec<u8>,
    pub serial: String,
    /// `Type`: `PRIVATE` exports, `IMPORTED` does not.
    pub kind: &'static str,
}

#[derive(Debug, Clone)]
pub enum SecretValue {
    String(String),
    Binary(Vec<u8>),
    /// A version with neither SecretString nor SecretBinary.
    Neither,
}

#[derive(Debug, Clone)]
struct SecretVersion {
    id: String,
    value: SecretValue,
    stages: Vec<String>,
}

#[derive(Debug, Clone)]
struct ParamVersion {
    version: i64,
    value: String,
    labels: Vec<String>,
    kind: String,
}

/// A failure to inject: matching calls get this status and error code.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: &'static str,
    pub region: Option<String>,
    pub status: u16,
    pub code: &'static str,
    /// How many matching calls fail (then the fault is spent).
    pub times: usize,
    /// Only calls naming this object (SecretId or one of the Names).
    pub name: Option<String>,
}

impl Fault {
    /// A fault that fails every matching call in `region`.
    pub fn persistent(op: &'static str, region: &str, status: u16, code: &'static str) -> Self {
        Self {
            op,
            region: Some(region.to_string()),
            status,
            code,
            times: usize::MAX,
            name: None,
        }
    }
}

/// What a faulted call gets instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An AWS error with this HTTP status and error code (JSON for Secrets
    /// Manager and SSM, XML for STS).
    Error { status: u16, code: String },
    /// No response: the TCP connection is reset.
    Reset,
    /// No response, ever: the request is held until the provider gives up
    /// on it (closes the connection) or the test ends.
    Hang,
    /// The normal answer, this much later.
    Delay(Duration),
}

impl Effect {
    pub fn error(status: u16, code: &str) -> Self {
        Effect::Error {
            status,
            code: code.to_string(),
        }
    }
    /// 400 `ThrottlingException` (STS: `Throttling`).
    pub fn throttling() -> Self {
        Self::error(400, "ThrottlingException")
    }
    /// 429 `TooManyRequestsException`.
    pub fn too_many_requests() -> Self {
        Self::error(429, "TooManyRequestsException")
    }
    /// 500 `InternalServiceError`.
    pub fn internal_error() -> Self {
        Self::error(500, "InternalServiceError")
    }
    /// 503 `ServiceUnavailable`.
    pub fn unavailable() -> Self {
        Self::error(503, "ServiceUnavailable")
    }
    /// 400 `ExpiredTokenException`: the signing credentials expired.
    pub fn expired_token() -> Self {
        Self::error(400, "ExpiredTokenException")
    }
    /// 400 `AccessDeniedException`.
    pub fn access_denied() -> Self {
        Self::error(400, "AccessDeniedException")
    }

    fn label(&self) -> String {
        match self {
            Effect::Error { status, code } => format!("{status} {code}"),
            Effect::Reset => "reset".to_string(),
            Effect::Hang => "hang".to_string(),
            Effect::Delay(d) => format!("delay {d:?}"),
        }
    }
}

/// A fault: calls matching `op`, `region` and `name` get `effect`, `times`
/// times (then the rule is spent). STS calls are unsigned, so their region
/// is unknown: a rule with a region never matches them.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation (`GetSecretValue`, `BatchGetSecretValue`,
    /// `GetParameters`, `AssumeRoleWithWebIdentity`); `None`: every one.
    pub op: Option<String>,
    /// Only calls signed for this region; `None`: any region, STS included.
    pub region: Option<String>,
    /// Only calls naming this object (SecretId, one of the ids or Names).
    pub name: Option<String>,
    pub times: usize,
    pub effect: Effect,
}

impl Rule {
    /// Every call of `op`, until recovered.
    pub fn op(op: &str, effect: Effect) -> Self {
        Self {
            op: Some(op.to_string()),
            region: None,
            name: None,
            times: usize::MAX,
            effect,
        }
    }

    /// Every call of every operation (STS included), until recovered.
    pub fn every_call(effect: Effect) -> Self {
        Self {
            op: None,
            ..Self::op("", effect)
        }
    }

    pub fn in_region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self
    }

    pub fn naming(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, call: &Call) -> bool {
        self.times > 0
            && self.op.as_ref().is_none_or(|op| *op == call.op)
            && self
                .region
                .as_ref()
                .is_none_or(|r| call.region.as_deref() == Some(r.as_str()))
            && self.name.as_ref().is_none_or(|n| call.names.contains(n))
    }
}

#[derive(Default)]
struct State {
    secrets: HashMap<(String, String), Vec<SecretVersion>>,
    /// Tags of secrets, per (region, name).
    tags: HashMap<(String, String), Vec<(String, String)>>,
    params: HashMap<(String, String), Vec<ParamVersion>>,
    /// ACM certificates per (region, ARN).
    certificates: HashMap<(String, String), AcmCertificate>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    rules: Vec<Rule>,
    denied_roles: Vec<String>,
    /// Roles whose trust policy requires an `sts:ExternalId`.
    external_ids: HashMap<String, String>,
    /// Roles whose trust policy does not allow `sts:SetSourceIdentity` or
    /// `sts:TagSession`.
    no_attribution: Vec<String>,
    delay: Duration,
    sts_lifetime: Option<Duration>,
    /// Issue a new access key on every STS call (counts the calls).
    fresh_keys: Option<u64>,
    /// Account-wide quotas: a token bucket per (operation, region), shared
    /// by every client, as AWS enforces them.
    quotas: HashMap<(String, String), Bucket>,
    /// Listings (`GetParametersByPath`, filtered `BatchGetSecretValue`)
    /// answer empty pages that never end.
    endless: Option<Endless>,
}

/// How a listing never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endless {
    /// Every page carries the same `NextToken`.
    SameToken,
    /// Every page carries a new `NextToken`.
    NewTokens,
}

/// A token bucket of `rate` calls per second holding at most `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone)]
pub struct FakeAws {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
    pub concurrency: Arc<Concurrency>,
    server: Server,
}

/// Deterministic credentials for a web identity: tests can tell which
/// (role, token) signed a request.
pub fn access_key_for(role: &str, token: &str) -> String {
    format!("ASIA{:016X}", fnv(&format!("{role}|{token}")))
}

pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn secret_arn(region: &str, name: &str) -> String {
    format!("arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}-AbCdEf")
}

pub fn certificate_arn(region: &str, id: &str) -> String {
    format!("arn:aws:acm:{region}:{ACCOUNT}:certificate/{id}")
}

pub fn param_arn(region: &str, name: &str) -> String {
    let n = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    };
    format!("arn:aws:ssm:{region}:{ACCOUNT}:parameter{n}")
}

impl FakeAws {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let concurrency = Arc::new(Concurrency::default());
        let server = Server::start(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(move |req| handle(&s, req)),
            concurrency.clone(),
        )
        .await;
        Self {
            state,
            addr: server.addr,
            concurrency,
            server,
        }
    }

    /// What answers its requests (for a client in the test's process).
    pub fn handler(&self) -> (Handler, Arc<Concurrency>) {
        self.server.handler()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a secret version that becomes AWSCURRENT (the previous current
    /// becomes AWSPREVIOUS). Returns its VersionId.
    pub fn put_secret(&self, region: &str, name: &str, value: SecretValue) -> String {
        let mut st = self.lock();
        let versions = st.secrets.entry((region.into(), name.into())).or_default();
        for v in versions.iter_mut() {
            v.stages.retain(|s| s != "AWSPREVIOUS");
            if let Some(p) = v.stages.iter().position(|s| s == "AWSCURRENT") {
                v.stages[p] = "AWSPREVIOUS".into();
            }
        }
        let id = format!("{:08x}-0000-4000-8000-{:012x}", fnv(name) as u32, versions.len() + 1);
        versions.push(SecretVersion {
            id: id.clone(),
            value,
            stages: vec!["AWSCURRENT".into()],
        });
        id
    }

    /// Tags secret `name` in `region` with `key` = `value`.
    pub fn tag_secret(&self, region: &str, name: &str, key: &str, value: &str) {
        self.lock()
            .tags
            .entry((region.into(), name.into()))
            .or_default()
            .push((key.into(), value.into()));
    }

    /// Deletes secret `name` (every version) in `region`.
    pub fn delete_secret(&self, region: &str, name: &str) {
        self.lock().secrets.remove(&(region.to_string(), name.to_string()));
    }

    /// Deletes parameter `name` (every version) in `region`.
    pub fn delete_param(&self, region: &str, name: &str) {
        self.lock().params.remove(&(region.to_string(), name.to_string()));
    }

    pub fn put_secret_string(&self, region: &str, name: &str, value: &str) -> String {
        self.put_secret(region, name, SecretValue::String(value.into()))
    }

    /// Adds a stage label to a secret version.
    pub fn label_secret(&self, region: &str, name: &str, version_id: &str, stage: &str) {
        let mut st = self.lock();
        if let Some(vs) = st.secrets.get_mut(&(region.into(), name.into())) {
            for v in vs.iter_mut() {
                v.stages.retain(|s| s != stage);
                if v.id == version_id {
                    v.stages.push(stage.into());
                }
            }
        }
    }

    /// Adds a parameter version; returns its version number.
    pub fn put_param(&self, region: &str, name: &str, kind: &str, value: &str) -> i64 {
        let mut st = self.lock();
        let versions = st.params.entry((region.into(), name.into())).or_default();
        let version = versions.len() as i64 + 1;
        versions.push(ParamVersion {
            version,
            value: value.into(),
            labels: vec![],
            kind: kind.into(),
        });
        version
    }

    pub fn label_param(&self, region: &str, name: &str, version: i64, label: &str) {
        let mut st = self.lock();
        if let Some(vs) = st.params.get_mut(&(region.into(), name.into())) {
            for v in vs.iter_mut() {
                v.labels.retain(|l| l != label);
                if v.version == version {
                    v.labels.push(label.into());
                }
            }
        }
    }

    /// Puts (or replaces: a renewal) certificate `id` in `region`; returns
    /// its ARN.
    pub fn put_certificate(&self, region: &str, id: &str, certificate: AcmCertificate) -> String {
        let arn = certificate_arn(region, id);
        self.lock()
            .certificates
            .insert((region.into(), arn.clone()), certificate);
        arn
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn deny_role(&self, role: &str) {
        self.lock().denied_roles.push(role.into());
    }

    /// `AssumeRole` into `role` with `SourceIdentity` or session tags is
    /// denied (its trust policy allows neither `sts:SetSourceIdentity` nor
    /// `sts:TagSession`).
    pub fn deny_attribution(&self, role: &str) {
        self.lock().no_attribution.push(role.into());
    }

    /// `AssumeRole` into `role` needs `ExternalId` `id` (a trust policy
    /// condition on `sts:ExternalId`).
    pub fn require_external_id(&self, role: &str, id: &str) {
        self.lock().external_ids.insert(role.into(), id.into());
    }

    /// Credentials from STS expire this long after issue (default: 2099).
    pub fn set_sts_lifetime(&self, d: Duration) {
        self.lock().sts_lifetime = Some(d);
    }

    /// Every STS answer carries a new access key, as real STS does (by
    /// default a (role, token) always gets [`access_key_for`] it).
    pub fn issue_fresh_keys(&self) {
        self.lock().fresh_keys = Some(0);
    }

    /// Listings answer empty pages that never end (as AWS, or a proxy in
    /// front of it, could): until [`FakeAws::recover`].
    pub fn endless_pages(&self, how: Endless) {
        self.lock().endless = Some(how);
    }

    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// An account-wide quota on `op` in `region`: `per_second` calls a
    /// second from all clients together (a bucket of as many), beyond which
    /// calls are answered `ThrottlingException` as AWS does. Stays until
    /// [`FakeAws::recover`].
    pub fn set_quota(&self, op: &str, region: &str, per_second: f64) {
        let burst = per_second.max(1.0);
        self.lock().quotas.insert(
            (op.to_string(), region.to_string()),
            Bucket {
                rate: per_second,
                burst,
                tokens: burst,
                last: std::time::Instant::now(),
            },
        );
    }

    /// Adds a fault rule (checked before [`Fault`]s, in the order added).
    pub fn add_rule(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Every Secrets Manager and SSM call signed for `region` gets `effect`
    /// (STS, unsigned, is not affected: see [`FakeAws::sts_outage`]).
    pub fn region_outage(&self, region: &str, effect: Effect) {
        self.add_rule(Rule::every_call(effect).in_region(region));
    }

    /// Every `AssumeRoleWithWebIdentity` call gets `effect`.
    pub fn sts_outage(&self, effect: Effect) {
        self.add_rule(Rule::op("AssumeRoleWithWebIdentity", effect));
    }

    /// AWS is healthy again: every [`Fault`] and [`Rule`] is cleared and the
    /// delay reset. Requests already held by a hang stay unanswered (as
    /// lost requests do): the provider must give up on them itself.
    pub fn recover(&self) {
        let mut st = self.lock();
        st.faults.clear();
        st.rules.clear();
        st.quotas.clear();
        st.endless = None;
        st.delay = Duration::ZERO;
    }

    /// Requests held unanswered by a hang right now.
    pub fn held(&self) -> usize {
        self.concurrency.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Calls of `op` that got an injected fault (of any kind).
    pub fn faulted(&self, op: &str) -> usize {
        self.calls_of(op).iter().filter(|c| c.injected.is_some()).count()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

fn scope(headers: &http::HeaderMap) -> (Option<String>, Option<String>) {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return (None, None);
    };
    let Some(cred) = auth.split("Credential=").nth(1) else {
        return (None, None);
    };
    let cred = cred.split(',').next().unwrap_or_default();
    let parts: Vec<&str> = cred.split('/').collect();
    (
        parts.first().map(|s| s.to_string()),
        parts.get(2).map(|s| s.to_string()),
    )
}

fn aws_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"__type": code, "message": message}))
}

fn handle(state: &Arc<Mutex<State>>, req: Incoming2) -> Reply {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let delay = st.delay;
    let (access_key, region) = scope(&req.headers);
    let user_agent = ["user-agent", "x-amz-user-agent"]
        .iter()
        .filter_map(|h| req.headers.get(*h).and_then(|v| v.to_str().ok()))
        .collect::<Vec<_>>()
        .join(" ");
    let target = req
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut reply = if target.is_empty() {
        sts(&mut st, &req, user_agent, access_key, region)
    } else {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let op = target.split('.').nth(1).unwrap_or_default().to_string();
        let names = match op.as_str() {
            "GetSecretValue" => vec![body["SecretId"].as_str().unwrap_or_default().to_string()],
            "BatchGetSecretValue" => body["SecretIdList"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            "GetParameters" => body["Names"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            // The path, and the page asked for (`page-N` from the second on).
            "GetParametersByPath" => [body["Path"].as_str(), body["NextToken"].as_str()]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            "DescribeCertificate" | "ExportCertificate" => {
                vec![body["CertificateArn"].as_str().unwrap_or_default().to_string()]
            }
            _ => vec![],
        };
        let passphrase = body["Passphrase"]
            .as_str()
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
        // Filtered batches: every filter value, and the page asked for.
        let names = if op == "BatchGetSecretValue" && body.get("Filters").is_some() {
            body["Filters"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|f| f["Values"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_string))
                .chain(body["NextToken"].as_str().map(str::to_string))
                .collect()
        } else {
            names
        };
        st.calls.push(Call {
            op: op.clone(),
            region: region.clone(),
            access_key,
            names,
            token: None,
            session: None,
            external_id: None,
            duration_seconds: None,
            user_agent,
            injected: None,
            passphrase,
            source_identity: None,
            tags: Vec::new(),
            transitive_tags: Vec::new(),
        });
        let region = region.unwrap_or_default();
        let rule = take_rule(&mut st);
        if let Some(Effect::Error { status, code }) = &rule {
            let mut reply = aws_error(*status, code, "injected fault");
            reply.delay = delay;
            return reply;
        }
        if let Some(bucket) = st.quotas.get_mut(&(op.clone(), region.clone()))
            && !bucket.take()
        {
            if let Some(c) = st.calls.last_mut() {
                c.injected = Some("quota: 400 ThrottlingException".to_string());
            }
            let mut reply = aws_error(400, "ThrottlingException", "Rate exceeded");
            reply.delay = delay;
            return reply;
        }
        if let Some(i) = st.faults.iter().position(|f| {
            f.op == op
                && f.times > 0
                && f.region.as_ref().is_none_or(|r| *r == region)
                && f.name
                    .as_ref()
                    .is_none_or(|n| st.calls.last().is_some_and(|c| c.names.contains(n)))
        }) {
            st.faults[i].times -= 1;
            let f = st.faults[i].clone();
            if let Some(c) = st.calls.last_mut() {
                c.injected = Some(format!("{} {}", f.status, f.code));
            }
            return aws_error(f.status, f.code, "injected fault");
        }
        let reply = match op.as_str() {
            "GetSecretValue" => get_secret_value(&st, &region, &body),
            "BatchGetSecretValue" => batch_get_secret_value(&st, &region, &body),
            "GetParameters" => get_parameters(&st, &region, &body),
            "GetParametersByPath" => get_parameters_by_path(&st, &region, &body),
            "DescribeCertificate" => describe_certificate(&st, &region, &body),
            "ExportCertificate" => export_certificate(&st, &region, &body),
            _ => aws_error(400, "UnknownOperationException", "unknown operation"),
        }
        .caller(st.calls.last().and_then(|c| c.access_key.clone()));
        deliver(reply, rule)
    };
    reply.delay += delay;
    reply
}

/// The first rule matching the call just logged, spent once and noted on
/// the call.
fn take_rule(st: &mut State) -> Option<Effect> {
    let call = st.calls.last()?.clone();
    let rule = st.rules.iter_mut().find(|r| r.matches(&call))?;
    rule.times -= 1;
    let effect = rule.effect.clone();
    if let Some(c) = st.calls.last_mut() {
        c.injected = Some(effect.label());
    }
    Some(effect)
}

/// The normal `reply`, delivered as a transport fault says (errors are
/// answered by the caller, in its protocol).
fn deliver(reply: Reply, effect: Option<Effect>) -> Reply {
    match effect {
        Some(Effect::Reset) => Reply::reset(),
        Some(Effect::Hang) => Reply::hang(),
        Some(Effect::Delay(d)) => Reply { delay: d, ..reply },
        Some(Effect::Error { .. }) | None => reply,
    }
}

/// A stored value of `{{caller}}` reads back as the access key that signed
/// the request: tests see which credentials fetched what a pod got.
pub const CALLER: &str = "{{caller}}";

impl Reply {
    fn caller(mut self, access_key: Option<String>) -> Self {
        if let Some(key) = access_key {
            let text = String::from_utf8_lossy(&self.body).replace(CALLER, &key);
            self.body = text.into_bytes();
        }
        self
    }
}

fn certificate<'a>(st: &'a State, region: &str, body: &Value) -> Result<&'a AcmCertificate, Reply> {
    let arn = body["CertificateArn"].as_str().unwrap_or_default();
    st.certificates
        .get(&(region.to_string(), arn.to_string()))
        .ok_or_else(|| {
            aws_error(
                400,
                "ResourceNotFoundException",
                &format!("Could not find certificate {arn}."),
            )
        })
}

fn describe_certificate(st: &State, region: &str, body: &Value) -> Reply {
    match certificate(st, region, body) {
        Err(reply) => reply,
        Ok(c) => Reply::json(
            200,
            json!({"Certificate": {
                "CertificateArn": body["CertificateArn"],
                "Serial": c.serial,
                "Status": "ISSUED",
                "Type": c.kind,
            }}),
        ),
    }
}

/// `ExportCertificate`: the key encrypted with the passphrase the way
/// OpenSSL 1.1's `pkcs8 -topk8 -v2 aes128 -v2prf hmacWithSHA1` does
/// (moto, and ACM, use AES-256 with HMAC-SHA256: both are read).
fn export_certificate(st: &State, region: &str, body: &Value) -> Reply {
    let c = match certificate(st, region, body) {
        Err(reply) => return reply,
        Ok(c) => c,
    };
    if c.kind != "PRIVATE" {
        let arn = body["CertificateArn"].as_str().unwrap_or_default();
        return aws_error(
            400,
            "ValidationException",
            &format!("Certificate ARN: {arn} is not a private certificate"),
        );
    }
    let Some(passphrase) = body["Passphrase"]
        .as_str()
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .filter(|p| p.len() >= 4)
    else {
        return aws_error(400, "ValidationException", "Passphrase: invalid");
    };
    let salt: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let params = pkcs8::pkcs5::pbes2::Parameters {
        kdf: pkcs8::pkcs5::pbes2::Pbkdf2Params {
            salt: pkcs8::pkcs5::pbes2::Salt::new(salt).expect("salt"),
            iteration_count: 2048,
            key_length: None,
            prf: pkcs8::pkcs5::pbes2::Pbkdf2Prf::HmacWithSha1,
        }
        .into(),
        encryption: pkcs8::pkcs5::pbes2::EncryptionScheme::Aes128Cbc { iv },
    };
    let info = pkcs8::PrivateKeyInfoRef::try_from(c.key.as_slice()).expect("a PKCS#8 key");
    let encrypted = info.encrypt_with_params(params, &passphrase).expect("encrypt");
    let key = pem_rfc7468::encode_string(
        "ENCRYPTED PRIVATE KEY",
        pem_rfc7468::LineEnding::LF,
        encrypted.as_bytes(),
    )
    .expect("pem");
    Reply::json(
        200,
        json!({"Certificate": c.certificate, "CertificateChain": c.chain, "PrivateKey": key}),
    )
}

fn get_secret_value(st: &State, region: &str, body: &Value) -> Reply {
    let id = body["SecretId"].as_str().unwrap_or_default();
    let found = st
        .secrets
        .iter()
        .find(|((r, name), _)| r == region && (name == id || secret_arn(region, name) == id));
    let Some(((_, name), versions)) = found else {
        return aws_error(
            400,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        );
    };
    let want_id = body["VersionId"].as_str();
    let want_stage = body["VersionStage"].as_str();
    let version = versions.iter().find(|v| {
        want_id.is_none_or(|id| v.id == id)
            && match (want_id, want_stage) {
                (_, Some(stage)) => v.stages.iter().any(|s| s == stage),
                (Some(_), None) => true,
                (None, None) => v.stages.iter().any(|s| s == "AWSCURRENT"),
            }
    });
    let Some(v) = version else {
        return aws_error(
            400,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret value for the version or staging label.",
        );
    };
    let mut out = json!({
        "ARN": secret_arn(region, name),
        "Name": name,
        "VersionId": v.id,
        "VersionStages": v.stages,
        "CreatedDate": 1.7e9,
    });
    match &v.value {
        SecretValue::String(s) => out["SecretString"] = json!(s),
        SecretValue::Binary(b) => out["SecretBinary"] = json!(base64::engine::general_purpose::STANDARD.encode(b)),
        SecretValue::Neither => {}
    }
    Reply::json(200, out)
}

/// The next token of an endless listing.
fn endless_token(how: Endless, body: &Value) -> String {
    match how {
        Endless::SameToken => "again".to_string(),
        Endless::NewTokens => format!("{}x", body["NextToken"].as_str().unwrap_or("t")),
    }
}

/// The page of `items` a `NextToken` (`page-N`: the offset) and
/// `MaxResults` ask for, and the token of the next page.
fn page<T>(items: Vec<T>, body: &Value, default_max: usize) -> (Vec<T>, Option<String>) {
    let offset: usize = body["NextToken"]
        .as_str()
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let max = body["MaxResults"].as_u64().map_or(default_max, |m| m as usize);
    let total = items.len();
    let next = (offset + max < total).then(|| format!("page-{}", offset + max));
    (items.into_iter().skip(offset).take(max).collect(), next)
}

/// `BatchGetSecretValue` with `Filters`: `name` (prefix), `tag-key` and
/// `tag-value` (prefix of any tag), all filters together, any value of
/// each; in name order, 20 a page by default.
fn batch_by_filters(st: &State, region: &str, body: &Value) -> Reply {
    if let Some(how) = st.endless {
        return Reply::json(
            200,
            json!({"SecretValues": [], "Errors": [], "NextToken": endless_token(how, body)}),
        );
    }
    let filters: Vec<(String, Vec<String>)> = body["Filters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let values = f["Values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            (f["Key"].as_str().unwrap_or_default().to_string(), values)
        })
        .collect();
    let mut names: Vec<&String> = st
        .secrets
        .keys()
        .filter(|(r, _)| r == region)
        .map(|(_, n)| n)
        .filter(|name| {
            let tags = st.tags.get(&(region.to_string(), name.to_string()));
            filters.iter().all(|(key, values)| {
                values.iter().any(|v| match key.as_str() {
                    "name" => name.starts_with(v.as_str()),
                    "tag-key" => tags.is_some_and(|t| t.iter().any(|(k, _)| k.starts_with(v.as_str()))),
                    "tag-value" => tags.is_some_and(|t| t.iter().any(|(_, tv)| tv.starts_with(v.as_str()))),
                    _ => false,
                })
            })
        })
        .collect();
    names.sort();
    let (names, next) = page(names, body, 20);
    let values: Vec<Value> = names
        .into_iter()
        .map(|n| {
            let reply = get_secret_value(st, region, &json!({"SecretId": n}));
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
        })
        .collect();
    let mut out = json!({"SecretValues": values, "Errors": []});
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Reply::json(200, out)
}

/// `GetParametersByPath`: the latest version of each parameter under the
/// path (one level, or all with `Recursive`), in name order, 10 a page.
fn get_parameters_by_path(st: &State, region: &str, body: &Value) -> Reply {
    if let Some(how) = st.endless {
        return Reply::json(200, json!({"Parameters": [], "NextToken": endless_token(how, body)}));
    }
    let path = body["Path"].as_str().unwrap_or_default();
    let recursive = body["Recursive"].as_bool().unwrap_or(false);
    let base = format!("{}/", path.trim_end_matches('/'));
    let mut found: Vec<(&String, &ParamVersion)> = st
        .params
        .iter()
        .filter(|((r, name), _)| {
            r == region
                && name
                    .strip_prefix(base.as_str())
                    .is_some_and(|rest| !rest.is_empty() && (recursive || !rest.contains('/')))
        })
        .filter_map(|((_, name), versions)| versions.last().map(|v| (name, v)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    let (found, next) = page(found, body, 10);
    let params: Vec<Value> = found
        .into_iter()
        .map(|(name, v)| {
            json!({"Name": name, "Type": v.kind, "Value": v.value, "Version": v.version, "ARN": param_arn(region, name)})
        })
        .collect();
    let mut out = json!({"Parameters": params});
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Reply::json(200, out)
}

fn batch_get_secret_value(st: &State, region: &str, body: &Value) -> Reply {
    if body.get("Filters").is_some() {
        return batch_by_filters(st, region, body);
    }
    let ids: Vec<String> = body["SecretIdList"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if ids.len() > 20 {
        return aws_error(400, "InvalidParameterException", "SecretIdList holds more than 20 ids");
    }
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        let reply = get_secret_value(st, region, &json!({"SecretId": id}));
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.status == 200 {
            values.push(v);
        } else {
            errors.push(json!({"SecretId": id, "ErrorCode": v["__type"], "Message": v["message"]}));
        }
    }
    Reply::json(200, json!({"SecretValues": values, "Errors": errors}))
}

fn get_parameters(st: &State, region: &str, body: &Value) -> Reply {
    let names: Vec<String> = body["Names"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if names.len() > 10 {
        return aws_error(
            400,
            "ValidationException",
            "1 validation error detected: Member must have length less than or equal to 10",
        );
    }
    let mut params = Vec::new();
    let mut invalid = Vec::new();
    for requested in &names {
        // Split an optional :selector off the name (ARNs contain colons).
        let (base, selector) = match requested.rsplit_once(':') {
            Some((b, s)) if !requested.starts_with("arn:") || b.matches(':').count() >= 5 => {
                (b.to_string(), Some(s.to_string()))
            }
            _ => (requested.clone(), None),
        };
        let found = st
            .params
            .iter()
            .find(|((r, name), _)| r == region && (*name == base || param_arn(region, name) == base));
        let hit = found.and_then(|((_, name), versions)| {
            let v = match &selector {
                None => versions.last(),
                Some(s) => match s.parse::<i64>() {
                    Ok(n) => versions.iter().find(|v| v.version == n),
                    Err(_) => versions.iter().find(|v| v.labels.contains(s)),
                },
            }?;
            Some((name.clone(), v.clone()))
        });
        match hit {
            Some((name, v)) => {
                let mut p = json!({
                    "Name": name,
                    "Type": v.kind,
                    "Value": v.value,
                    "Version": v.version,
                    "ARN": param_arn(region, &name),
                    "DataType": "text",
                });
                if let Some(s) = &selector {
                    p["Selector"] = json!(format!(":{s}"));
                }
                params.push(p);
            }
            None => invalid.push(requested.clone()),
        }
    }
    Reply::json(200, json!({"Parameters": params, "InvalidParameters": invalid}))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

fn url_decode_pairs(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 2;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sts(
    st: &mut State,
    req: &Incoming2,
    user_agent: String,
    access_key: Option<String>,
    region: Option<String>,
) -> Reply {
    let f = form(&req.body);
    let action = f.get("Action").cloned().unwrap_or_default();
    let role = f.get("RoleArn").cloned().unwrap_or_default();
    let token = f.get("WebIdentityToken").cloned().unwrap_or_default();
    st.calls.push(Call {
        op: action.clone(),
        region,
        access_key: access_key.clone(),
        names: vec![role.clone()],
        token: Some(token.clone()),
        session: f.get("RoleSessionName").cloned(),
        external_id: f.get("ExternalId").cloned(),
        duration_seconds: f.get("DurationSeconds").cloned(),
        user_agent,
        injected: None,
        passphrase: None,
        source_identity: f.get("SourceIdentity").cloned(),
        tags: (1..)
            .map_while(|i| {
                let key = f.get(&format!("Tags.member.{i}.Key"))?;
                Some((
                    key.clone(),
                    f.get(&format!("Tags.member.{i}.Value")).cloned().unwrap_or_default(),
                ))
            })
            .collect(),
        transitive_tags: (1..)
            .map_while(|i| f.get(&format!("TransitiveTagKeys.member.{i}")).cloned())
            .collect(),
    });
    let rule = take_rule(st);
    if let Some(Effect::Error { status, code }) = &rule {
        let code: &str = if code == "ThrottlingException" {
            "Throttling"
        } else {
            code
        };
        return sts_error(*status, code, "injected fault");
    }
    if let Some(i) = st.faults.iter().position(|x| x.op == action && x.times > 0) {
        st.faults[i].times -= 1;
        let fault = st.faults[i].clone();
        if let Some(c) = st.calls.last_mut() {
            c.injected = Some(format!("{} {}", fault.status, fault.code));
        }
        return sts_error(fault.status, fault.code, "injected fault");
    }
    let answer = match action.as_str() {
        "AssumeRoleWithWebIdentity" => sts_answer(st, &action, &role, &token),
        "AssumeRole" => {
            let Some(source) = access_key else {
                return sts_error(
                    403,
                    "MissingAuthenticationToken",
                    "Request is missing Authentication Token",
                );
            };
            let required = st.external_ids.get(&role);
            if required.is_some() && required != f.get("ExternalId") {
                return sts_error(
                    403,
                    "AccessDenied",
                    &format!("User: {source} is not authorized to perform: sts:AssumeRole on resource: {role}"),
                );
            }
            let attributed = f.contains_key("SourceIdentity") || f.contains_key("Tags.member.1.Key");
            if attributed && st.no_attribution.contains(&role) {
                let action = if f.contains_key("SourceIdentity") {
                    "sts:SetSourceIdentity"
                } else {
                    "sts:TagSession"
                };
                return sts_error(
                    403,
                    "AccessDenied",
                    &format!("User: {source} is not authorized to perform: {action} on resource: {role}"),
                );
            }
            // The chained key tells tests which source signed for which role.
            sts_answer(st, &action, &role, &format!("via:{source}"))
        }
        _ => return sts_error(400, "InvalidAction", "unsupported action"),
    };
    deliver(answer, rule)
}

fn sts_answer(st: &mut State, action: &str, role: &str, token: &str) -> Reply {
    if st.denied_roles.iter().any(|r| r == role) {
        return sts_error(
            403,
            "AccessDenied",
            &format!("Not authorized to perform sts:{action} on resource: {role}"),
        );
    }
    let akid = match st.fresh_keys.as_mut() {
        Some(serial) => {
            *serial += 1;
            format!("ASIA{:012X}{:04X}", fnv(&format!("{role}|{token}")) >> 16, *serial)
        }
        None => access_key_for(role, token),
    };
    let expiration = match st.sts_lifetime {
        Some(d) => humantime::format_rfc3339_seconds(std::time::SystemTime::now() + d).to_string(),
        None => "2099-01-01T00:00:00Z".to_string(),
    };
    let subject = if action == "AssumeRoleWithWebIdentity" {
        "<SubjectFromWebIdentityToken>system:serviceaccount:test</SubjectFromWebIdentityToken>"
    } else {
        ""
    };
    Reply::xml(
        200,
        format!(
            r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <Credentials>
      <AccessKeyId>{akid}</AccessKeyId>
      <SecretAccessKey>secret-{akid}</SecretAccessKey>
      <SessionToken>session-{akid}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    {subject}
    <AssumedRoleUser><Arn>{role}/session</Arn><AssumedRoleId>AROA:session</AssumedRoleId></AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</{action}Response>"#
        ),
    )
}

/// The access key `AssumeRole` into `role` returns to credentials
/// `source_key` (chained credentials of one source and role).
pub fn chained_key_for(role: &str, source_key: &str) -> String {
    access_key_for(role, &format!("via:{source_key}"))
}

fn sts_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>0</RequestId></ErrorResponse>"
        ),
    )
}
