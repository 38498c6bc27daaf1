//! Types that hold secret material: values fetched from AWS, service-account
//! tokens and credentials. They zeroize their memory on drop, print a
//! placeholder in `Debug`/`Display`, and deliberately implement neither
//! `Serialize` nor `Clone`-by-accident into loggable types.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::memory::Charge;

/// The memory-budget charge of a buffer, held as long as the buffer lives
/// and replaceable (a value moving into a cache is charged to it).
type ChargeSlot = Arc<Mutex<Option<Charge>>>;

/// The buffer behind [`SecretBytes`]: zeroized when the last holder drops
/// it, and its charge returned then.
struct Owner {
    data: Zeroizing<Vec<u8>>,
    _charge: Option<ChargeSlot>,
}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Secret bytes (a secret or parameter value, or a file made from one).
/// Clones share one buffer: a value that appears in several files, in the
/// value cache and in a response exists once in memory, is charged to the
/// memory budget once, and is zeroized when the last of them is dropped.
#[derive(Clone)]
pub struct SecretBytes {
    bytes: Bytes,
    charge: Option<ChargeSlot>,
}

impl SecretBytes {
    /// Takes `bytes` without copying them.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Bytes::from_owner(Owner {
                data: Zeroizing::new(bytes),
                _charge: None,
            }),
            charge: None,
        }
    }

    /// Takes `bytes` without copying them, with the memory-budget charge
    /// that pays for them until the last holder drops them.
    pub fn charged(bytes: Vec<u8>, charge: Charge) -> Self {
        let slot: ChargeSlot = Arc::new(Mutex::new(Some(charge)));
        Self {
            bytes: Bytes::from_owner(Owner {
                data: Zeroizing::new(bytes),
                _charge: Some(slot.clone()),
            }),
            charge: Some(slot),
        }
    }

    /// Replaces the buffer's charge with `take(len)` (the old one is
    /// returned); `false`, keeping the old one, when `take` gives none. An
    /// uncharged buffer stays uncharged.
    pub fn recharge(&self, take: impl FnOnce(u64) -> Option<Charge>) -> bool {
        let Some(slot) = &self.charge else { return true };
        let Some(new) = take(self.bytes.len() as u64) else {
            return false;
        };
        if let Ok(mut c) = slot.lock() {
            *c = Some(new);
        }
        true
    }

    /// The secret bytes. Callers must not log or format them.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The shared buffer, for a response message (no copy): the charge
    /// stays with it.
    pub fn share(&self) -> Bytes {
        self.bytes.clone()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Default for SecretBytes {
    /// No bytes.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretBytes {}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.bytes.len())
    }
}

/// A secret string (a token, a secret access key).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret text. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_value() {
        let b = SecretBytes::from("hunter2-canary".to_string());
        let s = SecretString::from("tok-canary".to_string());
        let out = format!("{b:?} {s:?} {s}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("tok-canary"), "{out}");
        assert!(out.contains("14 bytes"), "{out}");
    }

    #[tokio::test]
    async fn a_charge_lives_as_long_as_the_buffer_and_can_be_replaced() {
        use crate::memory::{BudgetSettings, MemoryBudget, MountMemory, Stage};
        let budget = MemoryBudget::new(BudgetSettings::default(), &crate::telemetry::Metrics::default());
        let m = MountMemory::new(
            budget.clone(),
            tokio::time::Instant::now() + std::time::Duration::from_secs(1),
        );
        let charge = m.charge(Stage::Values, 5).await.unwrap();
        let a = SecretBytes::charged(b"value".to_vec(), charge);
        let shared = a.share();
        let b = a.clone();
        drop(a);
        assert_eq!(budget.used_by(Stage::Values), 5);
        assert!(b.recharge(|len| budget.try_charge_detached(Stage::Kept, len).ok()));
        assert_eq!((budget.used_by(Stage::Values), budget.used_by(Stage::Kept)), (0, 5));
        drop(b);
        assert_eq!(budget.used(), 5, "the response still holds the buffer");
        drop(shared);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn clones_share_one_buffer() {
        let a = SecretBytes::from(b"value".to_vec());
        let b = a.clone();
        assert_eq!(a.expose().as_ptr(), b.expose().as_ptr());
        assert_eq!(a.share().as_ptr(), a.expose().as_ptr());
        assert_eq!(a, b);
    }
}
