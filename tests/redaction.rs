//! Secret values and service-account tokens never reach logs or errors,
//! even with trace logging for every crate (the SDK included).

use crate::common;

use common::*;

const VALUE_CANARY: &str = "VALUE-CANARY-7f3a9c";
const TOKEN_CANARY: &str = "eyJ.TOKEN-CANARY-b41d.sig";

#[tokio::test]
async fn values_and_tokens_never_appear_in_logs_or_errors() {
    let env = Env::start_with(|mut o| {
        o.env.push(("RUST_LOG".into(), "trace".into()));
        o
    })
    .await;
    env.aws
        .put_secret_string(REGION, "canary", &format!("{{\"k\":\"{VALUE_CANARY}\"}}"));
    env.aws.put_param(REGION, "canary-p", "SecureString", VALUE_CANARY);
    let target = env.provider.target("redaction");
    let objects = "- objectName: canary\n  objectType: secretsmanager\n  jmesPath:\n    - path: k\n      objectAlias: k\n- objectName: canary-p\n  objectType: ssmparameter\n";
    let req = Req::new(objects, &target).pod("pod-a", "sa-a", TOKEN_CANARY);
    let mut with_secrets = req.clone();
    with_secrets.secrets = format!("{{\"password\":\"{VALUE_CANARY}\"}}");
    env.provider.mount(&with_secrets).await.expect("mount");

    // Failing mounts: a JMES error on the value, a bad token map, a non-string result.
    let mut errors = Vec::new();
    let bad_jmes = Req::new(
        "- objectName: canary-p\n  objectType: ssmparameter\n  jmesPath:\n    - path: k\n      objectAlias: x\n",
        &target,
    )
    .pod("pod-a", "sa-a", TOKEN_CANARY);
    errors.push(
        env.provider
            .mount(&bad_jmes)
            .await
            .expect_err("not JSON")
            .message()
            .to_string(),
    );
    let bad_tokens = Req::new(objects, &target).set(
        "csi.storage.k8s.io/serviceAccount.tokens",
        &format!("{{\"sts.amazonaws.com\": \"{TOKEN_CANARY}\"}}"),
    );
    errors.push(
        env.provider
            .mount(&bad_tokens)
            .await
            .expect_err("bad map")
            .message()
            .to_string(),
    );
    let denied_role = "arn:aws:iam::123456789012:role/denied";
    env.kube.add_service_account("default", "sa-denied", Some(denied_role));
    env.aws.deny_role(denied_role);
    let other = env.provider.target("redaction-2");
    errors.push(
        env.provider
            .mount(&Req::new(objects, &other).pod("pod-c", "sa-denied", TOKEN_CANARY))
            .await
            .expect_err("denied")
            .message()
            .to_string(),
    );

    let logs = env.provider.logs();
    assert!(logs.contains("mount succeeded"), "the provider logged: {logs}");
    assert!(logs.contains("TRACE"), "trace logging of every crate was on");
    for text in errors.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(VALUE_CANARY), "a secret value leaked: {text}");
        assert!(!text.contains("TOKEN-CANARY"), "a token leaked: {text}");
        assert!(!text.contains("secret-ASIA"), "a secret access key leaked: {text}");
        assert!(!text.contains("session-ASIA"), "a session token leaked: {text}");
    }
}
