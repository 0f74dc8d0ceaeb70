//! Copies on exclusive hosts: which host received which file of which model, and the hosts'
//! confirmations that they wiped their copies of a deleted model.
//!
//! A copy is recorded with the fetch that served it, in the fetch's audit transaction, so no
//! byte reaches a host without its row. One row per (host, model, commit, path): `bytes` is
//! the sum of the bytes served to that host for that file, capped at the file's size (ranged
//! fetches add up; a repeated range may make the sum reach the size before the host holds
//! every byte, so `bytes` says "held up to this much", never less than what was served), and
//! `fetched_at` is the time of the latest fetch. Rows are kept after a deletion: the
//! deletion certificate lists every host that held a copy.

use sqlx::Row;
use types::{CommitId, HostName, RepoPath};

use crate::convert::get_uint;
use crate::{Result, Store, StoreError, corrupt};

/// What one fetch served to an enrolled host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCopy {
    /// The host's enrollment.
    pub host_id: String,
    pub model_id: String,
    pub commit: CommitId,
    pub path: RepoPath,
    /// Bytes served by this request.
    pub bytes: u64,
    /// The file's size: the recorded total never exceeds it.
    pub file_size: u64,
}

/// A recorded copy of one file on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCopyRecord {
    /// The enrollment that received it, and its name.
    pub host_id: String,
    pub host: HostName,
    pub commit: CommitId,
    pub path: RepoPath,
    pub bytes: u64,
    pub fetched_at: i64,
}

/// A host's confirmation that it deleted its local copies of a deleted model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipeConfirmation {
    pub host_id: String,
    pub host: HostName,
    pub model_id: String,
    pub confirmed_at: i64,
    /// Local files the host reports it removed.
    pub files: u64,
}

/// A host's copy of a file of a model that has been deleted: what `custody wipe` must remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedCopy {
    pub model_id: String,
    /// `vendor/model`, as the host fetched it.
    pub model: String,
    pub commit: CommitId,
    pub path: RepoPath,
    pub bytes: u64,
}

/// What recording a confirmation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The first confirmation of this host for this deletion and model.
    Recorded { late: bool },
    /// The host had confirmed before; the first confirmation stands, this one is only logged.
    Repeated { late: bool },
}

fn host_from(r: &sqlx::any::AnyRow) -> Result<HostName> {
    HostName::parse(r.try_get("host_name")?).map_err(corrupt)
}

/// Adds what a fetch served to the host's copy of the file, inside the fetch's transaction.
pub(crate) async fn add_copy(
    conn: &mut sqlx::AnyConnection,
    copy: &HostCopy,
    now: i64,
) -> Result<()> {
    let existing = sqlx::query(
        "SELECT bytes FROM host_copies \
             WHERE host_id = $1 AND model_id = $2 AND commit_id = $3 AND path = $4",
    )
    .bind(&copy.host_id)
    .bind(&copy.model_id)
    .bind(copy.commit.as_str())
    .bind(copy.path.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let cap = i64::try_from(copy.file_size).unwrap_or(i64::MAX);
    let served = i64::try_from(copy.bytes).unwrap_or(i64::MAX);
    match existing {
        Some(row) => {
            let before: i64 = row.try_get("bytes")?;
            sqlx::query(
                "UPDATE host_copies SET bytes = $1, fetched_at = $2 \
                     WHERE host_id = $3 AND model_id = $4 AND commit_id = $5 AND path = $6",
            )
            .bind(before.saturating_add(served).min(cap))
            .bind(now)
            .bind(&copy.host_id)
            .bind(&copy.model_id)
            .bind(copy.commit.as_str())
            .bind(copy.path.as_str())
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO host_copies (host_id, model_id, commit_id, path, bytes, fetched_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&copy.host_id)
            .bind(&copy.model_id)
            .bind(copy.commit.as_str())
            .bind(copy.path.as_str())
            .bind(served.min(cap))
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl Store {
    /// Records a fetch's audit entry and, in the same transaction, the copy it gave the host.
    pub async fn record_fetch(&self, entry: audit::Entry, copy: &HostCopy) -> Result<u64> {
        let mut tx = self.begin().await?;
        add_copy(tx.conn(), copy, self.clock.now()).await?;
        tx.commit(entry).await
    }

    /// Every recorded copy of a model's files, by host, commit and path.
    pub async fn host_copies(&self, model_id: &str) -> Result<Vec<HostCopyRecord>> {
        let rows = sqlx::query(
            "SELECT c.host_id, h.name AS host_name, c.commit_id, c.path, c.bytes, c.fetched_at \
             FROM host_copies c JOIN hosts h ON h.id = c.host_id \
             WHERE c.model_id = $1 ORDER BY h.name, c.host_id, c.commit_id, c.path",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HostCopyRecord {
                    host_id: r.try_get("host_id")?,
                    host: host_from(r)?,
                    commit: CommitId::parse(r.try_get("commit_id")?).map_err(corrupt)?,
                    path: RepoPath::parse(r.try_get("path")?).map_err(corrupt)?,
                    bytes: get_uint::<u64>(r, "bytes")?,
                    fetched_at: r.try_get("fetched_at")?,
                })
            })
            .collect()
    }

    /// The wipe confirmations received for a deletion, by host and model.
    pub async fn wipe_confirmations(&self, deletion_id: &str) -> Result<Vec<WipeConfirmation>> {
        let rows = sqlx::query(
            "SELECT w.host_id, h.name AS host_name, w.model_id, w.confirmed_at, w.files \
             FROM wipe_confirmations w JOIN hosts h ON h.id = w.host_id \
             WHERE w.deletion_id = $1 ORDER BY h.name, w.host_id, w.model_id",
        )
        .bind(deletion_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WipeConfirmation {
                    host_id: r.try_get("host_id")?,
                    host: host_from(r)?,
                    model_id: r.try_get("model_id")?,
                    confirmed_at: r.try_get("confirmed_at")?,
                    files: get_uint::<u64>(r, "files")?,
                })
            })
            .collect()
    }

    /// The copies the host enrollment `host_id` holds of models that have been deleted
    /// (`models.deleted_at` set), except those it has already confirmed wiping.
    pub async fn deleted_copies(&self, host_id: &str) -> Result<Vec<DeletedCopy>> {
        let rows = sqlx::query(
            "SELECT c.model_id, v.name AS vendor, m.name AS model, c.commit_id, \
             c.path, c.bytes FROM host_copies c \
             JOIN models m ON m.id = c.model_id JOIN vendors v ON v.id = m.vendor_id \
             WHERE c.host_id = $1 AND m.deleted_at IS NOT NULL AND m.deletion_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM wipe_confirmations w WHERE w.deletion_id = m.deletion_id \
             AND w.host_id = c.host_id AND w.model_id = c.model_id) \
             ORDER BY v.name, m.name, c.commit_id, c.path",
        )
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let vendor: String = r.try_get("vendor")?;
                let model: String = r.try_get("model")?;
                Ok(DeletedCopy {
                    model_id: r.try_get("model_id")?,
                    model: format!("{vendor}/{model}"),
                    commit: CommitId::parse(r.try_get("commit_id")?).map_err(corrupt)?,
                    path: RepoPath::parse(r.try_get("path")?).map_err(corrupt)?,
                    bytes: get_uint::<u64>(r, "bytes")?,
                })
            })
            .collect()
    }

    /// Records the confirmation of host enrollment `host_id` that it wiped its copies of the
    /// deleted model `model_id`, with its audit entry; returns the deletion it answers.
    /// Refused (`NotFound`) unless the model is deleted and this enrollment holds a recorded
    /// copy of it. A confirmation after the certificate was issued is still recorded (`late`);
    /// a repeated one is only logged.
    pub async fn confirm_wipe(
        &self,
        host_id: &str,
        model_id: &str,
        files: u64,
        entry: impl FnOnce(Confirmed) -> audit::Entry,
    ) -> Result<(String, Confirmed)> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "SELECT deletion_id FROM models WHERE id = $1 AND deleted_at IS NOT NULL \
             AND deletion_id IS NOT NULL",
        )
        .bind(model_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound("deleted model"))?;
        let deletion_id: String = deleted.try_get("deletion_id")?;
        let held = sqlx::query(
            "SELECT COUNT(*) AS n FROM host_copies WHERE host_id = $1 AND model_id = $2",
        )
        .bind(host_id)
        .bind(model_id)
        .fetch_one(tx.conn())
        .await?;
        if held.try_get::<i64, _>("n")? == 0 {
            return Err(StoreError::NotFound("copy of this model on this host"));
        }
        let certified = sqlx::query("SELECT certificate FROM deletions WHERE id = $1")
            .bind(&deletion_id)
            .fetch_optional(tx.conn())
            .await?;
        let late = match certified {
            Some(row) => row.try_get::<Option<String>, _>("certificate")?.is_some(),
            None => false,
        };
        let before = sqlx::query(
            "SELECT confirmed_at FROM wipe_confirmations \
             WHERE deletion_id = $1 AND host_id = $2 AND model_id = $3",
        )
        .bind(&deletion_id)
        .bind(host_id)
        .bind(model_id)
        .fetch_optional(tx.conn())
        .await?;
        let outcome = if before.is_some() {
            Confirmed::Repeated { late }
        } else {
            sqlx::query(
                "INSERT INTO wipe_confirmations (deletion_id, host_id, model_id, confirmed_at, files) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&deletion_id)
            .bind(host_id)
            .bind(model_id)
            .bind(self.clock.now())
            .bind(i64::try_from(files).unwrap_or(i64::MAX))
            .execute(tx.conn())
            .await?;
            Confirmed::Recorded { late }
        };
        tx.commit(entry(outcome)).await?;
        Ok((deletion_id, outcome))
    }
}
