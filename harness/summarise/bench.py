"""Microbenchmark statistics: per-round ratio proxy / direct, its median and interquartile range (no I/O)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from harness.records.bench_file import BenchResult


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


def natural_value(bench: BenchResult, s_per_op: float) -> tuple[float, str]:
    """Seconds per operation in the unit a person reads for this kind of benchmark."""
    if bench.kind == "throughput":
        payload = float(bench.params.get("payload_bytes", 0))
        return payload / s_per_op / (1 << 20), "MiB/s"
    if bench.kind == "rate":
        return 1.0 / s_per_op, "ops/s"
    return s_per_op * 1e6, "us"


@dataclass(frozen=True)
class BenchSummary:
    """What one benchmark measured: ratio statistics and both sides' medians in natural units."""

    name: str
    ratio: RatioStats | None
    proxy_value: float | None
    direct_value: float | None
    unit: str


def summarise_bench(bench: BenchResult) -> BenchSummary:
    """Ratio statistics plus median proxy and direct throughput / latency / rate."""
    rounds = bench.measured
    if not rounds:
        return BenchSummary(bench.name, None, None, None, natural_value(bench, 1.0)[1])
    proxy = statistics.median(r.proxy_s / r.ops for r in rounds)
    direct = statistics.median(r.direct_s / r.ops for r in rounds)
    pv, unit = natural_value(bench, proxy)
    dv, _ = natural_value(bench, direct)
    return BenchSummary(bench.name, summarise_ratios(bench.ratios()), pv, dv, unit)
