//! Overload: the peak RSS of each attack of `tests/common/attacks.rs` (a
//! tenant staying inside every documented limit), against the release
//! binary or any build given in `CSI_PROVIDER_BIN`, in both write modes.
//! `OVERLOAD_ONLY=<text>` runs the classes whose label contains the text.
//!
//! Run: `cargo bench --bench overload` (results: docs/benchmarks.md).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::attacks::{self, CHART_MEMORY_LIMIT_KIB, Class};

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("overload: run with `cargo bench --bench overload`");
        return;
    }
    let only = std::env::var("OVERLOAD_ONLY").unwrap_or_default();
    let binary = std::env::var("CSI_PROVIDER_BIN").unwrap_or_else(|_| "this build".into());
    println!(
        "overload attacks against {binary} (chart memory limit {} MiB)",
        CHART_MEMORY_LIMIT_KIB / 1024
    );
    for (mode, extra) in [
        ("provider-writes", vec![]),
        ("driver-writes", vec!["--driver-writes-secrets"]),
    ] {
        for class in Class::ALL.into_iter().filter(|c| c.label().contains(&only)) {
            let outcome = attacks::run(class, &extra).await;
            println!("[{mode}] {}", outcome.line());
            for m in outcome.messages() {
                println!("    {}", m.chars().take(300).collect::<String>());
            }
        }
    }
}
