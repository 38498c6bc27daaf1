//! The operations endpoint over real sockets: liveness, readiness that
//! follows the provider socket, metrics that move with real mounts, and no
//! secret value or token in metrics or JSON logs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

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
    for text in [&body, &logs] {
        assert!(!text.contains(VALUE_CANARY), "value leaked: {text}");
        assert!(!text.contains("TOKEN-CANARY"), "token leaked: {text}");
        assert!(
            !text.contains("canary"),
            "object names are not metric labels or log values here: {text}"
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
    let (env, port) = env_with_http(&[]).await;
    env.aws.put_secret_string(REGION, "d", "v");
    env.provider
        .mount(&Req::new(
            "- objectName: d\n  objectType: secretsmanager\n",
            &env.provider.target("dash"),
        ))
        .await
        .expect("mount");
    let (_, metrics) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
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
