//! File bytes: decrypted on the fly, one segment at a time, never written to disk. A `Range`
//! request reads and opens only the segments that cover it.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use policy::Action;
use shred::WrappedModelKey;
use types::RepoPath;

use super::models::{authorize_model, load_model, resolve_revision};
use crate::App;
use crate::auth::Caller;
use crate::error::ApiError;

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

pub(crate) async fn file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Fetch, &found).await?;
    let revision = resolve_revision(&app, &found, &rev).await?;
    let path =
        RepoPath::parse(&path).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
    let file = app
        .store
        .revision_file(&revision.commit, &path)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("{path} in {}@{}", found.name, revision.commit))
        })?;
    let range = requested_range(headers.get(header::RANGE), file.size)?;
    let (start, end) = range.clone().map_or((0, file.size), |r| (r.start, r.end));
    let key = app.keys.unwrap_model_key(
        &found.record.id,
        &WrappedModelKey {
            epoch: found.record.key_epoch,
            wrapped: found.record.wrapped_key.clone(),
        },
    )?;
    let mut stream = Box::pin(
        app.blobs
            .open_range(
                &key,
                &found.record.vendor_id,
                &found.record.id,
                &file.object_id,
                file.size,
                start..end,
            )
            .await?,
    );
    drop(key);
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
            path: path.to_string(),
            sha256: file.sha256.to_string(),
            bytes: end - start,
        }]);
    app.store.record(entry).await?;

    let request_id = caller.request_id.clone();
    let rest = stream.map(move |chunk| {
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
    let value =
        |s: String| HeaderValue::from_str(&s).map_err(|e| ApiError::Internal(e.to_string()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if range.is_some() {
        headers.insert(
            header::CONTENT_RANGE,
            value(format!(
                "bytes {start}-{}/{}",
                end.saturating_sub(1),
                file.size
            ))?,
        );
    }
    headers.insert(header::CONTENT_LENGTH, value((end - start).to_string())?);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, value(format!("\"{}\"", file.sha256))?);
    headers.insert("x-custody-sha256", value(file.sha256.to_string())?);
    headers.insert("x-custody-commit", value(revision.commit.to_string())?);
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
