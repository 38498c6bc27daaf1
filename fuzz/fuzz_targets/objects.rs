//! The `objects` parameter through `parse_objects` under the default
//! limits, with both path translations: never panics, errors are bounded,
//! accepted lists are within the limits with safe, distinct files, the
//! YAML pre-scan lets no expansion beyond what it counted or deep nesting
//! through to the parser that builds values, and what scanning holds stays
//! within what was announced before it ran.

#![no_main]

use csi_provider_aws::limits::Limits;
use csi_provider_aws::spec::PathTranslation;
use csi_provider_aws::spec::objects::{ObjectRules, parse_objects};
use csi_provider_aws_fuzz::{Counting, check_message, check_objects, check_yaml_is_bounded};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    for (translation, has_failover_region) in [(PathTranslation::default(), true), (PathTranslation::Off, false)] {
        let rules = ObjectRules {
            translation,
            default_mode: 0o640,
            has_failover_region,
            limits,
        };
        match parse_objects(text, &rules) {
            Ok(objects) => {
                check_objects(&objects, translation, &limits);
                if !has_failover_region {
                    assert!(objects.iter().all(|o| o.failover.is_none()));
                }
            }
            Err(e) => check_message("objects", &e.to_string()),
        }
    }
    check_yaml_is_bounded(text);
});
