//! The last step of a deletion: the signed, offline-verifiable certificate (format and
//! verification in the `certificate` crate).
//!
//! Order matters: the certificate's facts are hashed into an audit entry
//! (`deletion.certify`, naming the certificate id and that hash), a checkpoint covering the
//! entry is signed with the log key, and only then is the certificate signed with the service
//! key, embedding the entry, its inclusion proof and the checkpoint. A holder of the service
//! key alone cannot make a certificate the log vouches for. A crash in between repeats the
//! step (another entry, another checkpoint); the stored certificate is the one that verified.

use certificate::{
    AuditEvidence, DestroyedKey, HostCopy, KeyKind, Method, ModelRecord, ObjectRecord, PostCheck,
    RootProviderRecord, Scope,
};
use store::DeletionRecord;

use crate::machine::parse_work;
use crate::work::{RootKindName, Work};
use crate::{DeletionError, QUORUM_POLL, Service};

#[derive(Default)]
struct HostHeld {
    files: u64,
    /// Model id -> when the host confirmed wiping it.
    models: std::collections::BTreeMap<String, Option<i64>>,
}

impl HostHeld {
    /// The last confirmation, when every model held is confirmed; `None` otherwise.
    fn confirmed_at(&self) -> Option<i64> {
        let mut last = None;
        for confirmed in self.models.values() {
            last = last.max(Some((*confirmed)?));
        }
        last
    }
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn failed(e: impl std::fmt::Display) -> DeletionError {
    DeletionError::Other(e.to_string())
}

/// Gathers the facts of a finished deletion.
async fn facts(
    app: &Service,
    d: &DeletionRecord,
    work: &Work,
) -> Result<certificate::Deletion, DeletionError> {
    let vendor = app
        .store
        .vendor_by_id(&d.vendor_id)
        .await?
        .map(|v| v.name.to_string())
        .ok_or_else(|| failed("the deletion's vendor is gone"))?;
    let mut models = Vec::new();
    let mut destroyed_keys = Vec::new();
    // Per host: files it fetched, and per model it holds copies of, when (if) it confirmed the
    // wipe. A host counts as confirmed only when it confirmed every model it held.
    let mut hosts: std::collections::BTreeMap<String, HostHeld> = Default::default();
    let confirmations = app.store.wipe_confirmations(&d.id).await?;
    for m in &work.models {
        let objects = work
            .objects
            .iter()
            .filter(|o| o.model_id == m.id)
            .map(|o| ObjectRecord {
                object_id: o.id.clone(),
                origin: "stored object of a revision".into(),
                size: o.size.max(0) as u64,
                plaintext_sha256: o.sha256.clone(),
                storage_versions_deleted: vec!["all".into()],
            })
            .collect();
        models.push(ModelRecord {
            name: m.name.clone(),
            model_id: m.id.clone(),
            revisions: m.revisions.clone(),
            objects,
        });
        destroyed_keys.push(DestroyedKey {
            kind: KeyKind::ModelKey,
            id: m.id.clone(),
            epoch: m.key_epoch,
            how: format!(
                "database row erased; every earlier copy is wrapped under epoch {}, now destroyed",
                m.key_epoch
            ),
        });
        for copy in app.store.host_copies(&m.id).await? {
            // Copies and confirmations belong to an enrollment: a name enrolled again later
            // is another host, and its confirmation is not this one's.
            let confirmed = confirmations
                .iter()
                .find(|c| c.host_id == copy.host_id && c.model_id == m.id)
                .map(|c| c.confirmed_at);
            let held = hosts
                .entry(format!("{} (enrollment {})", copy.host, copy.host_id))
                .or_default();
            held.files += 1;
            held.models.insert(m.id.clone(), confirmed);
        }
    }
    let from = work.from_epoch.ok_or_else(|| failed("no starting epoch"))?;
    let root_kind = work.root_kind.clone().unwrap_or_else(|| "file".into());
    destroyed_keys.push(DestroyedKey {
        kind: KeyKind::EpochKey,
        id: format!("epoch-{from}"),
        epoch: from,
        how: "epoch key file overwritten and removed".into(),
    });
    // The work record of a deletion past its epoch step always holds this (checked when read).
    let root = work
        .root_destroyed
        .as_ref()
        .ok_or_else(|| failed("the root's destruction is not recorded"))?;
    destroyed_keys.push(DestroyedKey {
        kind: KeyKind::Root,
        id: root.id.clone(),
        epoch: root.epoch,
        how: root.how(),
    });
    let kms_date = match root.kind {
        RootKindName::AwsKms => root.deletion_date.as_deref(),
        RootKindName::File | RootKindName::Pkcs11 => None,
    };
    let (_, description) = app.keys.root_provider();
    Ok(certificate::Deletion {
        certificate_id: d.id.clone(),
        service: app.name.clone(),
        scope: if d.model_id.is_some() {
            Scope::Model
        } else {
            Scope::Vendor
        },
        vendor,
        models,
        method: Method::custody(),
        destroyed_keys,
        root_provider: RootProviderRecord {
            kind: root_kind.clone(),
            description,
        },
        hosts: hosts
            .into_iter()
            .map(|(host, held)| (host, held.files, held.confirmed_at()))
            .map(|(host, files, confirmed)| HostCopy {
                host,
                files,
                wipe_confirmed: confirmed.is_some(),
                confirmed_at: confirmed.map(rfc3339),
            })
            .collect(),
        requested_by: d.requested_by.clone(),
        // Each approver (a request may need two distinct people), as the store joined them.
        approved_by: d
            .approved_by
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::to_owned)
            .collect(),
        requested_at: rfc3339(d.requested_at),
        completed_at: rfc3339(app.store.clock().now()),
        post_checks: work
            .post_checks
            .iter()
            .map(|c| PostCheck {
                check: c.name.clone(),
                passed: c.passed,
                detail: c.detail.clone(),
            })
            .collect(),
        residual_risk: certificate::residual_risk(&app.placement, kms_date),
    })
}

pub(crate) async fn certify(
    app: &Service,
    d: &DeletionRecord,
    fence: &store::Fence,
) -> Result<store::DeletionState, DeletionError> {
    let work = parse_work(d)?;
    let facts = facts(app, d, &work).await?;
    let entry = audit::Entry::new("system", certificate::AUDIT_ACTION, facts.audit_resource())
        .with_detail(facts.audit_detail().map_err(failed)?);
    let seq = app.store.record(entry).await?;
    let signed = app.notary.sign().await.map_err(failed)?;
    let size = signed.checkpoint.size;
    if size <= seq {
        return Err(failed(
            "the signed checkpoint does not cover the deletion's entry",
        ));
    }
    // The witnesses' cosignatures travel in the checkpoint's note (signed-note signature
    // lines, which every verifier of the log's signature ignores). Bounded wait for the
    // quorum; without it, the certificate is issued anyway and says less.
    let (note, witnessed) = match app.notary.witness_wait() {
        None => (signed.note.clone(), None),
        Some(wait) => {
            let deadline = tokio::time::Instant::now() + wait;
            let mut told = false;
            let cosigned = loop {
                let cosigned = app.notary.cosign(&signed).await.map_err(failed)?;
                if cosigned.quorum_met || tokio::time::Instant::now() >= deadline {
                    break cosigned;
                }
                if !told {
                    let why = format!(
                        "waiting up to {}s for witness cosignatures: {}",
                        wait.as_secs(),
                        cosigned.quorum
                    );
                    tracing::warn!(deletion = %d.id, "{why}");
                    app.store.deletion_note(&d.id, &why, Some(fence)).await?;
                    told = true;
                }
                tokio::time::sleep(QUORUM_POLL).await;
            };
            if !cosigned.quorum_met {
                tracing::error!(
                    deletion = %d.id,
                    "issuing the certificate WITHOUT the witness quorum: {}",
                    cosigned.quorum
                );
            }
            (cosigned.note, Some(cosigned.quorum))
        }
    };
    let (_, proof) = app.store.audit_inclusion_proof(seq, size).await?;
    let entries = app.store.audit_entries_tagged(seq, seq + 1).await?;
    let entry = entries
        .first()
        .ok_or_else(|| failed("the deletion's audit entry is missing"))?;
    let evidence =
        AuditEvidence::new(&entry.bytes, &entry.tag, seq, size, &proof, &note).map_err(failed)?;
    let certificate = certificate::issue(facts, evidence, &app.signer).map_err(failed)?;
    let text = String::from_utf8(certificate).map_err(failed)?;
    app.store
        .certify_deletion(
            &d.id,
            &d.work,
            &text,
            audit::Entry::new("system", "deletion.certified", format!("deletion/{}", d.id))
                .with_vendor(d.vendor.as_str())
                .with_detail(format!(
                    "certificate {} (entry {seq}, tree size {size}){}",
                    d.id,
                    witnessed.map_or_else(String::new, |q| format!("; witnesses: {q}"))
                )),
            Some(fence),
        )
        .await?;
    Ok(store::DeletionState::Certified)
}

#[cfg(test)]
mod tests {
    use super::HostHeld;

    #[test]
    fn a_host_is_confirmed_only_when_every_model_it_held_is() {
        let mut held = HostHeld::default();
        held.models.insert("a".into(), Some(10));
        held.models.insert("b".into(), None);
        assert_eq!(held.confirmed_at(), None, "one model still held");
        held.models.insert("b".into(), Some(20));
        assert_eq!(held.confirmed_at(), Some(20), "the last confirmation");
        assert_eq!(HostHeld::default().confirmed_at(), None);
    }
}
