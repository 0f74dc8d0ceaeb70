//! Errors of loading, validating and preparing decisions.

use thiserror::Error;

/// Why a policy set could not be loaded, or facts could not be turned into a request.
///
/// Messages carry Cedar's own text (parser, validator) so an operator can fix the file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("no schema: {0} is missing")]
    MissingSchema(String),
    #[error("no policies: {0} holds no *.cedar file with a policy")]
    NoPolicies(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: a policy has no @id(\"...\") annotation: {policy}")]
    MissingId { file: String, policy: String },
    #[error("{file}: policy id {id:?} is used twice")]
    DuplicateId { file: String, id: String },
    #[error("{file}: forbid {id:?} has no @reason(\"...\") annotation (refusals must explain)")]
    MissingReason { file: String, id: String },
    #[error("{file}: templates are not used (grants are entity data): {id:?}")]
    Template { file: String, id: String },
    #[error("strict validation failed:\n  {}", .0.join("\n  "))]
    Validation(Vec<String>),
    #[error("building the request: {0}")]
    Facts(String),
}
