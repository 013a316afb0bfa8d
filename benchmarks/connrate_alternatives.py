"""Connection rate and CPU per connection: portunus next to the peers and to the design alternatives.

    python -m benchmarks.connrate_alternatives --rounds 5 --seconds 5 \\
        --json-out results/connrate-alternatives/<run>.json \\
        [--portunus before=/path/to/old/venv] [--uvloop-python /path/with/uvloop/bin/python]

Each round starts every forwarder in a shuffled order, one at a time, in front of
the harness's epoll echo server, and drives it with the harness's connrate probe
(`harness.measure.probe_child connrate`: 2 processes x 16 connections, each one
connect, 32-byte echo, close). The forwarder process tree's CPU (user and system
ticks from /proc) over the window, divided by the connections it served, is the
cost per connection; the rate is the probe's completed connections per second.

Kinds:
  haproxy, nginx     the packaged peers (the harness's own configs)
  portunus           portunus-standalone of this checkout (workers = 1)
  portunus_w2        the same with workers = 2
  NAME=VENV          (--portunus) portunus-standalone from another checkout's venv, e.g. the
                     threaded data plane before the event loop, for a before/after table
  min_epoll          benchmarks/alternatives/min_epoll.py: the least a CPython epoll loop
                     does per connection (the floor of any pure-Python design)
  asyncio, uvloop    benchmarks/alternatives/asyncio_protocols.py on the stock loop and on
                     uvloop (only with --uvloop-python)

On a 2-core host the probe, the echo server and the forwarder share the cores:
read the numbers as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.measure.probe import open_echo_server
from harness.paths.haproxy import render_haproxy_cfg
from harness.paths.nginx import render_nginx_conf
from harness.site import procs
from harness.site.netutil import free_port, wait_listening

FORMAT_VERSION = 1
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of pid and its descendants, from /proc."""
    user = system = 0
    for p in [pid, *procs.descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def start(kind: str, listen_port: int, target_port: int, work: Path, venvs: dict[str, Path],
          uvloop_python: str | None) -> Any:
    log = work / f"{kind}-{listen_port}.log"
    if kind == "haproxy":
        cfg = work / f"haproxy-{listen_port}.cfg"
        cfg.write_text(render_haproxy_cfg(listen_port, target_port))
        return procs.spawn(["haproxy", "-db", "-f", str(cfg)], log_path=log)
    if kind == "nginx":
        wd = work / f"nginx-{listen_port}"
        wd.mkdir()
        (wd / "nginx.conf").write_text(render_nginx_conf(wd, listen_port, target_port))
        return procs.spawn(["nginx", "-c", str(wd / "nginx.conf"), "-p", str(wd)], log_path=log)
    if kind == "min_epoll":
        return procs.spawn([sys.executable, str(HERE / "alternatives" / "min_epoll.py"),
                            str(listen_port), str(target_port)], log_path=log)
    if kind in ("asyncio", "uvloop"):
        python = uvloop_python if kind == "uvloop" else sys.executable
        assert python is not None
        return procs.spawn([python, str(HERE / "alternatives" / "asyncio_protocols.py"),
                            str(listen_port), str(target_port), *(["uv"] if kind == "uvloop" else [])],
                           log_path=log)
    workers = 2 if kind == "portunus_w2" else 1
    exe = (venvs[kind] / "bin" / "portunus-standalone") if kind in venvs else Path(sys.executable).parent / "portunus-standalone"
    toml = work / f"{kind}-{listen_port}.toml"
    toml.write_text('[global]\nlog_level = "warning"\n' + (f"workers = {workers}\n" if workers > 1 else "")
                    + f'[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {listen_port}\n'
                    f'target = "127.0.0.1:{target_port}"\n')
    return procs.spawn([str(exe), "--config", str(toml)], log_path=log)


def measure(kind: str, seconds: float, work: Path, venvs: dict[str, Path], uvloop_python: str | None) -> dict[str, Any]:
    target_port, listen_port = free_port(), free_port()
    with open_echo_server(target_port, work / f"echo-{target_port}.log"):
        proc = start(kind, listen_port, target_port, work, venvs, uvloop_python)
        try:
            wait_listening(listen_port, 20, alive=lambda: proc.poll() is None)
            time.sleep(0.3)  # workers of multi-process forwarders finish starting
            u0, s0 = tree_ticks(proc.pid)
            params = {"host": "127.0.0.1", "port": listen_port, "processes": 2, "concurrency": 16,
                      "seconds": seconds, "omit_seconds": 1}
            out = subprocess.run([sys.executable, "-m", "harness.measure.probe_child", "connrate", json.dumps(params)],
                                 capture_output=True, text=True, cwd=REPO, check=True).stdout
            u1, s1 = tree_ticks(proc.pid)
            alive = proc.poll() is None
        finally:
            procs.stop(proc)
    probe = json.loads(out)
    in_window = sum(sum(w["ok_bins"][1:]) for w in probe["workers"])
    served = sum(sum(w["ok_bins"]) for w in probe["workers"])  # the CPU window covers the omitted second too
    errors = sum(sum(w["error_bins"]) for w in probe["workers"])
    user_s, sys_s = (u1 - u0) / CLK_TCK, (s1 - s0) / CLK_TCK
    return {"kind": kind, "connections_per_s": in_window / seconds, "connections": served, "errors": errors,
            "cpu_user_us_per_conn": user_s / served * 1e6 if served else None,
            "cpu_sys_us_per_conn": sys_s / served * 1e6 if served else None,
            "cpu_us_per_conn": (user_s + sys_s) / served * 1e6 if served else None,
            "alive_after": alive}


def summarise(samples: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ref = "haproxy" if "haproxy" in kinds else kinds[0]
    med: dict[str, dict[str, float]] = {}
    for k in kinds:
        rows = [s for s in samples if s["kind"] == k and s["cpu_us_per_conn"] is not None]
        med[k] = {f: statistics.median(r[f] for r in rows) for f in
                  ("connections_per_s", "cpu_us_per_conn", "cpu_user_us_per_conn", "cpu_sys_us_per_conn")} if rows else {}
    for k, m in med.items():
        if not m or not med[ref]:
            continue
        out[k] = {**{f"median_{f}": round(v, 1) for f, v in m.items()},
                  "rate_vs_" + ref: round(m["connections_per_s"] / med[ref]["connections_per_s"], 3),
                  "cpu_vs_" + ref: round(m["cpu_us_per_conn"] / med[ref]["cpu_us_per_conn"], 3),
                  "errors": sum(s["errors"] for s in samples if s["kind"] == k)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="probe window per sample (plus 1 s omitted)")
    ap.add_argument("--kinds", default="haproxy,nginx,portunus,portunus_w2,min_epoll,asyncio",
                    help="comma-separated (default: %(default)s); uvloop and --portunus names are added")
    ap.add_argument("--portunus", action="append", default=[], metavar="NAME=VENV",
                    help="another portunus build: its venv directory (repeatable)")
    ap.add_argument("--uvloop-python", help="a python that can import uvloop (adds the uvloop kind)")
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args(argv)
    kinds = [k for k in a.kinds.split(",") if k]
    venvs: dict[str, Path] = {}
    for spec in a.portunus:
        name, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "bin" / "portunus-standalone").exists():
            ap.error(f"--portunus {spec!r}: want NAME=VENV where VENV/bin/portunus-standalone exists")
        venvs[name] = Path(path)
        kinds.append(name)
    if a.uvloop_python:
        kinds.append("uvloop")
    known = {"haproxy", "nginx", "portunus", "portunus_w2", "min_epoll", "asyncio", "uvloop", *venvs}
    bad = [k for k in kinds if k not in known]
    if bad:
        ap.error(f"unknown kind(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="connrate-alt-") as tmp:
        try:
            for r in range(a.rounds):
                order = kinds[:]
                random.shuffle(order)
                for kind in order:
                    s = measure(kind, a.seconds, Path(tmp), venvs, a.uvloop_python)
                    s["round"] = r
                    samples.append(s)
                    print(f"round {r + 1}/{a.rounds} {kind:14s} {s['connections_per_s']:8.0f} conn/s "
                          f"{s['cpu_us_per_conn'] or 0:7.1f} us/conn (user {s['cpu_user_us_per_conn'] or 0:5.1f} "
                          f"sys {s['cpu_sys_us_per_conn'] or 0:5.1f}) errors={s['errors']}"
                          + ("" if s["alive_after"] else " DIED"), flush=True)
        except KeyboardInterrupt:
            print("interrupted: keeping the samples measured so far", file=sys.stderr)
        finally:
            procs.stop_all()
    summary = summarise(samples, kinds)
    for k, m in summary.items():
        ratios = " ".join(f"{f}={v}" for f, v in m.items() if "_vs_" in f)
        print(f"{k:14s} median {m['median_connections_per_s']:8.0f} conn/s {m['median_cpu_us_per_conn']:6.1f} us/conn  {ratios}",
              flush=True)
    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format_version": FORMAT_VERSION, "benchmark": "connrate_alternatives",
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
               "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                        "loadavg_at_end": os.getloadavg()},
               "params": {"rounds": a.rounds, "seconds": a.seconds, "probe": "2 processes x 16 connections, 32 B echo"},
               "kinds": kinds, "summary": summary, "samples": samples}
        a.json_out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
