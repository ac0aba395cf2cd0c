#!/usr/bin/env python3
"""Independent reference decoder for the sealed-corpus format v1, written
from docs/formats/sealed-corpus.md with Python's `cryptography` (not from
the Rust code). Usage: open_sealed_v1.py FILE.hex|FILE.sealed DEKFILE"""
import hashlib, hmac, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes


def hkdf(dek, salt, label):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=label).derive(dek)


def cbor_bytes_field(header, name):
    """Finds `name` (a text key) followed by a byte string in the header CBOR."""
    key = bytes([0x60 + len(name)]) + name.encode()
    i = header.index(key) + len(key)
    if header[i] == 0x58:
        n = header[i + 1]; return header[i + 2:i + 2 + n]
    n = header[i] - 0x40
    return header[i + 1:i + 1 + n]


def cbor_uint_field(header, name):
    key = bytes([0x60 + len(name)]) + name.encode()
    i = header.index(key) + len(key)
    b = header[i]
    if b < 0x18: return b
    size = {0x18: 1, 0x19: 2, 0x1a: 4, 0x1b: 8}[b]
    return int.from_bytes(header[i + 1:i + 1 + size], "big")


def main(path, dek_path):
    data = open(path, "rb").read()
    if path.endswith(".hex"):
        data = bytes.fromhex(data.decode().strip())
    dek = bytes.fromhex(open(dek_path).read().strip().split(":", 1)[1])
    assert data[:8] == b"STCORPUS"
    (hlen,) = struct.unpack(">I", data[8:12])
    header = data[12:12 + hlen]
    mac = data[12 + hlen:12 + hlen + 32]
    salt = cbor_bytes_field(header, "salt")
    prefix = cbor_bytes_field(header, "nonce_prefix")
    chunk = cbor_uint_field(header, "chunk_size")
    assert hkdf(dek, salt, b"sealtune/v1/corpus/key-check") == cbor_bytes_field(header, "key_check"), "wrong key"
    mac_key = hkdf(dek, salt, b"sealtune/v1/corpus/header-mac")
    assert hmac.compare_digest(hmac.new(mac_key, header, hashlib.sha256).digest(), mac), "tampered header"
    content_key = hkdf(dek, salt, b"sealtune/v1/corpus/content-key" + hashlib.sha256(header).digest())
    aad = hashlib.sha256(header).digest()
    body = data[12 + hlen + 32:]
    out, counter = b"", 0
    while True:
        piece, body = body[:chunk + 16], body[chunk + 16:]
        last = len(body) == 0
        nonce = prefix + struct.pack(">I", counter) + bytes([1 if last else 0])
        out += AESGCM(content_key).decrypt(nonce, piece, aad)
        if last:
            break
        counter += 1
    sys.stdout.buffer.write(out)
    print("\ncommitment", hashlib.sha256(data).hexdigest(), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
