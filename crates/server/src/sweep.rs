//! Background work: expiring abandoned upload sessions (one instance at a time, under a lease).
//!
//! An upload that is never committed must not leave ciphertext behind: when its session
//! expires, every part and every finished object of it is removed from storage, then the
//! session is forgotten with an audit entry. Storage goes first, so a crash in between leaves
//! a session that is swept again, never an orphaned object.

use std::sync::Arc;
use std::time::Duration;

use crate::state::App;

pub(crate) fn interval(upload_ttl_secs: i64) -> Duration {
    Duration::from_secs((upload_ttl_secs / 4).clamp(1, 60) as u64)
}

/// The sweep, while this instance holds the `upload-sweep` lease (`background.rs`). Never
/// returns.
pub(crate) async fn work(app: Arc<App>, _fence: store::Fence) {
    let period = interval(app.config.upload_ttl_secs);
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = sweep_once(&app).await {
            tracing::warn!(error = %e, "sweeping expired uploads failed; will retry");
        }
    }
}

pub(crate) async fn sweep_once(app: &App) -> anyhow::Result<usize> {
    let expired = app.store.expired_uploads(app.store.clock().now()).await?;
    for session in &expired {
        for file in &session.files {
            // A staged object a Hub commit took into a revision is the revision's now.
            if file.done && app.store.object_in_revision(&file.file.object_id).await? {
                continue;
            }
            // Deleting the key removes a finished object and aborts unfinished uploads alike.
            if file.done || file.backend_upload_id.is_some() {
                app.blobs.delete(&file.file.object_id).await?;
            }
        }
        let model = app.store.model_by_id(&session.model_id).await?;
        let resource =
            model.map_or_else(|| "unknown".into(), |m| format!("{}/{}", m.vendor, m.name));
        let entry = audit::Entry::new("system", "upload.expire", resource).with_detail(format!(
            "upload {} by {} expired; {} files removed from storage",
            session.id,
            session.created_by,
            session.files.len()
        ));
        app.store.drop_upload(session, entry).await?;
        tracing::info!(upload = %session.id, "expired an abandoned upload");
    }
    Ok(expired.len())
}
