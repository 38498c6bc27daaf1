//! The hostile-input table: what a tenant who can write a
//! SecretProviderClass (or a pod's volumeAttributes) could send to take a
//! node's provider down. For each class the process stays up, a benign
//! mount by another pod sent at the same time still works, the provider's
//! peak RSS stays within 64 MiB, the error is clear and names the limit's
//! flag, nothing is written, and (for everything checked before the fetch)
//! no Kubernetes or AWS call is made.

#![allow(clippy::panic)]

use crate::common;

use std::time::{Duration, Instant};

use common::attacks;
use common::fake_aws::access_key_for;
use common::*;

/// The peak RSS any hostile class may drive the provider to.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

fn obj(name: &str) -> String {
    format!("- objectName: {name}\n  objectType: secretsmanager\n")
}

/// One hostile class.
struct Case {
    label: &'static str,
    objects: String,
    /// Substrings the error must contain.
    expect: Vec<&'static str>,
    /// Whether the refusal comes only after fetching (size limits of the
    /// fetched values): then AWS calls are expected, but still no write.
    after_fetch: bool,
}

fn cases() -> Vec<Case> {
    let alias_bomb = {
        let mut doc = String::from(
            "- objectName: s\n  objectType: secretsmanager\n  colour: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 0..9u8 {
            let prev = (b'a' + i) as char;
            let next = (b'b' + i) as char;
            doc.push_str(&format!(
                "  {next}{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        doc
    };
    let doubling = format!(
        "- objectName: small\n  objectType: secretsmanager\n  jmesPath:\n    - path: 'to_string({})'\n      objectAlias: big\n",
        ["[@,@][]"; 20].join("|")
    );
    let many_aliases: String = (0..1000)
        .map(|i| format!("- objectName: big-secret\n  objectType: secretsmanager\n  objectAlias: copy-{i}\n"))
        .collect();
    let many_objects: String = (0..20_000).map(|i| obj(&format!("s{i}"))).collect();
    let over_files: String = (0..1500)
        .map(|i| format!("- {{objectName: s{i}, objectType: secretsmanager}}\n"))
        .collect();
    let many_jmes = format!(
        "- objectName: small\n  objectType: secretsmanager\n  jmesPath:\n{}",
        (0..2_000)
            .map(|i| format!("    - path: a\n      objectAlias: f{i}\n"))
            .collect::<String>()
    );
    vec![
        Case {
            label: "deeply nested jmesPath",
            objects: format!(
                "- objectName: small\n  objectType: secretsmanager\n  jmesPath:\n    - path: '{}a{}'\n      objectAlias: x\n",
                "(".repeat(5000),
                ")".repeat(5000)
            ),
            expect: vec!["--max-jmespath-length"],
            after_fetch: false,
        },
        Case {
            label: "deeply nested jmesPath within the length limit",
            objects: format!(
                "- objectName: small\n  objectType: secretsmanager\n  jmesPath:\n    - path: '{}a'\n      objectAlias: x\n",
                "!".repeat(1000)
            ),
            expect: vec!["levels of nesting", "--max-jmespath-depth"],
            after_fetch: false,
        },
        Case {
            label: "very long jmesPath",
            objects: format!(
                "- objectName: small\n  objectType: secretsmanager\n  jmesPath:\n    - path: '{}'\n      objectAlias: x\n",
                "a.".repeat(50_000) + "a"
            ),
            expect: vec!["--max-jmespath-length"],
            after_fetch: false,
        },
        Case {
            label: "YAML alias bomb",
            objects: alias_bomb,
            expect: vec!["aliases expanded", "(line 7 column"],
            after_fetch: false,
        },
        Case {
            label: "YAML merge keys multiplying one large object",
            objects: format!(
                "- &o {{objectName: s, objectType: secretsmanager, x: [{}]}}\n{}",
                "a,".repeat(2_000),
                (0..100)
                    .map(|i| format!("- {{<<: *o, objectAlias: c{i}}}\n"))
                    .collect::<String>()
            ),
            expect: vec!["aliases expanded", "--max-files-per-mount"],
            after_fetch: false,
        },
        Case {
            label: "deeply nested YAML",
            objects: format!(
                "- objectName: s\n  objectType: secretsmanager\n  x: {}1{}\n",
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            expect: vec!["Failed to load SecretProviderClass"],
            after_fetch: false,
        },
        Case {
            label: "doubling jmesPath on a 10-byte secret",
            objects: doubling,
            expect: vec!["--max-jmespath-work", "whatever the secret's value"],
            after_fetch: false,
        },
        Case {
            label: "one 60 KB secret under 1,000 aliases",
            objects: many_aliases,
            expect: vec!["--max-mount-bytes"],
            after_fetch: true,
        },
        Case {
            label: "20,000 objects",
            objects: many_objects,
            expect: vec!["--max-objects-bytes"],
            after_fetch: false,
        },
        Case {
            label: "1,500 objects in 70 KB",
            objects: over_files,
            expect: vec!["1500 files", "--max-files-per-mount"],
            after_fetch: false,
        },
        Case {
            label: "2,000 jmesPath entries",
            objects: many_jmes,
            expect: vec!["--max-files-per-mount"],
            after_fetch: false,
        },
        Case {
            label: "20 KB object name",
            objects: obj(&"n".repeat(20_000)),
            expect: vec!["objectName", "--max-name-length"],
            after_fetch: false,
        },
        Case {
            label: "20 KB object alias",
            objects: format!(
                "- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}\n",
                "a".repeat(20_000)
            ),
            expect: vec!["objectAlias", "--max-name-length"],
            after_fetch: false,
        },
        Case {
            label: "objects over 256 KiB",
            objects: format!("{}# {}\n", obj("s"), "x".repeat(300 * 1024)),
            expect: vec!["bytes, more than the limit", "--max-objects-bytes"],
            after_fetch: false,
        },
    ]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    proc_status_kib(pid, field)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs (needs Linux and the same user)");
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn run_table(driver_writes: bool) -> Vec<String> {
    let env = Env::start_with(|mut o| {
        if driver_writes {
            o.args.push("--driver-writes-secrets".into());
        }
        o
    })
    .await;
    env.aws.put_secret_string(REGION, "small", "ten bytes!");
    env.aws.put_secret_string(REGION, "big-secret", &"v".repeat(60_000));
    env.aws.put_secret_string(REGION, "benign", "benign-value");
    let pid = env.provider.pid();
    let benign_target = env.provider.target("benign");
    // Warm up the benign pod's identity so its mount during each case is a
    // plain re-mount.
    env.provider
        .mount(&Req::new(&obj("benign"), &benign_target).pod("pod-b", "sa-b", TOKEN_B))
        .await
        .expect("benign warm-up");

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let target = env.provider.target(&format!("hostile-{i}"));
        let hostile = Req::new(&case.objects, &target);
        let benign = Req::new(&obj("benign"), &benign_target).pod("pod-b", "sa-b", TOKEN_B);
        env.aws.clear_calls();
        let kube_before = env.kube.calls().len();
        reset_peak(pid);
        let before = status_kib(pid, "VmRSS:");
        let started = Instant::now();
        let (hostile_result, benign_result) = tokio::join!(env.provider.mount(&hostile), async {
            // Sent while the hostile request is being handled.
            tokio::time::sleep(Duration::from_millis(5)).await;
            env.provider.mount(&benign).await
        });
        let elapsed = started.elapsed();
        let peak = status_kib(pid, "VmHWM:");
        report.push(format!(
            "{:<48} RSS before {:>5.1} MiB, peak {:>5.1} MiB ({:+.1} MiB), {} ms",
            case.label,
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
            (peak as f64 - before as f64) / 1024.0,
            elapsed.as_millis()
        ));

        let label = case.label;
        match hostile_result {
            Ok(_) => failures.push(format!("{label}: the hostile mount succeeded")),
            Err(status) => {
                let msg = status.message();
                if status.code() != tonic::Code::InvalidArgument {
                    failures.push(format!("{label}: code {:?}: {msg}", status.code()));
                }
                for want in &case.expect {
                    if !msg.contains(want) {
                        failures.push(format!("{label}: the message lacks {want:?}: {msg}"));
                    }
                }
                if msg.len() > 1024 {
                    failures.push(format!("{label}: a {} byte message", msg.len()));
                }
            }
        }
        match benign_result {
            Ok(resp) => {
                let content = if driver_writes {
                    file_map(&resp).get("benign").map(|(_, c)| c.clone())
                } else {
                    read_mount(&benign_target).get("benign").cloned()
                };
                if content.as_deref() != Some(b"benign-value".as_slice()) {
                    failures.push(format!("{label}: the benign pod read {content:?}"));
                }
            }
            Err(e) => failures.push(format!("{label}: the benign mount failed: {e:?}")),
        }
        if !all_entries(&target).is_empty() {
            failures.push(format!("{label}: wrote {:?}", all_entries(&target)));
        }
        let hostile_calls: Vec<_> = env
            .aws
            .calls()
            .into_iter()
            .filter(|c| c.access_key.as_deref() != Some(access_key_for(ROLE_B, TOKEN_B).as_str()))
            .collect();
        if !case.after_fetch && (!hostile_calls.is_empty() || env.kube.calls().len() != kube_before) {
            failures.push(format!(
                "{label}: calls were made: AWS {hostile_calls:?}, Kubernetes {:?}",
                &env.kube.calls()[kube_before..]
            ));
        }
        if peak > MAX_PEAK_RSS_KIB {
            failures.push(format!("{label}: peak RSS {peak} KiB"));
        }
        if !alive(pid) {
            failures.push(format!("{label}: the provider died: {}", env.provider.logs()));
            break;
        }
    }
    assert!(failures.is_empty(), "{}\n\n{}", failures.join("\n"), report.join("\n"));
    report
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn hostile_classes_are_refused_in_provider_writes_mode_and_the_node_keeps_serving() {
    let report = run_table(false).await;
    eprintln!("provider-writes:\n{}", report.join("\n"));
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn hostile_classes_are_refused_in_driver_writes_mode_and_the_node_keeps_serving() {
    let report = run_table(true).await;
    eprintln!("driver-writes:\n{}", report.join("\n"));
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn an_oversized_request_is_refused_by_the_transport_and_the_provider_keeps_serving() {
    let env = Env::start().await;
    env.aws.put_secret_string(REGION, "s", "v");
    let target = env.provider.target("huge");
    let pid = env.provider.pid();
    reset_peak(pid);
    // Above --max-request-bytes (1 MiB): refused before it is decoded.
    let req = Req::new(&obj("s"), &target).set("padding", &"p".repeat(2 * 1024 * 1024));
    let status = env.provider.mount(&req).await.expect_err("oversized request");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(env.aws.calls().is_empty());
    assert!(all_entries(&target).is_empty());
    let ok = env.provider.target("ok");
    env.provider.mount(&Req::new(&obj("s"), &ok)).await.expect("next mount");
    assert_eq!(read_mount(&ok)["s"], b"v");
    let peak = status_kib(pid, "VmHWM:");
    assert!(peak < MAX_PEAK_RSS_KIB, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn an_invalid_region_is_refused_before_any_client_or_call() {
    let env = Env::start().await;
    let target = env.provider.target("region");
    for bad in ["us-west-2/../../x", "US-WEST-2", &"r".repeat(20_000)] {
        let req = Req::new(&obj("s"), &target).set("region", bad);
        let status = env.provider.mount(&req).await.expect_err("invalid region");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("invalid region"), "{}", status.message());
        assert!(status.message().len() < 400, "{}", status.message());
    }
    assert!(env.aws.calls().is_empty() && env.kube.calls().is_empty());
}

/// Peak RSS increase of a storm of large driver-writes mounts with
/// `--max-inflight-response-bytes=<budget>`, and the files each pod got.
/// The process-wide `--memory-budget` is lifted, so that the response
/// budget alone is what the storm meets.
async fn large_storm(budget: &str) -> (u64, usize) {
    let env = Env::start_with(|mut o| {
        o.args.push("--driver-writes-secrets".into());
        o.args.push(format!("--max-inflight-response-bytes={budget}"));
        o.args.push("--memory-budget=4096MiB".into());
        o
    })
    .await;
    // 40 secrets of 60 KB: a 2.4 MB response per mount.
    let mut objects = String::new();
    for i in 0..40 {
        env.aws
            .put_secret_string(REGION, &format!("big-{i}"), &format!("{i:02}").repeat(30_000));
        objects.push_str(&format!("- objectName: big-{i}\n  objectType: secretsmanager\n"));
    }
    let pid = env.provider.pid();
    // Warm the identity, then measure the storm alone.
    env.provider
        .mount(&Req::new(&objects, &env.provider.target("warm")))
        .await
        .expect("warm-up");
    reset_peak(pid);
    let before = status_kib(pid, "VmRSS:");
    // 72 MB of values at once: mounts the provider cannot admit fail with
    // RESOURCE_EXHAUSTED and are retried, as the kubelet retries them.
    let mounts = (0..30).map(|p| {
        let req =
            Req::new(&objects, &env.provider.target(&format!("large-{p}"))).pod(&format!("pod-{p}"), "sa-a", TOKEN_A);
        let provider = &env.provider;
        async move {
            let mut attempts = 1;
            loop {
                match provider.mount(&req).await {
                    Err(s) if s.code() == tonic::Code::ResourceExhausted && attempts < 60 => {
                        let flags = [
                            "--max-concurrent-mounts",
                            "--max-inflight-response-bytes",
                            "--memory-budget",
                        ];
                        assert!(flags.iter().any(|f| s.message().contains(f)), "{}", s.message());
                        attempts += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    Err(s) if connection_recycled(&s) && attempts < 60 => {
                        attempts += 1;
                    }
                    result => return result,
                }
            }
        }
    });
    let mut complete = 0;
    for r in futures::future::join_all(mounts).await {
        let resp = r.expect("large mount");
        let files = file_map(&resp);
        let all = (0..40).all(|i| {
            files
                .get(&format!("big-{i}"))
                .is_some_and(|(_, v)| *v == format!("{i:02}").repeat(30_000).into_bytes())
        });
        complete += usize::from(all);
    }
    (status_kib(pid, "VmHWM:").saturating_sub(before), complete)
}

#[tokio::test]
async fn a_storm_of_large_driver_writes_mounts_stays_within_the_response_budget() {
    // 30 mounts of 2.4 MB at once: with a 4 MiB budget at most one response
    // (and the one waiting) is encoded at a time; every pod still gets all
    // of its files.
    let (bounded, complete) = large_storm("4MiB").await;
    assert_eq!(complete, 30);
    let (unbounded, complete) = large_storm("1024MiB").await;
    assert_eq!(complete, 30);
    eprintln!(
        "30 x 2.4 MB driver-writes mounts at once: peak RSS +{:.1} MiB with a 4 MiB response budget, +{:.1} MiB without",
        bounded as f64 / 1024.0,
        unbounded as f64 / 1024.0
    );
    assert!(bounded < 32 * 1024, "peak RSS +{bounded} KiB with the budget");
    assert!(
        unbounded > 2 * bounded,
        "the budget is what bounds it: +{unbounded} KiB without, +{bounded} KiB with"
    );
}

// === Overload: one memory budget ===

/// An attack of `tests/common/attacks.rs` at default flags, in one write
/// mode: the provider stays up and under the chart's memory limit, the
/// benign tenant's mount succeeds meanwhile, and every hostile mount that
/// failed names the budget or the cap that stopped it.
async fn overload(class: attacks::Class, driver_writes: bool) {
    let extra: &[&str] = if driver_writes {
        &["--driver-writes-secrets"]
    } else {
        &[]
    };
    let outcome = attacks::run(class, extra).await;
    eprintln!("{}", outcome.line());
    let logs = || outcome.logs.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(outcome.alive, "the provider died:\n{}", logs());
    assert!(
        outcome.peak_kib < attacks::CHART_MEMORY_LIMIT_KIB,
        "{}: peak RSS {} KiB, over the chart's limit",
        class.label(),
        outcome.peak_kib
    );
    assert_eq!(outcome.benign, Ok(()), "{}", outcome.line());
    for (code, (_, message)) in &outcome.failed {
        let named = ["--memory-budget", "--max-mount-bytes", "--max-concurrent-mounts"]
            .iter()
            .any(|flag| message.contains(flag));
        assert!(named, "{code}: {message}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn many_distinct_legal_objects_from_a_few_pods_stay_within_the_budget() {
    overload(attacks::Class::ManyObjects, false).await;
    overload(attacks::Class::ManyObjects, true).await;
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn requests_padded_to_the_limit_while_aws_is_slow_stay_within_the_budget() {
    overload(attacks::Class::PaddedRequests, true).await;
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn large_templates_of_ordinary_tags_stay_within_the_budget() {
    overload(attacks::Class::LargeTemplate, true).await;
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the provider's memory in /proc: Linux only"
)]
async fn a_new_failover_region_on_every_remount_keeps_kept_values_within_their_bytes() {
    overload(attacks::Class::FailoverRegionChurn, false).await;
}

// === Tenant text in logs and events ===

/// What a forged log line looks like: the provider's own format.
const FORGED: &str =
    "FORGED 2026-12-07T00:00:00.000000Z  INFO mount{namespace=default}: csi_provider_aws::server: mount succeeded";

/// Whether `text` holds a character that breaks, rewrites or hides a line.
fn raw_control(text: &str) -> Option<char> {
    text.chars()
        .find(|c| (c.is_control() && *c != '\n') || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}'))
}

#[tokio::test]
async fn tenant_text_cannot_forge_or_hide_log_lines_in_text_or_json_logs_nor_in_events() {
    for json in [false, true] {
        let env = Env::start_with(|mut o| {
            if json {
                o.args.push("--log-format=json".into());
            }
            o
        })
        .await;
        env.aws.put_secret_string(REGION, "s", "v");
        let tricks = [
            format!("s\n{FORGED}"),
            format!("s\r\n{FORGED}"),
            format!("s\u{1b}[2K\u{1b}[1A{FORGED}"),
            format!("s\u{1b}]0;title\u{7}\u{2028}{FORGED}"),
            format!("s\u{202e}{FORGED}"),
        ];
        // The pod's namespace and name come from the driver; a hostile
        // value there is escaped too.
        let mut messages = Vec::new();
        for (i, trick) in tricks.iter().enumerate() {
            let quoted = serde_json::to_string(trick).unwrap();
            for objects in [
                // An unknown secret: the AWS error names it.
                format!("- objectName: {quoted}\n  objectType: secretsmanager\n"),
                // An invalid type: the validation error names it.
                format!("- objectName: s\n  objectType: {quoted}\n"),
            ] {
                let target = env.provider.target(&format!("forge-{i}-{}", messages.len()));
                let req = Req::new(&objects, &target).set("csi.storage.k8s.io/pod.name", trick);
                let err = env.provider.mount(&req).await.expect_err("hostile");
                messages.push(err.message().to_string());
            }
        }
        // A failed rotation's event carries the message: escaped as well.
        let target = env.provider.target("forge-rotation");
        env.provider
            .mount(&Req::new(&obj("s"), &target))
            .await
            .expect("first mount");
        let quoted = serde_json::to_string(&tricks[0]).unwrap();
        let rotation = Req::new(
            &format!("- objectName: {quoted}\n  objectType: secretsmanager\n"),
            &target,
        );
        messages.push(
            env.provider
                .mount(&rotation)
                .await
                .expect_err("rotation")
                .message()
                .to_string(),
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while env.kube.events().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events = env.kube.events();
        assert_eq!(events.len(), 1, "{events:?}");
        let note = events[0]["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("\\n") && note.contains("FORGED"), "{note}");

        for text in messages.iter().chain([&note]) {
            assert_eq!(raw_control(text), None, "{text:?}");
            assert!(text.contains("FORGED"), "the name is still shown, escaped: {text}");
        }
        let logs = env.provider.logs();
        assert_eq!(raw_control(&logs), None, "a raw control character in the log");
        for line in logs.lines() {
            assert!(!line.starts_with("FORGED"), "a forged line: {line}");
            if json {
                let parsed: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                assert!(parsed.is_object(), "{line}");
            }
        }
        assert!(
            logs.lines().filter(|l| l.contains("FORGED")).count() >= tricks.len(),
            "the mounts were logged, each on one line:\n{logs}"
        );
    }
}

// === The health endpoint under a flood ===

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_connections_that_never_finish_their_headers_does_not_keep_a_probe_out() {
    use tokio::io::AsyncWriteExt;
    // Default flags: 32 connections, 5 s to send a request's headers.
    let env = Env::start().await;
    let addr = env.provider.http.expect("endpoint");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let done = move || stopped.load(std::sync::atomic::Ordering::Relaxed);
    // 500 connections that send half a request and wait, opened as fast as
    // they can be, and held.
    let flood = tokio::spawn(async move {
        let mut open = Vec::new();
        for _ in 0..500 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n").await;
                open.push(s);
            }
            if done() {
                break;
            }
        }
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        open.len()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A scraper and a probe meanwhile: every answer within a second when
    // the machine is quiet (the slowest is printed), within two while the
    // rest of the suite runs beside it; queued behind the flood, as before,
    // the first would wait for the header timeouts of 500 connections.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/readyz" } else { "/metrics" };
        let started = Instant::now();
        let body = tokio::time::timeout(Duration::from_secs(2), env.provider.http_get(path))
            .await
            .unwrap_or_else(|_| panic!("{path} not answered within 2 s during the flood"));
        slowest = slowest.max(started.elapsed());
        if path == "/readyz" {
            assert_eq!(body, "ready\n");
        } else {
            assert!(body.contains("csi_provider_aws_build_info"), "{body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.await.expect("flood");
    eprintln!("{opened} stalled connections; slowest answer {slowest:?}");
    assert!(opened >= 100, "the flood opened {opened} connections");
    assert!(process_alive(env.provider.pid()));
}

// === Paging that never ends ===

#[tokio::test]
async fn a_listing_that_never_ends_stops_at_a_repeated_token_and_at_the_page_cap() {
    use common::fake_aws::Endless;
    let env = Env::start().await;
    env.aws.put_secret_string(REGION, "benign", "benign-value");
    let classes = [
        "- parameterPath: /orders/prod\n  objectAlias: config\n",
        "- secretNamePrefix: orders/prod/\n",
    ];
    // A repeated token is AWS (or a proxy) misbehaving: Unavailable, as a
    // region outage. An endless listing of new tokens meets the page cap.
    for (how, code, expect, most) in [
        (
            Endless::SameToken,
            tonic::Code::Unavailable,
            "returned a NextToken it had already returned",
            2,
        ),
        (
            Endless::NewTokens,
            tonic::Code::InvalidArgument,
            "201 or more pages, empty ones included, more than the limit of 200 (--max-pages-per-selection)",
            200,
        ),
    ] {
        env.aws.endless_pages(how);
        for (i, class) in classes.iter().enumerate() {
            env.aws.clear_calls();
            let target = env.provider.target(&format!("endless-{how:?}-{i}"));
            let started = Instant::now();
            let err = env
                .provider
                .mount(&Req::new(class, &target))
                .await
                .expect_err("endless");
            assert_eq!(err.code(), code, "{err:?}");
            assert!(err.message().contains(expect), "{}", err.message());
            assert!(err.message().contains("the set is not mounted"), "{}", err.message());
            let pages = env
                .aws
                .calls()
                .iter()
                .filter(|c| c.op == "GetParametersByPath" || c.op == "BatchGetSecretValue")
                .count();
            assert_eq!(pages, most, "{how:?} {class}: {pages} pages");
            assert!(all_entries(&target).is_empty());
            eprintln!(
                "{how:?}, {class:?}: refused after {pages} pages in {:?}",
                started.elapsed()
            );
        }
        // Another tenant's mount meanwhile.
        let benign = Req::new(&obj("benign"), &env.provider.target("benign")).pod("pod-b", "sa-b", TOKEN_B);
        env.provider.mount(&benign).await.expect("benign");
        env.aws.recover();
    }
}

// === Throttling within the deadline ===

#[tokio::test(flavor = "multi_thread")]
async fn twenty_mounts_at_once_against_a_throttled_quota_all_succeed_within_their_deadline() {
    // 20 pods of 20 identities (no shared calls) against an SSM quota of
    // 5 calls a second, with a 30 s mount deadline.
    let env = Env::start_with(|mut o| {
        o.args.push("--mount-timeout=30s".into());
        o.env.push(("TOKIO_WORKER_THREADS".into(), "4".into()));
        o
    })
    .await;
    env.aws.put_param(REGION, "flags", "String", "on");
    env.aws.put_secret_string(REGION, "benign", "benign-value");
    for i in 0..20 {
        let sa = format!("quota-{i}");
        env.kube
            .add_service_account("default", &sa, Some(&format!("arn:aws:iam::123456789012:role/{sa}")));
    }
    env.aws.set_quota("GetParameters", REGION, 5.0);
    let started = Instant::now();
    let mounts = (0..20).map(|i| {
        let sa = format!("quota-{i}");
        let req = Req::new(
            "- objectName: flags\n  objectType: ssmparameter\n",
            &env.provider.target(&sa),
        )
        .pod(&sa, &sa, &format!("eyJ.{sa}.sig"));
        let provider = &env.provider;
        async move { (provider.mount(&req).await, req.target) }
    });
    let benign = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = Req::new(&obj("benign"), &env.provider.target("benign")).pod("pod-b", "sa-b", TOKEN_B);
        env.provider.mount(&req).await
    };
    let (results, benign) = tokio::join!(futures::future::join_all(mounts), benign);
    let elapsed = started.elapsed();
    let throttled = env.aws.faulted("GetParameters");
    let calls = env.aws.calls_of("GetParameters").len();
    eprintln!(
        "20 mounts at once against 5 GetParameters a second: {} succeeded in {elapsed:?}, {calls} calls, {throttled} throttled",
        results.iter().filter(|(r, _)| r.is_ok()).count()
    );
    for (r, target) in results {
        r.unwrap_or_else(|e| panic!("{}: {e:?}", target.display()));
        assert_eq!(read_mount(&target)["flags"], b"on");
    }
    benign.expect("the other tenant's mount");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    // Retries are spaced: far fewer calls than a tight loop would make.
    assert!(calls < 200, "{calls} calls");
}

#[tokio::test]
async fn a_response_the_budget_cannot_hold_stops_being_read_and_is_not_asked_for_again() {
    // 8 MiB: 4 MiB shared above the floors. A 1.5 MB secret's response
    // is charged three times as it arrives: more than there is.
    let env = Env::start_with(|mut o| {
        o.args.push("--memory-budget=8MiB".into());
        o
    })
    .await;
    env.aws.put_secret_string(REGION, "large", &"x".repeat(1_500_000));
    env.aws.put_secret_string(REGION, "small", "v");
    let req = Req::new(
        "- objectName: large\n  objectType: secretsmanager\n",
        &env.provider.target("large"),
    );
    let err = env.provider.mount(&req).await.expect_err("over the budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--memory-budget") && err.message().contains("AWS responses needed"),
        "{}",
        err.message()
    );
    // The SDK does not retry a call whose body the budget refused.
    assert_eq!(env.aws.calls_of("GetSecretValue").len(), 1);
    let ok = env.provider.target("ok");
    env.provider
        .mount(&Req::new("- objectName: small\n  objectType: secretsmanager\n", &ok))
        .await
        .expect("the next mount");
    assert_eq!(read_mount(&ok)["small"], b"v");
}
