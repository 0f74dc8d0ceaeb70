//! The error body of the native API, and its stable error codes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Written for the user; never carries a secret or an internal detail.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// In the OpenAPI description: a string, one of the frozen codes.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "a machine-readable error code; its string form is frozen",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, )*) => {
        /// A machine-readable error code. Its string form is frozen: scripts match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this version does not know (sent by a newer server); never sent.
            Unknown,
        }

        impl ErrorCode {
            /// Every code the server sends.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it travels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The code of its string form; [`ErrorCode::Unknown`] for any other string.
            pub fn parse(text: &str) -> ErrorCode {
                match text {
                    $($text => ErrorCode::$variant,)*
                    _ => ErrorCode::Unknown,
                }
            }
        }
    };
}

error_codes! {
    // --- refusals and failures, one per kind (status in parentheses) -------------------------
    /// No valid credentials (401).
    Unauthenticated = "unauthenticated",
    /// The policy refused (403).
    Forbidden = "forbidden",
    /// No such thing, or not one the caller may learn of (404).
    NotFound = "not_found",
    /// The model was deleted; the message names its deletion (410).
    Deleted = "deleted",
    /// The request conflicts with the current state (409).
    Conflict = "conflict",
    /// The caller already has as many upload sessions open as one user may (409).
    TooManyUploads = "too_many_uploads",
    /// A resumed upload sent bytes from another offset than the server holds (409).
    ResumeMismatch = "resume_mismatch",
    /// Stored data failed its integrity check (500).
    IntegrityError = "integrity_error",
    /// A byte range outside the file (416).
    RangeNotSatisfiable = "range_not_satisfiable",
    /// Too many refused requests from this source; retry after `Retry-After` seconds (429).
    RateLimited = "rate_limited",
    /// A fetch beyond the model's egress budget; the message says which limit and when it
    /// frees up, `Retry-After` the seconds until then when that is known (429).
    BudgetExceeded = "budget_exceeded",
    /// The host runs as many fetches of the model at once as its egress budget allows: retry
    /// after `Retry-After` seconds, when one has likely ended (429).
    TooManyFetches = "too_many_fetches",
    /// The server failed; its log has the details (500).
    Internal = "internal",
    // --- bad requests (400), by what was wrong ---------------------------------------------
    /// The body is not the JSON the route takes.
    InvalidRequest = "invalid_request",
    InvalidName = "invalid_name",
    InvalidPath = "invalid_path",
    InvalidRevision = "invalid_revision",
    InvalidDigest = "invalid_digest",
    InvalidCsr = "invalid_csr",
    InvalidWindow = "invalid_window",
    InvalidGrantee = "invalid_grantee",
    InvalidExpiry = "invalid_expiry",
    InvalidTime = "invalid_time",
    InvalidTokenId = "invalid_token_id",
    InvalidId = "invalid_id",
    InvalidRange = "invalid_range",
    InvalidDerivedFrom = "invalid_derived_from",
    InvalidMessage = "invalid_message",
    InvalidCursor = "invalid_cursor",
    InvalidLimit = "invalid_limit",
    VendorRequired = "vendor_required",
    VendorNotAllowed = "vendor_not_allowed",
    EmptyUpload = "empty_upload",
    TooManyFiles = "too_many_files",
    DuplicatePath = "duplicate_path",
    PathConflict = "path_conflict",
    FileTooLarge = "file_too_large",
    UploadTooLarge = "upload_too_large",
    SizeMismatch = "size_mismatch",
    DigestMismatch = "digest_mismatch",
    UploadInterrupted = "upload_interrupted",
    /// A request body over the server's limit (413).
    TooLarge = "too_large",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(ErrorCode::parse(&text))
    }
}
