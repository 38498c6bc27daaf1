//! File names: `PathTranslation::file_name` then `check_relative_path`
//! (every accepted path stays inside the mount), and region names
//! (`is_region_name`: whatever is accepted is safe in an endpoint host).

#![no_main]

use csi_provider_aws::region;
use csi_provider_aws::spec::PathTranslation;
use csi_provider_aws::spec::paths::check_relative_path;
use csi_provider_aws_fuzz::check_safe_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let first = name.chars().next().unwrap_or('_');
    for translation in [
        PathTranslation::default(),
        PathTranslation::Off,
        PathTranslation::Replace('/'),
        PathTranslation::Replace('.'),
        PathTranslation::Replace(first),
    ] {
        let file = translation.file_name(name);
        match translation {
            PathTranslation::Off => assert!(!file.starts_with('/')),
            PathTranslation::Replace(c) if c != '/' => assert!(!file.contains('/')),
            PathTranslation::Replace(_) => {}
        }
        if check_relative_path(&file).is_ok() {
            check_safe_path(&file);
        }
    }
    if check_relative_path(name).is_ok() {
        check_safe_path(name);
    }

    let ok = region::is_region_name(name);
    assert_eq!(ok, region::validate("region", name).is_ok());
    if ok {
        assert!(name.len() <= region::MAX_REGION_LEN);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert!(!name.starts_with('-') && !name.ends_with('-') && !name.contains("--"));
        assert!(name.as_bytes()[0].is_ascii_lowercase());
        assert!(name.as_bytes()[name.len() - 1].is_ascii_digit());
    }
});
