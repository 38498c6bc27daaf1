//! Scenarios of the driver's AWS end-to-end suite and the reference's
//! integration suite, adapted: the provider binary over a real socket,
//! moto for AWS (STS, Secrets Manager, SSM wire semantics, including its
//! out-of-order, selector-less GetParameters answers), and the fake
//! Kubernetes API for ServiceAccounts, pods and nodes.

use crate::common;

use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_ssm::types::ParameterType;
use common::moto::{self, unique};
use common::*;

async fn moto_env(args: &[&str]) -> (FakeKube, Provider) {
    moto::env(Options {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    })
    .await
}

async fn create_secret(region: &str, name: &str, value: &str) -> (String, String) {
    let out = moto::secrets_manager(region)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create secret");
    (out.arn.unwrap_or_default(), out.version_id.unwrap_or_default())
}

async fn put_secret(region: &str, name: &str, value: &str) -> String {
    moto::secrets_manager(region)
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .expect("put secret value")
        .version_id
        .unwrap_or_default()
}

async fn put_param(region: &str, name: &str, value: &str, kind: ParameterType) -> i64 {
    moto::ssm(region)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter")
        .version
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn driver_e2e_basic_mount_reads_secrets_and_parameters_with_region_from_the_node() {
    let (kube, provider) = moto_env(&[]).await;
    let sm1 = unique("SecretsManagerTest1");
    let sm2 = unique("SecretsManagerTest2");
    let sync = unique("SecretsManagerSync");
    let pm1 = unique("ParameterStoreTest1");
    let pm_long = unique("ParameterStoreTestWithLongName");
    create_secret(REGION, &sm1, "SecretsManagerTest1Value").await;
    let (sm2_arn, _) = create_secret(REGION, &sm2, "SecretsManagerTest2Value").await;
    create_secret(REGION, &sync, "SecretUser").await;
    put_param(REGION, &pm1, "ParameterStoreTest1Value", ParameterType::SecureString).await;
    put_param(
        REGION,
        &pm_long,
        "ParameterStoreTest2Value",
        ParameterType::SecureString,
    )
    .await;

    let objects = format!(
        r#"
- objectName: "{pm1}"
  objectType: "ssmparameter"
- objectName: "{pm_long}"
  objectType: "ssmparameter"
  objectAlias: "ParameterStoreTest2"
- objectName: "{sm1}"
  objectType: "secretsmanager"
- objectName: "{sm2_arn}"
  objectAlias: "SecretsManagerTest2"
- objectName: "{sync}"
  objectType: "secretsmanager"
"#
    );
    let target = provider.target("basic");
    let resp = provider
        .mount(&Req::new(&objects, &target).unset("region"))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files[&pm1], b"ParameterStoreTest1Value");
    assert_eq!(files["ParameterStoreTest2"], b"ParameterStoreTest2Value");
    assert_eq!(files[&sm1], b"SecretsManagerTest1Value");
    assert_eq!(files["SecretsManagerTest2"], b"SecretsManagerTest2Value");
    // secretObjects map files by name: the synced object's file is its name.
    assert_eq!(files[&sync], b"SecretUser");
    let v = versions(&resp);
    assert_eq!(v.len(), 5);
    assert_eq!(v[&pm1], "1");
    assert!(
        kube.calls().iter().any(|c| c.ends_with("/nodes/node-1")),
        "region came from the node"
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn driver_e2e_rotation_of_a_parameter_and_a_secret_reaches_the_files() {
    let (_kube, provider) = moto_env(&[]).await;
    let pm = unique("ParameterStoreRotationTest");
    let sm = unique("SecretsManagerRotationTest");
    put_param(REGION, &pm, "BeforeRotation", ParameterType::SecureString).await;
    let (_, v1) = create_secret(REGION, &sm, "BeforeRotation").await;
    let objects =
        format!("- objectName: {pm}\n  objectType: ssmparameter\n- objectName: {sm}\n  objectType: secretsmanager\n");
    let target = provider.target("rotation");
    let req = Req::new(&objects, &target);
    let r1 = provider.mount(&req).await.expect("mount");
    assert_eq!(read_mount(&target)[&pm], b"BeforeRotation");
    assert_eq!(versions(&r1)[&sm], v1);

    put_param(REGION, &pm, "AfterRotation", ParameterType::SecureString).await;
    let v2 = put_secret(REGION, &sm, "AfterRotation").await;
    let r2 = provider.mount(&req).await.expect("remount");
    let files = read_mount(&target);
    assert_eq!(files[&pm], b"AfterRotation");
    assert_eq!(files[&sm], b"AfterRotation");
    assert_eq!(versions(&r2)[&pm], "2", "versions change with content");
    assert_eq!(versions(&r2)[&sm], v2);
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn integration_jmes_paths_with_capitalised_keys_on_ssm_and_secrets_manager() {
    let (_kube, provider) = moto_env(&[]).await;
    let sm = unique("secretsManagerJson");
    let pm = unique("jsonSsm");
    create_secret(
        REGION,
        &sm,
        r#"{"username": "SecretsManagerUser", "password": "SecretsManagerPassword"}"#,
    )
    .await;
    put_param(
        REGION,
        &pm,
        r#"{"username": "SsmUser", "password": "SsmPassword"}"#,
        ParameterType::SecureString,
    )
    .await;
    let objects = format!(
        r#"
- objectName: {pm}
  objectType: ssmparameter
  jmesPath:
    - Path: username
      ObjectAlias: ssmUsername
    - Path: password
      ObjectAlias: ssmPassword
- objectName: {sm}
  objectType: secretsmanager
  jmesPath:
    - Path: username
      ObjectAlias: secretsManagerUsername
    - Path: password
      ObjectAlias: secretsManagerPassword
"#
    );
    let target = provider.target("jmes");
    provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["ssmUsername"], b"SsmUser");
    assert_eq!(files["ssmPassword"], b"SsmPassword");
    assert_eq!(files["secretsManagerUsername"], b"SecretsManagerUser");
    assert_eq!(files["secretsManagerPassword"], b"SecretsManagerPassword");
    assert!(
        files[&sm].starts_with(b"{") && files[&pm].starts_with(b"{"),
        "full JSON files too"
    );

    // After the JSON changes, a remount reaches the new values.
    put_secret(REGION, &sm, r#"{"username": "Rotated", "password": "Rotated2"}"#).await;
    provider.mount(&Req::new(&objects, &target)).await.expect("remount");
    assert_eq!(read_mount(&target)["secretsManagerUsername"], b"Rotated");
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn integration_failover_object_with_arns_in_two_regions() {
    let (_kube, provider) = moto_env(&[]).await;
    let name = unique("failover-db");
    let replica = unique("failover-db-replica");
    let (primary_arn, v) = create_secret(REGION, &name, "primary-value").await;
    let (replica_arn, _) = create_secret(FAILOVER, &replica, "replica-value").await;
    let objects =
        format!("- objectName: {primary_arn}\n  objectAlias: db\n  failoverObject:\n    objectName: {replica_arn}\n");
    let target = provider.target("failover");
    let resp = provider
        .mount(&Req::new(&objects, &target).set("failoverRegion", FAILOVER))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["db"], b"primary-value");
    assert_eq!(versions(&resp)["db"], v);
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn versions_stages_and_labels_resolve_against_moto() {
    let (_kube, provider) = moto_env(&[]).await;
    let sm = unique("staged");
    let pm = unique("/team/labelled");
    let (_, v1) = create_secret(REGION, &sm, "first").await;
    put_secret(REGION, &sm, "second").await;
    put_param(REGION, &pm, "one", ParameterType::String).await;
    put_param(REGION, &pm, "two", ParameterType::String).await;
    put_param(REGION, &pm, "three", ParameterType::String).await;
    moto::ssm(REGION)
        .label_parameter_version()
        .name(&pm)
        .parameter_version(1)
        .labels("stable")
        .send()
        .await
        .expect("label");
    let objects = format!(
        r#"
- objectName: {sm}
  objectType: secretsmanager
  objectVersionLabel: AWSPREVIOUS
  objectAlias: previous
- objectName: {sm}
  objectType: secretsmanager
  objectVersion: {v1}
  objectAlias: pinned
- objectName: {pm}
  objectType: ssmparameter
  objectVersionLabel: stable
  objectAlias: stable
- objectName: {pm}
  objectType: ssmparameter
  objectVersion: 2
  objectAlias: v2
- objectName: {pm}
  objectType: ssmparameter
  objectAlias: latest
"#
    );
    let target = provider.target("versions");
    let resp = provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["previous"], b"first");
    assert_eq!(files["pinned"], b"first");
    assert_eq!(files["stable"], b"one");
    assert_eq!(files["v2"], b"two");
    assert_eq!(files["latest"], b"three");
    let v = versions(&resp);
    assert_eq!(
        (v["stable"].as_str(), v["v2"].as_str(), v["latest"].as_str()),
        ("1", "2", "3")
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn binary_secrets_and_string_lists_against_moto() {
    let (_kube, provider) = moto_env(&[]).await;
    let bin = unique("binary");
    let list = unique("list");
    let bytes = vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x0a];
    moto::secrets_manager(REGION)
        .create_secret()
        .name(&bin)
        .secret_binary(Blob::new(bytes.clone()))
        .send()
        .await
        .expect("create");
    put_param(REGION, &list, "a,b,c", ParameterType::StringList).await;
    let target = provider.target("binary");
    provider
        .mount(&Req::new(
            &format!(
                "- objectName: {bin}\n  objectType: secretsmanager\n- objectName: {list}\n  objectType: ssmparameter\n"
            ),
            &target,
        ))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files[&bin], bytes);
    assert_eq!(files[&list], b"a,b,c");
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn more_than_ten_parameters_against_moto() {
    let (_kube, provider) = moto_env(&[]).await;
    let mut objects = String::new();
    let mut names = Vec::new();
    for i in 0..25 {
        let n = unique(&format!("/batch/p{i}"));
        put_param(REGION, &n, &format!("value-{i}"), ParameterType::SecureString).await;
        objects.push_str(&format!("- objectName: {n}\n  objectType: ssmparameter\n"));
        names.push(n);
    }
    let target = provider.target("batch");
    provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(files[&n.replace('/', "_")], format!("value-{i}").as_bytes());
    }
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn a_missing_secret_and_a_missing_parameter_fail_against_moto() {
    let (_kube, provider) = moto_env(&[]).await;
    let target = provider.target("missing");
    let err = provider
        .mount(&Req::new(
            "- objectName: does-not-exist\n  objectType: secretsmanager\n",
            &target,
        ))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("does-not-exist") && err.message().contains("ResourceNotFoundException"),
        "{}",
        err.message()
    );
    let err = provider
        .mount(&Req::new(
            "- objectName: /no/such/param\n  objectType: ssmparameter\n",
            &target,
        ))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("/no/such/param"), "{}", err.message());
    assert!(all_entries(&target).is_empty());
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn integration_driver_writes_mode_through_the_debug_client_creates_symlinks() {
    let (_kube, provider) = moto_env(&["--driver-writes-secrets"]).await;
    let sm = unique("dw-secret");
    let pm = unique("dw-param");
    create_secret(REGION, &sm, "dw-secret-value").await;
    put_param(REGION, &pm, "dw-param-value", ParameterType::SecureString).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spc = dir.path().join("spc.yaml");
    std::fs::write(
        &spc,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: dw\n  namespace: default\n\
             spec:\n  provider: aws\n  parameters:\n    region: {REGION}\n    objects: |\n      - objectName: {sm}\n        objectType: secretsmanager\n      - objectName: {pm}\n        objectType: ssmparameter\n"
        ),
    )
    .expect("spc");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN_A).expect("token");
    let target = dir.path().join("mnt");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .arg("mount")
        .arg(format!("--spc={}", spc.display()))
        .arg(format!("--target={}", target.display()))
        .arg(format!("--socket={}", provider.socket.display()))
        .arg("--pod-name=pod-a")
        .arg("--service-account=sa-a")
        .arg(format!("--token=sts.amazonaws.com={}", token.display()))
        .output()
        .await
        .expect("run debug client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("wrote the returned files"), "{stdout}");
    assert!(
        stdout.contains(&format!("{sm}\t")) && stdout.contains(&format!("{pm}\t1")),
        "{stdout}"
    );
    let files = read_mount(&target);
    assert_eq!(files[&sm], b"dw-secret-value");
    assert_eq!(files[&pm], b"dw-param-value");
    let meta = std::fs::symlink_metadata(target.join(&sm)).expect("entry");
    assert!(
        meta.file_type().is_symlink(),
        "the atomic writer links files from ..data"
    );
    assert!(
        std::fs::symlink_metadata(target.join("..data"))
            .expect("..data")
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn integration_pod_identity_variant_against_moto() {
    let agent = FakeAgent::start("127.0.0.1:0").await;
    let url = agent.url();
    let (kube, provider) = moto_env(&[&format!("--pod-identity-endpoint-ipv4={url}")]).await;
    let sm = unique("pi-secret");
    let pm = unique("pi-param");
    create_secret(REGION, &sm, "pi-secret-value").await;
    put_param(REGION, &pm, "pi-param-value", ParameterType::SecureString).await;
    let target = provider.target("pod-identity");
    provider
        .mount(
            &Req::new(
                &format!(
                    "- objectName: {sm}\n  objectType: secretsmanager\n- objectName: {pm}\n  objectType: ssmparameter\n"
                ),
                &target,
            )
            .set("usePodIdentity", "true"),
        )
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files[&sm], b"pi-secret-value");
    assert_eq!(files[&pm], b"pi-param-value");
    assert_eq!(agent.tokens(), vec![PI_TOKEN_A.to_string()]);
    assert!(kube.calls().is_empty());
}

const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-secrets";

/// A secret and a parameter in account 111111111111, which the pod's own
/// role (account 123456789012) cannot read.
async fn seed_central_account() -> (String, String) {
    let (sm, ssm) = moto::in_account(CENTRAL, REGION).await;
    let secret = unique("central-secret");
    let param = unique("central-param");
    sm.create_secret()
        .name(&secret)
        .secret_string("central-secret-value")
        .send()
        .await
        .expect("create secret in 111111111111");
    ssm.put_parameter()
        .name(&param)
        .value("central-param-value")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter in 111111111111");
    (secret, param)
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn cross_account_secrets_are_read_through_the_chained_role_with_irsa_and_not_without() {
    let (_kube, provider) = moto_env(&[]).await;
    let (secret, param) = seed_central_account().await;
    let objects = format!(
        "- objectName: {secret}\n  objectType: secretsmanager\n- objectName: {param}\n  objectType: ssmparameter\n"
    );

    // The pod's own identity lives in another account: not found there.
    let target = provider.target("no-chain");
    let err = provider
        .mount(&Req::new(&objects, &target))
        .await
        .expect_err("the pod's own account has no such secret");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(err.message().contains(&secret), "{}", err.message());
    assert!(all_entries(&target).is_empty());

    let target = provider.target("chained");
    provider
        .mount(&Req::new(&objects, &target).set("assumeRoleArn", CENTRAL))
        .await
        .expect("mount through the chained role");
    let files = read_mount(&target);
    assert_eq!(files[&secret], b"central-secret-value");
    assert_eq!(files[&param], b"central-param-value");

    // As an object field, with an external id, next to an object of the
    // pod's own account.
    let own = unique("own-secret");
    create_secret(REGION, &own, "own-value").await;
    let objects = format!(
        "- objectName: {secret}\n  objectType: secretsmanager\n  assumeRoleArn: {CENTRAL}\n  assumeRoleExternalId: tenant-42\n\
         - objectName: {own}\n  objectType: secretsmanager\n"
    );
    let target = provider.target("per-object");
    provider
        .mount(&Req::new(&objects, &target))
        .await
        .expect("objects of two accounts in one class");
    let files = read_mount(&target);
    assert_eq!(files[&secret], b"central-secret-value");
    assert_eq!(files[&own], b"own-value");
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn cross_account_secrets_are_read_through_the_chained_role_with_pod_identity() {
    let agent = FakeAgent::start("127.0.0.1:0").await;
    let url = agent.url();
    let (_kube, provider) = moto_env(&[&format!("--pod-identity-endpoint-ipv4={url}")]).await;
    let (secret, _) = seed_central_account().await;
    let objects = format!("- objectName: {secret}\n  objectType: secretsmanager\n");
    let req = |target| Req::new(&objects, target).set("usePodIdentity", "true");

    let target = provider.target("pi-no-chain");
    let err = provider
        .mount(&req(&target))
        .await
        .expect_err("not in the pod's account");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    let target = provider.target("pi-chained");
    provider
        .mount(&req(&target).set("assumeRoleArn", CENTRAL))
        .await
        .expect("mount through the chained role");
    assert_eq!(read_mount(&target)[&secret], b"central-secret-value");
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn every_json_key_becomes_a_file_under_the_alias_in_both_write_modes() {
    let secret = unique("json-keys");
    let (_, version) = create_secret(
        REGION,
        &secret,
        r#"{"username": "orders", "password": "s3cr3t", "port": 5432, "tls": {"ca": "pem", "verify": true}}"#,
    )
    .await;
    let objects = format!(
        "- objectName: {secret}\n  objectType: secretsmanager\n  objectAlias: db\n  jsonKeysAsFiles: true\n  filePermission: \"0640\"\n  jmesPath:\n    - path: username\n      objectAlias: db-user\n"
    );
    for driver_writes in [false, true] {
        let args: &[&str] = if driver_writes {
            &["--driver-writes-secrets"]
        } else {
            &[]
        };
        let (_kube, provider) = moto_env(args).await;
        let target = provider.target(&format!("keys-{driver_writes}"));
        let resp = provider.mount(&Req::new(&objects, &target)).await.expect("mount");
        let files: std::collections::BTreeMap<String, Vec<u8>> = if driver_writes {
            file_map(&resp).into_iter().map(|(k, (_, v))| (k, v)).collect()
        } else {
            read_mount(&target)
        };
        let expected: std::collections::BTreeMap<String, Vec<u8>> = [
            ("db/username", "orders"),
            ("db/password", "s3cr3t"),
            ("db/port", "5432"),
            ("db/tls", r#"{"ca":"pem","verify":true}"#),
            ("db-user", "orders"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(files, expected, "driver writes: {driver_writes}");
        let versions = versions(&resp);
        assert_eq!(versions.len(), 5);
        assert!(versions.values().all(|v| *v == version), "{versions:?}");
        if driver_writes {
            assert!(file_map(&resp).values().filter(|(m, _)| *m == 0o640).count() == 5);
        } else {
            assert_eq!(mode_of(&target.join("db/password")), 0o640);
        }
    }

    // A key removed from the secret disappears at the next remount; a key
    // that is not a file name fails the mount naming the object and the
    // rule, and leaves the files as they were.
    let (_kube, provider) = moto_env(&[]).await;
    let target = provider.target("keys-rotation");
    provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    put_secret(REGION, &secret, r#"{"username": "orders", "password": "rotated"}"#).await;
    provider.mount(&Req::new(&objects, &target)).await.expect("remount");
    let files = read_mount(&target);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["db-user", "db/password", "db/username"],
        "port and tls are gone"
    );
    assert_eq!(files["db/password"], b"rotated");
    put_secret(REGION, &secret, r#"{"username": "orders", "../escape": "x"}"#).await;
    let err = provider.mount(&Req::new(&objects, &target)).await.expect_err("bad key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert_eq!(
        err.message(),
        format!(
            r#"jsonKeysAsFiles of object {secret}: key "../escape" is not a file name: it contains "/", which would make a subdirectory"#
        )
    );
    assert_eq!(read_mount(&target), files, "nothing changed");
    put_secret(REGION, &secret, "plain text").await;
    let only_keys = format!("- objectName: {secret}\n  objectType: secretsmanager\n  jsonKeysAsFiles: true\n");
    let err = provider
        .mount(&Req::new(&only_keys, &target))
        .await
        .expect_err("not JSON");
    assert_eq!(
        err.message(),
        format!("jsonKeysAsFiles of object {secret}: the value is not a JSON object")
    );
    assert!(!err.message().contains("plain text"));
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn bulk_parameters_by_path_and_secrets_by_prefix_and_tag_against_moto() {
    let (_kube, provider) = moto_env(&[]).await;
    let root = format!("/{}", unique("bulk"));
    for i in 0..27 {
        put_param(
            REGION,
            &format!("{root}/p{i:02}"),
            &format!("value-{i}"),
            ParameterType::SecureString,
        )
        .await;
    }
    put_param(REGION, &format!("{root}/nested/deep"), "deep", ParameterType::String).await;
    let prefix = format!("{}/", unique("bulk-secrets"));
    for i in 0..28 {
        let mut create = moto::secrets_manager(REGION)
            .create_secret()
            .name(format!("{prefix}s{i:02}"))
            .secret_string(format!("secret-{i}"));
        if i < 26 {
            create = create.tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(prefix.trim_end_matches('/'))
                    .value("yes")
                    .build(),
            );
        }
        create.send().await.expect("create secret");
    }
    let objects = format!(
        "- parameterPath: {root}\n  objectType: ssmparameter\n  objectAlias: params\n\
         - secretNamePrefix: {prefix}\n  objectType: secretsmanager\n  objectAlias: secrets\n\
         - secretFilters:\n    tag-key: {}\n  objectType: secretsmanager\n  objectAlias: tagged\n",
        prefix.trim_end_matches('/')
    );
    let target = provider.target("bulk");
    let req = Req::new(&objects, &target).set("pathTranslation", "False");
    let resp = provider.mount(&req).await.expect("mount");
    let files = read_mount(&target);
    let count = |dir: &str| files.keys().filter(|k| k.starts_with(dir)).count();
    assert_eq!(
        (count("params/"), count("secrets/"), count("tagged/")),
        (27, 28, 26),
        "{:?}",
        files.keys()
    );
    assert_eq!(files["params/p26"], b"value-26", "decrypted, past the second page");
    assert_eq!(files["secrets/s27"], b"secret-27", "past the first page of 20");
    assert_eq!(
        files[&format!("tagged/{prefix}s25")],
        b"secret-25",
        "tags name files by full name"
    );
    assert_eq!(versions(&resp)["params/p26"], "1");

    // Additions and deletions reach the files at the next remount.
    put_param(REGION, &format!("{root}/p99"), "added", ParameterType::String).await;
    moto::ssm(REGION)
        .delete_parameter()
        .name(format!("{root}/p00"))
        .send()
        .await
        .expect("delete parameter");
    moto::secrets_manager(REGION)
        .delete_secret()
        .secret_id(format!("{prefix}s00"))
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete secret");
    provider.mount(&req).await.expect("remount");
    let files = read_mount(&target);
    assert_eq!(files["params/p99"], b"added");
    assert!(!files.contains_key("params/p00") && !files.contains_key("secrets/s00"));
    assert!(!files.contains_key(&format!("tagged/{prefix}s00")));
    assert_eq!(files.len(), 27 + 27 + 25);

    // Every key of each match as a file.
    let keys_prefix = format!("{}/", unique("bulk-keys"));
    for svc in ["orders", "payments"] {
        create_secret(
            REGION,
            &format!("{keys_prefix}{svc}"),
            &format!(r#"{{"user": "{svc}", "port": 5432}}"#),
        )
        .await;
    }
    let target = provider.target("bulk-keys");
    provider
        .mount(&Req::new(
            &format!("- secretNamePrefix: {keys_prefix}\n  jsonKeysAsFiles: true\n"),
            &target,
        ))
        .await
        .expect("mount");
    assert_eq!(
        read_mount(&target).keys().collect::<Vec<_>>(),
        ["orders/port", "orders/user", "payments/port", "payments/user"]
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn values_are_decoded_and_non_string_results_written_as_json_when_asked() {
    let (_kube, provider) = moto_env(&[]).await;
    // A keystore kept base64 in a JSON field, a hex key, a base64 binary
    // secret, and a nested object.
    let keystore: Vec<u8> = (0u8..=255).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&keystore);
    let json = unique("decode-json");
    create_secret(
        REGION,
        &json,
        &format!(r#"{{"keystore": "{b64}", "key": "00ff10", "tls": {{"verify": true, "ca": "pem"}}, "port": 5432}}"#),
    )
    .await;
    let binary = unique("decode-binary");
    moto::secrets_manager(REGION)
        .create_secret()
        .name(&binary)
        .secret_binary(Blob::new(b64.as_bytes().to_vec()))
        .send()
        .await
        .expect("binary secret");
    let param = unique("/decode/param");
    put_param(REGION, &param, "68656c6c6f", ParameterType::SecureString).await;
    let keys = unique("decode-keys");
    create_secret(REGION, &keys, r#"{"a": "YQ==", "b": "Yg=="}"#).await;
    let objects = format!(
        "- objectName: {json}\n  objectType: secretsmanager\n  objectAlias: app.json\n  jmesPath:\n\
         \x20   - {{path: keystore, objectAlias: keystore.p12, objectEncoding: base64}}\n\
         \x20   - {{path: key, objectAlias: key.bin, objectEncoding: hex}}\n\
         \x20   - {{path: tls, objectAlias: tls.json, nonStringAsJson: true}}\n\
         \x20   - {{path: port, objectAlias: port, nonStringAsJson: true}}\n\
         - objectName: {binary}\n  objectType: secretsmanager\n  objectAlias: binary.p12\n  objectEncoding: base64\n\
         - objectName: {param}\n  objectType: ssmparameter\n  objectAlias: hello\n  objectEncoding: hex\n\
         - objectName: {keys}\n  objectType: secretsmanager\n  objectAlias: keys\n  jsonKeysAsFiles: true\n  objectEncoding: base64\n"
    );
    let target = provider.target("decode");
    provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["keystore.p12"], keystore);
    assert_eq!(files["key.bin"], [0x00, 0xff, 0x10]);
    assert_eq!(files["tls.json"], br#"{"ca":"pem","verify":true}"#);
    assert_eq!(files["port"], b"5432");
    assert_eq!(files["binary.p12"], keystore, "a binary secret holding base64 text");
    assert_eq!(files["hello"], b"hello");
    assert_eq!(
        (files["keys/a"].as_slice(), files["keys/b"].as_slice()),
        (&b"a"[..], &b"b"[..])
    );
    assert!(
        files["app.json"].starts_with(b"{\"keystore\""),
        "the object's own file as stored"
    );

    // Invalid input names the object and the file, never the value; the
    // default still refuses a non-string result.
    let bad = format!("- objectName: {json}\n  objectType: secretsmanager\n  objectEncoding: hex\n");
    let err = provider
        .mount(&Req::new(&bad, &provider.target("bad-hex")))
        .await
        .expect_err("not hex");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("objectEncoding of object {json}: the value of file {json} is not valid hex")
    );
    let strict = format!(
        "- objectName: {json}\n  objectType: secretsmanager\n  jmesPath:\n    - {{path: tls, objectAlias: tls}}\n"
    );
    let err = provider
        .mount(&Req::new(&strict, &provider.target("strict")))
        .await
        .expect_err("object result");
    assert_eq!(
        err.message(),
        "Invalid JMES search result type for path:tls. Only string is allowed."
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn templates_combine_secrets_manager_ssm_and_jmespath_values_and_follow_rotation() {
    let (_kube, provider) = moto_env(&[]).await;
    let db = unique("tmpl-db");
    create_secret(REGION, &db, r#"{"username": "app", "password": "p@ss w'rd"}"#).await;
    let host = unique("/tmpl/host");
    put_param(REGION, &host, "db-1.internal", ParameterType::String).await;
    let api = unique("tmpl-api");
    create_secret(REGION, &api, "k-1").await;
    let objects = format!(
        "- objectName: {db}\n  objectType: secretsmanager\n  objectAlias: db\n  jmesPath:\n\
         \x20   - {{path: username, objectAlias: db-user}}\n\
         - objectName: {host}\n  objectType: ssmparameter\n  objectAlias: host\n\
         - objectName: {api}\n  objectType: secretsmanager\n  objectAlias: api-key\n"
    );
    let templates = "\
- fileName: db.env
  filePermission: \"0400\"
  template: |
    DB_USER={{ files[\"db-user\"] }}
    DB_PASSWORD={{ (files.db | fromjson).password | shellquote }}
    DB_HOST={{ files.host }}
- fileName: jdbc.url
  template: >-
    jdbc:postgresql://{{ files.host }}:5432/app?user={{ files[\"db-user\"] | urlencode }}&password={{ (files.db | fromjson).password | urlencode }}
- fileName: api.env
  template: \"API_KEY={{ files['api-key'] }}\"
";
    let target = provider.target("templates");
    let req = Req::new(&objects, &target).set("templates", templates);
    let r1 = provider.mount(&req).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(
        String::from_utf8_lossy(&files["db.env"]),
        "DB_USER=app\nDB_PASSWORD='p@ss w'\\''rd'\nDB_HOST=db-1.internal\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["jdbc.url"]),
        "jdbc:postgresql://db-1.internal:5432/app?user=app&password=p%40ss%20w%27rd"
    );
    assert_eq!(files["api.env"], b"API_KEY=k-1");
    assert_eq!(mode_of(&target.join("db.env")), 0o400);
    assert_eq!(mode_of(&target.join("jdbc.url")), 0o644, "the class's mode");
    assert_eq!(
        files["db"], br#"{"username": "app", "password": "p@ss w'rd"}"#,
        "the inputs stay files of their own"
    );
    let v1 = versions(&r1);

    // The parameter rotates: the templates that read it change version,
    // the one that does not keeps its version.
    put_param(REGION, &host, "db-2.internal", ParameterType::String).await;
    let r2 = provider.mount(&req).await.expect("remount");
    let files = read_mount(&target);
    assert!(String::from_utf8_lossy(&files["db.env"]).contains("DB_HOST=db-2.internal"));
    let v2 = versions(&r2);
    assert_ne!(v2["db.env"], v1["db.env"]);
    assert_ne!(v2["jdbc.url"], v1["jdbc.url"]);
    assert_eq!(v2["api.env"], v1["api.env"]);
    assert_eq!(v2["host"], "2");

    // The secret rotates: only api.env changes.
    put_secret(REGION, &api, "k-2").await;
    let r3 = provider.mount(&req).await.expect("remount");
    assert_eq!(read_mount(&target)["api.env"], b"API_KEY=k-2");
    let v3 = versions(&r3);
    assert_ne!(v3["api.env"], v2["api.env"]);
    assert_eq!((&v3["db.env"], &v3["jdbc.url"]), (&v2["db.env"], &v2["jdbc.url"]));

    // An error at render names the template and the line, never a value,
    // and the mounted files stay as they were.
    let broken = "- fileName: db.env\n  template: |\n    ok\n    {{ (files['api-key'] | fromjson).key }}\n";
    let err = provider
        .mount(&Req::new(&objects, &target).set("templates", broken))
        .await
        .expect_err("not JSON");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "template db.env, line 2: invalid operation: fromjson: the value is not JSON"
    );
    assert_eq!(read_mount(&target)["api.env"], b"API_KEY=k-2", "nothing written");
    assert!(String::from_utf8_lossy(&read_mount(&target)["db.env"]).contains("DB_HOST=db-2.internal"));
    let fresh = provider.target("templates-broken");
    provider
        .mount(&Req::new(&objects, &fresh).set("templates", broken))
        .await
        .expect_err("not JSON");
    assert!(all_entries(&fresh).is_empty(), "a failed first mount writes nothing");
}

/// What AWS records of a session: moto names each assumed-role session
/// (the ARN CloudTrail shows for its calls) with the session name the
/// provider sent. Two long ServiceAccounts of one long namespace, sharing
/// a role, get sessions of their own, and so do their chained sessions.
#[tokio::test]
#[ignore = "needs moto (scripts/venv); scripts/test runs it"]
async fn each_service_account_gets_its_own_session_in_the_assumed_role_arn() {
    let (kube, provider) = moto_env(&[]).await;
    let (secret, _) = seed_central_account().await;
    let namespace = unique("payments-settlement-platform-production");
    let accounts = [
        "reconciliation-worker-for-card-networks-primary",
        "reconciliation-worker-for-card-networks-secondary",
    ];
    let objects = format!("- objectName: {secret}\n  objectType: secretsmanager\n");
    for (i, sa) in accounts.iter().enumerate() {
        kube.add_service_account(&namespace, sa, Some(ROLE_A));
        let pod = format!("pod-{i}");
        let req = Req::new(&objects, &provider.target(&pod))
            .pod(&pod, sa, &format!("eyJ.{i}.sig"))
            .set("csi.storage.k8s.io/pod.namespace", &namespace)
            .set("assumeRoleArn", CENTRAL);
        provider.mount(&req).await.expect("mount through the chained role");
        assert_eq!(read_mount(&req.target)[&secret], b"central-secret-value");
    }
    let prefix = format!("csi-{namespace}_reconc");
    let sessions: Vec<(String, String, String)> = moto::assumed_roles()
        .await
        .into_iter()
        .filter(|(_, _, session)| session.starts_with(&prefix[..prefix.len().min(47)]))
        .collect();
    let of = |role: &str| -> Vec<String> {
        sessions
            .iter()
            .filter(|(_, r, _)| r == role)
            .map(|(arn, _, session)| {
                let role_name = role.rsplit('/').next().unwrap_or_default();
                assert!(arn.ends_with(&format!(":assumed-role/{role_name}/{session}")), "{arn}");
                session.clone()
            })
            .collect()
    };
    let (web, chained) = (of(ROLE_A), of(CENTRAL));
    assert_eq!(web.len(), 2, "{sessions:?}");
    assert_ne!(web[0], web[1], "two ServiceAccounts, two sessions");
    assert_eq!(chained, web, "the chained sessions carry the same names");
    for s in &web {
        assert!(s.len() <= 64, "{s}");
    }
}
