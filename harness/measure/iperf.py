"""iperf3 client and server processes: one driver, two backends.

Backends produce the same thing, iperf3's JSON report as text, so every run
goes through the same parser (harness.records.iperf_json.parse_iperf_json):

- "cli":    `iperf3 -c ... -J` as a child process.
- "python": the PyPI `iperf3` wrapper over libiperf, run in a child process
            (`python -m harness.measure.iperf_child`) because the wrapper runs the
            test in-process and blocks: a hang or crash there must not take
            the harness down, and a child can be killed on timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.define.experiment import IPERF_BACKENDS
from harness.errors import IperfError
from harness.site import procs
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL, LocalExecutor
from harness.site.netutil import LOOPBACK

BACKENDS = IPERF_BACKENDS
PROTOCOLS = ("tcp", "udp")

IPERF3 = "iperf3"
# Beyond omit+seconds, time allowed for connect, parameter exchange and the
# end-of-test report; past it the client is killed and the run fails.
CLIENT_TIMEOUT_MARGIN_S = 20.0
# An iperf3 server normally listens within a few ms; 10 s covers a loaded host.
SERVER_START_TIMEOUT_S = 10.0
# iperf3 waits this long for the TCP connect (ms); a dead path fails fast.
CONNECT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class IperfParams:
    """One iperf3 client run. seconds/omit_seconds are integers: iperf3 3.12 parses -t/-O with atoi."""

    host: str
    port: int
    seconds: int
    omit_seconds: int = 0
    protocol: str = "tcp"
    offered_mbps: float | None = None  # None = unpaced (TCP), iperf3's -b otherwise
    streams: int = 1
    length_bytes: int | None = None  # iperf3 -l: read/write size (UDP: datagram payload); None = iperf3's
    window_bytes: int | None = None  # iperf3 -w: socket buffer on both ends; None = the kernel's default

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.seconds < 1 or self.omit_seconds < 0 or self.streams < 1:
            raise ValueError("need seconds >= 1, omit_seconds >= 0, streams >= 1")

    @property
    def offered_bps(self) -> int | None:
        return None if self.offered_mbps is None else int(round(self.offered_mbps * 1e6))

    @property
    def timeout_s(self) -> float:
        return self.seconds + self.omit_seconds + CLIENT_TIMEOUT_MARGIN_S

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cli_argv(params: IperfParams) -> list[str]:
    """The `iperf3 -c ... -J` command line for params."""
    argv = [IPERF3, "-c", params.host, "-p", str(params.port), "-t", str(params.seconds),
            "-O", str(params.omit_seconds), "-P", str(params.streams), "-J",
            "--connect-timeout", str(CONNECT_TIMEOUT_MS)]
    if params.protocol == "udp":
        argv.append("-u")
    if params.offered_bps is not None:
        argv += ["-b", str(params.offered_bps)]
    if params.length_bytes is not None:
        argv += ["-l", str(params.length_bytes)]
    if params.window_bytes is not None:
        argv += ["-w", str(params.window_bytes)]
    return argv


def python_argv(params: IperfParams, out_path: Path, python: str = sys.executable) -> list[str]:
    """The child-process command line for the PyPI wrapper backend."""
    return [python, "-m", "harness.measure.iperf_child", json.dumps(params.to_dict()), str(out_path)]


def run_client(params: IperfParams, backend: str, ex: Executor = LOCAL) -> str:
    """Run one iperf3 client with the given backend on executor ex; returns its JSON report as text.

    Raises IperfError on timeout, a crash, or no output. An error *report*
    (valid JSON with "error") is returned as is; parse_iperf_json raises on it.
    The python backend runs on this machine only (the child writes its report to a local file).
    """
    if backend == "cli":
        return _run_child(cli_argv(params), params.timeout_s, out_path=None, ex=ex)
    if backend == "python":
        if not isinstance(ex, LocalExecutor):
            raise IperfError(f"the python iperf3 backend runs on this machine only, not on {ex.name}: "
                             "use backend: cli")
        with tempfile.TemporaryDirectory(prefix="portunus-iperf-") as tmp:
            out = Path(tmp) / "report.json"
            return _run_child(python_argv(params, out, ex.python), params.timeout_s, out_path=out, ex=ex)
    raise ValueError(f"unknown iperf3 backend {backend!r} (known: {', '.join(BACKENDS)})")


def _run_child(argv: list[str], timeout_s: float, out_path: Path | None, ex: Executor = LOCAL) -> str:
    proc = ex.spawn(argv, capture=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise IperfError(f"iperf3 client ({argv[0]}) did not finish within {timeout_s:.0f} s; killed") from None
    finally:
        procs.stop(proc)  # no-op when it already exited; also reaps on KeyboardInterrupt
    text = out_path.read_text() if out_path is not None and out_path.exists() else stdout.decode(errors="replace")
    if not text.strip():
        err = stderr.decode(errors="replace").strip()
        raise IperfError(f"iperf3 client exited {proc.returncode} with no report: {err[-500:]}")
    return text


@contextmanager
def open_iperf_server(port: int, log_path: Path | None = None, host: str = LOOPBACK,
                      ex: Executor = LOCAL) -> Iterator[Any]:
    """A one-off `iperf3 -s -1` on host:port (on executor ex), listening when entered, stopped on exit."""
    proc = ex.spawn([IPERF3, "-s", "-1", "-B", host, "-p", str(port)], log_path=log_path)
    try:
        try:
            ex.wait_listening(port, proc, SERVER_START_TIMEOUT_S)
        except TimeoutError as e:
            detail = ex.read_text(log_path)[-500:] if log_path else ""
            raise IperfError(f"iperf3 server on {host}:{port} did not start: {e}. {detail}") from None
        yield proc
    finally:
        procs.stop(proc)

