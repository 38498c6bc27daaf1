//! Kubernetes API schema validation of manifests, with kubernetes-validate
//! from the project's virtualenv (`scripts/venv`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Validates `files` strictly against the schemas of Kubernetes `version`;
/// fails the test on any error or warning. Returns how many resources passed.
pub fn validate_strict(files: &[PathBuf], version: &str) -> usize {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/venv (scripts/test does)",
        tool.display()
    );
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "Kubernetes {version}:\n{text}");
    assert!(
        !text.contains("ERROR") && !text.contains("WARN"),
        "Kubernetes {version}:\n{text}"
    );
    text.matches("passed for resource").count()
}

/// The audiences of a `tokenRequests` list (CSIDriver or driver chart values).
pub fn token_audiences(token_requests: &serde_yaml::Value) -> Vec<String> {
    token_requests
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|t| t["audience"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
