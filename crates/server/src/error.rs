//! Errors as responses. [`ApiError::status`] is the one place that maps an error to an HTTP
//! status and a stable code; messages are written for the user and never carry secrets.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Denied(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    /// A resumed upload sent bytes from another offset than the server holds.
    #[error("{0}")]
    ResumeMismatch(String),
    #[error(
        "the stored data failed its integrity check; the file was not served (the operator should investigate)"
    )]
    Integrity,
    #[error("the requested range is outside the file of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// Details go to the server log only; the client gets a request id to quote.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status and the stable, machine-readable code of each error.
    pub(crate) fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ResumeMismatch(_) => (StatusCode::CONFLICT, "resume_mismatch"),
            ApiError::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, "integrity_error"),
            ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            ApiError::Integrity => {
                tracing::error!("integrity check failed on a stored object");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if let ApiError::RangeNotSatisfiable { size } = self
            && let Ok(v) = format!("bytes */{size}").parse()
        {
            response.headers_mut().insert("content-range", v);
        }
        response
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Conflict(m) => ApiError::Conflict(m),
            store::StoreError::NotFound(what) => ApiError::NotFound(what.to_owned()),
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
                "size_mismatch",
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
        ApiError::bad_request("invalid_name", e.to_string())
    }
}
