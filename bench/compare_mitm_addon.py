"""mitmproxy addon for bench/compare.sh: dial BENCH_RESOLVE_HOST at 127.0.0.1.

The benchmark's TLS upstream is named api.bench.local (its certificate is for that
name) but listens on 127.0.0.1. Airlock gets the same mapping from
`--resolve api.bench.local=127.0.0.1`; this is mitmproxy's equivalent. It runs once per
upstream connection (the `server_connect` hook), not per request, and leaves the port
and the TLS server name (SNI) as the client asked for them.
"""

import os

HOST = os.environ.get("BENCH_RESOLVE_HOST", "api.bench.local")


def server_connect(data):
    address = data.server.address
    if address and address[0] == HOST:
        data.server.address = ("127.0.0.1", address[1])
