//! Objects that select many: every page of SSM `GetParametersByPath` (with
//! decryption) or of Secrets Manager `BatchGetSecretValue` with filters.
//! Paging stops as soon as the matches of all of a mount's objects that
//! select many would exceed what one mount may hold (`--max-files-per-mount`,
//! `--max-mount-bytes`, a [`Budget`](super::Budget) shared by the mount), and
//! the mount fails with the limit's message: memory stays bounded by one
//! mount's worth, and a set cut short is never kept. The
//! primary region is asked first; the failover region only after a
//! retryable failure, for the whole set.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::secrets_manager::secret_value;
use super::{FetchError, Fetched, UnitContext};
use crate::aws::{AwsError, no_client};
use crate::region::{Failed, with_failover};
use crate::secret::SecretBytes;
use crate::spec::ObjectSpec;
use crate::spec::bulk::{BulkSpec, Selection};
use crate::telemetry::Family;

/// The two forms of a bulk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Parameters,
    Secrets,
}

impl Form {
    pub fn service(self) -> &'static str {
        match self {
            Form::Parameters => "SSM Parameter Store",
            Form::Secrets => "Secrets Manager",
        }
    }

    /// The IAM actions the form needs, named when AWS denies one.
    pub fn actions(self) -> &'static str {
        match self {
            Form::Parameters => "ssm:GetParametersByPath on the path (and kms:Decrypt for SecureString)",
            Form::Secrets => {
                "secretsmanager:BatchGetSecretValue and secretsmanager:ListSecrets (on *), and \
                 secretsmanager:GetSecretValue on each matching secret"
            }
        }
    }
}

/// Every match of `object` (a bulk object), as `(name, value)` members of
/// one [`Fetched`], in the order AWS listed them.
pub(crate) async fn fetch(ctx: &UnitContext, object: &ObjectSpec) -> Result<Fetched, FetchError> {
    let Some(spec) = &object.bulk else {
        return Err(FetchError::Missing {
            service: "AWS",
            selector: object.name.clone(),
            region: ctx.regions.primary.clone(),
        });
    };
    let result = with_failover(&ctx.regions, FetchError::failure, |region, _| {
        fetch_in(ctx, object, spec, region)
    })
    .await;
    result.map_err(|f| match f {
        Failed::Primary(e) => e,
        Failed::Both { primary, failover } => FetchError::BulkAllRegions {
            what: object.name.clone(),
            primary: Box::new(primary),
            failover: Box::new(failover),
        },
    })
}

async fn fetch_in(
    ctx: &UnitContext,
    object: &ObjectSpec,
    spec: &BulkSpec,
    region: &str,
) -> Result<Fetched, FetchError> {
    let members = match &spec.selection {
        Selection::Parameters { path, recursive } => parameters(ctx, object, region, path, *recursive).await?,
        Selection::Secrets { prefix, filters } => secrets(ctx, object, region, prefix.as_deref(), filters).await?,
    };
    if members.is_empty() && !spec.allow_empty {
        return Err(FetchError::NoMatches {
            what: object.name.clone(),
            form: form(spec),
            region: region.to_string(),
        });
    }
    Ok(Fetched {
        members,
        ..Default::default()
    })
}

fn form(spec: &BulkSpec) -> Form {
    match spec.selection {
        Selection::Parameters { .. } => Form::Parameters,
        Selection::Secrets { .. } => Form::Secrets,
    }
}

/// Takes the budget for one page of matches (`page` new members).
fn take(ctx: &UnitContext, object: &ObjectSpec, page: &[(String, Fetched)]) -> Result<(), FetchError> {
    let bytes: usize = page.iter().map(|(_, f)| f.value.len()).sum();
    ctx.budget.take(&object.name, page.len() as u64, bytes as u64)
}

async fn parameters(
    ctx: &UnitContext,
    object: &ObjectSpec,
    region: &str,
    path: &str,
    recursive: bool,
) -> Result<Vec<(String, Fetched)>, FetchError> {
    let err = |error: AwsError| FetchError::Bulk {
        what: object.name.clone(),
        form: Form::Parameters,
        region: region.to_string(),
        error,
    };
    let client = ctx.aws.ssm(region).ok_or_else(|| err(no_client(region)))?;
    let mut members = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let send = client
            .get_parameters_by_path()
            .path(path)
            .recursive(recursive)
            .with_decryption(true)
            .max_results(10)
            .set_next_token(next_token.take())
            .customize()
            .config_override(ctx.creds.for_ssm())
            .send();
        let out = ctx
            .aws
            .call(Family::Aws, "ssm.GetParametersByPath", send)
            .await
            .map_err(err)?;
        let first = members.len();
        for mut p in out.parameters.unwrap_or_default() {
            let fetched = Fetched {
                value: SecretBytes::from(p.value.take().unwrap_or_default()),
                version: p.version.to_string(),
                ..Default::default()
            };
            members.push((p.name.take().unwrap_or_default(), fetched));
        }
        take(ctx, object, &members[first..])?;
        match out.next_token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => break,
        }
    }
    Ok(members)
}

async fn secrets(
    ctx: &UnitContext,
    object: &ObjectSpec,
    region: &str,
    prefix: Option<&str>,
    filters: &[(String, Vec<String>)],
) -> Result<Vec<(String, Fetched)>, FetchError> {
    let err = |error: AwsError| FetchError::Bulk {
        what: object.name.clone(),
        form: Form::Secrets,
        region: region.to_string(),
        error,
    };
    let mut aws_filters: Vec<Filter> = Vec::with_capacity(filters.len() + 1);
    if let Some(p) = prefix {
        aws_filters.push(
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values(p.to_string())
                .build(),
        );
    }
    for (key, values) in filters {
        aws_filters.push(
            Filter::builder()
                .key(FilterNameStringType::from(key.as_str()))
                .set_values(Some(values.clone()))
                .build(),
        );
    }
    let client = ctx.aws.secrets_manager(region).ok_or_else(|| err(no_client(region)))?;
    let mut members = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let send = client
            .batch_get_secret_value()
            .set_filters(Some(aws_filters.clone()))
            .max_results(20)
            .set_next_token(next_token.take())
            .customize()
            .config_override(ctx.creds.for_secrets_manager())
            .send();
        let out = ctx
            .aws
            .call(Family::Aws, "secretsmanager.BatchGetSecretValue", send)
            .await
            .map_err(err)?;
        // A secret that matched but could not be read fails the set: a
        // partial set would silently drop a file.
        if let Some(e) = out.errors.unwrap_or_default().into_iter().next() {
            let code = e.error_code.clone();
            let error = AwsError {
                failure: crate::aws::classify_code(code.as_deref(), 400),
                code,
                message: e.message.unwrap_or_default(),
            };
            return Err(FetchError::Secret {
                name: e.secret_id.unwrap_or_default(),
                region: region.to_string(),
                error,
            });
        }
        let first = members.len();
        for mut v in out.secret_values.unwrap_or_default() {
            let fetched = Fetched {
                value: secret_value(v.secret_string.take(), v.secret_binary.take()),
                version: v.version_id.take().unwrap_or_default(),
                ..Default::default()
            };
            members.push((v.name.take().unwrap_or_default(), fetched));
        }
        take(ctx, object, &members[first..])?;
        match out.next_token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => break,
        }
    }
    Ok(members)
}
