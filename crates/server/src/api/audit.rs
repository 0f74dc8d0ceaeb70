//! The audit log for auditors: the log key, signed checkpoints (latest, by range, signed on
//! demand), inclusion and consistency proofs, ranges of entries and leaf hashes, and the tree
//! edge an export continues from.
//!
//! Every route needs `export_audit`: on the service for the whole log (the shipped policies
//! give it to the operator), or on a vendor with `?vendor=NAME` (its admins and auditors).
//! The whole log names every vendor and model; a vendor's view carries the vendor's entries in
//! full and every other entry as a line standing for it by hash (`audit::bundle`), with the
//! leaves' tags and the vendor's tag key, so the vendor's auditor can prove that none of its
//! entries was left out. Each allowed request is itself recorded (`audit.read`,
//! `audit.checkpoint`), as the vendor's when scoped to one.
//!
//! Hashes are standard base64, as in checkpoints. Entries travel as NDJSON: line i of the body
//! is exactly the stored bytes of entry `from + i`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use policy::{Action, Decision};
use store::VendorRecord;
use wire::ErrorCode;
use wire::audit::{
    AuditKey, Checkpoint, CheckpointList, ConsistencyProof, ConsistencyQuery, EdgeQuery,
    InclusionProof, InclusionQuery, LatestCheckpoint, RangeQuery, SignedCheckpoint, TreeEdge,
    VendorAuditKey, VendorScopeQuery, WitnessStatus,
};

use crate::api::access::load_vendor;
use crate::auth::{Caller, Target, authorize, policy_ids};
use crate::error::ApiError;
use crate::state::App;
use crate::witnesses::Witnesses;

/// Most entries per request (an export pages through the log).
const MAX_ENTRIES: u64 = 50_000;
/// Most leaf hashes per request (32 bytes each).
const MAX_LEAVES: u64 = 1_000_000;
/// Most checkpoints per request.
const MAX_CHECKPOINTS: u64 = 1_000;

/// An allowed reader of the log: the whole of it, or one vendor's view.
struct Reader {
    decision: Decision,
    vendor: Option<VendorRecord>,
}

impl Reader {
    /// What the reader's audit entries name.
    fn resource(&self) -> String {
        self.vendor
            .as_ref()
            .map_or_else(|| "service".to_owned(), |v| v.name.to_string())
    }
}

async fn allow(app: &App, caller: &Caller, scope: &VendorScopeQuery) -> Result<Reader, ApiError> {
    match &scope.vendor {
        None => Ok(Reader {
            decision: authorize(app, caller, Action::ExportAudit, Target::Service).await?,
            vendor: None,
        }),
        Some(name) => {
            let vendor = load_vendor(app, name).await?;
            let decision =
                authorize(app, caller, Action::ExportAudit, Target::Vendor(&vendor)).await?;
            Ok(Reader {
                decision,
                vendor: Some(vendor),
            })
        }
    }
}

/// Records an allowed read of the log.
async fn record_read(
    app: &App,
    caller: &Caller,
    reader: &Reader,
    detail: String,
) -> Result<(), ApiError> {
    let entry = caller
        .entry("audit.read", reader.resource())
        .with_decision(true, &policy_ids(&reader.decision))
        .with_detail(detail);
    app.store.record(entry).await?;
    Ok(())
}

fn b64_all(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Internal(format!("{e:#}"))
}

/// `GET /v1/audit/key`: the log's verifier key (C2SP vkey) and origin.
#[utoipa::path(
    get,
    path = "/v1/audit/key",
    operation_id = "audit_key",
    tag = "audit",
    params(VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = AuditKey),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn key(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<AuditKey>, ApiError> {
    allow(&app, &caller, &scope).await?;
    let vkey = app.checkpointer.verifier().map_err(internal)?;
    Ok(Json(AuditKey {
        origin: app.checkpointer.origin().to_owned(),
        key: vkey.to_string(),
    }))
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, the log's current size, and the
/// reason the last signing attempt was refused, if it was.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoint",
    operation_id = "audit_latest",
    tag = "audit",
    params(VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = LatestCheckpoint),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn latest(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<LatestCheckpoint>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let size = app.store.audit_size().await?;
    let latest = app.store.latest_checkpoint().await?;
    record_read(&app, &caller, &reader, "latest checkpoint".into()).await?;
    let Some(cp) = latest else {
        return Err(ApiError::NotFound("signed checkpoint".into()));
    };
    let note = Witnesses::cosigned(&app.store, cp.size, &cp.note)
        .await
        .map_err(internal)?;
    let witnesses = app
        .witnesses
        .view(&app.store)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|w| WitnessStatus {
            name: w.name,
            key: w.key,
            url: w.url,
            cosigned_size: w.cosigned_size,
            last_error: w.last_error,
        })
        .collect();
    Ok(Json(LatestCheckpoint {
        size: cp.size,
        root: B64.encode(cp.root),
        note,
        log_size: size,
        refusal: app.checkpointer.refusal(),
        witnesses,
    }))
}

/// `POST /v1/audit/checkpoint`: signs a checkpoint of the log as it is now (or returns the
/// last one when nothing was added). Refused with 409 and the reason when the log is not
/// consistent with the last checkpoint signed.
#[utoipa::path(
    post,
    path = "/v1/audit/checkpoint",
    operation_id = "audit_sign",
    tag = "audit",
    params(VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = SignedCheckpoint),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn sign(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<SignedCheckpoint>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let entry = caller
        .entry("audit.checkpoint", reader.resource())
        .with_decision(true, &policy_ids(&reader.decision));
    match app.checkpointer.sign(&app.store).await {
        Ok(signed) => {
            let cp = &signed.checkpoint;
            app.store
                .record(entry.with_detail(format!("size {}", cp.size)))
                .await?;
            // One round of witnessing, so what the caller keeps or exports carries the
            // cosignatures; a witness that refuses or is down is logged, never fatal here.
            let note = if app.witnesses.is_empty() {
                signed.note
            } else {
                match app.witnesses.round(&app.store, cp, &signed.note).await {
                    Ok((note, _)) => note,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "witnessing the checkpoint");
                        signed.note
                    }
                }
            };
            Ok(Json(SignedCheckpoint {
                size: cp.size,
                root: B64.encode(cp.root),
                note,
                new: signed.new,
            }))
        }
        Err(e) => {
            let why = format!("{e:#}");
            app.store
                .record(entry.with_outcome(audit::Outcome::Failed).with_detail(
                    "refused: the log is not consistent with the last checkpoint signed",
                ))
                .await?;
            Err(ApiError::Conflict(format!(
                "refusing to sign a checkpoint: {why}"
            )))
        }
    }
}

/// `GET /v1/audit/checkpoints?from=A&to=B`: signed checkpoints with A <= size <= B.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoints",
    operation_id = "audit_checkpoints",
    tag = "audit",
    params(RangeQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = CheckpointList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn checkpoints(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<CheckpointList>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let (from, to) = (q.from.unwrap_or(0), q.to.unwrap_or(u64::MAX));
    let list = app.store.checkpoints(from, to, MAX_CHECKPOINTS).await?;
    record_read(&app, &caller, &reader, format!("checkpoints {from}..={to}")).await?;
    let cosignatures = match (list.first(), list.last()) {
        (Some(first), Some(last)) => {
            app.store
                .cosignatures_between(first.size, last.size)
                .await?
        }
        _ => Vec::new(),
    };
    let checkpoints = list
        .into_iter()
        .map(|c| Checkpoint {
            size: c.size,
            root: B64.encode(c.root),
            note: audit::witness::with_cosignatures(
                &c.note,
                cosignatures
                    .iter()
                    .filter(|(size, _)| *size == c.size)
                    .map(|(_, line)| line.as_str()),
            ),
        })
        .collect();
    Ok(Json(CheckpointList { checkpoints }))
}

/// Clamps `from..to` to the log and to `max` items; refuses an empty or reversed range.
async fn clamp(app: &App, q: &RangeQuery, max: u64) -> Result<(u64, u64), ApiError> {
    let size = app.store.audit_size().await?;
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(size).min(size).min(from.saturating_add(max));
    if from > size || to < from {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRange,
            format!("entries {from}..{to} are not in the log of {size} entries"),
        ));
    }
    Ok((from, to))
}

/// `GET /v1/audit/entries?from=A&to=B[&vendor=V]`: entries A..B (at most 50,000; the body
/// says how many by its lines) as NDJSON, each line exactly the stored bytes; in a vendor's
/// view, other entries' lines stand for them by hash.
#[utoipa::path(
    get,
    path = "/v1/audit/entries",
    operation_id = "audit_entries",
    tag = "audit",
    params(RangeQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "the bytes", content_type = "application/x-ndjson"),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn entries(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Response, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let (from, to) = clamp(&app, &q, MAX_ENTRIES).await?;
    let rows = app.store.audit_entries_tagged(from, to).await?;
    let mut body = Vec::with_capacity(rows.iter().map(|e| e.bytes.len() + 1).sum());
    for (i, entry) in rows.iter().enumerate() {
        if entry.seq != from + i as u64 {
            return Err(ApiError::Internal(format!(
                "audit entry {} is missing",
                from + i as u64
            )));
        }
        match &reader.vendor {
            None => body.extend_from_slice(&entry.bytes),
            Some(v) => {
                let theirs = entry.vendor_id.as_deref() == Some(v.id.as_str());
                body.extend_from_slice(&audit::bundle::vendor_line(&entry.bytes, theirs));
            }
        }
        body.push(b'\n');
    }
    record_read(&app, &caller, &reader, format!("entries {from}..{to}")).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(wire::audit::ENTRIES_FROM_HEADER, from)
        .header(wire::audit::ENTRIES_TO_HEADER, from + rows.len() as u64)
        .body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /v1/audit/leaves?from=A&to=B`: the stored leaf hashes of entries A..B, 32 bytes each.
#[utoipa::path(
    get,
    path = "/v1/audit/leaves",
    operation_id = "audit_leaves",
    tag = "audit",
    params(RangeQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "the bytes", content_type = "application/octet-stream"),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn leaves(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Response, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let (from, to) = clamp(&app, &q, MAX_LEAVES).await?;
    let leaves = app.store.audit_leaf_hashes(from, to).await?;
    let body: Vec<u8> = leaves.concat();
    record_read(&app, &caller, &reader, format!("leaf hashes {from}..{to}")).await?;
    octets(body)
}

/// `GET /v1/audit/tags?from=A&to=B`: the vendor tags of entries A..B (at most 50,000), 32
/// bytes each (zeros for entries of format 1 and those of no vendor).
#[utoipa::path(
    get,
    path = "/v1/audit/tags",
    operation_id = "audit_tags",
    tag = "audit",
    params(RangeQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "the bytes", content_type = "application/octet-stream"),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn tags(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Response, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let (from, to) = clamp(&app, &q, MAX_ENTRIES).await?;
    let rows = app.store.audit_entries_tagged(from, to).await?;
    let body: Vec<u8> = rows.iter().flat_map(|e| e.tag).collect();
    record_read(&app, &caller, &reader, format!("leaf tags {from}..{to}")).await?;
    octets(body)
}

/// `GET /v1/audit/vendor-key?vendor=V`: the vendor's audit tag key, for its own auditors.
#[utoipa::path(
    get,
    path = "/v1/audit/vendor-key",
    operation_id = "audit_vendor_key",
    tag = "audit",
    params(VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = VendorAuditKey),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn vendor_key(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<VendorAuditKey>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let Some(vendor) = &reader.vendor else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "name the vendor: ?vendor=NAME",
        ));
    };
    let key = app.store.vendor_audit_key(&vendor.id).await?;
    record_read(&app, &caller, &reader, "audit tag key".into()).await?;
    Ok(Json(VendorAuditKey {
        vendor: vendor.name.to_string(),
        tag_key: hex::encode(key.key.expose_bytes()),
        published_at: key.published_at,
    }))
}

fn octets(body: Vec<u8>) -> Result<Response, ApiError> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn size_or_latest(app: &App, size: Option<u64>) -> Result<u64, ApiError> {
    match size {
        Some(s) => Ok(s),
        None => Ok(app
            .store
            .latest_checkpoint()
            .await?
            .ok_or_else(|| ApiError::NotFound("signed checkpoint".into()))?
            .size),
    }
}

fn out_of_range(e: store::StoreError) -> ApiError {
    match e {
        store::StoreError::NotFound(what) => {
            ApiError::bad_request(ErrorCode::InvalidRange, format!("no {what} in the log"))
        }
        store::StoreError::Conflict(m) => ApiError::bad_request(ErrorCode::InvalidRange, m),
        other => other.into(),
    }
}

/// `GET /v1/audit/proof/inclusion?index=I[&size=N]`: entry I's leaf hash and its inclusion
/// proof in the tree of N entries, with the signed checkpoint of that size when there is one.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/inclusion",
    operation_id = "audit_inclusion",
    tag = "audit",
    params(InclusionQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = InclusionProof),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn inclusion(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<InclusionQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let size = size_or_latest(&app, q.size).await?;
    let (leaf, proof) = app
        .store
        .audit_inclusion_proof(q.index, size)
        .await
        .map_err(out_of_range)?;
    let checkpoint = app.store.checkpoint(size).await?.map(|c| c.note);
    record_read(
        &app,
        &caller,
        &reader,
        format!("inclusion proof of {} in {size}", q.index),
    )
    .await?;
    Ok(Json(InclusionProof {
        index: q.index,
        size,
        leaf_hash: B64.encode(leaf),
        proof: b64_all(&proof),
        checkpoint,
    }))
}

/// `GET /v1/audit/proof/consistency?old=M[&new=N]`: the consistency proof from size M to N.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/consistency",
    operation_id = "audit_consistency",
    tag = "audit",
    params(ConsistencyQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = ConsistencyProof),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn consistency(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<ConsistencyQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let new = size_or_latest(&app, q.new).await?;
    let proof = app
        .store
        .audit_consistency_proof(q.old, new)
        .await
        .map_err(out_of_range)?;
    record_read(
        &app,
        &caller,
        &reader,
        format!("consistency proof {}..{new}", q.old),
    )
    .await?;
    Ok(Json(ConsistencyProof {
        old: q.old,
        new,
        proof: b64_all(&proof),
    }))
}

/// `GET /v1/audit/edge?size=M`: the right edge of the tree of M entries (what an export
/// `--since` a checkpoint of size M continues from; see `audit::bundle`).
#[utoipa::path(
    get,
    path = "/v1/audit/edge",
    operation_id = "audit_edge",
    tag = "audit",
    params(EdgeQuery, VendorScopeQuery),
    responses(
        (status = 200, description = "done", body = TreeEdge),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn edge(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<EdgeQuery>,
    Query(scope): Query<VendorScopeQuery>,
) -> Result<Json<TreeEdge>, ApiError> {
    let reader = allow(&app, &caller, &scope).await?;
    let edge = app.store.audit_edge(q.size).await.map_err(out_of_range)?;
    record_read(&app, &caller, &reader, format!("tree edge at {}", q.size)).await?;
    Ok(Json(TreeEdge {
        size: q.size,
        edge: b64_all(&edge),
    }))
}

/// Most events per activity page, and most entries scanned for one.
const MAX_ACTIVITY: u64 = 1_000;
const ACTIVITY_SCAN: u64 = 20_000;

/// `GET /v1/vendors/{vendor}/activity[?model=M&since=T&from=I&limit=N]`: the vendor's
/// entries in the audit log (fetches with user, host, files and bytes; refusals with reasons;
/// grants, exclusions, uploads, deletions…), each with its log index so it can be checked
/// against the vendor's export. Read from the log itself, for the vendor's admins and
/// auditors (`export_audit` on the vendor).
#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/activity",
    operation_id = "audit_activity",
    tag = "audit",
    params(("vendor" = String, Path, description = "vendor (see the route)"), wire::audit::ActivityQuery),
    responses(
        (status = 200, description = "done", body = wire::audit::Activity),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn activity(
    State(app): State<Arc<App>>,
    caller: Caller,
    axum::extract::Path(vendor): axum::extract::Path<String>,
    Query(q): Query<wire::audit::ActivityQuery>,
) -> Result<Json<wire::audit::Activity>, ApiError> {
    let scope = VendorScopeQuery {
        vendor: Some(vendor),
    };
    let reader = allow(&app, &caller, &scope).await?;
    let Some(vendor) = &reader.vendor else {
        return Err(ApiError::Internal("no vendor".into()));
    };
    let model = match &q.model {
        Some(m) => Some(types::ModelName::parse(m)?),
        None => None,
    };
    let since = match &q.since {
        Some(t) => Some(
            humantime::parse_rfc3339_weak(t)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::InvalidRequest,
                        format!("since: {t:?} is not an RFC 3339 time"),
                    )
                })?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(MAX_ACTIVITY).clamp(1, MAX_ACTIVITY);
    let filter = ActivityFilter {
        vendor: vendor.name.to_string(),
        model: model.map(|m| m.to_string()),
        since,
        limit,
    };
    let from = q.from.unwrap_or(0);
    let deadline = q
        .wait
        .map(|w| tokio::time::Instant::now() + Duration::from_secs(w.min(MAX_WAIT_SECS)));
    let mut page = activity_page(&app, &vendor.id, from, &filter).await?;
    // Long polling: several instances share the log, so poll the database, not a local signal.
    while let Some(deadline) = deadline {
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(WAIT_POLL).await;
        page = activity_page(&app, &vendor.id, page.resume_from, &filter).await?;
    }
    let ActivityPage {
        events,
        next,
        resume_from,
    } = page;
    // An empty long poll returned nothing: recording it would add an entry per poll.
    if q.wait.is_some() && events.is_empty() {
        return Ok(Json(wire::audit::Activity {
            vendor: vendor.name.to_string(),
            events,
            next,
            resume_from,
        }));
    }
    record_read(
        &app,
        &caller,
        &reader,
        format!("{ACTIVITY_READ}{} ({} events)", vendor.name, events.len()),
    )
    .await?;
    Ok(Json(wire::audit::Activity {
        vendor: vendor.name.to_string(),
        events,
        next,
        resume_from,
    }))
}

/// Longest long poll, and how often it looks at the log meanwhile.
const MAX_WAIT_SECS: u64 = 25;
const WAIT_POLL: Duration = Duration::from_millis(300);

/// What an activity request asks for.
struct ActivityFilter {
    vendor: String,
    model: Option<String>,
    since: Option<String>,
    limit: u64,
}

struct ActivityPage {
    events: Vec<wire::audit::ActivityEvent>,
    next: Option<u64>,
    resume_from: u64,
}

/// The view's own reads (`audit.read` of "activity of …") are left out of it: they stay in
/// the log and the vendor's export, and a watcher does not see its own polls.
const ACTIVITY_READ: &str = "activity of ";

async fn activity_page(
    app: &App,
    vendor_id: &str,
    from: u64,
    filter: &ActivityFilter,
) -> Result<ActivityPage, ApiError> {
    let rows = app
        .store
        .vendor_entries(vendor_id, from, ACTIVITY_SCAN)
        .await?;
    let scanned_all = (rows.len() as u64) < ACTIVITY_SCAN;
    let mut events = Vec::new();
    let mut next = None;
    let mut resume_from = from;
    for row in &rows {
        if events.len() as u64 == filter.limit {
            next = Some(row.seq);
            break;
        }
        resume_from = row.seq + 1;
        let entry = audit::Entry::parse(&row.bytes)
            .map_err(|e| ApiError::Internal(format!("audit entry {}: {e}", row.seq)))?;
        if entry.action == "audit.read"
            && entry
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with(ACTIVITY_READ))
        {
            continue;
        }
        if filter.since.as_ref().is_some_and(|s| entry.time < *s) {
            continue;
        }
        if let Some(m) = &filter.model {
            let prefix = format!("{}/{m}", filter.vendor);
            let rest = entry.resource.strip_prefix(&prefix);
            if !rest.is_some_and(|r| r.is_empty() || r.starts_with('@')) {
                continue;
            }
        }
        events.push(activity_event(row.seq, entry));
    }
    if next.is_none() && !scanned_all {
        next = Some(resume_from);
    }
    Ok(ActivityPage {
        events,
        next,
        resume_from,
    })
}

pub(crate) fn activity_event(index: u64, entry: audit::Entry) -> wire::audit::ActivityEvent {
    wire::audit::ActivityEvent {
        index,
        time: entry.time,
        actor: entry.actor,
        host: entry.host,
        action: entry.action,
        resource: entry.resource,
        outcome: match entry.outcome {
            audit::Outcome::Ok => "ok",
            audit::Outcome::Denied => "denied",
            audit::Outcome::Failed => "failed",
        }
        .to_owned(),
        policy: entry.decision.map(|d| d.policy),
        detail: entry.detail,
        files: entry.touched.len() as u64,
        bytes: entry.touched.iter().map(|t| t.bytes).sum(),
    }
}

// ----- webhooks ----------------------------------------------------------------------------

/// `PUT /v1/vendors/{vendor}/webhook`: sets the vendor's webhook (its admins; `configure`).
/// The secret is made here and shown once.
#[utoipa::path(
    put,
    path = "/v1/vendors/{vendor}/webhook",
    operation_id = "audit_set_webhook",
    tag = "audit",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    request_body = wire::audit::SetWebhook,
    responses(
        (status = 200, description = "done", body = wire::audit::WebhookInfo),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set_webhook(
    State(app): State<Arc<App>>,
    caller: Caller,
    axum::extract::Path(vendor): axum::extract::Path<String>,
    body: Result<Json<wire::audit::SetWebhook>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<wire::audit::WebhookInfo>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::Configure, Target::Vendor(&vendor)).await?;
    let body = crate::api::json_body(body)?;
    let url = crate::webhooks::check_url(&app.config.webhooks, &body.url)
        .map_err(|why| ApiError::bad_request(ErrorCode::InvalidRequest, why))?;
    let secret = crypto::mac::TagKey::generate()?;
    let entry = caller
        .entry("webhook.set", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("webhook to {url}"));
    app.store
        .set_webhook(
            &vendor.id,
            url.as_str(),
            secret.expose_bytes(),
            body.ca_pem.as_deref(),
            &caller.actor(),
            entry,
        )
        .await?;
    let hook = app
        .store
        .webhook(&vendor.id)
        .await?
        .ok_or_else(|| ApiError::Internal("the webhook just set is gone".into()))?;
    Ok(Json(webhook_info(
        &hook,
        Some(hex::encode(secret.expose_bytes())),
    )))
}

/// `GET /v1/vendors/{vendor}/webhook`: where the events go and how far delivery got.
#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/webhook",
    operation_id = "audit_webhook",
    tag = "audit",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = wire::audit::WebhookInfo),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn webhook(
    State(app): State<Arc<App>>,
    caller: Caller,
    axum::extract::Path(vendor): axum::extract::Path<String>,
) -> Result<Json<wire::audit::WebhookInfo>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::Configure, Target::Vendor(&vendor)).await?;
    let hook = app
        .store
        .webhook(&vendor.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("webhook of {}", vendor.name)))?;
    Ok(Json(webhook_info(&hook, None)))
}

/// `DELETE /v1/vendors/{vendor}/webhook`.
#[utoipa::path(
    delete,
    path = "/v1/vendors/{vendor}/webhook",
    operation_id = "audit_remove_webhook",
    tag = "audit",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 204, description = "removed"),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn remove_webhook(
    State(app): State<Arc<App>>,
    caller: Caller,
    axum::extract::Path(vendor): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::Configure, Target::Vendor(&vendor)).await?;
    let entry = caller
        .entry("webhook.remove", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision));
    app.store.remove_webhook(&vendor.id, entry).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

fn webhook_info(hook: &store::Webhook, secret: Option<String>) -> wire::audit::WebhookInfo {
    wire::audit::WebhookInfo {
        vendor: hook.vendor.clone(),
        url: hook.url.clone(),
        secret,
        delivered_through: hook.delivered_seq,
        failures: hook.failures,
        last_error: hook.last_error.clone(),
    }
}
