"""Latency and connection-rate measurements: the client child and its target, as processes.

iperf3 measures bulk throughput only. These two measure what a user of a
request/response protocol sees through a forwarder, with a client of our own
(harness.measure.probe_child, a separate process) against a small epoll echo server
(harness.measure.echo_server, a separate process):

- latency: connection setup time (connect() to the first byte of the reply)
  and 1-byte request/response RTT, thousands of samples each; the report
  takes p50/p90/p99 and the `direct` path's figures as the floor.
- connrate: completed short request/response connections per second with
  many in flight (several client processes), and the errors; the `direct`
  path's rate is the ceiling the client and server reach on this host.

The child's report is parsed by harness.records.probe_json (pure); the raw
JSON goes into the record verbatim (`probe_raw`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.define.experiment import ProbeSettings
from harness.errors import ProbeError
from harness.site import procs
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK

# Time given to the echo server to listen (a Python start on a loaded host).
SERVER_START_TIMEOUT_S = 15.0
# Beyond its own time limit, time for the child's start and report before it is killed.
CHILD_TIMEOUT_MARGIN_S = 30.0
PROBE_KINDS = ("latency", "connrate")


def latency_params(host: str, port: int, s: ProbeSettings, time_limit_s: float) -> dict[str, Any]:
    return {"host": host, "port": port, "setup_connections": s.setup_connections,
            "rtt_connections": s.rtt_connections, "rtt_per_connection": s.rtt_per_connection,
            "warmup": s.warmup, "time_limit_s": time_limit_s}


def connrate_params(host: str, port: int, s: ProbeSettings, seconds: int, omit_seconds: int) -> dict[str, Any]:
    return {"host": host, "port": port, "processes": s.processes, "concurrency": s.concurrency,
            "seconds": seconds, "omit_seconds": omit_seconds}


def probe_argv(kind: str, params: dict[str, Any], python: str = sys.executable) -> list[str]:
    return [python, "-m", "harness.measure.probe_child", kind, json.dumps(params)]


def run_probe(kind: str, params: dict[str, Any], timeout_s: float, ex: Executor = LOCAL) -> str:
    """Run the probe child on executor ex; returns its JSON report as text. ProbeError on a crash or timeout."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe {kind!r}")
    proc = ex.spawn(probe_argv(kind, params, ex.python), capture=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{kind} probe did not finish within {timeout_s:.0f} s; killed") from None
    finally:
        procs.stop(proc)
    text = stdout.decode(errors="replace")
    if proc.returncode != 0 or not text.strip():
        raise ProbeError(f"{kind} probe exited {proc.returncode}: {stderr.decode(errors='replace').strip()[-500:]}")
    return text


@contextmanager
def open_echo_server(port: int, log_path: Path | None = None, workers: int = 1,
                     host: str = LOOPBACK, ex: Executor = LOCAL) -> Iterator[Any]:
    """harness.measure.echo_server on host:port (on executor ex) in its own process (group), listening when entered."""
    proc = ex.spawn([ex.python, "-m", "harness.measure.echo_server", "--host", host, "--port", str(port),
                     "--workers", str(workers)], log_path=log_path)
    try:
        try:
            ex.wait_listening(port, proc, SERVER_START_TIMEOUT_S)
        except TimeoutError as e:
            detail = ex.read_text(log_path)[-500:] if log_path else ""
            raise ProbeError(f"echo server on port {port} did not start: {e}. {detail}") from None
        yield proc
    finally:
        procs.stop(proc)
