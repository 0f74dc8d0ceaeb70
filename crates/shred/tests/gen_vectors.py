"""Independent construction of a version-2 key store (root file, epoch file, a wrapped model
key) with Python's `cryptography`, for tests/format.rs. Run with the test venv:
    .venv/bin/python crates/shred/tests/gen_vectors.py
Fixed keys and nonces, so the output never changes; the Rust test freezes it."""
import struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def wrap(kek, key, aad, nonce):
    # crypto::wrap v1: version || nonce || AES-256-GCM(kek, key, aad = version || aad)
    return b"\x01" + nonce + AESGCM(kek).encrypt(nonce, key, b"\x01" + aad)

epoch = 3
root_key = bytes(range(32))
epoch_key = bytes(range(100, 132))
model_key = bytes(range(200, 232))
root_file = b"custody-root" + b"\x02" + struct.pack(">Q", epoch) + root_key
wrapped_epoch = wrap(root_key, epoch_key, b"custody/epoch-key/v2\0" + struct.pack(">Q", epoch), b"\x11" * 12)
name = b"root-3.key"
epoch_file = (b"custody-epoch" + b"\x02" + struct.pack(">Q", epoch) + b"\x01"
              + struct.pack(">H", len(name)) + name + struct.pack(">H", len(wrapped_epoch)) + wrapped_epoch)
wrapped_model = wrap(epoch_key, model_key, b"custody/model-key/v1\0" + struct.pack(">Q", epoch) + b"model-a", b"\x22" * 12)
for label, value in [("ROOT_FILE", root_file), ("EPOCH_FILE", epoch_file),
                     ("WRAPPED_MODEL_KEY", wrapped_model), ("MODEL_KEY", model_key)]:
    print(f'const {label}: &str = "{value.hex()}";')
