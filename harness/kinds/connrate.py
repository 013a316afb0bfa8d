"""Connection rate: completed short request/response connections per second per path.

The `direct` path (client to echo server, no forwarder) is the ceiling: the
rate the probe client and the echo server reach on this host. A path near
the ceiling is limited by the client/server, not by itself, and cannot be
ranked above it. Forwarder CPU per connection = forwarder CPU seconds over
the whole probe run / every connection it completed (warm-up included).

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.define.experiment import ExperimentConfig
from harness.errors import ProbeError
from harness.kinds.base import FileSummary, Kind, ReportContext, check_probe_kind
from harness.present.format import (
    fmt_count,
    fmt_pct,
    fmt_range,
    fmt_us,
    no_cpu,
    notes_block,
    probe_settings,
    table,
)
from harness.present.plots import FIG_SIZE_IN, caption, color, finish, hbars, new_figure
from harness.records.probe_json import parse_connrate_json
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CEILING = "direct"
# A path at or above this share of the ceiling's median is "at the ceiling".
AT_CEILING_PCT = 90.0


@dataclass(frozen=True)
class ConnrateRow:
    path: str
    conn_per_s: Summary
    pct_of_ceiling: float | None  # median / the ceiling's median * 100
    errors: int  # failed connections in the measured windows of every ok round
    cpu_us_per_conn: Summary  # forwarder CPU per completed connection; n == 0 for kernel paths
    n_failed: int


@dataclass(frozen=True)
class ConnrateSummary:
    rows: tuple[ConnrateRow, ...]
    ceiling: ConnrateRow | None
    notes: tuple[str, ...]

    def get(self, path: str) -> ConnrateRow | None:
        return next((r for r in self.rows if r.path == path), None)


def cpu_us_per_conn(r: Record) -> float | None:
    """Forwarder CPU (µs) per connection completed during the whole probe run."""
    if r.forwarder_cpu_s is None or not r.probe_raw:
        return None
    try:
        total = sum(parse_connrate_json(r.probe_raw).per_second)
    except (ProbeError, KeyError, ValueError):
        return None
    return r.forwarder_cpu_s / total * 1e6 if total else None


def summarise_connrate(records: Iterable[Record], path_order: Sequence[str] = ()) -> ConnrateSummary:
    """One row per path (path_order first), over the connrate records."""
    rows_in = [r for r in records if r.driver == "connrate"]
    order = list(dict.fromkeys([p for p in path_order if any(r.path == p for r in rows_in)]
                               + [r.path for r in rows_in]))
    base = [(path, [r for r in rows_in if r.path == path]) for path in order]
    medians = {path: summarise(r.conn_per_s for r in mine if r.ok).median for path, mine in base}
    rows = []
    for path, mine in base:
        ok = [r for r in mine if r.ok]
        rows.append(ConnrateRow(
            path=path, conn_per_s=summarise(r.conn_per_s for r in ok),
            pct_of_ceiling=ratio_pct(medians.get(path), medians.get(CEILING)),
            errors=sum(r.conn_errors or 0 for r in ok),
            cpu_us_per_conn=summarise(cpu_us_per_conn(r) for r in ok), n_failed=len(mine) - len(ok)))
    ceiling = next((r for r in rows if r.path == CEILING), None)
    notes = []
    if ceiling is None:
        notes.append(f"no `{CEILING}` path in this run: the client's own ceiling is unknown, so no rate "
                     "here is shown to be the forwarder's limit")
    for r in rows:
        if r is not ceiling and r.pct_of_ceiling is not None and r.pct_of_ceiling >= AT_CEILING_PCT:
            notes.append(f"{r.path}: {r.pct_of_ceiling:.0f}% of the ceiling: limited by the client and echo "
                         "server sharing this host's CPU, not (only) by the forwarder; paths at the ceiling "
                         "are not ranked against each other")
        if r.errors:
            notes.append(f"{r.path}: {r.errors} connection(s) failed in the measured windows")
        if r.n_failed:
            notes.append(f"{r.path}: {r.n_failed} failed measurement(s) left out")
        if r.conn_per_s.wide:
            notes.append(f"{r.path}: spread is {r.conn_per_s.spread_pct:.0f}% of the median over "
                         f"n={r.conn_per_s.n}: too noisy to rank")
    return ConnrateSummary(tuple(rows), ceiling, tuple(notes))


# ---------------------------------------------------------------- report section


def _section(fs: FileSummary[ConnrateSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    probe = probe_settings(fs.config)
    header = ["Path", "Connections/s: median [min–max]", "% of ceiling", "Errors", "Forwarder CPU, µs/connection"]
    rows = [[f"`{r.path}`" + (" (ceiling)" if s.ceiling is not None and r.path == s.ceiling.path else ""),
             fmt_range(r.conn_per_s, fmt_count), fmt_pct(r.pct_of_ceiling, 0), f"{r.errors}",
             fmt_us(r.cpu_us_per_conn.median) if r.cpu_us_per_conn.n else no_cpu(r.path, fs.header.path_facts.get(r.path))]
            for r in s.rows]
    out = [f"Completed short connections per second (connect, 1-byte request, 1-byte reply, the server closes) "
           f"over {fs.config.seconds} s after {fs.config.omit_seconds} s of warm-up, "
           f"{probe['processes']} client processes x {probe['concurrency']} connections in flight."]
    if s.ceiling is not None:
        out.append(f"Ceiling (`{s.ceiling.path}`, no forwarder): {fmt_count(s.ceiling.conn_per_s.median)} "
                   "connections/s, what the client and the echo server reach while sharing this host's CPU.")
    return out + [table(header, rows), *notes_block(s.notes)]


# ---------------------------------------------------------------- figures


def plot_connrate(s: ConnrateSummary, cap: str) -> Figure:
    """Completed connections per second per path (median, min-max), with the ceiling line."""
    fig, ax = new_figure("New connections per second (short request/response)", cap)
    fig.set_size_inches(FIG_SIZE_IN[0], max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5))
    rows = [r for r in s.rows if r.conn_per_s.n]
    hbars(ax, [r.path for r in rows], [r.conn_per_s for r in rows], [color(r.path, i) for i, r in enumerate(rows)])
    if s.ceiling is not None and s.ceiling.conn_per_s.median is not None:
        ax.axvline(s.ceiling.conn_per_s.median, color="tab:gray", linestyle="--", linewidth=1,
                   label=f"ceiling ({s.ceiling.path}: client + echo server alone)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("Completed connections/s (median, whiskers min–max)")
    ax.grid(axis="x", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[ConnrateSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"rate": plot_connrate(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> ConnrateSummary:
    return summarise_connrate(rs.records, rs.header.config.paths)


def _run_line(cfg: ExperimentConfig) -> str:
    return (f"{cfg.rounds} round(s) of {cfg.seconds} s (+{cfg.omit_seconds} s warm-up), "
            "harness connection-rate probe")


KIND = Kind(name="connrate", driver="connrate", summarise=_summarise, section=_section, figures=_figures,
            check=check_probe_kind, uses_probe=True, run_line=_run_line)
