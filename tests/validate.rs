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
    "assumeRoleSourceIdentity",
    "assumeRoleSessionTags",
    "templates",
];

fn validate(files: &[&std::path::Path]) -> Output {
    validate_with(&[], files)
}

fn validate_with(flags: &[&str], files: &[&std::path::Path]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("validate")
        .args(flags)
        .args(files)
        .output()
        .expect("run validate")
}

/// Validates `text` (written to a file of its own) with `flags`: the
/// output, and the file's name as it is printed.
fn validate_one(flags: &[&str], text: String) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("classes.yaml");
    std::fs::write(&file, text).unwrap();
    (validate_with(flags, &[&file]), file.display().to_string())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A SecretProviderClass document of `namespace`/`name` (either left out
/// when `None`) with the given `spec` (YAML, indented by two).
fn document(name: Option<&str>, spec: &str) -> String {
    let name = name.map(|n| format!("\n  name: {n}")).unwrap_or_default();
    format!(
        "---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  namespace: shop{name}\nspec:\n{spec}"
    )
}

/// The `spec` of a valid class, and of one with an invalid objectType.
const GOOD: &str =
    "  provider: aws\n  parameters:\n    objects: |\n      - objectName: s\n        objectType: secretsmanager\n";
const BAD_TYPE: &str =
    "  provider: aws\n  parameters:\n    objects: |\n      - objectName: s\n        objectType: ssm\n";

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
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout(&out),
        "examples/secretproviderclass.yaml: SecretProviderClass shop/orders-api: valid\n\
         examples/secretproviderclass.yaml: 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n\
         1 file(s), 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n"
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn show_files_lists_the_example_class_files_in_the_names_and_modes_the_driver_writes() {
    let out = validate_with(
        &["--show-files"],
        &[std::path::Path::new("examples/secretproviderclass.yaml")],
    );
    assert_eq!(out.status.code(), Some(0));
    // In the order the provider returns them: each object's jmesPath
    // entries, then its own file; the templates last.
    assert_eq!(
        stdout(&out),
        "examples/secretproviderclass.yaml: SecretProviderClass shop/orders-api: valid\n\
         \x20   0640  db-username\n\
         \x20   0640  api-key\n\
         \x20   0640  db.json\n\
         \x20   0644  db-previous.json\n\
         \x20   0644  _orders_feature-flags\n\
         \x20   0644  endpoints\n\
         \x20   0400  orders.env\n\
         examples/secretproviderclass.yaml: 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n\
         1 file(s), 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n"
    );
}

#[test]
fn show_files_gives_patterns_where_aws_names_the_files_and_lists_nothing_for_invalid_classes() {
    let keys_and_sets = "  provider: aws\n  parameters:\n    pathTranslation: \"False\"\n    objects: |\n      \
        - objectName: /team/app/db\n        objectType: secretsmanager\n        jsonKeysAsFiles: true\n        filePermission: \"0600\"\n      \
        - parameterPath: /team/app/config\n        objectType: ssmparameter\n        recursive: true\n        objectAlias: config\n      \
        - secretNamePrefix: team/certs/\n        jsonKeysAsFiles: true\n      \
        - secretFilters:\n          tag-key: [rotated]\n        objectAlias: tagged\n";
    let translated = "  provider: aws\n  parameters:\n    pathTranslation: \"-\"\n    objects: |\n      \
        - objectName: team/app/api\n        objectType: ssmparameter\n      \
        - parameterPath: /team/app/config\n        objectType: ssmparameter\n        objectAlias: a/b\n";
    let text =
        document(Some("keys"), keys_and_sets) + &document(Some("dash"), translated) + &document(Some("bad"), BAD_TYPE);
    let (out, f) = validate_one(&["--show-files"], text.clone());
    assert_eq!(out.status.code(), Some(1));
    let depends = "the names depend on what AWS returns";
    assert_eq!(
        stdout(&out),
        format!(
            "{f}: SecretProviderClass shop/keys: valid\n\
             \x20   0600  team/app/db/<key>  # one per top-level key of the value of /team/app/db (jsonKeysAsFiles); {depends}\n\
             \x20   0644  config/<name>  # one per match of parameterPath /team/app/config; {depends}\n\
             \x20   0644  <name>/<key>  # one per top-level key of the value of each match of secretNamePrefix team/certs/ (jsonKeysAsFiles); {depends}\n\
             \x20   0644  tagged/<name>  # one per match of secretFilters tag-key=rotated; {depends}\n\
             {f}: SecretProviderClass shop/dash: valid\n\
             \x20   0644  team-app-api\n\
             \x20   0644  a-b-<name>  # one per match of parameterPath /team/app/config; {depends}\n\
             {f}: SecretProviderClass shop/bad: Invalid objectType: ssm\n\
             {f}: 3 SecretProviderClass(es) for provider aws: 2 valid, 1 invalid, 1 problem(s)\n\
             1 file(s), 3 SecretProviderClass(es) for provider aws: 2 valid, 1 invalid, 1 problem(s)\n"
        )
    );
    // Without the flag, the verdicts alone.
    let (out, _) = validate_one(&[], text);
    assert!(!stdout(&out).contains("<name>") && !stdout(&out).contains("    0644"));
}

#[test]
fn every_file_and_class_gets_a_verdict_in_input_order_and_the_totals_come_last() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (
        GOOD,
        &format!(
            "{BAD_TYPE}      - objectName: t\n        objectType: secretsmanager\n        filePermission: \"4755\"\n"
        ),
    );
    let first = dir.path().join("a.yaml");
    std::fs::write(
        &first,
        document(Some("one"), good)
            + &document(Some("two"), bad)
            + &document(Some("legacy"), "  provider: azure\n")
            + &document(Some("typo"), "  provider: AWS\n")
            + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n"
            + &document(Some("three"), good),
    )
    .unwrap();
    let second = dir.path().join("b.yaml");
    std::fs::write(&second, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: only}\n").unwrap();
    let third = dir.path().join("c.yaml");
    std::fs::write(&third, document(Some("four"), good)).unwrap();

    let out = validate(&[&first, &second, &third]);
    assert_eq!(out.status.code(), Some(1));
    let (a, b, c) = (first.display(), second.display(), third.display());
    assert_eq!(
        stdout(&out),
        format!(
            "{a}: SecretProviderClass shop/one: valid\n\
             {a}: SecretProviderClass shop/two: Invalid objectType: ssm\n\
             {a}: SecretProviderClass shop/two: Invalid File Permission: 4755\n\
             {a}: SecretProviderClass shop/legacy: skipped: spec.provider is azure, not aws\n\
             {a}: SecretProviderClass shop/typo: skipped: spec.provider is AWS, not aws\n\
             {a}: SecretProviderClass shop/three: valid\n\
             {a}: 3 SecretProviderClass(es) for provider aws: 2 valid, 1 invalid, 2 problem(s)\n\
             {b}: 0 SecretProviderClass(es) for provider aws: 0 valid, 0 invalid, 0 problem(s)\n\
             {c}: SecretProviderClass shop/four: valid\n\
             {c}: 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n\
             3 file(s), 4 SecretProviderClass(es) for provider aws: 3 valid, 1 invalid, 2 problem(s)\n"
        )
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // Valid files only: exit 0, the same shape.
    let out = validate(&[&third, &second]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!(
            "{c}: SecretProviderClass shop/four: valid\n\
             {c}: 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n\
             {b}: 0 SecretProviderClass(es) for provider aws: 0 valid, 0 invalid, 0 problem(s)\n\
             2 file(s), 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n"
        )
    );
}

#[test]
fn a_class_without_a_usable_name_is_named_by_its_document_and_the_name_is_the_problem() {
    let (out, f) = validate_one(
        &[],
        document(None, GOOD)
            + &document(Some("\"\""), BAD_TYPE)
            + &document(Some("\"  \""), GOOD)
            + &document(Some("[orders]"), GOOD)
            + &document(Some("\"evil\\nforged: valid\""), GOOD)
            + &document(None, "  provider: azure\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "{f}: document 1: metadata.name is missing\n\
             {f}: document 2: metadata.name is empty\n\
             {f}: document 2: Invalid objectType: ssm\n\
             {f}: document 3: metadata.name is blank (only whitespace)\n\
             {f}: document 4: metadata.name is not a string\n\
             {f}: SecretProviderClass shop/evil\\nforged: valid: valid\n\
             {f}: document 6: skipped: spec.provider is azure, not aws\n\
             {f}: 5 SecretProviderClass(es) for provider aws: 1 valid, 4 invalid, 5 problem(s)\n\
             1 file(s), 5 SecretProviderClass(es) for provider aws: 1 valid, 4 invalid, 5 problem(s)\n"
        )
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
    // Every line names the file, and the classes come in their order: each
    // case with its problems, the valid class, the other provider's class
    // (the ConfigMap is no class), then the file's counts and the totals.
    let mut classes: Vec<String> = expected.iter().map(|(_, name, _)| format!("shop/{name}")).collect();
    classes.extend(["shop/good".to_string(), "default/azure".to_string()]);
    let mut seen: Vec<String> = Vec::new();
    let lines: Vec<&str> = stdout.lines().collect();
    let (classes_lines, counts) = lines.split_at(lines.len() - 2);
    for line in classes_lines {
        let rest = line.strip_prefix(&format!("{}: SecretProviderClass ", file.display()));
        let class = rest.and_then(|r| r.split(": ").next()).unwrap_or(line).to_string();
        if seen.last() != Some(&class) {
            seen.push(class);
        }
    }
    assert_eq!(seen, classes, "{stdout}");
    assert!(
        classes_lines.contains(&format!("{}valid", prefix("good")).as_str()),
        "{stdout}"
    );
    assert!(
        classes_lines.contains(
            &format!(
                "{}: SecretProviderClass default/azure: skipped: spec.provider is azure, not aws",
                file.display()
            )
            .as_str()
        ),
        "{stdout}"
    );
    let n = expected.len();
    assert!(
        counts[0].starts_with(&format!(
            "{}: {} SecretProviderClass(es) for provider aws: 1 valid, {n} invalid, ",
            file.display(),
            n + 1
        )),
        "{stdout}"
    );
    assert!(
        counts[1].starts_with(&format!(
            "1 file(s), {} SecretProviderClass(es) for provider aws: 1 valid, {n} invalid, ",
            n + 1
        )),
        "{stdout}"
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
    let f = format!("{}: SecretProviderClass shop/multi", file.display());
    assert_eq!(
        stdout(&out),
        format!(
            "{f}: Must use objectType when a full ARN is not specified: a\n\
             {f}: Invalid objectType: ssm\n\
             {f}: failed to parse usePodIdentity value, error: strconv.ParseBool: parsing \"yes\": invalid syntax\n\
             {}: 1 SecretProviderClass(es) for provider aws: 0 valid, 1 invalid, 3 problem(s)\n\
             1 file(s), 1 SecretProviderClass(es) for provider aws: 0 valid, 1 invalid, 3 problem(s)\n",
            file.display()
        )
    );
}

#[test]
fn unreadable_files_and_broken_yaml_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: SecretProviderClass\nspec: [unclosed\n").unwrap();
    let missing = dir.path().join("missing.yaml");
    let out = validate(&[&broken, &missing]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = stdout(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    let (b, m) = (broken.display(), missing.display());
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{b}: document 1: not valid YAML: ")),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        [
            format!("{b}: 0 SecretProviderClass(es) for provider aws: 0 valid, 0 invalid, 1 problem(s)"),
            format!("{m}: cannot read: No such file or directory (os error 2)"),
            format!("{m}: 0 SecretProviderClass(es) for provider aws: 0 valid, 0 invalid, 1 problem(s)"),
            "2 file(s), 0 SecretProviderClass(es) for provider aws: 0 valid, 0 invalid, 2 problem(s)".to_string(),
        ]
    );
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
    assert_eq!(lines.len(), 5, "{stdout}");
    let class = |name: &str| format!("{}: SecretProviderClass shop/{name}: ", file.display());
    assert_eq!(lines[0], format!("{}valid", class("two")));
    assert_eq!(lines[1], format!("{}valid", class("merged")));
    assert!(
        lines[2].starts_with(&class("bomb")) && lines[2].contains("aliases expanded") && lines[2].contains("(line "),
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
        stdout.ends_with("1 file(s), 1 SecretProviderClass(es) for provider aws: 1 valid, 0 invalid, 0 problem(s)\n"),
        "{stdout}"
    );
}
