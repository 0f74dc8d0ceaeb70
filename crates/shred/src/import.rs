//! Moving a layout-v2 key store (epoch keys in files `KEY_DIR/epoch-N.key`) into the epoch
//! ledger, once, on the first start of a version that keeps them in the database.
//!
//! Nothing changes cryptographically: each epoch key stays wrapped under its own root, and the
//! records keep their root names (`root-N.key`). An interrupted epoch creation (an intent file
//! without its epoch file) is discarded first, as the old key store would have done. The files
//! are overwritten and removed only after the ledger committed them all, so a crash in between
//! leaves both, and the next start finds the ledger holding exactly those files and just
//! removes them.

use std::path::Path;
use std::sync::Arc;

use crate::{
    EpochLedger, EpochRecord, EpochState, KeyError, LEGACY_ROOT, RootKind, RootProvider, RootRef,
    STORE_MARKER, files,
};

/// The attempt id recorded for imported epochs (they were made before attempts had ids).
const IMPORTED: &str = "imported";

/// What [`import_key_store`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The directory held no epoch file.
    Nothing,
    /// These epochs moved into the ledger; the current one is the last.
    Imported(Vec<u64>),
}

/// Imports the epoch files of `dir` into `ledger` (which must be empty, or hold exactly those
/// epochs from an import interrupted before the files were removed).
pub async fn import_key_store(
    dir: &Path,
    ledger: &Arc<dyn EpochLedger>,
    provider: &Arc<dyn RootProvider>,
) -> Result<ImportOutcome, KeyError> {
    if !dir.exists() {
        return Ok(ImportOutcome::Nothing);
    }
    if dir.join(LEGACY_ROOT).exists() {
        return Err(KeyError::LegacyLayout(dir.to_owned()));
    }
    let kind = provider.kind();
    let intents = files::list_numbered(dir, "epoch-", ".intent")?;
    let epoch_files = files::list_numbered(dir, "epoch-", ".key")?;
    let mut found = Vec::new();
    for (epoch, path) in &epoch_files {
        found.push((*epoch, files::read_epoch_file(path, *epoch)?));
    }
    let state = ledger.load().await?;
    if state.current != 0 {
        // Only the clean-up of an earlier import may be left: the same epochs, byte for byte.
        for (epoch, file) in &found {
            let same = state.records.iter().any(|r| {
                r.epoch == *epoch
                    && r.root.as_ref() == Some(&file.root)
                    && (r.wrapped.as_deref() == Some(file.wrapped.as_slice())
                        || r.state != EpochState::Live)
            });
            if !same {
                return Err(KeyError::Ledger(format!(
                    "the key store {} holds epoch {epoch}, which the database's epoch ledger does \
                     not: refusing to guess which one is right",
                    dir.display()
                )));
            }
        }
        remove_files(dir, &epoch_files, &intents)?;
        return Ok(if found.is_empty() {
            ImportOutcome::Nothing
        } else {
            ImportOutcome::Imported(found.iter().map(|(e, _)| *e).collect())
        });
    }
    // An epoch being created when the old server stopped: nothing was wrapped under its root.
    for (epoch, path) in &intents {
        if dir.join(format!("epoch-{epoch}.key")).exists() {
            continue;
        }
        let (intent_kind, root) = files::read_intent_file(path, *epoch)?;
        if intent_kind != kind {
            return Err(KeyError::ProviderMismatch {
                epoch: *epoch,
                found: intent_kind.to_string(),
                configured: kind.to_string(),
            });
        }
        let root = match (root, kind) {
            (Some(root), _) => Some(root),
            // The old layout named a file root after its epoch alone.
            (None, RootKind::File) => RootRef::new(&format!("root-{epoch}.key")),
            (None, RootKind::Kms | RootKind::Pkcs11) => None,
        };
        if let Some(root) = root {
            provider.destroy_root(&root, *epoch).await?;
        }
    }
    if found.is_empty() {
        remove_files(dir, &epoch_files, &intents)?;
        if dir.join(STORE_MARKER).exists() {
            // Initialised once, every epoch gone: a new hierarchy would stand in for lost keys.
            return Err(KeyError::NoEpoch(format!(
                " and the key store {} lost its epoch files",
                dir.display()
            )));
        }
        return Ok(ImportOutcome::Nothing);
    }
    let current = found.last().map_or(0, |(e, _)| *e);
    let mut records = Vec::new();
    for (epoch, file) in found {
        if file.root_kind != kind {
            return Err(KeyError::ProviderMismatch {
                epoch,
                found: file.root_kind.to_string(),
                configured: kind.to_string(),
            });
        }
        // An older epoch whose root is already gone was being destroyed: finish that later.
        let state = match provider.unwrap(&file.root, epoch, &file.wrapped).await {
            Ok(_) => EpochState::Live,
            Err(KeyError::RootGone { root, .. }) if epoch == current => {
                return Err(KeyError::CurrentRootMissing { epoch, root });
            }
            Err(KeyError::RootGone { .. }) => EpochState::Destroying,
            Err(e) => return Err(e),
        };
        records.push(EpochRecord {
            epoch,
            root_kind: file.root_kind,
            attempt: IMPORTED.to_owned(),
            root: Some(file.root),
            wrapped: Some(file.wrapped),
            state,
        });
    }
    let epochs = records.iter().map(|r| r.epoch).collect();
    ledger.import(&records, current).await?;
    remove_files(dir, &epoch_files, &intents)?;
    tracing::info!(
        dir = %dir.display(),
        ?epochs,
        "moved the key store's epoch keys into the database's epoch ledger"
    );
    Ok(ImportOutcome::Imported(epochs))
}

fn remove_files(
    dir: &Path,
    epoch_files: &[(u64, std::path::PathBuf)],
    intents: &[(u64, std::path::PathBuf)],
) -> Result<(), KeyError> {
    for (_, path) in epoch_files {
        files::overwrite_and_remove(path)?;
    }
    for (_, path) in intents {
        files::remove_file(path)?;
    }
    files::remove_file(&dir.join(STORE_MARKER))
}
