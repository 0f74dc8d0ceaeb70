//! Shared by the store's test files: what the schema requires to exist before a row may point
//! at it (foreign keys), made through the store's own methods.

use store::{FileRecord, NewUpload, Store};
use types::{CommitId, ObjectId, RepoPath, Sha256Hex};

/// Commits a one-file revision `commit` of `model_id` through an upload session, as an upload
/// does, so host copies and fetches may name it.
pub async fn committed_revision(store: &Store, model_id: &str, commit: &CommitId) {
    let file = FileRecord {
        path: RepoPath::parse("w.bin").unwrap(),
        object_id: ObjectId::from_bytes(&[7; 16]),
        size: 1000,
        sha256: Sha256Hex::parse(&"cd".repeat(32)).unwrap(),
    };
    let upload = format!("u-{commit}");
    store
        .create_upload(
            &NewUpload {
                id: &upload,
                manifest_digest: "d",
                model_id,
                created_by: "vendor-admin:a",
                message: "for the test",
                expires_at: i64::MAX,
                files: std::slice::from_ref(&file),
                max_open_by_creator: u64::MAX,
            },
            audit::Entry::new("vendor-admin:a", "upload.begin", "acme/m"),
        )
        .await
        .unwrap();
    store
        .upload_file_done(&upload, 0, model_id, &file, 1000, None)
        .await
        .unwrap();
    let session = store.upload(&upload).await.unwrap().unwrap();
    store
        .commit_upload(
            &session,
            commit,
            audit::Entry::new("vendor-admin:a", "upload.commit", "acme/m"),
        )
        .await
        .unwrap();
}
