//! ACM: a certificate with its chain and private key, by
//! `ExportCertificate` with a passphrase made for that one call (by a
//! CSPRNG: rand's thread-local ChaCha, seeded by the operating system), the
//! returned PKCS#8 key decrypted here, in memory. The value handed to rendering is a PEM bundle of the
//! certificate, its chain and the unencrypted key; its version is the
//! certificate's serial number, which changes when ACM renews or replaces
//! it.
//!
//! An export kept for this identity (the value cache, within
//! `--acm-export-max-age`) is served again when `DescribeCertificate`, made
//! with the same identity, reports the same serial: an unchanged
//! certificate is not exported on every republish. An identity denied
//! `DescribeCertificate` exports every time.

use aws_sdk_acm::primitives::Blob;
use rand::Rng;
use zeroize::Zeroizing;

use super::{FetchError, Fetched, UnitContext, all_regions};
use crate::aws::{AwsError, no_client};
use crate::certificate::{self, CertificateError};
use crate::failure::Failure;
use crate::fetched::Origin;
use crate::region::with_failover;
use crate::spec::ObjectSpec;

/// Characters of a passphrase: ACM takes any ASCII but `#`, `$` and `%`.
const PASSPHRASE_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Characters of a passphrase: 190 bits (ACM takes 4 to 128).
const PASSPHRASE_LENGTH: usize = 32;

/// What a unit asks of ACM for one object: the export kept for this
/// identity, if any, to serve again when the certificate is unchanged.
pub(crate) struct Kept {
    pub value: Fetched,
    /// Whether `DescribeCertificate` may be asked (the identity was not
    /// denied it lately).
    pub describe: bool,
}

/// How one ACM object was read.
pub(crate) enum Read {
    /// Exported now.
    Exported(Fetched),
    /// The kept export, the certificate unchanged.
    Unchanged(Fetched),
    /// Exported now: `DescribeCertificate` was denied to this identity.
    DescribeDenied(Fetched),
}

/// One ACM object, failing over on a retryable error.
pub(crate) async fn fetch(ctx: &UnitContext, object: &ObjectSpec, kept: Option<&Kept>) -> Result<Read, FetchError> {
    let result = with_failover(&ctx.regions, FetchError::failure, |region, failover| {
        let arn = match (&object.failover, failover) {
            (Some(f), true) => f.name.as_str(),
            _ => object.name.as_str(),
        };
        read(ctx, region, arn, kept)
    })
    .await;
    all_regions(result, |primary, failover| FetchError::CertificateAllRegions {
        arn: object.name.clone(),
        primary,
        failover,
    })
}

async fn read(ctx: &UnitContext, region: &str, arn: &str, kept: Option<&Kept>) -> Result<Read, FetchError> {
    let mut denied = false;
    if let Some(kept) = kept.filter(|k| k.describe) {
        match describe(ctx, region, arn).await {
            Ok(Some(serial)) if same_serial(&serial, &kept.value.version) => {
                return Ok(Read::Unchanged(kept.value.clone()));
            }
            Ok(_) => {}
            Err(FetchError::Certificate { error, .. }) if error.failure == Failure::AccessDenied => denied = true,
            Err(e) => return Err(e),
        }
    }
    let value = export(ctx, region, arn).await?;
    Ok(if denied {
        Read::DescribeDenied(value)
    } else {
        Read::Exported(value)
    })
}

/// The error of a failed call of `action` for certificate `arn`.
fn failed<'a>(arn: &'a str, region: &'a str, action: &'static str) -> impl Fn(AwsError) -> FetchError + 'a {
    move |error| FetchError::Certificate {
        arn: arn.to_string(),
        region: region.to_string(),
        action,
        error,
    }
}

/// The certificate's serial number as `DescribeCertificate` reports it.
async fn describe(ctx: &UnitContext, region: &str, arn: &str) -> Result<Option<String>, FetchError> {
    let err = failed(arn, region, "acm:DescribeCertificate");
    let client = ctx.aws.acm(region).ok_or_else(|| err(no_client(region)))?;
    let (out, _responses) = ctx
        .call("acm.DescribeCertificate", ctx.retries_throttled_in(region), |charge| {
            client
                .describe_certificate()
                .certificate_arn(arn)
                .customize()
                .config_override(ctx.creds.for_acm())
                .interceptor(charge)
                .send()
        })
        .await
        .map_err(|e| e.into_fetch(err))?;
    Ok(out.certificate.and_then(|c| c.serial))
}

/// `ExportCertificate` with a new passphrase, the key decrypted.
async fn export(ctx: &UnitContext, region: &str, arn: &str) -> Result<Fetched, FetchError> {
    let err = failed(arn, region, "acm:ExportCertificate");
    let client = ctx.aws.acm(region).ok_or_else(|| err(no_client(region)))?;
    let passphrase = passphrase();
    let (mut out, responses) = ctx
        .call("acm.ExportCertificate", ctx.retries_throttled_in(region), |charge| {
            client
                .export_certificate()
                .certificate_arn(arn)
                .passphrase(Blob::new(passphrase.as_slice()))
                .customize()
                .config_override(ctx.creds.for_acm())
                .interceptor(charge)
                .send()
        })
        .await
        .map_err(|e| e.into_fetch(err))?;
    let key = Zeroizing::new(out.private_key.take().unwrap_or_default());
    let unusable = |problem: CertificateError| FetchError::CertificateUnusable {
        arn: arn.to_string(),
        region: region.to_string(),
        problem,
    };
    let key_der = certificate::decrypt_pem_key(key.as_bytes(), &passphrase).map_err(unusable)?;
    drop(key);
    let key_pem = certificate::key_pem(&key_der).map_err(unusable)?;
    drop(key_der);
    let cert = out.certificate.take().unwrap_or_default();
    let chain = out.certificate_chain.take().unwrap_or_default();
    let mut bundle = Vec::with_capacity(cert.len() + chain.len() + key_pem.len() + 2);
    for part in [cert.as_bytes(), b"\n", chain.as_bytes(), b"\n", key_pem.expose()] {
        bundle.extend_from_slice(part);
    }
    drop(key_pem);
    drop(responses);
    let value = ctx.value(bundle).await?;
    // The bundle is checked now (the key belongs to the certificate), and
    // its version is the certificate's serial.
    let shaped = certificate::from_pem(value.expose(), None, certificate::Chain::Given).map_err(unusable)?;
    Ok(Fetched {
        value,
        version: shaped.serial,
        origin: Origin::aws(arn, region),
        ..Default::default()
    })
}

/// A passphrase for one export, zeroized when dropped.
fn passphrase() -> Zeroizing<Vec<u8>> {
    let mut rng = rand::rng();
    Zeroizing::new(
        (0..PASSPHRASE_LENGTH)
            .map(|_| PASSPHRASE_ALPHABET[rng.random_range(0..PASSPHRASE_ALPHABET.len())])
            .collect(),
    )
}

/// Whether the serial `DescribeCertificate` reports (colon-separated hex,
/// or a decimal number as some implementations give it) is `kept`'s
/// (colon-separated hex of the certificate's bytes).
pub(crate) fn same_serial(reported: &str, kept: &str) -> bool {
    let Some(kept) = hex_bytes(kept) else { return false };
    hex_bytes(reported).is_some_and(|r| r == kept) || decimal_bytes(reported).is_some_and(|r| r == kept)
}

/// The bytes of colon-separated (or plain) hex, without leading zeros.
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if digits.is_empty() || digits.len() > 128 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let padded: Vec<u8> = if digits.len() % 2 == 1 {
        std::iter::once(b'0').chain(digits).collect()
    } else {
        digits
    };
    let bytes: Vec<u8> = padded
        .chunks(2)
        .map(|pair| {
            let value = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
            value(pair[0]) << 4 | value(pair[1])
        })
        .collect();
    Some(strip_zeros(bytes))
}

/// The big-endian bytes of a decimal number, without leading zeros.
fn decimal_bytes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > 160 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut bytes: Vec<u8> = vec![0];
    for d in s.bytes() {
        let mut carry = u32::from(d - b'0');
        for b in bytes.iter_mut().rev() {
            let v = u32::from(*b) * 10 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    Some(strip_zeros(bytes))
}

fn strip_zeros(bytes: Vec<u8>) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_as_numbers_whatever_their_notation() {
        let hex = "0e:6c:4f:01";
        assert!(same_serial("0e:6c:4f:01", hex));
        assert!(same_serial("E:6C:4F:01", hex));
        // 0x0e6c4f01 in decimal, as moto reports it.
        assert!(same_serial("241979137", hex));
        assert!(!same_serial("241979138", hex));
        assert!(!same_serial("0e:6c:4f:02", hex));
        assert!(!same_serial("", hex));
        assert!(!same_serial("not a serial", hex));
        // A 20-byte serial, the most RFC 5280 allows.
        let long = "7f:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff";
        assert!(same_serial("730750818665451459101842416358141509827966271487", long));
    }

    #[test]
    fn passphrases_are_new_each_time_and_within_what_acm_takes() {
        let a = passphrase();
        let b = passphrase();
        assert_ne!(*a, *b);
        for p in [&a, &b] {
            assert_eq!(p.len(), PASSPHRASE_LENGTH);
            assert!(p.iter().all(|c| c.is_ascii_alphanumeric()));
        }
    }
}
