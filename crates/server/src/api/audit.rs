//! The audit log for auditors: the log key, signed checkpoints (latest, by range, signed on
//! demand), inclusion and consistency proofs, ranges of entries and leaf hashes, and the tree
//! edge an export continues from.
//!
//! Every route needs `export_audit` on the service, which the shipped policies give the
//! operator only. The log holds every vendor's entries (and their model names), so
//! vendor-scoped roles (vendor admins, auditors) are refused here: there is no vendor-scoped
//! view yet; an operator exports and hands the bundle over. Each allowed request is itself
//! recorded (`audit.read`, `audit.checkpoint`).
//!
//! Hashes are standard base64, as in checkpoints. Entries travel as NDJSON: line i of the body
//! is exactly the stored bytes of entry `from + i`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use policy::{Action, Decision};
use wire::ErrorCode;
use wire::audit::{
    AuditKey, Checkpoint, CheckpointList, ConsistencyProof, ConsistencyQuery, EdgeQuery,
    InclusionProof, InclusionQuery, LatestCheckpoint, RangeQuery, SignedCheckpoint, TreeEdge,
    WitnessStatus,
};

use crate::App;
use crate::auth::{Caller, Target, authorize, policy_ids};
use crate::error::ApiError;
use crate::witnesses::Witnesses;

/// Most entries per request (an export pages through the log).
const MAX_ENTRIES: u64 = 50_000;
/// Most leaf hashes per request (32 bytes each).
const MAX_LEAVES: u64 = 1_000_000;
/// Most checkpoints per request.
const MAX_CHECKPOINTS: u64 = 1_000;

async fn allow(app: &App, caller: &Caller) -> Result<Decision, ApiError> {
    authorize(app, caller, Action::ExportAudit, Target::Service).await
}

/// Records an allowed read of the log.
async fn record_read(
    app: &App,
    caller: &Caller,
    decision: &Decision,
    detail: String,
) -> Result<(), ApiError> {
    let entry = caller
        .entry("audit.read", "service")
        .with_decision(true, &policy_ids(decision))
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
pub(crate) async fn key(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<AuditKey>, ApiError> {
    allow(&app, &caller).await?;
    let vkey = app.checkpointer.verifier().map_err(internal)?;
    Ok(Json(AuditKey {
        origin: app.checkpointer.origin().to_owned(),
        key: vkey.to_string(),
    }))
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, the log's current size, and the
/// reason the last signing attempt was refused, if it was.
pub(crate) async fn latest(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<LatestCheckpoint>, ApiError> {
    let decision = allow(&app, &caller).await?;
    let size = app.store.audit_size().await?;
    let latest = app.store.latest_checkpoint().await?;
    record_read(&app, &caller, &decision, "latest checkpoint".into()).await?;
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
pub(crate) async fn sign(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<SignedCheckpoint>, ApiError> {
    let decision = allow(&app, &caller).await?;
    let entry = caller
        .entry("audit.checkpoint", "service")
        .with_decision(true, &policy_ids(&decision));
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
pub(crate) async fn checkpoints(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Json<CheckpointList>, ApiError> {
    let decision = allow(&app, &caller).await?;
    let (from, to) = (q.from.unwrap_or(0), q.to.unwrap_or(u64::MAX));
    let list = app.store.checkpoints(from, to, MAX_CHECKPOINTS).await?;
    record_read(
        &app,
        &caller,
        &decision,
        format!("checkpoints {from}..={to}"),
    )
    .await?;
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

/// `GET /v1/audit/entries?from=A&to=B`: entries A..B (at most 50,000; the body says how many
/// by its lines) as NDJSON, each line exactly the stored bytes.
pub(crate) async fn entries(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let decision = allow(&app, &caller).await?;
    let (from, to) = clamp(&app, &q, MAX_ENTRIES).await?;
    let rows = app.store.audit_entries(from, to).await?;
    let mut body = Vec::with_capacity(rows.iter().map(|(_, b)| b.len() + 1).sum());
    for (i, (seq, bytes)) in rows.iter().enumerate() {
        if *seq != from + i as u64 {
            return Err(ApiError::Internal(format!(
                "audit entry {} is missing",
                from + i as u64
            )));
        }
        body.extend_from_slice(bytes);
        body.push(b'\n');
    }
    record_read(&app, &caller, &decision, format!("entries {from}..{to}")).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(wire::audit::ENTRIES_FROM_HEADER, from)
        .header(wire::audit::ENTRIES_TO_HEADER, from + rows.len() as u64)
        .body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /v1/audit/leaves?from=A&to=B`: the stored leaf hashes of entries A..B, 32 bytes each.
pub(crate) async fn leaves(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let decision = allow(&app, &caller).await?;
    let (from, to) = clamp(&app, &q, MAX_LEAVES).await?;
    let leaves = app.store.audit_leaf_hashes(from, to).await?;
    let body: Vec<u8> = leaves.concat();
    record_read(
        &app,
        &caller,
        &decision,
        format!("leaf hashes {from}..{to}"),
    )
    .await?;
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
pub(crate) async fn inclusion(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let decision = allow(&app, &caller).await?;
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
        &decision,
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
pub(crate) async fn consistency(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let decision = allow(&app, &caller).await?;
    let new = size_or_latest(&app, q.new).await?;
    let proof = app
        .store
        .audit_consistency_proof(q.old, new)
        .await
        .map_err(out_of_range)?;
    record_read(
        &app,
        &caller,
        &decision,
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
pub(crate) async fn edge(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<EdgeQuery>,
) -> Result<Json<TreeEdge>, ApiError> {
    let decision = allow(&app, &caller).await?;
    let edge = app.store.audit_edge(q.size).await.map_err(out_of_range)?;
    record_read(&app, &caller, &decision, format!("tree edge at {}", q.size)).await?;
    Ok(Json(TreeEdge {
        size: q.size,
        edge: b64_all(&edge),
    }))
}
