//! Types that hold secret material: values fetched from AWS, service-account
//! tokens and credentials. They zeroize their memory on drop, print a
//! placeholder in `Debug`/`Display`, and deliberately implement neither
//! `Serialize` nor `Clone`-by-accident into loggable types.

use std::fmt;

use bytes::Bytes;
use zeroize::Zeroizing;

/// The buffer behind [`SecretBytes`]: zeroized when the last holder drops it.
struct Owner(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Secret bytes (a secret or parameter value, or a file made from one).
/// Clones share one buffer: a value that appears in several files, in the
/// value cache and in a response exists once in memory, and is zeroized
/// when the last of them is dropped.
#[derive(Clone)]
pub struct SecretBytes(Bytes);

impl SecretBytes {
    /// Takes `bytes` without copying them.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Bytes::from_owner(Owner(Zeroizing::new(bytes))))
    }

    /// The secret bytes. Callers must not log or format them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The shared buffer, for a response message (no copy).
    pub fn share(&self) -> Bytes {
        self.0.clone()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
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

    #[test]
    fn clones_share_one_buffer() {
        let a = SecretBytes::from(b"value".to_vec());
        let b = a.clone();
        assert_eq!(a.expose().as_ptr(), b.expose().as_ptr());
        assert_eq!(a.share().as_ptr(), a.expose().as_ptr());
        assert_eq!(a, b);
    }
}
