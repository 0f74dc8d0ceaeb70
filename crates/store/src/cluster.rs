//! What several instances on one database coordinate through it: leases for singleton work
//! (with fencing tokens), short exclusive sections (first start, signing a checkpoint), and the
//! service identity's pinned fingerprints.
//!
//! Leases are rows, timed by the database's clock (never an instance's): a holder renews
//! before the lease expires; once it has expired, any instance may take it, which increments
//! its token. Work done under a lease passes its [`Fence`] to every write, and the write
//! commits only while the token is unchanged ([`crate::keys::check_fence`]). Leases are
//! coordination bookkeeping, like an upload's progress: taking or renewing one writes no audit
//! entry (the work done under it does).
//!
//! Exclusive sections hold a PostgreSQL transaction-level advisory lock in a transaction of
//! their own, released when the guard is dropped (the transaction rolls back), or when the
//! holder's connection dies. On SQLite, one instance runs (the server holds a lock file), so
//! the sections only need the caller's in-process locking.

use sqlx::{Any, Row, Transaction};

use crate::{Dialect, Result, Store, StoreError};

pub use shred::Fence;

/// Advisory lock keys (arbitrary, fixed): `custody` in ASCII, then a number per section.
const INIT_LOCK: i64 = 0x6375_7374_6f64_0001;
const SIGNING_LOCK: i64 = 0x6375_7374_6f64_0002;

/// The database clock in milliseconds since the Unix epoch.
fn now_ms_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// Who holds a lease, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub name: String,
    /// Empty when never taken.
    pub holder: String,
    pub token: i64,
    /// Milliseconds until it expires (negative: expired).
    pub expires_in_ms: i64,
}

/// Held while an exclusive section runs; dropping it releases the section.
pub struct ExclusiveSection {
    _tx: Option<Transaction<'static, Any>>,
}

/// One pinned fingerprint of the service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedIdentity {
    /// What is pinned: `tls-certificate`, `host-ca`, `audit-log-key`, `service-signing-key`.
    pub kind: String,
    pub fingerprint: String,
}

/// What [`Store::pin_identity`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinMismatch {
    /// `kind` is pinned to `pinned`, but this instance has `found`.
    Differs {
        kind: String,
        pinned: String,
        found: String,
    },
}

impl Store {
    /// Takes lease `name` for `holder` for `ttl_ms` when it is free or expired; returns its
    /// fence. `None`: another instance holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Fence>> {
        let now = now_ms_sql(self.dialect);
        // Inserted on first use; an existing row is left alone.
        sqlx::query(
            "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, '', 0, 0) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "UPDATE leases SET holder = $1, token = token + 1, expires_at = {now} + $2 \
             WHERE name = $3 AND expires_at < {now} RETURNING token"
        ))
        .bind(holder)
        .bind(ttl_ms)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Fence {
                lease: name.to_owned(),
                token: r.try_get("token")?,
            })
        })
        .transpose()
    }

    /// Extends a lease this holder still holds at `fence`'s token. False: it was taken over.
    pub async fn renew_lease(&self, fence: &Fence, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms_sql(self.dialect);
        let done = sqlx::query(&format!(
            "UPDATE leases SET expires_at = {now} + $1 \
             WHERE name = $2 AND holder = $3 AND token = $4"
        ))
        .bind(ttl_ms)
        .bind(&fence.lease)
        .bind(holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up (on shutdown), so another instance need not wait for it to expire.
    pub async fn release_lease(&self, fence: &Fence, holder: &str) -> Result<()> {
        sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3",
        )
        .bind(&fence.lease)
        .bind(holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees every lease. Only for a database that one process can use at a time (SQLite
    /// under the server's lock file): whoever held a lease before is dead.
    pub async fn expire_all_leases(&self) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every lease and its holder (for status and tests).
    pub async fn leases(&self) -> Result<Vec<LeaseState>> {
        let rows = sqlx::query(&format!(
            "SELECT name, holder, token, expires_at - {} AS left_ms FROM leases ORDER BY name",
            now_ms_sql(self.dialect)
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseState {
                    name: r.try_get("name")?,
                    holder: r.try_get("holder")?,
                    token: r.try_get("token")?,
                    expires_in_ms: r.try_get("left_ms")?,
                })
            })
            .collect()
    }

    async fn exclusive(&self, key: i64) -> Result<ExclusiveSection> {
        match self.dialect {
            Dialect::Sqlite => Ok(ExclusiveSection { _tx: None }),
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                Ok(ExclusiveSection { _tx: Some(tx) })
            }
        }
    }

    /// One instance at a time initialises an installation (identity pins, the first key
    /// epoch, the bootstrap token).
    pub async fn initialisation_section(&self) -> Result<ExclusiveSection> {
        self.exclusive(INIT_LOCK).await
    }

    /// One instance at a time signs an audit checkpoint.
    pub async fn signing_section(&self) -> Result<ExclusiveSection> {
        self.exclusive(SIGNING_LOCK).await
    }

    /// Whether anything was ever recorded in this database: an audit entry, a token or a
    /// pinned identity. A non-empty database never gets a freshly made identity or key store.
    pub async fn is_in_use(&self) -> Result<bool> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM service_identity) + (SELECT COUNT(*) FROM tokens) \
             + (SELECT next_seq FROM audit_head WHERE id = 1) AS n",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The pinned identity fingerprints.
    pub async fn pinned_identity(&self) -> Result<Vec<PinnedIdentity>> {
        let rows = sqlx::query("SELECT kind, fingerprint FROM service_identity ORDER BY kind")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PinnedIdentity {
                    kind: r.try_get("kind")?,
                    fingerprint: r.try_get("fingerprint")?,
                })
            })
            .collect()
    }

    /// Compares this instance's identity with the pinned one; pins what is not pinned yet (the
    /// first start, or a kind added by an upgrade), with an audit entry. Any difference is
    /// returned and nothing is written.
    pub async fn pin_identity(&self, identity: &[PinnedIdentity]) -> Result<Vec<PinMismatch>> {
        let pinned = self.pinned_identity().await?;
        let mut mismatches = Vec::new();
        let mut new = Vec::new();
        for mine in identity {
            match pinned.iter().find(|p| p.kind == mine.kind) {
                Some(p) if p.fingerprint != mine.fingerprint => {
                    mismatches.push(PinMismatch::Differs {
                        kind: mine.kind.clone(),
                        pinned: p.fingerprint.clone(),
                        found: mine.fingerprint.clone(),
                    })
                }
                Some(_) => {}
                None => new.push(mine),
            }
        }
        if !mismatches.is_empty() || new.is_empty() {
            return Ok(mismatches);
        }
        let mut tx = self.begin().await?;
        for p in &new {
            let exists = sqlx::query("SELECT fingerprint FROM service_identity WHERE kind = $1")
                .bind(&p.kind)
                .fetch_optional(tx.conn())
                .await?;
            if let Some(row) = exists {
                // Pinned by another instance meanwhile.
                let fingerprint: String = row.try_get("fingerprint")?;
                if fingerprint != p.fingerprint {
                    return Ok(vec![PinMismatch::Differs {
                        kind: p.kind.clone(),
                        pinned: fingerprint,
                        found: p.fingerprint.clone(),
                    }]);
                }
                continue;
            }
            sqlx::query(
                "INSERT INTO service_identity (kind, fingerprint, pinned_at) VALUES ($1, $2, $3)",
            )
            .bind(&p.kind)
            .bind(&p.fingerprint)
            .bind(self.clock.now())
            .execute(tx.conn())
            .await?;
        }
        let detail = new
            .iter()
            .map(|p| format!("{} {}", p.kind, p.fingerprint))
            .collect::<Vec<_>>()
            .join("; ");
        tx.commit(
            audit::Entry::new("system", "service.identity.pin", "service").with_detail(detail),
        )
        .await?;
        Ok(Vec::new())
    }

    /// Records that a deletion step failed: how often, why, and when to try again. Fenced by
    /// the deletion runner's lease; no audit entry (the deletion's state did not change; the
    /// failure is logged and shown in the deletion's status).
    pub async fn deletion_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: i64,
        fence: Option<&Fence>,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // The write first: on SQLite it takes the write lock before any read (a read
        // transaction cannot be upgraded safely under concurrency). The fence is checked in
        // the same transaction; a stale holder's change is rolled back.
        let row = sqlx::query(
            "UPDATE deletions SET attempts = attempts + 1, last_error = $1, retry_at = $2 \
             WHERE id = $3 RETURNING attempts",
        )
        .bind(error)
        .bind(retry_at)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("deletion"))?;
        crate::keys::check_fence(&mut tx, self.dialect, fence).await?;
        let attempts: i64 = row.try_get("attempts")?;
        tx.commit().await?;
        Ok(attempts)
    }
}

impl PinMismatch {
    pub fn describe(&self) -> String {
        match self {
            PinMismatch::Differs {
                kind,
                pinned,
                found,
            } => format!(
                "{kind}: this instance has {found}, but the database belongs to a service whose \
                 {kind} is {pinned}"
            ),
        }
    }
}
