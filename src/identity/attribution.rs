//! What AWS records of the workload behind a session: the role session name
//! (IRSA and chained roles), and, when a class asks for them on a chained
//! role, `SourceIdentity` and transitive session tags.
//!
//! A session name is `csi-<namespace>_<serviceaccount>`. Kubernetes names
//! never contain `_` (namespaces are DNS labels, ServiceAccount names DNS
//! subdomains), so the pair can be read back from the name, and a trust
//! policy condition on `csi-<namespace>_*` admits that namespace only
//! (`csi-shop-*` would also admit `shop-dev`). A name that would exceed
//! STS's 64 characters, or holds a character STS refuses, is cut after the
//! namespace's first characters and ends with `@` and a hash of the full
//! pair: `@` never occurs in a name that was not cut, and the hash keeps two
//! identities from sharing a name. (A name cut inside a namespace of 43 or
//! more characters loses the `_`: a condition on it then matches a prefix
//! of the namespace.)

use sha2::{Digest, Sha256};

/// STS's longest `RoleSessionName` and `SourceIdentity`.
pub const MAX_SESSION_NAME: usize = 64;
/// Hex digits of the hash that ends a shortened name (64 bits).
const HASH_DIGITS: usize = 16;

/// The session tags set on a chained role when a class asks for them:
/// the names EKS Pod Identity gives the same facts, so one ABAC policy
/// serves both.
pub mod tags {
    pub const NAMESPACE: &str = "kubernetes-namespace";
    pub const SERVICE_ACCOUNT: &str = "kubernetes-service-account";
    pub const CLUSTER_NAME: &str = "eks-cluster-name";
}

/// The role session name of a ServiceAccount's credentials (shared by its
/// pods, so a pod name would mislead). See the module's documentation.
pub fn session_name(namespace: &str, service_account: &str) -> String {
    let name = format!("csi-{namespace}_{service_account}");
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if name.len() <= MAX_SESSION_NAME && plain(namespace) && plain(service_account) && !namespace.is_empty() {
        return name;
    }
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0u8])
        .chain_update(service_account.as_bytes())
        .finalize();
    let hash: String = digest
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    // Each part in STS's set without `_`, which stays the separator's.
    let part = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let keep = MAX_SESSION_NAME - 1 - HASH_DIGITS;
    let mut out: String = format!("csi-{}_{}", part(namespace), part(service_account))
        .chars()
        .take(keep)
        .collect();
    out.push('@');
    out.push_str(&hash);
    out
}

/// A session tag value as STS takes it: at most 256 characters of letters,
/// digits, spaces and `_.:/=+-@` (others become `-`).
pub fn tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts_accepts(name: &str) -> bool {
        (2..=MAX_SESSION_NAME).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
    }

    #[test]
    fn a_name_names_the_pair_and_reads_back() {
        assert_eq!(session_name("shop", "orders-api"), "csi-shop_orders-api");
        assert_eq!(session_name("a-b", "c"), "csi-a-b_c");
        assert_ne!(session_name("a-b", "c"), session_name("a", "b-c"));
        assert_eq!(session_name("kube-system", "sa.v1"), "csi-kube-system_sa.v1");
    }

    #[test]
    fn long_names_keep_the_namespace_first_and_stay_apart() {
        let ns = "payments-platform-production-eu-west-1";
        let (a, b) = (
            session_name(ns, "settlement-reconciliation-worker-primary"),
            session_name(ns, "settlement-reconciliation-worker-secondary"),
        );
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(sts_accepts(n), "{n}");
            assert_eq!(n.len(), MAX_SESSION_NAME);
            assert!(n.starts_with(&format!("csi-{ns}_sett")), "{n}");
            assert_eq!(n.matches('@').count(), 1, "{n}");
        }
        // The longest names Kubernetes allows.
        let (ns, sa) = ("n".repeat(63), "s".repeat(253));
        let long = session_name(&ns, &sa);
        assert!(sts_accepts(&long), "{long}");
        assert_ne!(long, session_name(&ns, &format!("{}t", "s".repeat(252))));
        assert_ne!(long, session_name(&format!("{}m", "n".repeat(62)), &sa));
    }

    #[test]
    fn the_documented_example_holds() {
        assert_eq!(
            session_name(
                "payments-settlement-platform-production-eu-west-1",
                "reconciliation-worker"
            ),
            "csi-payments-settlement-platform-production-eu-@6e7615feec2f02e6"
        );
    }

    #[test]
    fn names_sts_refuses_are_hashed_so_they_cannot_meet_another() {
        let odd = session_name("a b", "c/d");
        assert!(sts_accepts(&odd), "{odd}");
        assert!(odd.starts_with("csi-a-b_c-d@"), "{odd}");
        assert_ne!(odd, session_name("a-b", "c-d"));
        assert_ne!(session_name("a_b", "c"), session_name("a", "b_c"));
        // A `_` of a part is not the separator: no condition on csi-shop_*
        // admits namespace shop_x.
        assert!(session_name("shop_x", "y").starts_with("csi-shop-x_y@"));
        assert!(sts_accepts(&session_name("", "")));
        // A name that was cut never equals one that was not.
        assert!(!session_name("shop", "orders").contains('@'));
    }

    #[test]
    fn tag_values_keep_to_what_sts_takes() {
        assert_eq!(tag_value("shop"), "shop");
        assert_eq!(tag_value("a\"b\nc"), "a-b-c");
        assert_eq!(tag_value(&"x".repeat(300)).len(), 256);
    }
}
