//! Test support: the real provider binary on a temporary Unix socket, a
//! real gRPC client, fakes of AWS, Kubernetes and the Pod Identity agent,
//! and moto (a local AWS emulator) for AWS wire semantics.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod attacks;
pub mod bad_cases;
pub mod fake_agent;
pub mod fake_aws;
pub mod fake_kube;
pub mod fuzz_seeds;
pub mod http;
pub mod inproc;
pub mod moto;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_provider_aws::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use csi_provider_aws::proto::v1alpha1::{MountRequest, MountResponse};
use serde_json::json;
use tonic::transport::Channel;

pub use fake_agent::FakeAgent;
pub use fake_aws::FakeAws;
pub use fake_kube::FakeKube;

pub const REGION: &str = "us-west-2";
pub const FAILOVER: &str = "us-east-2";
/// Flags that make the provider call AWS and Kubernetes as the Go provider
/// does: no caches, no batching, no single-flight, one call at a time.
pub const GO_PATTERN: &[&str] = &[
    "--credential-cache=false",
    "--service-account-cache-ttl=0",
    "--batch-get-secret-value=false",
    "--single-flight=false",
    "--max-concurrent-fetches=1",
];
pub const ROLE_A: &str = "arn:aws:iam::123456789012:role/role-a";
pub const ROLE_B: &str = "arn:aws:iam::123456789012:role/role-b";
pub const TOKEN_A: &str = "eyJ.token-of-pod-a.sig";
pub const TOKEN_B: &str = "eyJ.token-of-pod-b.sig";
pub const PI_TOKEN_A: &str = "eyJ.pod-identity-token-a.sig";

/// How to start the provider.
#[derive(Clone, Default)]
pub struct Options {
    pub aws_endpoint: String,
    pub kubeconfig: Option<PathBuf>,
    pub env_region: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Another build of the provider to run (else `CSI_PROVIDER_BIN`, else
    /// this one).
    pub binary: Option<PathBuf>,
    /// A program that runs the binary, with its arguments (an emulator:
    /// `qemu-aarch64` runs the arm64 release binary).
    pub launcher: Vec<String>,
}

/// A build of the provider a benchmark measures.
pub struct Build {
    pub label: String,
    /// `None`: `CSI_PROVIDER_BIN`, else this crate's own build.
    pub binary: Option<PathBuf>,
}

impl Build {
    /// `name`, with the build's label when there are several.
    pub fn name(&self, name: &str) -> String {
        if self.label.is_empty() {
            name.to_string()
        } else {
            format!("{name} [{}]", self.label)
        }
    }
}

/// The builds environment variable `var` lists (`label=path,...`; the
/// benchmarks measure them in turn in one run), else one unlabelled build.
pub fn builds(var: &str) -> Vec<Build> {
    let list = std::env::var(var).unwrap_or_default();
    let builds: Vec<Build> = list
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (label, path) = e
                .split_once('=')
                .unwrap_or_else(|| panic!("{var}: label=path,... (got {e})"));
            let path = PathBuf::from(path.trim());
            assert!(path.is_file(), "{var}: {} is missing", path.display());
            Build {
                label: label.trim().to_string(),
                binary: Some(path),
            }
        })
        .collect();
    if builds.is_empty() {
        vec![Build {
            label: String::new(),
            binary: None,
        }]
    } else {
        builds
    }
}

/// The provider binary running on a temporary socket.
pub struct Provider {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The health and metrics endpoint, when it listens on loopback.
    pub http: Option<std::net::SocketAddr>,
}

impl Provider {
    pub async fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock_dir = dir.path().join("providers");
        let log = dir.path().join("provider.log");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        // CSI_PROVIDER_BIN runs another build of the provider under the same
        // harness (benchmarks compare builds with it).
        let bin = opts.binary.clone().map(Into::into).unwrap_or_else(|| {
            std::env::var_os("CSI_PROVIDER_BIN")
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_csi-provider-aws").into())
        });
        let mut cmd = match opts.launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        // The endpoint on a free loopback port unless the test chose one.
        let http_arg = opts
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--http-addr=").map(str::to_string));
        let http_arg = http_arg.unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let http = http_arg.parse().ok();
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("RUST_LOG", "info,csi_provider_aws=debug")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", home.join("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
            .env("AWS_MAX_ATTEMPTS", "2")
            .env("AWS_RETRY_MODE", "standard")
            .arg(format!("--provider-volume={}", sock_dir.display()))
            .args((!opts.args.iter().any(|a| a.starts_with("--http-addr"))).then(|| format!("--http-addr={http_arg}")))
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if !opts.aws_endpoint.is_empty() {
            cmd.env("AWS_ENDPOINT_URL", &opts.aws_endpoint);
        }
        if let Some(k) = &opts.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        if let Some(r) = &opts.env_region {
            cmd.env("AWS_REGION", r);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn provider");
        let socket = sock_dir.join("aws.sock");
        let mut p = Self {
            child,
            dir,
            socket,
            log,
            http,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.socket.exists() && csi_provider_aws::client::connect(&self.socket).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("provider exited early with {status}: {}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("provider did not become ready: {}", self.logs());
    }

    pub async fn client(&self) -> CsiDriverProviderClient<Channel> {
        csi_provider_aws::client::connect(&self.socket).await.expect("connect")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "INT") and waits for the process to exit.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "provider did not stop on SIG{signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A pod volume on tmpfs, as the driver mounts one (benchmarks: fsync
    /// costs nothing there, as in a pod); falls back to [`Self::target`]
    /// where /dev/shm is missing.
    pub fn tmpfs_target(&self, name: &str) -> PathBuf {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return self.target(name);
        }
        let dir = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let p = shm.join(format!("csi-provider-aws{dir}")).join(name);
        std::fs::create_dir_all(&p).expect("tmpfs target");
        p
    }

    /// A fresh, empty target directory for a mount.
    pub fn target(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("pods").join(name).join("mount");
        std::fs::create_dir_all(&p).expect("target");
        p
    }

    pub async fn mount(&self, req: &Req) -> Result<MountResponse, tonic::Status> {
        self.client().await.mount(req.build()).await.map(|r| r.into_inner())
    }

    /// The body of `GET path` on the health and metrics endpoint.
    pub async fn http_get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.http.expect("the endpoint listens on loopback");
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the endpoint");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http_get("/metrics").await
    }
}

/// The sum of every sample of `/metrics` text whose line starts with `prefix`.
pub fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("status field")
}

/// The process's resident memory now (KiB).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The process's peak resident memory since the last reset (KiB).
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs (needs Linux and the same user)");
}

/// Whether process `pid` still runs.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.path().file_name() {
            let _ = std::fs::remove_dir_all(
                Path::new("/dev/shm").join(format!("csi-provider-aws{}", dir.to_string_lossy())),
            );
        }
    }
}

/// A MountRequest as the driver builds it.
#[derive(Clone)]
pub struct Req {
    pub attrs: BTreeMap<String, String>,
    pub tokens: BTreeMap<String, String>,
    pub target: PathBuf,
    pub permission: String,
    pub secrets: String,
    pub raw_attributes: Option<String>,
}

impl Req {
    /// A request for pod `pod-a` (ServiceAccount `sa-a`) in `default`, with
    /// IRSA and Pod Identity tokens, in region us-west-2.
    pub fn new(objects: &str, target: &Path) -> Self {
        let mut attrs = BTreeMap::new();
        attrs.insert("objects".to_string(), objects.to_string());
        attrs.insert("region".to_string(), REGION.to_string());
        attrs.insert("secretProviderClass".to_string(), "test-spc".to_string());
        attrs.insert("csi.storage.k8s.io/pod.name".to_string(), "pod-a".to_string());
        attrs.insert("csi.storage.k8s.io/pod.namespace".to_string(), "default".to_string());
        attrs.insert("csi.storage.k8s.io/pod.uid".to_string(), "uid-a".to_string());
        attrs.insert("csi.storage.k8s.io/serviceAccount.name".to_string(), "sa-a".to_string());
        attrs.insert("csi.storage.k8s.io/ephemeral".to_string(), "true".to_string());
        let mut tokens = BTreeMap::new();
        tokens.insert("sts.amazonaws.com".to_string(), TOKEN_A.to_string());
        tokens.insert("pods.eks.amazonaws.com".to_string(), PI_TOKEN_A.to_string());
        Self {
            attrs,
            tokens,
            target: target.to_path_buf(),
            permission: "420".to_string(),
            secrets: "null".to_string(),
            raw_attributes: None,
        }
    }

    pub fn set(mut self, k: &str, v: &str) -> Self {
        self.attrs.insert(k.to_string(), v.to_string());
        self
    }

    pub fn unset(mut self, k: &str) -> Self {
        self.attrs.remove(k);
        self
    }

    pub fn pod(self, name: &str, sa: &str, token: &str) -> Self {
        let mut r = self
            .set("csi.storage.k8s.io/pod.name", name)
            .set("csi.storage.k8s.io/pod.uid", &format!("uid-{name}"))
            .set("csi.storage.k8s.io/serviceAccount.name", sa);
        r.tokens.insert("sts.amazonaws.com".to_string(), token.to_string());
        r
    }

    pub fn build(&self) -> MountRequest {
        let mut attrs = self.attrs.clone();
        if !self.tokens.is_empty() && !attrs.contains_key("csi.storage.k8s.io/serviceAccount.tokens") {
            let map: serde_json::Map<String, serde_json::Value> = self
                .tokens
                .iter()
                .map(|(a, t)| {
                    (
                        a.clone(),
                        json!({"token": t, "expirationTimestamp": "2099-01-01T00:00:00Z"}),
                    )
                })
                .collect();
            attrs.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".to_string(),
                serde_json::Value::Object(map).to_string(),
            );
        }
        MountRequest {
            attributes: self
                .raw_attributes
                .clone()
                .unwrap_or_else(|| serde_json::to_string(&attrs).expect("attributes")),
            secrets: self.secrets.clone(),
            target_path: self.target.to_string_lossy().into_owned(),
            permission: self.permission.clone(),
            current_object_version: vec![],
        }
    }
}

/// Fakes wired together: AWS, Kubernetes (with sa-a → role A and
/// sa-b → role B in `default`), and a provider using them.
pub struct Env {
    pub aws: FakeAws,
    pub kube: FakeKube,
    pub provider: Provider,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(|o| o).await
    }

    pub async fn start_with(f: impl FnOnce(Options) -> Options) -> Self {
        let aws = FakeAws::start().await;
        let kube = FakeKube::start().await;
        kube.add_service_account("default", "sa-a", Some(ROLE_A));
        kube.add_service_account("default", "sa-b", Some(ROLE_B));
        let opts = f(Options {
            aws_endpoint: aws.endpoint(),
            kubeconfig: Some(kube.kubeconfig.clone()),
            ..Options::default()
        });
        let provider = Provider::start(opts).await;
        Self { aws, kube, provider }
    }
}

/// What a test that runs both in-process ([`inproc::InProc`]) and end to
/// end ([`Env`]) needs of a provider and its fakes.
#[allow(async_fn_in_trait)]
pub trait Harness {
    fn aws(&self) -> &FakeAws;
    fn kube(&self) -> &FakeKube;
    fn target(&self, name: &str) -> PathBuf;
    async fn mount(&self, req: &Req) -> Result<MountResponse, tonic::Status>;
}

impl Harness for Env {
    fn aws(&self) -> &FakeAws {
        &self.aws
    }
    fn kube(&self) -> &FakeKube {
        &self.kube
    }
    fn target(&self, name: &str) -> PathBuf {
        self.provider.target(name)
    }
    async fn mount(&self, req: &Req) -> Result<MountResponse, tonic::Status> {
        self.provider.mount(req).await
    }
}

impl Harness for inproc::InProc {
    fn aws(&self) -> &FakeAws {
        &self.aws
    }
    fn kube(&self) -> &FakeKube {
        &self.kube
    }
    fn target(&self, name: &str) -> PathBuf {
        self.provider.target(name)
    }
    async fn mount(&self, req: &Req) -> Result<MountResponse, tonic::Status> {
        self.provider.mount(req).await
    }
}

/// A TCP port free on loopback right now.
/// Whether a call failed because the connection under it closed, not
/// because the provider answered: the socket's connection is recycled
/// (`--max-connection-age`, an HTTP/2 GOAWAY), and a request the client
/// was sending as it closed fails in the client (tonic reports
/// `Cancelled`, "transport error" or an h2 error) where gRPC-Go, the
/// driver's client, retries it transparently and the kubelet retries any
/// failed mount. Callers send such a request again, a bounded number of
/// times.
pub fn connection_recycled(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Cancelled
        || (s.code() == tonic::Code::Unknown
            && (s.message() == "transport error" || s.message().starts_with("h2 protocol error")))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The files visible in a mount directory (following the top-level links,
/// as a pod does), as relative path → contents.
pub fn read_mount(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if dir == root && name.starts_with("..") {
            continue;
        }
        let path = e.path();
        let meta = std::fs::metadata(&path).expect("metadata");
        if meta.is_dir() {
            walk(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&path).expect("read"));
        }
    }
}

/// Every entry in a directory tree, hidden ones included (for "nothing was
/// written" checks).
pub fn all_entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// The file mode of a visible file.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

pub fn file_map(resp: &MountResponse) -> BTreeMap<String, (i32, Vec<u8>)> {
    resp.files
        .iter()
        .map(|f| (f.path.clone(), (f.mode, f.contents.to_vec())))
        .collect()
}

pub fn versions(resp: &MountResponse) -> BTreeMap<String, String> {
    resp.object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}
