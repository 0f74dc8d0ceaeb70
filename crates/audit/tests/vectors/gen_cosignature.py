"""Builds the cosignature/v1 test vector with an independent implementation (Python's
`cryptography` and hashlib), following C2SP tlog-cosignature and signed-note: a fixed witness
key, a fixed time and a fixed checkpoint, so the output never changes.

    .venv/bin/python crates/audit/tests/vectors/gen_cosignature.py

Writes cosignature.json next to this script (the private seed is test material only)."""
import base64, hashlib, json, os, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))
b64 = lambda b: base64.b64encode(b).decode()
sha = lambda b: hashlib.sha256(b).digest()

def key(seed):
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    return sk, sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

log_seed = sha(b"custody test log key")
witness_seed = sha(b"custody test witness key")
log_sk, log_pub = key(log_seed)
w_sk, w_pub = key(witness_seed)
origin = "custody.example/audit"
wname = "witness.example/w1"

body = f"{origin}\n20852163\n{b64(sha(b'root'))}\n"
log_id = sha(origin.encode() + b"\n\x01" + log_pub)[:4]
note = body + "\n" + f"\u2014 {origin} {b64(log_id + log_sk.sign(body.encode()))}\n"

timestamp = 1679315147
message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
w_id = sha(wname.encode() + b"\n\x04" + w_pub)[:4]
signature = w_sk.sign(message)
line = f"\u2014 {wname} {b64(w_id + struct.pack('>Q', timestamp) + signature)}\n"

log_raw = b64(b"\x01" + log_pub)
w_raw = b64(b"\x04" + w_pub)
vector = {
    "log_vkey": f"{origin}+{log_id.hex()}+{log_raw}",
    "witness_vkey": f"{wname}+{w_id.hex()}+{w_raw}",
    "witness_seed_hex": witness_seed.hex(),
    "witness_name": wname,
    "timestamp": timestamp,
    "note": note,
    "signed_message": message.decode(),
    "cosignature_line": line,
}
with open(os.path.join(HERE, "cosignature.json"), "w") as f:
    json.dump(vector, f, indent=2, ensure_ascii=False)
    f.write("\n")
