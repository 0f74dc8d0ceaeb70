// Shared helpers, included with `mod common;` by the integration tests that need them.
#![allow(dead_code, clippy::unwrap_used)]

use crypto::CryptoError;
use crypto::SecretKey;
use crypto::stream::{
    ObjectContext, ObjectOpener, ObjectSealer, SEGMENT_PLAINTEXT_LEN, segment_count,
};

/// `byte[i] = i mod 251` (the pattern used by vectors.json).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Seals a whole object with the public segment API.
pub fn seal_with(sealer: &ObjectSealer, plaintext: &[u8]) -> Vec<u8> {
    let mut out = sealer.header().to_vec();
    let count = segment_count(plaintext.len() as u64);
    for i in 0..count {
        let start = i as usize * SEGMENT_PLAINTEXT_LEN;
        let end = plaintext.len().min(start + SEGMENT_PLAINTEXT_LEN);
        let mut buf = plaintext[start..end].to_vec();
        sealer.seal_segment(i, i + 1 == count, &mut buf).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

pub fn seal(key: &SecretKey, ctx: &ObjectContext, plaintext: &[u8]) -> Vec<u8> {
    seal_with(&ObjectSealer::new(key, ctx).unwrap(), plaintext)
}

/// Opens a whole stored object the way a reader that only knows the stored length would.
pub fn open(key: &SecretKey, ctx: &ObjectContext, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use crypto::stream::{HEADER_LEN, plaintext_len, segment_ciphertext_len, segment_offset};
    let header = stored.get(..HEADER_LEN.min(stored.len())).unwrap();
    let opener = ObjectOpener::new(key, ctx, header)?;
    let pt_len = plaintext_len(stored.len() as u64)?;
    let count = segment_count(pt_len);
    let mut out = Vec::with_capacity(pt_len as usize);
    for i in 0..count {
        let off = segment_offset(i) as usize;
        let len = segment_ciphertext_len(pt_len, i) as usize;
        let mut buf = stored[off..off + len].to_vec();
        opener.open_segment(i, i + 1 == count, &mut buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}
