//! Objects that select many: every page of SSM `GetParametersByPath` (with
//! decryption) or of Secrets Manager `BatchGetSecretValue` with filters.
//! Paging stops as soon as the matches of all of a mount's objects that
//! select many would exceed what one mount may hold (`--max-files-per-mount`,
//! `--max-mount-bytes`, a [`Budget`](super::Budget) shared by the mount), and
//! the mount fails with the limit's message: memory stays bounded by one
//! mount's worth, and a set cut short is never kept. The
//! primary region is asked first; the failover region only after a
//! retryable failure, for the whole set.

use std::collections::HashSet;

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::secrets_manager::secret_value;
use super::{FetchError, Fetched, UnitContext};
use crate::aws::{AwsError, no_client};
use crate::fetched::Origin;
use crate::region::{Failed, with_failover};
use crate::spec::ObjectSpec;
use crate::spec::bulk::{BulkSpec, Selection};

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

/// Why paging stopped before the last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PagingProblem {
    /// AWS (or a proxy in front of it) answered with a `NextToken` it had
    /// already given: the same pages would be listed forever.
    #[error("AWS returned a NextToken it had already returned, after {pages} pages (a paging loop)")]
    RepeatedToken { pages: u32 },
    /// More pages than one selection may list, empty pages included.
    #[error("more than {max} pages")]
    TooManyPages { max: u32 },
}

/// The pages of one listing: the token of the next page, and the checks
/// that it ends. Every page counts, empty ones included.
pub(crate) struct Pages {
    max: u32,
    count: u32,
    seen: HashSet<String>,
    next: Option<String>,
}

impl Pages {
    pub fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            count: 0,
            seen: HashSet::new(),
            next: None,
        }
    }

    /// The token to ask the next page with (`None`: the first page).
    pub fn token(&self) -> Option<String> {
        self.next.clone()
    }

    /// A page came back with `token`: `true` to ask for the next page,
    /// `false` when this was the last.
    pub fn next(&mut self, token: Option<String>) -> Result<bool, PagingProblem> {
        self.count += 1;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(false);
        };
        if self.count >= self.max {
            return Err(PagingProblem::TooManyPages { max: self.max });
        }
        if !self.seen.insert(token.clone()) {
            return Err(PagingProblem::RepeatedToken { pages: self.count });
        }
        self.next = Some(token);
        Ok(true)
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
        origin: Origin::aws(object.name.clone(), region),
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
    ctx.quota.take(&object.name, page.len() as u64, bytes as u64)
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
    let mut pages = Pages::new(ctx.quota.max_pages());
    loop {
        let token = pages.token();
        let (out, responses) = ctx
            .call("ssm.GetParametersByPath", ctx.retries_throttled_in(region), |charge| {
                client
                    .get_parameters_by_path()
                    .path(path)
                    .recursive(recursive)
                    .with_decryption(true)
                    .max_results(10)
                    .set_next_token(token.clone())
                    .customize()
                    .config_override(ctx.creds.for_ssm())
                    .interceptor(charge)
                    .send()
            })
            .await
            .map_err(|e| e.into_fetch(err))?;
        let first = members.len();
        for mut p in out.parameters.unwrap_or_default() {
            let fetched = Fetched {
                value: ctx.value(p.value.take().unwrap_or_default().into_bytes()).await?,
                version: p.version.to_string(),
                origin: Origin::aws(p.arn.take().or_else(|| p.name.clone()).unwrap_or_default(), region),
                ..Default::default()
            };
            members.push((p.name.take().unwrap_or_default(), fetched));
        }
        drop(responses);
        take(ctx, object, &members[first..])?;
        if !pages
            .next(out.next_token)
            .map_err(|problem| paging(ctx, object, Form::Parameters, region, problem))?
        {
            break;
        }
    }
    Ok(members)
}

/// The error of a listing whose paging did not end.
fn paging(ctx: &UnitContext, object: &ObjectSpec, form: Form, region: &str, problem: PagingProblem) -> FetchError {
    match problem {
        PagingProblem::TooManyPages { .. } => ctx.quota.too_many_pages(format!(
            "{} in {} in {region} (the set is not mounted)",
            crate::limits::Echo(&object.name),
            form.service()
        )),
        problem => FetchError::Paging {
            what: object.name.clone(),
            form,
            region: region.to_string(),
            problem,
        },
    }
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
    let mut pages = Pages::new(ctx.quota.max_pages());
    loop {
        let token = pages.token();
        let (out, responses) = ctx
            .call(
                "secretsmanager.BatchGetSecretValue",
                ctx.retries_throttled_in(region),
                |charge| {
                    client
                        .batch_get_secret_value()
                        .set_filters(Some(aws_filters.clone()))
                        .max_results(20)
                        .set_next_token(token.clone())
                        .customize()
                        .config_override(ctx.creds.for_secrets_manager())
                        .interceptor(charge)
                        .send()
                },
            )
            .await
            .map_err(|e| e.into_fetch(err))?;
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
                value: secret_value(ctx, v.secret_string.take(), v.secret_binary.take()).await?,
                version: v.version_id.take().unwrap_or_default(),
                origin: Origin::aws(v.arn.take().or_else(|| v.name.clone()).unwrap_or_default(), region),
                ..Default::default()
            };
            members.push((v.name.take().unwrap_or_default(), fetched));
        }
        drop(responses);
        take(ctx, object, &members[first..])?;
        if !pages
            .next(out.next_token)
            .map_err(|problem| paging(ctx, object, Form::Secrets, region, problem))?
        {
            break;
        }
    }
    Ok(members)
}
