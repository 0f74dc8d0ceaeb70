//! Requests that wait for a vendor's admins: every change that widens access to a vendor's
//! weights or schedules their destruction, when it cannot take effect on its requester's word
//! alone (the vendor's two-person rule, or a requester who is not the vendor's admin).
//!
//! A request names how many approvals it needs; each approval is a distinct *person* (user
//! id), never the requester and never the person the request is about, and the request is
//! carried out in the transaction of the approval that completes it. A request expires at
//! `expires_at`: after that it can no longer be approved.

use sqlx::Row;
use types::{GroupName, HostGroupName, UserName};

use crate::identity::{Grantee, insert_grant};
use crate::{Result, Store, StoreError, corrupt};

/// Version of the JSON payload stored with a request. Rows from before versioning (no `v`)
/// hold the same fields.
const PAYLOAD_VERSION: i64 = 1;

/// What a pending request will do once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingAction {
    Grant {
        model_id: String,
        to: Grantee,
        expires_at: Option<i64>,
    },
    /// Handled by the deletion service; the store only keeps the request.
    Delete {
        model_id: Option<String>,
    },
    /// Turning the two-person rule off needs the two persons too.
    DisableTwoPerson,
    /// Lifting an exclusion from one model (`Some`) or the whole vendor.
    Unexclude {
        model_id: Option<String>,
        user: UserName,
    },
    /// A new embargo window that allows bytes at some time the old one did not.
    Embargo {
        model_id: String,
        not_before: Option<i64>,
        not_after: Option<i64>,
    },
    AllowHostGroup {
        model_id: String,
        group: HostGroupName,
    },
    /// The vendor's approval of one host enrollment.
    ApproveHost {
        host_id: String,
    },
    /// Setting (or clearing, `None`) the time the model shreds itself.
    DeleteAfter {
        model_id: String,
        at: Option<i64>,
    },
    AddGroupMember {
        group: GroupName,
        user: UserName,
    },
    /// A credential that counts for the vendor's models only once the vendor endorses it.
    EndorseCredential {
        token_id: String,
    },
    /// A model's egress budget that lets more leave than the current one (`None`: removed).
    Budget {
        model_id: String,
        budget: Option<crate::Budget>,
    },
}

impl PendingAction {
    /// The stable name of the kind, as stored and shown.
    pub fn kind(&self) -> &'static str {
        match self {
            PendingAction::Grant { .. } => "grant",
            PendingAction::Delete { .. } => "delete",
            PendingAction::DisableTwoPerson => "disable-two-person",
            PendingAction::Unexclude { .. } => "unexclude",
            PendingAction::Embargo { .. } => "embargo",
            PendingAction::AllowHostGroup { .. } => "allow-host-group",
            PendingAction::ApproveHost { .. } => "approve-host",
            PendingAction::DeleteAfter { .. } => "delete-after",
            PendingAction::AddGroupMember { .. } => "add-group-member",
            PendingAction::EndorseCredential { .. } => "endorse-credential",
            PendingAction::Budget { .. } => "budget",
        }
    }

    pub fn model_id(&self) -> Option<&str> {
        match self {
            PendingAction::Grant { model_id, .. }
            | PendingAction::Embargo { model_id, .. }
            | PendingAction::AllowHostGroup { model_id, .. }
            | PendingAction::DeleteAfter { model_id, .. }
            | PendingAction::Budget { model_id, .. } => Some(model_id),
            PendingAction::Delete { model_id } | PendingAction::Unexclude { model_id, .. } => {
                model_id.as_deref()
            }
            PendingAction::DisableTwoPerson
            | PendingAction::ApproveHost { .. }
            | PendingAction::AddGroupMember { .. }
            | PendingAction::EndorseCredential { .. } => None,
        }
    }

    fn payload(&self) -> String {
        let mut v = match self {
            PendingAction::Grant { to, expires_at, .. } => serde_json::json!({
                "to": to.to_tagged(),
                "expires_at": expires_at,
            }),
            PendingAction::Unexclude { user, .. } => serde_json::json!({ "user": user }),
            PendingAction::Embargo {
                not_before,
                not_after,
                ..
            } => serde_json::json!({ "not_before": not_before, "not_after": not_after }),
            PendingAction::AllowHostGroup { group, .. } => serde_json::json!({ "group": group }),
            PendingAction::ApproveHost { host_id } => serde_json::json!({ "host_id": host_id }),
            PendingAction::DeleteAfter { at, .. } => serde_json::json!({ "at": at }),
            PendingAction::AddGroupMember { group, user } => {
                serde_json::json!({ "group": group, "user": user })
            }
            PendingAction::EndorseCredential { token_id } => {
                serde_json::json!({ "token_id": token_id })
            }
            PendingAction::Budget { budget, .. } => {
                serde_json::json!({ "budget": budget.as_ref().map(crate::budgets::to_payload) })
            }
            PendingAction::Delete { .. } | PendingAction::DisableTwoPerson => {
                serde_json::json!({})
            }
        };
        v["v"] = serde_json::json!(PAYLOAD_VERSION);
        v.to_string()
    }

    fn parse(kind: &str, model_id: Option<String>, payload: &str) -> Result<PendingAction> {
        let v: serde_json::Value = serde_json::from_str(payload).map_err(corrupt)?;
        match v.get("v").map(serde_json::Value::as_i64) {
            None | Some(Some(PAYLOAD_VERSION)) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "pending request payload version {other:?}"
                )));
            }
        }
        let text = |key: &str| -> Result<String> {
            v.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| StoreError::Corrupt(format!("pending {kind} request without {key}")))
        };
        let time = |key: &str| -> Result<Option<i64>> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(t) => t.as_i64().map(Some).ok_or_else(|| {
                    StoreError::Corrupt(format!("pending {kind} request: {key} is not a time"))
                }),
            }
        };
        let model = || {
            model_id
                .clone()
                .ok_or_else(|| StoreError::Corrupt(format!("pending {kind} request without model")))
        };
        Ok(match kind {
            "grant" => PendingAction::Grant {
                model_id: model()?,
                to: Grantee::from_tagged(&text("to")?)?,
                expires_at: time("expires_at")?,
            },
            "delete" => PendingAction::Delete {
                model_id: model_id.clone(),
            },
            "disable-two-person" => PendingAction::DisableTwoPerson,
            "unexclude" => PendingAction::Unexclude {
                model_id: model_id.clone(),
                user: UserName::parse(&text("user")?).map_err(corrupt)?,
            },
            "embargo" => PendingAction::Embargo {
                model_id: model()?,
                not_before: time("not_before")?,
                not_after: time("not_after")?,
            },
            "allow-host-group" => PendingAction::AllowHostGroup {
                model_id: model()?,
                group: HostGroupName::parse(&text("group")?).map_err(corrupt)?,
            },
            "approve-host" => PendingAction::ApproveHost {
                host_id: text("host_id")?,
            },
            "delete-after" => PendingAction::DeleteAfter {
                model_id: model()?,
                at: time("at")?,
            },
            "add-group-member" => PendingAction::AddGroupMember {
                group: GroupName::parse(&text("group")?).map_err(corrupt)?,
                user: UserName::parse(&text("user")?).map_err(corrupt)?,
            },
            "endorse-credential" => PendingAction::EndorseCredential {
                token_id: text("token_id")?,
            },
            "budget" => PendingAction::Budget {
                model_id: model()?,
                budget: match v.get("budget") {
                    None => {
                        return Err(StoreError::Corrupt(
                            "pending budget request without budget".into(),
                        ));
                    }
                    Some(serde_json::Value::Null) => None,
                    Some(b) => Some(crate::budgets::from_payload(b)?),
                },
            },
            other => return Err(StoreError::Corrupt(format!("pending kind {other:?}"))),
        })
    }
}

/// A request being filed.
pub struct NewPending<'a> {
    pub id: &'a str,
    pub vendor_id: &'a str,
    pub action: &'a PendingAction,
    /// The actor (`role:name`, or `system`).
    pub requested_by: &'a str,
    /// The requesting person's user id (`None` for the service itself): never an approver.
    pub requester_id: Option<&'a str>,
    /// The person the request widens the standing of: never an approver either.
    pub subject_id: Option<&'a str>,
    /// Distinct approvers needed (at least 1).
    pub approvals_needed: i64,
    pub expires_at: i64,
}

/// One approval given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub approver: String,
    pub user_id: String,
    pub approved_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub id: String,
    pub vendor_id: String,
    pub action: PendingAction,
    pub requested_by: String,
    pub requester_id: Option<String>,
    pub subject_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// `pending` or `approved` (a pending request past `expires_at` is expired).
    pub state: String,
    pub approvals_needed: i64,
    pub approvals: Vec<Approval>,
}

impl PendingRecord {
    pub fn expired(&self, now: i64) -> bool {
        self.state == "pending" && self.expires_at <= now
    }

    /// Requests this one leads to (endorsing the credentials of a person it gave standing)
    /// need the same approvals and live as long.
    fn follow_up(&self) -> FollowUp {
        FollowUp {
            approvals_needed: self.approvals_needed,
            requested_by: self.requested_by.clone(),
            ttl_secs: self.expires_at.saturating_sub(self.created_at),
        }
    }

    /// The approvers, as a deletion or schedule records them (`role:name`, comma-separated).
    pub fn approvers(&self) -> String {
        self.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How requests filed as a consequence of a change are made: endorsements of the credentials
/// of a person a grant or group membership just gave standing at a vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub approvals_needed: i64,
    pub requested_by: String,
    pub ttl_secs: i64,
}

/// Who approves.
pub struct Approver<'a> {
    pub actor: &'a str,
    pub user_id: &'a str,
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// Recorded; the request still waits for more approvals.
    Partial { have: i64, need: i64 },
    /// The approval completed the request, which was carried out.
    Done,
}

pub(crate) async fn insert_pending(
    conn: &mut sqlx::AnyConnection,
    p: &NewPending<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_requests \
         (id, vendor_id, model_id, kind, payload, requested_by, requester_id, subject_id, \
         approvals_needed, created_at, expires_at, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending')",
    )
    .bind(p.id)
    .bind(p.vendor_id)
    .bind(p.action.model_id())
    .bind(p.action.kind())
    .bind(p.action.payload())
    .bind(p.requested_by)
    .bind(p.requester_id)
    .bind(p.subject_id)
    .bind(p.approvals_needed.max(1))
    .bind(now)
    .bind(p.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

const PENDING_SELECT: &str = "SELECT id, vendor_id, model_id, kind, payload, requested_by, \
     requester_id, subject_id, approvals_needed, created_at, expires_at, state \
     FROM pending_requests";

/// Request `id` as a transaction sees it; `NotFound` when there is none.
async fn pending_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<PendingRecord> {
    let row = sqlx::query(&format!("{PENDING_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("pending request"))?;
    pending_from_row(conn, &row).await
}

async fn pending_from_row(
    conn: &mut sqlx::AnyConnection,
    r: &sqlx::any::AnyRow,
) -> Result<PendingRecord> {
    let id: String = r.try_get("id")?;
    let kind: String = r.try_get("kind")?;
    let payload: String = r.try_get("payload")?;
    let approvals = sqlx::query(
        "SELECT approver, user_id, approved_at FROM pending_approvals WHERE request_id = $1 \
         ORDER BY approved_at, user_id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|a| {
        Ok(Approval {
            approver: a.try_get("approver")?,
            user_id: a.try_get("user_id")?,
            approved_at: a.try_get("approved_at")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(PendingRecord {
        action: PendingAction::parse(&kind, r.try_get("model_id")?, &payload)?,
        id,
        vendor_id: r.try_get("vendor_id")?,
        requested_by: r.try_get("requested_by")?,
        requester_id: r.try_get("requester_id")?,
        subject_id: r.try_get("subject_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        state: r.try_get("state")?,
        approvals_needed: r.try_get("approvals_needed")?,
        approvals,
    })
}

impl Store {
    /// Whether the vendor's two-person rule is on.
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

    /// Files a request (with its audit entry).
    pub async fn create_pending(
        &self,
        request: &NewPending<'_>,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_pending(tx.conn(), request, self.clock.now()).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    pub async fn pending(&self, id: &str) -> Result<Option<PendingRecord>> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(&format!("{PENDING_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => Ok(Some(pending_from_row(&mut conn, &r).await?)),
            None => Ok(None),
        }
    }

    /// A vendor's requests still waiting (expired ones included, marked by their time),
    /// oldest first.
    pub async fn pending_for_vendor(&self, vendor_id: &str) -> Result<Vec<PendingRecord>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(&format!(
            "{PENDING_SELECT} WHERE vendor_id = $1 AND state = 'pending' ORDER BY created_at, id"
        ))
        .bind(vendor_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(pending_from_row(&mut conn, r).await?);
        }
        Ok(out)
    }

    /// Ends a pending request without carrying it out: `rejected` by someone else,
    /// `cancelled` by its requester (`by_requester`). Nothing of it ever takes effect; a later
    /// approval is refused. `Conflict` when it is no longer pending.
    pub async fn reject_pending(
        &self,
        id: &str,
        actor: &str,
        by_requester: bool,
        entry: impl FnOnce(&PendingRecord) -> audit::Entry,
    ) -> Result<PendingRecord> {
        let mut tx = self.begin().await?;
        let conn = tx.conn();
        let mut record = pending_in(conn, id).await?;
        if record.state != "pending" {
            return Err(StoreError::Conflict(format!(
                "request {id} is already {}",
                record.state
            )));
        }
        let state = if by_requester {
            "cancelled"
        } else {
            "rejected"
        };
        // The state guard makes a concurrent approval and rejection exclusive.
        let changed = sqlx::query(
            "UPDATE pending_requests SET state = $1, decided_by = $2, decided_at = $3 \
             WHERE id = $4 AND state = 'pending'",
        )
        .bind(state)
        .bind(actor)
        .bind(self.clock.now())
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(StoreError::Conflict(format!(
                "request {id} was decided meanwhile"
            )));
        }
        record.state = state.to_owned();
        let entry = entry(&record);
        tx.commit(entry).await?;
        Ok(record)
    }

    /// Records one person's approval of a request and, when it is the last one needed,
    /// carries the request out, all in one transaction. Refused (`Conflict`, nothing
    /// recorded) when the request is not pending, has expired, or the approver approved it
    /// already; `Refused` when it was made by the approver or is about them; whatever the
    /// caller checked before.
    /// `entry` builds the audit entry from the outcome.
    pub async fn approve_pending(
        &self,
        id: &str,
        approver: &Approver<'_>,
        entry: impl FnOnce(&PendingRecord, &Approved) -> audit::Entry,
    ) -> Result<(PendingRecord, Approved)> {
        let mut tx = self.begin().await?;
        let conn = tx.conn();
        let mut record = pending_in(conn, id).await?;
        let at = self.clock.now();
        if record.state != "pending" {
            return Err(StoreError::Conflict(format!(
                "request {id} is already {}",
                record.state
            )));
        }
        if record.expired(at) {
            return Err(StoreError::Conflict(format!(
                "request {id} expired unapproved; ask for it again"
            )));
        }
        if record.requester_id.as_deref() == Some(approver.user_id) {
            return Err(StoreError::Refused(
                "you cannot approve your own request (under any role or token): another of the \
                 vendor's admins must"
                    .into(),
            ));
        }
        if record.subject_id.as_deref() == Some(approver.user_id) {
            return Err(StoreError::Refused(
                "this request widens your own access: another of the vendor's admins must approve it"
                    .into(),
            ));
        }
        if record
            .approvals
            .iter()
            .any(|a| a.user_id == approver.user_id)
        {
            return Err(StoreError::Conflict(format!(
                "you already approved request {id}; it needs another person"
            )));
        }
        sqlx::query(
            "INSERT INTO pending_approvals (request_id, user_id, approver, approved_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(approver.user_id)
        .bind(approver.actor)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        record.approvals.push(Approval {
            approver: approver.actor.to_owned(),
            user_id: approver.user_id.to_owned(),
            approved_at: at,
        });
        let have = i64::try_from(record.approvals.len()).unwrap_or(i64::MAX);
        let outcome = if have < record.approvals_needed {
            Approved::Partial {
                have,
                need: record.approvals_needed,
            }
        } else {
            // The state guard makes a concurrent rejection and this approval exclusive: the
            // one that loses changes nothing (its transaction is dropped).
            let changed = sqlx::query(
                "UPDATE pending_requests SET state = 'approved', decided_by = $1, decided_at = $2 \
                 WHERE id = $3 AND state = 'pending'",
            )
            .bind(approver.actor)
            .bind(at)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if changed != 1 {
                return Err(StoreError::Conflict(format!(
                    "request {id} was decided meanwhile"
                )));
            }
            carry_out(conn, &record, self.clock.now()).await?;
            record.state = "approved".into();
            Approved::Done
        };
        let entry = entry(&record, &outcome);
        tx.commit(entry).await?;
        Ok((record, outcome))
    }
}

/// Does what an approved request asked for, inside the approving transaction.
async fn carry_out(conn: &mut sqlx::AnyConnection, record: &PendingRecord, now: i64) -> Result<()> {
    let vendor_id = record.vendor_id.as_str();
    let approvers = record.approvers();
    match &record.action {
        PendingAction::Grant {
            model_id,
            to,
            expires_at,
        } => {
            insert_grant(conn, model_id, to, &record.requested_by, *expires_at, now).await?;
            if let Grantee::User(user) = to {
                Store::request_endorsements_in(conn, vendor_id, user, &record.follow_up(), now)
                    .await?;
            }
        }
        PendingAction::DisableTwoPerson => {
            sqlx::query("UPDATE vendors SET require_approval = 0 WHERE id = $1")
                .bind(vendor_id)
                .execute(&mut *conn)
                .await?;
        }
        PendingAction::Delete { model_id } => {
            // The approved request becomes the deletion (same id), and its models answer
            // "deleted" from this commit on.
            crate::deletion::insert_deletion(
                conn,
                &record.id,
                vendor_id,
                model_id.as_deref(),
                &record.requested_by,
                Some(&approvers),
                now,
            )
            .await?;
        }
        PendingAction::Unexclude { model_id, user } => {
            crate::identity::delete_exclusion(conn, vendor_id, model_id.as_deref(), user).await?;
        }
        PendingAction::Embargo {
            model_id,
            not_before,
            not_after,
        } => {
            crate::identity::update_embargo(conn, model_id, *not_before, *not_after).await?;
        }
        PendingAction::AllowHostGroup { model_id, group } => {
            crate::identity::insert_host_group(conn, model_id, group, &record.requested_by, now)
                .await?;
        }
        PendingAction::ApproveHost { host_id } => {
            crate::identity::insert_vendor_host(conn, vendor_id, host_id, &approvers, now).await?;
        }
        PendingAction::DeleteAfter { model_id, at } => {
            crate::deletion::update_delete_after(
                conn,
                model_id,
                *at,
                &record.requested_by,
                Some(&approvers),
            )
            .await?;
        }
        PendingAction::AddGroupMember { group, user } => {
            crate::identity::insert_group_member(
                conn,
                vendor_id,
                group,
                user,
                &record.requested_by,
                now,
            )
            .await?;
            Store::request_endorsements_in(conn, vendor_id, user, &record.follow_up(), now).await?;
        }
        PendingAction::Budget { model_id, budget } => {
            crate::budgets::write_budget(
                conn,
                model_id,
                budget.as_ref(),
                &record.requested_by,
                now,
            )
            .await?;
        }
        PendingAction::EndorseCredential { token_id } => {
            crate::users::endorse(
                conn,
                token_id,
                vendor_id,
                &format!("approved by {approvers}"),
                now,
            )
            .await?;
        }
    }
    Ok(())
}
