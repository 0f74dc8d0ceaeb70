//! Errors as responses. [`ApiError::status`] is the one place that maps an error to an HTTP
//! status and a stable code; messages are written for the user and never carry secrets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use policy::{Action, Decision, Facts, ResourceFacts};
use types::Role;
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
    /// A fetch beyond the model's egress budget (`budgets.rs`): 429, with `Retry-After` when
    /// the time the budget frees up is known. `busy`: only the host's concurrency limit, which
    /// frees up as soon as one of its fetches ends (its own code, so clients retry just that).
    #[error("{message}")]
    BudgetExceeded {
        message: String,
        retry_after: Option<u64>,
        busy: bool,
    },
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
            ApiError::BudgetExceeded { busy: false, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::BudgetExceeded)
            }
            ApiError::BudgetExceeded { busy: true, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyFetches)
            }
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
        let retry_after = match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::BudgetExceeded { retry_after, .. } => *retry_after,
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
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
    /// have no body, so the header is the only way to tell the user why), in the body as
    /// `{"error": "..."}` (both end up in the Python client's exception text) and, for a
    /// refusal, in `X-HF-Warning` (what the `hf` command prints). `commit` becomes
    /// `X-Repo-Commit`, which lets the client cache a missing file as absent for that revision.
    pub(crate) fn into_hub_response(self, commit: Option<&str>) -> Response {
        self.hub_response(commit, false)
    }

    /// The Hub rendering for the write API (`api/hub_upload.rs`): as
    /// [`ApiError::into_hub_response`], but a refusal is a plain 403 with the reason (the
    /// client shows "403 Forbidden: <reason>"); `GatedRepo` would tell a vendor the model is
    /// gated.
    pub(crate) fn into_hub_write_response(self) -> Response {
        self.hub_response(None, true)
    }

    fn hub_response(self, commit: Option<&str>, write: bool) -> Response {
        let (status, code) = self.hub_status();
        let code = code.filter(|_| !(write && matches!(self, ApiError::Denied(_))));
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
        // A refusal's reason, where the `hf` command prints it (it shows its own fixed text
        // for a gated or missing repository); not for a missing file, which clients probe for.
        let refusal = matches!(
            self,
            ApiError::Denied(_)
                | ApiError::Deleted(_)
                | ApiError::Unauthenticated(_)
                | ApiError::RateLimited { .. }
                | ApiError::BudgetExceeded { .. }
        );
        if refusal
            && let Ok(v) = HeaderValue::from_str(&format!("custody; custody: {header_message}"))
        {
            headers.insert(wire::hub::WARNING_HEADER, v);
        }
        if let Some(commit) = commit
            && let Ok(v) = HeaderValue::from_str(commit)
        {
            headers.insert(wire::hub::REPO_COMMIT_HEADER, v);
        }
        self.add_headers(&mut response);
        // huggingface_hub sleeps through `Retry-After` (plus a second) before each of its five
        // retries of a 429 and shows the reason only after the last: a budget that frees up
        // in hours would hang `hf download` for days, silently. So the Hub gets `Retry-After`
        // only for a short wait, which the client then rides out; for a longer one it gives
        // up after its own short backoff and shows the reason, which names the time.
        if let ApiError::BudgetExceeded {
            retry_after: Some(secs),
            ..
        } = &self
            && *secs > HUB_RETRY_AFTER_MAX_SECS
        {
            response
                .headers_mut()
                .remove(axum::http::header::RETRY_AFTER);
        }
        response
    }
}

/// The longest `Retry-After` the Hub API sends with a budget refusal (see
/// [`ApiError::into_hub_response`]).
pub(crate) const HUB_RETRY_AFTER_MAX_SECS: u64 = 30;

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

/// A refusal in plain words: who may do what was asked, and what to do instead. A denial a
/// forbid decided reads that policy's `@reason` (`policies/forbids.cedar`), with the time an
/// embargo window lifts or closed; a default denial (no permit matched) reads [`who_may`]. The
/// machine code stays `forbidden` and the audit entry keeps the policy ids.
pub(crate) fn refusal_message(
    decision: &Decision,
    action: Action,
    facts: Option<&Facts>,
) -> String {
    let vendor = facts.and_then(|f| match &f.resource {
        ResourceFacts::Service => None,
        ResourceFacts::Vendor(v) => Some(v.name.as_str()),
        ResourceFacts::Model(m) => Some(m.vendor.as_str()),
    });
    if decision.policies.is_empty() && decision.policy == "default-deny" {
        let role = facts.map(|f| f.principal.role);
        return who_may(action, role, vendor);
    }
    let mut message = decision.reason.clone();
    let window = facts.and_then(|f| match &f.resource {
        ResourceFacts::Model(m) => Some((m.not_before, m.not_after)),
        _ => None,
    });
    if let Some((not_before, not_after)) = window {
        let decided_by = |id: &str| decision.policies.iter().any(|p| p == id);
        if let Some(t) = not_before.filter(|_| decided_by("embargo-not-yet")) {
            message.push_str(&format!(
                "; the embargo lifts at {}",
                crate::approvals::rfc3339(t)
            ));
        }
        if let Some(t) = not_after.filter(|_| decided_by("embargo-ended")) {
            message.push_str(&format!("; it closed at {}", crate::approvals::rfc3339(t)));
        }
    }
    message
}

/// Who may take `action`, and what the refused caller can do instead: the one table from a
/// policy action to the words a person reads. It follows `policies/permits.cedar`.
fn who_may(action: Action, role: Option<Role>, vendor: Option<&str>) -> String {
    let admins = match vendor {
        Some(v) => format!("a vendor admin of {v}"),
        None => "the vendor's admins".to_owned(),
    };
    let operator = "the service's operator";
    match action {
        Action::CreateVendor => format!("only {operator} creates vendors: ask them to create it"),
        Action::CreateToken => format!(
            "only {operator} issues, lists and revokes tokens: ask them; to replace your own \
             token, run `custody token rotate`"
        ),
        Action::ListVendors => format!(
            "only {operator} lists every vendor: `custody ls VENDOR` lists a vendor's models \
             you may see"
        ),
        Action::ReadMetadata => format!(
            "only {admins}, its auditors, the operator and committers it granted access see \
             this: ask {admins} for a grant"
        ),
        Action::Fetch => match role {
            Some(Role::Committer) => format!(
                "weights go only to committers holding a grant, on an approved exclusive host: \
                 ask {admins} to grant you access (`custody grant`)"
            ),
            _ => format!(
                "weights go only to committers {admins} granted access and to the vendor's \
                 admins, on an approved exclusive host"
            ),
        },
        Action::Upload => match role {
            Some(Role::Committer) => format!(
                "only {admins} uploads a model; what you made from a model you hold a grant on \
                 goes up as a derived revision (`custody upload DIR VENDOR/MODEL \
                 --derived-from COMMIT`)"
            ),
            _ => format!("only {admins} uploads models: ask one of them"),
        },
        Action::UploadDerived => format!(
            "only {admins} and committers holding a grant on the model upload derived \
             revisions: ask {admins} for a grant"
        ),
        Action::Grant => format!(
            "only {admins} grants access to its models: ask one of them (`custody access \
             VENDOR/MODEL` shows who holds access, for the vendor's admins, auditors and the \
             operator)"
        ),
        Action::Revoke => format!("only {admins} revokes grants: ask one of them"),
        Action::Exclude => format!(
            "only {admins} excludes people from its models or lets them back: ask one of them"
        ),
        Action::RequestDeletion => {
            format!("only {admins} or {operator} may ask for a deletion: ask one of them")
        }
        Action::Approve => format!(
            "only {admins} approves or rejects the vendor's pending requests (never their own): \
             ask another admin; you may cancel your own request with `custody reject ID`"
        ),
        Action::ExportAudit => format!(
            "only {operator} exports the whole audit log; {admins} and its auditors export the \
             vendor's part"
        ),
        Action::ManageHosts => match vendor {
            Some(_) => format!(
                "only {admins} approves hosts and allows host groups for its models: ask one of \
                 them"
            ),
            None => format!("only {operator} enrolls and revokes hosts: ask them"),
        },
        Action::ManageGroups => {
            format!("only {admins} manages the vendor's groups: ask one of them")
        }
        Action::Configure => format!(
            "only {admins} sets embargoes, egress budgets, schedules and the two-person rule: \
             ask one of them"
        ),
        Action::ReadDeletions => {
            format!("only {admins}, its auditors and {operator} follow the vendor's deletions")
        }
        Action::ReadAccess => format!(
            "only {admins}, its auditors and {operator} see who may receive a model; \
             `custody whoami` shows your own standing"
        ),
    }
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
            store::StoreError::LastOperator => ApiError::Conflict(
                "this is the last live operator token: revoking it would leave nobody able to \
                 run the service. Create another operator token first (custody token create \
                 --role operator --name NAME) and revoke this one with it; without any \
                 operator token, run `custody recover-operator` on the server machine"
                    .to_owned(),
            ),
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
                crate::metrics::storage_error("integrity");
                ApiError::Integrity
            }
            blobstore::BlobError::SizeMismatch { expected, actual } => ApiError::bad_request(
                ErrorCode::SizeMismatch,
                format!("received {actual} bytes, the manifest declared {expected}"),
            ),
            other => {
                crate::metrics::storage_error("backend");
                ApiError::Internal(other.to_string())
            }
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
