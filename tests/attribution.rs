//! Attribution: the role session names STS receives (IRSA and chained),
//! `SourceIdentity` and session tags on chained roles when a class asks for
//! them, and the audit record each mount leaves in the log stream (read
//! back from the provider's own output) with the objects-read metric. The
//! session names as AWS records them are proven against moto
//! (tests/moto.rs).

#![allow(clippy::panic)]

use crate::common;

use common::fake_aws::{Effect, Rule, secret_arn};
use common::inproc::InProc;
use common::*;
use csi_provider_aws::config::Environment;
use serde_json::Value;
use tonic::Code;

const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-secrets";
const SM: &str = "secretsmanager";
const SSM: &str = "ssmparameter";
const NODE: &str = "ip-10-0-0-1.eu-west-1.compute.internal";

fn obj(name: &str, kind: &str) -> String {
    format!("- objectName: {name}\n  objectType: {kind}\n")
}

/// A provider in this process on node [`NODE`], with `flags`.
async fn start(flags: &[&str]) -> InProc {
    InProc::start_in(
        flags,
        Environment {
            node_name: Some(NODE.to_string()),
            ..Environment::default()
        },
    )
    .await
}

/// The audit records in `logs` (text format: a timestamp, the level, the
/// target), oldest first.
fn records(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| {
            l.split_once(" csi_provider_aws::audit: mount ")
                .is_some_and(|(head, _)| head.split_whitespace().count() == 2)
        })
        .map(str::to_string)
        .collect()
}

/// The value of `key` in a text record: a JSON list, or the word up to the
/// next space.
fn field(record: &str, key: &str) -> Value {
    let Some(at) = record.find(&format!(" {key}=")) else {
        panic!("no {key} in {record}")
    };
    let rest = &record[at + key.len() + 2..];
    if rest.starts_with('[') {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        return match values.next() {
            Some(Ok(v)) => v,
            other => panic!("{key} is not JSON in {record}: {other:?}"),
        };
    }
    Value::String(rest.split(' ').next().unwrap_or_default().to_string())
}

fn text(record: &str, key: &str) -> String {
    match field(record, key) {
        Value::String(s) => s,
        other => panic!("{key} is not text: {other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn service_accounts_sharing_a_role_get_their_own_session_names_even_long_and_alike() {
    let env = start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    // Two ServiceAccounts of one long namespace, sharing a role and a long
    // prefix: both names must be cut to 64 characters.
    let namespace = "payments-settlement-platform-production-eu-west-1";
    let accounts = [
        "reconciliation-worker-for-card-networks-primary",
        "reconciliation-worker-for-card-networks-secondary",
    ];
    for (i, sa) in accounts.iter().enumerate() {
        env.kube.add_service_account(namespace, sa, Some(ROLE_A));
        let pod = format!("pod-{i}");
        let req = Req::new(&obj("db", SM), &env.provider.target(&pod))
            .pod(&pod, sa, &format!("eyJ.{i}.sig"))
            .set("csi.storage.k8s.io/pod.namespace", namespace);
        env.provider.mount(&req).await.expect("mount");
        // The chained session of the same pod follows the same rule.
        let chained = Req {
            target: env.provider.target(&format!("{pod}-chained")),
            ..req.clone()
        };
        env.provider
            .mount(&chained.set("assumeRoleArn", CENTRAL))
            .await
            .expect("chained mount");
    }
    let web: Vec<String> = env
        .aws
        .calls_of("AssumeRoleWithWebIdentity")
        .iter()
        .map(|c| c.session.clone().unwrap_or_default())
        .collect();
    let chained: Vec<String> = env
        .aws
        .calls_of("AssumeRole")
        .iter()
        .map(|c| c.session.clone().unwrap_or_default())
        .collect();
    assert_eq!(web.len(), 2, "{web:?}");
    assert_ne!(web[0], web[1], "two identities, two session names");
    assert_eq!(chained, web, "a chained session is named as the pod's own");
    for name in &web {
        assert_eq!(name.len(), 64, "{name}");
        // The first 47 characters: here all namespace.
        assert!(name.starts_with(&format!("csi-{namespace}")[..47]), "{name}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c)),
            "{name}"
        );
    }

    // Short names are the pair itself, with a separator no Kubernetes name
    // holds: a-b/c and a/b-c stay apart.
    for (ns, sa) in [("a-b", "c"), ("a", "b-c")] {
        env.kube.add_service_account(ns, sa, Some(ROLE_A));
        let req = Req::new(&obj("db", SM), &env.provider.target(&format!("{ns}-{sa}")))
            .pod("p", sa, "eyJ.x.sig")
            .set("csi.storage.k8s.io/pod.namespace", ns);
        env.provider.mount(&req).await.expect("mount");
    }
    let web = env.aws.calls_of("AssumeRoleWithWebIdentity");
    let last: Vec<&str> = web[2..].iter().filter_map(|c| c.session.as_deref()).collect();
    assert_eq!(last, ["csi-a-b_c", "csi-a_b-c"]);
}

#[tokio::test(start_paused = true)]
async fn source_identity_and_session_tags_are_sent_only_when_the_class_asks() {
    let env = start(&["--cluster-name=prod-eu"]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    let req = |target: &str| Req::new(&obj("db", SM), &env.provider.target(target)).set("assumeRoleArn", CENTRAL);

    env.provider.mount(&req("plain")).await.expect("mount");
    let plain = env.aws.calls_of("AssumeRole");
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].source_identity, None);
    assert!(plain[0].tags.is_empty() && plain[0].transitive_tags.is_empty());

    env.aws.clear_calls();
    env.provider
        .mount(
            &req("attributed")
                .set("assumeRoleSourceIdentity", "true")
                .set("assumeRoleSessionTags", "true"),
        )
        .await
        .expect("mount");
    let asked = env.aws.calls_of("AssumeRole");
    assert_eq!(
        asked.len(),
        1,
        "a tagged session is not the untagged one kept: {asked:?}"
    );
    let a = &asked[0];
    assert_eq!(a.source_identity.as_deref(), Some("csi-default_sa-a"));
    let tags = [
        ("kubernetes-namespace", "default"),
        ("kubernetes-service-account", "sa-a"),
        ("eks-cluster-name", "prod-eu"),
    ];
    assert_eq!(
        a.tags,
        tags.map(|(k, v)| (k.to_string(), v.to_string())).to_vec(),
        "the names EKS Pod Identity gives the same facts"
    );
    assert_eq!(a.transitive_tags, tags.map(|(k, _)| k.to_string()).to_vec());

    // As an object field, tags without a source identity; no cluster name
    // without --cluster-name.
    let env = start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    let objects = format!(
        "{}  assumeRoleArn: {CENTRAL}\n  assumeRoleSessionTags: true\n",
        obj("db", SM)
    );
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("object")))
        .await
        .expect("mount");
    let a = &env.aws.calls_of("AssumeRole")[0];
    assert_eq!(a.source_identity, None);
    let keys: Vec<&str> = a.tags.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["kubernetes-namespace", "kubernetes-service-account"]);

    // An EKS Pod Identity session carries these tags already, transitively,
    // and STS refuses a tag passed again: none is sent; SourceIdentity is.
    env.aws.clear_calls();
    env.provider
        .mount(
            &Req::new(&obj("db", SM), &env.provider.target("pod-identity"))
                .set("usePodIdentity", "true")
                .set("assumeRoleArn", CENTRAL)
                .set("assumeRoleSourceIdentity", "true")
                .set("assumeRoleSessionTags", "true"),
        )
        .await
        .expect("mount");
    let a = &env.aws.calls_of("AssumeRole")[0];
    assert_eq!(a.source_identity.as_deref(), Some("csi-default_sa-a"));
    assert!(a.tags.is_empty() && a.transitive_tags.is_empty(), "{a:?}");
    // Its record: the association's role is not known on the node, the
    // chained one is.
    let logs = env.provider.logs();
    let r = records(&logs).pop().unwrap_or_default();
    assert_eq!(text(&r, "identity"), "pod-identity", "{r}");
    assert_eq!(field(&r, "roles"), serde_json::json!([CENTRAL]));
    assert_eq!(field(&r, "read")[0]["role"], CENTRAL);
}

#[tokio::test(start_paused = true)]
async fn a_trust_policy_that_does_not_allow_attribution_is_named_in_the_error() {
    let env = start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    env.aws.deny_attribution(CENTRAL);
    for (field, action) in [
        ("assumeRoleSessionTags", "sts:TagSession"),
        ("assumeRoleSourceIdentity", "sts:SetSourceIdentity"),
    ] {
        let target = env.provider.target(field);
        let err = env
            .provider
            .mount(
                &Req::new(&obj("db", SM), &target)
                    .set("assumeRoleArn", CENTRAL)
                    .set(field, "true"),
            )
            .await
            .expect_err("denied");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        for part in [
            &format!("failed to assume role {CENTRAL}"),
            &format!("not authorized to perform: {action}"),
            &format!("trust policy of {CENTRAL} allows"),
            &format!("and {action} (the class asks for {field})"),
            &format!("IAM policy allowing sts:AssumeRole and {action} on {CENTRAL}"),
        ] {
            assert!(
                err.message().contains(part),
                "{:?} must contain {part:?}",
                err.message()
            );
        }
        assert!(all_entries(&target).is_empty(), "nothing written");
    }
    assert!(env.aws.calls_of("GetSecretValue").is_empty());
    // Without attribution the same trust policy admits the pod.
    env.provider
        .mount(&Req::new(&obj("db", SM), &env.provider.target("plain")).set("assumeRoleArn", CENTRAL))
        .await
        .expect("mount without attribution");
}

#[tokio::test(start_paused = true)]
async fn the_audit_record_names_the_pod_its_roles_and_each_version_read_exactly() {
    let env = start(&["--cluster-name=prod-eu"]).await;
    let version = env.aws.put_secret_string(REGION, "db", "secret-value-1");
    env.aws.put_param(REGION, "/app/url", "String", "https://a");
    let param_version = env.aws.put_param(REGION, "/app/url", "String", "https://b");
    let central_version = env.aws.put_secret_string(REGION, "central", "central-value");
    let objects = format!(
        "{}{}  objectAlias: url\n{}  assumeRoleArn: {CENTRAL}\n",
        obj("db", SM),
        obj("/app/url", SSM),
        obj("central", SM)
    );
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("audited")))
        .await
        .expect("mount");
    let logs = env.provider.logs();
    let all = records(&logs);
    assert_eq!(all.len(), 1, "one record per mount: {logs}");
    let r = &all[0];
    for (key, want) in [
        ("node", NODE),
        ("cluster", "prod-eu"),
        ("namespace", "default"),
        ("pod", "pod-a"),
        ("pod_uid", "uid-a"),
        ("service_account", "sa-a"),
        ("identity", "irsa"),
        ("outcome", "success"),
        ("objects", "3"),
        ("values", "3"),
        ("omitted", "0"),
    ] {
        assert_eq!(text(r, key), want, "{key} in {r}");
    }
    assert_eq!(field(r, "roles"), serde_json::json!([ROLE_A, CENTRAL]));
    assert_eq!(
        field(r, "read"),
        serde_json::json!([
            {"service": "secretsmanager", "arn": secret_arn(REGION, "db"), "version": version,
             "region": REGION, "source": "aws"},
            {"service": "ssm", "arn": format!("arn:aws:ssm:{REGION}:123456789012:parameter/app/url"),
             "version": param_version.to_string(), "region": REGION, "source": "aws"},
            {"service": "secretsmanager", "arn": secret_arn(REGION, "central"),
             "version": central_version, "region": REGION, "source": "aws",
             "role": CENTRAL},
        ])
    );
    for never in ["secret-value-1", "central-value", "https://b", TOKEN_A, "secret-ASIA"] {
        assert!(!r.contains(never), "{never} in {r}");
    }
}

#[tokio::test(start_paused = true)]
async fn cached_and_last_good_reads_say_where_they_came_from() {
    let env = start(&["--cache-ttl=1m", "--serve-stale-max-age=10m"]).await;
    env.aws.put_secret_string(REGION, "db", "v1");
    env.aws.put_param(REGION, "/p", "String", "p1");
    let objects = format!("{}{}  objectAlias: p\n", obj("db", SM), obj("/p", SSM));
    let req = |pod: &str| Req::new(&objects, &env.provider.target(pod)).pod(pod, "sa-a", TOKEN_A);
    env.provider.mount(&req("first")).await.expect("mount");
    env.provider.mount(&req("cached")).await.expect("from the cache");
    tokio::time::advance(std::time::Duration::from_secs(120)).await;
    for op in ["GetSecretValue", "BatchGetSecretValue", "GetParameters"] {
        env.aws.add_rule(Rule::op(op, Effect::unavailable()));
    }
    env.provider
        .mount(&req("brownout"))
        .await
        .expect("from the last good values");
    let logs = env.provider.logs();
    let all = records(&logs);
    assert_eq!(all.len(), 3, "{logs}");
    let sources = |r: &str| -> Vec<String> {
        field(r, "read")
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["source"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(sources(&all[0]), ["aws", "aws"]);
    assert_eq!(sources(&all[1]), ["cache", "cache"]);
    assert_eq!(sources(&all[2]), ["last-good", "last-good"]);
    // The version and region of a kept value are those it was read with.
    assert_eq!(
        field(&all[2], "read")[0]["version"],
        field(&all[0], "read")[0]["version"]
    );
    assert_eq!(field(&all[2], "read")[1]["region"], REGION);
}

#[tokio::test(start_paused = true)]
async fn a_failed_mount_leaves_its_code_and_what_it_asked_for() {
    let env = start(&[]).await;
    env.aws.put_secret_string(REGION, "db", "v");
    let objects = format!("{}{}", obj("db", SM), obj("missing", SM));
    let err = env
        .provider
        .mount(&Req::new(&objects, &env.provider.target("failed")))
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    let logs = env.provider.logs();
    let all = records(&logs);
    assert_eq!(all.len(), 1, "{logs}");
    let r = &all[0];
    assert_eq!(text(r, "outcome"), "error");
    assert_eq!(text(r, "code"), "ObjectNotFound");
    assert_eq!(text(r, "pod"), "pod-a");
    assert_eq!(field(r, "roles"), serde_json::json!([ROLE_A]));
    assert_eq!(
        field(r, "requested"),
        serde_json::json!([{"service": "secretsmanager", "name": "db"}, {"service": "secretsmanager", "name": "missing"}])
    );
    assert_eq!(field(r, "read"), serde_json::json!([]));

    // Refused before its credentials: no role, the code of the rule.
    let err = env
        .provider
        .mount(&Req::new(
            "- objectName: x\n  objectType: nosuch\n",
            &env.provider.target("bad"),
        ))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let logs = env.provider.logs();
    let r = records(&logs).pop().unwrap_or_default();
    assert_eq!(text(&r, "code"), "InvalidRequest");
    assert_eq!(
        text(&r, "pod"),
        "pod-a",
        "named as the driver names it, before the class is parsed"
    );
    assert_eq!(text(&r, "service_account"), "", "known once the request is parsed");
    assert_eq!(field(&r, "roles"), serde_json::json!([]));

    // A mount the driver gives up on (its call cancelled) leaves a record
    // too, with what it had done so far.
    env.aws.add_rule(Rule::op("GetSecretValue", Effect::Hang));
    let task = env
        .provider
        .spawn_mount(&Req::new(&obj("db", SM), &env.provider.target("cancelled")));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    task.abort();
    assert!(task.await.is_err(), "cancelled, not answered");
    let logs = env.provider.logs();
    let r = records(&logs).pop().unwrap_or_default();
    assert_eq!(
        (text(&r, "outcome"), text(&r, "code")),
        ("cancelled".into(), "Cancelled".into()),
        "{r}"
    );
    assert_eq!(field(&r, "roles"), serde_json::json!([ROLE_A]));
    assert_eq!(field(&r, "read"), serde_json::json!([]));
}

#[tokio::test(start_paused = true)]
async fn hostile_names_are_escaped_and_a_large_mount_is_summarised() {
    let env = start(&["--audit-max-objects=2"]).await;
    let names = ["a", "b", "c", "d"];
    let mut objects = String::new();
    for n in names {
        env.aws.put_secret_string(REGION, n, "v");
        objects.push_str(&obj(n, SM));
    }
    let hostile = "pod-a\n2026-01-01T00:00:00Z  INFO csi_provider_aws::audit: mount pod=forged\u{1b}[2J\u{202e}";
    let req = Req::new(&objects, &env.provider.target("hostile")).set("csi.storage.k8s.io/pod.name", hostile);
    env.provider.mount(&req).await.expect("mount");
    let logs = env.provider.logs();
    let all = records(&logs);
    assert_eq!(all.len(), 1, "the forged line is not a record of its own: {logs}");
    let r = &all[0];
    assert!(
        r.contains(r"pod=pod-a\n2026-01-01T00:00:00Z"),
        "the newline is escaped: {r}"
    );
    assert!(r.contains(r"\u{1b}[2J\u{202e}"), "{r}");
    assert!(!r.contains('\u{1b}') && !r.contains('\u{202e}'), "{r}");
    assert_eq!(text(r, "objects"), "4");
    assert_eq!(text(r, "values"), "4");
    assert_eq!(text(r, "omitted"), "2");
    let arns: Vec<Value> = field(r, "read")
        .as_array()
        .map(|a| a.iter().map(|o| o["arn"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(arns, [secret_arn(REGION, "a"), secret_arn(REGION, "b")]);
}

/// The binary's own log stream: JSON records whose lists are arrays, on at a
/// quieter `--log-level`, off with `--audit-log=false`; and the metric.
#[tokio::test]
async fn the_binary_writes_json_records_at_any_log_level_and_counts_objects_read() {
    let env = Env::start_with(|o| Options {
        args: vec!["--log-format=json".into()],
        // A quieter level (RUST_LOG takes precedence over --log-level).
        env: vec![("NODE_NAME".into(), NODE.into()), ("RUST_LOG".into(), "error".into())],
        ..o
    })
    .await;
    let version = env.aws.put_secret_string(REGION, "db", "v");
    env.provider
        .mount(&Req::new(&obj("db", SM), &env.provider.target("json")))
        .await
        .expect("mount");
    let _ = env
        .provider
        .mount(&Req::new(&obj("missing", SM), &env.provider.target("missing")))
        .await
        .expect_err("missing");
    let logs = env.provider.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "csi_provider_aws::audit")
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(!logs.contains("mount succeeded"), "--log-level=error silences the rest");
    let f = &lines[0]["fields"];
    assert_eq!(lines[0]["level"], "INFO");
    assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(f["node"], NODE);
    assert_eq!(f["outcome"], "success");
    assert_eq!(f["roles"], serde_json::json!([ROLE_A]));
    assert_eq!(
        f["read"],
        serde_json::json!([{"service": "secretsmanager", "arn": secret_arn(REGION, "db"),
                            "version": version, "region": REGION, "source": "aws"}])
    );
    assert_eq!(f["objects"], 1);
    let f = &lines[1]["fields"];
    assert_eq!(
        (&f["outcome"], &f["code"]),
        (&Value::from("error"), &Value::from("ObjectNotFound"))
    );
    assert_eq!(
        f["requested"],
        serde_json::json!([{"service": "secretsmanager", "name": "missing"}])
    );

    let metrics = env.provider.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "csi_provider_aws_objects_read_total{service=\"secretsmanager\",source=\"aws\",outcome=\"success\"}"
        ),
        1.0,
        "{metrics}"
    );

    let env = Env::start_with(|o| Options {
        args: vec!["--audit-log=false".into()],
        ..o
    })
    .await;
    env.aws.put_secret_string(REGION, "db", "v");
    env.provider
        .mount(&Req::new(&obj("db", SM), &env.provider.target("quiet")))
        .await
        .expect("mount");
    let logs = env.provider.logs();
    assert!(logs.contains("mount succeeded"), "{logs}");
    assert!(!logs.contains("csi_provider_aws::audit"), "{logs}");
}
