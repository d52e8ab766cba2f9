//! Keyed hashes of personal data. Analytical tables keep `HMAC-SHA256(key, normalised value)`,
//! so equal emails still join and count, but the value cannot be read back or guessed without
//! the key, which lives outside the lake.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A PII hashing key.
#[derive(Clone)]
pub struct PiiKey(Vec<u8>);

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(..)")
    }
}

impl PiiKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> PiiKey {
        PiiKey(bytes.into())
    }

    /// A fresh random key (32 bytes), hex-encoded for storage.
    pub fn generate_hex() -> String {
        let mut k = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        hex::encode(k)
    }

    /// Hash a value after normalising it the way the field is compared: emails lower-cased,
    /// phone numbers reduced to their digits. Empty values hash to nothing.
    pub fn hash(&self, field: &str, value: &str) -> Option<String> {
        let normalised = match field {
            "email" => value.trim().to_lowercase(),
            "phone" => value.chars().filter(|c| c.is_ascii_digit()).collect(),
            _ => value.trim().to_string(),
        };
        if normalised.is_empty() {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        Some(hex::encode(&mac.finalize().into_bytes()[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_normalised() {
        let a = PiiKey::new(b"k1".to_vec());
        let b = PiiKey::new(b"k2".to_vec());
        assert_eq!(
            a.hash("email", "Ann@Example.com "),
            a.hash("email", "ann@example.com")
        );
        assert_eq!(
            a.hash("phone", "+1 (555) 010-2000"),
            a.hash("phone", "15550102000")
        );
        assert_ne!(
            a.hash("email", "ann@example.com"),
            b.hash("email", "ann@example.com")
        );
        assert_eq!(a.hash("email", "  "), None);
        assert_eq!(a.hash("email", "x@y.z").unwrap().len(), 32);
        assert_eq!(format!("{a:?}"), "PiiKey(..)");
    }
}
