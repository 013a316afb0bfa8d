"""Data-plane microbenchmarks: the gate's stable loopback signal (the spec's Criterion layer).

Timing: each benchmark runs one operation through a real `portunus-standalone`
on loopback and, interleaved with it, the same operation directly against the
same echo end (the "direct twin"); the gate (harness/gate/) compares the
per-round ratio proxy / direct, not absolute times. Three processes: this
one measures, the forwarder forwards, the echo end answers, so the client
and the forwarder never share a GIL.

Cost (`test_forwarder_cost`): fixed amounts of work through the forwarders
(bulk TCP on the splice and on the copy path, short connections, datagrams),
in interleaved rounds; per round the forwarder process tree's CPU time over
the work (harness.site.procs.tree_cpu_seconds, nanosecond resolution) and
this client's CPU time over the same interval. Every process's CPU time per
operation grows when the host is busy (caches, frequency, the hypervisor):
on the shared 2-vCPU dev host at load 8-50 the forwarder's CPU per GB moved
by 40-60% between rounds while its ratio to the client's CPU for the same
work moved by 4-14%. So the gate compares that ratio, paired within each
round as proxy/direct is for time; the absolute cost (s/GB, us per
connection, us per datagram) is kept with every round and printed.

Why pytest-benchmark and not pyperf: pytest-benchmark's pedantic mode takes
a fixed number of rounds with setup/teardown hooks around each timed round,
which is exactly what the twin needs: the direct sample runs in the hook
right before (even rounds) or right after (odd rounds) the proxied one, an
ABBA order that cancels drift and order effects. The run length is fixed
(no calibration), so a baseline and a later run have identical parameters
and `make gate` stays near a minute, and it runs under pytest like the rest
of `make test` (a plain `pytest` runs each benchmark once, as a smoke
test). pyperf is built for isolating CPU-bound functions in many calibrated
worker processes (20 by default): our isolation is already a process
boundary, its calibration would make parameters differ between runs, and
its workers own the process model the twin interleaving needs. Neither tool
compares ratios, so the statistics live in harness/summarise/bench.py.

Run: `make bench` (prints a summary), `make gate`, `make baseline`; see
benchmarks/microbench/session.py for the environment knobs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmarks.microbench import clients
from benchmarks.microbench.session import Dataplane, Recorder
from harness.records.bench_file import BenchResult, CostRound, Round
from harness.site.procs import tree_cpu_seconds

# Operations per sample, chosen so one proxied sample takes ~0.2 s on the
# 2-vCPU dev host (long enough that timer and scheduler granularity vanish,
# short enough that 13 rounds x 2 sides x 7 benchmarks fit in ~1 minute).
ECHO_64K_OPS = 2000
ECHO_1M_OPS = 250
RTT_OPS = 4000
CONNECT_OPS = 300
UDP_OPS = 2000
UDP_PAYLOAD_BYTES = 64  # a small datagram: per-packet cost, not copying

# Cost benchmarks: work per round, sized so the forwarder spends ~0.1-0.3 s of
# CPU on each (its CPU-time clock resolves nanoseconds: the amount is about
# host noise, not timer resolution) and a round of all four takes a few seconds.
COST_BULK_SPLICE_BYTES = 500_000_000  # ~0.2 s/GB on the splice path
COST_BULK_COPY_BYTES = 250_000_000  # ~0.45 s/GB on the copy path
COST_CONNECTIONS = 1000  # ~250 us each
COST_UDP_ROUND_TRIPS = 10_000  # two forwarded datagrams each, ~7 us per datagram
COST_UDP_WINDOW = 16  # datagrams in flight: the forwarder sees bursts (its batched receive path)
BULK_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    kind: str  # throughput | latency | rate (harness.records.bench_file.BENCH_KINDS)
    ops: int
    params: dict[str, Any] = field(default_factory=dict)


def run_paired(benchmark: Any, recorder: Recorder, spec: Spec,
               direct: Callable[[int], float], proxy: Callable[[int], float]) -> BenchResult:
    """Measure `proxy` with pytest-benchmark and `direct` in the round's setup or teardown
    (alternating), record both, and return the result (also on failure, with the error)."""
    s = recorder.settings
    ops = s.ops(spec.ops)
    rounds: list[Round] = []
    current: dict[str, float] = {}

    def setup() -> None:
        current.clear()
        if len(rounds) % 2 == 0:
            current["direct"] = direct(ops)

    def target() -> None:
        current["proxy"] = proxy(ops)

    def teardown() -> None:
        if "direct" not in current:
            current["direct"] = direct(ops)
        rounds.append(Round(current["direct"], current["proxy"], ops, warmup=len(rounds) < s.warmup_rounds))

    params = {**spec.params, "ops_per_round": ops}
    benchmark.group = spec.name
    benchmark.extra_info.update(params)
    error = None
    try:
        if benchmark.disabled:  # --benchmark-disable: no hooks are called; one plain round
            setup()
            target()
            teardown()
        else:
            benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=s.rounds,
                               warmup_rounds=s.warmup_rounds)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        result = BenchResult(spec.name, spec.description, spec.kind, params, tuple(rounds), error)
        recorder.add(result)
    ratios = result.ratios()
    if ratios:
        benchmark.extra_info["ratio_median"] = sorted(ratios)[len(ratios) // 2]
    return result


def check_measured(result: BenchResult, benchmark: Any, recorder: Recorder) -> None:
    """Every planned round happened and every time is a real positive duration."""
    s = recorder.settings
    assert len(result.rounds) == (1 if benchmark.disabled else s.rounds + s.warmup_rounds), result
    assert all(r.direct_s > 0 and r.proxy_s > 0 for r in result.rounds)


def test_forwarders_run_the_intended_paths(dataplane: Dataplane) -> None:
    """The copy forwarder copies; the default one (and slow-accept) splices unless the caller disabled it."""
    from portunus.dataplane import SPLICE_AVAILABLE

    assert dataplane.splice_state["copy"] == "off"
    env_off = os.environ.get("PORTUNUS_DISABLE_SPLICE", "") not in ("", "0")
    variant = os.environ.get("PORTUNUS_BENCH_FORWARDER", "standalone")
    copies = variant == "small-buffer-copy"  # slow-accept keeps the splice path (slow_forwarder.py)
    expected = "on" if SPLICE_AVAILABLE and not env_off and not copies else "off"
    assert dataplane.splice_state["splice"] == expected


@pytest.mark.parametrize("path", ["splice", "copy"])
@pytest.mark.parametrize(("label", "size", "full_ops"), [
    pytest.param("64k", 64 * 1024, ECHO_64K_OPS, id="64k"),
    pytest.param("1m", 1 << 20, ECHO_1M_OPS, id="1m"),
])
def test_tcp_echo(benchmark: Any, recorder: Recorder, dataplane: Dataplane, path: str, label: str,
                  size: int, full_ops: int) -> None:
    """Throughput: echo `size` bytes on one connection, both directions at once."""
    payload = os.urandom(size)
    spec = Spec(f"tcp_echo_{label}.{path}", f"{label} echo on one TCP connection, {path} path", "throughput",
                full_ops, {"payload_bytes": size, "path": path})
    with clients.open_stream(dataplane.echo_tcp) as d, clients.open_stream(dataplane.proxy_tcp[path]) as p:
        result = run_paired(benchmark, recorder, spec, lambda n: clients.echo_ops(d, payload, n),
                            lambda n: clients.echo_ops(p, payload, n))
    check_measured(result, benchmark, recorder)


def test_tcp_rtt_1b(benchmark: Any, recorder: Recorder, dataplane: Dataplane) -> None:
    """Latency: 1-byte request, 1-byte answer, on one connection (splice path)."""
    spec = Spec("tcp_rtt_1b.splice", "1-byte round trip on one TCP connection", "latency", RTT_OPS,
                {"payload_bytes": 1, "path": "splice"})
    with clients.open_stream(dataplane.echo_tcp) as d, clients.open_stream(dataplane.proxy_tcp["splice"]) as p:
        result = run_paired(benchmark, recorder, spec, lambda n: clients.rtt_ops(d, n),
                            lambda n: clients.rtt_ops(p, n))
    check_measured(result, benchmark, recorder)


def test_tcp_connect(benchmark: Any, recorder: Recorder, dataplane: Dataplane) -> None:
    """Connection setup rate: connect, first byte there and back, close."""
    spec = Spec("tcp_connect.splice", "connect + 1-byte round trip + close", "rate", CONNECT_OPS,
                {"path": "splice"})
    result = run_paired(benchmark, recorder, spec, lambda n: clients.connect_ops(dataplane.echo_tcp, n),
                        lambda n: clients.connect_ops(dataplane.proxy_tcp["splice"], n))
    check_measured(result, benchmark, recorder)


def test_udp_rtt(benchmark: Any, recorder: Recorder, dataplane: Dataplane) -> None:
    """UDP: one flow, datagram there and back."""
    spec = Spec("udp_rtt_64b", f"{UDP_PAYLOAD_BYTES}-byte datagram round trip on one UDP flow", "latency",
                UDP_OPS, {"payload_bytes": UDP_PAYLOAD_BYTES})
    with clients.open_datagram(dataplane.echo_udp) as d, clients.open_datagram(dataplane.proxy_udp) as p:
        result = run_paired(benchmark, recorder, spec, lambda n: clients.udp_rtt_ops(d, n, UDP_PAYLOAD_BYTES),
                            lambda n: clients.udp_rtt_ops(p, n, UDP_PAYLOAD_BYTES))
    check_measured(result, benchmark, recorder)


# ---------------------------------------------------------------- cost: CPU per unit of work


@dataclass(frozen=True)
class CostSpec:
    name: str
    description: str
    unit: str  # GB | connection | datagram (harness.records.bench_file.COST_UNITS)
    path: str  # the forwarder charged: "splice" (also serves UDP) or "copy"
    amount: int  # bytes, connections or round trips per round
    units_per_amount: float  # units of work per amount (1e-9 GB per byte, 2 datagrams per round trip)


COST_SPECS = (
    CostSpec("cost_bulk.splice", "CPU per GB: one TCP stream to a sink, splice path", "GB", "splice",
             COST_BULK_SPLICE_BYTES, 1e-9),
    CostSpec("cost_bulk.copy", "CPU per GB: one TCP stream to a sink, copy path", "GB", "copy",
             COST_BULK_COPY_BYTES, 1e-9),
    CostSpec("cost_connections", "CPU per short connection (connect, 1-byte round trip, close)", "connection",
             "splice", COST_CONNECTIONS, 1.0),
    CostSpec("cost_datagrams", f"CPU per forwarded {UDP_PAYLOAD_BYTES}-byte datagram, {COST_UDP_WINDOW} in flight",
             "datagram", "splice", COST_UDP_ROUND_TRIPS, 2.0),
)


def measure_cost(forwarder_pid: int, work: Callable[[], float], units: float) -> CostRound:
    """The forwarder tree's and this process's CPU time around one fixed amount of work.

    The forwarder's clock is read outside this process's window, so the /proc
    scan of its process tree is not charged to the client.
    """
    f0 = tree_cpu_seconds(forwarder_pid)
    c0 = time.process_time()
    wall_s = work()
    c1 = time.process_time()
    f1 = tree_cpu_seconds(forwarder_pid)
    if f0 is None or f1 is None:
        raise RuntimeError(f"forwarder {forwarder_pid} exited during a cost round")
    return CostRound(f1 - f0, c1 - c0, units, wall_s)


def test_forwarder_cost(recorder: Recorder, dataplane: Dataplane) -> None:
    """Forwarder CPU per GB (splice, copy), per connection and per datagram, interleaved rounds:
    round r runs the four workloads starting at the r-th, so none always runs first or last."""
    s = recorder.settings
    rounds = s.cost_rounds
    chunk = os.urandom(BULK_CHUNK_BYTES)
    results: dict[str, list[CostRound]] = {c.name: [] for c in COST_SPECS}
    errors: dict[str, str] = {}
    with clients.open_datagram(dataplane.proxy_udp) as udp:
        def work(c: CostSpec, amount: int) -> Callable[[], float]:
            if c.unit == "GB":
                return lambda: clients.bulk_send(dataplane.proxy_sink[c.path], amount, chunk)
            if c.unit == "connection":
                return lambda: clients.connect_ops(dataplane.proxy_tcp[c.path], amount)
            return lambda: clients.udp_window_ops(udp, amount, UDP_PAYLOAD_BYTES, COST_UDP_WINDOW)

        try:
            for r in range(rounds + s.warmup_rounds):
                k = r % len(COST_SPECS)
                for c in COST_SPECS[k:] + COST_SPECS[:k]:
                    amount = s.ops(c.amount)
                    cr = measure_cost(dataplane.forwarder_pid[c.path], work(c, amount), amount * c.units_per_amount)
                    results[c.name].append(dataclasses.replace(cr, warmup=r < s.warmup_rounds))
        except Exception as e:
            errors = {c.name: f"{type(e).__name__}: {e}" for c in COST_SPECS}
            raise
        finally:
            for c in COST_SPECS:
                params = {"unit": c.unit, "path": c.path, "amount_per_round": s.ops(c.amount)}
                if c.unit == "datagram":
                    params |= {"payload_bytes": UDP_PAYLOAD_BYTES, "window": COST_UDP_WINDOW}
                recorder.add(BenchResult(c.name, c.description, "cost", params, tuple(results[c.name]),
                                         errors.get(c.name)))
    for c in COST_SPECS:
        assert len(results[c.name]) == rounds + s.warmup_rounds
        assert all(r.forwarder_cpu_s > 0 and r.client_cpu_s > 0 for r in results[c.name]), c.name
