//! Errors as responses. [`ApiError::status`] is the one place that maps an error to an HTTP
//! status and a stable code; messages are written for the user and never carry secrets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wire::ErrorCode;
use wire::hub::HubErrorCode;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Denied(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Kinds of "not found" that the Hub API tells apart (natively all are `not_found`).
    #[error("{0} not found")]
    ModelNotFound(String),
    #[error("{0} not found")]
    RevisionNotFound(String),
    #[error("{0} not found")]
    EntryNotFound(String),
    /// A name in a request that names no user, group or host group (`suggest.rs`).
    #[error("{0}")]
    UnknownName(String),
    /// A model that was deleted; the message names its deletion certificate.
    #[error("{0}")]
    Deleted(String),
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    #[error("{0}")]
    Conflict(String),
    /// The caller has as many upload sessions open as one user may.
    #[error("{0}")]
    TooManyUploads(String),
    /// A resumed upload sent bytes from another offset than the server holds.
    #[error("{0}")]
    ResumeMismatch(String),
    #[error(
        "the stored data failed its integrity check; the file was not served (the operator should investigate)"
    )]
    Integrity,
    #[error("the requested range is outside the file of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// A request body over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many refused requests from this source: answered 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// Details go to the server log only; the client gets a request id to quote.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status and the stable, machine-readable code of each error.
    pub(crate) fn status(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_)
            | ApiError::ModelNotFound(_)
            | ApiError::RevisionNotFound(_)
            | ApiError::EntryNotFound(_)
            | ApiError::UnknownName(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Deleted(_) => (StatusCode::GONE, ErrorCode::Deleted),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::ResumeMismatch(_) => (StatusCode::CONFLICT, ErrorCode::ResumeMismatch),
            ApiError::TooManyUploads(_) => (StatusCode::CONFLICT, ErrorCode::TooManyUploads),
            ApiError::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::IntegrityError),
            ApiError::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
            ),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl ApiError {
    /// The message the user sees. Logs what the user must not see (internal details).
    fn user_message(&self) -> String {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            ApiError::Integrity => {
                tracing::error!("integrity check failed on a stored object");
                self.to_string()
            }
            other => other.to_string(),
        }
    }

    /// The headers some errors carry: `Content-Range` of a range outside the file,
    /// `Retry-After` of a rate limit.
    fn add_headers(&self, response: &mut Response) {
        if let ApiError::RangeNotSatisfiable { size } = self
            && let Ok(v) = format!("bytes */{size}").parse()
        {
            response.headers_mut().insert("content-range", v);
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after),
            );
        }
    }

    /// Status and `X-Error-Code` in the Hugging Face Hub's convention, which
    /// `huggingface_hub` turns into its typed errors (`GatedRepoError`,
    /// `RepositoryNotFoundError`, `RevisionNotFoundError`, `EntryNotFoundError`). A refusal
    /// must carry `GatedRepo`: a bare 403 makes the client blame the network.
    pub(crate) fn hub_status(&self) -> (StatusCode, Option<HubErrorCode>) {
        match self {
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, Some(HubErrorCode::GatedRepo)),
            ApiError::ModelNotFound(_)
            | ApiError::Deleted(_)
            | ApiError::BadRequest {
                code: ErrorCode::InvalidName,
                ..
            } => (StatusCode::NOT_FOUND, Some(HubErrorCode::RepoNotFound)),
            ApiError::RevisionNotFound(_)
            | ApiError::BadRequest {
                code: ErrorCode::InvalidRevision,
                ..
            } => (StatusCode::NOT_FOUND, Some(HubErrorCode::RevisionNotFound)),
            ApiError::EntryNotFound(_)
            | ApiError::BadRequest {
                code: ErrorCode::InvalidPath,
                ..
            } => (StatusCode::NOT_FOUND, Some(HubErrorCode::EntryNotFound)),
            other => (other.status().0, None),
        }
    }

    /// The Hub rendering: `X-Error-Code`, the reason in `X-Error-Message` (HEAD responses
    /// have no body, so the header is the only way to tell the user why) and in the body as
    /// `{"error": "..."}`. `commit` becomes `X-Repo-Commit`, which lets the client cache a
    /// missing file as absent for that revision.
    pub(crate) fn into_hub_response(self, commit: Option<&str>) -> Response {
        let (status, code) = self.hub_status();
        let message = self.user_message();
        let header_message = header_text(&message);
        let mut response = (status, Json(wire::hub::HubError { error: message })).into_response();
        let headers = response.headers_mut();
        if let Some(code) = code {
            headers.insert(
                wire::hub::ERROR_CODE_HEADER,
                HeaderValue::from_static(code.as_str()),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&header_message) {
            headers.insert(wire::hub::ERROR_MESSAGE_HEADER, v);
        }
        if let Some(commit) = commit
            && let Ok(v) = HeaderValue::from_str(commit)
        {
            headers.insert(wire::hub::REPO_COMMIT_HEADER, v);
        }
        self.add_headers(&mut response);
        response
    }
}

/// `message` as a header value: visible ASCII, with common typographic marks replaced.
fn header_text(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            ' '..='~' => c,
            '\u{2010}'..='\u{2015}' => '-',
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            _ => '?',
        })
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = self.user_message();
        let mut response = (status, Json(wire::ErrorBody::new(code, message))).into_response();
        self.add_headers(&mut response);
        response
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Conflict(m) => ApiError::Conflict(m),
            store::StoreError::Refused(m) => ApiError::Denied(m),
            store::StoreError::NotFound(what) => ApiError::NotFound(what.to_owned()),
            store::StoreError::TooManyUploads { open, next_expiry } => {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(next_expiry).unwrap_or(0));
                ApiError::TooManyUploads(format!(
                    "you have {open} upload sessions open, the most one user may have \
                     (limits.max_open_uploads_per_user): finish and commit one (the same \
                     upload run again resumes its session), or wait until the first expires \
                     at {}",
                    humantime::format_rfc3339_seconds(at)
                ))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<blobstore::BlobError> for ApiError {
    fn from(e: blobstore::BlobError) -> Self {
        match e {
            blobstore::BlobError::Integrity | blobstore::BlobError::NotFound(_) => {
                // A missing object whose metadata exists is damage, not a user error.
                ApiError::Integrity
            }
            blobstore::BlobError::SizeMismatch { expected, actual } => ApiError::bad_request(
                ErrorCode::SizeMismatch,
                format!("received {actual} bytes, the manifest declared {expected}"),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<shred::KeyError> for ApiError {
    fn from(e: shred::KeyError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crypto::CryptoError> for ApiError {
    fn from(e: crypto::CryptoError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<types::NameError> for ApiError {
    fn from(e: types::NameError) -> Self {
        ApiError::bad_request(ErrorCode::InvalidName, e.to_string())
    }
}

/// The status a witness answers a refused `add-checkpoint` with (C2SP tlog-witness).
pub(crate) fn witness_refusal_status(refusal: &audit::witness::Refusal) -> StatusCode {
    use audit::witness::Refusal;
    match refusal {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::UnknownLog(_) => StatusCode::NOT_FOUND,
        Refusal::NotSigned(_) => StatusCode::FORBIDDEN,
        Refusal::Conflict { .. } => StatusCode::CONFLICT,
        Refusal::Inconsistent(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}
