//! Overload attacks: what a tenant who read the limits (docs/limits.md), and stays
//! inside every one of them, can do to the provider that serves every
//! namespace of its node. Each attack starts its own provider (default
//! flags unless the attack needs a feature turned on, four async worker
//! threads as on a 4-vCPU node), runs the hostile mounts, sends a benign
//! mount of another tenant while they run, and reports the provider's peak
//! RSS, what the hostile mounts got and whether the benign pod read its
//! value. `tests/hostile.rs` asserts on the outcome; `benches/overload.rs`
//! prints it for any build (`CSI_PROVIDER_BIN`), so the figures before and
//! after a change come from the same attacks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::*;
use csi_provider_aws::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;

/// The chart's memory limit for the provider container (values.yaml).
pub const CHART_MEMORY_LIMIT_KIB: u64 = 100 * 1024;

/// Async worker threads of the attacked provider (`TOKIO_WORKER_THREADS`):
/// as on a 4-vCPU node, where work inline on the workers multiplies.
pub const WORKER_THREADS: &str = "4";

/// The benign tenant's secret and value.
const BENIGN: &str = "benign";
const BENIGN_VALUE: &str = "benign-value";

/// The overload classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A class of many distinct, individually legal objects (each a 60 KB
    /// secret), mounted by a few pods of different identities at once.
    ManyObjects,
    /// Many volumes of a class padded to just under `--max-request-bytes`,
    /// while AWS answers slowly: the decoded requests pile up.
    PaddedRequests,
    /// Many mounts at once of a class with a large template made only of
    /// ordinary tags.
    LargeTemplate,
    /// One pod re-mounting with another well-formed `failoverRegion` each
    /// time, with `--serve-stale-max-age` on: every mount a new kept value.
    FailoverRegionChurn,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::ManyObjects,
        Class::PaddedRequests,
        Class::LargeTemplate,
        Class::FailoverRegionChurn,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Class::ManyObjects => "400 distinct 60 KB secrets, 6 pods at once",
            Class::PaddedRequests => "160 requests padded to 1000 KiB, AWS answering in 2 s",
            Class::LargeTemplate => "a 250 KiB template class of ordinary tags, 40 mounts at once",
            Class::FailoverRegionChurn => "1,500 re-mounts, a new failoverRegion each, stale serving on",
        }
    }
}

/// What an attack did.
#[derive(Debug)]
pub struct Outcome {
    pub class: Class,
    /// RSS before the attack and its peak during it (KiB).
    pub before_kib: u64,
    pub peak_kib: u64,
    /// RSS once the attack is over (KiB).
    pub after_kib: u64,
    /// Hostile mounts that succeeded.
    pub succeeded: usize,
    /// Failed hostile mounts by gRPC code, with one message of each.
    pub failed: BTreeMap<String, (usize, String)>,
    /// The benign pod's mount: its content, or why it failed.
    pub benign: Result<(), String>,
    /// How long the attack took.
    pub elapsed: Duration,
    /// The provider is still running.
    pub alive: bool,
    /// The provider's `/metrics` at the end.
    pub metrics: String,
    pub logs: String,
}

impl Outcome {
    /// One line of the report table.
    pub fn line(&self) -> String {
        let failed: Vec<String> = self.failed.iter().map(|(code, (n, _))| format!("{n} {code}")).collect();
        format!(
            "{:<62} peak RSS {:>6.1} MiB (before {:>5.1}, after {:>5.1}), hostile: {} ok, {}; benign {}; {:.1} s{}",
            self.class.label(),
            mib(self.peak_kib),
            mib(self.before_kib),
            mib(self.after_kib),
            self.succeeded,
            if failed.is_empty() {
                "none failed".to_string()
            } else {
                failed.join(", ")
            },
            match &self.benign {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAILED ({e})"),
            },
            self.elapsed.as_secs_f64(),
            if self.alive { "" } else { "; the provider DIED" },
        )
    }

    /// Every distinct failure message, for assertions.
    pub fn messages(&self) -> Vec<&str> {
        self.failed.values().map(|(_, m)| m.as_str()).collect()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A ServiceAccount of its own per hostile pod, so that no two hostile
/// mounts share a fetch.
fn hostile_sa(i: usize) -> String {
    format!("hostile-{i}")
}

fn role_of(sa: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{sa}")
}

fn obj(name: &str) -> String {
    format!("- objectName: {name}\n  objectType: secretsmanager\n")
}

/// Starts a provider for `class` with `extra` flags.
async fn start(class: Class, extra: &[&str]) -> Env {
    let env = Env::start_with(|mut o| {
        o.env.push(("TOKIO_WORKER_THREADS".into(), WORKER_THREADS.into()));
        o.args.extend(extra.iter().map(|s| s.to_string()));
        if class == Class::FailoverRegionChurn {
            o.args.push("--serve-stale-max-age=15m".into());
        }
        o
    })
    .await;
    for i in 0..200 {
        let sa = hostile_sa(i);
        env.kube.add_service_account("default", &sa, Some(&role_of(&sa)));
    }
    env.aws.put_secret_string(REGION, BENIGN, BENIGN_VALUE);
    env
}

/// The benign tenant's mount, and a check of what its pod reads.
fn benign_req(env: &Env) -> Req {
    Req::new(&obj(BENIGN), &env.provider.target("benign"))
        .pod("benign-pod", "sa-b", TOKEN_B)
        .set("csi.storage.k8s.io/pod.namespace", "default")
}

async fn benign_mount(env: &Env, client: &mut CsiDriverProviderClient<Channel>) -> Result<(), String> {
    let req = benign_req(env);
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        match client.mount(req.build()).await {
            Err(s) if super::connection_recycled(&s) && attempts < 10 => continue,
            other => break other,
        }
    };
    match answer {
        Ok(resp) => {
            let resp = resp.into_inner();
            let content = if resp.files.is_empty() {
                read_mount(&req.target).get(BENIGN).cloned()
            } else {
                file_map(&resp).get(BENIGN).map(|(_, c)| c.clone())
            };
            if content.as_deref() == Some(BENIGN_VALUE.as_bytes()) {
                Ok(())
            } else {
                Err(format!("read {content:?}"))
            }
        }
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// One mount over the shared connection, as the driver sends it: a request
/// the connection's recycling (HTTP/2 GOAWAY, `--max-connection-age`) cut
/// is sent again on a new one ([`super::connection_recycled`]).
async fn mount_once(client: &mut CsiDriverProviderClient<Channel>, req: &Req) -> Result<(), tonic::Status> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.mount(req.build()).await {
            Err(s) if super::connection_recycled(&s) && attempts < 10 => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// Runs attack `class` against a provider started with `extra` flags.
pub async fn run(class: Class, extra: &[&str]) -> Outcome {
    let env = start(class, extra).await;
    let pid = env.provider.pid();
    // One HTTP/2 connection, as the driver keeps one per provider.
    let client = env.provider.client().await;
    // The benign identity is warm: its mount during the attack is a re-mount.
    benign_mount(&env, &mut client.clone())
        .await
        .unwrap_or_else(|e| panic!("benign warm-up: {e}\n{}", env.provider.logs()));
    let hostile = prepare(class, &env);
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_peak_rss(pid);
    let before_kib = rss_kib(pid);
    let started = Instant::now();
    let results = match class {
        Class::FailoverRegionChurn => {
            // One pod, one mount after another.
            let mut out = Vec::new();
            let mut c = client.clone();
            let mut benign = None;
            for (i, req) in hostile.into_iter().enumerate() {
                out.push(mount_once(&mut c, &req).await);
                if i == 1000 {
                    benign = Some(benign_mount(&env, &mut client.clone()).await);
                }
            }
            (out, benign.unwrap_or_else(|| Err("not sent".into())))
        }
        _ => {
            let mounts = hostile.into_iter().map(|req| {
                let mut c = client.clone();
                async move { mount_once(&mut c, &req).await }
            });
            let benign = async {
                // Sent once the hostile mounts are in flight.
                tokio::time::sleep(Duration::from_millis(300)).await;
                benign_mount(&env, &mut client.clone()).await
            };
            tokio::join!(futures::future::join_all(mounts), benign)
        }
    };
    let elapsed = started.elapsed();
    let peak_kib = peak_rss_kib(pid);
    let (hostile, benign) = results;
    let mut failed: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut succeeded = 0;
    for r in hostile {
        match r {
            Ok(()) => succeeded += 1,
            Err(s) => {
                let e = failed
                    .entry(format!("{:?}", s.code()))
                    .or_insert((0, s.message().to_string()));
                e.0 += 1;
            }
        }
    }
    let alive = process_alive(pid);
    let metrics = if alive {
        env.provider.metrics().await
    } else {
        String::new()
    };
    Outcome {
        class,
        before_kib,
        peak_kib,
        after_kib: if alive { rss_kib(pid) } else { 0 },
        succeeded,
        failed,
        benign,
        elapsed,
        alive,
        metrics,
        logs: env.provider.logs(),
    }
}

/// Seeds AWS for `class` and builds its hostile requests.
fn prepare(class: Class, env: &Env) -> Vec<Req> {
    match class {
        Class::ManyObjects => {
            let mut objects = String::new();
            for i in 0..400 {
                let name = format!("bulk-{i:03}");
                env.aws
                    .put_secret_string(REGION, &name, &format!("{i:03}-").repeat(15_000));
                objects.push_str(&obj(&name));
            }
            (0..6)
                .map(|p| {
                    let sa = hostile_sa(p);
                    Req::new(&objects, &env.provider.target(&format!("many-{p}"))).pod(
                        &format!("many-{p}"),
                        &sa,
                        &format!("eyJ.{sa}.sig"),
                    )
                })
                .collect()
        }
        Class::PaddedRequests => {
            env.aws.put_secret_string(REGION, "small", "small-value");
            env.aws.set_delay(Duration::from_secs(2));
            // Just under --max-request-bytes (1 MiB) with the rest of the
            // request.
            let padding = "p".repeat(1000 * 1024);
            (0..160)
                .map(|p| {
                    let sa = hostile_sa(p % 20);
                    Req::new(&obj("small"), &env.provider.target(&format!("padded-{p}")))
                        .pod(&format!("padded-{p}"), &sa, &format!("eyJ.{sa}.sig"))
                        .set("padding", &padding)
                })
                .collect()
        }
        Class::LargeTemplate => {
            env.aws.put_secret_string(REGION, "tpl", "template-input");
            // Ordinary tags only: each reads a file and writes it.
            let mut template = String::new();
            while template.len() < 200 * 1024 {
                template.push_str("{{ files.tpl }}\n");
            }
            let templates = format!(
                "- fileName: out.txt\n  template: |\n{}",
                template.lines().map(|l| format!("    {l}\n")).collect::<String>()
            );
            assert!(templates.len() < 256 * 1024, "{}", templates.len());
            (0..40)
                .map(|p| {
                    let sa = hostile_sa(p % 10);
                    Req::new(&obj("tpl"), &env.provider.target(&format!("tpl-{p}")))
                        .pod(&format!("tpl-{p}"), &sa, &format!("eyJ.{sa}.sig"))
                        .set("templates", &templates)
                })
                .collect()
        }
        Class::FailoverRegionChurn => {
            env.aws.put_secret_string(REGION, "kept", &"k".repeat(60_000));
            let target = env.provider.target("churn");
            (0..1500)
                .map(|i| {
                    // A well-formed region name of its own each time.
                    let failover = format!("xx-{}-1", letters(i));
                    Req::new(&obj("kept"), &target)
                        .pod("churn", "sa-a", TOKEN_A)
                        .set("failoverRegion", &failover)
                })
                .collect()
        }
    }
}

/// `i` as lowercase letters (a region name part).
fn letters(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}
