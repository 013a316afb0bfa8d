"""What holding many concurrent connections costs: RSS, threads and fds per forwarder process.

    python -m benchmarks.many_connections --json-out results/many-connections/<run>.json

For each (connections, workers) case, a real portunus-standalone (and, for
reference, HAProxy and NGINX stream with their packaged defaults but enough
connection slots) forwards to the harness's epoll echo server; this process
opens that many connections, sends each a few random bytes in echo mode,
checks every echo, and then, with all of them open and idle, reads VmRSS,
Threads and the fd count of each forwarder process from /proc. One worker
process holds at most ~9,990 connections here (two fds each, a hard limit
of 20,000 fds per process), so 10,000 connections take two workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.measure.probe import open_echo_server
from harness.site.netutil import free_port

FORMAT_VERSION = 1
CASES = ((1000, 1), (5000, 1), (10000, 2))
# A single process holds at most ~9,990 connections under the 20,000-fd limit, so
# the peers (one process each, as packaged) are measured up to 5,000.
PEERS_AT = (1000, 5000)


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return pids


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def _wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"forwarder exited with {proc.returncode}")
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _start(kind: str, listen: int, target: int, workers: int, workdir: Path) -> subprocess.Popen:
    if kind == "portunus":
        cfg = workdir / "portunus.toml"
        cfg.write_text(f'[global]\nworkers = {workers}\nlog_level = "warning"\n[[rule]]\nname = "many"\n'
                       f'listen_addr = "127.0.0.1"\nlisten_port = {listen}\ntarget = "127.0.0.1:{target}"\n')
        cmd = [str(Path(sys.executable).parent / "portunus-standalone"), "--config", str(cfg)]
    elif kind == "haproxy":
        cfg = workdir / "haproxy.cfg"
        cfg.write_text("global\n    maxconn 9000\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                       "    timeout client 1h\n    timeout server 1h\n    maxconn 9000\n"
                       f"listen fwd\n    bind 127.0.0.1:{listen}\n    server t 127.0.0.1:{target}\n")
        cmd = ["haproxy", "-db", "-f", str(cfg)]
    elif kind == "nginx":
        cfg = workdir / "nginx.conf"
        cfg.write_text(f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {workdir}/nginx.pid;\n"
                       "error_log stderr error;\nload_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
                       "events { worker_connections 19000; }\n"
                       f"stream {{ server {{ listen 127.0.0.1:{listen}; proxy_pass 127.0.0.1:{target}; }} }}\n")
        cmd = ["nginx", "-c", str(cfg), "-p", str(workdir)]
    else:
        raise ValueError(kind)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / f"{kind}.log", "ab"),  # noqa: SIM115
                            start_new_session=True)
    _wait_listening(listen, proc)
    return proc


def measure(kind: str, connections: int, workers: int) -> dict[str, Any]:
    rng = random.Random(connections)
    with tempfile.TemporaryDirectory(prefix="portunus-many-") as tmp:
        workdir = Path(tmp)
        echo_port, listen = free_port(), free_port()
        with open_echo_server(echo_port, workdir / "echo.log"):
            proc = _start(kind, listen, echo_port, workers, workdir)
            socks: list[socket.socket] = []
            try:
                time.sleep(0.5)
                base = {pid: _status(pid) for pid in _tree(proc.pid)}
                t0 = time.monotonic()
                payloads = []
                for _ in range(connections):
                    s = socket.create_connection(("127.0.0.1", listen), timeout=30)
                    p = rng.randbytes(rng.randint(1, 512))
                    s.sendall(b"E" + p)
                    socks.append(s)
                    payloads.append(p)
                intact = 0
                for s, p in zip(socks, payloads, strict=True):
                    want, got = b"E" + p, b""
                    while len(got) < len(want):
                        chunk = s.recv(len(want) - len(got))
                        if not chunk:
                            break
                        got += chunk
                    intact += got == want
                open_s = time.monotonic() - t0
                held = {pid: _status(pid) for pid in _tree(proc.pid)}
            finally:
                for s in socks:
                    s.close()
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    procs = [{"pid": pid, "rss_kib": st["VmRSS"], "threads": st["Threads"], "fds": st["fds"],
              "rss_kib_before": base.get(pid, {}).get("VmRSS")} for pid, st in held.items()]
    return {"forwarder": kind, "connections": connections, "workers": workers, "intact": intact,
            "open_and_echo_s": round(open_s, 2), "processes": procs,
            "rss_kib_max_per_process": max(p["rss_kib"] for p in procs),
            "rss_kib_total": sum(p["rss_kib"] for p in procs),
            "threads_total": sum(p["threads"] for p in procs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-out", required=True, help="result file (JSON)")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine state)")
    ap.add_argument("--no-peers", action="store_true", help="Portunus only (skip HAProxy and NGINX)")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs = []
    for connections, workers in CASES:
        r = measure("portunus", connections, workers)
        print(f"portunus  {connections:6,d} conns, {workers} worker(s): {r['intact']:,d} intact, "
              f"RSS max {r['rss_kib_max_per_process'] / 1024:.1f} MiB/process, "
              f"{r['rss_kib_total'] / 1024:.1f} MiB total, {r['threads_total']} threads", flush=True)
        runs.append(r)
    if not args.no_peers:
        for kind in ("haproxy", "nginx"):
            for connections in PEERS_AT:
                r = measure(kind, connections, 1)
                print(f"{kind:9s} {connections:6,d} conns: {r['intact']:,d} intact, "
                      f"RSS total {r['rss_kib_total'] / 1024:.1f} MiB, {r['threads_total']} threads", flush=True)
                runs.append(r)
    out = {"format_version": FORMAT_VERSION, "benchmark": "many_connections",
           "command": "python -m benchmarks.many_connections " + " ".join(argv or sys.argv[1:]),
           "host": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
           "commit": subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": args.note, "runs": runs}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.json_out}")
    return 0 if all(r["intact"] == r["connections"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
