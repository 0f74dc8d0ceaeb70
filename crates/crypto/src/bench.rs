//! Measurement helpers for the `bench` crate, which may not name ring itself.
//!
//! [`raw_aes_gcm_seal_in_place`] is the ceiling the streaming format is compared against:
//! ring's AES-256-GCM with nothing around it (no key derivation, no segment bookkeeping, no
//! copies). It seals one caller-owned buffer over and over, so the figure measures the cipher
//! and not the allocator: fresh allocations spend much of their time zeroing pages. The key is
//! random and thrown away, and every call uses a new counter nonce, so the ciphertexts are
//! worthless and no nonce repeats under the key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::{CryptoError, KEY_LEN};

/// Seals `buf` in place `iterations` times with ring's AES-256-GCM under a fresh random key,
/// nonce `i` (a big-endian counter) for call `i`, no associated data. The tags are discarded.
///
/// Time it from the caller: throughput is `buf.len() * iterations` bytes over the elapsed time.
/// [`CryptoError::TooLarge`] if `buf` is beyond GCM's per-message limit (64 GiB).
pub fn raw_aes_gcm_seal_in_place(buf: &mut [u8], iterations: u64) -> Result<(), CryptoError> {
    let mut raw = crate::random_bytes::<KEY_LEN>()?;
    let unbound = UnboundKey::new(&AES_256_GCM, &raw);
    raw.zeroize();
    let key = LessSafeKey::new(unbound.map_err(|_| CryptoError::InvalidFormat("aes key"))?);
    for i in 0..iterations {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&i.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut *buf,
            )
            .map_err(|_| CryptoError::TooLarge)?;
        let _ = std::hint::black_box(tag);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn seals_in_place() {
        let mut buf = vec![0u8; 4096];
        raw_aes_gcm_seal_in_place(&mut buf, 3).unwrap();
        assert_ne!(buf, vec![0u8; 4096]);
        let before = buf.clone();
        raw_aes_gcm_seal_in_place(&mut buf, 0).unwrap();
        assert_eq!(buf, before);
        raw_aes_gcm_seal_in_place(&mut [], 2).unwrap();
    }
}
