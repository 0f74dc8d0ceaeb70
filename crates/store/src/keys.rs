//! The key hierarchy's epoch ledger ([`shred::EpochLedger`]) in SQL, and the fences around it.
//!
//! `key_head` is one row: the current epoch and a generation counter that every ledger change
//! increments (instances compare it before each use of their cached epoch keys).
//! `key_epochs` holds one row per epoch: its root's name and its key wrapped under that root.
//!
//! Fencing, in the database's own transactions:
//! - a model key is committed ([`Store::create_model`]) only while its epoch is current: the
//!   creating transaction reads `key_head` `FOR SHARE` (PostgreSQL), a rotation commit takes
//!   it `FOR UPDATE`, so they exclude each other and a committed rotation is always seen;
//! - every write a lease holder makes checks the lease's token in the same transaction
//!   ([`check_fence`]): a holder that lost its lease writes nothing;
//! - an epoch that still wraps the key of a model not under deletion cannot start being
//!   destroyed.
//!
//! On SQLite the first statement of every audited transaction takes the database's write lock,
//! which orders all of this as well (and SQLite runs one instance only).

use shred::{
    EpochLedger, EpochRecord, EpochState, Fence, KeyError, LedgerState, RootKind, RootRef,
};
use sqlx::Row;

use crate::convert::{db_int, get_uint};
use crate::{Dialect, Result, Store, StoreError, corrupt};

/// ` FOR SHARE` on PostgreSQL; SQLite has no row locks (its write lock orders writers).
pub(crate) fn for_share(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => " FOR SHARE",
        Dialect::Sqlite => "",
    }
}

pub(crate) fn for_update(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    }
}

/// Refuses unless `fence`'s lease is still held at its token; the row stays locked (shared)
/// until the caller's transaction ends, so a takeover waits for this write to finish.
pub(crate) async fn check_fence(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    fence: Option<&Fence>,
) -> Result<()> {
    let Some(fence) = fence else { return Ok(()) };
    let row = sqlx::query(&format!(
        "SELECT token FROM leases WHERE name = $1{}",
        for_share(dialect)
    ))
    .bind(&fence.lease)
    .fetch_optional(conn)
    .await?;
    let token: Option<i64> = row.map(|r| r.try_get("token")).transpose()?;
    if token != Some(fence.token) {
        return Err(StoreError::Fenced(fence.lease.clone()));
    }
    Ok(())
}

/// The current epoch (0: none yet), read with a shared lock on `key_head`.
pub(crate) async fn current_epoch_shared(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<u64> {
    let row = sqlx::query(&format!(
        "SELECT current_epoch FROM key_head WHERE id = 1{}",
        for_share(dialect)
    ))
    .fetch_one(conn)
    .await?;
    get_uint::<u64>(&row, "current_epoch")
}

async fn bump_generation(conn: &mut sqlx::AnyConnection) -> Result<()> {
    sqlx::query("UPDATE key_head SET generation = generation + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

fn ledger_error(e: StoreError) -> KeyError {
    match e {
        StoreError::Fenced(lease) => KeyError::Fenced(lease),
        other => KeyError::Ledger(other.to_string()),
    }
}

fn entry(action: &str, detail: String) -> audit::Entry {
    audit::Entry::new("system", action, "keys").with_detail(detail)
}

fn record_from_row(r: &sqlx::any::AnyRow) -> Result<EpochRecord> {
    let epoch = get_uint::<u64>(r, "epoch")?;
    let kind: String = r.try_get("root_kind")?;
    let root_kind = match kind.as_str() {
        "file" => RootKind::File,
        "aws-kms" => RootKind::Kms,
        "pkcs11" => RootKind::Pkcs11,
        other => return Err(corrupt(format!("epoch {epoch}: root kind {other:?}"))),
    };
    let state: String = r.try_get("state")?;
    let state = EpochState::parse(&state)
        .ok_or_else(|| corrupt(format!("epoch {epoch}: state {state:?}")))?;
    let root = r
        .try_get::<Option<String>, _>("root")?
        .map(|name| RootRef::new(&name).ok_or_else(|| corrupt(format!("epoch {epoch}: root name"))))
        .transpose()?;
    Ok(EpochRecord {
        epoch,
        root_kind,
        attempt: r.try_get("attempt")?,
        root,
        wrapped: r.try_get("wrapped_key")?,
        state,
    })
}

impl Store {
    async fn ledger_generation(&self) -> Result<u64> {
        let row = sqlx::query("SELECT generation FROM key_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        get_uint::<u64>(&row, "generation")
    }

    async fn ledger_head(&self) -> Result<(u64, u64)> {
        let row = sqlx::query("SELECT current_epoch, generation FROM key_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((
            get_uint::<u64>(&row, "current_epoch")?,
            get_uint::<u64>(&row, "generation")?,
        ))
    }

    async fn ledger_load(&self) -> Result<LedgerState> {
        // Head, records, head again: a change in between (generation moved) reads again, so
        // the records always belong to the generation returned.
        loop {
            let (current, generation) = self.ledger_head().await?;
            let rows = sqlx::query(
                "SELECT epoch, root_kind, attempt, root, wrapped_key, state FROM key_epochs \
                 ORDER BY epoch",
            )
            .fetch_all(&self.pool)
            .await?;
            let records = rows
                .iter()
                .map(record_from_row)
                .collect::<Result<Vec<_>>>()?;
            if self.ledger_head().await? == (current, generation) {
                return Ok(LedgerState {
                    generation,
                    current,
                    records,
                });
            }
        }
    }

    /// Whether the ledger holds no epoch at all (a new installation, or one from before the
    /// ledger whose key store has not been imported yet).
    pub async fn key_ledger_is_empty(&self) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM key_epochs")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? == 0)
    }

    /// Models whose key is not erased (any state): when there are some and the ledger is
    /// empty, their epoch keys are lost and no new hierarchy may stand in for them.
    pub async fn models_with_keys(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM models")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    async fn ledger_begin(
        &self,
        epoch: u64,
        kind: RootKind,
        attempt: &str,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        let run = async {
            let mut tx = self.begin().await?;
            check_fence(tx.conn(), self.dialect, fence).await?;
            let exists = sqlx::query("SELECT epoch FROM key_epochs WHERE epoch = $1")
                .bind(db_int(epoch)?)
                .fetch_optional(tx.conn())
                .await?;
            if exists.is_some() {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO key_epochs (epoch, root_kind, attempt, state, created_at) \
                 VALUES ($1, $2, $3, 'creating', $4)",
            )
            .bind(db_int(epoch)?)
            .bind(kind.as_str())
            .bind(attempt)
            .bind(self.clock.now())
            .execute(tx.conn())
            .await?;
            bump_generation(tx.conn()).await?;
            tx.commit(entry(
                "key.epoch.begin",
                format!("creating key epoch {epoch} (root: {kind}, attempt {attempt})"),
            ))
            .await?;
            Ok::<_, StoreError>(true)
        };
        match run.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(KeyError::EpochTaken(epoch)),
            Err(e) => Err(ledger_error(e)),
        }
    }

    /// Ends a ledger change: exactly one `key_epochs` row must have changed; bumps the
    /// generation and commits with `audit`.
    async fn finish_change(
        mut tx: crate::AuditedTx,
        changed: u64,
        what: &str,
        audit: audit::Entry,
    ) -> Result<()> {
        if changed != 1 {
            return Err(StoreError::Conflict(what.to_owned()));
        }
        bump_generation(tx.conn()).await?;
        tx.commit(audit).await?;
        Ok(())
    }

    async fn ledger_record_root(
        &self,
        epoch: u64,
        attempt: &str,
        root: &RootRef,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        let changed = sqlx::query(
            "UPDATE key_epochs SET root = $1 WHERE epoch = $2 AND attempt = $3 \
             AND state = 'creating' AND root IS NULL",
        )
        .bind(root.as_str())
        .bind(db_int(epoch)?)
        .bind(attempt)
        .execute(tx.conn())
        .await?
        .rows_affected();
        Self::finish_change(
            tx,
            changed,
            "no such epoch being created",
            entry("key.epoch.root", format!("key epoch {epoch}: root {root}")),
        )
        .await
    }

    async fn ledger_discard(&self, epoch: u64, attempt: &str, fence: Option<&Fence>) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        let changed = sqlx::query(
            "DELETE FROM key_epochs WHERE epoch = $1 AND attempt = $2 AND state = 'creating'",
        )
        .bind(db_int(epoch)?)
        .bind(attempt)
        .execute(tx.conn())
        .await?
        .rows_affected();
        Self::finish_change(
            tx,
            changed,
            "no such epoch being created",
            entry(
                "key.epoch.discard",
                format!("key epoch {epoch}: unfinished attempt {attempt} discarded"),
            ),
        )
        .await
    }

    async fn ledger_finish_destroy(&self, epoch: u64, fence: Option<&Fence>) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        let changed = sqlx::query(
            "UPDATE key_epochs SET state = 'destroyed', wrapped_key = NULL, destroyed_at = $1 \
             WHERE epoch = $2 AND state = 'destroying'",
        )
        .bind(self.clock.now())
        .bind(db_int(epoch)?)
        .execute(tx.conn())
        .await?
        .rows_affected();
        Self::finish_change(
            tx,
            changed,
            "the epoch is not being destroyed",
            entry(
                "key.epoch.destroy",
                format!("key epoch {epoch} destroyed: root destroyed, wrapped key erased"),
            ),
        )
        .await
    }

    async fn ledger_commit(
        &self,
        epoch: u64,
        attempt: &str,
        wrapped: &[u8],
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        // Excludes model-key commits (they read this row FOR SHARE) until this one is done.
        let row = sqlx::query(&format!(
            "SELECT current_epoch FROM key_head WHERE id = 1{}",
            for_update(self.dialect)
        ))
        .fetch_one(tx.conn())
        .await?;
        let current = get_uint::<u64>(&row, "current_epoch")?;
        if current + 1 != epoch {
            return Err(StoreError::Conflict(format!(
                "cannot commit key epoch {epoch}: the current epoch is {current}"
            )));
        }
        let done = sqlx::query(
            "UPDATE key_epochs SET state = 'live', wrapped_key = $1 WHERE epoch = $2 \
             AND attempt = $3 AND state = 'creating' AND root IS NOT NULL",
        )
        .bind(wrapped.to_vec())
        .bind(db_int(epoch)?)
        .bind(attempt)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "key epoch {epoch} attempt {attempt} is not being created"
            )));
        }
        sqlx::query(
            "UPDATE key_head SET current_epoch = $1, generation = generation + 1 WHERE id = 1",
        )
        .bind(db_int(epoch)?)
        .execute(tx.conn())
        .await?;
        tx.commit(entry(
            "key.epoch.commit",
            format!("key epoch {epoch} is current"),
        ))
        .await?;
        Ok(())
    }

    async fn ledger_begin_destroy(&self, epoch: u64, fence: Option<&Fence>) -> Result<()> {
        let mut tx = self.begin().await?;
        check_fence(tx.conn(), self.dialect, fence).await?;
        let row = sqlx::query(&format!(
            "SELECT current_epoch FROM key_head WHERE id = 1{}",
            for_update(self.dialect)
        ))
        .fetch_one(tx.conn())
        .await?;
        let current = get_uint::<u64>(&row, "current_epoch")?;
        if epoch >= current {
            return Err(StoreError::Conflict(format!(
                "key epoch {epoch} cannot be destroyed: the current epoch is {current}"
            )));
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM models WHERE deleted_at IS NULL AND key_epoch = $1",
        )
        .bind(db_int(epoch)?)
        .fetch_one(tx.conn())
        .await?;
        let live: i64 = row.try_get("n")?;
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "key epoch {epoch} still wraps the keys of {live} models that are not being \
                 deleted: refusing to destroy it"
            )));
        }
        let done = sqlx::query(
            "UPDATE key_epochs SET state = 'destroying' WHERE epoch = $1 AND state = 'live'",
        )
        .bind(db_int(epoch)?)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "key epoch {epoch} is not live"
            )));
        }
        bump_generation(tx.conn()).await?;
        tx.commit(entry(
            "key.epoch.destroy.begin",
            format!("key epoch {epoch} retired: destroying its root"),
        ))
        .await?;
        Ok(())
    }

    async fn ledger_import(&self, records: &[EpochRecord], current: u64) -> Result<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT current_epoch FROM key_head WHERE id = 1{}",
            for_update(self.dialect)
        ))
        .fetch_one(tx.conn())
        .await?;
        let n = sqlx::query("SELECT COUNT(*) AS n FROM key_epochs")
            .fetch_one(tx.conn())
            .await?
            .try_get::<i64, _>("n")?;
        if row.try_get::<i64, _>("current_epoch")? != 0 || n != 0 {
            return Err(StoreError::Conflict(
                "the epoch ledger is not empty: nothing to import into".into(),
            ));
        }
        for r in records {
            sqlx::query(
                "INSERT INTO key_epochs (epoch, root_kind, attempt, root, wrapped_key, state, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(db_int(r.epoch)?)
            .bind(r.root_kind.as_str())
            .bind(&r.attempt)
            .bind(r.root.as_ref().map(|root| root.as_str().to_owned()))
            .bind(r.wrapped.clone())
            .bind(r.state.as_str())
            .bind(self.clock.now())
            .execute(tx.conn())
            .await?;
        }
        sqlx::query(
            "UPDATE key_head SET current_epoch = $1, generation = generation + 1 WHERE id = 1",
        )
        .bind(db_int(current)?)
        .execute(tx.conn())
        .await?;
        tx.commit(entry(
            "key.epoch.import",
            format!(
                "{} epochs imported from a key store directory; current epoch {current}",
                records.len()
            ),
        ))
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl EpochLedger for Store {
    async fn generation(&self) -> std::result::Result<u64, KeyError> {
        self.ledger_generation().await.map_err(ledger_error)
    }

    async fn load(&self) -> std::result::Result<LedgerState, KeyError> {
        self.ledger_load().await.map_err(ledger_error)
    }

    async fn begin_epoch(
        &self,
        epoch: u64,
        kind: RootKind,
        attempt: &str,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_begin(epoch, kind, attempt, fence).await
    }

    async fn record_root(
        &self,
        epoch: u64,
        attempt: &str,
        root: &RootRef,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_record_root(epoch, attempt, root, fence)
            .await
            .map_err(ledger_error)
    }

    async fn commit_epoch(
        &self,
        epoch: u64,
        attempt: &str,
        wrapped: &[u8],
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_commit(epoch, attempt, wrapped, fence)
            .await
            .map_err(ledger_error)
    }

    async fn discard_epoch(
        &self,
        epoch: u64,
        attempt: &str,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_discard(epoch, attempt, fence)
            .await
            .map_err(ledger_error)
    }

    async fn begin_destroy(
        &self,
        epoch: u64,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_begin_destroy(epoch, fence)
            .await
            .map_err(ledger_error)
    }

    async fn finish_destroy(
        &self,
        epoch: u64,
        fence: Option<&Fence>,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_finish_destroy(epoch, fence)
            .await
            .map_err(ledger_error)
    }

    async fn import(
        &self,
        records: &[EpochRecord],
        current: u64,
    ) -> std::result::Result<(), KeyError> {
        self.ledger_import(records, current)
            .await
            .map_err(ledger_error)
    }
}
