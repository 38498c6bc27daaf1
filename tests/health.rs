//! The operations endpoint over real sockets: liveness, readiness that
//! follows the provider socket, metrics that move with real mounts, no
//! secret value or token in metrics or JSON logs, and the endpoint's bounds
//! (header and idle timeouts, the connection cap) against stalling,
//! dribbling and flooding clients.

#![allow(clippy::panic)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const VALUE_CANARY: &str = "METRICS-VALUE-CANARY-91e2";
const TOKEN_CANARY: &str = "eyJ.METRICS-TOKEN-CANARY.sig";

/// GET over plain HTTP/1.1: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn env_with_http(extra: &[&str]) -> (Env, u16) {
    let port = free_port();
    let env = Env::start_with(|mut o| {
        o.args.push(format!("--http-addr=127.0.0.1:{port}"));
        o.args.extend(extra.iter().map(|s| s.to_string()));
        o
    })
    .await;
    (env, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_follow_the_process_and_the_socket() {
    let (env, port) = env_with_http(&[]).await;
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/healthz"))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/readyz")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = tokio::task::spawn_blocking(move || get(port, "/nope")).await.unwrap();
    assert_eq!(status, 404);

    std::fs::remove_file(&env.provider.socket).unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/readyz")).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: cannot connect to"), "{body}");
    let (status, _) = tokio::task::spawn_blocking(move || get(port, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, 200, "the process is still alive");
}

/// Mounts two Secrets Manager secrets while `BatchGetSecretValue` is
/// throttled: the mount succeeds through `GetSecretValue`.
async fn mount_through_a_throttled_batch(env: &Env, volume: &str) {
    env.aws.put_secret_string(REGION, "t1", "v");
    env.aws.put_secret_string(REGION, "t2", "v");
    env.aws.add_rule(common::fake_aws::Rule::op(
        "BatchGetSecretValue",
        common::fake_aws::Effect::throttling(),
    ));
    let objects = "- objectName: t1\n  objectType: secretsmanager\n- objectName: t2\n  objectType: secretsmanager\n";
    env.provider
        .mount(&Req::new(objects, &env.provider.target(volume)))
        .await
        .expect("mount through the fallback");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_batch_shows_as_throttled_calls_and_a_fallback() {
    let (env, port) = env_with_http(&[]).await;
    mount_through_a_throttled_batch(&env, "throttled").await;
    let (_, body) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    let m = |p: &str| metric(&body, p);
    assert_eq!(
        m(r#"csi_provider_aws_batch_fallbacks_total{reason="throttled"}"#),
        1.0,
        "{body}"
    );
    assert!(
        m(
            r#"csi_provider_aws_aws_calls_total{service="secretsmanager",operation="BatchGetSecretValue",outcome="throttled"}"#
        ) >= 1.0,
        "{body}"
    );
    assert_eq!(
        m(r#"csi_provider_aws_aws_calls_total{service="secretsmanager",operation="GetSecretValue",outcome="success"}"#),
        2.0,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_real_mounts() {
    let (env, port) = env_with_http(&[]).await;
    let (_, before) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert!(before.contains(&format!(
        "csi_provider_aws_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    env.aws.put_secret_string(REGION, "m1", "v");
    env.aws.put_secret_string(REGION, "m2", "v");
    env.aws.put_param(REGION, "mp", "String", "v");
    let objects = "- objectName: m1\n  objectType: secretsmanager\n- objectName: m2\n  objectType: secretsmanager\n- objectName: mp\n  objectType: ssmparameter\n";
    let target = env.provider.target("metrics");
    env.provider.mount(&Req::new(objects, &target)).await.expect("mount");
    env.provider.mount(&Req::new(objects, &target)).await.expect("re-mount");
    env.provider
        .mount(&Req::new(
            "- objectName: missing\n  objectType: secretsmanager\n",
            &target,
        ))
        .await
        .expect_err("not found");
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let m = |p: &str| metric(&body, p);
    assert_eq!(
        m(r#"csi_provider_aws_mounts_total{outcome="success",code=""}"#),
        2.0,
        "{body}"
    );
    assert_eq!(
        m(r#"csi_provider_aws_mounts_total{outcome="error",code="ObjectNotFound"}"#),
        1.0,
        "{body}"
    );
    assert_eq!(
        m(
            r#"csi_provider_aws_aws_calls_total{service="secretsmanager",operation="BatchGetSecretValue",outcome="success"}"#
        ),
        2.0
    );
    assert_eq!(
        m(
            r#"csi_provider_aws_aws_calls_total{service="secretsmanager",operation="GetSecretValue",outcome="not_found"}"#
        ),
        1.0
    );
    assert_eq!(
        m(r#"csi_provider_aws_aws_calls_total{service="ssm",operation="GetParameters",outcome="success"}"#),
        2.0
    );
    assert_eq!(
        m(r#"csi_provider_aws_credential_fetches_total{mode="irsa",outcome="success"}"#),
        1.0
    );
    assert_eq!(
        m(r#"csi_provider_aws_cache_lookups_total{cache="credentials",result="hit"}"#),
        2.0
    );
    assert_eq!(
        m(r#"csi_provider_aws_kubernetes_calls_total{resource="serviceaccounts",outcome="success"}"#),
        1.0
    );
    assert_eq!(m("csi_provider_aws_mount_duration_seconds_count"), 3.0);
    assert_eq!(m("csi_provider_aws_mount_objects_sum"), 6.0);
    assert_eq!(m("csi_provider_aws_mounts_in_flight"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_value_or_token_reaches_metrics_or_json_logs() {
    let (env, port) = env_with_http(&["--log-format=json", "--log-level=debug"]).await;
    env.aws.put_secret_string(REGION, "canary", VALUE_CANARY);
    let target = env.provider.target("canary");
    env.provider
        .mount(
            &Req::new("- objectName: canary\n  objectType: secretsmanager\n", &target).pod(
                "pod-a",
                "sa-a",
                TOKEN_CANARY,
            ),
        )
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["canary"], VALUE_CANARY.as_bytes());
    let (_, body) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    let logs = env.provider.logs();
    let json_lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        json_lines
            .iter()
            .any(|l| l["fields"]["message"] == "mount succeeded" && l["span"]["namespace"] == "default"),
        "one JSON event per mount, with the pod's span: {logs}"
    );
    // The audit record is the one line that names the objects read.
    let (audit, others): (Vec<&str>, Vec<&str>) = logs
        .lines()
        .partition(|l| l.contains(r#""target":"csi_provider_aws::audit""#));
    assert_eq!(audit.len(), 1, "{logs}");
    assert!(audit[0].contains(":secret:canary"), "{}", audit[0]);
    let others = others.join("\n");
    for text in [&body, &logs] {
        assert!(!text.contains(VALUE_CANARY), "value leaked: {text}");
        assert!(!text.contains("TOKEN-CANARY"), "token leaked: {text}");
    }
    for text in [&body, &others] {
        assert!(
            !text.contains("canary"),
            "object names are not metric labels or log values but the audit record's: {text}"
        );
    }
}

#[test]
fn an_occupied_http_address_stops_the_provider_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: l, cluster: {server: \"http://127.0.0.1:1\"}}]\nusers: [{name: l, user: {}}]\ncontexts: [{name: l, context: {cluster: l, user: l}}]\ncurrent-context: l\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .arg(format!("--provider-volume={}", dir.path().display()))
        .arg(format!("--http-addr=127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind the --http-addr endpoint"));
    assert!(!dir.path().join("aws.sock").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grafana_dashboard_queries_only_exported_metrics_and_labels() {
    let (env, port) = env_with_http(&["--serve-stale-max-age=1m"]).await;
    // A mount through a throttled batch feeds every panel, the throttling
    // one included; the same mount during a brownout feeds the stale one.
    mount_through_a_throttled_batch(&env, "dash").await;
    env.aws.add_rule(common::fake_aws::Rule::op(
        "GetSecretValue",
        common::fake_aws::Effect::unavailable(),
    ));
    mount_through_a_throttled_batch(&env, "dash-brownout").await;
    // A rotation of the first volume fails (a deleted secret is never
    // served stale): the rotation panel's metrics, and the pod event.
    env.aws.recover();
    env.aws.delete_secret(REGION, "t1");
    let objects = "- objectName: t1\n  objectType: secretsmanager\n- objectName: t2\n  objectType: secretsmanager\n";
    env.provider
        .mount(&Req::new(objects, &env.provider.target("dash")))
        .await
        .expect_err("deleted");
    // The event is written after the mount has answered, and counted once
    // the API server has answered the write: wait for the count.
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = tokio::task::spawn_blocking(move || get(port, "/metrics"))
            .await
            .unwrap()
            .1;
        if metrics.contains("csi_provider_aws_rotation_events_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(env.kube.events().len(), 1);
    assert_eq!(
        metric(
            &metrics,
            r#"csi_provider_aws_rotation_failures_total{code="ObjectNotFound"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"csi_provider_aws_rotation_events_total{result="created"}"#),
        1.0,
        "{metrics}"
    );
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/csi-provider-aws.json").unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10);
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("csi_provider_aws_"))
        {
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                families.contains(&base),
                "{name} (in {expr}) is not exported: {families:?}"
            );
        }
        // Every label the query groups by is one the exporter writes.
        if let Some(by) = expr.split("by (").nth(1).and_then(|r| r.split(')').next()) {
            for label in by.split(',').map(str::trim).filter(|l| *l != "le") {
                assert!(
                    metrics.contains(&format!("{label}=\"")),
                    "label {label} of {expr} is never exported"
                );
            }
        }
    }
}

// === the endpoint's bounds, over raw TCP ===

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request whose headers never end.
const PARTIAL: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n";
/// "Closed by the timeout, not hanging": the loose upper bound on when a
/// connection held by a 1 s timeout is closed.
const CLOSED_BY: Duration = Duration::from_secs(3);

fn request(path: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n").into_bytes()
}

async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (end of stream or reset),
/// for at most `limit`: what was read, and when the connection closed
/// (`None`: still open at the limit).
async fn until_closed(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(start.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response on a keep-alive connection: (status, content-type, body).
/// Fails if the server closes the connection or says nothing for 10 s.
async fn response(s: &mut (impl AsyncRead + Unpin)) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let field = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            };
            let len: usize = field("content-length").expect("content-length").parse().unwrap();
            if raw.len() >= end + 4 + len {
                assert_eq!(raw.len(), end + 4 + len, "one response at a time");
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
                return (status, field("content-type").unwrap_or_default(), body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a full response: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server has closed `s`, without waiting.
fn closed_now(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The provider is running (not exited, not a zombie) and has not panicked.
fn assert_alive(env: &Env) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.provider.pid())).expect("process status");
    let state = status.lines().find(|l| l.starts_with("State:")).unwrap_or_default();
    assert!(!state.contains('Z') && !state.contains('X'), "{state}");
    assert!(!env.provider.logs().contains("panicked"), "{}", env.provider.logs());
}

/// VmHWM (peak resident set) of the provider, in KiB.
fn peak_rss_kib(env: &Env) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.provider.pid())).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_scrapes_and_unknown_paths_answer_on_one_keep_alive_connection() {
    let (_env, port) = env_with_http(&[]).await;
    let mut s = connect(port).await;
    for (path, status, content_type, body) in [
        ("/healthz", 200, "text/plain; charset=utf-8", Some("ok\n")),
        ("/readyz", 200, "text/plain; charset=utf-8", Some("ready\n")),
        ("/metrics", 200, OPENMETRICS, None),
        ("/nope", 404, "text/plain; charset=utf-8", Some("not found\n")),
        ("/healthz", 200, "text/plain; charset=utf-8", Some("ok\n")),
    ] {
        s.write_all(&request(path, false)).await.unwrap();
        let (got_status, got_type, got_body) = response(&mut s).await;
        assert_eq!(
            (got_status, got_type.as_str()),
            (status, content_type),
            "{path}: {got_body}"
        );
        match body {
            Some(b) => assert_eq!(got_body, b, "{path}"),
            None => assert!(
                got_body.contains("# TYPE csi_provider_aws_build_info") && got_body.ends_with("# EOF\n"),
                "{got_body}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_is_closed_at_the_header_timeout() {
    let (env, port) = env_with_http(&["--http-header-timeout=1s", "--http-idle-timeout=60s"]).await;
    // Stalled in the headers, and stalled in the request line.
    let stall = |bytes: &'static [u8]| async move {
        let mut s = connect(port).await;
        s.write_all(bytes).await.unwrap();
        until_closed(&mut s, Duration::from_secs(10)).await
    };
    let (headers, line) = tokio::join!(stall(PARTIAL), stall(b"GET /hea"));
    for (what, (read, closed)) in [("headers", headers), ("request line", line)] {
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 10 s"));
        assert!(
            closed >= Duration::from_millis(900) && closed < CLOSED_BY,
            "{what}: closed after {closed:?}"
        );
        assert!(read.is_empty(), "{what}: {}", String::from_utf8_lossy(&read));
    }
    assert_alive(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed_at_the_header_timeout_not_the_idle_timeout() {
    // Connecting and saying nothing must not hold a connection slot longer
    // than sending half a request does.
    let (env, port) = env_with_http(&["--http-header-timeout=1s", "--http-idle-timeout=60s"]).await;
    let mut s = connect(port).await;
    let (read, closed) = until_closed(&mut s, Duration::from_secs(10)).await;
    let closed = closed.expect("a silent connection is still open after 10 s");
    assert!(
        closed >= Duration::from_millis(900) && closed < CLOSED_BY,
        "closed after {closed:?}"
    );
    assert!(read.is_empty());
    assert_alive(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn dribbling_header_bytes_does_not_extend_the_header_timeout() {
    let (env, port) = env_with_http(&["--http-header-timeout=1s", "--http-idle-timeout=60s"]).await;
    let s = connect(port).await;
    let (mut rd, mut wr) = s.into_split();
    let dribbled = Arc::new(AtomicUsize::new(0));
    let count = dribbled.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await?;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            wr.write_all(b"a").await?;
            count.fetch_add(1, Ordering::SeqCst);
        }
        Ok::<_, std::io::Error>(())
    });
    let (read, closed) = until_closed(&mut rd, Duration::from_secs(10)).await;
    let at_close = dribbled.load(Ordering::SeqCst);
    writer.abort();
    let closed = closed.expect("a dribbling client kept the connection open for 10 s");
    assert!(
        closed >= Duration::from_millis(900) && closed < CLOSED_BY,
        "closed after {closed:?}"
    );
    assert!(at_close >= 2, "the client was dribbling when closed ({at_close} bytes)");
    assert!(read.is_empty(), "{}", String::from_utf8_lossy(&read));
    assert_alive(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_kept() {
    let (env, port) = env_with_http(&["--http-idle-timeout=1s", "--http-header-timeout=5s"]).await;
    let idle = async {
        let mut s = connect(port).await;
        s.write_all(&request("/healthz", false)).await.unwrap();
        assert_eq!(response(&mut s).await.0, 200);
        until_closed(&mut s, Duration::from_secs(10)).await
    };
    // One request every 400 ms for 4 s: four idle timeouts long.
    let busy = async {
        let mut s = connect(port).await;
        for i in 0..10 {
            s.write_all(&request("/healthz", false)).await.unwrap();
            let (status, _, body) = response(&mut s).await;
            assert_eq!((status, body.as_str()), (200, "ok\n"), "request {i}");
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        s.write_all(&request("/readyz", false)).await.unwrap();
        response(&mut s).await.0
    };
    let ((read, closed), last) = tokio::join!(idle, busy);
    let closed = closed.expect("an idle keep-alive connection is still open after 10 s");
    assert!(
        closed >= Duration::from_millis(900) && closed < CLOSED_BY,
        "closed after {closed:?}"
    );
    assert!(read.is_empty(), "{}", String::from_utf8_lossy(&read));
    assert_eq!(last, 200, "the busy connection still serves");
    assert_alive(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_a_new_client_takes_the_slot_of_the_oldest_stalled_one() {
    let (env, port) = env_with_http(&[
        "--http-max-connections=2",
        "--http-header-timeout=30s",
        "--http-idle-timeout=60s",
    ])
    .await;
    let stalled = || async {
        let mut s = connect(port).await;
        s.write_all(PARTIAL).await.unwrap();
        s
    };
    // Two stalled connections hold both slots: a third client is served at
    // once, in place of the oldest of them; the other keeps its slot.
    let mut a = stalled().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = stalled().await;
    let mut c = connect(port).await;
    c.write_all(&request("/healthz", true)).await.unwrap();
    let (read, _) = until_closed(&mut c, Duration::from_secs(1)).await;
    let reply = String::from_utf8_lossy(&read);
    assert!(
        reply.starts_with("HTTP/1.1 200 ") && reply.ends_with("\r\n\r\nok\n"),
        "{reply}"
    );
    let (read, closed) = until_closed(&mut a, Duration::from_secs(1)).await;
    assert!(
        read.is_empty() && closed.is_some(),
        "the oldest stalled connection was shed"
    );
    assert!(!closed_now(&b), "the younger one keeps its slot");

    // The next client takes the slot of the oldest stalled connection
    // left (b), not of the newer one (d), which can still finish its
    // request.
    let mut d = stalled().await;
    let mut e = connect(port).await;
    e.write_all(&request("/healthz", true)).await.unwrap();
    let (read, _) = until_closed(&mut e, Duration::from_secs(1)).await;
    assert!(String::from_utf8_lossy(&read).starts_with("HTTP/1.1 200 "));
    drop(b);
    d.write_all(b"\r\n").await.unwrap();
    let (code, _, body) = response(&mut d).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"), "d finished its request after all");

    // Normal service afterwards, and the process is up.
    for _ in 0..3 {
        let mut s = connect(port).await;
        s.write_all(&request("/healthz", false)).await.unwrap();
        assert_eq!(
            response(&mut s).await,
            (200, "text/plain; charset=utf-8".into(), "ok\n".into())
        );
    }
    assert_alive(&env);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn two_hundred_connections_at_once_neither_crash_it_nor_grow_its_memory() {
    let (env, port) = env_with_http(&["--http-header-timeout=1s"]).await;
    let before = peak_rss_kib(&env);
    // Half ask for /healthz, half stall: all at once, over the default cap
    // of 32. Every request is served, every stalled connection closed.
    let clients: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = connect(port).await;
                if i % 2 == 0 {
                    s.write_all(&request("/healthz", true)).await.unwrap();
                } else {
                    s.write_all(PARTIAL).await.unwrap();
                }
                (i, until_closed(&mut s, Duration::from_secs(60)).await)
            })
        })
        .collect();
    for c in clients {
        let (i, (read, closed)) = c.await.unwrap();
        let reply = String::from_utf8_lossy(&read);
        assert!(closed.is_some(), "client {i} still open after 60 s: {reply}");
        if i % 2 == 0 {
            assert!(
                reply.starts_with("HTTP/1.1 200 ") && reply.ends_with("ok\n"),
                "client {i}: {reply}"
            );
        } else {
            assert!(read.is_empty(), "client {i}: {reply}");
        }
    }
    let mut s = connect(port).await;
    s.write_all(&request("/healthz", false)).await.unwrap();
    assert_eq!(response(&mut s).await.0, 200);
    assert_alive(&env);
    let peak = peak_rss_kib(&env);
    eprintln!("peak RSS {peak} KiB ({before} KiB before the 200 connections)");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB (before the flood: {before} KiB)");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge_is_not_served() {
    // The bounds above count HTTP/1 connections and requests; one HTTP/2
    // connection would carry many concurrent requests past the cap.
    let (env, port) = env_with_http(&[]).await;
    let mut s = connect(port).await;
    // The preface, an empty SETTINGS frame, then HEADERS for GET /healthz.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let block = [&b"\x82\x86\x44\x08/healthz\x41\x09localhost"[..]].concat();
    h2.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    h2.extend_from_slice(b"\x01\x05\x00\x00\x00\x01");
    h2.extend_from_slice(&block);
    s.write_all(&h2).await.unwrap();
    let (read, closed) = until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "still open after 10 s");
    assert!(
        read.is_empty() || read.starts_with(b"HTTP/1.1 "),
        "answered over HTTP/2: {read:?}"
    );
    let mut s = connect(port).await;
    s.write_all(&request("/healthz", false)).await.unwrap();
    assert_eq!(response(&mut s).await.0, 200);
    assert_alive(&env);
}

#[tokio::test]
async fn the_memory_budget_its_use_and_its_refusals_are_on_metrics() {
    let (env, port) = env_with_http(&[
        "--memory-budget=8MiB",
        "--max-request-bytes=2MiB",
        "--driver-writes-secrets",
    ])
    .await;
    env.aws.put_secret_string(REGION, "small", "v");
    let ok = Req::new(
        "- objectName: small\n  objectType: secretsmanager\n",
        &env.provider.target("ok"),
    );
    env.provider.mount(&ok).await.expect("a small mount");
    // A request of 1.5 MiB: its charge (four times its size) is more than
    // the 4 MiB the mounts share above their floors.
    let padded = Req::new(
        "- objectName: small\n  objectType: secretsmanager\n",
        &env.provider.target("padded"),
    )
    .set("padding", &"p".repeat(1536 * 1024));
    let err = env.provider.mount(&padded).await.expect_err("over the budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("memory budget of 8.0 MiB (--memory-budget)")
            && err
                .message()
                .contains("its request needed 6.0 MiB more, more than the 4.0 MiB mounts may share"),
        "{}",
        err.message()
    );
    env.provider.mount(&ok).await.expect("and the next mount");
    let (_, body) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert_eq!(
        metric(&body, "csi_provider_aws_memory_budget_bytes "),
        8.0 * 1024.0 * 1024.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "csi_provider_aws_memory_reserved_bytes "),
        4.0 * 1024.0 * 1024.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, r#"csi_provider_aws_memory_refusals_total{stage="request"}"#),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"csi_provider_aws_mounts_total{outcome="error",code="MemoryExhausted"}"#
        ),
        1.0,
        "{body}"
    );
    // Every stage is exported; once the mounts have answered nothing is held
    // but what the driver has not read yet.
    for stage in ["request", "class", "aws", "values", "files", "response", "kept"] {
        assert!(
            body.contains(&format!("csi_provider_aws_memory_used_bytes{{stage=\"{stage}\"}}")),
            "{stage}: {body}"
        );
    }
    assert_eq!(
        metric(&body, "csi_provider_aws_memory_used_bytes{stage=\"values\"}"),
        0.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "csi_provider_aws_memory_used_bytes{stage=\"request\"}"),
        0.0,
        "{body}"
    );
}
