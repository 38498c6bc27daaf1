//! The release binaries that `scripts/release` builds (static musl, for
//! linux/amd64 and linux/arm64, the image's binaries): static executables
//! for their machine, carrying the dependency list image scanners read, and
//! each serving a real Mount through its socket against moto, the arm64 one
//! under `qemu-aarch64`.

#![allow(clippy::panic)]

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aws_sdk_ssm::types::ParameterType;
use common::moto::{self, unique};
use common::*;
use object::Endianness;
use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};

struct Release {
    /// As Docker and Debian name it.
    arch: &'static str,
    machine: u16,
    /// What runs it on this (x86_64) machine.
    launcher: &'static [&'static str],
}

const RELEASES: [Release; 2] = [
    Release {
        arch: "amd64",
        machine: elf::EM_X86_64,
        launcher: &[],
    },
    Release {
        arch: "arm64",
        machine: elf::EM_AARCH64,
        launcher: &["qemu-aarch64"],
    },
];

/// `<target-dir>/dist/csi-provider-aws-linux-<arch>`, where scripts/release
/// leaves it (`RELEASE_OUT` moves it).
fn binary(arch: &str) -> PathBuf {
    let dir = std::env::var_os("RELEASE_OUT")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target-dir>/debug/csi-provider-aws
            let debug_bin = Path::new(env!("CARGO_BIN_EXE_csi-provider-aws"));
            debug_bin.ancestors().nth(2).expect("target directory").join("dist")
        });
    let path = dir.join(format!("csi-provider-aws-linux-{arch}"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/release (scripts/test does)",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs the release binaries (scripts/release); scripts/test runs it"]
fn the_release_binaries_are_static_executables_for_their_machine() {
    for r in &RELEASES {
        let data = std::fs::read(binary(r.arch)).unwrap();
        let file = ElfFile64::<Endianness>::parse(&*data).unwrap();
        let endian = file.endian();
        let header = file.elf_header();
        assert_eq!(header.e_machine(endian), r.machine, "{}: machine", r.arch);
        // An executable (static-pie is ET_DYN), not a shared library: it
        // has an entry point.
        assert!(header.e_entry(endian) != 0, "{}: no entry point", r.arch);
        let interpreter = file
            .elf_program_headers()
            .iter()
            .any(|ph| ph.p_type(endian) == elf::PT_INTERP);
        assert!(!interpreter, "{}: asks for a dynamic loader", r.arch);
        let needed = match file.elf_section_table().dynamic(endian, &*data).unwrap() {
            Some((entries, _)) => entries
                .iter()
                .filter(|d| d.tag32(endian) == Some(elf::DT_NEEDED as i32))
                .count(),
            None => 0,
        };
        assert_eq!(needed, 0, "{}: needs shared libraries", r.arch);
    }
}

/// `(name, version)` of every package in Cargo.lock.
fn locked_packages() -> BTreeSet<(String, String)> {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let mut out = BTreeSet::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.insert((n, v.trim_matches('"').to_string()));
        }
    }
    out
}

#[test]
#[ignore = "needs the release binaries (scripts/release); scripts/test runs it"]
fn the_release_binaries_carry_their_dependency_list_for_image_scanners() {
    let locked = locked_packages();
    assert!(locked.len() > 100, "{} locked packages", locked.len());
    for r in &RELEASES {
        let json = auditable_info::json_from_file(&binary(r.arch), Default::default())
            .unwrap_or_else(|e| panic!("{}: no dependency list (cargo auditable): {e}", r.arch));
        let info: serde_json::Value = serde_json::from_str(&json).unwrap();
        let packages = info["packages"].as_array().unwrap();
        let listed: BTreeSet<(String, String)> = packages
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        // Exactly the versions the build locked, and this crate as the root.
        let unlocked: Vec<_> = listed.difference(&locked).collect();
        assert!(unlocked.is_empty(), "{}: not in Cargo.lock: {unlocked:?}", r.arch);
        let roots: Vec<_> = packages.iter().filter(|p| p["root"] == true).collect();
        assert_eq!(roots.len(), 1, "{}", r.arch);
        assert_eq!(roots[0]["name"], "csi-provider-aws");
        assert_eq!(roots[0]["version"], env!("CARGO_PKG_VERSION"));
        // What a scanner must see to match advisories: the TLS stack, the
        // AWS SDK, the runtime; build-only crates marked as such; no
        // test-only crate.
        for name in [
            "aws-lc-sys",
            "rustls",
            "aws-sdk-secretsmanager",
            "aws-sdk-ssm",
            "aws-sdk-sts",
            "tokio",
            "tonic",
            "hyper",
            "kube-client",
            "minijinja",
            "zeroize",
        ] {
            let p = packages
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{}: {name} is not listed", r.arch));
            assert_ne!(p["kind"], "build", "{}: {name} is a runtime dependency", r.arch);
        }
        let build = packages
            .iter()
            .find(|p| p["name"] == "tonic-prost-build")
            .unwrap_or_else(|| panic!("{}: tonic-prost-build is not listed", r.arch));
        assert_eq!(build["kind"], "build", "{}", r.arch);
        for dev_only in ["proptest", "auditable-info"] {
            assert!(
                !packages.iter().any(|p| p["name"] == dev_only),
                "{}: {dev_only} is a test dependency",
                r.arch
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the release binaries (scripts/release), qemu-user and moto; scripts/test runs it"]
async fn each_release_binary_serves_a_mount_against_moto() {
    for r in &RELEASES {
        if let Some(program) = r.launcher.first() {
            let found = std::process::Command::new(program).arg("--version").output();
            assert!(
                found.is_ok_and(|o| o.status.success()),
                "{program} is missing: apt-get install qemu-user (scripts/test does)"
            );
        }
        let (kube, provider) = moto::env(Options {
            binary: Some(binary(r.arch)),
            launcher: r.launcher.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        })
        .await;
        let secret = unique(&format!("release-{}-db", r.arch));
        let param = unique(&format!("/release/{}/region", r.arch));
        moto::secrets_manager(REGION)
            .create_secret()
            .name(&secret)
            .secret_string(r#"{"username":"app","password":"s3cret-value"}"#)
            .send()
            .await
            .unwrap();
        let put = |value: &'static str| {
            moto::ssm(REGION)
                .put_parameter()
                .name(&param)
                .value(value)
                .r#type(ParameterType::SecureString)
                .overwrite(true)
                .send()
        };
        put("eu-central-1").await.unwrap();
        let objects = format!(
            "- objectName: {secret}\n  objectType: secretsmanager\n  objectAlias: db\n  jmesPath:\n    - path: password\n      objectAlias: db-password\n- objectName: {param}\n  objectType: ssmparameter\n  objectAlias: region\n"
        );
        let target = provider.target("release");
        let req = Req::new(&objects, &target);
        let first = provider
            .mount(&req)
            .await
            .unwrap_or_else(|e| panic!("{}: mount: {e}\n{}", r.arch, provider.logs()));
        let files = read_mount(&target);
        assert_eq!(
            files["db"], br#"{"username":"app","password":"s3cret-value"}"#,
            "{}",
            r.arch
        );
        assert_eq!(files["db-password"], b"s3cret-value", "{}", r.arch);
        assert_eq!(files["region"], b"eu-central-1", "{}", r.arch);
        assert_eq!(versions(&first)["region"], "1", "{}", r.arch);
        assert!(
            kube.calls().iter().any(|c| c.ends_with("/serviceaccounts/sa-a")),
            "{}: the pod's identity was resolved",
            r.arch
        );
        // A rotation reaches the files.
        put("eu-west-1").await.unwrap();
        let second = provider.mount(&req).await.expect("remount");
        assert_eq!(read_mount(&target)["region"], b"eu-west-1", "{}", r.arch);
        assert_eq!(versions(&second)["region"], "2", "{}", r.arch);
        assert!(
            !provider.logs().contains("s3cret-value"),
            "{}: a value in the log",
            r.arch
        );
    }
}

/// The checkout's tracked files as they are now, copied into `dest`.
fn copy_tracked_files(dest: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("a UTF-8 file name");
        let (from, to) = (root.join(name), dest.join(name));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // A tracked file deleted in the working tree is not built either.
        if from.is_file() {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// A cargo home at a different path with the same contents (registry,
/// installed tools): cargo hands rustc and the C compiler paths under it.
fn cargo_home_elsewhere(dest: &Path) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(&home).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    dest.to_path_buf()
}

#[test]
#[ignore = "builds the amd64 release binary a second time (minutes), after scripts/release; scripts/test runs it"]
fn a_second_build_of_the_same_sources_elsewhere_is_bit_identical() {
    // What a user does to check an image's binary (README, "Verifying a
    // release binary"): the same sources built in another checkout, with
    // another cargo home and target directory, later.
    let first = std::fs::read(binary("amd64")).unwrap();
    let work = tempfile::Builder::new().prefix("second-build-").tempdir().unwrap();
    let checkout = work.path().join("another/checkout");
    copy_tracked_files(&checkout);
    let cargo_home = cargo_home_elsewhere(&work.path().join("another-cargo-home"));
    let dist = work.path().join("dist");
    let mut build = std::process::Command::new(checkout.join("scripts/release"));
    // Nothing of this test's own cargo run leaks into the build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") || key.starts_with("RUSTC") || key == "RUSTFLAGS" || key == "CLIPPY_ARGS" {
            build.env_remove(key);
        }
    }
    let status = build
        .arg("amd64")
        .current_dir(&checkout)
        .env("CARGO_HOME", &cargo_home)
        .env("CARGO_TARGET_DIR", work.path().join("target"))
        .env("RELEASE_OUT", &dist)
        .status()
        .expect("scripts/release");
    assert!(status.success(), "the second build failed: {status}");
    let second = std::fs::read(dist.join("csi-provider-aws-linux-amd64")).unwrap();
    if first != second {
        // Kept for a look (e.g. `cmp -l`, `readelf -S`), beside the first.
        let kept = binary("amd64").with_extension("second-build");
        std::fs::write(&kept, &second).unwrap();
        panic!(
            "the two builds differ ({} and {} bytes; the second is kept in {}): {}",
            first.len(),
            second.len(),
            kept.display(),
            differences(&first, &second)
        );
    }
}

/// Where two ELF files differ: each run of differing bytes (the first few),
/// with the section it falls in.
fn differences(a: &[u8], b: &[u8]) -> String {
    use object::{Object, ObjectSection};
    let sections: Vec<(String, u64, u64)> = object::File::parse(a)
        .map(|f| {
            f.sections()
                .filter_map(|s| {
                    let (offset, size) = s.file_range()?;
                    Some((s.name().unwrap_or("?").to_string(), offset, size))
                })
                .collect()
        })
        .unwrap_or_default();
    let section_of = |at: usize| {
        sections
            .iter()
            .find(|(_, offset, size)| (*offset..offset + size).contains(&(at as u64)))
            .map_or("(no section)", |(name, _, _)| name.as_str())
    };
    let mut runs = Vec::new();
    let mut i = 0;
    let common = a.len().min(b.len());
    while i < common && runs.len() < 12 {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < common && a[i] != b[i] {
            i += 1;
        }
        runs.push(format!("{} bytes at {start:#x} in {}", i - start, section_of(start)));
    }
    runs.join(", ")
}
