//! Objects that select many (`parameterPath`, `secretNamePrefix`,
//! `secretFilters`) against the in-repo fake AWS: pages, file names,
//! collisions, empty sets, limits, faults midway, denials and caching.
//! The same reads against moto are in tests/moto.rs.

use crate::common;

use std::collections::BTreeMap;

use common::fake_aws::{Effect, Rule};
use common::inproc::InProc;
use common::*;
use tonic::Code;

const BY_PATH: &str = "GetParametersByPath";
const BATCH: &str = "BatchGetSecretValue";

fn seed_params(env: &impl Harness, n: usize) {
    for i in 0..n {
        env.aws().put_param(
            REGION,
            &format!("/orders/prod/p{i:02}"),
            "SecureString",
            &format!("value-{i}"),
        );
    }
    env.aws()
        .put_param(REGION, "/orders/prod/db/url", "String", "postgres://db");
    env.aws()
        .put_param(REGION, "/orders/staging/p00", "String", "not this one");
}

fn names(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    files.keys().cloned().collect()
}

#[tokio::test(start_paused = true)]
async fn every_parameter_under_a_path_is_a_file_across_pages_and_follows_additions_and_deletions() {
    let env = InProc::start(&[]).await;
    seed_params(&env, 25);
    let target = env.provider.target("by-path");
    let objects = "- parameterPath: /orders/prod\n  objectType: ssmparameter\n  filePermission: \"0600\"\n";
    let resp = env.provider.mount(&Req::new(objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names(&files), expected, "one level only: db/url is not there");
    assert_eq!(files["p07"], b"value-7");
    assert_eq!(mode_of(&target.join("p07")), 0o600);
    assert_eq!(versions(&resp)["p07"], "1");
    let pages: Vec<Vec<String>> = env.aws.calls_of(BY_PATH).iter().map(|c| c.names.clone()).collect();
    assert_eq!(
        pages,
        [
            vec!["/orders/prod".to_string()],
            vec!["/orders/prod".to_string(), "page-10".to_string()],
            vec!["/orders/prod".to_string(), "page-20".to_string()]
        ],
        "every page, ten parameters each"
    );

    // Recursive, under an alias, translation off: a directory tree.
    let target = env.provider.target("recursive");
    let objects = "- parameterPath: /orders/prod/\n  objectType: ssmparameter\n  recursive: true\n  objectAlias: cfg\n";
    env.provider
        .mount(&Req::new(objects, &target).set("pathTranslation", "False"))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files.len(), 26);
    assert_eq!(files["cfg/db/url"], b"postgres://db");

    // A parameter added appears at the next remount; a deleted one goes.
    env.aws.put_param(REGION, "/orders/prod/zz-new", "String", "new");
    env.aws.delete_param(REGION, "/orders/prod/p00");
    env.provider
        .mount(&Req::new(objects, &target).set("pathTranslation", "False"))
        .await
        .expect("remount");
    let files = read_mount(&target);
    assert_eq!(files["cfg/zz-new"], b"new");
    assert!(!files.contains_key("cfg/p00"), "{:?}", names(&files));
    assert_eq!(files.len(), 26);
}

#[tokio::test(start_paused = true)]
async fn secrets_by_prefix_and_by_tag_are_files_named_relative_to_the_prefix() {
    let env = InProc::start(&[]).await;
    for i in 0..25 {
        let name = format!("orders/prod/s{i:02}");
        env.aws.put_secret_string(REGION, &name, &format!("secret-{i}"));
        if i % 2 == 0 {
            env.aws.tag_secret(REGION, &name, "team", "orders");
        }
    }
    env.aws.put_secret_string(REGION, "payments/prod/x", "other team");
    let target = env.provider.target("by-prefix");
    let resp = env
        .provider
        .mount(&Req::new(
            "- secretNamePrefix: orders/prod/\n  objectType: secretsmanager\n",
            &target,
        ))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(files.len(), 25);
    assert_eq!(files["s13"], b"secret-13");
    assert!(!versions(&resp)["s13"].is_empty());
    let pages: Vec<Vec<String>> = env.aws.calls_of(BATCH).iter().map(|c| c.names.clone()).collect();
    assert_eq!(
        pages,
        [
            vec!["orders/prod/".to_string()],
            vec!["orders/prod/".to_string(), "page-20".to_string()]
        ]
    );

    // By tag: the tagged half, named by their full names (translated).
    let target = env.provider.target("by-tag");
    let objects = "- secretFilters:\n    tag-key: team\n    tag-value: [orders]\n  objectType: secretsmanager\n";
    env.provider.mount(&Req::new(objects, &target)).await.expect("mount");
    let files = read_mount(&target);
    assert_eq!(files.len(), 13);
    assert_eq!(files["orders_prod_s12"], b"secret-12");

    // Prefix and tag together; a deleted secret disappears.
    env.aws.delete_secret(REGION, "orders/prod/s02");
    let target = env.provider.target("both");
    let objects = "- secretNamePrefix: orders/prod/s0\n  secretFilters: {tag-key: team}\n  objectAlias: tagged\n";
    env.provider
        .mount(&Req::new(objects, &target).set("pathTranslation", "False"))
        .await
        .expect("mount");
    assert_eq!(
        names(&read_mount(&target)),
        ["tagged/0", "tagged/4", "tagged/6", "tagged/8"],
        "s00..s09 tagged, s02 deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn matches_that_collide_with_each_other_or_another_object_are_refused_before_anything_is_written() {
    let env = InProc::start(&[]).await;
    env.aws.put_param(REGION, "/app/a/b", "String", "1");
    env.aws.put_param(REGION, "/app/a_b", "String", "2");
    env.aws.put_param(REGION, "/app/solo", "String", "3");
    env.aws.put_secret_string(REGION, "other", "x");
    let target = env.provider.target("collide");
    let err = env
        .provider
        .mount(&Req::new(
            "- parameterPath: /app\n  recursive: true\n  objectType: ssmparameter\n",
            &target,
        ))
        .await
        .expect_err("a/b and a_b are one file with translation _");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(
        err.message(),
        "found duplicate file name a_b: written by both /app/a/b and /app/a_b"
    );
    assert!(all_entries(&target).is_empty());

    let objects = "- parameterPath: /app\n  objectType: ssmparameter\n- objectName: other\n  objectType: secretsmanager\n  objectAlias: solo\n";
    let err = env
        .provider
        .mount(&Req::new(objects, &target))
        .await
        .expect_err("solo twice");
    assert_eq!(
        err.message(),
        "found duplicate file name solo: written by both /app/solo and other"
    );
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_match_fails_unless_allowed_and_too_many_stops_paging_at_the_limit() {
    let env = InProc::start(&["--max-files-per-mount=12", "--cache-ttl=1m"]).await;
    seed_params(&env, 25);
    let target = env.provider.target("none");
    let err = env
        .provider
        .mount(&Req::new("- parameterPath: /nothing/here\n", &target))
        .await
        .expect_err("no match");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        format!(
            "parameterPath /nothing/here matches nothing in SSM Parameter Store in {REGION} (set allowEmpty: true to mount no files for it)"
        )
    );
    let objects = "- parameterPath: /nothing/here\n  allowEmpty: true\n- objectName: /orders/prod/p01\n  objectType: ssmparameter\n  objectAlias: one\n";
    env.provider.mount(&Req::new(objects, &target)).await.expect("allowed");
    assert_eq!(names(&read_mount(&target)), ["one"]);
    // The cached empty set of the allowEmpty object is not the same object
    // as one without it.
    let err = env
        .provider
        .mount(&Req::new("- parameterPath: /nothing/here\n", &target))
        .await
        .expect_err("still no match");
    assert_eq!(err.code(), Code::NotFound);

    env.aws.clear_calls();
    let err = env
        .provider
        .mount(&Req::new(
            "- parameterPath: /orders/prod\n",
            &env.provider.target("many"),
        ))
        .await
        .expect_err("25 files, 12 allowed");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("--max-files-per-mount"), "{}", err.message());
    assert_eq!(env.aws.calls_of(BY_PATH).len(), 2, "paging stopped once over the limit");
}

#[tokio::test(start_paused = true)]
async fn a_page_failing_midway_fails_the_mount_and_leaves_the_files_as_they_were() {
    let env = InProc::start(&[]).await;
    seed_params(&env, 25);
    let target = env.provider.target("midway");
    let req = Req::new("- parameterPath: /orders/prod\n", &target);
    env.provider.mount(&req).await.expect("first mount");
    let before = read_mount(&target);
    env.aws.put_param(REGION, "/orders/prod/p03", "String", "rotated");
    env.aws
        .add_rule(Rule::op(BY_PATH, Effect::internal_error()).naming("page-20"));
    let err = env.provider.mount(&req).await.expect_err("third page fails");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().starts_with(&format!(
            "failed to read parameterPath /orders/prod from SSM Parameter Store in {REGION}: InternalServiceError"
        )),
        "{}",
        err.message()
    );
    assert_eq!(read_mount(&target), before, "nothing written: p03 is not rotated");
}

#[tokio::test(start_paused = true)]
async fn an_access_denial_names_the_actions_each_form_needs() {
    let env = InProc::start(&[]).await;
    env.aws.add_rule(Rule::op(BY_PATH, Effect::access_denied()));
    env.aws.add_rule(Rule::op(BATCH, Effect::access_denied()));
    let target = env.provider.target("denied");
    let err = env
        .provider
        .mount(&Req::new("- parameterPath: /orders/prod\n", &target))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .ends_with("(this needs ssm:GetParametersByPath on the path (and kms:Decrypt for SecureString))"),
        "{}",
        err.message()
    );
    let err = env
        .provider
        .mount(&Req::new("- secretNamePrefix: orders/\n", &target))
        .await
        .expect_err("denied");
    assert!(
        err.message()
            .contains("secretsmanager:BatchGetSecretValue and secretsmanager:ListSecrets"),
        "{}",
        err.message()
    );
}

#[tokio::test(start_paused = true)]
async fn each_match_is_decoded_with_the_objects_encoding() {
    let env = InProc::start(&[]).await;
    env.aws.put_param(REGION, "/certs/a", "SecureString", "aGVsbG8=");
    env.aws.put_param(REGION, "/certs/b", "SecureString", "d29ybGQ");
    let target = env.provider.target("decoded");
    env.provider
        .mount(&Req::new(
            "- parameterPath: /certs\n  objectEncoding: base64\n",
            &target,
        ))
        .await
        .expect("mount");
    let files = read_mount(&target);
    assert_eq!(
        (files["a"].as_slice(), files["b"].as_slice()),
        (&b"hello"[..], &b"world"[..])
    );
    env.aws.put_param(REGION, "/certs/c", "SecureString", "not base64!");
    let err = env
        .provider
        .mount(&Req::new(
            "- parameterPath: /certs\n  objectEncoding: base64\n",
            &target,
        ))
        .await
        .expect_err("c is not base64");
    assert_eq!(
        err.message(),
        "objectEncoding of object parameterPath /certs: the value of file c is not valid base64"
    );
    assert_eq!(read_mount(&target), files, "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn the_matches_of_several_selections_share_one_budget_per_mount() {
    let env = InProc::start(&["--max-files-per-mount=12"]).await;
    for dir in ["a", "b"] {
        for i in 0..8 {
            env.aws.put_param(REGION, &format!("/{dir}/p{i}"), "String", "v");
        }
    }
    let target = env.provider.target("budget");
    let one = "- parameterPath: /a\n  objectAlias: a\n";
    env.provider.mount(&Req::new(one, &target)).await.expect("8 files fit");
    let err = env
        .provider
        .mount(&Req::new(
            &format!("{one}- parameterPath: /b\n  objectAlias: b\n"),
            &target,
        ))
        .await
        .expect_err("16 files do not");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message()
            .starts_with("the mount, with the matches of parameterPath /")
            && err
                .message()
                .ends_with("13 or more files, more than the limit of 12 (--max-files-per-mount)"),
        "{}",
        err.message()
    );
    assert_eq!(read_mount(&target).len(), 8, "the first mount's files stay");
}

#[tokio::test(start_paused = true)]
async fn templates_read_the_files_of_matches_and_keys_and_are_returned_in_driver_writes_mode() {
    let env = InProc::start(&["--driver-writes-secrets", "--max-file-bytes=64"]).await;
    env.aws.put_param(REGION, "/app/cfg/host", "String", "db.internal");
    env.aws.put_param(REGION, "/app/cfg/port", "String", "5432");
    env.aws
        .put_secret_string(REGION, "db", r#"{"user": "app", "password": "pw-canary-77"}"#);
    let objects = "- parameterPath: /app/cfg\n  objectType: ssmparameter\n  objectAlias: cfg\n\
                   - objectName: db\n  objectType: secretsmanager\n  jsonKeysAsFiles: true\n";
    let templates = "- fileName: url\n  filePermission: \"0440\"\n  template: >-\n    \
                     postgres://{{ files['db/user'] }}@{{ files['cfg/host'] }}:{{ files['cfg/port'] }}\n";
    let target = env.provider.target("tmpl-dw");
    let req = Req::new(objects, &target)
        .set("pathTranslation", "False")
        .set("templates", templates);
    let resp = env.provider.mount(&req).await.expect("mount");
    let files = file_map(&resp);
    assert_eq!(files["url"], (0o440, b"postgres://app@db.internal:5432".to_vec()));
    assert!(files.contains_key("cfg/host") && files.contains_key("db/password"));
    assert!(all_entries(&target).is_empty(), "driver-writes mode writes nothing");
    let v1 = versions(&resp)["url"].clone();

    // A parameter the template reads changes; so does its version.
    env.aws.put_param(REGION, "/app/cfg/port", "String", "6432");
    let resp = env.provider.mount(&req).await.expect("remount");
    assert_eq!(file_map(&resp)["url"].1, b"postgres://app@db.internal:6432");
    assert_ne!(versions(&resp)["url"], v1);

    // A name no match has fails at render (names are known only once
    // fetched), naming the template and the line, never a value.
    let missing = "- fileName: url\n  template: \"{{ files['db/user'] }}\\n{{ files['cfg/nope'] }}\"\n";
    let err = env
        .provider
        .mount(
            &Req::new(objects, &target)
                .set("pathTranslation", "False")
                .set("templates", missing),
        )
        .await
        .expect_err("no such file");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "template url, line 2: files[\"cfg/nope\"] names no file of this mount"
    );

    // The output stops at --max-file-bytes.
    let big =
        "- fileName: big\n  template: \"{% for c in files['cfg/host'] %}{{ files['db/password'] }}{% endfor %}\"\n";
    let err = env
        .provider
        .mount(
            &Req::new(objects, &target)
                .set("pathTranslation", "False")
                .set("templates", big),
        )
        .await
        .expect_err("too large");
    assert_eq!(
        err.message(),
        "template big: the output: 65 or more bytes, more than the limit of 64 (--max-file-bytes)"
    );
    assert!(!err.message().contains("pw-canary-77"));
}

mod end_to_end {
    use super::*;

    #[tokio::test]
    async fn bulk_objects_share_calls_between_concurrent_mounts_and_use_the_value_cache() {
        let env = Env::start_with(|mut o| {
            o.args.push("--cache-ttl=1m".into());
            o
        })
        .await;
        env.aws.set_delay(std::time::Duration::from_millis(200));
        seed_params(&env, 5);
        let mut tasks = Vec::new();
        for i in 0..4 {
            let req = Req::new(
                "- parameterPath: /orders/prod\n",
                &env.provider.target(&format!("sf-{i}")),
            );
            let mut client = env.provider.client().await;
            tasks.push(tokio::spawn(async move {
                client.mount(req.build()).await.map(|_| req.target)
            }));
        }
        for t in tasks {
            let target = t.await.unwrap().expect("mount");
            assert_eq!(read_mount(&target).len(), 5);
        }
        assert_eq!(
            env.aws.calls_of(BY_PATH).len(),
            1,
            "one call for four concurrent mounts"
        );
        env.provider
            .mount(&Req::new(
                "- parameterPath: /orders/prod\n",
                &env.provider.target("cached"),
            ))
            .await
            .expect("cached");
        assert_eq!(env.aws.calls_of(BY_PATH).len(), 1, "served from the value cache");
        // Another identity does not get them.
        env.provider
            .mount(
                &Req::new("- parameterPath: /orders/prod\n", &env.provider.target("other"))
                    .pod("pod-b", "sa-b", TOKEN_B),
            )
            .await
            .expect("other identity");
        assert_eq!(env.aws.calls_of(BY_PATH).len(), 2);
    }
}
