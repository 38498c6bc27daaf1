//! The install artefacts: every manifest validates against the Kubernetes
//! API schemas, the DaemonSet and RBAC have the properties operators rely
//! on, and the Dockerfile passes the linter. The tools come from
//! `scripts/venv` (run by `scripts/test`).

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::endpoint;
use crate::schema;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/venv (scripts/test does)",
        p.display()
    );
    p
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find(kind: &str) -> Value {
    manifests()
        .iter()
        .flat_map(|p| documents(p))
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

#[test]
#[ignore = "needs kubernetes-validate or dockerfilelint (scripts/venv); scripts/test runs it"]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 2);
    for version in ["1.29.0", "1.37.0"] {
        assert_eq!(schema::validate_strict(&files, version), 5);
    }
}

#[test]
fn the_daemonset_runs_everywhere_hardened_and_probed() {
    let ds = find("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["metadata"]["labels"]["app"], "csi-secrets-store-provider-aws",
        "the driver e2e waits on this label"
    );
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["hostNetwork"], false);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["exec"]["command"],
            probe_command(),
            "{probe}: Version through the socket, not the network endpoint"
        );
    }
    assert_eq!(c["ports"][0]["containerPort"], 8989);
    assert_eq!(c["env"][0]["name"], "NODE_NAME");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(c["env"][1]["name"], "POD_IP", "for --http-addr=$(POD_IP):8989");
    assert_eq!(c["env"][1]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--driver-writes-secrets=true"));
    assert!(args.contains(&"--provider-volume=/var/run/secrets-store-csi-providers"));
    // Driver-writes mode: the kubelet's pods directory is not mounted.
    let paths: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["/var/run/secrets-store-csi-providers"]);
    // The binary accepts every argument the manifest passes.
    let out = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
#[ignore = "needs kubernetes-validate or dockerfilelint (scripts/venv); scripts/test runs it"]
fn the_http_endpoint_binds_every_address_or_only_the_pod_ip() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/provider.yaml")).unwrap();
    let shipped = "- --http-addr=0.0.0.0:8989";
    assert_eq!(text.matches(shipped).count(), 1);
    let dir = tempfile::tempdir().unwrap();
    // The shipped address, then each alternative the manifest's comment
    // documents, with $(POD_IP) expanded as the kubelet does.
    for (addr, pod_ip, host) in [
        ("0.0.0.0:8989", "127.0.0.1", "0.0.0.0"),
        ("$(POD_IP):8989", "127.0.0.1", "127.0.0.1"),
        ("[$(POD_IP)]:8989", "::1", "[::1]"),
        ("[::]:8989", "::1", "[::]"),
    ] {
        let arg = format!("--http-addr={addr}");
        assert!(text.contains(&arg), "the manifest does not document {arg}");
        let file = dir.path().join("provider.yaml");
        std::fs::write(&file, text.replace(shipped, &format!("- {arg}"))).unwrap();
        for version in ["1.29.0", "1.37.0"] {
            assert_eq!(
                schema::validate_strict(std::slice::from_ref(&file), version),
                4,
                "{arg}"
            );
        }
        let ds = documents(&file).into_iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        // The probes do not use the endpoint, whatever its bind address.
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(c[probe]["httpGet"].is_null(), "{probe}");
        }
        if host.starts_with('[') && !endpoint::has_ipv6() {
            eprintln!("no IPv6 loopback here: not starting the provider on {arg}");
            continue;
        }
        endpoint::assert_binds(c, pod_ip, host);
    }
}

#[test]
fn the_cluster_role_grants_only_what_the_provider_reads_and_the_rotation_events() {
    let role = find("ClusterRole");
    let rules = role["rules"].as_sequence().unwrap();
    let mut granted: Vec<(String, String, String)> = Vec::new();
    for r in rules {
        for group in r["apiGroups"].as_sequence().unwrap() {
            for res in r["resources"].as_sequence().unwrap() {
                for verb in r["verbs"].as_sequence().unwrap() {
                    granted.push((
                        group.as_str().unwrap().to_string(),
                        res.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    granted.sort();
    let g = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        granted,
        vec![
            g("", "nodes", "get"),
            g("", "serviceaccounts", "get"),
            g("events.k8s.io", "events", "create"),
            g("events.k8s.io", "events", "patch"),
        ],
        "no serviceaccounts/token create, no secrets, no pods, no list/watch; events only to create and patch"
    );
    let binding = find("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["name"],
        find("ServiceAccount")["metadata"]["name"]
    );
}

#[test]
fn the_csidriver_requests_both_token_audiences() {
    let d = find("CSIDriver");
    assert_eq!(
        schema::token_audiences(&d["spec"]["tokenRequests"]),
        vec!["sts.amazonaws.com", "pods.eks.amazonaws.com"]
    );
    assert_eq!(d["spec"]["podInfoOnMount"], true);
}

#[test]
#[ignore = "needs kubernetes-validate or dockerfilelint (scripts/venv); scripts/test runs it"]
fn the_dockerfile_is_lint_clean() {
    let out = Command::new(tool(".tools/node_modules/.bin/dockerfilelint"))
        .arg(root().join("deploy/Dockerfile"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The image of a `FROM` line, past its flags (`--platform=...`).
fn base_image(from: &str) -> &str {
    from.split_whitespace()
        .skip(1)
        .find(|w| !w.starts_with("--"))
        .unwrap_or_default()
}

#[test]
fn the_dockerfile_cross_compiles_with_the_release_script_onto_an_empty_base() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert_eq!(*froms.last().unwrap(), "FROM scratch", "minimal final image");
    for from in &froms[..froms.len() - 1] {
        assert!(base_image(from).contains(':'), "pinned base image: {from}");
    }
    // The build stage runs on the builder's platform and cross-compiles
    // with the steps CI runs (scripts/release), for the image's platform.
    let build = froms.iter().find(|f| f.ends_with(" AS build")).expect("a build stage");
    assert!(build.contains("--platform=$BUILDPLATFORM"), "{build}");
    assert!(text.contains("ARG TARGETARCH"));
    assert!(text.contains("RUN scripts/release \"$TARGETARCH\""));
    assert!(text.contains("target/dist/csi-provider-aws-linux-$TARGETARCH"));
    let script = std::fs::read_to_string(root().join("scripts/release")).unwrap();
    // The release profile unless RELEASE_PROFILE_<ARCH> names another
    // (CI's quick arm64 build), which the image never sets.
    assert!(script.contains("cargo build --locked --profile \"$(profile \"$arch\")\""));
    assert!(script.contains("\"RUSTC_WORKSPACE_WRAPPER=cargo-auditable\""));
    assert!(script.contains("echo \"${!var:-release}\""));
    assert!(
        !text.contains("RELEASE_PROFILE"),
        "the image builds the release profile"
    );
    assert!(script.contains("unknown-linux-musl"), "static binary");
    // Every file the build reads is copied in, the scripts the release
    // script runs among them.
    let scripts: Vec<&str> = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '-')))
        .filter(|w| w.starts_with("scripts/") && w.len() > "scripts/".len())
        .collect();
    assert!(scripts.contains(&"scripts/apt-install"), "{scripts:?}");
    for file in [
        "rust-toolchain.toml",
        "Cargo.lock",
        // The C flags of the static builds (mimalloc's settings).
        ".cargo",
        "build.rs",
        "scripts/release",
        "proto",
        "src",
    ]
    .into_iter()
    .chain(scripts)
    {
        assert!(
            text.lines()
                .any(|l| l.starts_with("COPY ") && l.split_whitespace().any(|w| w == file)),
            "{file} is not copied"
        );
    }
    assert!(text.contains("ca-certificates.crt"));
    assert!(text.contains("ENTRYPOINT [\"/bin/csi-provider-aws\"]"));
}

#[test]
fn one_toolchain_is_pinned_for_builds_the_image_and_rust_version() {
    let pin = std::fs::read_to_string(root().join("rust-toolchain.toml")).unwrap();
    let channel = pin
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("a pinned channel");
    let parts: Vec<&str> = channel.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "pin a release, not a channel: {channel}"
    );
    let minor = format!("{}.{}", parts[0], parts[1]);
    // Cargo refuses to build with an older compiler than rust-version; the
    // pin is the compiler every test ran with, so it is the minimum.
    assert_eq!(env!("CARGO_PKG_RUST_VERSION"), minor, "Cargo.toml rust-version");
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let build = dockerfile
        .lines()
        .find(|l| l.starts_with("FROM ") && l.ends_with(" AS build"))
        .unwrap();
    assert_eq!(base_image(build), format!("rust:{minor}-bookworm"));
}

/// The probe the DaemonSet runs: `probe` through the provider socket.
fn probe_command() -> Value {
    serde_yaml::to_value([
        "/bin/csi-provider-aws",
        "probe",
        "--provider-volume=/var/run/secrets-store-csi-providers",
    ])
    .unwrap()
}
