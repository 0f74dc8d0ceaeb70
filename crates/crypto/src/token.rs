//! Bearer tokens `"<id>.<secret>"`. Only the id and the SHA-256 of the secret are stored; the
//! secret is shown once. A plain hash (no salt or stretching) is enough because the secret is 256
//! random bits, not a password.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;

/// The secret half of a bearer token: 32 random bytes, hex-encoded (64 chars).
///
/// Zeroized on drop. Deliberately not `Debug`, `Display` or `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// A fresh secret: 32 random bytes as 64 lowercase hex chars.
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(crate::random_bytes::<32>()?);
        Ok(Self(hex::encode(bytes.as_slice())))
    }

    /// Wraps a secret presented by a client. Not validated: a malformed secret simply fails
    /// [`verify`].
    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    /// The secret text, to show the user once. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the secret's UTF-8 bytes: what is stored.
    pub fn hash(&self) -> [u8; 32] {
        crate::hash::sha256(self.0.as_bytes())
    }
}

/// SHA-256 of the secret, compared in constant time with the stored hash. A stored hash of the
/// wrong length never matches.
pub fn verify(secret: &TokenSecret, stored_hash: &[u8]) -> bool {
    stored_hash.len() == 32 && bool::from(secret.hash().ct_eq(stored_hash))
}

/// 16 random lowercase hex chars (64 bits), for token ids and other public ids.
pub fn random_id() -> Result<String, CryptoError> {
    Ok(hex::encode(crate::random_bytes::<8>()?))
}

/// Whether `id` has the shape of an id custody makes (hex, at most 64 characters): checked
/// before an id from outside reaches a URL, a query or a log line.
pub fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn generate_shape() {
        let s = TokenSecret::generate().unwrap();
        assert_eq!(s.expose_secret().len(), 64);
        assert!(
            s.expose_secret()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(
            s.expose_secret(),
            TokenSecret::generate().unwrap().expose_secret()
        );
        let id = random_id().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, random_id().unwrap());
    }

    #[test]
    fn verify_true_and_false() {
        let s = TokenSecret::generate().unwrap();
        let stored = s.hash();
        assert!(verify(&s, &stored));
        let same = TokenSecret::from_string(s.expose_secret().to_owned());
        assert!(verify(&same, &stored));
        assert!(!verify(&TokenSecret::generate().unwrap(), &stored));
        // One character different.
        let mut text = s.expose_secret().to_owned();
        let last = if text.ends_with('0') { "1" } else { "0" };
        text.replace_range(63.., last);
        assert!(!verify(&TokenSecret::from_string(text), &stored));
        // Wrong stored length never matches, even as a prefix.
        assert!(!verify(&s, &stored[..31]));
        assert!(!verify(&s, &[]));
        let mut long = stored.to_vec();
        long.push(0);
        assert!(!verify(&s, &long));
    }

    #[test]
    fn hash_is_sha256_of_text() {
        let s = TokenSecret::from_string("abc".to_owned());
        assert_eq!(
            hex::encode(s.hash()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
