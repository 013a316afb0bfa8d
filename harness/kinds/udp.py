"""UDP: `iperf3 -u` at fixed offered rates per path: delivered rate, loss, jitter.

Delivered = iperf3's receiver-side rate over the non-omitted interval (the
datagrams that made it through); loss and jitter are iperf3's receiver-side
figures. At each rate the `direct` path shows what the host itself loses.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.define.experiment import ConfigDraft
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.present.format import (
    DASH,
    fmt_cpu,
    fmt_pct,
    fmt_range,
    fmt_rate,
    no_cpu,
    notes_block,
    table,
)
from harness.present.plots import (
    FIG_SIZE_IN,
    caption,
    finish,
    new_panels,
    series_style,
    whiskers,
    whole_number_ticks,
)
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class UdpRow:
    path: str
    offered_mbps: float
    delivered_mbps: Summary  # receiver side
    pct_of_offered: float | None  # median delivered / offered * 100
    loss_pct: Summary
    jitter_ms: Summary
    cpu_s_per_gb: Summary
    n_failed: int


@dataclass(frozen=True)
class UdpSummary:
    rows: tuple[UdpRow, ...]
    paths: tuple[str, ...]
    rates_mbps: tuple[float, ...]
    notes: tuple[str, ...]

    def cell(self, path: str, rate: float) -> UdpRow | None:
        return next((r for r in self.rows if r.path == path and r.offered_mbps == rate), None)


def summarise_udp(records: Iterable[Record], path_order: Sequence[str] = ()) -> UdpSummary:
    """One row per (path, offered rate) over the UDP iperf3 records."""
    udp = [r for r in records if r.protocol == "udp" and r.offered_mbps is not None and r.driver == "iperf3"]
    paths = tuple(dict.fromkeys([p for p in path_order if any(r.path == p for r in udp)] + [r.path for r in udp]))
    rates = tuple(sorted({r.offered_mbps for r in udp if r.offered_mbps is not None}))
    rows, notes = [], []
    for path in paths:
        for rate in rates:
            mine = [r for r in udp if r.path == path and r.offered_mbps == rate]
            if not mine:
                continue
            ok = [r for r in mine if r.ok]
            delivered = summarise(r.receiver_mbps for r in ok)
            rows.append(UdpRow(path, rate, delivered, ratio_pct(delivered.median, rate),
                               summarise(r.lost_pct for r in ok), summarise(r.jitter_ms for r in ok),
                               summarise(r.cpu_s_per_gb for r in ok), len(mine) - len(ok)))
            if len(mine) != len(ok):
                notes.append(f"{path} at {rate:g} Mbit/s: {len(mine) - len(ok)} failed measurement(s) left out")
    return UdpSummary(tuple(rows), paths, rates, tuple(notes))


# ---------------------------------------------------------------- report section


def _section(fs: FileSummary[UdpSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    size = fs.config.datagram_bytes
    header = ["Offered, Mbit/s", "Path", "Delivered, Mbit/s: median [min–max]", "% of offered",
              "Loss: median [min–max]", "Jitter, ms: median", "Forwarder CPU, s/GB"]
    rows = []
    for rate in s.rates_mbps:
        for p in s.paths:
            c = s.cell(p, rate)
            if c is None:
                continue
            if not c.delivered_mbps.n:
                rows.append([fmt_rate(rate), f"`{p}`", f"failed ({c.n_failed} run(s))", DASH, DASH, DASH, DASH])
                continue
            rows.append([fmt_rate(rate), f"`{p}`", fmt_range(c.delivered_mbps), fmt_pct(c.pct_of_offered),
                         fmt_range(c.loss_pct, lambda v: fmt_pct(v, 2)),
                         DASH if c.jitter_ms.median is None else f"{c.jitter_ms.median:.3f}",
                         fmt_cpu(c.cpu_s_per_gb) if c.cpu_s_per_gb.n else no_cpu(p, fs.header.path_facts.get(p))])
    out = [f"`iperf3 -u` at each offered rate ({f'{size}-byte datagrams' if size else 'iperf3 default datagram size'}); "
           "delivered, loss and jitter are iperf3's receiver side. Every path forwards the UDP port and, on the "
           "same port, TCP for iperf3's control connection. `direct` shows what the host itself loses.",
           table(header, rows, align_first_left=False)]
    failed = [r for r in fs.result_set.records if not r.ok]
    notes = list(s.notes) + sorted({f"{r.path}: {(r.error or '').splitlines()[0][:240]}" for r in failed})
    return out + notes_block(notes)


# ---------------------------------------------------------------- figures


def plot_udp(s: UdpSummary, cap: str) -> Figure:
    """Two panels over the offered rates: delivered (receiver side) and loss % per path."""
    fig = new_panels((FIG_SIZE_IN[0] * 1.4, FIG_SIZE_IN[1]), "UDP (iperf3 -u): delivered and loss per offered rate", cap)
    delivered, loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rates = list(s.rates_mbps)
    if rates:
        delivered.plot(rates, rates, color="black", linestyle="--", linewidth=1, label="offered")
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.delivered_mbps.median is not None]
        if not rows:
            continue
        style = series_style(path, i)
        d_err = [whiskers(r.delivered_mbps) for r in rows]
        delivered.errorbar([r.offered_mbps for r in rows], [r.delivered_mbps.median or 0.0 for r in rows],
                           yerr=([e[0] for e in d_err], [e[1] for e in d_err]), label=path, **style)
        l_err = [whiskers(r.loss_pct) for r in rows]
        loss.errorbar([r.offered_mbps for r in rows], [r.loss_pct.median or 0.0 for r in rows],
                      yerr=([e[0] for e in l_err], [e[1] for e in l_err]), label=path, **style)
    for ax in (delivered, loss):
        ax.set_xscale("log")
        whole_number_ticks(ax.xaxis)
        ax.set_xticks(rates, [f"{r:,.0f}" for r in rates])
        ax.set_xlabel("Offered, Mbit/s (iperf3 -u -b)")
        ax.grid(which="both", alpha=0.3)
    delivered.set_yscale("log")
    whole_number_ticks(delivered.yaxis)
    delivered.set_ylabel("Delivered, Mbit/s (receiver side)")
    loss.set_ylabel("Datagrams lost, % (receiver side)")
    delivered.legend(loc="upper left", fontsize=7)
    return finish(fig)


def _figures(fs: FileSummary[UdpSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"udp": plot_udp(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> UdpSummary:
    return summarise_udp(rs.records, rs.header.config.paths)


def _check(d: ConfigDraft, add: Add) -> None:
    if d.protocol != "udp" or not d.offered_mbps:
        add("kind", "a udp experiment needs protocol: udp and at least one offered rate (offered_mbps)")


KIND = Kind(name="udp", driver="iperf3", summarise=_summarise, section=_section, figures=_figures, check=_check)
