//! How an object is cut into backend parts, and sealing one part.
//!
//! Part `p` (numbered from 1) holds the ciphertext of a fixed run of segments; part 1 also
//! starts with the object's header. Because each segment's nonce carries its index, any part
//! can be sealed on any core, in any order, by any process that has the header: uploads
//! encrypt parts in parallel and resume after an interruption at the first missing part.

use std::ops::Range;

use crypto::SecretKey;
use crypto::stream::{self, HEADER_LEN, ObjectContext, ObjectSealer, SEGMENT_PLAINTEXT_LEN};
use types::ObjectId;

use crate::BlobError;

/// Segments per part at least: 8 MiB, above S3's 5 MiB minimum part size.
pub const MIN_SEGMENTS_PER_PART: u64 = 8;
/// S3 allows 10,000 parts; parts grow for objects larger than 10,000 × 8 MiB.
pub const MAX_PARTS: u64 = 10_000;

/// The largest object whose parts all hold [`MIN_SEGMENTS_PER_PART`] segments (78.125 GiB):
/// up to this size a part, and so every buffer an upload holds for one, is 8 MiB of plaintext
/// whatever the object's size. Beyond it parts grow with the object.
pub const MAX_OBJECT_WITH_SMALLEST_PARTS: u64 =
    MAX_PARTS * MIN_SEGMENTS_PER_PART * SEGMENT_PLAINTEXT_LEN as u64;

/// The part layout of an object of a given plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    pub plaintext_len: u64,
    pub segments_per_part: u64,
}

impl PartLayout {
    pub fn new(plaintext_len: u64) -> Self {
        let segments = stream::segment_count(plaintext_len);
        PartLayout {
            plaintext_len,
            segments_per_part: segments.div_ceil(MAX_PARTS).max(MIN_SEGMENTS_PER_PART),
        }
    }

    /// Plaintext bytes in a full part.
    pub fn part_plaintext_len(&self) -> u64 {
        self.segments_per_part * SEGMENT_PLAINTEXT_LEN as u64
    }

    pub fn part_count(&self) -> u32 {
        stream::segment_count(self.plaintext_len).div_ceil(self.segments_per_part) as u32
    }

    /// The plaintext bytes of part `part` (1-based).
    pub fn part_range(&self, part: u32) -> Range<u64> {
        let start = (u64::from(part) - 1) * self.part_plaintext_len();
        let end = (start + self.part_plaintext_len()).min(self.plaintext_len);
        start.min(self.plaintext_len)..end
    }
}

/// Seals the parts of one object. `Send + Sync`: share it across blocking tasks.
pub struct PartSealer {
    sealer: ObjectSealer,
    header: [u8; HEADER_LEN],
    layout: PartLayout,
}

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

impl PartSealer {
    /// A new object, with a fresh random header.
    pub fn new(
        model_key: &SecretKey,
        vendor_id: &str,
        model_id: &str,
        object_id: &ObjectId,
        plaintext_len: u64,
    ) -> Result<Self, BlobError> {
        let sealer = ObjectSealer::new(model_key, &context(vendor_id, model_id, object_id))?;
        Ok(PartSealer {
            header: sealer.header(),
            sealer,
            layout: PartLayout::new(plaintext_len),
        })
    }

    /// More parts of an object whose header was fixed earlier (a resumed upload). The caller
    /// must only seal a part again with the same plaintext; see `ObjectSealer::resume`.
    pub fn resume(
        model_key: &SecretKey,
        vendor_id: &str,
        model_id: &str,
        object_id: &ObjectId,
        plaintext_len: u64,
        header: &[u8],
    ) -> Result<Self, BlobError> {
        let sealer =
            ObjectSealer::resume(model_key, &context(vendor_id, model_id, object_id), header)?;
        let mut fixed = [0u8; HEADER_LEN];
        fixed.copy_from_slice(header);
        Ok(PartSealer {
            sealer,
            header: fixed,
            layout: PartLayout::new(plaintext_len),
        })
    }

    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header
    }

    pub fn layout(&self) -> PartLayout {
        self.layout
    }

    /// The length of part `part`'s stored form: its ciphertext, and the header in part 1.
    pub fn stored_part_len(&self, part: u32) -> usize {
        let range = self.layout.part_range(part);
        let plain = (range.end - range.start) as usize;
        let segments = plain.div_ceil(SEGMENT_PLAINTEXT_LEN).max(1);
        plain + segments * stream::TAG_LEN + if part == 1 { HEADER_LEN } else { 0 }
    }

    /// An empty buffer for part `part`, laid out as the part will be stored (see
    /// [`PartBuffer`]). Fails for a part the object does not have.
    pub fn part_buffer(&self, part: u32) -> Result<PartBuffer, BlobError> {
        self.part_buffer_in(part, Vec::new())
    }

    /// [`PartSealer::part_buffer`] in an allocation that is no longer needed (a sealed part
    /// already stored): its old bytes are overwritten as the part is filled.
    pub fn part_buffer_in(&self, part: u32, mut bytes: Vec<u8>) -> Result<PartBuffer, BlobError> {
        if part == 0 || part > self.layout.part_count() {
            return Err(BlobError::Backend(format!(
                "part {part} is not a part of an object of {} parts",
                self.layout.part_count()
            )));
        }
        let range = self.layout.part_range(part);
        bytes.resize(self.stored_part_len(part), 0);
        Ok(PartBuffer {
            part,
            plaintext_len: (range.end - range.start) as usize,
            filled: 0,
            header_len: if part == 1 { HEADER_LEN } else { 0 },
            bytes,
        })
    }

    /// Seals a full [`PartBuffer`] in place and returns the part's stored bytes.
    pub fn seal(&self, mut buffer: PartBuffer) -> Result<Vec<u8>, BlobError> {
        if !buffer.is_full() || buffer.bytes.len() != self.stored_part_len(buffer.part) {
            return Err(BlobError::Backend(format!(
                "part {} must hold {} plaintext bytes, got {}",
                buffer.part, buffer.plaintext_len, buffer.filled
            )));
        }
        let segments = stream::segment_count(self.layout.plaintext_len);
        let first = self.layout.part_range(buffer.part).start / SEGMENT_PLAINTEXT_LEN as u64;
        let header_len = buffer.header_len;
        for (k, plain) in buffer.segment_ranges().enumerate() {
            let index = first + k as u64;
            let tag = self.sealer.seal_segment_detached(
                index,
                index + 1 == segments,
                &mut buffer.bytes[plain.clone()],
            )?;
            buffer.bytes[plain.end..plain.end + stream::TAG_LEN].copy_from_slice(&tag);
        }
        buffer.bytes[..header_len].copy_from_slice(&self.header[..header_len]);
        Ok(buffer.bytes)
    }
}

/// One part's plaintext, written where its ciphertext will be stored: after the header
/// (part 1), each segment at its ciphertext offset with room for its tag after it. Sealing it
/// is then in place, with no copy: [`PartSealer::seal`].
pub struct PartBuffer {
    part: u32,
    plaintext_len: usize,
    filled: usize,
    header_len: usize,
    bytes: Vec<u8>,
}

impl PartBuffer {
    /// Copies as much of `data` as the part still takes into place; returns how much.
    pub fn fill(&mut self, mut data: &[u8]) -> usize {
        let mut taken = 0;
        while self.filled < self.plaintext_len && !data.is_empty() {
            let in_segment = self.filled % SEGMENT_PLAINTEXT_LEN;
            let room = (SEGMENT_PLAINTEXT_LEN - in_segment).min(self.plaintext_len - self.filled);
            let take = room.min(data.len());
            let at = self.stored_offset(self.filled);
            self.bytes[at..at + take].copy_from_slice(&data[..take]);
            self.filled += take;
            taken += take;
            data = &data[take..];
        }
        taken
    }

    pub fn is_full(&self) -> bool {
        self.filled == self.plaintext_len
    }

    /// The plaintext written so far, in order, one slice per segment (to hash it).
    pub fn plaintext(&self) -> impl Iterator<Item = &[u8]> {
        self.segment_ranges()
            .map(|r| &self.bytes[r])
            .scan(self.filled, |left, seg| {
                let take = seg.len().min(*left);
                *left -= take;
                (take > 0).then(|| &seg[..take])
            })
    }

    fn stored_offset(&self, plaintext_offset: usize) -> usize {
        stored_offset(self.header_len, plaintext_offset)
    }

    /// Where each segment's plaintext sits in `bytes` (a part holds at least one segment,
    /// maybe empty: the object of zero bytes). Borrows nothing, so the bytes can be sealed
    /// while it runs.
    fn segment_ranges(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let (plaintext_len, header_len) = (self.plaintext_len, self.header_len);
        let count = plaintext_len.div_ceil(SEGMENT_PLAINTEXT_LEN).max(1);
        (0..count).map(move |k| {
            let start = k * SEGMENT_PLAINTEXT_LEN;
            let len = (start + SEGMENT_PLAINTEXT_LEN).min(plaintext_len) - start;
            let at = stored_offset(header_len, start);
            at..at + len
        })
    }
}

/// Where plaintext byte `plaintext_offset` of a part sits in the part's stored form.
fn stored_offset(header_len: usize, plaintext_offset: usize) -> usize {
    header_len
        + plaintext_offset / SEGMENT_PLAINTEXT_LEN * stream::SEGMENT_CIPHERTEXT_LEN
        + plaintext_offset % SEGMENT_PLAINTEXT_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_every_byte_once() {
        const SEG: u64 = SEGMENT_PLAINTEXT_LEN as u64;
        for len in [0, 1, SEG, 8 * SEG - 1, 8 * SEG, 8 * SEG + 1, 81 * SEG + 3] {
            let layout = PartLayout::new(len);
            let mut next = 0;
            for part in 1..=layout.part_count() {
                let r = layout.part_range(part);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, len, "len {len}");
            assert!(layout.part_count() >= 1);
        }
        // Huge objects keep to S3's part limit.
        let huge = PartLayout::new(200 << 30);
        assert!(u64::from(huge.part_count()) <= MAX_PARTS);
        assert!(huge.segments_per_part > MIN_SEGMENTS_PER_PART);
    }

    #[test]
    fn parts_stay_at_their_smallest_up_to_the_bound() {
        const SMALLEST: u64 = MIN_SEGMENTS_PER_PART * SEGMENT_PLAINTEXT_LEN as u64;
        let largest = PartLayout::new(MAX_OBJECT_WITH_SMALLEST_PARTS);
        assert_eq!(largest.part_plaintext_len(), SMALLEST);
        assert_eq!(u64::from(largest.part_count()), MAX_PARTS);
        // One byte more and parts must grow (S3's part limit).
        let beyond = PartLayout::new(MAX_OBJECT_WITH_SMALLEST_PARTS + 1);
        assert!(beyond.part_plaintext_len() > SMALLEST);
    }
}

#[cfg(test)]
mod sealing {
    use super::*;

    /// In-place sealing gives exactly the bytes the segment-by-segment API gives.
    #[test]
    fn in_place_parts_equal_the_reference_stream() {
        const SEG: usize = SEGMENT_PLAINTEXT_LEN;
        let key = SecretKey::generate().unwrap();
        let id = ObjectId::from_bytes(&[7; 16]);
        for len in [0, 5, SEG, 8 * SEG, 8 * SEG + 1, 17 * SEG - 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let sealer = PartSealer::new(&key, "v", "m", &id, len as u64).unwrap();
            let mut stored = Vec::new();
            for part in 1..=sealer.layout().part_count() {
                let r = sealer.layout().part_range(part);
                let mut buffer = sealer.part_buffer(part).unwrap();
                // In uneven pieces, as a request body arrives.
                for piece in data[r.start as usize..r.end as usize].chunks(SEG / 3 + 7) {
                    assert_eq!(buffer.fill(piece), piece.len());
                }
                assert!(buffer.is_full());
                assert_eq!(buffer.fill(b"more"), 0, "a full part takes nothing more");
                let hashed: Vec<u8> = buffer.plaintext().flatten().copied().collect();
                assert_eq!(hashed, data[r.start as usize..r.end as usize]);
                let buf = sealer.seal(buffer).unwrap();
                assert_eq!(buf.len(), sealer.stored_part_len(part));
                stored.extend_from_slice(&buf);
            }
            assert_eq!(stored.len() as u64, stream::ciphertext_len(len as u64));
            let ctx = ObjectContext {
                vendor_id: "v",
                model_id: "m",
                object_id: id.as_str(),
            };
            let opener =
                crypto::stream::ObjectOpener::new(&key, &ctx, &stored[..HEADER_LEN]).unwrap();
            let count = stream::segment_count(len as u64);
            let mut plain = Vec::new();
            for i in 0..count {
                let off = stream::segment_offset(i) as usize;
                let mut seg = stored
                    [off..off + stream::segment_ciphertext_len(len as u64, i) as usize]
                    .to_vec();
                opener.open_segment(i, i + 1 == count, &mut seg).unwrap();
                plain.extend_from_slice(&seg);
            }
            assert_eq!(plain, data, "len {len}");
        }
    }
}
