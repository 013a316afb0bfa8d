"""UDP: `iperf3 -u` at fixed offered rates per path: delivered rate, loss, jitter, in bits and datagrams.

Delivered = iperf3's receiver-side rate over the non-omitted interval (the
datagrams that made it through); loss and jitter are iperf3's receiver-side
figures. At each rate the `direct` path shows what the host itself loses.

Files written since result schema 5 count datagrams (`delivered_pps`) and may
measure several datagram sizes at rates offered in datagrams/s: their section
has the packet-rate tables (per size and offered rate, delivered datagrams/s
and loss per path; forwarder CPU per million datagrams; the most each path
delivers with < 1% loss; datagrams dropped at the forwarder's own socket).
Older files render as they always did (Mbit/s only).

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    no_minor_labels,
    series_style,
    whiskers,
    whole_number_ticks,
)
from harness.records.header import PathFacts
from harness.records.results import Record, ResultSet
from harness.summarise.stats import EMPTY, Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Loss at or above this is "not keeping up" when finding the most a path delivers (issue 14's bar).
LOSS_LIMIT_PCT = 1.0
# Below this share of the offered datagrams/s delivered, a rate was not carried even without loss
# (the iperf3 sender itself could not send it): iperf3's pacing lands within ~1% when nothing limits it.
KEEPS_UP_PCT = 95.0
CEILING = "direct"  # iperf3 to iperf3: what the host itself carries


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
    # since result schema 5 (empty summaries / None for older files)
    datagram_bytes: int | None = None
    offered_pps: float | None = None  # as configured, or the Mbit/s rate in datagrams/s
    delivered_pps: Summary = EMPTY  # receiver side: packets - lost over its interval
    pps_pct_of_offered: float | None = None
    cpu_s_per_mdgram: Summary = EMPTY  # forwarder CPU seconds per million datagrams delivered
    socket_drops: Summary = EMPTY  # datagrams dropped at the forwarder's listening socket(s), per run
    lost_datagrams: Summary = EMPTY  # datagrams lost, per run, as iperf3's receiver counts them

    @property
    def low_loss(self) -> bool | None:
        """Loss below LOSS_LIMIT_PCT (median over runs); None when nothing was measured."""
        return None if self.loss_pct.median is None else self.loss_pct.median < LOSS_LIMIT_PCT

    @property
    def keeps_up(self) -> bool | None:
        """Low loss and at least KEEPS_UP_PCT of the offered datagrams/s delivered."""
        if self.low_loss is None or self.pps_pct_of_offered is None:
            return self.low_loss
        return self.low_loss and self.pps_pct_of_offered >= KEEPS_UP_PCT


@dataclass(frozen=True)
class MaxRate:
    """The most one path delivered at one datagram size with loss below LOSS_LIMIT_PCT."""

    path: str
    datagram_bytes: int
    delivered_pps: float | None  # None: lost >= the limit at every offered rate
    offered_pps: float | None
    cpu_s_per_mdgram: float | None  # at that rate
    below_every_rate: bool  # kept up at every offered rate: its limit is higher than measured


@dataclass(frozen=True)
class UdpSummary:
    rows: tuple[UdpRow, ...]
    paths: tuple[str, ...]
    rates_mbps: tuple[float, ...]
    notes: tuple[str, ...]
    # since result schema 5: datagrams counted (delivered_pps in the records)
    packet_rates: bool = False
    sizes: tuple[int, ...] = ()
    max_rates: tuple[MaxRate, ...] = ()
    ceiling_stops: tuple[tuple[int, float], ...] = ()  # (size, lowest offered datagrams/s direct does not keep up at)

    def cell(self, path: str, rate: float, size: int | None = None) -> UdpRow | None:
        return next((r for r in self.rows if r.path == path and r.offered_mbps == rate
                     and (size is None or r.datagram_bytes == size)), None)

    def pps_rows(self, size: int) -> list[UdpRow]:
        """The rows of one datagram size, by offered datagrams/s then path order."""
        order = {p: i for i, p in enumerate(self.paths)}
        return sorted((r for r in self.rows if r.datagram_bytes == size),
                      key=lambda r: (r.offered_pps or 0.0, order.get(r.path, 0)))

    def offered_pps_of(self, size: int) -> list[float]:
        return sorted({r.offered_pps for r in self.rows if r.datagram_bytes == size and r.offered_pps is not None})

    def max_rate(self, path: str, size: int) -> MaxRate | None:
        return next((m for m in self.max_rates if m.path == path and m.datagram_bytes == size), None)

    def ceiling_stop(self, size: int) -> float | None:
        return next((rate for s, rate in self.ceiling_stops if s == size), None)


def _offered_pps(r: Record, size: int | None) -> float | None:
    if r.offered_pps is not None:
        return r.offered_pps
    if size and r.offered_mbps is not None:
        return r.offered_mbps * 1e6 / (8 * size)
    return None


def cpu_s_per_mdgram(r: Record) -> float | None:
    """Forwarder CPU seconds per million datagrams the run delivered (warm-up seconds estimated at the
    measured rate: the CPU is counted over the whole client run)."""
    if r.forwarder_cpu_s is None or r.delivered_pps is None or r.datagrams_delivered is None:
        return None
    total = r.datagrams_delivered + r.delivered_pps * r.omit_seconds
    return r.forwarder_cpu_s / total * 1e6 if total > 0 else None


def _lost(r: Record) -> int | None:
    """Datagrams lost as iperf3's receiver counts them (gaps in the sequence numbers; lost_pct is lost /
    (delivered + lost)). Not sent - delivered: that also counts the datagrams still in flight when the
    receiver stopped, which were not lost."""
    if r.datagrams_delivered is None or r.lost_pct is None or not 0.0 <= r.lost_pct < 100.0:
        return None
    return round(r.datagrams_delivered * r.lost_pct / (100.0 - r.lost_pct))


def summarise_udp(records: Iterable[Record], path_order: Sequence[str] = (),
                  config_datagram_bytes: int | None = None) -> UdpSummary:
    """One row per (path, datagram size, offered rate) over the UDP iperf3 records.

    config_datagram_bytes: the file's configured size, for records older than schema 5 (which do not carry it).
    """
    udp = [r for r in records if r.protocol == "udp" and r.offered_mbps is not None and r.driver == "iperf3"]
    paths = tuple(dict.fromkeys([p for p in path_order if any(r.path == p for r in udp)] + [r.path for r in udp]))
    rates = tuple(sorted({r.offered_mbps for r in udp if r.offered_mbps is not None}))

    def size_of(r: Record) -> int | None:
        return r.datagram_bytes if r.datagram_bytes is not None else config_datagram_bytes

    sizes = tuple(sorted({s for s in map(size_of, udp) if s is not None}))
    packet_rates = any(r.delivered_pps is not None for r in udp)
    rows, notes = [], []
    for path in paths:
        for size in sizes or (None,):
            for rate in rates:
                mine = [r for r in udp if r.path == path and r.offered_mbps == rate and size_of(r) == size]
                if not mine:
                    continue
                ok = [r for r in mine if r.ok]
                delivered = summarise(r.receiver_mbps for r in ok)
                pps = _offered_pps(mine[0], size)
                delivered_pps = summarise(r.delivered_pps for r in ok)
                rows.append(UdpRow(path, rate, delivered, ratio_pct(delivered.median, rate),
                                   summarise(r.lost_pct for r in ok), summarise(r.jitter_ms for r in ok),
                                   summarise(r.cpu_s_per_gb for r in ok), len(mine) - len(ok), size, pps,
                                   delivered_pps, ratio_pct(delivered_pps.median, pps),
                                   summarise(cpu_s_per_mdgram(r) for r in ok),
                                   summarise(r.socket_drops for r in ok), summarise(_lost(r) for r in ok)))
                if len(mine) != len(ok):
                    where = (f"{size} B at {pps:,.0f} datagrams/s" if packet_rates and size and pps
                             else f"{rate:g} Mbit/s")
                    notes.append(f"{path} at {where}: {len(mine) - len(ok)} failed measurement(s) left out")
    if not packet_rates:
        return UdpSummary(tuple(rows), paths, rates, tuple(notes))
    max_rates = tuple(_max_rate(rows, path, size) for size in sizes for path in paths
                      if any(r.path == path and r.datagram_bytes == size and r.delivered_pps.n for r in rows))
    stops = tuple((size, stop) for size in sizes
                  if (stop := next((r.offered_pps for r in sorted(rows, key=lambda r: r.offered_pps or 0.0)
                                    if r.path == CEILING and r.datagram_bytes == size and r.keeps_up is False
                                    and r.offered_pps is not None), None)) is not None)
    return UdpSummary(tuple(rows), paths, rates, tuple(notes + _pps_notes(rows, paths, udp)), True, sizes, max_rates,
                      stops)


def _max_rate(rows: Sequence[UdpRow], path: str, size: int) -> MaxRate:
    mine = [r for r in rows if r.path == path and r.datagram_bytes == size and r.delivered_pps.n]
    ok = [r for r in mine if r.low_loss]
    best = max(ok, key=lambda r: r.delivered_pps.median or 0.0, default=None)
    if best is None:
        return MaxRate(path, size, None, None, None, False)
    return MaxRate(path, size, best.delivered_pps.median, best.offered_pps, best.cpu_s_per_mdgram.median,
                   all(r.keeps_up for r in mine))


def _pps_notes(rows: Sequence[UdpRow], paths: Sequence[str], records: Sequence[Record]) -> list[str]:
    """Where the sender fell short of the offered rate without loss, and where a forwarder's own socket
    dropped what was lost (it fell behind), per path."""
    notes = []
    short = [r for r in rows if r.path == CEILING and r.low_loss and r.keeps_up is False]
    if short:
        notes.append(f"`{CEILING}` delivered less than {KEEPS_UP_PCT:g}% of the offered datagrams/s without losing "
                     "them at " + ", ".join(f"{r.datagram_bytes} B x {r.offered_pps:,.0f}/s "
                                            f"({r.pps_pct_of_offered or 0:.0f}%)" for r in short)
                     + ": the iperf3 sender itself did not send faster on this host, so no path can there")
    for path in paths:
        # Totals over the same runs (ok ones with losses and a drop count): sums of per-rate medians
        # would compare numbers from different rounds.
        runs = [(r.socket_drops, lost) for r in records if r.ok and r.path == path and r.socket_drops is not None
                and (lost := _lost(r))]
        if not runs:
            continue
        drops = sum(d for d, _ in runs)
        lost = sum(n for _, n in runs)
        notes.append(f"{path}: {drops:,} datagrams dropped at its own listening socket, against {lost:,} lost end "
                     f"to end ({ratio_pct(drops, lost) or 0:.0f}%; totals over the {len(runs)} run(s) with losses): "
                     "where its input queue overflowed because it did not read fast enough"
                     + ("; more than iperf3 counted lost, because a datagram dropped after the last one that "
                        "arrived leaves no gap in the sequence numbers for iperf3 to see" if drops > lost else ""))
    return notes


# ---------------------------------------------------------------- report section


def _section(fs: FileSummary[UdpSummary], ctx: ReportContext) -> list[str]:
    return _section_pps(fs) if fs.summary.packet_rates else _section_bits(fs)


def _section_bits(fs: FileSummary[UdpSummary]) -> list[str]:
    """Files older than result schema 5: delivered Mbit/s, loss and jitter per path and offered rate."""
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


ABOVE_CEILING_MARK = "‡"


def _fmt_pps(v: float | None) -> str:
    return DASH if v is None else f"{v:,.0f}"


def _fmt_cpu2(v: float | None) -> str:
    return DASH if v is None else f"{v:.2f}"


def _fmt_loss(v: float | None) -> str:
    return DASH if v is None else (f"{v:.2f}%" if v < 10 else f"{v:.1f}%")


def _offered_label(s: UdpSummary, size: int, pps: float, mbps: float) -> str:
    stop = s.ceiling_stop(size)
    mark = f" {ABOVE_CEILING_MARK}" if stop is not None and pps >= stop else ""
    return f"{_fmt_pps(pps)} ({fmt_rate(round(mbps, 1))} Mbit/s){mark}"


def render_pps_table(s: UdpSummary, size: int) -> str:
    """One datagram size: per offered rate (rows) and path (columns) delivered datagrams/s, loss and jitter."""
    header = [f"{size} B: offered, datagrams/s (Mbit/s)"]  # the size in it tells the size tables apart
    for p in s.paths:
        header += [f"`{p}` delivered/s", "loss; jitter, ms"]
    rows = []
    for pps in s.offered_pps_of(size):
        cells_of = {r.path: r for r in s.pps_rows(size) if r.offered_pps == pps}
        first = next(iter(cells_of.values()))
        cells = [_offered_label(s, size, pps, first.offered_mbps)]
        for p in s.paths:
            c = cells_of.get(p)
            if c is None:
                cells += [DASH, DASH]
            elif not c.delivered_pps.n:
                cells += [f"failed ({c.n_failed})", DASH]
            else:
                jitter = DASH if c.jitter_ms.median is None else f"{c.jitter_ms.median:.3f}"
                cells += [fmt_range(c.delivered_pps, _fmt_pps), f"{_fmt_loss(c.loss_pct.median)}; {jitter}"]
        rows.append(cells)
    return table(header, rows, align_first_left=False)


def render_cpu_table(s: UdpSummary, facts: Mapping[str, PathFacts]) -> str | None:
    """Forwarder CPU seconds per million datagrams per (size, offered rate) and forwarder path."""
    fwd = [p for p in s.paths if any(r.path == p and r.cpu_s_per_mdgram.n for r in s.rows)]
    if not fwd:
        return None
    header = ["Datagram", "Offered, datagrams/s"] + [f"`{p}`" for p in fwd]
    rows = []
    for size in s.sizes:
        for pps in s.offered_pps_of(size):
            cells = {r.path: r for r in s.pps_rows(size) if r.offered_pps == pps}
            rows.append([f"{size} B", _fmt_pps(pps)] + [
                _fmt_cpu2(cells[p].cpu_s_per_mdgram.median) if p in cells else DASH
                for p in fwd])
    return table(header, rows, align_first_left=False)


def render_max_table(s: UdpSummary, facts: Mapping[str, PathFacts]) -> str:
    """Per path and size: the most delivered with < LOSS_LIMIT_PCT loss, and the CPU per million there."""
    header = ["Path"] + [f"{size} B: most delivered/s at < {LOSS_LIMIT_PCT:g}% loss (offered)" for size in s.sizes] + [
        f"{size} B: CPU, s per million" for size in s.sizes]
    rows = []
    for p in s.paths:
        best, cpu = [], []
        for size in s.sizes:
            m = s.max_rate(p, size)
            if m is None:
                best.append(DASH)
                cpu.append(DASH)
                continue
            if m.delivered_pps is None:
                best.append(f"none (≥ {LOSS_LIMIT_PCT:g}% lost at every rate)")
            else:
                best.append(f"{'≥ ' if m.below_every_rate else ''}{_fmt_pps(m.delivered_pps)} "
                            f"({_fmt_pps(m.offered_pps)})")
            cpu.append(_fmt_cpu2(m.cpu_s_per_mdgram) if m.cpu_s_per_mdgram is not None else no_cpu(p, facts.get(p)))
        rows.append([f"`{p}`"] + best + cpu)
    return table(header, rows)


def _section_pps(fs: FileSummary[UdpSummary]) -> list[str]:
    """Files since result schema 5: datagrams/s per size and offered rate, CPU per million, the most each delivers."""
    s, cfg = fs.summary, fs.config
    window = (f"a {cfg.socket_buffer_bytes // 1024:,} KiB socket buffer on both iperf3 ends (`-w`)"
              if cfg.socket_buffer_bytes else "the kernel's default socket buffers")
    out = [f"`iperf3 -u -l SIZE -b RATE` at each datagram size and offered rate, with {window}; delivered = "
           "iperf3's receiver side (datagrams received, lost ones not counted), loss and jitter (ms) too. Every path "
           "forwards the UDP port and, on the same port, TCP for iperf3's control connection. `direct` (iperf3 "
           f"to iperf3) shows what the host itself carries: offered rates marked {ABOVE_CEILING_MARK} are at or "
           f"above the lowest one where `direct` lost {LOSS_LIMIT_PCT:g}% or more or delivered less than "
           f"{KEEPS_UP_PCT:g}% of the rate, so no path can be expected to deliver them here. Cells: median "
           "[min–max] over the rounds."]
    for size in s.sizes:
        stop = s.ceiling_stop(size)
        line = f"{size}-byte datagrams" + (f" (`{CEILING}` stops keeping up at {_fmt_pps(stop)} datagrams/s)"
                                             if stop is not None else "") + ":"
        out += [line, render_pps_table(s, size)]
    out += [f"The most each path delivered with less than {LOSS_LIMIT_PCT:g}% loss (median over rounds; "
            "'≥': it kept up at every rate offered, so its limit is higher), and its forwarder CPU (process "
            "tree, seconds per million datagrams delivered) at that rate:",
            render_max_table(s, fs.header.path_facts)]
    cpu = render_cpu_table(s, fs.header.path_facts)
    if cpu is not None:
        out += ["Forwarder CPU, seconds per million datagrams delivered, at every rate (batched receive and "
                "send make a datagram cheaper at higher rates):", cpu]
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


def plot_udp_pps(s: UdpSummary, cap: str) -> Figure:
    """Per datagram size, delivered datagrams/s (top) and loss % (bottom) against offered datagrams/s."""
    n = max(len(s.sizes), 1)
    # At least the standard width: one size's panels must still hold the title.
    fig = new_panels((max(FIG_SIZE_IN[0] * 0.6 * n + 1.5, FIG_SIZE_IN[0]), FIG_SIZE_IN[1] * 1.5),
                     "UDP at packet rate (iperf3 -u): delivered datagrams/s and loss", cap)
    for col, size in enumerate(s.sizes):
        delivered, loss = fig.add_subplot(2, n, col + 1), fig.add_subplot(2, n, n + col + 1)
        offered = s.offered_pps_of(size)
        if offered:
            delivered.plot(offered, offered, color="black", linestyle="--", linewidth=1, label="offered")
        for i, path in enumerate(s.paths):
            rows = [r for r in s.pps_rows(size) if r.path == path and r.delivered_pps.median is not None]
            if not rows:
                continue
            style = series_style(path, i)
            xs = [r.offered_pps or 0.0 for r in rows]
            d_err = [whiskers(r.delivered_pps) for r in rows]
            delivered.errorbar(xs, [r.delivered_pps.median or 0.0 for r in rows],
                               yerr=([e[0] for e in d_err], [e[1] for e in d_err]), label=path, **style)
            l_err = [whiskers(r.loss_pct) for r in rows]
            loss.errorbar(xs, [r.loss_pct.median or 0.0 for r in rows],
                          yerr=([e[0] for e in l_err], [e[1] for e in l_err]), label=path, **style)
        for ax in (delivered, loss):
            ax.set_xscale("log")
            ax.set_xticks(offered, [f"{v / 1000:,.0f}k" for v in offered], fontsize=7)
            no_minor_labels(ax.xaxis)
            ax.grid(which="both", alpha=0.3)
        # Linear from 0: the rates span less than a decade, where a log axis has no labelled tick.
        delivered.set_ylim(bottom=0)
        whole_number_ticks(delivered.yaxis)
        delivered.set_title(f"{size}-byte datagrams", fontsize=9)
        loss.set_xlabel("Offered, datagrams/s (iperf3 -b)")
        if col == 0:
            delivered.set_ylabel("Delivered, datagrams/s (receiver)")
            loss.set_ylabel("Datagrams lost, %")
            delivered.legend(loc="upper left", fontsize=6)
    return finish(fig)


def _figures(fs: FileSummary[UdpSummary]) -> dict[str, Figure]:
    s = fs.summary
    if s.packet_rates:
        return {"pps": plot_udp_pps(s, caption(fs.header))} if s.rows else {}
    return {"udp": plot_udp(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> UdpSummary:
    size = rs.header.config.datagram_bytes
    return summarise_udp(rs.records, rs.header.config.paths, size if isinstance(size, int) else None)


def _check(d: ConfigDraft, add: Add) -> None:
    if d.protocol != "udp" or not (d.offered_mbps or d.offered_pps):
        add("kind", "a udp experiment needs protocol: udp and at least one offered rate (offered_mbps or "
            "offered_pps)")


KIND = Kind(name="udp", driver="iperf3", summarise=_summarise, section=_section, figures=_figures, check=_check)
