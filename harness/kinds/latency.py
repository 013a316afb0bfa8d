"""Latency: connection setup time and 1-byte RTT per path; the direct path is the floor.

Each measurement (one path, one round) holds its own percentiles over
thousands of samples (harness.records.probe_json). Across rounds each percentile is
summarised as median [min-max], like throughput. "Added" = a path's median
p50 minus the floor's: what the forwarder itself costs a request.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from harness.define.experiment import ExperimentConfig
from harness.kinds.base import FileSummary, Kind, ReportContext, check_probe_kind
from harness.present.format import (
    fmt_range,
    fmt_signed_us,
    fmt_us,
    notes_block,
    probe_settings,
    table,
)
from harness.present.plots import (
    FIG_SIZE_IN,
    caption,
    color,
    finish,
    hbars,
    new_panels,
    no_minor_labels,
    whole_number_ticks,
)
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FLOOR = "direct"


@dataclass(frozen=True)
class LatencyRow:
    path: str
    setup_p50_us: Summary  # connect() -> first byte of the reply
    setup_p90_us: Summary
    setup_p99_us: Summary
    rtt_p50_us: Summary  # 1-byte request -> reply on an open connection
    rtt_p90_us: Summary
    rtt_p99_us: Summary
    setup_samples: int  # over every ok round
    rtt_samples: int
    errors: int  # failed requests / connections the probe saw, every ok round
    truncated_rounds: int  # rounds that hit the time limit before taking every sample
    n_failed: int  # measurements that failed outright
    added_setup_us: float | None  # median p50 - the floor's median p50
    added_rtt_us: float | None


@dataclass(frozen=True)
class LatencySummary:
    rows: tuple[LatencyRow, ...]
    floor: LatencyRow | None
    notes: tuple[str, ...]

    def get(self, path: str) -> LatencyRow | None:
        return next((r for r in self.rows if r.path == path), None)


def _truncated(r: Record) -> bool:
    if not r.probe_raw:
        return False
    try:
        return bool(json.loads(r.probe_raw).get("truncated"))
    except (ValueError, AttributeError):
        return False


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def summarise_latency(records: Iterable[Record], path_order: Sequence[str] = ()) -> LatencySummary:
    """One row per path (path_order first), over the latency records."""
    rows_in = [r for r in records if r.driver == "latency"]
    order = list(dict.fromkeys([p for p in path_order if any(r.path == p for r in rows_in)]
                               + [r.path for r in rows_in]))
    rows = []
    for path in order:
        mine = [r for r in rows_in if r.path == path]
        ok = [r for r in mine if r.ok]
        rows.append(LatencyRow(
            path=path,
            setup_p50_us=summarise(r.setup_p50_us for r in ok), setup_p90_us=summarise(r.setup_p90_us for r in ok),
            setup_p99_us=summarise(r.setup_p99_us for r in ok),
            rtt_p50_us=summarise(r.rtt_p50_us for r in ok), rtt_p90_us=summarise(r.rtt_p90_us for r in ok),
            rtt_p99_us=summarise(r.rtt_p99_us for r in ok),
            setup_samples=sum(r.setup_samples or 0 for r in ok), rtt_samples=sum(r.rtt_samples or 0 for r in ok),
            errors=sum(r.conn_errors or 0 for r in ok), truncated_rounds=sum(_truncated(r) for r in ok),
            n_failed=len(mine) - len(ok), added_setup_us=None, added_rtt_us=None,
        ))
    floor = next((r for r in rows if r.path == FLOOR), None)
    if floor is not None:
        rows = [replace(r, added_setup_us=_minus(r.setup_p50_us.median, floor.setup_p50_us.median),
                        added_rtt_us=_minus(r.rtt_p50_us.median, floor.rtt_p50_us.median))
                for r in rows]
        floor = next(r for r in rows if r.path == FLOOR)
    return LatencySummary(tuple(rows), floor, tuple(_notes(rows, floor)))


def _notes(rows: list[LatencyRow], floor: LatencyRow | None) -> list[str]:
    notes = []
    if floor is None:
        notes.append(f"no `{FLOOR}` path in this run: there is no floor to subtract, so the figures include "
                     "the client's and the echo server's own time")
    for r in rows:
        if r.truncated_rounds:
            notes.append(f"{r.path}: {r.truncated_rounds} round(s) hit the time limit (`seconds`) before taking "
                         "every sample; their percentiles use fewer samples")
        if r.errors:
            notes.append(f"{r.path}: {r.errors} request(s) failed (see probe_raw in the result file)")
        if r.n_failed:
            notes.append(f"{r.path}: {r.n_failed} failed measurement(s) left out")
        if floor is not None and r is not floor and r.rtt_p50_us.n and floor.rtt_p50_us.n:
            assert r.rtt_p50_us.min is not None and floor.rtt_p50_us.max is not None
            if r.rtt_p50_us.min <= floor.rtt_p50_us.max and r.added_rtt_us is not None and r.added_rtt_us < 0:
                notes.append(f"{r.path}: its RTT p50 range overlaps the floor's and its median is below it: "
                             "the forwarder's added RTT is within this host's noise")
    return notes


# ---------------------------------------------------------------- report section


def render_latency_table(s: LatencySummary) -> str:
    """Per path: setup time and RTT p50/p90/p99 (medians over rounds, p50 with [min-max]), added vs the floor."""
    header = ["Path", "Setup p50, µs", "p90", "p99", "Setup added", "RTT p50, µs", "p90", "p99", "RTT added",
              "Samples (setup / RTT)", "Errors"]
    rows = []
    for r in s.rows:
        rows.append([f"`{r.path}`" + (" (floor)" if s.floor is not None and r.path == s.floor.path else ""),
                     fmt_range(r.setup_p50_us, fmt_us), fmt_us(r.setup_p90_us.median), fmt_us(r.setup_p99_us.median),
                     fmt_signed_us(r.added_setup_us), fmt_range(r.rtt_p50_us, fmt_us), fmt_us(r.rtt_p90_us.median),
                     fmt_us(r.rtt_p99_us.median), fmt_signed_us(r.added_rtt_us),
                     f"{r.setup_samples:,} / {r.rtt_samples:,}", f"{r.errors}"])
    return table(header, rows)


def _section(fs: FileSummary[LatencySummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    probe = probe_settings(fs.config)
    out = [f"Setup = connect() to the first byte of the reply to a 1-byte request sent at once "
           f"({probe['setup_connections']} short connections per round); RTT = 1-byte request to 1-byte "
           f"reply on an open connection ({probe['rtt_connections']} connections x "
           f"{probe['rtt_per_connection']} round trips per round). Measured by the harness's own client "
           "against an echo server, one request in flight; percentiles per round, then the median over rounds "
           "(p50 with [min–max]). Added = the path's p50 minus the floor's."]
    if s.floor is not None:
        out.append(f"Floor (`{s.floor.path}`, no forwarder: the client's and the echo server's own time on this host): "
                   f"setup {fmt_us(s.floor.setup_p50_us.median)} µs, RTT {fmt_us(s.floor.rtt_p50_us.median)} µs (p50).")
    return out + [render_latency_table(s), *notes_block(s.notes)]


# ---------------------------------------------------------------- figures


def plot_latency(s: LatencySummary, cap: str) -> Figure:
    """Two panels: setup time and RTT per path; bar = p50 (median over rounds), dot = p99; the floor line."""
    fig = new_panels((FIG_SIZE_IN[0] * 1.4, max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5)),
                     "Latency per path: p50 bars (whiskers min–max over rounds), p99 dots", cap)
    rows = list(s.rows)
    colors = [color(r.path, i) for i, r in enumerate(rows)]
    for k, (what, p50, p99, unit) in enumerate((("Connection setup (connect → first byte)", "setup_p50_us",
                                                 "setup_p99_us", "µs"),
                                                ("1-byte request/response RTT", "rtt_p50_us", "rtt_p99_us", "µs"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.set_title(what, fontsize=10)
        hbars(ax, [r.path for r in rows], [getattr(r, p50) for r in rows], colors)
        ys = list(range(len(rows)))[::-1]
        p99s = [(y, getattr(r, p99).median) for y, r in zip(ys, rows, strict=True) if getattr(r, p99).median]
        if p99s:
            ax.plot([v for _, v in p99s], [y for y, _ in p99s], "k.", label="p99 (median over rounds)")
        if s.floor is not None and getattr(s.floor, p50).median is not None:
            ax.axvline(getattr(s.floor, p50).median, color="tab:gray", linestyle="--", linewidth=1,
                       label=f"floor ({s.floor.path}) p50")
        ax.set_xscale("log")
        whole_number_ticks(ax.xaxis)
        no_minor_labels(ax.xaxis)
        ax.set_xlabel(f"{unit}, log scale")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(axis="x", which="both", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[LatencySummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"latency": plot_latency(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> LatencySummary:
    return summarise_latency(rs.records, rs.header.config.paths)


def _run_line(cfg: ExperimentConfig) -> str:
    # Measured by the probe; `seconds` is its time limit.
    return f"{cfg.rounds} round(s), at most {cfg.seconds} s each, harness latency probe"


KIND = Kind(name="latency", driver="latency", summarise=_summarise, section=_section, figures=_figures,
            check=check_probe_kind, uses_probe=True, seconds_is_limit=True, run_line=_run_line)
