//! Metrics hooks: counters of AWS, STS, Pod Identity and Kubernetes calls by
//! operation and outcome, and cache hits and misses. Labels are bounded:
//! operation names and outcome kinds only, never object names, values or
//! tokens. The exporter reads [`Metrics::snapshot`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::aws::Failure;

/// A counter family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Secrets Manager and SSM calls (operation = service.Operation).
    Aws,
    /// STS `AssumeRoleWithWebIdentity`.
    Sts,
    /// EKS Pod Identity Agent requests.
    PodIdentity,
    /// Kubernetes API reads (operation = resource).
    Kubernetes,
    /// Cache lookups (operation = cache name; outcome hit, miss or joined).
    Cache,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Aws => "aws",
            Family::Sts => "sts",
            Family::PodIdentity => "pod_identity",
            Family::Kubernetes => "kubernetes",
            Family::Cache => "cache",
        }
    }
}

/// The outcome label of a call.
pub fn outcome<T, E>(r: &Result<T, E>, failure: impl Fn(&E) -> Failure) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(e) => match failure(e) {
            Failure::NotFound => "not_found",
            Failure::AccessDenied => "access_denied",
            Failure::Throttled => "throttled",
            Failure::Unavailable => "unavailable",
            Failure::Rejected => "rejected",
        },
    }
}

/// Counters keyed by (family, operation, outcome).
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(Family, &'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn count(&self, family: Family, operation: &'static str, outcome: &'static str) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((family, operation, outcome)).or_insert(0) += 1;
    }

    /// All counters, in a stable order.
    pub fn snapshot(&self) -> Vec<((Family, &'static str, &'static str), u64)> {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The sum of a family's counters (all operations and outcomes).
    pub fn total(&self, family: Family) -> u64 {
        self.snapshot()
            .into_iter()
            .filter(|((f, _, _), _)| *f == family)
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_family_operation_and_outcome() {
        let m = Metrics::default();
        m.count(Family::Aws, "secretsmanager.BatchGetSecretValue", "success");
        m.count(Family::Aws, "secretsmanager.BatchGetSecretValue", "success");
        m.count(Family::Aws, "ssm.GetParameters", "throttled");
        m.count(Family::Sts, "AssumeRoleWithWebIdentity", "success");
        assert_eq!(m.total(Family::Aws), 3);
        assert_eq!(m.total(Family::Sts), 1);
        assert_eq!(m.total(Family::Kubernetes), 0);
        let snap = m.snapshot();
        assert!(snap.contains(&((Family::Aws, "secretsmanager.BatchGetSecretValue", "success"), 2)));
    }

    #[test]
    fn outcomes_are_bounded_labels() {
        let ok: Result<(), Failure> = Ok(());
        assert_eq!(outcome(&ok, |f| *f), "success");
        for (f, label) in [
            (Failure::NotFound, "not_found"),
            (Failure::AccessDenied, "access_denied"),
            (Failure::Throttled, "throttled"),
            (Failure::Unavailable, "unavailable"),
            (Failure::Rejected, "rejected"),
        ] {
            let r: Result<(), Failure> = Err(f);
            assert_eq!(outcome(&r, |f| *f), label);
        }
    }
}
