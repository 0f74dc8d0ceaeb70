use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use crypto::SecretKey;
use crypto::hash::Sha256;
use crypto::stream::{
    self, HEADER_LEN, ObjectContext, ObjectOpener, ObjectSealer, SEGMENT_PLAINTEXT_LEN,
};
use futures::Stream;
use types::ObjectId;

use crate::{Backend, BlobError, PartReceipt};

/// Ciphertext is handed to the backend in parts of about this size (S3's minimum is 5 MiB).
/// With one segment buffer beside it, this bounds an upload's memory.
pub const PART_TARGET_LEN: usize = 16 * stream::SEGMENT_CIPHERTEXT_LEN;

/// Encrypted objects over a backend.
#[derive(Clone)]
pub struct BlobStore {
    backend: Arc<dyn Backend>,
}

/// What was stored: the plaintext's length and SHA-256, and the stored (ciphertext) length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    pub plaintext_len: u64,
    pub sha256: [u8; 32],
    pub stored_len: u64,
}

/// The identifiers an object is bound to; all three go into its key derivation.
fn context<'a>(
    vendor_id: &'a str,
    model_id: &'a str,
    object_id: &'a ObjectId,
) -> ObjectContext<'a> {
    ObjectContext {
        vendor_id,
        model_id,
        object_id: object_id.as_str(),
    }
}

impl BlobStore {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        BlobStore { backend }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Starts writing a new object. Nothing is visible until [`ObjectWriter::finish`].
    pub async fn begin(
        &self,
        model_key: &SecretKey,
        vendor_id: &str,
        model_id: &str,
        object_id: &ObjectId,
    ) -> Result<ObjectWriter, BlobError> {
        let sealer = ObjectSealer::new(model_key, &context(vendor_id, model_id, object_id))?;
        let upload_id = self.backend.create_upload(object_id.as_str()).await?;
        let mut part = Vec::with_capacity(PART_TARGET_LEN + stream::SEGMENT_CIPHERTEXT_LEN);
        part.extend_from_slice(&sealer.header());
        Ok(ObjectWriter {
            backend: self.backend.clone(),
            object_id: object_id.clone(),
            upload_id,
            sealer,
            pending: Vec::with_capacity(SEGMENT_PLAINTEXT_LEN + 1),
            work: Vec::with_capacity(stream::SEGMENT_CIPHERTEXT_LEN),
            part,
            parts: Vec::new(),
            next_segment: 0,
            hasher: Sha256::new(),
            plaintext_len: 0,
            stored_len: 0,
        })
    }

    /// Streams the plaintext bytes `range` of an object whose plaintext length is
    /// `plaintext_len` (from the database). Only the segments covering the range are read and
    /// opened. The stored length is checked first, so truncation is reported before any byte.
    pub async fn open_range(
        &self,
        model_key: &SecretKey,
        vendor_id: &str,
        model_id: &str,
        object_id: &ObjectId,
        plaintext_len: u64,
        range: Range<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static, BlobError> {
        if range.start > range.end || range.end > plaintext_len {
            return Err(BlobError::BadRange {
                start: range.start,
                end: range.end,
                len: plaintext_len,
            });
        }
        let key = object_id.as_str().to_owned();
        match self.backend.size(&key).await? {
            None => return Err(BlobError::NotFound(key)),
            Some(len) if len != stream::ciphertext_len(plaintext_len) => {
                return Err(BlobError::Integrity);
            }
            Some(_) => {}
        }
        let header = self.backend.read_range(&key, 0, HEADER_LEN as u64).await?;
        let opener =
            ObjectOpener::new(model_key, &context(vendor_id, model_id, object_id), &header)?;
        let segments = if range.is_empty() {
            // An empty range still proves the object opens: read its first segment.
            0..1
        } else {
            let (first, last) = stream::segments_for_range(range.start, range.end);
            first..last + 1
        };
        let state = ReadState {
            backend: self.backend.clone(),
            key,
            opener: Arc::new(opener),
            plaintext_len,
            range,
            segments,
        };
        Ok(futures::stream::try_unfold(state, |mut state| async move {
            let Some(index) = state.segments.next() else {
                return Ok(None);
            };
            let chunk = state.read_segment(index).await?;
            Ok(Some((chunk, state)))
        }))
    }

    pub async fn delete(&self, object_id: &ObjectId) -> Result<(), BlobError> {
        self.backend.delete(object_id.as_str()).await
    }
}

struct ReadState {
    backend: Arc<dyn Backend>,
    key: String,
    opener: Arc<ObjectOpener>,
    plaintext_len: u64,
    range: Range<u64>,
    segments: Range<u64>,
}

impl ReadState {
    async fn read_segment(&self, index: u64) -> Result<Bytes, BlobError> {
        let last_index = stream::segment_count(self.plaintext_len) - 1;
        let ct_len = stream::segment_ciphertext_len(self.plaintext_len, index);
        let ciphertext = self
            .backend
            .read_range(&self.key, stream::segment_offset(index), ct_len)
            .await?;
        let opener = self.opener.clone();
        // AES-GCM over 1 MiB is a fraction of a millisecond, but it is CPU work: keep it off
        // the reactor thread so one large fetch does not stall other connections.
        let plaintext = tokio::task::spawn_blocking(move || {
            let mut buf = ciphertext.to_vec();
            opener
                .open_segment(index, index == last_index, &mut buf)
                .map(|()| buf)
        })
        .await
        .map_err(|e| BlobError::Backend(format!("decryption task failed: {e}")))??;
        let segment_start = index * SEGMENT_PLAINTEXT_LEN as u64;
        let from = self.range.start.saturating_sub(segment_start) as usize;
        let to = (self.range.end - segment_start).min(plaintext.len() as u64) as usize;
        if from >= to {
            return Ok(Bytes::new());
        }
        Ok(Bytes::from(plaintext).slice(from..to))
    }
}

/// Writes one object: plaintext in, sealed segments out, parts to the backend.
///
/// Memory: one pending segment plus one part, whatever the object's size.
pub struct ObjectWriter {
    backend: Arc<dyn Backend>,
    object_id: ObjectId,
    upload_id: String,
    sealer: ObjectSealer,
    /// Plaintext not yet sealed. A full segment is sealed only once a byte after it arrives,
    /// because only then is it known not to be the last.
    pending: Vec<u8>,
    work: Vec<u8>,
    part: Vec<u8>,
    parts: Vec<PartReceipt>,
    next_segment: u64,
    hasher: Sha256,
    plaintext_len: u64,
    stored_len: u64,
}

impl ObjectWriter {
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(data);
        self.plaintext_len += data.len() as u64;
        while !data.is_empty() {
            let room = SEGMENT_PLAINTEXT_LEN + 1 - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() > SEGMENT_PLAINTEXT_LEN {
                self.seal_pending(false).await?;
            }
        }
        Ok(())
    }

    /// Seals the final segment, stores the last part and makes the object visible.
    pub async fn finish(mut self) -> Result<WrittenObject, BlobError> {
        self.seal_pending(true).await?;
        if !self.part.is_empty() {
            self.flush_part().await?;
        }
        let parts = std::mem::take(&mut self.parts);
        self.backend
            .complete_upload(self.object_id.as_str(), &self.upload_id, parts)
            .await?;
        Ok(WrittenObject {
            plaintext_len: self.plaintext_len,
            sha256: self.hasher.clone().finish(),
            stored_len: self.stored_len,
        })
    }

    /// Drops everything stored so far.
    pub async fn abort(self) -> Result<(), BlobError> {
        self.backend
            .abort_upload(self.object_id.as_str(), &self.upload_id)
            .await
    }

    /// SHA-256 of the plaintext written so far.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finish()
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    async fn seal_pending(&mut self, last: bool) -> Result<(), BlobError> {
        let take = if last {
            self.pending.len()
        } else {
            SEGMENT_PLAINTEXT_LEN
        };
        self.work.clear();
        self.work.extend_from_slice(&self.pending[..take]);
        self.pending.drain(..take);
        self.sealer
            .seal_segment(self.next_segment, last, &mut self.work)?;
        self.next_segment += 1;
        self.part.extend_from_slice(&self.work);
        if self.part.len() >= PART_TARGET_LEN {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn flush_part(&mut self) -> Result<(), BlobError> {
        let part_number = self.parts.len() as u32 + 1;
        let data = Bytes::from(std::mem::replace(
            &mut self.part,
            Vec::with_capacity(PART_TARGET_LEN + stream::SEGMENT_CIPHERTEXT_LEN),
        ));
        self.stored_len += data.len() as u64;
        let receipt = self
            .backend
            .upload_part(self.object_id.as_str(), &self.upload_id, part_number, data)
            .await?;
        self.parts.push(receipt);
        Ok(())
    }
}
