//! `csi-provider-aws validate`: the Mount validation, offline, over
//! SecretProviderClass manifests.

use crate::common;

use std::process::Output;

use common::bad_cases::{Expect, cases};
use common::*;

const SPC_PARAMETERS: &[&str] = &[
    "objects",
    "region",
    "failoverRegion",
    "pathTranslation",
    "usePodIdentity",
    "preferredAddressType",
    "assumeRoleArn",
    "assumeRoleExternalId",
    "assumeRoleDurationSeconds",
    "templates",
];

fn validate(files: &[&std::path::Path]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("validate")
        .args(files)
        .output()
        .expect("run validate")
}

fn manifest(name: &str, params: &std::collections::BTreeMap<String, String>) -> String {
    let params: serde_yaml::Mapping = params
        .iter()
        .map(|(k, v)| (serde_yaml::Value::from(k.as_str()), serde_yaml::Value::from(v.as_str())))
        .collect();
    let doc = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"provider": "aws", "parameters": params},
    }))
    .unwrap();
    format!("---\n{doc}")
}

#[test]
fn the_example_class_is_valid() {
    let out = validate(&[std::path::Path::new("examples/secretproviderclass.yaml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("1 SecretProviderClass(es) for provider aws checked, 0 problem(s)"),
        "{stderr}"
    );
}

#[test]
fn every_class_level_bad_input_is_reported_with_the_mount_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("classes.yaml");
    let base = Req::new("- objectName: s\n  objectType: secretsmanager\n", dir.path());
    let mut text = String::new();
    let mut expected = Vec::new();
    for (i, (label, edit, expect)) in cases().into_iter().enumerate() {
        let req = edit(base.clone());
        // Cases about what the driver or the kubelet adds are not part of a class.
        let driver_side = req.raw_attributes.is_some()
            || req.target != base.target
            || req.permission != base.permission
            || req.secrets != base.secrets
            || req.tokens != base.tokens
            || req
                .attrs
                .keys()
                .any(|k| !SPC_PARAMETERS.contains(&k.as_str()) && !base.attrs.contains_key(k));
        if driver_side {
            continue;
        }
        let params = req
            .attrs
            .iter()
            .filter(|(k, _)| SPC_PARAMETERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let name = format!("case-{i}");
        text.push_str(&manifest(&name, &params));
        expected.push((label, name, expect));
    }
    // A valid class and a class of another provider in the same file.
    let mut good = std::collections::BTreeMap::new();
    good.insert(
        "objects".to_string(),
        "- objectName: s\n  objectType: secretsmanager\n".to_string(),
    );
    text.push_str(&manifest("good", &good));
    text.push_str("---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: azure}\nspec: {provider: azure, parameters: {objects: nonsense}}\n");
    text.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n");
    std::fs::write(&file, text).unwrap();
    assert!(expected.len() >= 40, "{} class-level cases", expected.len());

    let out = validate(&[&file]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = |name: &str| format!("{}: SecretProviderClass shop/{name}: ", file.display());
    let mut failures = Vec::new();
    for (label, name, expect) in &expected {
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&prefix(name))).collect();
        let found = lines.iter().any(|l| match expect {
            Expect::Exact(m) => *l == format!("{}{m}", prefix(name)),
            Expect::Prefix(p) => l.starts_with(&format!("{}{p}", prefix(name))),
        });
        if !found {
            failures.push(format!("{label}: {lines:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!stdout.contains("shop/good:"), "{stdout}");
    assert!(!stdout.contains("azure") && !stdout.contains("unrelated"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} SecretProviderClass(es) for provider aws checked",
            expected.len() + 1
        )),
        "{stderr}"
    );
}

#[test]
fn several_faulty_objects_are_each_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spc.yaml");
    let mut params = std::collections::BTreeMap::new();
    params.insert("usePodIdentity".to_string(), "yes".to_string());
    params.insert(
        "objects".to_string(),
        "- objectName: a\n- objectName: b\n  objectType: ssm\n- objectName: ok\n  objectType: secretsmanager\n"
            .to_string(),
    );
    std::fs::write(&file, manifest("multi", &params)).unwrap();
    let out = validate(&[&file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].ends_with("Must use objectType when a full ARN is not specified: a"));
    assert!(lines[1].ends_with("Invalid objectType: ssm"));
    assert!(lines[2].contains("usePodIdentity"));
}

#[test]
fn unreadable_files_and_broken_yaml_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: SecretProviderClass\nspec: [unclosed\n").unwrap();
    let out = validate(&[&broken, &dir.path().join("missing.yaml")]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("broken.yaml: document 1: not valid YAML"), "{stdout}");
    assert!(stdout.contains("missing.yaml: -: cannot read"), "{stdout}");
}

#[test]
fn validate_applies_the_providers_limits_and_takes_the_same_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limits.yaml");
    let mut params = std::collections::BTreeMap::new();
    params.insert("region".to_string(), "us-west-2".to_string());
    params.insert(
        "objects".to_string(),
        "- objectName: a\n  objectType: secretsmanager\n- objectName: b\n  objectType: secretsmanager\n".to_string(),
    );
    // Anchors, aliases and merge keys are read as the Go provider reads
    // them; what they expand to counts against the limits.
    let mut merged = params.clone();
    merged.insert(
        "objects".to_string(),
        "- &a {objectName: a, objectType: secretsmanager, filePermission: '0400'}\n- {<<: *a, objectName: b}\n"
            .to_string(),
    );
    let mut bomb = params.clone();
    let mut text = String::from("- objectName: a\n  objectType: secretsmanager\n  x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8]\n");
    for i in 1..8 {
        let prev = i - 1;
        text.push_str(&format!(
            "  x{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    bomb.insert("objects".to_string(), text);
    std::fs::write(
        &file,
        manifest("two", &params) + &manifest("merged", &merged) + &manifest("bomb", &bomb),
    )
    .unwrap();

    // Default limits: two objects pass, so do merged ones; the bomb is
    // refused by what it expands to, at its line.
    let out = validate(&[&file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].contains("shop/bomb") && lines[0].contains("aliases expanded") && lines[0].contains("(line "),
        "{stdout}"
    );

    // The provider's own flag: one file per mount refuses the class of two.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("validate")
        .arg("--max-files-per-mount=1")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("shop/two") && stdout.contains("2 files, more than the limit of 1 (--max-files-per-mount)"),
        "{stdout}"
    );
}

#[test]
fn validate_reads_a_manifest_as_kubectl_does_anchors_in_metadata_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anchors.yaml");
    std::fs::write(
        &file,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\n\
         kind: SecretProviderClass\n\
         metadata:\n  name: orders\n  namespace: shop\n  labels: &labels {team: orders, tier: prod}\n  \
         annotations:\n    <<: *labels\n\
         spec:\n  provider: aws\n  parameters:\n    region: us-west-2\n    objects: |\n      \
         - &db {objectName: prod/orders/db, objectType: secretsmanager, filePermission: '0400'}\n      \
         - {<<: *db, objectName: prod/orders/api-key}\n",
    )
    .unwrap();
    let out = validate(&[&file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("1 SecretProviderClass(es) for provider aws checked, 0 problem(s)"),
        "{stderr}"
    );
}
