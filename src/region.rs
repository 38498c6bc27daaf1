//! Regions, in one place: which names are regions, the regions of a mount,
//! and the one failover step that STS, Secrets Manager and SSM calls share:
//! the primary region first, the failover region only when the primary
//! failed with a retryable error. No I/O: the node lookup that finds a
//! mount's region when neither the class nor the environment names one is
//! the Kubernetes client's ([`crate::kube::KubeClient::pod_region`]).

use std::future::Future;

use crate::failure::Failure;
use crate::limits::Echo;

/// Longest region name accepted (the longest today is 14 characters).
pub const MAX_REGION_LEN: usize = 32;

/// The regions of a mount: primary, and the optional failover.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regions {
    pub primary: String,
    pub failover: Option<String>,
}

/// Why a region could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error(
        "invalid region {:?} in {source_name}: a region name is lowercase letters, digits and hyphens, such as us-west-2",
        Echo(.value).to_string()
    )]
    Invalid { source_name: &'static str, value: String },
    #[error("{}: failover region cannot be the same as the primary region", Echo(.0))]
    SameFailover(String),
}

/// Whether `name` looks like an AWS region (`us-west-2`, `us-gov-east-1`,
/// `eusc-de-east-1`): lowercase words separated by hyphens, starting with
/// two to four letters and ending with a number. No SDK client is made for
/// anything else.
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    name.len() <= MAX_REGION_LEN
        && parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts
            .first()
            .is_some_and(|p| (2..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a region name from `source_name` (a parameter, the environment,
/// a node label).
pub fn validate(source_name: &'static str, value: &str) -> Result<(), RegionError> {
    if is_region_name(value) {
        Ok(())
    } else {
        Err(RegionError::Invalid {
            source_name,
            value: value.to_string(),
        })
    }
}

impl Regions {
    /// The regions of a mount once the primary is known: the failover must
    /// differ from it.
    pub fn new(primary: String, failover: Option<String>) -> Result<Self, RegionError> {
        if failover.as_deref() == Some(primary.as_str()) {
            return Err(RegionError::SameFailover(primary));
        }
        Ok(Self { primary, failover })
    }

    /// The regions in the order they are asked.
    pub fn in_order(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.as_str()).chain(self.failover.as_deref())
    }
}

/// A call that failed in every region it was made in.
#[derive(Debug)]
pub enum Failed<E> {
    /// Only the primary region was asked (no failover region, or a failure
    /// another region cannot fix).
    Primary(E),
    /// Both regions failed.
    Both { primary: E, failover: E },
}

/// The failover step. `call` is made in the primary region; if that fails
/// with a retryable error (throttling after the SDK's retries, 5xx, timeout,
/// connection failure) and there is a failover region, it is made there.
/// `call` learns whether it is the failover attempt, so it can read a
/// different object there (`failoverObject`).
pub async fn with_failover<'a, T, E, F, Fut>(
    regions: &'a Regions,
    failure: impl Fn(&E) -> Failure,
    mut call: F,
) -> Result<T, Failed<E>>
where
    E: std::fmt::Display,
    F: FnMut(&'a str, bool) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let primary = match call(&regions.primary, false).await {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Some(region) = regions.failover.as_deref() else {
        return Err(Failed::Primary(primary));
    };
    if !failure(&primary).is_retryable() {
        return Err(Failed::Primary(primary));
    }
    tracing::warn!(primary = %regions.primary, failover = %region, error = %crate::limits::Escaped(&primary),
        "the primary region failed with a retryable error; trying the failover region");
    call(region, true)
        .await
        .map_err(|failover| Failed::Both { primary, failover })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_recognised() {
        for ok in [
            "us-west-2",
            "us-gov-west-1",
            "cn-northwest-1",
            "ap-southeast-3",
            "us-isob-east-1",
            "eusc-de-east-1",
            "il-central-1",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-west",
            "US-WEST-2",
            "us-west-2 ",
            "us--west-2",
            "us-west-2/../x",
            "usaaa-west-2",
            "us-west-123",
            &format!("us-{}-1", "a".repeat(40)),
            "us-west-2.evil.example.com",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_failover_must_differ_from_the_primary() {
        assert!(Regions::new("us-west-2".into(), Some("us-west-2".into())).is_err());
        let r = Regions::new("us-west-2".into(), Some("us-east-2".into())).unwrap();
        assert_eq!(r.in_order().collect::<Vec<_>>(), ["us-west-2", "us-east-2"]);
    }

    #[tokio::test]
    async fn failover_is_tried_only_after_a_retryable_failure() {
        let regions = Regions::new("a-b-1".into(), Some("a-b-2".into())).unwrap();
        let asked = std::sync::Mutex::new(Vec::new());
        let call = |f: Failure| {
            let asked = &asked;
            move |region: &str, failover: bool| {
                asked.lock().unwrap().push((region.to_string(), failover));
                async move { if failover { Ok(1) } else { Err(f) } }
            }
        };
        let r = with_failover(&regions, |f: &Failure| *f, call(Failure::Throttled)).await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(asked.lock().unwrap().len(), 2);
        asked.lock().unwrap().clear();
        let r = with_failover(&regions, |f: &Failure| *f, call(Failure::AccessDenied)).await;
        assert!(matches!(r, Err(Failed::Primary(Failure::AccessDenied))));
        assert_eq!(asked.lock().unwrap().len(), 1, "no failover after AccessDenied");
    }
}
