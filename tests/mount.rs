//! Mount behaviour over a real Unix socket and gRPC client, against the
//! in-repo fake AWS (call counting, fault injection) and fake Kubernetes
//! API. Mirrors the groups of the reference's server test matrix.

#![allow(clippy::panic)]

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_aws::{Fault, SecretValue, access_key_for, param_arn, secret_arn};
use common::inproc::InProc;
use common::*;
use serde_json::json;

const SM: &str = "secretsmanager";
const SSM: &str = "ssmparameter";

fn obj(name: &str, ty: &str) -> String {
    format!("- objectName: {name}\n  objectType: {ty}\n")
}

// === new mounts, both write modes ===

#[tokio::test(start_paused = true)]
async fn provider_writes_secrets_and_parameters_into_the_target() {
    let env = InProc::start(&[]).await;
    let v1 = env.aws.put_secret_string(REGION, "db-password", "s3cr3t");
    env.aws.put_param(REGION, "feature-flags", "String", "a=1");
    let target = env.provider.target("pw");
    let objects = format!("{}{}", obj("db-password", SM), obj("feature-flags", SSM));
    let resp = env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    assert!(resp.files.is_empty(), "provider-writes mode returns no files");
    let files = read_mount(&target);
    assert_eq!(files["db-password"], b"s3cr3t");
    assert_eq!(files["feature-flags"], b"a=1");
    assert_eq!(mode_of(&target.join("db-password")), 0o644);
    let v = versions(&resp);
    assert_eq!(v["db-password"], v1);
    assert_eq!(v["feature-flags"], "1");
}

#[tokio::test(start_paused = true)]
async fn driver_writes_mode_returns_files_and_writes_nothing() {
    let env = InProc::start(&["--driver-writes-secrets"]).await;
    env.aws.put_secret_string(REGION, "api-key", "k-123");
    env.aws.put_param(REGION, "/app/url", "String", "https://x");
    let target = env.provider.target("dw");
    let objects = format!(
        "{}- objectName: /app/url\n  objectType: ssmparameter\n  filePermission: \"0600\"\n",
        obj("api-key", SM)
    );
    let resp = env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = file_map(&resp);
    assert_eq!(files["api-key"], (0o644, b"k-123".to_vec()));
    assert_eq!(files["_app_url"], (0o600, b"https://x".to_vec()));
    assert!(
        all_entries(&target).is_empty(),
        "driver-writes mode must not touch the target"
    );
    assert_eq!(versions(&resp).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn binary_secrets_are_written_as_raw_bytes() {
    let env = InProc::start(&[]).await;
    let bytes = vec![0u8, 159, 146, 150, 255, 10, 13];
    env.aws
        .put_secret(REGION, "cert.der", SecretValue::Binary(bytes.clone()));
    let target = env.provider.target("bin");
    env.provider
        .mount(&Req::new(&obj("cert.der", SM), &target))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["cert.der"], bytes);
}

#[tokio::test(start_paused = true)]
async fn file_permissions_apply_per_object_and_per_jmes_entry() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "creds", r#"{"user":"u","pass":"p"}"#);
    env.aws.put_secret_string(REGION, "plain", "x");
    let target = env.provider.target("perm");
    let objects = r#"
- objectName: creds
  objectType: secretsmanager
  filePermission: "0640"
  jmesPath:
    - path: user
      objectAlias: user
    - path: pass
      objectAlias: pass
      filePermission: "0400"
- objectName: plain
  objectType: secretsmanager
"#;
    env.provider
        .mount(&Req::new(objects, &target).set("x", "y"))
        .await
        .expect("mount");
    assert_eq!(mode_of(&target.join("creds")), 0o640);
    assert_eq!(
        mode_of(&target.join("user")),
        0o640,
        "JMES files default to the parent's mode"
    );
    assert_eq!(mode_of(&target.join("pass")), 0o400);
    assert_eq!(mode_of(&target.join("plain")), 0o644);
}

#[tokio::test(start_paused = true)]
async fn request_permission_is_the_default_mode() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "p", "x");
    let target = env.provider.target("reqperm");
    let mut req = Req::new(&obj("p", SM), &target);
    req.permission = "384".into();
    env.provider.mount(&req).await.expect("mount");
    assert_eq!(mode_of(&target.join("p")), 0o600);
}

// === JSON / JMESPath ===

#[tokio::test(start_paused = true)]
async fn jmes_path_extracts_strings_from_secrets_by_name_and_arn_and_from_parameters() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(
        REGION,
        "json-secret",
        r#"{"username":"alice","password":"pw","api-key":"k"}"#,
    );
    env.aws.put_param(
        REGION,
        "json-param",
        "SecureString",
        r#"{"username":"bob","password":"pw2"}"#,
    );
    let target = env.provider.target("jmes");
    let objects = format!(
        r#"
- objectName: json-secret
  objectType: secretsmanager
  jmesPath:
    - Path: username
      ObjectAlias: secretsManagerUsername
    - path: '"api-key"'
      objectAlias: api-key
- objectName: {arn}
  objectAlias: by-arn.json
  jmesPath:
    - path: password
      objectAlias: secretsManagerPassword
- objectName: json-param
  objectType: ssmparameter
  jmesPath:
    - path: username
      objectAlias: ssmUsername
    - path: password
      objectAlias: ssmPassword
"#,
        arn = secret_arn(REGION, "json-secret")
    );
    let resp = env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["secretsManagerUsername"], b"alice");
    assert_eq!(files["api-key"], b"k");
    assert_eq!(files["secretsManagerPassword"], b"pw");
    assert_eq!(files["ssmUsername"], b"bob");
    assert_eq!(files["ssmPassword"], b"pw2");
    assert!(files["json-secret"].starts_with(b"{"), "the parent file is written too");
    assert!(files.contains_key("by-arn.json"));
    let v = versions(&resp);
    assert_eq!(
        v["ssmUsername"], v["json-param"],
        "JMES files carry the parent's version"
    );
    assert_eq!(v.len(), 8);
}

#[tokio::test(start_paused = true)]
async fn jmes_errors_are_reported_verbatim_and_nothing_is_written() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "not-json", "plain text");
    env.aws
        .put_secret_string(REGION, "nums", r#"{"port": 5432, "host": "db"}"#);
    let cases = [
        (
            "not-json",
            "host",
            "Invalid JSON used with jmesPath in secret: not-json.",
        ),
        (
            "nums",
            "port",
            "Invalid JMES search result type for path:port. Only string is allowed.",
        ),
        (
            "nums",
            "missing",
            "JMES Path - missing for object alias - alias1 does not point to a valid object.",
        ),
    ];
    for (i, (name, path, message)) in cases.iter().enumerate() {
        let objects = format!(
            "- objectName: {name}\n  objectType: secretsmanager\n  jmesPath:\n    - path: {path}\n      objectAlias: alias1\n"
        );
        assert_mount_refused(&env, &format!("jmes-err-{i}"), &objects, message).await;
    }
}

/// Mounts `objects` into a new target `name`: the mount must fail with
/// InvalidArgument and exactly `message`, writing nothing.
async fn assert_mount_refused(env: &InProc, name: &str, objects: &str, message: &str) {
    let target = env.provider.target(name);
    let err = env
        .provider
        .mount(&Req::new(objects, &target))
        .await
        .expect_err("must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), message);
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn json_keys_that_are_not_file_names_are_quoted_and_named_by_rule() {
    let env = InProc::start(&[]).await;
    let cases = [
        (r#"{"user": "u", "": "x"}"#, r#"key "" is not a file name: it is empty"#),
        (
            r#"{"..": "x"}"#,
            r#"key ".." is not a file name: ".." is the parent directory"#,
        ),
        (
            r#"{".": "x"}"#,
            r#"key "." is not a file name: "." is the current directory"#,
        ),
        (
            r#"{"a/b": "x"}"#,
            r#"key "a/b" is not a file name: it contains "/", which would make a subdirectory"#,
        ),
        (
            r#"{"nul\u0000": "x"}"#,
            r#"key "nul\u{0}" is not a file name: it contains a NUL byte"#,
        ),
        (r#"{"k": 1, "k": 2}"#, r#"key "k" appears more than once in the value"#),
    ];
    for (i, (value, message)) in cases.iter().enumerate() {
        let name = format!("keys-{i}");
        env.aws.put_secret_string(REGION, &name, value);
        let objects = format!("- objectName: {name}\n  objectType: secretsmanager\n  jsonKeysAsFiles: true\n");
        let message = format!("jsonKeysAsFiles of object {name}: {message}");
        assert_mount_refused(&env, &name, &objects, &message).await;
    }
}

// === SSM batching, versions and labels ===

#[tokio::test(start_paused = true)]
async fn more_than_ten_parameters_are_fetched_in_batches_of_ten() {
    let env = InProc::start(&[]).await;
    let mut objects = String::new();
    for i in 0..23 {
        env.aws
            .put_param(REGION, &format!("p{i}"), "SecureString", &format!("value-{i}"));
        objects.push_str(&obj(&format!("p{i}"), SSM));
    }
    let target = env.provider.target("batch");
    env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let calls = env.aws.calls_of("GetParameters");
    let mut sizes: Vec<usize> = calls.iter().map(|c| c.names.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![3, 10, 10]);
    let files = read_mount(&target);
    for i in 0..23 {
        assert_eq!(files[&format!("p{i}")], format!("value-{i}").as_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn two_labels_of_one_parameter_each_get_their_own_value() {
    let env = InProc::start(&[]).await;
    env.aws.put_param(REGION, "flags", "String", "blue-value");
    let v2 = env.aws.put_param(REGION, "flags", "String", "green-value");
    env.aws.label_param(REGION, "flags", 1, "blue");
    env.aws.label_param(REGION, "flags", v2, "green");
    let target = env.provider.target("labels");
    let objects = r#"
- objectName: flags
  objectType: ssmparameter
  objectVersionLabel: blue
  objectAlias: flags-blue
- objectName: flags
  objectType: ssmparameter
  objectVersionLabel: green
  objectAlias: flags-green
- objectName: flags
  objectType: ssmparameter
  objectVersion: "1"
  objectAlias: flags-v1
"#;
    let resp = env.provider.mount(&Req::new(objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["flags-blue"], b"blue-value");
    assert_eq!(files["flags-green"], b"green-value");
    assert_eq!(files["flags-v1"], b"blue-value");
    let v = versions(&resp);
    assert_eq!((v["flags-blue"].as_str(), v["flags-green"].as_str()), ("1", "2"));
    for call in env.aws.calls_of("GetParameters") {
        let bases: Vec<&str> = call
            .names
            .iter()
            .map(|n| n.split(':').next().unwrap_or_default())
            .collect();
        let mut dedup = bases.clone();
        dedup.dedup();
        assert_eq!(
            bases.len(),
            dedup.len(),
            "one selector per parameter per call: {:?}",
            call.names
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ssm_parameters_by_arn_and_with_slashes_resolve() {
    let env = InProc::start(&[]).await;
    env.aws.put_param(REGION, "/team/app/db-url", "String", "postgres://");
    env.aws.put_param(REGION, "StringListParam", "StringList", "a,b,c");
    let target = env.provider.target("ssm-arn");
    let objects = format!(
        "- objectName: {}\n  objectAlias: db-url\n- objectName: StringListParam\n  objectType: ssmparameter\n",
        param_arn(REGION, "/team/app/db-url")
    );
    env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["db-url"], b"postgres://");
    assert_eq!(files["StringListParam"], b"a,b,c", "StringList is written raw");
}

#[tokio::test(start_paused = true)]
async fn secrets_manager_version_id_and_stage_select_the_version() {
    let env = InProc::start(&[]).await;
    let v1 = env.aws.put_secret_string(REGION, "rotating", "old");
    let v2 = env.aws.put_secret_string(REGION, "rotating", "new");
    let target = env.provider.target("sm-versions");
    let objects = format!(
        r#"
- objectName: rotating
  objectType: secretsmanager
  objectAlias: current
- objectName: rotating
  objectType: secretsmanager
  objectVersionLabel: AWSPREVIOUS
  objectAlias: previous
- objectName: rotating
  objectType: secretsmanager
  objectVersion: {v1}
  objectAlias: pinned
"#
    );
    let resp = env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["current"], b"new");
    assert_eq!(files["previous"], b"old");
    assert_eq!(files["pinned"], b"old");
    let v = versions(&resp);
    assert_eq!(v["current"], v2);
    assert_eq!(v["previous"], v1);
    let calls = env.aws.calls_of("GetSecretValue");
    assert_eq!(calls.len(), 3, "one GetSecretValue per Secrets Manager object");
}

// === rotation ===

#[tokio::test(start_paused = true)]
async fn remounts_follow_rotation_and_keep_unchanged_content() {
    let env = InProc::start(&[]).await;
    let v1 = env.aws.put_secret_string(REGION, "rot", "BeforeRotation");
    env.aws.put_param(REGION, "rotp", "SecureString", "BeforeRotation");
    let target = env.provider.target("rotation");
    let req = Req::new(&format!("{}{}", obj("rot", SM), obj("rotp", SSM)), &target);

    // Initial mount.
    let r1 = env.provider.mount(&req).await.expect("initial");
    assert_eq!(versions(&r1)["rot"], v1);
    let data1 = std::fs::read_link(target.join("..data")).expect("data link");

    // No change: the content is left as it is.
    let r2 = env.provider.mount(&req).await.expect("no change");
    assert_eq!(versions(&r1), versions(&r2));
    assert_eq!(std::fs::read_link(target.join("..data")).expect("data link"), data1);

    // Rotation: new values and versions appear, atomically.
    let v2 = env.aws.put_secret_string(REGION, "rot", "AfterRotation");
    env.aws.put_param(REGION, "rotp", "SecureString", "AfterRotation");
    let r3 = env.provider.mount(&req).await.expect("rotation");
    let files = read_mount(&target);
    assert_eq!(files["rot"], b"AfterRotation");
    assert_eq!(files["rotp"], b"AfterRotation");
    assert_eq!(versions(&r3)["rot"], v2);
    assert_eq!(versions(&r3)["rotp"], "2");

    // Move Version: the class now pins the first version.
    let pinned = Req::new(
        &format!(
            "- objectName: rot\n  objectType: secretsmanager\n  objectVersion: {v1}\n{}",
            obj("rotp", SSM)
        ),
        &target,
    );
    let r_pin = env.provider.mount(&pinned).await.expect("move version");
    assert_eq!(read_mount(&target)["rot"], b"BeforeRotation");
    assert_eq!(versions(&r_pin)["rot"], v1);
    env.provider.mount(&req).await.expect("back to current");
    assert_eq!(read_mount(&target)["rot"], b"AfterRotation");

    // Moving a label back (a rollback) is followed too.
    env.aws.label_secret(REGION, "rot", &v1, "AWSCURRENT");
    let r4 = env.provider.mount(&req).await.expect("move labels");
    assert_eq!(read_mount(&target)["rot"], b"BeforeRotation");
    assert_eq!(versions(&r4)["rot"], v1);
}

#[tokio::test(start_paused = true)]
async fn objects_removed_from_the_class_are_removed_from_the_volume() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "keep", "k");
    env.aws.put_secret_string(REGION, "drop", "d");
    let target = env.provider.target("prune");
    let both = Req::new(&format!("{}{}", obj("keep", SM), obj("drop", SM)), &target);
    env.provider.mount(&both).await.expect("mount");
    assert_eq!(read_mount(&target).len(), 2);
    let one = Req::new(&obj("keep", SM), &target);
    let resp = env.provider.mount(&one).await.expect("remount");
    let files = read_mount(&target);
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["keep"]);
    assert_eq!(
        versions(&resp).keys().collect::<Vec<_>>(),
        vec!["keep"],
        "no stale ids are echoed"
    );
}

// === path translation ===

#[tokio::test(start_paused = true)]
async fn slashes_are_translated_with_the_default_or_a_custom_character() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "team/app/db", "v");
    env.aws.put_param(REGION, "/team/app/param", "String", "p");
    let target = env.provider.target("slash");
    let objects = format!("{}{}", obj("team/app/db", SM), obj("/team/app/param", SSM));
    env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert!(files.contains_key("team_app_db"));
    assert!(
        files.contains_key("_team_app_param"),
        "a leading slash becomes a leading _"
    );

    let target2 = env.provider.target("slash-custom");
    env.provider
        .mount(&Req::new(&objects, &target2).set("pathTranslation", "-"))
        .await
        .expect("mount");
    let files = read_mount(&target2);
    assert!(files.contains_key("team-app-db") && files.contains_key("-team-app-param"));
}

#[tokio::test(start_paused = true)]
async fn translation_off_creates_subdirectories_in_both_write_modes() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "team/app/db", "v");
    env.aws.put_param(REGION, "/team/app/param", "String", "p");
    let objects = format!("{}{}", obj("team/app/db", SM), obj("/team/app/param", SSM));
    let target = env.provider.target("nested");
    env.provider
        .mount(&Req::new(&objects, &target).set("pathTranslation", "False"))
        .await
        .expect("provider-writes mount with subdirectories");
    let files = read_mount(&target);
    assert_eq!(files["team/app/db"], b"v");
    assert_eq!(files["team/app/param"], b"p");
    assert!(
        std::fs::symlink_metadata(target.join("team"))
            .expect("team")
            .file_type()
            .is_symlink()
    );

    let dw = InProc::start(&["--driver-writes-secrets=true"]).await;
    dw.aws.put_secret_string(REGION, "team/app/db", "v");
    dw.aws.put_param(REGION, "/team/app/param", "String", "p");
    let t2 = dw.provider.target("nested-dw");
    let resp = dw
        .provider
        .mount(&Req::new(&objects, &t2).set("pathTranslation", "false"))
        .await
        .expect("mount");
    let paths: Vec<String> = resp.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(paths, vec!["team/app/db".to_string(), "team/app/param".to_string()]);
}

// === failover ===

fn failover_req(objects: &str, target: &std::path::Path) -> Req {
    Req::new(objects, target).set("failoverRegion", FAILOVER)
}

#[tokio::test(start_paused = true)]
async fn primary_region_is_preferred_and_failover_is_not_called() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "s", "primary");
    env.aws.put_secret_string(FAILOVER, "s", "failover");
    env.aws.put_param(REGION, "p", "String", "primary");
    let target = env.provider.target("pref");
    env.provider
        .mount(&failover_req(&format!("{}{}", obj("s", SM), obj("p", SSM)), &target))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["s"], b"primary");
    assert!(
        env.aws.calls().iter().all(|c| c.region.as_deref() != Some(FAILOVER)),
        "no call may reach the failover region when the primary answered"
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_in_the_primary_fail_over_for_secrets_and_parameters() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(FAILOVER, "s", "from-failover");
    env.aws.put_param(FAILOVER, "p", "String", "param-from-failover");
    for op in ["GetSecretValue", "GetParameters"] {
        env.aws
            .inject(Fault::persistent(op, REGION, 500, "InternalServiceError"));
    }
    let target = env.provider.target("fo-5xx");
    env.provider
        .mount(&failover_req(&format!("{}{}", obj("s", SM), obj("p", SSM)), &target))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["s"], b"from-failover");
    assert_eq!(files["p"], b"param-from-failover");
}

#[tokio::test(start_paused = true)]
async fn throttling_in_the_primary_fails_over() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(FAILOVER, "s", "from-failover");
    env.aws
        .inject(Fault::persistent("GetSecretValue", REGION, 400, "ThrottlingException"));
    let target = env.provider.target("fo-throttle");
    env.provider
        .mount(&failover_req(&obj("s", SM), &target))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["s"], b"from-failover");
}

#[tokio::test(start_paused = true)]
async fn a_client_error_in_the_primary_fails_the_mount_without_asking_the_failover() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(FAILOVER, "missing-in-primary", "x");
    let target = env.provider.target("fo-4xx");
    let err = env
        .provider
        .mount(&failover_req(&obj("missing-in-primary", SM), &target))
        .await
        .expect_err("must fail");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("missing-in-primary") && err.message().contains(REGION),
        "{}",
        err.message()
    );
    assert!(env.aws.calls().iter().all(|c| c.region.as_deref() != Some(FAILOVER)));
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_error_then_client_error_in_failover_fails_naming_both() {
    let env = InProc::start(&[]).await;
    env.aws
        .inject(Fault::persistent("GetSecretValue", REGION, 503, "ServiceUnavailable"));
    let target = env.provider.target("fo-5xx-4xx");
    let err = env
        .provider
        .mount(&failover_req(&obj("nowhere", SM), &target))
        .await
        .expect_err("fail");
    let m = err.message();
    assert!(m.starts_with("Failed to fetch secret from all regions. Verify secret exists and required permissions are granted for: nowhere"), "{m}");
    assert!(m.contains(REGION) && m.contains(FAILOVER), "{m}");
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn failover_objects_use_their_own_name_in_the_failover_region() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(FAILOVER, "replica-name", "replica-value");
    env.aws
        .inject(Fault::persistent("GetSecretValue", REGION, 500, "InternalServiceError"));
    let target = env.provider.target("fo-object");
    let objects = format!(
        "- objectName: {}\n  objectAlias: db\n  failoverObject:\n    objectName: {}\n",
        secret_arn(REGION, "primary-name"),
        secret_arn(FAILOVER, "replica-name")
    );
    env.provider
        .mount(&failover_req(&objects, &target))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["db"], b"replica-value");
    let failover_calls: Vec<_> = env
        .aws
        .calls_of("GetSecretValue")
        .into_iter()
        .filter(|c| c.region.as_deref() == Some(FAILOVER))
        .collect();
    assert_eq!(failover_calls[0].names, vec![secret_arn(FAILOVER, "replica-name")]);
}

#[tokio::test(start_paused = true)]
async fn a_missing_parameter_fails_the_mount_naming_it() {
    let env = InProc::start(&[]).await;
    env.aws.put_param(REGION, "present", "String", "x");
    let target = env.provider.target("ssm-missing");
    let err = env
        .provider
        .mount(&Req::new(
            &format!("{}{}", obj("present", SSM), obj("absent", SSM)),
            &target,
        ))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("parameter absent not found"),
        "{}",
        err.message()
    );
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_failing_object_fails_the_whole_mount_and_changes_nothing() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "good", "v1");
    let target = env.provider.target("partial");
    env.provider
        .mount(&Req::new(&obj("good", SM), &target))
        .await
        .expect("first mount");
    let before = read_mount(&target);
    env.aws.put_secret_string(REGION, "good", "v2");
    env.aws.inject(Fault {
        op: "GetSecretValue",
        region: None,
        status: 400,
        code: "AccessDeniedException",
        times: 1,
        name: Some("bad".into()),
    });
    let two = Req::new(&format!("{}{}", obj("bad", SM), obj("good", SM)), &target);
    let err = env.provider.mount(&two).await.expect_err("fail");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(err.message().contains("bad"), "{}", err.message());
    assert_eq!(read_mount(&target), before, "a failed mount changes nothing");
}

// === identity ===

#[tokio::test(start_paused = true)]
async fn irsa_assumes_the_service_account_role_with_the_pod_token() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("irsa");
    env.provider
        .mount(&Req::new(&obj("s", SM), &target))
        .await
        .expect("mount");
    let sts = env.aws.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(sts.len(), 1);
    assert_eq!(sts[0].names, vec![ROLE_A.to_string()]);
    assert_eq!(sts[0].token.as_deref(), Some(TOKEN_A));
    assert_eq!(
        sts[0].session.as_deref(),
        Some("csi-default_sa-a"),
        "the session names the ServiceAccount whose pods share the credentials"
    );
    let sm = env.aws.calls_of("GetSecretValue");
    assert_eq!(
        sm[0].access_key.as_deref(),
        Some(access_key_for(ROLE_A, TOKEN_A).as_str())
    );
    assert!(
        env.kube
            .calls()
            .contains(&"GET /api/v1/namespaces/default/serviceaccounts/sa-a".to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_account_without_a_role_fails_with_the_reference_message() {
    let env = InProc::start(&[]).await;
    env.kube.add_service_account("default", "no-role", None);
    let target = env.provider.target("norole");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &target).pod("pod-x", "no-role", TOKEN_A))
        .await
        .expect_err("fail");
    assert_eq!(
        err.message(),
        "An IAM role must be associated with service account no-role (namespace: default)"
    );
    assert!(env.aws.calls().is_empty(), "no AWS call without a role");
}

#[tokio::test(start_paused = true)]
async fn a_missing_service_account_and_forbidden_rbac_fail_clearly() {
    let env = InProc::start(&[]).await;
    let target = env.provider.target("nosa");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &target).pod("pod-x", "ghost", TOKEN_A))
        .await
        .expect_err("fail");
    assert!(
        err.message()
            .starts_with("failed to get service account default/ghost: "),
        "{}",
        err.message()
    );
    env.kube.forbid("serviceaccounts");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &target))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("forbidden"), "{}", err.message());
}

#[tokio::test(start_paused = true)]
async fn sts_access_denied_fails_the_mount() {
    let env = InProc::start(&[]).await;
    env.aws.deny_role(ROLE_A);
    let target = env.provider.target("sts-denied");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &target))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains(ROLE_A) && err.message().contains("AccessDenied"),
        "{}",
        err.message()
    );
    assert!(env.aws.calls_of("GetSecretValue").is_empty());
}

#[tokio::test(start_paused = true)]
async fn region_comes_from_the_node_label_without_region_or_aws_region() {
    let env = InProc::start(&[]).await;
    env.kube.add_pod("default", "pod-a", "node-1");
    env.kube.add_node("node-1", Some("ap-south-1"));
    env.aws.put_secret_string("ap-south-1", "s", "from-node-region");
    let target = env.provider.target("node-region");
    env.provider
        .mount(&Req::new(&obj("s", SM), &target).unset("region"))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target)["s"], b"from-node-region");
    let calls = env.kube.calls();
    assert!(calls.contains(&"GET /api/v1/namespaces/default/pods/pod-a".to_string()));
    assert!(calls.contains(&"GET /api/v1/nodes/node-1".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_node_without_a_region_label_fails_with_the_reference_message() {
    let env = InProc::start(&[]).await;
    env.kube.add_pod("default", "pod-a", "node-2");
    env.kube.add_node("node-2", None);
    let target = env.provider.target("no-region");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &target).unset("region"))
        .await
        .expect_err("fail");
    assert_eq!(
        err.message(),
        "failed to retrieve region from node. error Region not found"
    );
    let err = env
        .provider
        .mount(
            &Req::new(&obj("s", SM), &target)
                .unset("region")
                .pod("missing-pod", "sa-a", TOKEN_A),
        )
        .await
        .expect_err("fail");
    assert!(
        err.message().starts_with("failed to retrieve region from node. error "),
        "{}",
        err.message()
    );
    assert_eq!(
        err.code(),
        tonic::Code::NotFound,
        "a missing pod is the same class as a missing ServiceAccount"
    );
    assert!(env.aws.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_arn_in_another_region_than_the_node_region_is_rejected_before_aws() {
    let env = InProc::start(&[]).await;
    env.kube.add_pod("default", "pod-a", "node-1");
    env.kube.add_node("node-1", Some("us-west-2"));
    let target = env.provider.target("arn-node");
    let arn = secret_arn("eu-west-1", "s");
    let err = env
        .provider
        .mount(&Req::new(&format!("- objectName: {arn}\n"), &target).unset("region"))
        .await
        .expect_err("fail");
    assert_eq!(err.message(), format!("ARN region must match region us-west-2: {arn}"));
    assert!(env.aws.calls().is_empty());
}

// === AWS client configuration ===

#[tokio::test(start_paused = true)]
async fn every_aws_call_carries_our_app_id_and_the_addon_version_replaces_it() {
    let env = InProc::start(&["--eks-addon-version=v9.9.9-eksbuild.1"]).await;
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("appid");
    env.provider
        .mount(&Req::new(&obj("s", SM), &target))
        .await
        .expect("mount");
    for c in env.aws.calls() {
        assert!(
            c.user_agent.contains("app/csi-provider-aws-v9.9.9-eksbuild.1"),
            "{} lacks the AppID: {}",
            c.op,
            c.user_agent
        );
    }
    assert_eq!(
        env.aws.calls_of("AssumeRoleWithWebIdentity").len(),
        1,
        "STS carries the AppID too"
    );
}

#[tokio::test(start_paused = true)]
async fn objects_are_fetched_concurrently_within_a_bound() {
    let env = InProc::start(&["--batch-get-secret-value=false"]).await;
    env.aws.set_delay(Duration::from_millis(100));
    let mut objects = String::new();
    for i in 0..20 {
        env.aws.put_secret_string(REGION, &format!("c{i}"), "v");
        objects.push_str(&obj(&format!("c{i}"), SM));
    }
    let target = env.provider.target("concurrent");
    env.provider.mount(&Req::new(&objects, &target)).await.expect("mount");
    let max = env.aws.concurrency.max.load(Ordering::SeqCst);
    assert!(max > 1, "objects must be fetched in parallel (max in flight {max})");
    assert!(
        max <= csi_provider_aws::fetch::CONCURRENCY,
        "parallelism is bounded (max in flight {max})"
    );
    assert_eq!(read_mount(&target).len(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_write_failure_is_reported_and_no_files_appear() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "s", "v");
    let not_a_dir = env.provider.dir.path().join("not-a-directory");
    std::fs::write(&not_a_dir, "x").expect("file");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &not_a_dir))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(err.message().contains("is not a directory"), "{}", err.message());
    let missing = env.provider.dir.path().join("missing/mount");
    let err = env
        .provider
        .mount(&Req::new(&obj("s", SM), &missing))
        .await
        .expect_err("fail");
    assert!(
        err.message().starts_with(&format!("target path {}", missing.display())),
        "{}",
        err.message()
    );
    assert!(!missing.exists());
}

#[tokio::test(start_paused = true)]
async fn access_denied_in_the_primary_fails_the_mount_without_asking_the_failover() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "s", "primary");
    env.aws.put_secret_string(FAILOVER, "s", "failover");
    env.aws.put_param(FAILOVER, "p", "String", "failover");
    env.aws.inject(Fault::persistent(
        "GetSecretValue",
        REGION,
        400,
        "AccessDeniedException",
    ));
    env.aws
        .inject(Fault::persistent("GetParameters", REGION, 400, "AccessDeniedException"));
    for (name, ty) in [("s", SM), ("p", SSM)] {
        let target = env.provider.target(&format!("fo-denied-{name}"));
        let err = env
            .provider
            .mount(&failover_req(&obj(name, ty), &target))
            .await
            .expect_err("denied");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}", err.message());
        assert!(err.message().contains("AccessDeniedException"), "{}", err.message());
        assert!(all_entries(&target).is_empty());
    }
    assert!(env.aws.calls().iter().all(|c| c.region.as_deref() != Some(FAILOVER)));
}

// === one policy in one place ===

#[tokio::test(start_paused = true)]
async fn an_empty_secret_gives_the_same_empty_file_batched_or_not() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "empty-a", "");
    env.aws.put_secret_string(REGION, "empty-b", "");
    env.aws.put_secret(
        REGION,
        "empty-binary",
        common::fake_aws::SecretValue::Binary(Vec::new()),
    );
    // Without a version field the three go through BatchGetSecretValue,
    // with one through GetSecretValue.
    let batched = "- objectName: empty-a\n  objectType: secretsmanager\n\
                   - objectName: empty-b\n  objectType: secretsmanager\n\
                   - objectName: empty-binary\n  objectType: secretsmanager\n";
    let single = "- objectName: empty-a\n  objectType: secretsmanager\n  objectVersionLabel: AWSCURRENT\n\
                  - objectName: empty-b\n  objectType: secretsmanager\n  objectVersionLabel: AWSCURRENT\n\
                  - objectName: empty-binary\n  objectType: secretsmanager\n  objectVersionLabel: AWSCURRENT\n";
    let (a, b) = (env.provider.target("batched"), env.provider.target("single"));
    env.provider.mount(&Req::new(batched, &a)).await.expect("batched");
    env.provider.mount(&Req::new(single, &b)).await.expect("single");
    assert_eq!(env.aws.calls_of("BatchGetSecretValue").len(), 1);
    assert_eq!(env.aws.calls_of("GetSecretValue").len(), 3);
    let (fa, fb) = (read_mount(&a), read_mount(&b));
    assert_eq!(fa, fb);
    assert_eq!(fa.len(), 3);
    assert!(fa.values().all(|v| v.is_empty()), "{fa:?}");
}

// === failed rotations become pod events ===

/// The events of the fake API server once `n` exist (or after 3 s), then
/// after a moment more (a write that should not happen has had its chance).
async fn events_settled(kube: &FakeKube, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while kube.events().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    kube.events()
}

fn event_writes(kube: &FakeKube) -> Vec<String> {
    kube.calls().into_iter().filter(|c| c.contains("/events")).collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_remount_is_one_aggregated_warning_event_on_the_pod_and_a_first_mount_is_none() {
    let env = InProc::start(&[]).await;
    env.aws
        .put_secret_string(REGION, "db-password", "rotation-canary-s3cr3t");
    let target = env.provider.target("rotating");
    let req = Req::new(&obj("db-password", SM), &target);
    env.provider.mount(&req).await.expect("first mount");

    // The secret is deleted: three rotations fail, the pod keeps its file.
    env.aws.delete_secret(REGION, "db-password");
    let mut messages = Vec::new();
    for _ in 0..3 {
        let err = env.provider.mount(&req).await.expect_err("deleted");
        messages.push(err.message().to_string());
    }
    assert_eq!(read_mount(&target)["db-password"], b"rotation-canary-s3cr3t");
    let events = events_settled(&env.kube, 1).await;
    assert_eq!(events.len(), 1, "one event for three failures: {events:?}");
    assert_eq!(event_writes(&env.kube).len(), 1, "one API write");
    let e = &events[0];
    assert_eq!(e["reason"], "SecretRotationFailed");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["action"], "Mount");
    assert_eq!(e["reportingController"], "csi-provider-aws");
    assert_eq!(e["metadata"]["namespace"], "default");
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("pod-a."));
    assert_eq!(
        (&e["regarding"]["kind"], &e["regarding"]["name"], &e["regarding"]["uid"]),
        (&json!("Pod"), &json!("pod-a"), &json!("uid-a"))
    );
    assert_eq!(e["note"], messages[0].as_str(), "the note is what the mount returned");
    assert!(messages[0].contains("db-password"), "{}", messages[0]);
    assert!(
        !e.to_string().contains("rotation-canary-s3cr3t"),
        "no value in the event"
    );
    assert!(
        e.get("series").is_none(),
        "not patched within --rotation-event-interval"
    );

    // A first mount that fails is the kubelet's FailedMount, not a rotation.
    let fresh = env.provider.target("never-mounted");
    env.provider
        .mount(&Req::new(&obj("db-password", SM), &fresh).pod("pod-b", "sa-a", TOKEN_A))
        .await
        .expect_err("deleted");
    assert_eq!(
        events_settled(&env.kube, 2).await.len(),
        1,
        "no event for a first mount"
    );

    // A successful remount ends the series; the next failure is a new event.
    env.aws.put_secret_string(REGION, "db-password", "rotation-canary-2");
    env.provider.mount(&req).await.expect("recovered");
    env.aws.delete_secret(REGION, "db-password");
    env.provider.mount(&req).await.expect_err("deleted again");
    assert_eq!(events_settled(&env.kube, 2).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn repeated_rotation_failures_patch_the_series_once_per_interval() {
    let env = InProc::start(&["--rotation-event-interval=400ms", "--driver-writes-secrets"]).await;
    env.aws.put_secret_string(REGION, "api-key", "k-1");
    // Driver-writes mode: the provider never sees files in the target; it
    // knows the volume is mounted because it mounted it.
    let target = env.provider.target("series");
    let req = Req::new(&obj("api-key", SM), &target);
    env.provider.mount(&req).await.expect("first mount");
    assert!(all_entries(&target).is_empty());
    env.aws.inject(Fault::persistent(
        "GetSecretValue",
        REGION,
        403,
        "AccessDeniedException",
    ));
    env.aws.inject(Fault::persistent(
        "BatchGetSecretValue",
        REGION,
        403,
        "AccessDeniedException",
    ));
    env.provider.mount(&req).await.expect_err("denied");
    env.provider.mount(&req).await.expect_err("denied");
    assert_eq!(events_settled(&env.kube, 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    env.provider.mount(&req).await.expect_err("denied");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = env.kube.events();
    assert_eq!(events.len(), 1, "the same error patches the same event");
    assert_eq!(events[0]["series"]["count"], 3, "{}", events[0]);
    assert!(events[0]["series"]["lastObservedTime"].is_string());
    let writes = event_writes(&env.kube);
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes[0].starts_with("POST ") && writes[1].starts_with("PATCH "),
        "{writes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn rotation_failure_events_can_be_turned_off_and_a_forbidden_write_changes_no_mount() {
    let env = InProc::start(&["--rotation-failure-events=false"]).await;
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("off");
    let req = Req::new(&obj("s", SM), &target);
    env.provider.mount(&req).await.expect("mount");
    env.aws.delete_secret(REGION, "s");
    env.provider.mount(&req).await.expect_err("deleted");
    assert!(events_settled(&env.kube, 1).await.is_empty());
    assert!(event_writes(&env.kube).is_empty());

    // Without RBAC for events, the mount fails exactly as it would anyway.
    let env = InProc::start(&[]).await;
    env.kube.forbid("events");
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("forbidden");
    let req = Req::new(&obj("s", SM), &target);
    env.provider.mount(&req).await.expect("mount");
    env.aws.delete_secret(REGION, "s");
    let err = env.provider.mount(&req).await.expect_err("deleted");
    assert_eq!(err.code(), tonic::Code::NotFound);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(event_writes(&env.kube).len(), 1, "tried once");
    assert!(env.kube.events().is_empty());
    assert!(
        env.provider
            .logs()
            .contains("could not record the SecretRotationFailed event")
    );
}

#[tokio::test(start_paused = true)]
async fn a_healthy_volume_does_not_reset_the_failing_one_and_one_namespace_cannot_starve_another() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "ok", "v");
    env.aws.put_secret_string(REGION, "gone", "v");
    let healthy = Req::new(&obj("ok", SM), &env.provider.target("healthy"));
    let failing = Req::new(&obj("gone", SM), &env.provider.target("failing"));
    env.provider.mount(&healthy).await.expect("mount");
    env.provider.mount(&failing).await.expect("mount");
    env.aws.delete_secret(REGION, "gone");
    // Rotation polls: each remounts both volumes of the pod.
    for _ in 0..3 {
        env.provider.mount(&healthy).await.expect("healthy");
        env.provider.mount(&failing).await.expect_err("gone");
    }
    assert_eq!(
        events_settled(&env.kube, 1).await.len(),
        1,
        "one event for the failing volume"
    );

    // Twelve pods of one namespace fail at once: ten events (the
    // namespace's burst); a pod of another namespace still gets its own.
    env.aws.put_secret_string(REGION, "shared", "v");
    let pod = |i: usize, ns: &str| {
        Req::new(&obj("shared", SM), &env.provider.target(&format!("{ns}-{i}")))
            .pod(&format!("p{i}"), "sa-a", TOKEN_A)
            .set("csi.storage.k8s.io/pod.namespace", ns)
    };
    env.kube.add_service_account("team-a", "sa-a", Some(ROLE_A));
    env.kube.add_service_account("team-b", "sa-a", Some(ROLE_A));
    let team_a: Vec<Req> = (0..12).map(|i| pod(i, "team-a")).collect();
    for r in &team_a {
        env.provider.mount(r).await.expect("mount");
    }
    env.provider.mount(&pod(0, "team-b")).await.expect("mount");
    env.aws.delete_secret(REGION, "shared");
    for r in &team_a {
        env.provider.mount(r).await.expect_err("gone");
    }
    env.provider.mount(&pod(0, "team-b")).await.expect_err("gone");
    let events = events_settled(&env.kube, 12).await;
    let in_ns = |ns: &str| events.iter().filter(|e| e["metadata"]["namespace"] == ns).count();
    assert_eq!((in_ns("team-a"), in_ns("team-b")), (10, 1), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn yaml_anchors_aliases_and_merge_keys_are_read_as_the_go_provider_reads_them() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "prod/db", "db-value");
    env.aws.put_secret_string(REGION, "prod/api", "api-value");
    env.aws.put_param(REGION, "flags", "String", "on");
    env.aws.put_param(REGION, "limits", "String", "10");
    // The shared fields once, merged into each object; an alias of a value.
    let objects = "\
- &secret
  objectName: prod/db
  objectType: secretsmanager
  filePermission: \"0400\"
- <<: *secret
  objectName: prod/api
- objectName: flags
  objectType: &ssm ssmparameter
- {objectName: limits, objectType: *ssm}
";
    let target = env.provider.target("anchors");
    let req = Req::new(objects, &target).set("pathTranslation", "-");
    env.provider.mount(&req).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files["prod-db"], b"db-value");
    assert_eq!(files["prod-api"], b"api-value");
    assert_eq!((&files["flags"][..], &files["limits"][..]), (&b"on"[..], &b"10"[..]));
    assert_eq!(files.len(), 4, "{:?}", files.keys().collect::<Vec<_>>());
    assert_eq!(mode_of(&target.join("prod-api")), 0o400, "merged from the anchor");
    assert_eq!(mode_of(&target.join("limits")), 0o644);
}

mod end_to_end {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_pods_with_different_roles_get_only_their_own_credentials() {
        let env = Env::start().await;
        // These values read back as the access key that signed the request.
        env.aws.put_secret_string(REGION, "whoami", common::fake_aws::CALLER);
        env.aws.put_secret_string(REGION, "whoami-2", common::fake_aws::CALLER);
        env.aws
            .put_param(REGION, "whoami-p", "String", common::fake_aws::CALLER);
        env.aws.set_delay(Duration::from_millis(50));
        let objects = format!("{}{}{}", obj("whoami", SM), obj("whoami-2", SM), obj("whoami-p", SSM));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (pod, sa, token) = if i % 2 == 0 {
                ("pod-a", "sa-a", TOKEN_A)
            } else {
                ("pod-b", "sa-b", TOKEN_B)
            };
            let target = env.provider.target(&format!("iso-{i}"));
            let req = Req::new(&objects, &target).pod(pod, sa, token);
            let mut client = env.provider.client().await;
            tasks.push(tokio::spawn(async move {
                client.mount(req.build()).await.map(|_| (target, token))
            }));
        }
        let key_a = access_key_for(ROLE_A, TOKEN_A);
        let key_b = access_key_for(ROLE_B, TOKEN_B);
        for t in tasks {
            let (target, token) = t.await.expect("join").expect("mount");
            let own = if token == TOKEN_A { &key_a } else { &key_b };
            for (file, contents) in read_mount(&target) {
                assert_eq!(
                    &String::from_utf8_lossy(&contents),
                    own,
                    "{file} was fetched with another pod's credentials"
                );
            }
        }
        for c in env.aws.calls_of("AssumeRoleWithWebIdentity") {
            let expected = if c.names[0] == ROLE_A { TOKEN_A } else { TOKEN_B };
            assert_eq!(
                c.token.as_deref(),
                Some(expected),
                "each role is assumed with its own pod's token"
            );
        }
        let signed: Vec<_> = env.aws.calls().into_iter().filter_map(|c| c.access_key).collect();
        assert!(signed.iter().all(|k| *k == key_a || *k == key_b), "{signed:?}");
    }

    #[tokio::test]
    async fn pod_identity_uses_the_agent_with_the_pod_token_and_no_kubernetes_call() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        let url = agent.url();
        let env = Env::start_with(|mut o| {
            o.args.push(format!("--pod-identity-endpoint-ipv4={url}"));
            o.args
                .push("--pod-identity-endpoint-ipv6=http://[::1]:1/v1/credentials".into());
            o
        })
        .await;
        env.aws.put_secret_string(REGION, "s", "v");
        let target = env.provider.target("pi");
        env.provider
            .mount(&Req::new(&obj("s", SM), &target).set("usePodIdentity", "true"))
            .await
            .expect("mount");
        assert_eq!(agent.tokens(), vec![PI_TOKEN_A.to_string()]);
        let sm = env.aws.calls_of("GetSecretValue");
        assert_eq!(
            sm[0].access_key.as_deref(),
            Some(common::fake_agent::agent_key_for(PI_TOKEN_A).as_str())
        );
        assert!(env.kube.calls().is_empty(), "Pod Identity needs no Kubernetes call");
        assert!(env.aws.calls_of("AssumeRoleWithWebIdentity").is_empty());
    }

    #[tokio::test]
    async fn pod_identity_auto_falls_back_to_ipv6_and_strict_modes_do_not() {
        let agent6 = FakeAgent::start("[::1]:0").await;
        let dead_v4 = "http://127.0.0.1:9/v1/credentials".to_string();
        let url6 = agent6.url();
        let env = Env::start_with(|mut o| {
            o.args.push(format!("--pod-identity-endpoint-ipv4={dead_v4}"));
            o.args.push(format!("--pod-identity-endpoint-ipv6={url6}"));
            o.args.push("--pod-identity-http-timeout=1s".into());
            o
        })
        .await;
        env.aws.put_secret_string(REGION, "s", "v");
        let target = env.provider.target("pi-auto");
        env.provider
            .mount(&Req::new(&obj("s", SM), &target).set("usePodIdentity", "true"))
            .await
            .expect("auto must fall back to IPv6");
        assert_eq!(agent6.tokens().len(), 1);

        let err = env
            .provider
            .mount(
                &Req::new(&obj("s", SM), &env.provider.target("pi-v4"))
                    .pod("pod-v4", "sa-a", TOKEN_A)
                    .set("usePodIdentity", "true")
                    .set("preferredAddressType", "IPv4"),
            )
            .await
            .expect_err("ipv4 is strict");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("127.0.0.1:9"), "{}", err.message());
        assert_eq!(agent6.tokens().len(), 1, "strict ipv4 never asks the IPv6 agent");

        env.provider
            .mount(
                &Req::new(&obj("s", SM), &env.provider.target("pi-v6"))
                    .pod("pod-v6", "sa-a", TOKEN_A)
                    .set("usePodIdentity", "T")
                    .set("preferredAddressType", "ipv6"),
            )
            .await
            .expect("ipv6");
        assert_eq!(agent6.tokens().len(), 2);
    }

    #[tokio::test]
    async fn pod_identity_agent_errors_fail_the_mount() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        agent.fail_with(500);
        let url = agent.url();
        let env = Env::start_with(|mut o| {
            o.args.push(format!("--pod-identity-endpoint-ipv4={url}"));
            o
        })
        .await;
        let target = env.provider.target("pi-500");
        let err = env
            .provider
            .mount(
                &Req::new(&obj("s", SM), &target)
                    .set("usePodIdentity", "true")
                    .set("preferredAddressType", "ipv4"),
            )
            .await
            .expect_err("fail");
        assert!(
            err.message().contains("EKS Pod Identity Agent") && err.message().contains("HTTP 500"),
            "{}",
            err.message()
        );
        assert_eq!(agent.tokens().len(), 3, "5xx is retried a bounded number of times");
        assert!(env.aws.calls().is_empty());
    }

    // === region resolution ===

    #[tokio::test]
    async fn region_comes_from_aws_region_when_the_class_has_none() {
        let env = Env::start_with(|mut o| {
            o.env_region = Some("eu-west-1".into());
            o
        })
        .await;
        env.aws.put_secret_string("eu-west-1", "s", "eu");
        let target = env.provider.target("env-region");
        env.provider
            .mount(&Req::new(&obj("s", SM), &target).unset("region"))
            .await
            .expect("mount");
        assert_eq!(read_mount(&target)["s"], b"eu");
        assert!(
            env.kube
                .calls()
                .iter()
                .all(|c| !c.contains("/nodes/") && !c.contains("/pods/"))
        );
    }

    #[tokio::test]
    async fn per_service_endpoint_variables_route_each_service() {
        // Secrets Manager is pointed at a second fake; SSM and STS stay on the first.
        let other = FakeAws::start().await;
        other.put_secret_string(REGION, "s", "from-dedicated-endpoint");
        let env = Env::start_with(|mut o| {
            o.env
                .push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), other.endpoint()));
            o
        })
        .await;
        env.aws.put_param(REGION, "p", "String", "x");
        let target = env.provider.target("endpoints");
        env.provider
            .mount(&Req::new(&format!("{}{}", obj("s", SM), obj("p", SSM)), &target))
            .await
            .expect("mount");
        assert_eq!(read_mount(&target)["s"], b"from-dedicated-endpoint");
        assert_eq!(other.calls_of("GetSecretValue").len(), 1);
        assert!(env.aws.calls_of("GetSecretValue").is_empty());
        assert_eq!(env.aws.calls_of("GetParameters").len(), 1);
    }

    #[tokio::test]
    async fn pod_identity_agent_timeouts_fail_the_mount() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        agent.set_delay(Duration::from_millis(1500));
        let url = agent.url();
        let env = Env::start_with(|mut o| {
            o.args.push(format!("--pod-identity-endpoint-ipv4={url}"));
            o.args.push("--pod-identity-http-timeout=200ms".into());
            o
        })
        .await;
        let target = env.provider.target("pi-timeout");
        let err = env
            .provider
            .mount(
                &Req::new(&obj("s", SM), &target)
                    .set("usePodIdentity", "true")
                    .set("preferredAddressType", "ipv4"),
            )
            .await
            .expect_err("fail");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("timed out"), "{}", err.message());
        assert!(env.aws.calls().is_empty());
    }

    #[tokio::test]
    async fn a_remount_is_recognised_by_the_versions_an_older_driver_passes() {
        // Drivers up to v1.5 pass the mounted objects' versions on a rotation;
        // this provider never mounted the volume and its target is empty.
        let env = Env::start().await;
        let target = env.provider.target("old-driver");
        assert!(all_entries(&target).is_empty());
        let mut req = Req::new(&obj("gone", SM), &target).build();
        req.current_object_version = vec![csi_provider_aws::proto::v1alpha1::ObjectVersion {
            id: "gone".into(),
            version: "v1".into(),
        }];
        let err = env
            .provider
            .client()
            .await
            .mount(req.clone())
            .await
            .expect_err("missing");
        assert_eq!(err.code(), tonic::Code::NotFound);
        let events = events_settled(&env.kube, 1).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["note"], err.message());

        // The same failure without the versions is a first mount: no event.
        let fresh = env.provider.target("old-driver-first").to_string_lossy().into_owned();
        req.current_object_version.clear();
        req.target_path = fresh;
        env.provider.client().await.mount(req).await.expect_err("missing");
        assert_eq!(events_settled(&env.kube, 2).await.len(), 1);
    }

    #[tokio::test]
    async fn logs_of_a_shared_fetch_name_the_pod_that_started_it() {
        let env = Env::start_with(|mut o| {
            o.args.push("--log-format=json".into());
            o
        })
        .await;
        env.aws.put_secret_string(FAILOVER, "s", "from-failover");
        env.aws.inject(common::fake_aws::Fault::persistent(
            "GetSecretValue",
            REGION,
            503,
            "ServiceUnavailable",
        ));
        let target = env.provider.target("span");
        env.provider
            .mount(
                &Req::new(
                    "- objectName: s\n  objectType: secretsmanager\n  objectVersionLabel: AWSCURRENT\n",
                    &target,
                )
                .set("failoverRegion", FAILOVER),
            )
            .await
            .expect("mount through the failover region");
        assert_eq!(read_mount(&target)["s"], b"from-failover");
        let logs = env.provider.logs();
        let failover_line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("trying the failover region"))
            })
            .unwrap_or_else(|| panic!("no failover warning in {logs}"));
        assert_eq!(failover_line["span"]["pod"], "pod-a", "{failover_line}");
        assert_eq!(failover_line["span"]["namespace"], "default", "{failover_line}");
    }
}
