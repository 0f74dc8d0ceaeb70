#!/usr/bin/env python3
"""Generates vectors.json for stream format v1 (docs/format.md) from the spec alone.

Independent of the Rust code on purpose: it uses pyca/cryptography (OpenSSL) for HKDF-SHA256 and
AES-256-GCM. The vectors are FROZEN: run this only when adding vectors, never to "fix" a failing
test. Usage: python3 gen_vectors.py > vectors.json
"""
import hashlib
import json
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
SEG = 1 << 20
TAG = 16


def pattern(n):
    """byte[i] = i mod 251"""
    return bytes(i % 251 for i in range(n))


def seal(key, vendor, model, obj, salt, prefix, pt):
    info = b"custody/stream/v1"
    for ident in (vendor, model, obj):
        b = ident.encode("utf-8")
        info += struct.pack(">I", len(b)) + b
    okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)
    header = bytes([VERSION]) + salt + prefix
    aead = AESGCM(okm)
    count = 1 if len(pt) == 0 else (len(pt) + SEG - 1) // SEG
    out = header
    tags = []
    for i in range(count):
        chunk = pt[i * SEG:(i + 1) * SEG]
        last = i == count - 1
        nonce = prefix + struct.pack(">I", i) + bytes([1 if last else 0])
        ct = aead.encrypt(nonce, chunk, header)
        tags.append(ct[-TAG:].hex())
        out += ct
    return okm, out, tags


def vector(name, key, vendor, model, obj, salt, prefix, pt_hex=None, pattern_len=None,
           full=True):
    pt = bytes.fromhex(pt_hex) if pt_hex is not None else pattern(pattern_len)
    okm, stored, tags = seal(key, vendor, model, obj, salt, prefix, pt)
    v = {
        "name": name,
        "model_key": key.hex(),
        "vendor_id": vendor,
        "model_id": model,
        "object_id": obj,
        "salt": salt.hex(),
        "nonce_prefix": prefix.hex(),
    }
    if pt_hex is not None:
        v["plaintext_hex"] = pt_hex
    else:
        v["plaintext_pattern_len"] = pattern_len
    v["object_key"] = okm.hex()
    v["stored_len"] = len(stored)
    v["stored_sha256"] = hashlib.sha256(stored).hexdigest()
    v["segment_tags"] = tags
    if full:
        v["stored_hex"] = stored.hex()
    return v


key1 = bytes(range(32))
key2 = bytes.fromhex("c0ffee00" * 8)
salt1 = bytes(range(0x40, 0x60))
salt2 = bytes([0xA5] * 32)
prefix1 = bytes(range(0xA0, 0xA7))
prefix2 = bytes([0xFF] * 7)

vectors = [
    vector("empty object", key1, "vendor-a", "model-1", "weights/shard-00000.safetensors",
           salt1, prefix1, pt_hex=""),
    vector("short object", key1, "vendor-a", "model-1", "config.json", salt1, prefix1,
           pt_hex=b"custody test vector: hello, weights".hex()),
    vector("empty and non-ascii identifiers", key2, "", "mod\u00e8le-\u03b1", "a/b/c", salt2,
           prefix2, pt_hex="00" * 17),
    vector("exactly one full segment", key1, "vendor-a", "model-1", "shard-1", salt1, prefix1,
           pattern_len=SEG, full=False),
    vector("three segments, short last", key2, "vendor-b", "model-2", "shard-3", salt2, prefix2,
           pattern_len=2 * SEG + 1000, full=False),
]

print(json.dumps({
    "format": "custody stream v1 (docs/format.md)",
    "generator": "crates/crypto/tests/gen_vectors.py (pyca/cryptography, independent of the Rust code)",
    "plaintext_pattern": "plaintext_pattern_len = n means n bytes with byte[i] = i mod 251",
    "vectors": vectors,
}, indent=2))
