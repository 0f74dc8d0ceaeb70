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
pub mod leaf;
pub mod merkle;
pub mod witness;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Version of the entry encoding. Frozen once entries exist; a change means a new number.
/// Version 2 added `vendor`, and its leaves carry the vendor's tag ([`leaf`]).
pub const ENTRY_FORMAT_VERSION: u32 = 2;

/// Resources that name no vendor. Vendors may not take these names (the server refuses them),
/// so an entry's vendor can be read off its resource.
pub const NON_VENDOR_RESOURCES: [&str; 5] = ["service", "keys", "unknown", "deletion", "model"];

/// The vendor a resource belongs to: the first segment of `vendor`, `vendor/model` or
/// `vendor/model@commit`; none for the service's own resources (`service`, `keys`,
/// `deletion/ID`, `model/ID`, `host:NAME`, …), which the caller tags with
/// [`Entry::with_vendor`] when they concern one vendor.
pub fn vendor_of_resource(resource: &str) -> Option<&str> {
    if resource.contains(':') {
        return None;
    }
    let first = resource.split(['/', '@']).next().unwrap_or_default();
    if first.is_empty() || NON_VENDOR_RESOURCES.contains(&first) {
        return None;
    }
    Some(first)
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

/// The authorization decision behind the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub allowed: bool,
    pub policy: String,
}

/// One file touched, by path and content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// One audit entry. Field order is the serialisation order: keep it fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The vendor the entry concerns (format 2): its leaf carries that vendor's tag, so the
    /// vendor's export can be checked for completeness ([`leaf`]). Format 1 has no field.
    #[serde(default)]
    pub vendor: Option<String>,
    pub decision: Option<DecisionRecord>,
    pub request_id: String,
    pub outcome: Outcome,
    /// A short, secret-free detail (an error code, a commit id, a token id).
    pub detail: Option<String>,
    pub touched: Vec<Touched>,
}

impl Entry {
    pub fn new(actor: impl Into<String>, action: &str, resource: impl Into<String>) -> Self {
        let resource = resource.into();
        Entry {
            vendor: vendor_of_resource(&resource).map(str::to_owned),
            v: ENTRY_FORMAT_VERSION,
            seq: 0,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            actor: actor.into(),
            host: None,
            action: action.to_owned(),
            resource,
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

    /// The vendor this entry concerns, when its resource does not name it (a deletion's
    /// steps, a scheduled deletion).
    pub fn with_vendor(mut self, vendor: impl Into<String>) -> Self {
        self.vendor = Some(vendor.into());
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

    /// Reads stored bytes back (either format), for views of the log; never for hashing,
    /// which always uses the stored bytes themselves.
    pub fn parse(bytes: &[u8]) -> Result<Entry, serde_json::Error> {
        serde_json::from_slice(bytes)
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
        assert!(text.starts_with(r#"{"v":2,"seq":7,"time":"2026-01-01T00:00:00.000Z","actor":"committer:alice","host":null,"action":"fetch","resource":"acme/m@abc","vendor":"acme","#), "{text}");
        assert_eq!(e.to_canonical_bytes(), e.clone().to_canonical_bytes());
    }

    #[test]
    fn the_vendor_is_read_off_the_resource_and_never_off_the_services_own() {
        for (resource, vendor) in [
            ("acme", Some("acme")),
            ("acme/llama-9", Some("acme")),
            ("acme/llama-9@0123abcd", Some("acme")),
            ("service", None),
            ("keys", None),
            ("unknown", None),
            ("deletion/0a1b", None),
            ("model/0a1b", None),
            ("host:gpu-01", None),
            ("", None),
        ] {
            assert_eq!(vendor_of_resource(resource), vendor, "{resource}");
            let entry = Entry::new("system", "x", resource);
            assert_eq!(entry.vendor.as_deref(), vendor, "{resource}");
        }
        let tagged = Entry::new("system", "deletion.keys", "deletion/0a1b").with_vendor("acme");
        assert_eq!(tagged.vendor.as_deref(), Some("acme"));
    }
}
