//! The backend contract and the encrypted layer, run against every backend.
//!
//! Each backend gets the same tests through `backend_suite!`; the S3 backend joins the list
//! when it exists.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use blobstore::{Backend, BlobError, BlobStore, FsBackend};
use bytes::Bytes;
use crypto::SecretKey;
use futures::TryStreamExt;
use types::ObjectId;

/// Keeps the backend's directory alive for the test's duration.
struct Fs(#[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir);

impl Fs {
    fn new() -> (Arc<dyn Backend>, Fs) {
        let dir = tempfile::tempdir().unwrap();
        (Arc::new(FsBackend::open(dir.path()).unwrap()), Fs(dir))
    }
}

macro_rules! backend_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn parts_become_one_object_only_on_completion() {
                let (b, _g) = $make;
                super::parts_become_one_object_only_on_completion(b).await
            }
            #[tokio::test]
            async fn abort_and_delete_leave_nothing() {
                let (b, _g) = $make;
                super::abort_and_delete_leave_nothing(b).await
            }
            #[tokio::test]
            async fn ranges_read_exactly() {
                let (b, _g) = $make;
                super::ranges_read_exactly(b).await
            }
            #[tokio::test]
            async fn encrypted_objects_roundtrip_by_range() {
                let (b, _g) = $make;
                super::encrypted_objects_roundtrip_by_range(b).await
            }
            #[tokio::test]
            async fn unfinished_uploads_list_their_parts_and_die_with_delete() {
                let (b, _g) = $make;
                super::unfinished_uploads_list_their_parts_and_die_with_delete(b).await
            }
            #[tokio::test]
            async fn unsafe_keys_are_refused() {
                let (b, _g) = $make;
                super::unsafe_keys_are_refused(b).await
            }
        }
    };
}

backend_suite!(filesystem, Fs::new());

const KEY: &str = "00112233445566778899aabbccddeeff";

async fn parts_become_one_object_only_on_completion(b: Arc<dyn Backend>) {
    let upload = b.create_upload(KEY).await.unwrap();
    // Out of order, and part 1 sent twice: the second replaces the first.
    let p2 = b
        .upload_part(KEY, &upload, 2, Bytes::from_static(b"world"))
        .await
        .unwrap();
    b.upload_part(KEY, &upload, 1, Bytes::from_static(b"XXXXXX"))
        .await
        .unwrap();
    let p1 = b
        .upload_part(KEY, &upload, 1, Bytes::from_static(b"hello "))
        .await
        .unwrap();
    assert_eq!(
        b.size(KEY).await.unwrap(),
        None,
        "visible before completion"
    );
    b.complete_upload(KEY, &upload, vec![p2, p1]).await.unwrap();
    assert_eq!(b.size(KEY).await.unwrap(), Some(11));
    assert_eq!(&b.read_range(KEY, 0, 11).await.unwrap()[..], b"hello world");
}

async fn abort_and_delete_leave_nothing(b: Arc<dyn Backend>) {
    let upload = b.create_upload(KEY).await.unwrap();
    b.upload_part(KEY, &upload, 1, Bytes::from_static(b"partial"))
        .await
        .unwrap();
    b.abort_upload(KEY, &upload).await.unwrap();
    let late = b
        .upload_part(KEY, &upload, 2, Bytes::from_static(b"late"))
        .await;
    assert!(late.is_err(), "an aborted upload accepts no parts");
    assert_eq!(b.size(KEY).await.unwrap(), None);

    let upload = b.create_upload(KEY).await.unwrap();
    let p = b
        .upload_part(KEY, &upload, 1, Bytes::from_static(b"x"))
        .await
        .unwrap();
    b.complete_upload(KEY, &upload, vec![p]).await.unwrap();
    b.delete(KEY).await.unwrap();
    b.delete(KEY).await.unwrap();
    assert_eq!(b.size(KEY).await.unwrap(), None);
    assert!(matches!(
        b.read_range(KEY, 0, 1).await,
        Err(BlobError::NotFound(_))
    ));
}

async fn ranges_read_exactly(b: Arc<dyn Backend>) {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let upload = b.create_upload(KEY).await.unwrap();
    let p = b
        .upload_part(KEY, &upload, 1, Bytes::from(data.clone()))
        .await
        .unwrap();
    b.complete_upload(KEY, &upload, vec![p]).await.unwrap();
    for (offset, len) in [(0, 1), (9_999, 1), (1234, 4321), (0, 10_000), (5000, 0)] {
        let got = b.read_range(KEY, offset, len).await.unwrap();
        assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
    }
    assert!(
        b.read_range(KEY, 9_999, 2).await.is_err(),
        "a range past the end must fail"
    );
}

async fn unfinished_uploads_list_their_parts_and_die_with_delete(b: Arc<dyn Backend>) {
    let upload = b.create_upload(KEY).await.unwrap();
    assert!(b.list_parts(KEY, &upload).await.unwrap().is_empty());
    let p3 = b
        .upload_part(KEY, &upload, 3, Bytes::from(vec![3u8; 300]))
        .await
        .unwrap();
    let p1 = b
        .upload_part(KEY, &upload, 1, Bytes::from(vec![1u8; 100]))
        .await
        .unwrap();
    let listed = b.list_parts(KEY, &upload).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.part_number, p.size))
            .collect::<Vec<_>>(),
        [(1, 100), (3, 300)]
    );
    assert_eq!(listed[0].etag, p1.etag);
    assert_eq!(listed[1].etag, p3.etag);

    // An object, and a second unfinished upload of the same key: delete removes both.
    let done = b.create_upload(KEY).await.unwrap();
    let p = b
        .upload_part(KEY, &done, 1, Bytes::from_static(b"v1"))
        .await
        .unwrap();
    b.complete_upload(KEY, &done, vec![p]).await.unwrap();
    b.delete(KEY).await.unwrap();
    assert_eq!(b.size(KEY).await.unwrap(), None);
    assert!(matches!(
        b.list_parts(KEY, &upload).await,
        Err(BlobError::UploadNotFound(_))
    ));
}

async fn unsafe_keys_are_refused(b: Arc<dyn Backend>) {
    for key in ["../../etc/passwd", "ABCDEF0123456789", "short", ""] {
        assert!(b.create_upload(key).await.is_err(), "{key}");
        assert!(b.size(key).await.is_err(), "{key}");
    }
}

async fn collect(
    store: &BlobStore,
    key: &SecretKey,
    id: &ObjectId,
    len: u64,
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, BlobError> {
    let stream = store
        .open_range(key, "vendor", "model", id, len, range)
        .await?;
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}

async fn encrypted_objects_roundtrip_by_range(b: Arc<dyn Backend>) {
    use rand::{Rng, RngCore, SeedableRng};
    let store = BlobStore::new(b.clone());
    let key = SecretKey::generate().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    const SEG: u64 = crypto::stream::SEGMENT_PLAINTEXT_LEN as u64;
    for len in [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 17] {
        let mut data = vec![0u8; len as usize];
        rng.fill_bytes(&mut data);
        let id = ObjectId::from_bytes(&rng.r#gen::<[u8; 16]>());
        let mut writer = store.begin(&key, "vendor", "model", &id).await.unwrap();
        // Odd-sized writes, so segment boundaries fall inside writes.
        for chunk in data.chunks(300_007) {
            writer.write(chunk).await.unwrap();
        }
        let written = writer.finish().await.unwrap();
        assert_eq!(written.plaintext_len, len);
        assert_eq!(written.stored_len, crypto::stream::ciphertext_len(len));
        assert_eq!(written.sha256, crypto::hash::sha256(&data));
        assert_eq!(collect(&store, &key, &id, len, 0..len).await.unwrap(), data);
        for _ in 0..20 {
            if len == 0 {
                break;
            }
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len);
            let got = collect(&store, &key, &id, len, start..end).await.unwrap();
            assert_eq!(
                got,
                &data[start as usize..end as usize],
                "range {start}..{end} of {len}"
            );
        }
        // The wrong key, the wrong model and a lie about the length all fail.
        let other = SecretKey::generate().unwrap();
        assert!(matches!(
            collect(&store, &other, &id, len, 0..len).await,
            Err(BlobError::Integrity)
        ));
        let wrong_model = store
            .open_range(&key, "vendor", "other", &id, len, 0..len)
            .await;
        match wrong_model {
            Err(e) => assert!(matches!(e, BlobError::Integrity), "{e}"),
            Ok(s) => assert!(matches!(
                s.try_collect::<Vec<Bytes>>().await,
                Err(BlobError::Integrity)
            )),
        }
        assert!(matches!(
            store
                .open_range(&key, "vendor", "model", &id, len + 1, 0..1)
                .await
                .err(),
            Some(BlobError::Integrity)
        ));
    }
}
