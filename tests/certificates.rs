//! Certificates with their keys: ACM objects (`ExportCertificate` with a
//! passphrase per call, the key decrypted by the provider) and
//! `certificateFormat` on Secrets Manager values (PEM bundles, PKCS#12 files
//! with their password from another file of the mount), against the in-repo
//! fake of AWS: the bytes the pod reads, the calls AWS receives and who
//! signed them, renewals, and the errors a user sees.

use crate::common;

use std::collections::BTreeMap;

use common::fake_aws::{AcmCertificate, Effect, Rule, access_key_for, certificate_arn};
use common::inproc::InProc;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
use tonic::Code;

const DESCRIBE: &str = "DescribeCertificate";
const EXPORT: &str = "ExportCertificate";

/// A certificate of `name` issued by an intermediate of a root, with its
/// key (PKCS#8 DER).
pub(crate) struct Issued {
    pub root: rcgen::Certificate,
    pub intermediate: rcgen::Certificate,
    pub leaf: rcgen::Certificate,
    pub key: Vec<u8>,
}

fn ca(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

fn issue(name: &str) -> Issued {
    issue_with(name, &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// [`issue`] with keys of `alg`.
pub(crate) fn issue_with(name: &str, alg: &'static rcgen::SignatureAlgorithm) -> Issued {
    let root_key = KeyPair::generate_for(alg).unwrap();
    let root_params = ca("Private Root CA");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let intermediate_key = KeyPair::generate_for(alg).unwrap();
    let intermediate_params = ca("Private Issuing CA");
    let intermediate = intermediate_params.signed_by(&intermediate_key, &root_issuer).unwrap();
    let issuer = Issuer::new(intermediate_params, intermediate_key);
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Issued {
        root,
        intermediate,
        leaf,
        key: key.serialize_der(),
    }
}

fn serial(cert: &rcgen::Certificate) -> String {
    use der::Decode;
    let c = x509_cert::Certificate::from_der(cert.der()).unwrap();
    let bytes = c.tbs_certificate().serial_number().as_bytes().to_vec();
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// As ACM holds it: the chain is the intermediate then the root.
pub(crate) fn acm(issued: &Issued, kind: &'static str) -> AcmCertificate {
    AcmCertificate {
        certificate: issued.leaf.pem(),
        chain: format!("{}{}", issued.intermediate.pem(), issued.root.pem()),
        key: issued.key.clone(),
        serial: serial(&issued.leaf),
        kind,
    }
}

fn pem_der(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = std::str::from_utf8(text).unwrap();
    let mut out = Vec::new();
    let mut block = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            block.clear();
        }
        block.push_str(line);
        block.push('\n');
        if line.starts_with("-----END ") {
            let (label, der) = pem_rfc7468::decode_vec(block.as_bytes()).unwrap();
            out.push((label.to_string(), der));
            block.clear();
        }
    }
    out
}

/// The files a pod reads for `issued` under `dir`: the leaf then the
/// intermediate, the root, the key.
fn expected(dir: &str, issued: &Issued) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let cert = |c: &rcgen::Certificate| ("CERTIFICATE".to_string(), c.der().to_vec());
    BTreeMap::from([
        (format!("{dir}/ca.crt"), vec![cert(&issued.root)]),
        (
            format!("{dir}/tls.crt"),
            vec![cert(&issued.leaf), cert(&issued.intermediate)],
        ),
        (
            format!("{dir}/tls.key"),
            vec![("PRIVATE KEY".to_string(), issued.key.clone())],
        ),
    ])
}

fn decoded(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    files.iter().map(|(k, v)| (k.clone(), pem_der(v))).collect()
}

fn acm_class(arn: &str) -> String {
    format!("- objectName: \"{arn}\"\n  objectAlias: web\n  filePermission: \"0440\"\n")
}

/// An ACM certificate mounts as tls.crt, tls.key and ca.crt, each of the
/// object's mode, versioned by the serial; the export is signed by the
/// pod's role, with a new passphrase each time.
#[tokio::test(start_paused = true)]
async fn an_acm_certificate_mounts_with_its_chain_and_decrypted_key() {
    let env = InProc::start(&[]).await;
    let issued = issue("web.example.com");
    let arn = env.aws.put_certificate(REGION, "1111-2222", acm(&issued, "PRIVATE"));
    let req = Req::new(&acm_class(&arn), &env.provider.target("acm"));
    let resp = env.provider.mount(&req).await.expect("mount");
    let files = read_mount(&req.target);
    assert_eq!(decoded(&files), expected("web", &issued));
    for path in files.keys() {
        let mode = std::fs::metadata(req.target.join(path)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o440, "{path}");
    }
    let v = versions(&resp);
    assert_eq!(v.len(), 3);
    assert!(v.values().all(|s| *s == serial(&issued.leaf)), "{v:?}");

    let exports = env.aws.calls_of(EXPORT);
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].names, vec![arn.clone()]);
    assert_eq!(
        exports[0].access_key.as_deref(),
        Some(access_key_for(ROLE_A, TOKEN_A).as_str())
    );
    assert_eq!(exports[0].region.as_deref(), Some(REGION));

    // Driver-writes mode returns the same files.
    let dw = InProc::start(&["--driver-writes-secrets"]).await;
    dw.aws.put_certificate(REGION, "1111-2222", acm(&issued, "PRIVATE"));
    let target = dw.provider.target("acm-dw");
    let resp = dw
        .provider
        .mount(&Req::new(&acm_class(&arn), &target))
        .await
        .expect("mount");
    let returned: BTreeMap<String, Vec<u8>> = file_map(&resp)
        .into_iter()
        .map(|(k, (mode, c))| {
            assert_eq!(mode, 0o440);
            (k, c)
        })
        .collect();
    assert_eq!(decoded(&returned), expected("web", &issued));
    assert!(all_entries(&target).is_empty(), "driver-writes mode writes nothing");

    // Another export: another passphrase.
    dw.provider
        .mount(&Req::new(&acm_class(&arn), &target))
        .await
        .expect("mount");
    let passphrases: Vec<Vec<u8>> = env
        .aws
        .calls_of(EXPORT)
        .into_iter()
        .chain(dw.aws.calls_of(EXPORT))
        .map(|c| c.passphrase.expect("a passphrase"))
        .collect();
    assert!(passphrases.len() >= 2);
    assert_ne!(passphrases[0], passphrases[1]);
}

/// An unchanged certificate is not exported again: DescribeCertificate
/// says it is the same. A renewal (a new serial) is exported and changes
/// the version.
#[tokio::test(start_paused = true)]
async fn an_unchanged_certificate_is_not_exported_again_and_a_renewal_is() {
    let env = InProc::start(&[]).await;
    let first = issue("web.example.com");
    let arn = env.aws.put_certificate(REGION, "renewing", acm(&first, "PRIVATE"));
    let req = Req::new(&acm_class(&arn), &env.provider.target("renew"));
    let v1 = versions(&env.provider.mount(&req).await.expect("mount"));
    assert_eq!(
        (env.aws.calls_of(DESCRIBE).len(), env.aws.calls_of(EXPORT).len()),
        (0, 1)
    );

    let again = versions(&env.provider.mount(&req).await.expect("republish"));
    assert_eq!(again, v1);
    assert_eq!(
        (env.aws.calls_of(DESCRIBE).len(), env.aws.calls_of(EXPORT).len()),
        (1, 1),
        "asked, not exported"
    );
    assert_eq!(decoded(&read_mount(&req.target)), expected("web", &first));

    let renewed = issue("web.example.com");
    env.aws.put_certificate(REGION, "renewing", acm(&renewed, "PRIVATE"));
    let v2 = versions(&env.provider.mount(&req).await.expect("after renewal"));
    assert_eq!(
        (env.aws.calls_of(DESCRIBE).len(), env.aws.calls_of(EXPORT).len()),
        (2, 2)
    );
    assert_ne!(v2, v1);
    assert!(v2.values().all(|s| *s == serial(&renewed.leaf)));
    assert_eq!(decoded(&read_mount(&req.target)), expected("web", &renewed));

    // Another identity exports for itself: its own permission is checked.
    let other = req.clone().pod("pod-b", "sa-b", TOKEN_B);
    env.provider.mount(&other).await.expect("pod b");
    let exports = env.aws.calls_of(EXPORT);
    assert_eq!(exports.len(), 3);
    assert_eq!(
        exports[2].access_key.as_deref(),
        Some(access_key_for(ROLE_B, TOKEN_B).as_str())
    );
}

/// With --acm-export-max-age=0 every mount exports; an identity denied
/// DescribeCertificate exports every time without asking again.
#[tokio::test(start_paused = true)]
async fn without_reuse_or_describe_every_mount_exports() {
    let env = InProc::start(&["--acm-export-max-age=0"]).await;
    let arn = env
        .aws
        .put_certificate(REGION, "c", acm(&issue("a.example.com"), "PRIVATE"));
    let req = Req::new(&acm_class(&arn), &env.provider.target("no-reuse"));
    for _ in 0..2 {
        env.provider.mount(&req).await.expect("mount");
    }
    assert_eq!(
        (env.aws.calls_of(DESCRIBE).len(), env.aws.calls_of(EXPORT).len()),
        (0, 2)
    );

    let env = InProc::start(&[]).await;
    let arn = env
        .aws
        .put_certificate(REGION, "c", acm(&issue("a.example.com"), "PRIVATE"));
    env.aws.add_rule(Rule::op(DESCRIBE, Effect::access_denied()));
    let req = Req::new(&acm_class(&arn), &env.provider.target("no-describe"));
    for _ in 0..3 {
        env.provider.mount(&req).await.expect("mount");
    }
    assert_eq!(
        (env.aws.calls_of(DESCRIBE).len(), env.aws.calls_of(EXPORT).len()),
        (1, 3),
        "denied once, then not asked"
    );
}

/// What ACM refuses fails the mount naming the certificate and what to do,
/// and writes nothing.
#[tokio::test(start_paused = true)]
async fn refusals_name_the_certificate_and_the_cause() {
    let env = InProc::start(&[]).await;
    let issued = issue("a.example.com");
    let private = env.aws.put_certificate(REGION, "private", acm(&issued, "PRIVATE"));
    let imported = env.aws.put_certificate(REGION, "imported", acm(&issued, "IMPORTED"));
    let missing = certificate_arn(REGION, "missing");

    env.aws
        .add_rule(Rule::op(EXPORT, Effect::access_denied()).naming(&private).times(1));
    let err = refused(&env, &private, "denied").await;
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(&private), "{}", err.message());
    assert!(
        err.message().contains("this needs acm:ExportCertificate"),
        "{}",
        err.message()
    );

    let err = refused(&env, &imported, "imported").await;
    assert!(
        err.message().contains("is not a private certificate"),
        "{}",
        err.message()
    );
    assert!(
        err.message()
            .contains("ACM exports private certificates, and public certificates requested as exportable"),
        "{}",
        err.message()
    );

    env.aws.add_rule(
        Rule::op(EXPORT, Effect::error(400, "RequestInProgressException"))
            .naming(&private)
            .times(1),
    );
    let err = refused(&env, &private, "pending").await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("(the certificate is not issued yet)"),
        "{}",
        err.message()
    );

    let err = refused(&env, &missing, "missing").await;
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("assumeRoleArn"), "{}", err.message());

    // A key that does not match its certificate (ACM misbehaving).
    let mut wrong = acm(&issued, "PRIVATE");
    wrong.key = issue("b.example.com").key;
    let mismatched = env.aws.put_certificate(REGION, "mismatched", wrong);
    let err = refused(&env, &mismatched, "mismatched").await;
    assert!(
        err.message()
            .contains("the private key does not match any certificate in it"),
        "{}",
        err.message()
    );
}

/// A mount of ACM certificate `arn` that must fail, writing nothing.
async fn refused(env: &InProc, arn: &str, target: &str) -> tonic::Status {
    let req = Req::new(&acm_class(arn), &env.provider.target(target));
    let err = env.provider.mount(&req).await.expect_err("refused");
    assert!(all_entries(&req.target).is_empty(), "nothing written");
    err
}

/// A throttled export is retried; an outage of the primary region fails
/// over to the failover region's certificate.
#[tokio::test(start_paused = true)]
async fn throttling_is_retried_and_an_outage_fails_over() {
    let env = InProc::start(&[]).await;
    let issued = issue("a.example.com");
    let arn = env.aws.put_certificate(REGION, "c", acm(&issued, "PRIVATE"));
    env.aws.add_rule(Rule::op(EXPORT, Effect::throttling()).times(1));
    let req = Req::new(&acm_class(&arn), &env.provider.target("throttled"));
    env.provider.mount(&req).await.expect("retried");
    assert_eq!((env.aws.faulted(EXPORT), env.aws.calls_of(EXPORT).len()), (1, 2));

    let replica = issue("a.example.com");
    let failover_arn = env.aws.put_certificate(FAILOVER, "c", acm(&replica, "PRIVATE"));
    env.aws.region_outage(REGION, Effect::unavailable());
    let class =
        format!("- objectName: \"{arn}\"\n  objectAlias: web\n  failoverObject:\n    objectName: \"{failover_arn}\"\n");
    let req = Req::new(&class, &env.provider.target("failover")).set("failoverRegion", FAILOVER);
    env.provider.mount(&req).await.expect("failed over");
    assert_eq!(decoded(&read_mount(&req.target)), expected("web", &replica));
    let last = env.aws.calls_of(EXPORT).pop().unwrap();
    assert_eq!(last.region.as_deref(), Some(FAILOVER));
}

/// A PEM bundle in Secrets Manager, in any order, and a PKCS#12 file (a
/// binary secret, and base64 inside JSON with its password in the same
/// secret) are shaped into the same files.
#[tokio::test(start_paused = true)]
async fn secrets_manager_bundles_and_pkcs12_files_are_shaped() {
    let env = InProc::start(&[]).await;
    let issued = issue("svc.example.com");
    let key_pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &issued.key).unwrap();
    let bundle = format!(
        "{}{}{}{}",
        issued.root.pem(),
        key_pem,
        issued.intermediate.pem(),
        issued.leaf.pem()
    );
    env.aws.put_secret_string(REGION, "tls/bundle", &bundle);
    let pfx = pkcs12(&issued, "pfx-pass");
    env.aws
        .put_secret(REGION, "tls/pfx", common::fake_aws::SecretValue::Binary(pfx.clone()));
    use base64::Engine;
    let json = serde_json::json!({
        "pfx": base64::engine::general_purpose::STANDARD.encode(&pfx),
        "password": "pfx-pass",
    });
    env.aws.put_secret_string(REGION, "tls/json", &json.to_string());
    env.aws.put_secret_string(REGION, "tls/pfx-password", "pfx-pass");
    let class = "\
- objectName: tls/bundle
  objectType: secretsmanager
  objectAlias: bundle
  certificateFormat: pem
- objectName: tls/pfx-password
  objectType: secretsmanager
  objectAlias: pfx-password
  filePermission: \"0400\"
- objectName: tls/pfx
  objectType: secretsmanager
  objectAlias: binary
  certificateFormat: pkcs12
  certificatePasswordFile: pfx-password
- objectName: tls/json
  objectType: secretsmanager
  objectAlias: json
  jmesPath:
    - path: password
      objectAlias: json-password
    - path: pfx
      objectAlias: from-json
      objectEncoding: base64
      certificateFormat: pkcs12
      certificatePasswordFile: json-password
";
    let req = Req::new(class, &env.provider.target("sm"));
    env.provider.mount(&req).await.expect("mount");
    let files = read_mount(&req.target);
    for dir in ["bundle", "binary", "from-json"] {
        let of_dir: BTreeMap<String, Vec<u8>> = files
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{dir}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(decoded(&of_dir), expected(dir, &issued), "{dir}");
    }
    assert_eq!(files["pfx-password"], b"pfx-pass");

    // A wrong password names the object and the cause; nothing is written.
    env.aws.put_secret_string(REGION, "tls/pfx-password", "wrong");
    let before = read_mount(&req.target);
    let err = env.provider.mount(&req).await.expect_err("wrong password");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("tls/pfx"), "{}", err.message());
    assert!(
        err.message().contains("the password does not decrypt it"),
        "{}",
        err.message()
    );
    assert_eq!(read_mount(&req.target), before);
}

fn pkcs12(issued: &Issued, password: &str) -> Vec<u8> {
    let mut store = p12_keystore::KeyStore::new();
    let chain = p12_keystore::PrivateKeyChain::new(
        p12_keystore::LocalKeyId(vec![7, 7, 7, 7]),
        p12_keystore::PrivateKey::from_der(&issued.key).unwrap(),
        [&issued.leaf, &issued.intermediate, &issued.root]
            .map(|c| p12_keystore::Certificate::from_der(c.der()).unwrap()),
    );
    store.add_entry("svc", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().unwrap()
}

/// The new fields' bad input fails before any call, naming the object and
/// the rule.
#[tokio::test(start_paused = true)]
async fn bad_certificate_fields_fail_before_any_call() {
    let env = InProc::start(&[]).await;
    let arn = certificate_arn(REGION, "c");
    let cases = [
        (
            "- objectName: s\n  objectType: secretsmanager\n  certificateFormat: der\n".to_string(),
            "certificateFormat of object s must be pem or pkcs12: der",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  certificatePasswordFile: p\n".to_string(),
            "certificatePasswordFile of object s needs certificateFormat",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  certificateFormat: pkcs12\n  certificatePasswordFile: nope\n".to_string(),
            "certificatePasswordFile nope of object s is not a file of this mount",
        ),
        (
            format!("- objectName: \"{arn}\"\n  objectVersion: \"2\"\n"),
            "objectVersion does not apply to an ACM certificate",
        ),
        (
            "- objectName: not-an-arn\n  objectType: acm\n".to_string(),
            "an ACM object is named by its certificate ARN",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  certificateFormat: pem\n  jsonKeysAsFiles: true\n".to_string(),
            "certificateFormat and jsonKeysAsFiles exclude each other",
        ),
    ];
    for (class, message) in cases {
        let err = env
            .provider
            .mount(&Req::new(&class, &env.provider.target("bad")))
            .await
            .expect_err(message);
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(message),
            "{:?} must say {message:?}",
            err.message()
        );
    }
    assert!(env.aws.calls().is_empty(), "no call: {:?}", env.aws.calls());
}

// === against moto ===

mod against_moto {
    use super::*;
    use common::moto::{self, unique};

    const PRIVATE_CA: &str =
        "arn:aws:acm-pca:us-west-2:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
    const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-secrets";

    /// A private certificate (moto issues it at once) and what ACM says it
    /// is: the certificate's DER, its chain's, its serial.
    async fn private_certificate(client: &aws_sdk_acm::Client) -> (String, Vec<u8>, Vec<Vec<u8>>) {
        let arn = client
            .request_certificate()
            .domain_name(format!("{}.internal.example.com", unique("svc")))
            .certificate_authority_arn(PRIVATE_CA)
            .send()
            .await
            .expect("request a private certificate")
            .certificate_arn
            .expect("an ARN");
        let got = client
            .get_certificate()
            .certificate_arn(&arn)
            .send()
            .await
            .expect("get");
        let cert = pem_der(got.certificate().unwrap_or_default().as_bytes());
        let chain = pem_der(got.certificate_chain().unwrap_or_default().as_bytes());
        (arn, cert[0].1.clone(), chain.into_iter().map(|(_, d)| d).collect())
    }

    /// The public key of a PKCS#8 key and the certificate's, as bytes.
    fn key_matches(key_pem: &[u8], cert_der: &[u8]) -> bool {
        use aws_lc_rs::signature::KeyPair;
        use der::Decode;
        let (label, key) = pem_rfc7468::decode_vec(key_pem).unwrap();
        assert_eq!(label, "PRIVATE KEY", "unencrypted PKCS#8");
        let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&key).expect("an RSA key");
        let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
        pair.public_key().as_ref()
            == cert
                .tbs_certificate()
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes()
    }

    fn check_files(files: &BTreeMap<String, Vec<u8>>, dir: &str, cert: &[u8], chain: &[Vec<u8>]) {
        let crt = pem_der(&files[&format!("{dir}/tls.crt")]);
        assert_eq!(crt[0].1, cert, "tls.crt starts with ACM's certificate");
        let ca = pem_der(&files[&format!("{dir}/ca.crt")]);
        assert_eq!(Some(&ca[0].1), chain.last(), "ca.crt is the last of ACM's chain");
        assert!(
            key_matches(&files[&format!("{dir}/tls.key")], cert),
            "the key is the certificate's"
        );
    }

    #[tokio::test]
    #[ignore = "needs moto (scripts/venv); scripts/test runs it"]
    async fn an_acm_private_certificate_mounts_with_irsa_and_pod_identity_in_both_write_modes() {
        let agent = FakeAgent::start("127.0.0.1:0").await;
        let url = agent.url();
        let (_kube, provider) = moto::env(Options {
            args: vec![format!("--pod-identity-endpoint-ipv4={url}")],
            ..Options::default()
        })
        .await;
        let (arn, cert, chain) = private_certificate(&moto::acm(REGION)).await;
        let class = acm_class(&arn);

        // IRSA, provider-writes.
        let target = provider.target("acm-irsa");
        let resp = provider
            .mount(&Req::new(&class, &target))
            .await
            .expect("mount with IRSA");
        check_files(&read_mount(&target), "web", &cert, &chain);
        let serial = {
            use der::Decode;
            let c = x509_cert::Certificate::from_der(&cert).unwrap();
            let bytes = c.tbs_certificate().serial_number().as_bytes().to_vec();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
        };
        assert!(versions(&resp).values().all(|v| *v == serial), "{:?}", versions(&resp));
        // Again: moto's DescribeCertificate reports the serial in decimal;
        // the kept export is served.
        let again = provider.mount(&Req::new(&class, &target)).await.expect("republish");
        assert_eq!(versions(&again), versions(&resp));

        // Pod Identity, and the files returned rather than written.
        let (_kube, dw) = moto::env(Options {
            args: vec![
                format!("--pod-identity-endpoint-ipv4={url}"),
                "--driver-writes-secrets".to_string(),
            ],
            ..Options::default()
        })
        .await;
        let target = dw.target("acm-pi");
        let resp = dw
            .mount(&Req::new(&class, &target).set("usePodIdentity", "true"))
            .await
            .expect("mount with Pod Identity");
        let files: BTreeMap<String, Vec<u8>> = file_map(&resp).into_iter().map(|(k, (_, c))| (k, c)).collect();
        check_files(&files, "web", &cert, &chain);
        assert!(all_entries(&target).is_empty());
        assert_eq!(agent.tokens(), vec![PI_TOKEN_A.to_string()]);
    }

    /// A certificate of another account is read through the chained role,
    /// and not with the pod's own.
    #[tokio::test]
    #[ignore = "needs moto (scripts/venv); scripts/test runs it"]
    async fn a_certificate_of_another_account_needs_the_chained_role() {
        let (_kube, provider) = moto::env(Options::default()).await;
        let central = moto::acm_in_account(CENTRAL, REGION).await;
        let (arn, cert, chain) = private_certificate(&central).await;
        let target = provider.target("acm-central");
        let err = provider
            .mount(&Req::new(&acm_class(&arn), &target))
            .await
            .expect_err("not the pod's account");
        assert!(err.message().contains(&arn), "{}", err.message());
        assert!(all_entries(&target).is_empty());
        provider
            .mount(&Req::new(&acm_class(&arn), &target).set("assumeRoleArn", CENTRAL))
            .await
            .expect("through the chained role");
        check_files(&read_mount(&target), "web", &cert, &chain);
    }

    /// A public certificate exports only when requested as exportable.
    #[tokio::test]
    #[ignore = "needs moto (scripts/venv); scripts/test runs it"]
    async fn public_certificates_export_only_when_requested_exportable() {
        let (_kube, provider) = moto::env(Options::default()).await;
        let acm = moto::acm(REGION);
        let request = |export: aws_sdk_acm::types::CertificateExport| {
            let acm = acm.clone();
            async move {
                acm.request_certificate()
                    .domain_name(format!("{}.example.com", unique("public")))
                    .options(aws_sdk_acm::types::CertificateOptions::builder().export(export).build())
                    .send()
                    .await
                    .expect("request")
                    .certificate_arn
                    .expect("arn")
            }
        };
        let exportable = request(aws_sdk_acm::types::CertificateExport::Enabled).await;
        let target = provider.target("acm-public");
        provider
            .mount(&Req::new(&acm_class(&exportable), &target))
            .await
            .expect("an exportable public certificate");
        assert_eq!(read_mount(&target).len(), 3);

        let closed = request(aws_sdk_acm::types::CertificateExport::Disabled).await;
        let target = provider.target("acm-closed");
        let err = provider
            .mount(&Req::new(&acm_class(&closed), &target))
            .await
            .expect_err("not exportable");
        assert!(err.message().contains(&closed), "{}", err.message());
        assert!(err.message().contains("ValidationException"), "{}", err.message());
        assert!(err.message().contains("requested as exportable"), "{}", err.message());
        assert!(all_entries(&target).is_empty());
    }
}
