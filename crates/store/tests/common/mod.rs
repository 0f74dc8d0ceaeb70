//! Shared by the store's test files: what the schema requires to exist before a row may point
//! at it (foreign keys), made through the store's own methods.

use store::{FileRecord, NewHost, NewModel, NewUpload, Store};
use types::{
    CommitId, HostGroupName, HostName, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName,
};

/// Vendor `v1` (acme), its model `m1` (acme/m), the hosts `(id, name)` enrolled in group
/// `gpu`, and a committed revision `abab…` of the model that fetches and copies can name.
pub async fn acme_model_on_hosts(store: &Store, hosts: &[(&str, &str)]) {
    store
        .create_vendor(
            "v1",
            &VendorName::parse("acme").unwrap(),
            audit::Entry::new("operator:t", "vendor.create", "acme"),
        )
        .await
        .unwrap();
    store
        .create_model(
            &NewModel {
                id: "m1",
                vendor_id: "v1",
                name: &ModelName::parse("m").unwrap(),
                key_epoch: 1,
                wrapped_key: b"k",
            },
            audit::Entry::new("vendor-admin:a", "model.create", "acme/m"),
        )
        .await
        .unwrap();
    for (id, name) in hosts {
        store
            .enroll_host(
                &NewHost {
                    id,
                    name: &HostName::parse(name).unwrap(),
                    group: &HostGroupName::parse("gpu").unwrap(),
                    cert_sha256: id,
                    not_after: 4_000_000_000,
                    enrolled_by: "operator:t",
                },
                audit::Entry::new("operator:t", "host.enroll", "service"),
            )
            .await
            .unwrap();
    }
    committed_revision(store, "m1", &CommitId::parse(&"ab".repeat(20)).unwrap()).await;
}

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
                files: &[file.clone().into()],
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
