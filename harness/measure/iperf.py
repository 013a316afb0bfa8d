"""One iperf3 driver, two backends, one parser.

Backends produce the same thing, iperf3's JSON report as text, so every run
goes through the same `parse_iperf_json`:

- "cli":    `iperf3 -c ... -J` as a child process.
- "python": the PyPI `iperf3` wrapper over libiperf, run in a child process
            (`python -m harness.measure.iperf_child`) because the wrapper runs the
            test in-process and blocks: a hang or crash there must not take
            the harness down, and a child can be killed on timeout.

Throughput definition (the same for every path): `sender_mbps`, iperf3's
sender-side bits per second over the non-omitted interval (`end.sum_sent`),
divided by 1e6. The receiver-side figure (`end.sum_received`) is kept too and
is what cap accuracy uses (bytes actually delivered). iperf3 resets its
counters after the `-O` omit period, so both `end` sums exclude the omitted
seconds; the omitted intervals stay in the raw JSON, flagged `omitted: true`.
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


@dataclass(frozen=True)
class Interval:
    """One iperf3 reporting interval (summed over streams), as the sender saw it."""

    start_s: float
    end_s: float
    bytes: int
    bits_per_second: float
    omitted: bool


@dataclass(frozen=True)
class IperfResult:
    """The parsed iperf3 client report."""

    version: str
    protocol: str
    duration_s: float  # sender-side length of the non-omitted interval
    omit_seconds: int
    sender_bytes: int
    receiver_bytes: int
    sender_mbps: float
    receiver_mbps: float
    retransmits: int | None  # TCP only
    host_cpu_pct: float | None  # iperf3 client's CPU use (% of one core, summed user+system)
    remote_cpu_pct: float | None  # iperf3 server's
    total_bytes: int  # sender bytes of every interval, omitted ones included: what the path carried
    intervals: tuple[Interval, ...]
    lost_pct: float | None = None  # UDP only
    jitter_ms: float | None = None  # UDP only

    @property
    def throughput_mbps(self) -> float:
        """"The" throughput of a run: sender side, non-omitted interval (see module docstring)."""
        return self.sender_mbps


def parse_iperf_json(text: str) -> IperfResult:
    """Parse iperf3's JSON report (client side). Raises IperfError on an error report or bad text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        head = text.strip()[:200]
        raise IperfError(f"iperf3 output is not JSON ({e}): {head!r}") from None
    if not isinstance(doc, dict):
        raise IperfError("iperf3 output is not a JSON object")
    # iperf3 3.12 exits 0 even when it reports an error: the "error" key is the truth.
    if doc.get("error"):
        raise IperfError(f"iperf3: {doc['error']}")
    start = doc.get("start") or {}
    end = doc.get("end") or {}
    test = start.get("test_start") or {}
    protocol = str(test.get("protocol", "TCP")).lower()
    # UDP reports in 3.12 carry sum_sent/sum_received too; older ones only "sum".
    sent = end.get("sum_sent") or end.get("sum")
    received = end.get("sum_received") or end.get("sum")
    if not sent or not received:
        raise IperfError("iperf3 report has no end summary (test did not complete)")
    intervals = tuple(
        Interval(
            start_s=float(i["sum"]["start"]),
            end_s=float(i["sum"]["end"]),
            bytes=int(i["sum"]["bytes"]),
            bits_per_second=float(i["sum"]["bits_per_second"]),
            omitted=bool(i["sum"].get("omitted", False)),
        )
        for i in doc.get("intervals") or []
        if "sum" in i
    )
    cpu = end.get("cpu_utilization_percent") or {}
    is_udp = protocol == "udp"
    return IperfResult(
        version=str(start.get("version", "")),
        protocol=protocol,
        duration_s=float(sent["seconds"]),
        omit_seconds=int(test.get("omit", 0)),
        sender_bytes=int(sent["bytes"]),
        receiver_bytes=int(received["bytes"]),
        sender_mbps=float(sent["bits_per_second"]) / 1e6,
        receiver_mbps=float(received["bits_per_second"]) / 1e6,
        retransmits=int(sent["retransmits"]) if "retransmits" in sent else None,
        host_cpu_pct=_float_or_none(cpu.get("host_total")),
        remote_cpu_pct=_float_or_none(cpu.get("remote_total")),
        total_bytes=sum(i.bytes for i in intervals),
        intervals=intervals,
        lost_pct=_float_or_none(received.get("lost_percent")) if is_udp else None,
        jitter_ms=_float_or_none(received.get("jitter_ms")) if is_udp else None,
    )


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


# ---------------------------------------------------------------- processes


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

