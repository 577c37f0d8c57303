#!/usr/bin/env python3
"""What a value-cache miss costs in the Airlock proxy (run by bench/compare.sh).

Creates SAMPLES secrets (all holding the value the bench upstream expects) through the
central API, then, on one keep-alive connection to the proxy's route, sends for each:
a request whose placeholder names that secret for the first time (a miss: the proxy
fetches the value from the central API) and the same request again (a hit). Each pair is
sent back to back, so both see the same machine; the miss's extra cost is the difference.

    cache_miss.py SERVER_URL ADMIN_KEY PROXY_HOST:PORT ROUTE SECRET_PREFIX VALUE SAMPLES [BAO_ADDR BAO_TOKEN]

With BAO_ADDR and BAO_TOKEN, each secret is an external reference instead: its value is written
to OpenBao's KV v2 mount `secret` and the Airlock secret references it (the server's default
vault provider config), so a miss is also a cold read from OpenBao (the server's provider cache
has not seen that reference either).

Prints one line: CACHEMISS samples=N miss_p50_ms= miss_p99_ms= hit_p50_ms= hit_p99_ms=
extra_p50_ms= extra_p99_ms= (extra = miss - hit of the same pair). Exits 1 on any non-200.
"""

import http.client
import json
import sys
import time
import urllib.request


def bao_put(bao, token, name, value):
    req = urllib.request.Request(
        f"{bao}/v1/secret/data/{name}",
        data=json.dumps({"data": {"value": value}}).encode(),
        headers={"X-Vault-Token": token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status not in (200, 204):
            raise SystemExit(f"writing {name} to OpenBao: HTTP {resp.status}")


def create(server, admin_key, path, value, external=None):
    body = {"path": path, "value": value}
    if external:
        body = {"path": path, "managed_mode": "external_reference", "external_ref": external}
    req = urllib.request.Request(
        server + "/v1/secrets",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + admin_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 201:
            raise SystemExit(f"creating {path}: HTTP {resp.status}")


def timed_get(conn, route, placeholder):
    start = time.perf_counter()
    conn.request("GET", f"/r/{route}/", headers={"Authorization": f"Bearer {{{{secret:{placeholder}}}}}"})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = (time.perf_counter() - start) * 1000.0
    if resp.status != 200:
        raise SystemExit(f"GET through the proxy with {placeholder}: HTTP {resp.status} {body[:200]!r}")
    return elapsed


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def main():
    server, admin_key, proxy, route, prefix, value, samples = sys.argv[1:8]
    bao = sys.argv[8:10]
    samples = int(samples)
    stamp = str(int(time.time()))
    kind = "ext" if bao else "miss"
    paths = [f"{prefix}/{kind}-{stamp}-{i}" for i in range(samples)]
    for i, path in enumerate(paths):
        external = None
        if bao:
            name = f"bench/{stamp}-{i}"
            bao_put(bao[0], bao[1], name, value)
            external = f"vault+kv2://secret/{name}#value"
        create(server, admin_key, path, value, external)
    host, port = proxy.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    timed_get(conn, route, paths[0])  # opens the connection (and warms the route)
    misses, hits = [], []
    for path in paths[1:]:
        misses.append(timed_get(conn, route, path))
        hits.append(timed_get(conn, route, path))
    extra = [m - h for m, h in zip(misses, hits)]
    fields = {
        "samples": len(misses),
        "miss_p50_ms": percentile(misses, 50),
        "miss_p99_ms": percentile(misses, 99),
        "hit_p50_ms": percentile(hits, 50),
        "hit_p99_ms": percentile(hits, 99),
        "extra_p50_ms": percentile(extra, 50),
        "extra_p99_ms": percentile(extra, 99),
    }
    print("CACHEMISS " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
