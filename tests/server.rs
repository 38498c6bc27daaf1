//! The server's lifecycle over a real Unix socket: Version, socket mode,
//! stale-socket removal, and SIGTERM (socket removed, in-flight mount
//! drained).

use crate::common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use common::*;
use csi_provider_aws::proto::v1alpha1::VersionRequest;

#[tokio::test]
async fn version_reports_v1alpha1_with_our_name_and_version() {
    let env = Env::start().await;
    let v = env
        .provider
        .client()
        .await
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("version")
        .into_inner();
    assert_eq!(v.version, "v1alpha1");
    assert_eq!(v.runtime_name, "csi-provider-aws");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn socket_is_owner_only_and_named_aws_sock() {
    let env = Env::start().await;
    let meta = std::fs::symlink_metadata(&env.provider.socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(env.provider.socket.ends_with("aws.sock"));
    // Nothing else (no private bind directory) is left beside the socket.
    let dir = env.provider.socket.parent().expect("dir");
    assert_eq!(all_entries(dir), vec!["aws.sock".to_string()]);
}

#[tokio::test]
async fn a_stale_socket_is_replaced_at_start() {
    let aws = FakeAws::start().await;
    let kube = FakeKube::start().await;
    let first = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        ..Options::default()
    })
    .await;
    let sock_dir = first.socket.parent().expect("dir").to_path_buf();
    // Simulate a crash: SIGKILL leaves the socket file behind.
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(first.pid().to_string())
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(first.socket.exists(), "a killed provider leaves its socket");
    let second = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        args: vec![],
        ..Options::default()
    })
    .await;
    // The second provider uses its own directory; start a third on the
    // first one's directory to prove a stale socket does not block startup.
    drop(second);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", aws.endpoint())
        .env("KUBECONFIG", &kube.kubeconfig)
        .arg(format!("--provider-volume={}", sock_dir.display()))
        .arg("--http-addr=127.0.0.1:0")
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(mut c) = csi_provider_aws::client::connect(&first.socket).await
            && c.version(VersionRequest::default()).await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "a provider must start over a stale socket and serve on it");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_removes_the_socket_and_drains_an_in_flight_mount() {
    let mut env = Env::start().await;
    env.aws.put_secret_string(REGION, "slow", "value-after-delay");
    env.aws.set_delay(Duration::from_millis(1500));
    let target = env.provider.target("drain");
    let req = Req::new("- objectName: slow\n  objectType: secretsmanager\n", &target);
    let mut client = env.provider.client().await;
    let inflight = tokio::spawn(async move { client.mount(req.build()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let socket = env.provider.socket.clone();
    let status = tokio::task::block_in_place(|| env.provider.stop("TERM"));
    assert!(status.success(), "provider exit status {status}");
    assert!(!socket.exists(), "socket must be removed on SIGTERM");
    let resp = inflight.await.expect("join").expect("in-flight mount must complete");
    assert_eq!(versions(&resp.into_inner()).len(), 1);
    assert_eq!(
        read_mount(&target).get("slow").map(Vec::as_slice),
        Some(&b"value-after-delay"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_cleanly_and_removes_the_socket() {
    let mut env = Env::start().await;
    let socket = env.provider.socket.clone();
    assert!(socket.exists());
    let status = tokio::task::block_in_place(|| env.provider.stop("INT"));
    assert!(status.success(), "provider exit status {status}");
    assert!(!socket.exists(), "socket must be removed on SIGINT");
    assert!(env.provider.logs().contains("received SIGINT"));
}

#[tokio::test]
async fn mounts_beyond_the_concurrency_limit_wait_then_fail_with_resource_exhausted() {
    let env = Env::start_with(|mut o| {
        o.args
            .extend(["--max-concurrent-mounts=1".into(), "--mount-timeout=1s".into()]);
        o
    })
    .await;
    env.aws.put_secret_string(REGION, "s", "v");
    // The first mount holds the only slot while AWS is slow; the second
    // waits half its budget for the slot, then gives up.
    env.aws.set_delay(std::time::Duration::from_secs(3));
    let slow = Req::new(
        "- objectName: s\n  objectType: secretsmanager\n",
        &env.provider.target("a"),
    );
    let (first, second) = tokio::join!(env.provider.mount(&slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        env.provider
            .mount(&Req::new(
                "- objectName: s\n  objectType: secretsmanager\n",
                &env.provider.target("b"),
            ))
            .await
    });
    let first = first.expect_err("the slow mount");
    assert_eq!(first.code(), tonic::Code::DeadlineExceeded, "{first:?}");
    assert!(first.message().contains("--mount-timeout"), "{}", first.message());
    let second = second.expect_err("the waiting mount");
    assert_eq!(second.code(), tonic::Code::ResourceExhausted, "{second:?}");
    assert!(
        second
            .message()
            .contains("already serving 1 mounts (--max-concurrent-mounts)"),
        "{}",
        second.message()
    );
    // AWS recovers: the next mount gets the slot and succeeds.
    env.aws.set_delay(std::time::Duration::ZERO);
    let target = env.provider.target("c");
    env.provider
        .mount(&Req::new("- objectName: s\n  objectType: secretsmanager\n", &target))
        .await
        .expect("mount after recovery");
    assert_eq!(read_mount(&target)["s"], b"v");
}
