#!/usr/bin/env python3
"""How long one audited secret read takes at the central API, with nothing else going on.

Creates N secrets, then reads each once (a first read: the server records it in the audit
trail and sets `accessed_at`), one request at a time on one keep-alive connection, and
prints the latency distribution. Used to find what the proxy's cache-miss p99 depends on
(bench/README.md, "What the miss p99 depends on").

    read_latency.py SERVER_URL ADMIN_KEY [N]

Prints: READS n= p50_ms= p90_ms= p99_ms= max_ms= and the eight slowest reads.
"""

import http.client
import json
import sys
import time
import urllib.parse


def main():
    server, admin_key = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 600
    url = urllib.parse.urlsplit(server)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    headers = {"Authorization": "Bearer " + admin_key, "Content-Type": "application/json"}
    stamp = str(int(time.time() * 1000))
    paths = [f"bench/latency-{stamp}-{i}" for i in range(n)]
    for path in paths:
        conn.request("POST", "/v1/secrets", body=json.dumps({"path": path, "value": "v" * 40}), headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise SystemExit(f"creating {path}: HTTP {resp.status}")
    took = []
    for path in paths:
        start = time.perf_counter()
        conn.request("GET", "/v1/secrets/" + urllib.parse.quote(path, safe=""), headers=headers)
        resp = conn.getresponse()
        resp.read()
        took.append((time.perf_counter() - start) * 1000.0)
        if resp.status != 200:
            raise SystemExit(f"reading {path}: HTTP {resp.status}")
    ordered = sorted(took)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]

    slowest = " ".join(f"{t:.2f}" for t in ordered[-8:])
    print(f"READS n={n} p50_ms={pct(50):.3f} p90_ms={pct(90):.3f} p99_ms={pct(99):.3f} "
          f"max_ms={ordered[-1]:.3f} slowest={slowest}")


if __name__ == "__main__":
    main()
