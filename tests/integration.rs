//! Every integration test, in one test binary: each file of `tests/` is a
//! module here, so the shared fakes (`common`) are compiled and linked once
//! rather than once per file. Run one file's tests with its module path:
//! `cargo test --test integration mount::`.
//!
//! Tests that need an installed tool carry `#[ignore = "needs …"]` and run
//! with `cargo test -- --ignored` (`scripts/test` runs both tiers).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod endpoint;
mod schema;

mod bad_input;
mod bulk;
mod caching;
mod chain;
mod cli;
mod deploy;
mod environment;
mod faults;
mod health;
mod helm;
mod hostile;
mod hygiene;
mod moto;
mod mount;
mod properties;
mod rbac;
mod redaction;
mod release;
mod server;
mod validate;
mod writer;
