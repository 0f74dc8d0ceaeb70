//! Witnesses of the audit log: their cosignatures on signed checkpoints, and per witness the
//! size it last cosigned and its last error (`server/src/witnesses.rs` submits). Cosignatures
//! are derived evidence, like checkpoints: each verifies on its own, so saving one writes no
//! audit entry (one per cosignature would grow the log on every checkpoint).

use sqlx::Row;

use crate::convert::{db_int, get_uint};
use crate::{Result, Store};

/// What the log knows of one witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessProgress {
    /// The witness's verifier key (`name+keyid+key`).
    pub witness: String,
    /// The tree size it last cosigned (0: none yet).
    pub cosigned_size: u64,
    /// Why the last submission failed, until one succeeds.
    pub last_error: Option<String>,
    pub updated_at: i64,
}

impl Store {
    /// Keeps `witness`'s cosignature line on the checkpoint of `size` (the first one kept
    /// stays) and records that it cosigned `size`, clearing its error.
    pub async fn save_cosignature(&self, size: u64, witness: &str, line: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO audit_cosignatures (size, witness, line, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (size, witness) DO NOTHING",
        )
        .bind(db_int(size)?)
        .bind(witness)
        .bind(line)
        .bind(self.clock.now())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_witnesses (witness, cosigned_size, last_error, updated_at) \
             VALUES ($1, $2, NULL, $3) ON CONFLICT (witness) DO UPDATE SET \
             cosigned_size = excluded.cosigned_size, last_error = NULL, \
             updated_at = excluded.updated_at",
        )
        .bind(witness)
        .bind(db_int(size)?)
        .bind(self.clock.now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records why submitting to `witness` failed (its cosigned size stays).
    pub async fn set_witness_error(&self, witness: &str, error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_witnesses (witness, cosigned_size, last_error, updated_at) \
             VALUES ($1, 0, $2, $3) ON CONFLICT (witness) DO UPDATE SET \
             last_error = excluded.last_error, updated_at = excluded.updated_at",
        )
        .bind(witness)
        .bind(error)
        .bind(self.clock.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the log knows of `witness` (`None`: never submitted to).
    pub async fn witness_progress(&self, witness: &str) -> Result<Option<WitnessProgress>> {
        let row = sqlx::query(
            "SELECT witness, cosigned_size, last_error, updated_at FROM audit_witnesses \
             WHERE witness = $1",
        )
        .bind(witness)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(progress_from_row).transpose()
    }

    /// The cosignature lines kept for checkpoints with `from <= size <= to`: (size, line).
    pub async fn cosignatures_between(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT size, line FROM audit_cosignatures WHERE size >= $1 AND size <= $2 \
             ORDER BY size, witness",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((get_uint::<u64>(r, "size")?, r.try_get("line")?)))
            .collect()
    }

    /// The cosignature lines kept for the checkpoint of `size`, by witness.
    pub async fn cosignatures(&self, size: u64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT witness, line FROM audit_cosignatures WHERE size = $1 ORDER BY witness",
        )
        .bind(db_int(size)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("witness")?, r.try_get("line")?)))
            .collect()
    }
}

impl Store {
    /// Says in a deletion's status why its step is waiting (no attempt counted, no audit
    /// entry: its state does not change). Fenced by the deletion runner's lease.
    pub async fn deletion_note(
        &self,
        id: &str,
        note: &str,
        fence: Option<&crate::Fence>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE deletions SET last_error = $1 WHERE id = $2")
            .bind(note)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::keys::check_fence(&mut tx, self.dialect, fence).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn progress_from_row(r: &sqlx::any::AnyRow) -> Result<WitnessProgress> {
    Ok(WitnessProgress {
        witness: r.try_get("witness")?,
        cosigned_size: get_uint::<u64>(r, "cosigned_size")?,
        last_error: r.try_get("last_error")?,
        updated_at: r.try_get("updated_at")?,
    })
}
