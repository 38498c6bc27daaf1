//! RBAC, proven against a real kube-apiserver (built from Debian's sources
//! by `scripts/kube-apiserver`, run on loopback with etcd): a provider
//! running under the shipped ClusterRole's identity resolves IRSA mounts,
//! and one whose role lacks `get serviceaccounts` fails with the provider's
//! clear error; a failed rotation becomes a pod event the API server
//! accepts (create, then a series patch). Every token comes from the real
//! TokenRequest API.

#![allow(clippy::panic)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;

const ADMIN_TOKEN: &str = "rbac-test-admin-token";
const APP_ROLE: &str = "arn:aws:iam::123456789012:role/orders";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kube_apiserver() -> PathBuf {
    let p = std::env::var("CSI_AWS_KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/csi-provider-aws/kube-apiserver")
        });
    assert!(
        p.exists(),
        "{} is missing: run scripts/kube-apiserver (scripts/test does)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig for `token` against the server, trusting its self-signed CA.
fn kubeconfig(dir: &Path, name: &str, port: u16, ca: &Path, token: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
             users:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {name}\n\
             current-context: local\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    path
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn token(client: &Client, namespace: &str, sa: &str, audience: Option<&str>) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// The shipped RBAC objects from deploy/kubernetes/provider.yaml.
fn shipped() -> (ServiceAccount, ClusterRole, ClusterRoleBinding) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/provider.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned().unwrap();
    (
        serde_yaml::from_value(of("ServiceAccount")).unwrap(),
        serde_yaml::from_value(of("ClusterRole")).unwrap(),
        serde_yaml::from_value(of("ClusterRoleBinding")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kube-apiserver and etcd (scripts/kube-apiserver); scripts/test runs it"]
async fn the_shipped_cluster_role_is_enough_and_a_role_without_serviceaccounts_fails_clearly() {
    let apiserver = kube_apiserver();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let _etcd = Killed(
        Command::new("etcd")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (scripts/kube-apiserver installs it)"),
    );
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(d.join("sa.key"))
        .arg("2048"));
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(d.join("sa.key"))
        .arg("-out")
        .arg(d.join("sa.pub")));
    std::fs::write(
        d.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
    )
    .unwrap();
    let certs = d.join("certs");
    let _api = Killed(
        Command::new(&apiserver)
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", certs.display()))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--api-audiences=https://kubernetes.default.svc,sts.amazonaws.com,pods.eks.amazonaws.com")
            .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("apiserver.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Ready when the serving certificate exists and the API answers.
    let ca = certs.join("apiserver.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin = loop {
        if ca.exists() {
            let c = client(&kubeconfig(d, "admin", api_port, &ca, ADMIN_TOKEN)).await;
            if Api::<Namespace>::all(c.clone()).list(&Default::default()).await.is_ok() {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver did not start: {}",
            std::fs::read_to_string(d.join("apiserver.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // The shipped ServiceAccount, ClusterRole and binding. There is no
    // controller manager: namespaces are created here.
    let (provider_sa, role, binding) = shipped();
    let pp = PostParams::default();
    let provider_ns = provider_sa.metadata.namespace.clone().unwrap();
    for ns in [provider_ns.as_str(), "shop"] {
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        match Api::<Namespace>::all(admin.clone()).create(&pp, &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("namespace {ns}: {e}"),
        }
    }
    let provider_name = provider_sa.metadata.name.clone().unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &provider_ns)
        .create(&pp, &provider_sa)
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone()).create(&pp, &role).await.unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .unwrap();

    // A workload ServiceAccount with an IRSA role.
    let app: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orders", "namespace": "shop",
                     "annotations": {"eks.amazonaws.com/role-arn": APP_ROLE}}
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create(&pp, &app)
        .await
        .unwrap();

    // A second identity whose role lacks `get serviceaccounts`.
    let weak_sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "weak-provider", "namespace": provider_ns}}))
            .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &provider_ns)
        .create(&pp, &weak_sa)
        .await
        .unwrap();
    let weak_role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "weak-provider"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &weak_role)
        .await
        .unwrap();
    let weak_binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "weak-provider"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "weak-provider"},
        "subjects": [{"kind": "ServiceAccount", "name": "weak-provider", "namespace": provider_ns}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &weak_binding)
        .await
        .unwrap();

    // Tokens from the TokenRequest API: the providers' own, and the pod's
    // projected token for the IRSA audience.
    let provider_token = token(&admin, &provider_ns, &provider_name, None).await;
    let weak_token = token(&admin, &provider_ns, "weak-provider", None).await;
    let pod_token = token(&admin, "shop", "orders", Some("sts.amazonaws.com")).await;

    let aws = FakeAws::start().await;
    aws.put_secret_string(REGION, "orders-db", "db-password");
    let objects = "- objectName: orders-db\n  objectType: secretsmanager\n";

    let good = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kubeconfig(d, "provider", api_port, &ca, &provider_token)),
        args: vec!["--rotation-event-interval=300ms".into()],
        ..Options::default()
    })
    .await;
    let target = good.target("rbac-ok");
    let req = Req::new(objects, &target)
        .pod("orders-7d9f", "orders", &pod_token)
        .set("csi.storage.k8s.io/pod.namespace", "shop")
        .set("csi.storage.k8s.io/pod.uid", "0d1e6c1a-8a53-4f5e-9f0e-3a3b8c1f2d4e");
    good.mount(&req)
        .await
        .expect("the shipped ClusterRole is enough for IRSA mounts");
    assert_eq!(read_mount(&target)["orders-db"], b"db-password");
    let sts = aws.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(
        sts[0].names,
        vec![APP_ROLE.to_string()],
        "the role comes from the real ServiceAccount"
    );
    assert_eq!(sts[0].token.as_deref(), Some(pod_token.as_str()));

    // A rotation fails: under the shipped ClusterRole the provider records
    // the SecretRotationFailed event (create) and, after the interval, its
    // series (patch); the real API server validates and stores both.
    aws.delete_secret(REGION, "orders-db");
    let err = good.mount(&req).await.expect_err("deleted");
    let events = Api::<Event>::namespaced(admin.clone(), "shop");
    let listed = |want: i32| {
        let events = events.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let list = events.list(&Default::default()).await.unwrap().items;
                let count = list.first().map(|e| e.series.as_ref().map_or(1, |s| s.count));
                if count == Some(want) || Instant::now() > deadline {
                    return list;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let list = listed(1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let e = &list[0];
    assert_eq!(e.reason.as_deref(), Some("SecretRotationFailed"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.note.as_deref(), Some(err.message()));
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Pod"), Some("orders-7d9f"))
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    good.mount(&req).await.expect_err("still deleted");
    let list = listed(2).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].series.as_ref().map(|s| s.count), Some(2), "{:?}", list[0]);
    assert!(!good.logs().contains("could not record"), "{}", good.logs());

    let weak = Provider::start(Options {
        aws_endpoint: aws.endpoint(),
        kubeconfig: Some(kubeconfig(d, "weak", api_port, &ca, &weak_token)),
        ..Options::default()
    })
    .await;
    let target = weak.target("rbac-denied");
    let err = weak
        .mount(
            &Req::new(objects, &target)
                .pod("orders-7d9f", "orders", &pod_token)
                .set("csi.storage.k8s.io/pod.namespace", "shop"),
        )
        .await
        .expect_err("no get serviceaccounts");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().starts_with("failed to get service account shop/orders: ") && err.message().contains("forbidden"),
        "{}",
        err.message()
    );
    assert!(all_entries(&target).is_empty());
    assert_eq!(
        aws.calls_of("AssumeRoleWithWebIdentity").len(),
        1,
        "no STS call without the role"
    );
}
