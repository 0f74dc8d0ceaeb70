//! The facts of access decisions, each request's read in one SQL statement.
//!
//! `server::auth::authorize` decides on what the database says about one user, one
//! credential and one host against one vendor or model: the user's direct and group grants,
//! exclusions, groups, the model's allowed host groups and embargo window, whether the vendor
//! approved the host and endorsed the credential. Each of these was once a query of its own,
//! eight round trips per decision and eight more per model of a listing; the round trips,
//! not the lookups, were the cost.
//!
//! Here one statement reads them all: a `UNION ALL` of tagged rows `(scope, kind, name, a,
//! b)`, one branch per fact, each branch an index lookup (the primary keys of `grants`,
//! `group_grants`, `group_members`, `exclusions`, `model_host_groups`, `vendor_hosts` and
//! `token_endorsements` cover every branch, so no migration was needed), sorted so that lists
//! come out in name order. Tagged rows rather than one row of aggregates, because SQLite and
//! PostgreSQL share no list aggregate (`group_concat` against `string_agg`) and the store
//! keeps one SQL text for both. A listing reads the facts of all its models (or vendors) in
//! the same single statement, through an `IN` list chunked below the databases' limits on
//! bound parameters.
//!
//! Nothing is cached: every decision reads the database as it is, so a change made through
//! any instance (several servers on one PostgreSQL) applies to the next request everywhere,
//! with no invalidation to get wrong.

use std::collections::HashMap;

use sqlx::Row;
use types::{GroupName, HostGroupName, UserName};

use crate::{Result, Store, StoreError, corrupt};

/// Who asks for access facts: the user, and the credential and host they present.
pub struct Asking<'a> {
    pub user: &'a UserName,
    pub token_id: &'a str,
    /// The credential counts for every vendor (no endorsement to look up).
    pub all_vendors: bool,
    pub host_id: Option<&'a str>,
}

/// The access facts of one model for one user, read in one statement per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFacts {
    /// Expiry of the user's direct grant, if they hold one (`Some(None)`: no expiry).
    pub direct_grant: Option<Option<i64>>,
    /// The user's groups that hold a grant on the model, with the grant's expiry.
    pub group_grants: Vec<(GroupName, Option<i64>)>,
    pub excluded_from_model: bool,
    pub excluded_from_vendor: bool,
    pub host_groups: Vec<HostGroupName>,
    /// Whether the model's vendor approved the requesting host's enrollment.
    pub host_approved: bool,
    /// Whether the requesting credential counts for the model's vendor.
    pub credential_counts: bool,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// The groups of the model's vendor the user is a member of, by name.
    pub groups: Vec<GroupName>,
}

/// The access facts of one vendor for one user, read in one statement per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorAccessFacts {
    /// The user is excluded from every model of the vendor.
    pub excluded: bool,
    /// The user holds a live grant on a model of the vendor, directly or through one of the
    /// vendor's groups.
    pub holds_grant: bool,
    /// Whether the requesting credential counts for the vendor.
    pub credential_counts: bool,
    /// The vendor's groups the user is a member of, by name.
    pub groups: Vec<GroupName>,
}

/// Ids per statement: far below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters,
/// and more than a listing usually holds, so a listing is one statement.
const IDS_PER_SELECT: usize = 400;

/// The branches about the user at each vendor of `vs` (a relation of `vendor_id`s):
/// exclusion from every model, group memberships, the vendor's approval of the host, its
/// endorsement of the credential. `$1` user, `$2` token id, `$3` host id (NULL: none, which
/// matches no row).
const VENDOR_BRANCHES: &str = "\
    SELECT e.vendor_id, 'vendor_excluded', NULL, NULL, NULL FROM exclusions e \
    JOIN vs ON vs.vendor_id = e.vendor_id WHERE e.model_id = '' AND e.user_name = $1 \
    UNION ALL \
    SELECT gm.vendor_id, 'member', gm.group_name, NULL, NULL FROM group_members gm \
    JOIN vs ON vs.vendor_id = gm.vendor_id WHERE gm.user_name = $1 \
    UNION ALL \
    SELECT vh.vendor_id, 'host_approved', NULL, NULL, NULL FROM vendor_hosts vh \
    JOIN vs ON vs.vendor_id = vh.vendor_id WHERE vh.host_id = $3 \
    UNION ALL \
    SELECT te.vendor_id, 'endorsed', NULL, NULL, NULL FROM token_endorsements te \
    JOIN vs ON vs.vendor_id = te.vendor_id WHERE te.token_id = $2";

/// What one vendor's rows say.
#[derive(Default)]
struct AtVendor {
    excluded: bool,
    groups: Vec<GroupName>,
    host_approved: bool,
    endorsed: bool,
    holds_grant: bool,
}

/// One tagged row: whose fact (a model or vendor id), which fact, and its values.
struct Tagged {
    scope: String,
    kind: String,
    name: Option<String>,
    a: Option<i64>,
    b: Option<i64>,
}

fn tagged(r: &sqlx::any::AnyRow) -> Result<Tagged> {
    Ok(Tagged {
        scope: r.try_get("scope")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        a: r.try_get("a")?,
        b: r.try_get("b")?,
    })
}

fn named(row: &Tagged) -> Result<&str> {
    row.name
        .as_deref()
        .ok_or_else(|| corrupt(format!("access fact {} without a name", row.kind)))
}

/// Takes a vendor-scoped row into `vendors`; `false` when the row is not vendor-scoped.
fn vendor_row(vendors: &mut HashMap<String, AtVendor>, row: &Tagged) -> Result<bool> {
    let kind = row.kind.as_str();
    if !matches!(
        kind,
        "vendor_excluded" | "member" | "host_approved" | "endorsed" | "holds_grant"
    ) {
        return Ok(false);
    }
    let name = if kind == "member" {
        Some(GroupName::parse(named(row)?).map_err(corrupt)?)
    } else {
        None
    };
    let v = vendors.entry(row.scope.clone()).or_default();
    match kind {
        "vendor_excluded" => v.excluded = true,
        "host_approved" => v.host_approved = true,
        "endorsed" => v.endorsed = true,
        "holds_grant" => v.holds_grant = true,
        _ => v.groups.extend(name),
    }
    Ok(true)
}

/// `$first, $first+1, …` for `n` ids.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Everything a decision about `asking` on one model needs, in one statement. A model
    /// that does not exist, or is not `vendor_id`'s, is an error (a denial to the caller).
    pub async fn access_facts(
        &self,
        model_id: &str,
        vendor_id: &str,
        asking: &Asking<'_>,
    ) -> Result<AccessFacts> {
        let mut found = self.access_facts_of_models(&[model_id], asking).await?;
        match found.remove(model_id) {
            Some((vendor, facts)) if vendor == vendor_id => Ok(facts),
            _ => Err(StoreError::NotFound("model")),
        }
    }

    /// [`Store::access_facts`] for many models at once (a listing), in one statement per
    /// 400 models: by model id, with the model's vendor id. Models that do not exist are
    /// absent.
    pub async fn access_facts_of_models(
        &self,
        model_ids: &[&str],
        asking: &Asking<'_>,
    ) -> Result<HashMap<String, (String, AccessFacts)>> {
        let mut out = HashMap::with_capacity(model_ids.len());
        for chunk in model_ids.chunks(IDS_PER_SELECT) {
            // `ms`: the models asked about; `vs`: their vendors. The model's own row carries
            // its vendor id in `name` and its embargo window in `a`, `b`; the casts of the
            // first branch give every column its type on PostgreSQL.
            let sql = format!(
                "WITH ms AS (SELECT id, vendor_id, not_before, not_after FROM models \
                 WHERE id IN ({ids})), \
                 vs AS (SELECT DISTINCT vendor_id FROM ms) \
                 SELECT ms.id AS scope, 'model' AS kind, ms.vendor_id AS name, \
                 CAST(ms.not_before AS BIGINT) AS a, CAST(ms.not_after AS BIGINT) AS b FROM ms \
                 UNION ALL \
                 SELECT g.model_id, 'grant', NULL, g.expires_at, NULL FROM grants g \
                 JOIN ms ON ms.id = g.model_id WHERE g.user_name = $1 \
                 UNION ALL \
                 SELECT gg.model_id, 'group_grant', gg.group_name, gg.expires_at, NULL \
                 FROM group_grants gg JOIN ms ON ms.id = gg.model_id \
                 JOIN group_members gm ON gm.vendor_id = ms.vendor_id \
                 AND gm.group_name = gg.group_name AND gm.user_name = $1 \
                 UNION ALL \
                 SELECT e.model_id, 'model_excluded', NULL, NULL, NULL FROM exclusions e \
                 JOIN ms ON ms.vendor_id = e.vendor_id AND ms.id = e.model_id \
                 WHERE e.user_name = $1 \
                 UNION ALL \
                 SELECT hg.model_id, 'host_group', hg.host_group, NULL, NULL \
                 FROM model_host_groups hg JOIN ms ON ms.id = hg.model_id \
                 UNION ALL {VENDOR_BRANCHES} \
                 ORDER BY 1, 2, 3",
                ids = placeholders(4, chunk.len()),
            );
            let mut query = sqlx::query(&sql)
                .bind(asking.user.as_str())
                .bind(asking.token_id)
                .bind(asking.host_id);
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&self.pool).await?;
            // Per model, its vendor (from the model's own row) and its facts; per vendor,
            // what the user has there. Joined once every row is read.
            let mut vendor_of: HashMap<String, String> = HashMap::new();
            let mut per_model: HashMap<String, AccessFacts> = HashMap::new();
            let mut vendors: HashMap<String, AtVendor> = HashMap::new();
            for r in &rows {
                let row = tagged(r)?;
                if vendor_row(&mut vendors, &row)? {
                    continue;
                }
                let facts = per_model.entry(row.scope.clone()).or_default();
                match row.kind.as_str() {
                    "model" => {
                        facts.not_before = row.a;
                        facts.not_after = row.b;
                        vendor_of.insert(row.scope.clone(), named(&row)?.to_owned());
                    }
                    "grant" => facts.direct_grant = Some(row.a),
                    "group_grant" => facts
                        .group_grants
                        .push((GroupName::parse(named(&row)?).map_err(corrupt)?, row.a)),
                    "model_excluded" => facts.excluded_from_model = true,
                    "host_group" => facts
                        .host_groups
                        .push(HostGroupName::parse(named(&row)?).map_err(corrupt)?),
                    other => return Err(corrupt(format!("unknown access fact {other}"))),
                }
            }
            // Only models that exist (have their own row) get facts: a model gone meanwhile
            // is absent, and its caller denies.
            for (model_id, vendor_id) in vendor_of {
                let mut facts = per_model.remove(&model_id).unwrap_or_default();
                let at = vendors.get(&vendor_id);
                facts.excluded_from_vendor = at.is_some_and(|v| v.excluded);
                facts.groups = at.map(|v| v.groups.clone()).unwrap_or_default();
                facts.host_approved = at.is_some_and(|v| v.host_approved);
                facts.credential_counts = asking.all_vendors || at.is_some_and(|v| v.endorsed);
                out.insert(model_id, (vendor_id, facts));
            }
        }
        Ok(out)
    }

    /// Everything a decision about `asking` on a vendor (not one of its models) needs, for
    /// each of `vendor_ids`, in one statement per 400 vendors. Grants count while unexpired
    /// at `now`. A vendor that does not exist gets the facts of a stranger.
    pub async fn vendor_access_facts(
        &self,
        vendor_ids: &[&str],
        asking: &Asking<'_>,
        now: i64,
    ) -> Result<HashMap<String, VendorAccessFacts>> {
        let mut out = HashMap::with_capacity(vendor_ids.len());
        for chunk in vendor_ids.chunks(IDS_PER_SELECT) {
            // The first branch, as in `access_facts_of_models`, types every column for
            // PostgreSQL; `holds_grant` is at most one row per vendor (EXISTS), however many
            // grants the user holds there.
            let sql = format!(
                "WITH vs AS (SELECT id AS vendor_id FROM vendors WHERE id IN ({ids})) \
                 SELECT vs.vendor_id AS scope, 'holds_grant' AS kind, CAST(NULL AS TEXT) AS name, \
                 CAST(NULL AS BIGINT) AS a, CAST(NULL AS BIGINT) AS b FROM vs \
                 WHERE EXISTS (SELECT 1 FROM grants g JOIN models m ON m.id = g.model_id \
                 WHERE m.vendor_id = vs.vendor_id AND g.user_name = $1 \
                 AND (g.expires_at IS NULL OR g.expires_at > $4)) \
                 OR EXISTS (SELECT 1 FROM group_grants gg JOIN models m ON m.id = gg.model_id \
                 JOIN group_members gm ON gm.group_name = gg.group_name \
                 AND gm.vendor_id = m.vendor_id \
                 WHERE m.vendor_id = vs.vendor_id AND gm.user_name = $1 \
                 AND (gg.expires_at IS NULL OR gg.expires_at > $4)) \
                 UNION ALL {VENDOR_BRANCHES} \
                 ORDER BY 1, 2, 3",
                ids = placeholders(5, chunk.len()),
            );
            // `$3` (the host) stays NULL: bytes are only ever decided on a model, with the
            // model's vendor's approval, so a vendor decision never asks for it.
            let mut query = sqlx::query(&sql)
                .bind(asking.user.as_str())
                .bind(asking.token_id)
                .bind(None::<&str>)
                .bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            let mut vendors: HashMap<String, AtVendor> = HashMap::new();
            for r in query.fetch_all(&self.pool).await? {
                let row = tagged(&r)?;
                if !vendor_row(&mut vendors, &row)? {
                    return Err(corrupt(format!("unknown access fact {}", row.kind)));
                }
            }
            for id in chunk {
                let v = vendors.remove(*id).unwrap_or_default();
                out.insert(
                    (*id).to_owned(),
                    VendorAccessFacts {
                        excluded: v.excluded,
                        holds_grant: v.holds_grant,
                        credential_counts: asking.all_vendors || v.endorsed,
                        groups: v.groups,
                    },
                );
            }
        }
        Ok(out)
    }
}
