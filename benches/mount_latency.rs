//! Mount latency of the provider binary over its Unix socket, as the driver
//! calls it, against moto (the local AWS emulator): 20 objects (10 Secrets
//! Manager secrets, 10 SSM parameters), IRSA through moto's STS, in both
//! write modes, with the pod volume on tmpfs as in a pod; and the same 20
//! objects in another account read through role chaining (`assumeRoleArn`).
//! Then 100 SSM parameters by `parameterPath` versus listed, against the
//! in-repo fake AWS (which counts calls). Then an ACM private certificate
//! against moto: the first mount (an export) and republishes (a
//! `DescribeCertificate` each, or an export each with
//! `--acm-export-max-age=0`), with the ACM calls the provider's metrics
//! count. Also reports the size of the release binary.
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

/// The provider binary on moto with `args`, the pod's ServiceAccount
/// (`sa-a`) annotated with role A.
async fn on_moto(args: &[&str]) -> (FakeKube, Provider) {
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
    (kube, provider)
}

type Client =
    csi_provider_aws::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient<tonic::transport::Channel>;

/// The time of one mount of `req`, which must answer `files` versions.
async fn timed_mount(client: &mut Client, req: &Req, files: usize) -> Duration {
    let start = Instant::now();
    let r = client.mount(req.build()).await.expect("mount").into_inner();
    let took = start.elapsed();
    assert_eq!(r.object_version.len(), files);
    took
}

/// [`ROUNDS`] re-mounts of `req`, their times sorted.
async fn remounts(client: &mut Client, req: &Req, files: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        samples.push(timed_mount(client, req, files).await);
    }
    samples.sort();
    samples
}

async fn run(mode: &str, args: &[&str], objects: &str, params: &[(&str, &str)]) {
    let files = 20 + params.iter().filter(|(k, _)| *k == "templates").count() * TEMPLATES;
    let (_kube, provider) = on_moto(args).await;
    let target = provider.tmpfs_target(mode);
    let req = params.iter().fold(Req::new(objects, &target), |r, (k, v)| r.set(k, v));
    let mut client = provider.client().await;
    let cold = timed_mount(&mut client, &req, files).await;
    let samples = remounts(&mut client, &req, files).await;
    println!(
        "| {mode} | {} | {} | {} | {} |",
        ms(cold),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

/// Templates of the templates row: an `.env` of every file of the mount,
/// one reading a key of each secret, and a URL from two files.
const TEMPLATES: usize = 3;

fn templates_param(objects: &str) -> String {
    let files: Vec<String> = objects
        .lines()
        .filter_map(|l| l.strip_prefix("- objectName: "))
        .map(|n| n.replace('/', "_"))
        .collect();
    let secrets: String = files
        .iter()
        .filter(|f| f.contains("secret"))
        .map(|f| format!("{{{{ (files[\"{f}\"] | fromjson).password | shellquote }}}}\n"))
        .collect();
    format!(
        "- fileName: all.env\n  template: |\n    {{% for name, value in files | items %}}\n    {{{{ name | upper }}}}={{{{ value | shellquote }}}}\n    {{% endfor %}}\n\
         - fileName: passwords\n  template: {}\n\
         - fileName: url\n  template: \"postgres://{{{{ files['{}'] | urlencode }}}}@{{{{ files['{}'] }}}}\"\n",
        serde_json::to_string(&secrets).expect("json"),
        files[0],
        files[10],
    )
}

/// Rendering alone, in process: an `.env` of every key of a JSON value of
/// `keys` keys, its time, fuel and bytes.
fn render_env(keys: usize) {
    use csi_provider_aws::limits::{Limit, Limits};
    use csi_provider_aws::secret::SecretBytes;
    use csi_provider_aws::template::{Budget, Files, Template};
    let value: serde_json::Map<String, serde_json::Value> = (0..keys)
        .map(|i| {
            (
                format!("key_{i:04}"),
                serde_json::Value::from(format!("value-{i}-with 'quotes'")),
            )
        })
        .collect();
    let json = serde_json::to_string(&value).expect("json");
    let files = std::sync::Arc::new(Files::new([(
        "app".to_string(),
        SecretBytes::from(json.clone()),
        "v1".to_string(),
    )]));
    let mut template = Template::compile(
        "app.env",
        "{% for k, v in files.app | fromjson | items %}\nexport {{ k | upper }}={{ v | shellquote }}\n{% endfor %}\n",
    )
    .expect("compiles");
    let limits = Limits::default();
    let mut samples = Vec::with_capacity(ROUNDS);
    let mut last = None;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let r = template
            .render(&files, &mut Budget::new(&limits), 1 << 20, Limit::FileBytes, &limits)
            .expect("renders");
        samples.push(start.elapsed());
        last = Some(r);
    }
    samples.sort();
    let r = last.expect("rendered");
    println!(
        "| {keys} keys ({} bytes of JSON) | {} bytes | {} | {} | {} |",
        json.len(),
        r.contents.len(),
        r.fuel,
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
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

/// The ACM calls of `operation` the provider's `/metrics` counted.
fn acm_calls(metrics: &str, operation: &str) -> u64 {
    metric(
        metrics,
        &format!("csi_provider_aws_aws_calls_total{{service=\"acm\",operation=\"{operation}\""),
    )
    .round() as u64
}

/// An ACM private certificate mounted as `tls.crt`, `tls.key` and
/// `ca.crt`: the first mount, then republishes.
async fn certificate() {
    let acm = moto::acm(REGION);
    let arn = acm
        .request_certificate()
        .domain_name(format!("{}.internal.example.com", unique("bench")))
        .certificate_authority_arn(
            "arn:aws:acm-pca:us-west-2:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555",
        )
        .send()
        .await
        .expect("request a private certificate")
        .certificate_arn
        .expect("an ARN");
    let objects = format!("- objectName: {arn}\n");
    println!();
    println!("One ACM private certificate (moto), {ROUNDS} republishes after the first mount");
    println!();
    println!(
        "| flags | first mount | republish p50 | republish p99 | ACM calls, first mount | ACM calls per republish |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, args) in [
        (
            "default (`--acm-export-max-age=1h`)",
            &["--qps=1000", "--burst=1000"][..],
        ),
        (
            "`--acm-export-max-age=0` (export on every mount)",
            &["--qps=1000", "--burst=1000", "--acm-export-max-age=0"][..],
        ),
    ] {
        let (_kube, provider) = on_moto(args).await;
        let req = Req::new(&objects, &provider.tmpfs_target("certificate"));
        let mut client = provider.client().await;
        // tls.crt, tls.key, ca.crt
        let cold = timed_mount(&mut client, &req, 3).await;
        let before = provider.metrics().await;
        let samples = remounts(&mut client, &req, 3).await;
        let after = provider.metrics().await;
        let calls = |m: &str| {
            format!(
                "{} Describe + {} Export",
                acm_calls(m, "DescribeCertificate"),
                acm_calls(m, "ExportCertificate")
            )
        };
        let per = |op: &str| (acm_calls(&after, op) - acm_calls(&before, op)) as f64 / ROUNDS as f64;
        println!(
            "| {label} | {} | {} | {} | {} | {} Describe + {} Export |",
            ms(cold),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
            calls(&before),
            per("DescribeCertificate"),
            per("ExportCertificate"),
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
    // The audit record (one line of 20 entries per mount) is on by default.
    run(
        "same, --audit-log=false",
        &["--qps=1000", "--burst=1000", "--audit-log=false"],
        &objects,
        &[],
    )
    .await;
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
    let templates = templates_param(&objects);
    run(
        "provider writes, --qps 1000 --burst 1000, 3 templates over the 20 files",
        &fast,
        &objects,
        &[("templates", &templates)],
    )
    .await;
    path_versus_list().await;
    certificate().await;
    println!();
    println!(
        "Rendering one template in process (`export KEY='value'` for every key of a JSON secret), {ROUNDS} renders"
    );
    println!();
    println!("| input | output | fuel | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for keys in [10, 100, 1000] {
        render_env(keys);
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_csi-provider-aws"));
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!();
    println!(
        "binary {}: {:.1} MiB ({size} bytes)",
        bin.display(),
        size as f64 / (1024.0 * 1024.0)
    );
}
