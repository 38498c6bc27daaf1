//! Malformed attributes, parameters and objects: each one fails with its
//! expected message and InvalidArgument, writes nothing, and makes no
//! Kubernetes or AWS call (everything is validated before any call).

use crate::common;

use common::bad_cases::{Expect, cases};
use common::*;

#[tokio::test]
async fn malformed_requests_fail_with_their_message_and_write_nothing() {
    let env = Env::start().await;
    let table = cases();
    assert!(table.len() >= 40, "the table holds {} cases", table.len());
    let mut failures = Vec::new();
    for (i, (label, edit, expect)) in table.into_iter().enumerate() {
        let target = env.provider.target(&format!("bad-{i}"));
        let base = Req::new("- objectName: s\n  objectType: secretsmanager\n", &target);
        let req = edit(base);
        match env.provider.mount(&req).await {
            Ok(_) => failures.push(format!("{label}: unexpectedly succeeded")),
            Err(status) => {
                let msg = status.message().to_string();
                let ok = match &expect {
                    Expect::Exact(e) => msg == *e,
                    Expect::Prefix(p) => msg.starts_with(p),
                };
                if !ok {
                    failures.push(format!("{label}: got {msg:?}"));
                }
                if status.code() != tonic::Code::InvalidArgument {
                    failures.push(format!("{label}: code {:?}", status.code()));
                }
                if msg.contains("raw-token-canary") || msg.contains(TOKEN_A) {
                    failures.push(format!("{label}: the message leaks a token"));
                }
            }
        }
        if !all_entries(&target).is_empty() {
            failures.push(format!("{label}: wrote {:?}", all_entries(&target)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        env.aws.calls().is_empty(),
        "no AWS call for invalid input: {:?}",
        env.aws.calls()
    );
    assert!(
        env.kube.calls().is_empty(),
        "no Kubernetes call for invalid input: {:?}",
        env.kube.calls()
    );
}

/// The fuzz targets' seed corpus holds every case of the table (and the
/// example class and hostile inputs), in each target's input format.
#[test]
fn the_fuzz_corpus_holds_every_case_of_the_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale = common::fuzz_seeds::seeds(root).missing(&root.join("fuzz/corpus"));
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or stale: {stale:?}; run `cargo test --test write_fuzz_seeds`"
    );
}
