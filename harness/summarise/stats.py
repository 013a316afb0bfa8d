"""Statistics over measured values: no I/O, no printing.

Honest summaries of noisy throughput: n, median, min and max (never a bare
mean), ratios of medians, and a plain check of whether two ranges overlap
(if they do, the runs cannot rank the two paths).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

# Spread (max-min as % of the median) above which a summary is flagged as
# too noisy to compare against another path at the same n. The spec saw
# about +-15% per run on loopback; 30% total is that noise, and more is
# something else (a contended host).
WIDE_SPREAD_PCT = 30.0


@dataclass(frozen=True)
class Summary:
    """n, median, min, max of some values (None fields when n == 0)."""

    n: int
    median: float | None
    min: float | None
    max: float | None

    @property
    def spread_pct(self) -> float | None:
        """(max - min) as a percentage of the median."""
        if self.n == 0 or not self.median:
            return None
        assert self.max is not None and self.min is not None
        return 100.0 * (self.max - self.min) / self.median

    @property
    def wide(self) -> bool:
        s = self.spread_pct
        return s is not None and s > WIDE_SPREAD_PCT


EMPTY = Summary(0, None, None, None)


def summarise(values: Iterable[float | None]) -> Summary:
    """Summary of the non-None values."""
    vs = sorted(float(v) for v in values if v is not None)
    if not vs:
        return EMPTY
    return Summary(len(vs), statistics.median(vs), vs[0], vs[-1])


def ratio_pct(numerator: float | None, denominator: float | None) -> float | None:
    """100 * numerator / denominator, or None if either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return 100.0 * numerator / denominator


def ranges_overlap(a: Summary, b: Summary) -> bool:
    """True if the [min, max] ranges of a and b overlap (the runs cannot rank them)."""
    if a.n == 0 or b.n == 0:
        return False
    assert a.min is not None and a.max is not None and b.min is not None and b.max is not None
    return a.min <= b.max and b.min <= a.max


def pct_error(measured: float | None, target: float) -> float | None:
    """Signed error of measured vs target, in percent of target."""
    if measured is None or target == 0:
        return None
    return 100.0 * (measured - target) / target
