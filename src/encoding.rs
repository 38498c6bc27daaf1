//! `objectEncoding`: how a value (or a `jmesPath` result) is stored, decoded
//! before it is written. `utf-8`, the default, writes the bytes as they are;
//! `base64` (the standard alphabet, padding optional, line breaks and other
//! ASCII whitespace ignored, as in PEM bodies) and `hex` (either case) are
//! decoded. The decoded bytes are a new zeroized buffer; the input is left
//! to its own holders.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroize;

use crate::secret::SecretBytes;

/// `objectEncoding`: how a value is stored; it is decoded before it is
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// The bytes as they are (the default).
    #[default]
    Utf8,
    Base64,
    Hex,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        }
    }

    pub fn parse(v: &str) -> Option<Self> {
        match v.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Encoding::Utf8),
            "base64" => Some(Encoding::Base64),
            "hex" => Some(Encoding::Hex),
            _ => None,
        }
    }
}

/// Standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The value is not in the encoding it was declared in (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEncoded;

/// `value` decoded from `encoding`.
pub fn decode(encoding: Encoding, value: SecretBytes) -> Result<SecretBytes, NotEncoded> {
    match encoding {
        Encoding::Utf8 => Ok(value),
        Encoding::Base64 => {
            let mut compact: Vec<u8> = value
                .expose()
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let decoded = BASE64.decode(&compact).map_err(|_| NotEncoded);
            compact.zeroize();
            decoded.map(SecretBytes::new)
        }
        Encoding::Hex => {
            let text = value.expose();
            let text = text.strip_suffix(b"\n").unwrap_or(text);
            if !text.len().is_multiple_of(2) {
                return Err(NotEncoded);
            }
            let mut out = Vec::with_capacity(text.len() / 2);
            for pair in text.chunks_exact(2) {
                match (nibble(pair[0]), nibble(pair[1])) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => {
                        out.zeroize();
                        return Err(NotEncoded);
                    }
                }
            }
            Ok(SecretBytes::new(out))
        }
    }
}

fn nibble(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(e: Encoding, s: &[u8]) -> Result<Vec<u8>, NotEncoded> {
        decode(e, SecretBytes::new(s.to_vec())).map(|v| v.expose().to_vec())
    }

    #[test]
    fn each_encoding_decodes_and_refuses_what_is_not_in_it() {
        assert_eq!(d(Encoding::Utf8, b"as is\xff"), Ok(b"as is\xff".to_vec()));
        assert_eq!(d(Encoding::Base64, b"AAEC/w=="), Ok(vec![0, 1, 2, 255]));
        assert_eq!(
            d(Encoding::Base64, b"AAEC/w"),
            Ok(vec![0, 1, 2, 255]),
            "padding optional"
        );
        assert_eq!(
            d(Encoding::Base64, b"AAEC\n/w==\n"),
            Ok(vec![0, 1, 2, 255]),
            "line breaks"
        );
        assert_eq!(d(Encoding::Base64, b"AAEC_w=="), Err(NotEncoded), "URL-safe alphabet");
        assert_eq!(d(Encoding::Base64, b"not base64!"), Err(NotEncoded));
        assert_eq!(d(Encoding::Hex, b"00ff7F\n"), Ok(vec![0, 255, 127]));
        assert_eq!(d(Encoding::Hex, b"0"), Err(NotEncoded));
        assert_eq!(d(Encoding::Hex, b"zz"), Err(NotEncoded));
        assert_eq!(d(Encoding::Hex, b""), Ok(vec![]));
    }
}
