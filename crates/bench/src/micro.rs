//! Rows 1 and 2: ring's raw AES-256-GCM (the ceiling) and the stream format's seal and open,
//! on one core and on every core. Buffers are allocated once and reused: fresh allocations
//! spend their time zeroing pages, which is not the cipher's cost.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Result;
use blobstore::PartSealer;
use crypto::SecretKey;
use crypto::stream::{
    HEADER_LEN, ObjectContext, ObjectOpener, SEGMENT_CIPHERTEXT_LEN, SEGMENT_PLAINTEXT_LEN,
};
use types::ObjectId;

const SEG: usize = SEGMENT_PLAINTEXT_LEN;
/// Segments per backend part (`blobstore::MIN_SEGMENTS_PER_PART`): 8 MiB parts.
const SEGS_PER_PART: usize = 8;
const PART: usize = SEGS_PER_PART * SEG;
/// Bytes each thread processes in one timed round of one measurement.
const BYTES_PER_ROUND: u64 = 1 << 30;
/// Rounds per measurement, interleaved (raw, seal, open, raw, ...); the median is reported.
const ROUNDS: usize = 5;

/// Throughputs in GB/s (10^9 bytes per second), medians over [`ROUNDS`].
pub struct Micro {
    pub raw_one: f64,
    pub seal_one: f64,
    pub open_one: f64,
    pub raw_all: f64,
    pub seal_all: f64,
    pub open_all: f64,
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64().max(1e-9) / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One thread's buffers and keys, made before any timing starts.
struct Worker {
    raw_buf: Vec<u8>,
    /// One part's plaintext, and the allocation each part is sealed in (reused).
    part_plaintext: Vec<u8>,
    part_bytes: Vec<u8>,
    /// One sealed 8-segment object and its opener, opened again and again from a copy.
    stored: Vec<u8>,
    opener: ObjectOpener,
    work: Vec<u8>,
}

fn object_id() -> Result<ObjectId> {
    Ok(ObjectId::from_bytes(&crypto::random_bytes::<16>()?))
}

impl Worker {
    fn new(key: &SecretKey) -> Result<Worker> {
        let id = object_id()?;
        let sealer = PartSealer::new(key, "bench", "bench", &id, PART as u64)?;
        let part_plaintext = vec![0x5a; PART];
        let mut first = sealer.part_buffer(1)?;
        first.fill(&part_plaintext);
        let stored = sealer.seal(first)?;
        let ctx = ObjectContext {
            vendor_id: "bench",
            model_id: "bench",
            object_id: id.as_str(),
        };
        let opener = ObjectOpener::new(key, &ctx, &stored[..HEADER_LEN])?;
        Ok(Worker {
            raw_buf: vec![0x5a; SEG],
            part_plaintext,
            part_bytes: Vec::new(),
            stored,
            opener,
            work: Vec::with_capacity(SEGMENT_CIPHERTEXT_LEN),
        })
    }

    /// Raw ring seal of `bytes`, 1 MiB at a time in one buffer.
    fn raw(&mut self, bytes: u64) -> Result<Duration> {
        let start = Instant::now();
        crypto::bench::raw_aes_gcm_seal_in_place(&mut self.raw_buf, bytes / SEG as u64)?;
        Ok(start.elapsed())
    }

    /// `PartSealer::seal` over the given parts of `sealer`'s object, each sealed once. Only
    /// the seals are timed: filling a part's buffer is the server's copy out of the request
    /// body, which a raw seal of the same bytes would make too.
    fn seal(&mut self, sealer: &PartSealer, parts: impl Iterator<Item = u32>) -> Result<Duration> {
        let mut timed = Duration::ZERO;
        for part in parts {
            let mut buffer = sealer.part_buffer_in(part, std::mem::take(&mut self.part_bytes))?;
            buffer.fill(&self.part_plaintext);
            let start = Instant::now();
            self.part_bytes = sealer.seal(buffer)?;
            timed += start.elapsed();
        }
        Ok(timed)
    }

    /// `ObjectOpener::open_segment` of `bytes` worth of segments. Only the opens are timed;
    /// putting the ciphertext back into the buffer (a copy) is not.
    fn open(&mut self, bytes: u64) -> Result<Duration> {
        let mut timed = Duration::ZERO;
        for n in 0..bytes / SEG as u64 {
            let index = n % SEGS_PER_PART as u64;
            let offset = crypto::stream::segment_offset(index) as usize;
            self.work.clear();
            self.work
                .extend_from_slice(&self.stored[offset..offset + SEGMENT_CIPHERTEXT_LEN]);
            let start = Instant::now();
            self.opener
                .open_segment(index, index + 1 == SEGS_PER_PART as u64, &mut self.work)?;
            timed += start.elapsed();
        }
        Ok(timed)
    }
}

/// A fresh object big enough for `parts` 8 MiB parts, so no part is ever sealed twice under
/// one header (the format's rule, kept even here).
fn sealer_for(key: &SecretKey, parts: u64) -> Result<PartSealer> {
    Ok(PartSealer::new(
        key,
        "bench",
        "bench",
        &object_id()?,
        parts * PART as u64,
    )?)
}

pub fn run(threads: usize) -> Result<Micro> {
    let key = SecretKey::generate()?;
    let parts_per_round = BYTES_PER_ROUND / PART as u64;

    eprintln!("custody-bench: cipher and format, one core ({ROUNDS} rounds of 1 GiB)");
    let mut w = Worker::new(&key)?;
    let (mut raw, mut seal, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        raw.push(gbps(BYTES_PER_ROUND, w.raw(BYTES_PER_ROUND)?));
        let sealer = sealer_for(&key, parts_per_round)?;
        seal.push(gbps(
            BYTES_PER_ROUND,
            w.seal(&sealer, 1..=parts_per_round as u32)?,
        ));
        open.push(gbps(BYTES_PER_ROUND, w.open(BYTES_PER_ROUND)?));
    }
    let (raw_one, seal_one, open_one) = (median(raw), median(seal), median(open));

    eprintln!("custody-bench: cipher and format, {threads} threads");
    let mut workers = (0..threads)
        .map(|_| Worker::new(&key))
        .collect::<Result<Vec<_>>>()?;
    let (mut raw, mut seal, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let sealer = sealer_for(&key, parts_per_round * threads as u64)?;
        let barrier = Barrier::new(threads);
        // Each thread reports its own elapsed time; the all-core figure is the sum of the
        // per-thread rates (the threads start together at a barrier before each step).
        let results: Vec<Result<[Duration; 3]>> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .enumerate()
                .map(|(t, w)| {
                    let (sealer, barrier) = (&sealer, &barrier);
                    s.spawn(move || -> Result<[Duration; 3]> {
                        barrier.wait();
                        let r = w.raw(BYTES_PER_ROUND)?;
                        barrier.wait();
                        // Thread t seals parts t+1, t+1+threads, ...: its own parts.
                        let mine = (1..=parts_per_round * threads as u64)
                            .filter(|p| (p - 1) % threads as u64 == t as u64)
                            .map(|p| p as u32);
                        let sl = w.seal(sealer, mine)?;
                        barrier.wait();
                        let o = w.open(BYTES_PER_ROUND)?;
                        Ok([r, sl, o])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a benchmark thread panicked")))
                })
                .collect()
        });
        let mut sums = [0.0f64; 3];
        for r in results {
            for (sum, d) in sums.iter_mut().zip(r?) {
                *sum += gbps(BYTES_PER_ROUND, d);
            }
        }
        raw.push(sums[0]);
        seal.push(sums[1]);
        open.push(sums[2]);
    }
    Ok(Micro {
        raw_one,
        seal_one,
        open_one,
        raw_all: median(raw),
        seal_all: median(seal),
        open_all: median(open),
    })
}
