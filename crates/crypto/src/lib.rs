//! Cryptography for custody, in one place.
//!
//! Design note (why it looks like this):
//!
//! * This is the only crate that names a cryptographic library. Everything else sees small,
//!   misuse-resistant operations ("seal segment 7 of this object"), so an audit of how keys and
//!   nonces are handled only has to read this crate.
//! * Weights are tens to hundreds of GiB, so objects are encrypted as a *segmented stream*
//!   (STREAM construction, Hoang–Reyhanitabar–Rogaway–Vizár 2015): fixed 1 MiB segments that can
//!   be sealed in parallel, read with ranged requests and verified one at a time, without ever
//!   releasing unauthenticated plaintext. The segment index and a "last" flag live in the nonce,
//!   so reordering and truncation are detected like any other modification.
//! * Every object gets its own AES-256-GCM key, derived with HKDF from the model key, a random
//!   per-object salt and the object's identity (vendor, model, object). Random salts keep GCM's
//!   per-key message limits out of reach, and binding the identity means a blob copied into another
//!   object's slot fails to decrypt rather than serving the wrong weights. Nonces are never random
//!   under one key: they are a per-object prefix plus a counter.
//! * The byte format is frozen and specified in `docs/format.md` (repository root), with test
//!   vectors in `crates/crypto/tests/vectors.json` that were produced by an independent
//!   implementation. Changing any constant here is a format change: bump the version byte instead.
//! * Secrets ([`SecretKey`], [`token::TokenSecret`]) are zeroized on drop and deliberately have no
//!   `Debug`, `Display` or `Clone`, so they cannot end up in logs or be copied by accident; reading
//!   the bytes requires an explicit `expose_secret()`. Keys expanded inside ring (AES key schedules)
//!   are not zeroized by ring; we accept that, and never hold raw derived keys ourselves (HKDF output
//!   goes straight into ring's key type).
//! * Errors never carry key material and deliberately do not say *why* authentication failed:
//!   every tag failure is the same [`CryptoError::Integrity`].

#![forbid(unsafe_code)]

pub mod age_file;
/// Only with the `bench` feature, which only the benchmark crate turns on.
#[cfg(feature = "bench")]
pub mod bench;
pub mod hash;
pub mod host_ca;
pub mod mac;
pub mod sign;
pub mod stream;
pub mod tls;
pub mod token;
pub mod wrap;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Errors from this crate. Messages are safe to log: they never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed. Deliberately says nothing about which check failed.
    #[error(
        "integrity check failed: ciphertext was modified, truncated, reordered or belongs to another object"
    )]
    Integrity,
    /// The version byte names a format this build does not understand.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Structurally invalid input (wrong length, misuse of the segment API, ...).
    #[error("invalid format: {0}")]
    InvalidFormat(&'static str),
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// A length or segment index is beyond what the format can represent.
    #[error("too large for the format: at most 2^32 segments per object")]
    TooLarge,
    /// Certificate generation or TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
}

/// Length in bytes of a [`SecretKey`].
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key (model key, epoch key, root key).
///
/// Zeroized on drop. Deliberately not `Debug`, `Display` or `Clone`. The bytes live on the heap so
/// that moving a key around does not leave copies of it in old stack frames.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Self(Box::new([0u8; KEY_LEN]));
        SystemRandom::new()
            .fill(key.0.as_mut_slice())
            .map_err(|_| CryptoError::Random)?;
        Ok(key)
    }

    /// Takes ownership of raw key bytes. The argument's copy is wiped; the caller remains
    /// responsible for any other copies it holds.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// Copies raw key bytes from a slice; [`CryptoError::InvalidFormat`] unless it is exactly
    /// 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidFormat(
                "secret key must be exactly 32 bytes",
            ));
        }
        let mut key = Self(Box::new([0u8; KEY_LEN]));
        key.0.copy_from_slice(bytes);
        Ok(key)
    }

    /// The raw key bytes. Only for writing key files or wrapping; never log them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_from_slice_checks_length() {
        assert_eq!(
            SecretKey::from_slice(&[0u8; 31]).err(),
            Some(CryptoError::InvalidFormat(
                "secret key must be exactly 32 bytes"
            ))
        );
        assert!(SecretKey::from_slice(&[0u8; 33]).is_err());
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(key.expose_secret(), &[7u8; 32]);
        assert_eq!(SecretKey::from_bytes([9u8; 32]).expose_secret(), &[9u8; 32]);
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), &[0u8; 32]);
        let r1: [u8; 24] = random_bytes().unwrap();
        let r2: [u8; 24] = random_bytes().unwrap();
        assert_ne!(r1, r2);
    }

    #[test]
    fn zeroize_wipes_key() {
        let mut key = SecretKey::from_bytes([0xAA; 32]);
        key.zeroize();
        assert_eq!(key.expose_secret(), &[0u8; 32]);
    }

    #[test]
    fn integrity_message_is_exact() {
        assert_eq!(
            CryptoError::Integrity.to_string(),
            "integrity check failed: ciphertext was modified, truncated, reordered or belongs to another object"
        );
    }
}
