"""Headline: every path uncapped, N interleaved rounds; median [min-max] and ratios of medians.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.kinds.base import FileSummary, Kind, ReportContext
from harness.present.format import (
    DASH,
    NO_FORWARDER_CPU,
    fmt_cpu,
    fmt_pct,
    fmt_range,
    notes_block,
    table,
)
from harness.present.plots import caption, color, finish, new_figure, whiskers
from harness.records.results import Record, ResultSet
from harness.summarise.stats import Summary, ranges_overlap, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Columns the ratios are taken against: the kernel (the spec's 100% line),
# no forwarder at all, and the C splice reference (what userspace can reach).
BASELINES = ("iptables", "direct", "reference")


@dataclass(frozen=True)
class PathResult:
    path: str
    throughput_mbps: Summary  # sender side, non-omitted interval
    receiver_mbps: Summary
    cpu_s_per_gb: Summary  # forwarder CPU; n == 0 for kernel paths
    retransmits: Summary
    n_failed: int
    vs_pct: dict[str, float | None] = field(default_factory=dict)  # baseline -> median / median * 100


@dataclass(frozen=True)
class HeadlineSummary:
    paths: tuple[PathResult, ...]
    notes: tuple[str, ...]

    def get(self, path: str) -> PathResult | None:
        return next((p for p in self.paths if p.path == path), None)


def summarise_headline(records: Iterable[Record], path_order: Sequence[str] = ()) -> HeadlineSummary:
    """Uncapped, unpaced records grouped by path, in path_order (then first-seen order)."""
    rows = [r for r in records if r.cap_bytes_per_s is None and r.offered_mbps is None]
    order = list(path_order) + [r.path for r in rows if r.path not in path_order]
    order = list(dict.fromkeys(p for p in order if any(r.path == p for r in rows)))
    results = []
    for path in order:
        mine = [r for r in rows if r.path == path]
        ok = [r for r in mine if r.ok]
        results.append(PathResult(
            path=path,
            throughput_mbps=summarise(r.throughput_mbps for r in ok),
            receiver_mbps=summarise(r.receiver_mbps for r in ok),
            cpu_s_per_gb=summarise(r.cpu_s_per_gb for r in ok),
            retransmits=summarise(r.retransmits for r in ok),
            n_failed=len(mine) - len(ok),
        ))
    medians = {p.path: p.throughput_mbps.median for p in results}
    results = [
        PathResult(p.path, p.throughput_mbps, p.receiver_mbps, p.cpu_s_per_gb, p.retransmits, p.n_failed,
                   {b: ratio_pct(medians.get(p.path), medians.get(b)) for b in BASELINES if b in medians})
        for p in results
    ]
    return HeadlineSummary(tuple(results), tuple(_notes(results)))


def _notes(results: list[PathResult]) -> list[str]:
    notes = []
    by = {p.path: p for p in results}
    for p in results:
        t = p.throughput_mbps
        if t.wide:
            notes.append(f"{p.path}: spread (max-min) is {t.spread_pct:.0f}% of the median over n={t.n}: "
                         "too noisy to rank; rerun with more rounds or on a quieter host")
        if p.n_failed:
            notes.append(f"{p.path}: {p.n_failed} failed measurement(s) left out (see the result file)")
    base = by.get("iptables")
    if base is not None:
        for p in results:
            if p.path != "iptables" and ranges_overlap(p.throughput_mbps, base.throughput_mbps):
                notes.append(f"{p.path} and iptables overlap ([min-max] ranges): no ranking between them at "
                             f"n={min(p.throughput_mbps.n, base.throughput_mbps.n)}")
    return notes


# ---------------------------------------------------------------- report section


def render_headline_table(summary: HeadlineSummary) -> str:
    """Paths as columns: throughput median [min-max], n, ratios vs baselines, forwarder CPU s/GB."""
    cols = summary.paths
    header = [""] + [f"`{p.path}`" for p in cols]
    rows = [
        ["Throughput, Mbit/s: median [min–max]"] + [fmt_range(p.throughput_mbps) for p in cols],
        ["Runs (n)"] + [f"{p.throughput_mbps.n}" + (f" ({p.n_failed} failed)" if p.n_failed else "") for p in cols],
    ]
    present = {p.path for p in cols}
    for b in BASELINES:
        if b in present:
            rows.append([f"vs `{b}` (ratio of medians)"] + [fmt_pct(p.vs_pct.get(b)) for p in cols])
    rows.append(["Forwarder CPU, s/GB: median"] + [
        fmt_cpu(p.cpu_s_per_gb) if p.cpu_s_per_gb.n else NO_FORWARDER_CPU.get(p.path, DASH)
        for p in cols])
    rows.append(["Retransmits: median"] + [
        DASH if p.retransmits.median is None else f"{p.retransmits.median:,.0f}" for p in cols])
    return table(header, rows)


# Where the retransmits of a netns run were taken apart (TCP counters per namespace, D-SACKs, softnet drops).
NETNS_RETRANSMITS_EVIDENCE = ("benchmarks/netns_retransmits.py (runs and their reading in "
                              "results/netns-retransmits/README.md)")


def render_netns_retransmits(s: HeadlineSummary, cpus: int | None) -> str | None:
    """What the retransmit row of a netns run means: spurious fast retransmits from reordering on veth."""
    base = s.get("iptables")
    base_med = base.retransmits.median if base is not None else None
    userspace = [p for p in s.paths if p.cpu_s_per_gb.n and p.retransmits.median is not None]
    if not userspace:
        return None
    counts = ", ".join(f"`{p.path}` {p.retransmits.median or 0:,.0f}"
                       + (f" ({(p.retransmits.median or 0) / base_med:,.0f}x iptables)" if base_med else "")
                       for p in userspace)
    where = f"this host's {cpus} CPUs" if cpus else "this host's CPUs"
    return ("What the retransmits on netns are: iperf3 counts its sender's retransmissions on the client → edge "
            f"veth leg ({counts}). They are spurious fast retransmits caused by reordering on veth, not packets "
            f"the forwarder dropped. {NETNS_RETRANSMITS_EVIDENCE} counts them where TCP does, per namespace: "
            "every one is a fast retransmit (no retransmission timeout), no packet is dropped on the way (no "
            "softnet backlog drops), and the receiver reports (nearly) every retransmitted segment back as a "
            "duplicate (D-SACK: TcpExtTCPDSACKRecvSegs against TcpRetransSegs), so its original had arrived. "
            "The sender retransmitted because later segments arrived first: veth queues a segment to the backlog "
            "of the CPU that sent it, so when one flow's segments leave from both of "
            f"{where} (the sending process moves, and TCP also sends from the softirq of an incoming ACK) they "
            "are processed on two CPUs and can overtake each other. Routed and iptables runs show the same "
            "kind, fewer; a userspace forwarder is one more busy process on the same CPUs, and its own sends to "
            "the target reorder the same way. No byte is lost; pinning the iperf3 client to one CPU (the script's "
            "pinned runs) does not remove them.")


def _section(fs: FileSummary[HeadlineSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    out = [render_headline_table(s)]
    if fs.header.topology.kind == "netns":
        note = render_netns_retransmits(s, fs.header.sysinfo.cpu_cores)
        out += [note] if note is not None else []
    return out + notes_block(s.notes)


# ---------------------------------------------------------------- figures


def plot_headline(s: HeadlineSummary, cap: str) -> Figure:
    """Bars: throughput median per path, whiskers min-max, n under each bar."""
    fig, ax = new_figure("Uncapped throughput per path", cap)
    paths = [p for p in s.paths if p.throughput_mbps.n]
    xs = range(len(paths))
    heights = [p.throughput_mbps.median or 0.0 for p in paths]
    errs = [whiskers(p.throughput_mbps) for p in paths]
    ax.bar(xs, heights, color=[color(p.path, i) for i, p in enumerate(paths)],
           yerr=([e[0] for e in errs], [e[1] for e in errs]), capsize=6, label="median, whiskers min–max")
    ax.set_xticks(list(xs), [f"{p.path}\nn={p.throughput_mbps.n}" for p in paths])
    ax.set_xlabel("Path")
    ax.set_ylabel("Throughput, Mbit/s (iperf3 sender side)")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[HeadlineSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"throughput": plot_headline(s, caption(fs.header))} if s.paths else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> HeadlineSummary:
    return summarise_headline(rs.records, rs.header.config.paths)


KIND = Kind(name="headline", driver="iperf3", summarise=_summarise, section=_section, figures=_figures)
