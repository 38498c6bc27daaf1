//! What kind of failure a call to AWS, the Kubernetes API or the EKS Pod
//! Identity Agent ended in, and the one mapping of an HTTP status to it.
//!
//! A leaf: every module that calls a service classifies its errors here,
//! so failover, status codes, metrics and events agree on what a 401, a
//! bare 404 or an unreadable 429 is, whichever peer answered it.

use std::fmt;

/// What kind of failure a call ended in. It drives failover (only
/// `Throttled` and `Unavailable` move on to the failover region), the gRPC
/// status code and the mount's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    AccessDenied,
    /// Throttled after the client's retries.
    Throttled,
    /// 5xx, timeout, connection failure.
    Unavailable,
    /// AWS refused the credentials themselves (expired, unknown key): new
    /// credentials may succeed where these failed.
    InvalidCredentials,
    /// Any other client error (a 4xx).
    Rejected,
}

impl Failure {
    /// Whether another region may succeed where this one failed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Failure::Throttled | Failure::Unavailable)
    }

    /// A bounded label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::AccessDenied => "access_denied",
            Failure::Throttled => "throttled",
            Failure::Unavailable => "unavailable",
            Failure::InvalidCredentials => "invalid_credentials",
            Failure::Rejected => "rejected",
        }
    }

    /// The failure an HTTP status means when the answer says nothing more
    /// (no error code, or one that is not known): 401 and 403 are denials,
    /// 404 a missing object, 429 throttling, any 5xx an unavailable
    /// service, every other status a rejected request. A success status
    /// given to it is a rejection (an answer that should have been read).
    pub fn from_status(status: u16) -> Failure {
        match status {
            401 | 403 => Failure::AccessDenied,
            404 => Failure::NotFound,
            429 => Failure::Throttled,
            500..=599 => Failure::Unavailable,
            _ => Failure::Rejected,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error and its causes, `: `-separated (no `Debug` output): what a user
/// reads in a pod event.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_one_class_each() {
        for (status, failure) in [
            (400, Failure::Rejected),
            (401, Failure::AccessDenied),
            (403, Failure::AccessDenied),
            (404, Failure::NotFound),
            (409, Failure::Rejected),
            (429, Failure::Throttled),
            (500, Failure::Unavailable),
            (502, Failure::Unavailable),
            (599, Failure::Unavailable),
            (200, Failure::Rejected),
            (302, Failure::Rejected),
        ] {
            assert_eq!(Failure::from_status(status), failure, "HTTP {status}");
        }
    }

    #[test]
    fn only_throttling_and_unavailability_fail_over() {
        assert!(Failure::Throttled.is_retryable());
        assert!(Failure::Unavailable.is_retryable());
        for f in [
            Failure::NotFound,
            Failure::AccessDenied,
            Failure::InvalidCredentials,
            Failure::Rejected,
        ] {
            assert!(!f.is_retryable(), "{f}");
        }
    }

    #[test]
    fn error_chains_name_each_distinct_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "connect failed: refused",
            Some(Box::new(E("refused", Some(Box::new(E("os error 111", None)))))),
        );
        assert_eq!(error_chain(&e), "connect failed: refused: os error 111");
    }
}
