//! A whole Mount request: NUL-separated attributes, secrets, target path,
//! permission and region, then one value per object. The request is
//! parsed, its regions checked against the region, and the objects
//! rendered against the values, as a mount does before it writes. Nothing
//! panics; errors are bounded and show neither the token nor a value;
//! whatever is accepted is within the limits and safe to write.

#![no_main]

use csi_provider_aws::fetched::Fetched;
use csi_provider_aws::limits::Limits;
use csi_provider_aws::render::render;
use csi_provider_aws::secret::SecretBytes;
use csi_provider_aws::spec::{arn, check_regions, parse_request};
use csi_provider_aws_fuzz::{
    TARGET_PATH, VALUE_CANARY, canary_elsewhere, check_message, check_no_token, check_safe_path, check_spec,
    on_small_stack,
};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8]) {
    let mut fields = data.split(|&b| b == 0);
    let mut text = |default: &'static str| fields.next().map(std::str::from_utf8).unwrap_or(Ok(default));
    let (Ok(attributes), Ok(secrets), Ok(target), Ok(permission), Ok(region)) = (
        text(""),
        text("null"),
        text(TARGET_PATH),
        text("420"),
        text("us-west-2"),
    ) else {
        return;
    };
    let values: Vec<&[u8]> = fields.collect();
    let limits = Limits::default();

    let result = parse_request(attributes, secrets, target, permission, &limits);
    if !canary_elsewhere(attributes, secrets, &[target, permission, region]) {
        check_no_token(&result);
    }
    let mut spec = match result {
        Ok(spec) => spec,
        Err(e) => return check_message("request", &e.to_string()),
    };
    check_spec(&spec, &limits);

    match check_regions(&spec, region.to_string()) {
        Ok(regions) => {
            assert_eq!(regions.primary, region);
            assert_ne!(regions.failover.as_deref(), Some(region));
            for o in &spec.objects {
                if let Some(a) = arn::parse(&o.name) {
                    assert_eq!(a.region, region);
                }
                if let (Some(f), Some(failover)) = (&o.failover, &regions.failover)
                    && let Some(a) = arn::parse(&f.name)
                {
                    assert_eq!(a.region, failover);
                }
            }
        }
        Err(e) => check_message("regions", &e.to_string()),
    }

    let value = |i: usize| Fetched {
        value: SecretBytes::from(
            values
                .get(i)
                .or(values.last())
                .map_or_else(|| format!("{{\"a\":\"{VALUE_CANARY}\"}}").into_bytes(), |v| v.to_vec()),
        ),
        version: format!("v{i}"),
        ..Default::default()
    };
    // An object that selects many gets two matches (one named like the
    // tenant's own text, which may make a bad file name).
    let fetched: Vec<Fetched> = spec
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| match &o.bulk {
            None => value(i),
            Some(_) => Fetched {
                members: vec![(format!("m{i}"), value(i)), (o.name.clone(), value(i))],
                ..value(i)
            },
        })
        .collect();
    // Files known only from values: their names are checked, not predicted.
    let dynamic = spec.objects.iter().any(|o| o.bulk.is_some() || o.json_keys);
    match render(&spec.objects, &mut spec.templates, fetched, &limits, None) {
        Ok(rendered) => {
            // Templates come last; their versions are digests.
            let expected: Vec<(&str, Option<String>)> = spec
                .objects
                .iter()
                .enumerate()
                .flat_map(|(i, o)| {
                    o.jmes
                        .iter()
                        .map(move |j| (j.file.as_str(), Some(format!("v{i}"))))
                        .chain(std::iter::once((o.file.as_str(), Some(format!("v{i}")))))
                })
                .chain(spec.templates.iter().map(|t| (t.file(), None)))
                .collect();
            assert_eq!(rendered.versions.len(), rendered.files.len());
            if !dynamic {
                assert_eq!(rendered.files.len(), expected.len());
            }
            let mut total = 0u64;
            for (n, (file, version)) in rendered.files.iter().zip(&rendered.versions).enumerate() {
                assert_eq!(version.id, file.path);
                if let (false, Some((path, v))) = (dynamic, expected.get(n)) {
                    assert_eq!(file.path, *path);
                    if let Some(v) = v {
                        assert_eq!(version.version, *v);
                    }
                }
                assert!(file.mode <= 0o777);
                assert!(file.contents.len() <= limits.max_file_bytes);
                check_safe_path(&file.path);
                total += file.contents.len() as u64;
            }
            assert_eq!(total, rendered.total_bytes);
            assert!(total <= limits.max_mount_bytes as u64);
        }
        Err(e) => {
            let message = e.to_string();
            check_message("render", &message);
            if !attributes.contains("canary-3c1d") {
                assert!(!message.contains("canary-3c1d"), "a value shows: {message:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    on_small_stack(run, data);
});
