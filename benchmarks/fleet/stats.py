"""Statistics of the fleet benchmark (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks ("inclusive")."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, min, max of durations given in seconds, in milliseconds."""
    if not samples_s:
        return {"n": 0}
    ms = [x * 1000.0 for x in samples_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


def summarise_s(values_s: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max of durations in seconds."""
    if not values_s:
        return {"n": 0}
    return {"n": len(values_s), "p50_s": round(percentile(values_s, 50), 3),
            "p90_s": round(percentile(values_s, 90), 3), "p99_s": round(percentile(values_s, 99), 3),
            "max_s": round(max(values_s), 3)}


def peak_rate_per_s(times_s: Sequence[float], window_s: float = 0.5) -> float:
    """The most events in any window of `window_s` (sliding over the events), per second."""
    ordered = sorted(times_s)
    best, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] < t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best / window_s


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None
