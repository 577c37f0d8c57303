#!/usr/bin/env python3
"""Seed an Airlock server for bench/api.sh (python3 standard library only).

usage: AIRLOCK_BENCH_KEY=<admin key> python3 bench/seed.py PORT COUNT

Creates a deployer key (printed on stdout, nothing else is) and COUNT secrets
bench/read/k0 .. bench/read/k{COUNT-1} over one keep-alive connection. Any status
other than 201 is an error (exit 1) with the response body on stderr.
"""

import http.client
import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    port, count = int(sys.argv[1]), int(sys.argv[2])
    key = os.environ.get("AIRLOCK_BENCH_KEY", "")
    if not key:
        print("seed.py: AIRLOCK_BENCH_KEY is not set", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(url: str, doc: dict) -> dict:
        conn.request("POST", url, body=json.dumps(doc), headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 201:
            raise SystemExit(f"seed.py: POST {url} {doc.get('path', '')} -> {resp.status}: {body[:500]!r}")
        return json.loads(body) if body else {}

    deployer = post("/v1/keys", {"name": "bench-deployer", "role": "deployer"})["key"]
    started = time.monotonic()
    for i in range(count):
        post("/v1/secrets", {"path": f"bench/read/k{i}", "value": f"bench-read-value-{i:06d}-0123456789abcdefghij"})
    took = time.monotonic() - started
    print(f"seeded {count} secrets in {took:.2f} s ({count / took:.0f} creates/s, 1 connection)", file=sys.stderr)
    print(deployer)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
