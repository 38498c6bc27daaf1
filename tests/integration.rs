//! Every integration test, in one test binary: each file of `tests/` but
//! `write_fuzz_seeds.rs` (its own target) is a module here, so the shared fakes (`common`) are compiled and linked once
//! rather than once per file. Run one file's tests with its module path:
//! `cargo test --test integration mount::`.
//!
//! Tests that need an installed tool carry `#[ignore = "needs …"]` and run
//! with `cargo test -- --ignored` (`scripts/test` runs both tiers).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod endpoint;
mod schema;

mod attribution;
mod bad_input;
mod bulk;
mod caching;
mod certificates;
mod chain;
mod cli;
mod deploy;
mod docs;
mod environment;
mod faults;
mod health;
mod helm;
mod hostile;
mod hygiene;
mod layers;
mod moto;
mod mount;
mod properties;
mod rbac;
mod redaction;
mod release;
mod server;
mod validate;
mod writer;

/// With `autotests = false`, a file of `tests/` that is not a module here
/// would never be compiled or run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = std::fs::read_to_string(dir.join("integration.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module == "integration" || module == "write_fuzz_seeds" {
            continue;
        }
        if !root.lines().any(|l| l == format!("mod {module};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "add `mod <name>;` to tests/integration.rs for {missing:?}"
    );
}
