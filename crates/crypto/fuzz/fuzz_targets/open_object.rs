//! Arbitrary bytes as a stored object: parse the header, then open every segment the stored length
//! implies, plus a direct `open_segment` call with input-chosen index and flag. Must never panic;
//! a segment that authenticates must be exactly what sealing its plaintext under the same header
//! gives (so only genuine ciphertext opens), and a forged one leaves no plaintext behind.
#![no_main]

use crypto::stream::{
    HEADER_LEN, ObjectContext, ObjectOpener, ObjectSealer, plaintext_len, segment_ciphertext_len,
    segment_count, segment_offset,
};
use crypto::{CryptoError, SecretKey};
use libfuzzer_sys::fuzz_target;

/// The key and context the seeds are sealed with (`cargo run --example make_seeds`).
pub const KEY: [u8; 32] = [0x42; 32];
pub const CTX: ObjectContext<'static> = ObjectContext {
    vendor_id: "vendor",
    model_id: "model",
    object_id: "object",
};

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_bytes(KEY);

    // The first byte steers the direct call; the rest is the stored object.
    let Some((&control, stored)) = data.split_first() else {
        return;
    };
    let header = &stored[..stored.len().min(HEADER_LEN)];
    let Ok(opener) = ObjectOpener::new(&key, &CTX, header) else {
        return;
    };
    let check = |index: u64, last: bool, sealed: &[u8]| {
        let mut buf = sealed.to_vec();
        match opener.open_segment(index, last, &mut buf) {
            Ok(()) => {
                let Ok(sealer) = ObjectSealer::resume(&key, &CTX, header) else {
                    panic!("a header that opens does not resume");
                };
                assert!(
                    sealer.seal_segment(index, last, &mut buf).is_ok() && buf == sealed,
                    "segment {index} authenticated but is not the sealing of its plaintext"
                );
            }
            // A forgery leaves nothing behind; an index past the format's limit is refused
            // before anything is opened.
            Err(CryptoError::TooLarge) => assert_eq!(buf, sealed),
            Err(_) => assert!(buf.is_empty(), "a refused segment left bytes behind"),
        }
    };

    if let Ok(pt_len) = plaintext_len(stored.len() as u64) {
        let count = segment_count(pt_len);
        for i in 0..count {
            let off = segment_offset(i) as usize;
            let len = segment_ciphertext_len(pt_len, i) as usize;
            let Some(seg) = stored.get(off..off + len) else {
                panic!("length math points outside the object");
            };
            check(i, i + 1 == count, seg);
        }
    }

    let body = &stored[header.len()..];
    let index = u64::from(control >> 1) | if control & 0x80 != 0 { 1 << 32 } else { 0 };
    check(index, control & 1 == 1, body);
});
