//! Egress budgets: how much of a model may leave, per host, per person, to how many hosts, and
//! how many fetches a host may run at once. A model without a row in `model_budgets` is
//! unlimited.
//!
//! Enforcement happens in the fetch's own audit transaction ([`Store::record_fetch_within_budget`]),
//! before a byte of the range leaves: the check and the reservation of the range's bytes are
//! one transaction, and every audited transaction starts by taking the audit head's row lock
//! (`tx.rs`), which orders all of them across every instance on the database. So two
//! instances can never both see the same remaining budget, and a budget is never overshot:
//! a range that does not fit is refused whole.
//!
//! Bytes are kept in time buckets (`egress_use`): a reservation adds to the bucket of its
//! minute (for windows under an hour, of a sixtieth of the window, at least a second). A
//! bucket counts toward the window until its end leaves it, so bytes count at most one
//! bucket width longer than the window, never shorter, and the check is one indexed sum.
//! Rows are kept for the window or a week, whichever is longer, so a longer window set later
//! counts what was served before it.
//!
//! Sums are cast to BIGINT: PostgreSQL sums BIGINT as NUMERIC, which sqlx's `Any` driver
//! cannot read.
//!
//! Fetches in flight hold a lease row (`fetch_leases`) when the model has a concurrency
//! limit; the server renews it while the transfer runs and deletes it when the transfer ends.
//! A crashed server's leases expire on their own. The leases are bookkeeping under the
//! fetch's audited entry, like an upload's progress.

use sqlx::Row;

use crate::convert::{db_int, get_uint};
use crate::copies::{HostCopy, add_copy};
use crate::{Result, Store, StoreError, corrupt};

/// Rows of served bytes are kept at least this long (seconds).
const KEEP_USE_SECS: u64 = 7 * 24 * 3600;
/// The longest window a budget may have (seconds).
pub const MAX_WINDOW_SECS: u64 = 31 * 24 * 3600;

/// A byte limit: absolute, or a multiple of the model's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteLimit {
    Bytes(u64),
    /// Thousandths of the size of the model's newest revision (2000 = twice its size).
    ModelSizeMilli(u64),
}

impl ByteLimit {
    /// The limit in bytes for a model of `model_size` bytes.
    pub fn bytes(self, model_size: u64) -> u64 {
        match self {
            ByteLimit::Bytes(b) => b,
            ByteLimit::ModelSizeMilli(milli) => {
                let b = u128::from(model_size) * u128::from(milli) / 1000;
                u64::try_from(b).unwrap_or(u64::MAX)
            }
        }
    }

    fn columns(limit: Option<ByteLimit>) -> (Option<u64>, Option<u64>) {
        match limit {
            None => (None, None),
            Some(ByteLimit::Bytes(b)) => (Some(b), None),
            Some(ByteLimit::ModelSizeMilli(m)) => (None, Some(m)),
        }
    }

    fn from_columns(bytes: Option<u64>, milli: Option<u64>, what: &str) -> Result<Option<Self>> {
        match (bytes, milli) {
            (None, None) => Ok(None),
            (Some(b), None) => Ok(Some(ByteLimit::Bytes(b))),
            (None, Some(m)) => Ok(Some(ByteLimit::ModelSizeMilli(m))),
            (Some(_), Some(_)) => Err(StoreError::Corrupt(format!(
                "budget {what} is both absolute and a multiple"
            ))),
        }
    }
}

/// A model's egress budget. Each limit is optional (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The rolling window of both byte limits, in seconds.
    pub window_secs: u64,
    /// Bytes one host may receive per window.
    pub per_host: Option<ByteLimit>,
    /// Bytes one person may receive per window, over all hosts.
    pub per_user: Option<ByteLimit>,
    /// Distinct hosts that may hold the model.
    pub max_hosts: Option<u64>,
    /// Fetches of the model one host may run at once.
    pub per_host_concurrency: Option<u64>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn limits_anything(&self) -> bool {
        self.per_host.is_some()
            || self.per_user.is_some()
            || self.max_hosts.is_some()
            || self.per_host_concurrency.is_some()
    }

    /// The width of the buckets served bytes are kept in, for this window.
    fn bucket_secs(&self) -> i64 {
        i64::try_from((self.window_secs / 60).clamp(1, 60)).unwrap_or(60)
    }

    fn window(&self) -> i64 {
        i64::try_from(self.window_secs).unwrap_or(i64::MAX)
    }
}

/// A budget as stored: who set it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRecord {
    pub budget: Budget,
    pub set_by: String,
    pub set_at: i64,
}

/// Why a fetch was refused, with what a person needs to know to wait or ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    /// The host's bytes in the window, plus this request, would pass the limit. `retry_at`
    /// is when enough of them have left the window (`None`: the request alone is larger).
    PerHost {
        limit: u64,
        used: u64,
        asked: u64,
        window_secs: u64,
        retry_at: Option<i64>,
    },
    /// The same, for the person over all hosts.
    PerUser {
        limit: u64,
        used: u64,
        asked: u64,
        window_secs: u64,
        retry_at: Option<i64>,
    },
    /// As many other hosts hold the model as the budget allows.
    MaxHosts { limit: u64 },
    /// The host runs as many fetches of the model as allowed; the first lease ends at
    /// `retry_at` at the latest.
    Concurrency { limit: u64, retry_at: i64 },
}

/// What a fetch within its budget was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The fetch entry's sequence number.
    pub seq: u64,
    /// The lease to renew while the transfer runs and release when it ends, when the model
    /// limits concurrent fetches.
    pub lease: Option<String>,
}

/// A fetch asking to be admitted: whose, from where, and the lease it takes.
pub struct EgressRequest<'a> {
    pub user_id: &'a str,
    /// A fresh random id, used as the lease's id if one is needed.
    pub lease_id: &'a str,
    /// How long the lease lasts unless renewed (seconds).
    pub lease_secs: i64,
}

/// Current use of a model's budget.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetUse {
    /// The model's size (its newest revision), which multiples are taken of.
    pub model_size: u64,
    /// Bytes in the window, per host name (hosts with any).
    pub hosts: Vec<(String, u64)>,
    /// Bytes in the window, per person's name.
    pub users: Vec<(String, u64)>,
    /// Hosts counted against `max_hosts`.
    pub holding_hosts: Vec<String>,
    /// Fetches in flight now, per host name.
    pub in_flight: Vec<(String, u64)>,
}

const BUDGET_SELECT: &str = "SELECT window_secs, per_host_bytes, per_host_size_milli, \
     per_user_bytes, per_user_size_milli, max_hosts, per_host_concurrency, set_by, set_at \
     FROM model_budgets WHERE model_id = $1";

fn opt_uint(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = row.try_get(column)?;
    value.map(|v| crate::convert::uint(v, column)).transpose()
}

async fn budget_in(conn: &mut sqlx::AnyConnection, model_id: &str) -> Result<Option<BudgetRecord>> {
    let Some(row) = sqlx::query(BUDGET_SELECT)
        .bind(model_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let budget = Budget {
        window_secs: get_uint(&row, "window_secs")?,
        per_host: ByteLimit::from_columns(
            opt_uint(&row, "per_host_bytes")?,
            opt_uint(&row, "per_host_size_milli")?,
            "per_host",
        )?,
        per_user: ByteLimit::from_columns(
            opt_uint(&row, "per_user_bytes")?,
            opt_uint(&row, "per_user_size_milli")?,
            "per_user",
        )?,
        max_hosts: opt_uint(&row, "max_hosts")?,
        per_host_concurrency: opt_uint(&row, "per_host_concurrency")?,
    };
    if budget.window_secs == 0 {
        return Err(corrupt("budget window of 0 seconds"));
    }
    Ok(Some(BudgetRecord {
        budget,
        set_by: row.try_get("set_by")?,
        set_at: row.try_get("set_at")?,
    }))
}

fn opt_int(v: Option<u64>) -> Result<Option<i64>> {
    v.map(db_int).transpose()
}

/// Sets (or with `None` removes) a model's budget, inside the caller's transaction.
pub(crate) async fn write_budget(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    budget: Option<&Budget>,
    set_by: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM model_budgets WHERE model_id = $1")
        .bind(model_id)
        .execute(&mut *conn)
        .await?;
    let Some(b) = budget.filter(|b| b.limits_anything()) else {
        return Ok(());
    };
    let (host_bytes, host_milli) = ByteLimit::columns(b.per_host);
    let (user_bytes, user_milli) = ByteLimit::columns(b.per_user);
    sqlx::query(
        "INSERT INTO model_budgets (model_id, window_secs, per_host_bytes, per_host_size_milli, \
         per_user_bytes, per_user_size_milli, max_hosts, per_host_concurrency, set_by, set_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(model_id)
    .bind(db_int(b.window_secs)?)
    .bind(opt_int(host_bytes)?)
    .bind(opt_int(host_milli)?)
    .bind(opt_int(user_bytes)?)
    .bind(opt_int(user_milli)?)
    .bind(opt_int(b.max_hosts)?)
    .bind(opt_int(b.per_host_concurrency)?)
    .bind(set_by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The size of the model's newest (non-derived) revision, in bytes.
async fn model_size_in(conn: &mut sqlx::AnyConnection, model_id: &str) -> Result<u64> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(f.size), 0) AS BIGINT) AS size FROM revision_files f WHERE f.commit_id = \
         (SELECT commit_id FROM revisions WHERE model_id = $1 AND derived_from IS NULL \
          ORDER BY seq DESC LIMIT 1)",
    )
    .bind(model_id)
    .fetch_one(&mut *conn)
    .await?;
    get_uint(&row, "size")
}

/// Which column of `egress_use` a byte limit is counted over.
#[derive(Clone, Copy)]
enum Over {
    Host,
    User,
}

impl Over {
    fn column(self) -> &'static str {
        match self {
            Over::Host => "host_id",
            Over::User => "user_id",
        }
    }
}

/// Bytes counted for `who` (a host or user id) in the window ending at `at`.
async fn used_in(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    over: Over,
    who: &str,
    since: i64,
) -> Result<u64> {
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS used FROM egress_use \
         WHERE model_id = $1 AND {} = $2 AND bucket_end > $3",
        over.column()
    ))
    .bind(model_id)
    .bind(who)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    get_uint(&row, "used")
}

/// When enough of `who`'s bytes have left the window that `asked` more fit under `limit`:
/// `None` when `asked` alone is over it.
async fn frees_at(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
    over: Over,
    who: &str,
    since: i64,
    window: i64,
    (used, asked, limit): (u64, u64, u64),
) -> Result<Option<i64>> {
    if asked > limit {
        return Ok(None);
    }
    let rows = sqlx::query(&format!(
        "SELECT bucket_end, CAST(SUM(bytes) AS BIGINT) AS bytes FROM egress_use \
         WHERE model_id = $1 AND {} = $2 AND bucket_end > $3 \
         GROUP BY bucket_end ORDER BY bucket_end",
        over.column()
    ))
    .bind(model_id)
    .bind(who)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    let mut remaining = used;
    for row in &rows {
        let end: i64 = row.try_get("bucket_end")?;
        remaining = remaining.saturating_sub(get_uint(row, "bytes")?);
        if remaining.saturating_add(asked) <= limit {
            return Ok(Some(end.saturating_add(window)));
        }
    }
    // Not reached when the sums agree; the last bucket leaving frees everything.
    Ok(rows
        .last()
        .map(|r| r.try_get::<i64, _>("bucket_end"))
        .transpose()?
        .map(|end| end.saturating_add(window)))
}

impl Store {
    /// The model's budget, if it has one.
    pub async fn budget(&self, model_id: &str) -> Result<Option<BudgetRecord>> {
        let mut conn = self.pool.acquire().await?;
        budget_in(&mut conn, model_id).await
    }

    /// Sets (`Some`) or removes (`None`) the model's budget, with its entry. A budget that
    /// limits nothing is removed.
    pub async fn set_budget(
        &self,
        model_id: &str,
        budget: Option<&Budget>,
        set_by: &str,
        entry: audit::Entry,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        write_budget(tx.conn(), model_id, budget, set_by, self.clock.now()).await?;
        tx.commit(entry).await?;
        Ok(())
    }

    /// Records a fetch to an enrolled host (its entry and the copy it gives the host, as
    /// [`Store::record_fetch`]) if the model's budget admits it, reserving its bytes and, when
    /// the model limits concurrent fetches, taking a lease, all in one transaction. When the
    /// budget does not admit it, nothing is written and the reason comes back.
    pub async fn record_fetch_within_budget(
        &self,
        entry: audit::Entry,
        copy: &HostCopy,
        request: &EgressRequest<'_>,
    ) -> Result<std::result::Result<Admitted, Exceeded>> {
        // The audit head's lock, taken first, orders this check against every other writer.
        let mut tx = self.begin().await?;
        let Some(record) = budget_in(tx.conn(), &copy.model_id).await? else {
            add_copy(tx.conn(), copy, self.clock.now()).await?;
            let seq = tx.commit(entry).await?;
            return Ok(Ok(Admitted { seq, lease: None }));
        };
        let budget = record.budget;
        let at = self.clock.now();
        let model = copy.model_id.as_str();
        let host = copy.host_id.as_str();
        let conn = tx.conn();

        if let Some(limit) = budget.max_hosts {
            let holding = holding_hosts(conn, model).await?;
            let counted = u64::try_from(holding.len()).unwrap_or(u64::MAX);
            if !holding.iter().any(|(id, _)| id == host) && counted >= limit {
                return Ok(Err(Exceeded::MaxHosts { limit }));
            }
        }

        let mut lease = None;
        if let Some(limit) = budget.per_host_concurrency {
            sqlx::query(
                "DELETE FROM fetch_leases WHERE model_id = $1 AND host_id = $2 AND expires_at <= $3",
            )
            .bind(model)
            .bind(host)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, MIN(expires_at) AS first FROM fetch_leases \
                 WHERE model_id = $1 AND host_id = $2",
            )
            .bind(model)
            .bind(host)
            .fetch_one(&mut *conn)
            .await?;
            let running: u64 = get_uint(&row, "n")?;
            if running >= limit {
                let first: Option<i64> = row.try_get("first")?;
                return Ok(Err(Exceeded::Concurrency {
                    limit,
                    retry_at: first.unwrap_or(at),
                }));
            }
            sqlx::query(
                "INSERT INTO fetch_leases (id, model_id, host_id, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(request.lease_id)
            .bind(model)
            .bind(host)
            .bind(at.saturating_add(request.lease_secs))
            .execute(&mut *conn)
            .await?;
            lease = Some(request.lease_id.to_owned());
        }

        let window = budget.window();
        let since = at.saturating_sub(window);
        if budget.per_host.is_some() || budget.per_user.is_some() {
            let needs_size = matches!(budget.per_host, Some(ByteLimit::ModelSizeMilli(_)))
                || matches!(budget.per_user, Some(ByteLimit::ModelSizeMilli(_)));
            let size = if needs_size {
                model_size_in(conn, model).await?
            } else {
                0
            };
            let asked = copy.bytes;
            for (limit, over, who) in [
                (budget.per_host, Over::Host, host),
                (budget.per_user, Over::User, request.user_id),
            ] {
                let Some(limit) = limit.map(|l| l.bytes(size)) else {
                    continue;
                };
                let used = used_in(conn, model, over, who, since).await?;
                if used.saturating_add(asked) > limit {
                    let retry_at =
                        frees_at(conn, model, over, who, since, window, (used, asked, limit))
                            .await?;
                    let window_secs = budget.window_secs;
                    return Ok(Err(match over {
                        Over::Host => Exceeded::PerHost {
                            limit,
                            used,
                            asked,
                            window_secs,
                            retry_at,
                        },
                        Over::User => Exceeded::PerUser {
                            limit,
                            used,
                            asked,
                            window_secs,
                            retry_at,
                        },
                    }));
                }
            }
            let width = budget.bucket_secs();
            let start = at - at.rem_euclid(width);
            sqlx::query(
                "INSERT INTO egress_use (model_id, host_id, user_id, bucket_start, bucket_end, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (model_id, host_id, user_id, bucket_start) \
                 DO UPDATE SET bytes = egress_use.bytes + excluded.bytes",
            )
            .bind(model)
            .bind(host)
            .bind(request.user_id)
            .bind(start)
            .bind(start.saturating_add(width))
            .bind(db_int(asked)?)
            .execute(&mut *conn)
            .await?;
            let keep = i64::try_from(budget.window_secs.max(KEEP_USE_SECS)).unwrap_or(i64::MAX);
            sqlx::query(
                "DELETE FROM egress_use WHERE model_id = $1 AND host_id = $2 AND bucket_end <= $3",
            )
            .bind(model)
            .bind(host)
            .bind(at.saturating_sub(keep))
            .execute(&mut *conn)
            .await?;
        }

        add_copy(conn, copy, at).await?;
        let seq = tx.commit(entry).await?;
        Ok(Ok(Admitted { seq, lease }))
    }

    /// Extends a fetch's lease to `secs` from now (the transfer still runs).
    pub async fn renew_fetch_lease(&self, lease_id: &str, secs: i64) -> Result<()> {
        sqlx::query("UPDATE fetch_leases SET expires_at = $1 WHERE id = $2")
            .bind(self.clock.now().saturating_add(secs))
            .bind(lease_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a fetch's lease (its transfer ended).
    pub async fn release_fetch_lease(&self, lease_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM fetch_leases WHERE id = $1")
            .bind(lease_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// What the model's budget has used: bytes in the window of `budget` per host and
    /// person, the hosts holding the model, fetches in flight.
    pub async fn budget_use(&self, model_id: &str, budget: &Budget) -> Result<BudgetUse> {
        let mut conn = self.pool.acquire().await?;
        let at = self.clock.now();
        let since = at.saturating_sub(budget.window());
        let hosts = named_counts(
            &mut conn,
            "SELECT h.name AS name, CAST(SUM(u.bytes) AS BIGINT) AS n FROM egress_use u \
             JOIN hosts h ON h.id = u.host_id \
             WHERE u.model_id = $1 AND u.bucket_end > $2 GROUP BY h.name ORDER BY h.name",
            model_id,
            since,
        )
        .await?;
        let users = named_counts(
            &mut conn,
            "SELECT p.name AS name, CAST(SUM(u.bytes) AS BIGINT) AS n FROM egress_use u \
             JOIN users p ON p.id = u.user_id \
             WHERE u.model_id = $1 AND u.bucket_end > $2 GROUP BY p.name ORDER BY p.name",
            model_id,
            since,
        )
        .await?;
        // Leases count until they expire, whatever the window.
        let in_flight = named_counts(
            &mut conn,
            "SELECT h.name AS name, COUNT(*) AS n FROM fetch_leases l \
             JOIN hosts h ON h.id = l.host_id \
             WHERE l.model_id = $1 AND l.expires_at > $2 GROUP BY h.name ORDER BY h.name",
            model_id,
            at,
        )
        .await?;
        let holding_hosts = holding_hosts(&mut conn, model_id)
            .await?
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        Ok(BudgetUse {
            model_size: model_size_in(&mut conn, model_id).await?,
            hosts,
            users,
            holding_hosts,
            in_flight,
        })
    }
}

/// `(name, n)` rows of `sql`, which takes the model id and a time.
async fn named_counts(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    model_id: &str,
    time: i64,
) -> Result<Vec<(String, u64)>> {
    sqlx::query(sql)
        .bind(model_id)
        .bind(time)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>("name")?, get_uint(r, "n")?)))
        .collect()
}

/// The hosts that count against a model's `max_hosts`: those that received any of its bytes
/// and may still fetch it (enrolled, not revoked, approved by the model's vendor). A vendor
/// frees a place by withdrawing its approval of a host; the operator by revoking it.
async fn holding_hosts(
    conn: &mut sqlx::AnyConnection,
    model_id: &str,
) -> Result<Vec<(String, String)>> {
    sqlx::query(
        "SELECT DISTINCT h.id AS id, h.name AS name FROM host_copies c \
         JOIN hosts h ON h.id = c.host_id \
         JOIN models m ON m.id = c.model_id \
         JOIN vendor_hosts vh ON vh.host_id = h.id AND vh.vendor_id = m.vendor_id \
         WHERE c.model_id = $1 AND h.revoked_at IS NULL ORDER BY h.name, h.id",
    )
    .bind(model_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
    .collect()
}

/// A budget in a pending request's payload (`pending.rs` versions the payload as a whole).
pub(crate) fn to_payload(b: &Budget) -> serde_json::Value {
    let limit = |l: Option<ByteLimit>| match l {
        None => serde_json::Value::Null,
        Some(ByteLimit::Bytes(b)) => serde_json::json!({ "bytes": b }),
        Some(ByteLimit::ModelSizeMilli(m)) => serde_json::json!({ "model_size_milli": m }),
    };
    serde_json::json!({
        "window_secs": b.window_secs,
        "per_host": limit(b.per_host),
        "per_user": limit(b.per_user),
        "max_hosts": b.max_hosts,
        "per_host_concurrency": b.per_host_concurrency,
    })
}

/// The budget of a pending request's payload, read strictly.
pub(crate) fn from_payload(v: &serde_json::Value) -> Result<Budget> {
    let bad = |what: &str| StoreError::Corrupt(format!("pending budget request: {what}"));
    let number = |key: &str| -> Result<Option<u64>> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(n) => n.as_u64().map(Some).ok_or_else(|| bad(key)),
        }
    };
    let limit = |key: &str| -> Result<Option<ByteLimit>> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(l) => match (
                l.get("bytes").and_then(serde_json::Value::as_u64),
                l.get("model_size_milli")
                    .and_then(serde_json::Value::as_u64),
            ) {
                (Some(b), None) => Ok(Some(ByteLimit::Bytes(b))),
                (None, Some(m)) => Ok(Some(ByteLimit::ModelSizeMilli(m))),
                _ => Err(bad(key)),
            },
        }
    };
    Ok(Budget {
        window_secs: number("window_secs")?
            .filter(|w| *w > 0)
            .ok_or_else(|| bad("window_secs"))?,
        per_host: limit("per_host")?,
        per_user: limit("per_user")?,
        max_hosts: number("max_hosts")?,
        per_host_concurrency: number("per_host_concurrency")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_survives_a_pending_payload_and_bad_payloads_are_corrupt() {
        let budget = Budget {
            window_secs: 86_400,
            per_host: Some(ByteLimit::ModelSizeMilli(2000)),
            per_user: Some(ByteLimit::Bytes(5 << 30)),
            max_hosts: Some(3),
            per_host_concurrency: None,
        };
        assert_eq!(from_payload(&to_payload(&budget)).unwrap(), budget);
        for bad in [
            serde_json::json!({}),
            serde_json::json!({ "window_secs": 0 }),
            serde_json::json!({ "window_secs": 10, "per_host": { "bytes": 1, "model_size_milli": 2 } }),
            serde_json::json!({ "window_secs": 10, "max_hosts": -1 }),
        ] {
            assert!(from_payload(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn multiples_of_the_model_size_round_down_and_never_wrap() {
        assert_eq!(ByteLimit::ModelSizeMilli(2000).bytes(1000), 2000);
        assert_eq!(ByteLimit::ModelSizeMilli(1500).bytes(3), 4);
        assert_eq!(
            ByteLimit::ModelSizeMilli(u64::MAX).bytes(u64::MAX),
            u64::MAX
        );
        assert_eq!(ByteLimit::Bytes(7).bytes(1 << 40), 7);
    }
}
