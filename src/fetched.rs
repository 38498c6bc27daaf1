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
    /// Served from the identity's last good value while AWS failed.
    pub stale: bool,
}
