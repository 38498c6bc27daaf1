//! Secret hygiene in memory: after 100 successful mounts, how many copies of
//! each secret value are left in the provider process? The provider runs
//! against the in-repo fake AWS and fake Kubernetes (value cache off, the
//! default), once in driver-writes mode and once in provider-writes mode
//! (target on tmpfs); then `gcore` dumps its memory and the core file is
//! searched for three canaries: a Secrets Manager string, an SSM
//! SecureString, and a password pulled out of a JSON secret by `jmesPath`;
//! for the private key of an ACM certificate (its raw bytes and its PEM,
//! the export not kept: `--acm-export-max-age=0`) and every passphrase an
//! export used; and for the pods' service-account tokens.
//!
//! No copy may be left: values live in zeroizing buffers the provider owns,
//! and the binary's allocator zeroes everything else it frees (HTTP bodies,
//! the SDK's parsed responses, gRPC frames, the JSON parsed for JMESPath).
//! Before that, 100 mounts left 1 to 14 copies of each canary. The counts
//! are printed (run with `-- --nocapture`). Needs `gcore` (Debian: `apt-get
//! install gdb`; `scripts/test` installs it) and ptrace rights over the
//! provider (root, or a ptrace_scope that allows it).
//! `HYGIENE_CORE_DIR=<dir>` keeps the core files there for inspection.

#![allow(clippy::panic)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The Secrets Manager secret's whole value.
const CANARY_SM: &str = "CANARY-7f3a9c1e-hygiene-secret-value-000";
/// The SSM SecureString parameter's value.
const CANARY_SSM: &str = "CANARY-b5d20e47-hygiene-ssm-secure-p-111";
/// The `password` field of a JSON secret, mounted through `jmesPath`.
const CANARY_JMES: &str = "CANARY-91c6fa38-hygiene-jmes-passwd-2222";

const MOUNTS: usize = 100;

/// The ACM certificate's ARN (the fake's account and region).
const ACM_ARN: &str = "arn:aws:acm:us-west-2:123456789012:certificate/hygiene-cert";

const OBJECTS: &str = "
- objectName: \"arn:aws:acm:us-west-2:123456789012:certificate/hygiene-cert\"
  objectAlias: tls
- objectName: hygiene-secret
  objectType: secretsmanager
- objectName: hygiene-param
  objectType: ssmparameter
- objectName: hygiene-json
  objectType: secretsmanager
  jmesPath:
    - path: password
      objectAlias: pw
";

/// The two measurements run one after the other, never at once: each dumps
/// a whole process and the machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The projected token of ServiceAccount `sa`, `n`th of its kind (a new one
/// every 25 pods), long enough to be told from anything else.
fn token_of(sa: &str, n: usize) -> String {
    format!("eyJhbGciOiJSUzI1NiJ9.hygiene-token-{sa}-{n}-CANARY-5e1f0c2a.c2lnbmF0dXJl")
}

/// The Pod Identity token of pod `i`.
fn pod_identity_token_of(i: usize) -> String {
    format!("eyJhbGciOiJSUzI1NiJ9.pod-identity-token-{i:03}-CANARY-7d41b9e0.c2lnbmF0dXJl")
}

/// Where every canary's common part (`CANARY-`) starts in `hay`: the core
/// is scanned once, then each canary is matched at these places only.
fn marks(hay: &[u8]) -> Vec<usize> {
    memchr::memmem::find_iter(hay, b"CANARY-").collect()
}

/// Occurrences of `canary` in `hay`, at the `marks` of its `CANARY-` part.
fn occurrences_at(hay: &[u8], marks: &[usize], canary: &[u8]) -> usize {
    let Some(k) = canary.windows(7).position(|w| w == b"CANARY-") else {
        return occurrences(hay, canary);
    };
    marks
        .iter()
        .filter(|&&at| at >= k && hay[at - k..].starts_with(canary))
        .count()
}

/// Non-overlapping occurrences of `needle` in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(hay, needle).count()
}

/// Dumps the memory of process `pid` with gcore into `dir`; returns the
/// core file's path.
fn gcore(pid: u32, dir: &Path) -> PathBuf {
    let prefix = dir.join("core");
    let out = match Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("gcore is missing: apt-get install gdb (it ships gcore)")
        }
        Err(e) => panic!("running gcore: {e} (apt-get install gdb)"),
    };
    let core = dir.join(format!("core.{pid}"));
    assert!(
        out.status.success() && core.is_file(),
        "gcore -o {} {pid} failed ({}), no core file {}:\n{}\n{}",
        prefix.display(),
        out.status,
        core.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    core
}

async fn measure(driver_writes: bool) {
    let _serial = SERIAL.lock().await;
    let mode = if driver_writes {
        "driver-writes"
    } else {
        "provider-writes"
    };
    let agent = FakeAgent::start("127.0.0.1:0").await;
    let env = Env::start_with(|mut o| {
        if driver_writes {
            o.args.push("--driver-writes-secrets".into());
        }
        o.args.push(format!("--pod-identity-endpoint-ipv4={}", agent.url()));
        o.args.push("--acm-export-max-age=0".into());
        o
    })
    .await;
    // An Ed25519 key: its PKCS#8 is 48 bytes, the last 32 the key itself,
    // and its PEM one line of base64.
    let issued = crate::certificates::issue_with("hygiene.example.com", &rcgen::PKCS_ED25519);
    let arn = env
        .aws
        .put_certificate(REGION, "hygiene-cert", crate::certificates::acm(&issued, "PRIVATE"));
    assert_eq!(arn, ACM_ARN);
    let key_raw = issued.key[issued.key.len() - 32..].to_vec();
    let key_pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &issued.key).expect("pem");
    let key_line = key_pem.lines().nth(1).expect("the base64 line").to_string();
    assert_eq!(key_line.len(), 64);
    env.aws.put_secret_string(REGION, "hygiene-secret", CANARY_SM);
    env.aws.put_param(REGION, "hygiene-param", "SecureString", CANARY_SSM);
    env.aws.put_secret_string(
        REGION,
        "hygiene-json",
        &format!(r#"{{"user":"app","password":"{CANARY_JMES}"}}"#),
    );

    // One connection for every mount, as the driver keeps one.
    let mut client = env.provider.client().await;
    for i in 0..MOUNTS {
        // Pods alternate between two ServiceAccounts (two roles), each with a
        // new projected token every 25 pods: 8 identities in all; every
        // third pod uses EKS Pod Identity instead, with a token of its own.
        let sa = if i % 2 == 0 { "sa-a" } else { "sa-b" };
        let token = token_of(sa, i / 25);
        let pod = format!("hygiene-pod-{i}");
        let target = if driver_writes {
            env.provider.target(&pod)
        } else {
            env.provider.tmpfs_target(&pod)
        };
        let mut req = Req::new(OBJECTS, &target).pod(&pod, sa, &token);
        if i % 3 == 0 {
            req.tokens
                .insert("pods.eks.amazonaws.com".to_string(), pod_identity_token_of(i));
            req = req.set("usePodIdentity", "true");
        }
        let resp = client
            .mount(req.build())
            .await
            .map(|r| r.into_inner())
            .unwrap_or_else(|e| panic!("{mode}: mount {i} failed: {e}\n{}", env.provider.logs()));
        let files: std::collections::BTreeMap<String, Vec<u8>> = if driver_writes {
            file_map(&resp).into_iter().map(|(k, (_, v))| (k, v)).collect()
        } else {
            read_mount(&target)
        };
        assert_eq!(files["hygiene-secret"], CANARY_SM.as_bytes(), "{mode}: mount {i}");
        assert_eq!(files["hygiene-param"], CANARY_SSM.as_bytes(), "{mode}: mount {i}");
        assert_eq!(files["pw"], CANARY_JMES.as_bytes(), "{mode}: mount {i}");
        assert_eq!(files["tls/tls.key"], key_pem.as_bytes(), "{mode}: mount {i}");
        if !driver_writes {
            // Keep tmpfs small; the files are not in the process anyway.
            let _ = std::fs::remove_dir_all(&target);
        }
    }

    // Let in-flight work (connection teardown, background tasks) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("HYGIENE_CORE_DIR")
        .map(|d| PathBuf::from(d).join(mode))
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("core dir");
    let core = gcore(env.provider.pid(), &dir);
    let bytes = std::fs::read(&core).expect("read core");
    assert!(!bytes.is_empty(), "empty core file {}", core.display());
    let log = env.provider.logs();

    let mut found = Vec::new();
    let mut report = format!(
        "hygiene [{mode}]: {MOUNTS} mounts, provider pid {}, core {} bytes ({:.1} MiB) at {}\n",
        env.provider.pid(),
        bytes.len(),
        bytes.len() as f64 / (1024.0 * 1024.0),
        core.display(),
    );
    // The pods' service-account tokens are secrets too, from the request to
    // the STS call or the Pod Identity Agent.
    let tokens: Vec<(String, String)> = ["sa-a", "sa-b"]
        .iter()
        .flat_map(|sa| (0..MOUNTS.div_ceil(25)).map(move |n| (format!("token of {sa} ({n})"), token_of(sa, n))))
        .chain(
            (0..MOUNTS)
                .filter(|i| i % 3 == 0)
                .map(|i| (format!("Pod Identity token ({i})"), pod_identity_token_of(i))),
        )
        .collect();
    // Every export's passphrase, as the fake received it.
    let passphrases: Vec<(String, Vec<u8>)> = env
        .aws
        .calls_of("ExportCertificate")
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("export passphrase ({i})"), c.passphrase.expect("a passphrase")))
        .collect();
    assert_eq!(passphrases.len(), MOUNTS, "one export per mount");
    let canaries = [
        ("secretsmanager string".to_string(), CANARY_SM.as_bytes().to_vec()),
        ("ssm SecureString".to_string(), CANARY_SSM.as_bytes().to_vec()),
        ("jmesPath password".to_string(), CANARY_JMES.as_bytes().to_vec()),
        ("ACM key, raw".to_string(), key_raw),
        ("ACM key, PEM".to_string(), key_line.into_bytes()),
    ]
    .into_iter()
    .chain(tokens.into_iter().map(|(w, t)| (w, t.into_bytes())))
    .chain(passphrases);
    let core_marks = marks(&bytes);
    for (what, canary) in canaries {
        let (in_core, in_log) = (
            occurrences_at(&bytes, &core_marks, &canary),
            occurrences(log.as_bytes(), &canary),
        );
        let shown = match std::str::from_utf8(&canary) {
            Ok(text) => text.to_string(),
            Err(_) => format!("{} raw bytes", canary.len()),
        };
        report.push_str(&format!(
            "hygiene [{mode}]:   {what:<22} {shown}: {in_core} in core, {in_log} in provider log\n"
        ));
        if in_core + in_log > 0 {
            found.push(what.to_string());
        }
    }
    eprint!("{report}");
    assert!(found.is_empty(), "copies of {found:?} left in the provider:\n{report}");
}

#[tokio::test]
#[ignore = "needs gcore (gdb) and ptrace; scripts/test runs it"]
async fn no_copy_of_a_secret_is_left_in_memory_after_100_mounts_in_driver_writes_mode() {
    measure(true).await;
}

#[tokio::test]
#[ignore = "needs gcore (gdb) and ptrace; scripts/test runs it"]
async fn no_copy_of_a_secret_is_left_in_memory_after_100_mounts_in_provider_writes_mode() {
    measure(false).await;
}

#[test]
fn canaries_are_found_at_their_marks() {
    let hay = b"..x-CANARY-1..CANARY-2..x-CANARY-1x-CANARY-1";
    let m = marks(hay);
    assert_eq!(m.len(), 4);
    assert_eq!(occurrences_at(hay, &m, b"x-CANARY-1"), 3);
    assert_eq!(occurrences_at(hay, &m, b"CANARY-2"), 1);
    assert_eq!(occurrences_at(hay, &m, b"y-CANARY-1"), 0);
}

#[test]
fn occurrences_counts_non_overlapping_matches() {
    assert_eq!(occurrences(b"", b"ab"), 0);
    assert_eq!(occurrences(b"a", b"ab"), 0);
    assert_eq!(occurrences(b"ab", b"ab"), 1);
    assert_eq!(occurrences(b"xabyabab", b"ab"), 3);
    assert_eq!(occurrences(b"aaaa", b"aa"), 2);
    assert_eq!(occurrences(b"aaa", b"aa"), 1);
}
