use sqlx::{Any, AnyPool, Row, Transaction};

use crate::Result;

/// A transaction that can only be committed together with its audit entry.
///
/// Its first statement claims the next audit sequence number by updating the one-row
/// `audit_head` table. That write comes first on purpose: it takes the write lock before any
/// read (SQLite cannot upgrade a read transaction safely under concurrency), and on PostgreSQL
/// the row lock orders concurrent writers, so sequence numbers have no gaps and follow commit
/// order. Dropping an `AuditedTx` without committing rolls everything back, entry included.
///
/// Committing appends the entry to the log *and* to its Merkle tree (leaf hash, the subtrees
/// it completes, the tree size) in this same transaction, so the tree always equals the log.
pub struct AuditedTx {
    tx: Transaction<'static, Any>,
    seq: u64,
}

impl AuditedTx {
    pub(crate) async fn begin(pool: &AnyPool) -> Result<Self> {
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "UPDATE audit_head SET next_seq = next_seq + 1 WHERE id = 1 RETURNING next_seq - 1 AS seq",
        )
        .fetch_one(&mut *tx)
        .await?;
        let seq: i64 = row.try_get("seq")?;
        Ok(AuditedTx {
            tx,
            seq: crate::convert::uint(seq, "audit_head.next_seq")?,
        })
    }

    /// The sequence number this transaction's entry will have.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// Writes the entry with this transaction's sequence number, appends it to the tree, and
    /// commits all of it.
    pub async fn commit(mut self, mut entry: audit::Entry) -> Result<u64> {
        let started = std::time::Instant::now();
        entry.seq = self.seq;
        crate::audit_log::append_entries(&mut self.tx, self.seq, std::slice::from_ref(&entry))
            .await?;
        self.tx.commit().await?;
        crate::audit_log::observe_append(1, started);
        Ok(self.seq)
    }
}
