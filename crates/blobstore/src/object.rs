use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use crypto::SecretKey;
use crypto::stream::{self, HEADER_LEN, ObjectContext, ObjectOpener, SEGMENT_PLAINTEXT_LEN};
use futures::{Stream, StreamExt, TryStreamExt};
use types::ObjectId;

use crate::{Backend, BlobError, PartSealer};

/// Segments read from the backend in one request. One GET per 1 MiB segment made an S3
/// backend pay a request's latency (and moto, which reads the whole object for every ranged
/// GET, a whole object) per MiB; four per request cut the requests fourfold (issue 15,
/// docs/performance.md).
pub const SEGMENTS_PER_READ: u64 = 4;

/// Reads in flight ahead of the one being sent: decryption then runs on several cores while
/// the network drains the current read. With the read being sent, a download stream holds at
/// most `READ_AHEAD + 1` reads of `SEGMENTS_PER_READ` segments: [`read_buffer_bytes`].
pub const READ_AHEAD: usize = 2;

/// The most memory one stream of [`BlobStore::open_range`] over `range` of a file holds at
/// once: the reads in flight and the one being sent, `SEGMENTS_PER_READ` segments each (fewer
/// when the range covers fewer). The server reserves it before it opens the stream.
pub fn read_buffer_bytes(range: &Range<u64>) -> u64 {
    let segment = SEGMENT_PLAINTEXT_LEN as u64;
    let segments = if range.is_empty() {
        1
    } else {
        range.end.div_ceil(segment) - range.start / segment
    };
    segments.min((READ_AHEAD as u64 + 1) * SEGMENTS_PER_READ) * (segment + stream::TAG_LEN as u64)
}

/// Encrypted objects over a backend.
#[derive(Clone)]
pub struct BlobStore {
    backend: Arc<dyn Backend>,
}

impl BlobStore {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        BlobStore { backend }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Stores a whole object held in memory (small artifacts, tests). Large files go through
    /// [`PartSealer`] part by part instead.
    pub async fn put_object(
        &self,
        model_key: &SecretKey,
        vendor_id: &str,
        model_id: &str,
        object_id: &ObjectId,
        plaintext: &[u8],
    ) -> Result<u64, BlobError> {
        let sealer = PartSealer::new(
            model_key,
            vendor_id,
            model_id,
            object_id,
            plaintext.len() as u64,
        )?;
        let key = object_id.as_str();
        let upload = self.backend.create_upload(key).await?;
        let mut receipts = Vec::new();
        let mut stored = 0;
        for part in 1..=sealer.layout().part_count() {
            let range = sealer.layout().part_range(part);
            let mut buffer = sealer.part_buffer(part)?;
            buffer.fill(&plaintext[range.start as usize..range.end as usize]);
            let ciphertext = sealer.seal(buffer)?;
            stored += ciphertext.len() as u64;
            match self
                .backend
                .upload_part(key, &upload, part, Bytes::from(ciphertext))
                .await
            {
                Ok(receipt) => receipts.push(receipt),
                Err(e) => {
                    let _ = self.backend.abort_upload(key, &upload).await;
                    return Err(e);
                }
            }
        }
        self.backend.complete_upload(key, &upload, receipts).await?;
        Ok(stored)
    }

    /// Streams the plaintext bytes `range` of an object whose plaintext length is
    /// `plaintext_len` (from the database). Only the segments covering the range are read and
    /// opened, up to [`READ_AHEAD`] at once. The stored length is checked first, so truncation
    /// is reported before any byte.
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
        let ctx = ObjectContext {
            vendor_id,
            model_id,
            object_id: object_id.as_str(),
        };
        let opener = Arc::new(ObjectOpener::new(model_key, &ctx, &header)?);
        let segments = if range.is_empty() {
            // An empty range still proves the object opens: read its first segment.
            0..1
        } else {
            let (first, last) = stream::segments_for_range(range.start, range.end);
            first..last + 1
        };
        let backend = self.backend.clone();
        let batches = (segments.start..segments.end)
            .step_by(SEGMENTS_PER_READ as usize)
            .map(move |first| first..(first + SEGMENTS_PER_READ).min(segments.end));
        let reads = futures::stream::iter(batches).map(move |batch| {
            read_segments(
                backend.clone(),
                key.clone(),
                opener.clone(),
                plaintext_len,
                range.clone(),
                batch,
            )
        });
        Ok(reads
            .buffered(READ_AHEAD)
            .flat_map(futures::stream::iter)
            .try_filter(|chunk| futures::future::ready(!chunk.is_empty())))
    }

    pub async fn delete(&self, object_id: &ObjectId) -> Result<(), BlobError> {
        self.backend.delete(object_id.as_str()).await
    }

    /// Whether storage still holds the object (any finished version of it).
    pub async fn exists(&self, object_id: &ObjectId) -> Result<bool, BlobError> {
        Ok(self.backend.size(object_id.as_str()).await?.is_some())
    }
}

/// Reads the segments `batch` in one backend request, opens each in place in that one buffer,
/// and trims them to the requested range: the plaintext of each segment, in order, and after
/// the first that fails to open, its error (the segments before it still go out, so a range
/// is cut off exactly where the damage starts).
async fn read_segments(
    backend: Arc<dyn Backend>,
    key: String,
    opener: Arc<ObjectOpener>,
    plaintext_len: u64,
    range: Range<u64>,
    batch: Range<u64>,
) -> Vec<Result<Bytes, BlobError>> {
    let last_index = stream::segment_count(plaintext_len) - 1;
    let start = stream::segment_offset(batch.start);
    let lengths: Vec<u64> = batch
        .clone()
        .map(|index| stream::segment_ciphertext_len(plaintext_len, index))
        .collect();
    let ciphertext = match backend.read_range(&key, start, lengths.iter().sum()).await {
        Ok(bytes) => bytes,
        Err(e) => return vec![Err(e)],
    };
    // AES-GCM over MiBs is CPU work: keep it off the reactor, and let read-ahead spread it
    // over the cores.
    let opened = tokio::task::spawn_blocking(move || {
        // Opened in place when the backend handed over the only reference (it does).
        let mut buf = match ciphertext.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => bytes::BytesMut::from(&shared[..]),
        };
        let mut plaintexts = Vec::with_capacity(lengths.len());
        let mut failure = None;
        let mut at = 0usize;
        for (index, len) in batch.zip(&lengths) {
            let len = *len as usize;
            match opener.open_segment_in_place(index, index == last_index, &mut buf[at..at + len]) {
                Ok(plaintext_len) => plaintexts.push((index, at..at + plaintext_len)),
                Err(e) => {
                    failure = Some(BlobError::from(e));
                    break;
                }
            }
            at += len;
        }
        (buf.freeze(), plaintexts, failure)
    })
    .await;
    let (buf, plaintexts, failure) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            return vec![Err(BlobError::Backend(format!(
                "decryption task failed: {e}"
            )))];
        }
    };
    let mut out: Vec<Result<Bytes, BlobError>> = plaintexts
        .into_iter()
        .map(|(index, within)| {
            let segment_start = index * SEGMENT_PLAINTEXT_LEN as u64;
            let len = (within.end - within.start) as u64;
            let from = range.start.saturating_sub(segment_start).min(len) as usize;
            let to = range.end.saturating_sub(segment_start).min(len) as usize;
            if from >= to {
                Ok(Bytes::new())
            } else {
                Ok(buf.slice(within.start + from..within.start + to))
            }
        })
        .collect();
    if let Some(e) = failure {
        out.push(Err(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::read_buffer_bytes;

    const MIB: u64 = 1 << 20;
    /// One segment as stored: 1 MiB of ciphertext and its tag.
    const SEGMENT: u64 = MIB + 16;

    #[test]
    fn a_stream_reserves_the_segments_it_covers_up_to_three_reads() {
        for (range, segments) in [
            (0..0, 1),
            (0..1, 1),
            (0..MIB, 1),
            (MIB - 1..MIB + 1, 2),
            (5 * MIB..9 * MIB, 4),
            (0..12 * MIB, 12),
            (3..64 * MIB, 12),
            (0..u64::MAX / 2, 12),
        ] {
            assert_eq!(
                read_buffer_bytes(&range),
                segments * SEGMENT,
                "range {range:?}"
            );
        }
    }
}
