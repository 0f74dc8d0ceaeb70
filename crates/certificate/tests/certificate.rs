//! Deletion certificates: the frozen vectors (made by an independent Python implementation),
//! tampering with every field, and certificates that are properly signed by the service key
//! but false in what they claim about the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::merkle::{self, MemoryTreeStore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use certificate::{
    AUDIT_ACTION, AuditEvidence, Certificate, CertificateFile, CheckName, Deletion, KeyKind, Scope,
    Signature, Status, Verdict, issue, key_id, parse_log_key, parse_service_key, signed_message,
    verify,
};
use crypto::sign::SigningKey;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn text(name: &str) -> String {
    String::from_utf8(read(name)).unwrap()
}

/// A PKCS#8 v2 document for an Ed25519 seed and public key.
fn signing_key(seed_hex: &str, public_hex: &str) -> SigningKey {
    let mut doc = vec![
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    doc.extend_from_slice(&hex::decode(seed_hex).unwrap());
    doc.extend_from_slice(&[0x81, 0x21, 0x00]);
    doc.extend_from_slice(&hex::decode(public_hex).unwrap());
    SigningKey::from_pkcs8(&doc).unwrap()
}

struct Keys {
    service: SigningKey,
    log: SigningKey,
    log_name: String,
    log_vkey: VerifierKey,
}

fn keys() -> Keys {
    let k: Value = serde_json::from_slice(&read("test-keys.json")).unwrap();
    let s = |n: &str| k[n].as_str().unwrap().to_owned();
    let log_name = s("log_name");
    let log = signing_key(&s("log_seed"), &s("log_public"));
    let log_vkey = VerifierKey::new(&log_name, log.public_key()).unwrap();
    Keys {
        service: signing_key(&s("service_seed"), &s("service_public")),
        log,
        log_name,
        log_vkey,
    }
}

fn vector() -> CertificateFile {
    serde_json::from_slice(&read("certificate.json")).unwrap()
}

#[test]
fn the_vector_verifies_with_the_published_keys() {
    let service = parse_service_key(&text("service.vkey")).unwrap();
    let log = parse_log_key(&text("log.vkey")).unwrap();
    let report = verify(&read("certificate.json"), &service, Some(&log));
    assert_eq!(report.verdict, Verdict::Valid, "{:#?}", report.checks);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.certificate_id.as_deref(), Some("dc-20260301-0001"));
    let names: Vec<CheckName> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            CheckName::Format,
            CheckName::Signature,
            CheckName::Content,
            CheckName::CheckpointSignature,
            CheckName::Inclusion,
            CheckName::Entry
        ]
    );
    assert!(report.checks.iter().all(|c| c.status == Status::Passed));
    // Without the log key, the checkpoint signature is reported as not checked.
    let report = verify(&read("certificate.json"), &service, None);
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(
        report.status(CheckName::CheckpointSignature),
        Some(Status::Skipped)
    );
}

#[test]
fn canonical_bytes_and_signature_match_the_independent_implementation() {
    let keys = keys();
    let file = vector();
    // JCS of the certificate, byte for byte as Python made it.
    assert_eq!(
        signed_message(&file.certificate).unwrap(),
        read("signed-message.bin")
    );
    // Issuing the same facts gives the same signature (Ed25519 is deterministic).
    let issued = issue(
        file.certificate.deletion.clone(),
        file.certificate.audit.clone(),
        &keys.service,
    )
    .unwrap();
    let issued: CertificateFile = serde_json::from_slice(&issued).unwrap();
    assert_eq!(issued, file);
    assert_eq!(key_id(&keys.service.public_key()), file.signature.key_id);
    // The entry's detail names this content.
    let detail = file.certificate.deletion.audit_detail().unwrap();
    assert!(file.certificate.audit.entry.contains(&detail));
}

#[test]
fn layout_does_not_matter_but_content_does() {
    let service = keys().service.public_key();
    // Compact, reordered members: same meaning, still valid.
    let value: Value = serde_json::from_slice(&read("certificate.json")).unwrap();
    let compact = serde_json::to_vec(&value).unwrap();
    assert_eq!(verify(&compact, &service, None).verdict, Verdict::Valid);
    let mut reordered = String::from("{\"signature\":");
    reordered.push_str(&serde_json::to_string(&value["signature"]).unwrap());
    reordered.push_str(",\"certificate\":");
    reordered.push_str(&serde_json::to_string(&value["certificate"]).unwrap());
    reordered.push('}');
    assert_eq!(
        verify(reordered.as_bytes(), &service, None).verdict,
        Verdict::Valid
    );
}

/// Every path to a value in a JSON document.
fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            out.push(path.clone());
            for (k, v) in map {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            out.push(path.clone());
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn at<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, p| match v {
        Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
        other => &mut other[p.as_str()],
    })
}

/// Changed values of every kind a field can hold.
fn edits(v: &Value) -> Vec<Value> {
    match v {
        Value::String(s) => {
            let mut changed = s.clone();
            match changed.pop() {
                Some(c) => changed.push(if c == 'a' { 'b' } else { 'a' }),
                None => changed.push('a'),
            }
            vec![
                Value::String(changed),
                Value::String(format!("{s} ")),
                Value::Null,
            ]
        }
        Value::Number(n) => {
            let n = n.as_u64().unwrap();
            vec![
                Value::from(n + 1),
                Value::from(n.saturating_sub(1).max(u64::from(n == 0) * 2)),
            ]
        }
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Null => vec![Value::String("x".into())],
        Value::Array(items) => {
            let mut out = vec![Value::Array(Vec::new())];
            if let Some(first) = items.first() {
                let mut more = items.clone();
                more.push(first.clone());
                out.push(Value::Array(more));
            }
            out
        }
        Value::Object(map) => {
            let mut out = Vec::new();
            for k in map.keys() {
                let mut fewer = map.clone();
                fewer.remove(k);
                out.push(Value::Object(fewer));
            }
            let mut more = map.clone();
            more.insert("extra".into(), Value::Bool(true));
            out.push(Value::Object(more));
            out
        }
    }
}

#[test]
fn every_field_edit_fails_verification() {
    let keys = keys();
    let service = keys.service.public_key();
    let original: Value = serde_json::from_slice(&read("certificate.json")).unwrap();
    let mut paths = Vec::new();
    leaves(&original, &mut Vec::new(), &mut paths);
    let mut tried = 0;
    for path in &paths {
        let old = at(&mut original.clone(), path).clone();
        for new in edits(&old) {
            if new == old {
                continue;
            }
            let mut doc = original.clone();
            *at(&mut doc, path) = new.clone();
            let bytes = serde_json::to_vec_pretty(&doc).unwrap();
            let report = verify(&bytes, &service, Some(&keys.log_vkey));
            assert_ne!(
                report.verdict,
                Verdict::Valid,
                "editing /{} to {new} went unnoticed",
                path.join("/")
            );
            assert_ne!(report.exit_code(), 0);
            tried += 1;
        }
    }
    assert!(tried > 150, "only {tried} edits tried");
}

#[test]
fn unusable_input_is_not_called_invalid() {
    let service = keys().service.public_key();
    let good: Value = serde_json::from_slice(&read("certificate.json")).unwrap();
    let mut v2 = good.clone();
    v2["certificate"]["version"] = Value::from(2);
    let mut huge = good.clone();
    huge["certificate"]["deletion"]["models"][0]["objects"][0]["size"] = Value::from(1u64 << 60);
    let mut fraction = serde_json::to_string(&good).unwrap();
    fraction = fraction.replace("\"size\":1024", "\"size\":1024.0");
    for bytes in [
        b"".to_vec(),
        b"not json".to_vec(),
        b"{}".to_vec(),
        b"[1,2]".to_vec(),
        vec![0xff, 0xfe],
        serde_json::to_vec(&v2).unwrap(),
        serde_json::to_vec(&huge).unwrap(),
        fraction.into_bytes(),
        read("certificate.json")[..500].to_vec(),
    ] {
        let report = verify(&bytes, &service, None);
        assert_eq!(report.verdict, Verdict::Unusable, "{:?}", report.checks);
        assert_eq!(report.exit_code(), 2);
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].status, Status::Failed);
    }
    // Duplicate members are refused rather than resolved one way or the other.
    let text = text("certificate.json").replacen(
        "\"vendor\": \"acme\",",
        "\"vendor\": \"acme\",\n      \"vendor\": \"other\",",
        1,
    );
    assert_eq!(
        verify(text.as_bytes(), &service, None).verdict,
        Verdict::Unusable
    );
}

#[test]
fn another_service_key_is_refused() {
    let (other, _) = SigningKey::generate().unwrap();
    let report = verify(&read("certificate.json"), &other.public_key(), None);
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.exit_code(), 1);
    let failure = report.first_failure().unwrap();
    assert_eq!(failure.name, CheckName::Signature);
    assert!(failure.detail.contains("given service key"), "{failure}");
    // Even with the key id rewritten to match, the signature does not verify.
    let mut file = vector();
    file.signature.key_id = key_id(&other.public_key());
    let report = verify(
        &serde_json::to_vec(&file).unwrap(),
        &other.public_key(),
        None,
    );
    assert_eq!(report.first_failure().unwrap().name, CheckName::Signature);
}

/// A log of a few entries around a deletion entry, a signed checkpoint and the evidence.
/// Every entry concerns acme, so every leaf carries acme's tag.
struct Log {
    entries: Vec<Vec<u8>>,
    index: u64,
}

/// acme's audit tag key in these tests.
fn acme_tag(seq: u64) -> audit::leaf::Tag {
    let key = crypto::mac::TagKey::from_slice(&[0x42; 32]).unwrap();
    audit::leaf::vendor_tag(&key, seq)
}

fn entry_bytes(seq: u64, action: &str, resource: &str, detail: &str) -> Vec<u8> {
    let mut e = audit::Entry::new("system", action, resource).with_detail(detail);
    e.seq = seq;
    e.time = "2026-03-01T09:00:00.000Z".into();
    e.to_canonical_bytes()
}

impl Log {
    fn around(entry: Vec<u8>) -> Log {
        let mut entries: Vec<Vec<u8>> = (0..5)
            .map(|i| entry_bytes(i, "upload.commit", "acme/m", "x"))
            .collect();
        let index = entries.len() as u64;
        entries.push(entry);
        entries.push(entry_bytes(index + 1, "fetch", "acme/n", "y"));
        Log { entries, index }
    }

    fn evidence(&self, keys: &Keys, sign_with: &SigningKey) -> AuditEvidence {
        let mut store = MemoryTreeStore::new();
        let mut size = 0;
        for (seq, e) in self.entries.iter().enumerate() {
            let leaf = audit::leaf::entry_leaf(e, &acme_tag(seq as u64));
            size = merkle::append(&mut store, size, leaf).unwrap();
        }
        let proof = merkle::inclusion_proof(&store, self.index, size).unwrap();
        let cp = Checkpoint {
            origin: keys.log_name.clone(),
            size,
            root: merkle::root(&store, size).unwrap(),
        };
        let note = checkpoint::sign(&cp, &keys.log_name, sign_with).unwrap();
        AuditEvidence::new(
            &self.entries[self.index as usize],
            &acme_tag(self.index),
            self.index,
            size,
            &proof,
            &note,
        )
        .unwrap()
    }
}

/// Signs whatever it is given, as a holder of the service key could: no self-check.
fn sign_raw(keys: &Keys, deletion: Deletion, audit: AuditEvidence) -> Vec<u8> {
    let certificate = Certificate {
        format: certificate::FORMAT.into(),
        version: certificate::VERSION,
        deletion,
        audit,
    };
    let message = signed_message(&certificate).unwrap();
    let file = CertificateFile {
        certificate,
        signature: Signature {
            algorithm: "ed25519".into(),
            key_id: key_id(&keys.service.public_key()),
            value: B64.encode(keys.service.sign(&message)),
        },
    };
    serde_json::to_vec_pretty(&file).unwrap()
}

fn honest_entry(d: &Deletion, seq: u64) -> Vec<u8> {
    entry_bytes(
        seq,
        AUDIT_ACTION,
        &d.audit_resource(),
        &d.audit_detail().unwrap(),
    )
}

fn check(keys: &Keys, bytes: &[u8], failing: CheckName) {
    let report = verify(bytes, &keys.service.public_key(), Some(&keys.log_vkey));
    assert_eq!(report.verdict, Verdict::Invalid, "{:#?}", report.checks);
    assert_eq!(report.status(CheckName::Signature), Some(Status::Passed));
    assert_eq!(
        report.first_failure().unwrap().name,
        failing,
        "{:#?}",
        report.checks
    );
}

#[test]
fn an_honest_rust_built_certificate_is_valid() {
    let keys = keys();
    let d = vector().certificate.deletion;
    let log = Log::around(honest_entry(&d, 5));
    let bytes = issue(d, log.evidence(&keys, &keys.log), &keys.service).unwrap();
    let report = verify(&bytes, &keys.service.public_key(), Some(&keys.log_vkey));
    assert_eq!(report.verdict, Verdict::Valid, "{:#?}", report.checks);
    assert!(bytes.ends_with(b"}\n"));
}

#[test]
fn a_signed_certificate_with_false_log_evidence_is_invalid() {
    let keys = keys();
    let d = vector().certificate.deletion;
    let log = Log::around(honest_entry(&d, 5));
    let good = log.evidence(&keys, &keys.log);

    // A changed proof hash, a wrong tree size, a wrong leaf index.
    let mut bad = good.clone();
    bad.inclusion_proof[0] = B64.encode([7u8; 32]);
    check(
        &keys,
        &sign_raw(&keys, d.clone(), bad),
        CheckName::Inclusion,
    );
    let mut bad = good.clone();
    bad.tree_size -= 1;
    check(
        &keys,
        &sign_raw(&keys, d.clone(), bad),
        CheckName::Inclusion,
    );
    let mut bad = good.clone();
    bad.leaf_index -= 1;
    check(
        &keys,
        &sign_raw(&keys, d.clone(), bad),
        CheckName::Inclusion,
    );
    let mut bad = good.clone();
    bad.inclusion_proof.push("not base64!".into());
    check(
        &keys,
        &sign_raw(&keys, d.clone(), bad),
        CheckName::Inclusion,
    );
    // The leaf's vendor tag is part of the leaf: another tag, none, or not hex.
    assert!(good.leaf_tag.is_some());
    for tag in [Some(hex::encode(acme_tag(0))), None, Some("zz".into())] {
        let mut bad = good.clone();
        bad.leaf_tag = tag;
        check(
            &keys,
            &sign_raw(&keys, d.clone(), bad),
            CheckName::Inclusion,
        );
    }

    // A checkpoint the service signed itself, under the log's name: caught by the log key,
    // and only by it.
    let (rogue, _) = SigningKey::generate().unwrap();
    let forged = sign_raw(&keys, d.clone(), log.evidence(&keys, &rogue));
    check(&keys, &forged, CheckName::CheckpointSignature);
    let unchecked = verify(&forged, &keys.service.public_key(), None);
    assert_eq!(unchecked.verdict, Verdict::Valid);
    assert_eq!(
        unchecked.status(CheckName::CheckpointSignature),
        Some(Status::Skipped)
    );

    // A real log entry, but of something else: another action, resource, outcome, content.
    for entry in [
        entry_bytes(5, "fetch", &d.audit_resource(), &d.audit_detail().unwrap()),
        entry_bytes(5, AUDIT_ACTION, "acme/other", &d.audit_detail().unwrap()),
        entry_bytes(
            5,
            AUDIT_ACTION,
            &d.audit_resource(),
            "certificate dc-20260301-0001",
        ),
    ] {
        let log = Log::around(entry);
        let bytes = sign_raw(&keys, d.clone(), log.evidence(&keys, &keys.log));
        check(&keys, &bytes, CheckName::Entry);
    }
    let mut changed = d.clone();
    changed.models[0].objects.pop();
    let bytes = sign_raw(&keys, changed.clone(), good.clone());
    check(&keys, &bytes, CheckName::Entry);
    // issue() refuses to hand out such a certificate at all.
    assert!(issue(changed, good, &keys.service).is_err());
}

#[test]
fn incomplete_or_inconsistent_facts_are_invalid() {
    let keys = keys();
    let base = vector().certificate.deletion;
    let mut cases: Vec<(&str, Deletion)> = Vec::new();
    let mut d = base.clone();
    d.post_checks[1].passed = false;
    cases.push(("failed post-check", d));
    let mut d = base.clone();
    d.post_checks.clear();
    cases.push(("no post-checks", d));
    let mut d = base.clone();
    d.destroyed_keys.retain(|k| k.kind != KeyKind::ModelKey);
    cases.push(("model key not destroyed", d));
    let mut d = base.clone();
    d.destroyed_keys.retain(|k| k.kind != KeyKind::Root);
    cases.push(("no root destroyed", d));
    let mut d = base.clone();
    d.completed_at = "2026-03-01T08:59:59Z".into();
    cases.push(("completed before requested", d));
    let mut d = base.clone();
    d.requested_at = "yesterday".into();
    cases.push(("bad time", d));
    let mut d = base.clone();
    d.models.push(d.models[0].clone());
    cases.push(("two models in a model scope", d));
    let mut d = base.clone();
    d.models[0].objects[0].plaintext_sha256 = "ABC".into();
    cases.push(("bad digest", d));
    let mut d = base.clone();
    d.hosts[1].wipe_confirmed = true;
    cases.push(("confirmed without a time", d));
    let mut d = base.clone();
    d.certificate_id = "has space".into();
    cases.push(("bad id", d));
    let mut d = base.clone();
    d.residual_risk = " ".into();
    cases.push(("no residual risk", d));
    for (what, d) in cases {
        let log = Log::around(honest_entry(&d, 5));
        let bytes = sign_raw(&keys, d.clone(), log.evidence(&keys, &keys.log));
        let report = verify(&bytes, &keys.service.public_key(), Some(&keys.log_vkey));
        assert_eq!(
            report.first_failure().map(|c| c.name),
            Some(CheckName::Content),
            "{what}: {:#?}",
            report.checks
        );
        assert!(
            issue(d, log.evidence(&keys, &keys.log), &keys.service).is_err(),
            "{what}"
        );
    }
}

#[test]
fn a_vendor_deletion_names_the_vendor_in_its_entry() {
    let keys = keys();
    let mut d = vector().certificate.deletion;
    d.scope = Scope::Vendor;
    let mut second = d.models[0].clone();
    second.name = "other-model".into();
    second.model_id = "77aa".into();
    d.models.push(second);
    d.destroyed_keys.push(certificate::DestroyedKey {
        kind: KeyKind::ModelKey,
        id: "77aa".into(),
        epoch: 3,
        how: "database row deleted".into(),
    });
    assert_eq!(d.audit_resource(), "acme");
    let log = Log::around(honest_entry(&d, 5));
    let bytes = issue(d, log.evidence(&keys, &keys.log), &keys.service).unwrap();
    let report = verify(&bytes, &keys.service.public_key(), Some(&keys.log_vkey));
    assert_eq!(report.verdict, Verdict::Valid, "{:#?}", report.checks);
}

#[test]
fn the_report_serialises_for_scripts() {
    let keys = keys();
    let report = verify(&read("certificate.json"), &keys.service.public_key(), None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "valid");
    assert_eq!(json["certificate_id"], "dc-20260301-0001");
    assert_eq!(json["checks"][3]["name"], "checkpoint-signature");
    assert_eq!(json["checks"][3]["status"], "skipped");
}

/// A flip of any byte of the file (a cheap, deterministic cousin of the fuzz target in
/// `fuzz/`) never leaves a valid certificate, and never panics.
#[test]
fn every_flipped_byte_fails() {
    let keys = keys();
    let service = keys.service.public_key();
    let good = read("certificate.json");
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (i % 8);
        let report = verify(&bad, &service, Some(&keys.log_vkey));
        assert_ne!(report.verdict, Verdict::Valid, "byte {i}");
    }
}
