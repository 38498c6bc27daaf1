//! The seed corpus of the fuzz targets (`fuzz/corpus/<target>/`): every
//! case of the bad-input table, in the input format of each target it
//! applies to, the example SecretProviderClass, and hostile inputs (alias
//! bombs, deep nesting, 20,000 objects, long names, deep and doubling
//! JMESPath). Written by `cargo test --test write_fuzz_seeds`; the files it writes start with `seed-`, and it
//! replaces only those.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::bad_cases::cases;
use super::{FAILOVER, REGION, Req};

/// The targets and their input formats (see each `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [&str; 9] = [
    "attributes",
    "objects",
    "jmespath",
    "arn",
    "paths",
    "permission",
    "request",
    "template",
    "certificate",
];

/// The token and value canaries the targets look for in what is echoed.
const TOKEN: &str = "eyJ.tok-canary-5e8b.sig";
const VALUE: &str = r#"{"username":"admin","api-key":"val-canary-3c1d","a":{"b":"c"},"list":["x","y"],"port":5432}"#;
const TARGET: &str = "/var/lib/kubelet/pods/0d1e/volumes/kubernetes.io~csi/secrets/mount";

/// Seeds by target, then name.
#[derive(Default)]
pub struct Seeds(BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: &str, data: impl Into<Vec<u8>>) {
        let files = self.0.entry(target).or_default();
        let mut key = format!("seed-{}", slug(name));
        let mut n = 2;
        while files.contains_key(&key) {
            key = format!("seed-{}-{n}", slug(name));
            n += 1;
        }
        files.insert(key, data.into());
    }

    /// The input of the `request` target: NUL-separated fields.
    fn request(
        &mut self,
        name: &str,
        attributes: &str,
        secrets: &str,
        target: &str,
        permission: &str,
        values: &[&[u8]],
    ) {
        let mut data = [attributes, secrets, target, permission, REGION]
            .join("\0")
            .into_bytes();
        for v in values {
            data.push(0);
            data.extend_from_slice(v);
        }
        self.add("request", name, data);
    }

    /// Every input a request holds, to the targets it applies to.
    fn add_request(&mut self, name: &str, req: &Req, with_request: bool) {
        let built = req.build();
        if with_request {
            self.request(
                name,
                &built.attributes,
                &built.secrets,
                &built.target_path,
                &built.permission,
                &[VALUE.as_bytes()],
            );
        }
        let default_request = built.secrets == "null" && built.permission == "420" && built.target_path == TARGET;
        if default_request {
            self.add("attributes", name, built.attributes.clone());
        }
        if built.permission != "420" {
            self.add("permission", name, built.permission.clone());
        }
        let Ok(attrs) = serde_json::from_str::<BTreeMap<String, String>>(&built.attributes) else {
            return;
        };
        for key in ["region", "failoverRegion"] {
            if let Some(r) = attrs.get(key).filter(|r| *r != REGION) {
                self.add("paths", &format!("{name} {key}"), r.clone());
            }
        }
        if let Some(Value::Sequence(items)) = attrs.get("templates").and_then(|t| serde_yaml::from_str(t).ok()) {
            for item in &items {
                if let Some(text) = item.get("template").and_then(Value::as_str) {
                    self.add("template", name, text);
                }
            }
        }
        let Some(objects) = attrs.get("objects") else { return };
        self.add("objects", name, objects.clone());
        let Ok(doc) = serde_yaml::from_str::<Value>(objects) else {
            return;
        };
        let mut fields = Vec::new();
        collect(&doc, "", &mut fields);
        for (key, value) in fields {
            match key.as_str() {
                "objectName" => {
                    self.add("arn", &format!("{name} {key}"), value.clone());
                    self.add("paths", &format!("{name} {key}"), value);
                }
                "objectAlias" => self.add("paths", &format!("{name} {key}"), value),
                "filePermission" => self.add("permission", &format!("{name} {key}"), value),
                "path" => self.add("jmespath", &format!("{name} {key}"), format!("{value}\n{VALUE}")),
                _ => {}
            }
        }
    }

    /// The seeds that are not in `root` as they would be written, and the
    /// `seed-*` files there that would not be written.
    pub fn missing(&self, root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for target in TARGETS {
            let dir = root.join(target);
            let files = self.0.get(target).cloned().unwrap_or_default();
            for (name, data) in &files {
                if std::fs::read(dir.join(name)).ok().as_ref() != Some(data) {
                    out.push(format!("{target}/{name}"));
                }
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("seed-") && !files.contains_key(&name) {
                    out.push(format!("{target}/{name} (no longer generated)"));
                }
            }
        }
        out
    }

    /// Replaces the `seed-*` files of every target directory under `root`.
    pub fn write(&self, root: &Path) -> std::io::Result<usize> {
        let mut written = 0;
        for target in TARGETS {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seed-"))
                {
                    std::fs::remove_file(path)?;
                }
            }
            for (name, data) in self.0.get(target).into_iter().flatten() {
                std::fs::write(dir.join(name), data)?;
                written += 1;
            }
        }
        Ok(written)
    }
}

/// The string scalars under the keys of the object descriptors.
fn collect(v: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Sequence(items) => items.iter().for_each(|i| collect(i, key, out)),
        Value::Mapping(m) => {
            for (k, v) in m {
                collect(v, k.as_str().unwrap_or(""), out);
            }
        }
        Value::String(s) => out.push((key.to_string(), s.clone())),
        Value::Number(n) => out.push((key.to_string(), n.to_string())),
        _ => {}
    }
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

fn base() -> Req {
    let mut r = Req::new("- objectName: s\n  objectType: secretsmanager\n", Path::new(TARGET));
    r.tokens.insert("sts.amazonaws.com".into(), TOKEN.into());
    r.tokens.insert("pods.eks.amazonaws.com".into(), TOKEN.into());
    r
}

/// The `objects` and `region` of `examples/secretproviderclass.yaml`.
fn example(root: &Path) -> (String, String) {
    let text = std::fs::read_to_string(root.join("examples/secretproviderclass.yaml")).expect("the example");
    let doc: Value = serde_yaml::from_str(&text).expect("the example is YAML");
    let p = &doc["spec"]["parameters"];
    (
        p["objects"].as_str().expect("objects").to_string(),
        p["region"].as_str().expect("region").to_string(),
    )
}

/// Hostile `objects` texts.
fn hostile_objects() -> Vec<(&'static str, String)> {
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 0..9u8 {
        let (prev, next) = ((b'a' + i) as char, (b'b' + i) as char);
        bomb.push_str(&format!(
            "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let list_bomb = format!(
        "- &o {{objectName: s, objectType: secretsmanager}}\n{}",
        "- *o\n".repeat(2000)
    );
    let entry = |i: usize| format!("- {{objectName: s{i}, objectType: ssmparameter}}\n");
    let jmes_entries: String = (0..1000)
        .map(|i| format!("    - {{path: a, objectAlias: k{i}}}\n"))
        .collect();
    vec![
        ("alias bomb", bomb),
        ("alias bomb in the list", list_bomb),
        ("anchor on a scalar", "- objectName: &n s\n  objectType: secretsmanager\n- objectName: *n\n  objectType: ssmparameter\n".into()),
        ("merge key", "- {<<: {objectType: secretsmanager}, objectName: s}\n".into()),
        ("nesting 33", format!("{}{}", "[".repeat(33), "]".repeat(33))),
        ("nesting 10000", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        ("nested mappings", format!("{}x{}", "{a: ".repeat(40), "}".repeat(40))),
        ("20000 objects", format!("[{}{{}}]", "{},".repeat(19_999))),
        ("1001 objects", (0..1001).map(entry).collect()),
        ("1000 objects", (0..1000).map(entry).collect()),
        ("1000 jmesPath entries", format!("- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n{jmes_entries}")),
        ("name of 2049 bytes", format!("- objectName: {}\n  objectType: secretsmanager\n", "n".repeat(2049))),
        ("alias of 256 bytes", format!("- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}\n", "a".repeat(256))),
        ("path of 4097 bytes", format!("- objectName: s\n  objectType: secretsmanager\n  objectAlias: {}x\n", "a/".repeat(2048))),
        ("two documents", "- objectName: a\n  objectType: secretsmanager\n---\n- objectName: b\n  objectType: secretsmanager\n".into()),
        ("tags", "- !!map {objectName: !!str 1, objectType: !custom secretsmanager}\n".into()),
        ("binary tag", "- objectName: !!binary aGVsbG8=\n  objectType: secretsmanager\n".into()),
        ("non-string keys", "- {? [a]: b, 1: 2, objectName: s, objectType: ssmparameter}\n".into()),
        ("flow in flow", "[{objectName: [[[[a]]]], objectType: secretsmanager}]".into()),
        ("json with escapes", r#"[{"objectName":"a\u0000b","objectType":"secretsmanager","objectAlias":"\u002e\u002e"}]"#.into()),
        ("failover arns", "- objectName: arn:aws:secretsmanager:us-west-2:1:secret:a\n  objectAlias: a\n  failoverObject:\n    objectName: arn:aws:secretsmanager:us-east-2:1:secret:a\n".into()),
        ("translation collisions", "- {objectName: a/b, objectType: secretsmanager}\n- {objectName: a, objectType: secretsmanager, objectAlias: a_b}\n".into()),
        ("directory and file", "- {objectName: /a/b, objectType: ssmparameter}\n- {objectName: /a, objectType: ssmparameter}\n".into()),
        ("unicode names", "- {objectName: \"é/ø/\u{202e}x\", objectType: secretsmanager, objectAlias: \"日本/語\"}\n".into()),
        ("permission forms", "- {objectName: a, objectType: secretsmanager, filePermission: 0600}\n- {objectName: b, objectType: secretsmanager, filePermission: 384}\n- {objectName: c, objectType: secretsmanager, filePermission: 0x1ff}\n".into()),
    ]
}

/// Hostile JMESPath expressions, each with a value.
/// Templates that try to outgrow their limits, and ordinary ones.
fn hostile_templates() -> Vec<(&'static str, String)> {
    vec![
        (
            "template env file",
            "{% set j = files.j | fromjson %}{% for k, v in j | items %}{{ k | upper }}={{ v | tojson | shellquote }}\n{% endfor %}".to_string(),
        ),
        (
            "template url",
            "postgres://{{ (files.j | fromjson).user | urlencode }}:{{ files['db-password'] | urlencode }}@{{ files.a | trim }}/db".to_string(),
        ),
        (
            "template doubling by assignment",
            (0..40).map(|i| format!("{{% set v{} = v{i} | replace('x', v{i}) %}}", i + 1)).collect::<String>()
                .replace("v0", "files.a"),
        ),
        (
            "template nested loops",
            format!("{}.{}", "{% for x in files.j %}".repeat(12), "{% endfor %}".repeat(12)),
        ),
        (
            "template tojson of tojson",
            (0..30).map(|i| format!("{{% set t{} = t{i} | tojson %}}", i + 1)).collect::<String>().replace("t0", "files.j") + "{{ t30 }}",
        ),
        ("template deep parentheses", format!("{{{{ {}files.a{} }}}}", "(".repeat(5000), ")".repeat(5000))),
        ("template deep ifs", format!("{}{}", "{% if 1 %}".repeat(5000), "{% endif %}".repeat(5000))),
        ("template long filter chain", format!("{{{{ files.a{} }}}}", " | trim".repeat(5000))),
        ("template indent bomb", "{% for c in files.a %}{{ files.a | indent(64, true) }}{% endfor %}".to_string()),
        ("template default of undefined", "{{ files.nope | default('x') }}{{ files.b is defined }}".to_string()),
        ("template join", "{{ (files.j | fromjson).n | join(', ') }}".to_string()),
        ("template b64 round trip", "{{ files.a | b64encode | b64decode }}".to_string()),
        (
            "template elif chain",
            format!("{{% if 1 %}}{}{{% endif %}}", "{% elif 1 %}".repeat(2000)),
        ),
        (
            "template shared structure",
            "{% set a = [1] %}".to_string() + &"{% set a = [a, a] %}".repeat(64) + "{{ a in \"x\" }}",
        ),
        ("template computed comparison", "{% for c in files.a %}{{ files.j == files.a }}{% endfor %}".to_string()),
        ("template computed index", "{{ files[files.a] }}{{ files.a[99999] }}".to_string()),
        ("template constant literals", "{% if files.a in [\"x\", \"y\"] %}{{ {\"k\": [1, 2]}.k[1] }}{% endif %}".to_string()),
    ]
}

fn hostile_jmespath() -> Vec<(&'static str, String)> {
    let step = "[@,@][]";
    vec![
        (
            "doubling 20",
            format!("to_string({})\n\"ten bytes\"", [step; 20].join(" | ")),
        ),
        (
            "doubling 8",
            format!("to_string({})\n\"ten bytes\"", [step; 8].join(" | ")),
        ),
        (
            "doubling 8 on 4 KiB",
            format!("to_string({})\n\"{}\"", [step; 8].join(" | "), "x".repeat(4096)),
        ),
        (
            "doubling projections",
            format!("to_string(@{})\n[1,2]", "[*].[@,@][]".repeat(12)),
        ),
        (
            "join doubling",
            format!("join(to_string(@), [{}])\n\"ab\"", vec!["to_string(@)"; 40].join(",")),
        ),
        ("parens 17", format!("{}a{}\n{VALUE}", "(".repeat(17), ")".repeat(17))),
        ("parens 64", format!("{}a{}\n{VALUE}", "(".repeat(64), ")".repeat(64))),
        (
            "parens 500",
            format!("{}a{}\n{VALUE}", "(".repeat(500), ")".repeat(500)),
        ),
        (
            "brackets 300",
            format!("{}a{}\n{VALUE}", "[".repeat(300), "]".repeat(300)),
        ),
        ("nots 200", format!("{}a\n{VALUE}", "!".repeat(200))),
        ("subexpressions 511", format!("{}a\n{VALUE}", "a.".repeat(511))),
        ("pipes 511", format!("{}@\n{VALUE}", "@|".repeat(511))),
        ("ors 340", format!("{}a\n{VALUE}", "a||".repeat(340))),
        ("comparisons", format!("{}a\n{VALUE}", "a==".repeat(300))),
        (
            "projections 64",
            format!("{}b\n{{\"a\":[{{\"a\":[]}}]}}", "a[*].".repeat(64)),
        ),
        ("filters 64", format!("{}c\n{{\"a\":[]}}", "a[?b].".repeat(64))),
        (
            "functions 64",
            format!("{}@{}\n[1]", "to_array(".repeat(64), ")".repeat(64)),
        ),
        (
            "exprefs",
            format!("sort_by(@, {})\n[{{\"a\":1}},{{\"a\":0}}]", vec!["&a"; 100].join(" | ")),
        ),
        ("hashes 64", format!("{}a{}\n{VALUE}", "{a:".repeat(64), "}".repeat(64))),
        ("long", format!("{}\n{VALUE}", "a".repeat(1025))),
        (
            "value nested 128",
            format!("to_string(@)\n{}1{}", "[".repeat(127), "]".repeat(127)),
        ),
        (
            "value nested 129",
            format!("to_string(@)\n{}1{}", "[".repeat(129), "]".repeat(129)),
        ),
        (
            "value huge numbers",
            "to_string(@)\n[1e308, -1e308, 123456789012345678901234567890, 0.1e-400]".into(),
        ),
        ("sort mixed", "sort(@)\n[1, \"a\", null]".into()),
        ("slices", "to_string(@[::-1][1:-1:2])\n[1,2,3,4,5]".into()),
        ("literal", "`{\"a\": [1, 2, {\"b\": \"c\"}]}`.a[2].b\n{}".into()),
        ("raw string", "'val-canary-3c1d'\nnull".into()),
        (
            "functions",
            "join(',', map(&to_string(@), sort_by(items(@) || values(@), &to_string(@))))\n{\"b\":1,\"a\":2}".into(),
        ),
        (
            "merge keys values",
            "to_string(merge(@, @, {x: keys(@)}))\n{\"a\":\"b\"}".into(),
        ),
        ("not json", "a\n{\"a\": \"b\"".into()),
    ]
}

/// The whole seed corpus.
pub fn seeds(root: &Path) -> Seeds {
    let mut s = Seeds::default();

    // The bad-input table.
    for (label, edit, _) in cases() {
        let req = edit(base());
        s.add_request(&format!("bad {label}"), &req, true);
    }

    // The example class, and each of its objects with a value.
    let (objects, region) = example(root);
    let req = base().set("objects", &objects).set("region", &region);
    s.add_request("example", &req, false);
    let built = req.build();
    let values: Vec<&[u8]> = vec![VALUE.as_bytes(), b"previous", b"flags", b"endpoints"];
    s.request(
        "example",
        &built.attributes,
        &built.secrets,
        &built.target_path,
        "420",
        &values,
    );
    for (name, mode) in [
        ("example mode 0640", "\"0640\""),
        ("example mode 416", "416"),
        ("example mode 0", "0"),
    ] {
        s.add("permission", name, mode);
    }
    s.add(
        "arn",
        "example secret arn",
        format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:prod/db-AbCdEf"),
    );
    s.add(
        "arn",
        "example gov arn",
        "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/a:b:c",
    );
    s.add("paths", "example region", region.clone());
    s.add("paths", "example failover region", FAILOVER);
    for r in [
        "us-gov-west-1",
        "eusc-de-east-1",
        "us-west-2.evil.example.com",
        "US-WEST-2",
        "us--west-2",
    ] {
        s.add("paths", &format!("region {r}"), r);
    }

    // Hostile inputs.
    for (name, text) in hostile_objects() {
        s.add("objects", name, text.clone());
        let req = base().set("objects", &text);
        let built = req.build();
        if text.len() < 8 * 1024 {
            s.add("attributes", name, built.attributes.clone());
            s.request(name, &built.attributes, "null", TARGET, "420", &[VALUE.as_bytes()]);
        }
    }
    for (name, text) in hostile_jmespath() {
        let (expr, value) = text.split_once('\n').unwrap_or((&text, ""));
        s.add("jmespath", name, text.clone());
        let objects = format!(
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: {}\n      objectAlias: out\n",
            serde_json::to_string(expr).expect("json")
        );
        if objects.len() < 4096 {
            let built = base().set("objects", &objects).build();
            s.request(
                &format!("jmespath {name}"),
                &built.attributes,
                "null",
                TARGET,
                "420",
                &[value.as_bytes()],
            );
        }
    }
    for (name, text) in hostile_templates() {
        s.add("template", name, text);
    }
    s.add("jmespath", "not utf-8", &b"a\n\"\xff\""[..]);
    s.add("jmespath", "expression not utf-8", &b"\xff\n{}"[..]);
    for (name, arn) in [
        ("arn many colons", format!("arn:{}", ":".repeat(300))),
        (
            "arn long",
            format!("arn:aws:secretsmanager:us-west-2:1:secret:{}", "s".repeat(2100)),
        ),
        ("arn ssm service", "arn:aws:ssm:us-west-2:1:parameter/a".to_string()),
        (
            "arn ssmparameter service",
            "arn:aws:ssmparameter:us-west-2:1:parameter/a".to_string(),
        ),
        ("arn empty parts", "arn:::::".to_string()),
        (
            "arn upper case",
            "ARN:aws:secretsmanager:us-west-2:1:secret:a".to_string(),
        ),
    ] {
        s.add("arn", name, arn);
    }
    for (name, path) in [
        ("path traversal", "../../../../etc/passwd".to_string()),
        ("path deep traversal", "a/".repeat(100) + &"../".repeat(101)),
        ("path 4097 bytes", "a/".repeat(2048) + "x"),
        ("path component 256", "x".repeat(256)),
        ("path nul", "a\0b".to_string()),
        ("path reserved", "..data/x".to_string()),
        ("path leading slashes", "///a/b".to_string()),
        ("path dot dot in name", "a/..b/.c".to_string()),
        ("path unicode", "日本/\u{202e}/é".to_string()),
        ("path backslash", "..\\..\\x".to_string()),
    ] {
        s.add("paths", name, path);
    }
    for (name, p) in [
        ("mode 0777", "0777"),
        ("mode 07777", "07777"),
        ("mode negative", "-1"),
        ("mode float", "420.0"),
        ("mode exponent", "4.2e2"),
        ("mode huge", "99999999999999999999"),
        ("mode null", "null"),
        ("mode unicode digits", "０６４４"),
        ("mode plus", "+644"),
    ] {
        s.add("permission", name, p);
    }
    certificate_seeds(&mut s);
    s
}

/// The password of the `certificate` target.
const CERTIFICATE_PASSWORD: &str = "fuzz-pass-7f3a";

/// The `certificate` target: a form byte, then the value. A chain with its
/// key in three forms (a bundle out of order, ACM's export with an
/// encrypted key, the encrypted key alone), and hostile ones: a key
/// derivation of two billion iterations, a certificate twice, truncated and
/// legacy blocks. Deterministic (a fixed Ed25519 key, whose signatures are
/// deterministic, fixed serials, salt and IV), so the corpus check holds;
/// `fuzz/corpus/certificate/sample-*` adds PKCS#12 files.
fn certificate_seeds(s: &mut Seeds) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
    // An Ed25519 PKCS#8 v1 key of a fixed seed.
    let fixed_key = |seed: u8| {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend([seed; 32]);
        der
    };
    let ca_key = KeyPair::try_from(fixed_key(1).as_slice()).expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name.push(DnType::CommonName, "Seed Root");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.serial_number = Some(SerialNumber::from(vec![1u8]));
    let ca = ca_params.self_signed(&ca_key).expect("root");
    let issuer = Issuer::new(ca_params, ca_key);
    let key_der = fixed_key(2);
    let key = KeyPair::try_from(key_der.as_slice()).expect("key");
    let mut leaf_params = CertificateParams::new(vec!["seed.example.com".to_string()]).expect("params");
    leaf_params.serial_number = Some(SerialNumber::from(vec![2u8]));
    let leaf = leaf_params.signed_by(&key, &issuer).expect("leaf");
    let pem =
        |label: &str, der: &[u8]| pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).expect("pem");
    let encrypted = |iterations: u32| {
        let params =
            pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(iterations, &[3u8; 16], [4u8; 16])
                .expect("params");
        let doc = pkcs8::PrivateKeyInfoRef::try_from(key_der.as_slice())
            .expect("pkcs8")
            .encrypt_with_params(params, CERTIFICATE_PASSWORD)
            .expect("encrypt");
        doc.as_bytes().to_vec()
    };
    let with_form = |form: u8, value: &[u8]| {
        let mut data = vec![form];
        data.extend_from_slice(value);
        data
    };
    let bundle = format!("{}{}{}", ca.pem(), pem("PRIVATE KEY", &key_der), leaf.pem());
    s.add(
        "certificate",
        "pem bundle out of order",
        with_form(0, bundle.as_bytes()),
    );
    let encrypted_pem = pem("ENCRYPTED PRIVATE KEY", &encrypted(16));
    let acm = format!("{}\n{}\n{}", leaf.pem(), ca.pem(), encrypted_pem);
    s.add("certificate", "acm export", with_form(1, acm.as_bytes()));
    s.add("certificate", "encrypted key", with_form(3, encrypted_pem.as_bytes()));
    // Two billion iterations: refused before deriving.
    let mut slow = pkcs8::EncryptedPrivateKeyInfoOwned::try_from(encrypted(16).as_slice()).expect("encrypted");
    if let pkcs8::pkcs5::EncryptionScheme::Pbes2(p) = &mut slow.encryption_algorithm
        && let pkcs8::pkcs5::pbes2::Kdf::Pbkdf2(kdf) = &mut p.kdf
    {
        kdf.iteration_count = 2_000_000_000;
    }
    let slow = pem("ENCRYPTED PRIVATE KEY", &der::Encode::to_der(&slow).expect("der"));
    s.add("certificate", "two billion iterations", with_form(3, slow.as_bytes()));
    let twice = format!("{}{}{}", leaf.pem(), pem("PRIVATE KEY", &key_der), leaf.pem());
    s.add("certificate", "a certificate twice", with_form(0, twice.as_bytes()));
    let truncated = &bundle.as_bytes()[..bundle.len() / 2];
    s.add("certificate", "truncated bundle", with_form(0, truncated));
    s.add(
        "certificate",
        "legacy encrypted key",
        with_form(
            0,
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
                .as_slice(),
        ),
    );
}
