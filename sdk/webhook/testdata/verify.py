#!/usr/bin/env python3
"""Independent verifier for sbx webhook signatures (stdlib only).

It shares no code with the Go implementation, so Go tests run it to prove
that what sbx signs is what a third-party receiver computes.

  verify.py generate            print fresh test vectors (JSON) to stdout
  verify.py vectors FILE        recompute every vector in FILE, exit 1 on mismatch
  verify.py deliveries FILE     verify captured deliveries [{secret, body, headers}]
"""
import base64
import hashlib
import hmac
import json
import sys


def e2b_sig(secret: str, body: bytes) -> str:
    digest = hashlib.sha256(secret.encode() + body).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def std_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode()


def std_sig(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    mac = hmac.new(std_key(secret), f"{msg_id}.{ts}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


CASES = [
    ("plain ascii secret", "my-secret", '{"id":"1","type":"sandbox.lifecycle.created"}'),
    ("whsec secret", "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
     '{"type":"sandbox.lifecycle.killed","eventData":{"kill_reason":"timeout"}}'),
    ("utf-8 secret and body", "s\u00e9cr\u00e8t-\u2603", '{"name":"caf\u00e9 \u2603"}'),
    ("empty body", "k", ""),
    ("body with newline", "another secret", '{"a":1}\n'),
]


def generate():
    out = []
    for i, (name, secret, body) in enumerate(CASES):
        msg_id = f"msg_{i:04d}"
        ts = 1764115200 + i * 61
        b = body.encode()
        out.append({
            "name": name, "secret": secret, "body": body, "msgId": msg_id,
            "timestamp": ts, "e2bSignature": e2b_sig(secret, b),
            "standardSignature": std_sig(secret, msg_id, ts, b),
        })
    json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
    print()


def check_vectors(path):
    bad = 0
    for v in json.load(open(path, encoding="utf-8")):
        b = v["body"].encode()
        if e2b_sig(v["secret"], b) != v["e2bSignature"]:
            print(f"FAIL e2b {v['name']}"); bad += 1
        if std_sig(v["secret"], v["msgId"], v["timestamp"], b) != v["standardSignature"]:
            print(f"FAIL standard {v['name']}"); bad += 1
    return bad


def check_deliveries(path):
    bad = 0
    items = json.load(open(path, encoding="utf-8"))
    for i, d in enumerate(items):
        h = {k.lower(): v for k, v in d["headers"].items()}
        b = base64.b64decode(d["bodyBase64"])
        if not hmac.compare_digest(e2b_sig(d["secret"], b), h.get("e2b-signature", "")):
            print(f"FAIL e2b delivery {i}"); bad += 1
        want = std_sig(d["secret"], h.get("webhook-id", ""), int(h.get("webhook-timestamp", "0")), b)
        if want not in h.get("webhook-signature", "").split():
            print(f"FAIL standard delivery {i}"); bad += 1
    print(f"checked {len(items)} deliveries, {bad} failures")
    return bad


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "generate":
        generate()
    elif mode == "vectors":
        sys.exit(1 if check_vectors(sys.argv[2]) else 0)
    elif mode == "deliveries":
        sys.exit(1 if check_deliveries(sys.argv[2]) else 0)
    else:
        print(__doc__); sys.exit(2)
