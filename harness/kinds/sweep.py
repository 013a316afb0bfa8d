"""Offered-load sweep: per path and paced rate (iperf3 -b), delivered vs offered.

A path that keeps up delivers the offered rate (the spec saw < 1% off from
100 Mbit/s to 20 Gbit/s); one that does not falls below it. Rates above what
the host itself carries (the direct path's capacity) cannot be delivered by
any path, so the summary keeps that capacity next to the cells.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.define.experiment import ConfigDraft
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.present.format import DASH, fmt_mbps, fmt_pct, fmt_range, fmt_rate, notes_block, table
from harness.present.plots import caption, finish, new_figure, series_style, whiskers
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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


# ---------------------------------------------------------------- report section


ABOVE_CAPACITY_MARK = "‡"


def render_sweep_table(s: SweepSummary) -> str:
    """Offered rate as rows; per path the delivered median (Mbit/s) and delivered / offered."""
    header = ["Offered, Mbit/s"]
    for p in s.paths:
        header += [f"`{p}`", "%"]
    rows = []
    for rate in s.rates_mbps:
        label = fmt_rate(rate) + (f" {ABOVE_CAPACITY_MARK}" if s.above_capacity(rate) else "")
        cells = [label]
        for p in s.paths:
            c = s.cell(p, rate)
            if c is None:
                cells += [DASH, DASH]
            else:
                cells += [fmt_mbps(c.delivered_mbps.median), fmt_pct(c.pct_of_offered)]
        rows.append(cells)
    return table(header, rows, align_first_left=False)


def render_sweep_findings(s: SweepSummary) -> list[str]:
    """The host's capacity and where each path stops delivering the offered rate."""
    out = []
    c = s.capacity
    if c is not None and c.throughput_mbps.n:
        if c.lower_bound:
            out.append(f"Capacity of this host: the `{c.path}` path (iperf3 to iperf3, no forwarder) delivered every "
                       f"offered rate, up to {fmt_mbps(c.throughput_mbps.median)} Mbit/s; its ceiling is higher "
                       "(run the headline experiment into the same directory to measure it).")
        else:
            out.append(f"Capacity of this host: the `{c.path}` path (iperf3 to iperf3, no forwarder) carries "
                       f"{fmt_range(c.throughput_mbps)} Mbit/s ({c.source}). Rows marked {ABOVE_CAPACITY_MARK} "
                       "offer more than its median: no path can deliver them here, so those rows show the "
                       "host's limit, not the forwarders'.")
    lines = []
    for p in s.paths:
        short = s.shortfalls(p)
        if not short:
            kept = [r for r in s.rows if r.path == p and r.keeps_up]
            if kept:
                lines.append(f"`{p}` delivers ≥ {KEEPS_UP_PCT:g}% of the offered rate at every rate measured.")
            continue
        first = short[0]
        at = ", ".join(fmt_rate(r.offered_mbps) for r in short)
        where = ""
        if s.above_capacity(first.offered_mbps):
            where = ", above the host's capacity"
        elif c is not None and not c.lower_bound:
            where = ", below the host's capacity: the path itself, or its share of the CPU, is the limit there"
        base = s.cell(CAPACITY_PATH, first.offered_mbps) if p != CAPACITY_PATH else None
        if base is not None:
            where += f"; `{CAPACITY_PATH}` at that rate: {fmt_pct(base.pct_of_offered)}"
        lines.append(f"`{p}` falls below {KEEPS_UP_PCT:g}% of the offered rate at {at} Mbit/s; first at "
                     f"{fmt_rate(first.offered_mbps)}: {fmt_mbps(first.delivered_mbps.median)} Mbit/s delivered "
                     f"({fmt_pct(first.pct_of_offered)}{where}).")
    if lines:
        out.append("Where the paths diverge from the offered rate:\n\n" + "\n".join(f"- {x}" for x in lines))
    return out


def _section(fs: FileSummary[SweepSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    return ["Delivered = iperf3's sender-side rate (median over the rounds) at each offered rate (`iperf3 -b`); "
            "% = delivered / offered.", render_sweep_table(s), *render_sweep_findings(s), *notes_block(s.notes)]


# ---------------------------------------------------------------- figures


def _capacity_line(ax: Axes, s: SweepSummary, vertical: bool) -> None:
    c = s.capacity
    if c is None or c.throughput_mbps.median is None or c.lower_bound:
        return
    label = f"{c.path} capacity {c.throughput_mbps.median:,.0f} Mbit/s"
    line = ax.axvline if vertical else ax.axhline
    line(c.throughput_mbps.median, color="dimgray", linestyle=":", label=label)


def plot_sweep_delivered(s: SweepSummary, cap: str) -> Figure:
    """Delivered vs offered per path (log-log), with the ideal line delivered = offered."""
    fig, ax = new_figure("Offered-load sweep: delivered vs offered", cap)
    rates = list(s.rates_mbps)
    if rates:
        ax.plot(rates, rates, color="black", linestyle="--", linewidth=1, label="ideal (delivered = offered)")
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.delivered_mbps.median is not None]
        errs = [whiskers(r.delivered_mbps) for r in rows]
        ax.errorbar([r.offered_mbps for r in rows], [r.delivered_mbps.median or 0.0 for r in rows],
                    yerr=([e[0] for e in errs], [e[1] for e in errs]), label=path, **series_style(path, i))
    _capacity_line(ax, s, vertical=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Offered load, Mbit/s (iperf3 -b)")
    ax.set_ylabel("Delivered, Mbit/s (median, whiskers min–max)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return finish(fig)


def plot_sweep_ratio(s: SweepSummary, cap: str) -> Figure:
    """Delivered / offered in % per path over the sweep, with 100% and the keeps-up threshold."""
    fig, ax = new_figure("Offered-load sweep: share of the offered rate delivered", cap)
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.ratio_pct.median is not None]
        errs = [whiskers(r.ratio_pct) for r in rows]
        ax.errorbar([r.offered_mbps for r in rows], [r.ratio_pct.median or 0.0 for r in rows],
                    yerr=([e[0] for e in errs], [e[1] for e in errs]), label=path, **series_style(path, i))
    ax.axhline(100.0, color="black", linewidth=1, label="100% (keeps up)")
    ax.axhline(KEEPS_UP_PCT, color="tab:red", linestyle="--", linewidth=1, label=f"{KEEPS_UP_PCT:g}% threshold")
    _capacity_line(ax, s, vertical=True)
    ax.set_xscale("log")
    ax.set_xlabel("Offered load, Mbit/s (iperf3 -b)")
    ax.set_ylabel("Delivered / offered, % (median, whiskers min–max)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[SweepSummary]) -> dict[str, Figure]:
    s = fs.summary
    if not s.rows:
        return {}
    cap = caption(fs.header)
    return {"delivered": plot_sweep_delivered(s, cap), "ratio": plot_sweep_ratio(s, cap)}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> SweepSummary:
    # The host's capacity: unpaced, uncapped runs of files on the same topology (a headline run).
    unpaced = [r for o in same_topology for r in o.records if r.offered_mbps is None and r.cap_bytes_per_s is None]
    return summarise_sweep(rs.records, rs.header.config.paths, unpaced)


def _check(d: ConfigDraft, add: Add) -> None:
    if not d.offered_mbps:
        add("offered_mbps", "a sweep experiment needs at least one offered rate")


KIND = Kind(name="sweep", driver="iperf3", summarise=_summarise, section=_section, figures=_figures,
            check=_check)
