"""Offered-load sweep: per path and paced rate (iperf3 -b), delivered vs offered."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.results import Record
from harness.stats import Summary, ratio_pct, summarise


@dataclass(frozen=True)
class SweepRow:
    path: str
    offered_mbps: float
    delivered_mbps: Summary  # sender side, like every uncapped figure
    pct_of_offered: float | None  # median / offered * 100
    n_failed: int


@dataclass(frozen=True)
class SweepSummary:
    rows: tuple[SweepRow, ...]
    paths: tuple[str, ...]
    rates_mbps: tuple[float, ...]

    def cell(self, path: str, rate: float) -> SweepRow | None:
        return next((r for r in self.rows if r.path == path and r.offered_mbps == rate), None)


def summarise_sweep(records: Iterable[Record]) -> SweepSummary:
    """One row per (path, offered rate) over the paced, uncapped records."""
    paced = [r for r in records if r.offered_mbps is not None and r.cap_bytes_per_s is None]
    paths = tuple(dict.fromkeys(r.path for r in paced))
    rates = tuple(sorted({r.offered_mbps for r in paced if r.offered_mbps is not None}))
    rows = []
    for path in paths:
        for rate in rates:
            mine = [r for r in paced if r.path == path and r.offered_mbps == rate]
            if not mine:
                continue
            ok = [r for r in mine if r.ok]
            s = summarise(r.throughput_mbps for r in ok)
            rows.append(SweepRow(path, rate, s, ratio_pct(s.median, rate), len(mine) - len(ok)))
    return SweepSummary(tuple(rows), paths, rates)
