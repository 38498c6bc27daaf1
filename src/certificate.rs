//! Certificates with their private keys: a PEM bundle, a PKCS#12 file or
//! an ACM export, shaped into the files of a Kubernetes TLS Secret —
//! `tls.crt` (the leaf, then its intermediates, in chain order), `tls.key`
//! (the private key, unencrypted PKCS#8 PEM) and `ca.crt` (the root). The
//! chain is ordered by issuer, whatever order the input had; a key that
//! does not belong to a certificate of the input, or a certificate that is
//! not part of the leaf's chain, is an error.
//!
//! Pure (no I/O). Every buffer that holds key material is zeroized when
//! dropped; errors never include a key, a password or a certificate's
//! content. Password-based key derivation is bounded
//! ([`MAX_KDF_ITERATIONS`], [`MAX_SCRYPT_WORK`]) so that a hostile file
//! cannot hold a CPU for minutes.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use pkcs8::pkcs5::{self, pbes2};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// The file of the leaf certificate and its intermediates.
pub const CERT_FILE: &str = "tls.crt";
/// The file of the private key.
pub const KEY_FILE: &str = "tls.key";
/// The file of the root (or topmost) certificate of the chain.
pub const CA_FILE: &str = "ca.crt";

/// The most PBKDF2 iterations an encrypted key (PKCS#8, PKCS#12) may ask
/// for: about a second of one core. The PKCS#12 reader applies the same
/// bound to its MAC and its PBES1/PBES2 key derivations.
pub const MAX_KDF_ITERATIONS: u32 = 1_000_000;
/// The most scrypt work (`N × r × p`) an encrypted PKCS#8 key may ask for:
/// its memory is 128 bytes per unit of `N × r`, so 64 MiB at most.
pub const MAX_SCRYPT_WORK: u64 = 1 << 19;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Bytes shaping may hold per byte of its input: the decoded blocks, the
/// parsed certificates, and the PEM files made of them.
pub const WORK_FACTOR: u64 = 6;

/// `certificateFormat`: how a value holds a certificate and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// PEM blocks: certificates (any order) and one private key (PKCS#8,
    /// encrypted PKCS#8, PKCS#1 RSA or SEC1 EC).
    Pem,
    /// A PKCS#12 (PFX) file: DER, from a binary secret or decoded by
    /// `objectEncoding`.
    Pkcs12,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pem" => Some(Format::Pem),
            "pkcs12" => Some(Format::Pkcs12),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pem => "pem",
            Format::Pkcs12 => "pkcs12",
        }
    }
}

/// How the certificates of an input make the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// Ordered by issuer from the leaf, whatever order the input had; a
    /// certificate that is not part of the leaf's chain is an error (a
    /// bundle a user made).
    Ordered,
    /// The leaf, then the others in the order given (an ACM export: ACM
    /// states the chain).
    Given,
}

/// Why a value could not be shaped into certificate files. Never holds key
/// material or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("it holds no certificate")]
    NoCertificate,
    #[error("it holds no private key")]
    NoKey,
    #[error("it holds {0} private keys, and one is expected")]
    SeveralKeys(usize),
    #[error("PEM block {0} is malformed")]
    Pem(usize),
    #[error(
        "PEM block {0} is a key encrypted the legacy OpenSSL way (Proc-Type header); convert it to PKCS#8 (openssl pkcs8 -topk8)"
    )]
    LegacyEncryption(usize),
    #[error("PEM block {position} is a {label:?}, which is neither a certificate nor a private key")]
    UnknownBlock { position: usize, label: String },
    #[error("certificate {0} is not a valid X.509 certificate")]
    BadCertificate(usize),
    #[error("the private key is not a valid {0} key")]
    BadKey(&'static str),
    #[error("the private key's algorithm is not supported (RSA, ECDSA on P-256, P-384 or P-521, and Ed25519 are)")]
    UnsupportedKey,
    #[error("the private key is encrypted: certificatePasswordFile names the file that holds its password")]
    Encrypted,
    #[error("the password does not decrypt it{}", if *.trailing_newline { " (the password ends with a newline, which is part of it)" } else { "" })]
    WrongPassword { trailing_newline: bool },
    #[error("its key derivation asks for {found} iterations, more than the {max} allowed")]
    TooManyIterations { found: u64, max: u64 },
    #[error("its encryption ({0}) is not supported: PBES2 with PBKDF2 or scrypt, and AES-CBC or 3DES-CBC, are")]
    UnsupportedEncryption(&'static str),
    #[error("the private key does not match any certificate in it")]
    KeyMismatch,
    #[error(
        "certificate {0} is not part of the chain of the certificate the key belongs to (the chain is ordered by issuer)"
    )]
    Unrelated(usize),
    #[error("it is not a valid PKCS#12 file")]
    Pkcs12,
}

/// The files of one certificate: `tls.crt`, `tls.key` and, when the input
/// has a chain (or the leaf is self-signed), `ca.crt`; and the leaf's
/// serial number (lowercase hex bytes separated by colons, as ACM shows it).
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: SecretBytes,
    pub key: SecretBytes,
    pub ca: Option<SecretBytes>,
    pub serial: String,
}

/// A private key as PKCS#8 DER, zeroized when dropped.
pub type KeyDer = Zeroizing<Vec<u8>>;

/// Shapes a PEM bundle: its certificates (any order) and its one private
/// key; `password` decrypts an encrypted PKCS#8 key.
pub fn from_pem(bundle: &[u8], password: Option<&[u8]>, chain: Chain) -> Result<CertificateFiles, CertificateError> {
    let mut certificates = Vec::new();
    let mut keys: Vec<KeyDer> = Vec::new();
    let mut key_blocks = 0usize;
    for (position, block) in pem_blocks(bundle).enumerate() {
        let position = position + 1;
        let label = pem_rfc7468::decode_label(block).map_err(|_| {
            if contains(block, b"Proc-Type:") {
                CertificateError::LegacyEncryption(position)
            } else {
                CertificateError::Pem(position)
            }
        })?;
        // Large enough for the decoded block, zeroized whatever it holds.
        let mut buf = Zeroizing::new(vec![0u8; block.len()]);
        let (_, der) = pem_rfc7468::decode(block, &mut buf).map_err(|_| {
            if contains(block, b"Proc-Type:") {
                CertificateError::LegacyEncryption(position)
            } else {
                CertificateError::Pem(position)
            }
        })?;
        match label {
            "CERTIFICATE" => certificates.push(der.to_vec()),
            "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                key_blocks += 1;
                if key_blocks == 1 {
                    keys.push(key_from_block(label, der, password)?);
                }
            }
            other => {
                return Err(CertificateError::UnknownBlock {
                    position,
                    label: other.chars().take(64).collect(),
                });
            }
        }
    }
    if key_blocks > 1 {
        return Err(CertificateError::SeveralKeys(key_blocks));
    }
    let key = keys.pop().ok_or(CertificateError::NoKey)?;
    shape(certificates, key, chain)
}

/// Shapes a PKCS#12 file: its one private key and its certificates.
pub fn from_pkcs12(der: &[u8], password: &[u8]) -> Result<CertificateFiles, CertificateError> {
    let trailing_newline = password.last() == Some(&b'\n');
    let password = std::str::from_utf8(password).map_err(|_| CertificateError::WrongPassword { trailing_newline })?;
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
            CertificateError::WrongPassword { trailing_newline }
        }
        p12_keystore::error::Error::InvalidParameters => CertificateError::TooManyIterations {
            found: u64::from(MAX_KDF_ITERATIONS) + 1,
            max: u64::from(MAX_KDF_ITERATIONS),
        },
        p12_keystore::error::Error::UnsupportedEncryptionScheme => {
            CertificateError::UnsupportedEncryption("an encryption scheme of PKCS#12")
        }
        _ => CertificateError::Pkcs12,
    })?;
    let mut keys = archive.keys.into_iter();
    let key = match (keys.next(), keys.len()) {
        (None, _) => return Err(CertificateError::NoKey),
        (Some(k), 0) => Zeroizing::new(k.key.as_der().to_vec()),
        (Some(_), more) => return Err(CertificateError::SeveralKeys(more + 1)),
    };
    let certificates = archive.certs.into_iter().map(|c| c.cert.as_der().to_vec()).collect();
    shape(certificates, key, Chain::Ordered)
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` PEM (as ACM exports a key) into
/// PKCS#8 DER.
pub fn decrypt_pem_key(pem: &[u8], password: &[u8]) -> Result<KeyDer, CertificateError> {
    let mut buf = Zeroizing::new(vec![0u8; pem.len()]);
    let (label, der) = pem_rfc7468::decode(pem, &mut buf).map_err(|_| CertificateError::Pem(1))?;
    key_from_block(label, der, Some(password))
}

/// The PKCS#8 DER of one PEM key block, decrypted or converted.
fn key_from_block(label: &str, der: &[u8], password: Option<&[u8]>) -> Result<KeyDer, CertificateError> {
    match label {
        "PRIVATE KEY" => {
            pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|_| CertificateError::BadKey("PKCS#8"))?;
            Ok(Zeroizing::new(der.to_vec()))
        }
        "ENCRYPTED PRIVATE KEY" => {
            let password = password.ok_or(CertificateError::Encrypted)?;
            decrypt_pkcs8(der, password)
        }
        "RSA PRIVATE KEY" => wrap(OID_RSA, None, der),
        _ => {
            // SEC1: the curve is in the key's parameters.
            let sec1 = sec1::EcPrivateKey::from_der(der).map_err(|_| CertificateError::BadKey("SEC1 EC"))?;
            let curve = sec1
                .parameters
                .and_then(|p| p.named_curve())
                .ok_or(CertificateError::BadKey("SEC1 EC (no named curve)"))?;
            wrap(OID_EC, Some(curve), der)
        }
    }
}

/// A PKCS#1 or SEC1 key wrapped as PKCS#8 (`PrivateKeyInfo` of version 1).
fn wrap(algorithm: ObjectIdentifier, curve: Option<ObjectIdentifier>, key: &[u8]) -> Result<KeyDer, CertificateError> {
    let parameters = match curve {
        Some(c) => Some(der::Any::from(&c)),
        // rsaEncryption's parameters are NULL.
        None => Some(der::Any::from(der::asn1::Null)),
    };
    let info = pkcs8::PrivateKeyInfoRef {
        algorithm: spki::AlgorithmIdentifier {
            oid: algorithm,
            parameters: parameters.as_ref().map(Into::into),
        },
        private_key: der::asn1::OctetStringRef::new(key).map_err(|_| CertificateError::BadKey("PKCS#8"))?,
        public_key: None,
    };
    let mut out = Zeroizing::new(Vec::new());
    info.encode_to_vec(&mut out)
        .map_err(|_| CertificateError::BadKey("PKCS#8"))?;
    Ok(out)
}

/// Decrypts an `EncryptedPrivateKeyInfo`, its key derivation bounded first.
fn decrypt_pkcs8(der: &[u8], password: &[u8]) -> Result<KeyDer, CertificateError> {
    let info =
        pkcs8::EncryptedPrivateKeyInfoRef::try_from(der).map_err(|_| CertificateError::BadKey("encrypted PKCS#8"))?;
    let params = match &info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(p) => p,
        _ => return Err(CertificateError::UnsupportedEncryption("PBES1")),
    };
    match &params.kdf {
        pbes2::Kdf::Pbkdf2(p) if p.iteration_count > MAX_KDF_ITERATIONS => {
            return Err(CertificateError::TooManyIterations {
                found: u64::from(p.iteration_count),
                max: u64::from(MAX_KDF_ITERATIONS),
            });
        }
        pbes2::Kdf::Scrypt(s) => {
            let work = s
                .cost_parameter
                .saturating_mul(u64::from(s.block_size))
                .saturating_mul(u64::from(s.parallelization));
            if work > MAX_SCRYPT_WORK {
                return Err(CertificateError::TooManyIterations {
                    found: work,
                    max: MAX_SCRYPT_WORK,
                });
            }
        }
        _ => {}
    }
    let trailing_newline = password.last() == Some(&b'\n');
    let document = info.decrypt(password).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(pkcs5::Error::UnsupportedAlgorithm { .. }) => {
            CertificateError::UnsupportedEncryption("its cipher or key derivation")
        }
        _ => CertificateError::WrongPassword { trailing_newline },
    })?;
    let key = Zeroizing::new(document.as_bytes().to_vec());
    // A wrong password may still unpad: what it gives is then no key.
    pkcs8::PrivateKeyInfoRef::try_from(key.as_slice())
        .map_err(|_| CertificateError::WrongPassword { trailing_newline })?;
    Ok(key)
}

/// The leaf (the certificate of the key), its chain ordered by issuer, and
/// the files made of them.
fn shape(certificates: Vec<Vec<u8>>, key: KeyDer, chain: Chain) -> Result<CertificateFiles, CertificateError> {
    if certificates.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let parsed: Vec<Certificate> = certificates
        .iter()
        .enumerate()
        .map(|(i, der)| Certificate::from_der(der).map_err(|_| CertificateError::BadCertificate(i + 1)))
        .collect::<Result<_, _>>()?;
    let public = public_key(&key)?;
    let leaf = parsed
        .iter()
        .position(|c| {
            c.tbs_certificate()
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes()
                == public.as_slice()
        })
        .ok_or(CertificateError::KeyMismatch)?;

    // Leaf → issuer → … while an unused certificate is the issuer of the
    // last one (a self-signed certificate ends the chain); or the leaf and
    // the others as given.
    let mut order = vec![leaf];
    match chain {
        Chain::Given => order.extend((0..parsed.len()).filter(|&i| i != leaf)),
        Chain::Ordered => {
            while let Some(&last) = order.last() {
                let tbs = parsed[last].tbs_certificate();
                if tbs.issuer() == tbs.subject() {
                    break;
                }
                let issuer = (0..parsed.len())
                    .find(|&i| !order.contains(&i) && parsed[i].tbs_certificate().subject() == tbs.issuer());
                match issuer {
                    Some(next) => order.push(next),
                    None => break,
                }
            }
        }
    }
    if let Some(unrelated) = (0..parsed.len()).find(|i| !order.contains(i)) {
        return Err(CertificateError::Unrelated(unrelated + 1));
    }
    let self_signed = |i: usize| {
        let tbs = parsed[i].tbs_certificate();
        tbs.issuer() == tbs.subject()
    };
    // tls.crt: the leaf and the intermediates, never a self-signed root
    // (a server does not send it), unless the leaf is that root. ca.crt:
    // the root, else the topmost certificate of the input's chain.
    let top = order.len() - 1;
    let in_cert: &[usize] = if top > 0 && self_signed(order[top]) {
        &order[..top]
    } else {
        &order
    };
    let ca = (top > 0 || self_signed(leaf)).then(|| order[top]);

    let serial = parsed[leaf]
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let pem_of = |indices: &[usize]| -> Result<SecretBytes, CertificateError> {
        let mut out = Vec::new();
        for &i in indices {
            let block = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &certificates[i])
                .map_err(|_| CertificateError::BadCertificate(i + 1))?;
            out.extend_from_slice(block.as_bytes());
        }
        Ok(SecretBytes::new(out))
    };
    Ok(CertificateFiles {
        cert: pem_of(in_cert)?,
        key: key_pem(&key)?,
        ca: ca.map(|i| pem_of(&[i])).transpose()?,
        serial,
    })
}

/// The `PRIVATE KEY` PEM of a PKCS#8 key, encoded into a buffer that is
/// zeroized when its last holder drops it.
pub fn key_pem(key: &[u8]) -> Result<SecretBytes, CertificateError> {
    let label = "PRIVATE KEY";
    let line_ending = pem_rfc7468::LineEnding::LF;
    let len = pem_rfc7468::encoded_len(label, line_ending, key).map_err(|_| CertificateError::BadKey("PKCS#8"))?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let written = pem_rfc7468::encode(label, line_ending, key, &mut buf)
        .map_err(|_| CertificateError::BadKey("PKCS#8"))?
        .len();
    buf.truncate(written);
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

/// The public key of a PKCS#8 private key, as a certificate's
/// `subjectPublicKey` holds it (the key pair is checked as it is parsed).
fn public_key(pkcs8: &[u8]) -> Result<Vec<u8>, CertificateError> {
    use aws_lc_rs::signature::{self, KeyPair};
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8).map_err(|_| CertificateError::BadKey("PKCS#8"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        let pair = signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| CertificateError::BadKey("RSA"))?;
        return Ok(pair.public_key().as_ref().to_vec());
    }
    if oid == OID_ED25519 {
        let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| CertificateError::BadKey("Ed25519"))?;
        return Ok(pair.public_key().as_ref().to_vec());
    }
    if oid != OID_EC {
        return Err(CertificateError::UnsupportedKey);
    }
    let curve = info
        .algorithm
        .parameters
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or(CertificateError::BadKey("EC (no named curve)"))?;
    let algorithm = match curve {
        c if c == OID_P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        c if c == OID_P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        c if c == OID_P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => return Err(CertificateError::UnsupportedKey),
    };
    let pair = signature::EcdsaKeyPair::from_pkcs8(algorithm, pkcs8).map_err(|_| CertificateError::BadKey("EC"))?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// The PEM blocks of `text`, each from its `-----BEGIN ` line to the end of
/// its `-----END …-----` line; text between blocks is skipped.
fn pem_blocks(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = find(rest, BEGIN)?;
        let from_end = find(&rest[start..], END).map(|e| start + e);
        let block_end = match from_end {
            // The END line's closing dashes.
            Some(e) => {
                let after = e + END.len();
                match find(&rest[after..], b"-----") {
                    Some(d) => after + d + 5,
                    None => rest.len(),
                }
            }
            None => rest.len(),
        };
        let block = &rest[start..block_end];
        rest = &rest[block_end..];
        Some(block)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};

    /// A chain root → intermediate → leaf, each with a key of `alg`, and
    /// the leaf's key as PKCS#8 DER.
    pub(crate) struct Issued {
        pub root: rcgen::Certificate,
        pub intermediate: rcgen::Certificate,
        pub leaf: rcgen::Certificate,
        pub key: Vec<u8>,
    }

    fn named(name: &str, ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(if ca { Vec::new() } else { vec![name.to_string()] }).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    pub(crate) fn chain(alg: &'static rcgen::SignatureAlgorithm) -> Issued {
        let root_key = KeyPair::generate_for(alg).unwrap();
        let root_params = named("Test Root CA", true);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let intermediate_key = KeyPair::generate_for(alg).unwrap();
        let intermediate_params = named("Test Intermediate CA", true);
        let intermediate = intermediate_params.signed_by(&intermediate_key, &root_issuer).unwrap();
        let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);
        let leaf_key = KeyPair::generate_for(alg).unwrap();
        let leaf = named("app.example.com", false)
            .signed_by(&leaf_key, &intermediate_issuer)
            .unwrap();
        Issued {
            root,
            intermediate,
            leaf,
            key: leaf_key.serialize_der(),
        }
    }

    fn pem(label: &str, der: &[u8]) -> String {
        pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap()
    }

    /// The DER of each PEM block of `text`, with its label.
    fn blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
        pem_blocks(text)
            .map(|b| {
                let (label, der) = pem_rfc7468::decode_vec(b).unwrap();
                (label.to_string(), der)
            })
            .collect()
    }

    fn certs(files: &[u8]) -> Vec<Vec<u8>> {
        blocks(files)
            .into_iter()
            .map(|(label, der)| {
                assert_eq!(label, "CERTIFICATE");
                der
            })
            .collect()
    }

    fn serial_of(cert: &rcgen::Certificate) -> String {
        let c = Certificate::from_der(cert.der()).unwrap();
        let bytes = c.tbs_certificate().serial_number().as_bytes().to_vec();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    }

    /// Whatever order a bundle has, tls.crt is the leaf then the
    /// intermediate, ca.crt the root, tls.key the leaf's key (PKCS#8), for
    /// every kind of key ACM issues.
    #[test]
    fn a_bundle_in_any_order_is_shaped_leaf_first_for_every_key_kind() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let c = chain(alg);
            let bundle = format!(
                "{}\nsome text between blocks\n{}{}{}",
                c.root.pem(),
                pem("PRIVATE KEY", &c.key),
                c.leaf.pem(),
                c.intermediate.pem()
            );
            let files = from_pem(bundle.as_bytes(), None, Chain::Ordered).unwrap();
            assert_eq!(
                certs(files.cert.expose()),
                vec![c.leaf.der().to_vec(), c.intermediate.der().to_vec()],
                "{alg:?}"
            );
            assert_eq!(certs(files.ca.unwrap().expose()), vec![c.root.der().to_vec()]);
            assert_eq!(
                blocks(files.key.expose()),
                vec![("PRIVATE KEY".to_string(), c.key.clone())]
            );
            assert_eq!(files.serial, serial_of(&c.leaf));
        }
    }

    #[test]
    fn a_leaf_alone_has_no_ca_file_and_a_self_signed_one_is_its_own_ca() {
        let c = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        let alone = format!("{}{}", c.leaf.pem(), pem("PRIVATE KEY", &c.key));
        let files = from_pem(alone.as_bytes(), None, Chain::Ordered).unwrap();
        assert_eq!(certs(files.cert.expose()), vec![c.leaf.der().to_vec()]);
        assert!(files.ca.is_none());

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let own = named("self.example.com", false).self_signed(&key).unwrap();
        let bundle = format!("{}{}", own.pem(), key.serialize_pem());
        let files = from_pem(bundle.as_bytes(), None, Chain::Ordered).unwrap();
        assert_eq!(certs(files.cert.expose()), vec![own.der().to_vec()]);
        assert_eq!(certs(files.ca.unwrap().expose()), vec![own.der().to_vec()]);
    }

    #[test]
    fn what_does_not_form_one_chain_with_one_key_is_refused_naming_the_rule() {
        let c = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = pem("PRIVATE KEY", &c.key);
        let shape = |s: String| from_pem(s.as_bytes(), None, Chain::Ordered).map(|_| ()).unwrap_err();
        assert_eq!(shape(c.leaf.pem()), CertificateError::NoKey);
        assert_eq!(shape(key.clone()), CertificateError::NoCertificate);
        assert_eq!(
            shape(format!("{}{}{}", c.leaf.pem(), key, pem("PRIVATE KEY", &other.key))),
            CertificateError::SeveralKeys(2)
        );
        // The key of another certificate.
        assert_eq!(
            shape(format!("{}{}", other.leaf.pem(), key)),
            CertificateError::KeyMismatch
        );
        // A certificate of another chain, third in the input.
        assert_eq!(
            shape(format!("{}{}{}", c.leaf.pem(), key, other.root.pem())),
            CertificateError::Unrelated(2)
        );
        assert_eq!(
            shape(format!(
                "{}-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                c.leaf.pem()
            )),
            CertificateError::UnknownBlock {
                position: 2,
                label: "PUBLIC KEY".to_string()
            }
        );
        assert_eq!(
            shape(format!(
                "{}-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                key
            )),
            CertificateError::Pem(2)
        );
        assert_eq!(
            shape(format!(
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n{}",
                c.leaf.pem()
            )),
            CertificateError::LegacyEncryption(1)
        );
        assert_eq!(
            shape(format!("{}{}", pem("CERTIFICATE", b"not der"), key)),
            CertificateError::BadCertificate(1)
        );
    }

    /// PKCS#1 RSA and SEC1 EC keys come out as PKCS#8 of the same key.
    #[test]
    fn pkcs1_and_sec1_keys_are_converted_to_pkcs8() {
        let rsa = chain(&rcgen::PKCS_RSA_SHA256);
        let inner = pkcs8::PrivateKeyInfoRef::try_from(rsa.key.as_slice())
            .unwrap()
            .private_key
            .as_bytes()
            .to_vec();
        let bundle = format!("{}{}", rsa.leaf.pem(), pem("RSA PRIVATE KEY", &inner));
        let files = from_pem(bundle.as_bytes(), None, Chain::Ordered).unwrap();
        let (_, key) = blocks(files.key.expose()).remove(0);
        assert_eq!(public_key(&key).unwrap(), public_key(&rsa.key).unwrap());

        let ec = chain(&rcgen::PKCS_ECDSA_P384_SHA384);
        let info = pkcs8::PrivateKeyInfoRef::try_from(ec.key.as_slice()).unwrap();
        let mut sec1 = sec1::EcPrivateKey::from_der(info.private_key.as_bytes()).unwrap();
        sec1.parameters = Some(sec1::EcParameters::NamedCurve(OID_P384));
        let bundle = format!("{}{}", ec.leaf.pem(), pem("EC PRIVATE KEY", &sec1.to_der().unwrap()));
        let files = from_pem(bundle.as_bytes(), None, Chain::Ordered).unwrap();
        let (_, key) = blocks(files.key.expose()).remove(0);
        assert_eq!(public_key(&key).unwrap(), public_key(&ec.key).unwrap());
    }

    pub(crate) fn encrypted(key: &[u8], password: &[u8], iterations: u32) -> String {
        let params = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(iterations, &[7u8; 16], [9u8; 16]).unwrap();
        let info = pkcs8::PrivateKeyInfoRef::try_from(key).unwrap();
        let doc = info.encrypt_with_params(params, password).unwrap();
        pem("ENCRYPTED PRIVATE KEY", doc.as_bytes())
    }

    #[test]
    fn an_encrypted_key_opens_with_its_password_only() {
        let c = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        let bundle = format!("{}{}", c.leaf.pem(), encrypted(&c.key, b"s3cret", 2048));
        let files = from_pem(bundle.as_bytes(), Some(b"s3cret"), Chain::Ordered).unwrap();
        assert_eq!(
            blocks(files.key.expose()),
            vec![("PRIVATE KEY".to_string(), c.key.clone())]
        );
        let refused = |p: Option<&[u8]>| from_pem(bundle.as_bytes(), p, Chain::Ordered).map(|_| ()).unwrap_err();
        assert_eq!(refused(None), CertificateError::Encrypted);
        assert_eq!(
            refused(Some(b"wrong")),
            CertificateError::WrongPassword {
                trailing_newline: false
            }
        );
        assert_eq!(
            refused(Some(b"s3cret\n")),
            CertificateError::WrongPassword { trailing_newline: true }
        );
        assert!(
            refused(Some(b"s3cret\n"))
                .to_string()
                .ends_with("(the password ends with a newline, which is part of it)")
        );
    }

    /// A key derivation of more iterations than allowed is refused before
    /// any of them runs (two billion would take the CPU for hours).
    #[test]
    fn a_key_derivation_beyond_the_bound_is_refused_before_it_runs() {
        let c = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        // Encrypted with few iterations, then the count rewritten: the
        // bound is checked on the parameters, before deriving.
        let params = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(1, &[7u8; 16], [9u8; 16]).unwrap();
        let info = pkcs8::PrivateKeyInfoRef::try_from(c.key.as_slice()).unwrap();
        let doc = info.encrypt_with_params(params, b"pw").unwrap();
        let mut encrypted = pkcs8::EncryptedPrivateKeyInfoOwned::from_der(doc.as_bytes()).unwrap();
        let pkcs5::EncryptionScheme::Pbes2(p) = &mut encrypted.encryption_algorithm else {
            panic!("PBES2")
        };
        let pbes2::Kdf::Pbkdf2(kdf) = &mut p.kdf else {
            panic!("PBKDF2")
        };
        kdf.iteration_count = 2_000_000_000;
        let bundle = format!(
            "{}{}",
            c.leaf.pem(),
            pem("ENCRYPTED PRIVATE KEY", &encrypted.to_der().unwrap())
        );
        let started = std::time::Instant::now();
        let err = from_pem(bundle.as_bytes(), Some(b"pw"), Chain::Ordered)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err,
            CertificateError::TooManyIterations {
                found: 2_000_000_000,
                max: u64::from(MAX_KDF_ITERATIONS)
            }
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    pub(crate) fn pkcs12(c: &Issued, password: &str, algorithm: p12_keystore::EncryptionAlgorithm) -> Vec<u8> {
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(
            p12_keystore::LocalKeyId(vec![1, 2, 3, 4]),
            p12_keystore::PrivateKey::from_der(&c.key).unwrap(),
            [&c.leaf, &c.intermediate, &c.root].map(|x| p12_keystore::Certificate::from_der(x.der()).unwrap()),
        );
        store.add_entry("app", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store
            .writer(password)
            .encryption_algorithm(algorithm)
            .encryption_iterations(2048)
            .mac_iterations(2048)
            .write()
            .unwrap()
    }

    /// PKCS#12 files as OpenSSL 3 writes them (PBES2, AES-256) and as older
    /// tools do (3DES): the same files as a PEM bundle; a wrong password
    /// is named as such.
    #[test]
    fn a_pkcs12_file_gives_the_files_of_its_chain() {
        let c = chain(&rcgen::PKCS_ECDSA_P256_SHA256);
        for algorithm in [
            p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
        ] {
            let pfx = pkcs12(&c, "changeit", algorithm);
            let files = from_pkcs12(&pfx, b"changeit").unwrap();
            assert_eq!(
                certs(files.cert.expose()),
                vec![c.leaf.der().to_vec(), c.intermediate.der().to_vec()],
                "{algorithm:?}"
            );
            assert_eq!(certs(files.ca.unwrap().expose()), vec![c.root.der().to_vec()]);
            assert_eq!(
                blocks(files.key.expose()),
                vec![("PRIVATE KEY".to_string(), c.key.clone())]
            );
            assert_eq!(
                from_pkcs12(&pfx, b"changeit\n").map(|_| ()).unwrap_err(),
                CertificateError::WrongPassword { trailing_newline: true }
            );
        }
        assert_eq!(
            from_pkcs12(b"not a pfx", b"").map(|_| ()).unwrap_err(),
            CertificateError::Pkcs12
        );
    }

    /// ACM's export: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC (moto
    /// writes the same), and AES-128 for the in-repo fake.
    #[test]
    fn an_exported_key_is_decrypted_with_its_passphrase() {
        let c = chain(&rcgen::PKCS_RSA_SHA256);
        let pem = encrypted(&c.key, b"Passphrase0123", 2048);
        assert_eq!(*decrypt_pem_key(pem.as_bytes(), b"Passphrase0123").unwrap(), c.key);
        let params = pbes2::Parameters::generate_pbkdf2_sha256_aes128cbc(1000, &[1u8; 16], [2u8; 16]).unwrap();
        let doc = pkcs8::PrivateKeyInfoRef::try_from(c.key.as_slice())
            .unwrap()
            .encrypt_with_params(params, b"pp")
            .unwrap();
        let pem128 = super::tests::pem("ENCRYPTED PRIVATE KEY", doc.as_bytes());
        assert_eq!(*decrypt_pem_key(pem128.as_bytes(), b"pp").unwrap(), c.key);
        assert!(decrypt_pem_key(pem128.as_bytes(), b"other").is_err());
    }
}
