//! What a leaf of the audit tree commits to, by entry format.
//!
//! * Format 1 entries: leaf hash = SHA-256(0x00 || entry bytes), RFC 9162 over the raw bytes.
//! * Format 2 entries: leaf hash = SHA-256(0x00 || 0x02 || tag || SHA-256(entry bytes)), where
//!   `tag` is HMAC-SHA256(vendor's tag key, [`TAG_CONTEXT`] || seq as 8 bytes big-endian) for
//!   an entry that concerns a vendor holding a tag key, and 32 zero bytes ([`NO_VENDOR`])
//!   otherwise. The leading 0x02 cannot begin a format 1 leaf (canonical JSON starts with
//!   `{`), so the two kinds of leaf never collide.
//!
//! Why: a vendor's export can then carry every *other* leaf as its tag and entry digest only.
//! The vendor's auditor, holding the vendor's key, recomputes its own tag at each index: a
//! leaf whose tag matches is the vendor's and must be present in full, one whose tag differs
//! is someone else's, and the leaves together must rebuild the signed root. The operator
//! cannot leave one of the vendor's signed entries out (its tag gives it away, and a forged
//! tag changes the leaf), and the tag tells nobody without the key whose entry a leaf is.

use crypto::mac::TagKey;

use crate::merkle::{Hash, leaf_hash};

/// A leaf's vendor tag.
pub type Tag = [u8; 32];

/// The tag of an entry that concerns no vendor (or a vendor without a tag key).
pub const NO_VENDOR: Tag = [0; 32];

/// First byte of a format 2 leaf's data.
pub const LEAF_FORMAT_2: u8 = 0x02;

/// Domain separation for vendor tags (frozen: a change means a new leaf format).
pub const TAG_CONTEXT: &[u8] = b"custody audit vendor tag v1\0";

/// The entry format of canonical bytes, read from their `{"v":N,` prefix; `None` when the
/// bytes do not start that way.
pub fn entry_format(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.strip_prefix(br#"{"v":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The leaf hash of a format 2 entry, from its tag and the SHA-256 of its bytes.
pub fn tagged_leaf(tag: &Tag, entry_digest: &[u8; 32]) -> Hash {
    let mut data = [0u8; 65];
    data[0] = LEAF_FORMAT_2;
    data[1..33].copy_from_slice(tag);
    data[33..].copy_from_slice(entry_digest);
    leaf_hash(&data)
}

/// The leaf hash of an entry as stored: format 1 bytes hash alone, anything else is a format
/// 2 leaf with `tag`.
pub fn entry_leaf(bytes: &[u8], tag: &Tag) -> Hash {
    if entry_format(bytes) == Some(1) {
        leaf_hash(bytes)
    } else {
        tagged_leaf(tag, &crypto::hash::sha256(bytes))
    }
}

/// The tag of entry `seq` for the vendor holding `key`.
pub fn vendor_tag(key: &TagKey, seq: u64) -> Tag {
    let mut message = Vec::with_capacity(TAG_CONTEXT.len() + 8);
    message.extend_from_slice(TAG_CONTEXT);
    message.extend_from_slice(&seq.to_be_bytes());
    key.tag(&message)
}

/// How an entry names its vendor's tag key when it publishes one (the vendor's creation, or
/// the key given to a vendor that existed before tags): `audit tag key sha256:<hex>`.
pub fn key_announcement(key: &TagKey) -> String {
    format!("audit tag key sha256:{}", hex::encode(key.fingerprint()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_format_is_read_from_the_canonical_prefix() {
        assert_eq!(entry_format(br#"{"v":1,"seq":0}"#), Some(1));
        assert_eq!(entry_format(br#"{"v":2,"seq":0}"#), Some(2));
        assert_eq!(entry_format(br#"{"v":12,"seq":0}"#), Some(12));
        for bad in [
            &br#"{"v":,"seq":0}"#[..],
            br#"{"seq":0,"v":1}"#,
            br#" {"v":1,"seq":0}"#,
            br#"{"v":1}"#,
            b"",
            br#"{"v":99999999999,"#,
        ] {
            assert_eq!(entry_format(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Test vectors: the leaf of each format from fixed inputs; the hex one computed
    /// independently with Python's hashlib over 0x00 0x02, 32 zero bytes, SHA-256(entry).
    #[test]
    fn leaves_by_format() {
        let v1 = br#"{"v":1,"seq":0}"#;
        assert_eq!(
            entry_leaf(v1, &[7; 32]),
            leaf_hash(v1),
            "format 1 ignores the tag"
        );
        let v2 = br#"{"v":2,"seq":0}"#;
        let mut data = vec![0x00, 0x02];
        data.extend_from_slice(&[7; 32]);
        data.extend_from_slice(&crypto::hash::sha256(v2));
        assert_eq!(entry_leaf(v2, &[7; 32]), crypto::hash::sha256(&data));
        assert_eq!(
            hex::encode(entry_leaf(v2, &NO_VENDOR)),
            "74dedf5bbb51f8dc672b12460d8b9bb9ff80ce1208fe7f72243195ea5008a7bc"
        );
        assert_ne!(entry_leaf(v2, &[7; 32]), entry_leaf(v2, &[8; 32]));
    }

    #[test]
    fn vendor_tags_depend_on_key_and_index() {
        let key = TagKey::from_slice(&[1; 32]).unwrap();
        let other = TagKey::from_slice(&[2; 32]).unwrap();
        assert_ne!(vendor_tag(&key, 5), vendor_tag(&key, 6));
        assert_ne!(vendor_tag(&key, 5), vendor_tag(&other, 5));
        let mut message = TAG_CONTEXT.to_vec();
        message.extend_from_slice(&5u64.to_be_bytes());
        assert_eq!(vendor_tag(&key, 5), key.tag(&message));
        assert!(key_announcement(&key).starts_with("audit tag key sha256:"));
    }
}
