//! Offline verification of a certificate file.

use std::fmt;

use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::merkle::{Hash, verify_inclusion};
use audit::witness::CosignerKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::sign::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use crate::{
    AUDIT_ACTION, CertificateFile, Deletion, FORMAT, KeyKind, MAX_CERTIFICATE_BYTES,
    SIGNATURE_ALGORITHM, Scope, VERSION, key_id, signed_message,
};

/// The overall result. Exit codes: 0, 1, 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every check passed (a skipped checkpoint signature is reported, not failed).
    Valid,
    /// A certificate, but something about it is false.
    Invalid,
    /// Not a certificate this verifier can read: nothing was verified.
    Unusable,
}

/// What each check looks at, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// The file parses strictly as a certificate of a known format and version.
    Format,
    /// The service key's signature over the canonical certificate.
    Signature,
    /// The facts are complete and consistent (every post-check passed, every model's key
    /// destroyed, times in order, ...).
    Content,
    /// The checkpoint's signature by the log key.
    CheckpointSignature,
    /// The inclusion proof of the entry against the checkpoint's root.
    Inclusion,
    /// The entry describes this deletion (action, resource, seq, outcome, content digest).
    Entry,
    /// Enough of the given witnesses cosigned the checkpoint (only when witnesses are given).
    Witnesses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: CheckName,
    pub status: Status,
    pub detail: String,
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckName::Format => "format",
            CheckName::Signature => "signature",
            CheckName::Content => "content",
            CheckName::CheckpointSignature => "checkpoint-signature",
            CheckName::Inclusion => "inclusion",
            CheckName::Entry => "entry",
            CheckName::Witnesses => "witnesses",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Passed => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        write!(f, "{}: {status}: {}", self.name, self.detail)
    }
}

/// The outcome of [`verify`], as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Known once the file parsed.
    pub certificate_id: Option<String>,
    pub checks: Vec<Check>,
    /// The parsed certificate, when it parsed (whatever the verdict).
    #[serde(skip)]
    pub certificate: Option<Box<CertificateFile>>,
}

impl Report {
    /// 0 valid, 1 invalid, 2 unusable input.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unusable => 2,
        }
    }

    /// The first check that failed.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.status == Status::Failed)
    }

    /// The status of one check (`None` if it did not run).
    pub fn status(&self, name: CheckName) -> Option<Status> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
    }

    fn push(&mut self, name: CheckName, result: Result<String, String>) {
        let (status, detail) = match result {
            Ok(detail) => (Status::Passed, detail),
            Err(detail) => (Status::Failed, detail),
        };
        self.checks.push(Check {
            name,
            status,
            detail,
        });
    }
}

/// Verifies certificate file `bytes` against the service's key and, when given, the audit
/// log's key. Never panics on any input.
pub fn verify(bytes: &[u8], service_key: &VerifyingKey, log_key: Option<&VerifierKey>) -> Report {
    let mut report = Report {
        verdict: Verdict::Unusable,
        certificate_id: None,
        checks: Vec::new(),
        certificate: None,
    };
    let (file, message) = match parse(bytes) {
        Ok(parsed) => parsed,
        Err(why) => {
            report.push(CheckName::Format, Err(why));
            return report;
        }
    };
    report.certificate_id = Some(file.certificate.deletion.certificate_id.clone());
    report.push(CheckName::Format, Ok(format!("{FORMAT} version {VERSION}")));

    report.push(
        CheckName::Signature,
        check_signature(&file, &message, service_key),
    );
    let deletion = &file.certificate.deletion;
    report.push(CheckName::Content, check_content(deletion));

    let evidence = &file.certificate.audit;
    let checkpoint = match log_key {
        Some(key) => {
            let opened = checkpoint::open(&evidence.checkpoint, &key.name, &key.key);
            report.push(
                CheckName::CheckpointSignature,
                opened
                    .as_ref()
                    .map(|cp| format!("checkpoint of log {:?} signed by {}", cp.origin, key.name))
                    .map_err(|e| format!("checkpoint: {e}")),
            );
            opened.ok()
        }
        None => {
            report.checks.push(Check {
                name: CheckName::CheckpointSignature,
                status: Status::Skipped,
                detail: "no log key given: the checkpoint's signature was not checked".into(),
            });
            None
        }
    };
    let checkpoint = checkpoint.map_or_else(|| unsigned_checkpoint(&evidence.checkpoint), Ok);
    report.push(CheckName::Inclusion, check_inclusion(&file, checkpoint));
    report.push(CheckName::Entry, check_entry(&file));

    report.verdict = if report.first_failure().is_some() {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    report.certificate = Some(Box::new(file));
    report
}

/// [`verify`], and the checkpoint must carry valid cosignatures (C2SP `cosignature/v1`, in
/// its note's signature lines) by at least `min` of `witnesses`; the check names the missing
/// and invalid ones.
pub fn verify_witnessed(
    bytes: &[u8],
    service_key: &VerifyingKey,
    log_key: Option<&VerifierKey>,
    witnesses: &[CosignerKey],
    min: usize,
) -> Report {
    let mut report = verify(bytes, service_key, log_key);
    let Some(file) = &report.certificate else {
        return report;
    };
    let result =
        match audit::witness::check_quorum(&file.certificate.audit.checkpoint, witnesses, min) {
            Ok(quorum) if quorum.met() => Ok(quorum.to_string()),
            Ok(quorum) => Err(quorum.to_string()),
            Err(e) => Err(format!("checkpoint: {e}")),
        };
    report.push(CheckName::Witnesses, result);
    if report.first_failure().is_some() {
        report.verdict = Verdict::Invalid;
    }
    report
}

/// Strict parse, format and version, and the signed message; any failure means unusable.
fn parse(bytes: &[u8]) -> Result<(CertificateFile, Vec<u8>), String> {
    if bytes.len() > MAX_CERTIFICATE_BYTES {
        return Err(format!(
            "larger than {MAX_CERTIFICATE_BYTES} bytes: not a certificate"
        ));
    }
    let file: CertificateFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a deletion certificate: {e}"))?;
    let cert = &file.certificate;
    if cert.format != FORMAT {
        return Err(format!(
            "unknown format {:?} (expected {FORMAT:?})",
            cert.format
        ));
    }
    if cert.version != VERSION {
        return Err(format!(
            "certificate version {} is not supported (this verifier reads version {VERSION})",
            cert.version
        ));
    }
    let message = signed_message(cert).map_err(|e| format!("no canonical form: {e}"))?;
    Ok((file, message))
}

fn check_signature(
    file: &CertificateFile,
    message: &[u8],
    key: &VerifyingKey,
) -> Result<String, String> {
    let sig = &file.signature;
    if sig.algorithm != SIGNATURE_ALGORITHM {
        return Err(format!("unknown signature algorithm {:?}", sig.algorithm));
    }
    let expected = key_id(key);
    if sig.key_id != expected {
        return Err(format!(
            "signed by key {:?}, but the given service key is {expected}",
            sig.key_id
        ));
    }
    let value = B64
        .decode(&sig.value)
        .map_err(|_| "the signature is not base64".to_owned())?;
    if !key.verify(message, &value) {
        return Err(
            "the signature does not verify: the certificate was changed, or signed by another key"
                .into(),
        );
    }
    Ok(format!("signed by service key {expected}"))
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn time(field: &str, s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339(s).map_err(|_| format!("{field} {s:?} is not an RFC 3339 UTC time"))
}

fn check_content(d: &Deletion) -> Result<String, String> {
    if !valid_id(&d.certificate_id) {
        return Err("certificate_id must be 1 to 64 of A-Z a-z 0-9 . _ -".into());
    }
    if d.service.is_empty() || d.vendor.is_empty() || d.requested_by.is_empty() {
        return Err("service, vendor and requested_by must not be empty".into());
    }
    if d.scope == Scope::Model && d.models.len() != 1 {
        return Err(format!(
            "a model deletion must name exactly one model, not {}",
            d.models.len()
        ));
    }
    let requested = time("requested_at", &d.requested_at)?;
    let completed = time("completed_at", &d.completed_at)?;
    if completed < requested {
        return Err("completed_at is before requested_at".into());
    }
    for host in &d.hosts {
        match (&host.confirmed_at, host.wipe_confirmed) {
            (Some(at), true) => {
                time("confirmed_at", at)?;
            }
            (None, false) => {}
            _ => {
                return Err(format!(
                    "host {:?}: wipe_confirmed and confirmed_at disagree",
                    host.host
                ));
            }
        }
    }
    let mut objects = 0usize;
    for model in &d.models {
        if model.name.is_empty() || model.model_id.is_empty() {
            return Err("a model has an empty name or id".into());
        }
        for object in &model.objects {
            if object.object_id.is_empty() || !is_sha256_hex(&object.plaintext_sha256) {
                return Err(format!(
                    "object {:?} of {}: empty id or plaintext_sha256 not lowercase hex SHA-256",
                    object.object_id, model.name
                ));
            }
        }
        objects += model.objects.len();
        let destroyed = d
            .destroyed_keys
            .iter()
            .any(|k| k.kind == KeyKind::ModelKey && k.id == model.model_id);
        if !destroyed {
            return Err(format!(
                "the key of model {} ({}) is not listed as destroyed",
                model.name, model.model_id
            ));
        }
    }
    for kind in [KeyKind::EpochKey, KeyKind::Root] {
        if !d.destroyed_keys.iter().any(|k| k.kind == kind) {
            return Err(format!(
                "no destroyed {kind:?} is listed: the shred did not reach a root"
            ));
        }
    }
    if !matches!(d.root_provider.kind.as_str(), "file" | "aws-kms" | "pkcs11") {
        return Err(format!("unknown root provider {:?}", d.root_provider.kind));
    }
    if d.post_checks.is_empty() {
        return Err("no post-check results".into());
    }
    if let Some(failed) = d.post_checks.iter().find(|c| !c.passed) {
        return Err(format!(
            "post-check {:?} did not pass: {}",
            failed.check, failed.detail
        ));
    }
    if d.residual_risk.trim().is_empty() {
        return Err("no residual-risk statement".into());
    }
    Ok(format!(
        "{} model(s), {objects} object(s), {} key(s) destroyed, {} post-check(s) passed",
        d.models.len(),
        d.destroyed_keys.len(),
        d.post_checks.len()
    ))
}

/// The checkpoint body of a signed note, without checking any signature.
fn unsigned_checkpoint(note: &str) -> Result<Checkpoint, String> {
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| "the checkpoint is not a signed note".to_owned())?;
    Checkpoint::parse_body(&note[..at + 1]).map_err(|e| format!("checkpoint: {e}"))
}

fn check_inclusion(
    file: &CertificateFile,
    checkpoint: Result<Checkpoint, String>,
) -> Result<String, String> {
    let evidence = &file.certificate.audit;
    let checkpoint = checkpoint?;
    if checkpoint.size != evidence.tree_size {
        return Err(format!(
            "the proof is for a tree of {} entries, the checkpoint for {}",
            evidence.tree_size, checkpoint.size
        ));
    }
    let proof = evidence
        .inclusion_proof
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|v| Hash::try_from(v.as_slice()).ok())
        })
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| "the inclusion proof holds a value that is not a base64 hash".to_owned())?;
    let tag = match &evidence.leaf_tag {
        None => audit::leaf::NO_VENDOR,
        Some(text) => {
            let mut tag = audit::leaf::NO_VENDOR;
            hex::decode_to_slice(text, &mut tag)
                .map_err(|_| "the leaf tag is not 64 hex digits".to_owned())?;
            tag
        }
    };
    let leaf = audit::leaf::entry_leaf(evidence.entry.as_bytes(), &tag);
    if !verify_inclusion(
        &leaf,
        evidence.leaf_index,
        evidence.tree_size,
        &proof,
        &checkpoint.root,
    ) {
        return Err(format!(
            "the entry is not entry {} of the log of {} entries the checkpoint commits to",
            evidence.leaf_index, evidence.tree_size
        ));
    }
    Ok(format!(
        "entry {} is in the log of {} entries (root {})",
        evidence.leaf_index,
        evidence.tree_size,
        B64.encode(checkpoint.root)
    ))
}

fn check_entry(file: &CertificateFile) -> Result<String, String> {
    let evidence = &file.certificate.audit;
    let deletion = &file.certificate.deletion;
    let entry: Value = serde_json::from_str(&evidence.entry)
        .map_err(|_| "the audit entry is not JSON".to_owned())?;
    let field = |name: &str| entry.get(name);
    let expect_str = |name: &str, want: &str| -> Result<(), String> {
        match field(name).and_then(Value::as_str) {
            Some(v) if v == want => Ok(()),
            Some(v) => Err(format!(
                "the audit entry's {name} is {v:?}, expected {want:?}"
            )),
            None => Err(format!("the audit entry has no {name}")),
        }
    };
    // Format 1 entries are still valid evidence (certificates issued before vendor tags).
    if !matches!(field("v").and_then(Value::as_u64), Some(1 | 2)) {
        return Err("the audit entry has an unknown version".into());
    }
    if field("seq").and_then(Value::as_u64) != Some(evidence.leaf_index) {
        return Err(format!(
            "the audit entry's seq is not its leaf index {}",
            evidence.leaf_index
        ));
    }
    expect_str("action", AUDIT_ACTION)?;
    expect_str("resource", &deletion.audit_resource())?;
    if field("v").and_then(Value::as_u64) == Some(2) {
        // Format 2 names the vendor; its leaf carries the vendor's tag.
        expect_str("vendor", &deletion.vendor)?;
    }
    expect_str("outcome", "ok")?;
    let detail = deletion
        .audit_detail()
        .map_err(|e| format!("cannot compute the expected entry detail: {e}"))?;
    expect_str("detail", &detail)?;
    Ok(format!(
        "entry {} records {AUDIT_ACTION} of {} with this certificate's content digest",
        evidence.leaf_index,
        deletion.audit_resource()
    ))
}
