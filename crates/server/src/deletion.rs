//! The shred state machine: carrying out a deletion so that no copy, backups included, can be
//! read again.
//!
//! ```text
//! access_revoked   the request's transaction marked the models deleted: from then on every
//!   │              fetch answers 410 and no new key is unwrapped for them
//!   ├─ (prepare)   record the models' wrapped keys, their objects and the current epoch N
//!   ▼
//! keys_destroyed   epoch N+1 exists (new root, new epoch key); in ONE transaction the deleted
//!   │              models' wrapped keys are erased and every surviving key re-wrapped to N+1
//!   ▼
//! epoch_destroyed  epoch N's root is destroyed (file overwritten and removed, or KMS key
//!   │              scheduled for deletion), then its epoch file: every backup is now inert
//!   ▼
//! objects_deleted  every stored version of every object removed, unfinished uploads aborted
//!   ▼
//! checked          post-checks: storage reports each object gone; the recorded wrapped keys
//!   │              no longer open under any epoch that exists
//!   ▼
//! certified        the signed certificate is stored
//! ```
//!
//! Each arrow is a compare-and-set of the state in the same transaction as its audit entry,
//! and each step is idempotent, so a crash anywhere resumes at restart ([`resume_all`]) and
//! repeats at most the interrupted step. One runner works at a time (a mutex), because a
//! rotation must know which epoch it started from.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shred::WrappedModelKey;
use store::{DeletionRecord, Rewrapped};
use types::ObjectId;

use crate::App;
use crate::auth::store_now;

/// What later steps need, persisted with each step (no secret: wrapped keys are inert
/// without their epoch key).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Work {
    pub models: Vec<WorkModel>,
    pub objects: Vec<WorkObject>,
    pub upload_objects: Vec<String>,
    pub from_epoch: Option<u64>,
    pub to_epoch: Option<u64>,
    pub root_kind: Option<String>,
    pub root: Option<String>,
    pub root_destruction: Option<String>,
    pub post_checks: Vec<PostCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkModel {
    pub id: String,
    pub vendor: String,
    pub name: String,
    pub revisions: Vec<String>,
    pub key_epoch: u64,
    /// Hex of the wrapped model key as it was: kept to prove it no longer opens.
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkObject {
    pub id: String,
    pub model_id: String,
    pub size: i64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PostCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeletionError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] shred::KeyError),
    #[error("storage: {0}")]
    Blob(#[from] blobstore::BlobError),
    #[error("{0}")]
    Other(String),
}

/// Serialises runners: one deletion at a time.
static RUNNER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test hook: `CUSTODY_FAILPOINT_DELETION=STATE` ends the process right after a deletion
/// reaches STATE, to prove that a restart completes the work.
fn failpoint(state: &str) {
    if std::env::var("CUSTODY_FAILPOINT_DELETION").is_ok_and(|s| s == state) {
        tracing::error!(state, "failpoint: exiting after deletion step");
        std::process::exit(86);
    }
}

fn entry(deletion: &DeletionRecord, action: &str, detail: String) -> audit::Entry {
    audit::Entry::new("system", action, format!("deletion/{}", deletion.id)).with_detail(detail)
}

fn parse_work(d: &DeletionRecord) -> Result<Work, DeletionError> {
    if d.work == "{}" {
        return Ok(Work::default());
    }
    serde_json::from_str(&d.work)
        .map_err(|e| DeletionError::Other(format!("deletion {} work: {e}", d.id)))
}

fn to_json(work: &Work) -> String {
    serde_json::to_string(work).unwrap_or_else(|_| "{}".into())
}

/// Background task: resumes unfinished deletions at start, then wakes on requests and
/// periodically (for `delete_after` times).
pub(crate) async fn run(app: Arc<App>, wake: Arc<tokio::sync::Notify>) {
    loop {
        if let Err(e) = start_due(&app).await {
            tracing::error!(error = %e, "starting scheduled deletions failed; will retry");
        }
        if let Err(e) = resume_all(&app).await {
            tracing::error!(error = %e, "a deletion step failed; will retry");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}

/// Starts the deletion of every model whose `delete_after` has come. The deletion names who
/// scheduled it (and who approved that, under the two-person rule), never "system".
async fn start_due(app: &App) -> Result<(), DeletionError> {
    for due in app.store.models_due_for_deletion(store_now()).await? {
        let id = crypto::token::random_id().map_err(|e| DeletionError::Other(e.to_string()))?;
        let entry = audit::Entry::new(
            due.scheduled_by.as_str(),
            "deletion.request",
            format!("model/{}", due.model_id),
        )
        .with_detail(format!("deletion {id}: delete_after reached"));
        app.store
            .start_deletion(
                &id,
                &due.vendor_id,
                Some(&due.model_id),
                &due.scheduled_by,
                due.approved_by.as_deref(),
                entry,
            )
            .await?;
        tracing::info!(deletion = %id, "deletion started: delete_after reached");
    }
    Ok(())
}

/// Drives every unfinished deletion as far as it goes.
pub(crate) async fn resume_all(app: &App) -> Result<(), DeletionError> {
    let _running = RUNNER.lock().await;
    for deletion in app.store.unfinished_deletions().await? {
        drive(app, &deletion.id).await?;
    }
    Ok(())
}

async fn drive(app: &App, id: &str) -> Result<(), DeletionError> {
    loop {
        let d = app
            .store
            .deletion(id)
            .await?
            .ok_or_else(|| DeletionError::Other(format!("deletion {id} vanished")))?;
        let next = match d.state.as_str() {
            "access_revoked" => destroy_keys(app, &d).await?,
            "keys_destroyed" => destroy_epoch(app, &d).await?,
            "epoch_destroyed" => delete_objects(app, &d).await?,
            "objects_deleted" => post_check(app, &d).await?,
            "checked" => crate::certificate::certify(app, &d).await?,
            _ => return Ok(()),
        };
        tracing::info!(deletion = %id, state = next, "deletion step done");
        failpoint(next);
    }
}

/// Records what the deletion covers, then rotates the epoch and erases the keys.
async fn destroy_keys(app: &App, d: &DeletionRecord) -> Result<&'static str, DeletionError> {
    let mut work = parse_work(d)?;
    if work.from_epoch.is_none() {
        let model_ids = app.store.deletion_models(&d.id).await?;
        for model_id in &model_ids {
            let Some(m) = app.store.model_by_id(model_id).await? else {
                continue;
            };
            let revisions = app.store.revisions(model_id).await?;
            work.models.push(WorkModel {
                id: m.id.clone(),
                vendor: m.vendor.to_string(),
                name: m.name.to_string(),
                revisions: revisions.iter().map(|r| r.commit.to_string()).collect(),
                key_epoch: m.key_epoch,
                wrapped_key: hex::encode(&m.wrapped_key),
            });
        }
        work.objects = app
            .store
            .objects_of_models(&model_ids)
            .await?
            .into_iter()
            .map(|o| WorkObject {
                id: o.id,
                model_id: o.model_id,
                size: o.size,
                sha256: o.sha256,
            })
            .collect();
        work.upload_objects = app.store.upload_objects_of_models(&model_ids).await?;
        work.from_epoch = Some(app.keys.current_epoch());
        app.store
            .advance_deletion(
                &d.id,
                "access_revoked",
                "access_revoked",
                &to_json(&work),
                entry(
                    d,
                    "deletion.prepare",
                    format!(
                        "{} models, {} objects, epoch {}",
                        work.models.len(),
                        work.objects.len(),
                        app.keys.current_epoch()
                    ),
                ),
            )
            .await?;
    }
    let from = work
        .from_epoch
        .ok_or_else(|| DeletionError::Other("no starting epoch".into()))?;
    let to = app.keys.ensure_epoch_after(from).await?;
    let mut rewrapped = Vec::new();
    for (model_id, epoch, wrapped) in app.store.live_model_keys().await? {
        let new = app
            .keys
            .rewrap_model_key(&model_id, &WrappedModelKey { epoch, wrapped }, to)?;
        rewrapped.push(Rewrapped {
            model_id,
            epoch: new.epoch,
            wrapped: new.wrapped,
        });
    }
    work.to_epoch = Some(to);
    if let Some(info) = app.keys.epoch_info(from) {
        work.root_kind = Some(info.root_kind.to_string());
        work.root = Some(info.root.as_str().to_owned());
    }
    app.store
        .shred_model_keys(
            &d.id,
            &rewrapped,
            &to_json(&work),
            entry(
                d,
                "deletion.keys",
                format!(
                    "model keys erased; {} surviving keys re-wrapped from epoch {from} to {to}",
                    rewrapped.len()
                ),
            ),
        )
        .await?;
    Ok("keys_destroyed")
}

async fn destroy_epoch(app: &App, d: &DeletionRecord) -> Result<&'static str, DeletionError> {
    let mut work = parse_work(d)?;
    let from = work
        .from_epoch
        .ok_or_else(|| DeletionError::Other("no starting epoch".into()))?;
    let destroyed = app.keys.destroy_epoch(from).await?;
    if let Some(root) = &destroyed.root {
        work.root = Some(root.as_str().to_owned());
    }
    work.root_kind = Some(destroyed.root_kind.to_string());
    work.root_destruction = Some(destroyed.root_destruction.describe());
    app.store
        .advance_deletion(
            &d.id,
            "keys_destroyed",
            "epoch_destroyed",
            &to_json(&work),
            entry(
                d,
                "deletion.epoch",
                format!(
                    "epoch {from} destroyed: {}",
                    destroyed.root_destruction.describe()
                ),
            ),
        )
        .await?;
    Ok("epoch_destroyed")
}

async fn delete_objects(app: &App, d: &DeletionRecord) -> Result<&'static str, DeletionError> {
    let work = parse_work(d)?;
    let ids = work
        .objects
        .iter()
        .map(|o| o.id.as_str())
        .chain(work.upload_objects.iter().map(String::as_str));
    let mut count = 0usize;
    for id in ids {
        let id = ObjectId::parse(id).map_err(|e| DeletionError::Other(e.to_string()))?;
        // Removes every version and aborts unfinished multipart uploads under the key.
        app.blobs.delete(&id).await?;
        count += 1;
    }
    app.store
        .advance_deletion(
            &d.id,
            "epoch_destroyed",
            "objects_deleted",
            &to_json(&work),
            entry(
                d,
                "deletion.objects",
                format!("{count} stored objects and uploads removed"),
            ),
        )
        .await?;
    Ok("objects_deleted")
}

async fn post_check(app: &App, d: &DeletionRecord) -> Result<&'static str, DeletionError> {
    let mut work = parse_work(d)?;
    let mut still_stored = Vec::new();
    for o in &work.objects {
        let id = ObjectId::parse(&o.id).map_err(|e| DeletionError::Other(e.to_string()))?;
        if app.blobs.exists(&id).await? {
            still_stored.push(o.id.clone());
        }
    }
    let mut still_opens = Vec::new();
    for m in &work.models {
        let wrapped = hex::decode(&m.wrapped_key).unwrap_or_default();
        for epoch in app.keys.epochs() {
            let attempt = WrappedModelKey {
                epoch: epoch.epoch,
                wrapped: wrapped.clone(),
            };
            if app.keys.unwrap_model_key(&m.id, &attempt).is_ok() {
                still_opens.push(format!(
                    "{}/{} under epoch {}",
                    m.vendor, m.name, epoch.epoch
                ));
            }
        }
    }
    let from_alive = work
        .from_epoch
        .is_some_and(|from| app.keys.epochs().iter().any(|e| e.epoch == from));
    work.post_checks = vec![
        PostCheck {
            name: "storage_reports_objects_gone".into(),
            passed: still_stored.is_empty(),
            detail: if still_stored.is_empty() {
                format!("{} objects: none found in storage", work.objects.len())
            } else {
                format!("still stored: {}", still_stored.join(", "))
            },
        },
        PostCheck {
            name: "retained_ciphertext_does_not_decrypt".into(),
            passed: still_opens.is_empty() && !from_alive,
            detail: if still_opens.is_empty() && !from_alive {
                "the recorded wrapped model keys open under no existing epoch; their epoch and root are destroyed".into()
            } else {
                format!("still opens: {}", still_opens.join(", "))
            },
        },
    ];
    if work.post_checks.iter().any(|c| !c.passed) {
        // Never certify unfinished work: record the failure and retry later.
        let detail = work
            .post_checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::error!(deletion = %d.id, %detail, "deletion post-check failed");
        return Err(DeletionError::Other(format!("post-check failed: {detail}")));
    }
    app.store
        .advance_deletion(
            &d.id,
            "objects_deleted",
            "checked",
            &to_json(&work),
            entry(d, "deletion.check", "post-checks passed".into()),
        )
        .await?;
    Ok("checked")
}
