//! Names and identifiers, parsed once.
//!
//! Every name that reaches custody from outside (a vendor, a model, a user, a file path inside a
//! model folder) is parsed into one of these types at the edge, so code further in never sees
//! a string that could escape a directory, smuggle a control character into a log line or be
//! confused with another name. Parse, don't validate: the constructors are the only way in.
//!
//! This crate does no IO and depends on no crypto.
#![forbid(unsafe_code)]

mod ids;
mod names;
mod path;

pub use ids::{CommitId, ObjectId, Sha256Hex};
pub use names::{
    GroupName, HostGroupName, HostName, ModelName, RepoRef, Role, UserName, VendorName,
};
pub use path::RepoPath;

/// Why a name, id or path was refused. Messages are shown to users as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is too long ({len} bytes, at most {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{what} {value:?} may only contain ASCII letters, digits, '-', '_' and '.', and must start with a letter or digit"
    )]
    BadCharacters { what: &'static str, value: String },
    #[error(
        "{what} {value:?} contains '--' or '..': the Hugging Face cache uses '--' to join names, so they are not allowed"
    )]
    DoubleSeparator { what: &'static str, value: String },
    #[error("model reference {0:?} must have the form VENDOR/MODEL")]
    NotVendorModel(String),
    #[error("path {0:?} is absolute; paths must be relative to the model folder")]
    AbsolutePath(String),
    #[error("path {0:?} contains '..' or '.' segments")]
    DotSegment(String),
    #[error("path {0:?} contains an empty segment")]
    EmptySegment(String),
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    #[error("{what} {value:?} is not {expected}")]
    BadId {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("unknown role {0:?} (expected operator, vendor-admin, committer or auditor)")]
    UnknownRole(String),
}

/// The OpenAPI schema of a validated string type: a string, with its rule in words and, where
/// one states it exactly, a pattern. The value travels as a plain JSON string.
pub(crate) fn string_schema(
    description: &str,
    pattern: Option<&str>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}
