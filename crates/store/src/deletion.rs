//! The persisted shred state machine's rows. The server's deletion runner drives them; each
//! step is a compare-and-set on `state` in the same transaction as its audit entry, so a
//! crash leaves the deletion in exactly one state, and a restart resumes it from there.

use sqlx::Row;

use crate::keys::{check_fence, current_epoch_shared};
use crate::{Fence, Result, Store, StoreError, corrupt};

/// The states of a deletion, in order (`Ord` follows it). A deletion only moves forward.
///
/// Stored as text; the database's CHECK constraint admits exactly these names, and reading
/// any other is a corrupt-database error, never a silent stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeletionState {
    /// The request's transaction marked the models deleted: every fetch answers 410.
    AccessRevoked,
    /// The models' wrapped keys are erased; surviving keys are re-wrapped to a newer epoch.
    KeysDestroyed,
    /// The epoch that wrapped the erased keys is destroyed, its root included.
    EpochDestroyed,
    /// Every stored version of every object is removed.
    ObjectsDeleted,
    /// The post-checks passed.
    Checked,
    /// The signed certificate is stored: done.
    Certified,
}

impl DeletionState {
    /// Every state, in order.
    pub const ALL: [DeletionState; 6] = [
        DeletionState::AccessRevoked,
        DeletionState::KeysDestroyed,
        DeletionState::EpochDestroyed,
        DeletionState::ObjectsDeleted,
        DeletionState::Checked,
        DeletionState::Certified,
    ];

    /// The stored (and shown) name. Frozen: the database and the API carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionState::AccessRevoked => "access_revoked",
            DeletionState::KeysDestroyed => "keys_destroyed",
            DeletionState::EpochDestroyed => "epoch_destroyed",
            DeletionState::ObjectsDeleted => "objects_deleted",
            DeletionState::Checked => "checked",
            DeletionState::Certified => "certified",
        }
    }

    /// The state named `name`; `None` for anything else (no default, no catch-all).
    pub fn parse(name: &str) -> Option<DeletionState> {
        DeletionState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for DeletionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The work record of a deletion not yet prepared: version 1 of the runner's format, with
/// nothing recorded. The runner owns the format; the store only writes this first value, and
/// the runner's tests decode it.
pub const UNPREPARED_WORK: &str = r#"{"version":1}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionRecord {
    pub id: String,
    pub vendor_id: String,
    /// The vendor's name (what the deletion's audit entries are tagged with).
    pub vendor: String,
    /// `None`: the whole vendor.
    pub model_id: Option<String>,
    pub state: DeletionState,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    /// The runner's working data (versioned JSON), written with each step.
    pub work: String,
    pub certificate: Option<String>,
    /// Failed attempts at the current step (reset when a step succeeds).
    pub attempts: i64,
    /// Why the last attempt failed, until a step succeeds.
    pub last_error: Option<String>,
    /// When the runner tries again (Unix seconds), after a failure.
    pub retry_at: Option<i64>,
}

/// A stored object of a model, as the deletion records it before removing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub id: String,
    pub model_id: String,
    pub size: i64,
    pub sha256: String,
}

/// A model key after rotation: the model, its new epoch and wrapped key.
pub struct Rewrapped {
    pub model_id: String,
    pub epoch: u64,
    pub wrapped: Vec<u8>,
}

impl Store {
    /// Starts a deletion: records the request and marks every model in scope deleted (from
    /// now on it answers "deleted"), in one transaction. `model_id = None` deletes every model
    /// of the vendor. A model already under deletion is a conflict.
    pub async fn start_deletion(
        &self,
        id: &str,
        vendor_id: &str,
        model_id: Option<&str>,
        requested_by: &str,
        approved_by: Option<&str>,
        entry: audit::Entry,
    ) -> Result<DeletionRecord> {
        let mut tx = self.begin().await?;
        insert_deletion(
            tx.conn(),
            id,
            vendor_id,
            model_id,
            requested_by,
            approved_by,
            self.clock.now(),
        )
        .await?;
        tx.commit(entry).await?;
        self.deletion(id)
            .await?
            .ok_or(StoreError::NotFound("deletion"))
    }

    pub async fn deletion(&self, id: &str) -> Result<Option<DeletionRecord>> {
        let row = sqlx::query(&format!("{DELETION_SELECT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(deletion_from_row).transpose()
    }

    /// A vendor's deletions, newest first.
    pub async fn deletions_of_vendor(&self, vendor_id: &str) -> Result<Vec<DeletionRecord>> {
        let rows = sqlx::query(&format!(
            "{DELETION_SELECT} WHERE d.vendor_id = $1 ORDER BY d.requested_at DESC, d.id"
        ))
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deletion_from_row).collect()
    }

    /// Ids of the deletions not yet certified, oldest first: what the runner resumes. Only
    /// ids: a row that does not read back (a state the database should have refused) then
    /// fails alone, as its own deletion's error, instead of hiding every other deletion.
    pub async fn unfinished_deletions(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM deletions WHERE state <> 'certified' ORDER BY requested_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The models a deletion covers.
    pub async fn deletion_models(&self, deletion_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM models WHERE deletion_id = $1 ORDER BY id")
            .bind(deletion_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Every stored object of these models (all revisions, derived ones included).
    pub async fn objects_of_models(&self, model_ids: &[String]) -> Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        for model_id in model_ids {
            let rows = sqlx::query(
                "SELECT id, model_id, size, sha256 FROM objects WHERE model_id = $1 ORDER BY id",
            )
            .bind(model_id)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(StoredObject {
                    id: r.try_get("id")?,
                    model_id: r.try_get("model_id")?,
                    size: r.try_get("size")?,
                    sha256: r.try_get("sha256")?,
                });
            }
        }
        Ok(out)
    }

    /// Object ids of unfinished uploads of these models (their parts must be aborted too).
    pub async fn upload_objects_of_models(&self, model_ids: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for model_id in model_ids {
            let rows = sqlx::query(
                "SELECT f.object_id FROM upload_files f JOIN upload_sessions s ON s.id = f.session_id \
                 WHERE s.model_id = $1",
            )
            .bind(model_id)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(r.try_get("object_id")?);
            }
        }
        Ok(out)
    }

    /// Wrapped keys of every model not under deletion: what a rotation re-wraps.
    pub async fn live_model_keys(&self) -> Result<Vec<(String, u64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT id, key_epoch, wrapped_key FROM models WHERE deleted_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    crate::convert::get_uint::<u64>(r, "key_epoch")?,
                    r.try_get("wrapped_key")?,
                ))
            })
            .collect()
    }

    /// Moves a deletion from `from` to `to`, storing its working data, with its entry.
    /// `Conflict` when the deletion is no longer in `from` (another runner moved it); `Fenced`
    /// when the runner's lease was taken over.
    pub async fn advance_deletion(
        &self,
        id: &str,
        from: DeletionState,
        to: DeletionState,
        work: &str,
        entry: audit::Entry,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        advance(tx.conn(), id, from, to, work).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// The key step, in one transaction: the deleted models' wrapped keys are erased, the
    /// surviving keys are replaced by their re-wrapped forms under epoch `to`, and the
    /// deletion moves on. A backup taken before holds keys wrapped only under older epochs.
    /// Refused (`Conflict`, to be retried) unless `to` is current and, afterwards, no model
    /// that is not being deleted has its key under an older epoch (one committed after the
    /// caller read the keys to re-wrap).
    pub async fn shred_model_keys(
        &self,
        id: &str,
        to: u64,
        rewrapped: &[Rewrapped],
        work: &str,
        entry: audit::Entry,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        let current = current_epoch_shared(tx.conn(), self.dialect).await?;
        if current != to {
            return Err(StoreError::Conflict(format!(
                "re-wrapped to key epoch {to}, but epoch {current} is current"
            )));
        }
        advance(
            tx.conn(),
            id,
            DeletionState::AccessRevoked,
            DeletionState::KeysDestroyed,
            work,
        )
        .await?;
        sqlx::query("UPDATE models SET wrapped_key = $1 WHERE deletion_id = $2")
            .bind(Vec::<u8>::new())
            .bind(id)
            .execute(tx.conn())
            .await?;
        for r in rewrapped {
            sqlx::query(
                "UPDATE models SET key_epoch = $1, wrapped_key = $2 WHERE id = $3 AND deleted_at IS NULL",
            )
            .bind(crate::convert::db_int(r.epoch)?)
            .bind(r.wrapped.clone())
            .bind(&r.model_id)
            .execute(tx.conn())
            .await?;
        }
        let left = sqlx::query(
            "SELECT COUNT(*) AS n FROM models WHERE deleted_at IS NULL AND key_epoch < $1",
        )
        .bind(crate::convert::db_int(to)?)
        .fetch_one(tx.conn())
        .await?
        .try_get::<i64, _>("n")?;
        if left > 0 {
            return Err(StoreError::Conflict(format!(
                "{left} model keys are still under an epoch older than {to}: read them again"
            )));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// The last step: the certificate is stored and the deletion is done.
    pub async fn certify_deletion(
        &self,
        id: &str,
        work: &str,
        certificate: &str,
        entry: audit::Entry,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        advance(
            tx.conn(),
            id,
            DeletionState::Checked,
            DeletionState::Certified,
            work,
        )
        .await?;
        sqlx::query("UPDATE deletions SET certificate = $1, completed_at = $2 WHERE id = $3")
            .bind(certificate)
            .bind(self.clock.now())
            .bind(id)
            .execute(tx.conn())
            .await?;
        tx.commit(entry).await
    }

    /// Sets (or clears) the time at which the server shreds a model by itself, recording who
    /// scheduled it (the deletion it starts names them).
    pub async fn set_delete_after(
        &self,
        model_id: &str,
        at: Option<i64>,
        scheduled_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        update_delete_after(tx.conn(), model_id, at, scheduled_by, None).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// Models whose `delete_after` has come and that are not yet under deletion.
    pub async fn models_due_for_deletion(&self, now: i64) -> Result<Vec<DueDeletion>> {
        let rows = sqlx::query(
            "SELECT m.id, m.vendor_id, v.name AS vendor, m.delete_after_by, \
             m.delete_after_approved_by FROM models m JOIN vendors v ON v.id = m.vendor_id \
             WHERE m.delete_after IS NOT NULL AND m.delete_after <= $1 AND m.deleted_at IS NULL \
             ORDER BY m.delete_after, m.id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDeletion {
                    model_id: r.try_get("id")?,
                    vendor_id: r.try_get("vendor_id")?,
                    vendor: r.try_get("vendor")?,
                    scheduled_by: r
                        .try_get::<Option<String>, _>("delete_after_by")?
                        .unwrap_or_else(|| "system".into()),
                    approved_by: r.try_get("delete_after_approved_by")?,
                })
            })
            .collect()
    }
}

/// A model whose scheduled deletion time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDeletion {
    pub model_id: String,
    pub vendor_id: String,
    pub vendor: String,
    /// Who set the time (`role:name`), and who approved it under the two-person rule.
    pub scheduled_by: String,
    pub approved_by: Option<String>,
}

pub(crate) async fn update_delete_after(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    at: Option<i64>,
    scheduled_by: &str,
    approved_by: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE models SET delete_after = $1, delete_after_by = $2, delete_after_approved_by = $3 \
         WHERE id = $4 AND deleted_at IS NULL",
    )
    .bind(at)
    .bind(at.map(|_| scheduled_by))
    .bind(at.and(approved_by))
    .bind(model_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a deletion and marks its models deleted (used by a direct request and by the
/// approval of a pending one, inside their transactions).
pub(crate) async fn insert_deletion(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    vendor_id: &str,
    model_id: Option<&str>,
    requested_by: &str,
    approved_by: Option<&str>,
    now: i64,
) -> Result<()> {
    let t = now;
    sqlx::query(
        "INSERT INTO deletions (id, vendor_id, model_id, state, requested_by, approved_by, \
         requested_at, work) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(vendor_id)
    .bind(model_id)
    .bind(DeletionState::AccessRevoked.as_str())
    .bind(requested_by)
    .bind(approved_by)
    .bind(t)
    .bind(UNPREPARED_WORK)
    .execute(&mut *conn)
    .await?;
    let marked = match model_id {
        Some(m) => {
            sqlx::query(
                "UPDATE models SET deleted_at = $1, deletion_id = $2 \
                 WHERE id = $3 AND vendor_id = $4 AND deleted_at IS NULL",
            )
            .bind(t)
            .bind(id)
            .bind(m)
            .bind(vendor_id)
            .execute(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE models SET deleted_at = $1, deletion_id = $2 \
                 WHERE vendor_id = $3 AND deleted_at IS NULL",
            )
            .bind(t)
            .bind(id)
            .bind(vendor_id)
            .execute(&mut *conn)
            .await?
        }
    };
    if model_id.is_some() && marked.rows_affected() == 0 {
        return Err(StoreError::Conflict(
            "this model is already deleted or being deleted".into(),
        ));
    }
    Ok(())
}

async fn advance(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    from: DeletionState,
    to: DeletionState,
    work: &str,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE deletions SET state = $1, work = $2, attempts = 0, last_error = NULL, \
         retry_at = NULL WHERE id = $3 AND state = $4",
    )
    .bind(to.as_str())
    .bind(work)
    .bind(id)
    .bind(from.as_str())
    .execute(conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!(
            "deletion {id} is not in state {from}"
        )));
    }
    Ok(())
}

const DELETION_SELECT: &str = "SELECT d.id, d.vendor_id, v.name AS vendor, d.model_id, d.state, \
     d.requested_by, d.approved_by, d.requested_at, d.completed_at, d.work, d.certificate, \
     d.attempts, d.last_error, d.retry_at FROM deletions d JOIN vendors v ON v.id = d.vendor_id";

fn deletion_from_row(r: &sqlx::any::AnyRow) -> Result<DeletionRecord> {
    let stored: String = r.try_get("state")?;
    let state = DeletionState::parse(&stored)
        .ok_or_else(|| corrupt(format!("deletion state {stored:?}")))?;
    Ok(DeletionRecord {
        id: r.try_get("id")?,
        vendor_id: r.try_get("vendor_id")?,
        vendor: r.try_get("vendor")?,
        model_id: r.try_get("model_id")?,
        state,
        requested_by: r.try_get("requested_by")?,
        approved_by: r.try_get("approved_by")?,
        requested_at: r.try_get("requested_at")?,
        completed_at: r.try_get("completed_at")?,
        work: r.try_get("work")?,
        certificate: r.try_get("certificate")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        retry_at: r.try_get("retry_at")?,
    })
}
