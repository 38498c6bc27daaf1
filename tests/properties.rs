//! Property tests of the parsers of untrusted input (the reference fuzzes
//! the same four: the objects list, file permissions, JSON extraction and
//! the mount attributes). Arbitrary input never panics, and whatever is
//! accepted satisfies the invariants the writer and the driver rely on.

use csi_provider_aws::fetched::Fetched;
use csi_provider_aws::limits::Limits;
use csi_provider_aws::render;
use csi_provider_aws::secret::SecretBytes;
use csi_provider_aws::spec::objects::{ObjectRules, parse_file_permission, parse_objects};
use csi_provider_aws::spec::parse_request;
use csi_provider_aws::spec::paths::{PathTranslation, check_relative_path};
use proptest::prelude::*;

fn rules(translation: PathTranslation) -> ObjectRules {
    ObjectRules {
        translation,
        default_mode: 0o644,
        has_failover_region: true,
        limits: Limits::default(),
    }
}

/// Object lists assembled from plausible and hostile pieces.
fn objects_yaml() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        "[a-zA-Z0-9/_.:-]{0,20}",
        Just("..".to_string()),
        Just("../x".to_string()),
        Just("/a//b".to_string()),
        Just("arn:aws:secretsmanager:us-west-2:1:secret:x".to_string()),
        Just("arn:aws:ssm:us-west-2:1:parameter/a/b".to_string()),
        Just("arn:bad".to_string()),
    ];
    let ty = prop_oneof![
        Just("secretsmanager"),
        Just("ssmparameter"),
        Just("ssm"),
        Just(""),
        Just("other")
    ];
    let perm = prop_oneof![
        Just("\"0644\""),
        Just("0600"),
        Just("\"4755\""),
        Just("\"x\""),
        Just("[]")
    ];
    let entry = (
        name.clone(),
        ty,
        proptest::option::of(name.clone()),
        perm,
        proptest::option::of(name),
    )
        .prop_map(|(n, t, alias, perm, jmes_alias)| {
            let mut s = format!("- objectName: \"{n}\"\n  objectType: \"{t}\"\n  filePermission: {perm}\n");
            if let Some(a) = alias {
                s.push_str(&format!("  objectAlias: \"{a}\"\n"));
            }
            if let Some(j) = jmes_alias {
                s.push_str(&format!("  jmesPath:\n    - path: a.b\n      objectAlias: \"{j}\"\n"));
            }
            s
        });
    proptest::collection::vec(entry, 0..6).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn objects_lists_never_panic_and_accepted_names_are_safe(yaml in objects_yaml(), off in any::<bool>()) {
        let translation = if off { PathTranslation::Off } else { PathTranslation::default() };
        if let Ok(objects) = parse_objects(&yaml, &rules(translation)) {
            let mut files = std::collections::HashSet::new();
            for o in &objects {
                prop_assert!(check_relative_path(&o.file).is_ok(), "{}", o.file);
                prop_assert!(o.mode <= 0o777);
                prop_assert!(files.insert(o.file.clone()), "duplicate {}", o.file);
                for j in &o.jmes {
                    prop_assert!(check_relative_path(&j.file).is_ok(), "{}", j.file);
                    prop_assert!(files.insert(j.file.clone()), "duplicate {}", j.file);
                }
            }
        }
    }

    #[test]
    fn arbitrary_objects_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_objects(&text, &rules(PathTranslation::default()));
    }

    #[test]
    fn file_permissions_accept_only_plain_octal_modes(p in "\\PC{0,6}") {
        if let Ok(mode) = parse_file_permission(&p) {
            prop_assert!(mode <= 0o777);
            prop_assert_eq!(p.len(), 4);
            prop_assert_eq!(format!("{mode:04o}"), p);
        }
    }

    #[test]
    fn jmes_extraction_never_panics(json in "\\PC{0,80}", path in "[a-z.\\[\\]0-9\"*|&@-]{1,12}") {
        let yaml = format!("- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: '{}'\n      objectAlias: out\n", path.replace('\'', "''"));
        if let Ok(objects) = parse_objects(&yaml, &rules(PathTranslation::default())) {
            let fetched = vec![Fetched { value: SecretBytes::from(json), version: "v".into(), ..Default::default() }];
            if let Ok(r) = render::render(&objects, &mut [], fetched, &Limits::default(), None) {
                prop_assert_eq!(r.files.len(), 2);
                prop_assert_eq!(r.versions.len(), 2);
            }
        }
    }

    #[test]
    fn mount_attributes_never_panic(attrs in "\\PC{0,120}", secrets in "\\PC{0,20}", perm in "\\PC{0,6}") {
        let _ = parse_request(&attrs, &secrets, "/t", &perm, &Limits::default());
    }

    #[test]
    fn attribute_maps_with_hostile_values_never_panic(
        keys in proptest::collection::vec(prop_oneof![
            Just("objects"), Just("region"), Just("failoverRegion"), Just("pathTranslation"),
            Just("usePodIdentity"), Just("preferredAddressType"),
            Just("csi.storage.k8s.io/serviceAccount.tokens")], 0..7),
        values in proptest::collection::vec("\\PC{0,30}", 7),
    ) {
        let map: std::collections::HashMap<&str, &String> = keys.iter().copied().zip(values.iter()).collect();
        let attrs = serde_json::to_string(&map).unwrap();
        let _ = parse_request(&attrs, "null", "/t", "420", &Limits::default());
    }
}
