"""Figures of the summaries (matplotlib, no pyplot state): plot_* draw, dump_plots writes PNG + SVG.

Plots compute no statistics: every plot_* takes a summary from
harness.experiments and draws what it holds. Each figure has labelled axes
with units, a legend where there is more than one series, and a caption
line naming the experiment, the host and the commit.

Figures per kind are chosen through PLOTTERS, like the report's SECTIONS:
adding a kind is one `plots_<kind>(rs, others) -> {name: Figure}` plus one
entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.experiments import (
    AbSummary,
    CappedSummary,
    HeadlineSummary,
    SweepSummary,
    summarise_ab,
    summarise_capped,
    summarise_headline,
    summarise_sweep,
)
from harness.kinds.connrate import ConnrateSummary, summarise_connrate
from harness.kinds.latency import LatencySummary, summarise_latency
from harness.kinds.peers import PeersSummary, summarise_peers
from harness.kinds.sweep import KEEPS_UP_PCT
from harness.kinds.udp import UdpSummary, summarise_udp
from harness.records.results import Header, Record, ResultSet
from harness.summarise.stats import Summary
from harness.summarise.topology import same_topology

PLOTS_DIRNAME = "plots"
FORMATS = ("png", "svg")
FIG_SIZE_IN = (8.0, 5.0)
PNG_DPI = 120
# One colour per path in every figure, so a path is recognisable across plots.
PATH_COLORS = {
    "direct": "tab:gray", "iptables": "tab:blue", "reference": "tab:purple",
    "standalone": "tab:orange", "standalone_copy": "tab:brown", "standalone_capped": "tab:orange",
    "client": "tab:green", "client_capped": "tab:green",
    # Comparable forwarders: one hue per forwarder, lighter for its variants.
    "nftables": "navy", "haproxy": "tab:olive", "haproxy_bigbuf": "olivedrab", "haproxy_splice": "yellowgreen",
    "nginx": "tab:cyan", "nginx_bigbuf": "darkturquoise", "socat": "tab:pink", "socat_bigbuf": "hotpink",
    "rinetd": "tab:red", "ssh": "black",
}
FALLBACK_COLORS = ("tab:red", "tab:pink", "tab:olive", "tab:cyan")
# Paths that deliver the same rate sit on top of each other: distinct markers and line styles keep
# every series visible where they coincide.
MARKERS = ("o", "s", "D", "^", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")
# SVG ids are hashed with a fixed salt (not random), so redrawing the same data gives the same file.
SVG_HASHSALT = "portunus-bench"


def color(path: str, i: int = 0) -> str:
    return PATH_COLORS.get(path, FALLBACK_COLORS[i % len(FALLBACK_COLORS)])


def _series_style(path: str, i: int) -> dict:
    return {"color": color(path, i), "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)], "markersize": 7 - i % 3, "capsize": 3, "alpha": 0.85}


def caption(h: Header) -> str:
    """One line: experiment, host, commit, date."""
    si = h.sysinfo
    commit = (si.commit or "?")[:12] + ("-dirty" if si.dirty else "")
    return (f"{h.experiment} ({h.kind}) · host {si.hostname}: {si.cpu_model}, "
            f"{si.cpu_cores} cores, kernel {si.kernel} · commit {commit} · {h.created_at[:16]}")


def _figure(title: str, cap: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIG_SIZE_IN)
    ax = fig.add_subplot()
    ax.set_title(title)
    fig.text(0.01, 0.01, cap, fontsize=7, color="dimgray")
    return fig, ax


def _finish(fig: Figure) -> Figure:
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # leave the bottom strip to the caption
    return fig


def _whiskers(s: Summary, scale: float = 1.0) -> tuple[float, float]:
    """(below, above) the median for an errorbar from min to max, scaled (a unit change)."""
    if s.median is None or s.min is None or s.max is None:
        return (0.0, 0.0)
    return ((s.median - s.min) * scale, (s.max - s.median) * scale)


# ---------------------------------------------------------------- one figure per summary


def plot_headline(s: HeadlineSummary, cap: str) -> Figure:
    """Bars: throughput median per path, whiskers min-max, n under each bar."""
    fig, ax = _figure("Uncapped throughput per path", cap)
    paths = [p for p in s.paths if p.throughput_mbps.n]
    xs = range(len(paths))
    heights = [p.throughput_mbps.median or 0.0 for p in paths]
    errs = [_whiskers(p.throughput_mbps) for p in paths]
    ax.bar(xs, heights, color=[color(p.path, i) for i, p in enumerate(paths)],
           yerr=([e[0] for e in errs], [e[1] for e in errs]), capsize=6, label="median, whiskers min–max")
    ax.set_xticks(list(xs), [f"{p.path}\nn={p.throughput_mbps.n}" for p in paths])
    ax.set_xlabel("Path")
    ax.set_ylabel("Throughput, Mbit/s (iperf3 sender side)")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig)


def plot_ab(s: AbSummary, cap: str) -> Figure:
    """Per-round ratio A / B in %, with 100% and the median ratio."""
    fig, ax = _figure(f"{s.a} / {s.b}: throughput ratio per round", cap)
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
    return _finish(fig)


def _cap_label(cap_bytes_per_s: int, target_mbps: float) -> str:
    for unit, size in (("MiB/s", 2**20), ("KiB/s", 2**10)):
        if cap_bytes_per_s >= size and cap_bytes_per_s % size == 0:
            return f"{cap_bytes_per_s // size} {unit}\n({target_mbps:.3g} Mbit/s)"
    return f"{cap_bytes_per_s:,} B/s\n({target_mbps:.3g} Mbit/s)"


def plot_capped(s: CappedSummary, cap: str) -> Figure:
    """Delivered (receiver side) as % of the cap, per cap and path, against the bound and the goal."""
    fig, ax = _figure("Bandwidth cap accuracy", cap)
    caps = sorted({r.cap_bytes_per_s for r in s.rows})
    paths = list(dict.fromkeys(r.path for r in s.rows))
    width = 0.8 / max(len(paths), 1)
    for i, path in enumerate(paths):
        rows = {r.cap_bytes_per_s: r for r in s.rows if r.path == path and r.delivered_mbps.median is not None}
        xs = [caps.index(c) + (i - (len(paths) - 1) / 2) * width for c in rows]
        ys = [100.0 * (r.delivered_mbps.median or 0.0) / r.target_mbps for r in rows.values()]
        errs = [_whiskers(r.delivered_mbps, 100.0 / r.target_mbps) for r in rows.values()]
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
    return _finish(fig)


def _capacity_line(ax: Axes, s: SweepSummary, vertical: bool) -> None:
    c = s.capacity
    if c is None or c.throughput_mbps.median is None or c.lower_bound:
        return
    label = f"{c.path} capacity {c.throughput_mbps.median:,.0f} Mbit/s"
    line = ax.axvline if vertical else ax.axhline
    line(c.throughput_mbps.median, color="dimgray", linestyle=":", label=label)


def plot_sweep_delivered(s: SweepSummary, cap: str) -> Figure:
    """Delivered vs offered per path (log-log), with the ideal line delivered = offered."""
    fig, ax = _figure("Offered-load sweep: delivered vs offered", cap)
    rates = list(s.rates_mbps)
    if rates:
        ax.plot(rates, rates, color="black", linestyle="--", linewidth=1, label="ideal (delivered = offered)")
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.delivered_mbps.median is not None]
        errs = [_whiskers(r.delivered_mbps) for r in rows]
        ax.errorbar([r.offered_mbps for r in rows], [r.delivered_mbps.median or 0.0 for r in rows],
                    yerr=([e[0] for e in errs], [e[1] for e in errs]), label=path, **_series_style(path, i))
    _capacity_line(ax, s, vertical=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Offered load, Mbit/s (iperf3 -b)")
    ax.set_ylabel("Delivered, Mbit/s (median, whiskers min–max)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return _finish(fig)


def plot_sweep_ratio(s: SweepSummary, cap: str) -> Figure:
    """Delivered / offered in % per path over the sweep, with 100% and the keeps-up threshold."""
    fig, ax = _figure("Offered-load sweep: share of the offered rate delivered", cap)
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.ratio_pct.median is not None]
        errs = [_whiskers(r.ratio_pct) for r in rows]
        ax.errorbar([r.offered_mbps for r in rows], [r.ratio_pct.median or 0.0 for r in rows],
                    yerr=([e[0] for e in errs], [e[1] for e in errs]), label=path, **_series_style(path, i))
    ax.axhline(100.0, color="black", linewidth=1, label="100% (keeps up)")
    ax.axhline(KEEPS_UP_PCT, color="tab:red", linestyle="--", linewidth=1, label=f"{KEEPS_UP_PCT:g}% threshold")
    _capacity_line(ax, s, vertical=True)
    ax.set_xscale("log")
    ax.set_xlabel("Offered load, Mbit/s (iperf3 -b)")
    ax.set_ylabel("Delivered / offered, % (median, whiskers min–max)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return _finish(fig)


# ---------------------------------------------------------------- figures per kind


def _unpaced(others: Sequence[ResultSet]) -> list[Record]:
    return [r for rs in others for r in rs.records if r.offered_mbps is None and r.cap_bytes_per_s is None]


def plots_headline(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_headline(rs.records, rs.header.config.paths)
    return {"throughput": plot_headline(s, caption(rs.header))} if s.paths else {}


def plots_ab(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    cfg = rs.header.config
    a, b = cfg.ab_pair
    return {"ratio": plot_ab(summarise_ab(rs.records, a, b), caption(rs.header))}


def plots_capped(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    cfg = rs.header.config
    s = summarise_capped(rs.records, cfg.cap_bound_pct, cfg.cap_goal_pct)
    return {"accuracy": plot_capped(s, caption(rs.header))} if s.rows else {}


def plots_sweep(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_sweep(rs.records, rs.header.config.paths, _unpaced(others))
    if not s.rows:
        return {}
    cap = caption(rs.header)
    return {"delivered": plot_sweep_delivered(s, cap), "ratio": plot_sweep_ratio(s, cap)}


# ---------------------------------------------------------------- peers, latency, connrate, udp


def _hbars(ax: Axes, labels: Sequence[str], values: Sequence[Summary], colors: Sequence[str],
           scale: float = 1.0) -> None:
    """Horizontal bars at each median (scaled), whiskers min-max, first label on top."""
    ys = list(range(len(labels)))[::-1]
    errs = [_whiskers(v, scale) for v in values]
    ax.barh(ys, [(v.median or 0.0) * scale for v in values], color=list(colors),
            xerr=([e[0] for e in errs], [e[1] for e in errs]), capsize=3)
    ax.set_yticks(ys, list(labels), fontsize=8)


def plot_peers(s: PeersSummary, cap: str) -> Figure:
    """Throughput per forwarder (median, min-max) with the iptables line; label: path and % of iptables."""
    fig, ax = _figure("Comparable forwarders: uncapped TCP throughput", cap)
    fig.set_size_inches(FIG_SIZE_IN[0], max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5))
    rows = [r for r in s.rows if r.throughput_mbps.n]
    labels = [f"{r.path}  ({r.pct_of_iptables:.0f}%)" if r.pct_of_iptables is not None else r.path for r in rows]
    _hbars(ax, labels, [r.throughput_mbps for r in rows], [color(r.path, i) for i, r in enumerate(rows)])
    base = s.get("iptables")
    if base is not None and base.throughput_mbps.median is not None:
        ax.axvline(base.throughput_mbps.median, color="tab:blue", linestyle="--", linewidth=1,
                   label="iptables median (100%)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("Throughput, Mbit/s (iperf3 sender side; median, whiskers min–max)")
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig)


def plot_latency(s: LatencySummary, cap: str) -> Figure:
    """Two panels: setup time and RTT per path; bar = p50 (median over rounds), dot = p99; the floor line."""
    fig = Figure(figsize=(FIG_SIZE_IN[0] * 1.4, max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5)))
    fig.suptitle("Latency per path: p50 bars (whiskers min–max over rounds), p99 dots")
    fig.text(0.01, 0.01, cap, fontsize=7, color="dimgray")
    rows = list(s.rows)
    colors = [color(r.path, i) for i, r in enumerate(rows)]
    for k, (what, p50, p99, unit) in enumerate((("Connection setup (connect → first byte)", "setup_p50_us",
                                                 "setup_p99_us", "µs"),
                                                ("1-byte request/response RTT", "rtt_p50_us", "rtt_p99_us", "µs"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.set_title(what, fontsize=10)
        _hbars(ax, [r.path for r in rows], [getattr(r, p50) for r in rows], colors)
        ys = list(range(len(rows)))[::-1]
        p99s = [(y, getattr(r, p99).median) for y, r in zip(ys, rows, strict=True) if getattr(r, p99).median]
        if p99s:
            ax.plot([v for _, v in p99s], [y for y, _ in p99s], "k.", label="p99 (median over rounds)")
        if s.floor is not None and getattr(s.floor, p50).median is not None:
            ax.axvline(getattr(s.floor, p50).median, color="tab:gray", linestyle="--", linewidth=1,
                       label=f"floor ({s.floor.path}) p50")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{unit}, log scale")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(axis="x", which="both", alpha=0.3)
    return _finish(fig)


def plot_connrate(s: ConnrateSummary, cap: str) -> Figure:
    """Completed connections per second per path (median, min-max), with the ceiling line."""
    fig, ax = _figure("New connections per second (short request/response)", cap)
    fig.set_size_inches(FIG_SIZE_IN[0], max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5))
    rows = [r for r in s.rows if r.conn_per_s.n]
    _hbars(ax, [r.path for r in rows], [r.conn_per_s for r in rows], [color(r.path, i) for i, r in enumerate(rows)])
    if s.ceiling is not None and s.ceiling.conn_per_s.median is not None:
        ax.axvline(s.ceiling.conn_per_s.median, color="tab:gray", linestyle="--", linewidth=1,
                   label=f"ceiling ({s.ceiling.path}: client + echo server alone)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("Completed connections/s (median, whiskers min–max)")
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig)


def plot_udp(s: UdpSummary, cap: str) -> Figure:
    """Two panels over the offered rates: delivered (receiver side) and loss % per path."""
    fig = Figure(figsize=(FIG_SIZE_IN[0] * 1.4, FIG_SIZE_IN[1]))
    fig.suptitle("UDP (iperf3 -u): delivered and loss per offered rate")
    fig.text(0.01, 0.01, cap, fontsize=7, color="dimgray")
    delivered, loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rates = list(s.rates_mbps)
    if rates:
        delivered.plot(rates, rates, color="black", linestyle="--", linewidth=1, label="offered")
    for i, path in enumerate(s.paths):
        rows = [r for r in s.rows if r.path == path and r.delivered_mbps.median is not None]
        if not rows:
            continue
        style = _series_style(path, i)
        d_err = [_whiskers(r.delivered_mbps) for r in rows]
        delivered.errorbar([r.offered_mbps for r in rows], [r.delivered_mbps.median or 0.0 for r in rows],
                           yerr=([e[0] for e in d_err], [e[1] for e in d_err]), label=path, **style)
        l_err = [_whiskers(r.loss_pct) for r in rows]
        loss.errorbar([r.offered_mbps for r in rows], [r.loss_pct.median or 0.0 for r in rows],
                      yerr=([e[0] for e in l_err], [e[1] for e in l_err]), label=path, **style)
    for ax in (delivered, loss):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.set_xticks(rates, [f"{r:,.0f}" for r in rates])
        ax.set_xlabel("Offered, Mbit/s (iperf3 -u -b)")
        ax.grid(which="both", alpha=0.3)
    delivered.set_yscale("log")
    delivered.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    delivered.set_ylabel("Delivered, Mbit/s (receiver side)")
    loss.set_ylabel("Datagrams lost, % (receiver side)")
    delivered.legend(loc="upper left", fontsize=7)
    return _finish(fig)


def plots_peers(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_peers(rs.records, rs.header.config.paths)
    return {"throughput": plot_peers(s, caption(rs.header))} if s.rows else {}


def plots_latency(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_latency(rs.records, rs.header.config.paths)
    return {"latency": plot_latency(s, caption(rs.header))} if s.rows else {}


def plots_connrate(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_connrate(rs.records, rs.header.config.paths)
    return {"rate": plot_connrate(s, caption(rs.header))} if s.rows else {}


def plots_udp(rs: ResultSet, others: Sequence[ResultSet]) -> dict[str, Figure]:
    s = summarise_udp(rs.records, rs.header.config.paths)
    return {"udp": plot_udp(s, caption(rs.header))} if s.rows else {}


Plotter = Callable[[ResultSet, Sequence[ResultSet]], dict[str, Figure]]

PLOTTERS: dict[str, Plotter] = {
    "headline": plots_headline,
    "ab": plots_ab,
    "capped": plots_capped,
    "sweep": plots_sweep,
    "peers": plots_peers,
    "latency": plots_latency,
    "connrate": plots_connrate,
    "udp": plots_udp,
}


def figures_for(rs: ResultSet, others: Sequence[ResultSet] = ()) -> dict[str, Figure]:
    """The figures of one result file, named '<file stem>-<figure>' (none for a kind without plotter)."""
    plotter = PLOTTERS.get(rs.header.kind)
    if plotter is None:
        return {}
    return {f"{rs.path.stem}-{name}": fig for name, fig in plotter(rs, others).items()}


def dump_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write name.png and name.svg into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # SVG text stays text (searchable, diffable); no date in the files.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": SVG_HASHSALT}):
        for fmt in FORMATS:
            p = out_dir / f"{name}.{fmt}"
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(p, format=fmt, dpi=PNG_DPI, metadata=metadata)
            written.append(p)
    return written


def dump_plots(result_sets: Sequence[ResultSet], out_dir: Path) -> dict[str, list[Path]]:
    """Every figure of every result file into out_dir; returns result file name -> files written."""
    out: dict[str, list[Path]] = {}
    for rs in result_sets:
        # Cross-file inputs (the sweep's capacity) come from files of the same topology only.
        for name, fig in figures_for(rs, same_topology(rs, result_sets)).items():
            out.setdefault(rs.path.name, []).extend(dump_figure(fig, out_dir, name))
    return out
