//! The attributes JSON of a Mount request (everything else fixed and sane)
//! through `parse_request`: never panics, every error is bounded and never
//! shows the token, and whatever is accepted is safe to mount.

#![no_main]

use csi_provider_aws::limits::Limits;
use csi_provider_aws::spec::parse_request;
use csi_provider_aws_fuzz::{TARGET_PATH, canary_elsewhere, check_message, check_no_token, check_spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(attributes) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    let result = parse_request(attributes, "null", TARGET_PATH, "420", &limits);
    match &result {
        Ok(spec) => {
            check_spec(spec, &limits);
            assert_eq!(spec.default_mode, 0o644);
        }
        Err(e) => check_message("attributes", &e.to_string()),
    }
    if !canary_elsewhere(attributes, "", &[]) {
        check_no_token(&result);
    }
});
