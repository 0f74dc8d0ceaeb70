//! Who may do what, as data: a vendor's groups, grants (direct and to groups, optionally
//! expiring), exclusions, embargo windows, exclusive hosts (enrollments, and each vendor's
//! approval of them) and the host groups each model allows.
//!
//! Nothing here decides anything: the server reads these facts per request (all of one
//! request's in one statement, `facts.rs`) and the policy crate decides. Every change takes its audit entry, like the rest of the store.

use sqlx::Row;
use types::{GroupName, HostGroupName, HostName, UserName};

use crate::{Result, Store, StoreError, corrupt};

/// Who a grant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    User(UserName),
    Group(GroupName),
}

impl Grantee {
    /// `user:NAME` or `group:NAME`, as pending requests and audit details write it.
    pub fn to_tagged(&self) -> String {
        match self {
            Grantee::User(u) => format!("user:{u}"),
            Grantee::Group(g) => format!("group:{g}"),
        }
    }

    pub fn from_tagged(s: &str) -> Result<Grantee> {
        match s.split_once(':') {
            Some(("user", u)) => Ok(Grantee::User(UserName::parse(u).map_err(corrupt)?)),
            Some(("group", g)) => Ok(Grantee::Group(GroupName::parse(g).map_err(corrupt)?)),
            _ => Err(StoreError::Corrupt(format!("grantee {s:?}"))),
        }
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::User(u) => write!(f, "user {u}"),
            Grantee::Group(g) => write!(f, "group {g}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub to: Grantee,
    pub granted_by: String,
    pub expires_at: Option<i64>,
}

/// A grant a user holds on a live model, directly (`group: None`) or through a group of the
/// model's vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGrant {
    pub model_id: String,
    pub group: Option<GroupName>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionRecord {
    pub user: UserName,
    /// `None`: every model of the vendor.
    pub model: Option<String>,
    pub created_by: String,
}

/// One enrollment of an exclusive host. A re-enrolled name is a new record (new id); the old
/// one stays, revoked, so what it fetched and confirmed stays its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub id: String,
    pub name: HostName,
    pub group: HostGroupName,
    pub cert_sha256: String,
    pub not_after: i64,
    pub enrolled_by: String,
    pub revoked_at: Option<i64>,
}

pub struct NewHost<'a> {
    pub id: &'a str,
    pub name: &'a HostName,
    pub group: &'a HostGroupName,
    pub cert_sha256: &'a str,
    pub not_after: i64,
    pub enrolled_by: &'a str,
}

/// A host as one vendor sees it: approved by that vendor or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorHost {
    pub host: HostRecord,
    pub approved_by: Option<String>,
}

fn opt_i64(row: &sqlx::any::AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

impl Store {
    /// The unexpired grants `user` holds on models not deleted, direct and through groups,
    /// by model id: what "my grants" shows (each still decided by the policy when used).
    pub async fn grants_held(&self, user: &UserName, now: i64) -> Result<Vec<HeldGrant>> {
        let rows = sqlx::query(
            "SELECT g.model_id, NULL AS group_name, g.expires_at FROM grants g \
             JOIN models m ON m.id = g.model_id \
             WHERE g.user_name = $1 AND m.deleted_at IS NULL \
             AND (g.expires_at IS NULL OR g.expires_at > $2) \
             UNION ALL \
             SELECT gg.model_id, gg.group_name, gg.expires_at FROM group_grants gg \
             JOIN models m ON m.id = gg.model_id \
             JOIN group_members gm ON gm.group_name = gg.group_name \
             AND gm.vendor_id = m.vendor_id \
             WHERE gm.user_name = $1 AND m.deleted_at IS NULL \
             AND (gg.expires_at IS NULL OR gg.expires_at > $2) \
             ORDER BY 1, 2",
        )
        .bind(user.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let group = r
                    .try_get::<Option<String>, _>("group_name")?
                    .map(|g| GroupName::parse(&g).map_err(|e| corrupt(e.to_string())))
                    .transpose()?;
                Ok(HeldGrant {
                    model_id: r.try_get("model_id")?,
                    group,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .collect()
    }

    // ----- groups (each belongs to a vendor) -----------------------------------------------

    /// Adds `user` to the vendor's group `group`, and files endorsement requests for their
    /// credentials that do not count at the vendor yet (`follow_up`).
    pub async fn add_group_member(
        &self,
        vendor_id: &str,
        group: &GroupName,
        user: &UserName,
        added_by: &str,
        follow_up: &crate::FollowUp,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_group_member(
            tx.conn(),
            vendor_id,
            group,
            user,
            added_by,
            self.clock.now(),
        )
        .await?;
        Store::request_endorsements_in(tx.conn(), vendor_id, user, follow_up, self.clock.now())
            .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn remove_group_member(
        &self,
        vendor_id: &str,
        group: &GroupName,
        user: &UserName,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "DELETE FROM group_members WHERE vendor_id = $1 AND group_name = $2 AND user_name = $3",
        )
        .bind(vendor_id)
        .bind(group.as_str())
        .bind(user.as_str())
        .execute(tx.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("group member"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// The groups of `vendor_id` that `user` is a member of.
    pub async fn groups_of(&self, vendor_id: &str, user: &UserName) -> Result<Vec<GroupName>> {
        let rows = sqlx::query(
            "SELECT group_name FROM group_members WHERE vendor_id = $1 AND user_name = $2 \
             ORDER BY group_name",
        )
        .bind(vendor_id)
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| GroupName::parse(r.try_get("group_name")?).map_err(corrupt))
            .collect()
    }

    /// A vendor's groups and their members.
    pub async fn group_members(&self, vendor_id: &str) -> Result<Vec<(GroupName, UserName)>> {
        let rows = sqlx::query(
            "SELECT group_name, user_name FROM group_members WHERE vendor_id = $1 \
             ORDER BY group_name, user_name",
        )
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    GroupName::parse(r.try_get("group_name")?).map_err(corrupt)?,
                    UserName::parse(r.try_get("user_name")?).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    // ----- grants --------------------------------------------------------------------------

    /// Grants read access (replacing an earlier grant to the same grantee). A grant to a user
    /// files endorsement requests for their credentials that do not count at the vendor yet.
    #[allow(clippy::too_many_arguments)]
    pub async fn grant(
        &self,
        vendor_id: &str,
        model_id: &str,
        to: &Grantee,
        granted_by: &str,
        expires_at: Option<i64>,
        follow_up: &crate::FollowUp,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_grant(
            tx.conn(),
            model_id,
            to,
            granted_by,
            expires_at,
            self.clock.now(),
        )
        .await?;
        if let Grantee::User(user) = to {
            Store::request_endorsements_in(tx.conn(), vendor_id, user, follow_up, self.clock.now())
                .await?;
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// Removes a grant; `NotFound` when there was none (and nothing is recorded).
    pub async fn revoke(&self, model_id: &str, to: &Grantee, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = delete_grant(tx.conn(), model_id, to).await?;
        if done == 0 {
            return Err(StoreError::NotFound("grant"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn grants(&self, model_id: &str) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT 'user' AS kind, user_name AS name, granted_by, expires_at FROM grants \
             WHERE model_id = $1 \
             UNION ALL \
             SELECT 'group' AS kind, group_name AS name, granted_by, expires_at FROM group_grants \
             WHERE model_id = $1 ORDER BY kind DESC, name",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let name: String = r.try_get("name")?;
                Ok(GrantRecord {
                    to: Grantee::from_tagged(&format!("{kind}:{name}"))?,
                    granted_by: r.try_get("granted_by")?,
                    expires_at: opt_i64(r, "expires_at")?,
                })
            })
            .collect()
    }

    /// Whether the credential counts for `vendor_id`: it counts everywhere, or the vendor
    /// endorsed it.
    pub async fn credential_counts(
        &self,
        token_id: &str,
        all_vendors: bool,
        vendor_id: &str,
    ) -> Result<bool> {
        if all_vendors {
            return Ok(true);
        }
        let mut conn = self.pool.acquire().await?;
        endorsed_on(&mut conn, token_id, vendor_id).await
    }

    // ----- exclusions ----------------------------------------------------------------------

    /// Excludes `user` from one model (`model_id`) or from the whole vendor (`None`).
    pub async fn exclude(
        &self,
        vendor_id: &str,
        model_id: Option<&str>,
        user: &UserName,
        created_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let model = model_id.unwrap_or("");
        sqlx::query(
            "DELETE FROM exclusions WHERE vendor_id = $1 AND model_id = $2 AND user_name = $3",
        )
        .bind(vendor_id)
        .bind(model)
        .bind(user.as_str())
        .execute(tx.conn())
        .await?;
        sqlx::query(
            "INSERT INTO exclusions (vendor_id, model_id, user_name, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(vendor_id)
        .bind(model)
        .bind(user.as_str())
        .bind(created_by)
        .bind(self.clock.now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn unexclude(
        &self,
        vendor_id: &str,
        model_id: Option<&str>,
        user: &UserName,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        if delete_exclusion(tx.conn(), vendor_id, model_id, user).await? == 0 {
            return Err(StoreError::NotFound("exclusion"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// Whether `user` is excluded from that model (or, `None`, from the whole vendor).
    pub async fn is_excluded(
        &self,
        vendor_id: &str,
        model_id: Option<&str>,
        user: &UserName,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM exclusions WHERE vendor_id = $1 AND model_id = $2 AND user_name = $3",
        )
        .bind(vendor_id)
        .bind(model_id.unwrap_or(""))
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// A vendor's exclusions, with model names (not ids).
    pub async fn exclusions(&self, vendor_id: &str) -> Result<Vec<ExclusionRecord>> {
        let rows = sqlx::query(
            "SELECT e.user_name, m.name AS model, e.created_by FROM exclusions e \
             LEFT JOIN models m ON m.id = e.model_id \
             WHERE e.vendor_id = $1 ORDER BY e.user_name, m.name",
        )
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExclusionRecord {
                    user: UserName::parse(r.try_get("user_name")?).map_err(corrupt)?,
                    model: r.try_get("model")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    // ----- embargo and host groups ---------------------------------------------------------

    /// A model's embargo window for bytes: `(not_before, not_after)`.
    pub async fn embargo(&self, model_id: &str) -> Result<(Option<i64>, Option<i64>)> {
        let row = sqlx::query("SELECT not_before, not_after FROM models WHERE id = $1")
            .bind(model_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("model"))?;
        Ok((opt_i64(&row, "not_before")?, opt_i64(&row, "not_after")?))
    }

    /// Sets (or clears, with `None`) a model's embargo window for bytes.
    pub async fn set_embargo(
        &self,
        model_id: &str,
        not_before: Option<i64>,
        not_after: Option<i64>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        update_embargo(tx.conn(), model_id, not_before, not_after).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn allow_host_group(
        &self,
        model_id: &str,
        group: &HostGroupName,
        added_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_host_group(tx.conn(), model_id, group, added_by, self.clock.now()).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn disallow_host_group(
        &self,
        model_id: &str,
        group: &HostGroupName,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("DELETE FROM model_host_groups WHERE model_id = $1 AND host_group = $2")
                .bind(model_id)
                .bind(group.as_str())
                .execute(tx.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("allowed host group"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn model_host_groups(&self, model_id: &str) -> Result<Vec<HostGroupName>> {
        let mut conn = self.pool.acquire().await?;
        host_groups_on(&mut conn, model_id).await
    }

    // ----- hosts ---------------------------------------------------------------------------

    /// Enrolls a host: a new record, never a reused one. A name in use by an unrevoked host is
    /// a conflict; a revoked host's name can be enrolled again as a new host (its old record
    /// stays, revoked, with its copies and confirmations).
    pub async fn enroll_host(&self, host: &NewHost<'_>, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let live = sqlx::query("SELECT id FROM hosts WHERE name = $1 AND revoked_at IS NULL")
            .bind(host.name.as_str())
            .fetch_optional(tx.conn())
            .await?;
        if live.is_some() {
            return Err(StoreError::Conflict(format!(
                "host {} is already enrolled; revoke it first to enroll it again",
                host.name
            )));
        }
        sqlx::query(
            "INSERT INTO hosts (id, name, host_group, cert_sha256, not_after, enrolled_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(host.id)
        .bind(host.name.as_str())
        .bind(host.group.as_str())
        .bind(host.cert_sha256)
        .bind(host.not_after)
        .bind(host.enrolled_by)
        .bind(self.clock.now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// Revokes the live enrollment of `name`.
    pub async fn revoke_host(&self, name: &HostName, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE hosts SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(self.clock.now())
                .bind(name.as_str())
                .execute(tx.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("enrolled host"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// The host whose certificate has this SHA-256, revoked or not.
    /// Gives a live enrollment a new certificate in place of `old_sha256` (renewal before
    /// expiry): same id, so the vendors' approvals stay; the old certificate stops counting.
    /// A revoked host, or a certificate replaced meanwhile, is a conflict.
    pub async fn renew_host(
        &self,
        id: &str,
        old_sha256: &str,
        new_sha256: &str,
        not_after: i64,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE hosts SET cert_sha256 = $1, not_after = $2 \
             WHERE id = $3 AND cert_sha256 = $4 AND revoked_at IS NULL",
        )
        .bind(new_sha256)
        .bind(not_after)
        .bind(id)
        .bind(old_sha256)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "this host's enrollment was revoked or renewed meanwhile".into(),
            ));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn host_by_cert(&self, cert_sha256: &str) -> Result<Option<HostRecord>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE cert_sha256 = $1"))
            .bind(cert_sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// The live (unrevoked) enrollment of `name`, if any.
    pub async fn live_host(&self, name: &HostName) -> Result<Option<HostRecord>> {
        let row = sqlx::query(&format!(
            "{HOST_SELECT} WHERE name = $1 AND revoked_at IS NULL"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// Every enrollment, revoked ones included, by name then age.
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let rows = sqlx::query(&format!("{HOST_SELECT} ORDER BY name, created_at"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// The vendor's approval of a host enrollment (at once: the caller decided it needs no
    /// further approval).
    pub async fn approve_host(
        &self,
        vendor_id: &str,
        host_id: &str,
        approved_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_vendor_host(tx.conn(), vendor_id, host_id, approved_by, self.clock.now()).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn unapprove_host(
        &self,
        vendor_id: &str,
        host_id: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM vendor_hosts WHERE vendor_id = $1 AND host_id = $2")
            .bind(vendor_id)
            .bind(host_id)
            .execute(tx.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("host approval"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// Hosts relevant to a vendor: every live enrollment in a host group one of its models
    /// allows, and every enrollment it approved (revoked ones included), with its approval.
    pub async fn vendor_hosts(&self, vendor_id: &str) -> Result<Vec<VendorHost>> {
        let rows = sqlx::query(&format!(
            "{HOST_SELECT_H}, vh.approved_by FROM hosts h \
             LEFT JOIN vendor_hosts vh ON vh.host_id = h.id AND vh.vendor_id = $1 \
             WHERE vh.host_id IS NOT NULL OR (h.revoked_at IS NULL AND h.host_group IN \
             (SELECT g.host_group FROM model_host_groups g JOIN models m ON m.id = g.model_id \
             WHERE m.vendor_id = $1)) ORDER BY h.name, h.created_at"
        ))
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VendorHost {
                    host: host_from_row(r)?,
                    approved_by: r.try_get("approved_by")?,
                })
            })
            .collect()
    }
}

pub(crate) async fn insert_group_member(
    conn: &mut sqlx::AnyConnection,
    vendor_id: &str,
    group: &GroupName,
    user: &UserName,
    added_by: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM group_members WHERE vendor_id = $1 AND group_name = $2 AND user_name = $3",
    )
    .bind(vendor_id)
    .bind(group.as_str())
    .bind(user.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO group_members (vendor_id, group_name, user_name, added_by, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(vendor_id)
    .bind(group.as_str())
    .bind(user.as_str())
    .bind(added_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_exclusion(
    conn: &mut sqlx::AnyConnection,
    vendor_id: &str,
    model_id: Option<&str>,
    user: &UserName,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM exclusions WHERE vendor_id = $1 AND model_id = $2 AND user_name = $3",
    )
    .bind(vendor_id)
    .bind(model_id.unwrap_or(""))
    .bind(user.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn update_embargo(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    not_before: Option<i64>,
    not_after: Option<i64>,
) -> Result<()> {
    sqlx::query("UPDATE models SET not_before = $1, not_after = $2 WHERE id = $3")
        .bind(not_before)
        .bind(not_after)
        .bind(model_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn insert_host_group(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    group: &HostGroupName,
    added_by: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM model_host_groups WHERE model_id = $1 AND host_group = $2")
        .bind(model_id)
        .bind(group.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO model_host_groups (model_id, host_group, added_by, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(model_id)
    .bind(group.as_str())
    .bind(added_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_vendor_host(
    conn: &mut sqlx::AnyConnection,
    vendor_id: &str,
    host_id: &str,
    approved_by: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM vendor_hosts WHERE vendor_id = $1 AND host_id = $2")
        .bind(vendor_id)
        .bind(host_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO vendor_hosts (vendor_id, host_id, approved_by, approved_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(vendor_id)
    .bind(host_id)
    .bind(approved_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

async fn endorsed_on(
    conn: &mut sqlx::AnyConnection,
    token_id: &str,
    vendor_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS one FROM token_endorsements WHERE token_id = $1 AND vendor_id = $2",
    )
    .bind(token_id)
    .bind(vendor_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

pub(crate) async fn insert_grant(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    to: &Grantee,
    granted_by: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<()> {
    delete_grant(conn, model_id, to).await?;
    let (table, column, name) = grant_table(to);
    sqlx::query(&format!(
        "INSERT INTO {table} (model_id, {column}, granted_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(model_id)
    .bind(name)
    .bind(granted_by)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn delete_grant(conn: &mut sqlx::AnyConnection, model_id: &str, to: &Grantee) -> Result<u64> {
    let (table, column, name) = grant_table(to);
    let done = sqlx::query(&format!(
        "DELETE FROM {table} WHERE model_id = $1 AND {column} = $2"
    ))
    .bind(model_id)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Table, column and value of a grantee (fixed identifiers only, never user input).
fn grant_table(to: &Grantee) -> (&'static str, &'static str, &str) {
    match to {
        Grantee::User(u) => ("grants", "user_name", u.as_str()),
        Grantee::Group(g) => ("group_grants", "group_name", g.as_str()),
    }
}

async fn host_groups_on(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
) -> Result<Vec<HostGroupName>> {
    let rows = sqlx::query(
        "SELECT host_group FROM model_host_groups WHERE model_id = $1 ORDER BY host_group",
    )
    .bind(model_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| HostGroupName::parse(r.try_get("host_group")?).map_err(corrupt))
        .collect()
}

const HOST_SELECT: &str =
    "SELECT id, name, host_group, cert_sha256, not_after, enrolled_by, revoked_at FROM hosts";
/// The same columns from `hosts h`, to extend with joined ones.
const HOST_SELECT_H: &str =
    "SELECT h.id, h.name, h.host_group, h.cert_sha256, h.not_after, h.enrolled_by, h.revoked_at";

fn host_from_row(r: &sqlx::any::AnyRow) -> Result<HostRecord> {
    Ok(HostRecord {
        id: r.try_get("id")?,
        name: HostName::parse(r.try_get("name")?).map_err(corrupt)?,
        group: HostGroupName::parse(r.try_get("host_group")?).map_err(corrupt)?,
        cert_sha256: r.try_get("cert_sha256")?,
        not_after: r.try_get("not_after")?,
        enrolled_by: r.try_get("enrolled_by")?,
        revoked_at: opt_i64(r, "revoked_at")?,
    })
}
