//! Model keys as the request handlers need them, over the shared key hierarchy.
//!
//! A model key is committed only under the epoch that is current at commit (the database
//! checks it); when a rotation on another instance got there first, the key is made again
//! under the new epoch. A key read from a row that a rotation re-wrapped meanwhile (its old
//! epoch being destroyed) is read again from the database.

use shred::{KeyError, WrappedModelKey};
use store::{ModelRecord, NewModel, StoreError};

use crate::error::ApiError;
use crate::state::App;

/// Attempts before giving up on a model creation that keeps meeting rotations.
const ATTEMPTS: usize = 5;

/// Creates a model with a fresh key wrapped under the current epoch. `entry` gets the epoch
/// in its detail. Returns the store's answer (`Conflict` when a concurrent creation won).
pub(crate) async fn create_model(
    app: &App,
    id: &str,
    vendor_id: &str,
    name: &types::ModelName,
    entry: audit::Entry,
) -> Result<Result<(), StoreError>, ApiError> {
    for _ in 0..ATTEMPTS {
        let (_key, wrapped) = app.keys.new_model_key(id).await?;
        let entry = entry
            .clone()
            .with_detail(format!("key epoch {}", wrapped.epoch));
        let created = app
            .store
            .create_model(
                &NewModel {
                    id,
                    vendor_id,
                    name,
                    key_epoch: wrapped.epoch,
                    wrapped_key: &wrapped.wrapped,
                },
                entry,
            )
            .await;
        match created {
            // A rotation committed meanwhile: wrap again under the new epoch.
            Err(StoreError::StaleEpoch { epoch, current }) => {
                tracing::info!(
                    epoch,
                    current,
                    "key epoch moved while creating a model; retrying"
                );
                app.keys.refresh().await?;
            }
            other => return Ok(other),
        }
    }
    Err(ApiError::Internal(
        "the key epoch kept changing while creating the model; try again".into(),
    ))
}

/// Opens `model`'s key.
pub(crate) async fn model_key(
    app: &App,
    model: &ModelRecord,
) -> Result<crypto::SecretKey, ApiError> {
    let mut model = model.clone();
    for _ in 0..2 {
        let wrapped = WrappedModelKey {
            epoch: model.key_epoch,
            wrapped: model.wrapped_key.clone(),
        };
        match app.keys.unwrap_model_key(&model.id, &wrapped).await {
            Ok(key) => return Ok(key),
            // Re-wrapped by a rotation after this row was read: read it again.
            Err(KeyError::EpochDestroyed(epoch)) if epoch < app.keys.current_epoch() => {
                model = app
                    .store
                    .model_by_id(&model.id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound("model".into()))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(
        "the model's key epoch changed while it was being read; try again".into(),
    ))
}
