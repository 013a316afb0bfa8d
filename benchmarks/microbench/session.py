"""Microbenchmark session plumbing: settings, the far end and the forwarders as processes, CPU
pinning, and the result file (fixtures in conftest.py).

Environment (benchmark launcher only; nothing in `portunus/` reads these):
  PORTUNUS_BENCH_OUT=FILE        full run (BENCH_ROUNDS rounds + warm-up), results written to FILE
                                 (without it: a smoke run, one short round each, nothing written)
  PORTUNUS_BENCH_ROUNDS=N        override the number of measured rounds (timing and cost benchmarks)
  PORTUNUS_BENCH_FORWARDER=NAME  `standalone` (default), `small-buffer-copy` or `slow-accept`
                                 (benchmarks/microbench/slow_forwarder.py: the gate's proofs of detection)
  PORTUNUS_BENCH_CPU=N|none      the CPU all benchmark processes share (default: the last one allowed)
  PORTUNUS_DISABLE_SPLICE=1      passed on to the "splice" forwarder, which then copies: the A/B proof
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.records.bench_file import BenchFile, BenchResult, dump_bench_file
from tests.support.net import free_port
from tests.support.proc import Standalone

REPO_ROOT = Path(__file__).resolve().parents[2]

# 12 measured rounds: enough for a stable median and interquartile range of
# the ratio, and ~1 minute for all benchmarks at ~0.2 s per proxied sample.
BENCH_ROUNDS = 12
# One discarded round: first connections, thread start-up, TCP buffer autotuning.
BENCH_WARMUP_ROUNDS = 1
# Cost benchmarks (test_forwarder_cost): measured rounds of all four workloads, a few
# seconds each; 8 keeps the gate's share ~30 s and the rank test well above 5 rounds.
COST_ROUNDS = 8
# Smoke run (plain `pytest`): prove the benchmark code works, in seconds.
SMOKE_OPS_DIVISOR = 20

FORWARDERS = {
    "standalone": None,  # the real portunus-standalone console script
    # benchmarks/microbench/slow_forwarder.py: the gate's proofs of detection
    "small-buffer-copy": [sys.executable, "-m", "benchmarks.microbench.slow_forwarder", "small-buffer-copy"],
    "slow-accept": [sys.executable, "-m", "benchmarks.microbench.slow_forwarder", "slow-accept"],
}


@dataclass(frozen=True)
class BenchSettings:
    out: Path | None
    rounds: int
    warmup_rounds: int
    forwarder: str
    cpu: int | None  # None: not pinned
    cost_rounds: int = 1  # measured rounds of the cost benchmarks

    @property
    def smoke(self) -> bool:
        return self.out is None

    def ops(self, full_ops: int) -> int:
        """Operations per sample: the benchmark's own count, or a fraction of it in a smoke run."""
        return full_ops if not self.smoke else max(1, full_ops // SMOKE_OPS_DIVISOR)


def settings_from_env() -> BenchSettings:
    out = os.environ.get("PORTUNUS_BENCH_OUT") or None
    forwarder = os.environ.get("PORTUNUS_BENCH_FORWARDER", "standalone")
    if forwarder not in FORWARDERS:
        raise pytest.UsageError(f"PORTUNUS_BENCH_FORWARDER={forwarder!r}: expected one of {sorted(FORWARDERS)}")
    rounds_env = os.environ.get("PORTUNUS_BENCH_ROUNDS")
    rounds = int(rounds_env or (BENCH_ROUNDS if out else 1))
    cost_rounds = int(rounds_env or (COST_ROUNDS if out else 1))
    cpu_env = os.environ.get("PORTUNUS_BENCH_CPU", "")
    cpu = None if cpu_env == "none" else int(cpu_env) if cpu_env else max(os.sched_getaffinity(0))
    return BenchSettings(out=Path(out) if out else None, rounds=rounds,
                         warmup_rounds=BENCH_WARMUP_ROUNDS if out else 0, forwarder=forwarder, cpu=cpu,
                         cost_rounds=cost_rounds)


@contextlib.contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Run this process, and every child started meanwhile, on one CPU.

    Why one shared CPU: an operation's time is then the CPU work of the path
    (syscalls, copies, context switches) and not cross-CPU wake-up latency,
    which on this VM is bimodal (an idle vCPU takes tens of microseconds to
    wake): unpinned, direct UDP round trips were 17 us in one run and 57 us
    in the next, and the proxy/direct ratio moved by 90% between runs. Pinned,
    it moved by under 5%, and a load on that CPU slows the direct and the
    proxied sample of a round alike, which the ratio cancels.
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Dataplane:
    """Ports of the running processes: the echo end and one forwarder per TCP path."""

    echo_tcp: int
    echo_udp: int
    proxy_tcp: dict[str, int]  # path ("splice" / "copy") -> listening port
    proxy_udp: int
    splice_state: dict[str, str]  # path -> "on" / "off", as the forwarder logged it
    echo_sink: int = 0  # the sink (reads to EOF, answers the byte count)
    proxy_sink: dict[str, int] = field(default_factory=dict)  # path -> listening port forwarding to the sink
    forwarder_pid: dict[str, int] = field(default_factory=dict)  # path -> the forwarder's pid (its CPU is charged)


def start_echo() -> tuple[subprocess.Popen, int, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.microbench.echo_server"], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(r"ready tcp=(\d+) udp=(\d+) sink=(\d+)\s*", line)
    if not m:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, int(m.group(1)), int(m.group(2)), int(m.group(3))


def forwarder_toml(tcp_port: int, udp_port: int | None, echo_tcp: int, echo_udp: int,
                   sink_port: int | None = None, echo_sink: int | None = None) -> str:
    toml = ("[global]\nshutdown_drain_secs = 0\n\n"
            f'[[rule]]\nname = "bench-tcp"\nlisten_addr = "127.0.0.1"\nlisten_port = {tcp_port}\n'
            f'target = "127.0.0.1:{echo_tcp}"\n')
    if udp_port is not None:
        toml += (f'\n[[rule]]\nname = "bench-udp"\nprotocol = "udp"\nlisten_addr = "127.0.0.1"\n'
                 f'listen_port = {udp_port}\ntarget = "127.0.0.1:{echo_udp}"\n')
    if sink_port is not None:
        toml += (f'\n[[rule]]\nname = "bench-sink"\nlisten_addr = "127.0.0.1"\nlisten_port = {sink_port}\n'
                 f'target = "127.0.0.1:{echo_sink}"\n')
    return toml


def start_dataplane(tmp: Path, program: list[str] | None) -> Iterator[Dataplane]:
    echo, echo_tcp, echo_udp, echo_sink = start_echo()
    started: list[Standalone] = []
    try:
        ports = {"splice": free_port(), "copy": free_port()}
        sinks = {"splice": free_port(), "copy": free_port()}
        proxy_udp = free_port(socket.SOCK_DGRAM)
        env = {"splice": {}, "copy": {"PORTUNUS_DISABLE_SPLICE": "1"}}
        state, pids = {}, {}
        for path, port in ports.items():
            fwd = Standalone(tmp, forwarder_toml(port, proxy_udp if path == "splice" else None, echo_tcp, echo_udp,
                                                 sinks[path], echo_sink),
                             env={**env[path], "PYTHONPATH": str(REPO_ROOT)}, name=f"{path}.toml",
                             program=program)
            started.append(fwd)
            fwd.wait_ready()
            m = re.search(r"\(splice (on|off)\)", fwd.log())
            state[path] = m.group(1) if m else "unknown"
            pids[path] = fwd.proc.pid
        yield Dataplane(echo_tcp, echo_udp, ports, proxy_udp, state, echo_sink, sinks, pids)
    finally:
        for fwd in started:
            fwd.stop()
        echo.terminate()
        echo.wait(timeout=10)


def loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


@dataclass
class Recorder:
    """Collects each benchmark's result; write_results stores them once, at the end."""

    settings: BenchSettings
    results: list[BenchResult] = field(default_factory=list)

    def add(self, result: BenchResult) -> None:
        self.results.append(result)


def write_results(rec: Recorder, dataplane: Dataplane, load_start: str | None) -> None:
    """The session's BenchFile, written whole (temp file + rename) to settings.out."""
    from harness.measure.sysinfo import collect_sysinfo

    bench_settings = rec.settings
    assert bench_settings.out is not None
    settings = {
        "forwarder": bench_settings.forwarder,
        "rounds": bench_settings.rounds,
        "cost_rounds": bench_settings.cost_rounds,
        "warmup_rounds": bench_settings.warmup_rounds,
        "cpu": bench_settings.cpu,
        "PORTUNUS_DISABLE_SPLICE": os.environ.get("PORTUNUS_DISABLE_SPLICE", ""),
        "forwarder_splice": dict(dataplane.splice_state),
    }
    bf = BenchFile(created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), sysinfo=collect_sysinfo(),
                   settings=settings, benchmarks=tuple(rec.results),
                   host_load={"loadavg_start": load_start, "loadavg_end": loadavg()})
    bench_settings.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = bench_settings.out.with_name(bench_settings.out.name + ".tmp")
    tmp.write_text(json.dumps(dump_bench_file(bf), indent=1) + "\n")
    tmp.replace(bench_settings.out)  # whole file or none: the gate never reads half a run
