//! Modes: `parse_file_permission` (a `filePermission` string), the same
//! text as a YAML `filePermission` (quoted and bare) through
//! `parse_objects`, and the request's `permission` JSON through
//! `parse_request`. Whatever is accepted is a plain mode (no special bits).

#![no_main]

use csi_provider_aws::spec::objects::{ObjectRules, parse_objects};
use csi_provider_aws::spec::parse_request;
use csi_provider_aws_fuzz::{TARGET_PATH, check_file_permission, check_message, check_objects, check_spec};
use libfuzzer_sys::fuzz_target;

const ATTRIBUTES: &str = r#"{"objects":"- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n      objectAlias: b\n","csi.storage.k8s.io/serviceAccount.tokens":"{\"sts.amazonaws.com\":{\"token\":\"t\"}}"}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    check_file_permission(p);

    let rules = ObjectRules::default();
    let quoted = serde_json::to_string(p).unwrap_or_default();
    for text in [
        format!("- objectName: s\n  objectType: secretsmanager\n  filePermission: {quoted}\n"),
        format!("- objectName: s\n  objectType: secretsmanager\n  filePermission: {p}\n"),
        format!(
            "- objectName: s\n  objectType: ssmparameter\n  jmesPath:\n    - path: a\n      objectAlias: b\n      filePermission: {p}\n"
        ),
    ] {
        match parse_objects(&text, &rules) {
            Ok(objects) => check_objects(&objects, rules.translation, &rules.limits),
            Err(e) => check_message("filePermission", &e.to_string()),
        }
    }

    match parse_request(ATTRIBUTES, "null", TARGET_PATH, p, &rules.limits) {
        Ok(spec) => {
            check_spec(&spec, &rules.limits);
            let mode: u32 = serde_json::from_str(p).unwrap_or_else(|e| panic!("accepted {p:?}: {e}"));
            assert_eq!(spec.default_mode, mode);
            assert!(
                spec.objects
                    .iter()
                    .all(|o| o.mode == mode && o.jmes.iter().all(|j| j.mode == mode))
            );
        }
        Err(e) => check_message("permission", &e.to_string()),
    }
});
