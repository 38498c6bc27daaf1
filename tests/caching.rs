//! Identity-scoped caches, batching and single-flight: the calls AWS, STS
//! and Kubernetes receive, and the safety rules — a role shared by two
//! ServiceAccounts is assumed separately for each, nothing cached is served
//! to another identity, a failed credential fetch is not kept.
//!
//! In-process ([`common::inproc`]), with tokio's time paused: TTLs,
//! backoffs and delays pass without waiting.

use crate::common;

use std::time::Duration;

use common::fake_aws::{CALLER, Fault, access_key_for};
use common::inproc::InProc;
use common::*;

const SM: &str = "secretsmanager";
const SSM: &str = "ssmparameter";
const SHARED_ROLE: &str = "arn:aws:iam::123456789012:role/shared";

fn obj(name: &str, ty: &str) -> String {
    format!("- objectName: {name}\n  objectType: {ty}\n")
}

fn ten_secrets(env: &InProc) -> String {
    (0..10)
        .map(|i| {
            env.aws.put_secret_string(REGION, &format!("s{i}"), &format!("v{i}"));
            obj(&format!("s{i}"), SM)
        })
        .collect()
}

fn count(env: &InProc, op: &str) -> usize {
    env.aws.calls_of(op).len()
}

#[tokio::test(start_paused = true)]
async fn a_warm_remount_of_ten_secrets_is_one_aws_call_and_nothing_else() {
    let env = InProc::start(&[]).await;
    let objects = ten_secrets(&env);
    let target = env.provider.target("warm");
    let req = Req::new(&objects, &target);
    env.provider.mount(&req).await.expect("first mount");
    assert_eq!(count(&env, "BatchGetSecretValue"), 1, "10 secrets in one batch");
    assert_eq!(count(&env, "AssumeRoleWithWebIdentity"), 1);
    assert_eq!(env.kube.calls().len(), 1);

    env.aws.clear_calls();
    let kube_before = env.kube.calls().len();
    env.provider.mount(&req).await.expect("re-mount");
    let calls = env.aws.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].op, "BatchGetSecretValue");
    assert_eq!(
        env.kube.calls().len(),
        kube_before,
        "no Kubernetes call on a warm re-mount"
    );
    assert_eq!(read_mount(&target)["s9"], b"v9");
}

#[tokio::test(start_paused = true)]
async fn a_role_shared_by_two_service_accounts_is_assumed_separately_for_each() {
    let env = InProc::start(&[]).await;
    env.kube.add_service_account("default", "sa-x", Some(SHARED_ROLE));
    env.kube.add_service_account("default", "sa-y", Some(SHARED_ROLE));
    env.aws.put_secret_string(REGION, "whoami", CALLER);
    let (tx, ty) = (env.provider.target("sa-x"), env.provider.target("sa-y"));
    env.provider
        .mount(&Req::new(&obj("whoami", SM), &tx).pod("pod-x", "sa-x", "token-x"))
        .await
        .expect("x");
    env.provider
        .mount(&Req::new(&obj("whoami", SM), &ty).pod("pod-y", "sa-y", "token-y"))
        .await
        .expect("y");
    let sts = env.aws.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(sts.len(), 2, "one AssumeRoleWithWebIdentity per ServiceAccount");
    assert_eq!(sts[0].token.as_deref(), Some("token-x"));
    assert_eq!(sts[1].token.as_deref(), Some("token-y"));
    assert_eq!(
        read_mount(&tx)["whoami"],
        access_key_for(SHARED_ROLE, "token-x").as_bytes()
    );
    assert_eq!(
        read_mount(&ty)["whoami"],
        access_key_for(SHARED_ROLE, "token-y").as_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn cached_values_are_never_served_to_another_identity() {
    let env = InProc::start(&["--cache-ttl=10m"]).await;
    env.kube.add_service_account("default", "sa-x", Some(SHARED_ROLE));
    env.kube.add_service_account("default", "sa-y", Some(SHARED_ROLE));
    env.aws.put_secret_string(REGION, "whoami", CALLER);
    env.aws.put_param(REGION, "whoami-p", "String", CALLER);
    let objects = format!("{}{}", obj("whoami", SM), obj("whoami-p", SSM));
    let (tx, tx2, ty) = (
        env.provider.target("x"),
        env.provider.target("x2"),
        env.provider.target("y"),
    );
    env.provider
        .mount(&Req::new(&objects, &tx).pod("pod-x", "sa-x", "token-x"))
        .await
        .expect("x");
    let after_x = env.aws.calls().len();
    env.provider
        .mount(&Req::new(&objects, &tx2).pod("pod-x2", "sa-x", "token-x2"))
        .await
        .expect("x2");
    assert_eq!(
        env.aws.calls().len(),
        after_x,
        "the same identity is served from the value cache"
    );
    env.provider
        .mount(&Req::new(&objects, &ty).pod("pod-y", "sa-y", "token-y"))
        .await
        .expect("y");
    let key_x = access_key_for(SHARED_ROLE, "token-x");
    let key_y = access_key_for(SHARED_ROLE, "token-y");
    for (file, v) in read_mount(&tx2) {
        assert_eq!(String::from_utf8_lossy(&v), key_x, "{file}");
    }
    for (file, v) in read_mount(&ty) {
        assert_eq!(
            String::from_utf8_lossy(&v),
            key_y,
            "{file}: another identity's cached value was served"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_value_cache_serves_within_its_ttl_and_refetches_after() {
    let env = InProc::start(&["--cache-ttl=1s"]).await;
    env.aws.put_secret_string(REGION, "rot", "before");
    let target = env.provider.target("ttl");
    let req = Req::new(&obj("rot", SM), &target);
    env.provider.mount(&req).await.expect("mount");
    env.aws.put_secret_string(REGION, "rot", "after");
    env.aws.clear_calls();
    env.provider.mount(&req).await.expect("within ttl");
    assert!(env.aws.calls().is_empty(), "served from the cache");
    assert_eq!(read_mount(&target)["rot"], b"before", "rotation lags by up to the TTL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.provider.mount(&req).await.expect("after ttl");
    assert_eq!(read_mount(&target)["rot"], b"after");
}

#[tokio::test(start_paused = true)]
async fn a_failed_credential_fetch_is_not_cached() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "s", "v");
    env.aws.inject(Fault {
        op: "AssumeRoleWithWebIdentity",
        region: None,
        status: 400,
        code: "InvalidIdentityToken",
        times: 1,
        name: None,
    });
    let target = env.provider.target("fail-then-ok");
    let req = Req::new(&obj("s", SM), &target);
    env.provider.mount(&req).await.expect_err("STS refused the token");
    env.provider.mount(&req).await.expect("the next mount asks STS again");
    assert_eq!(count(&env, "AssumeRoleWithWebIdentity"), 2);
}

#[tokio::test(start_paused = true)]
async fn credentials_are_refreshed_ahead_of_their_expiration() {
    // Credentials valid for 10 minutes: kept with the default 5-minute margin.
    let env = InProc::start(&[]).await;
    env.aws.set_sts_lifetime(Duration::from_secs(600));
    env.aws.put_secret_string(REGION, "s", "v");
    let req = Req::new(&obj("s", SM), &env.provider.target("keep"));
    env.provider.mount(&req).await.expect("1");
    env.provider.mount(&req).await.expect("2");
    assert_eq!(count(&env, "AssumeRoleWithWebIdentity"), 1);

    // With a 15-minute margin the same credentials are already due.
    let env = InProc::start(&["--credential-refresh-margin=15m"]).await;
    env.aws.set_sts_lifetime(Duration::from_secs(600));
    env.aws.put_secret_string(REGION, "s", "v");
    let req = Req::new(&obj("s", SM), &env.provider.target("refresh"));
    env.provider.mount(&req).await.expect("1");
    env.provider.mount(&req).await.expect("2");
    assert_eq!(count(&env, "AssumeRoleWithWebIdentity"), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mounts_of_the_same_objects_by_one_identity_share_calls() {
    let env = InProc::start(&[]).await;
    let objects = format!("{}{}", ten_secrets(&env), obj("p", SSM));
    env.aws.put_param(REGION, "p", "String", "v");
    env.aws.set_delay(Duration::from_millis(200));
    let mounts = (0..8).map(|i| {
        let req =
            Req::new(&objects, &env.provider.target(&format!("sf-{i}"))).pod(&format!("pod-{i}"), "sa-a", TOKEN_A);
        let provider = &env.provider;
        async move { provider.mount(&req).await.map(|_| ()) }
    });
    for result in futures::future::join_all(mounts).await {
        result.expect("mount");
    }
    assert_eq!(
        count(&env, "AssumeRoleWithWebIdentity"),
        1,
        "one STS call for one identity"
    );
    assert_eq!(count(&env, "BatchGetSecretValue"), 1, "eight mounts, one batch call");
    assert_eq!(count(&env, "GetParameters"), 1);
    assert_eq!(env.kube.calls().len(), 1, "one ServiceAccount read");
}

#[tokio::test(start_paused = true)]
async fn batch_partial_failures_are_reported_per_object() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "present", "v");
    let target = env.provider.target("partial");
    let err = env
        .provider
        .mount(&Req::new(
            &format!("{}{}", obj("present", SM), obj("absent", SM)),
            &target,
        ))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("secret absent") && err.message().contains("ResourceNotFoundException"),
        "{}",
        err.message()
    );
    assert_eq!(count(&env, "BatchGetSecretValue"), 1);
    assert!(all_entries(&target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_batch_permission_secrets_fall_back_and_the_denial_is_remembered() {
    let env = InProc::start(&[]).await;
    let objects = ten_secrets(&env);
    env.aws.inject(Fault::persistent(
        "BatchGetSecretValue",
        REGION,
        400,
        "AccessDeniedException",
    ));
    let target = env.provider.target("denied");
    let req = Req::new(&objects, &target);
    env.provider.mount(&req).await.expect("falls back to GetSecretValue");
    assert_eq!(count(&env, "BatchGetSecretValue"), 1);
    assert_eq!(count(&env, "GetSecretValue"), 10);
    assert_eq!(read_mount(&target)["s3"], b"v3");
    env.provider.mount(&req).await.expect("re-mount");
    assert_eq!(count(&env, "BatchGetSecretValue"), 1, "the denied call is not repeated");
    assert_eq!(count(&env, "GetSecretValue"), 20);

    // Another identity still tries the batch.
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("other")).pod("pod-b", "sa-b", TOKEN_B))
        .await
        .expect("other identity");
    assert_eq!(count(&env, "BatchGetSecretValue"), 2);
}

#[tokio::test(start_paused = true)]
async fn batching_can_be_turned_off() {
    let env = InProc::start(&["--batch-get-secret-value=false"]).await;
    let objects = ten_secrets(&env);
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("nobatch")))
        .await
        .expect("mount");
    assert_eq!(count(&env, "BatchGetSecretValue"), 0);
    assert_eq!(count(&env, "GetSecretValue"), 10);
}

#[tokio::test(start_paused = true)]
async fn pod_identity_credentials_are_per_pod_unless_scoped_to_the_service_account() {
    for (scope, expected) in [("pod", 2), ("service-account", 1)] {
        let scope_flag = format!("--pod-identity-cache-scope={scope}");
        let env = InProc::start(&[&scope_flag]).await;
        env.aws.put_secret_string(REGION, "s", "v");
        for pod in ["pod-1", "pod-2", "pod-1"] {
            env.provider
                .mount(
                    &Req::new(&obj("s", SM), &env.provider.target(&format!("{scope}-{pod}")))
                        .pod(pod, "sa-a", TOKEN_A)
                        .set("usePodIdentity", "true"),
                )
                .await
                .expect("mount");
        }
        assert_eq!(env.agent.tokens().len(), expected, "scope {scope}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_go_call_pattern_makes_every_call_on_every_mount() {
    let env = InProc::start(GO_PATTERN).await;
    let objects = ten_secrets(&env);
    let req = Req::new(&objects, &env.provider.target("go"));
    env.provider.mount(&req).await.expect("1");
    env.provider.mount(&req).await.expect("2");
    assert_eq!(count(&env, "GetSecretValue"), 20);
    assert_eq!(count(&env, "AssumeRoleWithWebIdentity"), 2);
    assert_eq!(env.kube.calls().len(), 2);
    assert_eq!(
        env.aws.concurrency.max.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one call at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retryable_batch_failure_fails_each_object_over_without_asking_the_primary_again() {
    let env = InProc::start(&[]).await;
    for name in ["b1", "b2", "b3"] {
        env.aws
            .put_secret_string(FAILOVER, name, &format!("{name}-from-failover"));
    }
    env.aws.inject(Fault::persistent(
        "BatchGetSecretValue",
        REGION,
        503,
        "ServiceUnavailable",
    ));
    let target = env.provider.target("batch-failover");
    let objects = format!("{}{}{}", obj("b1", SM), obj("b2", SM), obj("b3", SM));
    env.provider
        .mount(&Req::new(&objects, &target).set("failoverRegion", FAILOVER))
        .await
        .expect("the failover region answers");
    let files = read_mount(&target);
    assert_eq!(files["b2"], b"b2-from-failover");
    let primary_gets = env
        .aws
        .calls_of("GetSecretValue")
        .into_iter()
        .filter(|c| c.region.as_deref() == Some(REGION))
        .count();
    assert_eq!(primary_gets, 0, "the primary is not asked again object by object");
    assert_eq!(
        env.aws.calls_of("GetSecretValue").len(),
        3,
        "one failover call per object"
    );

    // Without a failover region the batch error is the mount's error.
    let err = env
        .provider
        .mount(&Req::new(&objects, &env.provider.target("batch-no-failover")))
        .await
        .expect_err("no failover region");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message()
            .starts_with("failed to fetch secrets b1, b2, b3 from Secrets Manager in us-west-2"),
        "{}",
        err.message()
    );
}

/// `--serve-stale-max-age`: during a brownout (AWS failing with a retryable
/// error in every region) a new pod of an identity mounts from that
/// identity's last good value; another identity, an access denial and a
/// deletion all fail, and so does a value older than the maximum age.
#[tokio::test(start_paused = true)]
async fn a_brownout_is_served_from_the_identitys_last_good_value_and_nothing_else() {
    use common::fake_aws::{Effect, Rule};
    let env = InProc::start(&["--serve-stale-max-age=3s"]).await;
    env.aws.put_secret_string(REGION, "db", "good");
    env.aws.put_param(REGION, "/p", "String", "param-good");
    let objects = format!(
        "{}{}",
        obj("db", SM),
        obj("/p", SSM).replace(SSM, &format!("{SSM}\n  objectAlias: p"))
    );
    let req = |pod: &str, sa: &str, token: &str| Req::new(&objects, &env.provider.target(pod)).pod(pod, sa, token);
    env.provider
        .mount(&req("pod-a1", "sa-a", TOKEN_A))
        .await
        .expect("healthy mount");
    env.provider
        .mount(&req("pod-b1", "sa-b", TOKEN_B))
        .await
        .expect("healthy mount of b");
    env.aws.put_secret_string(REGION, "db", "rotated");
    env.aws.clear_calls();
    // Without a brownout nothing is served stale: the value is fetched anew.
    let fresh = req("pod-a0", "sa-a", TOKEN_A);
    env.provider.mount(&fresh).await.expect("fresh");
    assert_eq!(read_mount(&fresh.target)["db"], b"rotated");
    assert_eq!(count(&env, "GetSecretValue"), 1);

    // Brownout: every Secrets Manager and SSM call fails with 503.
    for op in ["GetSecretValue", "BatchGetSecretValue", "GetParameters"] {
        env.aws.add_rule(Rule::op(op, Effect::unavailable()));
    }
    let a2 = req("pod-a2", "sa-a", TOKEN_A);
    env.provider.mount(&a2).await.expect("served from the last good values");
    let files = read_mount(&a2.target);
    assert_eq!(
        (files["db"].as_slice(), files["p"].as_slice()),
        (&b"rotated"[..], &b"param-good"[..])
    );
    assert!(env.provider.logs().contains("serving this identity's last good values"));
    assert!(count(&env, "GetSecretValue") > 1, "AWS was asked first");

    // Another identity never gets a's values: b's own last good ones.
    let b2 = req("pod-b2", "sa-b", TOKEN_B);
    env.provider.mount(&b2).await.expect("b's own last good values");
    assert_eq!(read_mount(&b2.target)["db"], b"good", "b last read before the rotation");
    let c = Req::new(&objects, &env.provider.target("pod-c")).pod("pod-c", "sa-c", "eyJ.c.sig");
    env.kube
        .add_service_account("default", "sa-c", Some("arn:aws:iam::123456789012:role/role-c"));
    let err = env.provider.mount(&c).await.expect_err("no last good value for c");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());

    // An access denial and a deletion take effect at once.
    env.aws.recover();
    env.aws.add_rule(Rule::op("GetSecretValue", Effect::access_denied()));
    let err = env
        .provider
        .mount(&req("pod-a3", "sa-a", TOKEN_A))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}", err.message());
    env.aws.recover();
    env.aws.delete_secret(REGION, "db");
    let err = env
        .provider
        .mount(&req("pod-a4", "sa-a", TOKEN_A))
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    // Older than --serve-stale-max-age: the brownout fails the mount.
    env.aws.put_secret_string(REGION, "db", "back");
    env.provider
        .mount(&req("pod-a5", "sa-a", TOKEN_A))
        .await
        .expect("recovered");
    for op in ["GetSecretValue", "BatchGetSecretValue", "GetParameters"] {
        env.aws.add_rule(Rule::op(op, Effect::unavailable()));
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let err = env
        .provider
        .mount(&req("pod-a6", "sa-a", TOKEN_A))
        .await
        .expect_err("too old");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
}
