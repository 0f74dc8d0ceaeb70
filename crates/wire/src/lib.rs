//! custody's wire format: every request and response body of the native API (`/v1/...`),
//! errors included, and of the Hugging Face Hub's read API ([`hub`]), as serde types.
//!
//! The server builds every body it sends from these types and reads every body it receives
//! into them; the CLI and the host agent do the same on their side. A field renamed on one
//! side fails to compile on the other, or fails to parse loudly: no body is built with a JSON
//! literal or read by string key (`v["x"]`), so a missing field can never become an empty
//! string and a successful exit.
//!
//! Types only: no IO, no HTTP library. Status codes are the server's business
//! (`server/src/error.rs` maps every error to one); each route's doc names the status of its
//! success bodies where there is more than one.
//!
//! Conventions, kept by every type here:
//! - **Request** fields that the server checks itself (names, paths, digests, commit ids) are
//!   plain strings: the server parses each and refuses a bad one with its own error code
//!   (`invalid_name`, `invalid_path`, ...), which a typed field would turn into a generic
//!   `invalid_request`. Requests marked `deny_unknown_fields` refuse a misspelt field.
//! - **Response** fields use the validated types of the `types` crate wherever the server holds
//!   one, so a client refuses what it could not use safely (a path that would leave its
//!   folder, a digest that is not one) instead of acting on it. Responses accept unknown
//!   fields: a newer server may add one.
//! - An absent optional response value is sent as `null`, not omitted, unless the type says
//!   otherwise (the Hub's bodies omit, as the Hub does).
//! - Hashes in audit bodies are standard base64, as in checkpoints.
//!
//! Versioning: the API is `/v1`. Within v1 a change is additive only: a new route, a new
//! optional request field, a new response field, a new error code (clients read an unknown
//! code as [`ErrorCode::Unknown`]). Anything else (a field renamed, removed or retyped, a
//! changed meaning or status) is a breaking change and makes a new version: its types go in a
//! module `v2` here, the server serves `/v2/...` beside `/v1/...` from them, and `/v1` stays
//! until the clients that speak it are gone. The Hub types follow the Hub and never change
//! on custody's account.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod budget;
pub mod deletion;
mod error;
pub mod hub;
pub mod hub_upload;
pub mod models;
pub mod upload;
pub mod wipe;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

use serde::{Deserialize, Serialize};

/// The body of a request that carries nothing (`{}`): approvals, revocations, commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Empty {}
