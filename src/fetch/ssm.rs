//! SSM Parameter Store `GetParameters` (with decryption) in batches of at
//! most ten selectors (`name`, `name:version`, `name:label`). Results are
//! matched to the exact selector requested: a batch never holds two
//! different selectors of one parameter, so two objects reading one
//! parameter at two labels each get their own value.

use std::collections::HashMap;

use aws_sdk_ssm::types::Parameter;

use super::{FetchError, Fetched, UnitContext, all_regions};
use crate::aws::no_client;
use crate::fetched::Origin;
use crate::region::with_failover;
use crate::secret::SecretBytes;
use crate::spec::{ObjectSpec, arn};

/// The most names one `GetParameters` call accepts.
pub const MAX_BATCH: usize = 10;

/// Groups items into batches of at most [`MAX_BATCH`] distinct selectors,
/// keeping list order and never putting two different selectors of the same
/// parameter into one batch (identical selectors share one slot).
pub fn batches<T>(items: Vec<(usize, T)>, key: impl Fn(&T) -> (String, String)) -> Vec<Vec<(usize, T)>> {
    struct Batch<T> {
        selectors: HashMap<String, String>,
        items: Vec<(usize, T)>,
    }
    let mut out: Vec<Batch<T>> = Vec::new();
    for (i, item) in items {
        let (base, selector) = key(&item);
        let slot = out.iter().position(|b| match b.selectors.get(&base) {
            Some(s) => *s == selector,
            None => b.selectors.len() < MAX_BATCH,
        });
        let batch = match slot {
            Some(p) => &mut out[p],
            None => {
                out.push(Batch {
                    selectors: HashMap::new(),
                    items: Vec::new(),
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        batch.selectors.insert(base, selector);
        batch.items.push((i, item));
    }
    out.into_iter().map(|b| b.items).collect()
}

/// One requested object: its index, parameter name (or ARN) and selector.
struct Wanted {
    index: usize,
    base: String,
    selector: String,
}

pub(crate) async fn fetch(
    ctx: &UnitContext,
    batch: &[(usize, &ObjectSpec)],
) -> Result<Vec<(usize, Fetched)>, FetchError> {
    let result = with_failover(&ctx.regions, FetchError::failure, |region, failover| {
        let wanted: Vec<Wanted> = batch
            .iter()
            .map(|(i, o)| match (&o.failover, failover) {
                (Some(f), true) => Wanted {
                    index: *i,
                    base: f.name.clone(),
                    selector: f.ssm_selector(),
                },
                _ => Wanted {
                    index: *i,
                    base: o.name.clone(),
                    selector: o.ssm_selector(),
                },
            })
            .collect();
        get_all(ctx, region, wanted)
    })
    .await;
    all_regions(result, |primary, failover| FetchError::ParametersAllRegions {
        primary,
        failover,
    })
}

/// Every wanted selector from `region`: one call, or several if the
/// failover names put two selectors of one parameter into the set.
async fn get_all(ctx: &UnitContext, region: &str, wanted: Vec<Wanted>) -> Result<Vec<(usize, Fetched)>, FetchError> {
    let mut out = Vec::with_capacity(wanted.len());
    for sub in batches(wanted.into_iter().map(|w| (w.index, w)).collect(), |w| {
        (w.base.clone(), w.selector.clone())
    }) {
        let sub: Vec<Wanted> = sub.into_iter().map(|(_, w)| w).collect();
        out.extend(get(ctx, region, &sub).await?);
    }
    Ok(out)
}

async fn get(ctx: &UnitContext, region: &str, wanted: &[Wanted]) -> Result<Vec<(usize, Fetched)>, FetchError> {
    let mut names: Vec<String> = Vec::with_capacity(wanted.len());
    for w in wanted {
        if !names.contains(&w.selector) {
            names.push(w.selector.clone());
        }
    }
    let err = |error| FetchError::Parameters {
        names: names.join(", "),
        region: region.to_string(),
        error,
    };
    let client = ctx.aws.ssm(region).ok_or_else(|| err(no_client(region)))?;
    let (out, responses) = ctx
        .call("ssm.GetParameters", ctx.retries_throttled_in(region), |charge| {
            client
                .get_parameters()
                .set_names(Some(names.clone()))
                .with_decryption(true)
                .customize()
                .config_override(ctx.creds.for_ssm())
                .interceptor(charge)
                .send()
        })
        .await
        .map_err(|e| e.into_fetch(err))?;
    let invalid = out.invalid_parameters.unwrap_or_default();
    if let Some(w) = wanted.iter().find(|w| invalid.contains(&w.selector)) {
        return Err(FetchError::ParameterNotFound {
            selector: w.selector.clone(),
            region: region.to_string(),
            invalid: invalid.join(", "),
        });
    }
    // Values are moved out of the response; a parameter wanted by several
    // objects shares one buffer.
    let mut params: Vec<(Parameter, SecretBytes)> = Vec::new();
    for mut p in out.parameters.unwrap_or_default() {
        let value = ctx.value(p.value.take().unwrap_or_default().into_bytes()).await?;
        params.push((p, value));
    }
    drop(responses);
    wanted
        .iter()
        .map(|w| {
            let (p, value) = params
                .iter()
                .find(|(p, _)| matches(p, &w.base, &w.selector))
                .ok_or_else(|| FetchError::Missing {
                    service: "SSM Parameter Store",
                    selector: w.selector.clone(),
                    region: region.to_string(),
                })?;
            Ok((
                w.index,
                Fetched {
                    value: value.clone(),
                    version: p.version.to_string(),
                    origin: Origin::aws(p.arn.clone().or_else(|| p.name.clone()).unwrap_or_default(), region),
                    ..Default::default()
                },
            ))
        })
        .collect()
}

/// Whether a returned parameter answers the requested selector. Results are
/// matched by name, by ARN, or by the name inside a requested ARN; a
/// returned `Selector` must equal the requested one, and a numeric selector
/// must equal the returned version.
fn matches(p: &Parameter, base: &str, selector: &str) -> bool {
    let name = p.name.as_deref().unwrap_or_default();
    let returned_account = p.arn.as_deref().and_then(arn::parse).map(|a| a.account);
    let name_matches = name == base
        || p.arn.as_deref() == Some(base)
        || arn::parse(base).is_some_and(|a| {
            let resource = if name.starts_with('/') {
                format!("parameter{name}")
            } else {
                format!("parameter/{name}")
            };
            // A parameter of the same name in another account is not it.
            a.resource == resource && returned_account.is_none_or(|acct| acct == a.account)
        });
    if !name_matches {
        return false;
    }
    let Some(suffix) = selector.strip_prefix(base).and_then(|s| s.strip_prefix(':')) else {
        return true;
    };
    if let Some(returned) = p.selector.as_deref().filter(|s| !s.is_empty()) {
        return returned.strip_prefix(':').unwrap_or(returned) == suffix;
    }
    match suffix.parse::<i64>() {
        Ok(v) => p.version == v,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &&str) -> (String, String) {
        let base = s.split(':').next().unwrap_or_default().to_string();
        (base, s.to_string())
    }

    #[test]
    fn batches_hold_at_most_ten_selectors() {
        let names: Vec<String> = (0..23).map(|i| format!("p{i}")).collect();
        let items: Vec<(usize, &str)> = names.iter().enumerate().map(|(i, n)| (i, n.as_str())).collect();
        let b = batches(items, key);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 3]);
        assert_eq!(b[0][0].0, 0);
        assert_eq!(b[2][2].0, 22);
    }

    #[test]
    fn two_labels_of_one_parameter_go_to_different_batches() {
        let b = batches(vec![(0, "db:blue"), (1, "db:green"), (2, "other"), (3, "db:blue")], key);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(b[1].iter().map(|x| x.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn parameter_matches_by_name_arn_selector_and_version() {
        let p = Parameter::builder()
            .name("/app/db")
            .arn("arn:aws:ssm:us-west-2:123456789012:parameter/app/db")
            .version(3)
            .build();
        assert!(matches(&p, "/app/db", "/app/db"));
        assert!(matches(&p, "/app/db", "/app/db:3"));
        assert!(!matches(&p, "/app/db", "/app/db:2"));
        assert!(matches(
            &p,
            "arn:aws:ssm:us-west-2:123456789012:parameter/app/db",
            "arn:aws:ssm:us-west-2:123456789012:parameter/app/db"
        ));
        assert!(!matches(&p, "/app/other", "/app/other"));
        let labelled = Parameter::builder()
            .name("flags")
            .version(2)
            .selector(":stable")
            .build();
        assert!(matches(&labelled, "flags", "flags:stable"));
        assert!(!matches(&labelled, "flags", "flags:canary"));
        let other_account = Parameter::builder()
            .name("/app/db")
            .arn("arn:aws:ssm:us-west-2:999999999999:parameter/app/db")
            .version(3)
            .build();
        assert!(!matches(
            &other_account,
            "arn:aws:ssm:us-west-2:123456789012:parameter/app/db",
            "arn:aws:ssm:us-west-2:123456789012:parameter/app/db"
        ));
        let short = Parameter::builder().name("flags").version(1).build();
        assert!(matches(
            &short,
            "arn:aws:ssm:us-west-2:1:parameter/flags",
            "arn:aws:ssm:us-west-2:1:parameter/flags"
        ));
    }
}
