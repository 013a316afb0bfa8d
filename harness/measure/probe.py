"""Latency and connection-rate measurements: settings, the client child, its target, the parsers.

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

`parse_latency_json` / `parse_connrate_json` are pure and keep the raw
samples' meaning in one place; the raw JSON goes into the record verbatim
(`probe_raw`), so every percentile can be recomputed from the result file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.define.experiment import ProbeSettings
from harness.site import procs
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK
from harness.stats import percentile

# Time given to the echo server to listen (a Python start on a loaded host).
SERVER_START_TIMEOUT_S = 15.0
# Beyond its own time limit, time for the child's start and report before it is killed.
CHILD_TIMEOUT_MARGIN_S = 30.0
PROBE_KINDS = ("latency", "connrate")


class ProbeError(Exception):
    """The probe client failed, timed out, or printed no usable report."""


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Percentiles:
    """n, p50, p90, p99 (and min/max) of one series of samples, in microseconds."""

    n: int
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    min_us: float | None
    max_us: float | None

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Percentiles:
        v = sorted(x / 1e3 for x in samples_ns)
        return cls(len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99),
                   v[0] if v else None, v[-1] if v else None)


@dataclass(frozen=True)
class LatencyResult:
    setup: Percentiles  # connect() -> first byte of the reply
    rtt: Percentiles  # 1-byte request -> 1-byte reply on an open connection
    errors: dict[str, int]
    error_examples: tuple[str, ...]
    truncated: bool  # stopped at its time limit before taking every sample
    elapsed_s: float

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def _load(text: str, probe: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{probe} probe output is not JSON ({e}): {text.strip()[:200]!r}") from None
    if not isinstance(doc, dict) or doc.get("probe") != probe:
        raise ProbeError(f"not a {probe} probe report: {text.strip()[:200]!r}")
    return doc


def parse_latency_json(text: str) -> LatencyResult:
    """The latency probe's report -> percentiles. ProbeError if it has no sample at all."""
    doc = _load(text, "latency")
    setup, rtt = doc.get("setup_ns") or [], doc.get("rtt_ns") or []
    errors = {str(k): int(v) for k, v in (doc.get("errors") or {}).items()}
    if not setup and not rtt:
        examples = "; ".join(doc.get("error_examples") or []) or "no error recorded"
        raise ProbeError(f"latency probe took no sample ({examples})")
    return LatencyResult(Percentiles.of_ns(setup), Percentiles.of_ns(rtt), errors,
                         tuple(doc.get("error_examples") or ()), bool(doc.get("truncated")),
                         float(doc.get("elapsed_s", 0.0)))


@dataclass(frozen=True)
class ConnrateResult:
    conn_per_s: float  # completed connections per second over the measured window, all processes
    conns_ok: int  # completed in the measured window
    conn_errors: int  # failed in the measured window
    errors: dict[str, int]  # by kind, measured window
    error_examples: tuple[str, ...]
    seconds: float  # measured window
    per_second: tuple[int, ...]  # completions per 1-s bin over the whole run (warm-up included)
    failed_workers: tuple[str, ...] = field(default=())


def parse_connrate_json(text: str) -> ConnrateResult:
    """The connrate probe's report -> rate over the measured window (warm-up bins left out)."""
    doc = _load(text, "connrate")
    p = doc["params"]
    bin_s = float(doc.get("bin_s", 1.0))
    skip = int(round(float(p["omit_seconds"]) / bin_s))
    seconds = float(p["seconds"])
    workers = doc.get("workers") or []
    failed = tuple(str(w["failed"]) for w in workers if "failed" in w)
    good = [w for w in workers if "failed" not in w]
    if not good:
        raise ProbeError(f"every connrate worker failed: {'; '.join(failed) or 'no worker report'}")
    n_bins = max(len(w["ok_bins"]) for w in good)
    per_second = tuple(sum(w["ok_bins"][i] for w in good if i < len(w["ok_bins"])) for i in range(n_bins))
    ok = sum(per_second[skip:])
    err = sum(sum(w["error_bins"][skip:]) for w in good)
    kinds: dict[str, int] = {}
    examples: list[str] = []
    for w in good:
        for k, v in (w.get("errors") or {}).items():
            kinds[k] = kinds.get(k, 0) + int(v)
        examples += w.get("error_examples") or []
    return ConnrateResult(ok / seconds, ok, err, kinds, tuple(examples[:5]), seconds, per_second, failed)


# ---------------------------------------------------------------- processes


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
