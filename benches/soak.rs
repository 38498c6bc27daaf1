//! Soak: 10,000 mixed mounts against the in-repo fakes, through the release
//! binary's Unix socket, in both write modes at once (two providers):
//! several IRSA identities and Pod Identity pods, Secrets Manager, SSM and
//! JMESPath objects, re-mounts of the same volumes (rotation), and some
//! mounts that fail (a missing secret, a hostile class, AWS 5xx bursts). A
//! value cache with a short TTL runs on one provider so expired plaintext is
//! swept throughout. After a warm-up (the first fifth of the mounts, while
//! allocator arenas and connection pools reach their working size), the
//! resident memory must not drift by 5 % or more, and open file descriptors
//! and live tasks must not grow: pooled connections come and go with load,
//! so the most seen in the second half must not exceed the most seen in the
//! first.
//!
//! `SOAK_MOUNTS=<n>` runs a longer soak. `SOAK_BUILDS=label=path,...`
//! soaks several builds at once (two providers each, mounts taking turns
//! between all of them), e.g. the glibc build and the static release
//! binary.
//!
//! Run: `cargo bench --bench soak` (results: docs/benchmarks.md).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fake_aws::Fault;
use common::*;

const DEFAULT_TOTAL: usize = 10_000;
const CONCURRENCY: usize = 16;
/// Samples taken after the warm-up.
const SAMPLES: usize = 10;
const SERVICE_ACCOUNTS: usize = 6;
const PODS: usize = 60;

struct Node {
    name: String,
    provider: Provider,
    port: u16,
}

fn role(sa: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{sa}")
}

fn objects(kind: usize) -> String {
    match kind {
        // A failing mount: the secret does not exist.
        7 => "- objectName: missing\n  objectType: secretsmanager\n".to_string(),
        // A failing mount: a hostile class, refused before any call.
        8 => "- objectName: s0\n  objectType: secretsmanager\n  x: &a [1]\n  y: *a\n".to_string(),
        // A larger class.
        6 => (0..20)
            .map(|i| {
                let ty = if i % 2 == 0 { "secretsmanager" } else { "ssmparameter" };
                format!("- objectName: s{i}\n  objectType: {ty}\n  objectAlias: a{i}\n")
            })
            .collect(),
        _ => {
            "- objectName: s0\n  objectType: secretsmanager\n  jmesPath:\n    - path: password\n      objectAlias: pw\n\
              - objectName: s1\n  objectType: secretsmanager\n\
              - objectName: s2\n  objectType: ssmparameter\n\
              - objectName: s3\n  objectType: ssmparameter\n"
                .to_string()
        }
    }
}

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or(-1)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    mounts: usize,
    rss_kib: u64,
    fds: usize,
    tasks: i64,
}

async fn sample(node: &Node, mounts: usize) -> Sample {
    let port = node.port;
    let metrics = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    // Let connections of the scrape and of the last mounts settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Sample {
        mounts,
        rss_kib: rss_kib(node.provider.pid()),
        fds: fds(node.provider.pid()),
        tasks: gauge(&metrics, "csi_provider_aws_runtime_tasks"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run with `cargo bench --bench soak`");
        return;
    }
    let aws = FakeAws::start().await;
    let kube = FakeKube::start().await;
    let agent = FakeAgent::start("127.0.0.1:0").await;
    for i in 0..20 {
        aws.put_secret_string(
            REGION,
            &format!("s{i}"),
            &format!("{{\"user\":\"u{i}\",\"password\":\"secret-{i}-{}\"}}", "x".repeat(200)),
        );
        aws.put_param(REGION, &format!("s{i}"), "SecureString", &format!("parameter-{i}"));
    }
    for i in 0..SERVICE_ACCOUNTS {
        kube.add_service_account("default", &format!("sa-{i}"), Some(&role(&format!("sa-{i}"))));
    }
    aws.set_delay(Duration::from_millis(1));

    let mut nodes = Vec::new();
    for (build, (name, extra)) in builds("SOAK_BUILDS").iter().flat_map(|b| {
        [
            ("provider-writes, --cache-ttl=2s", vec!["--cache-ttl=2s"]),
            ("driver-writes", vec!["--driver-writes-secrets"]),
        ]
        .map(|mode| (b, mode))
    }) {
        let port = free_port();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.push(format!("--http-addr=127.0.0.1:{port}"));
        args.push(format!("--pod-identity-endpoint-ipv4={}", agent.url()));
        args.push("--qps=1000".into());
        args.push("--burst=1000".into());
        let provider = Provider::start(Options {
            aws_endpoint: aws.endpoint(),
            kubeconfig: Some(kube.kubeconfig.clone()),
            args,
            env: vec![("RUST_LOG".into(), "error".into())],
            binary: build.binary.clone(),
            ..Options::default()
        })
        .await;
        nodes.push(Node {
            name: build.name(name),
            provider,
            port,
        });
    }

    let total: usize = std::env::var("SOAK_MOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TOTAL);
    let warm_up = total / 5;
    let sample_every = ((total - warm_up) / SAMPLES).max(CONCURRENCY);
    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); nodes.len()];
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut done = 0usize;
    while done < total {
        // A burst of AWS 5xx now and then: some mounts fail, the rest retry.
        if done % 500 == 250 {
            aws.inject(Fault {
                op: "GetParameters",
                region: None,
                status: 503,
                code: "ServiceUnavailable",
                times: 6,
                name: None,
            });
        }
        let batch: Vec<_> = (done..(done + CONCURRENCY).min(total))
            .map(|i| {
                let node = &nodes[i % nodes.len()];
                let kind = (i / nodes.len()) % 10;
                let pod = (i / nodes.len()) % PODS;
                let sa = format!("sa-{}", pod % SERVICE_ACCOUNTS);
                let target = node.provider.tmpfs_target(&format!("pod-{pod}-{kind}"));
                let mut req =
                    Req::new(&objects(kind), &target).pod(&format!("pod-{pod}"), &sa, &format!("token-{pod}"));
                if kind == 9 {
                    req = req.set("usePodIdentity", "true");
                    req.tokens
                        .insert("pods.eks.amazonaws.com".to_string(), format!("pi-token-{pod}"));
                }
                async move { node.provider.mount(&req).await }
            })
            .collect();
        for r in futures::future::join_all(batch).await {
            if r.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        done = (done + CONCURRENCY).min(total);
        if done >= warm_up && ((done - warm_up) % sample_every < CONCURRENCY || done == total) {
            for (n, node) in nodes.iter().enumerate() {
                samples[n].push(sample(node, done).await);
            }
        }
    }
    let elapsed = started.elapsed();

    println!(
        "\n### Soak: {total} mixed mounts ({ok} succeeded, {failed} failed as intended), {:.0} s\n",
        elapsed.as_secs_f64()
    );
    let mut verdicts: Vec<(&str, f64, Sample, Sample)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let s = &samples[n];
        let (first, last) = (s[0], s[s.len() - 1]);
        let max = s.iter().map(|x| x.rss_kib).max().unwrap_or(0);
        let drift = (last.rss_kib as f64 - first.rss_kib as f64) / first.rss_kib as f64 * 100.0;
        println!("{}:\n", node.name);
        println!("| mounts (all providers) | RSS | open fds | live tasks |");
        println!("|---|---|---|---|");
        for x in s {
            println!(
                "| {} | {:.1} MiB | {} | {} |",
                x.mounts,
                x.rss_kib as f64 / 1024.0,
                x.fds,
                x.tasks
            );
        }
        println!(
            "\nRSS after warm-up {:.1} MiB, at the end {:.1} MiB (max {:.1} MiB): drift {drift:+.1} %\n",
            first.rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            max as f64 / 1024.0
        );
        verdicts.push((&node.name, drift, first, last));
    }
    let mut bad = Vec::new();
    for (n, (name, drift, _, _)) in verdicts.into_iter().enumerate() {
        if drift.abs() >= 5.0 {
            bad.push(format!("{name}: RSS drift {drift:+.1} %"));
        }
        let s = &samples[n];
        let (early, late) = s.split_at(s.len() / 2);
        let most = |part: &[Sample], f: fn(&Sample) -> i64| part.iter().map(f).max().unwrap_or(0);
        for (what, f) in [
            ("open fds", (|x: &Sample| x.fds as i64) as fn(&Sample) -> i64),
            ("live tasks", |x: &Sample| x.tasks),
        ] {
            if most(late, f) > most(early, f) {
                bad.push(format!(
                    "{name}: {what} grew: at most {} in the first half, {} in the second",
                    most(early, f),
                    most(late, f)
                ));
            }
        }
    }
    assert!(
        failed > 0 && ok > failed,
        "the mix has both outcomes: {ok} ok, {failed} failed"
    );
    if !bad.is_empty() {
        panic!("soak failed:\n{}", bad.join("\n"));
    }
}
