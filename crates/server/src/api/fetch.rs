//! File bytes: decrypted on the fly, one segment at a time, never written to disk.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use policy::Action;
use shred::WrappedModelKey;
use types::RepoPath;

use super::models::{authorize_model, load_model, resolve_revision};
use crate::App;
use crate::auth::Caller;
use crate::error::ApiError;

pub(crate) async fn file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, rev, path)): Path<(String, String, String, String)>,
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
                0..file.size,
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
            bytes: file.size,
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
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let value =
        |s: String| HeaderValue::from_str(&s).map_err(|e| ApiError::Internal(e.to_string()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, value(file.size.to_string())?);
    headers.insert(header::ETAG, value(format!("\"{}\"", file.sha256))?);
    headers.insert("x-custody-sha256", value(file.sha256.to_string())?);
    headers.insert("x-custody-commit", value(revision.commit.to_string())?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
