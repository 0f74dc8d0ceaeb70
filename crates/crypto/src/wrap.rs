//! Key wrapping: model keys under an epoch key, epoch keys under a root key.
//!
//! `wrapped = version (1) || nonce (12) || AES-256-GCM(kek, key) (32) || tag (16)`, with associated
//! data `version || aad`. The caller's `aad` should name what the key is for (e.g. the model id and
//! epoch), so a wrapped key cannot be swapped into another record. Nonces are random: a KEK wraps
//! few keys, far below the 2^32 random-nonce limit for AES-GCM.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::{CryptoError, KEY_LEN, SecretKey};

/// Version byte at offset 0 of a wrapped key.
pub const WRAP_VERSION: u8 = 1;
/// `version || nonce || encrypted key || tag`
pub const WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

const TAG_LEN: usize = 16;
const _: () = assert!(WRAPPED_LEN == 1 + NONCE_LEN + KEY_LEN + TAG_LEN);

fn aead_key(kek: &SecretKey) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, kek.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::InvalidFormat("key encryption key rejected"))
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(WRAP_VERSION);
    full.extend_from_slice(aad);
    full
}

/// Encrypts `key` under `kek`: `version || random 96-bit nonce || AES-256-GCM(kek, key, aad =
/// version byte || aad)`, [`WRAPPED_LEN`] bytes.
pub fn wrap_key(kek: &SecretKey, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = crate::random_bytes::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(key.expose_secret());
    let tag = aead_key(kek)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(full_aad(aad)),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::InvalidFormat("key wrapping failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Reverses [`wrap_key`]. Version byte first ([`CryptoError::UnsupportedVersion`]), then length
/// ([`CryptoError::InvalidFormat`]); a wrong `kek`, wrong `aad` or any modification is
/// [`CryptoError::Integrity`].
pub fn unwrap_key(kek: &SecretKey, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError> {
    let Some(&version) = wrapped.first() else {
        return Err(CryptoError::InvalidFormat("empty wrapped key"));
    };
    if version != WRAP_VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    if wrapped.len() != WRAPPED_LEN {
        return Err(CryptoError::InvalidFormat(
            "wrapped key must be exactly 61 bytes",
        ));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
    let mut buf = Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
    buf.copy_from_slice(&wrapped[1 + NONCE_LEN..]);
    let plaintext = aead_key(kek)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(full_aad(aad)),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Integrity)?;
    SecretKey::from_slice(plaintext)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let kek = SecretKey::generate().unwrap();
        let key = SecretKey::generate().unwrap();
        let w = wrap_key(&kek, &key, b"model:m1/epoch:3").unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(w[0], WRAP_VERSION);
        assert_ne!(&w[13..45], key.expose_secret().as_slice());
        let back = unwrap_key(&kek, &w, b"model:m1/epoch:3").unwrap();
        assert_eq!(back.expose_secret(), key.expose_secret());
        // Random nonces: wrapping twice gives different bytes.
        assert_ne!(w, wrap_key(&kek, &key, b"model:m1/epoch:3").unwrap());
        // Empty aad works too.
        let w = wrap_key(&kek, &key, b"").unwrap();
        assert_eq!(
            unwrap_key(&kek, &w, b"").unwrap().expose_secret(),
            key.expose_secret()
        );
    }

    #[test]
    fn every_bit_flip_fails() {
        let kek = SecretKey::generate().unwrap();
        let key = SecretKey::generate().unwrap();
        let w = wrap_key(&kek, &key, b"aad").unwrap();
        for i in 0..w.len() {
            for bit in 0..8 {
                let mut t = w.clone();
                t[i] ^= 1 << bit;
                let err = unwrap_key(&kek, &t, b"aad").err();
                if i == 0 {
                    assert_eq!(
                        err,
                        Some(CryptoError::UnsupportedVersion(w[0] ^ (1 << bit)))
                    );
                } else {
                    assert_eq!(err, Some(CryptoError::Integrity), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn wrong_aad_kek_and_lengths_fail() {
        let kek = SecretKey::generate().unwrap();
        let key = SecretKey::generate().unwrap();
        let w = wrap_key(&kek, &key, b"model:a").unwrap();
        assert_eq!(
            unwrap_key(&kek, &w, b"model:b").err(),
            Some(CryptoError::Integrity)
        );
        assert_eq!(
            unwrap_key(&kek, &w, b"").err(),
            Some(CryptoError::Integrity)
        );
        let other = SecretKey::generate().unwrap();
        assert_eq!(
            unwrap_key(&other, &w, b"model:a").err(),
            Some(CryptoError::Integrity)
        );
        assert!(matches!(
            unwrap_key(&kek, &w[..WRAPPED_LEN - 1], b"model:a"),
            Err(CryptoError::InvalidFormat(_))
        ));
        let mut long = w.clone();
        long.push(0);
        assert!(matches!(
            unwrap_key(&kek, &long, b"model:a"),
            Err(CryptoError::InvalidFormat(_))
        ));
        assert!(matches!(
            unwrap_key(&kek, &[], b"model:a"),
            Err(CryptoError::InvalidFormat(_))
        ));
    }
}
