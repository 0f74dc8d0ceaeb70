//! File bytes: decrypted on the fly, one segment at a time, never written to disk. A `Range`
//! request reads and opens only the segments that cover it.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use policy::{Action, Decision};
use store::{FileRecord, RevisionRecord};
use types::RepoPath;
use wire::ErrorCode;

use super::models::{Found, authorize_model, load_model, resolve_revision};
use crate::auth::{Caller, CallerHost};
use crate::error::ApiError;
use crate::state::App;

/// The one byte range a `Range` header asks for, clipped to the file; `None` for the whole
/// file. Unparseable or multi-range headers are ignored (served whole), as RFC 9110 allows.
pub(crate) fn requested_range(
    header: Option<&HeaderValue>,
    size: u64,
) -> Result<Option<Range<u64>>, ApiError> {
    let Some(spec) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = ApiError::RangeNotSatisfiable { size };
    let range = if first.is_empty() {
        // The last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return Ok(None);
        };
        let end = if last.is_empty() {
            size
        } else {
            let Ok(last) = last.parse::<u64>() else {
                return Ok(None);
            };
            if last < start {
                return Ok(None);
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(unsatisfiable);
        }
        start..end
    };
    Ok(Some(range))
}

#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/revisions/{rev}/files/{path}",
    operation_id = "fetch_file",
    tag = "fetch",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)"), ("rev" = String, Path, description = "rev (see the route)"), ("path" = String, Path, description = "path (see the route)")),
    responses(
        (status = 200, description = "the bytes", content_type = "application/octet-stream"),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Fetch, &found).await?;
    let revision = resolve_revision(&app, &found, &rev).await?;
    let file = find_file(&app, &found, &revision, &path).await?;
    let mut response = serve_file(
        &app,
        &caller,
        &found,
        &decision,
        &revision,
        &file,
        headers.get(header::RANGE),
    )
    .await?;
    let headers = response.headers_mut();
    headers.insert(header::ETAG, header_value(format!("\"{}\"", file.sha256))?);
    headers.insert("x-custody-sha256", header_value(file.sha256.to_string())?);
    headers.insert(
        "x-custody-commit",
        header_value(revision.commit.to_string())?,
    );
    Ok(response)
}

pub(crate) fn header_value(s: String) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&s).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The file at `path` in `revision`.
pub(crate) async fn find_file(
    app: &App,
    found: &Found,
    revision: &RevisionRecord,
    path: &str,
) -> Result<FileRecord, ApiError> {
    let path = RepoPath::parse(path)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.to_string()))?;
    app.store
        .revision_file(&revision.commit, &path)
        .await?
        .ok_or_else(|| {
            ApiError::EntryNotFound(format!("{path} in {}@{}", found.name, revision.commit))
        })
}

/// The plaintext of `range` of `file`, decrypted segment by segment. The model key lives
/// only until the stream has its per-object key. The stream's read-ahead is reserved first in
/// the budget of all downloads (`limits.max_download_buffer_bytes`) and held until the stream
/// is dropped: many slow downloads at once wait for room instead of growing memory.
pub(crate) async fn open_file(
    app: &App,
    found: &Found,
    file: &FileRecord,
    range: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, blobstore::BlobError>>, ApiError> {
    let kib =
        u32::try_from(blobstore::read_buffer_bytes(&range).div_ceil(1024)).unwrap_or(u32::MAX);
    let room = app
        .download_buffers
        .clone()
        .acquire_many_owned(kib)
        .await
        .map_err(|e| ApiError::Internal(format!("download buffer budget: {e}")))?;
    let key = crate::keys::model_key(app, &found.record).await?;
    let stream = app
        .blobs
        .open_range(
            &key,
            &found.record.vendor_id,
            &found.record.id,
            &file.object_id,
            file.size,
            range,
        )
        .await?;
    drop(key);
    Ok(Box::pin(stream.map(move |chunk| {
        let _held = &room;
        chunk
    })))
}

/// Serves the bytes of an authorized fetch: the whole file or the one range `range_header`
/// asks for, recorded in the audit log with what was served. Sets the transfer headers
/// (status, length, range); each API adds its own naming headers (ETag, commit).
pub(crate) async fn serve_file(
    app: &App,
    caller: &Caller,
    found: &Found,
    decision: &Decision,
    revision: &RevisionRecord,
    file: &FileRecord,
    range_header: Option<&HeaderValue>,
) -> Result<Response, ApiError> {
    let range = requested_range(range_header, file.size)?;
    let (start, end) = range.clone().map_or((0, file.size), |r| (r.start, r.end));
    let mut stream = open_file(app, found, file, start..end).await?;
    // Open the first segment before answering: most damage (a swapped, truncated or
    // re-headed object) shows here and gets a proper error instead of a cut connection.
    let first = match stream.next().await {
        Some(chunk) => chunk?,
        None => bytes::Bytes::new(),
    };

    let entry = caller
        .entry("fetch", format!("{}@{}", found.name, revision.commit))
        .with_decision(true, decision.policy)
        .with_touched(vec![audit::Touched {
            path: file.path.to_string(),
            sha256: file.sha256.to_string(),
            bytes: end - start,
        }]);
    // Bytes that reach an enrolled host are a copy a deletion must account for: recorded with
    // the fetch's entry, in one transaction, before the first byte leaves (a transfer cut
    // short still counts as served). Fetches without an enrolled host are refused earlier.
    let mut lease = None;
    match &caller.host {
        Some(CallerHost::Enrolled(host)) => {
            let copy = store::HostCopy {
                host_id: host.id.clone(),
                model_id: found.record.id.clone(),
                commit: revision.commit.clone(),
                path: file.path.clone(),
                bytes: end - start,
                file_size: file.size,
            };
            // Within the model's egress budget, or refused (429) with nothing served.
            lease = crate::budgets::admit(app, caller, &found.name, &copy, entry).await?;
        }
        _ => {
            app.store.record(entry).await?;
        }
    }

    let request_id = caller.request_id.clone();
    let rest = stream.map(move |chunk| {
        // The concurrency slot (if any) is held until the body is done or dropped.
        let _held = &lease;
        chunk.map_err(|e| {
            // Headers are gone: all that is left is to cut the connection, so the client
            // sees a short body and its digest check fails.
            tracing::error!(%request_id, error = %e, "aborting a download");
            std::io::Error::other(e.to_string())
        })
    });
    let body = Body::from_stream(futures::stream::once(async move { Ok(first) }).chain(rest));
    let mut response = Response::new(body);
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if range.is_some() {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(format!(
                "bytes {start}-{}/{}",
                end.saturating_sub(1),
                file.size
            ))?,
        );
    }
    headers.insert(
        header::CONTENT_LENGTH,
        header_value((end - start).to_string())?,
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(h: &str, size: u64) -> Result<Option<Range<u64>>, u16> {
        requested_range(Some(&HeaderValue::from_str(h).unwrap()), size)
            .map_err(|e| e.status().0.as_u16())
    }

    #[test]
    fn range_headers_follow_rfc_9110() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some(0..100)));
        assert_eq!(range("bytes=990-2000", 1000), Ok(Some(990..1000)));
        assert_eq!(range("bytes=500-", 1000), Ok(Some(500..1000)));
        assert_eq!(range("bytes=-100", 1000), Ok(Some(900..1000)));
        assert_eq!(range("bytes=-5000", 1000), Ok(Some(0..1000)));
        assert_eq!(range("bytes=1000-", 1000), Err(416));
        assert_eq!(range("bytes=-0", 1000), Err(416));
        assert_eq!(range("bytes=0-", 0), Err(416));
        // Ignored, served whole: malformed, reversed, several ranges, other units.
        for ignored in [
            "bytes=abc",
            "bytes=9-3",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5",
        ] {
            assert_eq!(range(ignored, 1000), Ok(None), "{ignored}");
        }
        assert_eq!(requested_range(None, 10).ok(), Some(None));
    }
}
