//! Secrets Manager: `GetSecretValue` by name or ARN with `VersionId` and
//! `VersionStage`, and `BatchGetSecretValue` for up to 20 objects without a
//! version field. The value is `SecretString`, else the raw `SecretBinary`.

use aws_sdk_secretsmanager::types::SecretValueEntry;

use super::{FetchError, Fetched, UnitContext};
use aws_sdk_secretsmanager::primitives::Blob;

use crate::aws::{AwsError, Failure};
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
    let primary = get(
        ctx,
        &ctx.regions.primary,
        &object.name,
        object.version.as_deref(),
        object.version_label.as_deref(),
    )
    .await;
    match primary {
        Ok(f) => Ok(f),
        Err(e) => fail_over(ctx, object, e).await,
    }
}

/// After `primary` failed: the object (or its `failoverObject`) from the
/// failover region when the failure is retryable and a failover region is
/// set; otherwise `primary` itself.
async fn fail_over(ctx: &UnitContext, object: &ObjectSpec, primary: FetchError) -> Result<Fetched, FetchError> {
    let Some(region) = ctx.regions.failover.as_deref() else {
        return Err(primary);
    };
    if !primary.failure().is_retryable() {
        return Err(primary);
    }
    tracing::warn!(object = %object.name, region = %ctx.regions.primary, error = %primary,
        "primary region failed with a retryable error; trying the failover region");
    let (name, version, label) = match &object.failover {
        Some(f) => (f.name.as_str(), f.version.as_deref(), f.version_label.as_deref()),
        None => (
            object.name.as_str(),
            object.version.as_deref(),
            object.version_label.as_deref(),
        ),
    };
    get(ctx, region, name, version, label)
        .await
        .map_err(|failover| FetchError::SecretAllRegions {
            name: object.name.clone(),
            primary: Box::new(primary),
            failover: Box::new(failover),
        })
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
    let result = ctx
        .aws
        .secrets_manager(region)
        .get_secret_value()
        .secret_id(id)
        .set_version_id(version_id.map(str::to_string))
        .set_version_stage(stage.map(str::to_string))
        .customize()
        .config_override(ctx.creds.for_secrets_manager())
        .send()
        .await;
    let mut out = ctx.observe("secretsmanager.GetSecretValue", result).map_err(err)?;
    let value = secret_value(out.secret_string.take(), out.secret_binary.take()).ok_or_else(|| {
        err(AwsError {
            failure: Failure::Rejected,
            code: None,
            message: "the secret version has neither SecretString nor SecretBinary".to_string(),
        })
    })?;
    Ok(Fetched {
        value,
        version: out.version_id.take().unwrap_or_default(),
    })
}

/// Why a batch failed.
pub(crate) enum BatchError {
    /// The identity may not call `BatchGetSecretValue`: use `GetSecretValue`.
    Denied,
    Fetch(FetchError),
}

/// Up to [`MAX_BATCH`] objects by `BatchGetSecretValue` (current versions).
/// A retryable failure of the call moves the whole batch to the failover
/// region; a per-secret error in `Errors` is that object's error (a
/// retryable one fails that object over on its own).
pub(crate) async fn fetch_batch(ctx: &UnitContext, objects: &[ObjectSpec]) -> Result<Vec<Fetched>, BatchError> {
    let ids: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
    let results = match batch_get(ctx, &ctx.regions.primary, &ids).await {
        Err(error) if error.failure == Failure::AccessDenied => return Err(BatchError::Denied),
        Err(error) => {
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
    for (o, r) in objects.iter().zip(results) {
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

/// One `BatchGetSecretValue` call (following pages), answering each id.
async fn batch_get(
    ctx: &UnitContext,
    region: &str,
    ids: &[String],
) -> Result<Vec<Result<Fetched, AwsError>>, AwsError> {
    let mut distinct: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !distinct.contains(id) {
            distinct.push(id.clone());
        }
    }
    let mut entries: Vec<SecretValueEntry> = Vec::new();
    let mut errors = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let result = ctx
            .aws
            .secrets_manager(region)
            .batch_get_secret_value()
            .set_secret_id_list(Some(distinct.clone()))
            .set_next_token(next_token.take())
            .customize()
            .config_override(ctx.creds.for_secrets_manager())
            .send()
            .await;
        let out = ctx.observe("secretsmanager.BatchGetSecretValue", result)?;
        entries.extend(out.secret_values.unwrap_or_default());
        errors.extend(out.errors.unwrap_or_default());
        match out.next_token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => break,
        }
    }
    Ok(ids
        .iter()
        .map(|id| {
            if let Some(e) = entries.iter().find(|e| entry_matches(e, id)) {
                return Ok(Fetched {
                    value: secret_value(e.secret_string.clone(), e.secret_binary.clone())
                        .unwrap_or_else(|| SecretBytes::new(Vec::new())),
                    version: e.version_id.clone().unwrap_or_default(),
                });
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

/// A secret version's value: `SecretString`, else the raw `SecretBinary`.
fn secret_value(string: Option<String>, binary: Option<Blob>) -> Option<SecretBytes> {
    match (string, binary) {
        (Some(s), _) => Some(SecretBytes::from(s)),
        (None, Some(b)) => Some(SecretBytes::from(b.into_inner())),
        (None, None) => None,
    }
}

/// Whether a batch entry answers a requested id: its name, its full ARN,
/// or a partial ARN (the full ARN without the 6-character suffix).
fn entry_matches(e: &SecretValueEntry, id: &str) -> bool {
    if e.name.as_deref() == Some(id) || e.arn.as_deref() == Some(id) {
        return true;
    }
    e.arn.as_deref().is_some_and(|arn| {
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
        let e = SecretValueEntry::builder()
            .name("prod/db")
            .arn("arn:aws:secretsmanager:us-west-2:1:secret:prod/db-AbCdEf")
            .build();
        assert!(entry_matches(&e, "prod/db"));
        assert!(entry_matches(
            &e,
            "arn:aws:secretsmanager:us-west-2:1:secret:prod/db-AbCdEf"
        ));
        assert!(entry_matches(&e, "arn:aws:secretsmanager:us-west-2:1:secret:prod/db"));
        assert!(!entry_matches(&e, "prod/db2"));
        assert!(!entry_matches(&e, "arn:aws:secretsmanager:us-west-2:1:secret:prod"));
    }
}
