//! Node-scale benchmark: the release provider binary over its Unix socket,
//! called as the driver calls it, against the in-repo fake AWS (10 ms
//! injected round trip per call, per-operation call counting) and a fake
//! Kubernetes API. Every figure is reported for the provider as built and
//! for the same binary configured to the Go provider's call pattern (no
//! caches, no batching, no single-flight, one call at a time).
//!
//! Run: `cargo bench --bench node_scale` (results: docs/benchmarks.md).
//! Without `--bench` it only prints this hint.
//!
//! `NODE_SCALE_BUILDS=glibc=target/release/csi-provider-aws,musl=target/dist/csi-provider-aws-linux-amd64`
//! measures several builds of the provider in one run, in turn (every
//! latency table, storm and node replacement, each repetition alternating
//! between them), each row labelled with its build; call counts, which do
//! not depend on the build, are measured with the first.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const RTT: Duration = Duration::from_millis(10);
/// The Go provider's client limiter (its defaults), for the storms.
const GO_LIMITER: &[&str] = &["--qps=5", "--burst=10"];
const SERVICE_ACCOUNTS: usize = 10;
const PODS: usize = 110;
/// The rotation hour: a re-mount every 2 minutes for 60 minutes, with 2
/// simulated minutes compressed into this much real time.
const ROUND: Duration = Duration::from_millis(600);
const ROUNDS: usize = 30;
/// Pods of new ServiceAccounts joining the node in the hour, one a minute.
const JOINING: usize = 60;

struct Bench {
    aws: FakeAws,
    kube: FakeKube,
    provider: Provider,
}

fn role(sa: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{sa}")
}

/// Objects named `o{i}`: the first half Secrets Manager, the rest SSM.
fn objects(n: usize) -> String {
    (0..n)
        .map(|i| {
            let ty = if i < n.div_ceil(2) {
                "secretsmanager"
            } else {
                "ssmparameter"
            };
            format!("- objectName: o{i}\n  objectType: {ty}\n")
        })
        .collect()
}

async fn start(build: &Build, args: &[&str]) -> Bench {
    let aws = FakeAws::start().await;
    let kube = FakeKube::start().await;
    for i in 0..40 {
        aws.put_secret_string(
            REGION,
            &format!("o{i}"),
            &format!("{{\"user\":\"u{i}\",\"password\":\"secret-{i}\"}}"),
        );
        aws.put_param(
            REGION,
            &format!("o{i}"),
            "SecureString",
            &format!("parameter-value-{i}"),
        );
    }
    for i in 0..SERVICE_ACCOUNTS {
        kube.add_service_account("default", &format!("sa-{i}"), Some(&role(&format!("sa-{i}"))));
    }
    for i in 0..200 {
        kube.add_service_account("default", &format!("cold-{i}"), Some(&role(&format!("cold-{i}"))));
    }
    // A node replacement: every pod of its own ServiceAccount; and the
    // ServiceAccounts that join a node one a minute.
    for i in 0..PODS {
        kube.add_service_account("default", &format!("own-{i}"), Some(&role(&format!("own-{i}"))));
    }
    for i in 0..JOINING {
        kube.add_service_account("default", &format!("new-{i}"), Some(&role(&format!("new-{i}"))));
    }
    aws.set_delay(RTT);
    let provider = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("RUST_LOG".into(), "warn".into())],
        binary: build.binary.clone(),
        ..Options::default()
    })
    .await;
    Bench { aws, kube, provider }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = after.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // After the command name: state is not numeric, so utime/stime are the
    // 11th and 12th numeric fields (stat fields 14 and 15).
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Default, Clone, Copy)]
struct Calls {
    aws: usize,
    sts: usize,
    kube: usize,
}

fn calls(b: &Bench) -> Calls {
    let all = b.aws.calls();
    let sts = all.iter().filter(|c| c.op == "AssumeRoleWithWebIdentity").count();
    Calls {
        aws: all.len() - sts,
        sts,
        kube: b.kube.calls().len(),
    }
}

fn delta(after: Calls, before: Calls) -> Calls {
    Calls {
        aws: after.aws - before.aws,
        sts: after.sts - before.sts,
        kube: after.kube - before.kube,
    }
}

async fn mount(b: &Bench, n: usize, pod: &str, sa: &str, target: &str) -> Duration {
    let req = Req::new(&objects(n), &b.provider.tmpfs_target(target)).pod(pod, sa, &format!("token-{pod}"));
    let start = Instant::now();
    b.provider.mount(&req).await.expect("mount");
    start.elapsed()
}

async fn latency_and_calls(name: &str, build: &Build, args: &[&str]) {
    // Back-to-back samples would otherwise measure the Kubernetes rate
    // limiter (every cold sample is a new ServiceAccount); the storm below
    // keeps the default limit.
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--qps=1000", "--burst=1000"]);
    let b = start(build, &all).await;
    println!("\n### {name}: mount latency and calls (10 ms per AWS call, --qps 1000)\n");
    println!(
        "| objects | cold p50 | cold p99 | warm p50 | warm p99 | first mount: AWS / STS / K8s | re-mount: AWS / STS / K8s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut cold_id = 0;
    let mut warm_mounts = 0u32;
    let mut warm_cpu = Duration::ZERO;
    for n in [1, 10, 40] {
        let mut cold = Vec::new();
        let mut first = Calls::default();
        for s in 0..20 {
            let sa = format!("cold-{cold_id}");
            cold_id += 1;
            let before = calls(&b);
            cold.push(mount(&b, n, &format!("pod-{sa}"), &sa, &format!("cold-{n}-{s}")).await);
            first = delta(calls(&b), before);
        }
        let pod = format!("warm-{n}");
        mount(&b, n, &pod, "sa-0", &pod).await;
        let before = calls(&b);
        mount(&b, n, &pod, "sa-0", &pod).await;
        let again = delta(calls(&b), before);
        let cpu_before = cpu_time(b.provider.pid());
        let mut warm = Vec::new();
        for _ in 0..50 {
            warm.push(mount(&b, n, &pod, "sa-0", &pod).await);
        }
        warm_cpu += cpu_time(b.provider.pid()) - cpu_before;
        warm_mounts += 50;
        cold.sort();
        warm.sort();
        println!(
            "| {n} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} |",
            ms(pct(&cold, 0.5)),
            ms(pct(&cold, 0.99)),
            ms(pct(&warm, 0.5)),
            ms(pct(&warm, 0.99)),
            first.aws,
            first.sts,
            first.kube,
            again.aws,
            again.sts,
            again.kube
        );
    }
    // The reference figure: a warm re-mount of 10 Secrets Manager objects.
    let sm_only: String = (0..10)
        .map(|i| format!("- objectName: o{i}\n  objectType: secretsmanager\n"))
        .collect();
    let req = Req::new(&sm_only, &b.provider.tmpfs_target("sm-only")).pod("sm-only", "sa-1", "token-sm-only");
    b.provider.mount(&req).await.expect("first");
    let before = calls(&b);
    b.provider.mount(&req).await.expect("warm");
    let c = delta(calls(&b), before);
    println!(
        "\nWarm re-mount of 10 Secrets Manager objects: {} AWS / {} STS / {} Kubernetes calls",
        c.aws, c.sts, c.kube
    );
    println!(
        "\nCPU time per warm mount (average over {warm_mounts} mounts of 1, 10 and 40 objects): {:.2} ms",
        warm_cpu.as_secs_f64() * 1000.0 / f64::from(warm_mounts)
    );
}

/// How the node's pods map to ServiceAccounts.
#[derive(Clone, Copy)]
enum Accounts {
    /// Pod `p` runs as `sa-<p mod 10>`.
    Shared,
    /// Pod `p` runs as `own-<p>` (a ServiceAccount per service).
    OwnEach,
}

/// Pod `p` of the node: its ServiceAccount, its own token and volume, 10
/// objects.
fn node_pod(b: &Bench, p: usize, volume: &str, accounts: Accounts) -> Req {
    let sa = match accounts {
        Accounts::Shared => format!("sa-{}", p % SERVICE_ACCOUNTS),
        Accounts::OwnEach => format!("own-{p}"),
    };
    Req::new(&objects(10), &b.provider.tmpfs_target(&format!("{volume}-{p}"))).pod(
        &format!("pod-{p}"),
        &sa,
        &format!("token-pod-{p}"),
    )
}

async fn storm(name: &str, build: &Build, args: &[&str], accounts: Accounts) {
    let b = start(build, args).await;
    // The Kubernetes API answers in 10 ms too.
    b.kube.set_delay(RTT);
    let idle = status_kib(b.provider.pid(), "VmRSS:");
    let mut tasks = Vec::new();
    for p in 0..PODS {
        let req = node_pod(&b, p, "storm", accounts);
        let mut client = b.provider.client().await;
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = client.mount(req.build()).await;
            (r.is_ok(), start.elapsed())
        }));
    }
    let mut ok = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (success, d) = t.await.unwrap();
        ok += usize::from(success);
        lat.push(d);
    }
    lat.sort();
    let c = calls(&b);
    let peak = status_kib(b.provider.pid(), "VmHWM:");
    println!(
        "| {name} | {ok}/{PODS} | {} | {} | {} | {} / {} / {} | {:.1} MiB | {:.1} MiB |",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        c.aws,
        c.sts,
        c.kube,
        peak as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}

/// `storms` storms of each build, the builds taking turns.
async fn repeated_storms(builds: &[Build], storms: usize, args: &[&str], accounts: Accounts) {
    for _ in 0..storms {
        for build in builds {
            storm(&build.name("csi-provider-aws (defaults)"), build, args, accounts).await;
        }
    }
}

async fn rotation_hour(name: &str, args: &[&str]) {
    let mut all: Vec<&str> = args.to_vec();
    // Call counts do not depend on the Kubernetes rate limit; compressed
    // time would otherwise make it the bottleneck.
    all.extend(["--qps=1000", "--burst=1000"]);
    let b = start(&first_build(), &all).await;
    let mut failures = 0;
    let begin = Instant::now();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for p in 0..PODS {
            let req = node_pod(&b, p, "hour", Accounts::Shared);
            let mut client = b.provider.client().await;
            tasks.push(tokio::spawn(async move { client.mount(req.build()).await.is_ok() }));
        }
        for t in tasks {
            failures += usize::from(!t.await.unwrap());
        }
        let next = ROUND * (round as u32 + 1);
        if let Some(wait) = next.checked_sub(begin.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let all_calls = b.aws.calls();
    let billable = all_calls.iter().filter(|c| c.op != "AssumeRoleWithWebIdentity").count();
    let c = calls(&b);
    println!(
        "| {name} | {} | {billable} | {} | {} | {failures} |",
        ROUNDS * PODS,
        c.sts,
        c.kube
    );
}

/// Kubernetes reads of a node in an hour of rotation, with pods re-mounting
/// every 2 minutes each at its own moment, as the driver's rotation does,
/// and `joining` pods of new ServiceAccounts arriving one a minute. Time is
/// compressed as in the rotation hour, `--service-account-cache-ttl` with it.
async fn kubernetes_hour(name: &str, args: &[&str], accounts: Accounts, joining: usize) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--qps=1000", "--burst=1000"]);
    let b = start(&first_build(), &all).await;
    let hour = ROUND * ROUNDS as u32;
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let pods = (0..PODS).map(|p| (ROUND * p as u32 / PODS as u32, node_pod(&b, p, "kube-hour", accounts)));
    let joiners = (0..joining).map(|j| {
        let sa = format!("new-{j}");
        let req = Req::new(&objects(10), &b.provider.tmpfs_target(&format!("kube-hour-new-{j}"))).pod(
            &format!("new-pod-{j}"),
            &sa,
            &format!("token-new-pod-{j}"),
        );
        (ROUND / 2 * j as u32, req)
    });
    for (first, req) in pods.chain(joiners).collect::<Vec<_>>() {
        let mut client = b.provider.client().await;
        tasks.push(tokio::spawn(async move {
            let (mut mounts, mut failed) = (0, 0);
            let mut at = first;
            while at < hour {
                tokio::time::sleep_until(begin + at).await;
                mounts += 1;
                failed += usize::from(client.mount(req.build()).await.is_err());
                at += ROUND;
            }
            (mounts, failed)
        }));
    }
    let (mut mounts, mut failed) = (0, 0);
    for t in tasks {
        let (m, f) = t.await.unwrap();
        mounts += m;
        failed += f;
    }
    let c = calls(&b);
    println!("| {name} | {mounts} | **{}** | {} | {failed} |", c.kube, c.sts);
}

/// The first build of `NODE_SCALE_BUILDS`: call counts do not depend on it.
fn first_build() -> Build {
    let mut all = builds("NODE_SCALE_BUILDS");
    all.truncate(1);
    all.pop().unwrap_or(Build {
        label: String::new(),
        binary: None,
    })
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("node_scale: run with `cargo bench --bench node_scale`");
        return;
    }
    let ours: &[&str] = &[];
    let builds = builds("NODE_SCALE_BUILDS");
    // NODE_SCALE_ONLY=storm, =latency or =kubernetes runs one part.
    let only = std::env::var("NODE_SCALE_ONLY").unwrap_or_default();
    let only_storm = only == "storm";
    if only == "kubernetes" {
        kubernetes_hours(ours).await;
        return;
    }
    if !only_storm {
        for build in &builds {
            latency_and_calls(&build.name("csi-provider-aws (defaults)"), build, ours).await;
        }
        if only == "latency" {
            return;
        }
        latency_and_calls("Go call pattern", &builds[0], GO_PATTERN).await;
    }

    println!("\n### Mount storm: {PODS} pods ({SERVICE_ACCOUNTS} ServiceAccounts) x 10 objects, all at once\n");
    println!("| configuration | succeeded | p50 | p99 | max | calls AWS / STS / K8s | peak RSS | idle RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    // NODE_SCALE_STORMS repeats the storm (a fresh provider each time) to
    // see its spread; NODE_SCALE_ONLY=storm stops after it. Builds take
    // turns within each repetition.
    let storms = std::env::var("NODE_SCALE_STORMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    repeated_storms(&builds, storms, ours, Accounts::Shared).await;
    let go_storm: Vec<&str> = GO_PATTERN.iter().chain(GO_LIMITER).copied().collect();
    if !only_storm {
        storm("Go call pattern", &builds[0], &go_storm, Accounts::Shared).await;
    }
    println!("\n### Node replacement: {PODS} pods of {PODS} ServiceAccounts x 10 objects, all at once\n");
    println!("| configuration | succeeded | p50 | p99 | max | calls AWS / STS / K8s | peak RSS | idle RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    repeated_storms(&builds, storms, ours, Accounts::OwnEach).await;
    if only_storm {
        return;
    }
    storm("Go call pattern", &builds[0], &go_storm, Accounts::OwnEach).await;

    let ttl = format!("--cache-ttl={}ms", ROUND.as_millis() * 5 / 2);
    println!(
        "\n### Rotation hour: {PODS} pods re-mounted every 2 minutes for an hour ({ROUNDS} rounds, 2 minutes = {} ms)\n",
        ROUND.as_millis()
    );
    println!("| configuration | mounts | billable calls (SM + SSM) | STS | K8s | failed mounts |");
    println!("|---|---|---|---|---|---|");
    rotation_hour("Go call pattern", GO_PATTERN).await;
    rotation_hour("csi-provider-aws, value cache off", ours).await;
    rotation_hour("csi-provider-aws, --cache-ttl 5 min (scaled)", &[&ttl]).await;
    kubernetes_hours(ours).await;
}

async fn kubernetes_hours(ours: &[&str]) {
    // --service-account-cache-ttl's default (30 s), compressed like the hour.
    let sa_ttl = format!("--service-account-cache-ttl={}ms", ROUND.as_millis() / 4);
    let ours_scaled: Vec<&str> = ours.iter().copied().chain([sa_ttl.as_str()]).collect();
    println!(
        "\n### Kubernetes reads of a node in an hour of rotation (each pod every 2 minutes at its own moment; 2 minutes = {} ms)\n",
        ROUND.as_millis()
    );
    println!("| configuration | mounts | Kubernetes reads | STS | failed mounts |");
    println!("|---|---|---|---|---|");
    for (what, accounts, joining) in [
        ("110 pods of 10 ServiceAccounts", Accounts::Shared, 0),
        ("110 pods of 110 ServiceAccounts", Accounts::OwnEach, 0),
        (
            "110 pods of 10, and a new ServiceAccount every minute",
            Accounts::Shared,
            JOINING,
        ),
    ] {
        kubernetes_hour(&format!("Go call pattern: {what}"), GO_PATTERN, accounts, joining).await;
        kubernetes_hour(&format!("csi-provider-aws: {what}"), &ours_scaled, accounts, joining).await;
    }
}
