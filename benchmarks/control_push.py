"""Control-plane benchmark: rule push -> listener accepting, and bulk rule apply.

    python -m benchmarks.control_push [--pushes 200] [--rules 1000] [--json-out FILE]

Starts a real portunus-server and portunus-client (data dir under /tmp),
then measures:

1. push latency: POST /v1/rules (waits for the client's Active ack) followed
   by a TCP connect to the new listener; the time from sending the POST to the
   accepted connect, for `--pushes` rules pushed one after another;
2. bulk apply: `--rules` rules stored for the client, then the client is
   restarted; the time from the client process start until the server has
   an Active ack for every rule (and the client's own apply time, from its log);
3. incremental bulk: the same number of rules pushed without waiting
   (?wait=false), until all are acked Active.

Reports n, median, p99, min and max; it is a benchmark, not a test, and on a
shared 2-core host the numbers move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.fleet.plane import BIN, Plane, accepts, free_port_block, stop_process, wait_for

# The server side and the polling helpers are the fleet benchmark's (benchmarks/fleet/plane.py).
CLIENT_START_TIMEOUT_S = 60.0


def summarise_ms(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in samples_s)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) >= 2 else ms[0]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "p99_ms": round(p99, 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.plane = Plane(root)
        self.api = self.plane.api
        self.procs: list[subprocess.Popen] = []
        self.target = socket.socket()
        self.target.bind(("127.0.0.1", 0))
        self.target.listen()
        self.target_addr = f"127.0.0.1:{self.target.getsockname()[1]}"

    def spawn(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")  # noqa: SIM115 (closed when the process is reaped)
        p = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(p)
        return p

    def start(self) -> None:
        self.plane.start()
        uri = self.plane.enrollment_uri("bench")
        self.bundle = self.root / "bundle.json"
        subprocess.run([str(BIN / "portunus-client"), "enroll", uri, "--out", str(self.bundle)],
                       check=True, capture_output=True)
        self.client = self.start_client()

    def start_client(self) -> subprocess.Popen:
        p = self.spawn("portunus-client", "--bundle", str(self.bundle), "--stats-report-interval-secs", "5",
                       log="client.log")
        wait_for(lambda: self._client_view()["status"] == "online", CLIENT_START_TIMEOUT_S, "client online", 0.005)
        return p

    def _client_view(self) -> dict[str, Any]:
        return next(c for c in self.api.get("/v1/clients").body["clients"] if c["name"] == "bench")

    def push_latency(self, ports: list[int]) -> list[float]:
        samples = []
        for i, port in enumerate(ports):
            body = {"client": "bench", "name": f"push-{i}", "listen_addr": "127.0.0.1", "listen_port": port,
                    "target": self.target_addr}
            t0 = time.perf_counter()
            resp = self.api.post("/v1/rules", body)
            if resp.status != 201:
                raise RuntimeError(f"push {i}: {resp.describe_error()}")
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            samples.append(time.perf_counter() - t0)
        return samples

    def delete_all(self) -> None:
        for r in self.api.get("/v1/rules?client=bench").body["rules"]:
            self.api.delete(f"/v1/rules/{r['id']}")

    def bulk_incremental(self, ports: list[int]) -> float:
        t0 = time.perf_counter()
        for i, port in enumerate(ports):
            resp = self.api.post("/v1/rules?wait=false", {"client": "bench", "name": f"bulk-{i}",
                                                         "listen_addr": "127.0.0.1", "listen_port": port,
                                                         "target": self.target_addr})
            if resp.status != 202:
                raise RuntimeError(f"bulk push {i}: {resp.describe_error()}")
        wait_for(lambda: self._client_view()["rules"]["active"] >= len(ports), 600, "all rules active", 0.02)
        return time.perf_counter() - t0

    def resync_after_restart(self, n: int) -> tuple[float, float | None]:
        self.client.send_signal(signal.SIGTERM)
        self.client.wait(30)
        wait_for(lambda: self._client_view()["status"] == "offline", 30, "client offline")
        with open(self.root / "client.log", "ab") as f:
            f.write(b"--- restart for the full-sync measurement ---\n")
        t0 = time.perf_counter()
        self.client = self.spawn("portunus-client", "--bundle", str(self.bundle), log="client.log")
        def synced() -> bool:
            c = self._client_view()
            return c["acked_version"] == c["ruleset_version"] and c["rules"]["active"] >= n
        wait_for(synced, 600, "full sync acked", 0.02)
        wall = time.perf_counter() - t0
        log = (self.root / "client.log").read_text().split("--- restart for the full-sync measurement ---")[-1]
        m = re.search(r"full applied in ([\d.]+) ms: (\d+) rule", log)
        return wall, float(m.group(1)) / 1000 if m else None

    def close(self) -> None:
        for p in reversed(self.procs):
            stop_process(p, 20)
        self.plane.stop()
        self.target.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.control_push", description=__doc__.split("\n")[0])
    ap.add_argument("--pushes", type=int, default=200, help="rules pushed one by one for the latency figures")
    ap.add_argument("--rules", type=int, default=1000, help="rules for the bulk-apply figures")
    ap.add_argument("--json-out", metavar="FILE", help="also write the figures here (JSON)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state.db)")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="portunus-bench-push-", dir="/tmp"))
    bench = Bench(root)
    try:
        bench.start()
        ports = free_port_block(max(args.pushes, args.rules))
        push = summarise_ms(bench.push_latency(ports[:args.pushes]))
        bench.delete_all()
        incremental_s = bench.bulk_incremental(ports[:args.rules])
        sync_wall_s, sync_apply_s = bench.resync_after_restart(args.rules)
        sample = ports[:args.rules:max(1, args.rules // 20)]
        accepting = sum(accepts(p) for p in sample)
        result = {
            "format": 1,
            "host": {"cpus": os.cpu_count(), "note": "shared, noisy host: figures are indicative only"},
            "push_to_accepting": push,
            "bulk_rules": args.rules,
            "bulk_incremental_wall_s": round(incremental_s, 3),
            "bulk_full_sync_wall_s": round(sync_wall_s, 3),
            "bulk_full_sync_client_apply_s": round(sync_apply_s, 4) if sync_apply_s is not None else None,
            "bulk_listeners_checked": f"{accepting}/{len(sample)} accepting",
        }
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"push -> listener accepting (n={push['n']}): median {push['median_ms']} ms, p99 {push['p99_ms']} ms, "
          f"min {push['min_ms']} ms, max {push['max_ms']} ms")
    print(f"{args.rules} rules pushed without waiting, until all acked Active: {result['bulk_incremental_wall_s']} s")
    print(f"{args.rules} rules as one full set after a client restart: {result['bulk_full_sync_wall_s']} s from "
          f"process start to all acked (client apply {result['bulk_full_sync_client_apply_s']} s); "
          f"{result['bulk_listeners_checked']}")
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
