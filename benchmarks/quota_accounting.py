"""How exactly traffic quotas count: the server's ledger against the bytes that really arrived.

    python -m benchmarks.quota_accounting --json-out results/quota-accounting/<run>.json [--bytes 1000000000]

A real portunus-server and two real portunus-clients (one on the splice
path, one with PORTUNUS_DISABLE_SPLICE=1 on the copy path) run on a temp
data dir. For each case a user gets a grant and a quota far above the
transfer on its client; this process then moves `--bytes` through the user's
rule (TCP one way, TCP both ways at half each, UDP in 1,400-byte datagrams
paced so that no loopback buffer overflows), counts what its own endpoints
sent and received, waits until the client's usage reports settle, and reads
the ledger (GET /v1/users/{id}/quotas/{client}/status) and the client's own
counter. error_pct = |ledger - received| / received * 100; the run fails
(exit 1) if any case is at or above 0.1%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.fleet.plane import stop_process, wait_for
from harness.site.netutil import free_port
from portunus.control.api_client import OperatorClient

FORMAT_VERSION = 1
BIN = Path(sys.executable).parent
MAX_ERROR_PCT = 0.1
CHUNK = b"\x5a" * (256 * 1024)
UDP_SIZE = 1400
# 40 MB/s of UDP: well under what the forwarder and the loopback buffers take here, so a
# datagram lost on the way is not mistaken for a counting error.
UDP_PACE_BYTES_PER_S = 40e6
PASSWORD = "benchmark-password-1"


class Plane:
    """portunus-server on a temp data dir, and the clients started on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "server"
        self.data.mkdir()
        self.token = subprocess.run([str(BIN / "portunus-server"), "gen-token"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        self.http = f"127.0.0.1:{free_port()}"
        (self.data / "server.toml").write_text(
            f'control_listen = "127.0.0.1:{free_port()}"\noperator_http_listen = "{self.http}"\n'
            f'operator_token = "{self.token}"\n')
        (self.data / "server.toml").chmod(0o600)
        self.procs: list[subprocess.Popen] = []
        self._start([str(BIN / "portunus-server"), "--data-dir", str(self.data), "serve"], "server.log")
        self.api = OperatorClient(self.http, self.token)
        wait_for(lambda: self._up(), 30, "the server")

    def _up(self) -> bool:
        try:
            return self.api.get("/v1/clients").status == 200
        except OSError:
            return False

    def _start(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.root / log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def client(self, name: str, env: dict[str, str]) -> int:
        """Enroll and start a client; returns its metrics port."""
        uri = self.api.post("/v1/client-enrollments", {"name": name, "address": "127.0.0.1"}).body["uri"]
        bundle = self.root / f"{name}.json"
        subprocess.run([str(BIN / "portunus-client"), "enroll", uri, "--out", str(bundle)], check=True,
                       capture_output=True)
        mport = free_port()
        self._start([str(BIN / "portunus-client"), "--bundle", str(bundle), "--stats-report-interval-secs", "0.5",
                     "--metrics-addr", f"127.0.0.1:{mport}"], f"{name}.log", env)
        wait_for(lambda: any(c["name"] == name and c["status"] == "online"
                          for c in self.api.get("/v1/clients").body["clients"]), 30, f"client {name}")
        return mport

    def close(self) -> None:
        for p in reversed(self.procs):
            stop_process(p, 20)


def _tcp_sink(reply_bytes: int) -> tuple[socket.socket, dict[str, int], threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    counts = {"received": 0, "sent": 0}

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            def reply() -> None:
                left = reply_bytes
                while left > 0:
                    counts["sent"] += conn.send(CHUNK[:min(len(CHUNK), left)])
                    left = reply_bytes - counts["sent"]
                conn.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=reply)
            t.start()
            buf = bytearray(1 << 20)
            while n := conn.recv_into(buf):
                counts["received"] += n
            t.join()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, counts, thread


def tcp_transfer(port: int, up_bytes: int, sink_counts: dict[str, int]) -> dict[str, Any]:
    """Send `up_bytes`, read the reply to its end; returns what was sent (both ends) and received here."""
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        def send() -> None:
            left = up_bytes
            while left > 0:
                left -= s.send(CHUNK[:min(len(CHUNK), left)])
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        buf = bytearray(1 << 20)
        while n := s.recv_into(buf):
            got += n
        t.join()
    return {"sent": up_bytes + sink_counts["sent"], "received_here": got}


def udp_transfer(port: int, nbytes: int) -> dict[str, int]:
    """Paced 1,400-byte datagrams to a counting sink through `port`."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("127.0.0.1", 0))
    counts = {"received": 0}
    done = threading.Event()

    def receive() -> None:
        sink.settimeout(0.5)
        while not done.is_set():
            try:
                counts["received"] += len(sink.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    return {"sink_port": sink.getsockname()[1], "_sink": sink, "_done": done, "_counts": counts,  # type: ignore[dict-item]
            "nbytes": nbytes, "port": port}


def _udp_send(ctx: dict[str, Any]) -> dict[str, Any]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", ctx["port"]))
    payload = b"u" * UDP_SIZE
    n = ctx["nbytes"] // UDP_SIZE
    per_ms = UDP_PACE_BYTES_PER_S / 1000 / UDP_SIZE
    t0 = time.monotonic()
    for i in range(n):
        s.send(payload)
        if i % 64 == 63:
            ahead = (i + 1) / per_ms / 1000 - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    s.close()
    time.sleep(1.0)
    ctx["_done"].set()
    ctx["_sink"].close()
    return {"sent": n * UDP_SIZE, "received": ctx["_counts"]["received"]}


def run_case(plane: Plane, case: dict[str, Any], client: str, mport: int, index: int, nbytes: int) -> dict[str, Any]:
    api = plane.api
    user = f"bench{index}"
    uid = api.post("/v1/users", {"username": user, "password": PASSWORD, "role": "user"}).body["id"]
    port = free_port(kind=socket.SOCK_DGRAM if case["protocol"] == "udp" else socket.SOCK_STREAM)
    api.post("/v1/grants", {"user_id": uid, "client": client, "listen_port_start": port, "listen_port_end": port,
                            "protocols": [case["protocol"]]})
    api.put(f"/v1/users/{uid}/quotas/{client}", {"bytes": 4 * nbytes, "period": "never"})
    if case["protocol"] == "udp":
        ctx = udp_transfer(port, nbytes)
        target = ctx["sink_port"]
    else:
        srv, sink_counts, sink_thread = _tcp_sink(nbytes // 2 if case["both_ways"] else 0)
        target = srv.getsockname()[1]
    resp = api.post("/v1/rules", {"client": client, "name": f"r{index}", "protocol": case["protocol"],
                                  "listen_addr": "127.0.0.1", "listen_port": port, "target": f"127.0.0.1:{target}",
                                  "owner": f"user:{user}"})
    assert resp.status == 201, resp
    t0 = time.monotonic()
    if case["protocol"] == "udp":
        moved = _udp_send(ctx)
    else:
        moved = tcp_transfer(port, nbytes // 2 if case["both_ways"] else nbytes, sink_counts)
        sink_thread.join(60)  # the target has read its last byte (our EOF can come first)
        moved["received"] = sink_counts["received"] + moved["received_here"]
        srv.close()
    elapsed = time.monotonic() - t0
    status_path = f"/v1/users/{uid}/quotas/{client}/status"
    # Settled: the ledger stopped moving across three reports.
    last, stable = -1, 0
    while stable < 3:
        time.sleep(0.6)
        used = api.get(status_path).body["used_bytes"]
        stable = stable + 1 if used == last else 0
        last = used
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/stats", timeout=10) as r:
        counter = json.load(r)["quotas"][f"user:{user}"]["used_bytes"]
    received = moved["received"]
    return {**case, "client": client, "bytes_sent": moved["sent"], "bytes_received": received,
            "ledger_used_bytes": last, "client_counter_bytes": counter, "seconds": round(elapsed, 2),
            "error_bytes": last - received, "error_pct": abs(last - received) / received * 100}


CASES = (
    {"path": "splice", "protocol": "tcp", "both_ways": False},
    {"path": "splice", "protocol": "tcp", "both_ways": True},
    {"path": "copy", "protocol": "tcp", "both_ways": False},
    {"path": "copy", "protocol": "tcp", "both_ways": True},
    {"path": "udp", "protocol": "udp", "both_ways": False},
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-out", required=True, help="result file (JSON)")
    ap.add_argument("--bytes", type=int, default=10**9, help="bytes per case (default 1 GB)")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine state)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="portunus-quota-bench-", dir="/tmp"))
    plane = Plane(root)
    runs = []
    try:
        clients = {"splice": ("edge-splice", plane.client("edge-splice", {})),
                   "copy": ("edge-copy", plane.client("edge-copy", {"PORTUNUS_DISABLE_SPLICE": "1"}))}
        clients["udp"] = clients["splice"]
        for i, case in enumerate(CASES):
            name, mport = clients[case["path"]]
            r = run_case(plane, case, name, mport, i, args.bytes)
            print(f"{case['path']:6s} {case['protocol']} {'both ways' if case['both_ways'] else 'one way  '} "
                  f"received {r['bytes_received']:,d} B, ledger {r['ledger_used_bytes']:,d} B, "
                  f"error {r['error_pct']:.5f}% in {r['seconds']} s", flush=True)
            runs.append(r)
    finally:
        plane.close()
        shutil.rmtree(root, ignore_errors=True)
    out = {"format_version": FORMAT_VERSION, "benchmark": "quota_accounting",
           "command": "python -m benchmarks.quota_accounting " + " ".join(argv or sys.argv[1:]),
           "host": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
           "commit": subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": args.note,
           "max_error_pct": MAX_ERROR_PCT, "runs": runs}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.json_out}")
    return 0 if all(r["error_pct"] < MAX_ERROR_PCT for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
