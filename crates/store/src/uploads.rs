//! Upload sessions: opening one (or finding the one to resume), each file's progress and its
//! stored parts, the commit that makes a revision, and the sweep of abandoned sessions.

use sqlx::Row;
use types::CommitId;

use crate::*;

impl Store {
    pub async fn create_upload(&self, upload: &NewUpload<'_>, entry: audit::Entry) -> Result<()> {
        self.create_upload_from(upload, None, entry).await
    }

    /// Opens an upload session whose commit makes a revision derived from `derived_from`
    /// (`None`: an ordinary revision). The caller has checked that the commit is a revision
    /// of the same model.
    pub async fn create_upload_from(
        &self,
        upload: &NewUpload<'_>,
        derived_from: Option<&CommitId>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_upload(&mut tx, self.clock.now(), upload, derived_from).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadSession>> {
        let Some(s) = sqlx::query(
            "SELECT id, model_id, created_by, message, expires_at, derived_from FROM upload_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT path, size, sha256, declared, object_id, done, header, backend_upload_id, parts_done, \
             hash_state FROM upload_files WHERE session_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let files = rows
            .iter()
            .map(|r| {
                let sha256: String = r.try_get("sha256")?;
                Ok(UploadFile {
                    file: UploadFileRecord {
                        path: RepoPath::parse(r.try_get("path")?).map_err(corrupt)?,
                        object_id: ObjectId::parse(r.try_get("object_id")?).map_err(corrupt)?,
                        size: convert::get_uint::<u64>(r, "size")?,
                        // Empty: not declared, and not stored yet.
                        sha256: (!sha256.is_empty())
                            .then(|| Sha256Hex::parse(&sha256))
                            .transpose()
                            .map_err(corrupt)?,
                        declared: r.try_get::<i64, _>("declared")? != 0,
                    },
                    done: r.try_get::<i64, _>("done")? != 0,
                    header: r.try_get("header")?,
                    backend_upload_id: r.try_get("backend_upload_id")?,
                    parts_done: convert::get_uint::<u32>(r, "parts_done")?,
                    hash_state: r.try_get("hash_state")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(UploadSession {
            id: s.try_get("id")?,
            model_id: s.try_get("model_id")?,
            created_by: s.try_get("created_by")?,
            message: s.try_get("message")?,
            expires_at: s.try_get("expires_at")?,
            derived_from: s
                .try_get::<Option<String>, _>("derived_from")?
                .map(|c| CommitId::parse(&c))
                .transpose()
                .map_err(corrupt)?,
            files,
        }))
    }

    /// Records that one file of an upload is stored, with its object and the digest of the
    /// bytes received (and, for a small file, the Git blob id of its plaintext, computed while
    /// it streamed in). No audit entry: the
    /// upload's commit records every file; an object of an abandoned upload is found through
    /// its session and removed when the session expires.
    pub async fn upload_file_done(
        &self,
        upload_id: &str,
        idx: usize,
        model_id: &str,
        file: &FileRecord,
        stored_size: u64,
        git_blob_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO objects (id, model_id, size, sha256, stored_size, created_at, git_blob_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(file.object_id.as_str())
        .bind(model_id)
        .bind(convert::db_int(file.size)?)
        .bind(file.sha256.as_str())
        .bind(convert::db_int(stored_size)?)
        .bind(self.clock.now())
        .bind(git_blob_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE upload_files SET done = 1, sha256 = $1 WHERE session_id = $2 AND idx = $3",
        )
        .bind(file.sha256.as_str())
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .execute(&mut *tx)
        .await?;
        forget_parts(&mut tx, upload_id, idx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The open session of this user for this exact manifest, if any: running the same upload
    /// again continues it.
    pub async fn find_upload(
        &self,
        model_id: &str,
        created_by: &str,
        manifest_digest: &str,
        now: i64,
    ) -> Result<Option<UploadSession>> {
        let row = sqlx::query(
            "SELECT id FROM upload_sessions WHERE model_id = $1 AND created_by = $2 \
             AND manifest_digest = $3 AND expires_at > $4 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(model_id)
        .bind(created_by)
        .bind(manifest_digest)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => self.upload(&r.try_get::<String, _>("id")?).await,
            None => Ok(None),
        }
    }

    /// Fixes (or, after a refused attempt, replaces) the header and backend upload of one file,
    /// forgetting any parts stored before.
    pub async fn start_file_upload(
        &self,
        upload_id: &str,
        idx: usize,
        header: Option<&[u8]>,
        backend_upload_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE upload_files SET header = $1, backend_upload_id = $2, parts_done = 0, hash_state = NULL \
             WHERE session_id = $3 AND idx = $4",
        )
        .bind(header.map(<[u8]>::to_vec))
        .bind(backend_upload_id)
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .execute(&mut *tx)
        .await?;
        forget_parts(&mut tx, upload_id, idx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the nonces of part `part_number` of file `idx` for the plaintext whose running
    /// SHA-256 (from the file's first byte to the part's end) is `prefix_sha256`, before the
    /// sealed part goes to storage. True when the claim is new or the same as before; false
    /// when the part was sealed before for other plaintext: storing it would reuse nonces.
    pub async fn claim_sealed_part(
        &self,
        upload_id: &str,
        idx: usize,
        part_number: u32,
        prefix_sha256: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO upload_sealed_parts (session_id, idx, part_number, prefix_sha256) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, idx, part_number) DO NOTHING",
        )
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .bind(i64::from(part_number))
        .bind(prefix_sha256)
        .execute(&mut *tx)
        .await?;
        let claimed: String = sqlx::query(
            "SELECT prefix_sha256 FROM upload_sealed_parts \
             WHERE session_id = $1 AND idx = $2 AND part_number = $3",
        )
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .bind(i64::from(part_number))
        .fetch_one(&mut *tx)
        .await?
        .try_get("prefix_sha256")?;
        tx.commit().await?;
        Ok(claimed == prefix_sha256)
    }

    /// Records a stored part, and how far the durable prefix of the file now reaches.
    pub async fn record_part(
        &self,
        upload_id: &str,
        idx: usize,
        part: &StoredPart,
        parts_done: u32,
        hash_state: Option<&[u8]>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM upload_parts WHERE session_id = $1 AND idx = $2 AND part_number = $3",
        )
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .bind(convert::db_int(part.part_number)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO upload_parts (session_id, idx, part_number, etag, size) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .bind(convert::db_int(part.part_number)?)
        .bind(&part.etag)
        .bind(convert::db_int(part.size)?)
        .execute(&mut *tx)
        .await?;
        if let Some(state) = hash_state {
            sqlx::query(
                "UPDATE upload_files SET parts_done = $1, hash_state = $2 WHERE session_id = $3 AND idx = $4",
            )
            .bind(convert::db_int(parts_done)?)
            .bind(state.to_vec())
            .bind(upload_id)
            .bind(convert::db_int(idx)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Recorded parts of one file, by part number.
    pub async fn stored_parts(&self, upload_id: &str, idx: usize) -> Result<Vec<StoredPart>> {
        let rows = sqlx::query(
            "SELECT part_number, etag, size FROM upload_parts WHERE session_id = $1 AND idx = $2 ORDER BY part_number",
        )
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredPart {
                    part_number: convert::get_uint::<u32>(r, "part_number")?,
                    etag: r.try_get("etag")?,
                    size: convert::get_uint::<u64>(r, "size")?,
                })
            })
            .collect()
    }

    /// Sessions whose time is up.
    pub async fn expired_uploads(&self, now: i64) -> Result<Vec<UploadSession>> {
        let rows = sqlx::query(
            "SELECT id FROM upload_sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(s) = self.upload(&r.try_get::<String, _>("id")?).await? {
                sessions.push(s);
            }
        }
        Ok(sessions)
    }

    /// Ends a session now, refused at its commit: the sweep removes what it stored.
    pub async fn expire_upload(&self, id: &str, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE upload_sessions SET expires_at = $1 WHERE id = $2")
            .bind(self.clock.now())
            .bind(id)
            .execute(tx.conn())
            .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// Forgets an abandoned session and the objects of its finished files (whose storage the
    /// caller has already removed).
    pub async fn drop_upload(&self, upload: &UploadSession, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        for f in upload.files.iter().filter(|f| f.done) {
            // An object a Hub commit took into a revision stays (`hub_uploads.rs`).
            sqlx::query(
                "DELETE FROM objects WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM revision_files WHERE object_id = $1)",
            )
            .bind(f.file.object_id.as_str())
            .execute(tx.conn())
            .await?;
        }
        delete_upload_rows(tx.conn(), &upload.id).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// Turns a finished upload into an immutable revision and closes the session.
    pub async fn commit_upload(
        &self,
        upload: &UploadSession,
        commit: &CommitId,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let seq: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM revisions WHERE model_id = $1")
                .bind(&upload.model_id)
                .fetch_one(tx.conn())
                .await?
                .try_get("n")?;
        sqlx::query(
            "INSERT INTO revisions (commit_id, model_id, seq, message, created_by, created_at, derived_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(commit.as_str())
        .bind(&upload.model_id)
        .bind(seq)
        .bind(&upload.message)
        .bind(&upload.created_by)
        .bind(self.clock.now())
        .bind(upload.derived_from.as_ref().map(CommitId::as_str))
        .execute(tx.conn())
        .await?;
        for f in &upload.files {
            // Every file is stored by now, so its digest is known; the caller checked.
            let sha256 = f.file.sha256.as_ref().ok_or_else(|| {
                StoreError::Conflict(format!(
                    "{} of upload {} is not stored",
                    f.file.path, upload.id
                ))
            })?;
            sqlx::query(
                "INSERT INTO revision_files (commit_id, path, object_id, size, sha256) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(commit.as_str())
            .bind(f.file.path.as_str())
            .bind(f.file.object_id.as_str())
            .bind(convert::db_int(f.file.size)?)
            .bind(sha256.as_str())
            .execute(tx.conn())
            .await?;
        }
        delete_upload_rows(tx.conn(), &upload.id).await?;
        tx.commit(entry).await?;
        Ok(())
    }
}

/// Inserts a new session and its files in `tx`, refusing when the creator has as many open
/// as one may.
pub(crate) async fn insert_upload(
    tx: &mut AuditedTx,
    now: i64,
    upload: &NewUpload<'_>,
    derived_from: Option<&CommitId>,
) -> Result<()> {
    // Counted inside the transaction: its first write (the audit head) orders it after
    // every other writer, so concurrent beginnings cannot both pass the cap.
    let open = sqlx::query(
        "SELECT COUNT(*) AS open, MIN(expires_at) AS next_expiry FROM upload_sessions \
         WHERE created_by = $1 AND expires_at > $2",
    )
    .bind(upload.created_by)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    let count = convert::get_uint(&open, "open")?;
    if count >= upload.max_open_by_creator {
        let next_expiry: Option<i64> = open.try_get("next_expiry")?;
        return Err(StoreError::TooManyUploads {
            open: count,
            next_expiry: next_expiry.unwrap_or(0),
        });
    }
    sqlx::query(
        "INSERT INTO upload_sessions (id, model_id, created_by, message, created_at, expires_at, manifest_digest, derived_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(upload.id)
    .bind(upload.model_id)
    .bind(upload.created_by)
    .bind(upload.message)
    .bind(now)
    .bind(upload.expires_at)
    .bind(upload.manifest_digest)
    .bind(derived_from.map(CommitId::as_str))
    .execute(tx.conn())
    .await?;
    for (idx, f) in upload.files.iter().enumerate() {
        sqlx::query(
            "INSERT INTO upload_files (session_id, idx, path, size, sha256, object_id, done, declared) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(upload.id)
        .bind(convert::db_int(idx)?)
        .bind(f.path.as_str())
        .bind(convert::db_int(f.size)?)
        .bind(f.sha256.as_ref().map_or("", Sha256Hex::as_str))
        .bind(f.object_id.as_str())
        .bind(i64::from(f.declared))
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Forgets the stored parts of one file of a session and their nonce claims: the file is
/// done, or starts over under a new header.
async fn forget_parts(conn: &mut sqlx::AnyConnection, upload_id: &str, idx: usize) -> Result<()> {
    for table in ["upload_parts", "upload_sealed_parts"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE session_id = $1 AND idx = $2"
        ))
        .bind(upload_id)
        .bind(convert::db_int(idx)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn delete_upload_rows(conn: &mut sqlx::AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM upload_sealed_parts WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM hub_lfs_sessions WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM upload_parts WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM upload_files WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
