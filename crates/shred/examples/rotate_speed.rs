//! Times the key work of one shred: rotate, re-wrap N surviving model keys, destroy the old epoch.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "measurement")]
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut providers: Vec<(&str, Arc<dyn shred::RootProvider>)> = vec![(
        "file",
        Arc::new(shred::FileRoot::open(&tmp.path().join("root")).unwrap()),
    )];
    let moto = testkit::MotoServer::start().unwrap();
    let mut config = shred::KmsConfig::new("us-east-1");
    config.endpoint_url = Some(moto.url().to_owned());
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some(shred::KmsSecret::new("test"));
    providers.push((
        "kms (moto)",
        Arc::new(shred::KmsRoot::connect(&config).await.unwrap()),
    ));
    for (name, provider) in providers {
        // The epoch ledger in SQLite, as the embedded default keeps it.
        let db = tmp
            .path()
            .join(format!("ledger-{}.sqlite", name.replace(' ', "-")));
        let store = store::Store::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        let keys = shred::KeyHierarchy::open(Arc::new(store), provider, true)
            .await
            .unwrap();
        let mut wrapped = Vec::with_capacity(n);
        for i in 0..n {
            wrapped.push(keys.new_model_key(&format!("m{i}")).await.unwrap().1);
        }
        let t = Instant::now();
        let to = keys.ensure_epoch_after(1, None).await.unwrap();
        let t_rotate = t.elapsed();
        let t = Instant::now();
        for (i, w) in wrapped.iter().enumerate() {
            keys.rewrap_model_key(&format!("m{i}"), w, to).unwrap();
        }
        let t_rewrap = t.elapsed();
        let t = Instant::now();
        keys.destroy_epoch(1, None).await.unwrap();
        let t_destroy = t.elapsed();
        println!(
            "{name}: rotate {t_rotate:?}, rewrap {n} keys {t_rewrap:?}, destroy {t_destroy:?}"
        );
    }
}
