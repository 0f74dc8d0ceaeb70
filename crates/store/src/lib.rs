//! custody's metadata, in SQL.
//!
//! One code path for both databases: sqlx's `Any` driver, `$N` placeholders, and only the
//! column types both understand (TEXT, BIGINT, BLOB/BYTEA). SQLite is the embedded default;
//! PostgreSQL is for several stateless servers. Each has its own migrations folder under
//! `migrations/` because their DDL differs in small ways.
//!
//! The audit invariant lives here: every method that changes state takes the [`audit::Entry`]
//! that describes the change and commits it in the same transaction ([`AuditedTx`]). There is
//! no way to change state without writing its entry.
#![forbid(unsafe_code)]
// Integers from the database and from bundles are converted checked, never wrapped by `as`.
#![deny(
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation
)]

mod audit_log;
mod cluster;
mod convert;
mod copies;
mod deletion;
mod identity;
mod keys;
mod ops;
mod pending;
mod records;
mod tx;
mod users;
mod vendor_audit;
mod webhooks;
mod witnesses;

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};

pub use audit_log::StoredCheckpoint;
pub use cluster::*;
pub use copies::*;
pub use deletion::*;
pub use identity::*;
pub use ops::OpsSnapshot;
pub use pending::*;
pub use records::*;
pub use tx::AuditedTx;
pub use users::*;
pub use vendor_audit::{TaggedEntry, VendorAuditKey};
pub use webhooks::Webhook;
pub use witnesses::WitnessProgress;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed and the state allows it, but not from this person (their own
    /// request, or one about them).
    #[error("{0}")]
    Refused(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Revoking this token would leave no live operator token.
    #[error("the last live operator token may not be revoked")]
    LastOperator,
    /// The creator already has `open` upload sessions open, the most allowed; the first of
    /// them expires at `next_expiry` (Unix seconds).
    #[error("{open} upload sessions are open, the most allowed")]
    TooManyUploads { open: u64, next_expiry: i64 },
    #[error("database holds an invalid value: {0}")]
    Corrupt(String),
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("the lease {0} was taken over by another instance: this write was refused")]
    Fenced(String),
    #[error(
        "the model key was wrapped under key epoch {epoch}, but epoch {current} is current now"
    )]
    StaleEpoch { epoch: u64, current: u64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Handle to the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Group commit of stand-alone audit entries ([`Store::record`]).
    appender: std::sync::Arc<audit_log::Appender>,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// Connects and brings the schema up to date. `url` is `sqlite://PATH` or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL for concurrent readers, FULL sync so a commit is durable when it
                        // returns, a busy timeout so writers queue instead of failing.
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                             PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match dialect {
            Dialect::Sqlite => sqlx::migrate!("../../migrations/sqlite").run(&pool).await?,
            Dialect::Postgres => {
                sqlx::migrate!("../../migrations/postgres")
                    .run(&pool)
                    .await?
            }
        }
        audit_log::backfill_tree(&pool).await?;
        let store = Store {
            pool,
            dialect,
            appender: Default::default(),
        };
        store.give_vendors_audit_tag_keys().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a state-changing transaction; see [`AuditedTx`].
    pub async fn begin(&self) -> Result<AuditedTx> {
        AuditedTx::begin(&self.pool).await
    }

    /// Records an entry on its own: refusals and reads, which change no other state.
    /// Concurrent calls are group committed; each returns once its entry is durable.
    pub async fn record(&self, entry: audit::Entry) -> Result<u64> {
        self.record_grouped(entry).await
    }

    // ----- vendors -------------------------------------------------------------------------

    /// Creates a vendor with its audit tag key; the creation entry publishes the key's
    /// fingerprint (`audit::leaf::key_announcement`, appended to the entry's detail) and is
    /// the first entry tagged with it.
    pub async fn create_vendor(
        &self,
        id: &str,
        name: &VendorName,
        entry: audit::Entry,
    ) -> Result<VendorRecord> {
        let key = crypto::mac::TagKey::generate().map_err(corrupt)?;
        let mut tx = self.begin().await?;
        if vendor_by_name(tx.conn(), name).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "vendor {name} already exists"
            )));
        }
        sqlx::query(
            "INSERT INTO vendors (id, name, created_at, audit_tag_key, audit_tag_key_entry) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(name.as_str())
        .bind(now())
        .bind(key.expose_bytes().to_vec())
        .bind(convert::db_int(tx.seq())?)
        .execute(tx.conn())
        .await?;
        let entry = vendor_audit::announcing(entry, &key);
        tx.commit(entry).await?;
        Ok(VendorRecord {
            id: id.to_owned(),
            name: name.clone(),
        })
    }

    pub async fn vendor(&self, name: &VendorName) -> Result<Option<VendorRecord>> {
        let mut conn = self.pool.acquire().await?;
        vendor_by_name(&mut conn, name).await
    }

    pub async fn vendor_by_id(&self, id: &str) -> Result<Option<VendorRecord>> {
        let mut conn = self.pool.acquire().await?;
        vendor_where(&mut conn, "id", id).await
    }

    pub async fn vendors(&self) -> Result<Vec<VendorRecord>> {
        let rows = sqlx::query("SELECT id, name FROM vendors ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VendorRecord {
                    id: r.try_get("id")?,
                    name: VendorName::parse(r.try_get("name")?).map_err(corrupt)?,
                })
            })
            .collect()
    }

    // ----- models --------------------------------------------------------------------------

    pub async fn model(
        &self,
        vendor: &VendorName,
        model: &ModelName,
    ) -> Result<Option<ModelRecord>> {
        let row = sqlx::query(&format!("{MODEL_SELECT} WHERE v.name = $1 AND m.name = $2"))
            .bind(vendor.as_str())
            .bind(model.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_from_row).transpose()
    }

    pub async fn model_by_id(&self, id: &str) -> Result<Option<ModelRecord>> {
        let row = sqlx::query(&format!("{MODEL_SELECT} WHERE m.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_from_row).transpose()
    }

    pub async fn models(&self, vendor: Option<&VendorName>) -> Result<Vec<ModelRecord>> {
        let rows = match vendor {
            Some(v) => {
                sqlx::query(&format!(
                    "{MODEL_SELECT} WHERE v.name = $1 ORDER BY v.name, m.name"
                ))
                .bind(v.as_str())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{MODEL_SELECT} ORDER BY v.name, m.name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(model_from_row).collect()
    }

    /// Creates a model with its wrapped key. A concurrent creation of the same model loses
    /// with `Conflict`; the caller reads the winner's record. The key's epoch must be the
    /// current one (`StaleEpoch` otherwise: wrap again under the current epoch), read under a
    /// shared lock that a key rotation's commit waits for, so no model key is ever committed
    /// under an epoch that a committed rotation retired. (A database whose epoch ledger is
    /// still empty, as in tests of the store alone, accepts any epoch.)
    pub async fn create_model(&self, model: &NewModel<'_>, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let current = keys::current_epoch_shared(tx.conn(), self.dialect).await?;
        if current != 0 && current != model.key_epoch {
            return Err(StoreError::StaleEpoch {
                epoch: model.key_epoch,
                current,
            });
        }
        let exists = sqlx::query("SELECT id FROM models WHERE vendor_id = $1 AND name = $2")
            .bind(model.vendor_id)
            .bind(model.name.as_str())
            .fetch_optional(tx.conn())
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "model {} already exists",
                model.name
            )));
        }
        sqlx::query(
            "INSERT INTO models (id, vendor_id, name, key_epoch, wrapped_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(model.id)
        .bind(model.vendor_id)
        .bind(model.name.as_str())
        .bind(convert::db_int(model.key_epoch)?)
        .bind(model.wrapped_key.to_vec())
        .bind(now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    // ----- uploads -------------------------------------------------------------------------

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
        // Counted inside the transaction: its first write (the audit head) orders it after
        // every other writer, so concurrent beginnings cannot both pass the cap.
        let open = sqlx::query(
            "SELECT COUNT(*) AS open, MIN(expires_at) AS next_expiry FROM upload_sessions \
             WHERE created_by = $1 AND expires_at > $2",
        )
        .bind(upload.created_by)
        .bind(now())
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
        .bind(now())
        .bind(upload.expires_at)
        .bind(upload.manifest_digest)
        .bind(derived_from.map(CommitId::as_str))
        .execute(tx.conn())
        .await?;
        for (idx, f) in upload.files.iter().enumerate() {
            sqlx::query(
                "INSERT INTO upload_files (session_id, idx, path, size, sha256, object_id, done) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
            )
            .bind(upload.id)
            .bind(convert::db_int(idx)?)
            .bind(f.path.as_str())
            .bind(convert::db_int(f.size)?)
            .bind(f.sha256.as_str())
            .bind(f.object_id.as_str())
            .execute(tx.conn())
            .await?;
        }
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
            "SELECT path, size, sha256, object_id, done, header, backend_upload_id, parts_done, hash_state \
             FROM upload_files WHERE session_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let files = rows
            .iter()
            .map(|r| {
                Ok(UploadFile {
                    file: file_from_row(r)?,
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

    /// Records that one file of an upload is stored, with its object (and, for a small file,
    /// the Git blob id of its plaintext, computed while it streamed in). No audit entry: the
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
        .bind(now())
        .bind(git_blob_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE upload_files SET done = 1 WHERE session_id = $1 AND idx = $2")
            .bind(upload_id)
            .bind(convert::db_int(idx)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM upload_parts WHERE session_id = $1 AND idx = $2")
            .bind(upload_id)
            .bind(convert::db_int(idx)?)
            .execute(&mut *tx)
            .await?;
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
        sqlx::query("DELETE FROM upload_parts WHERE session_id = $1 AND idx = $2")
            .bind(upload_id)
            .bind(convert::db_int(idx)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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

    /// Forgets an abandoned session and the objects of its finished files (whose storage the
    /// caller has already removed).
    pub async fn drop_upload(&self, upload: &UploadSession, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        for f in upload.files.iter().filter(|f| f.done) {
            sqlx::query("DELETE FROM objects WHERE id = $1")
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
        .bind(now())
        .bind(upload.derived_from.as_ref().map(CommitId::as_str))
        .execute(tx.conn())
        .await?;
        for f in &upload.files {
            sqlx::query(
                "INSERT INTO revision_files (commit_id, path, object_id, size, sha256) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(commit.as_str())
            .bind(f.file.path.as_str())
            .bind(f.file.object_id.as_str())
            .bind(convert::db_int(f.file.size)?)
            .bind(f.file.sha256.as_str())
            .execute(tx.conn())
            .await?;
        }
        delete_upload_rows(tx.conn(), &upload.id).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    // ----- revisions -----------------------------------------------------------------------

    pub async fn revisions(&self, model_id: &str) -> Result<Vec<RevisionRecord>> {
        let rows = sqlx::query(&format!(
            "{REVISION_SELECT} WHERE model_id = $1 ORDER BY seq DESC"
        ))
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_from_row).collect()
    }

    pub async fn revision(
        &self,
        model_id: &str,
        commit: &CommitId,
    ) -> Result<Option<RevisionRecord>> {
        let row = sqlx::query(&format!(
            "{REVISION_SELECT} WHERE model_id = $1 AND commit_id = $2"
        ))
        .bind(model_id)
        .bind(commit.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    /// The newest revision the vendor made: what `main` and `latest` name. A derived
    /// revision (a committer's conversion, `derived_from` set) is reachable by its commit id
    /// only, so no grantee can change what everyone else gets by name.
    pub async fn latest_revision(&self, model_id: &str) -> Result<Option<RevisionRecord>> {
        let row = sqlx::query(&format!(
            "{REVISION_SELECT} WHERE model_id = $1 AND derived_from IS NULL ORDER BY seq DESC LIMIT 1"
        ))
        .bind(model_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    /// The Git blob id of a stored object's plaintext, when it was computed at upload (small
    /// files; `None` for large ones and for objects stored before ids were kept).
    pub async fn object_git_blob_id(&self, object_id: &ObjectId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT git_blob_id FROM objects WHERE id = $1")
            .bind(object_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("git_blob_id")?,
            None => None,
        })
    }

    pub async fn revision_files(&self, commit: &CommitId) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(
            "SELECT path, size, sha256, object_id FROM revision_files WHERE commit_id = $1 ORDER BY path",
        )
        .bind(commit.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    pub async fn revision_file(
        &self,
        commit: &CommitId,
        path: &RepoPath,
    ) -> Result<Option<FileRecord>> {
        let row = sqlx::query(
            "SELECT path, size, sha256, object_id FROM revision_files WHERE commit_id = $1 AND path = $2",
        )
        .bind(commit.as_str())
        .bind(path.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    // ----- audit ---------------------------------------------------------------------------

    /// Entries with `from <= seq < to`, as stored bytes.
    pub async fn audit_entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT seq, entry FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq",
        )
        .bind(convert::db_int(from)?)
        .bind(convert::db_int(to)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((convert::get_uint::<u64>(r, "seq")?, r.try_get("entry")?)))
            .collect()
    }
}

const MODEL_SELECT: &str = "SELECT m.id, m.vendor_id, v.name AS vendor, m.name, m.key_epoch, m.wrapped_key, \
     m.deleted_at, m.deletion_id, m.delete_after \
     FROM models m JOIN vendors v ON v.id = m.vendor_id";

const REVISION_SELECT: &str =
    "SELECT commit_id, model_id, seq, message, created_by, created_at, derived_from FROM revisions";

async fn vendor_by_name(
    conn: &mut sqlx::AnyConnection,
    name: &VendorName,
) -> Result<Option<VendorRecord>> {
    vendor_where(conn, "name", name.as_str()).await
}

/// The vendor whose `column` (`id` or `name`, fixed strings only) equals `value`.
async fn vendor_where(
    conn: &mut sqlx::AnyConnection,
    column: &'static str,
    value: &str,
) -> Result<Option<VendorRecord>> {
    let row = sqlx::query(&format!("SELECT id, name FROM vendors WHERE {column} = $1"))
        .bind(value)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(VendorRecord {
            id: r.try_get("id")?,
            name: VendorName::parse(r.try_get("name")?).map_err(corrupt)?,
        })
    })
    .transpose()
}

async fn delete_upload_rows(conn: &mut sqlx::AnyConnection, id: &str) -> Result<()> {
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

fn model_from_row(r: &sqlx::any::AnyRow) -> Result<ModelRecord> {
    Ok(ModelRecord {
        id: r.try_get("id")?,
        vendor_id: r.try_get("vendor_id")?,
        vendor: VendorName::parse(r.try_get("vendor")?).map_err(corrupt)?,
        name: ModelName::parse(r.try_get("name")?).map_err(corrupt)?,
        key_epoch: convert::get_uint::<u64>(r, "key_epoch")?,
        wrapped_key: r.try_get("wrapped_key")?,
        deleted_at: r.try_get("deleted_at")?,
        deletion_id: r.try_get("deletion_id")?,
        delete_after: r.try_get("delete_after")?,
    })
}

fn revision_from_row(r: &sqlx::any::AnyRow) -> Result<RevisionRecord> {
    Ok(RevisionRecord {
        commit: CommitId::parse(r.try_get("commit_id")?).map_err(corrupt)?,
        model_id: r.try_get("model_id")?,
        seq: convert::get_uint::<u64>(r, "seq")?,
        message: r.try_get("message")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        derived_from: r
            .try_get::<Option<String>, _>("derived_from")?
            .map(|c| CommitId::parse(&c))
            .transpose()
            .map_err(corrupt)?,
    })
}

fn file_from_row(r: &sqlx::any::AnyRow) -> Result<FileRecord> {
    Ok(FileRecord {
        path: RepoPath::parse(r.try_get("path")?).map_err(corrupt)?,
        object_id: ObjectId::parse(r.try_get("object_id")?).map_err(corrupt)?,
        size: convert::get_uint::<u64>(r, "size")?,
        sha256: Sha256Hex::parse(r.try_get("sha256")?).map_err(corrupt)?,
    })
}
