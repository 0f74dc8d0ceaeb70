//! SHA-256, one-shot and incremental (content addressing, token hashes, audit chains).

use ring::digest;

use crate::CryptoError;

/// Incremental SHA-256.
#[derive(Clone)]
pub struct Sha256(digest::Context);

impl Sha256 {
    pub fn new() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// Version byte of an exported [`ResumableSha256`] state. Frozen.
const STATE_VERSION: u8 = 1;
/// Length of an exported state: version, length in bytes (u64), eight state words.
pub const STATE_LEN: usize = 1 + 8 + 32;

/// SHA-256 whose state can be saved at a 64-byte boundary and restored in another process.
///
/// An upload of a 100 GB file that is interrupted must not be hashed again from the start when
/// it resumes, yet the server must still check the whole file's digest. The state after each
/// stored part is kept beside the upload; it reveals no more than the digest of that prefix.
#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, including those in `buf`.
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl ResumableSha256 {
    pub fn new() -> Self {
        ResumableSha256 {
            state: SHA256_IV,
            len: 0,
            buf: [0; 64],
            buf_len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            sha2_resumable::block_api::compress256(&mut self.state, &[self.buf]);
            self.buf_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        sha2_resumable::block_api::compress256(&mut self.state, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> [u8; 32] {
        let bit_len = self.len.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        tail[self.buf_len] = 0x80;
        let total = if self.buf_len < 56 { 64 } else { 128 };
        tail[total - 8..total].copy_from_slice(&bit_len.to_be_bytes());
        let (blocks, _) = tail[..total].as_chunks::<64>();
        sha2_resumable::block_api::compress256(&mut self.state, blocks);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The state, when the length hashed is a multiple of 64 bytes; `None` otherwise.
    pub fn export(&self) -> Option<[u8; STATE_LEN]> {
        if self.buf_len != 0 {
            return None;
        }
        let mut out = [0u8; STATE_LEN];
        out[0] = STATE_VERSION;
        out[1..9].copy_from_slice(&self.len.to_be_bytes());
        for (chunk, word) in out[9..].chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Some(out)
    }

    pub fn import(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != STATE_LEN {
            return Err(CryptoError::InvalidFormat(
                "hash state has the wrong length",
            ));
        }
        if bytes[0] != STATE_VERSION {
            return Err(CryptoError::UnsupportedVersion(bytes[0]));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[1..9]);
        let len = u64::from_be_bytes(len);
        if len % 64 != 0 {
            return Err(CryptoError::InvalidFormat(
                "hash state not at a block boundary",
            ));
        }
        let mut state = [0u32; 8];
        for (word, chunk) in state.iter_mut().zip(bytes[9..].chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            *word = u32::from_be_bytes(b);
        }
        Ok(ResumableSha256 {
            state,
            len,
            buf: [0; 64],
            buf_len: 0,
        })
    }
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// A Git object id: SHA-1 over `"<kind> <len>\0"` followed by the content. Only a name that
/// Hub clients expect (blob ids of small files, tree ids); never used for integrity, which
/// SHA-256 provides.
pub struct GitObjectHasher(digest::Context);

impl GitObjectHasher {
    /// `kind` is `blob` or `tree`; `len` the exact number of content bytes that follow.
    pub fn new(kind: &str, len: u64) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(format!("{kind} {len}\0").as_bytes());
        Self(ctx)
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// The Git object id of `content` (what `git hash-object -t KIND` prints, as bytes).
pub fn git_object_id(kind: &str, content: &[u8]) -> [u8; 20] {
    let mut h = GitObjectHasher::new(kind, content.len() as u64);
    h.update(content);
    h.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 180-2 examples.
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn git_object_ids_match_git() {
        // `git hash-object --stdin` of "" and "hello\n".
        assert_eq!(
            hex::encode(git_object_id("blob", b"")),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            hex::encode(git_object_id("blob", b"hello\n")),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        let mut h = GitObjectHasher::new("blob", 6);
        h.update(b"hel");
        h.update(b"lo\n");
        assert_eq!(h.finish(), git_object_id("blob", b"hello\n"));
    }

    #[test]
    fn incremental_matches_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Sha256::new();
        for chunk in data.chunks(333) {
            h.update(chunk);
        }
        let forked = h.clone();
        assert_eq!(h.finish(), sha256(&data));
        assert_eq!(forked.finish(), sha256(&data));
    }

    #[test]
    fn resumable_matches_ring_for_every_split() {
        let data: Vec<u8> = (0..5_000u32).map(|i| (i * 7 % 253) as u8).collect();
        for len in [0usize, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let expected = sha256(&data[..len]);
            let mut h = ResumableSha256::new();
            for chunk in data[..len].chunks(37) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), expected, "len {len}");
        }
    }

    #[test]
    fn resumable_state_survives_export_and_import() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let mut h = ResumableSha256::new();
        h.update(&data[..640]);
        let saved = h.export().unwrap();
        h.update(&data[640..641]);
        assert!(h.export().is_none(), "only at block boundaries");
        let mut resumed = ResumableSha256::import(&saved).unwrap();
        assert_eq!(resumed.len(), 640);
        resumed.update(&data[640..]);
        assert_eq!(resumed.finish(), sha256(&data));

        let mut bad = saved;
        bad[0] = 9;
        assert!(matches!(
            ResumableSha256::import(&bad),
            Err(CryptoError::UnsupportedVersion(9))
        ));
        assert!(ResumableSha256::import(&saved[..10]).is_err());
        let mut unaligned = saved;
        unaligned[8] = 1;
        assert!(ResumableSha256::import(&unaligned).is_err());
    }
}
