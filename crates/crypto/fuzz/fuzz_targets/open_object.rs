//! Arbitrary bytes as a stored object: parse the header, then open every segment the stored length
//! implies, plus a few direct `open_segment` calls with input-chosen index and flag. Must never
//! panic, and (with overwhelming probability) never authenticate anything.
#![no_main]

use crypto::SecretKey;
use crypto::stream::{
    HEADER_LEN, ObjectContext, ObjectOpener, plaintext_len, segment_ciphertext_len, segment_count,
    segment_offset,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_bytes([0x42; 32]);
    let ctx = ObjectContext {
        vendor_id: "vendor",
        model_id: "model",
        object_id: "object",
    };

    // The first byte steers the direct calls; the rest is the stored object.
    let Some((&control, stored)) = data.split_first() else {
        return;
    };
    let header = &stored[..stored.len().min(HEADER_LEN)];
    let Ok(opener) = ObjectOpener::new(&key, &ctx, header) else {
        return;
    };

    if let Ok(pt_len) = plaintext_len(stored.len() as u64) {
        let count = segment_count(pt_len);
        for i in 0..count {
            let off = segment_offset(i) as usize;
            let len = segment_ciphertext_len(pt_len, i) as usize;
            let Some(seg) = stored.get(off..off + len) else {
                panic!("length math points outside the object");
            };
            let mut buf = seg.to_vec();
            if opener.open_segment(i, i + 1 == count, &mut buf).is_ok() {
                panic!("forged segment authenticated");
            }
            assert!(buf.is_empty());
        }
    }

    let body = &stored[header.len()..];
    let index = u64::from(control >> 1) | if control & 0x80 != 0 { 1 << 32 } else { 0 };
    let mut buf = body.to_vec();
    let _ = opener.open_segment(index, control & 1 == 1, &mut buf);
});
