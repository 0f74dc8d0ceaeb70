//! The key store formats (root file v2, epoch file v2, wrapped model key), frozen: a key store
//! built byte for byte by an independent implementation (`gen_vectors.py`, Python's
//! `cryptography`) moves into the epoch ledger (as a server upgraded from that layout does at
//! its first start), opens, and yields the model key it was made with.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use shred::{
    EpochLedger, FileRoot, ImportOutcome, KeyError, KeyHierarchy, RootProvider, WrappedModelKey,
};

// Output of `.venv/bin/python crates/shred/tests/gen_vectors.py`.
const ROOT_FILE: &str = "637573746f64792d726f6f74020000000000000003000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const EPOCH_FILE: &str = "637573746f64792d65706f636802000000000000000301000a726f6f742d332e6b6579003d01111111111111111111111111e405f2d8d06945c504124b6d315462c9976af6d26d48ea1251a6e579a8e241d109a92f63ffcae42a563902a81f1f5a71";
const WRAPPED_MODEL_KEY: &str = "01222222222222222222222222a94e352fe49e9c3c66683d39e4129ef9bab8bf0fc7097f63c4cdc779a61429fbd588177043dfb86753a35896c0a09316";
const MODEL_KEY: &str = "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7";

fn store(epoch_file: &[u8]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("keys")).unwrap();
    std::fs::create_dir_all(tmp.path().join("root")).unwrap();
    std::fs::write(
        tmp.path().join("root/root-3.key"),
        hex::decode(ROOT_FILE).unwrap(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("keys/epoch-3.key"), epoch_file).unwrap();
    tmp
}

async fn open(tmp: &tempfile::TempDir) -> Result<KeyHierarchy, KeyError> {
    let root: Arc<dyn RootProvider> = Arc::new(FileRoot::open(&tmp.path().join("root")).unwrap());
    let store = store::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("db.sqlite").display()
    ))
    .await
    .unwrap();
    let ledger: Arc<dyn EpochLedger> = Arc::new(store);
    let imported = shred::import_key_store(&tmp.path().join("keys"), &ledger, &root).await?;
    assert_eq!(imported, ImportOutcome::Imported(vec![3]));
    // The files are gone from the key store; the ledger holds them now.
    assert!(!tmp.path().join("keys/epoch-3.key").exists());
    KeyHierarchy::open(ledger, root, false).await
}

#[tokio::test]
async fn an_independently_built_key_store_opens() {
    let tmp = store(&hex::decode(EPOCH_FILE).unwrap());
    let keys = open(&tmp).await.unwrap();
    assert_eq!(keys.current_epoch(), 3);
    assert_eq!(keys.epoch_info(3).unwrap().root.as_str(), "root-3.key");
    let wrapped = WrappedModelKey {
        epoch: 3,
        wrapped: hex::decode(WRAPPED_MODEL_KEY).unwrap(),
    };
    let key = keys.unwrap_model_key("model-a", &wrapped).await.unwrap();
    assert_eq!(hex::encode(key.expose_secret()), MODEL_KEY);
    assert!(keys.unwrap_model_key("model-b", &wrapped).await.is_err());
    // And the next epoch is made the new way, beside the imported one.
    assert_eq!(keys.ensure_epoch_after(3, None).await.unwrap(), 4);
    let moved = keys.rewrap_model_key("model-a", &wrapped, 4).unwrap();
    keys.destroy_epoch(3, None).await.unwrap();
    assert!(!tmp.path().join("root/root-3.key").exists());
    let key = keys.unwrap_model_key("model-a", &moved).await.unwrap();
    assert_eq!(hex::encode(key.expose_secret()), MODEL_KEY);
}

#[tokio::test]
async fn every_flipped_bit_of_the_epoch_file_is_refused() {
    let good = hex::decode(EPOCH_FILE).unwrap();
    // One database for every attempt: a refused import leaves it empty.
    let db = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn EpochLedger> = Arc::new(
        store::Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            db.path().join("db.sqlite").display()
        ))
        .await
        .unwrap(),
    );
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let tmp = store(&bad);
        let root: Arc<dyn RootProvider> =
            Arc::new(FileRoot::open(&tmp.path().join("root")).unwrap());
        let imported = shred::import_key_store(&tmp.path().join("keys"), &ledger, &root).await;
        assert!(imported.is_err(), "byte {i}");
        // Nothing was imported, and the file is still there to investigate.
        assert!(ledger.load().await.unwrap().records.is_empty(), "byte {i}");
        assert!(tmp.path().join("keys/epoch-3.key").exists(), "byte {i}");
    }
}
