//! A fake EKS Pod Identity Agent: `GET /v1/credentials` with the pod's token
//! in `Authorization`, answering credentials derived from the token. Faults:
//! an error status ([`FakeAgent::fail_with`]), slow answers
//! ([`FakeAgent::set_delay`]), requests never answered
//! ([`FakeAgent::hang`]), and the agent down (connections refused,
//! [`FakeAgent::go_down`]); [`FakeAgent::recover`] clears them all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::fake_aws::fnv;
use super::http::{Concurrency, Handler, Reply, Server};

#[derive(Default)]
struct State {
    tokens: Vec<String>,
    fail_status: Option<u16>,
    delay: std::time::Duration,
    hang: bool,
}

#[derive(Clone)]
pub struct FakeAgent {
    state: Arc<Mutex<State>>,
    server: Server,
    pub addr: SocketAddr,
}

/// The access key the agent hands out for a token.
pub fn agent_key_for(token: &str) -> String {
    format!("ASIAPI{:014X}", fnv(token) >> 8)
}

impl FakeAgent {
    /// Starts on `bind` (e.g. 127.0.0.1:0 or [::1]:0).
    pub async fn start(bind: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = Server::start(
            bind.parse().expect("addr"),
            Arc::new(move |req| {
                let mut st = s.lock().unwrap_or_else(|e| e.into_inner());
                let token = req
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                st.tokens.push(token.clone());
                if st.hang {
                    return Reply::hang();
                }
                let delay = st.delay;
                if let Some(code) = st.fail_status {
                    let mut r = Reply::json(code, json!({"code": "ServerError", "message": "injected"}));
                    r.delay = delay;
                    return r;
                }
                if req.path != "/v1/credentials" || token.is_empty() {
                    return Reply::json(400, json!({"code": "InvalidToken", "message": "missing token"}));
                }
                let key = agent_key_for(&token);
                let mut reply = Reply::json(
                    200,
                    json!({"AccessKeyId": key, "SecretAccessKey": format!("secret-{key}"),
                           "Token": format!("session-{key}"), "AccountId": "123456789012",
                           "Expiration": "2099-01-01T00:00:00Z"}),
                );
                reply.delay = delay;
                reply
            }),
            Arc::new(Concurrency::default()),
        )
        .await;
        let addr = server.addr;
        Self { state, server, addr }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    /// The token of every request that reached the agent.
    pub fn tokens(&self) -> Vec<String> {
        self.lock().tokens.clone()
    }

    pub fn set_delay(&self, d: std::time::Duration) {
        self.lock().delay = d;
    }

    pub fn fail_with(&self, status: u16) {
        self.lock().fail_status = Some(status);
    }

    /// Requests are held unanswered until recovered.
    pub fn hang(&self) {
        self.lock().hang = true;
    }

    /// What answers its requests, whether it is up, and its counts.
    pub fn handler(&self) -> (Handler, bool, Arc<Concurrency>) {
        let (handler, stats) = self.server.handler();
        (handler, self.server.is_listening(), stats)
    }

    /// The agent stops: its port refuses connections, and open ones are
    /// closed.
    pub fn go_down(&self) {
        self.server.stop();
    }

    /// The agent is healthy again: listening (on the same address), with no
    /// error status, delay or hang.
    pub async fn recover(&self) {
        {
            let mut st = self.lock();
            st.fail_status = None;
            st.delay = std::time::Duration::ZERO;
            st.hang = false;
        }
        if !self.server.is_listening() {
            self.server.restart().await;
        }
    }
}
