//! Runs the provider binary with the args of a DaemonSet's container as the
//! kubelet would (`$(VAR)` expanded from the container's env, downward API
//! included) and finds out on which addresses its HTTP endpoint answers.

#![allow(dead_code, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

/// The container's environment as the kubelet sets it: literal values, and
/// the downward API fields `spec.nodeName` and `status.podIP`.
pub fn container_env(container: &Value, pod_ip: &str) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .filter_map(|e| {
                    let name = e["name"].as_str()?.to_string();
                    let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                        (Some(v), _) => v.to_string(),
                        (None, Some("status.podIP")) => pod_ip.to_string(),
                        (None, Some("spec.nodeName")) => "node-a".to_string(),
                        _ => return None,
                    };
                    Some((name, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container's args with `$(NAME)` replaced by the value of `NAME` in
/// `env`; references to undefined variables stay as they are (as in
/// Kubernetes).
pub fn expand(container: &Value, env: &[(String, String)]) -> Vec<String> {
    container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| {
            let mut a = a.as_str().expect("string arg").to_string();
            for (k, v) in env {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect()
}

/// The value of `--http-addr` in `args`.
pub fn http_addr(args: &[String]) -> &str {
    args.iter()
        .find_map(|a| a.strip_prefix("--http-addr="))
        .expect("--http-addr")
}

/// The provider binary, killed on drop.
pub struct Running {
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Running {
    /// Starts the binary with `args`, except that the provider volume is a
    /// temporary directory and the port of `--http-addr` is `port`.
    pub fn start(args: &[String], port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters: [{name: l, cluster: {server: \"http://127.0.0.1:1\"}}]\nusers: [{name: l, user: {}}]\ncontexts: [{name: l, context: {cluster: l, user: l}}]\ncurrent-context: l\n",
        )
        .expect("kubeconfig");
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("--provider-volume=") {
                    format!("--provider-volume={}", dir.path().join("providers").display())
                } else if let Some(addr) = a.strip_prefix("--http-addr=") {
                    let (host, _) = addr.rsplit_once(':').expect("host:port");
                    format!("--http-addr={host}:{port}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let log = dir.path().join("provider.log");
        let child = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("AWS_REGION", "us-west-2")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn the provider");
        Self { child, _dir: dir, log }
    }

    /// Waits until `/healthz` answers 200 at `addr`; fails if the process
    /// exits or 20 s pass.
    pub fn wait_healthy(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if healthz(addr) == Some(200) {
                return;
            }
            let logs = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the provider exited with {status}: {logs}");
            }
            assert!(Instant::now() < deadline, "no /healthz at {addr} after 20 s: {logs}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /healthz` at `addr`: the status, or `None` when nothing listens
/// there (the connection is refused).
pub fn healthz(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Whether this host has IPv6 loopback.
pub fn has_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Whether an IPv6 wildcard socket also accepts IPv4 (Linux's default).
pub fn ipv6_sockets_are_dual_stack() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0")
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where an endpoint bound as `--http-addr` host `host` must answer and where
/// it must refuse connections, with `127.0.0.1` (or `::1`) as the pod IP
/// and `127.0.0.2` as another address of the pod.
pub fn expectations(host: &str, port: u16) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let a = |s: &str| -> SocketAddr { format!("{s}:{port}").parse().expect("address") };
    match host {
        "0.0.0.0" => (vec![a("127.0.0.1"), a("127.0.0.2")], vec![]),
        "[::]" if ipv6_sockets_are_dual_stack() => (vec![a("[::1]"), a("127.0.0.1")], vec![]),
        "[::]" => (vec![a("[::1]")], vec![]),
        "127.0.0.1" => (vec![a("127.0.0.1")], vec![a("127.0.0.2")]),
        "[::1]" => (vec![a("[::1]")], vec![a("127.0.0.1")]),
        other => panic!("unexpected --http-addr host {other}"),
    }
}

/// Starts the provider with `container`'s args expanded for `pod_ip` and
/// checks that the endpoint answers exactly where the bind address says.
pub fn assert_binds(container: &Value, pod_ip: &str, expected_host: &str) {
    let env = container_env(container, pod_ip);
    let args = expand(container, &env);
    let addr = http_addr(&args);
    let (host, _) = addr.rsplit_once(':').expect("host:port");
    assert_eq!(host, expected_host, "{args:?}");
    let port = free_port();
    let (answers, refuses) = expectations(host, port);
    let mut p = Running::start(&args, port);
    p.wait_healthy(answers[0]);
    for a in &answers {
        assert_eq!(healthz(*a), Some(200), "--http-addr={addr}: {a}");
    }
    for a in &refuses {
        assert_eq!(healthz(*a), None, "--http-addr={addr} must not listen on {a}");
    }
}
