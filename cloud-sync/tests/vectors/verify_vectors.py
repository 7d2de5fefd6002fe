"""Verify wardlink batch-format v1 vectors from the spec alone.

An implementation independent of the Rust code: Ed25519 from `cryptography`
(OpenSSL), zstd from `zstandard`. For each vector file given on the command
line it rebuilds every header from docs/batch-format.md's rules, checks the
wire framing, the body hash, the hash chain, the signature (and that signing
with the seed gives the same bytes, Ed25519 being deterministic), that a
flipped byte anywhere is rejected, and the collector's receipt.

Usage: python verify_vectors.py VECTORS.json [MORE.json ...]
Prints "ok FILE" per file; exits non-zero on the first failure.
"""

import hashlib
import json
import struct
import sys

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def sha256(b):
    return hashlib.sha256(b).digest()


def fail(msg):
    raise SystemExit("FAIL: " + msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def gateway_id(public_key_bytes):
    # §6: "gw-" + first 12 bytes of SHA-256(public key), lowercase hex.
    return "gw-" + sha256(public_key_bytes)[:12].hex()


def build_header(gw, seq, prev, created_ms, events, backlog, body):
    # §2: twelve key=value lines, fixed order, each ended by "\n".
    lines = [
        "wardlink-batch/1",
        "gateway_id=" + gw,
        "seq=%d" % seq,
        "prev_header_sha256=" + prev.hex(),
        "created_ms=%d" % created_ms,
        "event_count=%d" % len(events),
        "first_event_id=%d" % events[0]["event_id"],
        "last_event_id=%d" % events[-1]["event_id"],
        "backlog=%d" % backlog,
        "compression=zstd",
        "body_bytes=%d" % len(body),
        "body_sha256=" + sha256(body).hex(),
    ]
    return "".join(l + "\n" for l in lines).encode("ascii")


def split_wire(wire):
    # §7: u32 big-endian header length, header, 64-byte signature, body.
    (hlen,) = struct.unpack(">I", wire[:4])
    header = wire[4 : 4 + hlen]
    sig = wire[4 + hlen : 4 + hlen + 64]
    body = wire[4 + hlen + 64 :]
    return header, sig, body


def verifies(pub, sig, header):
    try:
        pub.verify(sig, sha256(header))
        return True
    except InvalidSignature:
        return False


def accepted(pub, wire):
    """The receiver's checks of §9 on raw wire bytes: True if accepted."""
    try:
        header, sig, body = split_wire(wire)
        if len(sig) != 64 or not verifies(pub, sig, header):
            return False
        fields = dict(
            l.split("=", 1) for l in header.decode("ascii").split("\n")[1:-1]
        )
        return (
            int(fields["body_bytes"]) == len(body)
            and fields["body_sha256"] == sha256(body).hex()
        )
    except Exception:
        return False


def verify_file(path):
    with open(path) as f:
        v = json.load(f)
    check(v["format"] == "wardlink-batch/1", "format")
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["seed_hex"]))
    pub = priv.public_key()
    pub_raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    check(pub_raw.hex() == v["public_key_hex"], "public key from seed")
    gw = gateway_id(pub_raw)
    check(gw == v["gateway_id"], "gateway id %s != %s" % (gw, v["gateway_id"]))

    prev = bytes(32)
    dctx = zstandard.ZstdDecompressor()
    for b in v["batches"]:
        wire = bytes.fromhex(b["wire_hex"])
        header, sig, body = split_wire(wire)
        check(header == b["header"].encode("ascii"), "header bytes in wire")
        check(body.hex() == b["body_hex"], "body bytes in wire")
        ndjson = dctx.decompressobj().decompress(body)
        check(ndjson.decode("utf-8") == b["ndjson"], "body decompresses to ndjson")
        check(ndjson.endswith(b"\n"), "last line ended")
        events = [json.loads(l) for l in ndjson.decode("utf-8").split("\n")[:-1]]
        ids = [e["event_id"] for e in events]
        check(ids == sorted(set(ids)), "ids strictly increasing")
        expected = build_header(
            gw, b["seq"], prev, b["created_ms"], events, b["backlog"], body
        )
        check(header == expected, "header rebuilt from the spec:\n%r\n%r" % (header, expected))
        check(sha256(header).hex() == b["header_sha256"], "header hash")
        check(verifies(pub, sig, header), "signature verifies (seq %d)" % b["seq"])
        check(priv.sign(sha256(header)) == sig, "deterministic signature")
        check(accepted(pub, wire), "wire accepted")
        # Tamper-evidence: every flipped byte of header, signature or body is rejected.
        for i in range(4, len(wire)):
            flipped = bytearray(wire)
            flipped[i] ^= 0x01
            check(not accepted(pub, bytes(flipped)), "flipped byte %d accepted" % i)
        prev = sha256(header)

    # §8: the collector's receipt.
    r = v["receipt"]
    cpriv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["collector_seed_hex"]))
    cpub_raw = cpriv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    check(cpub_raw.hex() == v["collector_public_key_hex"], "collector public key")
    signed = (
        "wardlink-receipt/1\ngateway_id=%s\nseq=%d\nheader_sha256=%s\nstored_ms=%d\n"
        % (r["gateway_id"], r["seq"], r["header_sha256"], r["stored_ms"])
    ).encode("ascii")
    cpub = Ed25519PublicKey.from_public_bytes(cpub_raw)
    check(verifies(cpub, bytes.fromhex(r["signature"]), signed), "receipt signature")
    check(r["header_sha256"] == v["batches"][0]["header_sha256"], "receipt names batch 1")
    print("ok " + path)


for p in sys.argv[1:]:
    verify_file(p)
