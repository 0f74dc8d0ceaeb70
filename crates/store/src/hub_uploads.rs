//! Uploads through the Hugging Face Hub API. The LFS batch API stages large files in ordinary
//! upload sessions (marked in `hub_lfs_sessions`, with the key their PUT URLs carry and the
//! token that asked for them); the commit makes a revision from the head's files, the
//! deletions, the staged objects and a session of the small files the commit carried.

use sqlx::Row;
use types::{CommitId, ObjectId, Sha256Hex};

use crate::uploads::{delete_upload_rows, insert_upload};
use crate::*;

/// What a Hub staging session adds to its upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLfsSession {
    /// The token that asked for the session's URLs: each PUT is decided again for it.
    pub token_id: String,
    /// SHA-256 (hex) of the key the session's URLs carry.
    pub key_sha256: String,
}

/// One file of a staging session, for finding it by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub session_id: String,
    /// Position in its session.
    pub index: usize,
    pub file: UploadFile,
}

/// A revision made by a Hub commit.
pub struct HubCommit<'a> {
    pub model_id: &'a str,
    pub commit: &'a CommitId,
    /// The head the commit was made on (`None`: the model had no revision); the commit is
    /// refused if `main` moved meanwhile.
    pub parent: Option<&'a CommitId>,
    pub message: &'a str,
    pub created_by: &'a str,
    /// Every file of the new revision, by path.
    pub files: &'a [FileRecord],
    /// Sessions the revision used up, forgotten in the same transaction (their objects stay).
    pub consumed_sessions: &'a [String],
}

impl Store {
    /// Opens a staging session for LFS objects, in the transaction of its `upload.begin` entry.
    pub async fn create_hub_lfs_upload(
        &self,
        upload: &NewUpload<'_>,
        hub: &HubLfsSession,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_upload(&mut tx, self.clock.now(), upload, None).await?;
        sqlx::query(
            "INSERT INTO hub_lfs_sessions (session_id, token_id, key_sha256) VALUES ($1, $2, $3)",
        )
        .bind(upload.id)
        .bind(&hub.token_id)
        .bind(&hub.key_sha256)
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// The staging details of a session, `None` for a session that is not one.
    pub async fn hub_lfs_session(&self, session_id: &str) -> Result<Option<HubLfsSession>> {
        let row =
            sqlx::query("SELECT token_id, key_sha256 FROM hub_lfs_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(HubLfsSession {
                token_id: r.try_get("token_id")?,
                key_sha256: r.try_get("key_sha256")?,
            })
        })
        .transpose()
    }

    /// Replaces the key of a staging session's URLs (new URLs are handed out: the old ones stop
    /// working) and the token they act for. Bookkeeping under the session's audited start.
    pub async fn rekey_hub_lfs_session(&self, session_id: &str, hub: &HubLfsSession) -> Result<()> {
        sqlx::query(
            "UPDATE hub_lfs_sessions SET token_id = $1, key_sha256 = $2 WHERE session_id = $3",
        )
        .bind(&hub.token_id)
        .bind(&hub.key_sha256)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The files of `created_by`'s open staging sessions on a model.
    pub async fn staged_files(
        &self,
        model_id: &str,
        created_by: &str,
        now: i64,
    ) -> Result<Vec<StagedFile>> {
        let rows = sqlx::query(
            "SELECT s.id FROM upload_sessions s JOIN hub_lfs_sessions h ON h.session_id = s.id \
             WHERE s.model_id = $1 AND s.created_by = $2 AND s.expires_at > $3 \
             ORDER BY s.created_at",
        )
        .bind(model_id)
        .bind(created_by)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut staged = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            if let Some(session) = self.upload(&id).await? {
                staged.extend(session.files.into_iter().enumerate().map(|(index, file)| {
                    StagedFile {
                        session_id: id.clone(),
                        index,
                        file,
                    }
                }));
            }
        }
        Ok(staged)
    }

    /// An object of the model, in one of its revisions, with this content: a Hub client need
    /// not send it again.
    pub async fn committed_object(
        &self,
        model_id: &str,
        sha256: &Sha256Hex,
        size: u64,
    ) -> Result<Option<FileRecord>> {
        let row = sqlx::query(
            "SELECT f.path, f.size, f.sha256, f.object_id FROM revision_files f \
             JOIN revisions r ON r.commit_id = f.commit_id \
             WHERE r.model_id = $1 AND f.sha256 = $2 AND f.size = $3 LIMIT 1",
        )
        .bind(model_id)
        .bind(sha256.as_str())
        .bind(convert::db_int(size)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// Whether a revision holds this object (the sweep leaves such objects alone).
    pub async fn object_in_revision(&self, object_id: &ObjectId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM revision_files WHERE object_id = $1 LIMIT 1")
            .bind(object_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Makes the revision of a Hub commit and forgets the sessions it used up, with its entry.
    /// Refused (`Conflict`) when `main` is no longer `parent`.
    pub async fn commit_hub_revision(
        &self,
        commit: &HubCommit<'_>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        // After the audit head's write: concurrent commits are ordered, so this reads the head
        // the revision will follow.
        let head: Option<String> = sqlx::query(
            "SELECT commit_id FROM revisions WHERE model_id = $1 AND derived_from IS NULL \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(commit.model_id)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| r.try_get("commit_id"))
        .transpose()?;
        if head.as_deref() != commit.parent.map(CommitId::as_str) {
            return Err(StoreError::Conflict(format!(
                "main moved to {} while this commit was made on {}: refresh and commit again",
                head.as_deref().unwrap_or("nothing"),
                commit.parent.map_or("an empty model", CommitId::as_str)
            )));
        }
        let seq: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM revisions WHERE model_id = $1")
                .bind(commit.model_id)
                .fetch_one(tx.conn())
                .await?
                .try_get("n")?;
        sqlx::query(
            "INSERT INTO revisions (commit_id, model_id, seq, message, created_by, created_at, derived_from) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(commit.commit.as_str())
        .bind(commit.model_id)
        .bind(seq)
        .bind(commit.message)
        .bind(commit.created_by)
        .bind(self.clock.now())
        .execute(tx.conn())
        .await?;
        for f in commit.files {
            // Every object must be the model's own: a revision never borrows another's.
            let owner: Option<String> = sqlx::query("SELECT model_id FROM objects WHERE id = $1")
                .bind(f.object_id.as_str())
                .fetch_optional(tx.conn())
                .await?
                .map(|r| r.try_get("model_id"))
                .transpose()?;
            if owner.as_deref() != Some(commit.model_id) {
                return Err(StoreError::Conflict(format!(
                    "{}: its object is not stored for this model",
                    f.path
                )));
            }
            sqlx::query(
                "INSERT INTO revision_files (commit_id, path, object_id, size, sha256) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(commit.commit.as_str())
            .bind(f.path.as_str())
            .bind(f.object_id.as_str())
            .bind(convert::db_int(f.size)?)
            .bind(f.sha256.as_str())
            .execute(tx.conn())
            .await?;
        }
        for session in commit.consumed_sessions {
            delete_upload_rows(tx.conn(), session).await?;
        }
        tx.commit(entry).await?;
        Ok(())
    }
}
