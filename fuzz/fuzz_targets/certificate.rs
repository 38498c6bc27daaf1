//! Certificate shaping (`certificateFormat`, ACM exports) of bytes a
//! tenant controls: the first byte picks the form (a PEM bundle without a
//! password, one with a password and ACM's chain order, a PKCS#12 file, an
//! encrypted PKCS#8 key), the rest is the value. Whatever is accepted is
//! made of certificate blocks and one PKCS#8 key; every error message is
//! bounded and never holds the value or the password.

#![no_main]

use csi_provider_aws::certificate::{Chain, decrypt_pem_key, from_pem, from_pkcs12};
use csi_provider_aws_fuzz::check_message;
use libfuzzer_sys::fuzz_target;

const PASSWORD: &[u8] = b"fuzz-pass-7f3a";

fuzz_target!(|data: &[u8]| {
    let Some((&form, value)) = data.split_first() else {
        return;
    };
    let result = match form % 4 {
        0 => from_pem(value, None, Chain::Ordered),
        1 => from_pem(value, Some(PASSWORD), Chain::Given),
        2 => from_pkcs12(value, PASSWORD),
        _ => match decrypt_pem_key(value, PASSWORD) {
            // A DER SEQUENCE: what PKCS#8 is.
            Ok(key) => {
                assert_eq!(key.first(), Some(&0x30));
                return;
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(files) => {
            let cert = std::str::from_utf8(files.cert.expose()).expect("PEM is text");
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----\n"), "{cert:?}");
            let key = files.key.expose();
            assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
            if let Some(ca) = files.ca {
                assert!(ca.expose().starts_with(b"-----BEGIN CERTIFICATE-----\n"));
            }
            assert!(files.serial.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
        }
        Err(e) => {
            let message = e.to_string();
            check_message("certificate", &message);
            assert!(!message.contains("fuzz-pass"), "{message:?}");
        }
    }
});
