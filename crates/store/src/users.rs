//! People and their credentials.
//!
//! A user is a record with an id that is never reused, and a name that never changes hands:
//! issuing a token for a name that exists issues it for that same person. Who may act for a
//! vendor is the vendor's business, so a token counts for a vendor's models only when:
//!
//! * it is the person's first credential (created with the user), a committer's or the
//!   operator's (`all_vendors`), or rotated by its holder from such a token; or
//! * the vendor endorsed it (`token_endorsements`): a credential issued for a person who
//!   already existed, and every admin or auditor token of a vendor that already has an admin,
//!   waits for that vendor's admins to approve it. The vendor's very first admin token is
//!   endorsed when it is made, and marks the vendor as having an admin for good.
//!
//! So the operator, acting alone, cannot obtain a working credential for an existing
//! committer's grants, nor make itself a vendor admin.

use sqlx::Row;
use types::{Role, UserName, VendorName};

use crate::{Result, Store, StoreError, corrupt};

/// A stored token: only the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub role: Role,
    pub vendor_id: Option<String>,
    pub vendor: Option<VendorName>,
    pub user_id: String,
    pub user: UserName,
    /// Counts for every vendor (see the module documentation); otherwise only for vendors
    /// that endorsed it.
    pub all_vendors: bool,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The operator bootstrap token: it may only create named operator tokens, once.
    pub bootstrap: bool,
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub secret_hash: &'a [u8; 32],
    pub role: Role,
    pub vendor_id: Option<&'a str>,
    pub user: &'a UserName,
    pub expires_at: Option<i64>,
    /// The actor issuing it (`role:name`), for the record.
    pub created_by: &'a str,
    /// Made as the operator bootstrap token.
    pub bootstrap: bool,
    /// A bootstrap token issuing this one: revoked in the same transaction, and the issue
    /// refused if it was revoked already (single use, even under concurrent requests).
    pub consumes: Option<&'a str>,
}

/// A user record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: UserName,
    pub created_by: String,
    pub created_at: i64,
}

/// What issuing a token did, besides storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub user_id: String,
    /// The user was created with this token.
    pub new_user: bool,
    /// Vendors for which the token counts at once.
    pub endorsed_for: Vec<String>,
    /// Vendors whose approval the token waits for: `(vendor id, pending request id)`.
    pub awaiting: Vec<(String, String)>,
}

/// A token as listed: never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub user: UserName,
    pub user_id: String,
    pub all_vendors: bool,
    /// Names of the vendors that endorsed it.
    pub endorsed_by: Vec<VendorName>,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const TOKEN_SELECT: &str = "SELECT t.id, t.secret_hash, t.role, t.vendor_id, v.name AS vendor, \
     t.user_id, t.user_name, t.all_vendors, t.expires_at, t.revoked_at, t.bootstrap \
     FROM tokens t LEFT JOIN vendors v ON v.id = t.vendor_id";

fn token_from_row(r: &sqlx::any::AnyRow) -> Result<TokenRecord> {
    let vendor: Option<String> = r.try_get("vendor")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        role: Role::parse(r.try_get("role")?).map_err(corrupt)?,
        vendor_id: r.try_get("vendor_id")?,
        vendor: vendor
            .map(|v| VendorName::parse(&v))
            .transpose()
            .map_err(corrupt)?,
        user_id: r
            .try_get::<Option<String>, _>("user_id")?
            .ok_or_else(|| StoreError::Corrupt("a token without a user".into()))?,
        user: UserName::parse(r.try_get("user_name")?).map_err(corrupt)?,
        all_vendors: r.try_get::<i64, _>("all_vendors")? != 0,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        bootstrap: r.try_get::<i64, _>("bootstrap")? != 0,
    })
}

/// The id of the pending request that endorses `token_id` for `vendor_id`: derived from both,
/// so asking twice finds the same request.
pub fn endorsement_request_id(token_id: &str, vendor_id: &str) -> String {
    format!("{token_id}{vendor_id}")
}

impl Store {
    pub async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT id, name, created_by, created_at FROM users WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT id, name, created_by, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Issues a token for `token.user`, creating the user when the name is new. See the
    /// module documentation for which vendors it counts for; for every vendor where it must
    /// wait, a pending request (`EndorseCredential`) is filed in the same transaction. The
    /// operator issues tokens, so every approval must come from the vendor's admins: one, or
    /// two distinct people under the vendor's two-person rule. `new_user_id` names a user
    /// created here.
    pub async fn issue_token(
        &self,
        token: &NewToken<'_>,
        new_user_id: &str,
        pending_ttl_secs: i64,
        entry: audit::Entry,
    ) -> Result<IssuedToken> {
        let mut tx = self.begin().await?;
        let conn = tx.conn();
        if let Some(bootstrap) = token.consumes {
            let revoked = sqlx::query(
                "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND bootstrap = 1 AND revoked_at IS NULL",
            )
            .bind(self.clock.now())
            .bind(bootstrap)
            .execute(&mut *conn)
            .await?;
            if revoked.rows_affected() != 1 {
                return Err(StoreError::Refused(
                    "the bootstrap token has been used already; use the operator token it created"
                        .into(),
                ));
            }
        }
        let existing = sqlx::query("SELECT id FROM users WHERE name = $1")
            .bind(token.user.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let (user_id, new_user) = match existing {
            Some(r) => (r.try_get::<String, _>("id")?, false),
            None => {
                sqlx::query(
                    "INSERT INTO users (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(new_user_id)
                .bind(token.user.as_str())
                .bind(token.created_by)
                .bind(self.clock.now())
                .execute(&mut *conn)
                .await?;
                (new_user_id.to_owned(), true)
            }
        };
        let vendor_scoped = matches!(token.role, Role::VendorAdmin | Role::Auditor);
        // An operator token gives no access to any vendor's weights whoever holds it (the
        // policies say so); a committer's counts everywhere only as the person's first.
        let all_vendors = match token.role {
            Role::Operator => true,
            Role::Committer => new_user,
            Role::VendorAdmin | Role::Auditor => false,
        };
        sqlx::query(
            "INSERT INTO tokens (id, secret_hash, role, vendor_id, user_name, user_id, all_vendors, \
             created_by, created_at, expires_at, bootstrap) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(token.id)
        .bind(token.secret_hash.to_vec())
        .bind(token.role.as_str())
        .bind(token.vendor_id)
        .bind(token.user.as_str())
        .bind(&user_id)
        .bind(i64::from(all_vendors))
        .bind(token.created_by)
        .bind(self.clock.now())
        .bind(token.expires_at)
        .bind(i64::from(token.bootstrap))
        .execute(&mut *conn)
        .await?;
        let mut issued = IssuedToken {
            user_id: user_id.clone(),
            new_user,
            endorsed_for: Vec::new(),
            awaiting: Vec::new(),
        };
        // The vendors this credential must be endorsed by before it counts there.
        let mut vendors = Vec::new();
        if let (true, Some(vendor_id)) = (vendor_scoped, token.vendor_id) {
            let row = sqlx::query("SELECT admin_established FROM vendors WHERE id = $1")
                .bind(vendor_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound("vendor"))?;
            if row.try_get::<i64, _>("admin_established")? == 0 {
                // Before the vendor's first admin exists, the operator sets the vendor up.
                endorse(
                    conn,
                    token.id,
                    vendor_id,
                    "issued before the vendor had an admin",
                    self.clock.now(),
                )
                .await?;
                issued.endorsed_for.push(vendor_id.to_owned());
                if token.role == Role::VendorAdmin {
                    sqlx::query("UPDATE vendors SET admin_established = 1 WHERE id = $1")
                        .bind(vendor_id)
                        .execute(&mut *conn)
                        .await?;
                }
            } else {
                vendors.push(vendor_id.to_owned());
            }
        } else if !all_vendors {
            vendors = standing_vendors(conn, &user_id, token.user).await?;
        }
        for vendor_id in vendors {
            let id = endorsement_request_id(token.id, &vendor_id);
            let rule = sqlx::query("SELECT require_approval FROM vendors WHERE id = $1")
                .bind(&vendor_id)
                .fetch_one(&mut *conn)
                .await?;
            let needed = 1 + i64::from(rule.try_get::<i64, _>("require_approval")? != 0);
            crate::pending::insert_pending(
                conn,
                &crate::pending::NewPending {
                    id: &id,
                    vendor_id: &vendor_id,
                    action: &crate::PendingAction::EndorseCredential {
                        token_id: token.id.to_owned(),
                    },
                    requested_by: token.created_by,
                    requester_id: None,
                    subject_id: Some(&user_id),
                    approvals_needed: needed,
                    expires_at: self.clock.now().saturating_add(pending_ttl_secs),
                },
                self.clock.now(),
            )
            .await?;
            issued.awaiting.push((vendor_id, id));
        }
        tx.commit(entry).await?;
        Ok(issued)
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub async fn token_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Where a token counts: the vendors that endorsed it, and the vendors where a request to
    /// endorse it waits (with the request's id).
    pub async fn credential_status(
        &self,
        token_id: &str,
    ) -> Result<(Vec<VendorName>, Vec<(VendorName, String)>)> {
        let endorsed = sqlx::query(
            "SELECT v.name FROM token_endorsements e JOIN vendors v ON v.id = e.vendor_id \
             WHERE e.token_id = $1 ORDER BY v.name",
        )
        .bind(token_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| VendorName::parse(r.try_get("name")?).map_err(corrupt))
        .collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT v.name, p.id, p.payload FROM pending_requests p \
             JOIN vendors v ON v.id = p.vendor_id \
             WHERE p.kind = 'endorse-credential' AND p.state = 'pending' AND p.expires_at > $1 \
             ORDER BY v.name",
        )
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await?;
        let mut awaiting = Vec::new();
        for r in &rows {
            let payload: String = r.try_get("payload")?;
            let v: serde_json::Value = serde_json::from_str(&payload).map_err(corrupt)?;
            if v.get("token_id").and_then(serde_json::Value::as_str) == Some(token_id) {
                awaiting.push((
                    VendorName::parse(r.try_get("name")?).map_err(corrupt)?,
                    r.try_get("id")?,
                ));
            }
        }
        Ok((endorsed, awaiting))
    }

    /// Whether the vendor endorsed this token (see the module documentation).
    pub async fn token_endorsed(&self, token_id: &str, vendor_id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM token_endorsements WHERE token_id = $1 AND vendor_id = $2",
        )
        .bind(token_id)
        .bind(vendor_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Replaces the holder's token with a new one that counts exactly where the old one did,
    /// revoking the old one in the same transaction: the holder can shed a secret someone
    /// else saw (the operator who issued it) without asking any vendor again.
    pub async fn rotate_token(
        &self,
        old_id: &str,
        new_id: &str,
        secret_hash: &[u8; 32],
        expires_at: Option<i64>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let conn = tx.conn();
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(self.clock.now())
                .bind(old_id)
                .execute(&mut *conn)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("unrevoked token"));
        }
        sqlx::query(
            "INSERT INTO tokens (id, secret_hash, role, vendor_id, user_name, user_id, all_vendors, \
             parent_id, created_by, created_at, expires_at) \
             SELECT $1, $2, role, vendor_id, user_name, user_id, all_vendors, id, \
             role || ':' || user_name, $3, $4 FROM tokens WHERE id = $5",
        )
        .bind(new_id)
        .bind(secret_hash.to_vec())
        .bind(self.clock.now())
        .bind(expires_at)
        .bind(old_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO token_endorsements (token_id, vendor_id, how, endorsed_at) \
             SELECT $1, vendor_id, 'rotated from ' || token_id, $2 FROM token_endorsements \
             WHERE token_id = $3",
        )
        .bind(new_id)
        .bind(self.clock.now())
        .bind(old_id)
        .execute(&mut *conn)
        .await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT t.id, t.role, v.name AS vendor, t.user_name, t.user_id, t.all_vendors, \
             t.created_at, t.created_by, t.expires_at, t.revoked_at \
             FROM tokens t LEFT JOIN vendors v ON v.id = t.vendor_id \
             ORDER BY t.created_at, t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let endorsements = sqlx::query(
            "SELECT e.token_id, v.name FROM token_endorsements e \
             JOIN vendors v ON v.id = e.vendor_id ORDER BY v.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let vendor: Option<String> = r.try_get("vendor")?;
                let mut endorsed_by = Vec::new();
                for e in &endorsements {
                    if e.try_get::<String, _>("token_id")? == id {
                        endorsed_by.push(VendorName::parse(e.try_get("name")?).map_err(corrupt)?);
                    }
                }
                Ok(TokenInfo {
                    id,
                    role: Role::parse(r.try_get("role")?).map_err(corrupt)?,
                    vendor: vendor
                        .map(|v| VendorName::parse(&v))
                        .transpose()
                        .map_err(corrupt)?,
                    user: UserName::parse(r.try_get("user_name")?).map_err(corrupt)?,
                    user_id: r
                        .try_get::<Option<String>, _>("user_id")?
                        .unwrap_or_default(),
                    all_vendors: r.try_get::<i64, _>("all_vendors")? != 0,
                    endorsed_by,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                    expires_at: r.try_get("expires_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token, unless it is the last live operator token (a named one: the
    /// bootstrap token does not count): revoking that would leave nobody to run the service,
    /// so it is refused with [`StoreError::LastOperator`] and nothing changes. Audited
    /// transactions run one at a time (each claims the audit sequence first), so two revokes
    /// cannot each see the other's token as the one left.
    pub async fn revoke_token(&self, id: &str, entry: audit::Entry) -> Result<()> {
        let mut tx = self.begin().await?;
        let at = self.clock.now();
        let live_operator = sqlx::query(
            "SELECT COUNT(*) AS n FROM tokens WHERE id = $1 AND role = 'operator' \
             AND bootstrap = 0 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(at)
        .fetch_one(tx.conn())
        .await?
        .try_get::<i64, _>("n")?;
        if live_operator > 0 {
            let others = sqlx::query(
                "SELECT COUNT(*) AS n FROM tokens WHERE id <> $1 AND role = 'operator' \
                 AND bootstrap = 0 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(id)
            .bind(at)
            .fetch_one(tx.conn())
            .await?
            .try_get::<i64, _>("n")?;
            if others == 0 {
                return Err(StoreError::LastOperator);
            }
        }
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(self.clock.now())
                .bind(id)
                .execute(tx.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("unrevoked token"));
        }
        tx.commit(entry).await?;
        Ok(())
    }

    /// Files endorsement requests at `vendor_id` for every live credential of `user` that does
    /// not count there yet (a credential re-issued by the operator), because the vendor just
    /// gave that person standing. Returns the requests filed (existing ones are kept).
    pub(crate) async fn request_endorsements_in(
        conn: &mut sqlx::AnyConnection,
        vendor_id: &str,
        user: &UserName,
        follow_up: &crate::FollowUp,
        now: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT t.id, t.user_id FROM tokens t WHERE t.user_name = $1 AND t.all_vendors = 0 \
             AND t.role = 'committer' AND t.revoked_at IS NULL AND NOT EXISTS \
             (SELECT 1 FROM token_endorsements e WHERE e.token_id = t.id AND e.vendor_id = $2)",
        )
        .bind(user.as_str())
        .bind(vendor_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut filed = Vec::new();
        for r in &rows {
            let token_id: String = r.try_get("id")?;
            let user_id: Option<String> = r.try_get("user_id")?;
            let id = endorsement_request_id(&token_id, vendor_id);
            let exists = sqlx::query("SELECT 1 AS one FROM pending_requests WHERE id = $1")
                .bind(&id)
                .fetch_optional(&mut *conn)
                .await?;
            if exists.is_some() {
                continue;
            }
            crate::pending::insert_pending(
                conn,
                &crate::pending::NewPending {
                    id: &id,
                    vendor_id,
                    action: &crate::PendingAction::EndorseCredential { token_id },
                    requested_by: &follow_up.requested_by,
                    requester_id: None,
                    subject_id: user_id.as_deref(),
                    approvals_needed: follow_up.approvals_needed,
                    expires_at: now.saturating_add(follow_up.ttl_secs),
                },
                now,
            )
            .await?;
            filed.push(id);
        }
        Ok(filed)
    }
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        name: UserName::parse(r.try_get("name")?).map_err(corrupt)?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) async fn endorse(
    conn: &mut sqlx::AnyConnection,
    token_id: &str,
    vendor_id: &str,
    how: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM token_endorsements WHERE token_id = $1 AND vendor_id = $2")
        .bind(token_id)
        .bind(vendor_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO token_endorsements (token_id, vendor_id, how, endorsed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_id)
    .bind(vendor_id)
    .bind(how)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Vendors where `user` has standing: a grant on one of their models, membership in one of
/// their groups, or a vendor-scoped role token they endorsed.
async fn standing_vendors(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    user: &UserName,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT m.vendor_id AS v FROM grants g JOIN models m ON m.id = g.model_id \
         WHERE g.user_name = $1 \
         UNION SELECT vendor_id AS v FROM group_members WHERE user_name = $1 \
         UNION SELECT e.vendor_id AS v FROM token_endorsements e JOIN tokens t ON t.id = e.token_id \
         WHERE t.user_id = $2 AND t.revoked_at IS NULL \
         ORDER BY v",
    )
    .bind(user.as_str())
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("v")?)).collect()
}
