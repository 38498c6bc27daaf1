//! Mount latency of the provider binary over its Unix socket, as the driver
//! calls it, against moto (the local AWS emulator): 20 objects (10 Secrets
//! Manager secrets, 10 SSM parameters), IRSA through moto's STS, in both
//! write modes, with the pod volume on tmpfs as in a pod; and the same 20
//! objects in another account read through role chaining (`assumeRoleArn`).
//! Then 100 SSM parameters by `parameterPath` versus listed, against the
//! in-repo fake AWS (which counts calls). Also reports the size of the
//! release binary.
//!
//! Run: `scripts/venv && cargo bench --bench mount_latency`
//! (Without `--bench` it only prints this hint.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::moto::{self, unique};
use common::*;

const ROUNDS: usize = 60;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-secrets";

/// 10 secrets and 10 parameters, in the default account or (with `role`) in
/// that role's account.
async fn seed(role: Option<&str>) -> String {
    let (sm, ssm) = match role {
        Some(r) => moto::in_account(r, REGION).await,
        None => (moto::secrets_manager(REGION), moto::ssm(REGION)),
    };
    let mut objects = String::new();
    for i in 0..10 {
        let n = unique(&format!("bench/secret-{i}"));
        sm.create_secret()
            .name(&n)
            .secret_string(format!("{{\"user\":\"u{i}\",\"password\":\"p{i}\"}}"))
            .send()
            .await
            .expect("seed secret");
        objects.push_str(&format!("- objectName: {n}\n  objectType: secretsmanager\n"));
    }
    for i in 0..10 {
        let n = unique(&format!("/bench/param-{i}"));
        ssm.put_parameter()
            .name(&n)
            .value(format!("value-{i}"))
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .expect("seed parameter");
        objects.push_str(&format!("- objectName: {n}\n  objectType: ssmparameter\n"));
    }
    objects
}

async fn run(mode: &str, args: &[&str], objects: &str, params: &[(&str, &str)]) {
    let kube = FakeKube::start().await;
    kube.add_service_account("default", "sa-a", Some(ROLE_A));
    let provider = Provider::start(Options {
        aws_endpoint: moto::endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..Options::default()
    })
    .await;
    let target = provider.tmpfs_target(mode);
    let req = params.iter().fold(Req::new(objects, &target), |r, (k, v)| r.set(k, v));
    let mut client = provider.client().await;

    let start = Instant::now();
    let first = client.mount(req.build()).await.expect("first mount").into_inner();
    let cold = start.elapsed();
    assert_eq!(first.object_version.len(), 20);

    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let r = client.mount(req.build()).await.expect("mount").into_inner();
        samples.push(start.elapsed());
        assert_eq!(r.object_version.len(), 20);
    }
    samples.sort();
    println!(
        "| {mode} | {} | {} | {} | {} |",
        ms(cold),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

/// 100 SSM parameters mounted by `parameterPath` versus listed one by one,
/// against the in-repo fake AWS (10 ms a call, calls counted).
async fn path_versus_list() {
    let aws = FakeAws::start().await;
    aws.set_delay(Duration::from_millis(10));
    let kube = FakeKube::start().await;
    kube.add_service_account("default", "sa-a", Some(ROLE_A));
    let mut listed = String::new();
    for i in 0..100 {
        let name = format!("/bench/bulk/p{i:03}");
        aws.put_param(REGION, &name, "SecureString", &format!("value-{i}"));
        listed.push_str(&format!("- objectName: {name}\n  objectType: ssmparameter\n"));
    }
    let by_path = "- parameterPath: /bench/bulk\n  objectType: ssmparameter\n";
    let provider = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        args: vec!["--qps=1000".into(), "--burst=1000".into()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..Options::default()
    })
    .await;
    let mut client = provider.client().await;
    println!();
    println!("100 SSM parameters, fake AWS at 10 ms a call, {ROUNDS} re-mounts after the first");
    println!();
    println!("| objects | calls per mount | first mount | re-mount p50 | re-mount p99 |");
    println!("|---|---|---|---|---|");
    for (label, objects) in [
        ("100 listed (`objectName` each)", listed.as_str()),
        ("one `parameterPath`", by_path),
    ] {
        let req = Req::new(
            objects,
            &provider.tmpfs_target(if objects == by_path { "path" } else { "list" }),
        );
        let start = Instant::now();
        let first = client.mount(req.build()).await.expect("first mount").into_inner();
        let cold = start.elapsed();
        assert_eq!(first.object_version.len(), 100);
        aws.clear_calls();
        let mut samples = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            client.mount(req.build()).await.expect("mount");
            samples.push(start.elapsed());
        }
        let calls = aws
            .calls()
            .iter()
            .filter(|c| c.op == "GetParameters" || c.op == "GetParametersByPath")
            .count()
            / ROUNDS;
        samples.sort();
        println!(
            "| {label} | {calls} | {} | {} | {} |",
            ms(cold),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
        );
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("mount_latency: run with `cargo bench --bench mount_latency`");
        return;
    }
    let objects = seed(None).await;
    let central = seed(Some(CENTRAL)).await;
    println!(
        "20 objects (10 Secrets Manager + 10 SSM SecureString), IRSA via moto STS, {ROUNDS} re-mounts after the first"
    );
    println!();
    println!("| write mode, flags | first mount | re-mount p50 | re-mount p99 | re-mount max |");
    println!("|---|---|---|---|---|");
    // Every IRSA mount reads the pod's ServiceAccount (through a 30 s cache).
    run("provider writes, default --qps 5 --burst 250", &[], &objects, &[]).await;
    let fast = ["--qps=1000", "--burst=1000"];
    run("provider writes, --qps 1000 --burst 1000", &fast, &objects, &[]).await;
    run(
        "driver writes, --qps 1000 --burst 1000",
        &["--driver-writes-secrets", "--qps=1000", "--burst=1000"],
        &objects,
        &[],
    )
    .await;
    // Role chaining: the objects live in account 111111111111.
    let chain = [("assumeRoleArn", CENTRAL)];
    run(
        "provider writes, --qps 1000 --burst 1000, assumeRoleArn (another account)",
        &fast,
        &central,
        &chain,
    )
    .await;
    run(
        "same, --credential-cache=false (both STS calls on every mount)",
        &["--qps=1000", "--burst=1000", "--credential-cache=false"],
        &central,
        &chain,
    )
    .await;
    path_versus_list().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_csi-provider-aws"));
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!();
    println!(
        "binary {}: {:.1} MiB ({size} bytes)",
        bin.display(),
        size as f64 / (1024.0 * 1024.0)
    );
}
