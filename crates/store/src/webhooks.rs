//! Vendors' webhooks: where a vendor's events go, and how far delivery got. The audit log is
//! the queue: a webhook keeps only the index up to which it delivered.

use sqlx::Row;
use zeroize::Zeroizing;

use crate::convert::{db_int, get_uint};
use crate::{Result, Store, StoreError};

/// A vendor's webhook. Not `Debug`: it holds the signing secret.
pub struct Webhook {
    pub vendor_id: String,
    pub vendor: String,
    pub url: String,
    pub secret: Zeroizing<Vec<u8>>,
    /// Trust anchors for the receiver's certificate (PEM); none: the public web roots.
    pub ca_pem: Option<String>,
    /// Events up to this audit index (exclusive) were delivered.
    pub delivered_seq: u64,
    pub failures: u64,
    pub retry_at: i64,
    pub last_error: Option<String>,
}

const WEBHOOK_SELECT: &str = "SELECT w.vendor_id, v.name AS vendor, w.url, w.secret, w.ca_pem, \
     w.delivered_seq, w.failures, w.retry_at, w.last_error \
     FROM vendor_webhooks w JOIN vendors v ON v.id = w.vendor_id";

fn webhook_from_row(r: &sqlx::any::AnyRow) -> Result<Webhook> {
    Ok(Webhook {
        vendor_id: r.try_get("vendor_id")?,
        vendor: r.try_get("vendor")?,
        url: r.try_get("url")?,
        secret: Zeroizing::new(r.try_get("secret")?),
        ca_pem: r.try_get("ca_pem")?,
        delivered_seq: get_uint(r, "delivered_seq")?,
        failures: get_uint(r, "failures")?,
        retry_at: r.try_get("retry_at")?,
        last_error: r.try_get("last_error")?,
    })
}

impl Store {
    /// Sets (or replaces) the vendor's webhook; delivery starts with the events after this
    /// entry.
    pub async fn set_webhook(
        &self,
        vendor_id: &str,
        url: &str,
        secret: &[u8],
        ca_pem: Option<&str>,
        created_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let from = db_int(tx.seq() + 1)?;
        sqlx::query("DELETE FROM vendor_webhooks WHERE vendor_id = $1")
            .bind(vendor_id)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO vendor_webhooks (vendor_id, url, secret, ca_pem, delivered_seq, \
             failures, retry_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7)",
        )
        .bind(vendor_id)
        .bind(url)
        .bind(secret.to_vec())
        .bind(ca_pem)
        .bind(from)
        .bind(created_by)
        .bind(self.clock.now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn remove_webhook(&self, vendor_id: &str, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM vendor_webhooks WHERE vendor_id = $1")
            .bind(vendor_id)
            .execute(tx.conn())
            .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn webhook(&self, vendor_id: &str) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!("{WEBHOOK_SELECT} WHERE w.vendor_id = $1"))
            .bind(vendor_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// Webhooks whose next attempt is due at `now`.
    pub async fn due_webhooks(&self, now: i64) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "{WEBHOOK_SELECT} WHERE w.retry_at <= $1 ORDER BY w.vendor_id"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// Delivery reached `through` (exclusive), if the webhook is still the one that was read
    /// (its cursor at `from`): with its audit entry, or none when nothing was sent (events
    /// the webhook does not carry were skipped).
    pub async fn webhook_delivered(
        &self,
        vendor_id: &str,
        from: u64,
        through: u64,
        entry: Option<audit::Entry>,
    ) -> Result<()> {
        let sql = "UPDATE vendor_webhooks SET delivered_seq = $1, failures = 0, retry_at = 0, \
                   last_error = NULL WHERE vendor_id = $2 AND delivered_seq = $3";
        match entry {
            Some(entry) => {
                let mut tx = self.begin().await?;
                sqlx::query(sql)
                    .bind(db_int(through)?)
                    .bind(vendor_id)
                    .bind(db_int(from)?)
                    .execute(tx.conn())
                    .await?;
                tx.commit(entry).await?;
            }
            None => {
                sqlx::query(sql)
                    .bind(db_int(through)?)
                    .bind(vendor_id)
                    .bind(db_int(from)?)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A failed attempt: the next one waits until `retry_at`.
    pub async fn webhook_failed(
        &self,
        vendor_id: &str,
        retry_at: i64,
        error: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE vendor_webhooks SET failures = failures + 1, retry_at = $1, last_error = $2 \
             WHERE vendor_id = $3",
        )
        .bind(retry_at)
        .bind(error)
        .bind(vendor_id)
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }
}
