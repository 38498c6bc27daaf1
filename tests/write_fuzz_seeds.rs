//! Rewrites the `seed-*` files of `fuzz/corpus/<target>/` from the bad-input
//! table and the hostile inputs of `tests/common/fuzz_seeds.rs`:
//! `cargo test --test write_fuzz_seeds` after changing them. Not part of a
//! plain `cargo test` (Cargo.toml: `test = false`); `bad_input` fails while
//! the corpus is stale.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let written = common::fuzz_seeds::seeds(root)
        .write(&root.join("fuzz/corpus"))
        .expect("write the seeds");
    assert!(written > 100, "{written} seeds");
    println!("wrote {written} seeds under fuzz/corpus");
}
