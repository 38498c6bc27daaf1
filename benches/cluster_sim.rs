//! Cluster-scale simulation: many provider processes (the nodes) share one
//! fake AWS account whose per-API quotas are token buckets shared by every
//! client, as AWS enforces them, while every pod volume is re-mounted on a
//! compressed rotation. Reports, per configuration, the mount success rate,
//! the calls and throttles per API and the latency.
//!
//! Run: `cargo bench --bench cluster_sim` (results: docs/benchmarks.md).
//! `SIM_BASELINE_BIN=<path>` adds a row for another build of the provider
//! (e.g. main before the batch fallback). Without `--bench` it only prints
//! this hint.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// Nodes (provider processes) and pod volumes per node.
const NODES: usize = 10;
const VOLUMES: usize = 30;
/// Secrets Manager secrets per volume (no version field: batchable).
const SECRETS: usize = 3;
/// ServiceAccounts per node (each an identity of its own on that node).
const ACCOUNTS: usize = 5;
/// The driver's republish interval (about 80 s), compressed to this.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long the rotation runs (8 republish rounds).
const RUN: Duration = Duration::from_secs(16);
/// The real cluster the run stands for (`SIM_REAL_NODES`, default 1,000
/// nodes) of 30 volumes re-mounted every 80 s: 1,000 nodes make 375
/// remounts a second. This run makes NODES * VOLUMES / INTERVAL of them, so
/// every quota is scaled by the same factor to keep demand against quota as
/// it is on the real cluster.
fn real_nodes() -> f64 {
    std::env::var("SIM_REAL_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000.0)
}
/// AWS's account-wide quotas per region (calls per second).
const QUOTAS: &[(&str, f64)] = &[("BatchGetSecretValue", 100.0), ("GetSecretValue", 10_000.0)];

fn scale() -> f64 {
    (NODES * VOLUMES) as f64 / INTERVAL.as_secs_f64() / (real_nodes() * 30.0 / 80.0)
}

fn role(sa: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{sa}")
}

async fn run(name: &str, args: &[&str], binary: Option<PathBuf>) {
    let aws = FakeAws::start().await;
    aws.set_delay(Duration::from_millis(10));
    let kube = FakeKube::start().await;
    for i in 0..SECRETS {
        aws.put_secret_string(REGION, &format!("s{i}"), &format!("value-{i}"));
    }
    for a in 0..ACCOUNTS {
        kube.add_service_account("default", &format!("sim-{a}"), Some(&role(&format!("sim-{a}"))));
    }
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string())
            // The Kubernetes limiter is not what this run measures.
            .chain(["--qps=1000".to_string(), "--burst=1000".to_string()])
            .collect();
        nodes.push(
            Provider::start(Options {
                aws_endpoint: aws.endpoint(),
                kubeconfig: Some(kube.kubeconfig.clone()),
                args,
                // The SDK's default: three attempts.
                env: vec![("AWS_MAX_ATTEMPTS".into(), "3".into())],
                binary: binary.clone(),
                ..Options::default()
            })
            .await,
        );
    }
    let objects: String = (0..SECRETS)
        .map(|i| format!("- objectName: s{i}\n  objectType: secretsmanager\n"))
        .collect();
    // The quotas start with the rotation, every bucket full.
    for (op, per_second) in QUOTAS {
        aws.set_quota(op, REGION, per_second * scale());
    }
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for v in 0..VOLUMES {
            let sa = format!("sim-{}", v % ACCOUNTS);
            let pod = format!("node-{n}-pod-{v}");
            let req = Req::new(&objects, &node.tmpfs_target(&pod)).pod(&pod, &sa, &format!("token-{pod}"));
            let mut client = node.client().await;
            // Each volume re-mounts at its own moment of the interval.
            let first = INTERVAL.mul_f64((v * NODES + n) as f64 / (NODES * VOLUMES) as f64);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut at = first;
                while at < RUN {
                    tokio::time::sleep_until(begin + at).await;
                    let started = Instant::now();
                    let result = client.mount(req.build()).await;
                    out.push((result.err().map(|s| s.message().to_string()), started.elapsed()));
                    at += INTERVAL;
                }
                out
            }));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    let mounts = outcomes.len();
    let failed: Vec<&String> = outcomes.iter().filter_map(|(e, _)| e.as_ref()).collect();
    let throttled_failures = failed.iter().filter(|e| e.contains("Throttl")).count();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let calls = |op: &str| {
        let c = aws.calls_of(op);
        let throttled = c.iter().filter(|c| c.injected.is_some()).count();
        format!("{} / {throttled}", c.len())
    };
    println!(
        "| {name} | {mounts} | {:.1} % | {} ({throttled_failures} throttling) | {:.0} ms | {:.0} ms | {} | {} |",
        100.0 * (mounts - failed.len()) as f64 / mounts as f64,
        failed.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        calls("BatchGetSecretValue"),
        calls("GetSecretValue"),
    );
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster_sim: run with `cargo bench --bench cluster_sim`");
        return;
    }
    println!(
        "### {NODES} nodes x {VOLUMES} volumes x {SECRETS} secrets, re-mounted every {} ms for {} s, standing for {} nodes; \
         quotas x {:.2}: BatchGetSecretValue {:.0}/s, GetSecretValue {:.0}/s\n",
        INTERVAL.as_millis(),
        RUN.as_secs(),
        real_nodes(),
        scale(),
        100.0 * scale(),
        10_000.0 * scale()
    );
    println!(
        "| configuration | mounts | succeeded | failed | p50 | p99 | BatchGetSecretValue calls / throttled | GetSecretValue calls / throttled |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    run("Go call pattern", GO_PATTERN, None).await;
    if let Some(bin) = std::env::var_os("SIM_BASELINE_BIN").filter(|b| !b.is_empty()) {
        run("baseline build (SIM_BASELINE_BIN)", &[], Some(bin.into())).await;
    }
    run("csi-provider-aws (defaults)", &[], None).await;
}
