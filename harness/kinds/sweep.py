"""Offered-load sweep: per path and paced rate (iperf3 -b), delivered vs offered.

A path that keeps up delivers the offered rate (the spec saw < 1% off from
100 Mbit/s to 20 Gbit/s); one that does not falls below it. Rates above what
the host itself carries (the direct path's capacity) cannot be delivered by
any path, so the summary keeps that capacity next to the cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.records.results import Record
from harness.summarise.stats import Summary, ratio_pct, summarise

# Below this share of the offered rate a path is "not keeping up". iperf3's
# pacing lands within ~1% of the rate over a 5-s run when nothing limits it;
# 95% leaves room for that and for short-run noise, and anything lower is a
# real shortfall (back-pressure from a path that cannot move the bytes).
KEEPS_UP_PCT = 95.0

# Spread (max-min as % of the median) above which one cell is flagged as too
# noisy to compare with another path at the same rate. Paced cells that keep
# up vary by well under 1%; 10% is far outside that.
WIDE_CELL_SPREAD_PCT = 10.0

CAPACITY_PATH = "direct"


@dataclass(frozen=True)
class SweepRow:
    """One (path, offered rate) cell."""

    path: str
    offered_mbps: float
    delivered_mbps: Summary  # sender side, like every uncapped figure
    pct_of_offered: float | None  # median / offered * 100
    n_failed: int
    ratio_pct: Summary = Summary(0, None, None, None)  # per-run delivered / offered * 100

    @property
    def keeps_up(self) -> bool | None:
        """Median delivered >= KEEPS_UP_PCT of offered (None when nothing was measured)."""
        return None if self.pct_of_offered is None else self.pct_of_offered >= KEEPS_UP_PCT


@dataclass(frozen=True)
class Capacity:
    """What the host carries without a forwarder: the direct path's throughput."""

    path: str
    throughput_mbps: Summary
    source: str  # how it was measured, for the report
    lower_bound: bool  # True: direct kept up at every rate, so it carries at least this much


@dataclass(frozen=True)
class SweepSummary:
    rows: tuple[SweepRow, ...]
    paths: tuple[str, ...]
    rates_mbps: tuple[float, ...]
    capacity: Capacity | None = None
    notes: tuple[str, ...] = ()  # stability warnings (what cannot be read from the table, and what to do)

    def cell(self, path: str, rate: float) -> SweepRow | None:
        return next((r for r in self.rows if r.path == path and r.offered_mbps == rate), None)

    def shortfalls(self, path: str) -> tuple[SweepRow, ...]:
        """The cells where `path` delivered less than KEEPS_UP_PCT of the offered rate."""
        return tuple(r for r in self.rows if r.path == path and r.keeps_up is False)

    def above_capacity(self, rate: float) -> bool:
        """True if the rate is above the direct path's measured median (no path can deliver it here)."""
        c = self.capacity
        return (c is not None and not c.lower_bound and c.throughput_mbps.median is not None
                and rate > c.throughput_mbps.median)


def summarise_sweep(records: Iterable[Record], path_order: Sequence[str] = (),
                    unpaced: Iterable[Record] = ()) -> SweepSummary:
    """One row per (path, offered rate) over the paced, uncapped records.

    Args:
        path_order: column order (the config's paths); unlisted paths follow in first-seen order.
        unpaced: uncapped, unpaced records of other experiments on the same host (a headline
            run): the direct ones among them give the host's capacity.
    """
    paced = [r for r in records if r.offered_mbps is not None and r.cap_bytes_per_s is None]
    seen = [r.path for r in paced]
    paths = tuple(p for p in dict.fromkeys([*path_order, *seen]) if p in seen)
    rates = tuple(sorted({r.offered_mbps for r in paced if r.offered_mbps is not None}))
    rows = []
    for path in paths:
        for rate in rates:
            mine = [r for r in paced if r.path == path and r.offered_mbps == rate]
            if not mine:
                continue
            ok = [r for r in mine if r.ok]
            s = summarise(r.throughput_mbps for r in ok)
            rows.append(SweepRow(path, rate, s, ratio_pct(s.median, rate), len(mine) - len(ok),
                                 summarise(ratio_pct(r.throughput_mbps, rate) for r in ok)))
    summary = SweepSummary(tuple(rows), paths, rates, _capacity(rows, unpaced))
    return SweepSummary(summary.rows, summary.paths, summary.rates_mbps, summary.capacity,
                        tuple(_notes(summary)))


def _capacity(rows: Sequence[SweepRow], unpaced: Iterable[Record]) -> Capacity | None:
    direct = [r for r in unpaced if r.path == CAPACITY_PATH and r.ok and r.offered_mbps is None
              and r.cap_bytes_per_s is None]
    if direct:
        experiments = ", ".join(sorted({r.experiment for r in direct}))
        return Capacity(CAPACITY_PATH, summarise(r.throughput_mbps for r in direct),
                        f"unpaced `{CAPACITY_PATH}` runs of {experiments}", lower_bound=False)
    mine = [r for r in rows if r.path == CAPACITY_PATH and r.delivered_mbps.n]
    if not mine:
        return None
    # No unpaced run: the paced cells bound it. Where direct fell short, what it delivered at the
    # highest such rate is its ceiling; if it kept up everywhere, the top rate is only a lower bound.
    short = [r for r in mine if r.keeps_up is False]
    best = max(short or mine, key=lambda r: r.offered_mbps)
    where = f"{CAPACITY_PATH} at the highest offered rate of this sweep"
    return Capacity(CAPACITY_PATH, best.delivered_mbps, where, lower_bound=not short)


def _fmt(v: float) -> str:
    return f"{v:,.0f}"


def _notes(s: SweepSummary) -> list[str]:
    notes = []
    ns = {r.delivered_mbps.n for r in s.rows if r.delivered_mbps.n}
    if ns == {1}:
        notes.append("one run per path and rate: no spread is known, so differences between paths at one "
                     "rate cannot be read as a ranking; rerun with rounds >= 3")
    for path in s.paths:
        wide = [r for r in s.rows if r.path == path and r.delivered_mbps.n > 1
                and (r.delivered_mbps.spread_pct or 0) > WIDE_CELL_SPREAD_PCT]
        if wide:
            cells = ", ".join(f"{_fmt(r.offered_mbps)} Mbit/s (spread {r.delivered_mbps.spread_pct:.0f}%, "
                              f"n={r.delivered_mbps.n})" for r in wide)
            notes.append(f"{path}: runs at one rate differ by more than {WIDE_CELL_SPREAD_PCT:g}% of their median "
                         f"at {cells}: those medians do not rank the paths; rerun with more rounds or on "
                         "a quieter host")
        failed = sum(r.n_failed for r in s.rows if r.path == path)
        if failed:
            notes.append(f"{path}: {failed} failed measurement(s) left out (see the result file)")
    return notes
