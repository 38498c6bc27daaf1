//! Templates: the input is a template, then NUL-separated values of the
//! files `a`, `b` and `j` (`j` defaults to JSON holding the value canary).
//! Whatever the template, compiling and rendering it on a 2 MiB stack never
//! panics and never overflows the stack; the output stays within the file
//! limit; errors are bounded and never show a value; and the memory a
//! render holds at its peak stays within a small multiple of what the
//! limits admit (the files, the filters' work budget, the output and the
//! template), whatever the template does.

#![no_main]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use csi_provider_aws::limits::{Limit, Limits};
use csi_provider_aws::secret::SecretBytes;
use csi_provider_aws::template::{Budget, Files, Template};
use csi_provider_aws_fuzz::{Counting, LIVE, PEAK, VALUE_CANARY, check_message, on_small_stack};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// How far memory may exceed what the limits admit (map nodes of parsed
/// JSON, vector growth, the compiled template).
const MODEL_FACTOR: u64 = 16;
const SLACK: u64 = 256 * 1024;

fn run(data: &[u8]) {
    let mut fields = data.split(|&b| b == 0);
    let Some(Ok(source)) = fields.next().map(std::str::from_utf8) else {
        return;
    };
    let a = fields.next().unwrap_or(b"plain value");
    let b = fields.next().unwrap_or(b"");
    let json = format!(r#"{{"user":"admin","password":"{VALUE_CANARY}","n":[1,2,{{"k":"v"}}]}}"#);
    let j = fields.next().unwrap_or(json.as_bytes());
    let limits = Limits {
        max_file_bytes: 64 * 1024,
        max_template_fuel: 50_000,
        max_template_work: 1024 * 1024,
        ..Limits::default()
    };
    let inputs = [("a", a), ("b", b), ("j", j), ("db-password", b"s" as &[u8])];
    let files =
        Arc::new(Files::new(inputs.iter().map(|(n, v)| {
            (n.to_string(), SecretBytes::new(v.to_vec()), "v1".to_string())
        })));
    let input_bytes: u64 = inputs.iter().map(|(_, v)| v.len() as u64).sum();

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut template = match Template::compile("out.env", source) {
        Ok(t) => t,
        Err(e) => {
            let message = e.to_string();
            check_message("template", &message);
            return;
        }
    };
    let result = template.render(
        &files,
        &mut Budget::new(&limits),
        limits.max_file_bytes as u64,
        Limit::FileBytes,
        &limits,
    );
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(base) as u64;
    match &result {
        Ok(r) => {
            assert!(r.contents.len() <= limits.max_file_bytes);
            assert_eq!(r.version.len(), 32);
            for name in &r.read {
                assert!(files.contains(name), "{name}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            check_message("template render", &message);
            if !source.contains("canary") {
                assert!(!message.contains(VALUE_CANARY), "a value shows: {message:?}");
            }
        }
    }
    let allowed = MODEL_FACTOR
        * (input_bytes + limits.max_template_work + limits.max_file_bytes as u64 + source.len() as u64)
        + SLACK;
    assert!(used <= allowed, "{used} bytes at the peak, {allowed} allowed");
}

fuzz_target!(|data: &[u8]| {
    on_small_stack(run, data);
});
