//! JMESPath: the first line of the input is an expression, the rest a
//! value. `nesting` never panics; the expression is compiled under the
//! default limits (and, if only too deep for them, under the deepest
//! `--max-jmespath-depth` allowed) and evaluated against the value on a
//! 2 MiB stack, the smallest the provider evaluates on: it never panics,
//! never overflows the stack, and allocates no more than a small multiple
//! of the bound it was admitted under (`work_bound`) plus the parsed value.

#![no_main]

use std::sync::atomic::Ordering;

use csi_provider_aws::jmes::{self, CompileError, EvalError};
use csi_provider_aws::limits::{JMESPATH_DEPTH_CAP, Limits};
use csi_provider_aws_fuzz::{Counting, LIVE, PEAK, on_small_stack};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// How far actual allocation may exceed the model (map nodes, vector
/// growth): any amplification the model misses grows past it.
const MODEL_FACTOR: u64 = 4;

/// Allocation beyond the bound that is not the evaluation's own: the
/// thread-local state of the first evaluation, allocator rounding.
const SLACK: usize = 64 * 1024;

fn run(data: &[u8]) {
    let (expr, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{\"a\":\"b\"}"[..]),
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let depth = jmes::nesting(expr);
    let default = Limits::default();
    let deepest = Limits {
        max_jmespath_depth: JMESPATH_DEPTH_CAP,
        ..default
    };
    let (path, limits) = match jmes::compile(expr, &default) {
        Ok(p) => (p, default),
        // Nested deeper than the default allows: try the deepest setting.
        Err(CompileError::Depth(d)) => {
            assert_eq!(d, depth);
            assert!(d > default.max_jmespath_depth);
            match jmes::compile(expr, &deepest) {
                Ok(p) => (p, deepest),
                Err(_) => return,
            }
        }
        // A syntax tree deeper than any setting allows.
        Err(CompileError::TreeDepth(d)) => {
            assert!(d > jmes::MAX_TREE_DEPTH, "{d}");
            return;
        }
        Err(CompileError::Length(n)) => {
            assert!(n > default.max_jmespath_length);
            return;
        }
        Err(CompileError::Work(w)) => {
            assert!(w > default.max_jmespath_work);
            return;
        }
        Err(CompileError::Syntax) => return,
    };
    assert!(depth <= limits.max_jmespath_depth);
    assert_eq!(path.as_str(), expr);
    let bound = path.work_bound(value.len());
    assert!(bound >= path.work_bound(0), "the bound grows with the value");

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = path.evaluate(value, &limits);
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    match &result {
        Err(EvalError::Work(w)) => {
            assert_eq!(*w, bound);
            assert!(*w > limits.max_jmespath_work);
        }
        // A selected string is the value's own; anything else was produced.
        Ok(out) => assert!(
            out.len() as u64 <= bound.saturating_add(value.len() as u64),
            "{} bytes out, bound {bound}",
            out.len()
        ),
        Err(_) => {}
    }
    if !matches!(result, Err(EvalError::Work(_))) {
        // The bound counts what the expression produces; the parsed value
        // (modelled at 33 bytes per byte, an object's map takes more) and
        // the copy of the result come on top, and are linear in the value.
        let parsed = 33 * value.len() as u64 + 64;
        let out = result.as_ref().map_or(0, |o| o.len() as u64);
        let allowed = MODEL_FACTOR * bound.saturating_add(parsed) + out + SLACK as u64;
        assert!(
            used as u64 <= allowed,
            "{expr:?} on {} bytes allocated {used} bytes, more than {allowed} (bound {bound})",
            value.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    on_small_stack(run, data);
});
