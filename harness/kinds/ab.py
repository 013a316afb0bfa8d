"""A/B: two paths measured back to back in every round; per-round ratio and its median.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.define.experiment import ConfigDraft
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.present.format import fmt_mbps, fmt_pct, notes_block, table
from harness.present.plots import caption, color, finish, new_figure
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


# ---------------------------------------------------------------- report section


def render_ab_table(s: AbSummary) -> str:
    """The spec's pairs table: one row per round, then the medians."""
    header = ["Round", f"`{s.a}`, Mbit/s", f"`{s.b}`, Mbit/s", f"{s.a} / {s.b}"]
    rows = [[f"{r.round}", fmt_mbps(r.a_mbps), fmt_mbps(r.b_mbps), fmt_pct(r.ratio_pct)] for r in s.rows]
    rows.append(["**median**", f"**{fmt_mbps(s.a_mbps.median)}**", f"**{fmt_mbps(s.b_mbps.median)}**",
                 f"**{fmt_pct(s.ratio_pct.median)}**"])
    text = table(header, rows, align_first_left=False)
    swing = ""
    if s.ratio_pct.n > 1:
        swing = (f"\n\nPer-round ratio swings from {fmt_pct(s.ratio_pct.min)} to {fmt_pct(s.ratio_pct.max)}; "
                 f"ratio of the medians: {fmt_pct(s.ratio_of_medians_pct)}.")
    return text + swing


def _section(fs: FileSummary[AbSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    return [render_ab_table(s), *notes_block(s.notes)]


# ---------------------------------------------------------------- figures


def plot_ab(s: AbSummary, cap: str) -> Figure:
    """Per-round ratio A / B in %, with 100% and the median ratio."""
    fig, ax = new_figure(f"{s.a} / {s.b}: throughput ratio per round", cap)
    rows = [r for r in s.rows if r.ratio_pct is not None]
    ax.bar([r.round for r in rows], [r.ratio_pct or 0.0 for r in rows], color=color(s.a), label="round")
    ax.axhline(100.0, color="black", linewidth=1, label="100% (equal)")
    if s.ratio_pct.median is not None:
        ax.axhline(s.ratio_pct.median, color="tab:red", linestyle="--",
                   label=f"median ratio {s.ratio_pct.median:.1f}%")
    ax.set_xticks([r.round for r in rows])
    ax.set_xlabel("Round (A and B back to back)")
    ax.set_ylabel(f"{s.a} / {s.b}, % (Mbit/s ratio)")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[AbSummary]) -> dict[str, Figure]:
    return {"ratio": plot_ab(fs.summary, caption(fs.header))}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> AbSummary:
    a, b = rs.header.config.ab_pair
    return summarise_ab(rs.records, a, b)


def _check(d: ConfigDraft, add: Add) -> None:
    if d.pair is None and len(d.paths) < 2:
        add("paths", "an ab experiment needs two paths (or a pair)")


KIND = Kind(name="ab", driver="iperf3", summarise=_summarise, section=_section, figures=_figures, check=_check)
