//! The deletion's work record: what later steps need, persisted with each step (no secret:
//! wrapped keys are inert without their epoch key).
//!
//! Versioned JSON. Reading it is strict: a record that does not decode, has no version or an
//! unknown one, carries a field this version does not know, or lacks what its state promises
//! (the epochs once keys are destroyed, the root's destruction once the epoch is) is an error
//! that stops the deletion and shows in its status. Never a silent "start over".

use serde::{Deserialize, Serialize};
use store::DeletionState;

/// The version this code writes and reads. Frozen per version: a change of meaning is a new
/// version, with a migration of the records in flight.
pub(crate) const WORK_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Work {
    pub version: u32,
    #[serde(default)]
    pub models: Vec<WorkModel>,
    #[serde(default)]
    pub objects: Vec<WorkObject>,
    #[serde(default)]
    pub upload_objects: Vec<String>,
    /// The epoch that wrapped the deleted keys; set when the deletion is prepared.
    #[serde(default)]
    pub from_epoch: Option<u64>,
    /// The epoch the surviving keys were re-wrapped to.
    #[serde(default)]
    pub to_epoch: Option<u64>,
    #[serde(default)]
    pub root_kind: Option<String>,
    #[serde(default)]
    pub root: Option<String>,
    /// How `from_epoch`'s root was destroyed.
    #[serde(default)]
    pub root_destroyed: Option<RootDestroyed>,
    #[serde(default)]
    pub post_checks: Vec<PostCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkModel {
    pub id: String,
    pub vendor: String,
    pub name: String,
    pub revisions: Vec<String>,
    pub key_epoch: u64,
    /// Hex of the wrapped model key as it was: kept to prove it no longer opens.
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkObject {
    pub id: String,
    pub model_id: String,
    pub size: i64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Which root of trust a destroyed root belonged to (the names `shred::RootKind` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RootKindName {
    #[serde(rename = "file")]
    File,
    #[serde(rename = "aws-kms")]
    AwsKms,
    #[serde(rename = "pkcs11")]
    Pkcs11,
}

impl From<shred::RootKind> for RootKindName {
    fn from(kind: shred::RootKind) -> Self {
        match kind {
            shred::RootKind::File => RootKindName::File,
            shred::RootKind::Kms => RootKindName::AwsKms,
            shred::RootKind::Pkcs11 => RootKindName::Pkcs11,
        }
    }
}

/// The destruction of the deletion's epoch root, as a record (not a sentence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RootDestroyed {
    pub kind: RootKindName,
    /// The root's name: its key file, the KMS key ARN, or the HSM key's label.
    pub id: String,
    pub epoch: u64,
    /// KMS: the date KMS deletes the key material (RFC 3339), as KMS reported it.
    pub deletion_date: Option<String>,
}

impl RootDestroyed {
    /// How the root was destroyed, for the certificate.
    pub(crate) fn how(&self) -> String {
        match (self.kind, &self.deletion_date) {
            (RootKindName::File, _) => "root key file overwritten and removed".to_owned(),
            (RootKindName::Pkcs11, _) => {
                "HSM key destroyed on the token (C_DestroyObject)".to_owned()
            }
            (RootKindName::AwsKms, Some(date)) => {
                format!("KMS key scheduled for deletion on {date}; disabled for use meanwhile")
            }
            (RootKindName::AwsKms, None) => {
                "KMS key scheduled for deletion (date not reported); disabled for use meanwhile"
                    .to_owned()
            }
        }
    }
}

/// Why a work record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("the work record does not decode: {0}")]
    Decode(String),
    #[error("the work record has no version")]
    NoVersion,
    #[error("the work record has version {0}; this server reads version {WORK_VERSION}")]
    UnknownVersion(u64),
    #[error("the work record lacks {what}, which state {state} requires")]
    Missing {
        what: &'static str,
        state: DeletionState,
    },
    #[error("the work record is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the work record does not encode: {0}")]
    Encode(String),
}

impl Work {
    /// A record for a deletion not yet prepared.
    #[cfg(test)]
    pub(crate) fn unprepared() -> Work {
        Work {
            version: WORK_VERSION,
            models: Vec::new(),
            objects: Vec::new(),
            upload_objects: Vec::new(),
            from_epoch: None,
            to_epoch: None,
            root_kind: None,
            root: None,
            root_destroyed: None,
            post_checks: Vec::new(),
        }
    }

    /// Reads the record of a deletion in `state`, strictly (see the module's note).
    pub(crate) fn decode(text: &str, state: DeletionState) -> Result<Work, WorkError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<serde_json::Value>,
        }
        let versioned: Versioned =
            serde_json::from_str(text).map_err(|e| WorkError::Decode(e.to_string()))?;
        match versioned.version {
            None => return Err(WorkError::NoVersion),
            Some(v) if v.as_u64() == Some(u64::from(WORK_VERSION)) => {}
            Some(v) => {
                return Err(v.as_u64().map_or_else(
                    || WorkError::Decode(format!("version {v}")),
                    WorkError::UnknownVersion,
                ));
            }
        }
        let work: Work =
            serde_json::from_str(text).map_err(|e| WorkError::Decode(e.to_string()))?;
        work.check(state)?;
        Ok(work)
    }

    /// What the record must hold once the deletion has reached `state`.
    fn check(&self, state: DeletionState) -> Result<(), WorkError> {
        let missing = |what| WorkError::Missing { what, state };
        if state >= DeletionState::KeysDestroyed {
            let from = self
                .from_epoch
                .ok_or_else(|| missing("the starting epoch"))?;
            let to = self
                .to_epoch
                .ok_or_else(|| missing("the epoch keys moved to"))?;
            if to <= from {
                return Err(WorkError::Inconsistent(format!(
                    "keys moved from epoch {from} to epoch {to}, which is not newer"
                )));
            }
            if let Some(m) = self.models.iter().find(|m| m.key_epoch > from) {
                return Err(WorkError::Inconsistent(format!(
                    "model {} has its key under epoch {}, newer than the starting epoch {from}",
                    m.id, m.key_epoch
                )));
            }
        }
        if state >= DeletionState::EpochDestroyed {
            let root = self
                .root_destroyed
                .as_ref()
                .ok_or_else(|| missing("the root's destruction"))?;
            if Some(root.epoch) != self.from_epoch {
                return Err(WorkError::Inconsistent(format!(
                    "the destroyed root is epoch {}'s, not the starting epoch's",
                    root.epoch
                )));
            }
        }
        if state >= DeletionState::Checked
            && (self.post_checks.is_empty() || self.post_checks.iter().any(|c| !c.passed))
        {
            return Err(WorkError::Inconsistent(
                "a checked deletion without passing post-checks".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Result<String, WorkError> {
        serde_json::to_string(self).map_err(|e| WorkError::Encode(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn prepared() -> Work {
        let mut work = Work::unprepared();
        work.models.push(WorkModel {
            id: "m1".into(),
            vendor: "acme".into(),
            name: "gone".into(),
            revisions: vec!["abc".into()],
            key_epoch: 1,
            wrapped_key: "00".into(),
        });
        work.from_epoch = Some(1);
        work.to_epoch = Some(2);
        work.root_destroyed = Some(RootDestroyed {
            kind: RootKindName::File,
            id: "root-1-0123abcd.key".into(),
            epoch: 1,
            deletion_date: None,
        });
        work
    }

    #[test]
    fn the_stores_first_record_is_an_unprepared_current_version() {
        let work = Work::decode(store::UNPREPARED_WORK, DeletionState::AccessRevoked).unwrap();
        assert_eq!(work.version, WORK_VERSION);
        assert!(work.from_epoch.is_none() && work.models.is_empty());
        // Beyond the first state, it is missing what the state promises.
        let err = Work::decode(store::UNPREPARED_WORK, DeletionState::KeysDestroyed).unwrap_err();
        assert!(matches!(err, WorkError::Missing { .. }), "{err}");
    }

    #[test]
    fn a_record_round_trips() {
        let text = prepared().encode().unwrap();
        let back = Work::decode(&text, DeletionState::EpochDestroyed).unwrap();
        assert_eq!(back.root_destroyed, prepared().root_destroyed);
    }

    #[test]
    fn bad_records_are_errors_never_a_fresh_start() {
        for (text, what) in [
            ("{}", "no version"),
            ("", "does not decode"),
            ("[]", "does not decode"),
            ("{\"version\":2}", "version 2"),
            ("{\"version\":\"1\"}", "does not decode"),
            ("{\"version\":1,\"modles\":[]}", "unknown field"),
            ("{\"version\":1,\"from_epoch\":-1}", "does not decode"),
        ] {
            let err = Work::decode(text, DeletionState::AccessRevoked).unwrap_err();
            assert!(err.to_string().contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn a_record_must_hold_what_its_state_promises() {
        let mut work = prepared();
        work.root_destroyed = None;
        let text = work.encode().unwrap();
        assert!(Work::decode(&text, DeletionState::KeysDestroyed).is_ok());
        let err = Work::decode(&text, DeletionState::EpochDestroyed).unwrap_err();
        assert!(err.to_string().contains("root's destruction"), "{err}");

        let mut work = prepared();
        work.to_epoch = Some(1);
        let err = Work::decode(&work.encode().unwrap(), DeletionState::KeysDestroyed).unwrap_err();
        assert!(err.to_string().contains("not newer"), "{err}");

        // A checked deletion whose checks failed (or were wiped) is not certifiable.
        let mut work = prepared();
        let text = work.encode().unwrap();
        assert!(Work::decode(&text, DeletionState::Checked).is_err());
        work.post_checks.push(PostCheck {
            name: "x".into(),
            passed: false,
            detail: "no".into(),
        });
        assert!(Work::decode(&work.encode().unwrap(), DeletionState::Checked).is_err());
        work.post_checks[0].passed = true;
        assert!(Work::decode(&work.encode().unwrap(), DeletionState::Checked).is_ok());
    }

    #[test]
    fn a_kms_destruction_states_its_date() {
        let root = RootDestroyed {
            kind: RootKindName::AwsKms,
            id: "arn:aws:kms:us-east-1:1:key/k".into(),
            epoch: 1,
            deletion_date: Some("2026-12-09T00:00:00Z".into()),
        };
        assert!(root.how().contains("scheduled for deletion on 2026-12-09"));
    }
}
