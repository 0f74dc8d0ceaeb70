"""Builds the deletion-certificate test vectors with an independent implementation (Python's
json and `cryptography`): RFC 8785 canonical JSON, RFC 9162 Merkle tree and inclusion proof,
a C2SP signed checkpoint, Ed25519 signatures. Fixed keys and times: the output never changes.

    .venv/bin/python crates/certificate/tests/vectors/gen_vectors.py

Writes, next to this script: certificate.json, service.vkey, log.vkey, signed-message.bin,
test-keys.json (the private seeds: test material only)."""
import base64, hashlib, json, os, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))
b64 = lambda b: base64.b64encode(b).decode()
sha = lambda b: hashlib.sha256(b).digest()

def jcs(value):
    # RFC 8785 for strings, safe integers, bools, null, arrays and objects with ASCII names.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

def key(seed):
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sk, pub

def vkey(name, pub):
    kid = sha(name.encode() + b"\n\x01" + pub)[:4]
    raw = b"\x01" + pub
    return f"{name}+{kid.hex()}+{b64(raw)}", kid

# RFC 9162 section 2.1
def mth(leaves):
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))

def path(m, leaves):
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]

service_sk, service_pub = key(bytes(range(1, 33)))
log_sk, log_pub = key(bytes(range(33, 65)))
SERVICE_NAME = "custody.example/deletion"
LOG_NAME = "custody.example/audit"
service_vkey, _ = vkey(SERVICE_NAME, service_pub)
log_vkey, log_kid = vkey(LOG_NAME, log_pub)

deletion = {
    "certificate_id": "dc-20260301-0001",
    "service": "custody.example",
    "scope": "model",
    "vendor": "acme",
    "models": [{
        "name": "llama-next",
        "model_id": "3f9a0c7e1b2d4e5f",
        "revisions": ["c0ffee0000000000000000000000000000000001", "c0ffee0000000000000000000000000000000002"],
        "objects": [
            {"object_id": "a1b2c3d4e5f60718", "origin": "revision c0ffee0000000000000000000000000000000001",
             "size": 16777216, "plaintext_sha256": "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
             "storage_versions_deleted": ["3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"]},
            {"object_id": "b1b2c3d4e5f60719", "origin": "revision c0ffee0000000000000000000000000000000002",
             "size": 4294967296, "plaintext_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "storage_versions_deleted": ["null"]},
            {"object_id": "c1b2c3d4e5f6071a", "origin": "derived from c0ffee0000000000000000000000000000000002",
             "size": 1024, "plaintext_sha256": "0000000000000000000000000000000000000000000000000000000000000000",
             "storage_versions_deleted": ["v1", "v2"]},
        ],
    }],
    "method": {
        "sanitization": "purge",
        "technique": "cryptographic erase of every key that could decrypt the data, plus logical deletion of every stored object version",
        "encryption": "AES-256-GCM with per-object keys derived by HKDF-SHA256 (custody object format v1)",
        "reference": "NIST SP 800-88 Rev. 1",
    },
    "destroyed_keys": [
        {"kind": "model-key", "id": "3f9a0c7e1b2d4e5f", "epoch": 3, "how": "database row deleted; every backup copy is wrapped under epoch 3"},
        {"kind": "epoch-key", "id": "epoch-3", "epoch": 3, "how": "epoch key file overwritten and removed"},
        {"kind": "root", "id": "root-3.key", "epoch": 3, "how": "root key file overwritten and removed"},
    ],
    "root_provider": {"kind": "file", "description": "root key files in /srv/custody-root"},
    "hosts": [
        {"host": "gpu-01.committer.example", "files": 3, "wipe_confirmed": True, "confirmed_at": "2026-03-01T10:05:00Z"},
        {"host": "gpu-02.committer.example", "files": 1, "wipe_confirmed": False, "confirmed_at": None},
    ],
    "requested_by": "vendor-admin:alice",
    "approved_by": ["vendor-admin:bob"],
    "requested_at": "2026-03-01T09:00:00Z",
    "completed_at": "2026-03-01T09:00:04.250Z",
    "post_checks": [
        {"check": "storage-objects-gone", "passed": True, "detail": "0 of 3 objects remain \u2014 storage lists no version"},
        {"check": "retained-ciphertext-does-not-decrypt", "passed": True, "detail": "the model key no longer exists; epoch 3 does not open"},
    ],
    "residual_risk": "Backups taken before this deletion cannot be decrypted, for any model.",
}

detail = f"certificate {deletion['certificate_id']} sha256:{sha(jcs(deletion)).hex()}"

def entry(seq, action, resource, detail):
    # audit::Entry canonical bytes: compact JSON, fields in declaration order.
    return json.dumps({
        "v": 1, "seq": seq, "time": f"2026-03-01T09:00:0{seq}.000Z", "actor": "system", "host": None,
        "action": action, "resource": resource, "decision": None, "request_id": f"r{seq}",
        "outcome": "ok", "detail": detail, "touched": [],
    }, separators=(",", ":"), ensure_ascii=False).encode()

entries = [entry(i, "upload.commit", "acme/llama-next", f"commit {i}") for i in range(4)]
entries.append(entry(4, "deletion.certify", "acme/llama-next", detail))
entries.append(entry(5, "fetch", "acme/other", None))
INDEX, SIZE = 4, len(entries)
root = mth(entries)
proof = path(INDEX, entries)
body = f"{LOG_NAME}\n{SIZE}\n{b64(root)}\n"
sig_line = "\u2014 " + LOG_NAME + " " + b64(log_kid + log_sk.sign(body.encode()))
note = body + "\n" + sig_line + "\n"

certificate = {
    "format": "custody-deletion-certificate",
    "version": 1,
    "deletion": deletion,
    "audit": {
        "entry": entries[INDEX].decode(),
        "leaf_index": INDEX,
        "tree_size": SIZE,
        "inclusion_proof": [b64(h) for h in proof],
        "checkpoint": note,
    },
}
message = b"custody deletion certificate v1\n" + jcs(certificate)
doc = {
    "certificate": certificate,
    "signature": {
        "algorithm": "ed25519",
        "key_id": sha(service_pub)[:8].hex(),
        "value": b64(service_sk.sign(message)),
    },
}

def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)

write("certificate.json", (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
write("signed-message.bin", message)
write("service.vkey", (service_vkey + "\n").encode())
write("log.vkey", (log_vkey + "\n").encode())
write("test-keys.json", (json.dumps({
    "note": "TEST KEYS ONLY: Ed25519 seeds of the vectors' service and log keys",
    "service_seed": bytes(range(1, 33)).hex(), "service_public": service_pub.hex(),
    "log_seed": bytes(range(33, 65)).hex(), "log_public": log_pub.hex(), "log_name": LOG_NAME,
}, indent=2) + "\n").encode())
print("wrote vectors; entry detail:", detail)
