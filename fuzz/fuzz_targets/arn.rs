//! Object names and ARNs: `arn::parse` and the type helpers, then the name
//! as an `objectName` through `parse_objects` and `check_arn_regions`.

#![no_main]

use csi_provider_aws::spec::objects::{ObjectRules, check_arn_regions, parse_objects};
use csi_provider_aws::spec::{ObjectKind, arn};
use csi_provider_aws_fuzz::{check_message, check_objects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    match arn::parse(name) {
        Some(a) => {
            assert!(arn::is_arn(name));
            for part in [a.partition, a.service, a.region, a.account] {
                assert!(!part.contains(':'), "{part:?}");
            }
            let joined = format!(
                "arn:{}:{}:{}:{}:{}",
                a.partition, a.service, a.region, a.account, a.resource
            );
            assert_eq!(joined, name);
        }
        None => assert!(!arn::is_arn(name) || name.matches(':').count() < 5, "{name:?}"),
    }
    for word in [name, name.split(':').nth(2).unwrap_or("")] {
        if let Some(kind) = arn::kind_of_object_type(word) {
            assert_eq!(arn::kind_of_service(word), Some(kind));
        }
    }

    // The name as an objectName, with and without an objectType.
    let quoted = serde_json::to_string(name).unwrap_or_default();
    let rules = ObjectRules::default();
    for object_type in [
        "",
        ", \"objectType\": \"secretsmanager\"",
        ", \"objectType\": \"ssmparameter\"",
    ] {
        let text = format!("[{{\"objectName\": {quoted}, \"objectAlias\": \"a\"{object_type}}}]");
        match parse_objects(&text, &rules) {
            Ok(objects) => {
                check_objects(&objects, rules.translation, &rules.limits);
                let o = &objects[0];
                // YAML folds its line breaks (NEL, LS, PS among them) in a
                // quoted scalar, so such a name reads back changed.
                if !name.contains(['\u{85}', '\u{2028}', '\u{2029}', '\n', '\r']) {
                    assert_eq!(o.name, name);
                }
                // The provider decides by the name as read back (a folded
                // line break can change an ARN's region).
                match arn::parse(&o.name) {
                    Some(a) => {
                        assert_eq!(arn::kind_of_service(a.service), Some(o.kind));
                        // The ARN's own region always passes; any other never.
                        assert!(check_arn_regions(&objects, a.region, None).is_ok());
                        let other = if a.region == "us-west-2" {
                            "us-east-1"
                        } else {
                            "us-west-2"
                        };
                        assert!(check_arn_regions(&objects, other, None).is_err());
                    }
                    None => {
                        assert!(!object_type.is_empty(), "a plain name needs an objectType");
                        let expected = if object_type.contains("ssm") {
                            ObjectKind::Ssm
                        } else {
                            ObjectKind::SecretsManager
                        };
                        assert_eq!(o.kind, expected);
                        assert!(check_arn_regions(&objects, "us-west-2", None).is_ok());
                    }
                }
            }
            Err(e) => check_message("arn", &e.to_string()),
        }
    }
});
