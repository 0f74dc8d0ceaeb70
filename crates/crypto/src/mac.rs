//! Keyed tags (HMAC-SHA256): a vendor's audit tag key marks which audit log leaves concern that
//! vendor, so the vendor can check an export for completeness without learning anything about
//! other vendors' entries (see `audit::vendor`).
//!
//! [`hmac_sha256`] also signs webhook deliveries.
//!
//! The key is not a weight-protecting secret: it is handed to the vendor's own auditors. It
//! is secret from everyone else, because with it a tag reveals whose entry a leaf is.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;

/// HMAC-SHA256 of `message` under `key` (a webhook's signature).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; TAG_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(hmac::sign(&key, message).as_ref());
    out
}

/// Length of a [`TagKey`] and of a tag.
pub const TAG_LEN: usize = 32;

/// An HMAC-SHA256 key. Zeroized on drop; deliberately not `Debug`.
pub struct TagKey(Zeroizing<[u8; TAG_LEN]>);

impl TagKey {
    pub fn generate() -> Result<TagKey, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; TAG_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut_slice())
            .map_err(|_| CryptoError::Random)?;
        Ok(TagKey(bytes))
    }

    /// [`CryptoError::InvalidFormat`] unless `bytes` is exactly [`TAG_LEN`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<TagKey, CryptoError> {
        let mut key = Zeroizing::new([0u8; TAG_LEN]);
        if bytes.len() != TAG_LEN {
            return Err(CryptoError::InvalidFormat("a tag key is 32 bytes"));
        }
        key.copy_from_slice(bytes);
        Ok(TagKey(key))
    }

    /// The raw key, to store it or hand it to the vendor's auditor.
    pub fn expose_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }

    /// HMAC-SHA256 of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        hmac_sha256(self.0.as_slice(), message)
    }

    /// SHA-256 of the key: what the log publishes (to the vendor) to pin the key.
    pub fn fingerprint(&self) -> [u8; 32] {
        crate::hash::sha256(self.0.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector computed independently: `printf custody | openssl dgst -sha256 -mac HMAC
    /// -macopt hexkey:000102…1f`.
    #[test]
    fn tag_matches_an_independent_hmac() {
        let key_bytes: Vec<u8> = (0u8..32).collect();
        let key = TagKey::from_slice(&key_bytes).unwrap();
        assert_eq!(hex::encode(key.tag(b"custody")), OPENSSL_VECTOR);
        assert_ne!(key.tag(b"custody"), key.tag(b"custodz"));
    }

    const OPENSSL_VECTOR: &str = "2fe61a2b4e19d7aa8a287ee24d92d9b3a081984df7c69d43fb82b797d9424dcf";

    #[test]
    fn keys_are_32_bytes_and_random() {
        assert!(TagKey::from_slice(&[0; 31]).is_err());
        let (a, b) = (TagKey::generate().unwrap(), TagKey::generate().unwrap());
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        assert_eq!(a.fingerprint(), crate::hash::sha256(a.expose_bytes()));
    }
}
