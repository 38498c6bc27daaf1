//! Role chaining against the in-repo fakes: which credentials sign which
//! call, how chained sessions are cached and kept apart, and what a user
//! sees when `AssumeRole` is denied, throttled or fails over. The
//! cross-account reads themselves are proven against moto (tests/moto.rs),
//! invalid fields in the bad-input table (tests/common/bad_cases.rs).

#![allow(clippy::panic)]

use crate::common;

use common::fake_agent::{FakeAgent, agent_key_for};
use common::fake_aws::{Effect, Rule, chained_key_for};
use common::inproc::InProc;
use common::*;
use tonic::Code;

const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-secrets";
const OTHER: &str = "arn:aws:iam::222222222222:role/other-secrets";
const ASSUME: &str = "AssumeRole";
const GET: &str = "GetSecretValue";

fn obj(name: &str) -> String {
    format!("- objectName: {name}\n  objectType: secretsmanager\n")
}

fn irsa_key(role: &str, token: &str) -> String {
    fake_aws::access_key_for(role, token)
}

/// The access key that signed the `GetSecretValue` of `name`.
fn signer_of(env: &impl Harness, name: &str) -> String {
    env.aws()
        .calls_of(GET)
        .iter()
        .find(|c| c.names == [name])
        .and_then(|c| c.access_key.clone())
        .unwrap_or_else(|| panic!("no GetSecretValue of {name}: {:?}", env.aws().calls()))
}

#[tokio::test(start_paused = true)]
async fn the_class_role_is_assumed_with_the_pods_irsa_credentials_and_signs_every_fetch() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "central-value");
    let target = env.provider.target("class-role");
    let req = Req::new(&obj("db"), &target)
        .set("assumeRoleArn", CENTRAL)
        .set("assumeRoleExternalId", "tenant-42")
        .set("assumeRoleDurationSeconds", "7200");
    env.provider.mount(&req).await.expect("mount");
    assert_eq!(read_mount(&target)["db"], b"central-value");

    let source = irsa_key(ROLE_A, TOKEN_A);
    let assumed = env.aws.calls_of(ASSUME);
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    let a = &assumed[0];
    assert_eq!(a.names, [CENTRAL]);
    assert_eq!(
        a.access_key.as_deref(),
        Some(source.as_str()),
        "signed by the pod's own session"
    );
    assert_eq!(a.region.as_deref(), Some(REGION), "the regional STS endpoint");
    assert_eq!(a.session.as_deref(), Some("csi-default_sa-a"));
    assert_eq!(a.external_id.as_deref(), Some("tenant-42"));
    assert_eq!(
        a.duration_seconds.as_deref(),
        Some("3600"),
        "a chained session lasts at most an hour"
    );
    assert_eq!(signer_of(&env, "db"), chained_key_for(CENTRAL, &source));

    // Kept until expiry: the next mount assumes nothing.
    env.aws.clear_calls();
    env.provider.mount(&req).await.expect("remount");
    assert!(env.aws.calls_of(ASSUME).is_empty());
    assert_eq!(signer_of(&env, "db"), chained_key_for(CENTRAL, &source));
}

#[tokio::test(start_paused = true)]
async fn an_object_role_overrides_the_class_role_and_objects_without_one_use_the_class_role() {
    let env = InProc::start(&[]).await;
    for name in ["a", "b", "c"] {
        env.aws.put_secret_string(REGION, name, &format!("value-{name}"));
    }
    let target = env.provider.target("object-role");
    let objects = format!(
        "{}{}  assumeRoleArn: {OTHER}\n{}",
        obj("a"),
        obj("b"),
        obj("c").replace("secretsmanager\n", "secretsmanager\n  objectVersionLabel: AWSCURRENT\n")
    );
    env.provider
        .mount(&Req::new(&objects, &target).set("assumeRoleArn", CENTRAL))
        .await
        .expect("mount");
    assert_eq!(read_mount(&target).len(), 3);
    let source = irsa_key(ROLE_A, TOKEN_A);
    let mut roles: Vec<String> = env.aws.calls_of(ASSUME).iter().map(|c| c.names[0].clone()).collect();
    roles.sort();
    assert_eq!(roles, [CENTRAL, OTHER], "each role once");
    assert_eq!(signer_of(&env, "b"), chained_key_for(OTHER, &source));
    assert_eq!(signer_of(&env, "c"), chained_key_for(CENTRAL, &source));
    // "a" was read in a batch, or one by one: either way as the class role.
    let a_signers: Vec<_> = env
        .aws
        .calls()
        .into_iter()
        .filter(|c| c.names.contains(&"a".to_string()))
        .map(|c| c.access_key)
        .collect();
    assert_eq!(a_signers, [Some(chained_key_for(CENTRAL, &source))]);

    // Objects of several accounts in a class without a role: those without
    // a field use the pod's own identity.
    env.aws.clear_calls();
    let objects = format!("{}  assumeRoleArn: {OTHER}\n{}", obj("b"), obj("c"));
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("mixed")))
        .await
        .expect("mount");
    assert_eq!(signer_of(&env, "b"), chained_key_for(OTHER, &source));
    assert_eq!(signer_of(&env, "c"), source);
}

#[tokio::test(start_paused = true)]
async fn pods_of_two_service_accounts_chaining_into_one_role_get_separate_sessions() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    for (pod, sa, token) in [("pod-a", "sa-a", TOKEN_A), ("pod-b", "sa-b", TOKEN_B)] {
        let req = Req::new(&obj("db"), &env.provider.target(pod))
            .pod(pod, sa, token)
            .set("assumeRoleArn", CENTRAL);
        env.provider.mount(&req).await.expect("mount");
    }
    let assumed = env.aws.calls_of(ASSUME);
    let sessions: Vec<_> = assumed
        .iter()
        .map(|c| (c.access_key.clone().unwrap(), c.session.clone().unwrap()))
        .collect();
    assert_eq!(
        sessions,
        [
            (irsa_key(ROLE_A, TOKEN_A), "csi-default_sa-a".to_string()),
            (irsa_key(ROLE_B, TOKEN_B), "csi-default_sa-b".to_string())
        ]
    );
    let signers: Vec<_> = env
        .aws
        .calls_of(GET)
        .iter()
        .map(|c| c.access_key.clone().unwrap())
        .collect();
    assert_eq!(
        signers,
        [
            chained_key_for(CENTRAL, &irsa_key(ROLE_A, TOKEN_A)),
            chained_key_for(CENTRAL, &irsa_key(ROLE_B, TOKEN_B))
        ],
        "the second pod does not get the first one's session or values"
    );
}

#[tokio::test(start_paused = true)]
async fn a_denied_assume_role_names_both_roles_and_the_trust_policy_and_writes_nothing() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    env.aws.deny_role(CENTRAL);
    let target = env.provider.target("denied");
    let err = env
        .provider
        .mount(&Req::new(&obj("db"), &target).set("assumeRoleArn", CENTRAL))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    for part in [
        &format!("failed to assume role {CENTRAL}"),
        &format!("from role {ROLE_A} (IRSA of ServiceAccount default/sa-a)"),
        "AccessDenied",
        &format!("trust policy of {CENTRAL}"),
        "sts:AssumeRole",
    ] {
        assert!(
            err.message().contains(part),
            "{:?} must contain {part:?}",
            err.message()
        );
    }
    assert!(env.aws.calls_of(GET).is_empty() && env.aws.calls_of("BatchGetSecretValue").is_empty());
    assert!(all_entries(&target).is_empty(), "nothing written");

    // The wrong external id is denied by the trust policy, and said so.
    let env = InProc::start(&[]).await;
    env.aws.require_external_id(CENTRAL, "right-id");
    let err = env
        .provider
        .mount(
            &Req::new(&obj("db"), &env.provider.target("external-id"))
                .set("assumeRoleArn", CENTRAL)
                .set("assumeRoleExternalId", "wrong-id"),
        )
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("with the class's sts:ExternalId"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("wrong-id"), "the external id is not echoed");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_assume_role_is_retried_and_an_unavailable_sts_fails_over_with_the_same_chain() {
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    env.aws.add_rule(Rule::op(ASSUME, Effect::throttling()).times(1));
    let req = Req::new(&obj("db"), &env.provider.target("throttled")).set("assumeRoleArn", CENTRAL);
    env.provider.mount(&req).await.expect("the SDK's retry");
    assert_eq!(env.aws.calls_of(ASSUME).len(), 2);

    // STS and Secrets Manager down in the primary region: the failover
    // region's STS assumes the role, and its Secrets Manager is read with
    // that chained session.
    let env = InProc::start(&[]).await;
    env.aws.put_secret_string(FAILOVER, "db", "from-failover");
    env.aws
        .add_rule(Rule::op(ASSUME, Effect::unavailable()).in_region(REGION).times(100));
    env.aws
        .add_rule(Rule::op(GET, Effect::unavailable()).in_region(REGION).times(100));
    env.aws.add_rule(
        Rule::op("BatchGetSecretValue", Effect::unavailable())
            .in_region(REGION)
            .times(100),
    );
    let target = env.provider.target("failover");
    let req = Req::new(&obj("db"), &target)
        .set("failoverRegion", FAILOVER)
        .set("assumeRoleArn", CENTRAL);
    env.provider
        .mount(&req)
        .await
        .expect("mount through the failover region");
    assert_eq!(read_mount(&target)["db"], b"from-failover");
    let assumed = env.aws.calls_of(ASSUME);
    assert_eq!(assumed.last().unwrap().region.as_deref(), Some(FAILOVER), "{assumed:?}");
    let chained = chained_key_for(CENTRAL, &irsa_key(ROLE_A, TOKEN_A));
    let failover_get = env
        .aws
        .calls_of(GET)
        .into_iter()
        .find(|c| c.region.as_deref() == Some(FAILOVER))
        .expect("read in the failover region");
    assert_eq!(failover_get.access_key, Some(chained));
}

mod end_to_end {
    use super::*;

    #[tokio::test]
    async fn pod_identity_credentials_assume_the_role() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        let url = agent.url();
        let env = Env::start_with(|mut o| {
            o.args.push(format!("--pod-identity-endpoint-ipv4={url}"));
            o
        })
        .await;
        env.aws.put_secret_string(REGION, "db", "v");
        let req = Req::new(&obj("db"), &env.provider.target("pi"))
            .set("usePodIdentity", "true")
            .set("assumeRoleArn", CENTRAL);
        env.provider.mount(&req).await.expect("mount");
        let source = agent_key_for(PI_TOKEN_A);
        let assumed = env.aws.calls_of(ASSUME);
        assert_eq!(assumed.len(), 1);
        assert_eq!(assumed[0].access_key.as_deref(), Some(source.as_str()));
        assert_eq!(signer_of(&env, "db"), chained_key_for(CENTRAL, &source));
        assert!(env.aws.calls_of("AssumeRoleWithWebIdentity").is_empty());
    }
}
