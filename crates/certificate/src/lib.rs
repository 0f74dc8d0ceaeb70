//! Deletion certificates: the signed, offline-verifiable record of a crypto-shred.
//!
//! Design note:
//!
//! * Pure: no IO, no clock, no HTTP. The server's shred state machine gathers the facts
//!   ([`Deletion`]), writes the audit entry that names them ([`Deletion::audit_detail`]),
//!   waits for a signed checkpoint covering that entry, and calls [`issue`]; anyone calls
//!   [`verify`] on the bytes, offline. The format is specified in `docs/certificate.md`.
//! * What is signed is the *meaning*, not the file layout: the signature (Ed25519, service
//!   key) covers `SIGNING_CONTEXT || JCS(certificate)`, the RFC 8785 canonical JSON of the
//!   `certificate` member ([`canonical`]). The verifier parses strictly (unknown, missing or
//!   duplicate fields are refused), re-canonicalises and checks, so whitespace or member order
//!   in the file do not matter, and every change of a value does.
//! * The certificate carries its own evidence from the audit log: the entry's exact bytes, its
//!   RFC 9162 inclusion proof and a C2SP signed checkpoint. The entry names the certificate id
//!   and the SHA-256 of the canonical [`Deletion`], so the log binds this very content: a
//!   holder of the service key alone cannot make a certificate that the log key vouches for.
//! * Errors are data: [`verify`] returns a [`Report`] with every check and a verdict; the CLI
//!   maps it to exit codes 0 (valid), 1 (invalid), 2 (unusable input).
//! * [`issue`] verifies what it made before returning it, so the service never hands out a
//!   certificate that does not verify.
#![forbid(unsafe_code)]

pub mod canonical;
mod keys;
mod verify;

pub use keys::{KeyTextError, key_id, parse_log_key, parse_service_key};
pub use verify::{Check, CheckName, Report, Status, Verdict, verify, verify_witnessed};

use audit::merkle::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::sign::SigningKey;
use serde::{Deserialize, Serialize};

/// The `format` member. Frozen.
pub const FORMAT: &str = "custody-deletion-certificate";
/// The `version` member. Frozen once certificates exist; a change means a new number.
pub const VERSION: u64 = 1;
/// Prefixed to the canonical bytes before signing, so the service key's signature on a
/// certificate can never be taken for a signature on anything else.
pub const SIGNING_CONTEXT: &[u8] = b"custody deletion certificate v1\n";
/// The only signature algorithm.
pub const SIGNATURE_ALGORITHM: &str = "ed25519";
/// The `action` of the audit entry a certificate embeds.
pub const AUDIT_ACTION: &str = "deletion.certify";
/// Largest certificate accepted by [`verify`] (a vendor with many thousands of objects fits).
pub const MAX_CERTIFICATE_BYTES: usize = 64 << 20;

/// A certificate file: the signed content and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub certificate: Certificate,
    pub signature: Signature,
}

/// What the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u64,
    pub deletion: Deletion,
    pub audit: AuditEvidence,
}

/// The facts of one deletion. Everything but the audit evidence; its canonical SHA-256 is
/// named by the audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub certificate_id: String,
    /// The service that carried it out (its public name, e.g. `custody.example`).
    pub service: String,
    pub scope: Scope,
    pub vendor: String,
    /// Every model deleted: one for [`Scope::Model`], all of the vendor's for [`Scope::Vendor`].
    pub models: Vec<ModelRecord>,
    pub method: Method,
    /// Model keys, epoch keys and roots destroyed.
    pub destroyed_keys: Vec<DestroyedKey>,
    pub root_provider: RootProviderRecord,
    /// Exclusive servers that fetched a copy, and whether they confirmed wiping it.
    pub hosts: Vec<HostCopy>,
    /// `role:user` of who asked, and of each approver (two-person rule), or `system` for a
    /// scheduled deletion.
    pub requested_by: String,
    pub approved_by: Vec<String>,
    /// RFC 3339, UTC (`Z`).
    pub requested_at: String,
    pub completed_at: String,
    pub post_checks: Vec<PostCheck>,
    pub residual_risk: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One model: every revision and derived artifact.
    Model,
    /// Everything of one vendor.
    Vendor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// The model's name (without the vendor).
    pub name: String,
    pub model_id: String,
    /// Commit ids of every revision.
    pub revisions: Vec<String>,
    pub objects: Vec<ObjectRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecord {
    /// The opaque storage id.
    pub object_id: String,
    /// Where it came from, e.g. `revision <commit>`, `derived from <commit>`,
    /// `unfinished upload`.
    pub origin: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the plaintext.
    pub plaintext_sha256: String,
    /// Storage version ids deleted (S3 version ids; `null` on unversioned storage; `fs` for
    /// the filesystem backend).
    pub storage_versions_deleted: Vec<String>,
}

/// The sanitization method (NIST SP 800-88 terms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub sanitization: String,
    pub technique: String,
    pub encryption: String,
    pub reference: String,
}

impl Method {
    /// custody's method: purge by cryptographic erase, plus logical deletion.
    pub fn custody() -> Method {
        Method {
            sanitization: "purge".to_owned(),
            technique: "cryptographic erase of every key that could decrypt the data, plus \
                        logical deletion of every stored object version"
                .to_owned(),
            encryption: "AES-256-GCM with per-object keys derived by HKDF-SHA256 (custody \
                         object format v1)"
                .to_owned(),
            reference: "NIST SP 800-88 Rev. 1".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    ModelKey,
    EpochKey,
    Root,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyedKey {
    pub kind: KeyKind,
    /// Model key: the model id. Epoch key: `epoch-N`. Root: `root-N-ATTEMPT.key`, the KMS key
    /// ARN, or the HSM key's label `custody-root-N-ATTEMPT`.
    pub id: String,
    pub epoch: u64,
    /// How, e.g. `database row deleted; every backup copy is wrapped under epoch 3`,
    /// `root key file overwritten and removed`.
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootProviderRecord {
    /// `file`, `aws-kms` or `pkcs11`.
    pub kind: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCopy {
    pub host: String,
    /// Files it fetched.
    pub files: u64,
    pub wipe_confirmed: bool,
    /// RFC 3339, when confirmed. Present (as `null`) when not: a missing member is refused.
    #[serde(deserialize_with = "present")]
    pub confirmed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCheck {
    /// E.g. `storage-objects-gone`, `retained-ciphertext-does-not-decrypt`.
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// The audit log's evidence that the deletion was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvidence {
    /// The entry's canonical bytes, exactly as hashed into the log (UTF-8 JSON text).
    pub entry: String,
    /// The leaf's vendor tag, hex (`audit::leaf`): a leaf of entry format 2 commits to it.
    /// Absent for format 1 entries and for a tag of zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_tag: Option<String>,
    /// Its leaf index, which is its `seq`.
    pub leaf_index: u64,
    /// The size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// RFC 9162 inclusion proof, base64 hashes from the leaf's sibling upwards.
    pub inclusion_proof: Vec<String>,
    /// A C2SP signed note: the checkpoint for `tree_size`, signed with the log key.
    pub checkpoint: String,
}

impl AuditEvidence {
    /// Packs the evidence: entry bytes (must be UTF-8), the leaf's tag, proof hashes and the
    /// signed note.
    pub fn new(
        entry: &[u8],
        leaf_tag: &audit::leaf::Tag,
        leaf_index: u64,
        tree_size: u64,
        inclusion_proof: &[Hash],
        checkpoint: &str,
    ) -> Result<AuditEvidence, IssueError> {
        let entry = std::str::from_utf8(entry)
            .map_err(|_| IssueError::Invalid("the audit entry is not UTF-8".into()))?;
        Ok(AuditEvidence {
            entry: entry.to_owned(),
            leaf_tag: (*leaf_tag != audit::leaf::NO_VENDOR).then(|| hex::encode(leaf_tag)),
            leaf_index,
            tree_size,
            inclusion_proof: inclusion_proof.iter().map(|h| B64.encode(h)).collect(),
            checkpoint: checkpoint.to_owned(),
        })
    }
}

/// The signature over `SIGNING_CONTEXT || JCS(certificate)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`SIGNATURE_ALGORITHM`].
    pub algorithm: String,
    /// [`key_id`] of the signing key: names the key, proves nothing.
    pub key_id: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub value: String,
}

/// Reads an `Option` member that must be present (serde would take a missing one as `None`,
/// so a file without it would verify as if it had `null`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("cannot issue the certificate: {0}")]
    Invalid(String),
}

impl Deletion {
    /// The canonical bytes of this record (RFC 8785).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, IssueError> {
        let value = serde_json::to_value(self).map_err(|e| IssueError::Invalid(e.to_string()))?;
        canonical::to_canonical(&value).map_err(|e| IssueError::Invalid(e.to_string()))
    }

    /// Lowercase hex SHA-256 of [`Deletion::canonical_bytes`].
    pub fn digest_hex(&self) -> Result<String, IssueError> {
        Ok(hex::encode(crypto::hash::sha256(&self.canonical_bytes()?)))
    }

    /// The `detail` the audit entry must carry: `certificate <id> sha256:<digest>`.
    pub fn audit_detail(&self) -> Result<String, IssueError> {
        Ok(format!(
            "certificate {} sha256:{}",
            self.certificate_id,
            self.digest_hex()?
        ))
    }

    /// The `resource` the audit entry must carry: `vendor/model` or `vendor`.
    pub fn audit_resource(&self) -> String {
        match (self.scope, self.models.as_slice()) {
            (Scope::Model, [model]) => format!("{}/{}", self.vendor, model.name),
            _ => self.vendor.clone(),
        }
    }
}

/// Where the root of trust was kept when a deletion was carried out: what a backup taken
/// before it can still open depends on that, and the certificate says which layout it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPlacement {
    /// Root key files in `root_dir`, outside the data directory `data_dir` and the database.
    FilesOutside { root_dir: String, data_dir: String },
    /// Root key files in `root_dir`, inside `inside` (the data directory or the key store),
    /// because the configuration allowed it.
    FilesInside { root_dir: String, inside: String },
    /// AWS KMS, one key per epoch.
    Kms,
    /// A PKCS#11 token (an HSM), one non-extractable key per epoch; `token` says which
    /// (`PKCS#11 token "LABEL" (slot N) through MODULE`, as the provider describes it).
    Pkcs11 { token: String },
}

/// The residual-risk statement for a deletion made under `placement`; `kms_deletion_date` is
/// the date AWS deletes the last destroyed KMS key.
pub fn residual_risk(placement: &RootPlacement, kms_deletion_date: Option<&str>) -> String {
    const HOSTS: &str = " Plaintext copies on exclusive servers are covered only as far as each \
                         host confirmed its wipe (see hosts).";
    const REMNANTS: &str = " The destroyed epoch's root key file was overwritten and removed; on \
                            flash or copy-on-write storage, remnants may persist in blocks the \
                            file system no longer maps.";
    match placement {
        RootPlacement::FilesOutside { root_dir, data_dir } => format!(
            "Layout: the root of trust is root key files in {root_dir}, outside the data \
             directory {data_dir} and the database. Backups of the database and of the data \
             directory taken before this deletion cannot be decrypted, for any model: they hold \
             keys wrapped only under destroyed epochs, whose roots existed only in {root_dir}.\
             {HOSTS}{REMNANTS} A copy of {root_dir} made before this deletion (a backup or a \
             snapshot of it) would undo it: that directory must stay out of every backup and \
             snapshot."
        ),
        RootPlacement::FilesInside { root_dir, inside } => format!(
            "Layout: the root key files ({root_dir}) are inside {inside}, which the \
             configuration allowed (allow_root_in_data_dir). A backup of {inside} taken before \
             this deletion holds the destroyed epoch's root and CAN decrypt every model it \
             holds, this one included; only backups of the database alone cannot.{HOSTS}\
             {REMNANTS}"
        ),
        RootPlacement::Kms => {
            let mut text = String::from(
                "Layout: the root of trust is AWS KMS, one key per epoch; no root key is in the \
                 database or the data directory. Backups of the database and of the data \
                 directory taken before this deletion cannot be decrypted, for any model: they \
                 hold keys wrapped only under destroyed epochs.",
            );
            text.push_str(HOSTS);
            text.push_str(
                " The destroyed epoch's KMS key is unusable from now on and AWS deletes its material",
            );
            match kms_deletion_date {
                Some(date) => text.push_str(&format!(" on {date}")),
                None => text.push_str(" when its waiting period ends"),
            }
            text.push_str(
                "; until then an AWS principal allowed kms:CancelKeyDeletion could restore it.",
            );
            text
        }
        RootPlacement::Pkcs11 { token } => format!(
            "Layout: the root of trust is an HSM, {token}, one key per epoch \
             that never leaves the token; no root key is in the database or the data \
             directory. Backups of the database and of the data directory taken before this \
             deletion cannot be decrypted, for any model: they hold keys wrapped only under \
             destroyed epochs.{HOSTS} The destroyed epoch's key was destroyed on the token \
             (C_DestroyObject) and the token no longer reports it. A backup or clone of the \
             token itself made before this deletion (an HSM backup, a replica in an HSM \
             cluster that missed the destruction, a copy of a software token's files) would \
             undo it: such copies must be refreshed or destroyed after each deletion."
        ),
    }
}

/// Signs a certificate for `deletion` with `audit` evidence, and verifies it before
/// returning its file bytes (pretty JSON, final newline).
pub fn issue(
    deletion: Deletion,
    audit: AuditEvidence,
    key: &SigningKey,
) -> Result<Vec<u8>, IssueError> {
    let certificate = Certificate {
        format: FORMAT.to_owned(),
        version: VERSION,
        deletion,
        audit,
    };
    let message = signed_message(&certificate).map_err(IssueError::Invalid)?;
    let public = key.public_key();
    let file = CertificateFile {
        certificate,
        signature: Signature {
            algorithm: SIGNATURE_ALGORITHM.to_owned(),
            key_id: key_id(&public),
            value: B64.encode(key.sign(&message)),
        },
    };
    let mut bytes =
        serde_json::to_vec_pretty(&file).map_err(|e| IssueError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    let report = verify(&bytes, &public, None);
    if report.verdict != Verdict::Valid {
        let why = report
            .first_failure()
            .map_or_else(|| "verification failed".to_owned(), |c| c.to_string());
        return Err(IssueError::Invalid(why));
    }
    Ok(bytes)
}

/// `SIGNING_CONTEXT || JCS(certificate)`.
pub fn signed_message(certificate: &Certificate) -> Result<Vec<u8>, String> {
    let value = serde_json::to_value(certificate).map_err(|e| e.to_string())?;
    let body = canonical::to_canonical(&value).map_err(|e| e.to_string())?;
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&body);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_residual_risk_states_the_layout() {
        let outside = residual_risk(
            &RootPlacement::FilesOutside {
                root_dir: "/srv/data.root".into(),
                data_dir: "/srv/data".into(),
            },
            None,
        );
        assert!(outside.starts_with("Layout: "), "{outside}");
        assert!(outside.contains("/srv/data.root") && outside.contains("/srv/data "));
        assert!(outside.contains("cannot be decrypted") && !outside.contains("CAN decrypt"));
        let inside = residual_risk(
            &RootPlacement::FilesInside {
                root_dir: "/srv/data/root".into(),
                inside: "the data directory /srv/data".into(),
            },
            None,
        );
        assert!(
            inside.contains("CAN decrypt") && inside.contains("/srv/data/root"),
            "{inside}"
        );
        assert!(!inside.contains("Backups of the database and of the data directory"));
        let kms = residual_risk(&RootPlacement::Kms, Some("2030-01-08T00:00:00Z"));
        assert!(
            kms.contains("AWS KMS") && kms.contains("on 2030-01-08T00:00:00Z"),
            "{kms}"
        );
        assert!(kms.contains("kms:CancelKeyDeletion"));
        let hsm = residual_risk(
            &RootPlacement::Pkcs11 {
                token: "PKCS#11 token \"custody\" (slot 7) through /usr/lib/m.so".into(),
            },
            None,
        );
        assert!(
            hsm.contains("PKCS#11") && hsm.contains("token \"custody\" (slot 7)"),
            "{hsm}"
        );
        assert!(hsm.contains("C_DestroyObject") && hsm.contains("backup or clone of the token"));
        for text in [outside, inside, kms, hsm] {
            assert!(text.contains("confirmed its wipe"), "{text}");
            assert!(!text.contains("  "), "double space: {text}");
        }
    }
}
