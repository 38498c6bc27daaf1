//! Secrets Manager: `GetSecretValue` by name or ARN with `VersionId` and
//! `VersionStage`, and `BatchGetSecretValue` for up to 20 objects without a
//! version field. The value is `SecretString`, else the raw `SecretBinary`.

use aws_sdk_secretsmanager::primitives::Blob;

use super::bulk::{Form, PagingProblem};
use super::{CallError, FetchError, Fetched, UnitContext, all_regions};
use crate::aws::{AwsError, no_client};
use crate::failure::Failure;
use crate::fetched::Origin;
use crate::memory::MemoryError;
use crate::region::with_failover;
use crate::secret::SecretBytes;
use crate::spec::ObjectSpec;

/// The most secrets one `BatchGetSecretValue` call takes.
pub const MAX_BATCH: usize = 20;

/// Groups items into batches of at most [`MAX_BATCH`] distinct secret ids,
/// in list order (repeated ids share a slot).
pub fn batches<T: Clone>(items: &[T], id: impl Fn(&T) -> String) -> Vec<Vec<T>> {
    let mut out: Vec<(Vec<String>, Vec<T>)> = Vec::new();
    for item in items {
        let key = id(item);
        let slot = out
            .iter()
            .position(|(ids, _)| ids.contains(&key) || ids.len() < MAX_BATCH);
        let batch = match slot {
            Some(p) => &mut out[p],
            None => {
                out.push((Vec::new(), Vec::new()));
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        if !batch.0.contains(&key) {
            batch.0.push(key);
        }
        batch.1.push(item.clone());
    }
    out.into_iter().map(|(_, items)| items).collect()
}

/// One object by `GetSecretValue`, failing over on a retryable error.
pub(crate) async fn fetch(ctx: &UnitContext, object: &ObjectSpec) -> Result<Fetched, FetchError> {
    let result = with_failover(&ctx.regions, FetchError::failure, |region, failover| {
        let (name, version, label) = selector(object, failover);
        get(ctx, region, name, version, label)
    })
    .await;
    all_regions(result, |primary, failover| FetchError::SecretAllRegions {
        name: object.name.clone(),
        primary,
        failover,
    })
}

/// After the primary region already failed for `object` (in a batch): the
/// rest of the failover step, as [`fetch`] would take it.
async fn fail_over(ctx: &UnitContext, object: &ObjectSpec, primary: FetchError) -> Result<Fetched, FetchError> {
    let mut primary = Some(primary);
    let result = with_failover(&ctx.regions, FetchError::failure, |region, failover| {
        let first = primary.take();
        let (name, version, label) = selector(object, failover);
        async move {
            match first {
                Some(e) if !failover => Err(e),
                _ => get(ctx, region, name, version, label).await,
            }
        }
    })
    .await;
    all_regions(result, |primary, failover| FetchError::SecretAllRegions {
        name: object.name.clone(),
        primary,
        failover,
    })
}

/// The secret id and version selectors of `object` in the primary region,
/// or in the failover region (its `failoverObject`, if any).
fn selector(object: &ObjectSpec, failover: bool) -> (&str, Option<&str>, Option<&str>) {
    match (&object.failover, failover) {
        (Some(f), true) => (f.name.as_str(), f.version.as_deref(), f.version_label.as_deref()),
        _ => (
            object.name.as_str(),
            object.version.as_deref(),
            object.version_label.as_deref(),
        ),
    }
}

async fn get(
    ctx: &UnitContext,
    region: &str,
    id: &str,
    version_id: Option<&str>,
    stage: Option<&str>,
) -> Result<Fetched, FetchError> {
    let err = |error: AwsError| FetchError::Secret {
        name: id.to_string(),
        region: region.to_string(),
        error,
    };
    let client = ctx.aws.secrets_manager(region).ok_or_else(|| err(no_client(region)))?;
    let (mut out, _responses) = ctx
        .call(
            "secretsmanager.GetSecretValue",
            ctx.retries_throttled_in(region),
            |charge| {
                client
                    .get_secret_value()
                    .secret_id(id)
                    .set_version_id(version_id.map(str::to_string))
                    .set_version_stage(stage.map(str::to_string))
                    .customize()
                    .config_override(ctx.creds.for_secrets_manager())
                    .interceptor(charge)
                    .send()
            },
        )
        .await
        .map_err(|e| e.into_fetch(err))?;
    Ok(Fetched {
        value: secret_value(ctx, out.secret_string.take(), out.secret_binary.take()).await?,
        version: out.version_id.take().unwrap_or_default(),
        origin: Origin::aws(out.arn.take().unwrap_or_else(|| id.to_string()), region),
        ..Default::default()
    })
}

/// Why a batch failed.
pub(crate) enum BatchError {
    /// The identity may not call `BatchGetSecretValue`: use `GetSecretValue`.
    Denied,
    /// `BatchGetSecretValue` is throttled (after the SDK's retries): its
    /// account-wide quota is 100 calls per second, `GetSecretValue`'s
    /// 10,000, so the same objects are fetched one by one. Not a reason to
    /// fail over to another region.
    Throttled,
    Fetch(FetchError),
}

/// Up to [`MAX_BATCH`] objects by `BatchGetSecretValue` (current versions).
/// A retryable failure of the call moves the whole batch to the failover
/// region; a per-secret error in `Errors` is that object's error (a
/// retryable one fails that object over on its own).
pub(crate) async fn fetch_batch(ctx: &UnitContext, objects: &[ObjectSpec]) -> Result<Vec<Fetched>, BatchError> {
    let ids: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
    let mut results = match batch_get(ctx, &ctx.regions.primary, &ids).await {
        Err(BatchCallError::Aws(error)) if error.failure == Failure::AccessDenied => return Err(BatchError::Denied),
        Err(BatchCallError::Aws(error)) if error.failure == Failure::Throttled => return Err(BatchError::Throttled),
        Err(BatchCallError::Memory(m)) => return Err(BatchError::Fetch(FetchError::Memory(m))),
        Err(BatchCallError::Fetch(e)) => return Err(BatchError::Fetch(e)),
        Err(BatchCallError::Paging(PagingProblem::TooManyPages { .. })) => {
            let what = format!("secrets {}", crate::limits::Echo(&ids.join(", ")));
            return Err(BatchError::Fetch(ctx.quota.too_many_pages(what)));
        }
        Err(BatchCallError::Paging(problem)) => {
            return Err(BatchError::Fetch(FetchError::Paging {
                what: ids.join(", "),
                form: Form::Secrets,
                region: ctx.regions.primary.clone(),
                problem,
            }));
        }
        Err(BatchCallError::Aws(error)) => {
            // The call itself failed: every object fails over on its own.
            let mut out = Vec::with_capacity(objects.len());
            for o in objects {
                let primary = FetchError::SecretBatch {
                    names: ids.join(", "),
                    region: ctx.regions.primary.clone(),
                    error: error.clone(),
                };
                out.push(fail_over(ctx, o, primary).await.map_err(BatchError::Fetch)?);
            }
            return Ok(out);
        }
        Ok(results) => results,
    };
    let mut out = Vec::with_capacity(objects.len());
    for (o, r) in objects.iter().zip(results.drain(..)) {
        let fetched = match r {
            Ok(f) => f,
            Err(error) => {
                let primary = FetchError::Secret {
                    name: o.name.clone(),
                    region: ctx.regions.primary.clone(),
                    error,
                };
                fail_over(ctx, o, primary).await.map_err(BatchError::Fetch)?
            }
        };
        out.push(fetched);
    }
    Ok(out)
}

/// Why one `BatchGetSecretValue` call failed.
enum BatchCallError {
    Aws(AwsError),
    Memory(MemoryError),
    Fetch(FetchError),
    Paging(PagingProblem),
}

/// One `BatchGetSecretValue` call (following pages), answering each id.
/// Values are moved out of the response, not copied; an id asked by
/// several objects shares one buffer.
async fn batch_get(
    ctx: &UnitContext,
    region: &str,
    ids: &[String],
) -> Result<Vec<Result<Fetched, AwsError>>, BatchCallError> {
    let mut distinct: Vec<String> = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if seen.insert(id.as_str()) {
            distinct.push(id.clone());
        }
    }
    let client = ctx
        .aws
        .secrets_manager(region)
        .ok_or_else(|| BatchCallError::Aws(no_client(region)))?;
    let mut entries: Vec<(Option<String>, Option<String>, Fetched)> = Vec::new();
    let mut errors = Vec::new();
    let mut pages = super::bulk::Pages::new(ctx.quota.max_pages());
    loop {
        let token = pages.token();
        let (out, responses) = ctx
            .call("secretsmanager.BatchGetSecretValue", false, |charge| {
                client
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(distinct.clone()))
                    .set_next_token(token.clone())
                    .customize()
                    // A throttled batch is not retried: its objects go to
                    // GetSecretValue at once (fetch_batch).
                    .config_override(ctx.creds.for_secrets_manager_no_throttle_retry())
                    .interceptor(charge)
                    .send()
            })
            .await
            .map_err(|e| match e {
                CallError::Aws(e) => BatchCallError::Aws(e),
                CallError::Memory(m) => BatchCallError::Memory(m),
            })?;
        for mut e in out.secret_values.unwrap_or_default() {
            let value = secret_value(ctx, e.secret_string.take(), e.secret_binary.take())
                .await
                .map_err(BatchCallError::Fetch)?;
            let arn = e.arn.take();
            let fetched = Fetched {
                value,
                version: e.version_id.take().unwrap_or_default(),
                origin: Origin::aws(arn.clone().or_else(|| e.name.clone()).unwrap_or_default(), region),
                ..Default::default()
            };
            entries.push((e.name.take(), arn, fetched));
        }
        drop(responses);
        errors.extend(out.errors.unwrap_or_default());
        match pages.next(out.next_token) {
            Ok(true) => {}
            Ok(false) => break,
            Err(problem) => return Err(BatchCallError::Paging(problem)),
        }
    }
    Ok(ids
        .iter()
        .map(|id| {
            if let Some((_, _, f)) = entries
                .iter()
                .find(|(name, arn, _)| entry_matches(name.as_deref(), arn.as_deref(), id))
            {
                return Ok(f.clone());
            }
            match errors.iter().find(|e| e.secret_id.as_deref() == Some(id.as_str())) {
                Some(e) => {
                    let code = e.error_code.clone();
                    Err(AwsError {
                        failure: crate::aws::classify_code(code.as_deref(), 400),
                        code,
                        message: e.message.clone().unwrap_or_default(),
                    })
                }
                None => Err(AwsError {
                    failure: Failure::Unavailable,
                    code: None,
                    message: "BatchGetSecretValue returned neither a value nor an error for it".to_string(),
                }),
            }
        })
        .collect())
}

/// A secret version's value: `SecretString`, else the raw `SecretBinary`,
/// else empty — the same for `GetSecretValue` and `BatchGetSecretValue`
/// (and the Go provider, which writes an empty file). Moved, not copied,
/// and charged to the mount's memory.
pub(crate) async fn secret_value(
    ctx: &UnitContext,
    string: Option<String>,
    binary: Option<Blob>,
) -> Result<SecretBytes, FetchError> {
    match (string, binary) {
        (Some(s), _) => ctx.value(s.into_bytes()).await,
        (None, Some(b)) => ctx.value(b.into_inner()).await,
        (None, None) => Ok(SecretBytes::new(Vec::new())),
    }
}

/// Whether a batch entry (its name and ARN) answers a requested id: its
/// name, its full ARN, or a partial ARN (the full ARN without the
/// 6-character suffix).
fn entry_matches(name: Option<&str>, arn: Option<&str>, id: &str) -> bool {
    if name == Some(id) || arn == Some(id) {
        return true;
    }
    arn.is_some_and(|arn| {
        arn.len() == id.len() + 7 && arn.starts_with(id) && arn.as_bytes().get(id.len()) == Some(&b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_twenty_distinct_ids_in_order() {
        let items: Vec<String> = (0..45).map(|i| format!("s{i}")).collect();
        let b = batches(&items, |s| s.clone());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![20, 20, 5]);
        let dup = vec!["a".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(batches(&dup, |s| s.clone()).len(), 1);
    }

    #[test]
    fn entries_match_by_name_full_arn_and_partial_arn() {
        let e = (
            Some("prod/db"),
            Some("arn:aws:secretsmanager:us-west-2:1:secret:prod/db-AbCdEf"),
        );
        assert!(entry_matches(e.0, e.1, "prod/db"));
        assert!(entry_matches(
            e.0,
            e.1,
            "arn:aws:secretsmanager:us-west-2:1:secret:prod/db-AbCdEf"
        ));
        assert!(entry_matches(
            e.0,
            e.1,
            "arn:aws:secretsmanager:us-west-2:1:secret:prod/db"
        ));
        assert!(!entry_matches(e.0, e.1, "prod/db2"));
        assert!(!entry_matches(
            e.0,
            e.1,
            "arn:aws:secretsmanager:us-west-2:1:secret:prod"
        ));
    }
}
