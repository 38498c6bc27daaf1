//! The fault matrix: every dependency of a mount (Secrets Manager, SSM,
//! STS, the EKS Pod Identity Agent, the Kubernetes API) throttling, failing
//! with 5xx, resetting connections, hanging past the deadlines, or down
//! altogether, against the in-repo fakes.
//!
//! Each row asserts one of two outcomes: the mount succeeds through the
//! SDK's retry (`AWS_MAX_ATTEMPTS=2` in the harness) or the failover
//! region, or it fails whole with a status that names the dependency (or
//! the stage the mount deadline caught it in), leaving the files of the
//! earlier mount untouched. Every row then recovers the dependency and
//! checks that the next mount succeeds at once: no stuck shared fetch,
//! nothing kept from the failure. Each row also asserts that its fault
//! fired (the fake saw the faulted calls).
//!
//! Deadlines are short so hangs are cheap: an AWS attempt gives up after
//! 300ms, a Kubernetes request after 500ms. Timing bounds are generous and
//! only prove "did not hang" or "failed by the deadline, not later".

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use common::fake_aws::{Effect, Rule};
use common::inproc::InProc;
use common::*;
use tonic::Code;

const SSM: &str = "ssmparameter";
const STS: &str = "AssumeRoleWithWebIdentity";
const BATCH: &str = "BatchGetSecretValue";
const GET: &str = "GetSecretValue";
const PARAMS: &str = "GetParameters";

/// Within this a mount after recovery must complete: far below every hang
/// and deadline the rows inject.
const AT_ONCE: Duration = Duration::from_secs(2);
/// How much later than its deadline a failed mount may return.
const SLACK: Duration = Duration::from_millis(1500);

/// Short deadlines: an AWS attempt 300ms, an AWS call 2s with its retry
/// (the SDK's throttling backoff is up to 1s), a Kubernetes request 500ms,
/// a mount 5s.
const QUICK: &[&str] = &[
    "--aws-connect-timeout=300ms",
    "--aws-attempt-timeout=300ms",
    "--aws-operation-timeout=2s",
    "--kube-timeout=500ms",
    "--pod-identity-http-timeout=300ms",
    "--mount-timeout=5s",
];

/// The provider with [`QUICK`] deadlines, `overrides` replacing flags of the
/// same name.
async fn start(overrides: &[&str]) -> InProc {
    let args = flags(overrides);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    InProc::start(&args).await
}

fn flags(overrides: &[&str]) -> Vec<String> {
    let name = |f: &str| f.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = QUICK
        .iter()
        .filter(|d| !overrides.iter().any(|o| name(o) == name(d)))
        .map(|s| s.to_string())
        .collect();
    out.extend(overrides.iter().map(|s| s.to_string()));
    out
}

/// A class touching every AWS operation: two secrets without a version
/// (one `BatchGetSecretValue`), one with a stage (`GetSecretValue`), one
/// parameter (`GetParameters`).
const CLASS: &str = "\
- objectName: db-user
  objectType: secretsmanager
- objectName: db-pass
  objectType: secretsmanager
- objectName: api-key
  objectType: secretsmanager
  objectVersionLabel: AWSCURRENT
- objectName: flags
  objectType: ssmparameter
";

const SECRETS: [&str; 3] = ["db-user", "db-pass", "api-key"];

/// Stores generation `generation` of every value of [`CLASS`] in `region`.
fn seed(env: &impl Harness, region: &str, generation: u32) {
    for name in SECRETS {
        env.aws()
            .put_secret_string(region, name, &value(name, region, generation));
    }
    env.aws()
        .put_param(region, "flags", "String", &value("flags", region, generation));
}

fn value(name: &str, region: &str, generation: u32) -> String {
    format!("{name}-v{generation}@{region}")
}

/// The files a pod reads after mounting generation `generation` from `region`.
fn files(region: &str, generation: u32) -> BTreeMap<String, Vec<u8>> {
    SECRETS
        .iter()
        .chain(&["flags"])
        .map(|n| (n.to_string(), value(n, region, generation).into_bytes()))
        .collect()
}

fn obj(name: &str, ty: &str) -> String {
    format!("- objectName: {name}\n  objectType: {ty}\n")
}

/// Mounts `req` once successfully (generation 1 from the primary region),
/// then rotates every value to generation 2, so any later write would
/// show. Returns the volume as the pod reads it.
async fn mounted_then_rotated(env: &impl Harness, req: &Req) -> BTreeMap<String, Vec<u8>> {
    seed(env, REGION, 1);
    env.mount(req).await.expect("the first mount");
    let before = read_mount(&req.target);
    assert_eq!(before, files(REGION, 1));
    seed(env, REGION, 2);
    before
}

/// Mounts `req`, which must fail, and checks that the volume still holds
/// `before`. Returns the status and how long the mount took.
async fn fails_whole(env: &impl Harness, req: &Req, before: &BTreeMap<String, Vec<u8>>) -> (tonic::Status, Duration) {
    let started = Instant::now();
    let err = env.mount(req).await.expect_err("the mount must fail");
    let took = started.elapsed();
    assert_eq!(
        &read_mount(&req.target),
        before,
        "a failed mount leaves the earlier files untouched ({})",
        err.message()
    );
    (err, took)
}

/// The next mount after recovery succeeds at once and writes generation 2.
async fn recovers_at_once(env: &impl Harness, req: &Req, region: &str) {
    let started = Instant::now();
    let result = env.mount(req).await;
    let took = started.elapsed();
    assert!(
        result.is_ok(),
        "the mount after recovery failed after {took:?}: {:?}",
        result.err()
    );
    assert!(took < AT_ONCE, "the mount after recovery took {took:?}");
    assert_eq!(read_mount(&req.target), files(region, 2));
}

/// The provider lets go of the calls it gave up on: no request stays held
/// by a hang for long.
async fn lets_go(env: &impl Harness) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while env.aws().held() > 0 {
        assert!(Instant::now() < deadline, "{} hung calls still held", env.aws().held());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_status(err: &tonic::Status, code: Code, names: &[&str]) {
    assert_eq!(err.code(), code, "{}", err.message());
    for n in names {
        assert!(err.message().contains(n), "{:?} must name {n:?}", err.message());
    }
}

fn count(env: &impl Harness, op: &str) -> usize {
    env.aws().calls_of(op).len()
}

// === throttling ===

#[tokio::test(start_paused = true)]
async fn calls_throttled_once_are_retried_by_the_sdk_and_the_mount_succeeds() {
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.add_rule(Rule::op(GET, Effect::throttling()).times(1));
    env.aws.add_rule(Rule::op(PARAMS, Effect::too_many_requests()).times(1));
    let req = Req::new(CLASS, &env.provider.target("throttled-once"));
    env.provider
        .mount(&req)
        .await
        .expect("the retry absorbs the throttling");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    for op in [GET, PARAMS] {
        assert_eq!(
            (env.aws.faulted(op), count(&env, op)),
            (1, 2),
            "{op}: one throttled, one retried"
        );
    }
    assert_eq!((env.aws.faulted(BATCH), count(&env, BATCH)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_throttled_batch_is_not_retried_but_a_failed_one_is() {
    // Retrying a throttled batch adds load to the exhausted 100/s quota and
    // holds the mount for the backoff; GetSecretValue serves it at once.
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.add_rule(Rule::op(BATCH, Effect::throttling()).times(1));
    let req = Req::new(CLASS, &env.provider.target("batch-throttled-once"));
    env.provider.mount(&req).await.expect("the fallback serves it");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    assert_eq!((env.aws.faulted(BATCH), count(&env, BATCH)), (1, 1), "no retry");
    let gets: Vec<_> = env.aws.calls_of(GET).iter().map(|c| c.names.join(",")).collect();
    assert_eq!(gets.len(), 3, "db-user, db-pass one by one and api-key: {gets:?}");

    // A 5xx is still retried by the SDK, and the batch is used.
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.add_rule(Rule::op(BATCH, Effect::unavailable()).times(1));
    let req = Req::new(CLASS, &env.provider.target("batch-5xx-once"));
    env.provider.mount(&req).await.expect("the retry serves it");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    assert_eq!((env.aws.faulted(BATCH), count(&env, BATCH)), (1, 2), "one retry");
    assert_eq!(count(&env, GET), 1, "only the versioned api-key");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_batch_is_fetched_one_by_one_in_that_mount_and_batching_backs_off() {
    // BatchGetSecretValue's quota (100/s per account and region) is far
    // below GetSecretValue's: a throttled batch is neither a failure nor a
    // reason to fail over; its objects are read one by one in the primary.
    let env = start(&["--batch-throttle-backoff=1500ms"]).await;
    seed(&env, REGION, 1);
    seed(&env, FAILOVER, 1);
    env.aws.add_rule(Rule::op(BATCH, Effect::throttling()));
    let req = with_failover(Req::new(CLASS, &env.provider.target("batch-throttled")));
    env.provider
        .mount(&req)
        .await
        .expect("GetSecretValue serves the batch's objects");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    assert_eq!(count(&env, BATCH), 1, "a throttled batch is not retried");
    let gets: Vec<_> = env.aws.calls_of(GET).iter().map(|c| c.names.join(",")).collect();
    assert_eq!(gets.len(), 3, "db-user, db-pass one by one and api-key: {gets:?}");
    assert!(
        env.aws.calls().iter().all(|c| c.region.as_deref() != Some(FAILOVER)),
        "no failover: {:?}",
        env.aws.calls()
    );

    // While batching backs off, the node does not try it at all.
    env.aws.clear_calls();
    env.provider.mount(&req).await.expect("backing off");
    assert_eq!((count(&env, BATCH), count(&env, GET)), (0, 3));

    // After --batch-throttle-backoff, batching is tried again.
    env.aws.recover();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    env.aws.clear_calls();
    env.provider.mount(&req).await.expect("batching again");
    assert_eq!((count(&env, BATCH), count(&env, GET)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn pods_of_many_identities_over_the_batch_quota_all_mount_through_the_fallback() {
    // An account's BatchGetSecretValue quota is shared by every node; here
    // 1 call a second, against 8 pods of 8 identities mounting at once.
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.set_quota(BATCH, REGION, 1.0);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let sa = format!("quota-{i}");
        env.kube
            .add_service_account("default", &sa, Some(&format!("arn:aws:iam::123456789012:role/{sa}")));
        let req = Req::new(CLASS, &env.provider.target(&sa)).pod(&format!("pod-{i}"), &sa, &format!("token-{i}"));
        let mount = env.provider.spawn_mount(&req);
        tasks.push(tokio::spawn(async move {
            let result = mount.await.expect("join");
            (result.map(|_| ()), req.target)
        }));
    }
    for t in tasks {
        let (result, target) = t.await.unwrap();
        result.expect("every pod mounts");
        assert_eq!(read_mount(&target), files(REGION, 1));
    }
    let throttled = env.aws.calls_of(BATCH).iter().filter(|c| c.injected.is_some()).count();
    assert!(throttled >= 1, "the quota fired: {:?}", env.aws.calls_of(BATCH));
    // The throttled batches' secrets were read one by one; the identities
    // whose batch got through read them in it.
    let by_name = |n: &str| env.aws.calls_of(GET).iter().filter(|c| c.names == [n]).count();
    assert_eq!(by_name("api-key"), 8, "the versioned secret, once per identity");
    assert!(by_name("db-user") >= 1 && by_name("db-user") == by_name("db-pass"));
}

#[tokio::test(start_paused = true)]
async fn a_throttling_storm_fails_the_mount_whole_naming_secrets_manager_and_recovery_is_immediate() {
    // The node may retry two throttled calls in all (then calls must
    // succeed to earn retries back).
    let env = start(&["--throttle-retries=2"]).await;
    let req = Req::new(CLASS, &env.provider.target("storm"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.clear_calls();
    for op in [BATCH, GET, PARAMS] {
        env.aws.add_rule(Rule::op(op, Effect::throttling()));
    }
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::ResourceExhausted,
        &["Secrets Manager", "ThrottlingException"],
    );
    // AWS_MAX_ATTEMPTS=2: one call and the SDK's retry of each
    // GetSecretValue, all throttled, then the node's two retries of
    // throttled calls (each again two attempts); the throttled batch is not
    // retried, its objects are asked one by one.
    assert_eq!((count(&env, BATCH), env.aws.faulted(BATCH)), (1, 1));
    let gets = env.aws.calls_of(GET);
    assert!(gets.len() >= 2 && gets.iter().all(|c| c.injected.is_some()), "{gets:?}");
    assert!(gets.len() <= 2 * (SECRETS.len() + 2), "{} calls", gets.len());
    for name in SECRETS {
        let asked = gets.iter().filter(|c| c.names == [name]).count();
        assert!(asked <= 2 * 3, "{name} asked {asked} times");
    }
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn an_ssm_throttling_storm_fails_naming_parameter_store() {
    let env = start(&["--throttle-retries=2"]).await;
    env.aws.put_param(REGION, "flags", "String", "on");
    env.aws.add_rule(Rule::op(PARAMS, Effect::too_many_requests()));
    let req = Req::new(&obj("flags", SSM), &env.provider.target("ssm-storm"));
    let (err, _) = fails_whole(&env, &req, &BTreeMap::new()).await;
    assert_status(
        &err,
        Code::ResourceExhausted,
        &["SSM Parameter Store", "flags", "TooManyRequestsException"],
    );
    // The SDK's two attempts, then two retries of the node's budget of
    // two, each of two attempts: the budget, not the deadline, ends it.
    assert_eq!(env.aws.faulted(PARAMS), 2 * 3);
    env.aws.recover();
    env.provider.mount(&req).await.expect("after recovery");
    assert_eq!(read_mount(&req.target)["flags"], b"on");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_is_retried_within_the_mounts_deadline_until_it_passes() {
    let env = start(&[]).await;
    env.aws.put_param(REGION, "flags", "String", "on");
    // Six throttled answers: three rounds of the SDK's two attempts.
    env.aws.add_rule(Rule::op(PARAMS, Effect::throttling()).times(6));
    let req = Req::new(&obj("flags", SSM), &env.provider.target("ssm-throttled"));
    env.provider
        .mount(&req)
        .await
        .expect("retried until the throttling passed");
    assert_eq!(read_mount(&req.target)["flags"], b"on");
    assert_eq!((env.aws.faulted(PARAMS), count(&env, PARAMS)), (6, 7));
}

// === 5xx ===

#[tokio::test(start_paused = true)]
async fn a_server_error_once_is_retried_and_the_mount_succeeds() {
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.add_rule(Rule::op(BATCH, Effect::internal_error()).times(1));
    env.aws.add_rule(Rule::op(GET, Effect::unavailable()).times(1));
    env.aws
        .add_rule(Rule::op(PARAMS, Effect::error(502, "BadGateway")).times(1));
    let req = Req::new(CLASS, &env.provider.target("5xx-once"));
    env.provider.mount(&req).await.expect("the retry absorbs the 5xx");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    for op in [BATCH, GET, PARAMS] {
        assert_eq!((env.aws.faulted(op), count(&env, op)), (1, 2), "{op}");
    }
}

#[tokio::test(start_paused = true)]
async fn persistent_server_errors_fail_the_mount_whole_as_unavailable_and_recovery_is_immediate() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("5xx"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(GET, Effect::unavailable()));
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::Unavailable,
        &["Secrets Manager", "api-key", REGION, "ServiceUnavailable"],
    );
    assert_eq!(env.aws.faulted(GET), 2);
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

// === connection resets ===

/// Every operation's first call reset (in-process: the SDK's HTTP client
/// fails it as a reset connection would).
async fn reset_once(env: &impl Harness) {
    seed(env, REGION, 1);
    for op in [BATCH, GET, PARAMS] {
        env.aws().add_rule(Rule::op(op, Effect::Reset).times(1));
    }
    let req = Req::new(CLASS, &env.target("reset-once"));
    env.mount(&req).await.expect("the retry absorbs the reset");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    for op in [BATCH, GET, PARAMS] {
        assert_eq!((env.aws().faulted(op), count(env, op)), (1, 2), "{op}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_reset_once_is_retried_and_the_mount_succeeds() {
    reset_once(&start(&[]).await).await;
}

#[tokio::test(start_paused = true)]
async fn persistent_connection_resets_fail_the_mount_whole_and_recovery_is_immediate() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("resets"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(BATCH, Effect::Reset));
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["Secrets Manager", "db-user", REGION]);
    assert_eq!(env.aws.faulted(BATCH), 2);
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

// === hangs ===

/// Every operation's first call never answered.
async fn hung_once(env: &impl Harness) {
    seed(env, REGION, 1);
    for op in [BATCH, GET, PARAMS] {
        env.aws().add_rule(Rule::op(op, Effect::Hang).times(1));
    }
    let req = Req::new(CLASS, &env.target("hang-once"));
    env.mount(&req).await.expect("the retry gets past the hung attempt");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    for op in [BATCH, GET, PARAMS] {
        assert_eq!((env.aws().faulted(op), count(env, op)), (1, 2), "{op}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_hung_once_is_abandoned_at_the_attempt_timeout_and_retried() {
    hung_once(&start(&[]).await).await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_service_fails_the_mount_at_the_sdk_deadline_before_the_mount_deadline() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("hung-sdk"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(PARAMS, Effect::Hang));
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["SSM Parameter Store", "flags", REGION]);
    assert!(err.message().contains("timeout"), "{}", err.message());
    assert!(
        took < Duration::from_secs(5),
        "the SDK's deadlines (2 attempts of 300ms) end it, not the 5s mount deadline: {took:?}"
    );
    assert_eq!(env.aws.faulted(PARAMS), 2);
    lets_go(&env).await;
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

/// A mount deadline the hangs of these rows outlast (long enough for the
/// first, healthy mount even on a loaded machine).
const SHORT_MOUNT: &str = "--mount-timeout=2500ms";
/// SDK deadlines longer than the mount's: the mount deadline ends it.
const LONG_SDK: &[&str] = &["--aws-attempt-timeout=30s", "--aws-operation-timeout=30s", SHORT_MOUNT];
const MOUNT_TIMEOUT: Duration = Duration::from_millis(2500);

/// A fetch from AWS that ran out of time. The mount's deadline and the
/// shared fetch's own (`--mount-timeout` from when the fetch started) can
/// fall in the same timer tick when the fetch starts right away (cached
/// credentials): then either may answer first, and both name the fetch.
fn assert_fetch_deadline(err: &tonic::Status) {
    match err.code() {
        Code::DeadlineExceeded => assert_status(
            err,
            Code::DeadlineExceeded,
            &[
                "mount deadline of 2s 500ms (--mount-timeout) exceeded",
                "fetching from AWS Secrets Manager, SSM Parameter Store and ACM",
            ],
        ),
        _ => assert_status(
            err,
            Code::Unavailable,
            &["fetching from AWS", "no answer within 2s 500ms"],
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_hung_past_the_mount_deadline_fails_naming_the_fetch_stage_and_recovery_is_immediate() {
    let env = start(LONG_SDK).await;
    let req = Req::new(CLASS, &env.provider.target("hung-deadline"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(BATCH, Effect::Hang));
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_fetch_deadline(&err);
    assert!(
        took < MOUNT_TIMEOUT + SLACK,
        "failed by the deadline, not later: {took:?}"
    );
    assert_eq!(env.aws.faulted(BATCH), 1);
    lets_go(&env).await;
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_arriving_after_the_mount_deadline_is_never_written() {
    let env = start(LONG_SDK).await;
    let req = Req::new(CLASS, &env.provider.target("late"));
    let before = mounted_then_rotated(&env, &req).await;
    let late = Duration::from_secs(4);
    env.aws.add_rule(Rule::op(GET, Effect::Delay(late)).times(1));
    let started = Instant::now();
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_fetch_deadline(&err);
    assert_eq!(env.aws.faulted(GET), 1);
    // Past the moment the late answer went out: still nothing written.
    tokio::time::sleep((late + Duration::from_millis(500)).saturating_sub(started.elapsed())).await;
    assert_eq!(
        read_mount(&req.target),
        before,
        "the late answer must not reach the volume"
    );
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_mounts_sharing_one_hung_batch_all_fail_by_the_deadline_and_the_next_mount_succeeds_at_once() {
    let env = start(LONG_SDK).await;
    let req = Req::new(CLASS, &env.provider.target("shared-0"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.clear_calls();
    env.aws.add_rule(Rule::op(BATCH, Effect::Hang));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        // Pods of one ServiceAccount: one identity, one shared fetch.
        let r = if i == 0 {
            req.clone()
        } else {
            Req::new(CLASS, &env.provider.target(&format!("shared-{i}"))).pod(&format!("pod-{i}"), "sa-a", TOKEN_A)
        };
        let mount = env.provider.spawn_mount(&r);
        tasks.push(tokio::spawn(async move {
            let result = mount.await.expect("join");
            (result, started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        let (result, took) = t.await.unwrap();
        let err = result.expect_err("every mount sharing the hung call fails");
        assert_fetch_deadline(&err);
        assert!(
            took < MOUNT_TIMEOUT + SLACK,
            "failed by the deadline, not later: {took:?}"
        );
    }
    // One shared call; the mounts that joined it look up once more when it
    // hits its deadline, and share that call too.
    let shared = count(&env, BATCH);
    assert!(
        (1..=2).contains(&shared),
        "the four mounts shared their calls: {shared}"
    );
    assert_eq!(read_mount(&req.target), before);
    lets_go(&env).await;
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
    assert_eq!(count(&env, BATCH), shared + 1, "the next mount made a call of its own");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_left_hanging_by_its_mounts_deadline_does_not_hold_up_the_next_mount() {
    // The credentials take a good part of the budget, so the shared fetch
    // starts late and outlives the mount that started it.
    let env = start(&[
        "--aws-attempt-timeout=30s",
        "--aws-operation-timeout=30s",
        "--mount-timeout=5s",
    ])
    .await;
    seed(&env, REGION, 2);
    // Another identity warms the provider's AWS clients up.
    let other = Req::new(CLASS, &env.provider.target("warm")).pod("pod-b", "sa-b", TOKEN_B);
    env.provider.mount(&other).await.expect("warm-up mount");
    env.aws.clear_calls();
    let req = Req::new(CLASS, &env.provider.target("orphan"));
    env.aws
        .add_rule(Rule::op(STS, Effect::Delay(Duration::from_secs(3))).times(1));
    env.aws.add_rule(Rule::op(GET, Effect::Hang));
    let (err, took) = fails_whole(&env, &req, &BTreeMap::new()).await;
    assert_status(&err, Code::DeadlineExceeded, &["mount deadline"]);
    assert!(took < Duration::from_secs(5) + SLACK, "{took:?}");
    assert_eq!((env.aws.faulted(STS), env.aws.faulted(GET)), (1, 1));
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
    assert_eq!(count(&env, GET), 2, "the next mount made a call of its own");
    lets_go(&env).await;
}

// === region outage ===

#[tokio::test(start_paused = true)]
async fn a_region_outage_without_a_failover_region_fails_whole_naming_the_region() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("outage"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.region_outage(REGION, Effect::unavailable());
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["Secrets Manager", REGION]);
    assert!(env.aws.faulted(GET) > 0);
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

fn with_failover(req: Req) -> Req {
    req.set("failoverRegion", FAILOVER)
}

/// Every Secrets Manager and SSM call reached the primary region first and
/// failed there, then the failover region answered.
fn assert_failed_over(env: &InProc) {
    for op in [BATCH, GET, PARAMS] {
        let calls = env.aws.calls_of(op);
        let primary: Vec<_> = calls.iter().filter(|c| c.region.as_deref() == Some(REGION)).collect();
        let failover: Vec<_> = calls.iter().filter(|c| c.region.as_deref() == Some(FAILOVER)).collect();
        assert!(
            !primary.is_empty() && primary.iter().all(|c| c.injected.is_some()),
            "{op}: {calls:?}"
        );
        assert!(
            !failover.is_empty() || op == BATCH,
            "{op} reached the failover region: {calls:?}"
        );
        assert!(failover.iter().all(|c| c.injected.is_none()), "{op}: {calls:?}");
    }
}

/// With the primary region failing as `effect`, the mount fails over and
/// the pod reads the failover region's values.
async fn fails_over(effect: Effect, target: &str) {
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    seed(&env, FAILOVER, 1);
    env.aws.region_outage(REGION, effect);
    let req = with_failover(Req::new(CLASS, &env.provider.target(target)));
    env.provider.mount(&req).await.expect("the failover region answers");
    assert_eq!(read_mount(&req.target), files(FAILOVER, 1));
    assert_failed_over(&env);
}

#[tokio::test(start_paused = true)]
async fn a_region_outage_with_5xx_fails_over_and_the_pod_gets_the_failover_values() {
    fails_over(Effect::unavailable(), "fo-5xx").await;
}

#[tokio::test(start_paused = true)]
async fn a_region_outage_with_connection_resets_fails_over() {
    fails_over(Effect::Reset, "fo-reset").await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_region_fails_over_within_the_mount_deadline() {
    fails_over(Effect::Hang, "fo-hang").await;
}

#[tokio::test(start_paused = true)]
async fn both_regions_down_fail_the_mount_whole_naming_both() {
    let env = start(&[]).await;
    let req = with_failover(Req::new(CLASS, &env.provider.target("fo-both")));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.region_outage(REGION, Effect::unavailable());
    env.aws.region_outage(FAILOVER, Effect::Reset);
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["from all regions", REGION, FAILOVER]);
    assert!(
        env.aws
            .calls()
            .iter()
            .any(|c| c.region.as_deref() == Some(FAILOVER) && c.injected.is_some())
    );
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

// === STS ===

/// Credentials are not cached: every mount asks STS.
const NO_CREDENTIAL_CACHE: &str = "--credential-cache=false";

#[tokio::test(start_paused = true)]
async fn an_sts_outage_fails_the_mount_whole_naming_sts_and_recovery_is_immediate() {
    let env = start(&[NO_CREDENTIAL_CACHE]).await;
    let req = Req::new(CLASS, &env.provider.target("sts-outage"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.clear_calls();
    env.aws.sts_outage(Effect::unavailable());
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::Unavailable,
        &["assume role", ROLE_A, "STS", "ServiceUnavailable"],
    );
    assert_eq!(env.aws.faulted(STS), 2, "one call and one retry");
    assert_eq!(env.aws.calls().len(), 2, "no fetch without credentials");
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
    assert_eq!(count(&env, STS), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hung_sts_fails_the_mount_in_driver_writes_mode_naming_sts() {
    let env = start(&["--driver-writes-secrets"]).await;
    seed(&env, REGION, 2);
    env.aws.sts_outage(Effect::Hang);
    let req = Req::new(CLASS, &env.provider.target("sts-hang"));
    let (err, took) = fails_whole(&env, &req, &BTreeMap::new()).await;
    assert_status(&err, Code::Unavailable, &["assume role", "STS", "timeout"]);
    assert!(took < Duration::from_secs(5), "the SDK's deadlines end it: {took:?}");
    assert_eq!(env.aws.faulted(STS), 2);
    assert!(all_entries(&req.target).is_empty(), "driver-writes mode writes nothing");
    env.aws.recover();
    let started = Instant::now();
    let resp = env.provider.mount(&req).await.expect("after recovery");
    assert!(started.elapsed() < AT_ONCE);
    let got: BTreeMap<String, Vec<u8>> = file_map(&resp).into_iter().map(|(p, (_, c))| (p, c)).collect();
    assert_eq!(got, files(REGION, 2));
    assert!(all_entries(&req.target).is_empty());
}

#[tokio::test(start_paused = true)]
async fn sts_hung_past_the_mount_deadline_fails_naming_the_credentials_stage() {
    let env = start(&[LONG_SDK, &[NO_CREDENTIAL_CACHE]].concat()).await;
    let req = Req::new(CLASS, &env.provider.target("sts-deadline"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.sts_outage(Effect::Hang);
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::DeadlineExceeded,
        &["mount deadline", "getting the pod's credentials"],
    );
    assert!(took < MOUNT_TIMEOUT + SLACK, "{took:?}");
    assert_eq!(env.aws.faulted(STS), 1);
    lets_go(&env).await;
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn sts_failing_in_the_primary_region_is_asked_in_the_failover_region() {
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    // Both attempts in the primary region; STS calls are unsigned, so the
    // fake tells the regions apart only by order.
    env.aws.add_rule(Rule::op(STS, Effect::unavailable()).times(2));
    let req = with_failover(Req::new(CLASS, &env.provider.target("sts-fo")));
    env.provider.mount(&req).await.expect("the failover STS answers");
    assert_eq!(read_mount(&req.target), files(REGION, 1));
    let sts = env.aws.calls_of(STS);
    assert_eq!(sts.len(), 3, "{sts:?}");
    assert!(sts[2].injected.is_none());
}

#[tokio::test(start_paused = true)]
async fn sts_throttled_once_is_retried() {
    let env = start(&[]).await;
    seed(&env, REGION, 1);
    env.aws.add_rule(Rule::op(STS, Effect::throttling()).times(1));
    let req = Req::new(CLASS, &env.provider.target("sts-throttle"));
    env.provider.mount(&req).await.expect("the retry absorbs it");
    assert_eq!((env.aws.faulted(STS), count(&env, STS)), (1, 2));
}

// === refused credentials ===

#[tokio::test(start_paused = true)]
async fn an_expired_token_drops_the_cached_credentials_and_sts_is_asked_exactly_once_more() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("expired"));
    mounted_then_rotated(&env, &req).await;
    assert_eq!(count(&env, STS), 1);
    env.aws.add_rule(Rule::op(BATCH, Effect::expired_token()).times(1));
    env.provider.mount(&req).await.expect("new credentials succeed");
    assert_eq!(read_mount(&req.target), files(REGION, 2));
    assert_eq!(env.aws.faulted(BATCH), 1);
    assert_eq!(count(&env, STS), 2, "exactly one extra STS call");
    env.provider.mount(&req).await.expect("and are kept");
    assert_eq!(count(&env, STS), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mounts_refused_the_same_expired_credentials_all_renew_them_with_one_sts_call() {
    let env = start(&["--aws-attempt-timeout=2s"]).await;
    env.aws.issue_fresh_keys();
    let req = Req::new(CLASS, &env.provider.target("expired-0"));
    mounted_then_rotated(&env, &req).await;
    let first_key = env.aws.calls_of(BATCH)[0].access_key.clone();
    // One shared batch call, refused: every mount waiting for it sees it.
    env.aws.set_delay(Duration::from_millis(200));
    env.aws.add_rule(Rule::op(BATCH, Effect::expired_token()).times(1));
    let mut tasks = Vec::new();
    let mut targets = vec![req.target.clone()];
    for i in 0..3 {
        let r = if i == 0 {
            req.clone()
        } else {
            let r = Req::new(CLASS, &env.provider.target(&format!("expired-{i}"))).pod(
                &format!("pod-{i}"),
                "sa-a",
                TOKEN_A,
            );
            targets.push(r.target.clone());
            r
        };
        tasks.push(env.provider.spawn_mount(&r));
    }
    for t in tasks {
        t.await.unwrap().expect("every mount renews the refused credentials");
    }
    for t in targets {
        assert_eq!(read_mount(&t), files(REGION, 2));
    }
    let batches = env.aws.calls_of(BATCH);
    assert_eq!(env.aws.faulted(BATCH), 1);
    assert_eq!(batches[1].access_key, first_key, "the shared call used the old key");
    assert_eq!(count(&env, STS), 2, "one renewal for all of them");
    assert!(
        batches[2..].iter().all(|c| c.access_key != first_key),
        "every later call is signed with the new key: {batches:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_on_parameters_is_handled_the_same_way() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("expired-ssm"));
    mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(PARAMS, Effect::expired_token()).times(1));
    env.provider.mount(&req).await.expect("new credentials succeed");
    assert_eq!(read_mount(&req.target), files(REGION, 2));
    assert_eq!((env.aws.faulted(PARAMS), count(&env, STS)), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn values_fetched_again_with_new_credentials_count_once_against_the_mount_limit() {
    // Exactly what the mount's values weigh: counted twice, it would fail.
    let total: usize = files(REGION, 2).values().map(Vec::len).sum();
    let env = start(&[&format!("--max-mount-bytes={total}")]).await;
    let req = Req::new(CLASS, &env.provider.target("expired-at-the-limit"));
    mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(PARAMS, Effect::expired_token()).times(1));
    env.provider.mount(&req).await.expect("the values fit once");
    assert_eq!(read_mount(&req.target), files(REGION, 2));
    assert_eq!((env.aws.faulted(PARAMS), count(&env, STS)), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn credentials_refused_again_fail_the_mount_after_one_renewal() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("expired-always"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(GET, Effect::expired_token()));
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unauthenticated, &["ExpiredTokenException", "api-key"]);
    assert_eq!(
        env.aws.faulted(GET),
        2,
        "the refused call, and its one repeat with new credentials"
    );
    assert_eq!(count(&env, STS), 2, "one renewal, no loop");
    env.aws.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn access_denied_is_final_and_asks_sts_for_nothing() {
    let env = start(&[]).await;
    let req = Req::new(CLASS, &env.provider.target("denied"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.add_rule(Rule::op(BATCH, Effect::access_denied()).times(1));
    env.aws.add_rule(Rule::op(GET, Effect::access_denied()).times(2));
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::PermissionDenied, &["AccessDeniedException"]);
    assert!(env.aws.faulted(GET) >= 1);
    assert_eq!(count(&env, STS), 1, "an access denial never renews the credentials");
}

#[tokio::test(start_paused = true)]
async fn pod_identity_credentials_refused_as_expired_are_fetched_once_more() {
    let env = start(&[]).await;
    let agent = &env.agent;
    let req = pod_identity(Req::new(CLASS, &env.provider.target("pi-expired")));
    mounted_then_rotated(&env, &req).await;
    assert_eq!(agent.tokens().len(), 1);
    env.aws.add_rule(Rule::op(GET, Effect::expired_token()).times(1));
    env.provider.mount(&req).await.expect("new credentials succeed");
    assert_eq!(read_mount(&req.target), files(REGION, 2));
    assert_eq!(agent.tokens().len(), 2, "exactly one extra agent request");
    assert!(env.aws.calls_of(STS).is_empty());
}

// === EKS Pod Identity Agent ===

fn pod_identity(req: Req) -> Req {
    req.set("usePodIdentity", "true").set("preferredAddressType", "ipv4")
}

/// A provider using `agent`, asking it on every mount.
async fn start_with_agent(overrides: &[&str]) -> InProc {
    start(&[&[NO_CREDENTIAL_CACHE], overrides].concat()).await
}

/// `agent`, which `env` asks for credentials, goes down.
async fn agent_down(env: &impl Harness, agent: &FakeAgent) {
    let req = pod_identity(Req::new(CLASS, &env.target("agent-down")));
    let before = mounted_then_rotated(env, &req).await;
    agent.go_down();
    let asked = agent.tokens().len();
    let (err, _) = fails_whole(env, &req, &before).await;
    assert_status(
        &err,
        Code::Unavailable,
        &["EKS Pod Identity Agent", &agent.addr.to_string(), "cannot connect"],
    );
    assert_eq!(agent.tokens().len(), asked, "no request reached the agent");
    agent.recover().await;
    recovers_at_once(env, &req, REGION).await;
    assert_eq!(agent.tokens().len(), asked + 1);
}

#[tokio::test(start_paused = true)]
async fn the_agent_down_fails_the_mount_whole_naming_it_and_recovery_is_immediate() {
    let env = start_with_agent(&[]).await;
    agent_down(&env, &env.agent).await;
}

#[tokio::test(start_paused = true)]
async fn agent_server_errors_fail_the_mount_after_bounded_retries() {
    let env = start_with_agent(&[]).await;
    let agent = &env.agent;
    let req = pod_identity(Req::new(CLASS, &env.provider.target("agent-500")));
    let before = mounted_then_rotated(&env, &req).await;
    agent.fail_with(500);
    let asked = agent.tokens().len();
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["EKS Pod Identity Agent", "HTTP 500"]);
    assert_eq!(agent.tokens().len() - asked, 3, "three attempts");
    agent.recover().await;
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_agent_times_out_per_request_and_recovery_is_immediate() {
    let env = start_with_agent(&[]).await;
    let agent = &env.agent;
    let req = pod_identity(Req::new(CLASS, &env.provider.target("agent-hang")));
    let before = mounted_then_rotated(&env, &req).await;
    agent.hang();
    let asked = agent.tokens().len();
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["EKS Pod Identity Agent", "timed out"]);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(agent.tokens().len() - asked, 3);
    agent.recover().await;
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_hung_past_the_mount_deadline_fails_naming_the_credentials_stage() {
    let env = start_with_agent(&["--pod-identity-http-timeout=20s", SHORT_MOUNT]).await;
    let agent = &env.agent;
    let req = pod_identity(Req::new(CLASS, &env.provider.target("agent-deadline")));
    let before = mounted_then_rotated(&env, &req).await;
    agent.hang();
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::DeadlineExceeded,
        &["mount deadline", "getting the pod's credentials"],
    );
    assert!(took < MOUNT_TIMEOUT + SLACK, "{took:?}");
    agent.recover().await;
    recovers_at_once(&env, &req, REGION).await;
}

// === Kubernetes API ===

/// The ServiceAccount is read on every mount.
const NO_SA_CACHE: &str = "--service-account-cache-ttl=0";

#[tokio::test(start_paused = true)]
async fn a_kubernetes_outage_fails_the_mount_whole_naming_the_service_account() {
    let env = start(&[NO_SA_CACHE]).await;
    let req = Req::new(CLASS, &env.provider.target("kube-503"));
    let before = mounted_then_rotated(&env, &req).await;
    env.aws.clear_calls();
    env.kube.fail_with(503);
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["failed to get service account default/sa-a"]);
    assert_eq!(
        env.kube.faulted(),
        1,
        "one request per read: no retries hammering an API server that is already failing"
    );
    assert!(env.aws.calls().is_empty(), "no AWS call without the role");
    env.kube.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn a_kubernetes_403_fails_as_permission_denied_in_driver_writes_mode() {
    let env = start(&[NO_SA_CACHE, "--driver-writes-secrets"]).await;
    seed(&env, REGION, 2);
    env.kube.forbid("serviceaccounts");
    let req = Req::new(CLASS, &env.provider.target("kube-403"));
    let (err, _) = fails_whole(&env, &req, &BTreeMap::new()).await;
    assert_status(
        &err,
        Code::PermissionDenied,
        &["service account default/sa-a", "forbidden"],
    );
    assert_eq!(env.kube.faulted(), 1);
    env.kube.recover();
    let resp = env.provider.mount(&req).await.expect("after recovery");
    assert_eq!(resp.files.len(), 4);
    assert!(all_entries(&req.target).is_empty(), "driver-writes mode writes nothing");
}

/// Kubernetes answering slower than `--kube-timeout` (500ms).
async fn slow_kube(env: &impl Harness) {
    let req = Req::new(CLASS, &env.target("kube-slow"));
    let before = mounted_then_rotated(env, &req).await;
    env.kube().set_delay(Duration::from_secs(3));
    let (err, took) = fails_whole(env, &req, &before).await;
    assert_status(&err, Code::Unavailable, &["failed to get service account default/sa-a"]);
    assert!(took < Duration::from_secs(3), "--kube-timeout=500ms ends it: {took:?}");
    assert!(env.kube().faulted() >= 1);
    env.kube().recover();
    recovers_at_once(env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_kubernetes_api_fails_at_the_kube_timeout_and_recovery_is_immediate() {
    slow_kube(&start(&[NO_SA_CACHE]).await).await;
}

#[tokio::test(start_paused = true)]
async fn a_kubernetes_api_hung_past_the_mount_deadline_fails_naming_the_credentials_stage() {
    let env = start(&[NO_SA_CACHE, "--kube-timeout=20s", SHORT_MOUNT]).await;
    let req = Req::new(CLASS, &env.provider.target("kube-hang"));
    let before = mounted_then_rotated(&env, &req).await;
    env.kube.hang();
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::DeadlineExceeded,
        &["mount deadline", "getting the pod's credentials"],
    );
    assert!(took < MOUNT_TIMEOUT + SLACK, "{took:?}");
    env.kube.recover();
    recovers_at_once(&env, &req, REGION).await;
}

/// A mount whose region comes from its node's label.
fn node_region(env: &InProc, req: Req) -> Req {
    env.kube.add_pod("default", "pod-a", "node-1");
    env.kube.add_node("node-1", Some(REGION));
    req.unset("region")
}

#[tokio::test(start_paused = true)]
async fn the_kubernetes_api_throttling_the_region_lookup_fails_the_mount_whole() {
    let env = start(&[]).await;
    let req = node_region(&env, Req::new(CLASS, &env.provider.target("region-429")));
    let before = mounted_then_rotated(&env, &req).await;
    env.kube.fail_with(429);
    let (err, _) = fails_whole(&env, &req, &before).await;
    assert_status(&err, Code::ResourceExhausted, &["failed to retrieve region from node"]);
    assert_eq!(env.kube.faulted(), 1, "one request per read");
    env.kube.recover();
    recovers_at_once(&env, &req, REGION).await;
}

#[tokio::test(start_paused = true)]
async fn a_region_lookup_hung_past_the_mount_deadline_fails_naming_the_region_stage() {
    let env = start(&["--kube-timeout=20s", SHORT_MOUNT]).await;
    let req = node_region(&env, Req::new(CLASS, &env.provider.target("region-hang")));
    let before = mounted_then_rotated(&env, &req).await;
    env.kube.hang();
    let (err, took) = fails_whole(&env, &req, &before).await;
    assert_status(
        &err,
        Code::DeadlineExceeded,
        &["mount deadline", "resolving the region (Kubernetes API)"],
    );
    assert!(took < MOUNT_TIMEOUT + SLACK, "{took:?}");
    env.kube.recover();
    recovers_at_once(&env, &req, REGION).await;
}

/// A thin layer of the same rows end to end: the binary over its socket,
/// the SDK, kube and the agent's client over real connections to the fakes,
/// in real time. What a connection adds: a TCP reset, a request held on
/// the wire, the Kubernetes client's deadline, a refused port.
mod end_to_end {
    use super::*;

    async fn start_e2e(overrides: &[&str]) -> Env {
        let args = flags(overrides);
        Env::start_with(move |mut o| {
            o.args.extend(args);
            o
        })
        .await
    }

    async fn start_e2e_with_agent(agent: &FakeAgent, overrides: &[&str]) -> Env {
        let endpoint = format!("--pod-identity-endpoint-ipv4={}", agent.url());
        start_e2e(&[&[endpoint.as_str(), NO_CREDENTIAL_CACHE], overrides].concat()).await
    }

    #[tokio::test]
    async fn a_connection_reset_once_is_retried_and_the_mount_succeeds() {
        reset_once(&start_e2e(&[]).await).await;
    }

    #[tokio::test]
    async fn a_call_hung_once_is_abandoned_at_the_attempt_timeout_and_retried() {
        hung_once(&start_e2e(&[]).await).await;
    }

    #[tokio::test]
    async fn a_slow_kubernetes_api_fails_at_the_kube_timeout_and_recovery_is_immediate() {
        slow_kube(&start_e2e(&[NO_SA_CACHE]).await).await;
    }

    #[tokio::test]
    async fn the_agent_down_fails_the_mount_whole_naming_it_and_recovery_is_immediate() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        agent_down(&start_e2e_with_agent(&agent, &[]).await, &agent).await;
    }
}
