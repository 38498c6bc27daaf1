//! `csi-provider-aws mount`: plays the driver's role against a running
//! provider. It reads a SecretProviderClass manifest, builds the mount
//! attributes exactly as the driver does (SPC parameters, then volume
//! attributes, pod information and the service-account token map), calls
//! `Mount` over the socket, applies returned files with the same atomic
//! writer layout the driver uses, and prints the object versions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_yaml::Value;

use crate::proto::v1alpha1::MountRequest;
use crate::render::FileOut;
use crate::render::write::{WriteOptions, WriteOutcome, write_atomic};
use crate::secret::SecretBytes;
use crate::spec::keys;

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// SecretProviderClass manifest (YAML).
    #[arg(long = "spc", value_name = "FILE")]
    pub spc: PathBuf,
    /// Directory to mount into (the pod volume's target path).
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Provider socket.
    #[arg(long, default_value = "/var/run/secrets-store-csi-providers/aws.sock")]
    pub socket: PathBuf,
    /// Pod name.
    #[arg(long, default_value = "debug-pod")]
    pub pod_name: String,
    /// Pod namespace (default: the SecretProviderClass's namespace, else `default`).
    #[arg(long)]
    pub pod_namespace: Option<String>,
    /// Pod UID.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub pod_uid: String,
    /// ServiceAccount of the pod.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Service-account token for an audience: AUDIENCE=FILE (repeatable).
    #[arg(long = "token", value_name = "AUDIENCE=FILE")]
    pub tokens: Vec<String>,
    /// Extra volume attribute KEY=VALUE (repeatable); overrides SPC parameters.
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Print each file's contents after mounting (shows secret values).
    #[arg(long)]
    pub show_contents: bool,
}

/// Errors of the debug client.
#[derive(Debug, thiserror::Error)]
pub enum MountCommandError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a SecretProviderClass for provider aws: {reason}")]
    NotAnSpc { path: PathBuf, reason: String },
    #[error("invalid {flag} value {value:?}: expected {expected}")]
    Flag {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot connect to the provider at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("mount failed: {code:?}: {message}")]
    Mount { code: tonic::Code, message: String },
    #[error("the provider returned an error code {0}")]
    ProviderCode(String),
    #[error("missing object versions: the provider returned none")]
    NoVersions,
    #[error("failed to write the returned files: {0}")]
    Write(#[from] crate::render::write::WriteError),
}

/// Builds the attributes JSON the driver would send.
pub fn build_attributes(args: &MountArgs, spc_text: &str) -> Result<String, MountCommandError> {
    let not_spc = |reason: &str| MountCommandError::NotAnSpc {
        path: args.spc.clone(),
        reason: reason.to_string(),
    };
    let doc: Value = serde_yaml::from_str(spc_text).map_err(|e| not_spc(&e.to_string()))?;
    if doc.get("kind").and_then(Value::as_str) != Some("SecretProviderClass") {
        return Err(not_spc("kind is not SecretProviderClass"));
    }
    let spec = doc.get("spec").ok_or_else(|| not_spc("no spec"))?;
    if spec.get("provider").and_then(Value::as_str) != Some("aws") {
        return Err(not_spc("spec.provider is not aws"));
    }
    let spc_name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("debug-spc")
        .to_string();
    let namespace = args
        .pod_namespace
        .clone()
        .or_else(|| {
            doc.get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".to_string());

    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Mapping(params)) = spec.get("parameters") {
        for (k, v) in params {
            let (Some(k), Some(v)) = (k.as_str(), super::parameter_string(v)) else {
                return Err(not_spc("spec.parameters must map strings to strings"));
            };
            attrs.insert(k.to_string(), v);
        }
    }
    attrs.insert("secretProviderClass".into(), spc_name);
    for kv in &args.attributes {
        let (k, v) = kv.split_once('=').ok_or_else(|| MountCommandError::Flag {
            flag: "--attribute",
            value: kv.clone(),
            expected: "KEY=VALUE",
        })?;
        attrs.insert(k.to_string(), v.to_string());
    }
    attrs.insert(keys::POD_NAME.into(), args.pod_name.clone());
    attrs.insert(keys::POD_NAMESPACE.into(), namespace);
    attrs.insert(keys::POD_UID.into(), args.pod_uid.clone());
    attrs.insert(keys::SERVICE_ACCOUNT.into(), args.service_account.clone());
    attrs.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());

    let expiry = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
    let mut tokens = serde_json::Map::new();
    for t in &args.tokens {
        let (audience, file) = t.split_once('=').ok_or_else(|| MountCommandError::Flag {
            flag: "--token",
            value: t.clone(),
            expected: "AUDIENCE=FILE",
        })?;
        let token = std::fs::read_to_string(file).map_err(|source| MountCommandError::Read {
            path: file.into(),
            source,
        })?;
        tokens.insert(
            audience.to_string(),
            serde_json::json!({"token": token.trim(), "expirationTimestamp": expiry}),
        );
    }
    if !tokens.is_empty() {
        attrs.insert(keys::TOKENS.into(), serde_json::Value::Object(tokens).to_string());
    }
    Ok(serde_json::to_string(&attrs).unwrap_or_else(|_| "{}".to_string()))
}

/// Runs the debug mount and prints what a pod would see.
pub async fn run(args: MountArgs) -> Result<(), MountCommandError> {
    let text = std::fs::read_to_string(&args.spc).map_err(|source| MountCommandError::Read {
        path: args.spc.clone(),
        source,
    })?;
    let attributes = build_attributes(&args, &text)?;
    std::fs::create_dir_all(&args.target).map_err(|source| MountCommandError::Read {
        path: args.target.clone(),
        source,
    })?;
    let target = std::fs::canonicalize(&args.target).map_err(|source| MountCommandError::Read {
        path: args.target.clone(),
        source,
    })?;
    let mut client = crate::client::connect(&args.socket)
        .await
        .map_err(|source| MountCommandError::Connect {
            socket: args.socket.clone(),
            source,
        })?;
    let response = client
        .mount(MountRequest {
            attributes,
            secrets: "null".to_string(),
            target_path: target.to_string_lossy().into_owned(),
            permission: "420".to_string(),
            current_object_version: Vec::new(),
        })
        .await
        .map_err(|s| MountCommandError::Mount {
            code: s.code(),
            message: s.message().to_string(),
        })?
        .into_inner();
    if let Some(e) = response.error.as_ref().filter(|e| !e.code.is_empty()) {
        return Err(MountCommandError::ProviderCode(e.code.clone()));
    }
    if response.object_version.is_empty() {
        return Err(MountCommandError::NoVersions);
    }
    if response.files.is_empty() {
        println!("the provider wrote the files into {}", target.display());
    } else {
        let files: Vec<FileOut> = response
            .files
            .into_iter()
            .map(|f| FileOut {
                path: f.path,
                mode: (f.mode as u32) & 0o777,
                contents: SecretBytes::new(f.contents.to_vec()),
            })
            .collect();
        let outcome = tokio::task::spawn_blocking({
            let target = target.clone();
            move || write_atomic(&target, &files, WriteOptions::default())
        })
        .await
        .map_err(|e| MountCommandError::Read {
            path: target.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        match outcome {
            WriteOutcome::Written => println!("wrote the returned files into {}", target.display()),
            WriteOutcome::Unchanged => println!("{} is already up to date", target.display()),
            WriteOutcome::Superseded => println!("{} was written by a later mount", target.display()),
        }
    }
    println!("object versions:");
    for v in &response.object_version {
        println!("  {}\t{}", v.id, v.version);
    }
    if args.show_contents {
        for v in &response.object_version {
            let path = target.join(&v.id);
            match std::fs::read(&path) {
                Ok(bytes) => println!("--- {} ---\n{}", v.id, String::from_utf8_lossy(&bytes)),
                Err(e) => println!("--- {} --- (unreadable: {e})", v.id),
            }
        }
    }
    Ok(())
}
