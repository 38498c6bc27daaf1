//! What a fetch hands to rendering: a value with its version, or the
//! matches of an object that selects many. A leaf, so rendering (and the
//! offline `validate`) does not depend on how values are fetched.

use crate::secret::SecretBytes;

/// A fetched value and its version in the store; for an object that
/// selects many, its matches (name and value each) instead.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub value: SecretBytes,
    pub version: String,
    pub members: Vec<(String, Fetched)>,
    /// Where the value was read (the audit record's).
    pub origin: Origin,
}

impl Fetched {
    /// This value (and its matches) as got from `source`.
    pub fn served_from(mut self, source: Source) -> Self {
        self.origin.source = source;
        for (_, m) in &mut self.members {
            m.origin.source = source;
        }
        self
    }
}

/// Where a value was read: what AWS calls it, the region that answered,
/// and whether AWS answered this mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The full ARN AWS returned (a parameter's name when it returned none).
    pub arn: String,
    pub region: String,
    pub source: Source,
}

impl Origin {
    pub fn aws(arn: impl Into<String>, region: &str) -> Self {
        Self {
            arn: arn.into(),
            region: region.to_string(),
            source: Source::Aws,
        }
    }
}

/// How a mount got a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// AWS answered for this mount (by a call of its own, or one it
    /// shared with a concurrent mount of the same identity and objects).
    #[default]
    Aws,
    /// The identity's value cache (`--cache-ttl`), or an ACM export served
    /// again after `DescribeCertificate` reported the same certificate.
    Cache,
    /// The identity's last good value, while AWS failed
    /// (`--serve-stale-max-age`).
    LastGood,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Aws => "aws",
            Source::Cache => "cache",
            Source::LastGood => "last-good",
        }
    }
}
