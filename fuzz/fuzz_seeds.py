#!/usr/bin/env python3
"""Write the seed corpus of the `verify_at` fuzz target from tests/data/signature-cases.jsonl.

Usage: python3 fuzz/fuzz_seeds.py [OUT_DIR]   (default: fuzz/corpus/verify_at)

Each vector gives two seeds in the target's input layout (see fuzz/fuzz_targets/verify_at.rs):
the token verbatim (mode 0), and its decoded header and payload JSON to be re-signed by the
target with its fixed keys (mode 1: the fuzzer then mutates JSON that passes the MAC).
Standard library only; the corpus is not committed.
"""

import base64
import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "data" / "signature-cases.jsonl"


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def seed(mode: int, now: int, leeway: int, first: bytes, url: str, body: bytes) -> bytes:
    head = bytes([mode]) + struct.pack("<q", now) + bytes([leeway])
    return head + first + b"\xff" + url.encode() + b"\xff" + body


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fuzz" / "corpus" / "verify_at"
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for line in CASES.read_text().splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        now = int(case.get("now") or 1767225600)
        leeway = min(int(case.get("clock_tolerance") or 0), 255)
        url = case.get("url")
        mode_url = 0 if url is not None else 4
        body = base64.b64decode(case["body_b64"])
        token = case["signature"].encode("utf-8", "surrogatepass")
        seeds = [seed(mode_url, now, leeway, token, url or "", body)]
        parts = case["signature"].split(".")
        if len(parts) == 3:
            try:
                header, payload = b64url_decode(parts[0]), b64url_decode(parts[1])
            except ValueError:
                header = payload = None
            if header is not None:
                first = header + b"\xfe" + payload
                seeds.append(seed(1 | mode_url, now, leeway, first, url or "", body))
                seeds.append(seed(3 | mode_url, now, leeway, first, url or "", body))
        for i, data in enumerate(seeds):
            (out / f"{case['id']}-{i}").write_bytes(data)
            count += 1
    print(f"wrote {count} seeds to {out}")


if __name__ == "__main__":
    main()
