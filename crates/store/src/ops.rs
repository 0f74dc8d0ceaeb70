//! What operators watch (`server::metrics`), read in one place: counts and ages, never
//! names or contents.

use sqlx::Row;

use crate::convert::get_uint;
use crate::{Result, Store};

/// Counts and ages for the server's metrics, as of one read.
#[derive(Debug, Clone, Default)]
pub struct OpsSnapshot {
    /// Deletions per state (`certified` included), as stored.
    pub deletions_by_state: Vec<(String, u64)>,
    /// When the oldest deletion that is not certified yet was requested (Unix seconds).
    pub oldest_unfinished_deletion_at: Option<i64>,
    /// Upload sessions begun and neither committed nor expired.
    pub open_upload_sessions: u64,
    /// Entries in the audit log.
    pub audit_entries: u64,
    /// When the latest signed checkpoint was stored (Unix seconds).
    pub latest_checkpoint_at: Option<i64>,
}

impl Store {
    /// Answers whether the database answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// The figures of [`OpsSnapshot`], read now.
    pub async fn ops_snapshot(&self) -> Result<OpsSnapshot> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM deletions GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut deletions_by_state = Vec::with_capacity(rows.len());
        for r in &rows {
            deletions_by_state.push((r.try_get::<String, _>("state")?, get_uint::<u64>(r, "n")?));
        }
        let oldest =
            sqlx::query("SELECT MIN(requested_at) AS at FROM deletions WHERE state <> 'certified'")
                .fetch_one(&self.pool)
                .await?;
        let uploads =
            sqlx::query("SELECT COUNT(*) AS n FROM upload_sessions WHERE expires_at > $1")
                .bind(self.clock.now())
                .fetch_one(&self.pool)
                .await?;
        let checkpoint = sqlx::query("SELECT MAX(created_at) AS at FROM audit_checkpoints")
            .fetch_one(&self.pool)
            .await?;
        Ok(OpsSnapshot {
            deletions_by_state,
            oldest_unfinished_deletion_at: oldest.try_get::<Option<i64>, _>("at")?,
            open_upload_sessions: get_uint::<u64>(&uploads, "n")?,
            audit_entries: self.audit_size().await?,
            latest_checkpoint_at: checkpoint.try_get::<Option<i64>, _>("at")?,
        })
    }
}
