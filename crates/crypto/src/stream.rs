//! The segmented streaming AEAD, format v1. The byte layout is specified in `docs/format.md`.
//!
//! A stored object is `header || segment_0 || segment_1 || ...`. Each segment is sealed on its own
//! with AES-256-GCM under a per-object key, so segments can be sealed in parallel and opened
//! individually for ranged reads. The nonce carries the segment index and a "last" flag, and every
//! segment authenticates the header, so any modification, reordering, truncation, extension or
//! transplant to another object fails with [`CryptoError::Integrity`].

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

use crate::{CryptoError, SecretKey};

/// Version byte at offset 0 of every stored object.
pub const FORMAT_VERSION: u8 = 1;
/// Plaintext bytes in every segment but the last. FROZEN: changing it is a format change.
pub const SEGMENT_PLAINTEXT_LEN: usize = 1 << 20;
/// AES-GCM tag length appended to every segment.
pub const TAG_LEN: usize = 16;
/// Stored bytes of every segment but the last.
pub const SEGMENT_CIPHERTEXT_LEN: usize = SEGMENT_PLAINTEXT_LEN + TAG_LEN;
/// Length of the random HKDF salt in the header.
pub const SALT_LEN: usize = 32;
/// Length of the random nonce prefix in the header.
pub const NONCE_PREFIX_LEN: usize = 7;
/// `version || salt || nonce_prefix`
pub const HEADER_LEN: usize = 1 + SALT_LEN + NONCE_PREFIX_LEN;
/// The segment index is a u32 in the nonce.
pub const MAX_SEGMENTS: u64 = 1 << 32;
/// Largest plaintext one object can hold (4 PiB).
pub const MAX_PLAINTEXT_LEN: u64 = MAX_SEGMENTS * SEGMENT_PLAINTEXT_LEN as u64;

/// HKDF info prefix; the three identifiers follow, each as u32 big-endian length || bytes.
const INFO_LABEL: &[u8] = b"custody/stream/v1";

const SEG_PT: u64 = SEGMENT_PLAINTEXT_LEN as u64;
const SEG_CT: u64 = SEGMENT_CIPHERTEXT_LEN as u64;
const HEADER: u64 = HEADER_LEN as u64;
const TAG: u64 = TAG_LEN as u64;

const _: () = assert!(HEADER_LEN == 40);
const _: () = assert!(NONCE_PREFIX_LEN + 4 + 1 == NONCE_LEN);

/// Identifiers bound into the per-object key derivation (HKDF info) so that an object
/// moved/swapped to another object's slot, model or vendor fails to decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectContext<'a> {
    pub vendor_id: &'a str,
    pub model_id: &'a str,
    pub object_id: &'a str,
}

/// Per-object state shared by the sealer and the opener: the derived key and the header bytes
/// (which are also every segment's associated data).
struct ObjectKey {
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
}

impl ObjectKey {
    fn derive(
        model_key: &SecretKey,
        ctx: &ObjectContext,
        salt: &[u8; SALT_LEN],
        prefix: &[u8; NONCE_PREFIX_LEN],
    ) -> Result<Self, CryptoError> {
        let lens = [
            id_len(ctx.vendor_id)?,
            id_len(ctx.model_id)?,
            id_len(ctx.object_id)?,
        ];
        let info: [&[u8]; 7] = [
            INFO_LABEL,
            &lens[0],
            ctx.vendor_id.as_bytes(),
            &lens[1],
            ctx.model_id.as_bytes(),
            &lens[2],
            ctx.object_id.as_bytes(),
        ];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(model_key.expose_secret());
        // The 32-byte OKM goes straight into ring's key type; we never hold it ourselves.
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| CryptoError::InvalidFormat("key derivation failed"))?;
        let key = LessSafeKey::new(UnboundKey::from(okm));

        let mut header = [0u8; HEADER_LEN];
        header[0] = FORMAT_VERSION;
        header[1..1 + SALT_LEN].copy_from_slice(salt);
        header[1 + SALT_LEN..].copy_from_slice(prefix);
        Ok(Self { key, header })
    }

    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, CryptoError> {
        let index = u32::try_from(index).map_err(|_| CryptoError::TooLarge)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.header[1 + SALT_LEN..]);
        nonce[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

fn id_len(id: &str) -> Result<[u8; 4], CryptoError> {
    u32::try_from(id.len())
        .map(u32::to_be_bytes)
        .map_err(|_| CryptoError::InvalidFormat("object identifier longer than u32::MAX bytes"))
}

/// Seals the segments of one new object. `Send + Sync`: share it (e.g. in an `Arc`) to seal
/// segments from several threads at once.
///
/// Each `(index, last)` pair must be sealed at most once per sealer: sealing different plaintexts
/// under the same index reuses a nonce. Create a new sealer (new salt and prefix) to re-encrypt.
pub struct ObjectSealer {
    inner: ObjectKey,
}

impl ObjectSealer {
    /// A sealer for a new object, with a random salt and nonce prefix.
    pub fn new(model_key: &SecretKey, ctx: &ObjectContext) -> Result<Self, CryptoError> {
        let salt = crate::random_bytes::<SALT_LEN>()?;
        let prefix = crate::random_bytes::<NONCE_PREFIX_LEN>()?;
        Ok(Self {
            inner: ObjectKey::derive(model_key, ctx, &salt, &prefix)?,
        })
    }

    /// The 40 header bytes to store in front of the segments.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.inner.header
    }

    /// In place: `buf` holds the plaintext of segment `index`; on return it holds ciphertext||tag.
    ///
    /// Every non-last segment must be exactly [`SEGMENT_PLAINTEXT_LEN`] bytes; the last may be
    /// `0..=SEGMENT_PLAINTEXT_LEN`, and may be empty only if it is segment 0 (an empty object).
    /// Misuse is [`CryptoError::InvalidFormat`] and an index `>= MAX_SEGMENTS` is
    /// [`CryptoError::TooLarge`]; `buf` is left unchanged on error.
    pub fn seal_segment(
        &self,
        index: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        buf.reserve_exact(TAG_LEN);
        let tag = self.seal_segment_detached(index, last, buf.as_mut_slice())?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Like [`ObjectSealer::seal_segment`], encrypting `data` in place and returning the tag,
    /// for callers that lay out many segments in one buffer without copying.
    pub fn seal_segment_detached(
        &self,
        index: u64,
        last: bool,
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        if last {
            if data.len() > SEGMENT_PLAINTEXT_LEN {
                return Err(CryptoError::InvalidFormat(
                    "last segment longer than SEGMENT_PLAINTEXT_LEN",
                ));
            }
            if data.is_empty() && index != 0 {
                return Err(CryptoError::InvalidFormat(
                    "only an empty object may end with an empty segment",
                ));
            }
        } else if data.len() != SEGMENT_PLAINTEXT_LEN {
            return Err(CryptoError::InvalidFormat(
                "non-last segment must be exactly SEGMENT_PLAINTEXT_LEN bytes",
            ));
        }
        let nonce = self.inner.nonce(index, last)?;
        let tag = self
            .inner
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.inner.header), data)
            // ring only fails here for inputs beyond GCM's 64 GiB per-message limit.
            .map_err(|_| CryptoError::TooLarge)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// Opens the segments of one stored object. `Send + Sync`.
pub struct ObjectOpener {
    inner: ObjectKey,
}

impl ObjectOpener {
    /// Parses and checks the header, which must be exactly [`HEADER_LEN`] bytes: the version byte
    /// first ([`CryptoError::UnsupportedVersion`]), then the length
    /// ([`CryptoError::InvalidFormat`]).
    ///
    /// A wrong key or context is not detected here (the header is not authenticated on its own);
    /// it surfaces as [`CryptoError::Integrity`] from the first [`ObjectOpener::open_segment`].
    pub fn new(
        model_key: &SecretKey,
        ctx: &ObjectContext,
        header: &[u8],
    ) -> Result<Self, CryptoError> {
        let Some(&version) = header.first() else {
            return Err(CryptoError::InvalidFormat("empty object header"));
        };
        if version != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        if header.len() != HEADER_LEN {
            return Err(CryptoError::InvalidFormat(
                "object header must be exactly 40 bytes",
            ));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[1..1 + SALT_LEN]);
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        prefix.copy_from_slice(&header[1 + SALT_LEN..]);
        Ok(Self {
            inner: ObjectKey::derive(model_key, ctx, &salt, &prefix)?,
        })
    }

    /// In place: `buf` holds ciphertext||tag of segment `index`; on success it holds the plaintext
    /// (truncated to length). Any authentication or length failure is [`CryptoError::Integrity`]
    /// and leaves `buf` empty, so unauthenticated plaintext is never released. An index
    /// `>= MAX_SEGMENTS` is [`CryptoError::TooLarge`].
    pub fn open_segment(
        &self,
        index: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        match self.open_segment_in_place(index, last, buf) {
            Ok(len) => {
                buf.truncate(len);
                Ok(())
            }
            // An index out of range fails before `buf` is touched; it stays as it was.
            Err(CryptoError::Integrity) => {
                buf.clear();
                Err(CryptoError::Integrity)
            }
            Err(e) => Err(e),
        }
    }

    /// [`Self::open_segment`] over a slice (one segment's ciphertext and tag, inside a larger
    /// buffer read in one request): the plaintext is the first `len` bytes of `buf` on
    /// success; on failure the whole slice is zeroed.
    pub fn open_segment_in_place(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let nonce = self.inner.nonce(index, last)?;
        let len_ok = if last {
            (TAG_LEN..=SEGMENT_CIPHERTEXT_LEN).contains(&buf.len())
        } else {
            buf.len() == SEGMENT_CIPHERTEXT_LEN
        };
        if !len_ok {
            return Err(CryptoError::Integrity);
        }
        let opened = self
            .inner
            .key
            .open_in_place(nonce, Aad::from(&self.inner.header), buf)
            .map(|plaintext| plaintext.len());
        opened.map_err(|_| {
            buf.fill(0);
            CryptoError::Integrity
        })
    }
}

/// Number of segments for a plaintext length; an empty object has exactly one (empty, last)
/// segment.
pub fn segment_count(plaintext_len: u64) -> u64 {
    if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(SEG_PT)
    }
}

/// Total stored length: `HEADER_LEN` + sum of segment ciphertext lengths. Saturates at
/// `u64::MAX` for lengths no object can have.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    HEADER
        .saturating_add(plaintext_len)
        .saturating_add(segment_count(plaintext_len).saturating_mul(TAG))
}

/// Inverse of [`ciphertext_len`]: the plaintext length of a stored object of this total length.
/// [`CryptoError::InvalidFormat`] if no object can have that length (shorter than an empty
/// object, a last segment shorter than its tag, or an empty last segment after full ones).
///
/// A valid length proves nothing: segments may still have been dropped, which opening detects.
pub fn plaintext_len(ciphertext_len: u64) -> Result<u64, CryptoError> {
    let body = ciphertext_len
        .checked_sub(HEADER)
        .ok_or(CryptoError::InvalidFormat(
            "stored object shorter than its header",
        ))?;
    let full = body / SEG_CT;
    let rem = body % SEG_CT;
    let len = match (full, rem) {
        (0, TAG) => 0,
        (_, 0) if full > 0 => full * SEG_PT,
        (_, r) if r > TAG => full * SEG_PT + (r - TAG),
        _ => {
            return Err(CryptoError::InvalidFormat(
                "impossible stored object length",
            ));
        }
    };
    if len > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::TooLarge);
    }
    Ok(len)
}

/// Byte offset of segment `index` in the stored object. Saturates for indexes no object can have.
pub fn segment_offset(index: u64) -> u64 {
    HEADER.saturating_add(index.saturating_mul(SEG_CT))
}

/// Ciphertext length of segment `index` of an object of this plaintext length; 0 if the object
/// has no such segment.
pub fn segment_ciphertext_len(plaintext_len: u64, index: u64) -> u64 {
    let last = segment_count(plaintext_len) - 1;
    if index < last {
        SEG_CT
    } else if index == last {
        plaintext_len - index * SEG_PT + TAG
    } else {
        0
    }
}

/// For a plaintext byte range `[start, end)` (`end <= plaintext_len`, `start < end`): the
/// inclusive range of segment indexes that covers it. An empty range (`start >= end`) yields the
/// segment containing `start`.
pub fn segments_for_range(start: u64, end: u64) -> (u64, u64) {
    let first = start / SEG_PT;
    let last = end.saturating_sub(1).max(start) / SEG_PT;
    (first, last)
}

impl ObjectSealer {
    /// A sealer for an object whose header was made earlier by [`ObjectSealer::new`], to seal
    /// more of its segments in another request or process (a resumed upload).
    ///
    /// Sealing the same segment index twice with different plaintext under one header reuses a
    /// nonce. Callers may only re-seal a segment with the same plaintext (the same byte range
    /// of the same file, whose digest the caller checks), which yields the same ciphertext.
    pub fn resume(
        model_key: &SecretKey,
        ctx: &ObjectContext,
        header: &[u8],
    ) -> Result<Self, CryptoError> {
        let opener = ObjectOpener::new(model_key, ctx, header)?;
        Ok(ObjectSealer {
            inner: opener.inner,
        })
    }
}

/// Constructors that bypass the random salt and nonce prefix. For test vectors only: reusing a
/// salt and prefix for two objects under the same key and context reuses nonces, which breaks
/// AES-GCM's confidentiality and authenticity.
#[doc(hidden)]
pub mod danger {
    use super::{NONCE_PREFIX_LEN, ObjectContext, ObjectKey, ObjectSealer, SALT_LEN};
    use crate::{CryptoError, SecretKey};

    /// A sealer with caller-chosen salt and nonce prefix. Test vectors only.
    pub fn danger_with_nonce_material(
        model_key: &SecretKey,
        ctx: &ObjectContext,
        salt: [u8; SALT_LEN],
        prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<ObjectSealer, CryptoError> {
        Ok(ObjectSealer {
            inner: ObjectKey::derive(model_key, ctx, &salt, &prefix)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sealer_and_opener_are_send_sync() {
        assert_send_sync::<ObjectSealer>();
        assert_send_sync::<ObjectOpener>();
    }

    #[test]
    fn header_layout() {
        let key = SecretKey::from_bytes([1; 32]);
        let ctx = ObjectContext {
            vendor_id: "v",
            model_id: "m",
            object_id: "o",
        };
        let s = danger::danger_with_nonce_material(&key, &ctx, [2; 32], [3; 7]).unwrap();
        let h = s.header();
        assert_eq!(h[0], FORMAT_VERSION);
        assert_eq!(&h[1..33], &[2; 32]);
        assert_eq!(&h[33..40], &[3; 7]);
        let n = s.inner.nonce(0x0102_0304, true).unwrap();
        assert_eq!(n.as_ref(), &[3, 3, 3, 3, 3, 3, 3, 1, 2, 3, 4, 1]);
        let n = s.inner.nonce(5, false).unwrap();
        assert_eq!(n.as_ref(), &[3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 5, 0]);
        assert!(matches!(
            s.inner.nonce(MAX_SEGMENTS, false),
            Err(CryptoError::TooLarge)
        ));
        assert!(s.inner.nonce(MAX_SEGMENTS - 1, true).is_ok());
    }

    #[test]
    fn random_sealers_differ() {
        let key = SecretKey::from_bytes([1; 32]);
        let ctx = ObjectContext {
            vendor_id: "v",
            model_id: "m",
            object_id: "o",
        };
        let a = ObjectSealer::new(&key, &ctx).unwrap().header();
        let b = ObjectSealer::new(&key, &ctx).unwrap().header();
        assert_ne!(a, b);
        assert_eq!(a[0], FORMAT_VERSION);
    }
}
