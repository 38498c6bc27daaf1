//! moto, the local AWS emulator, started once per test binary from the
//! project's virtualenv (`scripts/test` creates it). It exits when the test
//! process does (its standard input closes).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_sdk_secretsmanager::config::{Credentials, Region};

use super::{FakeKube, Options, Provider, REGION, ROLE_A};

static MOTO: OnceLock<(Mutex<Child>, String)> = OnceLock::new();

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CSI_AWS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The endpoint of the shared moto server.
pub fn endpoint() -> String {
    MOTO.get_or_init(|| {
        let python = python();
        assert!(
            python.exists(),
            "moto is required: {} not found; run scripts/test (it creates .venv with moto)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("moto output");
        assert_eq!(line.trim(), "ready", "moto did not start");
        (Mutex::new(child), format!("http://127.0.0.1:{port}"))
    })
    .1
    .clone()
}

/// A provider on moto (`opts` with moto's endpoint and the fake API
/// server's kubeconfig), with sa-a → role A and pod-a on a node in us-west-2.
pub async fn env(opts: Options) -> (FakeKube, Provider) {
    let kube = FakeKube::start().await;
    kube.add_service_account("default", "sa-a", Some(ROLE_A));
    kube.add_pod("default", "pod-a", "node-1");
    kube.add_node("node-1", Some(REGION));
    let provider = Provider::start(Options {
        aws_endpoint: endpoint(),
        kubeconfig: Some(kube.kubeconfig.clone()),
        ..opts
    })
    .await;
    (kube, provider)
}

fn creds() -> Credentials {
    Credentials::new("testing", "testing", None, None, "test")
}

pub fn secrets_manager(region: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(creds())
        .endpoint_url(endpoint())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

pub fn ssm(region: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::new()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(endpoint())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// A name unique to this test run, so tests sharing moto don't collide.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Credentials of another moto account: from STS `AssumeRole` into `role`
/// (moto isolates accounts by the account id of the role).
async fn credentials_in(role: &str, region: &str) -> Credentials {
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::new()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(endpoint())
            .build(),
    );
    let c = sts
        .assume_role()
        .role_arn(role)
        .role_session_name("seed")
        .send()
        .await
        .expect("assume role")
        .credentials
        .expect("credentials");
    Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "seed",
    )
}

/// Secrets Manager and SSM clients of another moto account (signed as
/// `role`).
pub async fn in_account(role: &str, region: &str) -> (aws_sdk_secretsmanager::Client, aws_sdk_ssm::Client) {
    let creds = credentials_in(role, region).await;
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(creds.clone())
            .endpoint_url(endpoint())
            .build(),
    );
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::new()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
            .credentials_provider(creds)
            .endpoint_url(endpoint())
            .build(),
    );
    (sm, ssm)
}

fn acm_client(region: &str, creds: Credentials) -> aws_sdk_acm::Client {
    aws_sdk_acm::Client::from_conf(
        aws_sdk_acm::config::Builder::new()
            .behavior_version(aws_sdk_acm::config::BehaviorVersion::latest())
            .region(aws_sdk_acm::config::Region::new(region.to_string()))
            .credentials_provider(creds)
            .endpoint_url(endpoint())
            .build(),
    )
}

/// An ACM client of the default account.
pub fn acm(region: &str) -> aws_sdk_acm::Client {
    acm_client(region, creds())
}

/// An ACM client of another moto account (signed as `role`).
pub async fn acm_in_account(role: &str, region: &str) -> aws_sdk_acm::Client {
    acm_client(region, credentials_in(role, region).await)
}

/// The role sessions moto's STS has issued, as `(assumed-role ARN, role
/// ARN, session name)`: moto's own record (`/moto-api/data.json`), the ARN
/// that CloudTrail would show for the session's calls.
pub async fn assumed_roles() -> Vec<(String, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = endpoint();
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to moto");
    s.write_all(format!("GET /moto-api/data.json HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let data: serde_json::Value = serde_json::from_str(body).expect("moto's data.json");
    data["sts"]["AssumedRole"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .map(|r| {
                    let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (field("arn"), field("role_arn"), field("session_name"))
                })
                .collect()
        })
        .unwrap_or_default()
}
