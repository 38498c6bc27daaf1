//! The `csi-provider-aws mount` debug client: it builds the driver's
//! attributes from a SecretProviderClass manifest, mounts through a running
//! provider, and reports what happened. And the server's start: a
//! configuration it refuses, and one it starts with a warning.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;

async fn run_mount(socket: &Path, spc: &Path, target: &Path, extra: &[String]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("mount")
        .arg(format!("--spc={}", spc.display()))
        .arg(format!("--target={}", target.display()))
        .arg(format!("--socket={}", socket.display()))
        .args(extra)
        .output()
        .await
        .expect("run")
}

fn spc(dir: &Path, provider: &str, objects: &str) -> std::path::PathBuf {
    let p = dir.join("spc.yaml");
    let indented: String = objects.lines().map(|l| format!("      {l}\n")).collect();
    std::fs::write(
        &p,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: cli\n  namespace: default\n\
             spec:\n  provider: {provider}\n  parameters:\n    region: {REGION}\n    objects: |\n{indented}"
        ),
    )
    .expect("write spc");
    p
}

#[tokio::test]
async fn provider_writes_mode_is_reported_and_versions_printed() {
    let env = Env::start().await;
    let v = env.aws.put_secret_string(REGION, "cli-secret", "cli-value");
    let dir = tempfile::tempdir().unwrap();
    let spc = spc(
        dir.path(),
        "aws",
        "- objectName: cli-secret\n  objectType: secretsmanager\n",
    );
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN_A}\n")).unwrap();
    let target = dir.path().join("mnt");
    let out = run_mount(
        &env.provider.socket,
        &spc,
        &target,
        &[
            "--pod-name=pod-a".into(),
            "--service-account=sa-a".into(),
            format!("--token=sts.amazonaws.com={}", token.display()),
            "--show-contents".into(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("the provider wrote the files into"), "{stdout}");
    assert!(stdout.contains(&format!("cli-secret\t{v}")), "{stdout}");
    assert!(stdout.contains("--- cli-secret ---\ncli-value"), "{stdout}");
    assert_eq!(read_mount(&target)["cli-secret"], b"cli-value");
    let sts = env.aws.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(sts[0].token.as_deref(), Some(TOKEN_A), "the token file is sent trimmed");
}

#[tokio::test]
async fn a_class_for_another_provider_is_refused_before_any_call() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spc = spc(dir.path(), "azure", "- objectName: x\n  objectType: secretsmanager\n");
    let out = run_mount(&env.provider.socket, &spc, &dir.path().join("mnt"), &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a SecretProviderClass for provider aws: spec.provider is not aws"),
        "{stderr}"
    );
    assert!(env.aws.calls().is_empty() && env.kube.calls().is_empty());
}

#[tokio::test]
async fn a_provider_error_is_printed_with_its_code() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spc = spc(dir.path(), "aws", "- objectName: x\n  objectType: ssm\n");
    let out = run_mount(&env.provider.socket, &spc, &dir.path().join("mnt"), &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CSI token error: serviceAccount.tokens not provided"),
        "without --token the driver's token map is absent: {stderr}"
    );
    let token = dir.path().join("t");
    std::fs::write(&token, TOKEN_A).unwrap();
    let out = run_mount(
        &env.provider.socket,
        &spc,
        &dir.path().join("mnt"),
        &[format!("--token=sts.amazonaws.com={}", token.display())],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("Invalid objectType: ssm"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spc = spc(dir.path(), "aws", "- objectName: x\n  objectType: secretsmanager\n");
    let out = run_mount(&dir.path().join("nope.sock"), &spc, &dir.path().join("mnt"), &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the provider at"));
}

#[tokio::test]
async fn probe_succeeds_while_the_socket_serves_and_fails_without_it() {
    let env = Env::start().await;
    let dir = env.provider.socket.parent().unwrap().to_path_buf();
    let probe = |dir: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
            .arg("probe")
            .arg(format!("--provider-volume={}", dir.display()))
            .arg("--timeout=2s")
            .output()
            .await
            .expect("run probe")
    };
    let out = probe(dir.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&env.provider.socket).unwrap();
    let out = probe(dir).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("not ready: cannot connect to"), "{stderr}");
}

/// `csi-provider-aws` (serve) with `args` and `env`, which must refuse to
/// start: its exit status and standard error.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .args(args)
        .arg(format!("--provider-volume={}", dir.path().display()))
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_invalid_configuration_stops_the_server_before_it_starts_with_the_rule_and_status_2() {
    for (args, env, message) in [
        (
            &["--qps=0"][..],
            &[][..],
            "invalid value '0' for '--qps <QPS>': invalid rate \"0\": a positive number of queries per second",
        ),
        (
            &["serve", "--max-concurrent-mounts=0"],
            &[],
            "invalid value '0' for '--max-concurrent-mounts <MAX_CONCURRENT_MOUNTS>': invalid count \"0\": a whole number of at least 1",
        ),
        (
            &["-http-addr=8989"],
            &[],
            "invalid address \"8989\": a host and port such as 0.0.0.0:8989",
        ),
        (
            &["--memory-budget=8MiB", "--memory-floor-per-mount=9MiB"],
            &[],
            "error: --memory-floor-per-mount (9.0 MiB) must fit in --memory-budget (8.0 MiB)",
        ),
        (&[], &[("RUST_LOG", "info,[")], "error: invalid RUST_LOG \"info,[\""),
    ] {
        let (status, stderr) = refused(args, env);
        assert_eq!(status, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?} {env:?}: {stderr}");
        assert!(!stderr.contains("starting"), "nothing started: {stderr}");
    }
}

#[tokio::test]
async fn deadlines_that_do_not_fit_each_other_are_warned_about_at_start() {
    let env = Env::start_with(|mut o| {
        o.args.push("--mount-timeout=20s".into());
        o
    })
    .await;
    let logs = env.provider.logs();
    assert!(
        logs.contains("--aws-operation-timeout (15s) does not fit twice in --mount-timeout (20s)"),
        "{logs}"
    );
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("warned");
    env.provider
        .mount(&Req::new("- objectName: s\n  objectType: secretsmanager\n", &target))
        .await
        .expect("it serves");
}
