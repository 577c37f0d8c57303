#!/usr/bin/env python3
"""Fault run: steady injected traffic through an Airlock proxy while the system around it fails.

Run by hand (not in CI): it restarts PostgreSQL and mounts a tmpfs, so it wants root and a
machine where nothing else uses the PostgreSQL cluster at that moment.

    python3 scripts/fault.py [--seconds-per-phase 20] [--stall 60]

Two `airlock server` replicas share a fresh PostgreSQL database; `airlock proxy` follows
replica A through a TCP relay (which can stall without closing) and knows replica B too;
its data dir (and so its event spool) lives on a 4 MiB tmpfs. Two clients send requests
through a route whose [[inject]] rule puts the secret in `Authorization`; a plain-HTTP
upstream counts the requests that arrived with the right value. Meanwhile, in turn:

  1. replica A is killed with kill -9, and started again
  2. the change stream is stalled (the relay stops forwarding, closing nothing)
  3. PostgreSQL is restarted under the replica pair
  4. the proxy is killed with kill -9, and started again (same data dir)
  5. the spool's disk is filled, then freed

Then it waits for the proxy to deliver its events and prints: requests sent, requests that
failed with the value cached (HTTP status other than 200; refused connections while the proxy
was down are counted apart), uses recorded (sum of `count`) against uses the upstream saw,
and the audit chain's verification. Environment: AIRLOCK_BIN (default target/release/airlock,
built when missing), AIRLOCK_FAULT_DATABASE (default postgres://postgres@127.0.0.1:5432/test,
where a database is created and dropped).
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = "sk-fault-0123456789"
HOST = "upstream.fault.local"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, status=200, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == status:
                    return True
        except Exception as e:  # noqa: BLE001 - any failure means not yet
            if getattr(e, "code", None) == status:
                return True
        time.sleep(0.1)
    return False


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.ok = 0
        self.bad = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        good = self.headers.get("Authorization") == f"Bearer {VALUE}"
        with self.server.lock:
            if good:
                self.server.ok += 1
            else:
                self.server.bad += 1
        body = b"ok" if good else b"no"
        self.send_response(200 if good else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Relay:
    """127.0.0.1:port -> target; `stall(seconds)` holds every connection open at that moment."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.generation = 0
        self.stall_until = 0.0
        threading.Thread(target=self.accept, daemon=True).start()

    def stall(self, seconds):
        self.generation += 1
        self.stall_until = time.time() + seconds

    def accept(self):
        while True:
            client, _ = self.sock.accept()
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            born = self.generation
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pipe, args=(a, b, born), daemon=True).start()

    def pipe(self, src, dst, born):
        try:
            while True:
                data = src.recv(65536)
                while born != self.generation and time.time() < self.stall_until:
                    time.sleep(0.5)  # stalled: hold the bytes, close nothing
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Load:
    def __init__(self, proxy_port, clients=2):
        self.port = proxy_port
        self.sent = 0
        self.failed = {}  # status -> count
        self.unreachable = 0  # proxy not listening (it was killed)
        self.stop = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = None
        while not self.stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/r/up/work")
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    self.sent += 1
                    if resp.status != 200:
                        why = f"{resp.status} {resp.getheader('x-airlock-error', '')}".strip()
                        self.failed[why] = self.failed.get(why, 0) + 1
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.HTTPException, OSError):
                with self.lock:
                    self.unreachable += 1
                conn = None
                time.sleep(0.05)
            time.sleep(0.01)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds-per-phase", type=float, default=20)
    ap.add_argument("--stall", type=float, default=60)
    args = ap.parse_args()
    phase = args.seconds_per_phase

    binary = os.environ.get("AIRLOCK_BIN", os.path.join(ROOT, "target/release/airlock"))
    if not os.path.exists(binary):
        log("building target/release/airlock")
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    admin_db = os.environ.get("AIRLOCK_FAULT_DATABASE", "postgres://postgres@127.0.0.1:5432/test")
    db = f"airlock_fault_{os.getpid()}"
    subprocess.run(["psql", admin_db, "-qc", f"CREATE DATABASE {db}"], check=True)
    url = admin_db.rsplit("/", 1)[0] + "/" + db
    work = tempfile.mkdtemp(prefix="airlock-fault-")
    procs = {}
    mounted = None
    try:
        # The proxy's data dir on a small tmpfs (root only), so its disk can be filled.
        data = os.path.join(work, "proxy")
        os.makedirs(data)
        if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", data]).returncode == 0:
            mounted = data
        else:
            log("not root (or mount failed): the disk-full phase is skipped")

        upstream = Upstream()
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        policies = os.path.join(work, "policies")
        os.makedirs(policies)
        with open(os.path.join(policies, "fault.toml"), "w") as f:
            f.write(
                f"""[agent]
name = "fault-agent"
token_ttl = "15m"

[egress]
allow = ["{HOST}"]

[[grant]]
secrets = "production/fault/*"
hosts = ["{HOST}"]

[[route]]
name = "up"
upstream = "http://{HOST}:{upstream.server_address[1]}"

[[inject]]
host = "{HOST}"
header = "authorization"
value = "Bearer {{{{secret:production/fault/key}}}}"
"""
            )
        sdata = os.path.join(work, "server")
        out = subprocess.run(
            [binary, "server", "init", "--data-dir", sdata, "--database-url", url, "--json"],
            check=True, capture_output=True, text=True,
        )
        admin = json.loads(out.stdout)["admin_key"]
        ports = {"A": free_port(), "B": free_port()}

        def start_server(name):
            logf = open(os.path.join(work, f"server-{name}.log"), "a")
            procs[name] = subprocess.Popen(
                [binary, "server", "--data-dir", sdata, "--database-url", url, "--policies", policies,
                 "--listen", f"127.0.0.1:{ports[name]}"],
                stdout=logf, stderr=logf,
            )
            assert wait_http(f"http://127.0.0.1:{ports[name]}/healthz"), f"server {name} did not start"

        for name in ports:
            start_server(name)
        base = f"http://127.0.0.1:{ports['B']}"

        def api(method, path, body=None):
            req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None)
            req.add_header("Authorization", f"Bearer {admin}")
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"null")

        api("POST", "/v1/secrets", {"path": "production/fault/key", "value": VALUE})
        agent = api("POST", "/v1/agents", {"name": "fault-agent"})
        key = os.path.join(work, "agent.key")
        with open(key, "w") as f:
            f.write(agent["key"])
        relay = Relay(ports["A"])
        proxy_port = free_port()

        def start_proxy():
            logf = open(os.path.join(work, "proxy.log"), "a")
            procs["proxy"] = subprocess.Popen(
                [binary, "proxy", "--server", f"http://127.0.0.1:{relay.port},{base}", "--listen",
                 f"127.0.0.1:{proxy_port}", "--agent-key-file", key, "--data-dir", data, "--resolve",
                 f"{HOST}=127.0.0.1:{upstream.server_address[1]}", "--spool-max-bytes", str(2 * 1024 * 1024)],
                stdout=logf, stderr=logf,
            )
            assert wait_http(f"http://127.0.0.1:{proxy_port}/_airlock/readyz"), "the proxy did not become ready"

        start_proxy()
        load = Load(proxy_port)
        log("steady load running")
        time.sleep(phase)

        log("1. kill -9 replica A (the one the proxy follows), then start it again")
        procs["A"].send_signal(signal.SIGKILL)
        procs["A"].wait()
        time.sleep(phase)
        start_server("A")
        time.sleep(phase)

        log(f"2. stall the change stream for {args.stall:.0f} s (nothing closes)")
        relay.stall(args.stall)
        time.sleep(args.stall + 2)

        cluster = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout.split()
        if cluster:
            log("3. restart PostgreSQL under the replica pair")
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], "main", "restart"], check=False)
            time.sleep(phase)
        else:
            log("3. skipped: no local PostgreSQL cluster to restart")

        log("4. kill -9 the proxy, then start it again with the same data dir")
        procs["proxy"].send_signal(signal.SIGKILL)
        procs["proxy"].wait()
        time.sleep(1)
        start_proxy()
        time.sleep(phase)

        if mounted:
            log("5. fill the spool's disk, then free it")
            filler = os.path.join(mounted, "filler")
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
            time.sleep(phase)
            os.remove(filler)
            time.sleep(phase)

        load.finish()
        log("load stopped; waiting for the proxy to deliver its events")

        def recorded():
            total, ids, cursor = 0, set(), None
            while True:
                page = api("GET", "/v1/secrets/production%2Ffault%2Fkey/access-events?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
                for e in page["events"]:
                    if e.get("detail", {}).get("outcome") == "injected":
                        total += e["detail"]["count"]
                    ids.add(e["id"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return total, len(ids)

        last, stable_since = -1, time.time()
        while time.time() - stable_since < 5 and time.time() - stable_since < 60:
            now, _ = recorded()
            if now != last:
                last, stable_since = now, time.time()
            time.sleep(1)
        uses, _ = recorded()
        verify = subprocess.run([binary, "audit", "verify"], capture_output=True, text=True,
                                env={**os.environ, "AIRLOCK_ADDR": base, "AIRLOCK_TOKEN": admin})
        failed = sum(load.failed.values())
        print()
        print("fault run summary")
        print(f"  requests sent (answered)            {load.sent}")
        print(f"  requests failed (non-200 answers)   {failed} {dict(load.failed) if failed else ''}  target 0*")
        print(f"  connection failures (proxy down)    {load.unreachable}")
        print(f"  uses the upstream saw               {upstream.ok} (wrong or missing value: {upstream.bad})")
        print(f"  uses recorded (sum of count)        {uses}  target = upstream's, less the kill -9 window")
        print(f"  uses recorded beyond what was seen  {max(0, uses - upstream.ok)}  target 0 (duplicates)")
        print(f"  audit chain                         {'verifies' if verify.returncode == 0 else 'DOES NOT VERIFY'}: {verify.stdout.strip() or verify.stderr.strip()}")
        print("  * 503 spool_full while the disk was full is the proxy failing closed, by design")
        print(f"  logs: {work}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if mounted:
            subprocess.run(["umount", mounted], check=False)
        subprocess.run(["psql", admin_db, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)


if __name__ == "__main__":
    sys.exit(main())
