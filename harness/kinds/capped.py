"""Cap accuracy: delivered Mbit/s vs the cap (bytes/s * 8 / 1e6), against two bounds.

Delivered = iperf3's receiver-side rate over the non-omitted interval: the
bytes that actually crossed the capped forwarder. The sender-side figure
can run ahead by whatever the socket buffers absorbed.
  bound: the spec's acceptance rule, delivered <= cap * (1 + bound_pct/100)
  goal:  the tighter target, |delivered - cap| <= goal_pct of the cap

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.define.experiment import DEFAULT_CAP_BOUND_PCT, DEFAULT_CAP_GOAL_PCT, ConfigDraft
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.present.format import DASH, fmt_mbps, fmt_range, table
from harness.present.plots import caption, color, finish, new_figure, whiskers
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, pct_error, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def target_mbps(cap_bytes_per_s: int) -> float:
    """The cap in Mbit/s (decimal, as iperf3 reports)."""
    return cap_bytes_per_s * 8 / 1e6


def within_bound(delivered_mbps: float | None, cap_bytes_per_s: int, bound_pct: float) -> bool:
    """The spec's rule: something was delivered, and no more than cap + bound_pct."""
    if delivered_mbps is None:
        return False
    return 0 < delivered_mbps <= target_mbps(cap_bytes_per_s) * (1 + bound_pct / 100)


def within_goal(delivered_mbps: float | None, cap_bytes_per_s: int, goal_pct: float) -> bool:
    err = pct_error(delivered_mbps, target_mbps(cap_bytes_per_s))
    return err is not None and abs(err) <= goal_pct


@dataclass(frozen=True)
class CapRow:
    path: str
    cap_bytes_per_s: int
    target_mbps: float
    delivered_mbps: Summary  # receiver side
    sender_mbps: Summary
    error_pct: float | None  # of the median delivered vs target
    within_bound: bool  # median delivered
    within_goal: bool  # median delivered
    n_within_bound: int  # individual runs
    n_within_goal: int
    n_failed: int


@dataclass(frozen=True)
class CappedSummary:
    rows: tuple[CapRow, ...]
    bound_pct: float
    goal_pct: float

    def get(self, path: str, cap_bytes_per_s: int) -> CapRow | None:
        return next((r for r in self.rows if r.path == path and r.cap_bytes_per_s == cap_bytes_per_s), None)


def summarise_capped(records: Iterable[Record], bound_pct: float = DEFAULT_CAP_BOUND_PCT,
                     goal_pct: float = DEFAULT_CAP_GOAL_PCT) -> CappedSummary:
    """One row per (path, cap) over the capped records."""
    capped = [r for r in records if r.cap_bytes_per_s is not None]
    keys = list(dict.fromkeys((r.path, r.cap_bytes_per_s) for r in capped))
    rows = []
    for path, cap in sorted(keys, key=lambda k: (k[0], k[1])):
        assert cap is not None
        mine = [r for r in capped if r.path == path and r.cap_bytes_per_s == cap]
        ok = [r for r in mine if r.ok]
        delivered = summarise(r.receiver_mbps for r in ok)
        rows.append(CapRow(
            path=path, cap_bytes_per_s=cap, target_mbps=target_mbps(cap), delivered_mbps=delivered,
            sender_mbps=summarise(r.sender_mbps for r in ok),
            error_pct=pct_error(delivered.median, target_mbps(cap)),
            within_bound=within_bound(delivered.median, cap, bound_pct),
            within_goal=within_goal(delivered.median, cap, goal_pct),
            n_within_bound=sum(within_bound(r.receiver_mbps, cap, bound_pct) for r in ok),
            n_within_goal=sum(within_goal(r.receiver_mbps, cap, goal_pct) for r in ok),
            n_failed=len(mine) - len(ok),
        ))
    return CappedSummary(tuple(rows), bound_pct, goal_pct)


# ---------------------------------------------------------------- report section


def render_capped_table(s: CappedSummary) -> str:
    """Delivered (receiver side) vs cap per (path, cap), with the spec's bound and the tighter goal."""
    header = ["Path", "Cap, B/s", "Target, Mbit/s", "Delivered, Mbit/s: median [min–max]", "Error",
              f"≤ +{s.bound_pct:g}%", f"within ±{s.goal_pct:g}%", "Sender side, Mbit/s (not used)"]
    rows = []
    for r in s.rows:
        n = r.delivered_mbps.n
        rows.append([f"`{r.path}`", f"{r.cap_bytes_per_s:,}", fmt_mbps(r.target_mbps), fmt_range(r.delivered_mbps),
                     DASH if r.error_pct is None else f"{r.error_pct:+.2f}%",
                     f"{'yes' if r.within_bound else 'NO'} ({r.n_within_bound}/{n} runs)",
                     f"{'yes' if r.within_goal else 'no'} ({r.n_within_goal}/{n} runs)",
                     fmt_mbps(r.sender_mbps.median)])
    return table(header, rows)


def _section(fs: FileSummary[CappedSummary], ctx: ReportContext) -> list[str]:
    return ["Delivered = iperf3's receiver-side rate over the non-omitted seconds: the bytes that crossed the "
            "capped forwarder. The sender side is shown but not used: at low caps it measures what the socket "
            "buffers absorbed, not the cap.", render_capped_table(fs.summary)]


# ---------------------------------------------------------------- figures


def _cap_label(cap_bytes_per_s: int, target_mbps: float) -> str:
    for unit, size in (("MiB/s", 2**20), ("KiB/s", 2**10)):
        if cap_bytes_per_s >= size and cap_bytes_per_s % size == 0:
            return f"{cap_bytes_per_s // size} {unit}\n({target_mbps:.3g} Mbit/s)"
    return f"{cap_bytes_per_s:,} B/s\n({target_mbps:.3g} Mbit/s)"


def plot_capped(s: CappedSummary, cap: str) -> Figure:
    """Delivered (receiver side) as % of the cap, per cap and path, against the bound and the goal."""
    fig, ax = new_figure("Bandwidth cap accuracy", cap)
    caps = sorted({r.cap_bytes_per_s for r in s.rows})
    paths = list(dict.fromkeys(r.path for r in s.rows))
    width = 0.8 / max(len(paths), 1)
    for i, path in enumerate(paths):
        rows = {r.cap_bytes_per_s: r for r in s.rows if r.path == path and r.delivered_mbps.median is not None}
        xs = [caps.index(c) + (i - (len(paths) - 1) / 2) * width for c in rows]
        ys = [100.0 * (r.delivered_mbps.median or 0.0) / r.target_mbps for r in rows.values()]
        errs = [whiskers(r.delivered_mbps, 100.0 / r.target_mbps) for r in rows.values()]
        ax.errorbar(xs, ys, yerr=([e[0] for e in errs], [e[1] for e in errs]), fmt="o", capsize=5,
                    color=color(path, i), label=f"{path} (median, min–max)")
    ax.axhspan(100 - s.goal_pct, 100 + s.goal_pct, color="tab:green", alpha=0.12, label=f"goal ±{s.goal_pct:g}%")
    ax.axhline(100 + s.bound_pct, color="tab:red", linestyle="--", label=f"bound +{s.bound_pct:g}%")
    ax.axhline(100.0, color="black", linewidth=1)
    targets = {r.cap_bytes_per_s: r.target_mbps for r in s.rows}
    ax.set_xticks(range(len(caps)), [_cap_label(c, targets[c]) for c in caps])
    ax.set_xlabel("Cap (rate_limit.bandwidth_in_bps)")
    ax.set_ylabel("Delivered, % of the cap (iperf3 receiver side)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[CappedSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"accuracy": plot_capped(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> CappedSummary:
    cfg = rs.header.config
    return summarise_capped(rs.records, cfg.cap_bound_pct, cfg.cap_goal_pct)


def _check(d: ConfigDraft, add: Add) -> None:
    if not d.caps_bytes_per_s:
        add("caps_bytes_per_s", "a capped experiment needs at least one cap")


KIND = Kind(name="capped", driver="iperf3", summarise=_summarise, section=_section, figures=_figures,
            check=_check)
