//! Audit entries.
//!
//! Every state change is committed in the same database transaction as the entry that
//! describes it (the store crate enforces this by taking an [`Entry`] in each mutating call),
//! and every refusal is recorded too. An entry is serialised once, to canonical JSON bytes,
//! and those bytes are what is stored, so a later Merkle tree over them (RFC 9162) hashes
//! exactly what was written.
//!
//! What an entry never holds: key material, token secrets, plaintext. Digests of what was
//! touched (a file's SHA-256, bytes served) are enough to prove what happened.
//!
//! Tamper evidence (all pure, no IO; specified in `docs/audit.md`):
//! * [`merkle`]: the RFC 9162 tree over entries, incremental over a [`merkle::TreeStore`],
//!   with inclusion and consistency proofs and their verification.
//! * [`checkpoint`]: C2SP checkpoints in C2SP signed notes, Ed25519 (via `crypto::sign`).
//! * [`bundle`]: offline verification of an exported log, rebuilding every leaf from its bytes.
//! * [`witness`]: C2SP witness cosignatures (`cosignature/v1`) and the checks of a witness's
//!   `add-checkpoint`, with the quorum an auditor requires.
#![forbid(unsafe_code)]
// Integers from the database and from bundles are converted checked, never wrapped by `as`.
#![deny(
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation
)]

pub mod bundle;
pub mod checkpoint;
pub mod merkle;
pub mod witness;

use std::time::SystemTime;

use serde::Serialize;

/// Version of the entry encoding. Frozen once entries exist; a change means a new number.
pub const ENTRY_FORMAT_VERSION: u32 = 1;

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

/// The authorization decision behind the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub allowed: bool,
    pub policy: String,
}

/// One file touched, by path and content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Touched {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// One audit entry. Field order is the serialisation order: keep it fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub v: u32,
    /// Assigned by the store when the entry is appended.
    pub seq: u64,
    pub time: String,
    /// `role:user`, or `system` for the server's own actions.
    pub actor: String,
    /// The exclusive server that made the request, when there was one.
    pub host: Option<String>,
    pub action: String,
    /// `vendor`, `vendor/model`, `vendor/model@commit` or `service`.
    pub resource: String,
    pub decision: Option<DecisionRecord>,
    pub request_id: String,
    pub outcome: Outcome,
    /// A short, secret-free detail (an error code, a commit id, a token id).
    pub detail: Option<String>,
    pub touched: Vec<Touched>,
}

impl Entry {
    pub fn new(actor: impl Into<String>, action: &str, resource: impl Into<String>) -> Self {
        Entry {
            v: ENTRY_FORMAT_VERSION,
            seq: 0,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            actor: actor.into(),
            host: None,
            action: action.to_owned(),
            resource: resource.into(),
            decision: None,
            request_id: String::new(),
            outcome: Outcome::Ok,
            detail: None,
            touched: Vec::new(),
        }
    }

    pub fn with_decision(mut self, allowed: bool, policy: &str) -> Self {
        self.decision = Some(DecisionRecord {
            allowed,
            policy: policy.to_owned(),
        });
        self
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = id.to_owned();
        self
    }

    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_touched(mut self, touched: Vec<Touched>) -> Self {
        self.touched = touched;
        self
    }

    /// The canonical bytes: compact JSON, fields in declaration order, no trailing newline.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and vectors to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_are_stable_and_ordered() {
        let mut e = Entry::new("committer:alice", "fetch", "acme/m@abc")
            .with_decision(true, "committer-granted")
            .with_request_id("r1")
            .with_touched(vec![Touched {
                path: "config.json".into(),
                sha256: "00".repeat(32),
                bytes: 12,
            }]);
        e.time = "2026-01-01T00:00:00.000Z".into();
        e.seq = 7;
        let text = String::from_utf8(e.to_canonical_bytes()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"seq":7,"time":"2026-01-01T00:00:00.000Z","actor":"committer:alice","host":null,"action":"fetch""#), "{text}");
        assert_eq!(e.to_canonical_bytes(), e.clone().to_canonical_bytes());
    }
}
