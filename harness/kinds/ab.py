"""A/B: two paths measured back to back in every round; per-round ratio and its median."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from harness.records.results import Record
from harness.summarise.stats import Summary, ratio_pct, summarise


@dataclass(frozen=True)
class AbRow:
    round: int
    a_mbps: float | None
    b_mbps: float | None
    ratio_pct: float | None  # a / b * 100


@dataclass(frozen=True)
class AbSummary:
    a: str
    b: str
    rows: tuple[AbRow, ...]
    a_mbps: Summary
    b_mbps: Summary
    ratio_pct: Summary  # of the per-round ratios (median ratio, min-max swing)
    ratio_of_medians_pct: float | None
    notes: tuple[str, ...] = ()  # stability warnings: what the rounds cannot show, and what to do


def summarise_ab(records: Iterable[Record], a: str, b: str) -> AbSummary:
    """Pairs the ok, uncapped runs of a and b by round."""
    ok = [r for r in records if r.ok and r.cap_bytes_per_s is None and r.offered_mbps is None]
    rounds = sorted({r.round for r in ok if r.path in (a, b)})
    rows = []
    for rnd in rounds:
        va = _median(r.throughput_mbps for r in ok if r.path == a and r.round == rnd)
        vb = _median(r.throughput_mbps for r in ok if r.path == b and r.round == rnd)
        rows.append(AbRow(rnd, va, vb, ratio_pct(va, vb)))
    sa = summarise(row.a_mbps for row in rows)
    sb = summarise(row.b_mbps for row in rows)
    ratios = summarise(row.ratio_pct for row in rows)
    return AbSummary(a, b, tuple(rows), sa, sb, ratios, ratio_pct(sa.median, sb.median),
                     tuple(_notes(a, b, ratios)))


def _notes(a: str, b: str, ratios: Summary) -> list[str]:
    if ratios.n == 0:
        return [f"no round measured both {a} and {b}: nothing to compare"]
    assert ratios.min is not None and ratios.max is not None
    if ratios.n < 3:
        return [f"only {ratios.n} paired round(s): too few to tell a difference from run-to-run noise; "
                "rerun with rounds >= 5"]
    if ratios.min < 100.0 < ratios.max:
        return [f"{a} / {b} swings from {ratios.min:.1f}% to {ratios.max:.1f}% across rounds: the rounds do not "
                "agree on which is faster, so read the medians as 'same range', not as a ranking; a small "
                "systematic difference needs more rounds (or a quieter host) to show"]
    return []


def _median(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None
