//! Who may do what, as data: groups, grants (direct and to groups, optionally expiring),
//! exclusions, embargo windows, exclusive hosts and the host groups each model allows, token
//! listing and revocation, and requests waiting for a second vendor admin.
//!
//! Nothing here decides anything: the server reads these facts per request and the policy
//! crate decides. Every change takes its audit entry, like the rest of the store.

use sqlx::Row;
use types::{GroupName, HostGroupName, HostName, Role, UserName, VendorName};

use crate::{Result, Store, StoreError, corrupt, now};

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

/// The access facts of one model for one user, read in one go per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFacts {
    /// Expiry of the user's direct grant, if they hold one (`Some(None)`: no expiry).
    pub direct_grant: Option<Option<i64>>,
    /// The user's groups that hold a grant on the model, with the grant's expiry.
    pub group_grants: Vec<(GroupName, Option<i64>)>,
    pub excluded_from_model: bool,
    pub excluded_from_vendor: bool,
    pub host_groups: Vec<HostGroupName>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionRecord {
    pub user: UserName,
    /// `None`: every model of the vendor.
    pub model: Option<String>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: HostName,
    pub group: HostGroupName,
    pub cert_sha256: String,
    pub not_after: i64,
    pub enrolled_by: String,
    pub revoked_at: Option<i64>,
}

pub struct NewHost<'a> {
    pub name: &'a HostName,
    pub group: &'a HostGroupName,
    pub cert_sha256: &'a str,
    pub not_after: i64,
    pub enrolled_by: &'a str,
}

/// A token as listed: never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub user: UserName,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a pending request will do once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingAction {
    Grant {
        model_id: String,
        to: Grantee,
        expires_at: Option<i64>,
    },
    /// Handled by the deletion service; the store only keeps the request.
    Delete { model_id: Option<String> },
    /// Turning the two-person rule off needs the two persons too.
    DisableTwoPerson,
}

impl PendingAction {
    fn kind(&self) -> &'static str {
        match self {
            PendingAction::Grant { .. } => "grant",
            PendingAction::Delete { .. } => "delete",
            PendingAction::DisableTwoPerson => "disable-two-person",
        }
    }

    fn payload(&self) -> String {
        match self {
            PendingAction::Grant { to, expires_at, .. } => serde_json::json!({
                "to": to.to_tagged(),
                "expires_at": expires_at,
            })
            .to_string(),
            PendingAction::Delete { .. } | PendingAction::DisableTwoPerson => "{}".to_owned(),
        }
    }

    fn model_id(&self) -> Option<&str> {
        match self {
            PendingAction::Grant { model_id, .. } => Some(model_id),
            PendingAction::Delete { model_id } => model_id.as_deref(),
            PendingAction::DisableTwoPerson => None,
        }
    }

    fn parse(kind: &str, model_id: Option<String>, payload: &str) -> Result<PendingAction> {
        match kind {
            "grant" => {
                let v: serde_json::Value = serde_json::from_str(payload).map_err(corrupt)?;
                let to = v["to"]
                    .as_str()
                    .ok_or_else(|| StoreError::Corrupt("pending grant without grantee".into()))?;
                Ok(PendingAction::Grant {
                    model_id: model_id
                        .ok_or_else(|| StoreError::Corrupt("pending grant without model".into()))?,
                    to: Grantee::from_tagged(to)?,
                    expires_at: v["expires_at"].as_i64(),
                })
            }
            "delete" => Ok(PendingAction::Delete { model_id }),
            "disable-two-person" => Ok(PendingAction::DisableTwoPerson),
            other => Err(StoreError::Corrupt(format!("pending kind {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub id: String,
    pub vendor_id: String,
    pub action: PendingAction,
    pub requested_by: String,
    pub created_at: i64,
    /// `pending` or `approved`.
    pub state: String,
    pub decided_by: Option<String>,
}

fn opt_i64(row: &sqlx::any::AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

impl Store {
    // ----- groups --------------------------------------------------------------------------

    pub async fn add_group_member(
        &self,
        group: &GroupName,
        user: &UserName,
        added_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_name = $2")
            .bind(group.as_str())
            .bind(user.as_str())
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO group_members (group_name, user_name, added_by, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(group.as_str())
        .bind(user.as_str())
        .bind(added_by)
        .bind(now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn remove_group_member(
        &self,
        group: &GroupName,
        user: &UserName,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_name = $2")
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

    pub async fn groups_of(&self, user: &UserName) -> Result<Vec<GroupName>> {
        let rows = sqlx::query(
            "SELECT group_name FROM group_members WHERE user_name = $1 ORDER BY group_name",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| GroupName::parse(r.try_get("group_name")?).map_err(corrupt))
            .collect()
    }

    pub async fn group_members(&self) -> Result<Vec<(GroupName, UserName)>> {
        let rows = sqlx::query(
            "SELECT group_name, user_name FROM group_members ORDER BY group_name, user_name",
        )
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

    /// Grants read access (replacing an earlier grant to the same grantee).
    pub async fn grant(
        &self,
        model_id: &str,
        to: &Grantee,
        granted_by: &str,
        expires_at: Option<i64>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_grant(tx.conn(), model_id, to, granted_by, expires_at).await?;
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

    /// Everything a decision about `user` on one model needs.
    pub async fn access_facts(
        &self,
        model_id: &str,
        vendor_id: &str,
        user: &UserName,
    ) -> Result<AccessFacts> {
        let mut conn = self.pool.acquire().await?;
        let mut facts = AccessFacts::default();
        if let Some(r) =
            sqlx::query("SELECT expires_at FROM grants WHERE model_id = $1 AND user_name = $2")
                .bind(model_id)
                .bind(user.as_str())
                .fetch_optional(&mut *conn)
                .await?
        {
            facts.direct_grant = Some(opt_i64(&r, "expires_at")?);
        }
        let rows = sqlx::query(
            "SELECT g.group_name, g.expires_at FROM group_grants g \
             JOIN group_members m ON m.group_name = g.group_name \
             WHERE g.model_id = $1 AND m.user_name = $2 ORDER BY g.group_name",
        )
        .bind(model_id)
        .bind(user.as_str())
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            facts.group_grants.push((
                GroupName::parse(r.try_get("group_name")?).map_err(corrupt)?,
                opt_i64(r, "expires_at")?,
            ));
        }
        let rows = sqlx::query(
            "SELECT model_id FROM exclusions WHERE vendor_id = $1 AND user_name = $2 \
             AND (model_id = $3 OR model_id = '')",
        )
        .bind(vendor_id)
        .bind(user.as_str())
        .bind(model_id)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            let m: String = r.try_get("model_id")?;
            if m.is_empty() {
                facts.excluded_from_vendor = true;
            } else {
                facts.excluded_from_model = true;
            }
        }
        facts.host_groups = host_groups_on(&mut conn, model_id).await?;
        let row = sqlx::query("SELECT not_before, not_after FROM models WHERE id = $1")
            .bind(model_id)
            .fetch_one(&mut *conn)
            .await?;
        facts.not_before = opt_i64(&row, "not_before")?;
        facts.not_after = opt_i64(&row, "not_after")?;
        Ok(facts)
    }

    /// Whether `user` is excluded from every model of the vendor.
    pub async fn excluded_from_vendor(&self, vendor_id: &str, user: &UserName) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM exclusions WHERE vendor_id = $1 AND model_id = '' AND user_name = $2",
        )
        .bind(vendor_id)
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
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
        .bind(now())
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
        let done = sqlx::query(
            "DELETE FROM exclusions WHERE vendor_id = $1 AND model_id = $2 AND user_name = $3",
        )
        .bind(vendor_id)
        .bind(model_id.unwrap_or(""))
        .bind(user.as_str())
        .execute(tx.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("exclusion"));
        }
        tx.commit(entry).await?;
        Ok(())
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

    /// Sets (or clears, with `None`) a model's embargo window for bytes.
    pub async fn set_embargo(
        &self,
        model_id: &str,
        not_before: Option<i64>,
        not_after: Option<i64>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE models SET not_before = $1, not_after = $2 WHERE id = $3")
            .bind(not_before)
            .bind(not_after)
            .bind(model_id)
            .execute(tx.conn())
            .await?;
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
        sqlx::query("DELETE FROM model_host_groups WHERE model_id = $1 AND host_group = $2")
            .bind(model_id)
            .bind(group.as_str())
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO model_host_groups (model_id, host_group, added_by, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(model_id)
        .bind(group.as_str())
        .bind(added_by)
        .bind(now())
        .execute(tx.conn())
        .await?;
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

    /// Enrolls a host. A name in use by an unrevoked host is a conflict; a revoked host's name
    /// can be enrolled again (with a new certificate; the old one stops matching).
    pub async fn enroll_host(&self, host: &NewHost<'_>, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query("SELECT revoked_at FROM hosts WHERE name = $1")
            .bind(host.name.as_str())
            .fetch_optional(tx.conn())
            .await?;
        if let Some(row) = existing {
            if opt_i64(&row, "revoked_at")?.is_none() {
                return Err(StoreError::Conflict(format!(
                    "host {} is already enrolled; revoke it first to enroll it again",
                    host.name
                )));
            }
            sqlx::query("DELETE FROM hosts WHERE name = $1")
                .bind(host.name.as_str())
                .execute(tx.conn())
                .await?;
        }
        sqlx::query(
            "INSERT INTO hosts (name, host_group, cert_sha256, not_after, enrolled_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(host.name.as_str())
        .bind(host.group.as_str())
        .bind(host.cert_sha256)
        .bind(host.not_after)
        .bind(host.enrolled_by)
        .bind(now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn revoke_host(&self, name: &HostName, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE hosts SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now())
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
    pub async fn host_by_cert(&self, cert_sha256: &str) -> Result<Option<HostRecord>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE cert_sha256 = $1"))
            .bind(cert_sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let rows = sqlx::query(&format!("{HOST_SELECT} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    // ----- tokens --------------------------------------------------------------------------

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT t.id, t.role, v.name AS vendor, t.user_name, t.created_at, t.expires_at, \
             t.revoked_at FROM tokens t LEFT JOIN vendors v ON v.id = t.vendor_id \
             ORDER BY t.created_at, t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let vendor: Option<String> = r.try_get("vendor")?;
                Ok(TokenInfo {
                    id: r.try_get("id")?,
                    role: Role::parse(r.try_get("role")?).map_err(corrupt)?,
                    vendor: vendor
                        .map(|v| VendorName::parse(&v))
                        .transpose()
                        .map_err(corrupt)?,
                    user: UserName::parse(r.try_get("user_name")?).map_err(corrupt)?,
                    created_at: r.try_get("created_at")?,
                    expires_at: opt_i64(r, "expires_at")?,
                    revoked_at: opt_i64(r, "revoked_at")?,
                })
            })
            .collect()
    }

    pub async fn revoke_token(&self, id: &str, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(tx.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("unrevoked token"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    // ----- two-person rule -----------------------------------------------------------------

    pub async fn requires_approval(&self, vendor_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT require_approval FROM vendors WHERE id = $1")
            .bind(vendor_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("vendor"))?;
        let flag: i64 = row.try_get("require_approval")?;
        Ok(flag != 0)
    }

    pub async fn set_requires_approval(
        &self,
        vendor_id: &str,
        required: bool,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE vendors SET require_approval = $1 WHERE id = $2")
            .bind(i64::from(required))
            .bind(vendor_id)
            .execute(tx.conn())
            .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn create_pending(
        &self,
        id: &str,
        vendor_id: &str,
        action: &PendingAction,
        requested_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO pending_requests \
             (id, vendor_id, model_id, kind, payload, requested_by, created_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
        )
        .bind(id)
        .bind(vendor_id)
        .bind(action.model_id())
        .bind(action.kind())
        .bind(action.payload())
        .bind(requested_by)
        .bind(now())
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn pending(&self, id: &str) -> Result<Option<PendingRecord>> {
        let row = sqlx::query(&format!("{PENDING_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pending_from_row).transpose()
    }

    /// A vendor's requests still waiting for approval, oldest first.
    pub async fn pending_for_vendor(&self, vendor_id: &str) -> Result<Vec<PendingRecord>> {
        let rows = sqlx::query(&format!(
            "{PENDING_SELECT} WHERE vendor_id = $1 AND state = 'pending' ORDER BY created_at, id"
        ))
        .bind(vendor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    /// Approves a pending request and carries out what it asked for, in one transaction.
    /// The requester can never approve their own request (`Conflict`), whatever the caller
    /// checked before.
    pub async fn approve_pending(
        &self,
        id: &str,
        approver: &str,
        entry: audit::Entry,
    ) -> Result<PendingRecord> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "{PENDING_SELECT} WHERE id = $1 AND state = 'pending'"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound("pending request"))?;
        let mut record = pending_from_row(&row)?;
        if record.requested_by == approver {
            return Err(StoreError::Conflict(
                "a request needs a second person: you cannot approve your own request".into(),
            ));
        }
        match &record.action {
            PendingAction::Grant {
                model_id,
                to,
                expires_at,
            } => insert_grant(tx.conn(), model_id, to, &record.requested_by, *expires_at).await?,
            PendingAction::DisableTwoPerson => {
                sqlx::query("UPDATE vendors SET require_approval = 0 WHERE id = $1")
                    .bind(&record.vendor_id)
                    .execute(tx.conn())
                    .await?;
            }
            PendingAction::Delete { model_id } => {
                // The approved request becomes the deletion (same id), and its models answer
                // "deleted" from this commit on.
                crate::deletion::insert_deletion(
                    tx.conn(),
                    &record.id,
                    &record.vendor_id,
                    model_id.as_deref(),
                    &record.requested_by,
                    Some(approver),
                )
                .await?;
            }
        }
        let decided_at = now();
        sqlx::query(
            "UPDATE pending_requests SET state = 'approved', decided_by = $1, decided_at = $2 \
             WHERE id = $3",
        )
        .bind(approver)
        .bind(decided_at)
        .bind(id)
        .execute(tx.conn())
        .await?;
        tx.commit(entry).await?;
        record.state = "approved".into();
        record.decided_by = Some(approver.to_owned());
        Ok(record)
    }
}

async fn insert_grant(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    to: &Grantee,
    granted_by: &str,
    expires_at: Option<i64>,
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
    .bind(now())
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
    "SELECT name, host_group, cert_sha256, not_after, enrolled_by, revoked_at FROM hosts";

fn host_from_row(r: &sqlx::any::AnyRow) -> Result<HostRecord> {
    Ok(HostRecord {
        name: HostName::parse(r.try_get("name")?).map_err(corrupt)?,
        group: HostGroupName::parse(r.try_get("host_group")?).map_err(corrupt)?,
        cert_sha256: r.try_get("cert_sha256")?,
        not_after: r.try_get("not_after")?,
        enrolled_by: r.try_get("enrolled_by")?,
        revoked_at: opt_i64(r, "revoked_at")?,
    })
}

const PENDING_SELECT: &str = "SELECT id, vendor_id, model_id, kind, payload, requested_by, \
     created_at, state, decided_by FROM pending_requests";

fn pending_from_row(r: &sqlx::any::AnyRow) -> Result<PendingRecord> {
    let kind: String = r.try_get("kind")?;
    let payload: String = r.try_get("payload")?;
    Ok(PendingRecord {
        id: r.try_get("id")?,
        vendor_id: r.try_get("vendor_id")?,
        action: PendingAction::parse(&kind, r.try_get("model_id")?, &payload)?,
        requested_by: r.try_get("requested_by")?,
        created_at: r.try_get("created_at")?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
    })
}
