//! The provider honours the standard environment: proxy settings and FIPS
//! endpoints for STS and Secrets Manager alike, a CA bundle, the Kubernetes
//! rate limit; and it tolerates, but never relies on, the driver's
//! `current_object_version`; it reads its node's region once at start
//! (`NODE_NAME`).

use crate::common;

use std::time::Duration;

use common::proxy::RecordingProxy;
use common::*;
use csi_provider_aws::proto::v1alpha1::ObjectVersion;

const SM_OBJECT: &str = "- objectName: s\n  objectType: secretsmanager\n";

#[tokio::test]
async fn sts_and_secrets_manager_use_the_proxy_and_fips_endpoints() {
    let proxy = RecordingProxy::start().await;
    let agent = FakeAgent::start("127.0.0.1:0").await;
    let (proxy_url, agent_url) = (proxy.url.clone(), agent.url());
    // No AWS_ENDPOINT_URL: the SDK resolves the real regional FIPS hosts,
    // and every connection goes through the proxy, which refuses it.
    let env = Env::start_with(|mut o| {
        o.aws_endpoint = String::new();
        o.env.push(("AWS_USE_FIPS_ENDPOINT".into(), "true".into()));
        o.env.push(("HTTPS_PROXY".into(), proxy_url));
        // The cluster's API (the fake, on loopback) is reached directly.
        o.env.push(("NO_PROXY".into(), "127.0.0.1".into()));
        o.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
        o.args.push(format!("--pod-identity-endpoint-ipv4={agent_url}"));
        o
    })
    .await;
    let irsa = env
        .provider
        .mount(&Req::new(SM_OBJECT, &env.provider.target("fips-irsa")))
        .await;
    assert_eq!(irsa.expect_err("the proxy refuses").code(), tonic::Code::Unavailable);
    let pi = env
        .provider
        .mount(&Req::new(SM_OBJECT, &env.provider.target("fips-pi")).set("usePodIdentity", "true"))
        .await;
    assert_eq!(pi.expect_err("the proxy refuses").code(), tonic::Code::Unavailable);
    let hosts = proxy.hosts();
    assert!(
        hosts.contains(&"sts-fips.us-west-2.amazonaws.com:443".to_string()),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&"secretsmanager-fips.us-west-2.amazonaws.com:443".to_string()),
        "{hosts:?}"
    );
    assert_eq!(agent.tokens().len(), 1, "the node-local agent is reached directly");
}

#[tokio::test]
async fn an_unreadable_ca_bundle_stops_the_provider_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .env_clear()
        .env("AWS_CA_BUNDLE", dir.path().join("missing.pem"))
        .arg(format!("--provider-volume={}", dir.path().display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to read the CA bundle") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    assert!(!dir.path().join("aws.sock").exists());
}

#[tokio::test]
async fn a_ca_bundle_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    // Any well-formed PEM certificate; the provider only has to load it.
    let pem = std::fs::read_dir("/etc/ssl/certs")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .expect("a system CA certificate");
    let aws = FakeAws::start().await;
    aws.put_secret_string(REGION, "s", "v");
    let env = Env::start_with(|mut o| {
        o.aws_endpoint = aws.endpoint();
        o.env.push(("AWS_CA_BUNDLE".into(), pem.display().to_string()));
        o
    })
    .await;
    let target = env.provider.target("ca");
    env.provider.mount(&Req::new(SM_OBJECT, &target)).await.expect("mount");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_calls_are_rate_limited_by_qps_and_burst() {
    let env = Env::start_with(|mut o| {
        o.args.push("--qps=10".into());
        o.args.push("--burst=1".into());
        o.args.push("--service-account-cache-ttl=0".into());
        o
    })
    .await;
    env.aws.put_secret_string(REGION, "s", "v");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let req = Req::new(SM_OBJECT, &env.provider.target(&format!("qps-{i}")));
        let mut client = env.provider.client().await;
        tasks.push(tokio::spawn(async move { client.mount(req.build()).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().expect("mount");
    }
    let times = env.kube.call_times();
    assert_eq!(times.len(), 6);
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    // 6 calls at 10 per second with a burst of 1 cannot span less than 5 periods.
    assert!(span >= Duration::from_millis(450), "6 calls within {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_full_of_new_service_accounts_is_not_held_by_the_limiter() {
    // Default flags: a node replacement brings pods of 40 ServiceAccounts at
    // once. The burst covers one read per ServiceAccount; with the Go
    // provider's burst of 10 at 5 per second they would span 6 seconds.
    let env = Env::start().await;
    env.aws.put_secret_string(REGION, "s", "v");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let sa = format!("own-{i}");
        env.kube
            .add_service_account("default", &sa, Some(&format!("arn:aws:iam::123456789012:role/{sa}")));
        let req = Req::new(SM_OBJECT, &env.provider.target(&format!("own-{i}"))).pod(
            &format!("pod-{i}"),
            &sa,
            &format!("token-{i}"),
        );
        let mut client = env.provider.client().await;
        tasks.push(tokio::spawn(async move { client.mount(req.build()).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().expect("mount");
    }
    let times = env.kube.call_times();
    assert_eq!(times.len(), 40, "one read per ServiceAccount");
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(span < Duration::from_secs(3), "40 reads spread over {span:?}");
    // Each read asks for metadata only, from the API server's watch cache.
    for (path, accept) in env.kube.requests() {
        assert!(path.contains("/serviceaccounts/own-"), "{path}");
        assert!(path.contains("resourceVersion=0"), "{path}");
        assert!(accept.contains("as=PartialObjectMetadata"), "{accept}");
    }
}

#[tokio::test]
async fn current_object_version_is_tolerated_and_never_echoed() {
    let env = Env::start().await;
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("cov");
    let mut req = Req::new(SM_OBJECT, &target).build();
    req.current_object_version = vec![
        ObjectVersion {
            id: "removed-object".into(),
            version: "1".into(),
        },
        ObjectVersion {
            id: "s".into(),
            version: "stale".into(),
        },
    ];
    let resp = env
        .provider
        .client()
        .await
        .mount(req)
        .await
        .expect("mount")
        .into_inner();
    let ids: Vec<_> = resp
        .object_version
        .iter()
        .map(|v| (v.id.as_str(), v.version.as_str()))
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].0, "s");
    assert_ne!(ids[0].1, "stale", "the version comes from AWS, not from the request");
    assert_eq!(
        env.aws.calls_of("GetSecretValue").len(),
        1,
        "the value is fetched, not assumed current"
    );
}

#[tokio::test]
async fn the_node_region_is_read_once_at_start() {
    let aws = FakeAws::start().await;
    let kube = FakeKube::start().await;
    kube.add_service_account("default", "sa-a", Some(ROLE_A));
    kube.add_node("this-node", Some("eu-north-1"));
    aws.put_secret_string("eu-north-1", "s", "nordic");
    let provider = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        env: vec![("NODE_NAME".into(), "this-node".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(kube.calls(), vec!["GET /api/v1/nodes/this-node".to_string()]);
    for i in 0..3 {
        let target = provider.target(&format!("node-{i}"));
        provider
            .mount(&Req::new(SM_OBJECT, &target).unset("region"))
            .await
            .expect("mount");
        assert_eq!(read_mount(&target)["s"], b"nordic");
    }
    let calls = kube.calls();
    assert!(
        calls.iter().all(|c| !c.contains("/pods/")),
        "no per-mount pod lookups: {calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.contains("/nodes/")).count(), 1);
}
