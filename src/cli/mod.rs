//! The command line: the provider's commands and their arguments. `serve`
//! (the default) runs the provider; the others are operator commands
//! beside it. Go's single-dash spelling of the server's flags is accepted
//! too, derived from their definitions.

pub mod mount;
pub mod probe;
pub mod serve;
pub mod validate;

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use serde_yaml::Value;

pub use serve::{LogFormat, MemoryBudgetArg, ServeArgs};

/// Default socket directory (the driver's `--provider-volume`).
pub const DEFAULT_PROVIDER_VOLUME: &str = "/var/run/secrets-store-csi-providers";

#[derive(Debug, Parser)]
#[command(
    name = "csi-provider-aws",
    version,
    about = "AWS Secrets Manager and SSM Parameter Store provider for the Secrets Store CSI driver",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the provider API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Play the driver's role: mount a SecretProviderClass through a running provider.
    Mount(mount::MountArgs),
    /// Check SecretProviderClass manifests offline, exactly as a Mount would.
    Validate(validate::ValidateArgs),
    /// Liveness and readiness: call Version through the provider socket.
    Probe(probe::ProbeArgs),
}

impl Cli {
    /// Parses the process's arguments, Go's `-flag` spelling included.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Self {
        Self::parse_from(normalize_args(args))
    }

    /// The server's arguments, whether `serve` was named or not.
    pub fn serve_args(&self) -> &ServeArgs {
        match &self.command {
            Some(Command::Serve(a)) => a,
            _ => &self.serve,
        }
    }
}

/// The server's long flags: every one is also accepted with a single dash,
/// as Go's flag package accepts the reference's.
pub fn server_flags() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect()
}

/// Rewrites Go-style `-flag` arguments of the server's flags to `--flag`.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let flags = server_flags();
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") {
                let name = a[1..].split('=').next().unwrap_or_default();
                if flags.iter().any(|f| f == name) {
                    return format!("-{a}");
                }
            }
            a
        })
        .collect()
}

/// Parses a duration such as `2s`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

/// A SecretProviderClass parameter value: the CRD holds strings, but YAML
/// authors write unquoted numbers and booleans too.
pub(crate) fn parameter_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_args(args.iter().map(|s| s.to_string())))
    }

    fn serve(args: &[&str]) -> ServeArgs {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).serve
    }

    #[test]
    fn every_server_flag_is_accepted_with_goes_single_dash() {
        let flags = server_flags();
        assert!(flags.len() > 40, "{flags:?}");
        let cli = Cli::command();
        for flag in &flags {
            let arg = cli.get_arguments().find(|a| a.get_long() == Some(flag.as_str()));
            let Some(arg) = arg else { panic!("--{flag}") };
            // A flag that takes a value is given its own default.
            let value = arg
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty());
            let single = match &value {
                Some(v) => format!("-{flag}={v}"),
                None => format!("-{flag}=x"),
            };
            let normalized = normalize_args(["x".to_string(), single.clone()]);
            assert_eq!(normalized[1], format!("-{single}"), "{flag}");
            if let Some(v) = value {
                assert!(parse(&["x", &format!("-{flag}={v}")]).is_ok(), "-{flag}={v}");
            }
        }
        let s = serve(&[
            "x",
            "-provider-volume=/tmp/p",
            "-qps",
            "20",
            "--burst=40",
            "-max-jmespath-depth=64",
        ]);
        assert_eq!(s.provider_volume, std::path::PathBuf::from("/tmp/p"));
        assert_eq!((s.qps, s.burst), (20.0, 40));
        assert_eq!(s.limits.max_jmespath_depth, 64);
        assert!(
            parse(&["x", "-unknown-flag=1"]).is_err(),
            "only the server's flags are rewritten"
        );
    }

    #[test]
    fn driver_writes_secrets_accepts_bare_and_valued_forms() {
        assert!(serve(&["x", "--driver-writes-secrets"]).driver_writes_secrets);
        assert!(serve(&["x", "--driver-writes-secrets=true"]).driver_writes_secrets);
        assert!(!serve(&["x", "--driver-writes-secrets=false"]).driver_writes_secrets);
        assert!(serve(&["x", "-driver-writes-secrets"]).driver_writes_secrets);
    }

    #[test]
    fn sizes_and_the_go_call_pattern_can_be_configured() {
        let s = serve(&[
            "x",
            "--max-objects-bytes=512KiB",
            "--max-mount-bytes=8MiB",
            "--max-file-bytes",
            "4096",
            "--cache-ttl=0",
            "--credential-cache=false",
            "--service-account-cache-ttl=0",
            "--batch-get-secret-value=false",
            "--max-concurrent-fetches=1",
            "--single-flight=false",
            "--pod-identity-cache-scope=service-account",
        ]);
        let limits = s.limits.limits();
        assert_eq!(
            (limits.max_objects_bytes, limits.max_mount_bytes, limits.max_file_bytes),
            (512 * 1024, 8 * 1024 * 1024, 4096)
        );
        assert!(!s.credential_cache && !s.batch_get_secret_value && !s.single_flight);
        assert_eq!(s.service_account_cache_ttl, Duration::ZERO);
        assert_eq!(s.max_concurrent_fetches, 1);
        assert_eq!(
            s.pod_identity_cache_scope,
            crate::identity::PodIdentityScope::ServiceAccount
        );
    }

    /// Every value a server flag refuses, and the rule its message names.
    #[test]
    fn invalid_values_are_refused_naming_the_flag_and_the_rule() {
        let cases: &[(&str, &str)] = &[
            ("--max-objects-bytes=0", "a positive number of bytes"),
            ("--max-objects-bytes=lots", "a positive number of bytes"),
            ("--max-jmespath-depth=65", "a number from 1 to 64"),
            ("--max-jmespath-depth=0", "a number from 1 to 64"),
            ("--max-files-per-mount=0", "a whole number of at least 1"),
            ("--max-name-length=0", "a whole number of at least 1"),
            ("--max-jmespath-length=0", "a whole number of at least 1"),
            ("--max-pages-per-selection=0", "0 is not in 1.."),
            ("--mount-timeout=0s", "a positive duration"),
            ("--aws-operation-timeout=soon", "a positive duration"),
            ("--cache-ttl=banana", "0 turns it off"),
            ("--qps=0", "a positive number of queries per second"),
            ("--qps=-1", "a positive number of queries per second"),
            ("--qps=inf", "a positive number of queries per second"),
            ("--burst=0", "0 is not in 1.."),
            ("--max-concurrent-fetches=0", "a whole number of at least 1"),
            ("--max-concurrent-mounts=0", "a whole number of at least 1"),
            ("--max-concurrent-aws-calls=0", "a whole number of at least 1"),
            ("--http-max-connections=0", "a whole number of at least 1"),
            ("--http-addr=8989", "a host and port such as 0.0.0.0:8989"),
            ("--http-addr=0.0.0.0:http", "a host and port such as 0.0.0.0:8989"),
            ("--http-addr=0.0.0.0:70000", "a host and port such as 0.0.0.0:8989"),
            ("--log-level=loud", "invalid log level \"loud\": a level (off, error"),
            ("--log-level=info,[", "invalid log level \"info,[\""),
            (
                "--pod-identity-endpoint-ipv4=169.254.170.23/v1/credentials",
                "an http:// URL with a host",
            ),
            (
                "--pod-identity-endpoint-ipv6=ftp://[fd00:ec2::23]/v1/credentials",
                "an http:// URL with a host",
            ),
            ("--memory-budget=1MiB", "at least 8.0 MiB (or auto)"),
            ("--log-format=xml", "possible values: text, json"),
        ];
        for (arg, rule) in cases {
            let flag = arg.split('=').next().unwrap_or_default();
            match parse(&["x", arg]) {
                Ok(_) => panic!("{arg} accepted"),
                Err(e) => {
                    let text = e.to_string();
                    assert_eq!(e.exit_code(), 2, "{arg}");
                    assert!(text.contains(flag) && text.contains(rule), "{arg}: {text}");
                }
            }
        }
        for ok in [
            "--http-addr=",
            "--http-addr=[::]:8989",
            "--http-addr=localhost:8989",
            "--http-addr=10.0.0.1:9000",
            "--log-level=info,csi_provider_aws=debug",
            "--log-level=DEBUG",
            "--qps=0.5",
        ] {
            assert!(parse(&["x", ok]).is_ok(), "{ok}");
        }
    }
}
