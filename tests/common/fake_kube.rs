//! A fake Kubernetes API serving ServiceAccounts, Pods and Nodes over HTTP,
//! with a kubeconfig pointing at it and a log of the calls made. Faults:
//! 403 per resource ([`FakeKube::forbid`]), an outage answering every
//! request with one status ([`FakeKube::fail_with`]), slow answers
//! ([`FakeKube::set_delay`]) and requests never answered
//! ([`FakeKube::hang`]); [`FakeKube::recover`] clears them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http::{Concurrency, Handler, Incoming2, Reply, Server};

#[derive(Default)]
struct State {
    service_accounts: HashMap<(String, String), Option<String>>,
    pods: HashMap<(String, String), String>,
    nodes: HashMap<String, Option<String>>,
    forbidden: Vec<String>,
    calls: Vec<String>,
    /// Each request's path with its query, and its `Accept` header.
    requests: Vec<(String, String)>,
    times: Vec<std::time::Instant>,
    outage: Option<u16>,
    delay: std::time::Duration,
    hang: bool,
    faulted: usize,
    /// Events created (events.k8s.io/v1), as stored after patches.
    events: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    _dir: Arc<tempfile::TempDir>,
    server: Server,
}

impl FakeKube {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = Server::start(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(move |req| handle(&s, req)),
            Arc::new(Concurrency::default()),
        )
        .await;
        let addr = server.addr;
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\n"
            ),
        )
        .expect("write kubeconfig");
        Self {
            state,
            addr,
            kubeconfig,
            _dir: Arc::new(dir),
            server,
        }
    }

    /// What answers its requests (for a client in the test's process).
    pub fn handler(&self) -> Handler {
        self.server.handler().0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ServiceAccount, with an IRSA role annotation or without one.
    pub fn add_service_account(&self, namespace: &str, name: &str, role: Option<&str>) {
        self.lock()
            .service_accounts
            .insert((namespace.into(), name.into()), role.map(str::to_string));
    }

    pub fn add_pod(&self, namespace: &str, name: &str, node: &str) {
        self.lock().pods.insert((namespace.into(), name.into()), node.into());
    }

    pub fn add_node(&self, name: &str, region: Option<&str>) {
        self.lock().nodes.insert(name.into(), region.map(str::to_string));
    }

    /// Answer 403 for paths containing this resource (e.g. "serviceaccounts").
    pub fn forbid(&self, resource: &str) {
        self.lock().forbidden.push(resource.into());
    }

    /// Every request is answered with `code` (e.g. 503) until recovered.
    pub fn fail_with(&self, code: u16) {
        self.lock().outage = Some(code);
    }

    /// Every answer comes this much later, until recovered.
    pub fn set_delay(&self, d: std::time::Duration) {
        self.lock().delay = d;
    }

    /// Every request is held unanswered, until recovered (requests already
    /// held stay so until the client gives up on them).
    pub fn hang(&self) {
        self.lock().hang = true;
    }

    /// The API server is healthy again: no outage, delay, hang or 403.
    pub fn recover(&self) {
        let mut st = self.lock();
        st.outage = None;
        st.delay = std::time::Duration::ZERO;
        st.hang = false;
        st.forbidden.clear();
    }

    /// Reads that got a fault (403, outage, delay or hang); event writes are
    /// not counted.
    pub fn faulted(&self) -> usize {
        self.lock().faulted
    }

    /// When each call arrived.
    pub fn call_times(&self) -> Vec<std::time::Instant> {
        self.lock().times.clone()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The events created, with their patches applied.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Each request's path with its query, and its `Accept` header.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.lock().requests.clone()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply::json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn handle(state: &Arc<Mutex<State>>, req: Incoming2) -> Reply {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = req.path.split('?').next().unwrap_or_default().to_string();
    st.calls.push(format!("{} {}", req.method, path));
    let accept = req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    st.requests.push((req.path.clone(), accept.clone()));
    st.times.push(std::time::Instant::now());
    let forbidden = st.forbidden.iter().any(|r| path.contains(r.as_str()));
    // Event writes are the provider's own reports, made after a mount has
    // answered: counting them would race with the mount under test.
    let reads = !path.starts_with("/apis/events.k8s.io/");
    if reads && (forbidden || st.outage.is_some() || st.hang || !st.delay.is_zero()) {
        st.faulted += 1;
    }
    if st.hang {
        return Reply::hang();
    }
    // `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
    // asks for the object's metadata only, as the API server serves it.
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let mut reply = if path.starts_with("/apis/events.k8s.io/") && !forbidden && st.outage.is_none() {
        events(&mut st, &req.method, &path, &req.body)
    } else {
        answer(&st, &path, forbidden, metadata_only)
    };
    reply.delay = st.delay;
    reply
}

/// Creates (POST) and merge-patches (PATCH) events.
fn events(st: &mut State, method: &str, path: &str, body: &[u8]) -> Reply {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    match (method, parts.as_slice()) {
        ("POST", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
            let mut event = body;
            event["metadata"]["namespace"] = json!(ns);
            event["apiVersion"] = json!("events.k8s.io/v1");
            event["kind"] = json!("Event");
            st.events.push(event.clone());
            Reply::json(201, event)
        }
        ("PATCH", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name]) => {
            let found = st
                .events
                .iter_mut()
                .find(|e| e["metadata"]["name"] == *name && e["metadata"]["namespace"] == *ns);
            match found {
                Some(event) => {
                    if let (Some(target), Some(patch)) = (event.as_object_mut(), body.as_object()) {
                        for (k, v) in patch {
                            target.insert(k.clone(), v.clone());
                        }
                    }
                    Reply::json(200, event.clone())
                }
                None => status(404, "NotFound", &format!("events.events.k8s.io \"{name}\" not found")),
            }
        }
        _ => status(405, "MethodNotAllowed", "unsupported"),
    }
}

fn answer(st: &State, path: &str, forbidden: bool, metadata_only: bool) -> Reply {
    if let Some(code) = st.outage {
        let reason = match code {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return status(code, reason, "injected outage");
    }
    if forbidden {
        return status(
            403,
            "Forbidden",
            "forbidden: User \"system:serviceaccount:kube-system:csi-provider-aws\" cannot get resource",
        );
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "serviceaccounts", name] => {
            match st.service_accounts.get(&(ns.to_string(), name.to_string())) {
                Some(role) => {
                    let annotations: Value = match role {
                        Some(r) => json!({"eks.amazonaws.com/role-arn": r}),
                        None => json!({}),
                    };
                    let metadata = json!({"name": name, "namespace": ns, "annotations": annotations});
                    if metadata_only {
                        Reply::json(
                            200,
                            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata}),
                        )
                    } else {
                        Reply::json(
                            200,
                            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata,
                                   "secrets": [{"name": format!("{name}-token")}]}),
                        )
                    }
                }
                None => status(404, "NotFound", &format!("serviceaccounts \"{name}\" not found")),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name] => match st.pods.get(&(ns.to_string(), name.to_string())) {
            Some(node) => Reply::json(
                200,
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                       "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]}}),
            ),
            None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ["api", "v1", "nodes", name] => match st.nodes.get(*name) {
            Some(region) => {
                let labels: Value = match region {
                    Some(r) => json!({"topology.kubernetes.io/region": r}),
                    None => json!({}),
                };
                Reply::json(
                    200,
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}),
                )
            }
            None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
        },
        _ => status(404, "NotFound", "no such path"),
    }
}
