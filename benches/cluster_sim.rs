//! Cluster-scale simulation: many provider processes (the nodes) share one
//! fake AWS account whose per-API quotas are token buckets shared by every
//! client, as AWS enforces them, while every pod volume is re-mounted on a
//! compressed rotation. Reports, per configuration, the mount success rate,
//! the calls and throttles per API and the latency.
//!
//! Each row also gives what docs/quota-model.md predicts for it: the demand
//! against each quota on the cluster the row stands for, and whether the
//! configuration is under every quota.
//!
//! Run: `cargo bench --bench cluster_sim` (results: docs/benchmarks.md).
//! `SIM_BASELINE_BIN=<path>` adds a row for another build of the provider
//! (e.g. main before the batch fallback); `SIM_ONLY=<text>` runs the rows
//! whose name or kind (`secrets`, `parameters`) contains it. Without
//! `--bench` it only prints this hint.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// Nodes (provider processes) and pod volumes per node.
const NODES: usize = 10;
const VOLUMES: usize = 30;
/// Objects per volume: Secrets Manager secrets without a version field
/// (batchable) or SSM parameters (one `GetParameters`).
const OBJECTS: usize = 3;
/// The driver's republish interval on a real cluster, and the run's
/// compressed one.
const REAL_INTERVAL: Duration = Duration::from_secs(80);
const INTERVAL: Duration = Duration::from_secs(2);
/// How long the rotation runs (8 republish rounds).
const RUN: Duration = Duration::from_secs(16);
/// The real cluster's volumes per node (30 in the quota model).
const REAL_VOLUMES: f64 = 30.0;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Secrets,
    Parameters,
}

/// One row: a configuration on a cluster of `real_nodes`, whose quotas the
/// run scales so that demand against quota is as on that cluster.
struct Scenario {
    name: &'static str,
    kind: Kind,
    real_nodes: f64,
    /// SSM's `GetParameters` quota: 40/s by default, 3,000/s with higher
    /// throughput.
    ssm_quota: f64,
    /// Provider flags (besides `--cache-ttl`).
    args: &'static [&'static str],
    /// The value cache's TTL on the real cluster (`--cache-ttl`), compressed
    /// with the interval.
    cache_ttl: Option<Duration>,
    /// `AWS_RETRY_MODE` (the SDK's `standard` by default).
    retry_mode: &'static str,
    binary: Option<PathBuf>,
    /// Whether a throttled batch falls back to `GetSecretValue` (not in
    /// builds before the fallback).
    fallback: bool,
}

impl Scenario {
    /// The run makes NODES * VOLUMES / INTERVAL remounts a second; the real
    /// cluster real_nodes * 30 / 80 s. Every quota is scaled by their ratio.
    fn scale(&self) -> f64 {
        (NODES * VOLUMES) as f64
            / INTERVAL.as_secs_f64()
            / (self.real_nodes * REAL_VOLUMES / REAL_INTERVAL.as_secs_f64())
    }

    /// AWS's account-wide quotas per region, calls a second.
    fn quotas(&self) -> [(&'static str, f64); 3] {
        [
            ("BatchGetSecretValue", 100.0),
            ("GetSecretValue", 10_000.0),
            ("GetParameters", self.ssm_quota),
        ]
    }

    fn batching(&self) -> bool {
        self.kind == Kind::Secrets && !self.args.contains(&"--batch-get-secret-value=false")
    }

    /// docs/quota-model.md: each API's demand on the real cluster as a share
    /// of its quota, and whether the configuration is under every quota (a
    /// batch over its quota falls back to `GetSecretValue`, which counts).
    fn model(&self) -> (String, bool) {
        // A value is fetched at the first remount after it expired.
        let rounds = self
            .cache_ttl
            .map_or(1.0, |t| (t.as_secs_f64() / REAL_INTERVAL.as_secs_f64()).ceil());
        let remounts = self.real_nodes * REAL_VOLUMES / REAL_INTERVAL.as_secs_f64() / rounds;
        let share = |op: &str, calls: f64| {
            let quota = self.quotas().iter().find(|(o, _)| *o == op).map_or(1.0, |(_, q)| *q);
            100.0 * remounts * calls / quota
        };
        let batches = OBJECTS.div_ceil(20) as f64;
        let params = OBJECTS.div_ceil(10) as f64;
        match self.kind {
            Kind::Secrets if self.batching() => {
                let batch = share("BatchGetSecretValue", batches);
                let single = share("GetSecretValue", OBJECTS as f64);
                if batch <= 100.0 || !self.fallback {
                    (format!("BatchGetSecretValue {batch:.0} %"), batch <= 100.0)
                } else {
                    (
                        format!("BatchGetSecretValue {batch:.0} %, fallback GetSecretValue {single:.0} %"),
                        single <= 100.0,
                    )
                }
            }
            Kind::Secrets => {
                let single = share("GetSecretValue", OBJECTS as f64);
                (format!("GetSecretValue {single:.0} %"), single <= 100.0)
            }
            Kind::Parameters => {
                let p = share("GetParameters", params);
                (format!("GetParameters {p:.0} %"), p <= 100.0)
            }
        }
    }
}

fn role(sa: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{sa}")
}

async fn run(s: &Scenario) {
    let aws = FakeAws::start().await;
    aws.set_delay(Duration::from_millis(10));
    let kube = FakeKube::start().await;
    for i in 0..OBJECTS {
        aws.put_secret_string(REGION, &format!("s{i}"), &format!("value-{i}"));
        aws.put_param(REGION, &format!("/p{i}"), "String", &format!("value-{i}"));
    }
    // Every volume of a node has an identity of its own: the value cache
    // is per identity, so this is the case it helps least.
    for v in 0..VOLUMES {
        kube.add_service_account("default", &format!("sim-{v}"), Some(&role(&format!("sim-{v}"))));
    }
    let mut args: Vec<String> = s.args.iter().map(|a| a.to_string()).collect();
    if let Some(ttl) = s.cache_ttl {
        let compressed = ttl.mul_f64(INTERVAL.as_secs_f64() / REAL_INTERVAL.as_secs_f64());
        args.push(format!("--cache-ttl={}ms", compressed.as_millis()));
    }
    // The Kubernetes limiter is not what this run measures.
    args.extend(["--qps=1000".to_string(), "--burst=1000".to_string()]);
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(
            Provider::start(Options {
                aws_endpoint: aws.endpoint(),
                kubeconfig: Some(kube.kubeconfig.clone()),
                args: args.clone(),
                // The SDK's defaults: three attempts, standard mode.
                env: vec![
                    ("AWS_MAX_ATTEMPTS".into(), "3".into()),
                    ("AWS_RETRY_MODE".into(), s.retry_mode.into()),
                ],
                binary: s.binary.clone(),
                ..Options::default()
            })
            .await,
        );
    }
    let objects: String = (0..OBJECTS)
        .map(|i| match s.kind {
            Kind::Secrets => format!("- objectName: s{i}\n  objectType: secretsmanager\n"),
            Kind::Parameters => format!("- objectName: /p{i}\n  objectType: ssmparameter\n  objectAlias: p{i}\n"),
        })
        .collect();
    // The quotas start with the rotation, every bucket full.
    for (op, per_second) in s.quotas() {
        aws.set_quota(op, REGION, per_second * s.scale());
    }
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for v in 0..VOLUMES {
            let sa = format!("sim-{v}");
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
    let (model, under) = s.model();
    println!(
        "| {} | {:.0} | {model} ({}) | {mounts} | {:.1} % | {} ({throttled_failures} throttling) | {:.0} ms | {:.0} ms | {} | {} | {} |",
        s.name,
        s.real_nodes,
        if under { "under" } else { "over" },
        100.0 * (mounts - failed.len()) as f64 / mounts as f64,
        failed.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        calls("BatchGetSecretValue"),
        calls("GetSecretValue"),
        calls("GetParameters"),
    );
    if under && throttled_failures > 0 {
        println!(
            "\n**the model puts this configuration under every quota, yet {throttled_failures} mounts failed on throttling**\n"
        );
    }
}

const MIN5: Option<Duration> = Some(Duration::from_secs(300));

fn scenarios() -> Vec<Scenario> {
    let row = |name, kind, real_nodes, args| Scenario {
        name,
        kind,
        real_nodes,
        ssm_quota: 40.0,
        args,
        cache_ttl: None,
        retry_mode: "standard",
        binary: None,
        fallback: true,
    };
    let secrets = Kind::Secrets;
    let params = Kind::Parameters;
    let mut rows = vec![
        row("Go call pattern", secrets, 1000.0, GO_PATTERN),
        row("defaults", secrets, 1000.0, &[]),
        Scenario {
            retry_mode: "adaptive",
            ..row("defaults, AWS_RETRY_MODE=adaptive", secrets, 1000.0, &[])
        },
        Scenario {
            cache_ttl: MIN5,
            ..row("--cache-ttl=5m", secrets, 1000.0, &[])
        },
        row("defaults", secrets, 200.0, &[]),
        row("Go call pattern", params, 100.0, GO_PATTERN),
        row("defaults", params, 100.0, &[]),
        row("Go call pattern", params, 1000.0, GO_PATTERN),
        row("defaults", params, 1000.0, &[]),
        Scenario {
            retry_mode: "adaptive",
            ..row("defaults, AWS_RETRY_MODE=adaptive", params, 1000.0, &[])
        },
        Scenario {
            cache_ttl: MIN5,
            ..row("--cache-ttl=5m", params, 1000.0, &[])
        },
        Scenario {
            ssm_quota: 3000.0,
            ..row("defaults, higher throughput", params, 1000.0, &[])
        },
    ];
    if let Some(bin) = std::env::var_os("SIM_BASELINE_BIN").filter(|b| !b.is_empty()) {
        rows.insert(
            1,
            Scenario {
                binary: Some(bin.into()),
                fallback: false,
                ..row("baseline build (SIM_BASELINE_BIN)", secrets, 1000.0, &[])
            },
        );
    }
    // SIM_ONLY=<text>: the rows whose name or kind contains it.
    if let Ok(only) = std::env::var("SIM_ONLY") {
        rows.retain(|s| {
            let kind = if s.kind == Kind::Secrets {
                "secrets"
            } else {
                "parameters"
            };
            s.name.contains(&only) || kind.contains(&only)
        });
    }
    rows
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster_sim: run with `cargo bench --bench cluster_sim`");
        return;
    }
    println!(
        "### {NODES} nodes x {VOLUMES} volumes (an identity each) x {OBJECTS} objects, re-mounted every {} ms for {} s\n",
        INTERVAL.as_millis(),
        RUN.as_secs(),
    );
    println!(
        "| configuration | cluster (nodes) | model: demand / quota | mounts | succeeded | failed | p50 | p99 | BatchGetSecretValue calls / throttled | GetSecretValue calls / throttled | GetParameters calls / throttled |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in scenarios() {
        run(&s).await;
    }
}
