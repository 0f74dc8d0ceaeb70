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
mod budgets;
mod clock;
mod cluster;
mod convert;
mod copies;
mod deletion;
mod facts;
mod hub_uploads;
mod identity;
mod keys;
mod ops;
mod pending;
mod records;
mod tx;
mod uploads;
mod users;
mod vendor_audit;
mod webhooks;
mod witnesses;

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};

pub use audit_log::StoredCheckpoint;
pub use budgets::*;
pub use clock::Clock;
pub use cluster::*;
pub use copies::*;
pub use deletion::*;
pub use facts::*;
pub use hub_uploads::*;
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
    /// The time every decision reads ([`Clock`]); shared with the server.
    clock: Clock,
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
            clock: Clock::system(),
        };
        store.give_vendors_audit_tag_keys().await?;
        Ok(store)
    }

    /// The clock of every time-dependent decision; clones share it.
    pub fn clock(&self) -> &Clock {
        &self.clock
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
        .bind(self.clock.now())
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
        .bind(self.clock.now())
        .execute(tx.conn())
        .await?;
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
