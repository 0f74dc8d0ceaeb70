//! Vendors' audit tag keys and what a vendor's export and activity view read.
//!
//! Every vendor holds an audit tag key (`audit::leaf`): the leaves of its entries carry an
//! HMAC tag under it, so its own auditor can check an export for completeness while every
//! other vendor's entry travels as a hash. The key is made with the vendor, and published (by
//! fingerprint) in the entry that creates it; a vendor from before tags gets its key when the
//! store opens, in a `vendor.audit-key` entry of its own.

use audit::leaf::{self, Tag};
use crypto::mac::TagKey;
use sqlx::Row;

use crate::audit_log::stored_tag;
use crate::convert::{db_int, get_uint};
use crate::{Result, Store, StoreError, corrupt};

/// `entry` with the key's announcement appended to its detail.
pub(crate) fn announcing(mut entry: audit::Entry, key: &TagKey) -> audit::Entry {
    let announcement = leaf::key_announcement(key);
    entry.detail = Some(match entry.detail.take() {
        Some(detail) => format!("{detail}; {announcement}"),
        None => announcement,
    });
    entry
}

/// A vendor's audit tag key and the entry that published it.
pub struct VendorAuditKey {
    pub key: TagKey,
    pub published_at: u64,
}

/// An entry as stored, with its leaf's tag and the vendor it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedEntry {
    pub seq: u64,
    pub bytes: Vec<u8>,
    pub tag: Tag,
    pub vendor_id: Option<String>,
}

fn tagged_from_row(row: &sqlx::any::AnyRow) -> Result<TaggedEntry> {
    Ok(TaggedEntry {
        seq: get_uint(row, "seq")?,
        bytes: row.try_get("entry")?,
        tag: stored_tag(row)?,
        vendor_id: row.try_get("vendor_id")?,
    })
}

impl Store {
    /// Gives every vendor without an audit tag key one, each in its own audited transaction.
    pub(crate) async fn give_vendors_audit_tag_keys(&self) -> Result<()> {
        let rows = sqlx::query("SELECT id, name FROM vendors WHERE audit_tag_key IS NULL")
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let (id, name): (String, String) = (row.try_get("id")?, row.try_get("name")?);
            let key = TagKey::generate().map_err(corrupt)?;
            let mut tx = self.begin().await?;
            let seq = tx.seq();
            let given = sqlx::query(
                "UPDATE vendors SET audit_tag_key = $1, audit_tag_key_entry = $2 \
                 WHERE id = $3 AND audit_tag_key IS NULL",
            )
            .bind(key.expose_bytes().to_vec())
            .bind(db_int(seq)?)
            .bind(&id)
            .execute(tx.conn())
            .await?;
            if given.rows_affected() == 0 {
                // Another instance gave it one meanwhile; dropping `tx` rolls back.
                continue;
            }
            let entry = announcing(
                audit::Entry::new("system", "vendor.audit-key", name.as_str()),
                &key,
            );
            tx.commit(entry).await?;
            tracing::info!(vendor = %name, entry = seq, "gave the vendor its audit tag key");
        }
        Ok(())
    }

    /// The vendor's audit tag key, and the entry that published it.
    pub async fn vendor_audit_key(&self, vendor_id: &str) -> Result<VendorAuditKey> {
        let row =
            sqlx::query("SELECT audit_tag_key, audit_tag_key_entry FROM vendors WHERE id = $1")
                .bind(vendor_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound("vendor"))?;
        let key: Option<Vec<u8>> = row.try_get("audit_tag_key")?;
        let published: Option<i64> = row.try_get("audit_tag_key_entry")?;
        match (key, published) {
            (Some(key), Some(at)) => Ok(VendorAuditKey {
                key: TagKey::from_slice(&key)
                    .map_err(|_| corrupt("a vendor's audit tag key is not 32 bytes"))?,
                published_at: crate::convert::uint(at, "vendors.audit_tag_key_entry")?,
            }),
            _ => Err(corrupt("the vendor has no audit tag key")),
        }
    }

    /// Entries `from..to` with their tags and vendors.
    pub async fn audit_entries_tagged(&self, from: u64, to: u64) -> Result<Vec<TaggedEntry>> {
        let rows = sqlx::query(
            "SELECT seq, entry, tag, vendor_id FROM audit_log \
             WHERE seq >= $1 AND seq < $2 ORDER BY seq",
        )
        .bind(db_int(from)?)
        .bind(db_int(to)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tagged_from_row).collect()
    }

    /// The vendor's entries with `seq >= from`, oldest first, at most `limit`.
    pub async fn vendor_entries(
        &self,
        vendor_id: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<TaggedEntry>> {
        let rows = sqlx::query(
            "SELECT seq, entry, tag, vendor_id FROM audit_log \
             WHERE vendor_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(vendor_id)
        .bind(db_int(from)?)
        .bind(db_int(limit)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tagged_from_row).collect()
    }
}
