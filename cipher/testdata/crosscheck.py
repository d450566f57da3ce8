#!/usr/bin/env python3
"""Independent re-implementation of docs/FORMAT.md's test vectors.

Written from the document alone (not from the Go code) with the Python
`cryptography` package (>= 44 for Argon2id), to show that a third party can
reproduce every byte. Not run by `go test` (Python is not a build
dependency); run by hand:  python3 cipher/testdata/crosscheck.py docs/FORMAT.md
"""
import base64, hashlib, hmac, re, struct, sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def read_vectors(path):
    vec, last, in_sec, in_fence = {}, None, False, False
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.startswith("## "):
            in_sec = line.startswith("## Test vectors")
            continue
        if line.startswith("```"):
            in_fence, last = not in_fence, None
            continue
        if not (in_sec and in_fence):
            continue
        m = re.match(r"^([a-z0-9][a-z0-9 .]*[a-z0-9]) += ([0-9a-f]*)$", line)
        if m:
            last = m.group(1)
            vec[last] = m.group(2)
        elif re.match(r"^ +[0-9a-f]+$", line) and last:
            vec[last] += line.strip()
        else:
            last = None
    return {k: bytes.fromhex(v) for k, v in vec.items()}


def hkdf(ikm, salt, info, n):
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=salt or None, info=info.encode()).derive(ikm)


def gcm_seal(key, nonce, pt, ad):
    return AESGCM(key).encrypt(nonce, pt, ad)


def config(kind, log2b, t, m, p, salt, nonce, kek, master):
    head = b"S3CFVLT\x00" + struct.pack(">HBBIIB3x", 1, kind, log2b, t, m, p) + salt
    assert len(head) == 56
    body = head + nonce + gcm_seal(kek, nonce, master, head)
    return body + hashlib.sha256(body).digest()


def main(path):
    v = read_vectors(path)
    out = {}
    master = v["master key"]
    kek = Argon2id(salt=v["config salt"], length=32, iterations=3, lanes=4,
                   memory_cost=65536).derive(v["passphrase"])
    out["config wrapping key"] = kek
    out["config"] = config(1, 12, 3, 65536, 4, v["config salt"], v["config nonce"], kek, master)
    kfk = hkdf(v["key file"], v["key file config salt"], "s3cryptfs v1 key file wrap", 32)
    out["key file wrapping key"] = kfk
    out["key file config"] = config(2, 12, 0, 0, 0, v["key file config salt"],
                                    v["key file config nonce"], kfk, master)
    wrap = out["header wrap key"] = hkdf(master, b"", "s3cryptfs v1 header key wrap", 32)
    kid = out["key id"] = hkdf(master, b"", "s3cryptfs v1 key id", 16)
    ck = out["commitment key"] = hkdf(master, b"", "s3cryptfs v1 key commitment", 32)
    fid, dk = v["file id"], v["data key"]
    h = b"S3CF" + bytes([1, 1, 12, 0]) + fid + kid
    h += v["header nonce"] + gcm_seal(wrap, v["header nonce"], dk, h)
    commit = hmac.new(ck, h + dk, hashlib.sha256).digest()
    h += commit
    out["header"], out["header commitment"] = h, commit

    def block(nonce, pt, i, final):
        ad = fid + struct.pack(">QBBBB", i, 1 if final else 0, 1, 1, 12)
        return nonce + gcm_seal(dk, nonce, pt, ad)

    out["object a"] = h + block(v["object a block 0 nonce"], b"", 0, True)
    out["object b"] = h + block(v["object b block 0 nonce"], v["object b plaintext"], 0, True)
    pc = bytes(j % 251 for j in range(4101))
    b1 = block(v["object c block 1 nonce"], pc[4096:], 1, True)
    objc = h + block(v["object c block 0 nonce"], pc[:4096], 0, False) + b1
    assert len(objc) == 4289
    out["object c block 1"], out["object c sha256"] = b1, hashlib.sha256(objc).digest()

    # Version 2: the data key is derived from the content key and the salt.
    content = out["content key"] = hkdf(master, b"", "s3cryptfs v2 content key", 32)

    def v2_object(name, blocks):
        fid2, salt = v[f"object {name} file id"], v[f"object {name} salt"]
        h2 = b"S3CF" + bytes([2, 1, 12, 0]) + fid2 + kid + salt + bytes(28)
        assert len(h2) == 100
        dk2 = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                   info=b"s3cryptfs v2 data key" + h2[:40]).derive(content)
        h2 += hmac.new(ck, h2 + dk2, hashlib.sha256).digest()
        obj = h2
        for i, (pt, final) in enumerate(blocks):
            nonce = v[f"object {name} block {i} nonce"]
            ad = fid2 + struct.pack(">QBBBB", i, 1 if final else 0, 2, 1, 12)
            obj += nonce + gcm_seal(dk2, nonce, pt, ad)
        return h2, dk2, obj

    hd, dkd, objd = v2_object("d", [(v["object b plaintext"], True)])
    out["object d header"], out["object d data key"], out["object d"] = hd, dkd, objd
    he, _, obje = v2_object("e", [(pc[:4096], False), (pc[4096:], True)])
    assert len(obje) == 4289
    out["object e header"], out["object e block 1"] = he, obje[132 + 4096 + 28:]
    out["object e sha256"] = hashlib.sha256(obje).digest()

    # Version 2 config: a passphrase slot and a key-file slot over a keyring
    # of two master keys ("v2 master key 2" current, then "master key").
    vid, ck = v["v2 vault id"], v["v2 config key"]
    m2 = v["v2 master key 2"]
    head = b"S3CFVLT\x00" + struct.pack(">HBBB3x", 2, 12, 2, 2) + vid
    assert len(head) == 32

    def slot(kind, params, salt, nonce, kek):
        body_len = len(params) + 32 + 12 + 48
        pre = struct.pack(">BBH", kind, 0, body_len) + params + salt
        ad = head[:11] + vid + pre
        return pre + nonce + gcm_seal(kek, nonce, ck, ad)

    pkek = Argon2id(salt=v["v2 passphrase slot salt"], length=32, iterations=3, lanes=4,
                    memory_cost=65536).derive(v["passphrase"])
    kkek = hkdf(v["key file"], v["v2 key file slot salt"], "s3cryptfs v1 key file wrap", 32)
    out["v2 passphrase slot wrapping key"], out["v2 key file slot wrapping key"] = pkek, kkek
    body = head
    body += slot(1, struct.pack(">IIB3x", 3, 65536, 4), v["v2 passphrase slot salt"],
                 v["v2 passphrase slot nonce"], pkek)
    body += slot(2, b"", v["v2 key file slot salt"], v["v2 key file slot nonce"], kkek)
    rk = out["v2 keyring key"] = hkdf(ck, b"", "s3cryptfs v2 keyring", 32)
    rn = v["v2 keyring nonce"]
    body += rn + gcm_seal(rk, rn, m2 + master, body)
    out["v2 config"] = body + hashlib.sha256(body).digest()
    assert len(out["v2 config"]) == 360
    out["v2 key id 2"] = hkdf(m2, b"", "s3cryptfs v1 key id", 16)

    # The same vault with encrypted names: flag 0x01, one key-file slot, the
    # keyring "master key" then the name key.
    nk = v["name key"]
    head = b"S3CFVLT\x00" + struct.pack(">HBBBB2x", 2, 12, 1, 1, 1) + vid
    body = head + slot(2, b"", v["v2 key file slot salt"], v["v2 key file slot nonce"], kkek)
    body += rn + gcm_seal(rk, rn, master + nk, body)
    out["names config"] = body + hashlib.sha256(body).digest()

    # Names (FORMAT.md "Names"): AES-SIV (RFC 5297, one associated-data
    # string: the directory id), base64url without padding.
    siv = out["names siv key"] = hkdf(nk, b"", "s3cryptfs names: entry names (AES-SIV)", 64)
    dsiv = out["names dir id siv key"] = hkdf(nk, b"", "s3cryptfs names: directory ids (AES-SIV)", 64)
    hk = out["names hash key"] = hkdf(nk, b"", "s3cryptfs names: directory prefixes (HMAC-SHA256)", 32)

    def prefix(dir_id):
        mac = hmac.new(hk, dir_id, hashlib.sha256).digest()[:20]
        return "d/" + base64.b32encode(mac).decode().rstrip("=").lower() + "/"

    def b64(b):
        return base64.urlsafe_b64encode(b).decode().rstrip("=")

    def key(dir_id, name):
        seg = b64(AESSIV(siv).encrypt(name.encode(), [dir_id]))
        full = seg
        if len(seg) > 220:
            seg = b64(hashlib.sha256(seg.encode()).digest()) + ".lng"
        return prefix(dir_id) + seg, full

    sub = v["names dir id"]
    out["names root prefix"] = prefix(b"").encode()
    out["names dir prefix"] = prefix(sub).encode()
    out["names sealed dir id"] = AESSIV(dsiv).encrypt(sub, [bytes([0]) + b"" + b"sub"])
    out["names key hello in root"] = key(b"", "hello")[0].encode()
    out["names key hello in sub"] = key(sub, "hello")[0].encode()
    long_key, long_full = key(sub, "x" * 255)
    out["names key long in sub"], out["names long full"] = long_key.encode(), long_full.encode()

    bad = [k for k in out if v.get(k) != out[k]]
    for k in bad:
        print(f"MISMATCH {k}:\n doc      {v.get(k, b'').hex()}\n computed {out[k].hex()}")
    print(f"{len(out) - len(bad)}/{len(out)} output vectors reproduced")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/FORMAT.md"))
