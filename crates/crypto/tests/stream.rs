//! Behaviour of the streaming format through the public API: roundtrips, tampering, length math
//! and robustness against arbitrary input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{open, pattern, seal, seal_with};
use crypto::stream::danger::danger_with_nonce_material;
use crypto::stream::*;
use crypto::{CryptoError, SecretKey};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

const SEG: usize = SEGMENT_PLAINTEXT_LEN;

fn key() -> SecretKey {
    SecretKey::from_bytes([0x42; 32])
}

fn ctx() -> ObjectContext<'static> {
    ObjectContext {
        vendor_id: "vendor-a",
        model_id: "model-1",
        object_id: "shard-0",
    }
}

const LENGTHS: [usize; 6] = [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 5];

#[test]
fn roundtrip_lengths() {
    let key = key();
    for len in LENGTHS {
        let pt = pattern(len);
        let stored = seal(&key, &ctx(), &pt);
        assert_eq!(stored.len() as u64, ciphertext_len(len as u64), "len {len}");
        assert_eq!(plaintext_len(stored.len() as u64), Ok(len as u64));
        assert_eq!(stored[0], FORMAT_VERSION);
        if len >= 64 {
            // It is actually encrypted (no 64-byte run of plaintext survives).
            assert!(!stored.windows(64).any(|w| w == &pt[..64]));
        }
        assert_eq!(open(&key, &ctx(), &stored).unwrap(), pt, "len {len}");
    }
}

#[test]
fn empty_object_is_one_tag() {
    let stored = seal(&key(), &ctx(), &[]);
    assert_eq!(stored.len(), HEADER_LEN + TAG_LEN);
    assert_eq!(segment_count(0), 1);
}

#[test]
fn seal_rejects_misuse() {
    let sealer = ObjectSealer::new(&key(), &ctx()).unwrap();
    let mut short = vec![0u8; SEG - 1];
    assert!(matches!(
        sealer.seal_segment(0, false, &mut short),
        Err(CryptoError::InvalidFormat(_))
    ));
    assert_eq!(short.len(), SEG - 1, "buffer untouched on error");
    let mut long = vec![0u8; SEG + 1];
    assert!(matches!(
        sealer.seal_segment(0, true, &mut long),
        Err(CryptoError::InvalidFormat(_))
    ));
    assert!(matches!(
        sealer.seal_segment(0, false, &mut long),
        Err(CryptoError::InvalidFormat(_))
    ));
    let mut empty = Vec::new();
    assert!(matches!(
        sealer.seal_segment(1, true, &mut empty),
        Err(CryptoError::InvalidFormat(_))
    ));
    assert!(sealer.seal_segment(0, true, &mut empty).is_ok());
    let mut one = vec![1u8];
    assert_eq!(
        sealer.seal_segment(MAX_SEGMENTS, true, &mut one),
        Err(CryptoError::TooLarge)
    );
    assert_eq!(
        sealer.seal_segment(u64::MAX, true, &mut one),
        Err(CryptoError::TooLarge)
    );
    assert!(
        sealer
            .seal_segment(MAX_SEGMENTS - 1, true, &mut one)
            .is_ok()
    );
}

#[test]
fn open_rejects_bad_lengths_with_integrity() {
    let key = key();
    let stored = seal(&key, &ctx(), &pattern(2 * SEG));
    let opener = ObjectOpener::new(&key, &ctx(), &stored[..HEADER_LEN]).unwrap();
    let seg0 = &stored[HEADER_LEN..HEADER_LEN + SEGMENT_CIPHERTEXT_LEN];
    for cut in [0, 1, TAG_LEN - 1, TAG_LEN, SEGMENT_CIPHERTEXT_LEN - 1] {
        let mut buf = seg0[..cut].to_vec();
        assert_eq!(
            opener.open_segment(0, false, &mut buf),
            Err(CryptoError::Integrity)
        );
        assert!(buf.is_empty());
    }
    let mut buf = seg0.to_vec();
    buf.push(0);
    assert_eq!(
        opener.open_segment(0, false, &mut buf),
        Err(CryptoError::Integrity)
    );
    assert_eq!(
        opener.open_segment(0, true, &mut buf),
        Err(CryptoError::Integrity)
    );
    let mut buf = seg0.to_vec();
    assert_eq!(
        opener.open_segment(MAX_SEGMENTS, false, &mut buf),
        Err(CryptoError::TooLarge)
    );
    opener.open_segment(0, false, &mut buf).unwrap();
    assert_eq!(buf, pattern(SEG));
}

#[test]
fn every_bit_flip_of_a_small_object_fails() {
    let key = key();
    let stored = seal(&key, &ctx(), b"small but precious");
    for i in 0..stored.len() {
        for bit in 0..8 {
            let mut t = stored.clone();
            t[i] ^= 1 << bit;
            let err = open(&key, &ctx(), &t).unwrap_err();
            if i == 0 {
                assert_eq!(err, CryptoError::UnsupportedVersion(stored[0] ^ (1 << bit)));
            } else {
                assert_eq!(err, CryptoError::Integrity, "byte {i} bit {bit}");
            }
        }
    }
}

#[test]
fn bit_flips_in_a_large_object_fail() {
    let key = key();
    let len = 3 * SEG + 5;
    let stored = seal(&key, &ctx(), &pattern(len));
    let mut positions: Vec<usize> = (1..HEADER_LEN).collect(); // salt and prefix
    for i in 0..segment_count(len as u64) {
        let off = segment_offset(i) as usize;
        let ct_len = segment_ciphertext_len(len as u64, i) as usize;
        positions.extend([
            off,                          // first ciphertext byte
            off + (ct_len - TAG_LEN) / 2, // middle
            off + ct_len - TAG_LEN - 1,   // last ciphertext byte
            off + ct_len - TAG_LEN,       // first tag byte
            off + ct_len - 1,             // last tag byte
        ]);
    }
    for pos in positions {
        let mut t = stored.clone();
        t[pos] ^= 0x80;
        assert_eq!(
            open(&key, &ctx(), &t),
            Err(CryptoError::Integrity),
            "pos {pos}"
        );
    }
}

#[test]
fn swapped_segments_fail() {
    let key = key();
    let len = 3 * SEG + 5;
    let stored = seal(&key, &ctx(), &pattern(len));
    let seg = |i: u64| {
        let off = segment_offset(i) as usize;
        off..off + segment_ciphertext_len(len as u64, i) as usize
    };
    // Swap two full segments.
    let mut t = stored.clone();
    let (a, b) = (seg(0), seg(1));
    let s0 = stored[a.clone()].to_vec();
    t[a.clone()].copy_from_slice(&stored[b.clone()]);
    t[b].copy_from_slice(&s0);
    assert_eq!(open(&key, &ctx(), &t), Err(CryptoError::Integrity));
    // Duplicate a segment over another.
    let mut t = stored.clone();
    t[seg(2)].copy_from_slice(&stored[seg(1)]);
    assert_eq!(open(&key, &ctx(), &t), Err(CryptoError::Integrity));
    // Open a segment as another index directly.
    let opener = ObjectOpener::new(&key, &ctx(), &stored[..HEADER_LEN]).unwrap();
    let mut buf = stored[seg(1)].to_vec();
    assert_eq!(
        opener.open_segment(2, false, &mut buf),
        Err(CryptoError::Integrity)
    );
    let mut buf = stored[seg(1)].to_vec();
    opener.open_segment(1, false, &mut buf).unwrap();
}

#[test]
fn truncation_and_extension_fail() {
    let key = key();
    let len = 3 * SEG + 5;
    let stored = seal(&key, &ctx(), &pattern(len));
    // Dropping the last segment leaves a plausible length; the new last lacks the flag.
    let dropped = &stored[..segment_offset(3) as usize];
    assert_eq!(plaintext_len(dropped.len() as u64), Ok(3 * SEG as u64));
    assert_eq!(open(&key, &ctx(), dropped), Err(CryptoError::Integrity));
    // Dropping down to one segment, or to nothing but the header.
    let one = &stored[..segment_offset(1) as usize];
    assert_eq!(open(&key, &ctx(), one), Err(CryptoError::Integrity));
    assert!(open(&key, &ctx(), &stored[..HEADER_LEN]).is_err());
    // Cutting bytes off the last segment.
    assert!(open(&key, &ctx(), &stored[..stored.len() - 1]).is_err());
    // Opening a full segment as last, or the last as non-last.
    let opener = ObjectOpener::new(&key, &ctx(), &stored[..HEADER_LEN]).unwrap();
    let mut buf = stored[segment_offset(2) as usize..segment_offset(3) as usize].to_vec();
    assert_eq!(
        opener.open_segment(2, true, &mut buf),
        Err(CryptoError::Integrity)
    );
    // Appending an empty "last" segment sealed under another object is also caught.
    let mut extended = stored.clone();
    extended.extend_from_slice(&seal(&key, &ctx(), &[])[HEADER_LEN..]);
    assert!(open(&key, &ctx(), &extended).is_err());
    // A small object that lost its tail.
    let small = seal(&key, &ctx(), b"0123456789");
    assert!(open(&key, &ctx(), &small[..small.len() - 3]).is_err());
}

#[test]
fn wrong_context_or_key_fails() {
    let key = key();
    for len in [0, 100, SEG + 1] {
        let stored = seal(&key, &ctx(), &pattern(len));
        let wrong = [
            ObjectContext {
                vendor_id: "vendor-b",
                ..ctx()
            },
            ObjectContext {
                model_id: "model-2",
                ..ctx()
            },
            ObjectContext {
                object_id: "shard-1",
                ..ctx()
            },
            // Length prefixes: moving bytes between fields must change the key.
            ObjectContext {
                vendor_id: "vendor-am",
                model_id: "odel-1",
                ..ctx()
            },
            ObjectContext {
                vendor_id: "",
                ..ctx()
            },
        ];
        for w in wrong {
            assert_eq!(
                open(&key, &w, &stored),
                Err(CryptoError::Integrity),
                "{w:?} len {len}"
            );
        }
        let other = SecretKey::from_bytes([0x43; 32]);
        assert_eq!(open(&other, &ctx(), &stored), Err(CryptoError::Integrity));
        assert_eq!(open(&key, &ctx(), &stored).unwrap(), pattern(len));
    }
}

#[test]
fn header_checks() {
    let key = key();
    let stored = seal(&key, &ctx(), b"x");
    let mut h = stored[..HEADER_LEN].to_vec();
    for v in [0u8, 2, 0xff] {
        h[0] = v;
        assert_eq!(
            ObjectOpener::new(&key, &ctx(), &h)
                .err()
                .map(|e| e.to_string()),
            Some(CryptoError::UnsupportedVersion(v).to_string())
        );
        assert!(matches!(
            ObjectOpener::new(&key, &ctx(), &h[..5]),
            Err(CryptoError::UnsupportedVersion(x)) if x == v
        ));
    }
    assert!(matches!(
        ObjectOpener::new(&key, &ctx(), &[]),
        Err(CryptoError::InvalidFormat(_))
    ));
    assert!(matches!(
        ObjectOpener::new(&key, &ctx(), &stored[..HEADER_LEN - 1]),
        Err(CryptoError::InvalidFormat(_))
    ));
    assert!(matches!(
        ObjectOpener::new(&key, &ctx(), &stored[..HEADER_LEN + 1]),
        Err(CryptoError::InvalidFormat(_))
    ));
}

#[test]
fn parallel_sealing_matches_sequential() {
    let key = key();
    let len = 4 * SEG + 77;
    let pt = pattern(len);
    let sealer =
        danger_with_nonce_material(&key, &ctx(), [9; SALT_LEN], [8; NONCE_PREFIX_LEN]).unwrap();
    let sequential = seal_with(&sealer, &pt);
    let count = segment_count(len as u64);
    let mut segments: Vec<Vec<u8>> = (0..count)
        .map(|i| pt[i as usize * SEG..len.min((i as usize + 1) * SEG)].to_vec())
        .collect();
    std::thread::scope(|s| {
        for (i, buf) in segments.iter_mut().enumerate() {
            let sealer = &sealer;
            s.spawn(move || {
                sealer
                    .seal_segment(i as u64, i as u64 + 1 == count, buf)
                    .unwrap()
            });
        }
    });
    let mut parallel = sealer.header().to_vec();
    for s in &segments {
        parallel.extend_from_slice(s);
    }
    assert_eq!(parallel, sequential);
    // The opener too, from several threads.
    let opener = ObjectOpener::new(&key, &ctx(), &sequential[..HEADER_LEN]).unwrap();
    std::thread::scope(|s| {
        for i in 0..count {
            let (opener, sequential, pt) = (&opener, &sequential, &pt);
            s.spawn(move || {
                let off = segment_offset(i) as usize;
                let mut buf =
                    sequential[off..off + segment_ciphertext_len(len as u64, i) as usize].to_vec();
                opener.open_segment(i, i + 1 == count, &mut buf).unwrap();
                assert_eq!(buf, pt[i as usize * SEG..len.min((i as usize + 1) * SEG)]);
            });
        }
    });
}

/// Segment boundaries of an object, computed the slow way.
fn brute_segments(len: u64) -> Vec<(u64, u64)> {
    let seg = SEG as u64;
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = len.min(start + seg);
        out.push((start, end));
        if end == len {
            return out;
        }
        start = end;
    }
}

#[test]
fn length_math_matches_brute_force() {
    let seg = SEG as u64;
    let mut lengths: Vec<u64> = Vec::new();
    for k in 0..6u64 {
        for d in [0i64, 1, 2, -1, -2, 17, -17, (SEG / 2) as i64] {
            let l = (k * seg) as i64 + d;
            if l >= 0 {
                lengths.push(l as u64);
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(7);
    lengths.extend((0..200).map(|_| rng.gen_range(0..8 * seg)));
    lengths.extend(0..300);
    for &len in &lengths {
        let segs = brute_segments(len);
        assert_eq!(segment_count(len), segs.len() as u64, "len {len}");
        let mut offset = HEADER_LEN as u64;
        for (i, &(s, e)) in segs.iter().enumerate() {
            let i = i as u64;
            assert_eq!(segment_offset(i), offset, "len {len} seg {i}");
            assert_eq!(segment_ciphertext_len(len, i), e - s + TAG_LEN as u64);
            offset += e - s + TAG_LEN as u64;
        }
        assert_eq!(ciphertext_len(len), offset, "len {len}");
        assert_eq!(plaintext_len(offset), Ok(len));
        assert_eq!(segment_ciphertext_len(len, segs.len() as u64), 0);
        // Ranges: boundaries and random ones.
        let mut points = vec![0, len, len / 2, len.saturating_sub(1)];
        for &(s, e) in &segs {
            points.extend([s, e, s + 1, e.saturating_sub(1)]);
        }
        points.extend((0..10).map(|_| rng.gen_range(0..=len)));
        points.retain(|&p| p <= len);
        for &a in &points {
            for &b in &points {
                if a >= b {
                    continue;
                }
                let covering: Vec<u64> = segs
                    .iter()
                    .enumerate()
                    .filter(|(_, (s, e))| *s < b && a < *e)
                    .map(|(i, _)| i as u64)
                    .collect();
                let expected = (covering[0], *covering.last().unwrap());
                assert_eq!(
                    segments_for_range(a, b),
                    expected,
                    "len {len} range {a}..{b}"
                );
                assert_eq!(covering.len() as u64, expected.1 - expected.0 + 1);
            }
        }
    }
    // Impossible stored lengths.
    for bad in [0, HEADER_LEN as u64, (HEADER_LEN + TAG_LEN - 1) as u64] {
        assert!(plaintext_len(bad).is_err(), "{bad}");
    }
    let one_full = ciphertext_len(seg);
    assert!(
        plaintext_len(one_full + TAG_LEN as u64).is_err(),
        "empty last after a full one"
    );
    assert!(plaintext_len(one_full + 3).is_err());
    // Limits do not panic.
    assert_eq!(ciphertext_len(u64::MAX), u64::MAX);
    assert_eq!(segment_offset(u64::MAX), u64::MAX);
    assert_eq!(segment_count(MAX_PLAINTEXT_LEN), MAX_SEGMENTS);
    assert_eq!(
        segment_ciphertext_len(MAX_PLAINTEXT_LEN, MAX_SEGMENTS - 1),
        SEGMENT_CIPHERTEXT_LEN as u64
    );
    assert_eq!(
        plaintext_len(ciphertext_len(MAX_PLAINTEXT_LEN)),
        Ok(MAX_PLAINTEXT_LEN)
    );
    assert_eq!(
        plaintext_len(ciphertext_len(MAX_PLAINTEXT_LEN + 1)),
        Err(CryptoError::TooLarge)
    );
    let _ = segments_for_range(u64::MAX, 0);
    assert_eq!(segment_ciphertext_len(5, u64::MAX), 0);
    assert_eq!(segment_ciphertext_len(u64::MAX, u64::MAX), 0);
}

/// Arbitrary input never panics, and nothing but a genuine segment ever opens.
#[test]
fn random_input_never_panics() {
    let seed: u64 = rand::thread_rng().r#gen();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let key = key();
    let genuine = seal(&key, &ctx(), &pattern(SEG + 10));
    let mut opened = 0;
    for round in 0..3000 {
        let mut header = vec![0u8; rng.gen_range(0..=2 * HEADER_LEN)];
        rng.fill_bytes(&mut header);
        if rng.gen_bool(0.7) && !header.is_empty() {
            header[0] = FORMAT_VERSION;
        }
        if round % 10 == 0 {
            header = genuine[..HEADER_LEN].to_vec();
        }
        let Ok(opener) = ObjectOpener::new(&key, &ctx(), &header) else {
            continue;
        };
        for _ in 0..4 {
            let len = match rng.gen_range(0..10) {
                0 => SEGMENT_CIPHERTEXT_LEN,
                1 => SEGMENT_CIPHERTEXT_LEN + rng.gen_range(1..4),
                2 => TAG_LEN,
                _ => rng.gen_range(0..200),
            };
            let mut buf = vec![0u8; len];
            rng.fill_bytes(&mut buf);
            let index = match rng.gen_range(0..4) {
                0 => rng.r#gen(),
                1 => MAX_SEGMENTS - 1,
                _ => rng.gen_range(0..4),
            };
            let last = rng.r#gen();
            match opener.open_segment(index, last, &mut buf) {
                Ok(()) => opened += 1,
                Err(CryptoError::Integrity) => assert!(buf.is_empty()),
                Err(CryptoError::TooLarge) => assert!(index >= MAX_SEGMENTS),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    assert_eq!(opened, 0, "random bytes authenticated");
}
