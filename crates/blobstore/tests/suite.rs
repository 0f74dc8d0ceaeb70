//! The backend contract and the encrypted layer, run against every backend.
//!
//! Each backend gets the same tests through `backend_suite!`: the filesystem, and S3 on moto's
//! server (a versioned bucket per test, so `delete` must remove every version). S3 refuses parts
//! under 5 MiB except the last, so multi-part cases use a 5 MiB first part on every backend.
//! The `s3_only` tests look into the bucket with a plain S3 client for what the contract alone
//! cannot show: no version and no unfinished upload survives `delete`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use blobstore::{Backend, BlobError, BlobStore, FsBackend, S3Backend, S3Config, S3Secret};
use bytes::Bytes;
use crypto::SecretKey;
use futures::TryStreamExt;
use testkit::MotoServer;
use types::ObjectId;

/// Keeps the backend's directory alive for the test's duration.
struct Fs(#[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir);

impl Fs {
    async fn new() -> (Arc<dyn Backend>, Fs) {
        let dir = tempfile::tempdir().unwrap();
        (Arc::new(FsBackend::open(dir.path()).unwrap()), Fs(dir))
    }
}

/// A bucket of its own on the test binary's moto server (started on first use).
struct S3 {
    bucket: String,
}

impl S3 {
    const PREFIX: &str = "objects/";

    async fn new() -> (Arc<dyn Backend>, S3) {
        let (backend, s3) = S3::bucket(true).await;
        (Arc::new(backend), s3)
    }

    async fn bucket(versioned: bool) -> (S3Backend, S3) {
        let moto = MotoServer::shared().unwrap();
        let bucket = moto.fresh_bucket(versioned).unwrap();
        let config = S3Config {
            endpoint_url: Some(moto.url().to_owned()),
            region: "us-east-1".into(),
            bucket: bucket.clone(),
            force_path_style: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some(S3Secret::new("test")),
            prefix: S3::PREFIX.into(),
        };
        (S3Backend::connect(&config).await.unwrap(), S3 { bucket })
    }
}

macro_rules! backend_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn ranges_cross_part_boundaries() {
                let (b, _g) = $make.await;
                super::ranges_cross_part_boundaries(b).await
            }
            #[tokio::test]
            async fn parts_become_one_object_only_on_completion() {
                let (b, _g) = $make.await;
                super::parts_become_one_object_only_on_completion(b).await
            }
            #[tokio::test]
            async fn abort_and_delete_leave_nothing() {
                let (b, _g) = $make.await;
                super::abort_and_delete_leave_nothing(b).await
            }
            #[tokio::test]
            async fn ranges_read_exactly() {
                let (b, _g) = $make.await;
                super::ranges_read_exactly(b).await
            }
            #[tokio::test]
            async fn encrypted_objects_roundtrip_by_range() {
                let (b, _g) = $make.await;
                super::encrypted_objects_roundtrip_by_range(b).await
            }
            #[tokio::test]
            async fn unfinished_uploads_list_their_parts_and_die_with_delete() {
                let (b, _g) = $make.await;
                super::unfinished_uploads_list_their_parts_and_die_with_delete(b).await
            }
            #[tokio::test]
            async fn unsafe_keys_are_refused() {
                let (b, _g) = $make.await;
                super::unsafe_keys_are_refused(b).await
            }
        }
    };
}

backend_suite!(filesystem, Fs::new());
backend_suite!(s3, S3::new());

const KEY: &str = "00112233445566778899aabbccddeeff";

/// S3's smallest part: every part but the last of an upload must be at least this long.
const MIN_PART: usize = 5 << 20;

/// A first part of `MIN_PART` bytes that differs with `seed`.
fn big_part(seed: u8) -> Vec<u8> {
    (0..MIN_PART).map(|i| (i % 251) as u8 ^ seed).collect()
}

async fn parts_become_one_object_only_on_completion(b: Arc<dyn Backend>) {
    let first = big_part(1);
    let upload = b.create_upload(KEY).await.unwrap();
    // Out of order, and part 1 sent twice: the second replaces the first.
    let p2 = b
        .upload_part(KEY, &upload, 2, Bytes::from_static(b"world"))
        .await
        .unwrap();
    b.upload_part(KEY, &upload, 1, Bytes::from(vec![b'X'; MIN_PART]))
        .await
        .unwrap();
    let p1 = b
        .upload_part(KEY, &upload, 1, Bytes::from(first.clone()))
        .await
        .unwrap();
    assert_eq!((p1.part_number, p1.size), (1, MIN_PART as u64));
    assert_eq!(
        b.size(KEY).await.unwrap(),
        None,
        "visible before completion"
    );
    b.complete_upload(KEY, &upload, vec![p2, p1]).await.unwrap();
    let len = MIN_PART as u64 + 5;
    assert_eq!(b.size(KEY).await.unwrap(), Some(len));
    let whole = b.read_range(KEY, 0, len).await.unwrap();
    assert!(whole[..MIN_PART] == first[..], "part 1 is the re-sent one");
    assert_eq!(&whole[MIN_PART..], b"world");
}

async fn ranges_cross_part_boundaries(b: Arc<dyn Backend>) {
    let tail = b"the last part, shorter".to_vec();
    let data = [big_part(7), tail.clone()].concat();
    let upload = b.create_upload(KEY).await.unwrap();
    let p1 = b
        .upload_part(KEY, &upload, 1, Bytes::copy_from_slice(&data[..MIN_PART]))
        .await
        .unwrap();
    let p2 = b
        .upload_part(KEY, &upload, 2, Bytes::from(tail.clone()))
        .await
        .unwrap();
    b.complete_upload(KEY, &upload, vec![p1, p2]).await.unwrap();
    let edge = MIN_PART as u64;
    let end = data.len() as u64;
    for (offset, len) in [
        (edge - 1, 2),
        (edge - 4096, 4096 + 3),
        (edge - 3, end - (edge - 3)),
        (edge, tail.len() as u64),
        (0, end),
    ] {
        let got = b.read_range(KEY, offset, len).await.unwrap();
        assert!(
            got[..] == data[offset as usize..(offset + len) as usize],
            "range {offset}+{len}"
        );
    }
    assert!(matches!(
        b.read_range(KEY, edge, tail.len() as u64 + 1).await,
        Err(BlobError::BadRange { .. })
    ));
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
    for len in [
        0,
        1,
        SEG - 1,
        SEG,
        SEG + 1,
        3 * SEG + 17,
        8 * SEG,
        9 * SEG + 5,
    ] {
        let mut data = vec![0u8; len as usize];
        rng.fill_bytes(&mut data);
        let id = ObjectId::from_bytes(&rng.r#gen::<[u8; 16]>());
        let stored = store
            .put_object(&key, "vendor", "model", &id, &data)
            .await
            .unwrap();
        assert_eq!(stored, crypto::stream::ciphertext_len(len));
        assert_eq!(b.size(id.as_str()).await.unwrap(), Some(stored));
        assert_eq!(collect(&store, &key, &id, len, 0..len).await.unwrap(), data);
        // Small ranges at the start, across a boundary and at the end.
        for (start, end) in [
            (0, 1),
            (0, 100),
            (SEG - 1, SEG + 1),
            (len.saturating_sub(10), len),
        ] {
            if end > len || start >= end {
                continue;
            }
            let got = collect(&store, &key, &id, len, start..end).await.unwrap();
            assert_eq!(
                got,
                &data[start as usize..end as usize],
                "range {start}..{end} of {len}"
            );
        }
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

/// What the contract alone cannot show, looked up in the bucket with a plain S3 client.
mod s3_only {
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

    fn raw_client() -> aws_sdk_s3::Client {
        let moto = MotoServer::shared().unwrap();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .http_client(http)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// `version KEY` and `marker KEY` for every version and delete marker under `prefix`.
    async fn versions(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
        let out = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        assert_ne!(out.is_truncated(), Some(true));
        let versions = out.versions().iter().map(|v| (v.key(), "version"));
        let markers = out.delete_markers().iter().map(|m| (m.key(), "marker"));
        versions
            .chain(markers)
            .map(|(key, kind)| format!("{kind} {}", key.unwrap()))
            .collect()
    }

    async fn put(b: &S3Backend, key: &str, data: &'static [u8]) {
        let upload = b.create_upload(key).await.unwrap();
        let p = b
            .upload_part(key, &upload, 1, Bytes::from_static(data))
            .await
            .unwrap();
        b.complete_upload(key, &upload, vec![p]).await.unwrap();
    }

    #[tokio::test]
    async fn delete_leaves_no_version_behind() {
        let (b, S3 { bucket }) = S3::bucket(true).await;
        let s3 = raw_client();
        let name = format!("{}{KEY}", S3::PREFIX);
        // Two versions, a delete marker between them, and a neighbour that shares the prefix.
        put(&b, KEY, b"version one").await;
        s3.delete_object()
            .bucket(&bucket)
            .key(&name)
            .send()
            .await
            .unwrap();
        put(&b, KEY, b"version two").await;
        let neighbour = format!("{KEY}00");
        put(&b, &neighbour, b"stays").await;
        assert_eq!(versions(&s3, &bucket, &name).await.len(), 4);

        b.delete(KEY).await.unwrap();
        assert_eq!(
            versions(&s3, &bucket, &name).await,
            [format!("version {}{neighbour}", S3::PREFIX)]
        );
        assert_eq!(b.size(KEY).await.unwrap(), None);
        assert_eq!(&b.read_range(&neighbour, 0, 5).await.unwrap()[..], b"stays");
        b.delete(KEY).await.unwrap();
    }

    #[tokio::test]
    async fn delete_on_an_unversioned_bucket() {
        let (b, S3 { bucket }) = S3::bucket(false).await;
        let s3 = raw_client();
        put(&b, KEY, b"only version").await;
        b.delete(KEY).await.unwrap();
        assert!(versions(&s3, &bucket, S3::PREFIX).await.is_empty());
        b.delete(KEY).await.unwrap();
    }

    #[tokio::test]
    async fn delete_aborts_unfinished_uploads() {
        let (b, S3 { bucket }) = S3::bucket(true).await;
        let s3 = raw_client();
        for _ in 0..2 {
            let upload = b.create_upload(KEY).await.unwrap();
            b.upload_part(KEY, &upload, 1, Bytes::from_static(b"ciphertext"))
                .await
                .unwrap();
        }
        let uploads = || async {
            s3.list_multipart_uploads()
                .bucket(&bucket)
                .prefix(S3::PREFIX)
                .send()
                .await
                .unwrap()
                .uploads()
                .iter()
                .map(|u| u.key().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(uploads().await.len(), 2);
        b.delete(KEY).await.unwrap();
        assert!(uploads().await.is_empty());
    }

    #[tokio::test]
    async fn connect_refuses_a_missing_bucket() {
        let moto = MotoServer::shared().unwrap();
        let config = S3Config {
            endpoint_url: Some(moto.url().to_owned()),
            region: "us-east-1".into(),
            bucket: "no-such-bucket".into(),
            force_path_style: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some(S3Secret::new("test")),
            prefix: String::new(),
        };
        let err = S3Backend::connect(&config).await.unwrap_err();
        assert!(err.to_string().contains("no-such-bucket"), "{err}");
    }
}
