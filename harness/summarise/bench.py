"""Microbenchmark statistics (no I/O): per-round ratios, their median and interquartile range, natural
units, and the rank test the gate uses (one-sided Mann-Whitney U, scipy)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.records.bench_file import BenchResult, CostRound, Round


@dataclass(frozen=True)
class RatioStats:
    """n, median, interquartile range and min-max of per-round ratios."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float


def summarise_ratios(values: Iterable[float]) -> RatioStats | None:
    """Median, quartiles (inclusive method: within the data) and range; None if empty."""
    vs = sorted(values)
    if not vs:
        return None
    if len(vs) == 1:
        q1 = q3 = vs[0]
    else:
        q1, _, q3 = statistics.quantiles(vs, n=4, method="inclusive")
    return RatioStats(len(vs), statistics.median(vs), q1, q3, vs[0], vs[-1])


# How a cost benchmark's CPU seconds per unit of work read for a person: unit -> (factor, label).
COST_DISPLAY: dict[str, tuple[float, str]] = {"GB": (1.0, "s/GB"), "connection": (1e6, "us/conn"),
                                              "datagram": (1e6, "us/dgram")}


def natural_value(bench: BenchResult, s_per_op: float) -> tuple[float, str]:
    """Seconds per operation (cost: CPU seconds per unit of work) in the unit a person reads."""
    if bench.is_cost:
        factor, label = COST_DISPLAY[str(bench.params.get("unit"))]
        return s_per_op * factor, label
    if bench.kind == "throughput":
        payload = float(bench.params.get("payload_bytes", 0))
        return payload / s_per_op / (1 << 20), "MiB/s"
    if bench.kind == "rate":
        return 1.0 / s_per_op, "ops/s"
    return s_per_op * 1e6, "us"


@dataclass(frozen=True)
class BenchSummary:
    """What one benchmark measured: ratio statistics and both sides' medians in natural units
    (timing: proxy and direct; cost: the forwarder's and the client's CPU per unit of work)."""

    name: str
    ratio: RatioStats | None
    proxy_value: float | None
    direct_value: float | None
    unit: str


def summarise_bench(bench: BenchResult) -> BenchSummary:
    """Ratio statistics plus median proxy and direct throughput / latency / rate, or CPU per unit."""
    rounds = bench.measured
    if not rounds:
        return BenchSummary(bench.name, None, None, None, natural_value(bench, 1.0)[1])
    if bench.is_cost:
        cost = [r for r in rounds if isinstance(r, CostRound)]
        proxy = statistics.median(r.forwarder_per_unit for r in cost)
        direct = statistics.median(r.client_per_unit for r in cost)
    else:
        timing = [r for r in rounds if isinstance(r, Round)]
        proxy = statistics.median(r.proxy_s / r.ops for r in timing)
        direct = statistics.median(r.direct_s / r.ops for r in timing)
    pv, unit = natural_value(bench, proxy)
    dv, _ = natural_value(bench, direct)
    return BenchSummary(bench.name, summarise_ratios(bench.ratios()), pv, dv, unit)


@dataclass(frozen=True)
class ShiftTest:
    """One-sided Mann-Whitney U tests of current rounds against baseline rounds."""

    p_slower: float  # H1: the current values tend to be larger (a slowdown / more CPU)
    p_faster: float  # H1: they tend to be smaller
    n_baseline: int
    n_current: int


def shift_test(baseline: Sequence[float], current: Sequence[float]) -> ShiftTest:
    """Mann-Whitney U, one-sided each way (scipy picks the exact or the normal-approximation p).

    A rank test: no assumption about the shape of the distribution (round
    ratios are skewed: a descheduled round is slow, never fast), and one
    outlier round moves it by one rank, not by its size.
    """
    from scipy.stats import mannwhitneyu  # loaded on first use: the gate only

    slower = mannwhitneyu(current, baseline, alternative="greater")
    faster = mannwhitneyu(current, baseline, alternative="less")
    return ShiftTest(float(slower.pvalue), float(faster.pvalue), len(baseline), len(current))
